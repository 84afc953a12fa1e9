//! `[telemetry]`: what the gateway's own metrics carry.

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawTelemetry {
    /// The `route` label of per-route series: `route` (the default: `METHOD /path`),
    /// `group` (the route's `group`, by default the first segment of its path: `/v1`), or
    /// `none` (no route label: one series for all routes). For large APIs, whose series
    /// would otherwise grow with every route.
    pub route_label: Option<Spanned<String>>,
    /// Latency histograms' upper bounds, in seconds (request, batch wait, Lambda
    /// authorizer): at most [`MAX_BUCKETS`], increasing.
    pub latency_buckets: Option<Spanned<Vec<f64>>>,
    /// Batch size histograms' upper bounds (records or requests per upstream call).
    pub size_buckets: Option<Spanned<Vec<f64>>>,
}

/// Buckets a histogram may have: each bucket is one series per route (and label set), so
/// the bound is part of the bound on series per route (see `docs/operations.md`).
pub const MAX_BUCKETS: usize = 32;

pub use crate::telemetry::{LATENCY_BUCKETS, SIZE_BUCKETS};

/// The histograms' bucket bounds (`telemetry.latency_buckets`, `telemetry.size_buckets`).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub latency: Vec<f64>,
    pub size: Vec<f64>,
}

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets {
            latency: LATENCY_BUCKETS.to_vec(),
            size: SIZE_BUCKETS.to_vec(),
        }
    }
}

/// What the `route` label of per-route series holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteLabel {
    #[default]
    Route,
    Group,
    None,
}

impl Validator<'_> {
    pub(super) fn telemetry(&mut self, raw: &RawTelemetry) -> RouteLabel {
        match raw.route_label.as_ref() {
            None => RouteLabel::Route,
            Some(l) => match l.get_ref().as_str() {
                "route" => RouteLabel::Route,
                "group" => RouteLabel::Group,
                "none" => RouteLabel::None,
                other => {
                    self.error(
                        Some(l.span()),
                        format!(
                            "telemetry.route_label: expected \"route\", \"group\" or \"none\", got {other:?}"
                        ),
                    );
                    RouteLabel::Route
                }
            },
        }
    }

    pub(super) fn buckets(&mut self, raw: &RawTelemetry) -> Buckets {
        let mut check = |v: &Option<Spanned<Vec<f64>>>, name: &str, default: &[f64]| {
            let Some(v) = v else {
                return default.to_vec();
            };
            let b = v.get_ref();
            let increasing = b.windows(2).all(|w| w[0] < w[1]);
            if b.is_empty()
                || b.len() > MAX_BUCKETS
                || !increasing
                || b.iter().any(|x| !x.is_finite() || *x <= 0.0)
            {
                self.error(
                    Some(v.span()),
                    format!(
                        "telemetry.{name}: use 1 to {MAX_BUCKETS} positive numbers, each larger than the one before"
                    ),
                );
                return default.to_vec();
            }
            b.clone()
        };
        Buckets {
            latency: check(&raw.latency_buckets, "latency_buckets", &LATENCY_BUCKETS),
            size: check(&raw.size_buckets, "size_buckets", &SIZE_BUCKETS),
        }
    }

    /// A route's `group`, or the first segment of its path (`/v1`).
    pub(super) fn route_group(&mut self, group: Option<&Spanned<String>>, path: &str) -> String {
        match group {
            Some(g) if g.get_ref().trim().is_empty() || g.get_ref().len() > 128 => {
                self.error(Some(g.span()), "group: use 1 to 128 characters".to_string());
                String::new()
            }
            Some(g) => g.get_ref().clone(),
            None => {
                let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
                format!("/{first}")
            }
        }
    }
}
