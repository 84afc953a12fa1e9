//! The embedded key store: one SQLite file (WAL) shared by the server and the CLI.
//!
//! Keys are stored as keyed hashes only (see `keys`), under a secret kept beside the store
//! (`<store>.secret`, 0600, made with the store; back the two up together: without the
//! secret no key can be checked). A store of plain SHA-256 hashes from an older version is
//! migrated when it is opened. Every value ever issued stays recorded: a rotated key's
//! previous values work until each one's own grace ends, and a revoked or retired value can
//! never be issued again. The server never reads this file on the request path: it loads a snapshot and reloads it when `PRAGMA data_version` says another
//! connection (the CLI) committed. Usage counts are kept per key and UTC day.
//!
//! Synchronous: the server calls it from blocking tasks.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::keys::{self, Hasher, KeyHash, Secret};

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
    /// After rotations, each previous value's hash and until when it still works.
    pub previous: Vec<(KeyHash, i64)>,
    /// A browser key's origins (`keys create --origins`): requests from other pages are
    /// refused. Empty: any client.
    pub origins: Vec<String>,
    /// A browser key is also accepted from clients that send no `Origin`.
    pub allow_no_origin: bool,
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
    /// Origins the key is bound to (lower-case `scheme://host[:port]`).
    pub origins: Vec<String>,
    pub allow_no_origin: bool,
}

pub struct KeyStore {
    conn: Connection,
    hasher: Hasher,
}

/// How the store's hashes are made: HMAC-SHA256 under the store's secret of the key's SHA-256.
const HASH_SCHEME: &str = "hmac-sha256(sha256)";

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
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS previous_keys (
    key_id TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    valid_until INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS retired_keys (
    key_hash BLOB PRIMARY KEY,
    key_id TEXT NOT NULL,
    retired_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS key_origins (
    key_id TEXT PRIMARY KEY,
    origins TEXT NOT NULL,
    allow_no_origin INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (key_id, day)
);
CREATE TABLE IF NOT EXISTS key_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS key_inserted AFTER INSERT ON api_keys BEGIN
    INSERT INTO key_changes (key_id, at) VALUES (NEW.id, strftime('%s', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS key_updated AFTER UPDATE ON api_keys BEGIN
    INSERT INTO key_changes (key_id, at) VALUES (OLD.id, strftime('%s', 'now'));
    INSERT INTO key_changes (key_id, at) SELECT NEW.id, strftime('%s', 'now') WHERE NEW.id != OLD.id;
END;
CREATE TRIGGER IF NOT EXISTS key_deleted AFTER DELETE ON api_keys BEGIN
    INSERT INTO key_changes (key_id, at) VALUES (OLD.id, strftime('%s', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS previous_inserted AFTER INSERT ON previous_keys BEGIN
    INSERT INTO key_changes (key_id, at) VALUES (NEW.key_id, strftime('%s', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS previous_deleted AFTER DELETE ON previous_keys BEGIN
    INSERT INTO key_changes (key_id, at) VALUES (OLD.key_id, strftime('%s', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS origins_inserted AFTER INSERT ON key_origins BEGIN
    INSERT INTO key_changes (key_id, at) VALUES (NEW.key_id, strftime('%s', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS origins_updated AFTER UPDATE ON key_origins BEGIN
    INSERT INTO key_changes (key_id, at) VALUES (OLD.key_id, strftime('%s', 'now'));
END;
CREATE TRIGGER IF NOT EXISTS origins_deleted AFTER DELETE ON key_origins BEGIN
    INSERT INTO key_changes (key_id, at) VALUES (OLD.key_id, strftime('%s', 'now'));
END;
";

/// What changed in the store after a point in its change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The log's newest entry (the point to ask from next time).
    pub last: i64,
    /// The keys changed (created, edited, rotated or deleted) after the point asked from.
    /// `None`: the log no longer reaches back that far (pruned), so only a whole reload
    /// tells what changed.
    pub ids: Option<Vec<String>>,
}

/// How long change-log entries are kept: a server that has not looked for longer loads
/// the whole store.
pub const CHANGES_KEPT_SECONDS: i64 = 86_400;

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
        previous: Vec::new(),
        origins: Vec::new(),
        allow_no_origin: false,
    })
}

/// The secret's file, beside the store.
pub fn secret_path(store: &Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.secret", store.display()))
}

/// Reads the store's secret, or (when `create`) makes it if there is none yet.
fn secret(store: &Path, create: bool) -> Result<Secret> {
    let path = secret_path(store);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_secret(&text).ok_or_else(|| {
            StoreError::Invalid(format!(
                "{} is not a key store secret (64 hex digits)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let made = keys::generate_secret();
            let text = secret_text(&made);
            match write_private(&path, format!("{text}\n").as_bytes()) {
                Ok(()) => Ok(made),
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => secret(store, false),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Invalid(format!(
            "the key store's secret {} is missing: no key can be checked without it (restore it from the backup made with the store)",
            path.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The secret of the store at `path` (to move its hashes to another store).
pub fn read_secret(path: &Path) -> Result<Secret> {
    secret(path, false)
}

/// A secret as its file holds it: 64 hex digits.
pub fn secret_text(secret: &Secret) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn parse_secret(text: &str) -> Option<Secret> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Writes a new file only its owner can read; fails if it exists.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
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

/// An origin a browser key is bound to: `scheme://host[:port]`, lower-case, as browsers
/// send `Origin`.
fn check_origin(o: &str) -> Result<()> {
    let ok = o.split_once("://").is_some_and(|(scheme, host)| {
        !scheme.is_empty()
            && scheme.bytes().all(|b| b.is_ascii_lowercase())
            && !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:[]".contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{o:?} is not an origin (scheme://host[:port], lower-case, no path)"
        )))
    }
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

/// Brings a store to the current hash scheme and returns its secret. A new store gets a
/// secret; a store of plain SHA-256 hashes (no scheme recorded) has each hash replaced by its
/// keyed hash, and its one-slot previous values moved to `previous_keys`, in one
/// transaction that a concurrent opener waits for.
fn migrate(conn: &Connection, path: &Path) -> Result<Secret> {
    let scheme = |conn: &Connection| -> Result<Option<String>> {
        Ok(conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'hash_scheme'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    };
    match scheme(conn)?.as_deref() {
        Some(HASH_SCHEME) => return secret(path, false),
        Some(other) => {
            return Err(StoreError::Invalid(format!(
                "the key store uses hash scheme {other:?}, which this version does not know"
            )));
        }
        None => {}
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let done = (|| {
        if scheme(conn)?.is_some() {
            return secret(path, false);
        }
        let secret = secret(path, true)?;
        let hasher = Hasher::new(secret);
        let legacy: Vec<LegacyRow> = conn
            .prepare("SELECT id, key_hash, previous_hash, previous_valid_until FROM api_keys")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, hash, previous, until) in legacy {
            let rehash = |h: Vec<u8>| hash_from(h).map(|h| hasher.rehash(&h));
            conn.execute(
                "UPDATE api_keys SET key_hash = ?2, previous_hash = NULL, previous_valid_until = NULL WHERE id = ?1",
                params![id, rehash(hash)?.as_slice()],
            )?;
            if let (Some(previous), Some(until)) = (previous, until) {
                conn.execute(
                    "INSERT INTO previous_keys (key_id, key_hash, valid_until) VALUES (?1, ?2, ?3)",
                    params![id, rehash(previous)?.as_slice(), until],
                )?;
            }
        }
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('hash_scheme', ?1)",
            [HASH_SCHEME],
        )?;
        Ok(secret)
    })();
    match done {
        Ok(secret) => {
            conn.execute_batch("COMMIT")?;
            Ok(secret)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// A new key's record and value, checked: its name, customer, value and origins.
pub(super) fn prepare(hasher: &Hasher, new: &NewKey, now_ms: i64) -> Result<(KeyRecord, String)> {
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
    for o in &new.origins {
        check_origin(o)?;
    }
    let record = KeyRecord {
        id: keys::generate_id(),
        name: new.name.clone(),
        plan: new.plan.clone(),
        hash: hasher.hash(&value),
        enabled: new.enabled,
        created_at: now_ms,
        expires_at: new.expires_at,
        description: new.description.clone(),
        customer: new.customer.clone(),
        previous: Vec::new(),
        origins: new.origins.clone(),
        allow_no_origin: new.allow_no_origin,
    };
    Ok((record, value))
}

/// Creates a key on `conn` (the store's connection or a transaction on it).
fn insert(
    conn: &Connection,
    hasher: &Hasher,
    new: &NewKey,
    now_ms: i64,
) -> Result<(KeyRecord, String)> {
    let (record, value) = prepare(hasher, new, now_ms)?;
    KeyStore::check_unused(conn, &record.hash)?;
    let inserted = conn.prepare_cached(
        "INSERT INTO api_keys (id, name, plan, key_hash, enabled, created_at, expires_at, description, customer)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
            record.id,
            record.name,
            record.plan,
            record.hash.as_slice(),
            i64::from(record.enabled),
            record.created_at,
            record.expires_at,
            record.description,
            record.customer
        ]);
    if inserted.is_ok() && !record.origins.is_empty() {
        conn.execute(
            "INSERT OR REPLACE INTO key_origins (key_id, origins, allow_no_origin) VALUES (?1, ?2, ?3)",
            params![
                record.id,
                record.origins.join(" "),
                i64::from(record.allow_no_origin)
            ],
        )?;
    }
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

/// Origins as `key_origins` holds them: separated by spaces.
fn split_origins(list: &str) -> Vec<String> {
    list.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A key as an older store holds it: id, SHA-256 hash, previous hash and its grace.
type LegacyRow = (String, Vec<u8>, Option<Vec<u8>>, Option<i64>);

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
        let hasher = Hasher::new(migrate(&conn, path)?);
        Ok(KeyStore { conn, hasher })
    }

    /// Hashes keys the way this store does.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Why a value cannot be issued: it is, or was, some key's.
    fn check_unused(conn: &Connection, hash: &KeyHash) -> Result<()> {
        let retired: Option<String> = conn
            .prepare_cached("SELECT key_id FROM retired_keys WHERE key_hash = ?1")?
            .query_row([hash.as_slice()], |r| r.get(0))
            .optional()?;
        if let Some(id) = retired {
            return Err(StoreError::Invalid(format!(
                "this value was key {id}'s, which was revoked or rotated away; a value is never issued twice"
            )));
        }
        let taken: i64 = conn
            .prepare_cached("SELECT (SELECT COUNT(*) FROM api_keys WHERE key_hash = ?1) + (SELECT COUNT(*) FROM previous_keys WHERE key_hash = ?1)")?
            .query_row([hash.as_slice()], |r| r.get(0))?;
        if taken > 0 {
            return Err(StoreError::Invalid(
                "a key with this value already exists".into(),
            ));
        }
        Ok(())
    }

    /// Each key's previous values, still in their grace or not, and its origins.
    fn previous_of(&self, records: &mut [KeyRecord]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_hash, valid_until FROM previous_keys WHERE key_id = ?1 ORDER BY valid_until",
        )?;
        let mut origins = self
            .conn
            .prepare_cached("SELECT origins, allow_no_origin FROM key_origins WHERE key_id = ?1")?;
        for r in records {
            r.previous = stmt
                .query_map([&r.id], |row| Ok((hash_from(row.get(0)?)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            if let Some((list, no_origin)) = origins
                .query_row([&r.id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? != 0))
                })
                .optional()?
            {
                r.origins = split_origins(&list);
                r.allow_no_origin = no_origin;
            }
        }
        Ok(())
    }

    /// Changes whenever another connection commits (cheap; used to detect CLI changes).
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Creates a key; returns its record and the key, which is not kept anywhere.
    pub fn create(&self, new: &NewKey, now_ms: i64) -> Result<(KeyRecord, String)> {
        insert(&self.conn, &self.hasher, new, now_ms)
    }

    /// Creates keys in one transaction (an import), each as [`KeyStore::create`] would: a
    /// key that cannot be created is answered with its error and the others are created.
    /// Err only if the transaction itself fails (then none is created).
    pub fn create_all(
        &mut self,
        keys: &[NewKey],
        now_ms: i64,
    ) -> Result<Vec<Result<(KeyRecord, String)>>> {
        let tx = self.conn.transaction()?;
        let results = keys
            .iter()
            .map(|new| insert(&tx, &self.hasher, new, now_ms))
            .collect();
        tx.commit()?;
        Ok(results)
    }

    /// Calls `f` with every key, in the order of [`KeyStore::list`], holding one record at a
    /// time (a million keys load without a million records in memory).
    pub fn each(&self, mut f: impl FnMut(KeyRecord)) -> Result<()> {
        let mut previous: std::collections::HashMap<String, Vec<(KeyHash, i64)>> =
            std::collections::HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT key_id, key_hash, valid_until FROM previous_keys ORDER BY valid_until",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                hash_from(row.get(1)?)?,
                row.get(2)?,
            ))
        })?;
        for row in rows {
            let (id, hash, until) = row?;
            previous.entry(id).or_default().push((hash, until));
        }
        let mut origins: std::collections::HashMap<String, (String, bool)> =
            std::collections::HashMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT key_id, origins, allow_no_origin FROM key_origins")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)? != 0,
            ))
        })?;
        for row in rows {
            let (id, list, no_origin) = row?;
            origins.insert(id, (list, no_origin));
        }
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let mut r = record(row)?;
            if let Some(p) = previous.remove(&r.id) {
                r.previous = p;
            }
            if let Some((list, no_origin)) = origins.remove(&r.id) {
                r.origins = split_origins(&list);
                r.allow_no_origin = no_origin;
            }
            f(r);
        }
        Ok(())
    }

    /// The newest entry of the change log (0: none yet).
    pub fn last_change(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM key_changes", [], |r| {
                r.get(0)
            })?)
    }

    /// The keys changed after `since` (a [`Changes::last`] or [`KeyStore::last_change`]),
    /// at most `max` of them: more, and `ids` is `None` as for a pruned log.
    pub fn changes_since(&self, since: i64, max: usize) -> Result<Changes> {
        let last = self.last_change()?;
        if last <= since {
            return Ok(Changes {
                last,
                ids: Some(Vec::new()),
            });
        }
        // The entry right after `since` must still be there, else some were pruned.
        let first: Option<i64> = self.conn.query_row(
            "SELECT MIN(seq) FROM key_changes WHERE seq > ?1",
            [since],
            |r| r.get(0),
        )?;
        if first != Some(since + 1) {
            return Ok(Changes { last, ids: None });
        }
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT key_id FROM key_changes WHERE seq > ?1 AND seq <= ?2 LIMIT ?3",
        )?;
        let ids = stmt
            .query_map(
                params![
                    since,
                    last,
                    i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1)
                ],
                |r| r.get::<_, String>(0),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Changes {
            last,
            ids: (ids.len() <= max).then_some(ids),
        })
    }

    /// Forgets change-log entries older than [`CHANGES_KEPT_SECONDS`] before `now_ms`.
    pub fn prune_changes(&self, now_ms: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM key_changes WHERE at < ?1",
            [now_ms / 1000 - CHANGES_KEPT_SECONDS],
        )?)
    }

    pub fn list(&self) -> Result<Vec<KeyRecord>> {
        let mut all = Vec::new();
        self.each(|r| all.push(r))?;
        Ok(all)
    }

    pub fn get(&self, id: &str) -> Result<Option<KeyRecord>> {
        let found = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"),
                [id],
                record,
            )
            .optional()?;
        let mut rows: Vec<KeyRecord> = found.into_iter().collect();
        self.previous_of(&mut rows)?;
        Ok(rows.pop())
    }

    /// Enables or disables a key; false if there is no such key.
    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE api_keys SET enabled = ?2 WHERE id = ?1",
            params![id, i64::from(enabled)],
        )? == 1)
    }

    /// Deletes a key for good: its values (current and previous) are retired, so none can be
    /// issued again, and its usage history stays. False if there is no such key.
    pub fn revoke(&mut self, id: &str, now_ms: i64) -> Result<bool> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO retired_keys (key_hash, key_id, retired_at)
             SELECT key_hash, id, ?2 FROM api_keys WHERE id = ?1
             UNION ALL SELECT key_hash, key_id, ?2 FROM previous_keys WHERE key_id = ?1",
            params![id, now_ms],
        )?;
        tx.execute("DELETE FROM previous_keys WHERE key_id = ?1", [id])?;
        let deleted = tx.execute("DELETE FROM api_keys WHERE id = ?1", [id])? == 1;
        tx.commit()?;
        Ok(deleted)
    }

    /// Gives a key a new value; the current one keeps working until `now + grace` (each
    /// previous value keeps its own grace, so rotating twice cuts no one short). Values past
    /// their grace are retired. Returns the new key, or `None` if there is no such key.
    pub fn rotate(&mut self, id: &str, grace_ms: i64, now_ms: i64) -> Result<Option<String>> {
        let value = keys::generate();
        let hash = self.hasher.hash(&value);
        let tx = self.conn.transaction()?;
        let current: Option<Vec<u8>> = tx
            .query_row("SELECT key_hash FROM api_keys WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(current) = current else {
            return Ok(None);
        };
        if grace_ms > 0 {
            tx.execute(
                "INSERT INTO previous_keys (key_id, key_hash, valid_until) VALUES (?1, ?2, ?3)",
                params![id, current, now_ms.saturating_add(grace_ms)],
            )?;
        } else {
            tx.execute(
                "INSERT OR IGNORE INTO retired_keys (key_hash, key_id, retired_at) VALUES (?1, ?2, ?3)",
                params![current, id, now_ms],
            )?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO retired_keys (key_hash, key_id, retired_at)
             SELECT key_hash, key_id, ?2 FROM previous_keys WHERE key_id = ?1 AND valid_until <= ?2",
            params![id, now_ms],
        )?;
        tx.execute(
            "DELETE FROM previous_keys WHERE key_id = ?1 AND valid_until <= ?2",
            params![id, now_ms],
        )?;
        tx.execute(
            "UPDATE api_keys SET key_hash = ?2 WHERE id = ?1",
            params![id, hash.as_slice()],
        )?;
        tx.commit()?;
        Ok(Some(value))
    }

    /// Every value revoked or rotated away: its hash, the key it was, and when.
    pub fn retired(&self) -> Result<Vec<(KeyHash, String, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key_hash, key_id, retired_at FROM retired_keys ORDER BY retired_at")?;
        let rows = stmt
            .query_map([], |r| Ok((hash_from(r.get(0)?)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Adds request counts per (key id, `YYYY-MM-DD`), in one transaction.
    pub fn add_usage<K: AsRef<str>>(&mut self, deltas: &[(K, String, u64)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO usage (key_id, day, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key_id, day) DO UPDATE SET count = count + excluded.count",
            )?;
            for (key, day, n) in deltas {
                stmt.execute(params![
                    key.as_ref(),
                    day,
                    i64::try_from(*n).unwrap_or(i64::MAX)
                ])?;
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
        assert_eq!(rec.hash, s.hasher().hash(&value));
        assert_ne!(rec.hash, keys::sha256(&value), "keyed, not plain SHA-256");
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
        assert_eq!(after.hash, s.hasher().hash(&rotated));
        assert_eq!(after.previous, vec![(rec.hash, 60_010)]);
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
        assert!(s.revoke(&rec.id, 20).unwrap());
        assert!(s.get(&rec.id).unwrap().is_none());
        assert!(!s.revoke(&rec.id, 20).unwrap());
        let _ = v0;
    }

    fn new_key(value: &str) -> NewKey {
        NewKey {
            name: "n".into(),
            plan: "p".into(),
            value: Some(value.into()),
            enabled: true,
            ..NewKey::default()
        }
    }

    #[test]
    fn a_value_once_issued_is_never_issued_again() {
        let (mut s, _) = store();
        let (rec, _) = s.create(&new_key("a-value-revoked-later-0001"), 0).unwrap();
        assert!(s.revoke(&rec.id, 5).unwrap());
        let err = s
            .create(&new_key("a-value-revoked-later-0001"), 6)
            .unwrap_err();
        assert!(err.to_string().contains("never issued twice"), "{err}");
        // Nor a value rotated away without grace, nor one still in its grace.
        let (rec, first) = s.create(&new_key("a-value-rotated-away-0002"), 0).unwrap();
        let second = s.rotate(&rec.id, 0, 10).unwrap().unwrap();
        assert!(
            s.create(&new_key("a-value-rotated-away-0002"), 11).is_err(),
            "{first}"
        );
        s.rotate(&rec.id, 60_000, 20).unwrap().unwrap();
        let err = s.create(&new_key(&second), 21).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn each_previous_value_keeps_its_own_grace() {
        let (mut s, _) = store();
        let (rec, _) = s
            .create(&new_key("the-first-value-of-key-0003"), 0)
            .unwrap();
        s.rotate(&rec.id, 100_000, 1_000).unwrap().unwrap();
        let first_grace = s.get(&rec.id).unwrap().unwrap().previous;
        assert_eq!(first_grace, vec![(rec.hash, 101_000)]);
        s.rotate(&rec.id, 10_000, 2_000).unwrap().unwrap();
        let both = s.get(&rec.id).unwrap().unwrap().previous;
        assert_eq!(both.len(), 2);
        assert!(
            both.contains(&(rec.hash, 101_000)),
            "the first kept its grace: {both:?}"
        );
        // A rotation after a grace ended retires that value.
        s.rotate(&rec.id, 10_000, 200_000).unwrap().unwrap();
        assert_eq!(s.get(&rec.id).unwrap().unwrap().previous.len(), 1);
        assert!(
            s.create(&new_key("the-first-value-of-key-0003"), 200_001)
                .is_err()
        );
    }

    #[test]
    fn a_store_of_plain_sha256_hashes_is_migrated_in_place() {
        let dir =
            std::env::temp_dir().join(format!("ingest-gateway-legacy-{}", keys::generate_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.db");
        {
            // The layout and hashes of a store made before keyed hashes.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&SCHEMA[..SCHEMA.find("CREATE TABLE IF NOT EXISTS meta").unwrap()])
                .unwrap();
            conn.execute(
                "INSERT INTO api_keys (id, name, plan, key_hash, enabled, created_at, previous_hash, previous_valid_until)
                 VALUES ('k1', 'old', 'p', ?1, 1, 0, ?2, 99000)",
                params![
                    keys::sha256("legacy-current-value-0004").as_slice(),
                    keys::sha256("legacy-previous-value-0005").as_slice()
                ],
            )
            .unwrap();
        }
        let s = KeyStore::open(&path).unwrap();
        let rec = s.get("k1").unwrap().unwrap();
        assert_eq!(rec.hash, s.hasher().hash("legacy-current-value-0004"));
        assert_eq!(
            rec.previous,
            vec![(s.hasher().hash("legacy-previous-value-0005"), 99_000)]
        );
        drop(s);
        // Opening again changes nothing; without the secret the store refuses to open.
        let again = KeyStore::open(&path).unwrap();
        assert_eq!(again.get("k1").unwrap().unwrap(), rec);
        drop(again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(secret_path(&path))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_file(secret_path(&path)).unwrap();
        let err = KeyStore::open(&path).err().unwrap();
        assert!(err.to_string().contains("secret"), "{err}");
    }
}
