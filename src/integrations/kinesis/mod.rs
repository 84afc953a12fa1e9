//! Kinesis Data Streams: `PutRecord` and `PutRecords`. `PutRecords` routes batch across
//! requests ([`sink`]), optionally KPL-aggregated ([`kpl`]), and can spool.

pub mod kpl;
pub mod put;
pub mod sink;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use serde_json::{Map, Value as Json, json};

use crate::batch::retry::{self, Outcome};
use crate::spool::{Replay, Spool};
use crate::upstream::retryable_record_error;

use super::aws::Signer;
use super::batched::{self, Batched};
use super::request::{
    batch_item, batch_items, calls, data, json_object, opt_string, resolve_target, string,
    too_large,
};
use super::{
    Action, BatchCaps, BatchRoute, Call, CallFuture, CheckFuture, Clients, Integration,
    IntegrationError, ReplayFuture, classify,
};
use sink::KinesisSink;

/// The Kinesis Data Streams integration.
pub struct Kinesis;

impl Integration for Kinesis {
    fn actions(&self) -> &'static [Action] {
        &[Action::KinesisPutRecord, Action::KinesisPutRecords]
    }

    fn check<'a>(
        &'a self,
        clients: &'a Clients,
        action: Action,
        target: &'a str,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            let call = clients.kinesis.describe_stream_summary();
            let call = if target.starts_with("arn:") {
                call.stream_arn(target)
            } else {
                call.stream_name(target)
            };
            call.send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e))
        })
    }

    fn batch_caps(&self, action: Action, aggregate: bool) -> Option<BatchCaps> {
        // Aggregated, the caps count user records: many fit in one upstream record.
        match (action, aggregate) {
            (Action::KinesisPutRecords, false) => Some(BatchCaps {
                max_records: MAX_RECORDS,
                max_bytes: MAX_BATCH_BYTES,
            }),
            (Action::KinesisPutRecords, true) => Some(BatchCaps {
                max_records: AGGREGATED_MAX_RECORDS,
                max_bytes: AGGREGATED_MAX_BYTES,
            }),
            _ => None,
        }
    }

    fn aggregates(&self, action: Action) -> bool {
        action == Action::KinesisPutRecords
    }

    fn spools(&self, action: Action) -> bool {
        action == Action::KinesisPutRecords
    }

    fn target_arn(&self, target: &str, region: &str, account: &str) -> String {
        format!("arn:aws:kinesis:{region}:{account}:stream/{target}")
    }

    fn request_format(&self, _action: Action) -> super::RequestFormat {
        super::RequestFormat::JsonWithData
    }

    fn target_in_template(&self) -> &'static str {
        r#""Stream(?:Name|ARN)"\s*:\s*"([^"$]+)""#
    }

    fn call<'a>(&'a self, clients: &'a Clients, call: Call<'a>) -> CallFuture<'a> {
        let client = &clients.kinesis;
        match call.action {
            Action::KinesisPutRecords => Box::pin(put_records(
                &clients.aws,
                call.target,
                call.rendered,
                call.deadline,
            )),
            _ => Box::pin(put_record(client, call.target, call.rendered)),
        }
    }

    fn batcher(
        &self,
        clients: &Clients,
        route: BatchRoute<'_>,
        spool: Option<&Spool>,
    ) -> Option<Box<dyn Batched>> {
        if route.action != Action::KinesisPutRecords {
            return None;
        }
        Some(batched::start_spooling(
            || sink(clients, route),
            route,
            spool,
        ))
    }

    fn replay<'a>(
        &'a self,
        clients: &'a Clients,
        route: BatchRoute<'a>,
        what: Replay<'a>,
    ) -> Option<ReplayFuture<'a>> {
        let sink = sink(clients, route);
        let limits = route.replay_limits();
        self.spools(route.action)
            .then(|| Box::pin(what.run(sink, limits)) as ReplayFuture<'a>)
    }
}

/// A batched route's sink: its stream, aggregated when the route asks.
fn sink(clients: &Clients, route: BatchRoute<'_>) -> KinesisSink {
    KinesisSink::new(
        clients.kinesis.clone(),
        clients.aws.clone(),
        StreamRef::from_target(route.target),
        route.policy.aggregate,
        route.name.to_string(),
    )
}

/// User records per batch when aggregating, at most.
pub const AGGREGATED_MAX_RECORDS: usize = 50_000;
/// User bytes per batch when aggregating, at most: 5 MiB less room for the aggregates'
/// framing, so one batch stays one `PutRecords` call.
pub const AGGREGATED_MAX_BYTES: usize = 4_718_592;

/// Records per `PutRecords` call (service limit).
pub const MAX_RECORDS: usize = 500;
/// Bytes of data and partition keys per `PutRecords` call the gateway sends (the service's
/// long-standing request limit).
pub const MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// Partition key length in Unicode characters (service limit).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// Bytes of data and partition key per record (service limit: 1 MiB).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// `StreamName` / `StreamARN` of a rendered request, checked against the route's target.
fn stream<'a>(
    action: Action,
    m: &'a Map<String, Json>,
    target: Option<&'a str>,
) -> Result<(Option<&'a str>, Option<&'a str>), IntegrationError> {
    let arn = opt_string(action, m, "StreamARN")?;
    let name = opt_string(action, m, "StreamName")?;
    stream_of(action, name, arn, target)
}

/// As [`stream`], for the fields already read.
fn stream_of<'a>(
    action: Action,
    name: Option<&'a str>,
    arn: Option<&'a str>,
    target: Option<&'a str>,
) -> Result<(Option<&'a str>, Option<&'a str>), IntegrationError> {
    // Both are checked: the service may go by either.
    let name = name
        .map(|n| resolve_target(action, target, Some(n), "StreamName"))
        .transpose()?;
    let arn = arn
        .map(|a| resolve_target(action, target, Some(a), "StreamARN"))
        .transpose()?;
    // With a target, the target alone says where the records go.
    let chosen = match (target, name, arn) {
        (Some(t), _, _) => t,
        (None, None, None) => resolve_target(action, target, None, "StreamName")?,
        (None, name, arn) => return Ok((name, arn)),
    };
    Ok(if chosen.starts_with("arn:") {
        (None, Some(chosen))
    } else {
        (Some(chosen), None)
    })
}

/// A record's partition key, within the service's limit (a key usually comes from the
/// client's data, so one too long is the client's to fix).
fn partition_key(
    action: Action,
    m: &Map<String, Json>,
    index: usize,
) -> Result<String, IntegrationError> {
    checked_partition_key(action, string(action, m, "PartitionKey")?, index)
}

/// A partition key, checked against the service's limit.
fn checked_partition_key(
    action: Action,
    key: &str,
    index: usize,
) -> Result<String, IntegrationError> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
        return Err(IntegrationError::RecordRefused {
            action,
            index,
            reason: format!(
                "has a partition key of {chars} characters; {action} accepts 1 to {MAX_PARTITION_KEY_CHARS}"
            ),
            too_large: false,
        });
    }
    Ok(key.to_string())
}

/// A record, checked against the service's per-record limit.
fn entry(action: Action, m: &Map<String, Json>, index: usize) -> Result<Entry, IntegrationError> {
    checked_entry(
        action,
        Entry {
            data: data(action, m, "Data")?.into(),
            partition_key: partition_key(action, m, index)?,
            explicit_hash_key: opt_string(action, m, "ExplicitHashKey")?.map(str::to_string),
        },
        index,
    )
}

/// A record, checked against the service's per-record limit.
fn checked_entry(action: Action, e: Entry, index: usize) -> Result<Entry, IntegrationError> {
    if e.size() > MAX_RECORD_BYTES {
        let what = " of data and partition key";
        return Err(too_large(action, index, e.size(), MAX_RECORD_BYTES, what));
    }
    Ok(e)
}

pub async fn put_record(
    client: &Client,
    target: Option<&str>,
    rendered: &str,
) -> Result<Json, IntegrationError> {
    let action = Action::KinesisPutRecord;
    let m = json_object(action, rendered)?;
    let (name, arn) = stream(action, &m, target)?;
    let e = entry(action, &m, 0)?;
    let out = client
        .put_record()
        .set_stream_name(name.map(str::to_string))
        .set_stream_arn(arn.map(str::to_string))
        .data(Blob::new(Vec::from(e.data)))
        .partition_key(e.partition_key)
        .set_explicit_hash_key(e.explicit_hash_key)
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
    /// The record's bytes: a slice of a buffer the request's records share, so a request's
    /// records cost one allocation, and a copy for a retry costs none.
    pub data: bytes::Bytes,
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

impl StreamRef {
    /// A route's target: a stream name or ARN.
    pub fn from_target(target: &str) -> StreamRef {
        if target.starts_with("arn:") {
            StreamRef {
                name: None,
                arn: Some(target.to_string()),
            }
        } else {
            StreamRef {
                name: Some(target.to_string()),
                arn: None,
            }
        }
    }
}

/// Reads a rendered PutRecords request: its stream (checked against the target) and records.
pub fn parse_put_records(
    target: Option<&str>,
    rendered: &str,
) -> Result<(StreamRef, Vec<Entry>), IntegrationError> {
    // The usual shape is read with its strings borrowed from the rendered text; anything
    // else (a wrong type, a repeated field, a record the service would refuse) is read again
    // the general way, which says exactly what is wrong.
    wire::read(target, rendered).unwrap_or_else(|| read_put_records(target, rendered))
}

/// As [`parse_put_records`], the general way.
fn read_put_records(
    target: Option<&str>,
    rendered: &str,
) -> Result<(StreamRef, Vec<Entry>), IntegrationError> {
    let action = Action::KinesisPutRecords;
    let m = json_object(action, rendered)?;
    let (name, arn) = stream(action, &m, target)?;
    let records = batch_items(action, &m, "Records", MAX_RECORDS, "records")?;
    let mut entries = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        entries.push(entry(action, batch_item(action, r, "Records", i)?, i)?);
    }
    let stream = StreamRef {
        name: name.map(str::to_string),
        arn: arn.map(str::to_string),
    };
    Ok((stream, entries))
}

/// The common shape of a rendered `PutRecords` request, read without copying its strings.
mod wire {
    use std::borrow::Cow;

    use serde::Deserialize;

    use super::{Action, Entry, IntegrationError, MAX_RECORDS, StreamRef};

    #[derive(Deserialize)]
    struct PutRecords<'a> {
        #[serde(rename = "StreamName", borrow, default)]
        name: Option<Cow<'a, str>>,
        #[serde(rename = "StreamARN", borrow, default)]
        arn: Option<Cow<'a, str>>,
        #[serde(rename = "Records", borrow)]
        records: Vec<Record<'a>>,
    }

    #[derive(Deserialize)]
    struct Record<'a> {
        #[serde(rename = "Data", borrow)]
        data: Cow<'a, str>,
        #[serde(rename = "PartitionKey", borrow)]
        partition_key: Cow<'a, str>,
        #[serde(rename = "ExplicitHashKey", borrow, default)]
        explicit_hash_key: Option<Cow<'a, str>>,
    }

    /// The request's stream and records, or `None` when it is not of the common shape and
    /// must be read the general way. A result is the general way's result.
    pub(super) fn read(
        target: Option<&str>,
        rendered: &str,
    ) -> Option<Result<(StreamRef, Vec<Entry>), IntegrationError>> {
        let action = Action::KinesisPutRecords;
        let r: PutRecords<'_> = serde_json::from_str(rendered).ok()?;
        if r.records.is_empty() || r.records.len() > MAX_RECORDS {
            return None;
        }
        let (name, arn) =
            super::stream_of(action, r.name.as_deref(), r.arn.as_deref(), target).ok()?;
        // Every record's bytes, decoded one after another into one buffer.
        let mut decoded = Vec::new();
        let mut ends = Vec::with_capacity(r.records.len());
        let mut room = 0;
        for rec in &r.records {
            if rec.data.is_empty() {
                return None;
            }
            room += base64_simd::STANDARD
                .decoded_length(rec.data.trim().as_bytes())
                .ok()?;
        }
        decoded.reserve_exact(room);
        for rec in &r.records {
            base64_simd::STANDARD
                .decode_append(rec.data.trim(), &mut decoded)
                .ok()?;
            ends.push(decoded.len());
        }
        let decoded = bytes::Bytes::from(decoded);
        let mut entries = Vec::with_capacity(r.records.len());
        let mut start = 0;
        for (i, (rec, end)) in r.records.iter().zip(ends).enumerate() {
            let partition_key = super::checked_partition_key(action, &rec.partition_key, i).ok()?;
            let entry = Entry {
                data: decoded.slice(start..end),
                partition_key,
                explicit_hash_key: rec.explicit_hash_key.as_deref().map(str::to_string),
            };
            start = end;
            entries.push(super::checked_entry(action, entry, i).ok()?);
        }
        let stream = StreamRef {
            name: name.map(str::to_string),
            arn: arn.map(str::to_string),
        };
        Some(Ok((stream, entries)))
    }
}

/// Puts records with `PutRecords`, in as many calls as the service's limits need, retrying
/// only the ones that failed transiently (see `batch::retry`).
pub async fn put_entries(
    signer: &Signer,
    stream: &StreamRef,
    entries: &[Entry],
    deadline: tokio::time::Instant,
) -> Result<Vec<EntryResult>, IntegrationError> {
    let mut results = Vec::with_capacity(entries.len());
    for call in calls(entries, MAX_RECORDS, MAX_BATCH_BYTES, Entry::size) {
        results.extend(put_call(signer, stream, call, deadline).await?);
    }
    Ok(results)
}

/// One `PutRecords` call's records, with retries.
async fn put_call(
    signer: &Signer,
    stream: &StreamRef,
    entries: &[Entry],
    deadline: tokio::time::Instant,
) -> Result<Vec<EntryResult>, IntegrationError> {
    let action = Action::KinesisPutRecords;
    let outcomes = retry::with_retries(action, entries, deadline, |batch: Vec<Entry>| async move {
        put::call(signer, stream, &batch, deadline).await
    })
    .await?;
    Ok(outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Ok((sequence_number, shard_id)) => EntryResult::Ok {
                sequence_number,
                shard_id,
            },
            Outcome::Failed { code, message, .. } => EntryResult::Failed { code, message },
        })
        .collect())
}

/// The stream's open shards' hash key ranges (for KPL aggregation), with `ListShards`.
pub async fn open_shards(
    client: &Client,
    stream: &StreamRef,
) -> Result<Vec<kpl::ShardRange>, IntegrationError> {
    let action = Action::KinesisPutRecords;
    let mut ranges = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut call = client.list_shards();
        call = match &token {
            // With a token, the stream must not be named again.
            Some(t) => call.next_token(t),
            None => call
                .set_stream_name(stream.name.clone())
                .set_stream_arn(stream.arn.clone()),
        };
        let out = call.send().await.map_err(|e| classify(action, e))?;
        for shard in out.shards() {
            let closed = shard
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some();
            let range = shard.hash_key_range();
            let (Some(start), Some(end)) = (
                range.and_then(|r| r.starting_hash_key().parse::<u128>().ok()),
                range.and_then(|r| r.ending_hash_key().parse::<u128>().ok()),
            ) else {
                continue;
            };
            if !closed {
                ranges.push(kpl::ShardRange { start, end });
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    ranges.sort_by_key(|r| r.start);
    Ok(ranges)
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
                retryable_record_error(code) || code == "ServiceUnavailable"
            }
            EntryResult::Ok { .. } => true,
        }),
        code,
        response: Box::new(body),
    })
}

pub async fn put_records(
    signer: &Signer,
    target: Option<&str>,
    rendered: &str,
    deadline: tokio::time::Instant,
) -> Result<Json, IntegrationError> {
    let (stream, entries) = parse_put_records(target, rendered)?;
    let results = put_entries(signer, &stream, &entries, deadline).await?;
    records_response(&results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The borrowed reading of the common shape answers exactly as the general reading, or
    /// leaves the request to it.
    #[test]
    fn the_common_shape_reads_as_the_general_way_does() {
        let cases = [
            r#"{"Records": [{"Data": "eyJhIjoxfQ==", "PartitionKey": "u1"}]}"#,
            r#"{"StreamName": "s", "Records": [{"Data": " eA== ", "PartitionKey": "k", "ExplicitHashKey": "7"}]}"#,
            r#"{"StreamName": "other", "Records": [{"Data": "eA==", "PartitionKey": "k"}]}"#,
            r#"{"Records": [{"Data": "eA==", "PartitionKey": "k\u00e9\n"}], "Extra": [1, {}]}"#,
            r#"{"Records": [{"Data": "eA==", "PartitionKey": "k", "ExplicitHashKey": null}]}"#,
            r#"{"Records": [{"Data": "", "PartitionKey": "k"}]}"#,
            r#"{"Records": [{"Data": "eA==", "PartitionKey": ""}]}"#,
            r#"{"Records": [{"Data": "eA==", "PartitionKey": 7}]}"#,
            r#"{"Records": [{"Data": "eA==", "PartitionKey": "a", "PartitionKey": "b"}]}"#,
            r#"{"Records": []}"#,
            r#"{"Records": {}}"#,
            r#"{"Records": [{"Data": "eA", "PartitionKey": "k"}]}"#,
            r#"{"Records": [{"Data": "eB==", "PartitionKey": "k"}]}"#,
            r#"{"Records": [{"Data": "eA==eA==", "PartitionKey": "k"}]}"#,
            r#"{"Records": [{"Data": "e A==", "PartitionKey": "k"}]}"#,
            r#"{"Records": [{"Data": "eA=", "PartitionKey": "k"}]}"#,
            r#"{"Records": [{"Data": "eA-_", "PartitionKey": "k"}]}"#,
            r#"{"Records": [{"Data": "eA==", "PartitionKey": "k"}, 3]}"#,
            r#"[1]"#,
            r#"{"Records": [{"Data": "eA==", "PartitionKey": "k"}]"#,
        ];
        let long_key = format!(
            r#"{{"Records": [{{"Data": "eA==", "PartitionKey": "{}"}}]}}"#,
            "k".repeat(MAX_PARTITION_KEY_CHARS + 1)
        );
        let many = format!(
            r#"{{"Records": [{}]}}"#,
            vec![r#"{"Data": "eA==", "PartitionKey": "k"}"#; MAX_RECORDS + 1].join(",")
        );
        for case in cases
            .iter()
            .copied()
            .chain([long_key.as_str(), many.as_str()])
        {
            let general = read_put_records(Some("s"), case).map_err(|e| e.to_string());
            let read = parse_put_records(Some("s"), case).map_err(|e| e.to_string());
            assert_eq!(read, general, "{case}");
            if let Some(fast) = wire::read(Some("s"), case) {
                assert_eq!(fast.map_err(|e| e.to_string()), general, "{case}");
            }
        }
        // The common shape is read the borrowed way.
        assert!(wire::read(Some("s"), cases[0]).is_some());
        assert!(wire::read(Some("s"), cases[1]).is_some());
    }

    fn entry(bytes: usize) -> Entry {
        Entry {
            data: vec![b'x'; bytes].into(),
            partition_key: "k".into(),
            explicit_hash_key: None,
        }
    }

    #[test]
    fn records_are_split_into_calls_within_the_service_limits() {
        assert!(calls(&[] as &[Entry], MAX_RECORDS, MAX_BATCH_BYTES, Entry::size).is_empty());
        let many: Vec<Entry> = (0..1_234).map(|_| entry(10)).collect();
        let sizes: Vec<usize> = calls(&many, MAX_RECORDS, MAX_BATCH_BYTES, Entry::size)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, vec![500, 500, 234]);
        let big: Vec<Entry> = (0..5).map(|_| entry(2_000_000)).collect();
        let sizes: Vec<usize> = calls(&big, MAX_RECORDS, MAX_BATCH_BYTES, Entry::size)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn records_over_the_service_limits_are_the_clients_to_fix() {
        let data = "x".repeat(MAX_RECORD_BYTES);
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data);
        let body = format!(
            r#"{{"Records": [{{"Data": "eA==", "PartitionKey": "ok"}}, {{"Data": "{b64}", "PartitionKey": "k"}}]}}"#
        );
        match parse_put_records(Some("s"), &body).unwrap_err() {
            IntegrationError::RecordRefused {
                index,
                too_large,
                reason,
                ..
            } => {
                assert_eq!((index, too_large), (1, true));
                assert!(
                    reason.contains("1048577 bytes") && reason.contains("1048576"),
                    "{reason}"
                );
            }
            e => panic!("{e:?}"),
        }
        let long_key = "k".repeat(MAX_PARTITION_KEY_CHARS + 1);
        let body = format!(r#"{{"Records": [{{"Data": "eA==", "PartitionKey": "{long_key}"}}]}}"#);
        assert!(matches!(
            parse_put_records(Some("s"), &body),
            Err(IntegrationError::RecordRefused {
                index: 0,
                too_large: false,
                ..
            })
        ));
        // Exactly at the limits is fine.
        let data = "x".repeat(MAX_RECORD_BYTES - 1);
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data);
        let body = format!(r#"{{"Records": [{{"Data": "{b64}", "PartitionKey": "k"}}]}}"#);
        assert!(parse_put_records(Some("s"), &body).is_ok());
    }

    #[test]
    fn a_rendered_stream_name_or_arn_cannot_leave_the_target() {
        let records = r#""Records": [{"Data": "eA==", "PartitionKey": "k"}]"#;
        let ok = format!(r#"{{"StreamName": "s", {records}}}"#);
        assert!(parse_put_records(Some("s"), &ok).is_ok());
        for other in [
            format!(r#"{{"StreamName": "other", {records}}}"#),
            format!(r#"{{"StreamARN": "arn:aws:kinesis:us-east-1:1:stream/other", {records}}}"#),
            format!(
                r#"{{"StreamName": "s", "StreamARN": "arn:aws:kinesis:us-east-1:1:stream/other", {records}}}"#
            ),
            format!(r#"{{"StreamName": "s", {records}, "StreamName": "other"}}"#),
        ] {
            let e = parse_put_records(Some("s"), &other).unwrap_err();
            assert!(
                matches!(e, IntegrationError::InvalidRequest { .. }),
                "{other}"
            );
        }
    }
}
