//! DynamoDB `PutItem` routes (`aws:dynamodb:PutItem`) batched across requests when the
//! route asks (`batch = { ... }`; off by default, since `BatchWriteItem` takes no condition
//! expressions and returns no attributes): each request's item joins other requests' in
//! `BatchWriteItem` calls of at most 25 items, and the items DynamoDB leaves in
//! `UnprocessedItems` are sent again until the route's deadline.

use serde_json::{Value as Json, json};
use tokio::time::Instant;

use super::aws::{self, Signer};
use super::batched::BatchSink;
use super::request::in_calls;
use crate::batch::Sink;
use crate::batch::retry::{self, Outcome};
use crate::upstream::{Action, AwsAction, IntegrationError};

/// Items per `BatchWriteItem` call, and bytes (service limits).
pub const MAX_ITEMS: usize = 25;
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Largest item DynamoDB stores.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Whether an action batches through this sink.
pub fn batches(action: AwsAction) -> bool {
    action.name() == "aws:dynamodb:PutItem"
}

/// `BatchWriteItem` of `PutRequest`s to one table.
pub struct DynamoSink {
    pub signer: Signer,
    pub table: String,
}

fn size(item: &Json) -> usize {
    item.to_string().len()
}

impl Sink for DynamoSink {
    type Item = Json;
    type Output = Outcome<Json>;

    fn size(item: &Json) -> usize {
        size(item)
    }

    async fn put(
        &self,
        items: Vec<Json>,
        deadline: Instant,
    ) -> Result<Vec<Outcome<Json>>, IntegrationError> {
        in_calls(&items, MAX_ITEMS, MAX_BYTES, size, |call| {
            self.put_call(call, deadline)
        })
        .await
    }
}

impl DynamoSink {
    async fn put_call(
        &self,
        items: &[Json],
        deadline: Instant,
    ) -> Result<Vec<Outcome<Json>>, IntegrationError> {
        let batch_action = aws::action("aws:dynamodb:BatchWriteItem");
        retry::with_retries(
            Action::Aws(batch_action),
            items,
            deadline,
            |batch: Vec<Json>| async move {
                let requests: Vec<Json> = batch
                    .iter()
                    .map(|item| json!({"PutRequest": {"Item": item}}))
                    .collect();
                let body = json!({ "RequestItems": { self.table.as_str(): requests } }).to_string();
                let answer = self
                    .signer
                    .call(batch_action, None, &body, deadline)
                    .await?;
                let unprocessed: Vec<&Json> = answer["UnprocessedItems"][self.table.as_str()]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| &r["PutRequest"]["Item"])
                    .collect();
                Ok(batch
                    .iter()
                    .map(|item| {
                        if unprocessed.contains(&item) {
                            Outcome::Failed {
                                code: "UnprocessedItem".into(),
                                message: "DynamoDB did not process the item (capacity)".into(),
                                retryable: true,
                            }
                        } else {
                            Outcome::Ok(json!({}))
                        }
                    })
                    .collect())
            },
        )
        .await
    }
}

impl BatchSink for DynamoSink {
    type Request = ();

    fn parse(target: Option<&str>, rendered: &str) -> Result<((), Vec<Json>), IntegrationError> {
        let a = aws::action("aws:dynamodb:PutItem");
        let action = Action::Aws(a);
        let service = aws::service(a).ok_or_else(|| IntegrationError::InvalidRequest {
            action,
            detail: "no DynamoDB protocol".into(),
        })?;
        // The same checks as a direct PutItem: JSON, the table pinned.
        let (_, body) = aws::prepare(a, service, target, rendered)?;
        let body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
        let unbatchable = [
            "ConditionExpression",
            "Expected",
            "ReturnValues",
            "ConditionalOperator",
        ];
        if let Some(field) = unbatchable.iter().find(|f| body.get(**f).is_some()) {
            return Err(IntegrationError::InvalidRequest {
                action,
                detail: format!(
                    "a batched PutItem cannot take {field} (BatchWriteItem has none): set batch = false"
                ),
            });
        }
        let item = match &body["Item"] {
            Json::Object(_) => body["Item"].clone(),
            _ => {
                return Err(IntegrationError::InvalidRequest {
                    action,
                    detail: "the rendered request has no Item".into(),
                });
            }
        };
        if size(&item) > MAX_ITEM_BYTES {
            return Err(IntegrationError::RecordRefused {
                action,
                index: 0,
                reason: format!("is larger than DynamoDB's {MAX_ITEM_BYTES} bytes per item"),
                too_large: true,
            });
        }
        Ok(((), vec![item]))
    }

    fn answer((): (), results: &[Outcome<Json>]) -> Result<Json, IntegrationError> {
        // As `PutItem` answers without ReturnValues.
        retry::accepted_or_rejected(
            Action::Aws(aws::action("aws:dynamodb:BatchWriteItem")),
            results,
            json!({}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_becomes_one_item_unless_it_needs_what_batches_lack() {
        let ((), items) =
            DynamoSink::parse(Some("orders"), r#"{"Item": {"id": {"S": "1"}}}"#).unwrap();
        assert_eq!(items, vec![json!({"id": {"S": "1"}})]);
        for bad in [
            r#"{"Item": {"id": {"S": "1"}}, "ConditionExpression": "attribute_not_exists(id)"}"#,
            r#"{"TableName": "users", "Item": {}}"#,
            r#"{"Key": {}}"#,
        ] {
            assert!(DynamoSink::parse(Some("orders"), bad).is_err(), "{bad}");
        }
        assert_eq!(
            DynamoSink::answer((), &[Outcome::Ok(json!({}))]).unwrap(),
            json!({})
        );
    }
}
