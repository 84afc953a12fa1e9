//! `gateway.toml` as written. These structs are the user documentation of the file: every
//! field's comment says what it does. Unknown fields are rejected.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub aws: RawAws,
    /// `$stageVariables` for every template.
    #[serde(default)]
    pub stage_variables: IndexMap<String, String>,
    /// Bounds on every template render.
    #[serde(default)]
    pub templates: RawTemplateLimits,
    /// API keys: where they are stored, and the gateway-wide throttle.
    #[serde(default)]
    pub auth: RawAuth,
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
    /// The gateway's own error responses, by API Gateway's response type
    /// (`DEFAULT_4XX`, `DEFAULT_5XX`, `THROTTLED`, `BAD_REQUEST_BODY`, ...): a status and
    /// headers to set, as `x-amazon-apigateway-gateway-responses`.
    #[serde(default)]
    pub gateway_responses: IndexMap<String, Spanned<RawGatewayResponse>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayResponse {
    /// The status instead of the default one.
    pub status: Option<u16>,
    /// Headers to set: literal values, `'*'` (quotes optional).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// A template rendering the body, with `$context.error.message`, `.messageString` (the
    /// message as a JSON string), `.responseType` and `.validationErrorString`.
    pub template: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// `off` (the default), `fallback` or `always`, for every route that can spool
    /// (`kinesis:PutRecords` and `firehose:PutRecordBatch` routes that batch). A route's own
    /// `spool` overrides it. `fallback`: records the upstream did not take within the route's
    /// deadline are written to disk and the client gets 202; `always`: every request is
    /// acknowledged (202) once its records are on disk, and a replayer sends them.
    pub mode: Option<Spanned<String>>,
    /// Directory (default `spool` next to this file); one subdirectory per route.
    pub dir: Option<String>,
    /// Bytes of records a route's spool may hold (default 1 GiB); beyond, clients get 503.
    pub max_bytes: Option<Spanned<u64>>,
    /// Size of a segment file (default 64 MiB).
    pub segment_bytes: Option<Spanned<u64>>,
    /// `always` (the default: records are fsync'd before the client is acknowledged, one
    /// fsync for all concurrent requests) or an interval such as `"100ms"` (acknowledged once
    /// written; fsync'd within the interval).
    pub fsync: Option<Spanned<String>>,
    /// Batches the replayer sends at once (default 8). `1` delivers strictly in spool
    /// order; more keeps up with a faster intake, and neighbouring batches may interleave.
    pub replay_in_flight: Option<Spanned<usize>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on (default `127.0.0.1:8080`); `serve --listen` overrides it.
    pub listen: Option<Spanned<String>>,
    /// Stage name, visible as `$context.stage` (default `prod`).
    pub stage: Option<Spanned<String>>,
    /// Largest request body accepted; larger gets 413 (default 10 MB, as API Gateway).
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Default upstream call timeout for routes (default `29s`, as API Gateway).
    pub integration_timeout: Option<Spanned<String>>,
    /// Time to finish in-flight requests after SIGTERM/Ctrl-C (default `30s`).
    pub shutdown_grace: Option<Spanned<String>>,
    /// Time between SIGTERM (`/readyz` failing) and no longer accepting connections, so that
    /// balancers take the node out first (default `0s`).
    pub shutdown_delay: Option<Spanned<String>>,
    /// Time a client has to send a request's headers, from the first byte (default `10s`).
    pub header_read_timeout: Option<Spanned<String>>,
    /// Time a keep-alive connection may wait for its next request (default `75s`: longer
    /// than a balancer's idle timeout, as AWS ALB's 60 s, so the balancer closes first).
    pub idle_timeout: Option<Spanned<String>>,
    /// Time a request may take from its headers to its response, all stages together
    /// (default `60s`); past it the client gets 504. Routes' timeouts must fit within it.
    pub request_timeout: Option<Spanned<String>>,
    /// Time a client has to send a request's body, once its headers are in (default `30s`).
    pub body_read_timeout: Option<Spanned<String>>,
    /// Headers a request may have (default 100).
    pub max_headers: Option<Spanned<u64>>,
    /// Media types whose bodies are binary (`application/octet-stream`, `image/*`, `*/*`):
    /// templates get them base64-encoded in `$input.body`, as API Gateway's
    /// `binaryMediaTypes` (default none: bodies must be UTF-8 text).
    #[serde(default)]
    pub binary_media_types: Vec<String>,
    /// Nesting a JSON body may have, 1 to 127 (default 127, the parser's own bound); deeper
    /// bodies get 400 `Invalid request body`.
    pub max_json_depth: Option<Spanned<u64>>,
    /// Where the OpenAPI description of the routes is served (default `/openapi.json`;
    /// `""` turns it off).
    pub openapi_path: Option<Spanned<String>>,
    /// Whether it includes the integration details (templates, targets, the
    /// `x-amazon-apigateway-*` extensions) that let it be imported again (default `true`);
    /// `false` describes the API for clients only.
    pub openapi_extensions: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    /// AWS region (default: the standard chain, then `us-east-1`).
    pub region: Option<String>,
    /// Endpoint for every AWS client, e.g. a local emulator. `AWS_ENDPOINT_URL` also works.
    pub endpoint_url: Option<String>,
    /// Longest wait for one attempt of one AWS call (default `5s`); the SDK retries a failed
    /// attempt, and the route's `timeout` bounds them all.
    pub call_timeout: Option<Spanned<String>>,
    /// Longest wait to connect to an AWS endpoint (default `2s`).
    pub connect_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTemplateLimits {
    /// `#foreach` iterations per loop (default 1000, as API Gateway).
    pub max_loop_iterations: Option<usize>,
    /// Evaluation steps per render (default 1,000,000).
    pub max_steps: Option<u64>,
    /// Largest rendered output in bytes (default 16 MiB).
    pub max_output_bytes: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// HTTP method (`GET`, `POST`, ... or `ANY`).
    pub method: Spanned<String>,
    /// Path with `{param}` segments and an optional final greedy `{name+}`.
    pub path: Spanned<String>,
    /// The AWS action, IAM-style: `kinesis:PutRecord`, `kinesis:PutRecords`,
    /// `firehose:PutRecord`, `firehose:PutRecordBatch`, `sqs:SendMessage`,
    /// `sqs:SendMessageBatch`, `states:StartExecution`, `states:StartSyncExecution`.
    pub action: Spanned<String>,
    /// The stream, delivery stream, queue or state machine the route writes to (name or
    /// ARN). When set, a rendered request that names another target is refused, so request
    /// data cannot redirect writes; it is also what `iam-policy` grants.
    pub target: Option<Spanned<String>>,
    /// Request templates by content type (`application/json` = "mappings/x.vtl").
    #[serde(default)]
    pub request_templates: IndexMap<String, Spanned<String>>,
    /// `when_no_match` (default), `when_no_templates` or `never`, as API Gateway.
    pub passthrough: Option<Spanned<String>>,
    /// Template rendering the client's response from the service's JSON response.
    pub response_template: Option<Spanned<String>>,
    /// Upstream call timeout for this route (default `server.integration_timeout`).
    pub timeout: Option<Spanned<String>>,
    /// Integration responses: how the service's answer becomes the client's response.
    #[serde(default)]
    pub responses: Vec<Spanned<RawResponse>>,
    /// Whether callers must present an API key (`x-api-key` header).
    #[serde(default)]
    pub api_key_required: bool,
    /// A query parameter that may carry the key instead, for browsers and pixels.
    pub api_key_query: Option<String>,
    /// A throttle for the whole route, all callers together.
    pub throttle: Option<RawThrottle>,
    /// Send `X-RateLimit-Limit`, `-Remaining` and `-Reset` for the key's quota.
    #[serde(default)]
    pub rate_limit_headers: bool,
    /// Batching across requests (`kinesis:PutRecords`, `firehose:PutRecordBatch` and
    /// `sqs:SendMessageBatch` routes with a `target`; on by default for them, except FIFO
    /// queues): `false`, or `{ linger = "5ms", max_records = 500, max_bytes = 5242880 }`.
    pub batch: Option<RawBatch>,
    /// `off`, `fallback` or `always` (default: `spool.mode`); see `[spool]`.
    pub spool: Option<Spanned<String>>,
    /// A JSON Schema file the body must match (draft 4, as API Gateway's models, unless its
    /// `$schema` names another draft); otherwise 400 `Invalid request body`.
    pub request_model: Option<Spanned<String>>,
    /// Parameters requests must carry: `{ path = [...], querystring = [...], header = [...] }`;
    /// otherwise 400 `Missing required request parameters: [...]`.
    pub required_parameters: Option<Spanned<RawRequiredParameters>>,
    /// Validation failures also list what failed and where (`errors` in the 400 body).
    #[serde(default)]
    pub validation_details: bool,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRequiredParameters {
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub querystring: Vec<String>,
    #[serde(default)]
    pub header: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawBatch {
    Enabled(bool),
    Settings(RawBatchSettings),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatchSettings {
    /// How long the first record of a batch waits for others (default `5ms`).
    pub linger: Option<String>,
    /// Records per call, at most 500 (the service limit; the default).
    pub max_records: Option<usize>,
    /// Bytes of data and partition keys per call, at most 5 MiB (the default).
    pub max_bytes: Option<usize>,
    /// Requests that may wait for a batch (default 2048); beyond, clients get 503.
    pub queue: Option<usize>,
    /// Pack many user records into each Kinesis record in the KPL aggregated format
    /// (default `false`). Consumers must de-aggregate (KCL, Lambda with the
    /// `aws-kinesis-agg` library, Firehose does so itself).
    #[serde(default)]
    pub aggregate: bool,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThrottle {
    /// Requests per second refilled (fractions allowed).
    pub rate: f64,
    /// Bucket size: requests allowed at once.
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// The SQLite key store (default `keys.db` next to this file). The CLI's `keys`
    /// commands write it; the server picks changes up within a second.
    pub key_store: Option<String>,
    /// Gateway-wide throttle (default rate 10000, burst 5000, as an AWS account).
    pub account_throttle: Option<RawThrottle>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUsagePlan {
    /// Per key: steady rate and burst.
    pub throttle: Option<RawThrottle>,
    /// Per key and route, by `"METHOD /path"` as the route declares them.
    #[serde(default)]
    pub route_throttles: IndexMap<String, RawThrottle>,
    pub quota: Option<RawQuota>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    /// Requests per period.
    pub limit: u64,
    /// `DAY`, `WEEK` (from Monday) or `MONTH`, in UTC.
    pub period: String,
    /// Requests already counted in the period a key is created in.
    #[serde(default)]
    pub offset: u64,
}

/// An integration response, as API Gateway's: selected by a regular expression over the
/// service's HTTP status (`"200"`, `"400"`); the one without a pattern is the default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    /// Matched against the whole status text, e.g. `"4\\d{2}"`. Absent (and no
    /// `error_pattern`): the default.
    pub pattern: Option<String>,
    /// Matched against the whole error code of a failed call, e.g.
    /// `"ResourceNotFoundException|AccessDenied.*"`; a response with both patterns needs both.
    pub error_pattern: Option<String>,
    /// The status the client gets (default 200).
    pub status: Option<u16>,
    /// Response headers: `'literal'`, `context.NAME`, `stageVariables.NAME`, or
    /// `integration.response.body.FIELD` (a field of the service's JSON response), or
    /// `integration.response.header.NAME` (a header of its HTTP response; routes that do not
    /// batch).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// A template rendering the client's body, with `$input` bound to the service's response.
    pub template: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    #[serde(default)]
    pub kinesis_streams: Vec<Spanned<RawStream>>,
    #[serde(default)]
    pub s3_buckets: Vec<Spanned<RawBucket>>,
    #[serde(default)]
    pub firehose_delivery_streams: Vec<Spanned<RawDeliveryStream>>,
    #[serde(default)]
    pub sqs_queues: Vec<Spanned<RawQueue>>,
    #[serde(default)]
    pub state_machines: Vec<Spanned<RawStateMachine>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub name: String,
    /// Provisioned shard count; absent means on-demand capacity.
    pub shards: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeliveryStream {
    pub name: String,
    /// The Kinesis stream it reads (declared under `kinesis_streams`); without one, the
    /// delivery stream takes direct writes (`firehose:PutRecord`/`PutRecordBatch` routes).
    pub source_stream: Option<String>,
    /// The S3 bucket it writes (declared under `s3_buckets`).
    pub bucket: String,
    /// Object key prefix (default `events/`).
    pub prefix: Option<String>,
    /// Buffering hints: flush at this many MiB (default 5) ...
    pub buffer_size_mb: Option<i32>,
    /// ... or after this many seconds (default 60).
    pub buffer_interval_seconds: Option<i32>,
    /// IAM role Firehose assumes to read the stream and write the bucket.
    pub role_arn: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// Queue name; FIFO queues end in `.fifo`.
    pub name: String,
    /// Content-based deduplication (FIFO only).
    #[serde(default)]
    pub content_based_deduplication: bool,
    /// A dead-letter queue (declared under `sqs_queues`) and receives before moving there.
    pub dead_letter_queue: Option<String>,
    pub max_receive_count: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStateMachine {
    pub name: String,
    /// `STANDARD` (default) or `EXPRESS` (required for `states:StartSyncExecution`).
    pub kind: Option<String>,
    /// Amazon States Language definition file.
    pub definition: String,
    pub role_arn: String,
}
