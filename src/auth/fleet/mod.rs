//! The fleet store: keys, usage counts, quota leases and node membership in DynamoDB
//! (`auth.key_store = "dynamodb://PREFIX"`), so that every node behind a load balancer
//! knows every key and a quota holds across them.
//!
//! Three tables, made by `provision` (on-demand billing):
//! - `PREFIX-keys` (`pk` S, `sk` N): a key's record (`key#ID`), a claim on each value ever
//!   issued (`hash#HEX`: current, previous or retired, so no value is issued twice), the
//!   change counter and the hash secret (`meta`), and the change log (`changes`, one item
//!   per change, `sk` its number, expiring after a day);
//! - `PREFIX-usage` (`pk` S the key id, `sk` S): admitted requests per UTC day (`day#DATE`)
//!   and the quota granted to nodes per period (`lease#START`);
//! - `PREFIX-members` (`pk` S the node): each live node's last heartbeat.
//!
//! Nothing here runs on the request path except a lease taken when a node's own runs out
//! (see [`leases`]).

pub mod leases;
pub mod members;
pub mod store;

use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::integrations::aws::{self, Signer};
use crate::upstream::IntegrationError;

/// A table's name, key schema (`(name, type)`, hash first) and whether its items expire.
pub type Schema<'a> = (&'a str, Vec<(&'static str, &'static str)>, bool);

/// What `dynamodb://PREFIX` names: the tables' names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub prefix: String,
    pub keys: String,
    pub usage: String,
    pub members: String,
}

impl Tables {
    pub fn new(prefix: &str) -> Tables {
        Tables {
            prefix: prefix.to_string(),
            keys: format!("{prefix}-keys"),
            usage: format!("{prefix}-usage"),
            members: format!("{prefix}-members"),
        }
    }

    /// The tables, each with its key schema (`(name, type)`, hash first) and whether its
    /// items expire (by their `ttl` attribute).
    pub fn schemas(&self) -> [Schema<'_>; 3] {
        [
            (self.keys.as_str(), vec![("pk", "S"), ("sk", "N")], true),
            (self.usage.as_str(), vec![("pk", "S"), ("sk", "S")], true),
            (self.members.as_str(), vec![("pk", "S")], true),
        ]
    }

    /// The DynamoDB actions nodes and the CLI use on them (`iam-policy`).
    pub const ACTIONS: [&'static str; 9] = [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "dynamodb:Scan",
        "dynamodb:BatchGetItem",
        "dynamodb:TransactWriteItems",
        "dynamodb:DescribeTable",
    ];
}

/// Parses `dynamodb://PREFIX`; `None` if `location` is not one; `Some(Err)` if its prefix
/// cannot name tables.
pub fn parse_location(location: &str) -> Option<Result<String, String>> {
    let prefix = location.strip_prefix("dynamodb://")?;
    let ok = (1..=200).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    Some(if ok {
        Ok(prefix.to_string())
    } else {
        Err(format!(
            "{location:?}: the prefix must be 1 to 200 of A-Z a-z 0-9 _ . - (it names the tables PREFIX-keys, PREFIX-usage and PREFIX-members)"
        ))
    })
}

/// A failed DynamoDB call, as the fleet code tells them apart.
#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    /// A condition did not hold (`ConditionalCheckFailedException`, or a transaction
    /// cancelled because one of its conditions did not).
    #[error("a condition did not hold: {0}")]
    Condition(String),
    #[error("{0}")]
    Call(#[from] IntegrationError),
}

impl DynamoError {
    fn retryable(&self) -> bool {
        match self {
            DynamoError::Condition(_) => false,
            DynamoError::Call(IntegrationError::Service { status, code, .. }) => {
                *status >= 500
                    || code.contains("Throttl")
                    || code == "ProvisionedThroughputExceededException"
                    || code == "RequestLimitExceeded"
                    || code == "InternalServerError"
            }
            DynamoError::Call(
                IntegrationError::Timeout { .. } | IntegrationError::Transport { .. },
            ) => true,
            DynamoError::Call(_) => false,
        }
    }

    /// Whether the table (or the item's table) does not exist.
    pub fn not_found(&self) -> bool {
        matches!(self, DynamoError::Call(IntegrationError::Service { code, .. }) if code == "ResourceNotFoundException")
    }
}

/// Signed DynamoDB calls (JSON protocol), each retried on throttling and server errors.
#[derive(Clone, Debug)]
pub struct Dynamo {
    signer: Signer,
    /// How long one call, with its retries, may take.
    pub timeout: Duration,
}

/// Attempts per call: a throttled or failed call is tried again with backoff.
const ATTEMPTS: u32 = 4;

impl Dynamo {
    pub fn new(signer: Signer) -> Dynamo {
        Dynamo {
            signer,
            timeout: Duration::from_secs(10),
        }
    }

    /// One operation (`"GetItem"`, `"UpdateItem"`, ...) with its request.
    pub async fn call(&self, operation: &'static str, body: &Json) -> Result<Json, DynamoError> {
        let action = aws::action(operation_name(operation));
        let body = body.to_string();
        let mut attempt = 0;
        loop {
            let deadline = tokio::time::Instant::now() + self.timeout;
            crate::telemetry::fleet_store_call(operation);
            let result = match self.signer.call(action, None, &body, deadline).await {
                Ok(answer) => return Ok(answer),
                Err(IntegrationError::Service { code, message, .. })
                    if code == "ConditionalCheckFailedException"
                        || (code == "TransactionCanceledException"
                            && message.contains("ConditionalCheckFailed")) =>
                {
                    return Err(DynamoError::Condition(message));
                }
                Err(e) => DynamoError::Call(e),
            };
            attempt += 1;
            if attempt >= ATTEMPTS || !result.retryable() {
                return Err(result);
            }
            let backoff = Duration::from_millis(25 << attempt);
            tokio::time::sleep(backoff).await;
        }
    }

    /// Every item a `Query` or `Scan` finds, page after page, each passed to `f`.
    pub async fn each_page(
        &self,
        operation: &'static str,
        mut body: Json,
        mut f: impl FnMut(&Json),
    ) -> Result<(), DynamoError> {
        loop {
            let page = self.call(operation, &body).await?;
            for item in page["Items"].as_array().into_iter().flatten() {
                f(item);
            }
            match page.get("LastEvaluatedKey") {
                Some(k) if k.is_object() => body["ExclusiveStartKey"] = k.clone(),
                _ => return Ok(()),
            }
        }
    }
}

/// The action's full name, as `aws::action` knows it.
fn operation_name(operation: &'static str) -> &'static str {
    match operation {
        "GetItem" => "aws:dynamodb:GetItem",
        "PutItem" => "aws:dynamodb:PutItem",
        "UpdateItem" => "aws:dynamodb:UpdateItem",
        "DeleteItem" => "aws:dynamodb:DeleteItem",
        "Query" => "aws:dynamodb:Query",
        "Scan" => "aws:dynamodb:Scan",
        "BatchGetItem" => "aws:dynamodb:BatchGetItem",
        "TransactWriteItems" => "aws:dynamodb:TransactWriteItems",
        "DescribeTable" => "aws:dynamodb:DescribeTable",
        "CreateTable" => "aws:dynamodb:CreateTable",
        "UpdateTimeToLive" => "aws:dynamodb:UpdateTimeToLive",
        _ => "aws:dynamodb:DescribeEndpoints",
    }
}

/// A string attribute.
pub fn s(v: &str) -> Json {
    json!({ "S": v })
}

/// A number attribute.
pub fn n(v: i64) -> Json {
    json!({ "N": v.to_string() })
}

/// An item's string attribute.
pub fn get_s<'a>(item: &'a Json, name: &str) -> Option<&'a str> {
    item[name]["S"].as_str()
}

/// An item's number attribute.
pub fn get_n(item: &Json, name: &str) -> Option<i64> {
    item[name]["N"].as_str()?.parse().ok()
}

/// An item's boolean attribute.
pub fn get_bool(item: &Json, name: &str) -> Option<bool> {
    item[name]["BOOL"].as_bool()
}

/// Milliseconds since the epoch.
pub fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
