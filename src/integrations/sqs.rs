//! SQS: `SendMessage` and `SendMessageBatch`, standard and FIFO.
//!
//! A rendered request is either JSON with the API's field names (`MessageBody`,
//! `MessageAttributes`, `Entries`, ...) or the form encoding classic API Gateway templates
//! produce (`Action=SendMessage&MessageBody=...&MessageAttribute.1.Name=...`). A form request
//! is answered in the legacy shape existing response templates read
//! (`SendMessageResponse.SendMessageResult.MessageId`). The queue is the route's target, or
//! a `QueueUrl` in the request, checked against the target.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

use tokio::time::Instant;

use super::batched::{self, BatchSink, Batched};
use super::request::{
    batch_item, batch_items, calls, form_pairs, invalid, json_object, opt_string, resolve_target,
    string, too_large, unmappable,
};
use super::{
    Action, BatchCaps, BatchRoute, Call, CallFuture, CheckFuture, Clients, Integration,
    IntegrationError, Permissions, classify,
};
use crate::batch::Sink;
use crate::batch::retry::{self, Outcome};
use crate::spool::Spool;

/// The SQS integration.
pub struct SqsIntegration;

impl Integration for SqsIntegration {
    fn actions(&self) -> &'static [Action] {
        &[Action::SqsSendMessage, Action::SqsSendMessageBatch]
    }

    fn check<'a>(
        &'a self,
        clients: &'a Clients,
        action: Action,
        target: &'a str,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            let url = clients.sqs.url(action, target).await?;
            // A URL given as the target is not looked up; read the queue to see it is there.
            clients
                .sqs
                .client
                .get_queue_attributes()
                .queue_url(url)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e))
        })
    }

    fn batch_caps(&self, action: Action, _aggregate: bool) -> Option<BatchCaps> {
        (action == Action::SqsSendMessageBatch).then_some(BatchCaps {
            max_records: MAX_BATCH,
            max_bytes: MAX_BATCH_BYTES,
        })
    }

    /// FIFO queues: resending only a batch's failed entries could reorder a message group,
    /// so batching is on only when asked for.
    fn batches_by_default(&self, _action: Action, target: &str) -> bool {
        !target.ends_with(".fifo")
    }

    /// A queue named by URL or name: its last segment.
    fn target_arn(&self, target: &str, region: &str, account: &str) -> String {
        let name = target.rsplit('/').next().unwrap_or(target);
        format!("arn:aws:sqs:{region}:{account}:{name}")
    }

    /// The gateway looks queue URLs up by name.
    fn extra_permissions(&self, _target: Option<&str>) -> Permissions {
        Permissions {
            on_target: &["sqs:GetQueueUrl"],
            anywhere: &[],
        }
    }

    fn target_in_template(&self) -> &'static str {
        r#"(?:QueueUrl=([^&\s$"]+))|(?:"QueueUrl"\s*:\s*"([^"$]+)")"#
    }

    fn reads_form_requests(&self) -> bool {
        true
    }

    fn call<'a>(&'a self, clients: &'a Clients, call: Call<'a>) -> CallFuture<'a> {
        let sqs = &clients.sqs;
        match call.action {
            Action::SqsSendMessageBatch => Box::pin(send_message_batch(
                sqs,
                call.target,
                call.rendered,
                call.deadline,
            )),
            _ => Box::pin(send_message(sqs, call.target, call.rendered)),
        }
    }

    fn batcher(
        &self,
        clients: &Clients,
        route: BatchRoute<'_>,
        _spool: Option<&Spool>,
    ) -> Option<Box<dyn Batched>> {
        if route.action != Action::SqsSendMessageBatch {
            return None;
        }
        let sink = SqsSink {
            sqs: clients.sqs.clone(),
            queue: route.target.to_string(),
        };
        Some(batched::start(sink, route))
    }
}

/// SQS `SendMessageBatch` to one queue.
pub struct SqsSink {
    pub sqs: Sqs,
    pub queue: String,
}

impl Sink for SqsSink {
    type Item = SendMessageBatchRequestEntry;
    type Output = Outcome<Json>;

    fn size(item: &SendMessageBatchRequestEntry) -> usize {
        entry_size(item)
    }

    async fn put(
        &self,
        items: Vec<SendMessageBatchRequestEntry>,
        deadline: Instant,
    ) -> Result<Vec<Outcome<Json>>, IntegrationError> {
        put_entries(&self.sqs, &self.queue, &items, deadline).await
    }
}

impl BatchSink for SqsSink {
    /// Whether the request was a form, and its entries' ids: only they are needed for the
    /// answer; the entries move into the batch.
    type Request = (bool, Vec<String>);

    fn parse(
        target: Option<&str>,
        rendered: &str,
    ) -> Result<((bool, Vec<String>), Vec<SendMessageBatchRequestEntry>), IntegrationError> {
        let (form, _, entries) = parse_send_message_batch(target, rendered)?;
        Ok(((form, ids(&entries)), entries))
    }

    fn answer(
        (form, ids): (bool, Vec<String>),
        results: &[Outcome<Json>],
    ) -> Result<Json, IntegrationError> {
        batch_response(form, &ids, results)
    }
}

/// Entries per `SendMessageBatch` call (service limit).
pub const MAX_BATCH: usize = 10;

/// The SQS client and the queue URLs it has looked up.
#[derive(Clone, Debug)]
pub struct Sqs {
    pub client: aws_sdk_sqs::Client,
    urls: Arc<Mutex<HashMap<String, String>>>,
}

impl Sqs {
    pub fn new(client: aws_sdk_sqs::Client) -> Sqs {
        Sqs {
            client,
            urls: Arc::default(),
        }
    }

    /// A queue URL for a name, URL or ARN, looked up once per name.
    async fn url(&self, action: Action, queue: &str) -> Result<String, IntegrationError> {
        if queue.starts_with("http://") || queue.starts_with("https://") {
            return Ok(queue.to_string());
        }
        let name = queue.rsplit(':').next().unwrap_or(queue);
        if let Some(url) = self
            .urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(url.clone());
        }
        let out = self
            .client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| classify(action, e))?;
        let url = out.queue_url().unwrap_or_default().to_string();
        self.urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), url.clone());
        Ok(url)
    }
}

/// Reads a rendered request in either encoding; says whether it was a form.
fn parse(action: Action, rendered: &str) -> Result<(bool, Map<String, Json>), IntegrationError> {
    if rendered.trim_start().starts_with('{') {
        Ok((false, json_object(action, rendered)?))
    } else {
        Ok((true, form_to_json(action, rendered)?))
    }
}

/// Converts a form-encoded request into the JSON shape.
fn form_to_json(action: Action, rendered: &str) -> Result<Map<String, Json>, IntegrationError> {
    let pairs = form_pairs(rendered).map_err(|e| invalid(action, e))?;
    let mut top = Map::new();
    // entry index -> (fields, attribute index -> fields)
    let mut entries: std::collections::BTreeMap<u32, Map<String, Json>> = Default::default();
    for (k, v) in pairs {
        if let Some(rest) = k.strip_prefix("SendMessageBatchRequestEntry.") {
            let (n, field) = rest
                .split_once('.')
                .ok_or_else(|| invalid(action, format!("bad form key {k:?}")))?;
            let n: u32 = n
                .parse()
                .map_err(|_| invalid(action, format!("bad form key {k:?}")))?;
            put_field(action, entries.entry(n).or_default(), field, v)?;
        } else {
            put_field(action, &mut top, &k, v)?;
        }
    }
    if !entries.is_empty() {
        top.insert(
            "Entries".into(),
            Json::Array(entries.into_values().map(Json::Object).collect()),
        );
    }
    Ok(top)
}

/// Sets one form field (`MessageBody`, `DelaySeconds`, `MessageAttribute.N.Name`, ...).
fn put_field(
    action: Action,
    m: &mut Map<String, Json>,
    field: &str,
    value: String,
) -> Result<(), IntegrationError> {
    if let Some(rest) = field.strip_prefix("MessageAttribute.") {
        let (n, sub) = rest
            .split_once('.')
            .ok_or_else(|| invalid(action, format!("bad form key {field:?}")))?;
        let slots = m
            .entry("_attributes")
            .or_insert_with(|| Json::Object(Map::new()))
            .as_object_mut()
            .expect("an object");
        let slot = slots.entry(n.to_string()).or_insert_with(|| json!({}));
        let key = match sub {
            "Name" => "Name",
            "Value.DataType" => "DataType",
            "Value.StringValue" => "StringValue",
            "Value.BinaryValue" => "BinaryValue",
            _ => return Err(invalid(action, format!("unsupported form key {field:?}"))),
        };
        slot[key] = Json::String(value);
        return Ok(());
    }
    let v = match field {
        "DelaySeconds" => Json::from(
            value
                .parse::<i64>()
                .map_err(|_| invalid(action, "DelaySeconds must be a number"))?,
        ),
        _ => Json::String(value),
    };
    m.insert(field.to_string(), v);
    Ok(())
}

/// `MessageAttributes` from the JSON shape (`{"name": {"DataType", "StringValue"}}`) or the
/// collected form attributes.
fn attributes(
    action: Action,
    m: &Map<String, Json>,
) -> Result<Option<HashMap<String, MessageAttributeValue>>, IntegrationError> {
    let mut out = HashMap::new();
    let mut add = |name: &str, spec: &Map<String, Json>| -> Result<(), IntegrationError> {
        let data_type = string(action, spec, "DataType")?;
        let mut b = MessageAttributeValue::builder()
            .data_type(data_type)
            .set_string_value(opt_string(action, spec, "StringValue")?.map(str::to_string));
        if let Some(bin) = opt_string(action, spec, "BinaryValue")? {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(bin)
                .map_err(|_| {
                    invalid(
                        action,
                        format!("attribute {name}: BinaryValue is not base64"),
                    )
                })?;
            b = b.binary_value(Blob::new(bytes));
        }
        let value = b
            .build()
            .map_err(|e| invalid(action, format!("attribute {name}: {e}")))?;
        out.insert(name.to_string(), value);
        Ok(())
    };
    if let Some(attrs) = m.get("MessageAttributes") {
        let Json::Object(attrs) = attrs else {
            return Err(invalid(action, "MessageAttributes must be an object"));
        };
        for (name, spec) in attrs {
            let Json::Object(spec) = spec else {
                return Err(invalid(
                    action,
                    format!("attribute {name} must be an object"),
                ));
            };
            add(name, spec)?;
        }
    }
    if let Some(Json::Object(slots)) = m.get("_attributes") {
        for spec in slots.values() {
            let Json::Object(spec) = spec else { continue };
            let name = string(action, spec, "Name")?.to_string();
            add(&name, spec)?;
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn delay(action: Action, m: &Map<String, Json>) -> Result<Option<i32>, IntegrationError> {
    match m.get("DelaySeconds") {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .and_then(|d| i32::try_from(d).ok())
            .filter(|d| (0..=900).contains(d))
            .map(Some)
            .ok_or_else(|| invalid(action, "DelaySeconds must be 0 to 900")),
    }
}

async fn queue_url(
    sqs: &Sqs,
    action: Action,
    target: Option<&str>,
    m: &Map<String, Json>,
) -> Result<String, IntegrationError> {
    let queue = resolve_target(
        action,
        target,
        opt_string(action, m, "QueueUrl")?,
        "QueueUrl",
    )?;
    sqs.url(action, queue).await
}

/// Wraps a result in the legacy query-protocol JSON shape.
fn legacy(result_name: &str, response_name: &str, result: &Json) -> Json {
    json!({ response_name: { result_name: result, "ResponseMetadata": {"RequestId": uuid::Uuid::new_v4().to_string()} } })
}

pub async fn send_message(
    sqs: &Sqs,
    target: Option<&str>,
    rendered: &str,
) -> Result<Json, IntegrationError> {
    let action = Action::SqsSendMessage;
    let (form, m) = parse(action, rendered)?;
    let body = string(action, &m, "MessageBody")?;
    let attrs = attributes(action, &m)?;
    check_size(action, 0, message_size(body, attrs.as_ref()))?;
    let url = queue_url(sqs, action, target, &m).await?;
    let out = sqs
        .client
        .send_message()
        .queue_url(url)
        .message_body(body)
        .set_delay_seconds(delay(action, &m)?)
        .set_message_attributes(attrs)
        .set_message_group_id(opt_string(action, &m, "MessageGroupId")?.map(str::to_string))
        .set_message_deduplication_id(
            opt_string(action, &m, "MessageDeduplicationId")?.map(str::to_string),
        )
        .send()
        .await
        .map_err(|e| classify(action, e))?;
    let mut result =
        json!({"MD5OfMessageBody": out.md5_of_message_body(), "MessageId": out.message_id()});
    if let Some(md5) = out.md5_of_message_attributes() {
        result["MD5OfMessageAttributes"] = json!(md5);
    }
    if let Some(seq) = out.sequence_number() {
        result["SequenceNumber"] = json!(seq);
    }
    Ok(if form {
        legacy("SendMessageResult", "SendMessageResponse", &result)
    } else {
        result
    })
}

/// Bytes of message bodies per `SendMessageBatch` call that batching across requests fills
/// to (the service's limit for a whole batch is at least this).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Bytes of one message, its body and attributes together (service limit: 256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What a message counts against the size limits: its body, and each attribute's name, type
/// and value.
fn message_size(body: &str, attributes: Option<&HashMap<String, MessageAttributeValue>>) -> usize {
    let attributes: usize = attributes
        .into_iter()
        .flatten()
        .map(|(name, v)| {
            name.len()
                + v.data_type().len()
                + v.string_value().map_or(0, str::len)
                + v.binary_value().map_or(0, |b| b.as_ref().len())
        })
        .sum();
    body.len() + attributes
}

/// A batch entry's size (see [`message_size`]).
fn entry_size(e: &SendMessageBatchRequestEntry) -> usize {
    message_size(e.message_body(), e.message_attributes())
}

/// A message within the service's size limit.
fn check_size(action: Action, index: usize, size: usize) -> Result<(), IntegrationError> {
    if size > MAX_MESSAGE_BYTES {
        let what = " of body and attributes";
        return Err(too_large(action, index, size, MAX_MESSAGE_BYTES, what));
    }
    Ok(())
}

/// A rendered `SendMessageBatch` request: whether it was a form, the queue (target or
/// `QueueUrl`), and its entries with the client's ids.
pub fn parse_send_message_batch(
    target: Option<&str>,
    rendered: &str,
) -> Result<(bool, String, Vec<SendMessageBatchRequestEntry>), IntegrationError> {
    let action = Action::SqsSendMessageBatch;
    let (form, m) = parse(action, rendered)?;
    let queue = resolve_target(
        action,
        target,
        opt_string(action, &m, "QueueUrl")?,
        "QueueUrl",
    )?
    .to_string();
    let items = batch_items(action, &m, "Entries", MAX_BATCH, "messages")?;
    let mut entries: Vec<SendMessageBatchRequestEntry> = Vec::with_capacity(items.len());
    for (i, e) in items.iter().enumerate() {
        let e = batch_item(action, e, "Entries", i)?;
        let id = opt_string(action, e, "Id")?.map_or_else(|| i.to_string(), str::to_string);
        // The service's rules for ids, checked here: calls renumber entries.
        if id.is_empty()
            || id.len() > 80
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(unmappable(
                action,
                format!("Entries[{i}].Id must be 1 to 80 letters, digits, '-' or '_'"),
            ));
        }
        if entries.iter().any(|e| e.id() == id) {
            return Err(unmappable(
                action,
                format!("Entries[{i}].Id {id:?} is not distinct"),
            ));
        }
        let entry = SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body(string(action, e, "MessageBody")?)
            .set_delay_seconds(delay(action, e)?)
            .set_message_attributes(attributes(action, e)?)
            .set_message_group_id(opt_string(action, e, "MessageGroupId")?.map(str::to_string))
            .set_message_deduplication_id(
                opt_string(action, e, "MessageDeduplicationId")?.map(str::to_string),
            )
            .build()
            .map_err(|err| invalid(action, format!("Entries[{i}]: {err}")))?;
        check_size(action, i, entry_size(&entry))?;
        entries.push(entry);
    }
    Ok((form, queue, entries))
}

/// Sends entries with `SendMessageBatch`, in as many calls as the service's limits need,
/// retrying only the ones that failed transiently. Each call numbers its entries afresh
/// (entries from several requests may share an id); each outcome carries the entry's own id
/// back.
pub async fn put_entries(
    sqs: &Sqs,
    queue: &str,
    entries: &[SendMessageBatchRequestEntry],
    deadline: Instant,
) -> Result<Vec<Outcome<Json>>, IntegrationError> {
    let action = Action::SqsSendMessageBatch;
    let url = sqs.url(action, queue).await?;
    let mut outcomes = Vec::with_capacity(entries.len());
    for call in calls(entries, MAX_BATCH, MAX_BATCH_BYTES, entry_size) {
        outcomes.extend(put_call(sqs, &url, call, deadline).await?);
    }
    Ok(outcomes)
}

/// One `SendMessageBatch` call's entries, with retries.
async fn put_call(
    sqs: &Sqs,
    url: &str,
    entries: &[SendMessageBatchRequestEntry],
    deadline: Instant,
) -> Result<Vec<Outcome<Json>>, IntegrationError> {
    let action = Action::SqsSendMessageBatch;
    let client = &sqs.client;
    retry::with_retries(action, entries, deadline, |batch: Vec<SendMessageBatchRequestEntry>| async move {
        let ids: Vec<String> = batch.iter().map(|e| e.id().to_string()).collect();
        let numbered: Vec<SendMessageBatchRequestEntry> = batch
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e.id = format!("e{i}");
                e
            })
            .collect();
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(numbered))
            .send()
            .await
            .map_err(|e| classify(action, e))?;
        // Results come back as two lists keyed by id; put them back in request order.
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let ours = format!("e{i}");
                if let Some(s) = out.successful().iter().find(|s| s.id() == ours) {
                    let mut ok = json!({"Id": id, "MessageId": s.message_id(), "MD5OfMessageBody": s.md5_of_message_body()});
                    if let Some(seq) = s.sequence_number() {
                        ok["SequenceNumber"] = json!(seq);
                    }
                    return Outcome::Ok(ok);
                }
                match out.failed().iter().find(|f| f.id() == ours) {
                    Some(f) => Outcome::Failed {
                        code: f.code().to_string(),
                        message: f.message().unwrap_or_default().to_string(),
                        retryable: !f.sender_fault(),
                    },
                    None => Outcome::Failed {
                        code: "MissingResult".into(),
                        message: "the service returned no result for this entry".into(),
                        retryable: true,
                    },
                }
            })
            .collect())
    })
    .await
}

/// The client's ids of its entries.
pub fn ids(entries: &[SendMessageBatchRequestEntry]) -> Vec<String> {
    entries.iter().map(|e| e.id().to_string()).collect()
}

/// The `SendMessageBatch` response for a client's entries (legacy shape for a form
/// request); a 5xx-worthy error when any was not accepted.
pub fn batch_response(
    form: bool,
    ids: &[String],
    outcomes: &[Outcome<Json>],
) -> Result<Json, IntegrationError> {
    let successful: Vec<Json> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Ok(s) => Some(s.clone()),
            Outcome::Failed { .. } => None,
        })
        .collect();
    let failed_list: Vec<Json> = ids
        .iter()
        .zip(outcomes)
        .filter_map(|(id, o)| match o {
            Outcome::Failed {
                code,
                message,
                retryable,
            } => {
                Some(json!({"Id": id, "SenderFault": !retryable, "Code": code, "Message": message}))
            }
            Outcome::Ok(_) => None,
        })
        .collect();
    let result = json!({"Successful": successful, "Failed": failed_list});
    let body = if form {
        legacy(
            "SendMessageBatchResult",
            "SendMessageBatchResponse",
            &result,
        )
    } else {
        result
    };
    retry::accepted_or_rejected(Action::SqsSendMessageBatch, outcomes, body)
}

pub async fn send_message_batch(
    sqs: &Sqs,
    target: Option<&str>,
    rendered: &str,
    deadline: Instant,
) -> Result<Json, IntegrationError> {
    let (form, queue, entries) = parse_send_message_batch(target, rendered)?;
    let outcomes = put_entries(sqs, &queue, &entries, deadline).await?;
    batch_response(form, &ids(&entries), &outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_requests_become_the_json_shape() {
        let m = form_to_json(
            Action::SqsSendMessage,
            "Action=SendMessage&MessageBody=%7B%22a%22%3A1%7D&DelaySeconds=5&MessageAttribute.1.Name=source&MessageAttribute.1.Value.DataType=String&MessageAttribute.1.Value.StringValue=web",
        )
        .unwrap();
        assert_eq!(m["MessageBody"], "{\"a\":1}");
        assert_eq!(m["DelaySeconds"], 5);
        let attrs = attributes(Action::SqsSendMessage, &m).unwrap().unwrap();
        assert_eq!(attrs["source"].string_value(), Some("web"));
        let b = form_to_json(
            Action::SqsSendMessageBatch,
            "Action=SendMessageBatch&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=x&SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=y",
        )
        .unwrap();
        assert_eq!(
            b["Entries"],
            json!([{"Id": "a", "MessageBody": "x"}, {"Id": "b", "MessageBody": "y"}])
        );
        assert!(form_to_json(Action::SqsSendMessage, "DelaySeconds=soon").is_err());
    }

    #[test]
    fn messages_over_the_service_limit_are_the_clients_to_fix() {
        let body = |n: usize| "x".repeat(n);
        let one = |b: &str| format!(r#"{{"Entries": [{{"Id": "a", "MessageBody": "{b}"}}]}}"#);
        assert!(parse_send_message_batch(Some("q"), &one(&body(MAX_MESSAGE_BYTES))).is_ok());
        assert!(matches!(
            parse_send_message_batch(Some("q"), &one(&body(MAX_MESSAGE_BYTES + 1))),
            Err(IntegrationError::RecordRefused {
                index: 0,
                too_large: true,
                ..
            })
        ));
        // Attributes count: a body at the limit with one attribute is over it.
        let with_attr = format!(
            r#"{{"Entries": [{{"Id": "a", "MessageBody": "{}", "MessageAttributes": {{"k": {{"DataType": "String", "StringValue": "v"}}}}}}]}}"#,
            body(MAX_MESSAGE_BYTES - 5)
        );
        assert!(matches!(
            parse_send_message_batch(Some("q"), &with_attr),
            Err(IntegrationError::RecordRefused { .. })
        ));
    }
}
