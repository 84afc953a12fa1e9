//! Keeping the authorizer and the key store in step, off the request path:
//! - at start-up, load the keys and the usage counts of the current periods;
//! - every [`REFRESH_EVERY`], check `PRAGMA data_version` and reload the keys if another
//!   connection (the CLI) committed, so a key created, disabled or revoked takes effect
//!   within a second without a restart;
//! - every [`FLUSH_EVERY`] and at shutdown, write the quota counts taken since the last
//!   flush. A failed write puts them back, so none are lost while the process lives.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// Runs until `stop` resolves: reloads keys on change, flushes counts; flushes once more at
/// the end.
pub async fn run(
    store: Arc<Mutex<KeyStore>>,
    auth: Arc<Authorizer>,
    mut version: i64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                match reload_if_changed(&store, &auth, version).await {
                    Ok(v) => version = v,
                    Err(e) => tracing::warn!(error = %e, "Could not check the key store for changes."),
                }
            }
            _ = flush.tick() => flush_counts(&store, &auth).await,
            _ = stop.changed() => break,
        }
    }
    flush_counts(&store, &auth).await;
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
