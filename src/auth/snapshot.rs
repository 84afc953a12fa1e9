//! The keys as the request path reads them: compact enough that a million fit in about
//! 120 MB (a 48-byte slot per hash, a 40-byte entry per key, its text, the index), and
//! changed in place of a few keys without copying the million.
//!
//! A [`Table`] holds keys in flat arrays: one slot per usable hash (a key's current value and
//! each previous value in its grace) in a hash table of `u32` indices, one fixed-size entry
//! per key, and all their text (ids, names, customers) in one string. A [`Snapshot`] is a
//! large table loaded from the whole store plus a small one of the keys changed since: a
//! changed key is found in the small table, and its state in the large one is ignored (by
//! id), so issuing, disabling, rotating or revoking one key among a million costs a table of
//! the changed keys, not a second copy of everything.

use std::collections::HashSet;
use std::sync::Arc;

use super::keys::{self, Hasher, KeyHash};
use super::store::KeyRecord;

/// A key's fixed-size part; its text is in the table's `text`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the id, then the name, then the customer start in `text`.
    text: u32,
    id_len: u8,
    name_len: u16,
    /// `u16::MAX`: no customer.
    customer_len: u16,
    /// Index into the table's plan names.
    plan: u16,
    enabled: bool,
    allow_no_origin: bool,
    created_at: i64,
    /// `i64::MAX`: never.
    expires_at: i64,
    /// Index + 1 into the table's origin lists; 0: any client.
    origins: u32,
}

/// A usable hash: the key it opens, and until when (`i64::MAX`: the current value).
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: KeyHash,
    valid_until: i64,
    entry: u32,
}

/// Keys in flat arrays (see the module's documentation).
#[derive(Default)]
pub struct Table {
    index: hashbrown::HashTable<u32>,
    slots: Vec<Slot>,
    entries: Vec<Entry>,
    text: String,
    plans: Vec<Box<str>>,
    origins: Vec<Box<[Box<str>]>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("keys", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// The table's hash of a stored hash: its first 8 bytes (an HMAC output is uniform).
fn bucket(hash: &KeyHash) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(b)
}

/// Text longer than an entry can point to is cut (ids are 10 characters, names and
/// customers are checked to be short when created; this only bounds a hand-edited store).
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Table {
    /// Builds a table from records (streamed from the store: nothing else is held per key).
    pub fn build(records: impl IntoIterator<Item = KeyRecord>) -> Table {
        let mut t = Table::default();
        for r in records {
            t.push(r);
        }
        t.finish()
    }

    /// Gives back what the arrays reserved beyond their contents.
    pub fn finish(mut self) -> Table {
        self.slots.shrink_to_fit();
        self.entries.shrink_to_fit();
        self.text.shrink_to_fit();
        let slots = &self.slots;
        self.index
            .shrink_to_fit(|&i| bucket(&slots[i as usize].hash));
        self
    }

    /// Adds a key (a table is built by [`Table::build`], or by pushing each record and then
    /// [`Table::finish`]). A table holds up to 4 billion keys and 65,535 plans; beyond,
    /// records are left out.
    pub fn push(&mut self, r: KeyRecord) {
        let Ok(entry) = u32::try_from(self.entries.len()) else {
            return;
        };
        let plan = match self.plans.iter().position(|p| **p == *r.plan) {
            Some(i) => i,
            None => {
                self.plans.push(r.plan.as_str().into());
                self.plans.len() - 1
            }
        };
        let (Ok(plan), Ok(text)) = (u16::try_from(plan), u32::try_from(self.text.len())) else {
            return;
        };
        let id = clip(&r.id, usize::from(u8::MAX));
        let name = clip(&r.name, usize::from(u16::MAX - 1));
        let customer = r
            .customer
            .as_deref()
            .map(|c| clip(c, usize::from(u16::MAX - 1)));
        self.text.push_str(id);
        self.text.push_str(name);
        self.text.push_str(customer.unwrap_or(""));
        let origins = if r.origins.is_empty() {
            0
        } else {
            self.origins
                .push(r.origins.iter().map(|o| o.as_str().into()).collect());
            u32::try_from(self.origins.len()).unwrap_or(0)
        };
        self.entries.push(Entry {
            text,
            id_len: id.len() as u8,
            name_len: name.len() as u16,
            customer_len: customer.map_or(u16::MAX, |c| c.len() as u16),
            plan,
            enabled: r.enabled,
            allow_no_origin: r.allow_no_origin,
            created_at: r.created_at,
            expires_at: r.expires_at.unwrap_or(i64::MAX),
            origins,
        });
        for (hash, valid_until) in r
            .previous
            .into_iter()
            .chain(std::iter::once((r.hash, i64::MAX)))
        {
            self.insert(Slot {
                hash,
                valid_until,
                entry,
            });
        }
    }

    fn insert(&mut self, slot: Slot) {
        let Ok(i) = u32::try_from(self.slots.len()) else {
            return;
        };
        let slots = &self.slots;
        match self
            .index
            .find_mut(bucket(&slot.hash), |&j| slots[j as usize].hash == slot.hash)
        {
            // A hash held twice (a store edited by hand): the later record wins.
            Some(j) => *j = i,
            None => {
                self.index
                    .insert_unique(bucket(&slot.hash), i, |&j| bucket(&slots[j as usize].hash));
            }
        }
        self.slots.push(slot);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, hash: &KeyHash) -> Option<&Slot> {
        let i = self.index.find(bucket(hash), |&j| {
            keys::same(&self.slots[j as usize].hash, hash)
        })?;
        Some(&self.slots[*i as usize])
    }

    fn id(&self, e: &Entry) -> &str {
        let start = e.text as usize;
        &self.text[start..start + usize::from(e.id_len)]
    }

    /// Bytes held (the memory figure in `docs/keys.md`).
    pub fn bytes(&self) -> usize {
        self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.text.capacity()
    }
}

/// A key a request presented, as the request path reads it (cheap to clone: the table it is
/// in is shared).
#[derive(Clone)]
pub struct KeyRef {
    table: Arc<Table>,
    entry: u32,
}

impl std::fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRef").field("id", &self.id()).finish()
    }
}

impl PartialEq for KeyRef {
    fn eq(&self, other: &KeyRef) -> bool {
        self.id() == other.id()
    }
}

impl KeyRef {
    fn entry(&self) -> &Entry {
        &self.table.entries[self.entry as usize]
    }

    fn text(&self, skip: usize, len: usize) -> &str {
        let start = self.entry().text as usize + skip;
        &self.table.text[start..start + len]
    }

    pub fn id(&self) -> &str {
        self.table.id(self.entry())
    }

    pub fn name(&self) -> &str {
        let e = self.entry();
        self.text(usize::from(e.id_len), usize::from(e.name_len))
    }

    pub fn customer(&self) -> Option<&str> {
        let e = self.entry();
        (e.customer_len != u16::MAX).then(|| {
            self.text(
                usize::from(e.id_len) + usize::from(e.name_len),
                usize::from(e.customer_len),
            )
        })
    }

    pub fn plan(&self) -> &str {
        &self.table.plans[usize::from(self.entry().plan)]
    }

    pub fn enabled(&self) -> bool {
        self.entry().enabled
    }

    pub fn created_at(&self) -> i64 {
        self.entry().created_at
    }

    pub fn expires_at(&self) -> Option<i64> {
        let at = self.entry().expires_at;
        (at != i64::MAX).then_some(at)
    }

    /// A browser key's origins; empty: any client.
    pub fn origins(&self) -> &[Box<str>] {
        match self.entry().origins {
            0 => &[],
            i => &self.table.origins[i as usize - 1],
        }
    }

    pub fn allow_no_origin(&self) -> bool {
        self.entry().allow_no_origin
    }
}

/// Why a key is refused when the snapshot does not know it (the store may, if it was issued
/// a moment ago: see `sync::KeySync::recheck`).
pub const UNKNOWN_KEY: &str = "unknown key";

/// The keys: the store as loaded, and the keys changed since.
#[derive(Debug, Default)]
pub struct Snapshot {
    base: Arc<Table>,
    changed: Arc<Table>,
    /// Ids of the keys changed (or deleted) since `base` was loaded: their state in `base`
    /// is stale.
    stale: HashSet<Box<str>>,
    len: usize,
    /// The store's: presented keys are hashed as the store hashed them.
    hasher: Hasher,
}

impl Snapshot {
    pub fn from_records(records: Vec<KeyRecord>, hasher: Hasher) -> Snapshot {
        Snapshot::new(Table::build(records), hasher)
    }

    pub fn new(base: Table, hasher: Hasher) -> Snapshot {
        Snapshot {
            len: base.len(),
            base: Arc::new(base),
            changed: Arc::default(),
            stale: HashSet::new(),
            hasher,
        }
    }

    /// This snapshot with the keys `ids` as they now are (`records`: those of them that
    /// still exist), sharing the loaded table. `ids` accumulate across calls: the caller
    /// passes every key changed since the base was loaded, and loads the whole store
    /// again when they are too many (see `sync`).
    pub fn with_changes(&self, ids: &HashSet<Box<str>>, records: Vec<KeyRecord>) -> Snapshot {
        let changed = Table::build(records);
        let stale_in_base = self
            .base
            .entries
            .iter()
            .filter(|e| ids.contains(self.base.id(e)))
            .count();
        Snapshot {
            len: self.base.len() - stale_in_base + changed.len(),
            base: self.base.clone(),
            changed: Arc::new(changed),
            stale: ids.clone(),
            hasher: self.hasher.clone(),
        }
    }

    /// Keys known.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Keys changed since the whole store was loaded.
    pub fn changes(&self) -> usize {
        self.stale.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    fn find(&self, hash: &KeyHash) -> Option<(&Arc<Table>, &Slot)> {
        if let Some(slot) = self.changed.find(hash) {
            return Some((&self.changed, slot));
        }
        let slot = self.base.find(hash)?;
        if !self.stale.is_empty()
            && self
                .stale
                .contains(self.base.id(&self.base.entries[slot.entry as usize]))
        {
            return None;
        }
        Some((&self.base, slot))
    }

    /// The key a client presented, if it is known and usable at `now_ms`.
    pub fn lookup(&self, presented: &str, now_ms: i64) -> Result<KeyRef, &'static str> {
        let h = self.hasher.hash(presented);
        let Some((table, slot)) = self.find(&h) else {
            return Err(UNKNOWN_KEY);
        };
        if now_ms >= slot.valid_until {
            return Err("rotated key past its grace period");
        }
        let key = KeyRef {
            table: table.clone(),
            entry: slot.entry,
        };
        if !key.enabled() {
            return Err("disabled key");
        }
        if key.expires_at().is_some_and(|at| now_ms >= at) {
            return Err("expired key");
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, value: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            name: format!("name of {id}"),
            plan: if id.ends_with('0') { "a" } else { "b" }.into(),
            hash: Hasher::default().hash(value),
            enabled: true,
            created_at: 5,
            expires_at: None,
            description: Some("not held".into()),
            customer: id.ends_with('1').then(|| format!("c-{id}")),
            previous: Vec::new(),
            origins: Vec::new(),
            allow_no_origin: false,
        }
    }

    fn value(i: usize) -> String {
        format!("value-{i:030}")
    }

    #[test]
    fn every_field_reads_back() {
        let mut r = record("k1", &value(1));
        r.origins = vec!["https://a.example".into()];
        r.allow_no_origin = true;
        r.expires_at = Some(100);
        r.previous = vec![(Hasher::default().hash("old-value-000000000000"), 50)];
        let s = Snapshot::from_records(vec![record("k0", &value(0)), r], Hasher::default());
        let k = s.lookup(&value(1), 10).unwrap();
        assert_eq!(
            (k.id(), k.name(), k.plan(), k.customer()),
            ("k1", "name of k1", "b", Some("c-k1"))
        );
        assert_eq!((k.created_at(), k.expires_at()), (5, Some(100)));
        assert_eq!(k.origins(), [Box::from("https://a.example")]);
        assert!(k.allow_no_origin() && k.enabled());
        let k0 = s.lookup(&value(0), 10).unwrap();
        assert_eq!(
            (k0.plan(), k0.customer(), k0.origins().len()),
            ("a", None, 0)
        );
        assert_eq!(s.lookup("old-value-000000000000", 10).unwrap().id(), "k1");
        assert_eq!(
            s.lookup("old-value-000000000000", 50).unwrap_err(),
            "rotated key past its grace period"
        );
        assert_eq!(s.lookup(&value(1), 100).unwrap_err(), "expired key");
        assert_eq!(s.lookup(&value(2), 10).unwrap_err(), UNKNOWN_KEY);
    }

    #[test]
    fn changes_replace_and_remove_keys_of_the_loaded_table() {
        let base: Vec<KeyRecord> = (0..1000)
            .map(|i| record(&format!("k{i}"), &value(i)))
            .collect();
        let s = Snapshot::from_records(base, Hasher::default());
        assert_eq!(s.len(), 1000);
        // k7 disabled, k8 revoked, k9 rotated, k2000 issued.
        let mut k7 = record("k7", &value(7));
        k7.enabled = false;
        let mut k9 = record("k9", "rotated-value-00000000000");
        k9.previous = vec![(Hasher::default().hash(&value(9)), 1_000)];
        let ids: HashSet<Box<str>> = ["k7", "k8", "k9", "k2000"].map(Box::from).into();
        let changed = s.with_changes(&ids, vec![k7, k9, record("k2000", &value(2000))]);
        assert_eq!(changed.len(), 1000);
        assert_eq!(changed.lookup(&value(7), 0).unwrap_err(), "disabled key");
        assert_eq!(changed.lookup(&value(8), 0).unwrap_err(), UNKNOWN_KEY);
        assert_eq!(changed.lookup(&value(9), 0).unwrap().id(), "k9");
        assert!(changed.lookup(&value(9), 1_000).is_err());
        assert_eq!(
            changed
                .lookup("rotated-value-00000000000", 1_000)
                .unwrap()
                .id(),
            "k9"
        );
        assert_eq!(changed.lookup(&value(2000), 0).unwrap().id(), "k2000");
        assert_eq!(changed.lookup(&value(10), 0).unwrap().id(), "k10");
        // The original is untouched: requests holding it finish as they began.
        assert_eq!(s.lookup(&value(8), 0).unwrap().id(), "k8");
        assert_eq!(s.lookup(&value(2000), 0).unwrap_err(), UNKNOWN_KEY);
    }

    #[test]
    fn a_hash_held_twice_opens_the_later_record() {
        let s = Snapshot::from_records(
            vec![record("k1", &value(1)), record("k2", &value(1))],
            Hasher::default(),
        );
        assert_eq!(s.lookup(&value(1), 0).unwrap().id(), "k2");
    }

    #[test]
    fn a_key_costs_about_a_hundred_and_twenty_bytes() {
        let n = 100_000;
        let t = Table::build((0..n).map(|i| record(&format!("id{i:08}"), &value(i))));
        let per_key = t.bytes() / n;
        assert!(per_key < 140, "{per_key} bytes per key");
    }
}
