//! `[stages.NAME]`: API Gateway's stages and canary settings. A route is written once and
//! served by every stage, under `/{stage}/...` (API Gateway's invoke URL shape) or, for a
//! stage's `hosts`, at the host's root (a custom domain mapped to the stage). Each stage
//! has its own stage variables (over the file's `[stage_variables]`), a default throttle
//! for its routes, and `$context.stage`; a stage's canary sends `percent` of its requests
//! to the canary's stage variables, with `$context.isCanaryRequest` true.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::raw::{RawConfig, RawThrottle};
use super::{RouteConfig, Validator};
use crate::auth::plans::Throttle;

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawStage {
    /// `$stageVariables` of this stage, over the file's `[stage_variables]`.
    #[serde(default)]
    pub stage_variables: IndexMap<String, String>,
    /// Every route's throttle in this stage, where the route sets none (API Gateway's
    /// stage default method throttling).
    pub throttle: Option<Spanned<RawThrottle>>,
    /// Host names whose requests this stage serves without the `/{stage}` prefix.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// A canary: a share of the stage's requests served with other stage variables.
    pub canary: Option<Spanned<RawCanary>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RawCanary {
    /// The share of the stage's requests, 0 to 100 (fractions allowed).
    pub percent: f64,
    /// `$stageVariables` of canary requests, over the stage's.
    #[serde(default)]
    pub stage_variables: IndexMap<String, String>,
}

/// One stage: the routes as it serves them (its stage variables in their integrations,
/// its throttle where a route has none).
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    /// Lower-case host names (no port).
    pub hosts: Vec<String>,
    pub stage_variables: IndexMap<String, String>,
    pub routes: Vec<RouteConfig>,
    pub canary: Option<Canary>,
}

#[derive(Debug, Clone)]
pub struct Canary {
    /// 0 to 100.
    pub percent: f64,
    pub stage_variables: IndexMap<String, String>,
    pub routes: Vec<RouteConfig>,
}

/// A stage name: what API Gateway allows (letters, digits, `-`, `_`; at most 128).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Variables over others: `base`, then `over` replacing and adding.
fn merged(
    base: &IndexMap<String, String>,
    over: &IndexMap<String, String>,
) -> IndexMap<String, String> {
    let mut vars = base.clone();
    vars.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
    vars
}

/// What every stage's routes are built from.
struct RouteInputs<'a> {
    raw: &'a RawConfig,
    base: &'a std::path::Path,
    server: &'a super::server::Server,
    spool_mode: Option<crate::spool::Mode>,
    /// No errors before the stages: errors in building a stage's routes are the stage's.
    clean: bool,
}

/// The file's stage variables, and every stage's and canary's beside them: what the file's
/// routes are checked under when stages serve them.
pub(super) fn all_variables(raw: &RawConfig) -> IndexMap<String, String> {
    let mut vars = raw.stage_variables.clone();
    for stage in raw.stages.values() {
        let stage = stage.get_ref();
        let canary = stage.canary.as_ref().map(|c| &c.get_ref().stage_variables);
        for over in std::iter::once(&stage.stage_variables).chain(canary) {
            for (k, v) in over {
                vars.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    vars
}

impl Validator<'_> {
    /// The stages, each with its routes built again under its own stage variables. Errors
    /// in the routes that every stage shares are reported once, by the file's routes; only
    /// what a stage's variables change is reported under the stage.
    pub(super) fn stages(
        &mut self,
        raw: &RawConfig,
        base: &std::path::Path,
        server: &super::server::Server,
        spool_mode: Option<crate::spool::Mode>,
    ) -> Vec<Stage> {
        let mut stages = Vec::new();
        let mut hosts_seen: std::collections::HashMap<String, String> =
            std::collections::HashMap::new();
        let inputs = RouteInputs {
            raw,
            base,
            server,
            spool_mode,
            clean: self.errors.is_empty(),
        };
        for (name, spanned) in &raw.stages {
            let span = spanned.span();
            let stage = spanned.get_ref();
            if !valid_name(name) {
                self.error(
                    Some(span.clone()),
                    format!(
                        "stages.{name}: a stage name is letters, digits, '-' and '_' (at most 128)"
                    ),
                );
                continue;
            }
            let mut hosts = Vec::new();
            for h in &stage.hosts {
                let host = h.get_ref().trim().to_ascii_lowercase();
                if host.is_empty() || host.contains(['/', ' ', ':']) {
                    self.error(
                        Some(h.span()),
                        format!("stages.{name}: hosts: {:?} is not a host name (no scheme, port or path)", h.get_ref()),
                    );
                    continue;
                }
                if let Some(other) = hosts_seen.insert(host.clone(), name.clone()) {
                    self.error(
                        Some(h.span()),
                        format!("stages.{name}: host {host:?} is already stage {other:?}'s"),
                    );
                }
                hosts.push(host);
            }
            let throttle = stage.throttle.as_ref().and_then(|t| {
                self.throttle(
                    *t.get_ref(),
                    &format!("stages.{name}: throttle"),
                    Some(t.span()),
                )
            });
            let stage_variables = merged(&raw.stage_variables, &stage.stage_variables);
            let routes = self.stage_routes(&inputs, &stage_variables, throttle, name);
            let canary = stage.canary.as_ref().map(|c| {
                let canary = c.get_ref();
                if !(canary.percent.is_finite() && (0.0..=100.0).contains(&canary.percent)) {
                    self.error(
                        Some(c.span()),
                        format!(
                            "stages.{name}: canary: percent must be from 0 to 100, got {}",
                            canary.percent
                        ),
                    );
                }
                let stage_variables = merged(&stage_variables, &canary.stage_variables);
                let what = format!("{name} (canary)");
                let routes = self.stage_routes(&inputs, &stage_variables, throttle, &what);
                Canary {
                    percent: canary.percent.clamp(0.0, 100.0),
                    stage_variables,
                    routes,
                }
            });
            stages.push(Stage {
                name: name.clone(),
                hosts,
                stage_variables,
                routes,
                canary,
            });
        }
        stages
    }

    /// The file's routes under one stage's variables, with its throttle where a route has
    /// none. When the file's routes had errors, those are not repeated.
    fn stage_routes(
        &mut self,
        inputs: &RouteInputs<'_>,
        stage_variables: &IndexMap<String, String>,
        throttle: Option<Throttle>,
        what: &str,
    ) -> Vec<RouteConfig> {
        let before = self.errors.len();
        let mut routes = self.routes(
            &inputs.raw.routes,
            inputs.base,
            inputs.server,
            inputs.spool_mode,
            stage_variables,
        );
        if inputs.clean {
            for e in &mut self.errors[before..] {
                e.message = format!("stages.{what}: {}", e.message);
            }
        } else {
            self.errors.truncate(before);
        }
        for r in &mut routes {
            if r.throttle.is_none() {
                r.throttle = throttle;
            }
        }
        routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_path_segments() {
        assert!(valid_name("prod"));
        assert!(valid_name("v2_beta-1"));
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn stage_variables_layer() {
        let base = IndexMap::from([("a".to_string(), "1".to_string()), ("b".into(), "2".into())]);
        let over = IndexMap::from([("b".to_string(), "3".to_string()), ("c".into(), "4".into())]);
        let m = merged(&base, &over);
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("b").map(String::as_str), Some("3"));
        assert_eq!(m.get("c").map(String::as_str), Some("4"));
    }
}
