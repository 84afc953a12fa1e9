//! The public edge's settings: `[server.tls]`, `[server.cors]`, trusted proxies, IP policy,
//! the per-address throttle and the tracker; and a route's own `cors`, `allow_ips`,
//! `deny_ips` and `pixel`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use crate::auth::plans::Throttle;
use crate::edge::client_ip::{IpPolicy, parse_net};
use crate::edge::cors::{Cors, DEFAULT_ALLOW_HEADERS, OriginPattern};
use crate::edge::tls::{SniFiles, TlsFiles};

#[derive(Debug, Clone, Deserialize)]
pub struct RawTls {
    /// The certificate chain (PEM), leaf first.
    pub cert: Spanned<String>,
    /// Its private key (PEM: PKCS#8, RSA or EC).
    pub key: Spanned<String>,
    /// Mutual TLS: every connection must present a certificate signed by one of these
    /// (PEM); its subject, issuer, serial and validity reach templates as
    /// `$context.identity.clientCert.*`.
    pub client_ca: Option<Spanned<String>>,
    /// More certificates, chosen by the name the client asks for (SNI).
    #[serde(default)]
    pub sni: Vec<Spanned<RawSni>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawSni {
    /// Names served with this certificate (`ingest.shop.example`, or `*.shop.example` for
    /// any one label).
    pub names: Vec<String>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawCors {
    /// Origins whose pages may read responses: `https://shop.example`, or
    /// `https://*.shop.example` for its subdomains (never the bare domain), or `*`.
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Request headers pages may send (default: content-type, x-api-key, content-encoding,
    /// authorization).
    pub allow_headers: Option<Vec<String>>,
    /// Response headers pages may read beside the simple ones (default: x-amzn-requestid,
    /// x-amzn-errortype, retry-after, x-ratelimit-limit, x-ratelimit-remaining,
    /// x-ratelimit-reset).
    pub expose_headers: Option<Vec<String>>,
    /// How long a browser may keep a preflight's answer (default `10m`).
    pub max_age: Option<String>,
    /// `Access-Control-Allow-Credentials: true` (cookies); default `false`.
    pub allow_credentials: Option<bool>,
}

/// A route's `cors`: `false`, or a table replacing `[server.cors]` for the route (read
/// from the TOML value, since a table and a boolean share the key).
pub type RawRouteCors = toml::Value;

const CORS_KEYS: [&str; 5] = [
    "allow_origins",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credentials",
];

/// A route's CORS policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RouteCors {
    /// `[server.cors]`, if any.
    #[default]
    Inherit,
    Off,
    Own(Arc<Cors>),
}

/// The edge's validated settings.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub tls: Option<TlsFiles>,
    pub cors: Option<Arc<Cors>>,
    pub trusted_proxies: Vec<IpNet>,
    pub ip_policy: IpPolicy,
    pub ip_throttle: Option<Throttle>,
    /// Whether `GET /sdk/tracker.js` is served.
    pub tracker: bool,
}

impl Edge {
    /// The CORS policy a route's responses follow.
    pub fn cors_for<'a>(&'a self, route: Option<&'a RouteCors>) -> Option<&'a Cors> {
        match route {
            Some(RouteCors::Off) => None,
            Some(RouteCors::Own(c)) => Some(c),
            Some(RouteCors::Inherit) | None => self.cors.as_deref(),
        }
    }
}

impl Validator<'_> {
    pub(super) fn edge(&mut self, raw: &super::server::RawServer, base: &Path) -> Edge {
        let tls = raw.tls.as_ref().map(|t| self.tls(t, base));
        let cors = raw
            .cors
            .as_ref()
            .and_then(|c| self.cors(c, "server.cors"))
            .map(Arc::new);
        let trusted_proxies = self.nets(&raw.trusted_proxies, "server.trusted_proxies");
        let ip_policy = IpPolicy {
            allow: self.nets(&raw.allow_ips, "server.allow_ips"),
            deny: self.nets(&raw.deny_ips, "server.deny_ips"),
        };
        let ip_throttle = raw
            .ip_throttle
            .as_ref()
            .and_then(|t| self.throttle(*t.get_ref(), "server.ip_throttle", Some(t.span())));
        let tracker = raw.tracker.unwrap_or(cors.is_some());
        Edge {
            tls,
            cors,
            trusted_proxies,
            ip_policy,
            ip_throttle,
            tracker,
        }
    }

    fn tls(&mut self, raw: &RawTls, base: &Path) -> TlsFiles {
        let errors_before = self.errors.len();
        let file = |me: &mut Self, v: &Spanned<String>, what: &str| {
            me.named_file(Some(v.span()), base, v.get_ref(), what, Some(1 << 20))
        };
        let cert = file(self, &raw.cert, "server.tls.cert");
        let key = file(self, &raw.key, "server.tls.key");
        let client_ca = raw
            .client_ca
            .as_ref()
            .map(|c| file(self, c, "server.tls.client_ca"));
        let mut sni = Vec::new();
        for s in &raw.sni {
            let r = s.get_ref();
            let cert = file(self, &r.cert, "server.tls.sni cert");
            let key = file(self, &r.key, "server.tls.sni key");
            let mut names = Vec::new();
            for n in &r.names {
                let name = n.trim().to_ascii_lowercase();
                let bare = name.strip_prefix("*.").unwrap_or(&name);
                let ok = !bare.is_empty()
                    && bare.split('.').all(|l| {
                        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if ok {
                    names.push(name);
                } else {
                    self.error(
                        Some(s.span()),
                        format!("server.tls.sni: {n:?} is not a DNS name (or *.name)"),
                    );
                }
            }
            if names.is_empty() {
                self.error(
                    Some(s.span()),
                    "server.tls.sni: names must list at least one name",
                );
            }
            sni.push(SniFiles { names, cert, key });
        }
        let files = TlsFiles {
            cert,
            key,
            client_ca,
            sni,
        };
        // Load them now, so check-config reports a key that does not match its certificate.
        if self.errors.len() == errors_before
            && let Err(e) = crate::edge::tls::Tls::load(&files)
        {
            self.error(Some(raw.cert.span()), format!("server.tls: {e}"));
        }
        files
    }

    pub(super) fn cors(&mut self, raw: &RawCors, what: &str) -> Option<Cors> {
        let mut origins = Vec::new();
        for o in &raw.allow_origins {
            match OriginPattern::parse(o.trim()) {
                Ok(p) => origins.push(p),
                Err(e) => self.error(None, format!("{what}.allow_origins: {e}")),
            }
        }
        if raw.allow_origins.is_empty() {
            self.error(
                None,
                format!("{what}: allow_origins must list at least one origin"),
            );
        }
        let names = |v: &Option<Vec<String>>, default: &[&str]| -> Vec<String> {
            v.as_ref().map_or_else(
                || default.iter().map(|s| (*s).to_string()).collect(),
                |v| v.iter().map(|s| s.trim().to_ascii_lowercase()).collect(),
            )
        };
        let allow_headers = names(&raw.allow_headers, &DEFAULT_ALLOW_HEADERS);
        let expose_headers = names(
            &raw.expose_headers,
            &[
                "x-amzn-requestid",
                "x-amzn-errortype",
                "retry-after",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
            ],
        );
        for h in allow_headers.iter().chain(&expose_headers) {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.error(None, format!("{what}: {h:?} is not a header name"));
            }
        }
        let max_age = match raw.max_age.as_deref().map(super::parse_duration) {
            None => Duration::from_secs(600),
            Some(Some(d)) => d,
            Some(None) => {
                self.error(
                    None,
                    format!("{what}.max_age: not a duration (use e.g. 10m, 600s)"),
                );
                Duration::from_secs(600)
            }
        };
        let allow_credentials = raw.allow_credentials.unwrap_or(false);
        if allow_credentials && origins.contains(&OriginPattern::Any) {
            self.error(
                None,
                format!("{what}: allow_credentials cannot be used with allow_origins = [\"*\"] (every site could read responses with the user's cookies)"),
            );
        }
        Some(Cors {
            origins,
            allow_headers,
            expose_headers,
            max_age,
            allow_credentials,
        })
    }

    pub(super) fn route_cors(&mut self, raw: Option<&RawRouteCors>, route: &str) -> RouteCors {
        let what = format!("route {route}: cors");
        match raw {
            None | Some(toml::Value::Boolean(true)) => RouteCors::Inherit,
            Some(toml::Value::Boolean(false)) => RouteCors::Off,
            Some(v @ toml::Value::Table(t)) => match v.clone().try_into::<RawCors>() {
                Ok(_) if t.keys().any(|k| !CORS_KEYS.contains(&k.as_str())) => {
                    for k in t.keys().filter(|k| !CORS_KEYS.contains(&k.as_str())) {
                        self.error(
                            None,
                            format!(
                                "{what}: unknown field `{k}` (expected one of {})",
                                CORS_KEYS.join(", ")
                            ),
                        );
                    }
                    RouteCors::Inherit
                }
                Ok(c) => self
                    .cors(&c, &what)
                    .map_or(RouteCors::Inherit, |c| RouteCors::Own(Arc::new(c))),
                Err(e) => {
                    self.error(None, format!("{what}: {}", e.message()));
                    RouteCors::Inherit
                }
            },
            Some(_) => {
                self.error(
                    None,
                    format!("{what}: use false, or a table like [server.cors]"),
                );
                RouteCors::Inherit
            }
        }
    }

    pub(super) fn nets(&mut self, raw: &[Spanned<String>], what: &str) -> Vec<IpNet> {
        let mut out = Vec::new();
        for n in raw {
            match parse_net(n.get_ref()) {
                Some(net) => out.push(net),
                None => self.error(
                    Some(n.span()),
                    format!("{what}: {:?} is not an address or CIDR range", n.get_ref()),
                ),
            }
        }
        out
    }
}
