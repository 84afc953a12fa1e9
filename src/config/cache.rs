//! A route's response cache (`cache = { ttl, key, max_bytes, ... }`), API Gateway's stage
//! cache per method: GET answers kept for `ttl`, by the route, the listed parameters and
//! the caller.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawCache {
    /// How long an answer is kept (`"60s"`; API Gateway's default 300 s, at most 3600 s).
    pub ttl: Option<Spanned<String>>,
    /// The request parameters that tell answers apart: `path.NAME`, `querystring.NAME`,
    /// `header.NAME` (or API Gateway's `method.request.path.NAME` forms).
    #[serde(default)]
    pub key: Vec<Spanned<String>>,
    /// The memory the route's answers may take (bytes; default 64 MiB). The least recently
    /// used go first.
    pub max_bytes: Option<u64>,
    /// One answer for every caller (default `false`: the caller's key or principal is part
    /// of the cache key, so one caller never sees another's answer).
    #[serde(default)]
    pub shared: bool,
    /// Who may bypass the cache with `Cache-Control: max-age=0`: `"authorized"` (the
    /// default: a key whose usage plan has `invalidate_cache = true`, as API Gateway's
    /// `execute-api:InvalidateCache`), `"anyone"`, or `"never"`. From anyone else the header
    /// is ignored.
    pub invalidation: Option<Spanned<String>>,
    /// Answer `X-Cache: Hit` or `Miss` (default `false`).
    #[serde(default)]
    pub x_cache: bool,
}

/// A request parameter in the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheParam {
    Path(String),
    Query(String),
    /// Lower-case.
    Header(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    Authorized,
    Anyone,
    Never,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub key: Vec<CacheParam>,
    pub max_bytes: u64,
    pub shared: bool,
    pub invalidation: Invalidation,
    pub x_cache: bool,
}

/// API Gateway's bounds on a cache's time to live.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

impl CacheParam {
    pub fn parse(s: &str) -> Option<CacheParam> {
        let s = s.strip_prefix("method.request.").unwrap_or(s);
        let (kind, name) = s.split_once('.')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "path" => Some(CacheParam::Path(name.to_string())),
            "querystring" => Some(CacheParam::Query(name.to_string())),
            "header" => Some(CacheParam::Header(name.to_ascii_lowercase())),
            _ => None,
        }
    }
}

impl Validator<'_> {
    /// A route's `cache`: only on GET (and HEAD) routes.
    pub(super) fn route_cache(
        &mut self,
        raw: Option<&Spanned<RawCache>>,
        route: &str,
        method: Option<&http::Method>,
        path_params: &[&str],
    ) -> Option<CacheSettings> {
        let spanned = raw?;
        let (c, span) = (spanned.get_ref(), spanned.span());
        if !matches!(method, Some(m) if m == http::Method::GET || m == http::Method::HEAD) {
            self.error(
                Some(span.clone()),
                format!("route {route}: cache: only GET and HEAD routes are cached (API Gateway caches GET answers)"),
            );
        }
        let ttl = self.duration(
            c.ttl.as_ref(),
            DEFAULT_TTL,
            &format!("route {route}: cache: ttl"),
        );
        if ttl > MAX_TTL {
            self.error(
                c.ttl.as_ref().map(Spanned::span),
                format!("route {route}: cache: ttl is at most 3600s (API Gateway's bound)"),
            );
        }
        let mut key = Vec::new();
        for k in &c.key {
            match CacheParam::parse(k.get_ref()) {
                Some(CacheParam::Path(name)) if !path_params.contains(&name.as_str()) => self.error(
                    Some(k.span()),
                    format!("route {route}: cache: key {:?}: {name:?} is not a parameter of the route's path", k.get_ref()),
                ),
                Some(p) => key.push(p),
                None => self.error(
                    Some(k.span()),
                    format!("route {route}: cache: key {:?}: use path.NAME, querystring.NAME or header.NAME", k.get_ref()),
                ),
            }
        }
        let max_bytes = c.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes == 0 {
            self.error(
                Some(span.clone()),
                format!("route {route}: cache: max_bytes must be above 0"),
            );
        }
        let invalidation = match c
            .invalidation
            .as_ref()
            .map(|i| (i.get_ref().as_str(), i.span()))
        {
            None | Some(("authorized", _)) => Invalidation::Authorized,
            Some(("anyone", _)) => Invalidation::Anyone,
            Some(("never", _)) => Invalidation::Never,
            Some((other, at)) => {
                self.error(
                    Some(at),
                    format!("route {route}: cache: invalidation {other:?}: use \"authorized\", \"anyone\" or \"never\""),
                );
                Invalidation::Authorized
            }
        };
        Some(CacheSettings {
            ttl,
            key,
            max_bytes,
            shared: c.shared,
            invalidation,
            x_cache: c.x_cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_parameters_parse_in_both_forms() {
        assert_eq!(
            CacheParam::parse("path.deviceId"),
            Some(CacheParam::Path("deviceId".into()))
        );
        assert_eq!(
            CacheParam::parse("method.request.querystring.since"),
            Some(CacheParam::Query("since".into()))
        );
        assert_eq!(
            CacheParam::parse("header.X-Tenant"),
            Some(CacheParam::Header("x-tenant".into()))
        );
        for bad in ["path.", "body.x", "since", ""] {
            assert_eq!(CacheParam::parse(bad), None, "{bad:?}");
        }
    }
}
