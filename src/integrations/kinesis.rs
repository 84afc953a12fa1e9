//! Kinesis Data Streams: `PutRecord` and `PutRecords`.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use crate::batch::policy;

use super::request::{data, invalid, json_object, opt_string, resolve_target, string};
use super::{Action, IntegrationError, classify};

/// Records per `PutRecords` call (service limit).
pub const MAX_RECORDS: usize = 500;
/// Bytes of data and partition keys per `PutRecords` call the gateway sends (the service's
/// long-standing request limit).
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Partition key length in Unicode characters (service limit).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// `StreamName` / `StreamARN` of a rendered request, checked against the route's target.
fn stream<'a>(
    action: Action,
    m: &'a Map<String, Json>,
    target: Option<&'a str>,
) -> Result<(Option<&'a str>, Option<&'a str>), IntegrationError> {
    let arn = opt_string(action, m, "StreamARN")?;
    let name = opt_string(action, m, "StreamName")?;
    match (name, arn) {
        (Some(n), _) => Ok((
            Some(resolve_target(action, target, Some(n), "StreamName")?),
            arn,
        )),
        (None, Some(a)) => Ok((
            None,
            Some(resolve_target(action, target, Some(a), "StreamARN")?),
        )),
        (None, None) => {
            let t = resolve_target(action, target, None, "StreamName")?;
            Ok(if t.starts_with("arn:") {
                (None, Some(t))
            } else {
                (Some(t), None)
            })
        }
    }
}

fn partition_key(action: Action, m: &Map<String, Json>) -> Result<String, IntegrationError> {
    let key = string(action, m, "PartitionKey")?;
    if key.chars().count() > MAX_PARTITION_KEY_CHARS {
        return Err(invalid(
            action,
            format!("PartitionKey is longer than {MAX_PARTITION_KEY_CHARS} characters"),
        ));
    }
    Ok(key.to_string())
}

pub async fn put_record(
    client: &Client,
    target: Option<&str>,
    rendered: &str,
) -> Result<Json, IntegrationError> {
    let action = Action::KinesisPutRecord;
    let m = json_object(action, rendered)?;
    let (name, arn) = stream(action, &m, target)?;
    let out = client
        .put_record()
        .set_stream_name(name.map(str::to_string))
        .set_stream_arn(arn.map(str::to_string))
        .data(Blob::new(data(action, &m, "Data")?))
        .partition_key(partition_key(action, &m)?)
        .set_explicit_hash_key(opt_string(action, &m, "ExplicitHashKey")?.map(str::to_string))
        .set_sequence_number_for_ordering(
            opt_string(action, &m, "SequenceNumberForOrdering")?.map(str::to_string),
        )
        .send()
        .await
        .map_err(|e| classify(action, e))?;
    let mut resp = json!({"SequenceNumber": out.sequence_number(), "ShardId": out.shard_id()});
    if let Some(enc) = out.encryption_type() {
        resp["EncryptionType"] = json!(enc.as_str());
    }
    Ok(resp)
}

/// One record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub data: Vec<u8>,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
}

impl Entry {
    /// Bytes the record counts against the request size limit.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    Ok {
        sequence_number: String,
        shard_id: String,
    },
    Failed {
        code: String,
        message: String,
    },
}

impl EntryResult {
    pub fn to_json(&self) -> Json {
        match self {
            EntryResult::Ok {
                sequence_number,
                shard_id,
            } => json!({"SequenceNumber": sequence_number, "ShardId": shard_id}),
            EntryResult::Failed { code, message } => {
                json!({"ErrorCode": code, "ErrorMessage": message})
            }
        }
    }
}

/// The stream a request writes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamRef {
    pub name: Option<String>,
    pub arn: Option<String>,
}

/// Reads a rendered PutRecords request: its stream (checked against the target) and records.
pub fn parse_put_records(
    target: Option<&str>,
    rendered: &str,
) -> Result<(StreamRef, Vec<Entry>), IntegrationError> {
    let action = Action::KinesisPutRecords;
    let m = json_object(action, rendered)?;
    let (name, arn) = stream(action, &m, target)?;
    let Some(Json::Array(records)) = m.get("Records") else {
        return Err(invalid(action, "Records must be an array"));
    };
    if records.is_empty() || records.len() > MAX_RECORDS {
        return Err(invalid(
            action,
            format!(
                "Records must hold 1 to {MAX_RECORDS} records, not {}",
                records.len()
            ),
        ));
    }
    let mut entries = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let Json::Object(r) = r else {
            return Err(invalid(action, format!("Records[{i}] must be an object")));
        };
        entries.push(Entry {
            data: data(action, r, "Data")?,
            partition_key: partition_key(action, r)?,
            explicit_hash_key: opt_string(action, r, "ExplicitHashKey")?.map(str::to_string),
        });
    }
    let stream = StreamRef {
        name: name.map(str::to_string),
        arn: arn.map(str::to_string),
    };
    Ok((stream, entries))
}

/// First wait before retrying failed records, and the longest.
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_CAP: Duration = Duration::from_secs(1);

/// Puts records with `PutRecords`, retrying only the ones that failed with a transient error
/// (throttling, internal failure), with exponential backoff and jitter, while `deadline`
/// allows. A whole call that fails transiently is retried the same way; one that fails for
/// good (no such stream, access denied) is an error.
pub async fn put_entries(
    client: &Client,
    stream: &StreamRef,
    entries: &[Entry],
    deadline: tokio::time::Instant,
) -> Result<Vec<EntryResult>, IntegrationError> {
    let action = Action::KinesisPutRecords;
    let mut results: Vec<Option<EntryResult>> = vec![None; entries.len()];
    let mut todo: Vec<usize> = (0..entries.len()).collect();
    let mut attempt = 0u32;
    let mut last_call_error: Option<IntegrationError>;
    while !todo.is_empty() {
        let mut request_entries = Vec::with_capacity(todo.len());
        for &i in &todo {
            let e = &entries[i];
            let entry = PutRecordsRequestEntry::builder()
                .data(Blob::new(e.data.clone()))
                .partition_key(&e.partition_key)
                .set_explicit_hash_key(e.explicit_hash_key.clone())
                .build()
                .map_err(|err| invalid(action, err.to_string()))?;
            request_entries.push(entry);
        }
        let outcome = client
            .put_records()
            .set_stream_name(stream.name.clone())
            .set_stream_arn(stream.arn.clone())
            .set_records(Some(request_entries))
            .send()
            .await;
        let mut again = Vec::new();
        let mut last_failure = (String::new(), String::new());
        match outcome {
            Ok(out) => {
                last_call_error = None;
                for (&i, r) in todo.iter().zip(out.records()) {
                    match r.error_code() {
                        None => {
                            results[i] = Some(EntryResult::Ok {
                                sequence_number: r
                                    .sequence_number()
                                    .unwrap_or_default()
                                    .to_string(),
                                shard_id: r.shard_id().unwrap_or_default().to_string(),
                            });
                        }
                        Some(code) => {
                            let failed = EntryResult::Failed {
                                code: code.to_string(),
                                message: r.error_message().unwrap_or_default().to_string(),
                            };
                            if policy::retryable_record_error(code) {
                                again.push(i);
                                last_failure = (
                                    code.to_string(),
                                    r.error_message().unwrap_or_default().to_string(),
                                );
                            }
                            results[i] = Some(failed);
                        }
                    }
                }
            }
            Err(e) => {
                let e = classify(action, e);
                if !e.retryable() {
                    return Err(e);
                }
                for &i in &todo {
                    // Clients see this; the detail goes to the log.
                    results[i] = Some(EntryResult::Failed {
                        code: "ServiceUnavailable".into(),
                        message: "the service could not be reached".into(),
                    });
                }
                again.clone_from(&todo);
                last_failure = ("ServiceUnavailable".into(), e.to_string());
                last_call_error = Some(e);
            }
        }
        if again.is_empty() {
            break;
        }
        let wait = policy::backoff(attempt, RETRY_BASE, RETRY_CAP, jitter());
        if tokio::time::Instant::now() + wait >= deadline {
            tracing::warn!(
                records = again.len(),
                code = %last_failure.0,
                detail = %last_failure.1,
                "Gave up retrying records at the route's deadline."
            );
            // Nothing got through: the upstream's own error, not a per-record report.
            let none_accepted = !results
                .iter()
                .any(|r| matches!(r, Some(EntryResult::Ok { .. })));
            if none_accepted && let Some(e) = last_call_error {
                return Err(e);
            }
            break;
        }
        tokio::time::sleep(wait).await;
        attempt += 1;
        todo = again;
    }
    Ok(results
        .into_iter()
        .map(|r| {
            r.unwrap_or(EntryResult::Failed {
                code: "NotAttempted".into(),
                message: String::new(),
            })
        })
        .collect())
}

/// A number in `[0, 1)` for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// The response for a client's records; a 5xx-worthy error when any was not accepted.
pub fn records_response(results: &[EntryResult]) -> Result<Json, IntegrationError> {
    let failed = results
        .iter()
        .filter(|r| matches!(r, EntryResult::Failed { .. }))
        .count();
    let body = json!({
        "FailedRecordCount": failed,
        "Records": results.iter().map(EntryResult::to_json).collect::<Vec<_>>(),
        "EncryptionType": "NONE",
    });
    if failed == 0 {
        return Ok(body);
    }
    let code = results
        .iter()
        .find_map(|r| match r {
            EntryResult::Failed { code, .. } => Some(code.clone()),
            EntryResult::Ok { .. } => None,
        })
        .unwrap_or_default();
    Err(IntegrationError::RecordsRejected {
        action: Action::KinesisPutRecords,
        failed,
        total: results.len(),
        retryable: results.iter().all(|r| match r {
            EntryResult::Failed { code, .. } => {
                policy::retryable_record_error(code) || code == "ServiceUnavailable"
            }
            EntryResult::Ok { .. } => true,
        }),
        code,
        response: body,
    })
}

pub async fn put_records(
    client: &Client,
    target: Option<&str>,
    rendered: &str,
    deadline: tokio::time::Instant,
) -> Result<Json, IntegrationError> {
    let (stream, entries) = parse_put_records(target, rendered)?;
    let results = put_entries(client, &stream, &entries, deadline).await?;
    records_response(&results)
}
