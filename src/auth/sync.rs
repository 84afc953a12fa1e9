//! Keeping the authorizer and the key store in step, off the request path:
//! - at start-up, load the keys and the usage counts of the current periods;
//! - every [`REFRESH_EVERY`], check `PRAGMA data_version` and reload the keys if another
//!   connection (the CLI) committed, so a key created, disabled or revoked takes effect
//!   within a second without a restart;
//! - every [`FLUSH_EVERY`] and at shutdown, write the quota counts taken since the last
//!   flush. A failed write puts them back, so none are lost while the process lives;
//! - on a key the snapshot does not know, check the store at once ([`KeySync::recheck`]), so
//!   a key issued a moment ago works on its first request. A flood of made-up keys cannot
//!   become a flood of store reads: such checks are limited to [`MISS_CHECKS_PER_SECOND`]
//!   for the node, and a key that missed after a check is not checked again for
//!   [`NEGATIVE_FOR`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};

use super::keys::{Hasher, KeyHash};
use super::plans::day_label;
use super::store::{KeyStore, StoreError};
use super::{Authorizer, Snapshot};

pub const REFRESH_EVERY: Duration = Duration::from_millis(250);
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Usage loaded at start-up: enough days to cover the longest period (a month) and a
/// week that began in the previous month.
const USAGE_DAYS: i64 = 40;

/// What start-up needs from the store.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub usage: Vec<(String, String, u64)>,
    pub version: i64,
}

pub fn load(store: &KeyStore, now_ms: i64) -> Result<Loaded, StoreError> {
    let version = store.data_version()?;
    let snapshot = Snapshot::from_records(store.list()?, store.hasher().clone());
    let from = day_label(now_ms - USAGE_DAYS * 86_400_000);
    let usage = store.usage(None, &from, "9999-12-31")?;
    Ok(Loaded {
        snapshot,
        usage,
        version,
    })
}

pub fn open(path: &Path) -> Result<KeyStore, StoreError> {
    KeyStore::open(path)
}

/// Store checks for unknown keys, per second, for the whole node.
pub const MISS_CHECKS_PER_SECOND: u32 = 10;
/// How long a key that is not in the store, checked, is not checked again.
pub const NEGATIVE_FOR: Duration = Duration::from_secs(1);
/// Keys remembered as missing at most; the memory is forgotten whole when full.
const NEGATIVE_MAX: usize = 4096;

/// The store and the authorizer it feeds, shared by the periodic refresh and the request
/// path's checks on unknown keys.
pub struct KeySync {
    store: Arc<Mutex<KeyStore>>,
    auth: Arc<Authorizer>,
    hasher: Hasher,
    /// The store's `data_version` when the snapshot was last loaded.
    version: AtomicI64,
    /// One reload at a time; others wait for it and use its result.
    reloading: tokio::sync::Mutex<()>,
    miss_checks: governor::DefaultDirectRateLimiter,
    missing: Mutex<HashMap<KeyHash, Instant>>,
}

impl KeySync {
    pub fn new(store: KeyStore, auth: Arc<Authorizer>, version: i64) -> KeySync {
        let per_second = NonZeroU32::new(MISS_CHECKS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        KeySync {
            hasher: store.hasher().clone(),
            store: Arc::new(Mutex::new(store)),
            auth,
            version: AtomicI64::new(version),
            reloading: tokio::sync::Mutex::new(()),
            miss_checks: RateLimiter::direct(Quota::per_second(per_second)),
            missing: Mutex::default(),
        }
    }

    /// Reloads the snapshot if the store changed since it was loaded; whether the snapshot
    /// changed since the caller asked (by this reload or one it waited for).
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let before = self.version.load(Ordering::Acquire);
        let _one = self.reloading.lock().await;
        let version = self.version.load(Ordering::Acquire);
        let now = reload_if_changed(&self.store, &self.auth, version).await?;
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
        let changed = match self.refresh().await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "Could not check the key store for an unknown key.");
                false
            }
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
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
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

async fn reload_if_changed(
    store: &Arc<Mutex<KeyStore>>,
    auth: &Arc<Authorizer>,
    version: i64,
) -> Result<i64, StoreError> {
    let store = store.clone();
    let result =
        tokio::task::spawn_blocking(move || -> Result<Option<(i64, Snapshot)>, StoreError> {
            let s = store.lock().unwrap_or_else(|p| p.into_inner());
            let now = s.data_version()?;
            if now == version {
                return Ok(None);
            }
            Ok(Some((
                now,
                Snapshot::from_records(s.list()?, s.hasher().clone()),
            )))
        })
        .await
        .map_err(|e| StoreError::Invalid(e.to_string()))??;
    match result {
        None => Ok(version),
        Some((v, snapshot)) => {
            tracing::info!(keys = snapshot.len(), "Reloaded API keys.");
            auth.replace_snapshot(snapshot);
            Ok(v)
        }
    }
}

/// Writes pending quota counts; on failure they are kept for the next flush.
pub async fn flush_counts(store: &Arc<Mutex<KeyStore>>, auth: &Arc<Authorizer>) {
    let counts = auth.take_pending();
    if counts.is_empty() {
        return;
    }
    let store = store.clone();
    let written = counts.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
        s.add_usage(&written)
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Could not record API key usage; will retry.");
            auth.restore_pending(counts);
        }
        Err(e) => {
            tracing::error!(error = %e, "Could not record API key usage; will retry.");
            auth.restore_pending(counts);
        }
    }
}
