//! One request, start to finish:
//!
//! ```text
//! route -> choose template -> render -> dispatch (AWS call) -> respond
//! ```
//!
//! This module decides the order of the stages and holds the per-request data; the stages
//! themselves live in their modules. Authorization and validation will slot in between
//! route and render.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{Method, Response, StatusCode};
use indexmap::IndexMap;
use serde_json::Value as Json;

use governor::clock::DefaultClock;

use crate::auth::{Authorizer, Denied, RouteAuth, Snapshot};
use crate::batch::{
    FirehoseBatcher, FirehoseSink, KinesisBatcher, KinesisSink, SqsBatcher, SqsSink, SubmitError,
};
use crate::config::{Config, HeaderSource, Passthrough, RouteConfig};
use crate::error::{ErrorKind, GatewayError};
use crate::integrations::{self, Clients, IntegrationError};
use crate::integrations::{Action, firehose, kinesis, sqs};
use crate::mapping::{self, MappingInput, Params, context};
use crate::respond;
use crate::route::RouteTable;
use crate::spool::{self, Delivered, Record, Spool};
use crate::telemetry;
use crate::vtl::Template;

/// Everything the gateway needs to serve, built once at start-up.
pub struct Gateway {
    pub config: Config,
    pub routes: RouteTable,
    pub compiled: Vec<CompiledRoute>,
    pub clients: Clients,
    pub auth: Arc<Authorizer>,
    /// By route index: the batcher of routes that batch.
    pub batchers: Vec<Option<RouteBatcher>>,
    /// By route index: the spool of routes that spool, and its mode.
    pub spools: Vec<Option<(Spool, spool::Mode)>>,
    /// False once shutdown begins: `/readyz` fails so balancers stop sending traffic.
    pub ready: AtomicBool,
    /// By route index.
    pub metrics: Vec<telemetry::RouteMetrics>,
    /// For requests that match no route.
    pub unmatched: telemetry::RouteMetrics,
    /// The OpenAPI document `GET server.openapi_path` serves.
    pub openapi: Option<String>,
    /// By position in `config.gateway_responses`: their body templates.
    pub gateway_templates: Vec<Option<Template>>,
}

impl Gateway {
    /// Builds the route table, starts the batchers (needs a tokio runtime), opens the spools
    /// and starts their replayers, and registers the routes' metrics. Fails when a spool
    /// cannot be opened (another process holds it, or the disk refuses).
    pub fn new(
        config: Config,
        compiled: Vec<CompiledRoute>,
        clients: Clients,
        auth: Arc<Authorizer>,
    ) -> std::io::Result<Gateway> {
        // Handles registered before the recorder exists would record nothing.
        let _ = telemetry::prometheus();
        let routes = RouteTable::new(
            config
                .routes
                .iter()
                .map(|r| (r.method.clone(), r.path.clone())),
        );
        // What can fail without side effects first, before spools are locked and replayers
        // start.
        let gateway_templates =
            compile_gateway_templates(&config).map_err(|e| std::io::Error::other(e.join("\n")))?;
        let openapi = match &config.openapi_path {
            None => None,
            Some(_) => Some(
                crate::openapi::export::document(&config, config.openapi_extensions)
                    .map_err(|e| std::io::Error::other(format!("the OpenAPI document: {e}")))?
                    .to_string(),
            ),
        };
        let spools = spools(&config, &clients)?;
        let batchers = batchers(&config, &clients);
        let metrics = config
            .routes
            .iter()
            .map(|r| telemetry::RouteMetrics::new(&r.name(), Some(r.action.name())))
            .collect();
        Ok(Gateway {
            config,
            routes,
            compiled,
            clients,
            auth,
            batchers,
            spools,
            ready: AtomicBool::new(true),
            metrics,
            unmatched: telemetry::RouteMetrics::new("unmatched", None),
            openapi,
            gateway_templates,
        })
    }

    /// The metrics of a route by index, or of unmatched requests.
    pub fn route_metrics(&self, route: Option<usize>) -> &telemetry::RouteMetrics {
        route
            .and_then(|i| self.metrics.get(i))
            .unwrap_or(&self.unmatched)
    }
}

/// A route's templates, compiled.
pub struct CompiledRoute {
    /// By lower-cased media type.
    pub request_templates: Vec<(String, Template)>,
    pub response_template: Option<Template>,
    /// One per integration response, in order.
    pub integration_responses: Vec<Option<Template>>,
    /// Its request validation, when it has any.
    pub validator: Option<crate::validate::Validator>,
}

/// Compiles every route's templates; errors name the file, line and column.
pub fn compile_templates(config: &Config) -> Result<Vec<CompiledRoute>, Vec<String>> {
    let mut errors = Vec::new();
    let validators: Vec<Option<crate::validate::Validator>> = config
        .routes
        .iter()
        .map(|r| {
            crate::validate::Validator::for_route(r)
                .map_err(|e| errors.push(e))
                .ok()
                .flatten()
        })
        .collect();
    let mut validators = validators.into_iter();
    let mut load = |path: &std::path::Path| -> Option<Template> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(e) => {
                errors.push(format!("{name}: cannot read the template: {e}"));
                None
            }
            Ok(source) => match Template::compile(&name, &source) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    None
                }
            },
        }
    };
    let compiled: Vec<CompiledRoute> = config
        .routes
        .iter()
        .map(|r| CompiledRoute {
            validator: validators.next().flatten(),
            request_templates: r
                .request_templates
                .iter()
                .filter_map(|(media, path)| Some((media.clone(), load(path)?)))
                .collect(),
            response_template: r.response_template.as_deref().and_then(&mut load),
            integration_responses: r
                .responses
                .iter()
                .map(|resp| resp.template.as_deref().and_then(&mut load))
                .collect(),
        })
        .collect();
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(errors)
    }
}

/// Compiles the gateway responses' body templates, by position.
pub fn compile_gateway_templates(config: &Config) -> Result<Vec<Option<Template>>, Vec<String>> {
    let mut errors = Vec::new();
    let templates = config
        .gateway_responses
        .iter()
        .map(|(_, r)| {
            let path = r.template.as_ref()?;
            let name = path.display().to_string();
            let compiled = std::fs::read_to_string(path)
                .map_err(|e| format!("{name}: cannot read the template: {e}"))
                .and_then(|source| Template::compile(&name, &source).map_err(|e| format!("{e:#}")));
            compiled.map_err(|e| errors.push(e)).ok()
        })
        .collect();
    if errors.is_empty() {
        Ok(templates)
    } else {
        Err(errors)
    }
}

/// The client's response for an error: API Gateway's, changed by the configured gateway
/// response for its type (status, headers, and a body rendered with `$context.error`).
pub fn error_response(gw: &Gateway, e: &GatewayError, request_id: &str) -> Response<Body> {
    let mut resp = respond::error(e, request_id);
    let Some(i) = respond::gateway_response_for(resp.status(), e, &gw.config.gateway_responses)
    else {
        return resp;
    };
    let (kind, configured) = &gw.config.gateway_responses[i];
    respond::apply_gateway_response(&mut resp, configured);
    let Some(template) = gw.gateway_templates.get(i).and_then(Option::as_ref) else {
        return resp;
    };
    let message = respond::error_message(e);
    let validation = match &e.kind {
        ErrorKind::Invalid(i) => i.message.clone(),
        _ => String::new(),
    };
    let response_type = match respond::response_type(e) {
        "" => kind.as_str(),
        t => t,
    };
    let context = || {
        serde_json::json!({
            "requestId": request_id,
            "stage": gw.config.stage,
            "error": {
                "message": message,
                "messageString": Json::String(message.clone()).to_string(),
                "responseType": response_type,
                "validationErrorString": validation,
            },
        })
    };
    let input = MappingInput {
        body: "",
        params: &Params::default,
        stage_variables: &gw.config.stage_variables,
        context: &context,
    };
    match mapping::render(template, &input, &gw.config.limits) {
        Ok(r) => *resp.body_mut() = Body::from(r.body),
        Err(err) => {
            tracing::warn!(gateway_response = %kind, error = %err, "A gateway response template failed; the default body was sent.");
        }
    }
    resp
}

/// A request as the pipeline sees it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names are lower-case.
    pub headers: axum::http::HeaderMap,
    pub body: Bytes,
    pub source_ip: String,
    pub request_id: String,
    pub received: Instant,
    pub received_epoch_ms: i64,
}

/// The authorizer for a configuration, with the keys and usage counts loaded from the store.
pub fn authorizer(
    config: &Config,
    snapshot: Snapshot,
    usage: Vec<(String, String, u64)>,
) -> Authorizer {
    let routes = config
        .routes
        .iter()
        .map(|r| RouteAuth {
            name: r.name(),
            key_required: r.api_key_required,
            key_query: r.api_key_query.clone(),
            throttle: r.throttle,
        })
        .collect();
    Authorizer::new(
        DefaultClock::default(),
        config.usage_plans.clone(),
        routes,
        config.account_throttle,
        snapshot,
        usage,
    )
}

/// What happened, for the access log.
pub struct Outcome {
    /// The matched route's index.
    pub route: Option<usize>,
    pub key_id: Option<String>,
    /// The key's quota position, when the route sends `X-RateLimit-*` headers.
    pub quota: Option<crate::auth::QuotaStatus>,
    pub integration_ms: Option<f64>,
    pub error: Option<GatewayError>,
}

/// Runs the pipeline; never fails: errors become responses here.
pub async fn handle(gw: &Arc<Gateway>, req: Request) -> (Response<Body>, Outcome) {
    let mut outcome = Outcome {
        route: None,
        key_id: None,
        quota: None,
        integration_ms: None,
        error: None,
    };
    let mut resp = match run(gw, &req, &mut outcome).await {
        Ok(resp) => resp,
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

async fn run(
    gw: &Arc<Gateway>,
    req: &Request,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    let Some(matched) = gw.routes.lookup(&req.method, &req.path) else {
        return Err(GatewayError::new(
            ErrorKind::NoRoute,
            format!("no route for {} {}", req.method, req.path),
        ));
    };
    let route = &gw.config.routes[matched.route];
    let compiled = &gw.compiled[matched.route];
    outcome.route = Some(matched.route);

    let presented = api_key(req, route);
    let admitted = gw
        .auth
        .authorize(matched.route, presented.as_deref(), req.received_epoch_ms)
        .map_err(denied)?;
    outcome.key_id = admitted.key.as_ref().map(|k| k.id.clone());
    if route.rate_limit_headers {
        outcome.quota = admitted.quota;
    }

    let validator = compiled.validator.as_ref();
    if let Some(v) = validator {
        v.check_parameters(&matched.params, &req.query, &req.headers)
            .map_err(invalid)?;
    }
    let content_type = media_type(&req.headers);
    let template = choose_template(route, compiled, &content_type)?;
    // A binary media type's body reaches templates base64-encoded, as on API Gateway.
    let binary = is_binary(&gw.config.binary_media_types, &content_type);
    let encoded;
    let body = if binary {
        encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &req.body);
        encoded.as_str()
    } else {
        std::str::from_utf8(&req.body).map_err(|_| {
            GatewayError::new(ErrorKind::InvalidBody, "the request body is not UTF-8 text")
        })?
    };
    // A JSON body is parsed here, once: what does not parse is refused before any template
    // runs, and the template reads this document instead of parsing again. A model needs
    // the document whatever the template.
    let template_reads_json = template.is_some() && !binary && is_json_media(&content_type);
    let mut document = match validator {
        Some(v) if v.has_model() => {
            let parsed = parse_json(body).map_err(|e| invalid(v.not_json(&e.detail)))?;
            v.check_body(parsed.as_ref()).map_err(invalid)?;
            parsed
        }
        _ if template_reads_json => parse_json(body)?,
        _ => None,
    };
    if let Some(d) = &document
        && gw.config.max_json_depth < crate::config::MAX_JSON_DEPTH
        && deeper_than(d, gw.config.max_json_depth)
    {
        return Err(GatewayError::new(
            ErrorKind::InvalidBody,
            format!(
                "the body nests deeper than server.max_json_depth ({})",
                gw.config.max_json_depth
            ),
        ));
    }
    if !template_reads_json {
        document = None;
    }

    // Parameters and `$context` are built only for templates that read them.
    let build_params = || params(req, &matched.params);
    let build_context = || {
        let mut facts = facts(gw, req, route);
        if let Some(key) = &admitted.key {
            facts.api_key = presented.clone();
            facts.api_key_id = Some(key.id.clone());
        }
        context::build(&facts)
    };
    let (rendered, overrides) = match template {
        None => (body.to_string(), None),
        Some(t) => {
            let input = MappingInput {
                body,
                params: &build_params,
                stage_variables: &gw.config.stage_variables,
                context: &build_context,
            };
            let r = match document {
                Some(d) => mapping::render_document(t, &input, d, &gw.config.limits),
                None => mapping::render(t, &input, &gw.config.limits),
            }
            .map_err(|e| GatewayError::new(ErrorKind::Template, format!("{e}")))?;
            let overrides = r.context.as_ref().map(|c| c["responseOverride"].clone());
            (r.body, overrides)
        }
    };

    let started = Instant::now();
    let mut upstream_headers = Vec::new();
    let result = match gw.batchers.get(matched.route).and_then(Option::as_ref) {
        Some(batcher) => {
            let spool = gw.spools.get(matched.route).and_then(Option::as_ref);
            match batched(batcher, spool, route, &rendered).await? {
                Dispatched::Upstream(result) => result,
                Dispatched::Spooled { spooled, records } => {
                    outcome.integration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
                    return Ok(respond::spooled(spooled, records, &req.request_id));
                }
            }
        }
        None => {
            // Boxed: an SDK call's future is large, and held inline it would enlarge every
            // request's future, batched ones included (about 24 KB each at 1,000 in flight,
            // measured in benches/RESULTS.md).
            let call = Box::pin(integrations::call(
                &gw.clients,
                route.action,
                route.target.as_deref(),
                &rendered,
                route.timeout,
            ));
            if reads_upstream_headers(route) {
                let (result, headers) = integrations::headers::capturing(call).await;
                upstream_headers = headers;
                result
            } else {
                call.await
            }
        }
    };
    outcome.integration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    gw.metrics[matched.route].upstream_call(result.is_ok());

    // The service's answer, as integration responses see it: an HTTP status and a JSON body.
    let (upstream_status, upstream, error) = match result {
        Ok(body) => (200, body, None),
        Err(e) => match &e {
            IntegrationError::Service {
                status,
                code,
                message,
                ..
            } if !route.responses.is_empty() => (
                *status,
                serde_json::json!({"__type": code, "message": message}),
                Some(e),
            ),
            _ => return Err(e.into()),
        },
    };
    let code = error
        .as_ref()
        .map(|_| upstream["__type"].as_str().unwrap_or_default());
    let selected = select_response(route, upstream_status, code);
    let (status, template, response) = match selected {
        Some(i) => (
            route.responses[i].status,
            compiled.integration_responses[i]
                .as_ref()
                .or(compiled.response_template.as_ref()),
            Some(&route.responses[i]),
        ),
        // An error no pattern selects keeps the gateway's own error response.
        None => match error {
            Some(e) => return Err(e.into()),
            None => (200, compiled.response_template.as_ref(), None),
        },
    };
    let (body, response_overrides) = match template {
        None => (upstream.to_string(), None),
        Some(t) => render_response(gw, t, &upstream, &build_params, &build_context)?,
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = respond::json_response(status, body, &req.request_id);
    if let Some(r) = response {
        let context = r
            .headers
            .iter()
            .any(|(_, s)| matches!(s, HeaderSource::Context(_)))
            .then(&build_context);
        for (name, source) in &r.headers {
            if let Some(value) =
                header_value(gw, source, context.as_ref(), &upstream, &upstream_headers)
            {
                respond::set_header(&mut resp, name, &value);
            }
        }
    }
    // API Gateway honours `$context.responseOverride` in the integration response's
    // template; the request template's are applied first, so the response's win.
    respond::apply_overrides(&mut resp, overrides.as_ref());
    respond::apply_overrides(&mut resp, response_overrides.as_ref());
    Ok(resp)
}

/// A route's batcher, by action.
#[derive(Debug, Clone)]
pub enum RouteBatcher {
    Kinesis(KinesisBatcher),
    Firehose(FirehoseBatcher),
    Sqs(SqsBatcher),
}

/// Where a batched request's records went.
enum Dispatched {
    /// To the upstream, with its answer.
    Upstream(Result<Json, IntegrationError>),
    /// `spooled` of the request's `records` to the spool (the rest to the upstream).
    Spooled { spooled: usize, records: usize },
}

/// Sends a request's records through its route's batcher (or its spool) and waits for the
/// outcome.
async fn batched(
    batcher: &RouteBatcher,
    spool: Option<&(Spool, spool::Mode)>,
    route: &RouteConfig,
    rendered: &str,
) -> Result<Dispatched, GatewayError> {
    let target = route.target.as_deref();
    let dispatched = match batcher {
        RouteBatcher::Kinesis(b) => {
            let (_, entries) = match kinesis::parse_put_records(target, rendered) {
                Ok(parsed) => parsed,
                Err(e) => return Ok(Dispatched::Upstream(Err(e))),
            };
            submit(b, spool, route, entries)
                .await?
                .map(|results| kinesis::records_response(&results))
        }
        RouteBatcher::Firehose(b) => {
            let (_, records) = match firehose::parse_put_record_batch(target, rendered) {
                Ok(parsed) => parsed,
                Err(e) => return Ok(Dispatched::Upstream(Err(e))),
            };
            submit(b, spool, route, records)
                .await?
                .map(|outcomes| firehose::batch_response(&outcomes))
        }
        RouteBatcher::Sqs(b) => {
            let (form, _, entries) = match sqs::parse_send_message_batch(target, rendered) {
                Ok(parsed) => parsed,
                Err(e) => return Ok(Dispatched::Upstream(Err(e))),
            };
            // Only the ids are needed for the answer; the entries move into the batch.
            let ids = sqs::ids(&entries);
            let deadline = tokio::time::Instant::now() + route.timeout.mul_f64(0.8);
            let submitted = tokio::time::timeout(route.timeout, b.submit(entries, deadline)).await;
            Dispatched::Upstream(
                upstream_result(route, submitted)?
                    .and_then(|outcomes| sqs::batch_response(form, &ids, &outcomes)),
            )
        }
    };
    Ok(dispatched)
}

/// A batcher's answer, or the timeout around it, as the route's result.
fn upstream_result<O>(
    route: &RouteConfig,
    submitted: Result<Result<O, SubmitError>, tokio::time::error::Elapsed>,
) -> Result<Result<O, IntegrationError>, GatewayError> {
    match submitted {
        Err(_) => Ok(Err(IntegrationError::Timeout {
            action: route.action,
            timeout: route.timeout,
        })),
        Ok(Ok(results)) => Ok(Ok(results)),
        Ok(Err(SubmitError::Upstream(e))) => Ok(Err(e)),
        Ok(Err(e @ (SubmitError::QueueFull | SubmitError::Closed))) => {
            Err(GatewayError::new(ErrorKind::Overloaded, e.to_string()))
        }
    }
}

/// Submits a request's items to the batcher; with a spool, writes to it instead what the
/// mode says: everything (`always`, or while the spool is catching up after an outage; see
/// `Spool::spilling`), or what the upstream did not take before the route's deadline.
async fn submit<S>(
    batcher: &crate::batch::Batcher<S>,
    spool: Option<&(Spool, spool::Mode)>,
    route: &RouteConfig,
    items: Vec<S::Item>,
) -> Result<Submitted<S::Output>, GatewayError>
where
    S: crate::batch::Sink,
    S::Item: Record,
    S::Output: Delivered,
{
    let deadline = tokio::time::Instant::now() + route.timeout.mul_f64(0.8);
    let Some((spool, mode)) = spool else {
        let submitted = tokio::time::timeout(route.timeout, batcher.submit(items, deadline)).await;
        return Ok(Submitted::Results(upstream_result(route, submitted)?));
    };
    let records = items.len();
    if *mode == spool::Mode::Always || spool.spilling() {
        return spool_items(spool, &items, records).await;
    }
    // A copy, in case the upstream does not take them in time.
    let kept = items.clone();
    let submitted = tokio::time::timeout(route.timeout, batcher.submit(items, deadline)).await;
    match submitted {
        Ok(Ok(results)) => {
            let failed: Vec<S::Item> = kept
                .into_iter()
                .zip(&results)
                .filter(|(_, r)| !r.delivered())
                .map(|(item, _)| item)
                .collect();
            if failed.is_empty() {
                Ok(Submitted::Results(Ok(results)))
            } else {
                spool.upstream_failing();
                spool_items(spool, &failed, records).await
            }
        }
        // The service refused the request itself: spooling would not make it acceptable.
        Ok(Err(SubmitError::Upstream(e))) if !e.retryable() => Ok(Submitted::Results(Err(e))),
        // Down, throttling, slow, or the queue toward it full. After a timeout the batch may
        // still deliver these records: spooling them too can send them twice, never zero times.
        Ok(Err(_)) | Err(_) => {
            spool.upstream_failing();
            spool_items(spool, &kept, records).await
        }
    }
}

/// A batched submission's outcome: the upstream's per-item results (or its error), or the
/// number of items spooled.
enum Submitted<O> {
    Results(Result<Vec<O>, IntegrationError>),
    Spooled { spooled: usize, records: usize },
}

impl<O> Submitted<O> {
    fn map(self, respond: impl FnOnce(Vec<O>) -> Result<Json, IntegrationError>) -> Dispatched {
        match self {
            Submitted::Results(Ok(results)) => Dispatched::Upstream(respond(results)),
            Submitted::Results(Err(e)) => Dispatched::Upstream(Err(e)),
            Submitted::Spooled { spooled, records } => Dispatched::Spooled { spooled, records },
        }
    }
}

async fn spool_items<I: Record, O>(
    spool: &Spool,
    items: &[I],
    records: usize,
) -> Result<Submitted<O>, GatewayError> {
    let payloads = items.iter().map(Record::to_payload).collect();
    match spool.append(payloads).await {
        Ok(()) => Ok(Submitted::Spooled {
            spooled: items.len(),
            records,
        }),
        Err(spool::SpoolError::Full) => Err(GatewayError::new(
            ErrorKind::SpoolFull,
            "the upstream is not taking records and the spool is full",
        )),
        Err(e) => Err(GatewayError::new(ErrorKind::Overloaded, e.to_string())),
    }
}

/// Opens the spool of every route that spools and starts its replayer, which sends through
/// a sink of its own to the route's target.
pub fn spools(
    config: &Config,
    clients: &Clients,
) -> std::io::Result<Vec<Option<(Spool, spool::Mode)>>> {
    config
        .routes
        .iter()
        .map(|r| {
            let (Some(mode), Some(policy), Some(target)) = (r.spool, r.batch, r.target.clone())
            else {
                return Ok(None);
            };
            let name = r.name();
            let (spool, recovered) = Spool::open(&name, &config.spool).map_err(|e| {
                std::io::Error::new(e.kind(), format!("opening the spool of {name}: {e}"))
            })?;
            tracing::info!(
                route = %name,
                records = recovered.records,
                bytes = recovered.bytes,
                torn_bytes = recovered.torn_bytes,
                lost_bytes = recovered.lost_bytes,
                "Opened the spool."
            );
            if recovered.lost_bytes > 0 {
                tracing::error!(route = %name, lost_bytes = recovered.lost_bytes, "The spool had damaged frames in an older segment; the bytes after them cannot be read.");
            }
            let limits = spool::ReplayLimits {
                max_records: policy.max_records,
                max_bytes: policy.max_bytes,
                in_flight: config.spool.replay_in_flight,
            };
            match sink(r.action, target, clients, policy.aggregate, &name) {
                RouteSink::Kinesis(s) => spool.spawn_replayer(s, limits),
                RouteSink::Firehose(s) => spool.spawn_replayer(s, limits),
                RouteSink::Sqs(_) => return Ok(None),
            }
            Ok(Some((spool, mode)))
        })
        .collect()
}

/// A route's batch sink, by action.
pub enum RouteSink {
    Kinesis(KinesisSink),
    Firehose(FirehoseSink),
    Sqs(SqsSink),
}

/// The sink that sends a batched route's records to its target.
pub fn sink(
    action: Action,
    target: String,
    clients: &Clients,
    aggregate: bool,
    route: &str,
) -> RouteSink {
    match action {
        Action::SqsSendMessageBatch => RouteSink::Sqs(SqsSink {
            sqs: clients.sqs.clone(),
            queue: target,
        }),
        Action::FirehosePutRecordBatch => RouteSink::Firehose(FirehoseSink {
            client: clients.firehose.clone(),
            delivery_stream: target,
        }),
        _ => {
            let stream = if target.starts_with("arn:") {
                kinesis::StreamRef {
                    name: None,
                    arn: Some(target),
                }
            } else {
                kinesis::StreamRef {
                    name: Some(target),
                    arn: None,
                }
            };
            RouteSink::Kinesis(KinesisSink::new(
                clients.kinesis.clone(),
                stream,
                aggregate,
                route.to_string(),
            ))
        }
    }
}

/// Starts a batcher for every route that batches (needs a tokio runtime).
pub fn batchers(config: &Config, clients: &Clients) -> Vec<Option<RouteBatcher>> {
    config
        .routes
        .iter()
        .map(|r| {
            let policy = r.batch?;
            let target = r.target.clone()?;
            let name = r.name();
            Some(
                match sink(r.action, target, clients, policy.aggregate, &name) {
                    RouteSink::Sqs(s) => RouteBatcher::Sqs(SqsBatcher::spawn(s, policy, name)),
                    RouteSink::Firehose(s) => {
                        RouteBatcher::Firehose(FirehoseBatcher::spawn(s, policy, name))
                    }
                    RouteSink::Kinesis(s) => {
                        RouteBatcher::Kinesis(KinesisBatcher::spawn(s, policy, name))
                    }
                },
            )
        })
        .collect()
}

/// The key a request presents: the `x-api-key` header, or the route's query parameter.
fn api_key(req: &Request, route: &RouteConfig) -> Option<String> {
    let header = header_text(&req.headers, "x-api-key");
    header.or_else(|| {
        let name = route.api_key_query.as_deref()?;
        req.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

fn denied(d: Denied) -> GatewayError {
    match d {
        Denied::Forbidden(reason) => GatewayError::new(ErrorKind::Forbidden, reason),
        Denied::Throttled { retry_after, scope } => GatewayError::new(
            ErrorKind::Throttled { retry_after },
            format!("{scope} throttle"),
        ),
        Denied::QuotaExceeded { retry_after } => {
            GatewayError::new(ErrorKind::QuotaExceeded { retry_after }, "quota exceeded")
        }
    }
}

/// API Gateway's selection: the first response whose pattern matches the whole status
/// text; otherwise the default (no pattern), but only for a successful call: an upstream
/// error is never reported through the default (success) response.
fn select_response(route: &RouteConfig, status: u16, error: Option<&str>) -> Option<usize> {
    let text = status.to_string();
    route
        .responses
        .iter()
        .position(|r| {
            let selective = r.pattern.is_some() || r.error_pattern.is_some();
            selective
                && r.pattern.as_ref().is_none_or(|p| p.is_match(&text))
                && r.error_pattern
                    .as_ref()
                    .is_none_or(|p| error.is_some_and(|code| p.is_match(code)))
        })
        .or_else(|| {
            error
                .is_none()
                .then(|| {
                    route
                        .responses
                        .iter()
                        .position(|r| r.pattern.is_none() && r.error_pattern.is_none())
                })
                .flatten()
        })
}

/// Whether a route's integration responses read the service's response headers.
fn reads_upstream_headers(route: &RouteConfig) -> bool {
    route.responses.iter().any(|r| {
        r.headers
            .iter()
            .any(|(_, s)| matches!(s, HeaderSource::ResponseHeader(_)))
    })
}

fn header_value(
    gw: &Gateway,
    source: &HeaderSource,
    context: Option<&Json>,
    upstream: &Json,
    upstream_headers: &[(String, String)],
) -> Option<String> {
    let text = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Null => None,
        other => Some(other.to_string()),
    };
    match source {
        HeaderSource::Literal(s) => Some(s.clone()),
        HeaderSource::StageVariable(name) => gw.config.stage_variables.get(name).cloned(),
        HeaderSource::Context(path) => {
            let mut v = context?;
            for part in path.split('.') {
                v = v.get(part)?;
            }
            text(v)
        }
        HeaderSource::ResponseBody(field) => upstream.get(field).and_then(text),
        HeaderSource::ResponseHeader(name) => upstream_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
    }
}

/// The request's media type, lower-cased without parameters; none means JSON, as on API
/// Gateway.
fn media_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/json".to_string())
}

/// Whether a media type is one of the binary media types (`image/png`, `image/*`, `*/*`).
fn is_binary(types: &[String], media: &str) -> bool {
    types.iter().any(|t| {
        t == media
            || t == "*/*"
            || t.strip_suffix("/*")
                .is_some_and(|prefix| media.split('/').next() == Some(prefix))
    })
}

/// Whether a media type is JSON (`application/json`, or a `+json` suffix).
fn is_json_media(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

/// Parses a JSON body, refusing one that does not parse (a template would read it as empty
/// values and send records the client never meant), including one that nests deeper than
/// serde_json's 127 levels or holds a lone surrogate escape. An empty body is left to the
/// template, which reads it as `{}`, as on API Gateway.
fn parse_json(body: &str) -> Result<Option<Json>, GatewayError> {
    if body.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(body).map(Some).map_err(|e| {
        GatewayError::new(ErrorKind::InvalidBody, format!("the body is not JSON: {e}"))
    })
}

/// Whether a document nests more than `limit` arrays and objects deep.
fn deeper_than(v: &Json, limit: usize) -> bool {
    let mut stack: Vec<(&Json, usize)> = vec![(v, 1)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Json>> = match v {
            Json::Array(a) => Box::new(a.iter()),
            Json::Object(m) => Box::new(m.values()),
            _ => continue,
        };
        if depth > limit {
            return true;
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    false
}

/// A validation failure as the client's 400.
fn invalid(i: crate::validate::Invalid) -> GatewayError {
    let detail = format!("request validation: {}", i.message);
    GatewayError::new(ErrorKind::Invalid(Box::new(i)), detail)
}

/// API Gateway's template selection and passthrough rules.
fn choose_template<'a>(
    route: &RouteConfig,
    compiled: &'a CompiledRoute,
    media: &str,
) -> Result<Option<&'a Template>, GatewayError> {
    if let Some((_, t)) = compiled.request_templates.iter().find(|(m, _)| m == media) {
        return Ok(Some(t));
    }
    let has_templates = !compiled.request_templates.is_empty();
    let pass = match route.passthrough {
        Passthrough::WhenNoMatch => true,
        Passthrough::WhenNoTemplates => !has_templates,
        Passthrough::Never => false,
    };
    if pass {
        Ok(None)
    } else {
        Err(GatewayError::new(
            ErrorKind::UnsupportedMediaType,
            format!("no request template for {media}"),
        ))
    }
}

fn params(req: &Request, path_params: &[(String, String)]) -> Params {
    let mut p = Params::default();
    p.path.extend(path_params.iter().cloned());
    for (k, v) in &req.query {
        p.querystring.entry(k.clone()).or_insert_with(|| v.clone());
    }
    for (k, v) in &req.headers {
        p.header
            .entry(k.as_str().to_string())
            .or_insert_with(|| String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    p
}

/// A header's first value as text (invalid UTF-8 replaced).
fn header_text(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn facts(gw: &Gateway, req: &Request, route: &RouteConfig) -> context::RequestFacts {
    let header = |name: &str| header_text(&req.headers, name);
    context::RequestFacts {
        request_id: req.request_id.clone(),
        extended_request_id: req.request_id.replace('-', "")[..16].to_string(),
        http_method: req.method.to_string(),
        resource_path: route.path.to_string(),
        path: format!("/{}{}", gw.config.stage, req.path),
        stage: gw.config.stage.clone(),
        api_id: "ingest-gateway".into(),
        account_id: String::new(),
        domain_name: header("host").unwrap_or_default(),
        protocol: "HTTP/1.1".into(),
        source_ip: req.source_ip.clone(),
        user_agent: header("user-agent"),
        api_key: None,
        api_key_id: None,
        request_time_epoch_ms: req.received_epoch_ms,
    }
}

/// A response template sees the service's response as `$input`; `$input.params()` still
/// returns the client request's parameters.
fn render_response(
    gw: &Gateway,
    template: &Template,
    upstream: &Json,
    params: &dyn Fn() -> Params,
    build_context: &dyn Fn() -> Json,
) -> Result<(String, Option<Json>), GatewayError> {
    let text = upstream.to_string();
    let empty: IndexMap<String, String> = IndexMap::new();
    let stage = if gw.config.stage_variables.is_empty() {
        &empty
    } else {
        &gw.config.stage_variables
    };
    let input = MappingInput {
        body: &text,
        params,
        stage_variables: stage,
        context: build_context,
    };
    mapping::render(template, &input, &gw.config.limits)
        .map(|r| {
            let overrides = r.context.as_ref().map(|c| c["responseOverride"].clone());
            (r.body, overrides)
        })
        .map_err(|e| GatewayError::new(ErrorKind::Template, format!("response template: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(responses: &str) -> RouteConfig {
        let text = format!(
            "[[routes]]\nmethod = \"POST\"\npath = \"/a\"\naction = \"kinesis:PutRecord\"\n{responses}"
        );
        let config = crate::config::parse(
            std::path::Path::new("t.toml"),
            &text,
            std::path::Path::new("."),
        )
        .unwrap();
        config.routes.into_iter().next().unwrap()
    }

    #[test]
    fn json_bodies_are_checked_before_rendering() {
        assert_eq!(parse_json("").unwrap(), None);
        assert_eq!(parse_json(" \n").unwrap(), None);
        assert_eq!(
            parse_json(r#"{"a": [1, "x", null]}"#).unwrap(),
            Some(serde_json::json!({"a": [1, "x", null]}))
        );
        assert!(
            parse_json(r#"["\ud83d\ude00", "\u00e9"]"#).is_ok(),
            "a surrogate pair"
        );
        for bad in [
            "{",
            "{\"a\": 1,}",
            "not json",
            "{} {}",
            "[1] x",
            r#"["\ud800"]"#,
            "[\"\u{0}\"]",
        ] {
            let e = parse_json(bad).unwrap_err();
            assert!(matches!(e.kind, ErrorKind::InvalidBody), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_json(&deep).is_err(), "nesting is bounded");
        // serde_json's limit, the one templates parse with: 127 levels, not 128.
        let ok_depth = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(parse_json(&ok_depth).is_ok());
        let too_deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(parse_json(&too_deep).is_err());
        assert!(is_json_media("application/json"));
        assert!(is_json_media("application/vnd.api+json"));
        assert!(!is_json_media("text/plain"));
    }

    #[test]
    fn binary_media_types_match_exactly_or_by_wildcard() {
        let types = vec![
            "application/octet-stream".to_string(),
            "image/*".to_string(),
        ];
        assert!(is_binary(&types, "application/octet-stream"));
        assert!(is_binary(&types, "image/png"));
        assert!(!is_binary(&types, "application/json"));
        assert!(!is_binary(&types, "imagex/png"));
        assert!(is_binary(&["*/*".to_string()], "text/plain"));
        assert!(!is_binary(&[], "image/png"));
    }

    #[test]
    fn nesting_is_counted_in_arrays_and_objects() {
        let nested = |n: usize| -> Json {
            serde_json::from_str(&format!("{}1{}", "[".repeat(n), "]".repeat(n))).unwrap()
        };
        assert!(!deeper_than(&nested(5), 5));
        assert!(deeper_than(&nested(6), 5));
        assert!(!deeper_than(&serde_json::json!({"a": [1, {"b": 2}]}), 3));
        assert!(deeper_than(&serde_json::json!({"a": [1, {"b": [2]}]}), 3));
        assert!(!deeper_than(&serde_json::json!("flat"), 1));
    }

    #[test]
    fn integration_responses_select_by_whole_status() {
        let r = route(
            "[[routes.responses]]\npattern = \"4\\\\d{2}\"\nstatus = 400\n[[routes.responses]]\nstatus = 202\n[[routes.responses]]\npattern = \"5..\"\nstatus = 503\n",
        );
        let e = Some("ValidationException");
        assert_eq!(
            select_response(&r, 200, None),
            Some(1),
            "the default takes successes"
        );
        assert_eq!(select_response(&r, 404, e), Some(0));
        assert_eq!(select_response(&r, 500, e), Some(2));
        assert_eq!(
            select_response(&r, 4000, e),
            None,
            "patterns match the whole status"
        );
        let only_default = route("[[routes.responses]]\nstatus = 202\n");
        assert_eq!(
            select_response(&only_default, 400, e),
            None,
            "errors never use the default"
        );
        assert_eq!(select_response(&route(""), 200, None), None);
        // By error code, alone or with the status.
        let by_code = route(
            "[[routes.responses]]\nerror_pattern = \"ResourceNotFound.*\"\nstatus = 404\n[[routes.responses]]\npattern = \"4..\"\nerror_pattern = \"Throttl.*|ProvisionedThroughput.*\"\nstatus = 429\n[[routes.responses]]\npattern = \"4..\"\nstatus = 400\n",
        );
        assert_eq!(
            select_response(&by_code, 400, Some("ResourceNotFoundException")),
            Some(0)
        );
        assert_eq!(
            select_response(&by_code, 500, Some("ResourceNotFoundException")),
            Some(0)
        );
        assert_eq!(
            select_response(&by_code, 400, Some("ThrottlingException")),
            Some(1)
        );
        assert_eq!(
            select_response(&by_code, 400, Some("ValidationException")),
            Some(2)
        );
        assert_eq!(
            select_response(&by_code, 200, None),
            None,
            "a code pattern never takes a success"
        );
    }
}
