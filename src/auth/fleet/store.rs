//! The key store in DynamoDB: what the SQLite store does, for a fleet of nodes.
//!
//! Keys are stored as keyed hashes only, as in the SQLite store; the secret they are keyed
//! with is an item of the keys table (made by the first node or command that opens the
//! store, or taken from the SQLite store an import moves), so what protects it is the
//! table's IAM policy and its encryption at rest. Every value ever issued keeps a claim
//! item, so no value is issued twice, across every node.
//!
//! Every change writes, in the same transaction, an entry to the change log under a number
//! taken from the change counter just before. Nodes read the log every poll
//! ([`DynamoStore::poll`]) and apply what they have not applied; a number whose entry has
//! not appeared after [`SETTLE`] belonged to a write that failed (or never finished) and is
//! passed over.
//!
//! Synchronous, like the SQLite store (the server calls it from blocking tasks): each call
//! runs on the store's own small runtime.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::{Value as Json, json};

use super::{Dynamo, DynamoError, Tables, get_bool, get_n, get_s, n, s};
use crate::auth::keys::{self, Hasher, KeyHash, Secret};
use crate::auth::store::{self, Changes, KeyRecord, KeyStore, NewKey, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// How long a change number may wait for its entry before it is passed over: longer than
/// any write with its retries takes.
pub const SETTLE_MS: i64 = 60_000;
/// How long change-log entries live (DynamoDB's TTL removes them).
pub const CHANGES_KEPT_SECONDS: i64 = 86_400;
/// Change-log entries before a load's position that the next poll reads again.
pub const REREAD_AT_LOAD: i64 = 64;
/// Keys per transaction of an import: two items each, and the change entry (100 at most).
const IMPORT_CHUNK: usize = 49;

fn hex(h: &KeyHash) -> String {
    store::secret_text(h)
}

fn unhex(text: &str) -> Option<KeyHash> {
    store::parse_secret(text)
}

fn key_pk(id: &str) -> String {
    format!("key#{id}")
}

fn claim_pk(hash: &KeyHash) -> String {
    format!("hash#{}", hex(hash))
}

fn key_of(tables: &Tables, pk: &str, sk: i64) -> Json {
    json!({ "TableName": tables.keys, "Key": { "pk": s(pk), "sk": n(sk) } })
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(failed)`
fn failed(e: DynamoError) -> StoreError {
    if e.not_found() {
        StoreError::Invalid(format!(
            "{e}: the fleet store's tables do not exist (run `ingest-gateway provision`)"
        ))
    } else {
        StoreError::Invalid(format!("fleet key store: {e}"))
    }
}

/// A key's record as its item holds it.
fn record_item(r: &KeyRecord) -> Json {
    let mut item = json!({
        "pk": s(&key_pk(&r.id)),
        "sk": n(0),
        "id": s(&r.id),
        "name": s(&r.name),
        "plan": s(&r.plan),
        "hash": s(&hex(&r.hash)),
        "enabled": { "BOOL": r.enabled },
        "created_at": n(r.created_at),
        "allow_no_origin": { "BOOL": r.allow_no_origin },
        "previous": { "L": r.previous.iter().map(|(h, until)| json!({ "M": { "h": s(&hex(h)), "until": n(*until) } })).collect::<Vec<_>>() },
        "origins": { "L": r.origins.iter().map(|o| s(o)).collect::<Vec<_>>() },
    });
    if let Some(e) = r.expires_at {
        item["expires_at"] = n(e);
    }
    if let Some(d) = &r.description {
        item["description"] = s(d);
    }
    if let Some(c) = &r.customer {
        item["customer"] = s(c);
    }
    item
}

fn parse_record(item: &Json) -> Option<KeyRecord> {
    let previous = item["previous"]["L"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((unhex(get_s(&p["M"], "h")?)?, get_n(&p["M"], "until")?)))
        .collect();
    let origins = item["origins"]["L"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["S"].as_str().map(str::to_string))
        .collect();
    Some(KeyRecord {
        id: get_s(item, "id")?.to_string(),
        name: get_s(item, "name")?.to_string(),
        plan: get_s(item, "plan")?.to_string(),
        hash: unhex(get_s(item, "hash")?)?,
        enabled: get_bool(item, "enabled")?,
        created_at: get_n(item, "created_at")?,
        expires_at: get_n(item, "expires_at"),
        description: get_s(item, "description").map(str::to_string),
        customer: get_s(item, "customer").map(str::to_string),
        previous,
        origins,
        allow_no_origin: get_bool(item, "allow_no_origin").unwrap_or(false),
    })
}

/// A claim on a value not claimed before (else the transaction fails).
fn claim_put(tables: &Tables, hash: &KeyHash, id: &str, state: &str, now_ms: i64) -> Json {
    let mut put = claim_set(tables, hash, id, state, now_ms);
    put["Put"]["ConditionExpression"] = json!("attribute_not_exists(pk)");
    put
}

/// A claim's new state, whatever it was.
fn claim_set(tables: &Tables, hash: &KeyHash, id: &str, state: &str, now_ms: i64) -> Json {
    json!({ "Put": {
        "TableName": tables.keys,
        "Item": { "pk": s(&claim_pk(hash)), "sk": n(0), "key_id": s(id), "state": s(state), "at": n(now_ms) },
    }})
}

fn change_put(tables: &Tables, seq: i64, ids: &[&str], now_ms: i64) -> Json {
    json!({ "Put": {
        "TableName": tables.keys,
        "Item": {
            "pk": s("changes"), "sk": n(seq),
            "ids": { "L": ids.iter().map(|i| s(i)).collect::<Vec<_>>() },
            "at": n(now_ms),
            "ttl": n(now_ms / 1000 + CHANGES_KEPT_SECONDS),
        },
    }})
}

/// Where this connection is in the change log.
#[derive(Default)]
struct Follow {
    /// Every entry up to here was applied or passed over.
    cursor: i64,
    /// Entries past the cursor already applied.
    applied: BTreeSet<i64>,
    /// When the first missing number past the cursor was first seen missing.
    gap_since: Option<(i64, i64)>,
    /// Keys changed since the last [`DynamoStore::changes_since`].
    pending: Vec<String>,
    /// Counts polls that found something (what `data_version` answers).
    version: i64,
}

struct Inner {
    dynamo: Dynamo,
    tables: Tables,
    hasher: Hasher,
    follow: Mutex<Follow>,
}

/// A runtime that is shut down without waiting (it may be dropped on an async thread).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub struct DynamoStore {
    rt: Runtime,
    inner: Inner,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("tables", &self.inner.tables)
            .finish()
    }
}

impl DynamoStore {
    /// Opens the store named by `prefix`: reads its secret, or makes one (or, given
    /// `adopt`, takes that one: an import from a SQLite store keeps its hashes). Fails if
    /// the tables do not exist, or if `adopt` differs from the secret the store has.
    pub fn open(
        prefix: &str,
        aws: &crate::integrations::AwsSettings,
        adopt: Option<Secret>,
    ) -> Result<DynamoStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("key-store")
            .enable_all()
            .build()?;
        let tables = Tables::new(prefix);
        let inner = rt.block_on(async move {
            let dynamo = Dynamo::new(crate::integrations::signer(aws).await);
            let secret = secret(&dynamo, &tables, adopt).await?;
            Ok::<_, StoreError>(Inner {
                dynamo,
                tables,
                hasher: Hasher::new(secret),
                follow: Mutex::default(),
            })
        })?;
        Ok(DynamoStore {
            rt: Runtime(Some(rt)),
            inner,
        })
    }

    /// Runs one of the store's operations to its end on the store's runtime.
    fn block<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let rt = self
            .rt
            .0
            .as_ref()
            .ok_or_else(|| StoreError::Invalid("the fleet key store is shut down".into()))?;
        rt.block_on(f)
    }

    pub fn hasher(&self) -> &Hasher {
        &self.inner.hasher
    }

    pub fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    pub fn create(&self, new: &NewKey, now_ms: i64) -> Result<(KeyRecord, String)> {
        self.block(self.inner.create(new, now_ms))
    }

    /// Creates keys in transactions of [`IMPORT_CHUNK`]; a chunk that one key spoils is
    /// created key by key, so each key is answered with its own error.
    pub fn create_all(
        &self,
        keys: &[NewKey],
        now_ms: i64,
    ) -> Result<Vec<Result<(KeyRecord, String)>>> {
        let i = &self.inner;
        self.block(async move {
            let mut out = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(IMPORT_CHUNK) {
                match i.create_chunk(chunk, now_ms).await {
                    Ok(made) => out.extend(made.into_iter().map(Ok)),
                    Err(_) => {
                        for new in chunk {
                            out.push(i.create(new, now_ms).await);
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// Calls `f` with every key (in no particular order).
    pub fn each(&self, mut f: impl FnMut(KeyRecord)) -> Result<()> {
        let i = &self.inner;
        self.block(async move {
            let mut bad = 0usize;
            let body = json!({
                "TableName": i.tables.keys,
                "FilterExpression": "begins_with(pk, :k)",
                "ExpressionAttributeValues": { ":k": s("key#") },
            });
            i.dynamo
                .each_page("Scan", body, |item| match parse_record(item) {
                    Some(r) => f(r),
                    None => bad += 1,
                })
                .await
                .map_err(failed)?;
            if bad > 0 {
                tracing::warn!(
                    items = bad,
                    "Key items the fleet store could not read were skipped."
                );
            }
            Ok(())
        })
    }

    pub fn list(&self) -> Result<Vec<KeyRecord>> {
        let mut all = Vec::new();
        self.each(|r| all.push(r))?;
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    pub fn get(&self, id: &str) -> Result<Option<KeyRecord>> {
        self.block(self.inner.get(id))
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool> {
        self.block(self.inner.set_enabled(id, enabled))
    }

    pub fn revoke(&self, id: &str, now_ms: i64) -> Result<bool> {
        self.block(self.inner.revoke(id, now_ms))
    }

    pub fn rotate(&self, id: &str, grace_ms: i64, now_ms: i64) -> Result<Option<String>> {
        self.block(self.inner.rotate(id, grace_ms, now_ms))
    }

    /// Adds admitted requests per (key id, `YYYY-MM-DD`).
    pub fn add_usage<K: AsRef<str>>(&self, deltas: &[(K, String, u64)]) -> Result<()> {
        let deltas: Vec<(String, String, u64)> = deltas
            .iter()
            .map(|(k, d, c)| (k.as_ref().to_string(), d.clone(), *c))
            .collect();
        self.block(self.inner.add_usage(&deltas, false))
    }

    /// Per-day counts between two `YYYY-MM-DD` days (inclusive), optionally for one key,
    /// ordered by key and day.
    pub fn usage(
        &self,
        key: Option<&str>,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<(String, String, u64)>> {
        let (from, to) = (format!("day#{from_day}"), format!("day#{to_day}"));
        let i = &self.inner;
        self.block(async move {
            let values = json!({ ":from": s(&from), ":to": s(&to) });
            let body = match key {
                Some(k) => json!({
                    "TableName": i.tables.usage,
                    "KeyConditionExpression": "pk = :k AND sk BETWEEN :from AND :to",
                    "ExpressionAttributeValues": { ":k": s(k), ":from": s(&from), ":to": s(&to) },
                    "ConsistentRead": true,
                }),
                None => json!({
                    "TableName": i.tables.usage,
                    "FilterExpression": "sk BETWEEN :from AND :to",
                    "ExpressionAttributeValues": values,
                    "ConsistentRead": true,
                }),
            };
            let op = if key.is_some() { "Query" } else { "Scan" };
            let mut rows = Vec::new();
            i.dynamo
                .each_page(op, body, |item| {
                    if let (Some(k), Some(day), Some(c)) = (
                        get_s(item, "pk"),
                        get_s(item, "sk").and_then(|d| d.strip_prefix("day#")),
                        get_n(item, "count"),
                    ) {
                        rows.push((
                            k.to_string(),
                            day.to_string(),
                            u64::try_from(c).unwrap_or(0),
                        ));
                    }
                })
                .await
                .map_err(failed)?;
            rows.sort();
            Ok(rows)
        })
    }

    /// Where the change log ends: a load after this sees everything up to it. The last
    /// [`REREAD_AT_LOAD`] entries are read again by the next poll: a change whose number was
    /// taken before this look but written after the load read its key is applied then.
    pub fn last_change(&self) -> Result<i64> {
        let i = &self.inner;
        self.block(async move {
            let newest = i.newest_change().await?;
            let mut f = i.follow.lock().unwrap_or_else(|p| p.into_inner());
            *f = Follow {
                cursor: newest.saturating_sub(REREAD_AT_LOAD).max(0),
                version: f.version,
                ..Follow::default()
            };
            Ok(f.version)
        })
    }

    /// Reads the change log: a number that changes when some key changed since the last
    /// look (the keys are kept for [`DynamoStore::changes_since`]).
    pub fn data_version(&self) -> Result<i64> {
        self.block(self.inner.poll(super::epoch_ms()))
    }

    /// The keys changed since the last call (at most `max`, else `ids` is `None` and the
    /// whole store is loaded again).
    pub fn changes_since(&self, _since: i64, max: usize) -> Result<Changes> {
        let mut f = self.inner.follow.lock().unwrap_or_else(|p| p.into_inner());
        let ids = std::mem::take(&mut f.pending);
        let mut ids: Vec<String> = ids;
        ids.sort_unstable();
        ids.dedup();
        // An entry naming every key (an import of a store): the whole store is loaded.
        let whole = ids.iter().any(|i| i == "*");
        Ok(Changes {
            last: f.version,
            ids: (ids.len() <= max && !whole).then_some(ids),
        })
    }

    /// Moves a SQLite store's keys (with their hashes, previous and retired values) and
    /// usage into this store, which must have been opened with the SQLite store's secret.
    /// Keys already here are left as they are (an import can be run again). Returns the
    /// number of keys imported and those skipped.
    pub fn import_store(&self, from: &KeyStore) -> Result<(usize, usize)> {
        if from.hasher().hash("probe") != self.hasher().hash("probe") {
            return Err(StoreError::Invalid(
                "the fleet store was made with another secret than this SQLite store's; import into a new fleet store (new prefix)".into(),
            ));
        }
        let records = from.list()?;
        let retired = from.retired()?;
        let usage = from.usage(None, "0000-01-01", "9999-12-31")?;
        let i = &self.inner;
        self.block(async move {
            let now = super::epoch_ms();
            let (mut imported, mut skipped) = (0, 0);
            for r in &records {
                match i.put_existing(r, now).await {
                    Ok(()) => imported += 1,
                    Err(DynamoError::Condition(_)) => skipped += 1,
                    Err(e) => return Err(failed(e)),
                }
            }
            for (hash, id, at) in &retired {
                let claim = claim_set(&i.tables, hash, id, "retired", *at);
                i.dynamo
                    .call("PutItem", &claim["Put"])
                    .await
                    .map_err(failed)?;
            }
            i.add_usage(&usage, true).await?;
            if imported > 0 {
                let seq = i.next_seq().await?;
                let t = json!({ "TransactItems": [change_put(&i.tables, seq, &["*"], now)] });
                i.dynamo
                    .call("TransactWriteItems", &t)
                    .await
                    .map_err(failed)?;
            }
            Ok((imported, skipped))
        })
    }
}

/// The store's secret: read, made, or adopted.
async fn secret(dynamo: &Dynamo, tables: &Tables, adopt: Option<Secret>) -> Result<Secret> {
    let read = json!({ "TableName": tables.keys, "Key": { "pk": s("meta"), "sk": n(1) }, "ConsistentRead": true });
    for _ in 0..2 {
        let found = dynamo.call("GetItem", &read).await.map_err(failed)?;
        if let Some(text) = get_s(&found["Item"], "secret") {
            let have = store::parse_secret(text).ok_or_else(|| {
                StoreError::Invalid("the fleet store's secret is not 64 hex digits".into())
            })?;
            if adopt.is_some_and(|a| a != have) {
                return Err(StoreError::Invalid(
                    "the fleet store was made with another secret than this SQLite store's; import into a new fleet store (new prefix)".into(),
                ));
            }
            return Ok(have);
        }
        let made = adopt.unwrap_or_else(keys::generate_secret);
        let put = json!({
            "TableName": tables.keys,
            "Item": { "pk": s("meta"), "sk": n(1), "secret": s(&store::secret_text(&made)), "scheme": s("hmac-sha256(sha256)") },
            "ConditionExpression": "attribute_not_exists(pk)",
        });
        match dynamo.call("PutItem", &put).await {
            Ok(_) => return Ok(made),
            // Another node made it first: read theirs.
            Err(DynamoError::Condition(_)) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err(StoreError::Invalid(
        "the fleet store's secret could be neither read nor made".into(),
    ))
}

impl Inner {
    async fn next_seq(&self) -> Result<i64> {
        let body = json!({
            "TableName": self.tables.keys,
            "Key": { "pk": s("meta"), "sk": n(0) },
            "UpdateExpression": "ADD #s :one",
            "ExpressionAttributeNames": { "#s": "seq" },
            "ExpressionAttributeValues": { ":one": n(1) },
            "ReturnValues": "UPDATED_NEW",
        });
        let answer = self
            .dynamo
            .call("UpdateItem", &body)
            .await
            .map_err(failed)?;
        get_n(&answer["Attributes"], "seq")
            .ok_or_else(|| StoreError::Invalid("the change counter answered no number".into()))
    }

    async fn newest_change(&self) -> Result<i64> {
        let body = json!({
            "TableName": self.tables.keys,
            "Key": { "pk": s("meta"), "sk": n(0) },
            "ConsistentRead": true,
        });
        let found = self.dynamo.call("GetItem", &body).await.map_err(failed)?;
        Ok(get_n(&found["Item"], "seq").unwrap_or(0))
    }

    async fn transact(&self, items: Vec<Json>) -> std::result::Result<(), DynamoError> {
        self.dynamo
            .call("TransactWriteItems", &json!({ "TransactItems": items }))
            .await
            .map(|_| ())
    }

    /// Why a value cannot be issued, from its claim.
    async fn refused_value(&self, hash: &KeyHash) -> StoreError {
        let body = key_of(&self.tables, &claim_pk(hash), 0);
        let found = self.dynamo.call("GetItem", &body).await;
        match found.as_ref().ok().map(|f| &f["Item"]) {
            Some(item) if get_s(item, "state") == Some("retired") => StoreError::Invalid(format!(
                "this value was key {}'s, which was revoked or rotated away; a value is never issued twice",
                get_s(item, "key_id").unwrap_or("?")
            )),
            _ => StoreError::Invalid("a key with this value already exists".into()),
        }
    }

    fn record(&self, new: &NewKey, now_ms: i64) -> Result<(KeyRecord, String)> {
        store::prepare(&self.hasher, new, now_ms)
    }

    fn key_put(&self, r: &KeyRecord) -> Json {
        json!({ "Put": {
            "TableName": self.tables.keys,
            "Item": record_item(r),
            "ConditionExpression": "attribute_not_exists(pk)",
        }})
    }

    async fn create(&self, new: &NewKey, now_ms: i64) -> Result<(KeyRecord, String)> {
        let (record, value) = self.record(new, now_ms)?;
        let seq = self.next_seq().await?;
        let items = vec![
            claim_put(&self.tables, &record.hash, &record.id, "current", now_ms),
            self.key_put(&record),
            change_put(&self.tables, seq, &[&record.id], now_ms),
        ];
        match self.transact(items).await {
            Ok(()) => Ok((record, value)),
            Err(DynamoError::Condition(_)) => Err(self.refused_value(&record.hash).await),
            Err(e) => Err(failed(e)),
        }
    }

    async fn create_chunk(
        &self,
        chunk: &[NewKey],
        now_ms: i64,
    ) -> std::result::Result<Vec<(KeyRecord, String)>, StoreError> {
        let made: Vec<(KeyRecord, String)> = chunk
            .iter()
            .map(|new| self.record(new, now_ms))
            .collect::<Result<_>>()?;
        let mut hashes: Vec<&KeyHash> = made.iter().map(|(r, _)| &r.hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        if hashes.len() != made.len() {
            return Err(StoreError::Invalid("repeated values".into()));
        }
        let seq = self.next_seq().await?;
        let ids: Vec<&str> = made.iter().map(|(r, _)| r.id.as_str()).collect();
        let mut items = Vec::with_capacity(made.len() * 2 + 1);
        for (r, _) in &made {
            items.push(claim_put(&self.tables, &r.hash, &r.id, "current", now_ms));
            items.push(self.key_put(r));
        }
        items.push(change_put(&self.tables, seq, &ids, now_ms));
        self.transact(items).await.map_err(failed)?;
        Ok(made)
    }

    /// Writes a record moved from another store, with claims on its values.
    async fn put_existing(
        &self,
        r: &KeyRecord,
        now_ms: i64,
    ) -> std::result::Result<(), DynamoError> {
        let mut items = vec![
            claim_put(&self.tables, &r.hash, &r.id, "current", now_ms),
            self.key_put(r),
        ];
        for (h, _) in &r.previous {
            items.push(claim_put(&self.tables, h, &r.id, "previous", now_ms));
        }
        self.transact(items).await
    }

    async fn get(&self, id: &str) -> Result<Option<KeyRecord>> {
        let mut body = key_of(&self.tables, &key_pk(id), 0);
        body["ConsistentRead"] = json!(true);
        let found = self.dynamo.call("GetItem", &body).await.map_err(failed)?;
        Ok(found.get("Item").and_then(parse_record))
    }

    async fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool> {
        let seq = self.next_seq().await?;
        let mut update = key_of(&self.tables, &key_pk(id), 0);
        update["UpdateExpression"] = json!("SET #e = :e");
        update["ExpressionAttributeNames"] = json!({ "#e": "enabled" });
        update["ConditionExpression"] = json!("attribute_exists(pk)");
        update["ExpressionAttributeValues"] = json!({ ":e": { "BOOL": enabled } });
        let items = vec![
            json!({ "Update": update }),
            change_put(&self.tables, seq, &[id], super::epoch_ms()),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(DynamoError::Condition(_)) => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }

    async fn revoke(&self, id: &str, now_ms: i64) -> Result<bool> {
        let Some(r) = self.get(id).await? else {
            return Ok(false);
        };
        let seq = self.next_seq().await?;
        let mut delete = key_of(&self.tables, &key_pk(id), 0);
        delete["ConditionExpression"] = json!("#h = :h");
        delete["ExpressionAttributeNames"] = json!({ "#h": "hash" });
        delete["ExpressionAttributeValues"] = json!({ ":h": s(&hex(&r.hash)) });
        let mut items = vec![json!({ "Delete": delete })];
        for h in std::iter::once(&r.hash).chain(r.previous.iter().map(|(h, _)| h)) {
            items.push(claim_set(&self.tables, h, id, "retired", now_ms));
        }
        items.push(change_put(&self.tables, seq, &[id], now_ms));
        match self.transact(items).await {
            Ok(()) => Ok(true),
            // Changed meanwhile (rotated, or revoked by another command): look again.
            Err(DynamoError::Condition(_)) => Box::pin(self.revoke(id, now_ms)).await,
            Err(e) => Err(failed(e)),
        }
    }

    async fn rotate(&self, id: &str, grace_ms: i64, now_ms: i64) -> Result<Option<String>> {
        let Some(mut r) = self.get(id).await? else {
            return Ok(None);
        };
        let value = keys::generate();
        let hash = self.hasher.hash(&value);
        let old = r.hash;
        let mut items = vec![claim_put(&self.tables, &hash, id, "current", now_ms)];
        let (kept, expired): (Vec<_>, Vec<_>) =
            r.previous.iter().partition(|(_, until)| *until > now_ms);
        for (h, _) in &expired {
            items.push(claim_set(&self.tables, h, id, "retired", now_ms));
        }
        r.previous = kept;
        if grace_ms > 0 {
            r.previous.push((old, now_ms.saturating_add(grace_ms)));
            items.push(claim_set(&self.tables, &old, id, "previous", now_ms));
        } else {
            items.push(claim_set(&self.tables, &old, id, "retired", now_ms));
        }
        r.hash = hash;
        let seq = self.next_seq().await?;
        items.push(json!({ "Put": {
            "TableName": self.tables.keys,
            "Item": record_item(&r),
            "ConditionExpression": "#h = :h",
            "ExpressionAttributeNames": { "#h": "hash" },
            "ExpressionAttributeValues": { ":h": s(&hex(&old)) },
        }}));
        items.push(change_put(&self.tables, seq, &[id], now_ms));
        match self.transact(items).await {
            Ok(()) => Ok(Some(value)),
            // Rotated or revoked meanwhile: look again.
            Err(DynamoError::Condition(_)) => Box::pin(self.rotate(id, grace_ms, now_ms)).await,
            Err(e) => Err(failed(e)),
        }
    }

    /// Adds (or, `set`, writes) per-day counts, a few calls at a time.
    async fn add_usage(&self, deltas: &[(String, String, u64)], set: bool) -> Result<()> {
        for chunk in deltas.chunks(16) {
            let calls = chunk.iter().map(|(key, day, count)| {
                let body = json!({
                    "TableName": self.tables.usage,
                    "Key": { "pk": s(key), "sk": s(&format!("day#{day}")) },
                    "UpdateExpression": if set { "SET #c = :n" } else { "ADD #c :n" },
                    "ExpressionAttributeNames": { "#c": "count" },
                    "ExpressionAttributeValues": { ":n": n(i64::try_from(*count).unwrap_or(i64::MAX)) },
                });
                async move { self.dynamo.call("UpdateItem", &body).await }
            });
            for r in futures_util::future::join_all(calls).await {
                r.map_err(failed)?;
            }
        }
        Ok(())
    }

    /// Reads the log past the cursor and notes the keys of entries not yet applied.
    async fn poll(&self, now_ms: i64) -> Result<i64> {
        let cursor = self.follow.lock().unwrap_or_else(|p| p.into_inner()).cursor;
        let body = json!({
            "TableName": self.tables.keys,
            "KeyConditionExpression": "pk = :c AND sk > :s",
            "ExpressionAttributeValues": { ":c": s("changes"), ":s": n(cursor) },
            "ConsistentRead": true,
        });
        let mut entries: Vec<(i64, Vec<String>)> = Vec::new();
        self.dynamo
            .each_page("Query", body, |item| {
                if let Some(seq) = get_n(item, "sk") {
                    let ids = item["ids"]["L"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|i| i["S"].as_str().map(str::to_string))
                        .collect();
                    entries.push((seq, ids));
                }
            })
            .await
            .map_err(failed)?;
        let mut f = self.follow.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = false;
        let mut highest = f.cursor;
        for (seq, ids) in entries {
            highest = highest.max(seq);
            if seq <= f.cursor || !f.applied.insert(seq) {
                continue;
            }
            found = true;
            f.pending.extend(ids);
        }
        // Advance over what is applied; a number missing for longer than SETTLE is passed.
        loop {
            let next = f.cursor + 1;
            if next > highest {
                f.gap_since = None;
                break;
            }
            if f.applied.remove(&next) {
                f.cursor = next;
                f.gap_since = None;
                continue;
            }
            match f.gap_since {
                Some((seq, since)) if seq == next && now_ms - since > SETTLE_MS => {
                    f.cursor = next;
                    f.gap_since = None;
                }
                Some((seq, _)) if seq == next => break,
                _ => {
                    f.gap_since = Some((next, now_ms));
                    break;
                }
            }
        }
        if found {
            f.version += 1;
        }
        Ok(f.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_items() {
        let r = KeyRecord {
            id: "k1".into(),
            name: "partner".into(),
            plan: "basic".into(),
            hash: [7; 32],
            enabled: true,
            created_at: 1_000,
            expires_at: Some(2_000),
            description: None,
            customer: Some("acme".into()),
            previous: vec![([9; 32], 5_000)],
            origins: vec!["https://a.example".into()],
            allow_no_origin: true,
        };
        assert_eq!(parse_record(&record_item(&r)), Some(r));
        assert_eq!(parse_record(&json!({"pk": s("key#x")})), None);
    }
}
