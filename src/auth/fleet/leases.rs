//! Exact quotas across the fleet, without a DynamoDB call per request.
//!
//! Each key's period has one item in the usage table, `lease#START`, whose `granted` counts
//! the units handed to nodes. A node takes a block with one conditional update that never
//! lets `granted` pass the limit, admits requests from its block in memory, and asks for the
//! next block when half of the last one is left. So the fleet never admits more than the
//! quota, whatever the interleaving: every admitted request spent a unit some node was
//! granted, and the grants never pass the limit.
//!
//! A block is sized from the node's own recent rate for the key ([`LEASE_SECONDS`] of it),
//! and never more than the units left divided by twice the live nodes, nor
//! [`MAX_LEASE`]: near the limit blocks shrink to one unit, so the last units are not
//! stranded on an idle node. Unspent blocks go back to the fleet when a key idles for
//! [`IDLE_RETURN_MS`] and at shutdown. A node that crashes strands at most its unspent
//! units: per key, less than its last block plus the half of the one before that it had
//! left when it asked for the next, each bounded as above.
//!
//! Admitted requests are counted per day as without leases (the `usage` command reports
//! them); the leases only bound them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Dynamo, DynamoError, Tables, get_n, n, s};
use crate::auth::{Authorizer, LeaseNeed};

/// A block holds about this many seconds of the node's own rate for the key.
pub const LEASE_SECONDS: f64 = 2.0;
/// The largest block, whatever the rate.
pub const MAX_LEASE: u64 = 10_000;
/// A key with no admission for this long gives its block back.
pub const IDLE_RETURN_MS: i64 = 10_000;
/// How long lease items are kept after their period (DynamoDB's TTL removes them).
const KEPT_AFTER_PERIOD_S: i64 = 40 * 86_400;

/// The size of the next block for `need`, with `nodes` live nodes. Pure.
pub fn size(need: &LeaseNeed, nodes: u32) -> u64 {
    let left = need.limit.saturating_sub(need.granted.max(need.base));
    let want = ((need.rate * LEASE_SECONDS).ceil() as u64).max(1);
    let fair = (left / (2 * u64::from(nodes.max(1)))).max(1);
    want.min(fair).min(MAX_LEASE).min(left)
}

/// The longest a request waits for a lease of its key's quota.
pub const REQUEST_WAIT: Duration = Duration::from_secs(2);

/// Leases asked for and being taken: if the taking is given up (its request stopped
/// waiting), each is answered as "store unreachable", so the key asks again later instead
/// of waiting forever for an answer that will not come. Units the store granted meanwhile
/// stay unspent: the fleet admits less, never more.
struct Taken<'a> {
    auth: &'a Authorizer,
    needs: Vec<LeaseNeed>,
    answered: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let now = super::epoch_ms();
        for need in &self.needs {
            self.auth.lease_taken(need, 0, None, now);
        }
    }
}

/// Takes and returns blocks of quota for one node.
pub struct Leases {
    dynamo: Dynamo,
    tables: Tables,
    /// One round of lease calls at a time: requests waiting for a lease wait for it.
    filling: tokio::sync::Mutex<()>,
}

impl Leases {
    pub fn new(dynamo: Dynamo, tables: Tables) -> Leases {
        Leases {
            dynamo,
            tables,
            filling: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes the leases `auth` asked for and gives it what the fleet granted. A request
    /// whose key has no lease left calls this and then authorizes again.
    pub async fn fill(&self, auth: &Authorizer) {
        let _one = self.filling.lock().await;
        let needs = Taken {
            auth,
            needs: auth.lease_needs(),
            answered: false,
        };
        if needs.needs.is_empty() {
            return;
        }
        let nodes = auth.nodes();
        let calls = needs.needs.iter().map(|need| self.take(need, nodes));
        let results = futures_util::future::join_all(calls).await;
        let now = super::epoch_ms();
        for (need, result) in needs.needs.iter().zip(results) {
            match result {
                Ok((units, granted)) => {
                    crate::telemetry::quota_lease(if units > 0 { "granted" } else { "spent" });
                    auth.lease_taken(need, units, Some(granted), now);
                }
                Err(e) => {
                    crate::telemetry::quota_lease("failed");
                    tracing::warn!(key = %need.id, error = %e, "Could not lease quota from the fleet store.");
                    auth.lease_taken(need, 0, None, now);
                }
            }
        }
        let mut needs = needs;
        needs.answered = true;
    }

    /// [`Leases::fill`] for a request waiting on it, until `deadline` (a request waits
    /// [`REQUEST_WAIT`] in all, whatever the rounds); then the needs it took and had no
    /// answer for are answered as "store unreachable" (503 for a moment), so a DynamoDB
    /// that hangs costs a request seconds, not its whole timeout. Whether the deadline
    /// passed.
    pub async fn wait(&self, auth: &Authorizer, deadline: tokio::time::Instant) -> bool {
        tokio::time::timeout_at(deadline, self.fill(auth))
            .await
            .is_err()
    }

    fn key(&self, id: &str, period_start: i64) -> serde_json::Value {
        json!({ "pk": s(id), "sk": s(&format!("lease#{period_start}")) })
    }

    /// One block for `need`: (units granted, units the fleet was granted after it).
    async fn take(&self, need: &LeaseNeed, nodes: u32) -> Result<(u64, u64), DynamoError> {
        let mut want = size(need, nodes);
        let mut granted = need.granted;
        let limit = i64::try_from(need.limit).unwrap_or(i64::MAX);
        for _ in 0..4 {
            if want == 0 {
                return Ok((0, granted));
            }
            let units = i64::try_from(want).unwrap_or(i64::MAX);
            let body = json!({
                "TableName": self.tables.usage,
                "Key": self.key(&need.id, need.period_start),
                "UpdateExpression": "SET #g = #g + :n",
                "ConditionExpression": "attribute_exists(#g) AND #g <= :max",
                "ExpressionAttributeNames": { "#g": "granted" },
                "ExpressionAttributeValues": { ":n": n(units), ":max": n(limit - units) },
                "ReturnValues": "UPDATED_NEW",
            });
            match self.dynamo.call("UpdateItem", &body).await {
                Ok(answer) => {
                    let total = get_n(&answer["Attributes"], "granted").unwrap_or(0);
                    return Ok((want, u64::try_from(total).unwrap_or(0)));
                }
                Err(DynamoError::Condition(_)) => {}
                Err(e) => return Err(e),
            }
            // Others took more than this node knew, or the period has no lease item yet.
            let read = json!({
                "TableName": self.tables.usage,
                "Key": self.key(&need.id, need.period_start),
                "ConsistentRead": true,
            });
            let found = self.dynamo.call("GetItem", &read).await?;
            let held = get_n(&found["Item"], "granted");
            granted = match held {
                Some(g) => u64::try_from(g).unwrap_or(0),
                // The first lease of the period counts what was admitted before leases (a
                // store moved from SQLite, counts written before a restart).
                None => self.recorded(need).await?.saturating_add(need.base),
            };
            let left = need.limit.saturating_sub(granted);
            want = want
                .min((left / (2 * u64::from(nodes.max(1)))).max(1))
                .min(left);
            if held.is_none() && want > 0 {
                let units = i64::try_from(want).unwrap_or(i64::MAX);
                let base = i64::try_from(granted).unwrap_or(i64::MAX);
                let create = json!({
                    "TableName": self.tables.usage,
                    "Key": self.key(&need.id, need.period_start),
                    "UpdateExpression": "SET #g = :g, #lim = :limit, #ttl = :ttl",
                    "ConditionExpression": "attribute_not_exists(#g)",
                    "ExpressionAttributeNames": { "#g": "granted", "#lim": "limit", "#ttl": "ttl" },
                    "ExpressionAttributeValues": {
                        ":g": n(base + units),
                        ":limit": n(limit),
                        ":ttl": n(need.period_end / 1000 + KEPT_AFTER_PERIOD_S),
                    },
                });
                match self.dynamo.call("UpdateItem", &create).await {
                    Ok(_) => return Ok((want, granted + want)),
                    // Another node made it first: lease from theirs.
                    Err(DynamoError::Condition(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((0, granted))
    }

    /// Requests recorded for the key in the need's period (its days in the usage table).
    async fn recorded(&self, need: &LeaseNeed) -> Result<u64, DynamoError> {
        let day = |ms: i64| format!("day#{}", crate::auth::plans::day_label(ms));
        let body = json!({
            "TableName": self.tables.usage,
            "KeyConditionExpression": "pk = :k AND sk BETWEEN :from AND :to",
            "ExpressionAttributeValues": {
                ":k": s(&need.id),
                ":from": s(&day(need.period_start)),
                ":to": s(&day(need.period_end - 1)),
            },
            "ConsistentRead": true,
        });
        let mut total = 0u64;
        self.dynamo
            .each_page("Query", body, |item| {
                total += u64::try_from(get_n(item, "count").unwrap_or(0)).unwrap_or(0);
            })
            .await?;
        Ok(total)
    }

    /// Gives unspent blocks back to the fleet, as (key id, period start, units).
    pub async fn give_back(&self, leases: Vec<(Arc<str>, i64, u64)>) {
        let calls = leases.iter().map(|(id, start, units)| {
            let units = i64::try_from(*units).unwrap_or(i64::MAX);
            let body = json!({
                "TableName": self.tables.usage,
                "Key": self.key(id, *start),
                "UpdateExpression": "SET #g = #g - :n",
                "ConditionExpression": "#g >= :n",
                "ExpressionAttributeNames": { "#g": "granted" },
                "ExpressionAttributeValues": { ":n": n(units) },
            });
            async move { (id, self.dynamo.call("UpdateItem", &body).await) }
        });
        for (id, result) in futures_util::future::join_all(calls).await {
            match result {
                Ok(_) => crate::telemetry::quota_lease("returned"),
                Err(e) => {
                    tracing::warn!(key = %id, error = %e, "Could not give unspent quota back to the fleet store.");
                }
            }
        }
    }
}

/// How often the lease task looks for leases to take ahead of need and for idle ones.
const TICK: Duration = Duration::from_millis(50);

/// Runs until `stop`: takes the leases asked for ahead of need, gives idle ones back; at
/// the end gives every unspent one back.
pub async fn run(
    leases: Arc<Leases>,
    auth: Arc<Authorizer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    let mut idle = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if auth.leases_wanted() {
                    leases.fill(&auth).await;
                }
            }
            _ = idle.tick() => {
                let back = auth.take_leases(super::epoch_ms(), Some(IDLE_RETURN_MS));
                if !back.is_empty() {
                    leases.give_back(back).await;
                }
            }
            _ = stop.changed() => break,
        }
    }
    let back = auth.take_leases(super::epoch_ms(), None);
    leases.give_back(back).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(limit: u64, granted: u64, rate: f64) -> LeaseNeed {
        LeaseNeed {
            hash: 1,
            id: Arc::from("k"),
            period_start: 0,
            period_end: 86_400_000,
            limit,
            base: 0,
            last: 0,
            granted,
            rate,
        }
    }

    #[test]
    fn blocks_follow_the_rate_and_shrink_near_the_limit() {
        // A first lease (no rate yet) is one unit.
        assert_eq!(size(&need(1_000_000, 0, 0.0), 1), 1);
        // Two seconds of the rate.
        assert_eq!(size(&need(1_000_000, 0, 500.0), 1), 1_000);
        // Never past the cap.
        assert_eq!(size(&need(u64::MAX, 0, 1e9), 1), MAX_LEASE);
        // Near the limit: half of what is left per node.
        assert_eq!(size(&need(1_000, 900, 500.0), 2), 25);
        assert_eq!(size(&need(1_000, 998, 500.0), 3), 1);
        // Nothing left.
        assert_eq!(size(&need(1_000, 1_000, 500.0), 3), 0);
        // Usage recorded before any lease counts.
        let mut n = need(100, 0, 500.0);
        n.base = 100;
        assert_eq!(size(&n, 1), 0);
    }
}
