//! WebSocket connections (`[websocket]`): the handshake, and each connection's messages.
//!
//! The handshake is a request to the `$connect` route of the WebSocket gateway (its key
//! check, authorizer, plan, and integration if configured): any answer but a 2xx is sent
//! as it is, before any upgrade. A message is selected to a route by the configured body
//! field (`$default` when it names none), and served as a request to that route carrying
//! the handshake's headers and query: it is authorized again (so every message counts
//! against the key's plan, as API Gateway meters messages), rendered with the connection's
//! `$context`, and dispatched through the route's batcher. Its outcome goes back as an
//! acknowledgement frame (routes with `ack`) or, when it failed, an error frame.
//!
//! One task per connection reads and writes the socket; each message is handled in its
//! own task, at most `max_in_flight` at once: past that the connection is not read (TCP
//! backpressure) until an answer comes back.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts as _;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{Value as Json, json};

use crate::config::websocket::{Websocket, route_path};
use crate::mapping::context::WsFacts;
use crate::pipeline::{self, Gateway};

const JSON: &str = "application/json";

/// What the `@connections` API asks of a connection.
enum Command {
    Send(Message),
    Close,
}

/// A connection as the `@connections` API sees it.
struct Handle {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    connected_at: i64,
    last_active: Arc<std::sync::atomic::AtomicI64>,
    source_ip: String,
    user_agent: Option<String>,
}

/// The open connections of this process (they outlive reloads).
#[derive(Default)]
struct Registry {
    open: std::sync::Mutex<std::collections::HashMap<Arc<str>, Handle>>,
    /// Set at shutdown: every connection answers what it has in flight and closes (1001).
    stopping: std::sync::atomic::AtomicBool,
    stopped: tokio::sync::Notify,
}

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    fn open(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Arc<str>, Handle>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// At shutdown: every connection answers its outstanding messages, gets a close frame
/// (1001) and ends; waits for that up to `grace`.
pub async fn close_all(grace: std::time::Duration) {
    let r = registry();
    r.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    let handles: Vec<_> = r.open().values().map(|h| h.commands.clone()).collect();
    for h in handles {
        let _ = h.send(Command::Close);
    }
    let _ = tokio::time::timeout(grace, async {
        while !r.open().is_empty() {
            let notified = r.stopped.notified();
            if r.open().is_empty() {
                break;
            }
            notified.await;
        }
    })
    .await;
}

/// The `@connections` API (`websocket.management_listen`): `POST /@connections/{id}`
/// sends the body as a frame (binary with `Content-Type: application/octet-stream`),
/// `GET` describes the connection, `DELETE` closes it; 410 `GoneException` for a
/// connection that is not open here.
pub fn management_app() -> axum::Router {
    use axum::extract::Path;
    use axum::routing::get;
    async fn post(Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response<Body> {
        let binary = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
        let frame = if binary {
            Message::Binary(body)
        } else {
            match String::from_utf8(body.to_vec()) {
                Ok(t) => Message::Text(t.into()),
                Err(_) => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        &json!({"message": "A text frame must be UTF-8; send binary with Content-Type: application/octet-stream"}),
                    );
                }
            }
        };
        command(&id, Command::Send(frame), StatusCode::OK)
    }
    async fn delete(Path(id): Path<String>) -> Response<Body> {
        command(&id, Command::Close, StatusCode::NO_CONTENT)
    }
    async fn describe(Path(id): Path<String>) -> Response<Body> {
        let open = registry().open();
        match open.get(id.as_str()) {
            None => gone(),
            Some(h) => answer(
                StatusCode::OK,
                &json!({
                    "connectedAt": iso_time(h.connected_at),
                    "lastActiveAt": iso_time(h.last_active.load(std::sync::atomic::Ordering::Relaxed)),
                    "identity": {"sourceIp": h.source_ip, "userAgent": h.user_agent},
                }),
            ),
        }
    }
    axum::Router::new().route(
        "/@connections/{id}",
        get(describe).post(post).delete(delete),
    )
}

/// An instant as ISO 8601 in UTC (`2026-12-02T18:33:08.123Z`).
fn iso_time(epoch_ms: i64) -> String {
    let in_day = epoch_ms.rem_euclid(86_400_000);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        crate::auth::plans::day_label(epoch_ms),
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

fn answer(status: StatusCode, body: &Json) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn gone() -> Response<Body> {
    let mut resp = answer(
        StatusCode::GONE,
        &json!({"message": "The connection is gone"}),
    );
    resp.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static("GoneException"),
    );
    resp
}

fn command(id: &str, c: Command, ok: StatusCode) -> Response<Body> {
    let sent = registry()
        .open()
        .get(id)
        .is_some_and(|h| h.commands.send(c).is_ok());
    if sent {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = ok;
        resp
    } else {
        gone()
    }
}

/// What the handshake established, for every message of the connection.
struct Handshake {
    headers: HeaderMap,
    query: Vec<(String, String)>,
    source_ip: String,
    client_ip: std::net::IpAddr,
    peer: std::net::IpAddr,
    connection_id: Arc<str>,
    connected_at: i64,
}

/// The request a message (or the handshake) is served as, its body of type `media`.
fn request(
    hs: &Handshake,
    route: usize,
    key: &str,
    event: &'static str,
    message_id: String,
    len: usize,
    media: &'static str,
) -> pipeline::Request {
    let mut headers = hs.headers.clone();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(media));
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    for h in [
        http::header::CONTENT_ENCODING,
        http::header::TRANSFER_ENCODING,
    ] {
        headers.remove(h);
    }
    pipeline::Request {
        method: Method::POST,
        path: route_path(route),
        query: hs.query.clone(),
        headers,
        body: Bytes::new(),
        source_ip: hs.source_ip.clone(),
        client_ip: hs.client_ip,
        peer: hs.peer,
        client_cert: None,
        request_id: uuid::Uuid::new_v4().to_string(),
        received: Instant::now(),
        received_epoch_ms: super::epoch_ms(),
        ws: Some(WsFacts {
            connection_id: hs.connection_id.clone(),
            connected_at: hs.connected_at,
            route_key: key.to_string(),
            event_type: event,
            message_id,
        }),
    }
}

/// Serves `req` on the WebSocket gateway; its status, and its body's `message` and
/// `Retry-After` when it failed.
async fn serve(
    gw: &Arc<Gateway>,
    req: pipeline::Request,
    body: Bytes,
) -> (Response<Body>, pipeline::Outcome) {
    let deadline = tokio::time::Instant::now() + gw.config.request_timeout;
    let pending = crate::request::PendingBody::new(
        Body::from(body),
        &req.headers,
        deadline,
        gw.body_budget.clone(),
    );
    let request_id = req.request_id.clone();
    match tokio::time::timeout_at(deadline, pipeline::handle(gw, req, pending)).await {
        Ok(done) => done,
        // As a request past `server.request_timeout`, through the gateway responses.
        Err(_) => {
            let e = crate::error::GatewayError::new(
                crate::error::ErrorKind::RequestTimeout,
                "the message was not served within server.request_timeout",
            );
            let resp = pipeline::error_response(gw, &e, &request_id);
            (resp, pipeline::Outcome::default())
        }
    }
}

/// The WebSocket endpoint: the handshake's authorization, then the upgrade.
pub async fn upgrade(
    gw: Arc<Gateway>,
    mut parts: http::request::Parts,
    query: Vec<(String, String)>,
    client_ip: std::net::IpAddr,
    peer: std::net::IpAddr,
) -> Response<Body> {
    let Some(ws) = gw.config.websocket.clone() else {
        return Response::new(Body::empty());
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return axum::response::IntoResponse::into_response(rejection),
    };
    let hs = Handshake {
        headers: parts.headers.clone(),
        query,
        source_ip: client_ip.to_string(),
        client_ip,
        peer,
        connection_id: Arc::from(connection_id()),
        connected_at: super::epoch_ms(),
    };
    let connect = ws.connect_route();
    let req = request(&hs, connect, "$connect", "CONNECT", String::new(), 0, JSON);
    let (resp, _) = serve(&gw, req, Bytes::new()).await;
    if !resp.status().is_success() {
        return resp;
    }
    crate::telemetry::websocket_connections(1);
    upgrade
        .max_message_size(ws.max_message_bytes)
        .max_frame_size(ws.max_message_bytes)
        .on_upgrade(move |socket| async move {
            connection(gw, ws, hs, socket).await;
            crate::telemetry::websocket_connections(-1);
        })
}

/// A connection id in API Gateway's shape (base64-like, 16 characters).
fn connection_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// What a finished message sends back: a frame, or nothing.
type Answer = Option<String>;

async fn connection(gw: Arc<Gateway>, ws: Websocket, hs: Handshake, mut socket: WebSocket) {
    let hs = Arc::new(hs);
    let (commands, mut orders) = tokio::sync::mpsc::unbounded_channel::<Command>();
    let last_active = Arc::new(std::sync::atomic::AtomicI64::new(hs.connected_at));
    registry().open().insert(
        hs.connection_id.clone(),
        Handle {
            commands,
            connected_at: hs.connected_at,
            last_active: last_active.clone(),
            source_ip: hs.source_ip.clone(),
            user_agent: hs
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        },
    );
    if registry()
        .stopping
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        let _ = registry()
            .open()
            .get(&hs.connection_id)
            .map(|h| h.commands.send(Command::Close));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Answer>();
    let mut in_flight = 0usize;
    let age = tokio::time::sleep(ws.max_connection_age);
    tokio::pin!(age);
    let mut idle = Box::pin(tokio::time::sleep(ws.idle_timeout));
    let mut sequence = 0u64;
    // The client closed first: its close frame is answered (tungstenite queues the reply;
    // it goes out on the next flush), else its browser sees 1006.
    let mut peer_closed = false;
    let close = loop {
        tokio::select! {
            received = socket.recv(), if in_flight < ws.max_in_flight => {
                let (bytes, binary) = match received {
                    None => break None,
                    Some(Err(e)) => {
                        let too_big = e.to_string().to_ascii_lowercase().contains("too long")
                            || e.to_string().to_ascii_lowercase().contains("size");
                        break too_big.then_some((close_code::SIZE, "message too big"));
                    }
                    Some(Ok(Message::Text(t))) => (Bytes::from(t.as_str().to_owned()), false),
                    Some(Ok(Message::Binary(b))) => (b, true),
                    Some(Ok(Message::Close(_))) => {
                        peer_closed = true;
                        break None;
                    }
                    Some(Ok(_)) => continue,
                };
                idle.as_mut().reset(tokio::time::Instant::now() + ws.idle_timeout);
                last_active.store(super::epoch_ms(), std::sync::atomic::Ordering::Relaxed);
                sequence += 1;
                in_flight += 1;
                let message_id = format!("{}-{sequence}", hs.connection_id);
                let (gw, ws, hs, tx) = (gw.clone(), ws.clone(), hs.clone(), tx.clone());
                tokio::spawn(async move {
                    let answer = message(&gw, &ws, &hs, bytes, binary, message_id).await;
                    let _ = tx.send(answer);
                });
            }
            Some(answer) = rx.recv() => {
                // Answers that are ready together (a batch's) go out in one write.
                let mut answer = Some(answer);
                let mut failed = false;
                while let Some(a) = answer.take() {
                    in_flight -= 1;
                    if let Some(frame) = a
                        && futures_util::SinkExt::feed(&mut socket, Message::Text(frame.into()))
                            .await
                            .is_err()
                    {
                        failed = true;
                        break;
                    }
                    answer = rx.try_recv().ok();
                }
                if failed || futures_util::SinkExt::flush(&mut socket).await.is_err() {
                    break None;
                }
            }
            Some(order) = orders.recv() => match order {
                Command::Send(frame) => {
                    if socket.send(frame).await.is_err() {
                        break None;
                    }
                }
                Command::Close if registry().stopping.load(std::sync::atomic::Ordering::SeqCst) => {
                    break Some((close_code::AWAY, "the gateway is shutting down"));
                }
                Command::Close => break Some((close_code::NORMAL, "closed by the back end")),
            },
            () = &mut idle => break Some((close_code::AWAY, "idle timeout")),
            () = &mut age => break Some((close_code::AWAY, "connection age limit")),
        }
    };
    // Outstanding messages are answered before the close.
    while in_flight > 0 {
        match rx.recv().await {
            Some(Some(frame)) => {
                in_flight -= 1;
                let _ = socket.send(Message::Text(frame.into())).await;
            }
            Some(None) => in_flight -= 1,
            None => break,
        }
    }
    if let Some((code, reason)) = close {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
    if peer_closed {
        let _ = futures_util::SinkExt::flush(&mut socket).await;
    }
    registry().open().remove(&hs.connection_id);
    registry().stopped.notify_waiters();
    if let Some(i) = ws.route("$disconnect") {
        let req = request(&hs, i, "$disconnect", "DISCONNECT", String::new(), 0, JSON);
        serve(&gw, req, Bytes::new()).await;
    }
}

/// The route a message selects: the body field's value, else `$default`.
fn select(ws: &Websocket, parsed: Option<&Json>) -> Option<(usize, String)> {
    let named = parsed
        .and_then(|v| {
            let mut at = v;
            for field in &ws.selection {
                at = at.get(field)?;
            }
            at.as_str().map(str::to_string)
        })
        .filter(|k| k != "$connect" && k != "$disconnect");
    match named.and_then(|k| Some((ws.route(&k)?, k))) {
        Some(found) => Some(found),
        None => ws.route("$default").map(|i| (i, "$default".to_string())),
    }
}

/// The message's id for its acknowledgement: its body's `id`, else its `messageId`.
fn ack_id(parsed: Option<&Json>, message_id: &str) -> Json {
    parsed
        .and_then(|v| {
            v.get("id")
                .filter(|id| id.is_string() || id.is_number())
                .cloned()
        })
        .unwrap_or_else(|| Json::String(message_id.to_string()))
}

async fn message(
    gw: &Arc<Gateway>,
    ws: &Websocket,
    hs: &Handshake,
    body: Bytes,
    binary: bool,
    message_id: String,
) -> Answer {
    // A text message parsed once: for its route, its id and its media type.
    let parsed = (!binary)
        .then(|| serde_json::from_slice::<Json>(&body).ok())
        .flatten();
    let Some((route, key)) = select(ws, parsed.as_ref()) else {
        return Some(
            json!({"message": "Forbidden", "connectionId": &*hs.connection_id, "requestId": uuid::Uuid::new_v4().to_string()})
                .to_string(),
        );
    };
    let id = ack_id(parsed.as_ref(), &message_id);
    // A text message that is JSON is `application/json`, other text `text/plain`.
    let media = if binary {
        "application/octet-stream"
    } else if parsed.is_some() {
        JSON
    } else {
        "text/plain"
    };
    let req = request(hs, route, &key, "MESSAGE", message_id, body.len(), media);
    let request_id = req.request_id.clone();
    let (resp, _) = serve(gw, req, body).await;
    let status = resp.status();
    let acked = ws.keys[route].ack;
    crate::telemetry::websocket_message(&key, status.as_u16());
    if status.is_success() {
        return acked.then(|| {
            json!({"ack": id, "status": status.as_u16(), "connectionId": &*hs.connection_id})
                .to_string()
        });
    }
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<Json>(&bytes)
        .ok()
        .and_then(|v| v.get("message").and_then(Json::as_str).map(str::to_string))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_string());
    let mut frame = json!({"ack": id, "status": status.as_u16(), "message": message, "connectionId": &*hs.connection_id, "requestId": request_id});
    if let Some(n) = retry_after {
        frame["retryAfter"] = json!(n);
    }
    Some(frame.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(keys: &[&str]) -> Websocket {
        Websocket {
            path: "/s".into(),
            selection: vec!["action".into()],
            api_key_required: false,
            authorizer: None,
            max_message_bytes: 1024,
            idle_timeout: std::time::Duration::from_secs(1),
            max_connection_age: std::time::Duration::from_secs(1),
            max_in_flight: 1,
            management_listen: None,
            keys: keys
                .iter()
                .map(|k| crate::config::websocket::WsRoute {
                    key: (*k).into(),
                    ack: false,
                })
                .collect(),
            routes: Vec::new(),
        }
    }

    #[test]
    fn messages_select_their_route_or_default() {
        let w = ws(&["track", "$default", "$connect"]);
        assert_eq!(
            select(&w, Some(&json!({"action": "track"}))),
            Some((0, "track".into()))
        );
        for other in [
            Some(json!({"action": "nope"})),
            None,
            Some(json!({"action": 3})),
            Some(json!({"action": "$connect"})),
        ] {
            assert_eq!(
                select(&w, other.as_ref()),
                Some((1, "$default".into())),
                "{other:?}"
            );
        }
        let no_default = ws(&["track", "$connect"]);
        assert_eq!(select(&no_default, Some(&json!({}))), None);
    }

    #[test]
    fn instants_print_as_iso_8601() {
        assert_eq!(iso_time(1_764_700_388_123), "2025-12-02T18:33:08.123Z");
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn acknowledgements_carry_the_message_id() {
        assert_eq!(ack_id(Some(&json!({"id": "e-1"})), "m"), json!("e-1"));
        assert_eq!(ack_id(Some(&json!({"id": 7})), "m"), json!(7));
        assert_eq!(ack_id(Some(&json!({"id": {"x": 1}})), "m"), json!("m"));
        assert_eq!(ack_id(None, "m"), json!("m"));
    }
}
