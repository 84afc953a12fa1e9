//! The proxy stage: routes that hand the request over whole and answer with what comes
//! back, instead of templates and integration responses. A Lambda proxy route
//! ([`lambda`], API Gateway's `aws_proxy`) invokes the function with REST's payload format
//! 1.0 and turns its `statusCode`, headers and body into the response; an HTTP route
//! ([`http`]) forwards to a backend whose host configuration fixes (`http_proxy` passes the
//! backend's answer through; `http` sends the rendered template and maps the answer through
//! integration responses).
//!
//! Both fill their integration request from the route's `request_parameters` (see
//! [`resolve`]).

pub mod http;
pub mod lambda;

use serde_json::Value as Json;

use crate::config::integration::ParamSource;
use crate::request::Request;

/// Hop-by-hop headers (RFC 9110 7.6.1), and those the gateway sets itself: never forwarded
/// either way.
pub const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The header names `Connection` headers list (lower-case): hop-by-hop too.
pub fn connection_tokens(headers: &::http::HeaderMap) -> Vec<String> {
    headers
        .get_all(::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a header (lower-case) is hop-by-hop, or one the `Connection` headers name.
pub fn hop_by_hop(name: &str, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection.iter().any(|t| t == name)
}

/// A mapped value for this request: a path parameter, a query parameter or header, a
/// literal, a stage variable, or a `$context` value (`context` builds the document, only
/// when a mapping reads it).
pub fn resolve(
    source: &ParamSource,
    req: &Request,
    path_params: &[(String, String)],
    stage_variables: &indexmap::IndexMap<String, String>,
    context: &mut dyn FnMut() -> Json,
) -> Option<String> {
    match source {
        ParamSource::Path(n) => path_params
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone()),
        ParamSource::Query(n) => req.query_param(n).map(str::to_string),
        ParamSource::Header(n) => req.header(n),
        ParamSource::Literal(v) => Some(v.clone()),
        ParamSource::StageVariable(n) => stage_variables.get(n).cloned(),
        ParamSource::Context(path) => {
            let ctx = context();
            let mut v = &ctx;
            for part in path.split('.') {
                v = v.get(part)?;
            }
            match v {
                Json::Null => None,
                Json::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        }
    }
}

/// What a proxy or HTTP route needs of the request beyond the request itself.
pub struct Context<'a> {
    pub config: &'a crate::config::Config,
    pub clients: &'a crate::integrations::Clients,
    /// The client HTTP backends are called with.
    pub http: &'a crate::outbound::Client,
    /// The AWS region, for the events' method ARNs.
    pub region: &'a str,
    pub route: &'a crate::config::RouteConfig,
    pub req: &'a Request,
    pub path_params: &'a [(String, String)],
    pub identity: &'a crate::authorize::Identity,
    /// `$context`, for mappings that read it.
    pub context: &'a (dyn Fn() -> Json + Sync),
}

impl Context<'_> {
    /// The request as API Gateway's Lambda events describe it.
    pub fn facts(&self) -> crate::mapping::event::EventFacts<'_> {
        let config = self.config;
        crate::mapping::event::EventFacts {
            method: self.req.method.as_str(),
            path: &self.req.path,
            resource: self.route.path.as_str(),
            headers: &self.req.headers,
            query: &self.req.query,
            path_params: self.path_params,
            stage_variables: &config.stage_variables,
            stage: &config.stage,
            request_id: &self.req.request_id,
            source_ip: &self.req.source_ip,
            api_key: self.identity.api_key.as_deref(),
            api_key_id: self.identity.api_key_id.as_deref(),
            account_id: config.aws.account_id.as_deref().unwrap_or("000000000000"),
            api_id: crate::render::context::API_ID,
            region: self.region,
            epoch_ms: self.req.received_epoch_ms,
        }
    }
}

/// The route's `request_parameters` resolved for this request, for an AWS action's call
/// (headers it sets, an S3 object's key).
pub fn mapped(cx: &Context<'_>) -> Vec<crate::upstream::Mapped> {
    use crate::config::integration::ParamTarget;
    use crate::upstream::Mapped;
    let mut context = || (cx.context)();
    cx.route
        .integration
        .request_parameters
        .iter()
        .filter_map(|(to, from)| {
            let v = resolve(
                from,
                cx.req,
                cx.path_params,
                &cx.config.stage_variables,
                &mut context,
            )?;
            Some(match to {
                ParamTarget::Path(n) => Mapped::Path(n.clone(), v),
                ParamTarget::Query(n) => Mapped::Query(n.clone(), v),
                ParamTarget::Header(n) => Mapped::Header(n.clone(), v),
            })
        })
        .collect()
}

/// A proxy route: the request handed over whole, the answer passed back.
pub async fn run(
    cx: &Context<'_>,
    timeout: std::time::Duration,
) -> Result<lambda::Proxied, crate::error::GatewayError> {
    let (route, req) = (cx.route, cx.req);
    if let Some(backend) = &route.integration.http {
        let request = {
            let mut context = || (cx.context)();
            http::request(http::Outgoing {
                backend,
                mappings: &route.integration.request_parameters,
                proxy: true,
                req,
                path_params: cx.path_params,
                stage_variables: &cx.config.stage_variables,
                context: &mut context,
                body: req.body.clone(),
                content_type: None,
            })?
        };
        let answer = http::send(cx.http, request, timeout).await?;
        return Ok(lambda::Proxied {
            status: answer.status.as_u16(),
            headers: http::answer_headers(&answer.headers),
            body: answer.body,
        });
    }
    let function = route.target.as_deref().unwrap_or_default();
    let media = crate::validate::body::media_type(&req.headers);
    let binary = crate::validate::body::is_binary(&cx.config.binary_media_types, &media);
    lambda::run(
        cx.clients,
        function,
        &cx.facts(),
        &req.body,
        binary,
        cx.identity.authorizer_context(),
        timeout,
    )
    .await
}

/// An `http` route (not a proxy): the rendered template to the backend; its status, its
/// body (JSON, or the text as a string) and its headers for integration responses.
pub async fn call_http(
    cx: &Context<'_>,
    rendered: &str,
    timeout: std::time::Duration,
) -> Result<(u16, Json, Vec<(String, String)>), crate::error::GatewayError> {
    let route = cx.route;
    let backend = route.integration.http.as_ref().ok_or_else(|| {
        crate::error::GatewayError::new(
            crate::error::ErrorKind::BadIntegrationRequest,
            "an http route without a uri",
        )
    })?;
    let request = {
        let mut context = || (cx.context)();
        http::request(http::Outgoing {
            backend,
            mappings: &route.integration.request_parameters,
            proxy: false,
            req: cx.req,
            path_params: cx.path_params,
            stage_variables: &cx.config.stage_variables,
            context: &mut context,
            body: axum::body::Bytes::copy_from_slice(rendered.as_bytes()),
            content_type: (!rendered.is_empty()).then_some("application/json"),
        })?
    };
    let answer = http::send(cx.http, request, timeout).await?;
    let text = String::from_utf8_lossy(&answer.body);
    let body = serde_json::from_str(&text).unwrap_or_else(|_| Json::String(text.into_owned()));
    let headers = answer
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok((answer.status.as_u16(), body, headers))
}
