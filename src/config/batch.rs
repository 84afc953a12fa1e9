//! A route's `batch`: batching across requests, its caps taken from the route's
//! integration (see `Integration::batch_caps`).

use serde::Deserialize;
use toml::Spanned;

use super::routes::RawRoute;
use super::{Validator, parse_duration};
use crate::batch::policy::BatchPolicy;
use crate::integrations::Action;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawBatch {
    Enabled(bool),
    Settings(RawBatchSettings),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatchSettings {
    /// How long the first record of a batch waits for others (default `5ms`).
    pub linger: Option<String>,
    /// Records per call, at most 500 (the service limit; the default).
    pub max_records: Option<usize>,
    /// Bytes of data and partition keys per call, at most 5 MiB (the default).
    pub max_bytes: Option<usize>,
    /// Requests that may wait for a batch (default 2048); beyond, clients get 503.
    pub queue: Option<usize>,
    /// Body bytes the route's requests may hold while their records wait for a batch
    /// (default 16 MiB); beyond, a request waits with its body unread (TCP backpressure).
    pub queue_bytes: Option<usize>,
    /// Pack many user records into each Kinesis record in the KPL aggregated format
    /// (default `false`). Consumers must de-aggregate (KCL, Lambda with the
    /// `aws-kinesis-agg` library, Firehose does so itself).
    #[serde(default)]
    pub aggregate: bool,
}

impl Validator<'_> {
    /// The batching policy of a route: on by default where its integration batches.
    pub(super) fn batch(
        &mut self,
        route: &Spanned<RawRoute>,
        action: Action,
        has_target: bool,
    ) -> Option<BatchPolicy> {
        let integration = crate::integrations::of(action)?;
        let target = route
            .get_ref()
            .target
            .as_ref()
            .map(|t| t.get_ref().as_str());
        let settings = match &route.get_ref().batch {
            Some(RawBatch::Enabled(false)) => return None,
            None if !has_target => return None,
            None if integration.batch_caps(action, false).is_none() => return None,
            None if !integration.batches_by_default(action, target.unwrap_or_default()) => {
                return None;
            }
            None | Some(RawBatch::Enabled(true)) => RawBatchSettings {
                linger: None,
                max_records: None,
                max_bytes: None,
                queue: None,
                queue_bytes: None,
                aggregate: false,
            },
            Some(RawBatch::Settings(s)) => s.clone(),
        };
        let caps = integration.batch_caps(action, settings.aggregate);
        let Some(caps) = caps.filter(|_| has_target) else {
            self.error(
                Some(route.span()),
                format!(
                    "batch: batching works for {} routes with a target",
                    actions_that(|i, a| i.batch_caps(a, false).is_some())
                ),
            );
            return None;
        };
        let linger = match &settings.linger {
            None => crate::batch::DEFAULT_LINGER,
            Some(l) => match parse_duration(l) {
                Some(d) => d,
                None => {
                    self.error(
                        Some(route.span()),
                        format!("batch.linger: {l:?} is not a duration"),
                    );
                    crate::batch::DEFAULT_LINGER
                }
            },
        };
        if settings.aggregate && !integration.aggregates(action) {
            self.error(
                Some(route.span()),
                format!(
                    "batch.aggregate: KPL aggregation works for {} routes",
                    actions_that(|i, a| i.aggregates(a))
                ),
            );
        }
        let (record_limit, byte_limit) = (caps.max_records, caps.max_bytes);
        let max_records = settings.max_records.unwrap_or(record_limit);
        let max_bytes = settings.max_bytes.unwrap_or(byte_limit);
        if max_records == 0 || max_records > record_limit {
            self.error(
                Some(route.span()),
                format!("batch.max_records must be 1 to {record_limit}"),
            );
        }
        if max_bytes == 0 || max_bytes > byte_limit {
            self.error(
                Some(route.span()),
                format!("batch.max_bytes must be 1 to {byte_limit}"),
            );
        }
        let queue_bytes = settings.queue_bytes.unwrap_or(crate::batch::QUEUE_BYTES);
        if queue_bytes == 0 || queue_bytes > u32::MAX as usize {
            self.error(
                Some(route.span()),
                format!("batch.queue_bytes must be 1 to {}", u32::MAX),
            );
        }
        Some(BatchPolicy {
            max_records: max_records.clamp(1, record_limit),
            max_bytes: max_bytes.clamp(1, byte_limit),
            linger,
            queue: settings
                .queue
                .unwrap_or(crate::batch::QUEUE_CAPACITY)
                .max(1),
            queue_bytes: queue_bytes.clamp(1, u32::MAX as usize),
            aggregate: settings.aggregate,
        })
    }
}

/// The actions some integration says yes to, for error messages: `a, b and c`.
pub(super) fn actions_that(
    yes: impl Fn(&dyn crate::integrations::Integration, Action) -> bool,
) -> String {
    let names: Vec<&str> = Action::NAMES
        .iter()
        .filter(|n| {
            Action::parse(n)
                .and_then(|a| Some((crate::integrations::of(a)?, a)))
                .is_some_and(|(i, a)| yes(i, a))
        })
        .copied()
        .collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}
