//! The embedded key store: one SQLite file (WAL) shared by the server and the CLI.
//!
//! Keys are stored as SHA-256 hashes only. The server never reads this file on the request
//! path: it loads a snapshot and reloads it when `PRAGMA data_version` says another
//! connection (the CLI) committed. Usage counts are kept per key and UTC day.
//!
//! Synchronous: the server calls it from blocking tasks.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::keys::{self, KeyHash};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("key store: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, StoreError>;

/// One key, as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub hash: KeyHash,
    pub enabled: bool,
    /// Epoch milliseconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub description: Option<String>,
    pub customer: Option<String>,
    /// After a rotation, the previous secret's hash and until when it still works.
    pub previous: Option<(KeyHash, i64)>,
}

/// What `create` needs.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub plan: String,
    /// An operator-chosen value (imports, migrations); otherwise one is generated.
    pub value: Option<String>,
    pub expires_at: Option<i64>,
    pub description: Option<String>,
    pub customer: Option<String>,
    pub enabled: bool,
}

pub struct KeyStore {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    description TEXT,
    customer TEXT,
    previous_hash BLOB,
    previous_valid_until INTEGER
);
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (key_id, day)
);
";

fn hash_from(blob: Vec<u8>) -> rusqlite::Result<KeyHash> {
    blob.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "key hash is not 32 bytes".into(),
        )
    })
}

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let previous = match (
        row.get::<_, Option<Vec<u8>>>(9)?,
        row.get::<_, Option<i64>>(10)?,
    ) {
        (Some(h), Some(until)) => Some((hash_from(h)?, until)),
        _ => None,
    };
    Ok(KeyRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        plan: row.get(2)?,
        hash: hash_from(row.get(3)?)?,
        enabled: row.get::<_, i64>(4)? != 0,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        description: row.get(7)?,
        customer: row.get(8)?,
        previous,
    })
}

/// The store is readable by the gateway's user alone: created 0600 before SQLite opens it
/// (SQLite gives its `-wal` and `-shm` files the database's mode), and an existing one, with
/// its WAL, made so.
fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for suffix in ["", "-wal", "-shm"] {
                    let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
                    if file.exists() {
                        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A key's name or customer: printed by `keys list` and written to logs, so control
/// characters (a terminal escape, a forged log line) are refused, as are empty and very
/// long ones.
fn check_text(text: &str, what: &str) -> Result<()> {
    if text.is_empty() || text.chars().count() > 256 {
        return Err(StoreError::Invalid(format!(
            "a key's {what} must be 1 to 256 characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "a key's {what} must not hold control characters (newlines, escapes)"
        )));
    }
    Ok(())
}

const COLUMNS: &str = "id, name, plan, key_hash, enabled, created_at, expires_at, description, customer, previous_hash, previous_valid_until";

impl KeyStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<KeyStore> {
        private_file(path)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(KeyStore { conn })
    }

    /// Changes whenever another connection commits (cheap; used to detect CLI changes).
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Creates a key; returns its record and the key, which is not kept anywhere.
    pub fn create(&self, new: &NewKey, now_ms: i64) -> Result<(KeyRecord, String)> {
        check_text(&new.name, "name")?;
        if let Some(c) = &new.customer {
            check_text(c, "customer")?;
        }
        let value = match &new.value {
            Some(v) => {
                keys::validate(v).map_err(StoreError::Invalid)?;
                v.clone()
            }
            None => keys::generate(),
        };
        let record = KeyRecord {
            id: keys::generate_id(),
            name: new.name.clone(),
            plan: new.plan.clone(),
            hash: keys::hash(&value),
            enabled: new.enabled,
            created_at: now_ms,
            expires_at: new.expires_at,
            description: new.description.clone(),
            customer: new.customer.clone(),
            previous: None,
        };
        let inserted = self.conn.execute(
            "INSERT INTO api_keys (id, name, plan, key_hash, enabled, created_at, expires_at, description, customer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                record.id,
                record.name,
                record.plan,
                record.hash.as_slice(),
                i64::from(record.enabled),
                record.created_at,
                record.expires_at,
                record.description,
                record.customer
            ],
        );
        match inserted {
            Ok(_) => Ok((record, value)),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Invalid(
                    "a key with this value already exists".into(),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates many keys with chosen values in one transaction (bulk loads, benchmarks).
    pub fn create_many(&mut self, keys: &[(NewKey, String)], now_ms: i64) -> Result<usize> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO api_keys (id, name, plan, key_hash, enabled, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (new, value) in keys {
                check_text(&new.name, "name")?;
                keys::validate(value).map_err(StoreError::Invalid)?;
                stmt.execute(params![
                    keys::generate_id(),
                    new.name,
                    new.plan,
                    keys::hash(value).as_slice(),
                    i64::from(new.enabled),
                    now_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(keys.len())
    }

    pub fn list(&self) -> Result<Vec<KeyRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))?;
        let rows = stmt
            .query_map([], record)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn get(&self, id: &str) -> Result<Option<KeyRecord>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                [id],
                record,
            )
            .optional()?)
    }

    /// Enables or disables a key; false if there is no such key.
    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE api_keys SET enabled = ?2 WHERE id = ?1",
            params![id, i64::from(enabled)],
        )? == 1)
    }

    /// Deletes a key for good (its usage history stays); false if there is no such key.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM api_keys WHERE id = ?1", [id])?
            == 1)
    }

    /// Gives a key a new secret; the old one keeps working until `now + grace`. Returns the
    /// new key, or `None` if there is no such key.
    pub fn rotate(&self, id: &str, grace_ms: i64, now_ms: i64) -> Result<Option<String>> {
        let Some(current) = self.get(id)? else {
            return Ok(None);
        };
        let value = keys::generate();
        let previous_until = (grace_ms > 0).then_some(now_ms + grace_ms);
        self.conn.execute(
            "UPDATE api_keys SET key_hash = ?2, previous_hash = ?3, previous_valid_until = ?4 WHERE id = ?1",
            params![
                id,
                keys::hash(&value).as_slice(),
                previous_until.map(|_| current.hash.to_vec()),
                previous_until
            ],
        )?;
        Ok(Some(value))
    }

    /// Adds request counts per (key id, `YYYY-MM-DD`), in one transaction.
    pub fn add_usage(&mut self, deltas: &[(String, String, u64)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO usage (key_id, day, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key_id, day) DO UPDATE SET count = count + excluded.count",
            )?;
            for (key, day, n) in deltas {
                stmt.execute(params![key, day, i64::try_from(*n).unwrap_or(i64::MAX)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Per-day counts between two `YYYY-MM-DD` days (inclusive), optionally for one key.
    pub fn usage(
        &self,
        key: Option<&str>,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<(String, String, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT key_id, day, count FROM usage
             WHERE day >= ?1 AND day <= ?2 AND (?3 IS NULL OR key_id = ?3)
             ORDER BY key_id, day",
        )?;
        let rows = stmt
            .query_map(params![from_day, to_day, key], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (KeyStore, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("ingest-gateway-store-{}", keys::generate_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.db");
        (KeyStore::open(&path).unwrap(), path)
    }

    #[test]
    fn keys_are_stored_as_hashes_only() {
        let (s, path) = store();
        let new = NewKey {
            name: "partner".into(),
            plan: "basic".into(),
            enabled: true,
            ..NewKey::default()
        };
        let (rec, value) = s.create(&new, 1_000).unwrap();
        assert_eq!(rec.hash, keys::hash(&value));
        assert_eq!(s.get(&rec.id).unwrap().unwrap(), rec);
        drop(s);
        let bytes = std::fs::read(&path).unwrap();
        let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
        for file in [&bytes, &wal] {
            assert!(
                !file.windows(value.len()).any(|w| w == value.as_bytes()),
                "plaintext key on disk"
            );
        }
    }

    #[test]
    fn lifecycle_and_usage() {
        let (mut s, _) = store();
        let new = NewKey {
            name: "n".into(),
            plan: "p".into(),
            value: Some("a-chosen-key-value-of-25".into()),
            enabled: true,
            ..NewKey::default()
        };
        let (rec, _) = s.create(&new, 0).unwrap();
        assert!(s.create(&new, 0).is_err(), "duplicate values are refused");
        let v0 = s.data_version().unwrap();
        assert!(s.set_enabled(&rec.id, false).unwrap());
        assert!(!s.get(&rec.id).unwrap().unwrap().enabled);
        let rotated = s.rotate(&rec.id, 60_000, 10).unwrap().unwrap();
        let after = s.get(&rec.id).unwrap().unwrap();
        assert_eq!(after.hash, keys::hash(&rotated));
        assert_eq!(after.previous, Some((rec.hash, 60_010)));
        s.add_usage(&[
            (rec.id.clone(), "2026-11-25".into(), 3),
            (rec.id.clone(), "2026-11-26".into(), 1),
        ])
        .unwrap();
        s.add_usage(&[(rec.id.clone(), "2026-11-25".into(), 2)])
            .unwrap();
        assert_eq!(
            s.usage(Some(&rec.id), "2026-11-01", "2026-11-30").unwrap(),
            vec![
                (rec.id.clone(), "2026-11-25".into(), 5),
                (rec.id.clone(), "2026-11-26".into(), 1)
            ]
        );
        assert!(s.revoke(&rec.id).unwrap());
        assert!(s.get(&rec.id).unwrap().is_none());
        assert!(!s.revoke(&rec.id).unwrap());
        let _ = v0;
    }
}
