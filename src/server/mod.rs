//! The HTTP shell: axum router, body limit, request ids, health endpoints, access log, and
//! graceful shutdown. It turns axum types into a `pipeline::Request` and back, and holds no
//! business rules.
//!
//! Reserved paths: `/healthz` (the process is up), `/readyz` (it accepts traffic; fails once
//! shutdown begins), `/metrics` (Prometheus text) and `server.openapi_path` (the OpenAPI
//! document, `/openapi.json` by default).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, Response, StatusCode, header};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

pub mod conn;
pub mod limits;
pub mod strict;
pub mod websocket;

use crate::edge;
use crate::error::{ErrorKind, GatewayError};
use crate::pipeline::{self, Gateway, Live};
use crate::telemetry;

/// The router, for a real listener or for tests (`tower::ServiceExt::oneshot`). With an
/// admin listener configured, `/metrics` and the OpenAPI document are served there instead.
pub fn app(gw: Arc<Gateway>) -> Router {
    live_app(Live::new(gw, None))
}

/// As [`app`], serving whichever gateway `live` holds when each request arrives.
pub fn live_app(live: Arc<Live>) -> Router {
    let gw = live.load();
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    if gw.config.admin_listen.is_none() {
        router = router.route("/metrics", get(metrics));
        if let Some(path) = &gw.config.openapi_path {
            router = router.route(path, get(openapi));
        }
        if gw.config.sdk_downloads {
            router = sdk_routes(router);
        }
    }
    router
        .fallback(handle)
        .with_state(live)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
}

/// The admin listener's router: health, readiness, metrics, the OpenAPI document, and
/// `POST /reload` (see `pipeline::reload`).
pub fn admin_app(live: Arc<Live>) -> Router {
    let gw = live.load();
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/reload", axum::routing::post(reload));
    if let Some(path) = &gw.config.openapi_path {
        router = router.route(path, get(openapi));
    }
    if gw.config.sdk_downloads {
        router = sdk_routes(router);
    }
    router
        .with_state(live)
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
}

/// `POST /reload`: 200 with what changed, or 400 with every error (the running
/// configuration keeps serving).
async fn reload(State(live): State<Arc<Live>>) -> (StatusCode, axum::Json<serde_json::Value>) {
    match live.reload_and_log("POST /reload").await {
        Ok(r) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "reloaded": true,
                "routes": r.routes,
                "kept_batchers": r.kept,
                "at_restart": r.at_restart,
            })),
        ),
        Err(errors) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "reloaded": false,
                "message": "the configuration was not reloaded; the running one keeps serving",
                "errors": errors,
            })),
        ),
    }
}

/// Connections the admin listener keeps open at once, in all and per address.
const ADMIN_CONNECTIONS: (usize, usize) = (256, 64);
/// File descriptors kept back from the connection limit: the spool, the key store, the
/// AWS clients' connections, the admin listener.
const RESERVED_FILES: u64 = 512;

async fn readyz(State(live): State<Arc<Live>>) -> (StatusCode, String) {
    let gw = live.load();
    if live.stopping() || !gw.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    }
    if gw.config.require_upstreams && !gw.upstream_state.all_ready() {
        let missing: Vec<String> = gw
            .upstream_state
            .not_ready(&gw)
            .into_iter()
            .map(|(route, why)| format!("{route}: {why}"))
            .collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "upstreams not ready (server.require_upstreams):\n{}",
                missing.join("\n")
            ),
        );
    }
    (StatusCode::OK, "ready".into())
}

async fn openapi(State(live): State<Arc<Live>>) -> Response<Body> {
    let gw = live.load();
    let mut resp = Response::new(Body::from(gw.openapi.clone().unwrap_or_default()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET /sdk/LANG.tar.gz` for each language, by name (`/sdk/tracker.js`, the edge's, stays
/// the fallback's).
fn sdk_routes(mut router: Router<Arc<Live>>) -> Router<Arc<Live>> {
    for lang in crate::sdk::LANGUAGES {
        let file = format!("{lang}.tar.gz");
        router = router.route(
            &format!("/sdk/{file}"),
            get(move |State(live): State<Arc<Live>>| sdk(live, file.clone())),
        );
    }
    router
}

/// A generated client package (`server.sdk_downloads`).
async fn sdk(live: Arc<Live>, file: String) -> Response<Body> {
    let gw = live.load();
    let Some((name, bytes)) = gw.sdks.iter().find(|(name, _)| *name == file) else {
        let mut resp = Response::new(Body::from(r#"{"message":"Not Found"}"#));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    let mut resp = Response::new(Body::from(bytes.clone()));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/gzip"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&format!(
        "attachment; filename=\"ingest-gateway-client-{name}\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

async fn metrics() -> Response<Body> {
    let text = telemetry::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The configured stages' names, for an error's detail.
fn stage_names(gw: &Gateway) -> String {
    let names: Vec<&str> = gw.stages.list.iter().map(|s| s.name.as_str()).collect();
    names.join(", ")
}

async fn handle(State(live): State<Arc<Live>>, req: Request) -> Response<Body> {
    // The configuration current now serves this request to its end, reloads or not.
    let gw = live.load();
    let received = Instant::now();
    let received_epoch_ms = epoch_ms();
    let request_id = uuid::Uuid::new_v4().to_string();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let client_cert = req.extensions().get::<PeerCert>().map(|c| c.0.clone());
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let edge = &gw.config.edge;
    let client_ip = edge::client_ip::client_ip(peer, &parts.headers, &edge.trusted_proxies);
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let seen = Seen {
        method: &method,
        path: &path,
        client_ip,
        origin: origin.as_ref(),
        client_cert: client_cert.as_deref(),
    };
    if let Err(e) = strict::check(&parts.uri, &parts.headers) {
        return refused(&gw, &e, &seen, received, &request_id);
    }
    // The edge, before anything is looked up: the address policy, the per-address
    // throttle, the tracker script and CORS preflights.
    if !edge.ip_policy.admits(client_ip) {
        let e = pipeline::access_denied(&method, &path, client_ip);
        return refused(&gw, &e, &seen, received, &request_id);
    }
    if let Some(throttle) = &gw.ip_throttle
        && let Err(retry_after) = throttle.check(client_ip)
    {
        let e = GatewayError::new(
            ErrorKind::Throttled { retry_after },
            format!("client address {client_ip} is over server.ip_throttle"),
        );
        return refused(&gw, &e, &seen, received, &request_id);
    }
    // `[websocket]`: the upgrade endpoint.
    if let Some(ws) = &gw.websocket
        && method == Method::GET
        && ws.config.websocket.as_ref().is_some_and(|w| w.path == path)
    {
        let query = parse_query(parts.uri.query().unwrap_or(""));
        let resp = websocket::upgrade(ws.clone(), parts, query, client_ip, peer).await;
        return served(&gw, None, resp, &seen, received, &request_id);
    }
    if edge.tracker && path == edge::TRACKER_PATH && method == Method::GET {
        let resp = tracker_script(&request_id);
        return served(&gw, None, resp, &seen, received, &request_id);
    }
    // The stage (and canary) that serves it, and the path within the stage.
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.host());
    let Some((gw, path)) = gw.for_request(host, &path) else {
        let e = GatewayError::new(
            ErrorKind::NoRoute,
            format!(
                "no stage for {method} {path} (stages: {})",
                stage_names(&gw)
            ),
        );
        return refused(&gw, &e, &seen, received, &request_id);
    };
    if edge::cors::is_preflight(&method, &parts.headers) {
        match preflight(&gw, &parts.headers, &path, &request_id) {
            Ok(Some((route, resp))) => {
                return served(&gw, Some(route), resp, &seen, received, &request_id);
            }
            Ok(None) => {}
            Err(e) => return refused(&gw, &e, &seen, received, &request_id),
        }
    }

    // The whole request has `request_timeout`; the body its own share of it, read once the
    // pipeline knows the route and the caller.
    let deadline = tokio::time::Instant::from_std(received) + gw.config.request_timeout;
    let body_deadline = deadline.min(tokio::time::Instant::now() + gw.config.body_read_timeout);
    let body = crate::request::PendingBody::new(
        body,
        &parts.headers,
        body_deadline,
        gw.body_budget.clone(),
    );
    let request = pipeline::Request {
        method: method.clone(),
        path: path.to_string(),
        query: parse_query(parts.uri.query().unwrap_or("")),
        headers: parts.headers,
        body: Bytes::new(),
        source_ip: client_ip.to_string(),
        client_ip,
        peer,
        client_cert: client_cert.clone(),
        request_id: request_id.clone(),
        received,
        received_epoch_ms,
        ws: None,
    };
    let (mut resp, outcome) =
        match tokio::time::timeout_at(deadline, pipeline::handle(&gw, request, body)).await {
            Ok(handled) => handled,
            Err(_) => {
                let e = GatewayError::new(
                    ErrorKind::RequestTimeout,
                    "the request did not finish within server.request_timeout",
                );
                let resp = pipeline::error_response(&gw, &e, &request_id);
                let outcome = pipeline::Outcome {
                    route: gw.routes.lookup(&method, &path).map(|m| m.route),
                    error: Some(e),
                    ..pipeline::Outcome::default()
                };
                (resp, outcome)
            }
        };
    cors(&gw, outcome.route, &seen, &mut resp);
    let done = Done {
        status: resp.status(),
        received,
        integration_ms: outcome.integration_ms,
        request_id: &request_id,
        key_id: outcome.key_id.as_deref(),
        principal: outcome.principal.as_deref(),
        error: outcome.error.as_ref(),
    };
    access_log(&gw, &seen, outcome.route, &done);
    resp
}

/// What the shell saw of a request, for its CORS headers and its access-log line.
struct Seen<'a> {
    method: &'a Method,
    path: &'a str,
    client_ip: IpAddr,
    origin: Option<&'a header::HeaderValue>,
    client_cert: Option<&'a edge::tls::ClientCert>,
}

/// A mutual-TLS client's certificate, on each of its connection's requests.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Arc<edge::tls::ClientCert>);

/// The CORS headers of the policy for `route` (the server's, for no route).
fn cors(gw: &Gateway, route: Option<usize>, seen: &Seen<'_>, resp: &mut Response<Body>) {
    let route_cors = route.and_then(|i| gw.config.routes.get(i)).map(|r| &r.cors);
    if let Some(policy) = gw.config.edge.cors_for(route_cors) {
        policy.decorate(resp.headers_mut(), seen.origin);
    }
}

/// A CORS preflight for a route's path, answered here with no key, throttle or upstream
/// call: `None` when no route matches (the pipeline answers it, as any other request), API
/// Gateway's 403 for a route without CORS, an error for an origin the policy does not
/// allow.
fn preflight(
    gw: &Gateway,
    headers: &http::HeaderMap,
    path: &str,
    request_id: &str,
) -> Result<Option<(usize, Response<Body>)>, GatewayError> {
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
    let Some(asked) = asked else {
        return Ok(None);
    };
    let Some(matched) = gw.routes.lookup(&asked, path) else {
        return Ok(None);
    };
    let route = &gw.config.routes[matched.route];
    let Some(policy) = gw.config.edge.cors_for(Some(&route.cors)) else {
        // A route without CORS: what any OPTIONS for it gets, with no CORS headers.
        let e = GatewayError::new(ErrorKind::NoRoute, format!("no CORS for {asked} {path}"));
        return Ok(Some((
            matched.route,
            pipeline::error_response(gw, &e, request_id),
        )));
    };
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    if !origin.to_str().is_ok_and(|o| policy.allows(o)) {
        let shown = String::from_utf8_lossy(origin.as_bytes());
        let message = format!("Origin {shown} is not allowed to call {asked} {path}");
        return Err(GatewayError::new(
            ErrorKind::AccessDenied {
                message: message.clone(),
            },
            message,
        ));
    }
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let methods = format!("{asked}, OPTIONS");
    policy.preflight(resp.headers_mut(), origin, &methods);
    if let Ok(id) = header::HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", id);
    }
    Ok(Some((matched.route, resp)))
}

/// `GET /sdk/tracker.js`.
fn tracker_script(request_id: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(edge::TRACKER_JS));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=300"),
    );
    if let Ok(id) = header::HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    resp
}

/// A response the shell made itself (the tracker, a preflight), with CORS and logged.
fn served(
    gw: &Gateway,
    route: Option<usize>,
    resp: Response<Body>,
    seen: &Seen<'_>,
    received: Instant,
    request_id: &str,
) -> Response<Body> {
    finish(gw, route, resp, seen, received, request_id, None)
}

/// CORS headers and the access-log line for an answer the shell made before the pipeline.
fn finish(
    gw: &Gateway,
    route: Option<usize>,
    mut resp: Response<Body>,
    seen: &Seen<'_>,
    received: Instant,
    request_id: &str,
    error: Option<&GatewayError>,
) -> Response<Body> {
    cors(gw, route, seen, &mut resp);
    let done = Done {
        status: resp.status(),
        received,
        integration_ms: None,
        request_id,
        key_id: None,
        principal: None,
        error,
    };
    access_log(gw, seen, route, &done);
    resp
}

/// The answer for a request refused before the pipeline ran, with CORS and logged.
fn refused(
    gw: &Gateway,
    e: &GatewayError,
    seen: &Seen<'_>,
    received: Instant,
    request_id: &str,
) -> Response<Body> {
    let mut resp = pipeline::error_response(gw, e, request_id);
    if matches!(
        e.kind,
        ErrorKind::MalformedRequest | ErrorKind::NotImplemented
    ) {
        // The rest of the connection cannot be trusted to frame requests as the client meant.
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    finish(gw, None, resp, seen, received, request_id, Some(e))
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |s: &str| crate::mapping::util::url_decode(s).unwrap_or_else(|_| s.to_string());
            (decode(k), decode(v))
        })
        .collect()
}

/// How a request ended, for the access log.
struct Done<'a> {
    status: StatusCode,
    received: Instant,
    integration_ms: Option<f64>,
    request_id: &'a str,
    key_id: Option<&'a str>,
    /// The authorizer's principal.
    principal: Option<&'a str>,
    error: Option<&'a GatewayError>,
}

fn access_log(gw: &Gateway, seen: &Seen<'_>, route: Option<usize>, done: &Done<'_>) {
    let latency = done.received.elapsed().as_secs_f64();
    let metrics = gw.route_metrics(route);
    metrics.request_done(done.status.as_u16(), latency);
    let route = route.map(|_| metrics.route());
    let (status, integration_ms, request_id, key_id) = (
        done.status,
        done.integration_ms,
        done.request_id,
        done.key_id,
    );
    let (method, path) = (seen.method, seen.path);
    let principal = done.principal;
    let source_ip = seen.client_ip;
    let client_cert = seen.client_cert.map(|c| c.subject_dn.as_str());
    let error_detail = done.error.map(|e| e.detail.as_str());
    // One line per request; server errors at WARN so they stand out.
    macro_rules! line {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                target: "access",
                method = %method,
                path,
                status = status.as_u16(),
                latency_ms = latency * 1e3,
                integration_latency_ms = integration_ms,
                request_id,
                route,
                key_id,
                principal,
                source_ip = %source_ip,
                client_cert,
                error = error_detail,
                $message
            )
        };
    }
    if status.is_server_error() {
        line!(warn, "Request failed.");
    } else {
        line!(info, "Request served.");
    }
}

/// Bytes an HTTP/1 connection reads ahead, at most: the request head must fit (a larger
/// one is a 431; API Gateway's own limit is 10 KiB), and a body is read in pieces of this
/// size. Left to grow (hyper's default: up to 400 KiB), each connection that once read a
/// large body kept a buffer of that size: with a thousand clients posting 50 KiB batches,
/// over 100 MiB of the gateway's memory (`benches/RESULTS.md`).
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Serves until SIGTERM or Ctrl-C. Then `/readyz` fails at once; requests are still served
/// for `shutdown_delay` (balancers take the node out meanwhile); then no new connection is
/// accepted, and in-flight requests, whose batches keep flushing, finish within
/// `shutdown_grace`.
///
/// Connections past `max_connections` (in all, or from one address) are closed at once; see
/// [`accept`] for each connection's timers.
pub async fn run(gw: Arc<Gateway>, listener: TcpListener) -> std::io::Result<()> {
    run_with_admin(Live::new(gw, None), listener, None).await
}

/// As [`run`], with the operators' listener (`server.admin_listen`) beside the main one,
/// serving whichever gateway `live` holds (reloads swap it).
pub async fn run_with_admin(
    live: Arc<Live>,
    listener: TcpListener,
    admin: Option<TcpListener>,
) -> std::io::Result<()> {
    // The listener's own settings are the ones it started with (held apart from the
    // gateway, which a reload replaces and drops once its last request is answered).
    let (config, tls) = {
        let gw = live.load();
        (Arc::new(gw.config.clone()), gw.tls.clone())
    };
    let gw = &config;
    let grace = gw.shutdown_grace;
    let delay = gw.shutdown_delay;
    let mut max = gw.max_connections;
    if let Some(files) = limits::raise_file_limit() {
        let room = usize::try_from(files.saturating_sub(RESERVED_FILES).max(64)).unwrap_or(max);
        if room < max {
            tracing::warn!(
                max_connections = max,
                open_file_limit = files,
                "server.max_connections is more than the open-file limit allows; using {room}."
            );
            max = room;
        }
    }
    let main = limits::ConnectionLimits::new("main", max, gw.max_connections_per_ip);
    let connections = GracefulShutdown::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(admin) = admin {
        let (max, per_ip) = ADMIN_CONNECTIONS;
        let limits = limits::ConnectionLimits::new("admin", max, per_ip);
        let app = admin_app(live.clone());
        let (gw, stop) = (gw.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let connections = GracefulShutdown::new();
            accept(&gw, admin, app, &limits, &connections, stop, None).await;
            let _ = tokio::time::timeout(grace, connections.shutdown()).await;
        });
    }
    let stop = async {
        shutdown_signal().await;
        live.stop();
        tracing::info!(
            delay_seconds = delay.as_secs_f64(),
            "Shutting down; /readyz fails, still serving during the delay."
        );
        tokio::time::sleep(delay).await;
        let _ = stop_tx.send(true);
    };
    if let Some(tls) = &tls {
        tls.watch();
    }
    if let Some(address) = config.websocket.as_ref().and_then(|w| w.management_listen) {
        let management = TcpListener::bind(address).await.map_err(|e| {
            std::io::Error::other(format!(
                "cannot listen on {address} (websocket.management_listen): {e}"
            ))
        })?;
        tracing::info!(address = %management.local_addr()?, "WebSocket management listener: /@connections.");
        tokio::spawn(async move {
            let _ = axum::serve(management, websocket::management_app()).await;
        });
    }
    let app = live_app(live.clone());
    tokio::select! {
        () = stop => {}
        () = accept(gw, listener, app, &main, &connections, stop_rx, tls.clone()) => {}
    }
    tracing::info!(
        grace_seconds = grace.as_secs_f64(),
        "No longer accepting connections; finishing in-flight requests."
    );
    // WebSocket connections answer what they have in flight and get a close frame (1001),
    // within the same grace.
    let finished = async {
        tokio::join!(connections.shutdown(), websocket::close_all(grace));
    };
    tokio::select! {
        () = finished => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("Grace period over; closing remaining connections.");
        }
    }
    Ok(())
}

/// Accepts and serves connections on `listener` within `limits` until `stop` says so.
///
/// Connections are served by hyper with the configured limits: a new connection must send
/// its first byte within `first_byte_timeout`; a request's headers must arrive within
/// `header_read_timeout` of its first byte (a slow client is disconnected) and number at
/// most `max_headers` (more is a 431); a connection waiting for its next request is closed
/// after `idle_timeout`; a request gets 504 past `request_timeout`.
async fn accept(
    gw: &Arc<crate::config::Config>,
    listener: TcpListener,
    app: Router,
    limits: &Arc<limits::ConnectionLimits>,
    connections: &GracefulShutdown,
    stop: tokio::sync::watch::Receiver<bool>,
    tls: Option<Arc<edge::tls::Tls>>,
) {
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    tokio::pin!(stopped);
    let mut http = auto::Builder::new(TokioExecutor::new());
    // The header and idle timers are the connection's own (see `conn`): hyper's header timer
    // also runs while a connection is idle, which would cap the idle timeout.
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(gw.max_headers)
        .max_buf_size(READ_BUFFER_BYTES);
    http.http2().timer(TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => return,
        };
        // Past a limit: closed at once, before anything is read or allocated for it.
        let Ok(place) = limits.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        // No TCP_NODELAY: a response leaves in one write either way, and with it set the
        // gateway spent 16% more CPU per request under load (benches/RESULTS.md).
        let timers = Timers {
            idle: gw.idle_timeout,
            head: gw.header_read_timeout,
            first_byte: gw.first_byte_timeout,
        };
        let (http, app, tls) = (http.clone(), app.clone(), tls.clone());
        let watcher = connections.watcher();
        tokio::spawn(async move {
            // Errors here are the client's: resets, timeouts, malformed requests.
            match tls {
                None => {
                    let activity = conn::Activity::new();
                    let io = conn::Watched::new(stream, activity.clone(), timers.idle, timers.head)
                        .first_byte_within(timers.first_byte);
                    serve(http, io, app, peer, None, activity, watcher).await;
                }
                Some(tls) => {
                    if let Some((io, cert, activity)) = handshake(stream, &tls, timers).await {
                        // A response's head and body in one buffer: one TLS record and one
                        // write, not one of each per part (rustls encrypts each write).
                        let mut http = http;
                        http.http1().writev(false);
                        serve(http, io, app, peer, cert, activity, watcher).await;
                    }
                }
            }
            drop(place);
        });
    }
}

/// A connection's waiting timers (see `conn`).
#[derive(Debug, Clone, Copy)]
struct Timers {
    idle: Duration,
    head: Duration,
    first_byte: Duration,
}

/// What a client that speaks plain HTTP to the HTTPS listener is told before it is closed.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 63\r\n\r\n{\"message\":\"This port speaks HTTPS: use https:// to reach it\"}\n";

/// The TLS handshake of a new connection: its first byte within the first-byte timeout,
/// then the handshake and the first request's head within the header timeout. Plain HTTP
/// gets a 400 in plain text and is closed; a failed handshake is closed (and logged at
/// debug: scanners make many).
async fn handshake(
    stream: tokio::net::TcpStream,
    tls: &edge::tls::Tls,
    timers: Timers,
) -> Option<(
    tokio_rustls::server::TlsStream<conn::Watched<tokio::net::TcpStream>>,
    Option<Arc<edge::tls::ClientCert>>,
    Arc<conn::Activity>,
)> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timers.first_byte, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return None,
    }
    if !edge::tls::looks_like_tls(&first) {
        let mut stream = stream;
        let _ = tokio::time::timeout(timers.head, async {
            use tokio::io::AsyncWriteExt as _;
            let _ = stream.write_all(PLAIN_TO_TLS).await;
            let _ = stream.shutdown().await;
        })
        .await;
        return None;
    }
    let activity = conn::Activity::new();
    let io = conn::Watched::new(stream, activity.clone(), timers.idle, timers.head)
        .first_byte_within(timers.first_byte);
    let accepted = tokio::time::timeout(timers.head, tls.acceptor().accept(io)).await;
    let stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "A TLS handshake failed.");
            return None;
        }
        Err(_) => return None,
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| edge::tls::ClientCert::from_der(c))
        .map(Arc::new);
    Some((stream, cert, activity))
}

/// Serves one connection's requests until it closes (or shutdown ends it).
async fn serve<IO>(
    http: auto::Builder<TokioExecutor>,
    io: IO,
    app: Router,
    peer: SocketAddr,
    cert: Option<Arc<edge::tls::ClientCert>>,
    activity: Arc<conn::Activity>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = app
        .map_request(with_peer(peer, cert))
        .map_future(move |response| {
            let in_flight = activity.begin();
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        });
    let conn = http
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    let _ = watcher.watch(conn).await;
}

/// Tags each request with the client's address (`ConnectInfo`, as axum's own server does)
/// and, for mutual TLS, its certificate.
fn with_peer<B>(
    peer: SocketAddr,
    cert: Option<Arc<edge::tls::ClientCert>>,
) -> impl Fn(http::Request<B>) -> http::Request<B> + Clone {
    move |mut req| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(cert) = &cert {
            req.extensions_mut().insert(PeerCert(cert.clone()));
        }
        req
    }
}

/// SIGTERM's stream, made by [`catch_signals`] before the gateway says it listens.
#[cfg(unix)]
static TERM: std::sync::Mutex<Option<tokio::signal::unix::Signal>> = std::sync::Mutex::new(None);

/// Starts catching SIGTERM now (call before announcing the listener), so one sent right
/// after the announcement stops the gateway cleanly instead of killing it.
pub fn catch_signals() {
    #[cfg(unix)]
    if let Ok(s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        *TERM.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        let early = TERM.lock().unwrap_or_else(|p| p.into_inner()).take();
        match early.map_or_else(
            || tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            Ok,
        ) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
