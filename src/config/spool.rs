//! `[spool]`: where records wait on disk when the upstream cannot take them, and the mode
//! routes get by default.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{Validator, parse_duration};
use crate::spool::{Fsync, Mode, Settings};

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawSpool {
    /// `off` (the default), `fallback` or `always`, for every route that can spool
    /// (`kinesis:PutRecords` and `firehose:PutRecordBatch` routes that batch). A route's own
    /// `spool` overrides it. `fallback`: records the upstream did not take within the route's
    /// deadline are written to disk and the client gets 202; `always`: every request is
    /// acknowledged (202) once its records are on disk, and a replayer sends them.
    pub mode: Option<Spanned<String>>,
    /// Directory (default `spool` next to this file); one subdirectory per route.
    pub dir: Option<String>,
    /// Bytes of records a route's spool may hold (default 1 GiB); beyond, clients get 503.
    pub max_bytes: Option<Spanned<u64>>,
    /// Size of a segment file (default 64 MiB).
    pub segment_bytes: Option<Spanned<u64>>,
    /// `always` (the default: records are fsync'd before the client is acknowledged, one
    /// fsync for all concurrent requests) or an interval such as `"100ms"` (acknowledged once
    /// written; fsync'd within the interval).
    pub fsync: Option<Spanned<String>>,
    /// Batches the replayer sends at once (default 8). `1` delivers strictly in spool
    /// order; more keeps up with a faster intake, and neighbouring batches may interleave.
    pub replay_in_flight: Option<Spanned<usize>>,
}

impl Validator<'_> {
    /// The `[spool]` settings and the mode routes get by default.
    pub(super) fn spool(&mut self, raw: &RawSpool, base: &Path) -> (Settings, Option<Mode>) {
        let mode = raw
            .mode
            .as_ref()
            .and_then(|m| self.spool_mode(m, "spool.mode"));
        let mut bytes = |v: Option<&Spanned<u64>>, default: u64, min: u64, what: &str| match v {
            None => default,
            Some(n) if *n.get_ref() < min => {
                self.error(
                    Some(n.span()),
                    format!("{what} must be at least {min} bytes"),
                );
                default
            }
            Some(n) => *n.get_ref(),
        };
        // A record is at most 1 MiB plus its keys: a segment and a spool hold several.
        let max_bytes = bytes(raw.max_bytes.as_ref(), 1 << 30, 16 << 20, "spool.max_bytes");
        let segment_bytes = bytes(
            raw.segment_bytes.as_ref(),
            64 << 20,
            4 << 20,
            "spool.segment_bytes",
        );
        let fsync = match &raw.fsync {
            None => Fsync::Always,
            Some(f) if f.get_ref() == "always" => Fsync::Always,
            Some(f) => match parse_duration(f.get_ref()) {
                Some(d) if !d.is_zero() => Fsync::Interval(d),
                _ => {
                    self.error(
                        Some(f.span()),
                        format!(
                            "spool.fsync: expected \"always\" or an interval such as \"100ms\", got {:?}",
                            f.get_ref()
                        ),
                    );
                    Fsync::Always
                }
            },
        };
        let replay_in_flight = match &raw.replay_in_flight {
            None => 8,
            Some(n) if !(1..=64).contains(n.get_ref()) => {
                self.error(Some(n.span()), "spool.replay_in_flight must be 1 to 64");
                8
            }
            Some(n) => *n.get_ref(),
        };
        let settings = Settings {
            dir: base.join(raw.dir.as_deref().unwrap_or("spool")),
            max_bytes,
            segment_bytes,
            fsync,
            replay_in_flight,
        };
        (settings, mode)
    }

    /// `off`, `fallback` or `always`.
    pub(super) fn spool_mode(&mut self, v: &Spanned<String>, what: &str) -> Option<Mode> {
        match v.get_ref().as_str() {
            "off" => None,
            "fallback" => Some(Mode::Fallback),
            "always" => Some(Mode::Always),
            other => {
                self.error(
                    Some(v.span()),
                    format!("{what}: expected \"off\", \"fallback\" or \"always\", got {other:?}"),
                );
                None
            }
        }
    }
}
