//! ingest-gateway: a self-hosted ingestion gateway.
//!
//! ```text
//! server -> edge -> route -> authorize -> validate -> render (VTL) -> dispatch -> respond
//! ```
//!
//! The stages, in the order a request meets them ([`pipeline`] runs them and decides
//! nothing else; each reads the [`request`] and hands its result to the next):
//! - [`server`]: the HTTP shell (connections and their timers, body limits, health). It
//!   turns HTTP into a [`request::Request`] and a response back.
//! - [`edge`]: what a request meets before routing and every response carries back to a
//!   browser: TLS, the client's address behind proxies, IP policy and the per-address
//!   throttle, CORS, compressed and NDJSON bodies, the tracker script and pixels.
//! - [`route`]: the route table.
//! - [`authorize`]: the route's authorizers (API keys and usage plans today), giving the
//!   request's identity or its 403/429.
//! - [`validate`]: required parameters, the body's decoding and its JSON Schema model.
//! - [`render`]: template selection and the request template's render.
//! - [`dispatch`]: direct, batched, or to the spool.
//! - [`respond`]: integration responses, gateway responses, and every status code.
//! - [`cache`]: a GET route's answers kept and served again (after `authorize`, before
//!   the body is rendered).
//!
//! What the stages stand on:
//! - [`auth`]: the key store, usage plans, throttles and quotas.
//! - [`mapping`]: API Gateway's mapping-template surface (`$input`, `$util`, `$context`,
//!   `$stageVariables`, JSONPath); [`vtl`], the Velocity interpreter (pure, synchronous).
//! - [`integrations`]: the services routes call, one family per module behind one trait;
//!   [`batch`], batching across requests through a family's sink; [`spool`], the durable
//!   spool.
//! - [`upstream`]: the actions and how calls fail, shared by the three above;
//!   [`error`]: what went wrong, whose fault, and whether to retry.
//!
//! Around them: [`config`] (`gateway.toml`, one file per section), [`openapi`] (import and
//! export), [`lint`] (the template linter), [`telemetry`] (logs and metrics) and [`cli`]
//! (the command-line adapters).
//!
//! Dependencies point one way: `cli -> server -> pipeline -> stages -> config ->
//! (auth, validate's rules, integrations -> spool -> batch) -> (upstream, error, mapping,
//! vtl, telemetry)`.

pub mod auth;
pub mod authorize;
pub mod batch;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod edge;
pub mod error;
pub mod integrations;
pub mod lint;
pub mod mapping;
pub mod openapi;
pub mod outbound;
pub mod pipeline;
pub mod proxy;
pub mod render;
pub mod request;
pub mod respond;
pub mod route;
pub mod sdk;
pub mod server;
pub mod spool;
pub mod telemetry;
pub mod upstream;
pub mod validate;
pub mod vtl;
