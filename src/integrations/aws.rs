//! Any action of the AWS services the gateway knows the protocol of (`aws:dynamodb:PutItem`,
//! `aws:events:PutEvents`, `aws:sns:Publish`, ...), as API Gateway's "AWS service"
//! integration: the rendered template is the request body of the service's own API (JSON
//! 1.0/1.1 with `X-Amz-Target`, or the query protocol's form), signed with SigV4
//! (`aws-sigv4`, with the SDK's credential chain), and sent to the service's regional
//! endpoint or the endpoint override. The answer (JSON; the query protocol's XML as text)
//! goes through integration responses, an error as its code and message.
//!
//! The route's `target` pins the resource (table, event bus, topic, log group): a rendered
//! request naming another is refused before any call, and one naming none gets it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials as _;
use axum::body::Bytes;
use http_body_util::Full;
use serde_json::{Value as Json, json};

use super::{Action, Call, CallFuture, Integration, IntegrationError};
use crate::upstream::AwsAction;

/// How a service's API is spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `application/x-amz-json-1.0` or `-1.1`, the operation in `X-Amz-Target`.
    Json {
        version: &'static str,
        target_prefix: &'static str,
    },
    /// Form-encoded `Action=...&Version=...`, answered in XML.
    Query { version: &'static str },
    /// S3's REST protocol: the operation is the method, the object the path
    /// (`/BUCKET/KEY`), the rendered template the body.
    Rest,
}

/// A service the gateway can call by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// As in `aws:NAME:Operation`, and the endpoint's prefix.
    pub name: &'static str,
    /// SigV4's service name.
    pub signing_name: &'static str,
    pub protocol: Protocol,
    /// The request field the route's `target` pins, if any.
    pub target_field: Option<&'static str>,
    /// `SERVICE` in `AWS_ENDPOINT_URL_SERVICE`.
    pub env_name: &'static str,
}

/// The services `aws:SERVICE:Operation` routes may call.
pub const SERVICES: [Service; 10] = [
    Service {
        name: "dynamodb",
        signing_name: "dynamodb",
        protocol: Protocol::Json {
            version: "1.0",
            target_prefix: "DynamoDB_20120810",
        },
        target_field: Some("TableName"),
        env_name: "DYNAMODB",
    },
    Service {
        name: "events",
        signing_name: "events",
        protocol: Protocol::Json {
            version: "1.1",
            target_prefix: "AWSEvents",
        },
        target_field: Some("EventBusName"),
        env_name: "EVENTBRIDGE",
    },
    Service {
        name: "sns",
        signing_name: "sns",
        protocol: Protocol::Query {
            version: "2010-03-31",
        },
        target_field: Some("TopicArn"),
        env_name: "SNS",
    },
    Service {
        name: "sqs",
        signing_name: "sqs",
        protocol: Protocol::Json {
            version: "1.0",
            target_prefix: "AmazonSQS",
        },
        target_field: Some("QueueUrl"),
        env_name: "SQS",
    },
    Service {
        name: "kinesis",
        signing_name: "kinesis",
        protocol: Protocol::Json {
            version: "1.1",
            target_prefix: "Kinesis_20131202",
        },
        target_field: Some("StreamName"),
        env_name: "KINESIS",
    },
    Service {
        name: "firehose",
        signing_name: "firehose",
        protocol: Protocol::Json {
            version: "1.1",
            target_prefix: "Firehose_20150804",
        },
        target_field: Some("DeliveryStreamName"),
        env_name: "FIREHOSE",
    },
    Service {
        name: "states",
        signing_name: "states",
        protocol: Protocol::Json {
            version: "1.0",
            target_prefix: "AWSStepFunctions",
        },
        target_field: Some("stateMachineArn"),
        env_name: "SFN",
    },
    Service {
        name: "logs",
        signing_name: "logs",
        protocol: Protocol::Json {
            version: "1.1",
            target_prefix: "Logs_20140328",
        },
        target_field: Some("logGroupName"),
        env_name: "CLOUDWATCH_LOGS",
    },
    Service {
        name: "s3",
        signing_name: "s3",
        protocol: Protocol::Rest,
        target_field: None,
        env_name: "S3",
    },
    Service {
        name: "monitoring",
        signing_name: "monitoring",
        protocol: Protocol::Query {
            version: "2010-08-01",
        },
        target_field: None,
        env_name: "CLOUDWATCH",
    },
];

/// A well-formed `aws:SERVICE:Operation` the gateway itself names (a batch call, say).
pub fn action(name: &'static str) -> AwsAction {
    match AwsAction::parse(name) {
        Some(a) => a,
        None => unreachable!("{name} is a well-formed action"),
    }
}

/// One of [`SERVICES`], by name.
pub fn known(name: &str) -> &'static Service {
    match SERVICES.iter().find(|s| s.name == name) {
        Some(s) => s,
        None => unreachable!("{name} is one of the services the gateway knows"),
    }
}

/// The service of an `aws:SERVICE:Operation` action, if the gateway knows it: one of
/// [`SERVICES`], or one configuration described (`[aws.services.NAME]`, see [`declare`]).
pub fn service(action: AwsAction) -> Option<&'static Service> {
    let name = action.service();
    SERVICES.iter().find(|s| s.name == name).or_else(|| {
        DECLARED
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|s| s.name == name)
            .copied()
    })
}

/// Services configuration described, newest last (a reloaded configuration's description
/// wins; each distinct description is kept once).
static DECLARED: std::sync::RwLock<Vec<&'static Service>> = std::sync::RwLock::new(Vec::new());

/// A service the gateway does not know, as configuration describes it: `[aws.services.NAME]`
/// with its protocol. Returns the service `aws:NAME:Operation` routes then call.
pub fn declare(
    name: &str,
    signing_name: &str,
    protocol: Protocol,
    target_field: Option<&str>,
) -> &'static Service {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let mut declared = DECLARED.write().unwrap_or_else(|p| p.into_inner());
    let same = |s: &&&'static Service| {
        s.name == name
            && s.signing_name == signing_name
            && s.protocol == protocol
            && s.target_field == target_field
    };
    if let Some(i) = declared.iter().position(|s| same(&s)) {
        // Described again (a reload): it becomes the newest.
        let s = declared.remove(i);
        declared.push(s);
        return s;
    }
    let service: &'static Service = Box::leak(Box::new(Service {
        name: leak(name),
        signing_name: leak(signing_name),
        protocol,
        target_field: target_field.map(leak),
        env_name: leak(&name.to_ascii_uppercase().replace('-', "_")),
    }));
    declared.push(service);
    service
}

/// Largest answer read.
pub const MAX_ANSWER_BYTES: usize = 10 * 1024 * 1024;

/// Signs and sends requests to services' APIs: the credentials (refreshed before they
/// expire), the region and the endpoint override.
#[derive(Clone)]
pub struct Signer {
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    cached: Arc<std::sync::Mutex<Option<aws_credential_types::Credentials>>>,
    pub region: String,
    endpoint: Option<String>,
    client: Option<crate::outbound::Client>,
    /// The longest one attempt may take (`aws.call_timeout`), as the SDKs' clients have it.
    attempt: Option<Duration>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Signer {
    pub fn new(shared: &aws_config::SdkConfig) -> Signer {
        let connect_timeout = shared
            .timeout_config()
            .and_then(|t| t.connect_timeout())
            .unwrap_or(Duration::from_secs(2));
        Signer {
            credentials: shared.credentials_provider(),
            cached: Arc::default(),
            region: shared
                .region()
                .map_or_else(|| "us-east-1".to_string(), ToString::to_string),
            endpoint: shared.endpoint_url().map(str::to_string),
            attempt: shared
                .timeout_config()
                .and_then(|t| t.operation_attempt_timeout()),
            client: crate::outbound::client(connect_timeout, None)
                .inspect_err(
                    |e| tracing::error!(error = %e, "No HTTP client for AWS service actions."),
                )
                .ok(),
        }
    }

    /// How long one attempt may take to be answered by `deadline`: the time left, or less
    /// (`aws.call_timeout`), so that a call that hangs is tried again while there is time.
    pub fn attempt_timeout(&self, deadline: tokio::time::Instant) -> Duration {
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(1));
        self.attempt.map_or(left, |a| a.min(left))
    }

    /// The service's endpoint: `AWS_ENDPOINT_URL_{SERVICE}`, the override, or AWS's own.
    pub fn endpoint(&self, service: &Service) -> String {
        std::env::var(format!("AWS_ENDPOINT_URL_{}", service.env_name))
            .ok()
            .filter(|e| !e.is_empty())
            .or_else(|| self.endpoint.clone())
            .unwrap_or_else(|| format!("https://{}.{}.amazonaws.com", service.name, self.region))
            .trim_end_matches('/')
            .to_string()
    }

    async fn credentials(
        &self,
        action: Action,
    ) -> Result<aws_credential_types::Credentials, IntegrationError> {
        let fresh = |c: &aws_credential_types::Credentials| {
            c.expiry().is_none_or(|at| {
                at.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            })
        };
        if let Some(c) = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|c| fresh(c))
        {
            return Ok(c.clone());
        }
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| IntegrationError::Transport {
                action,
                detail: "no AWS credentials are configured".into(),
            })?;
        let c = provider
            .provide_credentials()
            .await
            .map_err(|e| IntegrationError::Transport {
                action,
                detail: format!("AWS credentials: {e}"),
            })?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Signs and sends one request to `service`; the answer's status, headers and body.
    pub async fn send(
        &self,
        action: Action,
        service: &Service,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<crate::outbound::Answer, IntegrationError> {
        self.send_to(action, service, ("POST", "/"), headers, body, timeout)
            .await
    }

    /// One call of a JSON or query action with a request body (the `target` pinned), to be
    /// answered by `deadline`: the answer as integration responses see it, or its error.
    pub async fn call(
        &self,
        action: AwsAction,
        target: Option<&str>,
        body: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Json, IntegrationError> {
        let act = Action::Aws(action);
        let service = service(action).ok_or_else(|| IntegrationError::InvalidRequest {
            action: act,
            detail: format!(
                "the gateway does not know the protocol of {}",
                action.service()
            ),
        })?;
        let (headers, body) = prepare(action, service, target, body)?;
        let timeout = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(1));
        let answered = self.send(act, service, headers, body, timeout).await?;
        answer(act, service, answered.status.as_u16(), &answered.body)
    }

    /// As [`Signer::send`], with another method and path (S3's REST protocol).
    pub async fn send_to(
        &self,
        action: Action,
        service: &Service,
        (method, path): (&str, &str),
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<crate::outbound::Answer, IntegrationError> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| IntegrationError::Transport {
                action,
                detail: "no HTTP client".into(),
            })?;
        let url = format!("{}{path}", self.endpoint(service));
        let credentials = self.credentials(action).await?;
        let request = Unsigned {
            service,
            method,
            url: &url,
            headers: &headers,
            body,
        };
        let req = signed(
            action,
            &credentials,
            &self.region,
            request,
            SystemTime::now(),
        )?;
        let answered = crate::outbound::send(client, req, timeout, MAX_ANSWER_BYTES)
            .await
            .map_err(|f| match f {
                crate::outbound::Failure::Timeout => IntegrationError::Timeout { action, timeout },
                other => IntegrationError::Transport {
                    action,
                    detail: other.to_string(),
                },
            })?;
        super::headers::record(&answered.headers);
        Ok(answered)
    }
}

/// SigV4's settings for a service: S3 signs its payload's hash in `x-amz-content-sha256`
/// and its paths as they are.
fn settings(service: &Service) -> aws_sigv4::http_request::SigningSettings {
    let mut s = aws_sigv4::http_request::SigningSettings::default();
    if service.protocol == Protocol::Rest {
        s.payload_checksum_kind = aws_sigv4::http_request::PayloadChecksumKind::XAmzSha256;
        s.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
        s.uri_path_normalization_mode = aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
    }
    s
}

/// A request to a service before it is signed.
pub struct Unsigned<'a> {
    pub service: &'a Service,
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub body: Vec<u8>,
}

/// The request as a POST, signed with SigV4 for its service in `region` at `time`.
pub fn signed(
    action: Action,
    credentials: &aws_credential_types::Credentials,
    region: &str,
    request: Unsigned<'_>,
    time: SystemTime,
) -> Result<http::Request<Full<Bytes>>, IntegrationError> {
    let failed = |e: String| IntegrationError::InvalidRequest {
        action,
        detail: format!("signing: {e}"),
    };
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(request.service.signing_name)
        .time(time)
        .settings(settings(request.service))
        .build()
        .map_err(|e| failed(e.to_string()))?
        .into();
    let signable = aws_sigv4::http_request::SignableRequest::new(
        request.method,
        request.url,
        request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        aws_sigv4::http_request::SignableBody::Bytes(&request.body),
    )
    .map_err(|e| failed(e.to_string()))?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| failed(e.to_string()))?
        .into_parts();
    let mut req = http::Request::new(Full::new(Bytes::from(request.body)));
    *req.method_mut() =
        http::Method::from_bytes(request.method.as_bytes()).map_err(|e| failed(e.to_string()))?;
    *req.uri_mut() = request
        .url
        .parse()
        .map_err(|e| failed(format!("the endpoint {}: {e}", request.url)))?;
    for (k, v) in request.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::try_from(k.as_str()),
            http::HeaderValue::try_from(v.as_str()),
        ) {
            req.headers_mut().insert(n, v);
        }
    }
    instructions.apply_to_request_http1x(&mut req);
    Ok(req)
}

/// A request's headers and body, ready to sign.
pub type Prepared = (Vec<(String, String)>, Vec<u8>);

/// What a rendered request becomes: headers and body, the target pinned.
pub fn prepare(
    action: AwsAction,
    service: &Service,
    target: Option<&str>,
    rendered: &str,
) -> Result<Prepared, IntegrationError> {
    let act = Action::Aws(action);
    let invalid = |detail: String| IntegrationError::InvalidRequest {
        action: act,
        detail,
    };
    match service.protocol {
        Protocol::Json {
            version,
            target_prefix,
        } => {
            let mut body: Json = if rendered.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(rendered)
                    .map_err(|e| invalid(format!("the rendered request is not JSON: {e}")))?
            };
            if !body.is_object() {
                return Err(invalid("the rendered request is not a JSON object".into()));
            }
            pin_json(act, service, target, &mut body)?;
            Ok((
                json_headers(version, target_prefix, action.operation()),
                body.to_string().into_bytes(),
            ))
        }
        Protocol::Rest => Ok((
            vec![("content-type".into(), "application/json".into())],
            rendered.as_bytes().to_vec(),
        )),
        Protocol::Query { version } => {
            // A template renders the form itself (as API Gateway's SNS templates do), or a
            // JSON object of parameters.
            let mut pairs: Vec<(String, String)> = match serde_json::from_str::<Json>(rendered) {
                Ok(Json::Object(m)) => m
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Json::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, v)
                    })
                    .collect(),
                _ => super::request::form_pairs(rendered).map_err(invalid)?,
            };
            pairs.retain(|(k, _)| k != "Action" && k != "Version");
            if let (Some(field), Some(t)) = (service.target_field, target) {
                match pairs.iter().find(|(k, _)| k == field) {
                    Some((_, v)) if v != t => {
                        return Err(invalid(format!(
                            "{field} {v:?} is not the route's target {t:?}"
                        )));
                    }
                    Some(_) => {}
                    None => pairs.push((field.to_string(), t.to_string())),
                }
            }
            let mut form = format!("Action={}&Version={version}", action.operation());
            for (k, v) in &pairs {
                form.push('&');
                form.push_str(&form_encode(k));
                form.push('=');
                form.push_str(&form_encode(v));
            }
            Ok((
                vec![(
                    "content-type".into(),
                    "application/x-www-form-urlencoded; charset=utf-8".into(),
                )],
                form.into_bytes(),
            ))
        }
    }
}

/// The headers of a JSON-protocol call: its version and its operation.
pub fn json_headers(version: &str, target_prefix: &str, operation: &str) -> Vec<(String, String)> {
    vec![
        (
            "content-type".into(),
            format!("application/x-amz-json-{version}"),
        ),
        (
            "x-amz-target".into(),
            format!("{target_prefix}.{operation}"),
        ),
    ]
}

fn form_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%2D", "-")
        .replace("%2E", ".")
        .replace("%5F", "_")
        .replace("%7E", "~")
}

/// The route's target in the JSON request: a field naming another is refused; an absent
/// one is set. EventBridge's `PutEvents` pins each entry's `EventBusName`.
fn pin_json(
    action: Action,
    service: &Service,
    target: Option<&str>,
    body: &mut Json,
) -> Result<(), IntegrationError> {
    let (Some(field), Some(target)) = (service.target_field, target) else {
        return Ok(());
    };
    let check = |obj: &mut serde_json::Map<String, Json>| match obj.get(field) {
        Some(Json::String(v)) if v != target && !same_resource(v, target) => {
            Err(IntegrationError::InvalidRequest {
                action,
                detail: format!("{field} {v:?} is not the route's target {target:?}"),
            })
        }
        Some(_) => Ok(()),
        None => {
            obj.insert(field.to_string(), Json::String(target.to_string()));
            Ok(())
        }
    };
    if service.name == "events" {
        if let Some(Json::Array(entries)) = body.get_mut("Entries") {
            for e in entries.iter_mut() {
                if let Json::Object(m) = e {
                    check(m)?;
                }
            }
        }
        return Ok(());
    }
    match body {
        Json::Object(m) => check(m),
        _ => Ok(()),
    }
}

/// A name and an ARN ending in it name the same resource (`orders` and
/// `arn:aws:dynamodb:...:table/orders`).
fn same_resource(a: &str, b: &str) -> bool {
    let tail = |s: &str| s.rsplit(['/', ':']).next().unwrap_or(s).to_string();
    (a.starts_with("arn:") || b.starts_with("arn:")) && tail(a) == tail(b)
}

/// The service's answer as integration responses see it, or its error.
pub fn answer(
    action: Action,
    service: &Service,
    status: u16,
    body: &[u8],
) -> Result<Json, IntegrationError> {
    let text = String::from_utf8_lossy(body);
    if (200..300).contains(&status) {
        return Ok(match service.protocol {
            Protocol::Json { .. } if text.trim().is_empty() => json!({}),
            Protocol::Json { .. } => {
                serde_json::from_str(&text).unwrap_or_else(|_| Json::String(text.into_owned()))
            }
            Protocol::Query { .. } => Json::String(text.into_owned()),
            Protocol::Rest if text.trim().is_empty() => json!({}),
            Protocol::Rest => {
                serde_json::from_str(&text).unwrap_or_else(|_| Json::String(text.into_owned()))
            }
        });
    }
    let (code, message) = match service.protocol {
        Protocol::Json { .. } => {
            let v: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
            let code = v["__type"]
                .as_str()
                .or(v["code"].as_str())
                .map(|c| c.rsplit('#').next().unwrap_or(c).to_string())
                .unwrap_or_else(|| format!("HTTP{status}"));
            let message = v["message"]
                .as_str()
                .or(v["Message"].as_str())
                .unwrap_or("")
                .to_string();
            (code, message)
        }
        Protocol::Query { .. } | Protocol::Rest => (
            xml_text(&text, "Code").unwrap_or_else(|| format!("HTTP{status}")),
            xml_text(&text, "Message").unwrap_or_default(),
        ),
    };
    Err(IntegrationError::Service {
        action,
        status,
        code,
        message,
    })
}

/// The text of the first `<tag>` element (the query protocol's error `Code` and `Message`).
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The integration family for `aws:SERVICE:Operation` actions.
pub struct AnyAws;

impl Integration for AnyAws {
    fn actions(&self) -> &'static [Action] {
        &[]
    }

    fn batch_caps(&self, action: Action, aggregate: bool) -> Option<super::BatchCaps> {
        match action {
            Action::Aws(a) if super::events::batches(a) && !aggregate => Some(super::BatchCaps {
                max_records: super::events::MAX_ENTRIES,
                max_bytes: super::events::MAX_BYTES,
            }),
            Action::Aws(a) if super::sns::batches(a) && !aggregate => Some(super::BatchCaps {
                max_records: super::sns::MAX_ENTRIES,
                max_bytes: super::sns::MAX_BYTES,
            }),
            Action::Aws(a) if super::dynamodb::batches(a) && !aggregate => Some(super::BatchCaps {
                max_records: super::dynamodb::MAX_ITEMS,
                max_bytes: super::dynamodb::MAX_BYTES,
            }),
            _ => None,
        }
    }

    /// `BatchWriteItem` takes no conditions and returns no attributes: DynamoDB routes
    /// batch only when they say so.
    fn batches_by_default(&self, action: Action, _target: &str) -> bool {
        !matches!(action, Action::Aws(a) if super::dynamodb::batches(a))
    }

    fn batcher(
        &self,
        clients: &super::Clients,
        route: super::BatchRoute<'_>,
        _spool: Option<&crate::spool::Spool>,
    ) -> Option<Box<dyn super::Batched>> {
        let Action::Aws(a) = route.action else {
            return None;
        };
        if super::dynamodb::batches(a) {
            return Some(super::batched::start(
                super::dynamodb::DynamoSink {
                    signer: clients.aws.clone(),
                    table: route.target.to_string(),
                },
                route,
            ));
        }
        if super::sns::batches(a) {
            return Some(super::batched::start(
                super::sns::SnsSink {
                    signer: clients.aws.clone(),
                    topic: route.target.to_string(),
                },
                route,
            ));
        }
        super::events::batches(a).then(|| {
            super::batched::start(
                super::events::EventsSink {
                    signer: clients.aws.clone(),
                    action: a,
                    bus: route.target.to_string(),
                },
                route,
            )
        })
    }

    fn iam_action(&self, action: Action) -> &'static str {
        match action {
            Action::Aws(a) => &a.name()[4..],
            other => other.name(),
        }
    }

    fn target_arn(&self, target: &str, region: &str, account: &str) -> String {
        if target.starts_with("arn:") {
            return target.to_string();
        }
        // The caller says which service; without it, the target as written.
        format!("arn:aws:*:{region}:{account}:{target}")
    }

    fn policy_resource(&self, action: Action, target: &str, region: &str, account: &str) -> String {
        match action {
            Action::Aws(a) => target_arn(a, target, region, account),
            _ => self.target_arn(target, region, account),
        }
    }

    fn request_format(&self, action: Action) -> super::RequestFormat {
        match action.aws().and_then(service).map(|s| s.protocol) {
            Some(Protocol::Json { .. }) => super::RequestFormat::Json,
            Some(Protocol::Query { .. }) => super::RequestFormat::JsonOrForm,
            _ => super::RequestFormat::Any,
        }
    }

    fn target_in_template(&self) -> &'static str {
        r#""(?:TableName|EventBusName|TopicArn|QueueUrl|StreamName|DeliveryStreamName|logGroupName)"\s*:\s*"([^"$]+)""#
    }

    fn call<'a>(&'a self, clients: &'a super::Clients, call: Call<'a>) -> CallFuture<'a> {
        Box::pin(async move {
            let Action::Aws(a) = call.action else {
                return Err(IntegrationError::InvalidRequest {
                    action: call.action,
                    detail: "not an aws: action".into(),
                });
            };
            let service = service(a).ok_or_else(|| IntegrationError::InvalidRequest {
                action: call.action,
                detail: format!("the gateway does not know the protocol of {}", a.service()),
            })?;
            let (mut headers, body) = prepare(a, service, call.target, call.rendered)?;
            // `integration.request.header.*` mappings set (or replace) headers.
            for m in call.mapped {
                if let crate::upstream::Mapped::Header(name, value) = m {
                    headers.retain(|(k, _)| k != name);
                    headers.push((name.clone(), value.clone()));
                }
            }
            let timeout = call
                .deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(1))
                * 5
                / 4;
            let (method, path) = match service.protocol {
                Protocol::Rest => rest_target(a, call.target, call.mapped)?,
                _ => ("POST", "/".to_string()),
            };
            let answered = clients
                .aws
                .send_to(
                    call.action,
                    service,
                    (method, &path),
                    headers,
                    body,
                    timeout,
                )
                .await?;
            answer(
                call.action,
                service,
                answered.status.as_u16(),
                &answered.body,
            )
        })
    }
}

/// S3's method and path for an operation: the bucket is the route's target (or the
/// mapped `bucket`, which the target pins), the key the mapped `key` (or `object`).
fn rest_target(
    a: AwsAction,
    target: Option<&str>,
    mapped: &[crate::upstream::Mapped],
) -> Result<(&'static str, String), IntegrationError> {
    let action = Action::Aws(a);
    let invalid = |detail: String| IntegrationError::InvalidRequest { action, detail };
    let path_value = |name: &str| {
        mapped.iter().find_map(|m| match m {
            crate::upstream::Mapped::Path(n, v) if n == name => Some(v.as_str()),
            _ => None,
        })
    };
    let method = match a.operation() {
        "PutObject" => "PUT",
        "GetObject" => "GET",
        "DeleteObject" => "DELETE",
        "HeadObject" => "HEAD",
        other => {
            return Err(invalid(format!(
                "s3:{other} is not one of PutObject, GetObject, DeleteObject, HeadObject"
            )));
        }
    };
    let bucket = match (target, path_value("bucket")) {
        (Some(t), Some(b)) if t != b => {
            return Err(invalid(format!(
                "bucket {b:?} is not the route's target {t:?}"
            )));
        }
        (Some(t), _) => t,
        (None, Some(b)) => b,
        (None, None) => return Err(invalid("no bucket: set the route's target".into())),
    };
    let key = path_value("key")
        .or_else(|| path_value("object"))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| IntegrationError::Unmappable {
            action,
            detail: "no object key (map integration.request.path.key)".into(),
        })?;
    let encoded = encode_key(key).map_err(|why| IntegrationError::Unmappable {
        action,
        detail: why,
    })?;
    Ok((method, format!("/{bucket}/{encoded}")))
}

/// An object key for a path: each segment percent-encoded but for unreserved characters,
/// its `/` kept; `.` and `..` segments refused (they would name another key).
fn encode_key(key: &str) -> Result<String, String> {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut out = Vec::new();
    for segment in key.split('/') {
        if segment == "." || segment == ".." {
            return Err(format!(
                "the object key {key:?} holds a {segment:?} segment"
            ));
        }
        out.push(percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string());
    }
    Ok(out.join("/"))
}

/// The ARN of a target named without one, by service.
pub fn target_arn(action: AwsAction, target: &str, region: &str, account: &str) -> String {
    if target.starts_with("arn:") {
        return target.to_string();
    }
    match action.service() {
        "dynamodb" => format!("arn:aws:dynamodb:{region}:{account}:table/{target}"),
        "events" => format!("arn:aws:events:{region}:{account}:event-bus/{target}"),
        "sns" => format!("arn:aws:sns:{region}:{account}:{target}"),
        "sqs" => format!("arn:aws:sqs:{region}:{account}:{target}"),
        "kinesis" => format!("arn:aws:kinesis:{region}:{account}:stream/{target}"),
        "firehose" => format!("arn:aws:firehose:{region}:{account}:deliverystream/{target}"),
        "states" => format!("arn:aws:states:{region}:{account}:stateMachine:{target}"),
        "logs" => format!("arn:aws:logs:{region}:{account}:log-group:{target}"),
        "s3" => format!("arn:aws:s3:::{target}/*"),
        _ => "*".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(name: &str) -> AwsAction {
        AwsAction::parse(name).unwrap()
    }

    #[test]
    fn json_requests_get_their_target_header_and_pinned_resource() {
        let a = aws("aws:dynamodb:PutItem");
        let s = service(a).unwrap();
        let (headers, body) =
            prepare(a, s, Some("orders"), r#"{"Item": {"id": {"S": "1"}}}"#).unwrap();
        assert!(headers.contains(&("x-amz-target".into(), "DynamoDB_20120810.PutItem".into())));
        assert!(headers.contains(&("content-type".into(), "application/x-amz-json-1.0".into())));
        let body: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["TableName"], "orders");
        let other = prepare(
            a,
            s,
            Some("orders"),
            r#"{"TableName": "users", "Item": {}}"#,
        );
        assert!(matches!(
            other,
            Err(IntegrationError::InvalidRequest { .. })
        ));
        let arn = prepare(
            a,
            s,
            Some("orders"),
            r#"{"TableName": "arn:aws:dynamodb:us-east-1:1:table/orders"}"#,
        );
        assert!(arn.is_ok());
        // EventBridge: each entry's bus.
        let e = aws("aws:events:PutEvents");
        let (_, body) = prepare(
            e,
            service(e).unwrap(),
            Some("clicks"),
            r#"{"Entries": [{"Source": "a"}, {"Source": "b", "EventBusName": "clicks"}]}"#,
        )
        .unwrap();
        let body: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["Entries"][0]["EventBusName"], "clicks");
        assert!(
            prepare(
                e,
                service(e).unwrap(),
                Some("clicks"),
                r#"{"Entries": [{"EventBusName": "default"}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn query_requests_are_forms_with_action_and_version() {
        let a = aws("aws:sns:Publish");
        let s = service(a).unwrap();
        let t = "arn:aws:sns:us-east-1:1:alerts";
        let (_, body) = prepare(a, s, Some(t), "Message=hello%20there&Subject=x").unwrap();
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.starts_with("Action=Publish&Version=2010-03-31&"),
            "{body}"
        );
        assert!(body.contains("Message=hello%20there"), "{body}");
        assert!(
            body.contains("TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A1%3Aalerts"),
            "{body}"
        );
        let (_, body) = prepare(a, s, Some(t), r#"{"Message": "a&b"}"#).unwrap();
        assert!(String::from_utf8(body).unwrap().contains("Message=a%26b"));
        assert!(
            prepare(
                a,
                s,
                Some(t),
                "TopicArn=arn:aws:sns:us-east-1:1:other&Message=x"
            )
            .is_err()
        );
    }

    #[test]
    fn requests_are_signed_with_sigv4_for_the_service() {
        let a = aws("aws:dynamodb:PutItem");
        let s = service(a).unwrap();
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("token".into()),
            None,
            "test",
        );
        let (headers, body) = prepare(a, s, Some("orders"), "{}").unwrap();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let request = Unsigned {
            service: s,
            method: "POST",
            url: "https://dynamodb.eu-west-1.amazonaws.com/",
            headers: &headers,
            body,
        };
        let req = signed(Action::Aws(a), &credentials, "eu-west-1", request, time).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251124/eu-west-1/dynamodb/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains("x-amz-target"),
            "the target header is signed: {auth}"
        );
        assert_eq!(req.headers()["x-amz-security-token"], "token");
        assert_eq!(req.headers()["x-amz-date"], "20251124T160000Z");
    }

    #[test]
    fn errors_carry_the_services_code() {
        let a = aws("aws:dynamodb:GetItem");
        let s = service(a).unwrap();
        let Err(IntegrationError::Service { code, status, .. }) = answer(
            Action::Aws(a),
            s,
            400,
            br#"{"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", "message": "no"}"#,
        ) else {
            panic!("an error")
        };
        assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 400));
        let q = aws("aws:sns:Publish");
        let Err(IntegrationError::Service { code, message, .. }) = answer(
            Action::Aws(q),
            service(q).unwrap(),
            404,
            b"<ErrorResponse><Error><Code>NotFound</Code><Message>Topic &amp; more</Message></Error></ErrorResponse>",
        ) else {
            panic!("an error")
        };
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("NotFound", "Topic & more")
        );
        assert_eq!(answer(Action::Aws(a), s, 200, b"{}").unwrap(), json!({}));
    }
}
