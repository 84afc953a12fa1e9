//! `ingest-gateway provision [--dry-run]`: creates the resources `[resources]` declares.

use std::path::Path;

use crate::config;
use crate::integrations::Clients;
use crate::integrations::provision::{self, Step};

/// Returns whether every resource exists as declared.
pub async fn run(config_path: &Path, dry_run: bool) -> anyhow::Result<bool> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let clients = Clients::new(&config.aws).await;
    let steps = provision::provision(
        &clients,
        &config.resources,
        &config.base_dir,
        dry_run,
        &mut |s| {
            println!("{s}");
        },
    )
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
