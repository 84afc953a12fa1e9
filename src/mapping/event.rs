//! A request as API Gateway's Lambda events show it (REST APIs, payload format 1.0): the
//! parts a REQUEST authorizer's event and a proxy integration's event share, and the
//! `methodArn` authorizer policies are written against. Pure: no I/O.

use http::HeaderMap;
use serde_json::{Map, Value as Json, json};

/// What an event says about one request.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub method: &'a str,
    /// The request's path, without the stage.
    pub path: &'a str,
    /// The matched route template, e.g. `/v1/devices/{id}`.
    pub resource: &'a str,
    pub headers: &'a HeaderMap,
    pub query: &'a [(String, String)],
    pub path_params: &'a [(String, String)],
    pub stage_variables: &'a indexmap::IndexMap<String, String>,
    pub stage: &'a str,
    pub request_id: &'a str,
    pub source_ip: &'a str,
    pub api_key: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub account_id: &'a str,
    pub api_id: &'a str,
    pub region: &'a str,
    pub epoch_ms: i64,
}

impl EventFacts<'_> {
    /// `arn:aws:execute-api:{region}:{account}:{apiId}/{stage}/{METHOD}/{path}`, the path
    /// without its leading slash, as API Gateway gives authorizers.
    pub fn method_arn(&self) -> String {
        format!(
            "arn:aws:execute-api:{}:{}:{}/{}/{}/{}",
            self.region,
            self.account_id,
            self.api_id,
            self.stage,
            self.method,
            self.path.trim_start_matches('/')
        )
    }

    /// `headers` and `multiValueHeaders` (names as received, lower-case here; values that
    /// are not UTF-8 are replaced).
    pub fn headers(&self) -> (Json, Json) {
        single_and_multi(self.headers.iter().map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        }))
    }

    /// `queryStringParameters` and `multiValueQueryStringParameters`: null when there are
    /// none, as API Gateway sends them.
    pub fn query(&self) -> (Json, Json) {
        if self.query.is_empty() {
            return (Json::Null, Json::Null);
        }
        single_and_multi(self.query.iter().cloned())
    }

    /// `pathParameters`, null when the route has none.
    pub fn path_parameters(&self) -> Json {
        strings_or_null(self.path_params.iter().map(|(k, v)| (k, v)))
    }

    /// `stageVariables`, null when there are none.
    pub fn stage_variables(&self) -> Json {
        strings_or_null(self.stage_variables.iter())
    }

    /// `requestContext`; `authorizer` is what an authorizer established, when one ran.
    pub fn request_context(&self, authorizer: Option<Json>) -> Json {
        let user_agent = self
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| Json::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .unwrap_or(Json::Null);
        let mut ctx = json!({
            "resourceId": Json::Null,
            "resourcePath": self.resource,
            "httpMethod": self.method,
            "extendedRequestId": self.request_id.replace('-', ""),
            "requestTime": super::context::clf_time(self.epoch_ms),
            "path": format!("/{}{}", self.stage, self.path),
            "accountId": self.account_id,
            "protocol": "HTTP/1.1",
            "stage": self.stage,
            "domainPrefix": self.api_id,
            "requestTimeEpoch": self.epoch_ms,
            "requestId": self.request_id,
            "identity": {
                "cognitoIdentityPoolId": null,
                "accountId": null,
                "cognitoIdentityId": null,
                "caller": null,
                "sourceIp": self.source_ip,
                "principalOrgId": null,
                "accessKey": null,
                "cognitoAuthenticationType": null,
                "cognitoAuthenticationProvider": null,
                "userArn": null,
                "userAgent": user_agent,
                "user": null,
                "apiKey": self.api_key,
                "apiKeyId": self.api_key_id,
            },
            "apiId": self.api_id,
        });
        if let Some(a) = authorizer {
            ctx["authorizer"] = a;
        }
        ctx
    }

    /// A proxy integration's event (REST's payload format 1.0): the request, its body as
    /// text, or base64 (`isBase64Encoded`) when `binary` or not UTF-8; null when empty.
    pub fn proxy(&self, body: &[u8], binary: bool, authorizer: Option<Json>) -> Json {
        let (headers, multi_headers) = self.headers();
        let (query, multi_query) = self.query();
        let (body, encoded) = if body.is_empty() {
            (Json::Null, false)
        } else {
            match (binary, std::str::from_utf8(body)) {
                (false, Ok(text)) => (Json::String(text.to_string()), false),
                _ => {
                    use base64::Engine as _;
                    (
                        Json::String(base64::engine::general_purpose::STANDARD.encode(body)),
                        true,
                    )
                }
            }
        };
        json!({
            "resource": self.resource,
            "path": self.path,
            "httpMethod": self.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": self.path_parameters(),
            "stageVariables": self.stage_variables(),
            "requestContext": self.request_context(authorizer),
            "body": body,
            "isBase64Encoded": encoded,
        })
    }

    /// A REQUEST authorizer's event.
    pub fn request_authorizer(&self) -> Json {
        let (headers, multi_headers) = self.headers();
        let (query, multi_query) = self.query();
        json!({
            "type": "REQUEST",
            "methodArn": self.method_arn(),
            "resource": self.resource,
            "path": self.path,
            "httpMethod": self.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": self.path_parameters(),
            "stageVariables": self.stage_variables(),
            "requestContext": self.request_context(None),
        })
    }
}

/// API Gateway's pair of maps for repeated names: the last value of each, and all of them.
fn single_and_multi(pairs: impl Iterator<Item = (String, String)>) -> (Json, Json) {
    let mut single = Map::new();
    let mut multi: Map<String, Json> = Map::new();
    for (k, v) in pairs {
        single.insert(k.clone(), Json::String(v.clone()));
        match multi.get_mut(&k) {
            Some(Json::Array(values)) => values.push(Json::String(v)),
            _ => {
                multi.insert(k, json!([v]));
            }
        }
    }
    (Json::Object(single), Json::Object(multi))
}

/// A map of strings, or null when empty.
fn strings_or_null<'a>(pairs: impl ExactSizeIterator<Item = (&'a String, &'a String)>) -> Json {
    if pairs.len() == 0 {
        return Json::Null;
    }
    Json::Object(
        pairs
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

/// A TOKEN authorizer's event.
pub fn token_authorizer(token: &str, method_arn: &str) -> Json {
    json!({
        "type": "TOKEN",
        "authorizationToken": token,
        "methodArn": method_arn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_event_has_api_gateways_fields() {
        let mut headers = HeaderMap::new();
        headers.append("x-webhook-secret", "s3cret".parse().unwrap());
        headers.append("accept", "a".parse().unwrap());
        headers.append("accept", "b".parse().unwrap());
        let query = vec![("q".to_string(), "1".to_string()), ("q".into(), "2".into())];
        let params = vec![("source".to_string(), "github".to_string())];
        let stage_variables = indexmap::IndexMap::new();
        let facts = EventFacts {
            method: "POST",
            path: "/hooks/github",
            resource: "/hooks/{source}",
            headers: &headers,
            query: &query,
            path_params: &params,
            stage_variables: &stage_variables,
            stage: "prod",
            request_id: "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            source_ip: "192.0.2.1",
            api_key: None,
            api_key_id: None,
            account_id: "123456789012",
            api_id: "ingest-gateway",
            region: "us-east-1",
            epoch_ms: 1_700_000_000_000,
        };
        let e = facts.request_authorizer();
        assert_eq!(e["type"], "REQUEST");
        assert_eq!(
            e["methodArn"],
            "arn:aws:execute-api:us-east-1:123456789012:ingest-gateway/prod/POST/hooks/github"
        );
        assert_eq!(e["resource"], "/hooks/{source}");
        assert_eq!(e["headers"]["accept"], "b");
        assert_eq!(e["multiValueHeaders"]["accept"], json!(["a", "b"]));
        assert_eq!(e["queryStringParameters"], json!({"q": "2"}));
        assert_eq!(
            e["multiValueQueryStringParameters"],
            json!({"q": ["1", "2"]})
        );
        assert_eq!(e["pathParameters"], json!({"source": "github"}));
        assert_eq!(e["stageVariables"], Json::Null);
        assert_eq!(e["requestContext"]["path"], "/prod/hooks/github");
        assert_eq!(e["requestContext"]["identity"]["sourceIp"], "192.0.2.1");
        assert_eq!(e["requestContext"]["resourcePath"], "/hooks/{source}");
        let t = token_authorizer("Bearer x", "arn:1");
        assert_eq!(
            t,
            json!({"type": "TOKEN", "authorizationToken": "Bearer x", "methodArn": "arn:1"})
        );
    }
}
