//! Kinesis Data Streams: `PutRecord` and `PutRecords`.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use serde_json::{Map, Value as Json, json};

use super::request::{data, invalid, json_object, opt_string, resolve_target, string};
use super::{Action, IntegrationError, classify};

/// Records per `PutRecords` call (service limit).
pub const MAX_RECORDS: usize = 500;
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

pub async fn put_records(
    client: &Client,
    target: Option<&str>,
    rendered: &str,
) -> Result<Json, IntegrationError> {
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
        let entry = PutRecordsRequestEntry::builder()
            .data(Blob::new(data(action, r, "Data")?))
            .partition_key(partition_key(action, r)?)
            .set_explicit_hash_key(opt_string(action, r, "ExplicitHashKey")?.map(str::to_string))
            .build()
            .map_err(|e| invalid(action, format!("Records[{i}]: {e}")))?;
        entries.push(entry);
    }
    let out = client
        .put_records()
        .set_stream_name(name.map(str::to_string))
        .set_stream_arn(arn.map(str::to_string))
        .set_records(Some(entries))
        .send()
        .await
        .map_err(|e| classify(action, e))?;
    let results: Vec<Json> = out
        .records()
        .iter()
        .map(|r| match r.error_code() {
            Some(code) => {
                json!({"ErrorCode": code, "ErrorMessage": r.error_message().unwrap_or("")})
            }
            None => json!({"SequenceNumber": r.sequence_number(), "ShardId": r.shard_id()}),
        })
        .collect();
    let mut resp =
        json!({"FailedRecordCount": out.failed_record_count().unwrap_or(0), "Records": results});
    if let Some(enc) = out.encryption_type() {
        resp["EncryptionType"] = json!(enc.as_str());
    }
    Ok(resp)
}
