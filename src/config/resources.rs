//! `[resources]`: what `ingest-gateway provision` creates, checked for references that do
//! not resolve (the declarations themselves are `integrations::provision`'s).

use std::path::Path;

use super::Validator;
use crate::integrations::provision::Resources;

/// A state machine definition is read whole by `provision`.
const MAX_DEFINITION_BYTES: u64 = 1 << 20;

impl Validator<'_> {
    pub(super) fn resources(&mut self, res: &Resources, base: &Path) {
        let streams: Vec<&str> = res
            .kinesis_streams
            .iter()
            .map(|s| s.get_ref().name.as_str())
            .collect();
        let buckets: Vec<&str> = res
            .s3_buckets
            .iter()
            .map(|b| b.get_ref().name.as_str())
            .collect();
        let queues: Vec<&str> = res
            .sqs_queues
            .iter()
            .map(|q| q.get_ref().name.as_str())
            .collect();
        for t in &res.dynamodb_tables {
            if t.get_ref().keys().is_none() {
                self.error(
                    Some(t.span()),
                    format!(
                        "dynamodb table {}: hash_key and range_key are NAME:TYPE with TYPE S, N or B (\"customer:S\")",
                        t.get_ref().name
                    ),
                );
            }
        }
        for s in &res.kinesis_streams {
            if s.get_ref().shards.is_some_and(|n| n < 1) {
                self.error(Some(s.span()), "kinesis stream shards must be at least 1");
            }
        }
        for d in &res.firehose_delivery_streams {
            let d_ref = d.get_ref();
            if let Some(source) = &d_ref.source_stream
                && !streams.contains(&source.as_str())
            {
                self.error(Some(d.span()), format!("delivery stream {}: source_stream {:?} is not declared under kinesis_streams", d_ref.name, d_ref.source_stream));
            }
            if !buckets.contains(&d_ref.bucket.as_str()) {
                self.error(
                    Some(d.span()),
                    format!(
                        "delivery stream {}: bucket {:?} is not declared under s3_buckets",
                        d_ref.name, d_ref.bucket
                    ),
                );
            }
        }
        for q in &res.sqs_queues {
            let q_ref = q.get_ref();
            if let Some(dlq) = &q_ref.dead_letter_queue
                && !queues.contains(&dlq.as_str())
            {
                self.error(
                    Some(q.span()),
                    format!(
                        "queue {}: dead_letter_queue {dlq:?} is not declared under sqs_queues",
                        q_ref.name
                    ),
                );
            }
            if q_ref.content_based_deduplication && !q_ref.name.ends_with(".fifo") {
                self.error(
                    Some(q.span()),
                    format!(
                        "queue {}: content_based_deduplication needs a FIFO queue (.fifo)",
                        q_ref.name
                    ),
                );
            }
        }
        for m in &res.state_machines {
            // Confined and bounded like templates and models.
            self.named_file(
                Some(m.span()),
                base,
                &m.get_ref().definition,
                "state machine definition",
                Some(MAX_DEFINITION_BYTES),
            );
            let kind = m.get_ref().kind.as_deref().unwrap_or("STANDARD");
            if kind != "STANDARD" && kind != "EXPRESS" {
                self.error(
                    Some(m.span()),
                    format!(
                        "state machine {}: kind must be STANDARD or EXPRESS",
                        m.get_ref().name
                    ),
                );
            }
        }
    }
}
