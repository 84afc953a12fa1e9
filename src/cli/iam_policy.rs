//! `ingest-gateway iam-policy`: the least-privilege IAM policy the running gateway needs for
//! exactly the configured routes.

use std::path::Path;

use serde_json::{Value as Json, json};

use crate::config::{self, Config};
use crate::integrations;

/// The policy document. `region` and `account` fill ARNs built from target names.
pub fn policy(config: &Config, region: &str, account: &str) -> (Json, Vec<String>) {
    let mut statements: Vec<Json> = Vec::new();
    let mut anywhere: Vec<&str> = Vec::new();
    let mut warnings = Vec::new();
    for route in &config.routes {
        let action = route.action;
        let name = action.name();
        let Some(integration) = integrations::of(action).filter(|_| action.is_aws()) else {
            continue;
        };
        let resource = match &route.target {
            Some(t) if t.starts_with("arn:") => t.clone(),
            Some(t) => integration.policy_resource(action, t, region, account),
            None => {
                warnings.push(format!(
                    "route {} has no target: granting {name} on every resource",
                    route.path
                ));
                "*".to_string()
            }
        };
        let extra = integration.extra_permissions(route.target.as_deref());
        let mut actions = vec![integration.iam_action(action)];
        actions.extend(extra.on_target);
        let statement = json!({"Effect": "Allow", "Action": actions, "Resource": resource});
        // Routes sharing a target and an action (a POST and a pixel GET into one stream)
        // need one grant.
        if !statements.contains(&statement) {
            statements.push(statement);
        }
        for a in extra.anywhere {
            if !anywhere.contains(a) {
                anywhere.push(a);
            }
        }
    }
    // Lambda authorizers' functions (only those a route uses).
    let mut functions: Vec<String> = Vec::new();
    for a in &config.authorizers {
        let crate::config::authorizers::AuthorizerConfig::Lambda(l) = a else {
            continue;
        };
        if !config
            .routes
            .iter()
            .any(|r| r.authorizer.as_deref() == Some(&l.name))
        {
            continue;
        }
        let arn = if l.function.starts_with("arn:") {
            l.function.clone()
        } else {
            format!("arn:aws:lambda:{region}:{account}:function:{}", l.function)
        };
        if !functions.contains(&arn) {
            functions.push(arn);
        }
    }
    functions.sort();
    if !functions.is_empty() {
        statements.push(
            json!({"Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": functions}),
        );
    }
    // The fleet store's tables (`auth.key_store = "dynamodb://PREFIX"`).
    if let Some(prefix) = config.key_store.fleet() {
        let tables = crate::auth::fleet::Tables::new(prefix);
        let arns: Vec<String> = [&tables.keys, &tables.usage, &tables.members]
            .iter()
            .map(|t| format!("arn:aws:dynamodb:{region}:{account}:table/{t}"))
            .collect();
        statements.push(json!({
            "Effect": "Allow",
            "Action": crate::auth::fleet::Tables::ACTIONS,
            "Resource": arns,
        }));
    }
    if !anywhere.is_empty() {
        statements.push(json!({"Effect": "Allow", "Action": anywhere, "Resource": "*"}));
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
