//! One request, start to finish, as the stages in order:
//!
//! ```text
//! route -> authorize -> validate -> render -> dispatch -> respond
//! ```
//!
//! [`run`] names each stage and decides their order, and nothing else: each stage is a
//! module of its own. The gateway they run in is built once, in [`gateway`].

pub mod gateway;
pub mod readiness;
pub mod reload;
pub mod stages;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Response;

use crate::dispatch::{self, Dispatched};
use crate::edge::decode;
use crate::error::{ErrorKind, GatewayError};
use crate::render::{self, RequestView};
pub use crate::request::{PendingBody, Request};
use crate::respond::integration::Answer;
use crate::validate::body::{self, BodyRules};
use crate::{authorize, proxy, respond};
pub use gateway::{CompiledRoute, Gateway, authorizer, compile_templates};
pub use reload::Live;

/// What happened, for the access log.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The matched route's index.
    pub route: Option<usize>,
    pub key_id: Option<String>,
    /// The authorizer's principal (never the token).
    pub principal: Option<String>,
    /// The key's quota position, when the route sends `X-RateLimit-*` headers.
    pub quota: Option<crate::auth::QuotaStatus>,
    pub integration_ms: Option<f64>,
    pub error: Option<GatewayError>,
    /// Where the answer is kept, for a cached route's miss.
    pub cache_key: Option<String>,
}

/// Runs the pipeline; never fails: errors become responses here.
pub async fn handle(
    gw: &Arc<Gateway>,
    mut req: Request,
    body: PendingBody,
) -> (Response<Body>, Outcome) {
    let mut outcome = Outcome::default();
    let mut resp = match run(gw, &mut req, body, &mut outcome).await {
        Ok(resp) => match (outcome.cache_key.take(), outcome.route) {
            (Some(key), Some(i)) => match &gw.caches[i] {
                Some(cache) => cache.keep(key, resp).await,
                None => resp,
            },
            _ => resp,
        },
        Err(e) => {
            let resp = error_response(gw, &e, &req.request_id);
            outcome.error = Some(e);
            resp
        }
    };
    // Every admitted request reports the quota it spent, whatever the upstream did.
    if let Some(q) = &outcome.quota {
        respond::quota_headers(&mut resp, q, req.received_epoch_ms);
    }
    (resp, outcome)
}

/// The client's response for an error, through the configured gateway responses.
pub fn error_response(gw: &Gateway, e: &GatewayError, request_id: &str) -> Response<Body> {
    gw.gateway_responses.respond(&gw.config, e, request_id)
}

async fn run(
    gw: &Gateway,
    req: &mut Request,
    body: PendingBody,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    // route
    let Some(matched) = gw.routes.lookup(&req.method, &req.path) else {
        let detail = format!("no route for {} {}", req.method, req.path);
        return Err(GatewayError::new(ErrorKind::NoRoute, detail));
    };
    let i = matched.route;
    let (route, compiled) = (&gw.config.routes[i], &gw.compiled[i]);
    outcome.route = Some(i);
    if !route.ip_policy.admits(req.client_ip) {
        return Err(access_denied(&req.method, &req.path, req.client_ip));
    }

    // authorize
    let identity = authorize::authorize(
        &gw.auth,
        gw.keys.as_deref(),
        &gw.authorizers,
        i,
        route,
        req,
        &matched.params,
    )
    .await?;
    outcome.principal.clone_from(&identity.principal_id);
    outcome.key_id.clone_from(&identity.api_key_id);
    if route.rate_limit_headers {
        outcome.quota = identity.quota;
    }

    // the body: read only now that the route and the caller are known, there is room for
    // its records to wait for their batch, and decoded
    let limit = route.max_body_bytes.unwrap_or(gw.config.max_body_bytes);
    let _room = match &gw.upstreams[i].room {
        Some(room) => {
            let declared = body.declared().map_or(0, |n| n.min(limit as u64) as usize);
            room.wait(declared, body.deadline()).await?
        }
        None => None,
    };
    let codings = decode::codings(req.headers.get(http::header::CONTENT_ENCODING))
        .map_err(|e| decode_error(e, limit))?;
    let (bytes, mut in_flight) = body.read(limit).await?;
    // Decoded bytes count against the bodies' budget as the received ones do, so bodies
    // inflating at once cannot hold more than `server.max_inflight_body_bytes`.
    let mut decoded_room: Vec<tokio::sync::OwnedSemaphorePermit> = Vec::new();
    req.body = if codings.is_empty() {
        bytes
    } else {
        let budget = &gw.body_budget;
        let mut reserve = |n: usize| {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            budget
                .clone()
                .try_acquire_many_owned(n)
                .map(|p| decoded_room.push(p))
                .is_ok()
        };
        let decoded = decode::decode(bytes, &codings, limit, &mut reserve)
            .map_err(|e| decode_error(e, limit))?;
        // The compressed bytes are freed: their room goes back, the decoded bytes hold theirs.
        in_flight = crate::request::BodyPermit::default();
        decoded
    };
    let _in_flight = in_flight;
    let mut media = body::media_type(&req.headers);
    if media == NDJSON {
        let array = decode::ndjson_to_array(&req.body).map_err(|message| {
            GatewayError::new(
                ErrorKind::UndecodableBody {
                    message: message.clone(),
                },
                message,
            )
        })?;
        req.body = array.into();
        // Templates for JSON read the lines' array, unless the route has its own for NDJSON.
        if !compiled.request_templates.iter().any(|(m, _)| m == NDJSON) {
            media = "application/json".to_string();
        }
    }
    // A route that does not hand the request over whole reads its body only to render it:
    // taken out of the request, it is freed once rendered, not held while the upstream works.
    let raw_body = if route.integration.proxy {
        axum::body::Bytes::new()
    } else {
        std::mem::take(&mut req.body)
    };
    let req: &Request = req;

    // validate (parameters; then, once the template is known, the body)
    let validator = compiled.validator.as_ref();
    if let Some(v) = validator {
        let checked = v.check_parameters(&matched.params, &req.query, &req.headers);
        checked.map_err(body::invalid)?;
    }
    // cache: a kept answer (GET routes with `cache`), once the caller is known
    if let Some(cache) = &gw.caches[i] {
        let keyed = crate::cache::Keyed {
            method: &req.method,
            path_params: &matched.params,
            query: &req.query,
            headers: &req.headers,
            caller: identity
                .api_key_id
                .as_deref()
                .or(identity.principal_id.as_deref()),
        };
        match cache.lookup(&keyed, || may_invalidate_cache(gw, &identity, req)) {
            crate::cache::Lookup::Hit(resp) => return Ok(resp),
            crate::cache::Lookup::Miss(key) => outcome.cache_key = Some(key),
            crate::cache::Lookup::Bypass => {}
        }
    }
    let template = render::choose_template(route, &compiled.request_templates, &media)?;
    let rules = BodyRules {
        binary_media_types: &gw.config.binary_media_types,
        max_json_depth: gw.config.max_json_depth,
        templated: template.is_some(),
    };
    let view = RequestView {
        config: &gw.config,
        route,
        request: req,
        path_params: &matched.params,
        identity: &identity,
    };
    let context = || view.context();
    let proxy_cx = proxy::Context {
        config: &gw.config,
        clients: &gw.clients,
        http: gw.http_by_route[i].as_ref().unwrap_or(&gw.http),
        region: gw.region(),
        route,
        req,
        path_params: &matched.params,
        identity: &identity,
        context: &context,
    };
    let upstream = &gw.upstreams[i];
    let timeout = || upstream_timeout(upstream.timeout, req.received, gw.config.request_timeout);

    // proxy: the request handed over whole (its bytes as they are, checked only against a
    // model), the answer passed back
    if route.integration.proxy {
        if let Some(v) = validator.filter(|v| v.has_model()) {
            body::body(&req.body, &media, Some(v), rules)?;
        }
        authorize::admit_to_upstream(&gw.auth)?;
        let started = Instant::now();
        let proxied = proxy::run(&proxy_cx, timeout()).await;
        outcome.integration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        gw.metrics[i].upstream_call(proxied.is_ok());
        return Ok(respond::proxied(proxied?, &req.request_id));
    }

    // render
    let body = body::body(&raw_body, &media, validator, rules)?;
    let rendered = render::request(template, body, &view, &gw.config)?;
    drop(raw_body);
    let render::Rendered {
        body: rendered,
        overrides,
    } = rendered;

    // dispatch (the account throttle counts only what gets this far)
    authorize::admit_to_upstream(&gw.auth)?;
    let started = Instant::now();
    let timeout = timeout();
    let (status, dispatched) = if route.action.is_http() {
        let (status, body, headers) = proxy::call_http(&proxy_cx, &rendered, timeout).await?;
        (
            status,
            Dispatched::Upstream {
                result: Ok(body),
                headers,
            },
        )
    } else {
        let mapped = proxy::mapped(&proxy_cx);
        let dispatched =
            dispatch::dispatch(upstream, &gw.clients, rendered, &mapped, timeout).await?;
        (200, dispatched)
    };
    outcome.integration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    let (result, upstream_headers) = match dispatched {
        Dispatched::Spooled { spooled, records } => {
            return Ok(if route.pixel {
                respond::pixel(&req.request_id)
            } else {
                respond::spooled(spooled, records, &req.request_id)
            });
        }
        Dispatched::Upstream { result, headers } => (result, headers),
    };
    gw.metrics[i].upstream_call(result.is_ok());

    // respond
    let answer = Answer {
        config: &gw.config,
        route,
        templates: &compiled.responses,
        request_id: &req.request_id,
        overrides: overrides.as_ref(),
        params: &|| view.params(),
        context: &|| view.context(),
    };
    let resp = respond::integration::integration(&answer, status, result, &upstream_headers)?;
    Ok(if route.pixel && resp.status().is_success() {
        respond::pixel(&req.request_id)
    } else {
        resp
    })
}

const NDJSON: &str = "application/x-ndjson";

/// Whether the caller's key is in a usage plan with `invalidate_cache` (API Gateway's
/// `execute-api:InvalidateCache`).
fn may_invalidate_cache(gw: &Gateway, identity: &authorize::Identity, req: &Request) -> bool {
    let Some(key) = identity.api_key.as_deref() else {
        return false;
    };
    let snapshot = gw.auth.snapshot();
    let Ok(entry) = snapshot.lookup(key, req.received_epoch_ms) else {
        return false;
    };
    gw.config
        .usage_plans
        .iter()
        .any(|p| p.name == entry.plan() && p.invalidate_cache)
}

/// API Gateway's resource-policy denial, for a client address a policy refuses.
pub fn access_denied(method: &http::Method, path: &str, ip: std::net::IpAddr) -> GatewayError {
    let message = format!(
        "User: anonymous is not authorized to perform: execute-api:Invoke on resource: {method} {path} with an explicit deny (source IP {ip})"
    );
    GatewayError::new(
        ErrorKind::AccessDenied {
            message: message.clone(),
        },
        message,
    )
}

fn decode_error(e: decode::DecodeError, limit: usize) -> GatewayError {
    match e {
        decode::DecodeError::Unsupported(encoding) => GatewayError::new(
            ErrorKind::UnsupportedEncoding {
                encoding: encoding.clone(),
            },
            format!("Content-Encoding {encoding:?} is not decoded"),
        ),
        decode::DecodeError::TooLarge => GatewayError::new(
            ErrorKind::PayloadTooLarge { limit },
            format!("the decoded body is larger than {limit} bytes"),
        ),
        decode::DecodeError::Overloaded => GatewayError::new(
            ErrorKind::Overloaded,
            "decoded body bytes in flight are at server.max_inflight_body_bytes",
        ),
        decode::DecodeError::Corrupt(why) => GatewayError::new(
            ErrorKind::UndecodableBody {
                message: format!("The request body could not be decoded: {why}"),
            },
            why,
        ),
    }
}

/// What is left of the request's whole deadline when it reaches its upstream is kept for
/// the answer: the upstream call is given the route's timeout or, if less, the request's time
/// left less [`ANSWER_MARGIN`]. So every call, with its retries, is over before the client is
/// answered: a 504 from the server's deadline never leaves a call running that could still
/// deliver what the client was told timed out.
fn upstream_timeout(route: Duration, received: Instant, request_timeout: Duration) -> Duration {
    let left = (received + request_timeout).saturating_duration_since(Instant::now());
    route.min(left.saturating_sub(ANSWER_MARGIN))
}

/// Time kept back from the request's deadline to build and send the answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(100);
