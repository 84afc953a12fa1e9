//! `gateway.toml` as written. These structs are the user documentation of the file: every
//! field's comment says what it does. Unknown fields are rejected. Each section's structs
//! live in the section's own file and are gathered here.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

pub use super::auth::{RawAuth, RawQuota, RawThrottle, RawUsagePlan};
pub use super::authorizers::RawAuthorizer;
pub use super::batch::{RawBatch, RawBatchSettings};
pub use super::gateway_responses::RawGatewayResponse;
pub use super::responses::RawResponse;
pub use super::routes::{RawRequiredParameters, RawRoute};
pub use super::server::{RawAws, RawServer, RawTemplateLimits};
pub use super::spool::RawSpool;
pub use super::stages::{RawCanary, RawStage};
pub use super::telemetry::RawTelemetry;
pub use crate::integrations::provision::Resources as RawResources;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawConfig {
    /// Templates, models and definitions may lie outside this file's directory (default
    /// `false`: a configuration names files beside it, so it cannot make the gateway read any
    /// file on the machine).
    #[serde(default)]
    pub allow_paths_outside: bool,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub aws: RawAws,
    /// `$stageVariables` for every template.
    #[serde(default)]
    pub stage_variables: IndexMap<String, String>,
    /// Stages by name (`[stages.prod]`): each serves every route under `/{stage}/...`, with
    /// its own stage variables, throttle and canary. Absent: one stage, `server.stage`,
    /// served at the root.
    #[serde(default)]
    pub stages: IndexMap<String, Spanned<RawStage>>,
    /// A WebSocket API (`[websocket]` and `[[websocket.routes]]`).
    pub websocket: Option<Spanned<super::websocket::RawWebsocket>>,
    /// Bounds on every template render.
    #[serde(default)]
    pub templates: RawTemplateLimits,
    /// API keys: where they are stored, and the gateway-wide throttle.
    #[serde(default)]
    pub auth: RawAuth,
    /// Authorizers by name (JWT, Cognito user pools), for routes' `authorizer`.
    #[serde(default)]
    pub authorizers: IndexMap<String, Spanned<RawAuthorizer>>,
    /// Usage plans by name: throttle, per-route throttles and quota for the keys in them.
    #[serde(default)]
    pub usage_plans: IndexMap<String, Spanned<RawUsagePlan>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    /// What `ingest-gateway provision` creates.
    #[serde(default)]
    pub resources: RawResources,
    /// The durable spool: where records wait on disk when the upstream cannot take them.
    #[serde(default)]
    pub spool: RawSpool,
    /// What the gateway's own metrics carry.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// The gateway's own error responses, by API Gateway's response type
    /// (`DEFAULT_4XX`, `DEFAULT_5XX`, `THROTTLED`, `BAD_REQUEST_BODY`, ...): a status and
    /// headers to set, as `x-amazon-apigateway-gateway-responses`.
    #[serde(default)]
    pub gateway_responses: IndexMap<String, Spanned<RawGatewayResponse>>,
}
