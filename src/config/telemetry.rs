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
