//! `PutRecords` on the wire: the request body is written straight from the records (their
//! bytes base64-encoded into it, nothing else copied), signed with SigV4 and sent with the
//! gateway's own client ([`Signer`]); the answer is read with its strings borrowed. The SDK
//! built the same request through a model of every record and hashed and parsed it the same
//! way, at about a quarter of a batched request's CPU.

use std::borrow::Cow;

use serde::Deserialize;

use super::{Entry, StreamRef};
use crate::batch::retry::Outcome;
use crate::integrations::aws::{self, Signer};
use crate::upstream::{Action, IntegrationError, retryable_record_error};

/// A record's result as the service gives it: its sequence number and shard.
pub type Placed = (String, String);

/// The JSON body of a `PutRecords` call of `entries` to `stream`.
pub fn body(stream: &StreamRef, entries: &[Entry]) -> Vec<u8> {
    let data: usize = entries
        .iter()
        .map(|e| base64_simd::STANDARD.encoded_length(e.data.len()))
        .sum();
    let keys: usize = entries
        .iter()
        .map(|e| e.partition_key.len() + e.explicit_hash_key.as_ref().map_or(0, String::len))
        .sum();
    let mut out = Vec::with_capacity(data + keys + entries.len() * 64 + 128);
    out.extend_from_slice(b"{");
    if let Some(name) = &stream.name {
        out.extend_from_slice(b"\"StreamName\":");
        string(name, &mut out);
        out.push(b',');
    }
    if let Some(arn) = &stream.arn {
        out.extend_from_slice(b"\"StreamARN\":");
        string(arn, &mut out);
        out.push(b',');
    }
    out.extend_from_slice(b"\"Records\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Data\":\"");
        base64_simd::STANDARD.encode_append(&e.data, &mut out);
        out.extend_from_slice(b"\",\"PartitionKey\":");
        string(&e.partition_key, &mut out);
        if let Some(h) = &e.explicit_hash_key {
            out.extend_from_slice(b",\"ExplicitHashKey\":");
            string(h, &mut out);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

/// `s` as a JSON string.
fn string(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<Result<'a>>,
}

#[derive(Deserialize)]
struct Result<'a> {
    #[serde(rename = "SequenceNumber", borrow, default)]
    sequence_number: Option<Cow<'a, str>>,
    #[serde(rename = "ShardId", borrow, default)]
    shard_id: Option<Cow<'a, str>>,
    #[serde(rename = "ErrorCode", borrow, default)]
    error_code: Option<Cow<'a, str>>,
    #[serde(rename = "ErrorMessage", borrow, default)]
    error_message: Option<Cow<'a, str>>,
}

/// What a `PutRecords` answer says of each of the `sent` records, in order; an error status
/// is the service's error, and an answer that does not account for every record is one too.
pub fn answer(
    status: u16,
    body: &[u8],
    sent: usize,
) -> std::result::Result<Vec<Outcome<Placed>>, IntegrationError> {
    let action = Action::KinesisPutRecords;
    let kinesis = aws::known("kinesis");
    if !(200..300).contains(&status) {
        return Err(match aws::answer(action, kinesis, status, body) {
            Err(e) => e,
            Ok(_) => unreachable!("an error status is an error"),
        });
    }
    let malformed = |message: String| IntegrationError::Service {
        action,
        status: 502,
        code: "MalformedResponse".into(),
        message,
    };
    let read: Answer<'_> = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("the answer is not a PutRecords result: {e}")))?;
    if read.records.len() != sent {
        return Err(malformed(format!(
            "{sent} records sent, {} results",
            read.records.len()
        )));
    }
    Ok(read
        .records
        .into_iter()
        .map(|r| match r.error_code {
            None => Outcome::Ok((
                r.sequence_number.unwrap_or_default().into_owned(),
                r.shard_id.unwrap_or_default().into_owned(),
            )),
            Some(code) => Outcome::Failed {
                retryable: retryable_record_error(&code),
                message: r.error_message.unwrap_or_default().into_owned(),
                code: code.into_owned(),
            },
        })
        .collect())
}

/// One `PutRecords` call, once: the records' outcomes.
pub async fn call(
    signer: &Signer,
    stream: &StreamRef,
    entries: &[Entry],
    deadline: tokio::time::Instant,
) -> std::result::Result<Vec<Outcome<Placed>>, IntegrationError> {
    let action = Action::KinesisPutRecords;
    let kinesis = aws::known("kinesis");
    let aws::Protocol::Json {
        version,
        target_prefix,
    } = kinesis.protocol
    else {
        unreachable!("Kinesis speaks JSON");
    };
    let headers = aws::json_headers(version, target_prefix, "PutRecords");
    let timeout = signer.attempt_timeout(deadline);
    let answered = signer
        .send(action, kinesis, headers, body(stream, entries), timeout)
        .await?;
    answer(answered.status.as_u16(), &answered.body, entries.len())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use super::*;

    fn entry(data: &[u8], key: &str, hash: Option<&str>) -> Entry {
        Entry {
            data: bytes::Bytes::copy_from_slice(data),
            partition_key: key.into(),
            explicit_hash_key: hash.map(str::to_string),
        }
    }

    #[test]
    fn the_body_is_the_services_request() {
        let stream = StreamRef::from_target("clicks");
        let entries = [
            entry(b"{\"a\":1}\n", "user-\"1\"\u{e9}", None),
            entry(
                &[0, 255, 10],
                "k",
                Some("170141183460469231731687303715884105728"),
            ),
            entry(b"", "empty", None),
        ];
        let written: Json = serde_json::from_slice(&body(&stream, &entries)).unwrap();
        assert_eq!(
            written,
            json!({
                "StreamName": "clicks",
                "Records": [
                    {"Data": "eyJhIjoxfQo=", "PartitionKey": "user-\"1\"\u{e9}"},
                    {"Data": "AP8K", "PartitionKey": "k", "ExplicitHashKey": "170141183460469231731687303715884105728"},
                    {"Data": "", "PartitionKey": "empty"},
                ]
            })
        );
        let by_arn = StreamRef::from_target("arn:aws:kinesis:us-east-1:1:stream/s");
        let written: Json = serde_json::from_slice(&body(&by_arn, &entries[..1])).unwrap();
        assert_eq!(written["StreamARN"], "arn:aws:kinesis:us-east-1:1:stream/s");
        assert!(written.get("StreamName").is_none());
    }

    #[test]
    fn answers_say_what_became_of_each_record() {
        let ok = br#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"495","ShardId":"shardId-000000000000"},{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard"},{"ErrorCode":"InvalidArgumentException","ErrorMessage":"bad"}],"EncryptionType":"NONE"}"#;
        let outcomes = answer(200, ok, 3).unwrap();
        assert_eq!(
            outcomes[0],
            Outcome::Ok(("495".into(), "shardId-000000000000".into()))
        );
        assert!(
            matches!(&outcomes[1], Outcome::Failed { code, retryable: true, .. } if code == "ProvisionedThroughputExceededException")
        );
        assert!(
            matches!(&outcomes[2], Outcome::Failed { retryable: false, message, .. } if message == "bad")
        );

        // An answer that leaves records out, or is not one, is the service's fault.
        for (body, sent) in [(&ok[..], 2), (b"{}", 1), (b"<html>", 1), (b"", 1)] {
            let e = answer(200, body, sent).unwrap_err();
            assert!(
                matches!(&e, IntegrationError::Service { status: 502, code, .. } if code == "MalformedResponse"),
                "{e:?}"
            );
            assert!(e.retryable());
        }
        // An error status is the service's error, classified as the SDK's was.
        let e = answer(
            400,
            br#"{"__type":"ResourceNotFoundException","message":"Stream x not found"}"#,
            1,
        )
        .unwrap_err();
        assert!(
            matches!(&e, IntegrationError::Service { status: 400, code, message, .. } if code == "ResourceNotFoundException" && message == "Stream x not found"),
            "{e:?}"
        );
        assert!(!e.retryable());
        let e = answer(
            400,
            br#"{"__type":"com.amazon.coral.service#ProvisionedThroughputExceededException","message":"slow down"}"#,
            1,
        )
        .unwrap_err();
        assert!(e.throttled() && e.retryable(), "{e:?}");
        assert!(answer(503, b"", 1).unwrap_err().retryable());
    }
}
