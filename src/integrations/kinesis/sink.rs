//! The `PutRecords` batch sink: a batch's records go to one stream, KPL-aggregated when the
//! route asks (packed by shard, from a shard map refreshed with `ListShards` every
//! [`SHARD_REFRESH`]; each user record gets its aggregate's result). Also how entries are
//! spooled and what their results say about delivery.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value as Json;
use tokio::time::Instant;

use super::kpl::{self, ShardRange};
use super::{Entry, EntryResult, StreamRef, parse_put_records, records_response};
use crate::batch::Sink;
use crate::integrations::aws::Signer;
use crate::integrations::batched::BatchSink;
use crate::spool::format;
use crate::spool::{Delivered, Record};
use crate::telemetry;
use crate::upstream::{IntegrationError, retryable_record_error};

/// How often an aggregating sink reloads the stream's shard map.
pub const SHARD_REFRESH: Duration = Duration::from_secs(60);

/// The open shards of an aggregating sink's stream, as last listed.
type ShardMap = Arc<RwLock<Arc<Vec<ShardRange>>>>;

/// Kinesis `PutRecords` to one stream, KPL-aggregated when `shards` is set.
pub struct KinesisSink {
    /// For `ListShards`.
    client: aws_sdk_kinesis::Client,
    /// For `PutRecords` (see `put`).
    signer: Signer,
    stream: StreamRef,
    /// Set when aggregating.
    shards: Option<ShardMap>,
    route: String,
}

impl KinesisSink {
    pub fn new(
        client: aws_sdk_kinesis::Client,
        signer: Signer,
        stream: StreamRef,
        aggregate: bool,
        route: String,
    ) -> KinesisSink {
        KinesisSink {
            client,
            signer,
            stream,
            shards: aggregate.then(ShardMap::default),
            route,
        }
    }
}

impl Sink for KinesisSink {
    type Item = Entry;
    type Output = EntryResult;

    fn size(item: &Entry) -> usize {
        item.size()
    }

    /// Puts the batch's records, aggregated when configured; one result per user record.
    async fn put(
        &self,
        entries: Vec<Entry>,
        deadline: Instant,
    ) -> Result<Vec<EntryResult>, IntegrationError> {
        let Some(shards) = &self.shards else {
            return super::put_entries(&self.signer, &self.stream, &entries, deadline).await;
        };
        let map = shards.read().map(|m| Arc::clone(&m)).unwrap_or_default();
        let (packed, members): (Vec<Entry>, Vec<Vec<usize>>) =
            kpl::aggregate(&entries, &map, kpl::DEFAULT_MAX_BYTES)
                .into_iter()
                .unzip();
        // The batch limits keep this to one call; more when a stream has many shards.
        let results = super::put_entries(&self.signer, &self.stream, &packed, deadline).await?;
        telemetry::batch_aggregated(&self.route, entries.len(), packed.len());
        Ok(kpl::spread(&members, &results, entries.len())
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| EntryResult::Failed {
                    code: "InternalFailure".into(),
                    message: "the record was not sent".into(),
                })
            })
            .collect())
    }

    /// Lists the shards before the first flush, then keeps the map fresh.
    async fn prepare(self: &Arc<Self>) {
        let Some(map) = &self.shards else { return };
        refresh_shards(&self.client, &self.stream, map, &self.route).await;
        tokio::spawn(keep_shards_fresh(Arc::downgrade(self)));
    }
}

/// Lists the stream's shards into `map`; on failure keeps the old map (an empty map still
/// works: aggregates then go by their first partition key).
async fn refresh_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    map: &ShardMap,
    route: &str,
) {
    match super::open_shards(client, stream).await {
        Ok(ranges) => {
            if let Ok(mut m) = map.write() {
                *m = Arc::new(ranges);
            }
        }
        Err(e) => tracing::warn!(route, error = %e, "listing the stream's shards failed"),
    }
}

/// Refreshes the shard map until the batcher stops.
async fn keep_shards_fresh(sink: std::sync::Weak<KinesisSink>) {
    loop {
        tokio::time::sleep(SHARD_REFRESH).await;
        let Some(sink) = sink.upgrade() else { return };
        if let Some(map) = &sink.shards {
            refresh_shards(&sink.client, &sink.stream, map, &sink.route).await;
        }
    }
}

impl BatchSink for KinesisSink {
    type Request = ();

    fn parse(target: Option<&str>, rendered: &str) -> Result<((), Vec<Entry>), IntegrationError> {
        let (_, entries) = parse_put_records(target, rendered)?;
        Ok(((), entries))
    }

    fn answer((): (), results: &[EntryResult]) -> Result<Json, IntegrationError> {
        records_response(results)
    }
}

impl Delivered for EntryResult {
    fn delivered(&self) -> bool {
        matches!(self, EntryResult::Ok { .. })
    }

    fn refused(&self) -> bool {
        matches!(self, EntryResult::Failed { code, .. } if !retryable_record_error(code))
    }
}

/// A Kinesis record in the spool (see `spool::format`).
impl Record for Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        let ehk = self.explicit_hash_key.as_deref().unwrap_or("");
        out.reserve(5 + self.partition_key.len() + ehk.len() + self.data.len());
        out.push(format::KINESIS);
        // Keys are bounded by the parse (256 and 38 characters), far below u16::MAX.
        format::put_str(&self.partition_key, out);
        format::put_str(ehk, out);
        out.extend_from_slice(&self.data);
    }

    fn decode(payload: &[u8]) -> Option<Entry> {
        let (&kind, rest) = payload.split_first()?;
        if kind != format::KINESIS {
            return None;
        }
        let (pk, rest) = format::take_str(rest)?;
        let (ehk, data) = format::take_str(rest)?;
        Some(Entry {
            data: bytes::Bytes::copy_from_slice(data),
            partition_key: pk.to_string(),
            explicit_hash_key: (!ehk.is_empty()).then(|| ehk.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_spool_format() {
        let e = Entry {
            data: bytes::Bytes::from_static(b"{\"a\":1}\n"),
            partition_key: "user-\u{e9}".into(),
            explicit_hash_key: Some("123".into()),
        };
        assert_eq!(Entry::decode(&e.to_payload()), Some(e.clone()));
        let plain = Entry {
            explicit_hash_key: None,
            data: bytes::Bytes::new(),
            ..e
        };
        assert_eq!(Entry::decode(&plain.to_payload()), Some(plain));
        // A payload of another kind, or cut short, is not an entry.
        assert_eq!(Entry::decode(&b"line\n".to_vec().to_payload()), None);
        assert_eq!(Entry::decode(&[format::KINESIS, 9, 0, b'a']), None);
    }
}
