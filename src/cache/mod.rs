//! Response caching (a route's `cache`), API Gateway's stage cache: a GET route's 2xx
//! answers kept for the route's `ttl` and served again without a call upstream.
//!
//! An answer is kept by the route, the values of the route's key parameters and, unless the
//! cache is `shared`, the caller (its API key id, else its principal), so one caller never
//! sees another's answer. Memory is bounded by bytes (`max_bytes`; least recently used out
//! first) by `moka`. A request with `Cache-Control: max-age=0` from a caller the route's
//! `invalidation` allows drops the entry and is answered fresh (and kept again); from
//! anyone else the header is ignored. Keys, throttles and quotas apply to a hit as to any
//! request (the cache sits after authorization), and `$context` is unaffected.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::config::cache::{CacheParam, CacheSettings, Invalidation};
use crate::telemetry;

/// One answer kept.
pub struct Cached {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Cached {
    fn weight(&self, key: &str) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        u32::try_from(self.body.len() + headers + key.len() + 64).unwrap_or(u32::MAX)
    }
}

/// A route's cache.
pub struct RouteCache {
    settings: CacheSettings,
    route: String,
    entries: moka::sync::Cache<String, Arc<Cached>>,
}

/// What a request does with the cache.
pub enum Lookup {
    /// Served from the cache.
    Hit(Response<Body>),
    /// To be answered upstream; a 2xx answer is kept under this key.
    Miss(String),
    /// Not cached (a method other than GET or HEAD).
    Bypass,
}

/// The request's parts the cache key reads.
pub struct Keyed<'a> {
    pub method: &'a http::Method,
    pub path_params: &'a [(String, String)],
    pub query: &'a [(String, String)],
    pub headers: &'a HeaderMap,
    /// The caller: its key id, else its principal.
    pub caller: Option<&'a str>,
}

/// The largest answer kept (bigger ones are served and not kept).
const MAX_ENTRY_BYTES: usize = 10 << 20;

impl RouteCache {
    pub fn new(route: &str, settings: &CacheSettings) -> RouteCache {
        let evicted_route = route.to_string();
        let entries = moka::sync::Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|k: &String, v: &Arc<Cached>| v.weight(k))
            .time_to_live(settings.ttl)
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    telemetry::response_cache_evicted(&evicted_route);
                }
            })
            .build();
        RouteCache {
            settings: settings.clone(),
            route: route.to_string(),
            entries,
        }
    }

    /// The cache key of a request: its key parameters' values and (unless shared) the
    /// caller, each length-prefixed so no two requests' keys run together.
    fn key(&self, r: &Keyed<'_>) -> String {
        let mut key = String::new();
        let mut part = |s: Option<&str>| match s {
            None => key.push('-'),
            Some(s) => {
                key.push_str(&s.len().to_string());
                key.push(':');
                key.push_str(s);
            }
        };
        for p in &self.settings.key {
            let value = match p {
                CacheParam::Path(n) => r
                    .path_params
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str()),
                CacheParam::Query(n) => r
                    .query
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str()),
                CacheParam::Header(n) => r.headers.get(n.as_str()).and_then(|v| v.to_str().ok()),
            };
            part(value);
        }
        if !self.settings.shared {
            part(r.caller);
        }
        key
    }

    /// Looks a request up. `may_invalidate` says whether the caller holds the permission
    /// `invalidation = "authorized"` asks for (called only when it matters).
    pub fn lookup(&self, r: &Keyed<'_>, may_invalidate: impl FnOnce() -> bool) -> Lookup {
        if r.method != http::Method::GET && r.method != http::Method::HEAD {
            return Lookup::Bypass;
        }
        let key = self.key(r);
        if wants_fresh(r.headers) {
            let allowed = match self.settings.invalidation {
                Invalidation::Anyone => true,
                Invalidation::Never => false,
                Invalidation::Authorized => may_invalidate(),
            };
            if allowed {
                self.entries.invalidate(&key);
                telemetry::response_cache(&self.route, "invalidated");
                return Lookup::Miss(key);
            }
        }
        match self.entries.get(&key) {
            Some(hit) => {
                telemetry::response_cache(&self.route, "hit");
                let mut resp = Response::new(Body::from(hit.body.clone()));
                *resp.status_mut() = hit.status;
                *resp.headers_mut() = hit.headers.clone();
                if self.settings.x_cache {
                    resp.headers_mut()
                        .insert("x-cache", HeaderValue::from_static("Hit"));
                }
                Lookup::Hit(resp)
            }
            None => {
                telemetry::response_cache(&self.route, "miss");
                Lookup::Miss(key)
            }
        }
    }

    /// Keeps a 2xx answer (its body read whole; at most [`MAX_ENTRY_BYTES`]), and returns
    /// the response to send.
    pub async fn keep(&self, key: String, resp: Response<Body>) -> Response<Body> {
        use http_body_util::BodyExt as _;
        let (mut parts, body) = resp.into_parts();
        if self.settings.x_cache {
            parts
                .headers
                .insert("x-cache", HeaderValue::from_static("Miss"));
        }
        if !parts.status.is_success() {
            return Response::from_parts(parts, body);
        }
        // Only a body whose size is known and small enough is kept; any other is sent as is.
        use axum::body::HttpBody as _;
        let small = matches!(body.size_hint().exact(), Some(n) if n <= MAX_ENTRY_BYTES as u64);
        if !small {
            return Response::from_parts(parts, body);
        }
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                tracing::warn!(route = %self.route, error = %e, "An answer's body failed while it was kept.");
                return Response::from_parts(parts, Body::empty());
            }
        };
        let mut headers = parts.headers.clone();
        headers.remove("x-amzn-requestid");
        if self.settings.x_cache {
            headers.remove("x-cache");
        }
        self.entries.insert(
            key,
            Arc::new(Cached {
                status: parts.status,
                headers,
                body: bytes.clone(),
            }),
        );
        Response::from_parts(parts, Body::from(bytes))
    }

    /// Entries held (after pending evictions ran), for tests.
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the entries weigh, for tests.
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// `Cache-Control: max-age=0` (or `no-cache`): the client asks for a fresh answer.
fn wants_fresh(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| d == "max-age=0" || d == "no-cache")
}

#[cfg(test)]
mod tests;
