//! SNS `Publish` routes (`aws:sns:Publish`) batched across requests: each request's message
//! joins other requests' in `PublishBatch` calls of at most 10 messages and 256 KiB, the
//! per-message results come back to their requests, and messages that failed on the
//! service's side (not the sender's) are sent again until the route's deadline. A request
//! is answered as a `Publish` would be (the same XML, its own `MessageId`), so batching does
//! not change what clients see.

use serde_json::{Map, Value as Json, json};
use tokio::time::Instant;

use super::aws::{self, Signer};
use super::batched::BatchSink;
use super::request::in_calls;
use crate::batch::Sink;
use crate::batch::retry::{self, Outcome};
use crate::upstream::{Action, AwsAction, IntegrationError};

/// Messages per `PublishBatch` call, and bytes (service limits).
pub const MAX_ENTRIES: usize = 10;
pub const MAX_BYTES: usize = 256 * 1024;

/// Whether an action batches through this sink.
pub fn batches(action: AwsAction) -> bool {
    action.name() == "aws:sns:Publish"
}

/// One message: its `Publish` parameters (`Message`, `Subject`, `MessageAttributes.*`,
/// `MessageGroupId`, ...), as the rendered request gave them.
pub type Message = Vec<(String, String)>;

fn size(m: &Message) -> usize {
    m.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// `PublishBatch` to one topic.
pub struct SnsSink {
    pub signer: Signer,
    pub topic: String,
}

impl Sink for SnsSink {
    type Item = Message;
    type Output = Outcome<Json>;

    fn size(item: &Message) -> usize {
        size(item)
    }

    async fn put(
        &self,
        items: Vec<Message>,
        deadline: Instant,
    ) -> Result<Vec<Outcome<Json>>, IntegrationError> {
        in_calls(&items, MAX_ENTRIES, MAX_BYTES, size, |call| {
            self.put_call(call, deadline)
        })
        .await
    }
}

impl SnsSink {
    async fn put_call(
        &self,
        messages: &[Message],
        deadline: Instant,
    ) -> Result<Vec<Outcome<Json>>, IntegrationError> {
        let batch_action = aws::action("aws:sns:PublishBatch");
        retry::with_retries(
            Action::Aws(batch_action),
            messages,
            deadline,
            |batch: Vec<Message>| async move {
                let mut params = Map::new();
                for (i, message) in batch.iter().enumerate() {
                    let member = format!("PublishBatchRequestEntries.member.{}", i + 1);
                    params.insert(format!("{member}.Id"), json!(format!("e{i}")));
                    for (k, v) in message {
                        params.insert(format!("{member}.{k}"), json!(v));
                    }
                }
                let body = Json::Object(params).to_string();
                let answer = self
                    .signer
                    .call(batch_action, Some(&self.topic), &body, deadline)
                    .await?;
                let xml = answer.as_str().unwrap_or_default();
                Ok((0..batch.len())
                    .map(|i| outcome(xml, &format!("e{i}")))
                    .collect())
            },
        )
        .await
    }
}

/// The `<member>` blocks of a section (`Successful`, `Failed`) of a `PublishBatch` answer.
fn members<'a>(xml: &'a str, section: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{section}>"), format!("</{section}>"));
    let Some(start) = xml.find(&open) else {
        return Vec::new();
    };
    let rest = &xml[start + open.len()..];
    let body = &rest[..rest.find(&close).unwrap_or(rest.len())];
    body.split("<member>")
        .skip(1)
        .map(|m| m.split("</member>").next().unwrap_or(m))
        .collect()
}

/// One message's result, by its id in the call.
fn outcome(xml: &str, id: &str) -> Outcome<Json> {
    let named = |m: &&str| aws::xml_text(m, "Id").as_deref() == Some(id);
    if let Some(m) = members(xml, "Successful").into_iter().find(named) {
        return Outcome::Ok(json!({ "MessageId": aws::xml_text(m, "MessageId") }));
    }
    match members(xml, "Failed").into_iter().find(named) {
        Some(m) => {
            let code = aws::xml_text(m, "Code").unwrap_or_else(|| "Failed".into());
            let sender = aws::xml_text(m, "SenderFault").is_some_and(|s| s == "true");
            Outcome::Failed {
                retryable: !sender || code.contains("Throttl"),
                message: aws::xml_text(m, "Message").unwrap_or_default(),
                code,
            }
        }
        None => Outcome::Failed {
            code: "MissingResult".into(),
            message: format!("the answer names no result for {id}"),
            retryable: true,
        },
    }
}

impl BatchSink for SnsSink {
    type Request = ();

    fn parse(target: Option<&str>, rendered: &str) -> Result<((), Vec<Message>), IntegrationError> {
        let a = aws::action("aws:sns:Publish");
        let action = Action::Aws(a);
        let service = aws::service(a).ok_or_else(|| IntegrationError::InvalidRequest {
            action,
            detail: "no SNS protocol".into(),
        })?;
        // The same reading as a direct Publish: a form or a JSON object, the topic pinned.
        let (_, body) = aws::prepare(a, service, target, rendered)?;
        let form = String::from_utf8_lossy(&body);
        let pairs = super::request::form_pairs(&form)
            .map_err(|detail| IntegrationError::InvalidRequest { action, detail })?;
        let message: Message = pairs
            .into_iter()
            .filter(|(k, _)| !["Action", "Version", "TopicArn"].contains(&k.as_str()))
            .collect();
        if !message.iter().any(|(k, _)| k == "Message") {
            return Err(IntegrationError::InvalidRequest {
                action,
                detail: "the rendered request has no Message".into(),
            });
        }
        if size(&message) > MAX_BYTES {
            return Err(IntegrationError::RecordRefused {
                action,
                index: 0,
                reason: format!("is larger than SNS's {MAX_BYTES} bytes"),
                too_large: true,
            });
        }
        Ok(((), vec![message]))
    }

    fn answer((): (), results: &[Outcome<Json>]) -> Result<Json, IntegrationError> {
        let action = Action::Aws(aws::action("aws:sns:PublishBatch"));
        match results {
            // As `Publish` answers, so batching is invisible to clients.
            [Outcome::Ok(r)] => Ok(Json::String(format!(
                "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishResult><MessageId>{}</MessageId></PublishResult></PublishResponse>",
                r["MessageId"].as_str().unwrap_or_default()
            ))),
            _ => {
                let entries: Vec<Json> = results
                    .iter()
                    .map(|o| match o {
                        Outcome::Ok(v) => v.clone(),
                        Outcome::Failed { code, message, .. } => {
                            json!({"Code": code, "Message": message})
                        }
                    })
                    .collect();
                retry::accepted_or_rejected(action, results, json!({ "Messages": entries }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_becomes_one_message_and_its_answer_a_publish_answer() {
        let t = "arn:aws:sns:us-east-1:1:alerts";
        let ((), messages) = SnsSink::parse(Some(t), "Message=hello%20there&Subject=x").unwrap();
        assert_eq!(
            messages,
            vec![vec![
                ("Message".to_string(), "hello there".to_string()),
                ("Subject".to_string(), "x".to_string())
            ]]
        );
        assert!(SnsSink::parse(Some(t), "Subject=x").is_err(), "no Message");
        assert!(
            SnsSink::parse(Some(t), "TopicArn=arn:aws:sns:us-east-1:1:other&Message=m").is_err()
        );
        let xml = SnsSink::answer((), &[Outcome::Ok(json!({"MessageId": "m-1"}))]).unwrap();
        assert!(xml.as_str().unwrap().contains("<MessageId>m-1</MessageId>"));
    }

    #[test]
    fn batch_answers_are_read_per_message() {
        let xml = "<PublishBatchResponse><PublishBatchResult><Successful><member><Id>e0</Id><MessageId>m0</MessageId></member></Successful><Failed><member><Id>e1</Id><Code>InternalError</Code><Message>try again</Message><SenderFault>false</SenderFault></member><member><Id>e2</Id><Code>InvalidParameter</Code><Message>bad</Message><SenderFault>true</SenderFault></member></Failed></PublishBatchResult></PublishBatchResponse>";
        assert_eq!(outcome(xml, "e0"), Outcome::Ok(json!({"MessageId": "m0"})));
        assert!(matches!(
            outcome(xml, "e1"),
            Outcome::Failed {
                retryable: true,
                ..
            }
        ));
        assert!(matches!(
            outcome(xml, "e2"),
            Outcome::Failed {
                retryable: false,
                ..
            }
        ));
        assert!(matches!(outcome(xml, "e3"), Outcome::Failed { .. }));
    }
}
