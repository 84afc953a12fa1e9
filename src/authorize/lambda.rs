//! Lambda authorizers (API Gateway's TOKEN and REQUEST custom authorizers): the function is
//! given API Gateway's event, and its answer (a principal, an IAM policy over
//! `execute-api:Invoke`, a context, a usage key) decides the request.
//!
//! Decisions are cached for the authorizer's `ttl` by the identity's values (the token, or
//! the REQUEST authorizer's identity sources), the whole policy at once: one cached Allow of
//! `/devices/*` serves every path it covers, as on API Gateway. Concurrent requests for one
//! identity not yet decided share one invocation. Failures (the function erring, an answer
//! that is not a policy) are never cached.
//!
//! The policy is evaluated in [`evaluate`] (pure); the function is called through
//! [`Invoke`], which the AWS SDK's Lambda client implements (in `integrations`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value as Json};
use sha2::Digest as _;
use tokio::time::Instant;

use crate::config::authorizers::{IdentitySource, LambdaAuthorizer, LambdaKind, TokenSource};
use crate::mapping::event::{self, EventFacts};
use crate::request::Request;

/// Decisions kept at most (a full cache drops its expired entries, then all of them).
pub const MAX_CACHED: usize = 100_000;
/// Longest identity value read (API Gateway's limit on a header is about 10 KiB).
pub const MAX_IDENTITY_BYTES: usize = 16 * 1024;
/// Largest function answer read as a decision.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// What the function said.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub principal_id: String,
    pub statements: Vec<Statement>,
    /// `context`: string, number and boolean values only.
    pub context: Map<String, Json>,
    /// `usageIdentifierKey`: the API key the request is counted under, for routes with
    /// `api_key_source = "authorizer"`.
    pub usage_key: Option<String>,
}

/// One statement of the policy, as far as `execute-api:Invoke` is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// The policy's verdict for one method ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    /// A statement denies it: 403 "... with an explicit deny".
    ExplicitDeny,
    /// No statement allows it: 403.
    NotAllowed,
}

/// Why the function's answer admits no decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Decided(Arc<Decision>),
    /// The function raised `Unauthorized` (API Gateway's 401).
    Unauthorized,
    /// The function failed, or answered something that is not a decision (API Gateway's
    /// 500 `AuthorizerConfigurationException`); the reason is for the log.
    Failed(String),
}

/// The function's raw answer.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// `X-Amz-Function-Error` (`Handled`/`Unhandled`), when the function raised.
    pub function_error: Option<String>,
    pub payload: Vec<u8>,
}

/// Calls a function with a JSON event. The SDK's Lambda client is the implementation (in
/// `integrations`); tests of the cache count calls with their own.
pub trait Invoke: Send + Sync + 'static {
    fn invoke<'a>(
        &'a self,
        function: &'a str,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Invoked, String>> + Send + 'a>>;
}

/// Lambda authorizers invoke their functions with the gateway's AWS clients.
impl Invoke for crate::integrations::Clients {
    fn invoke<'a>(
        &'a self,
        function: &'a str,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Invoked, String>> + Send + 'a>> {
        Box::pin(async move {
            let (function_error, payload) = self.invoke_function(function, payload).await?;
            Ok(Invoked {
                function_error,
                payload,
            })
        })
    }
}

/// Where the request is in API Gateway's terms, for the event and the method ARN.
#[derive(Debug, Clone)]
pub struct ApiFacts {
    pub region: String,
    pub account_id: String,
    pub api_id: String,
    pub stage: String,
    pub stage_variables: indexmap::IndexMap<String, String>,
}

/// A slot of the cache: one invocation, shared by every request waiting for it, and when
/// it finished.
type Slot = Arc<tokio::sync::OnceCell<(Instant, Outcome)>>;

/// A configured Lambda authorizer, ready to decide.
pub struct LambdaVerifier {
    config: LambdaAuthorizer,
    validation: Option<regex::Regex>,
    invoker: Arc<dyn Invoke>,
    api: ApiFacts,
    cache: Mutex<HashMap<[u8; 32], Slot>>,
}

impl std::fmt::Debug for LambdaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaVerifier")
            .field("name", &self.config.name)
            .finish()
    }
}

/// A request's identity, as the cache knows it.
#[derive(Debug, Clone)]
pub struct Presented {
    /// SHA-256 of the token, or of the identity sources' values.
    pub key: [u8; 32],
    pub method_arn: String,
    /// A TOKEN authorizer's token.
    pub token: Option<String>,
}

/// Why a request is refused before the function is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub String);

impl LambdaVerifier {
    pub fn new(
        config: LambdaAuthorizer,
        invoker: Arc<dyn Invoke>,
        api: ApiFacts,
    ) -> Result<LambdaVerifier, String> {
        let validation = match &config.kind {
            LambdaKind::Token {
                validation_regex: Some(re),
                ..
            } => Some(
                // The whole token must match, as API Gateway's (Java) matcher does.
                regex::Regex::new(&format!("^(?:{re})$"))
                    .map_err(|e| format!("authorizer {}: validation_regex: {e}", config.name))?,
            ),
            _ => None,
        };
        Ok(LambdaVerifier {
            config,
            validation,
            invoker,
            api,
            cache: Mutex::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The request's identity (its cache key) and method ARN; refused (401) when the token
    /// is missing or does not match the validation pattern, or an identity source is
    /// missing. The event itself is built only when the function is asked.
    pub fn identify(
        &self,
        req: &Request,
        resource: &str,
        path_params: &[(String, String)],
    ) -> Result<Presented, Missing> {
        let method_arn = self.facts(req, resource, path_params).method_arn();
        let mut key = sha2::Sha256::new();
        match &self.config.kind {
            LambdaKind::Token { source, .. } => {
                let token = token_value(req, source)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Missing("no token".into()))?;
                if token.len() > MAX_IDENTITY_BYTES {
                    return Err(Missing("token too long".into()));
                }
                if let Some(re) = &self.validation
                    && !re.is_match(&token)
                {
                    return Err(Missing("the token does not match validation_regex".into()));
                }
                key.update(token.as_bytes());
                Ok(Presented {
                    key: key.finalize().into(),
                    method_arn,
                    token: Some(token),
                })
            }
            LambdaKind::Request { sources } => {
                for source in sources {
                    let value = identity_value(req, source, resource, path_params, &self.api)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| Missing(format!("no {source:?}")))?;
                    if value.len() > MAX_IDENTITY_BYTES {
                        return Err(Missing(format!("{source:?} too long")));
                    }
                    // Length-prefixed, so no two lists of values hash alike.
                    key.update((value.len() as u64).to_be_bytes());
                    key.update(value.as_bytes());
                }
                Ok(Presented {
                    key: key.finalize().into(),
                    method_arn,
                    token: None,
                })
            }
        }
    }

    fn facts<'a>(
        &'a self,
        req: &'a Request,
        resource: &'a str,
        path_params: &'a [(String, String)],
    ) -> EventFacts<'a> {
        EventFacts {
            method: req.method.as_str(),
            path: &req.path,
            resource,
            headers: &req.headers,
            query: &req.query,
            path_params,
            stage_variables: &self.api.stage_variables,
            stage: &self.api.stage,
            request_id: &req.request_id,
            source_ip: &req.source_ip,
            api_key: None,
            api_key_id: None,
            account_id: &self.api.account_id,
            api_id: &self.api.api_id,
            region: &self.api.region,
            epoch_ms: req.received_epoch_ms,
        }
    }

    /// API Gateway's event for this request (TOKEN or REQUEST).
    pub fn event(
        &self,
        presented: &Presented,
        req: &Request,
        resource: &str,
        path_params: &[(String, String)],
    ) -> Json {
        match &presented.token {
            Some(token) => event::token_authorizer(token, &presented.method_arn),
            None => self.facts(req, resource, path_params).request_authorizer(),
        }
    }

    /// The function's decision for an identity: cached for `ttl`, and shared by concurrent
    /// requests for the same identity. `event` is called only when the function is asked.
    pub async fn decide(&self, key: [u8; 32], event: impl FnOnce() -> Json) -> Outcome {
        let ttl = self.config.ttl;
        if ttl.is_zero() {
            return self.invoke(event()).await;
        }
        let now = Instant::now();
        let slot = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let reusable = cache.get(&key).filter(|slot| match slot.get() {
                // In flight: wait for it.
                None => true,
                Some((at, outcome)) => {
                    !matches!(outcome, Outcome::Failed(_)) && now.duration_since(*at) < ttl
                }
            });
            match reusable {
                Some(slot) => {
                    let hit = slot.initialized();
                    counted(&self.config.name, if hit { "hit" } else { "shared" });
                    slot.clone()
                }
                None => {
                    if cache.len() >= MAX_CACHED {
                        cache.retain(|_, slot| {
                            slot.get()
                                .is_none_or(|(at, _)| now.duration_since(*at) < ttl)
                        });
                        if cache.len() >= MAX_CACHED {
                            cache.clear();
                        }
                    }
                    counted(&self.config.name, "miss");
                    let slot = Slot::default();
                    cache.insert(key, slot.clone());
                    slot
                }
            }
        };
        let (_, outcome) = slot
            .get_or_init(|| async { (Instant::now(), self.invoke(event()).await) })
            .await;
        outcome.clone()
    }

    async fn invoke(&self, event: Json) -> Outcome {
        let started = std::time::Instant::now();
        let answer = self
            .invoker
            .invoke(&self.config.function, event.to_string().into_bytes())
            .await;
        metrics::histogram!(crate::telemetry::names::AUTHORIZER_LAMBDA_SECONDS, "authorizer" => self.config.name.clone())
            .record(started.elapsed().as_secs_f64());
        match answer {
            Ok(invoked) => read_answer(&invoked),
            Err(e) => Outcome::Failed(e),
        }
    }
}

fn counted(authorizer: &str, result: &'static str) {
    metrics::counter!(crate::telemetry::names::AUTHORIZER_CACHE, "authorizer" => authorizer.to_string(), "result" => result).increment(1);
}

/// A TOKEN authorizer's token: the whole value, as API Gateway passes it.
fn token_value(req: &Request, source: &TokenSource) -> Option<String> {
    match source {
        TokenSource::Header(name) => req.header(name),
        TokenSource::Query(name) => req.query_param(name).map(str::to_string),
        TokenSource::Cookie(name) => crate::authorize::jwt::cookie(req, name),
    }
}

/// One identity source's value for this request.
fn identity_value(
    req: &Request,
    source: &IdentitySource,
    resource: &str,
    path_params: &[(String, String)],
    api: &ApiFacts,
) -> Option<String> {
    match source {
        IdentitySource::Header(name) => req.header(name),
        IdentitySource::Query(name) => req.query_param(name).map(str::to_string),
        IdentitySource::Path(name) => path_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
        IdentitySource::Stage(name) => api.stage_variables.get(name).cloned(),
        IdentitySource::Context(name) => Some(match name.as_str() {
            "sourceIp" | "identity.sourceIp" => req.source_ip.clone(),
            "identity.userAgent" => req.header("user-agent")?,
            "httpMethod" => req.method.to_string(),
            "resourcePath" => resource.to_string(),
            "path" => format!("/{}{}", api.stage, req.path),
            "stage" => api.stage.clone(),
            "apiId" => api.api_id.clone(),
            _ => return None,
        }),
    }
}

/// The function's answer as a decision.
pub fn read_answer(invoked: &Invoked) -> Outcome {
    if invoked.payload.len() > MAX_RESPONSE_BYTES {
        return Outcome::Failed(format!(
            "the answer is {} bytes (at most {MAX_RESPONSE_BYTES})",
            invoked.payload.len()
        ));
    }
    let answer: Json = match serde_json::from_slice(&invoked.payload) {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(format!("the answer is not JSON: {e}")),
    };
    if let Some(kind) = &invoked.function_error {
        // `raise Exception("Unauthorized")` is API Gateway's way to answer 401.
        return if answer["errorMessage"] == "Unauthorized" {
            Outcome::Unauthorized
        } else {
            Outcome::Failed(format!(
                "the function raised ({kind}): {}",
                answer["errorMessage"]
                    .as_str()
                    .unwrap_or("(no errorMessage)")
            ))
        };
    }
    match decision(&answer) {
        Ok(d) => Outcome::Decided(Arc::new(d)),
        Err(why) => Outcome::Failed(why),
    }
}

/// Reads `principalId`, `policyDocument`, `context` and `usageIdentifierKey`.
pub fn decision(answer: &Json) -> Result<Decision, String> {
    let principal_id = match &answer["principalId"] {
        Json::String(s) => s.clone(),
        Json::Null => return Err("the answer has no principalId".into()),
        _ => return Err("principalId is not a string".into()),
    };
    let policy = &answer["policyDocument"];
    let statements = match &policy["Statement"] {
        Json::Array(list) => list.iter().map(statement).collect::<Result<_, _>>()?,
        s @ Json::Object(_) => vec![statement(s)?],
        _ => return Err("policyDocument has no Statement".into()),
    };
    let context = match &answer["context"] {
        Json::Null => Map::new(),
        Json::Object(m) => {
            for (k, v) in m {
                if !(v.is_string() || v.is_number() || v.is_boolean()) {
                    return Err(format!(
                        "context.{k} is not a string, number or boolean (API Gateway refuses objects, arrays and null)"
                    ));
                }
            }
            m.clone()
        }
        _ => return Err("context is not an object".into()),
    };
    let usage_key = match &answer["usageIdentifierKey"] {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        _ => return Err("usageIdentifierKey is not a string".into()),
    };
    Ok(Decision {
        principal_id,
        statements,
        context,
        usage_key,
    })
}

fn strings(v: &Json, what: &str) -> Result<Vec<String>, String> {
    match v {
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Array(list) => list
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what} holds a value that is not a string"))
            })
            .collect(),
        _ => Err(format!("a statement has no {what}")),
    }
}

fn statement(s: &Json) -> Result<Statement, String> {
    let allow = match &s["Effect"] {
        Json::String(e) if e == "Allow" => true,
        Json::String(e) if e == "Deny" => false,
        other => {
            return Err(format!(
                "a statement's Effect is {other}, not Allow or Deny"
            ));
        }
    };
    Ok(Statement {
        allow,
        actions: strings(&s["Action"], "Action")?,
        resources: strings(&s["Resource"], "Resource")?,
    })
}

/// The policy's verdict for `method_arn`: an explicit Deny wins, then any Allow; nothing
/// matching denies. Actions match `execute-api:Invoke` case-insensitively (`*` and `?`
/// wildcards); resources match the ARN case-sensitively, with the same wildcards.
pub fn evaluate(statements: &[Statement], method_arn: &str) -> Effect {
    let applies = |s: &Statement| {
        s.actions
            .iter()
            .any(|a| wildcard(&a.to_ascii_lowercase(), "execute-api:invoke"))
            && s.resources.iter().any(|r| wildcard(r, method_arn))
    };
    let mut allowed = false;
    for s in statements.iter().filter(|s| applies(s)) {
        if !s.allow {
            return Effect::ExplicitDeny;
        }
        allowed = true;
    }
    if allowed {
        Effect::Allow
    } else {
        Effect::NotAllowed
    }
}

/// IAM's glob: `*` any run of characters (including none, and `/`), `?` exactly one.
/// Iterative with one backtrack point, so hostile patterns cost O(pattern x text).
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const ARN: &str =
        "arn:aws:execute-api:us-east-1:123456789012:ingest-gateway/prod/POST/devices/42";

    fn allow(resource: &str) -> Statement {
        Statement {
            allow: true,
            actions: vec!["execute-api:Invoke".into()],
            resources: vec![resource.into()],
        }
    }

    #[test]
    fn wildcards_as_iam() {
        assert!(wildcard("*", ""));
        assert!(wildcard("a*c", "abbbc"));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "ac"));
        assert!(wildcard("arn:*/prod/*/devices/*", ARN));
        assert!(!wildcard("arn:*/test/*", ARN));
        assert!(!wildcard("abc", "abcd"));
        // A hostile pattern stays cheap.
        let long = "a".repeat(5000);
        assert!(!wildcard(&"*a".repeat(200), &format!("{long}b")));
    }

    #[test]
    fn policies_decide_as_api_gateway() {
        let deny = Statement {
            allow: false,
            ..allow("arn:aws:execute-api:*:*:*/*/POST/devices/42")
        };
        assert_eq!(
            evaluate(&[allow("arn:aws:execute-api:*:*:*/prod/*/devices/*")], ARN),
            Effect::Allow
        );
        assert_eq!(
            evaluate(
                &[allow("arn:aws:execute-api:*:*:*/prod/*/devices/*"), deny],
                ARN
            ),
            Effect::ExplicitDeny,
            "an explicit Deny wins"
        );
        assert_eq!(
            evaluate(&[allow("arn:aws:execute-api:*:*:*/prod/GET/*")], ARN),
            Effect::NotAllowed
        );
        let other_action = Statement {
            actions: vec!["s3:GetObject".into()],
            ..allow("*")
        };
        assert_eq!(evaluate(&[other_action], ARN), Effect::NotAllowed);
        let any_action = Statement {
            actions: vec!["execute-api:*".into()],
            ..allow("*")
        };
        assert_eq!(evaluate(&[any_action], ARN), Effect::Allow);
        assert_eq!(evaluate(&[], ARN), Effect::NotAllowed);
        // Resources are case-sensitive.
        assert_eq!(
            evaluate(&[allow("arn:aws:execute-api:*:*:*/prod/post/*")], ARN),
            Effect::NotAllowed
        );
    }

    #[test]
    fn answers_that_are_not_decisions_fail() {
        let ok = json!({
            "principalId": "user-1",
            "policyDocument": {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": ["*"]}},
            "context": {"tenant": "acme", "tier": 2, "beta": true},
            "usageIdentifierKey": "k-123",
        });
        let d = decision(&ok).unwrap();
        assert_eq!(d.principal_id, "user-1");
        assert_eq!(d.usage_key.as_deref(), Some("k-123"));
        assert_eq!(d.context["tier"], 2);
        for (bad, why) in [
            (
                json!({"policyDocument": ok["policyDocument"]}),
                "principalId",
            ),
            (json!({"principalId": "u"}), "Statement"),
            (
                json!({"principalId": "u", "policyDocument": ok["policyDocument"], "context": {"o": {"x": 1}}}),
                "context.o",
            ),
            (
                json!({"principalId": "u", "policyDocument": {"Statement": [{"Effect": "allow", "Action": "*", "Resource": "*"}]}}),
                "Effect",
            ),
            (
                json!({"principalId": "u", "policyDocument": {"Statement": [{"Effect": "Allow", "Resource": "*"}]}}),
                "Action",
            ),
        ] {
            let e = decision(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let raised = |msg: &str| Invoked {
            function_error: Some("Unhandled".into()),
            payload: json!({"errorMessage": msg, "errorType": "Exception"})
                .to_string()
                .into_bytes(),
        };
        assert_eq!(read_answer(&raised("Unauthorized")), Outcome::Unauthorized);
        assert!(matches!(read_answer(&raised("boom")), Outcome::Failed(_)));
        let garbage = Invoked {
            function_error: None,
            payload: b"not json".to_vec(),
        };
        assert!(matches!(read_answer(&garbage), Outcome::Failed(_)));
    }

    /// Counts invocations; answers Allow after a delay.
    struct Counting {
        calls: AtomicUsize,
        delay: Duration,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Invoke for Counting {
        fn invoke<'a>(
            &'a self,
            _function: &'a str,
            _payload: Vec<u8>,
        ) -> Pin<Box<dyn Future<Output = Result<Invoked, String>> + Send + 'a>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                if self.fail.load(Ordering::SeqCst) {
                    return Err("boom".into());
                }
                Ok(Invoked {
                    function_error: None,
                    payload: json!({"principalId": "p", "policyDocument": {"Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}]}}).to_string().into_bytes(),
                })
            })
        }
    }

    fn verifier(ttl: Duration) -> (Arc<Counting>, Arc<LambdaVerifier>) {
        let counting = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            delay: Duration::from_millis(50),
            fail: false.into(),
        });
        let v = LambdaVerifier::new(
            LambdaAuthorizer {
                name: "partners".into(),
                function: "f".into(),
                kind: LambdaKind::Token {
                    source: TokenSource::Header("authorization".into()),
                    validation_regex: Some("Bearer [a-z]+".into()),
                },
                ttl,
            },
            counting.clone(),
            ApiFacts {
                region: "us-east-1".into(),
                account_id: "000000000000".into(),
                api_id: "ingest-gateway".into(),
                stage: "prod".into(),
                stage_variables: indexmap::IndexMap::new(),
            },
        )
        .unwrap();
        (counting, Arc::new(v))
    }

    #[tokio::test(start_paused = true)]
    async fn decisions_are_cached_for_the_ttl_and_shared_while_in_flight() {
        let (calls, v) = verifier(Duration::from_secs(300));
        let key = [7u8; 32];
        // Ten concurrent requests for one identity: one invocation.
        let waits: Vec<_> = (0..10)
            .map(|_| {
                let v = v.clone();
                tokio::spawn(async move { v.decide(key, || json!({})).await })
            })
            .collect();
        for w in waits {
            assert!(matches!(w.await.unwrap(), Outcome::Decided(_)));
        }
        assert_eq!(calls.calls.load(Ordering::SeqCst), 1);
        // Within the ttl: cached.
        tokio::time::advance(Duration::from_secs(299)).await;
        v.decide(key, || json!({})).await;
        assert_eq!(calls.calls.load(Ordering::SeqCst), 1);
        // Past it: asked again.
        tokio::time::advance(Duration::from_secs(2)).await;
        v.decide(key, || json!({})).await;
        assert_eq!(calls.calls.load(Ordering::SeqCst), 2);
        // Another identity: its own invocation.
        v.decide([8u8; 32], || json!({})).await;
        assert_eq!(calls.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_cached_and_ttl_zero_always_asks() {
        let (calls, v) = verifier(Duration::from_secs(300));
        calls.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            v.decide([1; 32], || json!({})).await,
            Outcome::Failed(_)
        ));
        calls.fail.store(false, Ordering::SeqCst);
        assert!(matches!(
            v.decide([1; 32], || json!({})).await,
            Outcome::Decided(_)
        ));
        assert_eq!(calls.calls.load(Ordering::SeqCst), 2);

        let (calls, v) = verifier(Duration::ZERO);
        v.decide([1; 32], || json!({})).await;
        v.decide([1; 32], || json!({})).await;
        assert_eq!(calls.calls.load(Ordering::SeqCst), 2);
    }
}
