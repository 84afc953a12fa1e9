//! EventBridge `PutEvents` routes (`aws:events:PutEvents`) batched across requests: each
//! request's entries join other requests' in calls of at most 10 entries and 256 KiB, the
//! service's per-entry results come back to the request they belong to, and entries that
//! failed for a transient reason (`ThrottlingException`, `InternalFailure`) are sent again
//! until the route's deadline, as Kinesis records are.

use serde_json::{Value as Json, json};
use tokio::time::Instant;

use super::aws::{self, Signer};
use super::batched::BatchSink;
use super::request::in_calls;
use crate::batch::Sink;
use crate::batch::retry::{self, Outcome};
use crate::upstream::{Action, AwsAction, IntegrationError};

/// Entries per `PutEvents` call, and bytes (service limits).
pub const MAX_ENTRIES: usize = 10;
pub const MAX_BYTES: usize = 256 * 1024;

/// Whether an action batches through this sink.
pub fn batches(action: AwsAction) -> bool {
    action.name() == "aws:events:PutEvents"
}

/// `PutEvents` to one event bus.
pub struct EventsSink {
    pub signer: Signer,
    pub action: AwsAction,
    pub bus: String,
}

/// An entry's size as EventBridge counts it: its `Time`, `Source`, `DetailType`, `Detail`
/// and `Resources` (this counts the whole entry, a little more).
fn entry_size(entry: &Json) -> usize {
    entry.to_string().len()
}

impl Sink for EventsSink {
    type Item = Json;
    type Output = Outcome<Json>;

    fn size(item: &Json) -> usize {
        entry_size(item)
    }

    async fn put(
        &self,
        items: Vec<Json>,
        deadline: Instant,
    ) -> Result<Vec<Outcome<Json>>, IntegrationError> {
        in_calls(&items, MAX_ENTRIES, MAX_BYTES, entry_size, |call| {
            self.put_call(call, deadline)
        })
        .await
    }
}

impl EventsSink {
    async fn put_call(
        &self,
        entries: &[Json],
        deadline: Instant,
    ) -> Result<Vec<Outcome<Json>>, IntegrationError> {
        let action = Action::Aws(self.action);
        retry::with_retries(action, entries, deadline, |batch: Vec<Json>| async move {
            let body = json!({ "Entries": batch }).to_string();
            let answer = self
                .signer
                .call(self.action, Some(&self.bus), &body, deadline)
                .await?;
            let results = answer["Entries"].as_array().cloned().unwrap_or_default();
            if results.len() != batch.len() {
                return Err(IntegrationError::Service {
                    action,
                    status: 502,
                    code: "MalformedResponse".into(),
                    message: format!("{} entries sent, {} results", batch.len(), results.len()),
                });
            }
            Ok(results.into_iter().map(outcome).collect())
        })
        .await
    }
}

/// One entry's result.
fn outcome(result: Json) -> Outcome<Json> {
    match result["ErrorCode"].as_str() {
        None => Outcome::Ok(result),
        Some(code) => Outcome::Failed {
            code: code.to_string(),
            message: result["ErrorMessage"].as_str().unwrap_or("").to_string(),
            retryable: matches!(
                code,
                "ThrottlingException" | "InternalFailure" | "InternalException"
            ),
        },
    }
}

impl BatchSink for EventsSink {
    /// Nothing beyond the entries' results.
    type Request = ();

    fn parse(target: Option<&str>, rendered: &str) -> Result<((), Vec<Json>), IntegrationError> {
        let a = aws::action("aws:events:PutEvents");
        let action = Action::Aws(a);
        let service = aws::service(a).ok_or_else(|| IntegrationError::InvalidRequest {
            action,
            detail: "no EventBridge protocol".into(),
        })?;
        // The same checks as a direct call: JSON, the bus pinned on every entry.
        let (_, body) = aws::prepare(a, service, target, rendered)?;
        let body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
        let entries = match &body["Entries"] {
            Json::Array(list) if !list.is_empty() => list.clone(),
            Json::Array(_) => {
                return Err(IntegrationError::Unmappable {
                    action,
                    detail: "Entries is empty".into(),
                });
            }
            _ => {
                return Err(IntegrationError::InvalidRequest {
                    action,
                    detail: "the rendered request has no Entries list".into(),
                });
            }
        };
        if let Some(i) = entries.iter().position(|e| entry_size(e) > MAX_BYTES) {
            return Err(IntegrationError::RecordRefused {
                action,
                index: i,
                reason: format!("is larger than EventBridge's {MAX_BYTES} bytes per call"),
                too_large: true,
            });
        }
        Ok(((), entries))
    }

    fn answer((): (), results: &[Outcome<Json>]) -> Result<Json, IntegrationError> {
        let failed = results
            .iter()
            .filter(|o| !matches!(o, Outcome::Ok(_)))
            .count();
        let entries: Vec<Json> = results
            .iter()
            .map(|o| match o {
                Outcome::Ok(v) => v.clone(),
                Outcome::Failed { code, message, .. } => {
                    json!({"ErrorCode": code, "ErrorMessage": message})
                }
            })
            .collect();
        retry::accepted_or_rejected(
            Action::Aws(aws::action("aws:events:PutEvents")),
            results,
            json!({"FailedEntryCount": failed, "Entries": entries}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_entries_on_the_routes_bus() {
        let ((), entries) = EventsSink::parse(
            Some("clicks"),
            r#"{"Entries": [{"Source": "a", "DetailType": "t", "Detail": "{}"}, {"Source": "b", "DetailType": "t", "Detail": "{}"}]}"#,
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e["EventBusName"] == "clicks"));
        assert!(EventsSink::parse(Some("clicks"), r#"{"Entries": []}"#).is_err());
        assert!(
            EventsSink::parse(
                Some("clicks"),
                r#"{"Entries": [{"EventBusName": "other"}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn partial_failures_name_the_failed_entries() {
        let results = vec![
            Outcome::Ok(json!({"EventId": "1"})),
            Outcome::Failed {
                code: "MalformedDetail".into(),
                message: "Detail is malformed.".into(),
                retryable: false,
            },
        ];
        let Err(IntegrationError::RecordsRejected {
            failed, response, ..
        }) = EventsSink::answer((), &results)
        else {
            panic!("a partial failure")
        };
        assert_eq!(failed, 1);
        assert_eq!(response["FailedEntryCount"], 1);
        assert_eq!(response["Entries"][1]["ErrorCode"], "MalformedDetail");
        assert!(matches!(
            outcome(json!({"ErrorCode": "ThrottlingException"})),
            Outcome::Failed {
                retryable: true,
                ..
            }
        ));
    }
}
