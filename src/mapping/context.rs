//! `$context`: the request context variables, in the order API Gateway lists them when a
//! template iterates `$context.keySet()`.

use serde_json::{Map, Value as Json, json};

/// Facts about one request that `$context` exposes.
/// A WebSocket message's own `$context` (`connectionId`, `routeKey`, `eventType`, ...).
#[derive(Debug, Clone)]
pub struct WsFacts {
    pub connection_id: std::sync::Arc<str>,
    pub connected_at: i64,
    pub route_key: String,
    /// `CONNECT`, `MESSAGE` or `DISCONNECT`.
    pub event_type: &'static str,
    pub message_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub request_id: String,
    pub extended_request_id: String,
    pub http_method: String,
    /// The matched route template, e.g. `/v1/events/{id}`.
    pub resource_path: String,
    /// The request path, e.g. `/prod/v1/events/42`.
    pub path: String,
    pub stage: String,
    pub api_id: String,
    pub account_id: String,
    pub domain_name: String,
    pub protocol: String,
    pub source_ip: String,
    pub user_agent: Option<String>,
    pub api_key: Option<String>,
    pub api_key_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub request_time_epoch_ms: i64,
    /// `identity.clientCert`, for mutual-TLS clients.
    pub client_cert: Option<Json>,
    /// `authorizer`: what the route's authorizer established (`claims`, `principalId`).
    pub authorizer: Option<Json>,
    /// `isCanaryRequest`, on a stage with a canary.
    pub is_canary: Option<bool>,
    /// Of a WebSocket message.
    pub ws: Option<WsFacts>,
}

/// Builds the `$context` document. Absent values are JSON null, which templates render as
/// the empty string.
pub fn build(f: &RequestFacts) -> Json {
    let opt = |v: &Option<String>| v.as_ref().map_or(Json::Null, |s| Json::String(s.clone()));
    let domain_prefix = f.domain_name.split('.').next().unwrap_or("").to_string();
    let mut identity = Map::new();
    for key in [
        "cognitoIdentityPoolId",
        "accountId",
        "cognitoIdentityId",
        "caller",
        "sourceIp",
        "principalOrgId",
        "accessKey",
        "cognitoAuthenticationType",
        "cognitoAuthenticationProvider",
        "userArn",
        "userAgent",
        "user",
    ] {
        identity.insert(key.to_string(), Json::Null);
    }
    identity.insert("sourceIp".into(), json!(f.source_ip));
    identity.insert("userAgent".into(), opt(&f.user_agent));
    if let Some(cert) = &f.client_cert {
        identity.insert("clientCert".into(), cert.clone());
    }
    if f.api_key.is_some() {
        identity.insert("apiKey".into(), opt(&f.api_key));
        identity.insert("apiKeyId".into(), opt(&f.api_key_id));
    }
    let mut context = json!({
        "resourceId": short_id(&f.resource_path),
        "resourcePath": f.resource_path,
        "httpMethod": f.http_method,
        "extendedRequestId": f.extended_request_id,
        "requestTime": clf_time(f.request_time_epoch_ms),
        "path": f.path,
        "accountId": f.account_id,
        "protocol": f.protocol,
        "requestOverride": {"path": {}, "header": {}, "querystring": {}},
        "stage": f.stage,
        "domainPrefix": domain_prefix,
        "requestTimeEpoch": f.request_time_epoch_ms,
        "requestId": f.request_id,
        "identity": Json::Object(identity),
        "domainName": f.domain_name,
        "deploymentId": short_id(&format!("{}/{}", f.api_id, f.stage)),
        "responseOverride": {"header": {}},
        "apiId": f.api_id,
    });
    if let (Some(w), Json::Object(m)) = (&f.ws, &mut context) {
        m.insert(
            "connectionId".into(),
            Json::String(w.connection_id.to_string()),
        );
        m.insert("connectedAt".into(), Json::from(w.connected_at));
        m.insert("routeKey".into(), Json::String(w.route_key.clone()));
        m.insert("eventType".into(), Json::String(w.event_type.into()));
        m.insert("messageId".into(), Json::String(w.message_id.clone()));
        m.insert("messageDirection".into(), Json::String("IN".into()));
    }
    if let (Some(c), Json::Object(m)) = (f.is_canary, &mut context) {
        m.insert("isCanaryRequest".into(), Json::Bool(c));
    }
    // Only a request an authorizer admitted has `authorizer` (recorded on API Gateway).
    if let (Some(a), Json::Object(m)) = (&f.authorizer, &mut context) {
        m.insert("authorizer".into(), a.clone());
    }
    context
}

/// A stable id of the shape API Gateway gives resources and deployments (6 lower-case
/// letters and digits), from a name: the same resource path always has the same id.
fn short_id(name: &str) -> String {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..6)
        .map(|_| {
            let c = DIGITS[(h % 36) as usize] as char;
            h /= 36;
            c
        })
        .collect()
}

/// Deep-merges `overrides` into `base` (objects merge key by key; anything else replaces).
pub fn merge(base: &mut Json, overrides: &Json) {
    match (base, overrides) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Common Log Format time, `dd/MMM/yyyy:HH:mm:ss +0000`, in UTC.
pub fn clf_time(epoch_ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = epoch_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_time_formats_utc() {
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf_time(1_764_077_930_000), "25/Nov/2025:13:38:50 +0000");
        assert_eq!(clf_time(951_782_400_000), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn merge_overrides_nested_keys() {
        let mut base = json!({"a": 1, "identity": {"sourceIp": "1.2.3.4", "user": null}});
        merge(
            &mut base,
            &json!({"identity": {"sourceIp": "5.6.7.8"}, "b": 2}),
        );
        assert_eq!(
            base,
            json!({"a": 1, "identity": {"sourceIp": "5.6.7.8", "user": null}, "b": 2})
        );
    }
}
