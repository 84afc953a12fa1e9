//! `$input.params()` and `$context` over a request, built on demand: most templates read
//! neither, and building them is a good part of a request's work.

use serde_json::Value as Json;

use crate::authorize::Identity;
use crate::config::{Config, RouteConfig};
use crate::mapping::{Params, context};
use crate::request::Request;

/// `$context.apiId`, and the API in the `methodArn` Lambda authorizers are given.
pub const API_ID: &str = "ingest-gateway";

/// What templates may ask of a request beyond its body.
pub struct RequestView<'a> {
    pub config: &'a Config,
    pub route: &'a RouteConfig,
    pub request: &'a Request,
    pub path_params: &'a [(String, String)],
    pub identity: &'a Identity,
}

impl RequestView<'_> {
    /// `$input.params()`: path, query string and header parameters (first values).
    pub fn params(&self) -> Params {
        let req = self.request;
        let mut p = Params::default();
        p.path.extend(self.path_params.iter().cloned());
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

    /// `$context`.
    pub fn context(&self) -> Json {
        context::build(&self.facts())
    }

    fn facts(&self) -> context::RequestFacts {
        let (req, config) = (self.request, self.config);
        context::RequestFacts {
            request_id: req.request_id.clone(),
            extended_request_id: req.request_id.replace('-', "")[..16].to_string(),
            http_method: req.method.to_string(),
            resource_path: self.route.path.to_string(),
            path: format!("/{}{}", config.stage, req.path),
            stage: config.stage.clone(),
            api_id: API_ID.into(),
            account_id: String::new(),
            domain_name: req.header("host").unwrap_or_default(),
            protocol: "HTTP/1.1".into(),
            source_ip: req.source_ip.clone(),
            user_agent: req.header("user-agent"),
            api_key: self.identity.api_key.clone(),
            api_key_id: self.identity.api_key_id.clone(),
            request_time_epoch_ms: req.received_epoch_ms,
            client_cert: req.client_cert.as_ref().map(|c| c.to_json()),
            authorizer: self.identity.authorizer_context(),
            is_canary: config.canary,
            ws: req.ws.clone(),
        }
    }
}
