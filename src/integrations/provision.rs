//! `ingest-gateway provision`: creates what `[resources]` declares, idempotently, without
//! CloudFormation. Existing resources are checked and differences reported (never changed);
//! `dry_run` only reports the plan.
//!
//! Order matters: streams and buckets first (a delivery stream needs both), dead-letter
//! queues before the queues that use them.

use std::path::Path;
use std::time::Duration;

use aws_sdk_firehose::types::{
    BufferingHints, DeliveryStreamType, ExtendedS3DestinationConfiguration,
    KinesisStreamSourceConfiguration,
};
use aws_sdk_kinesis::types::{StreamMode, StreamModeDetails};
use aws_sdk_sfn::types::StateMachineType;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value as Json;

use super::{Action, Clients, IntegrationError, classify};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize, Default)]
/// `[resources]` as declared in `gateway.toml`.
pub struct Resources {
    #[serde(default)]
    pub kinesis_streams: Vec<Spanned<Stream>>,
    #[serde(default)]
    pub s3_buckets: Vec<Spanned<Bucket>>,
    #[serde(default)]
    pub firehose_delivery_streams: Vec<Spanned<DeliveryStream>>,
    #[serde(default)]
    pub sqs_queues: Vec<Spanned<Queue>>,
    #[serde(default)]
    pub state_machines: Vec<Spanned<StateMachine>>,
    #[serde(default)]
    pub dynamodb_tables: Vec<Spanned<Table>>,
    #[serde(default)]
    pub event_buses: Vec<Spanned<Named>>,
    #[serde(default)]
    pub sns_topics: Vec<Spanned<Named>>,
    /// Functions routes and authorizers call: checked to exist (code is not deployed).
    #[serde(default)]
    pub lambda_functions: Vec<Spanned<Named>>,
}

/// A resource declared by name only.
#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    pub name: String,
}

/// A DynamoDB table, on-demand billing.
#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    pub name: String,
    /// `NAME:TYPE`, the type `S`, `N` or `B` (`"customer:S"`).
    pub hash_key: String,
    /// `NAME:TYPE`, when the table has a sort key.
    pub range_key: Option<String>,
    /// The attribute whose epoch seconds expire an item (DynamoDB's TTL), if any.
    #[serde(default)]
    pub ttl_attribute: Option<String>,
}

impl Table {
    /// The key attributes as `(name, type)`, hash first.
    pub fn keys(&self) -> Option<Vec<(String, String)>> {
        let parse = |s: &str| {
            let (n, t) = s.split_once(':')?;
            (!n.is_empty() && ["S", "N", "B"].contains(&t)).then(|| (n.to_string(), t.to_string()))
        };
        let mut keys = vec![parse(&self.hash_key)?];
        if let Some(r) = &self.range_key {
            keys.push(parse(r)?);
        }
        Some(keys)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stream {
    pub name: String,
    /// Provisioned shard count; absent means on-demand capacity.
    pub shards: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Bucket {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryStream {
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
pub struct Queue {
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
pub struct StateMachine {
    pub name: String,
    /// `STANDARD` (default) or `EXPRESS` (required for `states:StartSyncExecution`).
    pub kind: Option<String>,
    /// Amazon States Language definition file.
    pub definition: String,
    pub role_arn: String,
}

/// What provisioning did (or, in a dry run, would do) for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Created(String),
    WouldCreate(String),
    Exists(String),
    /// Exists, but not as declared; left unchanged.
    Differs(String, String),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Created(r) => write!(f, "created   {r}"),
            Step::WouldCreate(r) => write!(f, "create    {r}"),
            Step::Exists(r) => write!(f, "exists    {r}"),
            Step::Differs(r, why) => write!(f, "DIFFERS   {r}: {why} (left unchanged)"),
        }
    }
}

/// A provisioning failure, with the resource it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{resource}: {source}")]
pub struct ProvisionError {
    pub resource: String,
    #[source]
    pub source: IntegrationError,
}

type Result<T> = std::result::Result<T, ProvisionError>;

fn fail(resource: &str, source: IntegrationError) -> ProvisionError {
    ProvisionError {
        resource: resource.to_string(),
        source,
    }
}

fn other(resource: &str, detail: impl Into<String>) -> ProvisionError {
    fail(
        resource,
        IntegrationError::InvalidRequest {
            action: Action::KinesisPutRecord,
            detail: detail.into(),
        },
    )
}

/// Provisions everything; `report` is called with each step as it happens.
pub async fn provision(
    clients: &Clients,
    resources: &Resources,
    base_dir: &Path,
    dry_run: bool,
    report: &mut dyn FnMut(&Step),
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut push = |s: Step, steps: &mut Vec<Step>| {
        report(&s);
        steps.push(s);
    };
    for s in &resources.kinesis_streams {
        let step = stream(clients, s.get_ref(), dry_run).await?;
        push(step, &mut steps);
    }
    for b in &resources.s3_buckets {
        let step = bucket(clients, &b.get_ref().name, dry_run).await?;
        push(step, &mut steps);
    }
    for d in &resources.firehose_delivery_streams {
        let step = delivery_stream(clients, d.get_ref(), dry_run).await?;
        push(step, &mut steps);
    }
    // Queues without a dead-letter queue first, so every redrive target exists.
    let mut queues: Vec<&Queue> = resources.sqs_queues.iter().map(|q| q.get_ref()).collect();
    queues.sort_by_key(|q| q.dead_letter_queue.is_some());
    for q in queues {
        let step = queue(clients, q, dry_run).await?;
        push(step, &mut steps);
    }
    for m in &resources.state_machines {
        let step = state_machine(clients, m.get_ref(), base_dir, dry_run).await?;
        push(step, &mut steps);
    }
    for t in &resources.dynamodb_tables {
        let step = table(clients, t.get_ref(), dry_run).await?;
        push(step, &mut steps);
    }
    for b in &resources.event_buses {
        let step = event_bus(clients, &b.get_ref().name, dry_run).await?;
        push(step, &mut steps);
    }
    for t in &resources.sns_topics {
        let step = topic(clients, &t.get_ref().name, dry_run).await?;
        push(step, &mut steps);
    }
    for f in &resources.lambda_functions {
        let step = function(clients, &f.get_ref().name).await?;
        push(step, &mut steps);
    }
    Ok(steps)
}

/// One call of a service's own API (see `aws`), for what has no SDK here.
async fn call(
    clients: &Clients,
    action: &'static str,
    body: &str,
) -> std::result::Result<Json, IntegrationError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    clients
        .aws
        .call(super::aws::action(action), None, body, deadline)
        .await
}

async fn table(clients: &Clients, t: &Table, dry_run: bool) -> Result<Step> {
    let what = format!("dynamodb table {}", t.name);
    let keys = t
        .keys()
        .ok_or_else(|| other(&what, "hash_key and range_key are NAME:S, NAME:N or NAME:B"))?;
    let describe = serde_json::json!({ "TableName": t.name }).to_string();
    match call(clients, "aws:dynamodb:DescribeTable", &describe).await {
        Ok(found) => {
            let schema: Vec<String> = found["Table"]["KeySchema"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k["AttributeName"].as_str().map(str::to_string))
                .collect();
            let declared: Vec<String> = keys.iter().map(|(n, _)| n.clone()).collect();
            Ok(if schema == declared {
                Step::Exists(what)
            } else {
                Step::Differs(what, format!("keys {schema:?}, declared {declared:?}"))
            })
        }
        Err(e) if is_not_found(&e) => {
            if dry_run {
                return Ok(Step::WouldCreate(what));
            }
            let kinds = ["HASH", "RANGE"];
            let create = serde_json::json!({
                "TableName": t.name,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": keys.iter().map(|(n, ty)| serde_json::json!({"AttributeName": n, "AttributeType": ty})).collect::<Vec<_>>(),
                "KeySchema": keys.iter().zip(kinds).map(|((n, _), k)| serde_json::json!({"AttributeName": n, "KeyType": k})).collect::<Vec<_>>(),
            });
            call(clients, "aws:dynamodb:CreateTable", &create.to_string())
                .await
                .map_err(|e| fail(&what, e))?;
            if let Some(attribute) = &t.ttl_attribute {
                let ttl = serde_json::json!({
                    "TableName": t.name,
                    "TimeToLiveSpecification": { "Enabled": true, "AttributeName": attribute },
                });
                call(clients, "aws:dynamodb:UpdateTimeToLive", &ttl.to_string())
                    .await
                    .map_err(|e| fail(&what, e))?;
            }
            Ok(Step::Created(what))
        }
        Err(e) => Err(fail(&what, e)),
    }
}

async fn event_bus(clients: &Clients, name: &str, dry_run: bool) -> Result<Step> {
    let what = format!("event bus {name}");
    let body = serde_json::json!({ "Name": name }).to_string();
    match call(clients, "aws:events:DescribeEventBus", &body).await {
        Ok(_) => Ok(Step::Exists(what)),
        Err(e) if is_not_found(&e) => {
            if dry_run {
                return Ok(Step::WouldCreate(what));
            }
            call(clients, "aws:events:CreateEventBus", &body)
                .await
                .map_err(|e| fail(&what, e))?;
            Ok(Step::Created(what))
        }
        Err(e) => Err(fail(&what, e)),
    }
}

async fn topic(clients: &Clients, name: &str, dry_run: bool) -> Result<Step> {
    let what = format!("sns topic {name}");
    // ListTopics names topics by ARN; one ending in `:name` is this one.
    let listed = call(clients, "aws:sns:ListTopics", "")
        .await
        .map_err(|e| fail(&what, e))?;
    let suffix = format!(":{name}</TopicArn>");
    if listed.as_str().is_some_and(|xml| xml.contains(&suffix)) {
        return Ok(Step::Exists(what));
    }
    if dry_run {
        return Ok(Step::WouldCreate(what));
    }
    call(
        clients,
        "aws:sns:CreateTopic",
        &serde_json::json!({ "Name": name }).to_string(),
    )
    .await
    .map_err(|e| fail(&what, e))?;
    Ok(Step::Created(what))
}

/// A function is code `provision` does not deploy: it is checked, and a missing one is
/// reported.
async fn function(clients: &Clients, name: &str) -> Result<Step> {
    let what = format!("lambda function {name}");
    match clients
        .lambda
        .get_function()
        .function_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(Step::Exists(what)),
        Err(e) => {
            let e = classify(Action::LambdaInvoke, e);
            if is_not_found(&e) {
                Ok(Step::Differs(
                    what,
                    "does not exist; provision does not deploy function code".into(),
                ))
            } else {
                Err(fail(&what, e))
            }
        }
    }
}

async fn stream(clients: &Clients, s: &Stream, dry_run: bool) -> Result<Step> {
    let what = match s.shards {
        Some(n) => format!("kinesis stream {} ({n} shards)", s.name),
        None => format!("kinesis stream {} (on-demand)", s.name),
    };
    let k = &clients.kinesis;
    match k
        .describe_stream_summary()
        .stream_name(&s.name)
        .send()
        .await
    {
        Ok(out) => {
            let Some(summary) = out.stream_description_summary() else {
                return Ok(Step::Exists(what));
            };
            let on_demand = summary
                .stream_mode_details()
                .is_some_and(|m| *m.stream_mode() == StreamMode::OnDemand);
            let differs = match s.shards {
                Some(n) if on_demand => Some(format!("on-demand, declared with {n} shards")),
                Some(n) if summary.open_shard_count() != n => Some(format!(
                    "{} open shards, declared {n}",
                    summary.open_shard_count()
                )),
                None if !on_demand => Some("provisioned, declared on-demand".to_string()),
                _ => None,
            };
            Ok(differs.map_or(Step::Exists(what.clone()), |why| Step::Differs(what, why)))
        }
        Err(e) => {
            let e = classify(Action::KinesisPutRecord, e);
            if !is_not_found(&e) {
                return Err(fail(&what, e));
            }
            if dry_run {
                return Ok(Step::WouldCreate(what));
            }
            let mut req = k.create_stream().stream_name(&s.name);
            req = match s.shards {
                Some(n) => req.shard_count(n),
                None => req.stream_mode_details(
                    StreamModeDetails::builder()
                        .stream_mode(StreamMode::OnDemand)
                        .build()
                        .map_err(|e| other(&what, e.to_string()))?,
                ),
            };
            req.send()
                .await
                .map_err(|e| fail(&what, classify(Action::KinesisPutRecord, e)))?;
            wait_active(clients, &s.name)
                .await
                .map_err(|e| fail(&what, e))?;
            Ok(Step::Created(what))
        }
    }
}

fn is_not_found(e: &IntegrationError) -> bool {
    matches!(e, IntegrationError::Service { code, .. }
        if code.contains("NotFound") || code.contains("NonExistent") || code.contains("DoesNotExist") || code == "404")
}

/// Waits (up to a minute) for a new stream to become ACTIVE.
async fn wait_active(clients: &Clients, name: &str) -> std::result::Result<(), IntegrationError> {
    for _ in 0..120 {
        let out = clients
            .kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(|e| classify(Action::KinesisPutRecord, e))?;
        if out
            .stream_description_summary()
            .is_some_and(|s| s.stream_status().as_str() == "ACTIVE")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(IntegrationError::Timeout {
        action: Action::KinesisPutRecord,
        timeout: Duration::from_secs(60),
    })
}

async fn stream_arn(
    clients: &Clients,
    name: &str,
) -> std::result::Result<String, IntegrationError> {
    let out = clients
        .kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(|e| classify(Action::KinesisPutRecord, e))?;
    Ok(out
        .stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .unwrap_or_default())
}

async fn bucket(clients: &Clients, name: &str, dry_run: bool) -> Result<Step> {
    let what = format!("s3 bucket {name}");
    if clients.s3.head_bucket().bucket(name).send().await.is_ok() {
        return Ok(Step::Exists(what));
    }
    if dry_run {
        return Ok(Step::WouldCreate(what));
    }
    let mut req = clients.s3.create_bucket().bucket(name);
    let region = clients.s3.config().region().map(|r| r.as_ref().to_string());
    if let Some(region) = region.filter(|r| r != "us-east-1") {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    region.as_str(),
                ))
                .build(),
        );
    }
    req.send().await.map_err(|e| {
        let detail = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
        other(&what, detail)
    })?;
    Ok(Step::Created(what))
}

async fn delivery_stream(clients: &Clients, d: &DeliveryStream, dry_run: bool) -> Result<Step> {
    let source = d.source_stream.as_deref().unwrap_or("direct writes");
    let what = format!(
        "firehose delivery stream {} ({source} -> s3://{})",
        d.name, d.bucket
    );
    let f = &clients.firehose;
    let prefix = d.prefix.clone().unwrap_or_else(|| "events/".to_string());
    match f
        .describe_delivery_stream()
        .delivery_stream_name(&d.name)
        .send()
        .await
    {
        Ok(out) => {
            let desc = out.delivery_stream_description();
            let dest_bucket = desc
                .and_then(|d| d.destinations().first())
                .and_then(|d| d.extended_s3_destination_description())
                .map(|s| s.bucket_arn().to_string());
            let expected = format!("arn:aws:s3:::{}", d.bucket);
            Ok(match dest_bucket {
                Some(b) if b != expected => {
                    Step::Differs(what, format!("writes to {b}, declared {expected}"))
                }
                _ => Step::Exists(what),
            })
        }
        Err(e) => {
            let e = classify(Action::FirehosePutRecord, e);
            if !is_not_found(&e) {
                return Err(fail(&what, e));
            }
            if dry_run {
                return Ok(Step::WouldCreate(what));
            }
            let hints = BufferingHints::builder()
                .size_in_mbs(d.buffer_size_mb.unwrap_or(5))
                .interval_in_seconds(d.buffer_interval_seconds.unwrap_or(60))
                .build();
            let s3 = ExtendedS3DestinationConfiguration::builder()
                .role_arn(&d.role_arn)
                .bucket_arn(format!("arn:aws:s3:::{}", d.bucket))
                .prefix(prefix)
                .buffering_hints(hints)
                .build()
                .map_err(|e| other(&what, e.to_string()))?;
            let mut create = f
                .create_delivery_stream()
                .delivery_stream_name(&d.name)
                .extended_s3_destination_configuration(s3);
            create = match &d.source_stream {
                Some(stream) => {
                    let source_arn = stream_arn(clients, stream)
                        .await
                        .map_err(|e| fail(&what, e))?;
                    let source = KinesisStreamSourceConfiguration::builder()
                        .kinesis_stream_arn(source_arn)
                        .role_arn(&d.role_arn)
                        .build()
                        .map_err(|e| other(&what, e.to_string()))?;
                    create
                        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
                        .kinesis_stream_source_configuration(source)
                }
                None => create.delivery_stream_type(DeliveryStreamType::DirectPut),
            };
            create
                .send()
                .await
                .map_err(|e| fail(&what, classify(Action::FirehosePutRecord, e)))?;
            Ok(Step::Created(what))
        }
    }
}

async fn queue_arn(clients: &Clients, url: &str) -> std::result::Result<String, IntegrationError> {
    let out = clients
        .sqs
        .client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| classify(Action::SqsSendMessage, e))?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default())
}

async fn queue(clients: &Clients, q: &Queue, dry_run: bool) -> Result<Step> {
    let what = match &q.dead_letter_queue {
        Some(dlq) => format!("sqs queue {} (dead letters to {dlq})", q.name),
        None => format!("sqs queue {}", q.name),
    };
    let sqs = &clients.sqs.client;
    if sqs.get_queue_url().queue_name(&q.name).send().await.is_ok() {
        return Ok(Step::Exists(what));
    }
    if dry_run {
        return Ok(Step::WouldCreate(what));
    }
    let mut req = sqs.create_queue().queue_name(&q.name);
    if q.name.ends_with(".fifo") {
        req = req.attributes(QueueAttributeName::FifoQueue, "true");
        if q.content_based_deduplication {
            req = req.attributes(QueueAttributeName::ContentBasedDeduplication, "true");
        }
    }
    if let Some(dlq) = &q.dead_letter_queue {
        let url = sqs
            .get_queue_url()
            .queue_name(dlq)
            .send()
            .await
            .map_err(|e| fail(&what, classify(Action::SqsSendMessage, e)))?;
        let arn = queue_arn(clients, url.queue_url().unwrap_or_default())
            .await
            .map_err(|e| fail(&what, e))?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": q.max_receive_count.unwrap_or(5).to_string(),
        });
        req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    req.send()
        .await
        .map_err(|e| fail(&what, classify(Action::SqsSendMessage, e)))?;
    Ok(Step::Created(what))
}

async fn state_machine(
    clients: &Clients,
    m: &StateMachine,
    base_dir: &Path,
    dry_run: bool,
) -> Result<Step> {
    let kind = m.kind.as_deref().unwrap_or("STANDARD");
    let what = format!("state machine {} ({kind})", m.name);
    let path = base_dir.join(&m.definition);
    let definition = std::fs::read_to_string(&path)
        .map_err(|e| other(&what, format!("cannot read {}: {e}", path.display())))?;
    let parsed: Json = serde_json::from_str(&definition)
        .map_err(|e| other(&what, format!("{} is not JSON: {e}", path.display())))?;
    let sfn = &clients.sfn.client;
    let action = Action::StatesStartExecution;
    let mut pages = sfn.list_state_machines().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| fail(&what, classify(action, e)))?;
        if let Some(existing) = page.state_machines().iter().find(|s| s.name() == m.name) {
            let desc = sfn
                .describe_state_machine()
                .state_machine_arn(existing.state_machine_arn())
                .send()
                .await
                .map_err(|e| fail(&what, classify(action, e)))?;
            let same_definition = serde_json::from_str::<Json>(desc.definition())
                .ok()
                .as_ref()
                == Some(&parsed);
            return Ok(if existing.r#type().as_str() != kind {
                Step::Differs(what, format!("is {}", existing.r#type().as_str()))
            } else if !same_definition {
                Step::Differs(what, format!("definition differs from {}", path.display()))
            } else {
                Step::Exists(what)
            });
        }
    }
    if dry_run {
        return Ok(Step::WouldCreate(what));
    }
    sfn.create_state_machine()
        .name(&m.name)
        .definition(definition)
        .role_arn(&m.role_arn)
        .r#type(StateMachineType::from(kind))
        .send()
        .await
        .map_err(|e| fail(&what, classify(action, e)))?;
    Ok(Step::Created(what))
}
