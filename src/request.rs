//! The request as the stages see it: built by `server` from the HTTP request, read (never
//! changed) by every stage after it.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};

/// A request as the pipeline sees it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names are lower-case.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub source_ip: String,
    pub request_id: String,
    pub received: Instant,
    pub received_epoch_ms: i64,
}

impl Request {
    /// A header's first value as text (invalid UTF-8 replaced).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// A query parameter's first value.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
