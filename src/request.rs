//! The request as the stages see it: built by `server` from the HTTP request, read (never
//! changed, but for its body, read in once the route and the caller are known) by every
//! stage after it.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};

use crate::error::{ErrorKind, GatewayError};

/// A request as the pipeline sees it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names are lower-case.
    pub headers: HeaderMap,
    /// Empty until the pipeline reads the [`PendingBody`].
    pub body: Bytes,
    /// `$context.identity.sourceIp`: the socket's peer, or behind trusted proxies the
    /// address they forwarded (see `edge::client_ip`).
    pub source_ip: String,
    pub client_ip: std::net::IpAddr,
    /// The socket's peer (a proxy, when the client is behind trusted ones).
    pub peer: std::net::IpAddr,
    /// The certificate a mutual-TLS client presented.
    pub client_cert: Option<std::sync::Arc<crate::edge::tls::ClientCert>>,
    pub request_id: String,
    pub received: Instant,
    pub received_epoch_ms: i64,
    /// A WebSocket message's facts, for `$context`.
    pub ws: Option<crate::mapping::context::WsFacts>,
}

impl Request {
    /// A header's first value as text (invalid UTF-8 replaced).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// A query parameter's first value.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request's body, not yet read: the pipeline reads it once the route and the caller are
/// known, so that a request for no route, or without a usable key, never costs its body.
pub struct PendingBody {
    body: axum::body::Body,
    /// `Content-Length`, when the client declared it.
    declared: Option<u64>,
    /// When the whole body must be in.
    deadline: tokio::time::Instant,
    /// Body bytes all requests may hold at once (`server.max_inflight_body_bytes`).
    budget: std::sync::Arc<tokio::sync::Semaphore>,
}

/// A body's place in the in-flight budget; dropping it (the request is done) gives it back.
#[derive(Debug, Default)]
pub struct BodyPermit(#[allow(dead_code)] Vec<tokio::sync::OwnedSemaphorePermit>);

impl PendingBody {
    pub fn new(
        body: axum::body::Body,
        headers: &HeaderMap,
        deadline: tokio::time::Instant,
        budget: std::sync::Arc<tokio::sync::Semaphore>,
    ) -> PendingBody {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        PendingBody {
            body,
            declared,
            deadline,
            budget,
        }
    }

    /// The declared `Content-Length`, if any.
    pub fn declared(&self) -> Option<u64> {
        self.declared
    }

    /// When the whole body must be in.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Reads the body, at most `limit` bytes (more is a 413, told from `Content-Length`
    /// before reading when the client declared it), within the deadline (else 408), and
    /// within the in-flight budget (else 503: taken at once for a declared length, as the
    /// bytes come otherwise).
    pub async fn read(self, limit: usize) -> Result<(Bytes, BodyPermit), GatewayError> {
        let too_large = || {
            GatewayError::new(
                ErrorKind::PayloadTooLarge { limit },
                format!("body larger than {limit} bytes"),
            )
        };
        if self.declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let budget = self.budget.clone();
        let take = move |bytes: usize, permits: &mut Vec<tokio::sync::OwnedSemaphorePermit>| {
            let n = u32::try_from(bytes).unwrap_or(u32::MAX);
            if n == 0 {
                return Ok(());
            }
            match budget.clone().try_acquire_many_owned(n) {
                Ok(p) => {
                    permits.push(p);
                    Ok(())
                }
                Err(_) => Err(GatewayError::new(
                    ErrorKind::Overloaded,
                    "the body bytes in flight are at server.max_inflight_body_bytes",
                )),
            }
        };
        let mut permits = Vec::new();
        if let Some(n) = self.declared {
            take(n as usize, &mut permits)?;
        }
        let declared = self.declared.is_some();
        let read = async move {
            let mut body = self.body;
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut len = 0usize;
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                let frame = frame.map_err(|e| {
                    GatewayError::new(
                        ErrorKind::InvalidBody,
                        format!("reading the body failed: {e}"),
                    )
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                len += data.len();
                if len > limit {
                    return Err(too_large());
                }
                if !declared {
                    take(data.len(), &mut permits)?;
                }
                chunks.push(data);
            }
            let bytes = match chunks.len() {
                0 => Bytes::new(),
                1 => chunks.pop().unwrap_or_default(),
                _ => {
                    let mut all = Vec::with_capacity(len);
                    for c in &chunks {
                        all.extend_from_slice(c);
                    }
                    Bytes::from(all)
                }
            };
            Ok((bytes, BodyPermit(permits)))
        };
        tokio::time::timeout_at(self.deadline, read)
            .await
            .unwrap_or_else(|_| {
                Err(GatewayError::new(
                    ErrorKind::BodyTimeout,
                    "the body did not arrive within the body read timeout",
                ))
            })
    }
}
