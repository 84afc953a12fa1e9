//! `[websocket]` and `[[websocket.routes]]`: API Gateway's WebSocket APIs. A connection is
//! upgraded at `path` after the same edge and authorization as a request; each message is
//! selected to a route by `route_selection` (`$request.body.FIELD`) and served like a
//! request to that route (its template, its integration, its batcher).
//!
//! A WebSocket route is written as an HTTP route is, less `method` and `path`, plus `key`
//! (`"track"`, `"$connect"`, `"$disconnect"`, `"$default"`) and `ack`. Each is checked as
//! a route (`POST /$ws/N`, never reachable over HTTP), with its errors placed at the
//! WebSocket route in the file.

use std::net::SocketAddr;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::raw::RawRoute;
use super::{RouteConfig, Validator};

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawWebsocket {
    /// The upgrade endpoint (HTTP/1.1 `Upgrade: websocket`).
    pub path: Option<Spanned<String>>,
    /// API Gateway's route selection expression: `$request.body.FIELD` (nested fields with
    /// dots). Default `$request.body.action`.
    pub route_selection: Option<Spanned<String>>,
    /// At the handshake: an `x-api-key` header or an `api_key` query parameter; every
    /// message counts against the key's plan.
    #[serde(default)]
    pub api_key_required: bool,
    /// An authorizer checked at the handshake (`$connect`).
    pub authorizer: Option<Spanned<String>>,
    /// Per message (API Gateway: 128 KB); larger ones close the connection with 1009.
    pub max_message_bytes: Option<usize>,
    /// A connection with no message for this long is closed (default 10 minutes).
    pub idle_timeout: Option<Spanned<String>>,
    /// Every connection is closed after this long with 1001 (default 2 hours).
    pub max_connection_age: Option<Spanned<String>>,
    /// Messages of one connection in flight at once; past it the gateway stops reading the
    /// connection (default 64).
    pub max_in_flight: Option<usize>,
    /// The `@connections` API's listener (for back ends only).
    pub management_listen: Option<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<Spanned<toml::Table>>,
}

/// One WebSocket route: its key and its route (by index in [`Websocket::routes`]).
#[derive(Debug, Clone)]
pub struct WsRoute {
    pub key: String,
    pub ack: bool,
}

#[derive(Debug, Clone)]
pub struct Websocket {
    pub path: String,
    /// The body field route selection reads, as path segments.
    pub selection: Vec<String>,
    pub api_key_required: bool,
    pub authorizer: Option<String>,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub max_connection_age: Duration,
    pub max_in_flight: usize,
    pub management_listen: Option<SocketAddr>,
    /// By index, beside [`Websocket::routes`].
    pub keys: Vec<WsRoute>,
    /// The routes as the pipeline serves them (`POST /$ws/N`), the last one the handshake's
    /// own (`$connect`, a mock unless one is configured).
    pub routes: Vec<RouteConfig>,
}

impl Websocket {
    /// The route index of a key.
    pub fn route(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.key == key)
    }

    /// The route the handshake runs: `$connect`'s.
    pub fn connect_route(&self) -> usize {
        self.route("$connect").unwrap_or(self.routes.len() - 1)
    }
}

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// The route path of WebSocket route `i` (a segment no HTTP request can send).
pub fn route_path(i: usize) -> String {
    format!("/$ws/{i}")
}

/// `$request.body.a.b` (or `${request.body.a.b}`): `["a", "b"]`.
fn selection(expr: &str) -> Option<Vec<String>> {
    let e = expr.trim();
    let e = e
        .strip_prefix("${")
        .and_then(|e| e.strip_suffix('}'))
        .map_or(e.strip_prefix('$')?, |inner| inner);
    let field = e.strip_prefix("request.body.")?;
    let parts: Vec<String> = field.split('.').map(str::to_string).collect();
    parts.iter().all(|p| !p.is_empty()).then_some(parts)
}

#[derive(Deserialize)]
struct Generated {
    routes: Vec<Spanned<RawRoute>>,
}

impl Validator<'_> {
    /// `[websocket]`: its routes checked as routes under `stage_variables`.
    pub(super) fn websocket(
        &mut self,
        raw: Option<&Spanned<RawWebsocket>>,
        base: &std::path::Path,
        server: &super::server::Server,
        spool_mode: Option<crate::spool::Mode>,
        stage_variables: &IndexMap<String, String>,
    ) -> Option<Websocket> {
        let spanned = raw?;
        let (w, span) = (spanned.get_ref(), spanned.span());
        let path = match &w.path {
            Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
            Some(p) => {
                self.error(Some(p.span()), "websocket: path must start with /");
                return None;
            }
            None => {
                self.error(
                    Some(span),
                    "websocket: path is required (the upgrade endpoint, e.g. \"/v1/stream\")",
                );
                return None;
            }
        };
        let selection = match &w.route_selection {
            None => vec!["action".to_string()],
            Some(s) => selection(s.get_ref()).unwrap_or_else(|| {
                self.error(
                    Some(s.span()),
                    format!(
                        "websocket: route_selection {:?}: use $request.body.FIELD",
                        s.get_ref()
                    ),
                );
                Vec::new()
            }),
        };
        let idle_timeout = self.duration(
            w.idle_timeout.as_ref(),
            Duration::from_secs(600),
            "websocket: idle_timeout",
        );
        let max_connection_age = self.duration(
            w.max_connection_age.as_ref(),
            Duration::from_secs(7200),
            "websocket: max_connection_age",
        );
        let management_listen =
            self.address(w.management_listen.as_ref(), "websocket.management_listen");
        // Each route as the text of an HTTP route, checked by the route checks; errors are
        // placed at the WebSocket route.
        let mut keys = Vec::new();
        let mut text = String::new();
        // Where each route's text starts (its line), and the span of what it came from.
        let mut starts: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        for (i, r) in w.routes.iter().enumerate() {
            let mut table = r.get_ref().clone();
            let key = match table.remove("key") {
                Some(toml::Value::String(k)) if !k.is_empty() => k,
                _ => {
                    self.error(Some(r.span()), format!("websocket.routes[{i}]: key is required (a route key, or \"$connect\", \"$disconnect\", \"$default\")"));
                    continue;
                }
            };
            let ack = matches!(table.remove("ack"), Some(toml::Value::Boolean(true)));
            if keys.iter().any(|k: &WsRoute| k.key == key) {
                self.error(
                    Some(r.span()),
                    format!("websocket.routes[{i}]: key {key:?} is already a route's"),
                );
                continue;
            }
            for field in ["method", "path"] {
                if table.contains_key(field) {
                    self.error(Some(r.span()), format!("websocket.routes[{i}]: {field} does not apply (messages are selected by key)"));
                }
            }
            table.insert("method".into(), "POST".into());
            table.insert("path".into(), route_path(keys.len()).into());
            table.insert("api_key_required".into(), w.api_key_required.into());
            // Browsers cannot set headers on `new WebSocket(...)`: the key may be in the URL.
            table.insert("api_key_query".into(), "api_key".into());
            if let Some(a) = &w.authorizer {
                table.insert("authorizer".into(), a.get_ref().clone().into());
            }
            keys.push(WsRoute { key, ack });
            starts.push((text.lines().count() + 1, r.span()));
            let mut doc = toml::Table::new();
            doc.insert(
                "routes".into(),
                toml::Value::Array(vec![toml::Value::Table(table)]),
            );
            text.push_str(&toml::to_string(&doc).unwrap_or_default());
            text.push('\n');
        }
        if !keys.iter().any(|k| k.key == "$connect") {
            starts.push((text.lines().count() + 1, span.clone()));
            text.push_str(&format!(
                "[[routes]]\nmethod = \"POST\"\npath = \"{}\"\naction = \"mock\"\napi_key_required = {}\napi_key_query = \"api_key\"\n{}\n",
                route_path(keys.len()),
                w.api_key_required,
                w.authorizer.as_ref().map(|a| format!("authorizer = {:?}\n", a.get_ref())).unwrap_or_default(),
            ));
            keys.push(WsRoute {
                key: "$connect".into(),
                ack: false,
            });
        }
        let generated: Generated = match toml::from_str(&text) {
            Ok(g) => g,
            Err(e) => {
                self.error(Some(span), format!("websocket.routes: {}", e.message()));
                return None;
            }
        };
        let mut inner = Validator {
            file: self.file,
            text: &text,
            errors: Vec::new(),
            allow_outside: self.allow_outside,
        };
        let routes = inner.routes(&generated.routes, base, server, spool_mode, stage_variables);
        for mut e in inner.errors {
            let line = e.at.map_or(0, |(l, _)| l);
            let at = starts
                .iter()
                .rev()
                .find(|(start, _)| *start <= line)
                .map_or(span.clone(), |(_, s)| s.clone());
            e.at = Some(super::line_col(self.text, at.start));
            e.message = format!(
                "websocket.routes: {}",
                e.message.replace("POST /$ws/", "route ")
            );
            self.errors.push(e);
        }
        if routes.len() != keys.len() {
            return None;
        }
        Some(Websocket {
            path,
            selection,
            api_key_required: w.api_key_required,
            authorizer: w.authorizer.as_ref().map(|a| a.get_ref().clone()),
            max_message_bytes: w
                .max_message_bytes
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
                .max(1),
            idle_timeout,
            max_connection_age,
            max_in_flight: w.max_in_flight.unwrap_or(64).max(1),
            management_listen,
            keys,
            routes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::selection;

    #[test]
    fn route_selection_expressions() {
        assert_eq!(
            selection("$request.body.action"),
            Some(vec!["action".to_string()])
        );
        assert_eq!(
            selection("${request.body.a.b}"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        for bad in [
            "$request.header.x",
            "action",
            "$request.body.",
            "$request.body.a..b",
        ] {
            assert_eq!(selection(bad), None, "{bad:?}");
        }
    }
}
