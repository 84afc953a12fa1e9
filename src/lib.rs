//! ingest-gateway: a self-hosted ingestion gateway.
//!
//! ```text
//! listen -> route -> authorize -> validate -> render (VTL) -> dispatch -> respond
//! ```
//!
//! Modules, in the order a request meets them:
//! - [`server`]: the HTTP shell (connections and their timers, body limits, health).
//! - [`route`]: the route table. [`pipeline`] runs the stages below in order.
//! - [`auth`]: API keys, usage plans, throttles and quotas.
//! - [`validate`]: required parameters and JSON Schema models.
//! - [`mapping`]: API Gateway's mapping-template surface (`$input`, `$util`, `$context`,
//!   `$stageVariables`, JSONPath) over a request; [`vtl`], the Velocity interpreter those
//!   templates run on (pure and synchronous).
//! - [`batch`] and [`integrations`]: cross-request batching and the AWS calls; [`spool`],
//!   the durable spool for what the upstream does not take in time.
//! - [`respond`]: status codes and error bodies; [`error`], what went wrong and whose fault.
//!
//! Around them: [`config`] (`gateway.toml`), [`openapi`] (import and export),
//! [`telemetry`] (logs and metrics) and [`cli`] (the command-line adapters).

pub mod auth;
pub mod batch;
pub mod cli;
pub mod config;
pub mod error;
pub mod integrations;
pub mod mapping;
pub mod openapi;
pub mod pipeline;
pub mod respond;
pub mod route;
pub mod server;
pub mod spool;
pub mod telemetry;
pub mod validate;
pub mod vtl;
