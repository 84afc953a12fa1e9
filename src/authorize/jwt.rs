//! JWT authorizers (any OIDC issuer, and Cognito user pools): the token a request carries,
//! verified against its issuer's signing keys (JWKS, fetched and cached), its times, issuer,
//! audience and (Cognito) `token_use`; its claims become `$context.authorizer.claims`.
//!
//! Only asymmetric algorithms are accepted (RS*, PS*, ES256, ES384, EdDSA): `alg: none` and
//! HMAC (a public key used as a shared secret) are refused before any key is looked up, and
//! a JWKS's symmetric keys are never loaded. A token naming a key the cache does not have
//! makes at most one refetch per [`REFETCH_EVERY`], shared by every request waiting on it,
//! so a flood of made-up `kid`s cannot become a flood of JWKS fetches; keys the issuer
//! rotates in are found that way, without a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http_body_util::BodyExt as _;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value as Json};

use crate::config::authorizers::{JwtAuthorizer, TokenSource};
use crate::request::Request;

/// Longest token read (API Gateway's limit for an identity source is 8 KiB; JWTs with many
/// groups run larger).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// An unknown `kid` refetches the keys at most this often.
pub const REFETCH_EVERY: Duration = Duration::from_secs(10);
/// Keys are refetched when older than this, on the next verification.
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: u64 = 30;
/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token was refused (for the log; the client sees 401 `Unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// A verified token: its claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Arc<Map<String, Json>>,
}

/// A verified token's claims, shared.
type Claims = Arc<Map<String, Json>>;

/// Verified tokens kept, at most (a full cache is emptied of expired entries, then whole).
const MAX_VERIFIED: usize = 100_000;

type Client = crate::outbound::Client;

/// An issuer's keys, cached.
struct Keys {
    issuer: String,
    /// Where the JWKS is; found from the OpenID configuration when not configured.
    url: tokio::sync::OnceCell<String>,
    configured_url: Option<String>,
    set: ArcSwap<KeySet>,
    /// Held while fetching: requests waiting on one fetch share it.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    /// Keys without a `kid` (used only when the set has exactly one key).
    unnamed: Vec<(DecodingKey, Option<Algorithm>)>,
    fetched: Option<Instant>,
}

/// A configured JWT authorizer, ready to verify.
pub struct JwtVerifier {
    config: JwtAuthorizer,
    keys: Vec<Keys>,
    client: Client,
    /// Tokens already verified, by SHA-256 of the whole token: until their `exp` a repeat
    /// costs a hash and a lookup, not a signature check.
    verified: dashmap::DashMap<[u8; 32], (f64, Claims)>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("name", &self.config.name)
            .finish()
    }
}

impl JwtVerifier {
    /// The verifier; fails only when no TLS client can be built for fetching keys.
    pub fn new(config: JwtAuthorizer) -> Result<JwtVerifier, String> {
        let keys = config
            .issuers
            .iter()
            .map(|(issuer, url)| Keys {
                issuer: issuer.clone(),
                url: tokio::sync::OnceCell::new(),
                configured_url: url.clone(),
                set: ArcSwap::from_pointee(KeySet::default()),
                fetching: tokio::sync::Mutex::new(None),
            })
            .collect();
        // Without system CAs, http:// issuers (and none over https) still work.
        let client = crate::outbound::client(FETCH_TIMEOUT, None)
            .map_err(|e| format!("TLS for fetching signing keys: {e}"))?;
        Ok(JwtVerifier {
            config,
            keys,
            client,
            verified: dashmap::DashMap::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The token a request carries at the authorizer's identity source, `Bearer ` removed.
    pub fn token<'a>(&self, req: &'a Request) -> Option<std::borrow::Cow<'a, str>> {
        let raw: std::borrow::Cow<'a, str> = match &self.config.source {
            TokenSource::Header(name) => {
                std::borrow::Cow::Borrowed(req.headers.get(name.as_str())?.to_str().ok()?)
            }
            TokenSource::Query(name) => std::borrow::Cow::Borrowed(req.query_param(name)?),
            TokenSource::Cookie(name) => std::borrow::Cow::Owned(cookie(req, name)?),
        };
        let trimmed = raw.trim();
        let token = match trimmed.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => trimmed[7..].trim(),
            _ => trimmed,
        };
        if token.is_empty() {
            return None;
        }
        Some(std::borrow::Cow::Owned(token.to_string()))
    }

    /// Verifies a token (once: a repeat within its lifetime is answered from the cache).
    pub async fn verify(&self, token: &str) -> Result<Verified, Refused> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refused("token longer than 16 KiB".into()));
        }
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Some(hit) = self.verified.get(&digest) {
            let (exp, claims) = hit.value();
            if *exp > now {
                return Ok(Verified {
                    claims: claims.clone(),
                });
            }
        }
        let verified = self.verify_uncached(token).await?;
        if let Some(exp) = verified.claims.get("exp").and_then(Json::as_f64) {
            if self.verified.len() >= MAX_VERIFIED {
                self.verified.retain(|_, (e, _)| *e > now);
                if self.verified.len() >= MAX_VERIFIED {
                    self.verified.clear();
                }
            }
            self.verified.insert(digest, (exp, verified.claims.clone()));
        }
        Ok(verified)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Verified, Refused> {
        let refuse = |why: &str| Refused(why.to_string());
        if token.split('.').count() != 3 {
            return Err(refuse("not a JWS compact token (three segments)"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Refused(format!("header: {e}")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(Refused(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        // Which issuer: read the unverified `iss` only to pick the keys; it is verified below.
        let iss = unverified_issuer(token).ok_or_else(|| refuse("no iss claim"))?;
        let keys = self
            .keys
            .iter()
            .find(|k| k.issuer == iss.trim_end_matches('/'))
            .ok_or_else(|| Refused(format!("issuer {iss:?} is not this authorizer's")))?;
        let (key, key_alg) = self.key(keys, header.kid.as_deref()).await?;
        if key_alg.is_some_and(|a| a != header.alg) {
            return Err(refuse("the token's algorithm is not its key's"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[keys.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data = jsonwebtoken::decode::<Map<String, Json>>(token, &key, &validation)
            .map_err(|e| Refused(format!("{e}")))?;
        let claims = data.claims;
        if let Some(iat) = claims.get("iat").and_then(Json::as_f64) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            if iat > now + LEEWAY_SECONDS as f64 {
                return Err(refuse("issued in the future (iat)"));
            }
        }
        if self.config.cognito {
            match claims.get("token_use").and_then(Json::as_str) {
                Some("id" | "access") => {}
                _ => return Err(refuse("token_use is neither id nor access")),
            }
        }
        if !self.config.audiences.is_empty() {
            let aud: Vec<&str> = match claims.get("aud") {
                Some(Json::String(s)) => vec![s.as_str()],
                Some(Json::Array(a)) => a.iter().filter_map(Json::as_str).collect(),
                _ => claims
                    .get("client_id")
                    .and_then(Json::as_str)
                    .into_iter()
                    .collect(),
            };
            if !aud
                .iter()
                .any(|a| self.config.audiences.iter().any(|x| x == a))
            {
                return Err(refuse("audience (aud / client_id) is not accepted"));
            }
        }
        Ok(Verified {
            claims: Arc::new(claims),
        })
    }

    /// The key a token names, fetching the issuer's keys when they are missing, old, or do
    /// not have it (at most once per `REFETCH_EVERY`).
    async fn key(
        &self,
        keys: &Keys,
        kid: Option<&str>,
    ) -> Result<(DecodingKey, Option<Algorithm>), Refused> {
        let find = |set: &KeySet| -> Option<(DecodingKey, Option<Algorithm>)> {
            match kid {
                Some(k) => set.by_kid.get(k).cloned(),
                None if set.by_kid.len() + set.unnamed.len() == 1 => {
                    set.by_kid.values().next().or(set.unnamed.first()).cloned()
                }
                None => None,
            }
        };
        let set = keys.set.load();
        let stale = set.fetched.is_none_or(|t| t.elapsed() > MAX_KEY_AGE);
        if !stale && let Some(found) = find(&set) {
            return Ok(found);
        }
        drop(set);
        {
            let mut last = keys.fetching.lock().await;
            // Another request may have fetched while this one waited.
            let set = keys.set.load();
            let fresh = set.fetched.is_some_and(|t| t.elapsed() <= MAX_KEY_AGE);
            if fresh && let Some(found) = find(&set) {
                return Ok(found);
            }
            let may_fetch = last.is_none_or(|t| t.elapsed() >= REFETCH_EVERY) || !fresh;
            if may_fetch {
                *last = Some(Instant::now());
                match self.fetch(keys).await {
                    Ok(new) => keys.set.store(Arc::new(new)),
                    Err(e) => {
                        tracing::warn!(authorizer = %self.config.name, issuer = %keys.issuer, error = %e, "Fetching the signing keys failed.")
                    }
                }
            }
        }
        find(&keys.set.load()).ok_or_else(|| Refused(format!("no signing key {kid:?}")))
    }

    async fn fetch(&self, keys: &Keys) -> Result<KeySet, String> {
        let url = match &keys.configured_url {
            Some(u) => u.clone(),
            None => keys
                .url
                .get_or_try_init(|| async {
                    let doc = self
                        .get_json(&format!("{}/.well-known/openid-configuration", keys.issuer))
                        .await?;
                    doc.get("jwks_uri")
                        .and_then(Json::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| "the OpenID configuration has no jwks_uri".to_string())
                })
                .await?
                .clone(),
        };
        let doc = self.get_json(&url).await;
        let outcome = if doc.is_ok() { "ok" } else { "failed" };
        metrics::counter!(crate::telemetry::names::JWKS_FETCHES, "authorizer" => self.config.name.clone(), "result" => outcome).increment(1);
        let doc = doc?;
        let set: JwkSet =
            serde_json::from_value(doc).map_err(|e| format!("{url}: not a JWKS: {e}"))?;
        let mut out = KeySet {
            fetched: Some(Instant::now()),
            ..KeySet::default()
        };
        for jwk in &set.keys {
            // Symmetric keys never verify tokens here (see the module's comment).
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let key = match DecodingKey::from_jwk(jwk) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(authorizer = %self.config.name, kid = ?jwk.common.key_id, error = %e, "A signing key of the JWKS was skipped.");
                    continue;
                }
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            match &jwk.common.key_id {
                Some(kid) => {
                    out.by_kid.insert(kid.clone(), (key, alg));
                }
                None => out.unnamed.push((key, alg)),
            }
        }
        tracing::info!(authorizer = %self.config.name, issuer = %keys.issuer, keys = out.by_kid.len() + out.unnamed.len(), "Fetched the signing keys.");
        Ok(out)
    }

    async fn get_json(&self, url: &str) -> Result<Json, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let get = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: HTTP {}", resp.status()));
            }
            let body = http_body_util::Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
        };
        tokio::time::timeout(FETCH_TIMEOUT, get)
            .await
            .map_err(|_| format!("{url}: no answer within {FETCH_TIMEOUT:?}"))?
    }
}

/// The `iss` of a token's payload, unverified.
/// A cookie's value (the first of that name).
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| v.to_string())
            })
        })
}

fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Map<String, Json> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// Claims as REST APIs give them to templates: every value a string (objects and lists as
/// their JSON text).
pub fn claims_as_strings(claims: &Map<String, Json>) -> Map<String, Json> {
    claims
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Json::String(s))
        })
        .collect()
}

/// The scopes a token grants (`scope`, space-separated, or `scp`, a list or a string).
pub fn scopes(claims: &Map<String, Json>) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["scope", "scp"] {
        match claims.get(key) {
            Some(Json::String(s)) => out.extend(s.split_whitespace().map(str::to_string)),
            Some(Json::Array(a)) => {
                out.extend(a.iter().filter_map(Json::as_str).map(str::to_string))
            }
            _ => {}
        }
    }
    out
}
