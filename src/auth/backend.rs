//! Where the keys live: the embedded SQLite store (the default) or the fleet store in
//! DynamoDB (`auth.key_store = "dynamodb://PREFIX"`). The CLI and the server's sync see one
//! interface; each backend keeps its own way of telling what changed.

use std::path::PathBuf;

use super::fleet::store::DynamoStore;
use super::keys::Hasher;
use super::store::{Changes, KeyRecord, KeyStore, NewKey, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// `auth.key_store`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (`keys.db` beside `gateway.toml` by default).
    Sqlite(PathBuf),
    /// The fleet store's tables, `PREFIX-keys`, `PREFIX-usage` and `PREFIX-members`.
    Dynamo { prefix: String },
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Dynamo { prefix } => write!(f, "dynamodb://{prefix}"),
        }
    }
}

impl StoreLocation {
    /// The fleet store's prefix, if this is one.
    pub fn fleet(&self) -> Option<&str> {
        match self {
            StoreLocation::Dynamo { prefix } => Some(prefix),
            StoreLocation::Sqlite(_) => None,
        }
    }
}

#[allow(clippy::large_enum_variant)] // one per process
pub enum Backend {
    Sqlite(KeyStore),
    Dynamo(DynamoStore),
}

impl Backend {
    /// Opens the store `location` names; `aws` reaches the fleet store.
    pub fn open(
        location: &StoreLocation,
        aws: &crate::integrations::AwsSettings,
    ) -> Result<Backend> {
        Ok(match location {
            StoreLocation::Sqlite(path) => Backend::Sqlite(KeyStore::open(path)?),
            StoreLocation::Dynamo { prefix } => {
                Backend::Dynamo(DynamoStore::open(prefix, aws, None)?)
            }
        })
    }

    pub fn hasher(&self) -> &Hasher {
        match self {
            Backend::Sqlite(s) => s.hasher(),
            Backend::Dynamo(s) => s.hasher(),
        }
    }

    /// Changes when another writer changed the store (SQLite's `data_version`; for the
    /// fleet store, a count of the polls of its change log that found changes).
    pub fn data_version(&self) -> Result<i64> {
        match self {
            Backend::Sqlite(s) => s.data_version(),
            Backend::Dynamo(s) => s.data_version(),
        }
    }

    pub fn last_change(&self) -> Result<i64> {
        match self {
            Backend::Sqlite(s) => s.last_change(),
            Backend::Dynamo(s) => s.last_change(),
        }
    }

    pub fn changes_since(&self, since: i64, max: usize) -> Result<Changes> {
        match self {
            Backend::Sqlite(s) => s.changes_since(since, max),
            Backend::Dynamo(s) => s.changes_since(since, max),
        }
    }

    /// Forgets old change-log entries (the fleet store's expire by themselves).
    pub fn prune_changes(&self, now_ms: i64) -> Result<usize> {
        match self {
            Backend::Sqlite(s) => s.prune_changes(now_ms),
            Backend::Dynamo(_) => Ok(0),
        }
    }

    pub fn each(&self, f: impl FnMut(KeyRecord)) -> Result<()> {
        match self {
            Backend::Sqlite(s) => s.each(f),
            Backend::Dynamo(s) => s.each(f),
        }
    }

    pub fn list(&self) -> Result<Vec<KeyRecord>> {
        match self {
            Backend::Sqlite(s) => s.list(),
            Backend::Dynamo(s) => s.list(),
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<KeyRecord>> {
        match self {
            Backend::Sqlite(s) => s.get(id),
            Backend::Dynamo(s) => s.get(id),
        }
    }

    pub fn create(&self, new: &NewKey, now_ms: i64) -> Result<(KeyRecord, String)> {
        match self {
            Backend::Sqlite(s) => s.create(new, now_ms),
            Backend::Dynamo(s) => s.create(new, now_ms),
        }
    }

    pub fn create_all(
        &mut self,
        keys: &[NewKey],
        now_ms: i64,
    ) -> Result<Vec<Result<(KeyRecord, String)>>> {
        match self {
            Backend::Sqlite(s) => s.create_all(keys, now_ms),
            Backend::Dynamo(s) => s.create_all(keys, now_ms),
        }
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool> {
        match self {
            Backend::Sqlite(s) => s.set_enabled(id, enabled),
            Backend::Dynamo(s) => s.set_enabled(id, enabled),
        }
    }

    pub fn revoke(&mut self, id: &str, now_ms: i64) -> Result<bool> {
        match self {
            Backend::Sqlite(s) => s.revoke(id, now_ms),
            Backend::Dynamo(s) => s.revoke(id, now_ms),
        }
    }

    pub fn rotate(&mut self, id: &str, grace_ms: i64, now_ms: i64) -> Result<Option<String>> {
        match self {
            Backend::Sqlite(s) => s.rotate(id, grace_ms, now_ms),
            Backend::Dynamo(s) => s.rotate(id, grace_ms, now_ms),
        }
    }

    pub fn add_usage<K: AsRef<str>>(&mut self, deltas: &[(K, String, u64)]) -> Result<()> {
        match self {
            Backend::Sqlite(s) => s.add_usage(deltas),
            Backend::Dynamo(s) => s.add_usage(deltas),
        }
    }

    pub fn usage(
        &self,
        key: Option<&str>,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<(String, String, u64)>> {
        match self {
            Backend::Sqlite(s) => s.usage(key, from_day, to_day),
            Backend::Dynamo(s) => s.usage(key, from_day, to_day),
        }
    }
}
