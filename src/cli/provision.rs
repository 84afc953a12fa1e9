//! `ingest-gateway provision [--dry-run]`: creates the resources `[resources]` declares.

use std::path::Path;

use crate::config;
use crate::integrations::Clients;
use crate::integrations::provision::{self, Step};

/// Returns whether every resource exists as declared.
pub async fn run(config_path: &Path, dry_run: bool) -> anyhow::Result<bool> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let clients = Clients::new(&config.aws).await;
    let mut resources = config.resources.clone();
    // The fleet store's tables, when `auth.key_store` names one.
    if let Some(prefix) = config.key_store.fleet() {
        let tables = crate::auth::fleet::Tables::new(prefix);
        for (name, keys, ttl) in tables.schemas() {
            let key = |i: usize| keys.get(i).map(|(n, t)| format!("{n}:{t}"));
            resources.dynamodb_tables.push(toml::Spanned::new(
                0..0,
                provision::Table {
                    name: name.to_string(),
                    hash_key: key(0).unwrap_or_default(),
                    range_key: key(1),
                    ttl_attribute: ttl.then(|| "ttl".to_string()),
                },
            ));
        }
    }
    let steps = provision::provision(&clients, &resources, &config.base_dir, dry_run, &mut |s| {
        println!("{s}");
    })
    .await?;
    let differs = steps
        .iter()
        .filter(|s| matches!(s, Step::Differs(..)))
        .count();
    let created = steps
        .iter()
        .filter(|s| matches!(s, Step::Created(_)))
        .count();
    let planned = steps
        .iter()
        .filter(|s| matches!(s, Step::WouldCreate(_)))
        .count();
    if dry_run {
        println!(
            "{planned} to create, {} already exist, {differs} differ",
            steps.len() - planned - differs
        );
    } else {
        println!(
            "{created} created, {} already existed, {differs} differ",
            steps.len() - created - differs
        );
    }
    Ok(differs == 0)
}
