//! Fleet membership: each node writes a heartbeat to the members table, counts the nodes
//! whose heartbeat is recent, and takes that share of every throttle (each node admits
//! about rate / nodes). Approximate by design: a balancer that spreads requests unevenly,
//! or a node that joined a moment ago, makes the fleet's total differ from the rate (the
//! README gives the error measured); quotas, which must be exact, use leases instead.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Dynamo, Tables, get_n, n, s};
use crate::auth::Authorizer;

/// How often a node writes its heartbeat and counts the others.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node whose heartbeat is older than this is gone (it crashed, or its network did).
pub const LIVE_FOR_MS: i64 = 6_000;

pub struct Members {
    dynamo: Dynamo,
    tables: Tables,
    /// This node's name in the table: host, process and a random part.
    pub node: String,
}

impl Members {
    pub fn new(dynamo: Dynamo, tables: Tables) -> Members {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        let node = format!(
            "{host}-{}-{}",
            std::process::id(),
            crate::auth::keys::generate_id()
        );
        Members {
            dynamo,
            tables,
            node,
        }
    }

    /// Writes this node's heartbeat and counts the live nodes (this one included).
    pub async fn beat(&self, now_ms: i64) -> Result<u32, super::DynamoError> {
        let put = json!({
            "TableName": self.tables.members,
            "Item": { "pk": s(&self.node), "seen": n(now_ms), "ttl": n(now_ms / 1000 + 3600) },
        });
        self.dynamo.call("PutItem", &put).await?;
        let scan = json!({
            "TableName": self.tables.members,
            "FilterExpression": "#s > :since",
            "ExpressionAttributeNames": { "#s": "seen" },
            "ExpressionAttributeValues": { ":since": n(now_ms - LIVE_FOR_MS) },
            "ConsistentRead": true,
        });
        let mut live = 0u32;
        self.dynamo
            .each_page("Scan", scan, |item| {
                if get_n(item, "seen").is_some() {
                    live += 1;
                }
            })
            .await?;
        Ok(live.max(1))
    }

    /// Takes this node out of the fleet (at shutdown), so the others take its share.
    pub async fn leave(&self) {
        let delete = json!({ "TableName": self.tables.members, "Key": { "pk": s(&self.node) } });
        if let Err(e) = self.dynamo.call("DeleteItem", &delete).await {
            tracing::warn!(error = %e, "Could not leave the fleet's members table.");
        }
    }
}

/// Runs until `stop`: heartbeats, and the throttle share they give; leaves at the end.
pub async fn run(
    members: Arc<Members>,
    auth: Arc<Authorizer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut beat = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = beat.tick() => match members.beat(super::epoch_ms()).await {
                Ok(live) => {
                    if live != auth.nodes() {
                        tracing::info!(nodes = live, "Fleet membership changed: each node takes 1/{live} of every throttle.");
                    }
                    auth.set_share(live);
                    crate::telemetry::fleet_nodes(live);
                }
                Err(e) => tracing::warn!(error = %e, "Could not write this node's heartbeat to the fleet store."),
            },
            _ = stop.changed() => break,
        }
    }
    members.leave().await;
}
