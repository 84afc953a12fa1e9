//! `ingest-gateway iam-policy`: the least-privilege IAM policy the running gateway needs for
//! exactly the configured routes.

use std::path::Path;

use serde_json::{Value as Json, json};

use crate::config::{self, Config};
use crate::integrations::Action;

/// The policy document. `region` and `account` fill ARNs built from target names.
pub fn policy(config: &Config, region: &str, account: &str) -> (Json, Vec<String>) {
    let mut statements: Vec<Json> = Vec::new();
    let mut warnings = Vec::new();
    for route in &config.routes {
        let action = route.action;
        let name = action.name();
        let resource = match &route.target {
            Some(t) if t.starts_with("arn:") => t.clone(),
            Some(t) => match action {
                Action::KinesisPutRecord | Action::KinesisPutRecords => {
                    format!("arn:aws:kinesis:{region}:{account}:stream/{t}")
                }
                Action::FirehosePutRecord | Action::FirehosePutRecordBatch => {
                    format!("arn:aws:firehose:{region}:{account}:deliverystream/{t}")
                }
                Action::SqsSendMessage | Action::SqsSendMessageBatch => {
                    format!(
                        "arn:aws:sqs:{region}:{account}:{}",
                        t.rsplit('/').next().unwrap_or(t)
                    )
                }
                Action::StatesStartExecution | Action::StatesStartSyncExecution => {
                    format!("arn:aws:states:{region}:{account}:stateMachine:{t}")
                }
            },
            None => {
                warnings.push(format!(
                    "route {} has no target: granting {name} on every resource",
                    route.path
                ));
                "*".to_string()
            }
        };
        // The gateway looks up queue URLs and state machine ARNs by name.
        let mut actions = vec![name.to_string()];
        match action {
            Action::SqsSendMessage | Action::SqsSendMessageBatch => {
                actions.push("sqs:GetQueueUrl".into())
            }
            Action::StatesStartExecution | Action::StatesStartSyncExecution => {}
            _ => {}
        }
        statements.push(json!({"Effect": "Allow", "Action": actions, "Resource": resource}));
    }
    let needs_listing = config.routes.iter().any(|r| {
        matches!(
            r.action,
            Action::StatesStartExecution | Action::StatesStartSyncExecution
        ) && r.target.as_ref().is_some_and(|t| !t.starts_with("arn:"))
    });
    if needs_listing {
        statements.push(
            json!({"Effect": "Allow", "Action": ["states:ListStateMachines"], "Resource": "*"}),
        );
    }
    (
        json!({"Version": "2012-10-17", "Statement": statements}),
        warnings,
    )
}

pub fn run(config_path: &Path, region: &str, account: &str) -> anyhow::Result<bool> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (doc, warnings) = policy(&config, region, account);
    for w in warnings {
        eprintln!("warning: {w}");
    }
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(true)
}
