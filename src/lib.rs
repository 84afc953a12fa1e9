//! ingest-gateway: a self-hosted ingestion gateway.
//!
//! ```text
//! listen -> route -> authorize -> validate -> render (VTL) -> dispatch -> respond
//! ```
//!
//! Modules, in the order a request meets them:
//! - [`mapping`]: API Gateway's mapping-template surface (`$input`, `$util`, `$context`,
//!   `$stageVariables`, JSONPath) over a request.
//! - [`vtl`]: the Velocity interpreter those templates run on; pure and synchronous.
//! - [`cli`]: the command-line adapters (`render`).

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
