//! KPL aggregation: many small user records packed into one Kinesis record in the Kinesis
//! Producer Library's format, which the KCL, Firehose and the `aws-kinesis-agg` libraries
//! de-aggregate.
//!
//! An aggregated record's data is the 4 magic bytes `F3 89 9A C2`, a protobuf
//! `AggregatedRecord`, and the MD5 of that protobuf:
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes data = 3;
//! }
//! ```
//!
//! Records are grouped by the shard their own partition key (or explicit hash key) maps to,
//! and each aggregate carries that shard's starting hash key as its explicit hash key, so a
//! user record lands on the same shard it would have without aggregation.
//!
//! Pure: the shard map is passed in.

use std::borrow::Cow;
use std::collections::HashMap;

use md5::{Digest, Md5};

use super::Entry;

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Largest aggregate (data plus partition key): one 25 KB PUT payload unit.
pub const DEFAULT_MAX_BYTES: usize = 25_000;

/// A shard's hash key range, inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    pub start: u128,
    pub end: u128,
}

/// The hash key a record maps to: its explicit hash key, or the MD5 of its partition key.
pub fn hash_key(e: &Entry) -> u128 {
    if let Some(h) = e
        .explicit_hash_key
        .as_deref()
        .and_then(|h| h.parse::<u128>().ok())
    {
        return h;
    }
    u128::from_be_bytes(Md5::digest(e.partition_key.as_bytes()).into())
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    let mut n = 1;
    let mut v = v >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
}

/// A length-delimited field.
fn bytes_field(tag: u8, data: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn record_len(pk_index: u64, data: &[u8]) -> usize {
    1 + varint_len(pk_index) + 1 + varint_len(data.len() as u64) + data.len()
}

/// Bytes of a partition-key table entry in the protobuf.
fn key_field_len(key: &str) -> usize {
    1 + varint_len(key.len() as u64) + key.len()
}

/// Bytes of a record entry in the protobuf.
fn record_field_len(pk_index: u64, data: &[u8]) -> usize {
    let rec = record_len(pk_index, data);
    1 + varint_len(rec as u64) + rec
}

/// One aggregate being filled.
#[derive(Default)]
struct Open<'a> {
    keys: Vec<&'a str>,
    index: HashMap<&'a str, u64>,
    /// (partition key index, user record index)
    records: Vec<(u64, usize)>,
    /// Bytes of the protobuf so far.
    size: usize,
}

impl<'a> Open<'a> {
    /// The key's index, and the protobuf bytes a record with it would add.
    fn cost(&self, key: &str, data: &[u8]) -> (Option<u64>, usize) {
        match self.index.get(key) {
            Some(&i) => (Some(i), record_field_len(i, data)),
            None => {
                let i = self.keys.len() as u64;
                (None, key_field_len(key) + record_field_len(i, data))
            }
        }
    }

    fn push(&mut self, key: &'a str, data: &[u8], record: usize) {
        let index = match self.index.get(key) {
            Some(&i) => i,
            None => {
                let i = self.keys.len() as u64;
                self.keys.push(key);
                self.index.insert(key, i);
                self.size += key_field_len(key);
                i
            }
        };
        self.size += record_field_len(index, data);
        self.records.push((index, record));
    }
}

/// The shard map sorted by start (copied only when it is not already).
fn by_start(shards: &[ShardRange]) -> Cow<'_, [ShardRange]> {
    if shards.is_sorted_by_key(|s| s.start) {
        Cow::Borrowed(shards)
    } else {
        let mut sorted = shards.to_vec();
        sorted.sort_by_key(|s| s.start);
        Cow::Owned(sorted)
    }
}

/// The start of the shard a hash key falls in, if the map has one; `sorted` is sorted by
/// start (see [`by_start`]) and searched in O(log n).
fn shard_of(sorted: &[ShardRange], hash: u128) -> Option<u128> {
    let after = sorted.partition_point(|s| s.start <= hash);
    after
        .checked_sub(1)
        .map(|i| &sorted[i])
        .filter(|s| hash <= s.end)
        .map(|s| s.start)
}

/// Packs `entries` (in order within each shard) into aggregated entries of at most
/// `max_bytes`. Returns each aggregate with the indexes of the user records it holds.
/// Linear in the records (hash lookups for keys and shards).
pub fn aggregate(
    entries: &[Entry],
    shards: &[ShardRange],
    max_bytes: usize,
) -> Vec<(Entry, Vec<usize>)> {
    let shards = by_start(shards);
    // Group by shard, keeping order.
    let mut groups: Vec<(Option<u128>, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<Option<u128>, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let shard = shard_of(&shards, hash_key(e));
        let g = *group_of.entry(shard).or_insert_with(|| {
            groups.push((shard, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let mut out = Vec::new();
    for (shard_start, members) in groups {
        let mut open = Open::default();
        let mut held: Vec<usize> = Vec::new();
        for i in members {
            let e = &entries[i];
            let (_, added) = open.cost(&e.partition_key, &e.data);
            // Magic, MD5 and the aggregate's own partition key (its first key).
            let first = open.keys.first().map_or(e.partition_key.as_str(), |k| k);
            let framing = MAGIC.len() + 16 + first.len();
            if !open.records.is_empty() && open.size + added + framing > max_bytes {
                let full = std::mem::take(&mut open);
                out.push((
                    finish(entries, &full, shard_start),
                    std::mem::take(&mut held),
                ));
            }
            open.push(&e.partition_key, &e.data, i);
            held.push(i);
        }
        if !open.records.is_empty() {
            out.push((finish(entries, &open, shard_start), held));
        }
    }
    out
}

/// Encodes an aggregate.
fn finish(entries: &[Entry], o: &Open<'_>, shard_start: Option<u128>) -> Entry {
    let mut proto = Vec::with_capacity(o.size);
    for k in &o.keys {
        bytes_field(0x0A, k.as_bytes(), &mut proto);
    }
    let mut rec = Vec::new();
    for (index, i) in &o.records {
        rec.clear();
        rec.push(0x08);
        varint(*index, &mut rec);
        bytes_field(0x1A, &entries[*i].data, &mut rec);
        bytes_field(0x1A, &rec, &mut proto);
    }
    let mut data = Vec::with_capacity(MAGIC.len() + proto.len() + 16);
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&proto);
    data.extend_from_slice(&Md5::digest(&proto));
    Entry {
        data: data.into(),
        partition_key: o.keys.first().map(|k| k.to_string()).unwrap_or_default(),
        explicit_hash_key: shard_start.map(|s| s.to_string()),
    }
}

/// Each user record's result: the result of the aggregate that carried it. `members` are
/// the aggregates' user record indexes and `results` their results, in the order
/// `aggregate` returned them.
pub fn spread<R: Clone>(members: &[Vec<usize>], results: &[R], records: usize) -> Vec<Option<R>> {
    let mut out = vec![None; records];
    for (members, result) in members.iter().zip(results) {
        for &i in members {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(result.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pk: &str, data: &str) -> Entry {
        Entry {
            data: bytes::Bytes::copy_from_slice(data.as_bytes()),
            partition_key: pk.into(),
            explicit_hash_key: None,
        }
    }

    /// A minimal protobuf reader for the test: field number, wire type, payload.
    fn fields(mut b: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let read_varint = |b: &mut &[u8]| {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7F) << shift;
                if byte < 0x80 {
                    return v;
                }
                shift += 7;
            }
        };
        let mut out = Vec::new();
        while !b.is_empty() {
            let tag = read_varint(&mut b);
            if tag & 7 == 0 {
                out.push((tag >> 3, read_varint(&mut b).to_le_bytes().to_vec()));
            } else {
                let n = read_varint(&mut b) as usize;
                out.push((tag >> 3, b[..n].to_vec()));
                b = &b[n..];
            }
        }
        out
    }

    #[test]
    fn aggregates_decode_back_to_the_user_records() {
        let entries = vec![entry("a", "one"), entry("b", "two"), entry("a", "three")];
        let aggs = aggregate(&entries, &[], DEFAULT_MAX_BYTES);
        assert_eq!(aggs.len(), 1);
        let (agg, members) = &aggs[0];
        assert_eq!(members, &vec![0, 1, 2]);
        assert_eq!(agg.partition_key, "a");
        assert_eq!(&agg.data[..4], &MAGIC);
        let proto = &agg.data[4..agg.data.len() - 16];
        assert_eq!(
            &agg.data[agg.data.len() - 16..],
            Md5::digest(proto).as_slice()
        );
        let f = fields(proto);
        let keys: Vec<String> = f
            .iter()
            .filter(|(n, _)| *n == 1)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        let records: Vec<(u64, String)> = f
            .iter()
            .filter(|(n, _)| *n == 3)
            .map(|(_, r)| {
                let rf = fields(r);
                let idx = u64::from_le_bytes(rf[0].1.clone().try_into().unwrap());
                (idx, String::from_utf8(rf[1].1.clone()).unwrap())
            })
            .collect();
        assert_eq!(
            records,
            [(0, "one".into()), (1, "two".into()), (0, "three".into())]
        );
    }

    #[test]
    fn aggregates_stay_under_the_size_limit_and_keep_order() {
        let entries: Vec<Entry> = (0..100)
            .map(|i| entry(&format!("user-{}", i % 7), &"x".repeat(1000)))
            .collect();
        let aggs = aggregate(&entries, &[], DEFAULT_MAX_BYTES);
        assert!(aggs.len() >= 4, "{} aggregates", aggs.len());
        for (agg, _) in &aggs {
            assert!(
                agg.data.len() + agg.partition_key.len() <= DEFAULT_MAX_BYTES,
                "{}",
                agg.data.len()
            );
        }
        let order: Vec<usize> = aggs.iter().flat_map(|(_, m)| m.clone()).collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn records_are_grouped_by_their_shard() {
        let half = u128::MAX / 2;
        let shards = [
            ShardRange {
                start: 0,
                end: half,
            },
            ShardRange {
                start: half + 1,
                end: u128::MAX,
            },
        ];
        let entries: Vec<Entry> = (0..20).map(|i| entry(&format!("k{i}"), "d")).collect();
        let aggs = aggregate(&entries, &shards, DEFAULT_MAX_BYTES);
        assert_eq!(aggs.len(), 2);
        for (agg, members) in &aggs {
            let start: u128 = agg.explicit_hash_key.as_ref().unwrap().parse().unwrap();
            let shard = shards.iter().find(|s| s.start == start).unwrap();
            for &i in members {
                assert!((shard.start..=shard.end).contains(&hash_key(&entries[i])));
            }
        }
    }

    #[test]
    fn every_user_record_gets_its_aggregates_result() {
        let entries: Vec<Entry> = (0..30)
            .map(|i| entry(&format!("k{i}"), "0123456789"))
            .collect();
        let aggs = aggregate(&entries, &[], 200);
        assert!(aggs.len() > 1);
        let results: Vec<usize> = (0..aggs.len()).collect();
        let members: Vec<Vec<usize>> = aggs.iter().map(|(_, m)| m.clone()).collect();
        let spread = spread(&members, &results, entries.len());
        for (a, (_, members)) in aggs.iter().enumerate() {
            for &i in members {
                assert_eq!(spread[i], Some(a));
            }
        }
        assert!(spread.iter().all(Option::is_some));
        // A result missing for an aggregate leaves its records without one.
        let short = super::spread(&members, &results[..1], entries.len());
        assert!(short.iter().any(Option::is_none));
    }

    #[test]
    fn shard_lookup_finds_the_range_sorted_or_not() {
        let r = |start, end| ShardRange { start, end };
        let sorted = [r(0, 9), r(10, 19), r(20, u128::MAX)];
        for (hash, start) in [
            (0, 0),
            (9, 0),
            (10, 10),
            (19, 10),
            (20, 20),
            (u128::MAX, 20),
        ] {
            assert_eq!(shard_of(&sorted, hash), Some(start));
        }
        let unsorted = [r(20, u128::MAX), r(0, 9), r(10, 19)];
        assert_eq!(shard_of(&by_start(&unsorted), 15), Some(10));
        // A gap (a shard map listed mid-reshard) and an empty map.
        let gap = [r(0, 9), r(20, 29)];
        assert_eq!(shard_of(&gap, 15), None);
        assert_eq!(shard_of(&gap, 30), None);
        assert_eq!(shard_of(&[], 5), None);
    }
}
