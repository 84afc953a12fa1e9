//! Firehose: `PutRecord` and `PutRecordBatch`. `PutRecordBatch` routes batch across
//! requests ([`FirehoseSink`]) and can spool.

use aws_sdk_firehose::Client;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;
use serde_json::{Value as Json, json};
use tokio::time::Instant;

use super::batched::{self, BatchSink, Batched};
use super::request::{
    batch_item, batch_items, calls, data, invalid, json_object, opt_string, resolve_target,
    too_large,
};
use super::{
    Action, BatchCaps, BatchRoute, Call, CallFuture, CheckFuture, Clients, Integration,
    IntegrationError, ReplayFuture, classify,
};
use crate::batch::Sink;
use crate::batch::retry::{self, Outcome};
use crate::spool::{Replay, Spool};
use crate::upstream::retryable_record_error;

/// The Firehose integration.
pub struct Firehose;

impl Integration for Firehose {
    fn actions(&self) -> &'static [Action] {
        &[Action::FirehosePutRecord, Action::FirehosePutRecordBatch]
    }

    fn check<'a>(
        &'a self,
        clients: &'a Clients,
        action: Action,
        target: &'a str,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            let name = target.rsplit('/').next().unwrap_or(target);
            clients
                .firehose
                .describe_delivery_stream()
                .delivery_stream_name(name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e))
        })
    }

    fn batch_caps(&self, action: Action, _aggregate: bool) -> Option<BatchCaps> {
        (action == Action::FirehosePutRecordBatch).then_some(BatchCaps {
            max_records: MAX_RECORDS,
            max_bytes: MAX_BATCH_BYTES,
        })
    }

    fn spools(&self, action: Action) -> bool {
        action == Action::FirehosePutRecordBatch
    }

    fn target_arn(&self, target: &str, region: &str, account: &str) -> String {
        format!("arn:aws:firehose:{region}:{account}:deliverystream/{target}")
    }

    fn request_format(&self, _action: Action) -> super::RequestFormat {
        super::RequestFormat::JsonWithData
    }

    fn target_in_template(&self) -> &'static str {
        r#""DeliveryStreamName"\s*:\s*"([^"$]+)""#
    }

    fn call<'a>(&'a self, clients: &'a Clients, call: Call<'a>) -> CallFuture<'a> {
        let client = &clients.firehose;
        match call.action {
            Action::FirehosePutRecordBatch => Box::pin(put_record_batch(
                client,
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
        if route.action != Action::FirehosePutRecordBatch {
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

/// A batched route's sink: its delivery stream.
fn sink(clients: &Clients, route: BatchRoute<'_>) -> FirehoseSink {
    FirehoseSink {
        client: clients.firehose.clone(),
        delivery_stream: route.target.to_string(),
    }
}

/// Firehose `PutRecordBatch` to one delivery stream.
pub struct FirehoseSink {
    pub client: Client,
    pub delivery_stream: String,
}

impl Sink for FirehoseSink {
    type Item = Vec<u8>;
    type Output = Outcome<String>;

    fn size(item: &Vec<u8>) -> usize {
        item.len()
    }

    async fn put(
        &self,
        items: Vec<Vec<u8>>,
        deadline: Instant,
    ) -> Result<Vec<Outcome<String>>, IntegrationError> {
        put_entries(&self.client, &self.delivery_stream, &items, deadline).await
    }
}

impl BatchSink for FirehoseSink {
    type Request = ();

    fn parse(target: Option<&str>, rendered: &str) -> Result<((), Vec<Vec<u8>>), IntegrationError> {
        let (_, records) = parse_put_record_batch(target, rendered)?;
        Ok(((), records))
    }

    fn answer((): (), results: &[Outcome<String>]) -> Result<Json, IntegrationError> {
        batch_response(results)
    }
}

/// Records per `PutRecordBatch` call (service limit).
pub const MAX_RECORDS: usize = 500;
/// Bytes of data per record (service limit: 1,000 KiB).
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;

/// A record's data, within the service's per-record limit.
fn checked(action: Action, data: Vec<u8>, index: usize) -> Result<Vec<u8>, IntegrationError> {
    if data.len() > MAX_RECORD_BYTES {
        return Err(too_large(
            action,
            index,
            data.len(),
            MAX_RECORD_BYTES,
            " of data",
        ));
    }
    Ok(data)
}

fn record(action: Action, v: &Json, at: &str) -> Result<Record, IntegrationError> {
    let Json::Object(r) = v else {
        return Err(invalid(action, format!("{at} must be an object")));
    };
    Record::builder()
        .data(Blob::new(checked(action, data(action, r, "Data")?, 0)?))
        .build()
        .map_err(|e| invalid(action, format!("{at}: {e}")))
}

/// The delivery stream: the template's `DeliveryStreamName`, checked against the target.
fn delivery_stream<'a>(
    action: Action,
    m: &'a serde_json::Map<String, Json>,
    target: Option<&'a str>,
) -> Result<&'a str, IntegrationError> {
    let named = opt_string(action, m, "DeliveryStreamName")?;
    resolve_target(action, target, named, "DeliveryStreamName")
}

pub async fn put_record(
    client: &Client,
    target: Option<&str>,
    rendered: &str,
) -> Result<Json, IntegrationError> {
    let action = Action::FirehosePutRecord;
    let m = json_object(action, rendered)?;
    let name = delivery_stream(action, &m, target)?;
    let rec = record(action, m.get("Record").unwrap_or(&Json::Null), "Record")?;
    let out = client
        .put_record()
        .delivery_stream_name(name)
        .record(rec)
        .send()
        .await
        .map_err(|e| classify(action, e))?;
    Ok(json!({"RecordId": out.record_id(), "Encrypted": out.encrypted().unwrap_or(false)}))
}

/// Bytes of record data per `PutRecordBatch` call (service limit).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The delivery stream and record data of a rendered `PutRecordBatch` request.
pub fn parse_put_record_batch(
    target: Option<&str>,
    rendered: &str,
) -> Result<(String, Vec<Vec<u8>>), IntegrationError> {
    let action = Action::FirehosePutRecordBatch;
    let m = json_object(action, rendered)?;
    let name = delivery_stream(action, &m, target)?.to_string();
    let records = batch_items(action, &m, "Records", MAX_RECORDS, "records")?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            checked(
                action,
                data(action, batch_item(action, r, "Records", i)?, "Data")?,
                i,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name, records))
}

/// Puts records with `PutRecordBatch`, in as many calls as the service's limits need,
/// retrying only the ones that failed transiently; one outcome (a record id, or the
/// failure) per record.
pub async fn put_entries(
    client: &Client,
    name: &str,
    records: &[Vec<u8>],
    deadline: Instant,
) -> Result<Vec<Outcome<String>>, IntegrationError> {
    let mut outcomes = Vec::with_capacity(records.len());
    for call in calls(records, MAX_RECORDS, MAX_BATCH_BYTES, Vec::len) {
        outcomes.extend(put_call(client, name, call, deadline).await?);
    }
    Ok(outcomes)
}

/// One `PutRecordBatch` call's records, with retries.
async fn put_call(
    client: &Client,
    name: &str,
    records: &[Vec<u8>],
    deadline: Instant,
) -> Result<Vec<Outcome<String>>, IntegrationError> {
    let action = Action::FirehosePutRecordBatch;
    retry::with_retries(
        action,
        records,
        deadline,
        |batch: Vec<Vec<u8>>| async move {
            let mut records = Vec::with_capacity(batch.len());
            for d in batch {
                records.push(
                    Record::builder()
                        .data(Blob::new(d))
                        .build()
                        .map_err(|e| invalid(action, e.to_string()))?,
                );
            }
            let out = client
                .put_record_batch()
                .delivery_stream_name(name)
                .set_records(Some(records))
                .send()
                .await
                .map_err(|e| classify(action, e))?;
            Ok(out
                .request_responses()
                .iter()
                .map(|r| match r.error_code() {
                    None => Outcome::Ok(r.record_id().unwrap_or_default().to_string()),
                    Some(code) => Outcome::Failed {
                        code: code.to_string(),
                        message: r.error_message().unwrap_or_default().to_string(),
                        retryable: retryable_record_error(code),
                    },
                })
                .collect())
        },
    )
    .await
}

/// The `PutRecordBatch` response for a client's records; a 5xx-worthy error when any was
/// not accepted.
pub fn batch_response(outcomes: &[Outcome<String>]) -> Result<Json, IntegrationError> {
    let responses: Vec<Json> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Ok(id) => json!({"RecordId": id}),
            Outcome::Failed { code, message, .. } => {
                json!({"ErrorCode": code, "ErrorMessage": message})
            }
        })
        .collect();
    let (failed, _, _) = retry::summary(outcomes);
    let body = json!({"FailedPutCount": failed, "Encrypted": false, "RequestResponses": responses});
    retry::accepted_or_rejected(Action::FirehosePutRecordBatch, outcomes, body)
}

pub async fn put_record_batch(
    client: &Client,
    target: Option<&str>,
    rendered: &str,
    deadline: Instant,
) -> Result<Json, IntegrationError> {
    let (name, records) = parse_put_record_batch(target, rendered)?;
    let outcomes = put_entries(client, &name, &records, deadline).await?;
    batch_response(&outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: usize) -> String {
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "x".repeat(bytes),
        )
    }

    #[test]
    fn records_over_the_service_limit_are_the_clients_to_fix() {
        let at_limit = format!(
            r#"{{"Records": [{{"Data": "{}"}}]}}"#,
            b64(MAX_RECORD_BYTES)
        );
        assert!(parse_put_record_batch(Some("d"), &at_limit).is_ok());
        let over = format!(
            r#"{{"Records": [{{"Data": "eA=="}}, {{"Data": "{}"}}]}}"#,
            b64(MAX_RECORD_BYTES + 1)
        );
        match parse_put_record_batch(Some("d"), &over).unwrap_err() {
            IntegrationError::RecordRefused {
                index,
                too_large,
                reason,
                ..
            } => {
                assert_eq!((index, too_large), (1, true));
                assert!(
                    reason.contains("1024001 bytes") && reason.contains("1024000"),
                    "{reason}"
                );
            }
            e => panic!("{e:?}"),
        }
    }
}
