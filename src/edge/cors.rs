//! CORS: which origins may read the gateway's responses, the preflight answer, and the
//! headers every response to an allowed origin carries (errors included, so a page can read
//! why it was refused).
//!
//! Origins are matched exactly (`https://shop.example`), or by a wildcard for one or more
//! subdomain labels (`https://*.shop.example` matches `https://a.shop.example` and
//! `https://a.b.shop.example`, never `https://shop.example` itself nor
//! `https://evilshop.example`), scheme and port included; `*` allows every origin.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};

/// The default `allow_headers`.
pub const DEFAULT_ALLOW_HEADERS: [&str; 4] = [
    "content-type",
    "x-api-key",
    "content-encoding",
    "authorization",
];

/// A validated CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub origins: Vec<OriginPattern>,
    /// Lower-case names, as sent in `Access-Control-Allow-Headers`.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

/// One entry of `allow_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    Exact(String),
    /// `scheme://*.suffix[:port]`: the scheme, `.suffix` and the port (`""` or `:8443`).
    Subdomains {
        scheme: String,
        suffix: String,
        port: String,
    },
}

impl OriginPattern {
    /// Parses an `allow_origins` entry; the error says what is wrong.
    pub fn parse(s: &str) -> Result<OriginPattern, String> {
        if s == "*" {
            return Ok(OriginPattern::Any);
        }
        let lower = s.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(format!("{s:?} is not an origin (scheme://host[:port])"));
        };
        if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "{s:?} is not an origin (scheme://host[:port], no path)"
            ));
        }
        let (host, port) = split_port(rest);
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') || !suffix.contains('.') {
                return Err(format!(
                    "{s:?}: a wildcard stands for subdomains of a registered domain, as https://*.shop.example"
                ));
            }
            return Ok(OriginPattern::Subdomains {
                scheme: scheme.to_string(),
                suffix: format!(".{suffix}"),
                port: port.to_string(),
            });
        }
        if host.contains('*') {
            return Err(format!(
                "{s:?}: a wildcard may only be a whole first label, as https://*.shop.example"
            ));
        }
        Ok(OriginPattern::Exact(lower))
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                let lower = origin.to_ascii_lowercase();
                let Some((s, rest)) = lower.split_once("://") else {
                    return false;
                };
                let (host, p) = split_port(rest);
                let Some(labels) = host.strip_suffix(suffix.as_str()) else {
                    return false;
                };
                s == scheme && p == port && !labels.is_empty() && labels.split('.').all(is_label)
            }
        }
    }
}

/// `host:port` as (`host`, `:port`); IPv6 literals keep their brackets.
fn split_port(s: &str) -> (&str, &str) {
    match s.rfind(':') {
        Some(i) if !s[i..].contains(']') => (&s[..i], &s[i..]),
        _ => (s, ""),
    }
}

/// A DNS label: letters, digits and inner hyphens.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Cors {
    /// Whether `origin` may read responses.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|p| p.matches(origin))
    }

    /// Adds the response headers for an allowed `origin` (always `Vary: Origin`, so caches
    /// keep one answer per origin).
    pub fn decorate(&self, headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
        append_vary_origin(headers);
        let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| self.allows(o))) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !self.expose_headers.is_empty()
            && let Ok(v) = HeaderValue::from_str(&self.expose_headers.join(", "))
        {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }

    /// The preflight answer's headers for an allowed origin asking for `methods` (the
    /// methods the path has).
    pub fn preflight(&self, headers: &mut HeaderMap, origin: &HeaderValue, methods: &str) {
        self.decorate(headers, Some(origin));
        if let Ok(v) = HeaderValue::from_str(methods) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.allow_headers.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(self.max_age.as_secs()),
        );
    }
}

/// `Vary: Origin`, once, beside any other `Vary` the response has.
fn append_vary_origin(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|s| s.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors {
            origins: origins
                .iter()
                .map(|o| OriginPattern::parse(o).unwrap())
                .collect(),
            allow_headers: DEFAULT_ALLOW_HEADERS.map(String::from).to_vec(),
            expose_headers: vec!["x-amzn-requestid".into()],
            max_age: Duration::from_secs(600),
            allow_credentials: false,
        }
    }

    #[test]
    fn exact_origins_match_whole_origins_only() {
        let c = cors(&["https://shop.example"]);
        assert!(c.allows("https://shop.example"));
        assert!(c.allows("HTTPS://Shop.Example"));
        for bad in [
            "https://shop.example.evil.example",
            "https://evilshop.example",
            "http://shop.example",
            "https://shop.example:8443",
            "https://a.shop.example",
            "null",
            "",
        ] {
            assert!(!c.allows(bad), "{bad}");
        }
    }

    #[test]
    fn wildcards_match_subdomain_labels_and_nothing_else() {
        let c = cors(&["https://*.shop.example"]);
        assert!(c.allows("https://a.shop.example"));
        assert!(c.allows("https://a.b-c.shop.example"));
        for bad in [
            "https://shop.example",
            "https://evilshop.example",
            "https://a.shop.example.evil.example",
            "https://.shop.example",
            "https://a..shop.example",
            "https://-a.shop.example",
            "https://a_b.shop.example",
            "http://a.shop.example",
            "https://a.shop.example:444",
            "https://a.shop.example/path",
        ] {
            assert!(!c.allows(bad), "{bad}");
        }
        let with_port = cors(&["http://*.dev.example:8080"]);
        assert!(with_port.allows("http://a.dev.example:8080"));
        assert!(!with_port.allows("http://a.dev.example"));
    }

    #[test]
    fn patterns_that_cannot_be_meant_are_refused() {
        for bad in [
            "shop.example",
            "https://",
            "https://shop.example/",
            "https://*",
            "https://*.example",
            "https://a.*.example",
            "https://sh*p.example",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(OriginPattern::parse("*").unwrap(), OriginPattern::Any);
    }

    #[test]
    fn allowed_origins_get_the_headers_and_others_only_vary() {
        let c = cors(&["https://shop.example"]);
        let mut h = HeaderMap::new();
        c.decorate(
            &mut h,
            Some(&HeaderValue::from_static("https://shop.example")),
        );
        assert_eq!(h["access-control-allow-origin"], "https://shop.example");
        assert_eq!(h["access-control-expose-headers"], "x-amzn-requestid");
        assert_eq!(h["vary"], "Origin");
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        c.decorate(
            &mut h,
            Some(&HeaderValue::from_static("https://evil.example")),
        );
        assert!(!h.contains_key("access-control-allow-origin"));
        assert_eq!(h.get_all("vary").iter().count(), 2);
        c.decorate(&mut h, None);
        assert_eq!(h.get_all("vary").iter().count(), 2, "Vary: Origin once");
    }

    #[test]
    fn a_preflight_names_methods_headers_and_max_age() {
        let c = cors(&["https://shop.example"]);
        let mut h = HeaderMap::new();
        c.preflight(
            &mut h,
            &HeaderValue::from_static("https://shop.example"),
            "POST, OPTIONS",
        );
        assert_eq!(h["access-control-allow-methods"], "POST, OPTIONS");
        assert_eq!(
            h["access-control-allow-headers"],
            "content-type, x-api-key, content-encoding, authorization"
        );
        assert_eq!(h["access-control-max-age"], "600");
    }
}
