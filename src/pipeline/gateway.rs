//! The gateway, built once at start-up: the route table, every route's compiled templates
//! and validation, the authorizer, and each route's way upstream (its integration, and the
//! batcher and spool of routes that have them). Nothing here runs per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use governor::clock::DefaultClock;

use crate::auth::{Authorizer, RouteAuth, Snapshot};
use crate::config::Config;
use crate::dispatch::Upstream;
use crate::integrations::{self, BatchRoute, Clients};
use crate::respond::gateway::GatewayResponses;
use crate::respond::integration::{ResponseTemplates, reads_upstream_headers};
use crate::route::RouteTable;
use crate::spool::Spool;
use crate::telemetry;
use crate::validate::Validator;
use crate::vtl::Template;

/// Everything the gateway needs to serve, built once at start-up.
pub struct Gateway {
    pub config: Config,
    pub routes: RouteTable,
    /// By route index (shared by the stages, whose routes are the same).
    pub compiled: Arc<Vec<CompiledRoute>>,
    pub clients: Clients,
    pub auth: Arc<Authorizer>,
    /// The key store behind `auth`, when there is one: a key the snapshot does not know is
    /// looked up there before it is refused.
    pub keys: Option<Arc<crate::auth::sync::KeySync>>,
    /// By route index: how each route reaches its upstream (shared with the configuration
    /// this one succeeded when the route's way upstream did not change, see
    /// [`Gateway::succeeding`]).
    pub upstreams: Vec<Arc<Upstream>>,
    /// Whether each route's upstream was found (see `readiness`).
    pub upstream_state: super::readiness::Upstreams,
    /// False once shutdown begins: `/readyz` fails so balancers stop sending traffic.
    pub ready: AtomicBool,
    /// By route index.
    pub metrics: Vec<telemetry::RouteMetrics>,
    /// For requests that match no route.
    pub unmatched: telemetry::RouteMetrics,
    /// The OpenAPI document `GET server.openapi_path` serves.
    pub openapi: Option<String>,
    /// With `server.sdk_downloads`: each generated SDK as (`LANG.tar.gz`, its bytes).
    pub sdks: Vec<(String, Vec<u8>)>,
    /// The gateway's own error responses, as configured.
    pub gateway_responses: GatewayResponses,
    /// Body bytes all requests may hold at once (`server.max_inflight_body_bytes`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// The listener's certificates, when it speaks HTTPS.
    pub tls: Option<Arc<crate::edge::tls::Tls>>,
    /// `server.ip_throttle`.
    pub ip_throttle: Option<crate::edge::ip_throttle::IpThrottle>,
    /// The configured authorizers.
    pub authorizers: Vec<crate::authorize::Verifier>,
    /// The client HTTP routes call their backends with.
    pub http: crate::outbound::Client,
    /// By route index: a route's own client, when its backend has its own CA.
    pub http_by_route: Vec<Option<crate::outbound::Client>>,
    /// By route index: the route's response cache (`cache`), empty at every start and
    /// reload.
    pub caches: Vec<Option<crate::cache::RouteCache>>,
    /// `[websocket]`: the gateway that serves its messages (its routes are the WebSocket
    /// routes).
    pub websocket: Option<Arc<Gateway>>,
    /// `[stages]`: the gateways that serve requests when there are stages.
    pub stages: super::stages::Stages,
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
        let (compiled, websocket) = split_websocket(&config, compiled);
        Gateway::build(config, Arc::new(compiled), clients, auth, None)?.staged(None, websocket)
    }

    /// Sets the key store behind the authorizer, for this gateway and its stages.
    pub fn set_keys(&mut self, keys: Arc<crate::auth::sync::KeySync>) {
        for s in &mut self.stages.list {
            let canary = s.canary.as_mut().map(|(_, g)| g);
            for gw in std::iter::once(&mut s.main).chain(canary) {
                if let Some(gw) = Arc::get_mut(gw) {
                    gw.keys = Some(keys.clone());
                }
            }
        }
        if let Some(gw) = self.websocket.as_mut().and_then(Arc::get_mut) {
            gw.keys = Some(keys.clone());
        }
        self.keys = Some(keys);
    }

    /// The gateway for a reloaded configuration, taking over from `old`: the same clients
    /// and key store; an authorizer sharing the keys, usage counts and unchanged throttles'
    /// buckets; and, for every route whose way upstream is unchanged (its name, action,
    /// target, timeout, batching and spooling), the same batcher and spool, so nothing they
    /// hold is lost or sent twice. `old` keeps serving the requests it has; its batchers of
    /// removed or changed routes stop once those are answered.
    pub fn succeeding(
        config: Config,
        compiled: Vec<CompiledRoute>,
        old: &Gateway,
    ) -> std::io::Result<Gateway> {
        let auth = Arc::new(reconfigured(&config, &old.auth));
        let (compiled, websocket) = split_websocket(&config, compiled);
        let mut gw = Gateway::build(
            config,
            Arc::new(compiled),
            old.clients.clone(),
            auth,
            Some(old),
        )?;
        gw.keys.clone_from(&old.keys);
        gw.staged(Some(old), websocket)
    }

    pub(super) fn build(
        config: Config,
        compiled: Arc<Vec<CompiledRoute>>,
        clients: Clients,
        auth: Arc<Authorizer>,
        old: Option<&Gateway>,
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
        let gateway_responses =
            GatewayResponses::compile(&config).map_err(|e| std::io::Error::other(e.join("\n")))?;
        let openapi = match &config.openapi_path {
            None => None,
            Some(_) => Some(
                crate::openapi::export::document(&config, config.openapi_extensions)
                    .map_err(|e| std::io::Error::other(format!("the OpenAPI document: {e}")))?
                    .to_string(),
            ),
        };
        let sdks = if config.sdk_downloads {
            let api = crate::sdk::api(&config).map_err(std::io::Error::other)?;
            crate::sdk::LANGUAGES
                .iter()
                .map(|lang| {
                    let files = crate::sdk::files(&api, lang).map_err(std::io::Error::other)?;
                    let name = format!("ingest-gateway-client-{lang}");
                    Ok((
                        format!("{lang}.tar.gz"),
                        crate::sdk::tarball(&name, &files)?,
                    ))
                })
                .collect::<std::io::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let tls = match (&config.edge.tls, old) {
            (None, _) => None,
            // The listener keeps the certificates it started with (SIGHUP reloads their
            // files); a reload does not open them again.
            (Some(files), Some(old)) if old.config.edge.tls.as_ref() == Some(files) => {
                old.tls.clone()
            }
            (Some(files), _) => Some(Arc::new(
                crate::edge::tls::Tls::load(files).map_err(std::io::Error::other)?,
            )),
        };
        let ip_throttle = config
            .edge
            .ip_throttle
            .and_then(crate::edge::ip_throttle::IpThrottle::new);
        let authorizers = verifiers(&config, &clients).map_err(std::io::Error::other)?;
        let http = crate::outbound::client(config.aws.connect_timeout, None)
            .map_err(std::io::Error::other)?;
        let mut http_by_route = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let ca = r.integration.http.as_ref().and_then(|b| b.ca_file.as_ref());
            http_by_route.push(match ca {
                None => None,
                Some(file) => {
                    let pem = std::fs::read(file).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("{}: {e}", file.display()))
                    })?;
                    Some(
                        crate::outbound::client(config.aws.connect_timeout, Some(&pem))
                            .map_err(std::io::Error::other)?,
                    )
                }
            });
        }
        let upstreams = upstreams(&config, &clients, old)?;
        telemetry::relabel_routes(
            config
                .routes
                .iter()
                .map(|r| (r.name(), config.metrics_label(r))),
        );
        let metrics = config
            .routes
            .iter()
            .map(|r| telemetry::RouteMetrics::new(&r.name(), Some(r.action.name())))
            .collect();
        Ok(Gateway {
            routes,
            compiled,
            clients,
            auth,
            keys: None,
            upstream_state: super::readiness::Upstreams::new(upstreams.len()),
            upstreams,
            ready: AtomicBool::new(true),
            metrics,
            unmatched: telemetry::RouteMetrics::new("unmatched", None),
            openapi,
            sdks,
            gateway_responses,
            body_budget: match old {
                Some(o) if o.config.max_inflight_body_bytes == config.max_inflight_body_bytes => {
                    o.body_budget.clone()
                }
                _ => Arc::new(tokio::sync::Semaphore::new(config.max_inflight_body_bytes)),
            },
            tls,
            ip_throttle,
            authorizers,
            http,
            http_by_route,
            stages: super::stages::Stages::default(),
            websocket: None,
            caches: config
                .routes
                .iter()
                .map(|r| {
                    let c = r.cache.as_ref()?;
                    Some(crate::cache::RouteCache::new(&r.name(), c))
                })
                .collect(),
            config,
        })
    }

    /// The AWS region the clients use.
    pub fn region(&self) -> &str {
        self.clients
            .lambda
            .config()
            .region()
            .map_or("us-east-1", |r| r.as_ref())
    }

    /// The metrics of a route by index, or of unmatched requests.
    pub fn route_metrics(&self, route: Option<usize>) -> &telemetry::RouteMetrics {
        route
            .and_then(|i| self.metrics.get(i))
            .unwrap_or(&self.unmatched)
    }
}

/// A route's templates and validation, compiled.
pub struct CompiledRoute {
    /// By lower-cased media type.
    /// A template file several routes name is compiled once and shared.
    pub request_templates: Vec<(String, Arc<Template>)>,
    pub responses: ResponseTemplates,
    /// Its request validation, when it has any.
    pub validator: Option<Validator>,
}

/// Compiles every route's templates; errors name the file, line and column. The
/// `[websocket]` routes' follow the file's routes, in order (a template file both name is
/// compiled once).
pub fn compile_templates(config: &Config) -> Result<Vec<CompiledRoute>, Vec<String>> {
    let mut errors = Vec::new();
    let mut loaded = HashMap::new();
    let mut compiled = compile_routes(&config.routes, &mut loaded, &mut errors);
    if let Some(ws) = &config.websocket {
        compiled.extend(compile_routes(&ws.routes, &mut loaded, &mut errors));
    }
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(errors)
    }
}

/// Template files compiled so far, by path (`None`: it failed, and was reported).
type Loaded = HashMap<std::path::PathBuf, Option<Arc<Template>>>;

fn compile_routes(
    routes: &[crate::config::RouteConfig],
    loaded: &mut Loaded,
    errors: &mut Vec<String>,
) -> Vec<CompiledRoute> {
    let validators: Vec<Option<Validator>> = routes
        .iter()
        .map(|r| {
            Validator::for_route(r)
                .map_err(|e| errors.push(e))
                .ok()
                .flatten()
        })
        .collect();
    let mut validators = validators.into_iter();
    // By file: each is read and compiled once, however many routes name it (and a broken
    // one reported once).
    let mut load = |path: &std::path::Path| -> Option<Arc<Template>> {
        if let Some(done) = loaded.get(path) {
            return done.clone();
        }
        let name = path.display().to_string();
        let compiled = match std::fs::read_to_string(path) {
            Err(e) => {
                errors.push(format!("{name}: cannot read the template: {e}"));
                None
            }
            Ok(source) => match Template::compile(&name, &source) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    errors.push(format!("{e:#}"));
                    None
                }
            },
        };
        loaded.insert(path.to_path_buf(), compiled.clone());
        compiled
    };
    routes
        .iter()
        .map(|r| CompiledRoute {
            validator: validators.next().flatten(),
            request_templates: r
                .request_templates
                .iter()
                .filter_map(|(media, path)| Some((media.clone(), load(path)?)))
                .collect(),
            responses: ResponseTemplates {
                default: r.response_template.as_deref().and_then(&mut load),
                by_response: r
                    .responses
                    .iter()
                    .map(|resp| resp.template.as_deref().and_then(&mut load))
                    .collect(),
            },
        })
        .collect()
}

/// The file's routes' compiled templates, and the `[websocket]` routes' after them (see
/// [`compile_templates`]).
fn split_websocket(
    config: &Config,
    mut compiled: Vec<CompiledRoute>,
) -> (Vec<CompiledRoute>, Vec<CompiledRoute>) {
    let websocket = compiled.split_off(config.routes.len().min(compiled.len()));
    (compiled, websocket)
}

/// The configured authorizers, ready to decide.
fn verifiers(
    config: &Config,
    clients: &Clients,
) -> Result<Vec<crate::authorize::Verifier>, String> {
    use crate::authorize::{Verifier, jwt, lambda};
    use crate::config::authorizers::AuthorizerConfig;
    let api = lambda::ApiFacts {
        region: clients
            .lambda
            .config()
            .region()
            .map_or_else(|| "us-east-1".to_string(), ToString::to_string),
        account_id: config
            .aws
            .account_id
            .clone()
            .unwrap_or_else(|| "000000000000".into()),
        api_id: crate::render::context::API_ID.into(),
        stage: config.stage.clone(),
        stage_variables: config.stage_variables.clone(),
    };
    config
        .authorizers
        .iter()
        .map(|a| match a {
            AuthorizerConfig::Jwt(j) => jwt::JwtVerifier::new(j.clone()).map(Verifier::Jwt),
            AuthorizerConfig::Lambda(l) => {
                lambda::LambdaVerifier::new(l.clone(), Arc::new(clients.clone()), api.clone())
                    .map(Verifier::Lambda)
            }
        })
        .collect()
}

/// The authorizer for a configuration, with the keys and usage counts loaded from the store.
pub fn authorizer(
    config: &Config,
    snapshot: Snapshot,
    usage: Vec<(String, String, u64)>,
) -> Authorizer {
    Authorizer::new(
        DefaultClock::default(),
        config.usage_plans.clone(),
        route_auths(config),
        config.account_throttle,
        snapshot,
        usage,
    )
}

/// The authorizer of another stage of `base`'s configuration (see
/// [`Authorizer::for_stage`]).
pub(super) fn for_stage(config: &Config, base: &Authorizer) -> Authorizer {
    base.for_stage(
        config.usage_plans.clone(),
        route_auths(config),
        config.account_throttle,
    )
}

/// The authorizer for a reloaded configuration (see [`Authorizer::reconfigured`]).
pub(super) fn reconfigured(config: &Config, old: &Authorizer) -> Authorizer {
    old.reconfigured(
        config.usage_plans.clone(),
        route_auths(config),
        config.account_throttle,
    )
}

fn route_auths(config: &Config) -> Vec<RouteAuth> {
    config
        .routes
        .iter()
        .map(|r| RouteAuth {
            name: r.name(),
            key_required: r.api_key_required,
            key_query: r.api_key_query.clone(),
            throttle: r.throttle,
            identity_plan: config.identity_plan(r).map(|p| p.name.clone()),
        })
        .collect()
}

/// Every route's way upstream: its integration, and for routes that batch their batcher
/// (and spool, opened here, whose replayer the integration starts).
fn upstreams(
    config: &Config,
    clients: &Clients,
    old: Option<&Gateway>,
) -> std::io::Result<Vec<Arc<Upstream>>> {
    // A route whose way upstream did not change keeps the one it has (the spool settings
    // themselves wait for a restart, see `reload`).
    let by_name: HashMap<String, usize> = old
        .map(|o| {
            o.config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.name(), i))
                .collect()
        })
        .unwrap_or_default();
    let kept: Vec<Option<Arc<Upstream>>> = config
        .routes
        .iter()
        .map(|r| {
            let old = old?;
            let &i = by_name.get(&r.name())?;
            same_way_upstream(&old.config.routes[i], r).then(|| old.upstreams[i].clone())
        })
        .collect();
    // Every spool first: one that cannot be opened stops start-up before any task starts.
    let mut spools = Vec::with_capacity(config.routes.len());
    for (r, kept) in config.routes.iter().zip(&kept) {
        spools.push(match (r.spool, r.batch, kept) {
            (Some(mode), Some(_), None) => Some((open_spool(config, &r.name())?, mode)),
            _ => None,
        });
    }
    config
        .routes
        .iter()
        .zip(spools)
        .zip(kept)
        .map(|((r, spool), kept)| {
            if let Some(kept) = kept {
                return Ok(kept);
            }
            let name = r.name();
            let integration = integrations::of(r.action).ok_or_else(|| {
                std::io::Error::other(format!("{name}: no integration performs {}", r.action))
            })?;
            let batched = match (r.batch, r.target.as_deref()) {
                (Some(policy), Some(target)) => integration.batcher(
                    clients,
                    BatchRoute {
                        action: r.action,
                        target,
                        policy,
                        name: &name,
                        replay_in_flight: config.spool.replay_in_flight,
                    },
                    spool.as_ref().map(|(s, _)| s),
                ),
                _ => None,
            };
            Ok(Arc::new(Upstream {
                integration,
                action: r.action,
                target: r.target.clone(),
                timeout: r.timeout,
                spool: spool.filter(|_| batched.is_some()),
                room: r
                    .batch
                    .as_ref()
                    .filter(|_| batched.is_some())
                    .map(|b| crate::dispatch::Room::new(b.queue_bytes)),
                batched,
                capture_headers: reads_upstream_headers(r),
            }))
        })
        .collect()
}

/// Whether two routes reach their upstream the same way, so one's batcher and spool can
/// serve the other.
fn same_way_upstream(a: &crate::config::RouteConfig, b: &crate::config::RouteConfig) -> bool {
    a.method == b.method
        && a.path.as_str() == b.path.as_str()
        && a.action == b.action
        && a.target == b.target
        && a.timeout == b.timeout
        && a.batch == b.batch
        && a.spool == b.spool
        && reads_upstream_headers(a) == reads_upstream_headers(b)
}

/// Opens a route's spool, logging what recovery found.
fn open_spool(config: &Config, route: &str) -> std::io::Result<Spool> {
    let (spool, recovered) = Spool::open(route, &config.spool)
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening the spool of {route}: {e}")))?;
    tracing::info!(
        route = %route,
        records = recovered.records,
        bytes = recovered.bytes,
        torn_bytes = recovered.torn_bytes,
        lost_bytes = recovered.lost_bytes,
        "Opened the spool."
    );
    if recovered.damaged {
        tracing::error!(route = %route, lost_bytes = recovered.lost_bytes, "The spool's newest segment had a damaged frame: it was cut, the intact records after it kept, and the file as found kept beside it (.damaged-N).");
    } else if recovered.lost_bytes > 0 {
        tracing::error!(route = %route, lost_bytes = recovered.lost_bytes, "The spool had damaged frames in an older segment; the bytes after them cannot be read.");
    }
    Ok(spool)
}
