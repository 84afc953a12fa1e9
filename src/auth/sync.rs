//! Keeping the authorizer and the key store in step, off the request path:
//! - at start-up, load the keys and the usage counts of the current periods;
//! - every [`REFRESH_EVERY`] ([`FLEET_REFRESH_EVERY`] for the fleet store, whose change log
//!   is read instead), check `PRAGMA data_version`, and when another connection (the
//!   CLI) committed, read the keys it changed from the store's change log (kept by
//!   triggers, so any writer records its changes) and apply them to the snapshot, so a key
//!   created, disabled or revoked takes effect within a second without a restart, and a
//!   change to one key among a million reads one key. When more than [`MAX_CHANGED`] keys
//!   changed since the whole store was loaded, or the log was pruned past the last look,
//!   the whole store is loaded again (for a moment the old and the new snapshot are both in
//!   memory);
//! - every [`FLUSH_EVERY`] and at shutdown, write the quota counts taken since the last
//!   flush. A failed write puts them back, so none are lost while the process lives;
//! - on a key the snapshot does not know, check the store at once ([`KeySync::recheck`]), so
//!   a key issued a moment ago works on its first request. A flood of made-up keys cannot
//!   become a flood of store reads: such checks are limited to [`MISS_CHECKS_PER_SECOND`]
//!   for the node, and a key that missed after a check is not checked again for
//!   [`NEGATIVE_FOR`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};

use super::backend::{Backend, StoreLocation};
use super::keys::{Hasher, KeyHash};
use super::plans::day_label;
use super::snapshot::Table;
use super::store::StoreError;
use super::{Authorizer, Snapshot};

pub const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// The fleet store's change log is read this often (one DynamoDB call each): a change
/// reaches every node within a second.
pub const FLEET_REFRESH_EVERY: Duration = Duration::from_millis(500);
/// The fleet store's usage counts are written this often (a call per key used since the
/// last write, so each costs the same whatever the key's rate), and at shutdown. They are
/// what `usage` reports; quotas do not wait for them (leases bound them).
pub const FLEET_FLUSH_EVERY: Duration = Duration::from_secs(5);
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Usage loaded at start-up: enough days to cover the longest period (a month) and a
/// week that began in the previous month.
const USAGE_DAYS: i64 = 40;

/// Keys changed since the whole store was loaded that the snapshot takes as changes; more,
/// and the whole store is loaded again.
pub const MAX_CHANGED: usize = 4096;
/// How often the authorizer forgets refilled throttle buckets and ended quota periods.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the store's change log is pruned (see `store::CHANGES_KEPT_SECONDS`).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What start-up needs from the store.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub usage: Vec<(String, String, u64)>,
    pub version: i64,
    /// The change log's newest entry before the keys were read.
    pub change: i64,
}

/// Every key, streamed into a snapshot; and the change log's position before they were
/// read (a change made while reading is read again, harmlessly, as a change).
fn load_keys(store: &Backend) -> Result<(i64, Snapshot), StoreError> {
    let change = store.last_change()?;
    let mut table = Table::default();
    store.each(|r| table.push(r))?;
    Ok((
        change,
        Snapshot::new(table.finish(), store.hasher().clone()),
    ))
}

pub fn load(store: &Backend, now_ms: i64) -> Result<Loaded, StoreError> {
    let version = store.data_version()?;
    let (change, snapshot) = load_keys(store)?;
    // The fleet store's quotas count from their leases, which read a period's usage the
    // first time the fleet leases it: no node reads every key's usage at start-up.
    let usage = match store {
        Backend::Dynamo(_) => Vec::new(),
        Backend::Sqlite(_) => {
            let from = day_label(now_ms - USAGE_DAYS * 86_400_000);
            store.usage(None, &from, "9999-12-31")?
        }
    };
    Ok(Loaded {
        snapshot,
        usage,
        version,
        change,
    })
}

pub fn open(
    location: &StoreLocation,
    aws: &crate::integrations::AwsSettings,
) -> Result<Backend, StoreError> {
    Backend::open(location, aws)
}

/// The longest a request with an unknown key waits for the store to be checked.
pub const RECHECK_WAIT: Duration = Duration::from_secs(1);
/// Store checks for unknown keys, per second, for the whole node.
pub const MISS_CHECKS_PER_SECOND: u32 = 10;
/// How long a key that is not in the store, checked, is not checked again.
pub const NEGATIVE_FOR: Duration = Duration::from_secs(1);
/// Keys remembered as missing at most; the memory is forgotten whole when full.
const NEGATIVE_MAX: usize = 4096;

/// The store and the authorizer it feeds, shared by the periodic refresh and the request
/// path's checks on unknown keys.
pub struct KeySync {
    store: Arc<Mutex<Backend>>,
    auth: Arc<Authorizer>,
    hasher: Hasher,
    /// The store's `data_version` when the snapshot was last loaded.
    version: AtomicI64,
    /// Where the snapshot is in the store's change log.
    changes: Arc<Mutex<Applied>>,
    /// One reload at a time; others wait for it and use its result.
    reloading: tokio::sync::Mutex<()>,
    miss_checks: governor::DefaultDirectRateLimiter,
    missing: Mutex<HashMap<KeyHash, Instant>>,
    /// With the fleet store: where quota leases come from.
    leases: std::sync::OnceLock<Arc<super::fleet::leases::Leases>>,
}

/// The change log as the snapshot has applied it.
#[derive(Default)]
struct Applied {
    /// The newest entry applied.
    last: i64,
    /// The keys changed since the whole store was loaded.
    ids: std::collections::HashSet<Box<str>>,
}

impl KeySync {
    /// `version` and `change` are [`Loaded`]'s, of the snapshot `auth` holds.
    pub fn new(store: Backend, auth: Arc<Authorizer>, version: i64, change: i64) -> KeySync {
        let per_second = NonZeroU32::new(MISS_CHECKS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        KeySync {
            hasher: store.hasher().clone(),
            store: Arc::new(Mutex::new(store)),
            auth,
            version: AtomicI64::new(version),
            changes: Arc::new(Mutex::new(Applied {
                last: change,
                ids: Default::default(),
            })),
            reloading: tokio::sync::Mutex::new(()),
            miss_checks: RateLimiter::direct(Quota::per_second(per_second)),
            missing: Mutex::default(),
            leases: std::sync::OnceLock::new(),
        }
    }

    /// Admits quotas from leases of the fleet store's, taken by `leases`.
    pub fn set_leases(&self, leases: Arc<super::fleet::leases::Leases>) {
        self.auth.lease_quotas();
        let _ = self.leases.set(leases);
    }

    /// Where quota leases come from (the fleet store only).
    pub fn leases(&self) -> Option<&super::fleet::leases::Leases> {
        self.leases.get().map(|l| &**l)
    }

    /// Reloads the snapshot if the store changed since it was loaded; whether the snapshot
    /// changed since the caller asked (by this reload or one it waited for).
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let before = self.version.load(Ordering::Acquire);
        let _one = self.reloading.lock().await;
        let version = self.version.load(Ordering::Acquire);
        let now = reload_if_changed(&self.store, &self.auth, &self.changes, version).await?;
        self.version.store(now, Ordering::Release);
        Ok(now != before)
    }

    /// A request presented `presented`, which the snapshot does not know: checks the store
    /// for changes within the budget, and says whether the snapshot changed (so the caller
    /// looks again).
    pub async fn recheck(&self, presented: &str) -> bool {
        let hash = self.hasher.hash(presented);
        let now = Instant::now();
        {
            let missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
            if missing.get(&hash).is_some_and(|until| *until > now) {
                crate::telemetry::key_miss_check("remembered");
                return false;
            }
        }
        if self.miss_checks.check().is_err() {
            crate::telemetry::key_miss_check("over_budget");
            return false;
        }
        // A store that is slow to answer (the fleet store in a brownout) costs the request
        // a moment, not its timeout; the refresh itself goes on.
        let changed = match tokio::time::timeout(RECHECK_WAIT, self.refresh()).await {
            Ok(Ok(changed)) => changed,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Could not check the key store for an unknown key.");
                false
            }
            Err(_) => false,
        };
        crate::telemetry::key_miss_check(if changed { "reloaded" } else { "unchanged" });
        if !changed {
            let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
            if missing.len() >= NEGATIVE_MAX {
                missing.clear();
            }
            missing.insert(hash, now + NEGATIVE_FOR);
        }
        changed
    }
}

/// Runs until `stop` resolves: reloads keys on change, flushes counts; flushes once more at
/// the end.
pub async fn run(keys: Arc<KeySync>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let fleet = matches!(
        *keys.store.lock().unwrap_or_else(|p| p.into_inner()),
        Backend::Dynamo(_)
    );
    let mut refresh = tokio::time::interval(if fleet {
        FLEET_REFRESH_EVERY
    } else {
        REFRESH_EVERY
    });
    let mut flush = tokio::time::interval(if fleet {
        FLEET_FLUSH_EVERY
    } else {
        FLUSH_EVERY
    });
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = sweep.tick() => keys.auth.sweep(epoch_ms()),
            _ = prune.tick() => prune_changes(&keys.store).await,
            _ = refresh.tick() => {
                if let Err(e) = keys.refresh().await {
                    tracing::warn!(error = %e, "Could not check the key store for changes.");
                }
            }
            _ = flush.tick() => flush_counts(&keys.store, &keys.auth).await,
            _ = stop.changed() => break,
        }
    }
    flush_counts(&keys.store, &keys.auth).await;
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn prune_changes(store: &Arc<Mutex<Backend>>) {
    let store = store.clone();
    let pruned = tokio::task::spawn_blocking(move || {
        store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .prune_changes(epoch_ms())
    })
    .await;
    if let Ok(Err(e)) = pruned {
        tracing::warn!(error = %e, "Could not prune the key store's change log.");
    }
}

async fn reload_if_changed(
    store: &Arc<Mutex<Backend>>,
    auth: &Arc<Authorizer>,
    applied: &Arc<Mutex<Applied>>,
    version: i64,
) -> Result<i64, StoreError> {
    let store = store.clone();
    let (applied, auth) = (applied.clone(), auth.clone());
    // Everything happens in the blocking task, the new snapshot swapped in included: a
    // caller that stops waiting (a request's bounded recheck) cannot lose a change read
    // from the store but not applied.
    tokio::task::spawn_blocking(move || -> Result<i64, StoreError> {
        let s = store.lock().unwrap_or_else(|p| p.into_inner());
        let now = s.data_version()?;
        if now == version {
            return Ok(now);
        }
        let mut applied = applied.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_CHANGED.saturating_sub(applied.ids.len());
        let changes = s.changes_since(applied.last, room)?;
        let (snapshot, full) = match changes.ids {
            None => {
                let (change, snapshot) = load_keys(&s)?;
                *applied = Applied {
                    last: change,
                    ids: Default::default(),
                };
                (snapshot, true)
            }
            Some(ids) => {
                applied.last = changes.last;
                if ids.is_empty() {
                    return Ok(now);
                }
                applied
                    .ids
                    .extend(ids.into_iter().map(String::into_boxed_str));
                let mut records = Vec::with_capacity(applied.ids.len());
                for id in &applied.ids {
                    records.extend(s.get(id)?);
                }
                (auth.snapshot().with_changes(&applied.ids, records), false)
            }
        };
        tracing::info!(
            keys = snapshot.len(),
            changed = snapshot.changes(),
            whole_store = full,
            "Reloaded API keys."
        );
        auth.replace_snapshot(snapshot);
        Ok(now)
    })
    .await
    .map_err(|e| StoreError::Invalid(e.to_string()))?
}

/// Writes pending quota counts; on failure they are kept for the next flush.
pub async fn flush_counts(store: &Arc<Mutex<Backend>>, auth: &Arc<Authorizer>) {
    let counts = auth.take_pending();
    if counts.is_empty() {
        return;
    }
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
        // A panicking write keeps the counts too.
        let written =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.add_usage(&counts)))
                .unwrap_or_else(|_| Err(StoreError::Invalid("the write panicked".into())));
        (written, counts)
    })
    .await;
    match result {
        Ok((Ok(()), _)) => {}
        Ok((Err(e), counts)) => {
            tracing::error!(error = %e, "Could not record API key usage; will retry.");
            auth.restore_pending(counts);
        }
        Err(e) => tracing::error!(error = %e, "The usage writer stopped."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::{KeyStore, NewKey};
    use crate::auth::{RouteAuth, plans::UsagePlan};

    fn value(i: usize) -> String {
        format!("sync-test-key-{i:020}")
    }

    /// A store with `n` keys, the server's side of it, and a second connection (the CLI's).
    fn setup(n: usize) -> (KeySync, KeyStore, Arc<Authorizer>) {
        let dir = std::env::temp_dir().join(format!(
            "ingest-gateway-sync-{}",
            crate::auth::keys::generate_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.db");
        let mut store = KeyStore::open(&path).unwrap();
        let keys: Vec<NewKey> = (0..n)
            .map(|i| NewKey {
                name: format!("k{i}"),
                plan: "p".into(),
                value: Some(value(i)),
                enabled: true,
                ..NewKey::default()
            })
            .collect();
        for r in store.create_all(&keys, 0).unwrap() {
            r.unwrap();
        }
        let store = Backend::Sqlite(store);
        let loaded = load(&store, 0).unwrap();
        let plan = UsagePlan {
            invalidate_cache: false,
            name: "p".into(),
            throttle: None,
            route_throttles: Vec::new(),
            routes: None,
            throttle_by_key: true,
            throttle_by_ip: false,
            identity: None,
            quota: None,
        };
        let route = RouteAuth {
            name: "POST /e".into(),
            key_required: true,
            ..RouteAuth::default()
        };
        let auth = Arc::new(Authorizer::new(
            governor::clock::DefaultClock::default(),
            vec![plan],
            vec![route],
            None,
            loaded.snapshot,
            vec![],
        ));
        let server = KeySync::new(store, auth.clone(), loaded.version, loaded.change);
        (server, KeyStore::open(&path).unwrap(), auth)
    }

    fn id_of(auth: &Authorizer, key: &str) -> Result<String, String> {
        match auth.authorize(0, Some(key), 1) {
            Ok(a) => Ok(a.key.unwrap().id().to_string()),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[tokio::test]
    async fn changes_from_another_connection_apply_as_changes() {
        let (server, mut cli, auth) = setup(50);
        assert!(!server.refresh().await.unwrap(), "nothing changed yet");
        let (new, new_value) = cli
            .create(
                &NewKey {
                    name: "new".into(),
                    plan: "p".into(),
                    enabled: true,
                    ..NewKey::default()
                },
                1,
            )
            .unwrap();
        let disabled = id_of(&auth, &value(3)).unwrap();
        cli.set_enabled(&disabled, false).unwrap();
        let revoked = id_of(&auth, &value(4)).unwrap();
        cli.revoke(&revoked, 1).unwrap();
        let rotated = id_of(&auth, &value(5)).unwrap();
        let rotated_value = cli.rotate(&rotated, 0, 1).unwrap().unwrap();
        assert!(server.refresh().await.unwrap());
        let snapshot = auth.snapshot();
        assert_eq!(snapshot.changes(), 4, "four keys read, not the store");
        assert_eq!(snapshot.len(), 50);
        assert_eq!(id_of(&auth, &new_value).unwrap(), new.id);
        assert!(id_of(&auth, &value(3)).unwrap_err().contains("disabled"));
        assert!(id_of(&auth, &value(4)).unwrap_err().contains("unknown"));
        assert!(id_of(&auth, &value(5)).unwrap_err().contains("unknown"));
        assert_eq!(id_of(&auth, &rotated_value).unwrap(), rotated);
        assert!(id_of(&auth, &value(6)).is_ok(), "the others as they were");
        // Changed again: the accumulated changes still hold.
        cli.set_enabled(&disabled, true).unwrap();
        assert!(server.refresh().await.unwrap());
        assert_eq!(id_of(&auth, &value(3)).unwrap(), disabled);
        assert!(id_of(&auth, &value(4)).is_err());
        assert_eq!(auth.snapshot().changes(), 4);
    }

    #[tokio::test]
    async fn too_many_changes_or_a_pruned_log_load_the_whole_store() {
        let (server, cli, auth) = setup(MAX_CHANGED + 10);
        let ids: Vec<String> = (0..MAX_CHANGED + 1)
            .map(|i| id_of(&auth, &value(i)).unwrap())
            .collect();
        for id in &ids {
            cli.set_enabled(id, false).unwrap();
        }
        assert!(server.refresh().await.unwrap());
        assert_eq!(auth.snapshot().changes(), 0, "loaded whole");
        assert!(id_of(&auth, &value(0)).unwrap_err().contains("disabled"));
        assert!(id_of(&auth, &value(MAX_CHANGED + 5)).is_ok());
        // The log pruned past where the server looked last: a whole load again.
        cli.set_enabled(&ids[0], true).unwrap();
        cli.prune_changes(i64::MAX / 2).unwrap();
        cli.set_enabled(&ids[1], true).unwrap();
        assert!(server.refresh().await.unwrap());
        let snapshot = auth.snapshot();
        assert_eq!(snapshot.changes(), 0);
        assert!(id_of(&auth, &value(0)).is_ok() && id_of(&auth, &value(1)).is_ok());
    }
}
