//! Stages and canaries (`[stages.NAME]`): which gateway serves a request.
//!
//! Each stage is a whole [`Gateway`] of its own, built from the file's routes under the
//! stage's variables: its `$context.stage`, its route throttles, its request metrics
//! (labelled `stage` and `canary`). What does not differ is shared with the gateway the
//! file describes: the keys and usage counts, the plan and account throttles, the clients,
//! the body budget, TLS, and every batcher and spool whose way upstream is the same (a
//! stage whose variables do not change a route's target feeds the same batch). A stage's
//! canary is one more gateway, sharing the stage's throttles and batchers.
//!
//! A request is served by the stage its host name is mapped to (at the path as sent), or by
//! the stage its first path segment names (`/prod/orders` is `/orders` on `prod`); with
//! stages configured, any other request matches no route. A canary takes each request of
//! its stage with its `percent` chance.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use super::Gateway;
use crate::config::Config;
use crate::config::stages::Stage;
use crate::telemetry;

/// One stage's gateways.
pub struct StageGateway {
    pub name: String,
    pub main: Arc<Gateway>,
    /// The canary's share of requests (0 to 1) and its gateway.
    pub canary: Option<(f64, Arc<Gateway>)>,
}

/// The stages of a gateway (empty without `[stages]`).
#[derive(Default)]
pub struct Stages {
    pub list: Vec<StageGateway>,
    /// Host name (lower case, no port) to stage, by index.
    hosts: HashMap<String, usize>,
}

impl Stages {
    pub fn get(&self, name: &str) -> Option<&StageGateway> {
        self.list.iter().find(|s| s.name == name)
    }
}

/// A draw in [0, 1) for the canary split (not for secrets).
fn draw() -> f64 {
    let bits = std::hash::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The configuration one stage (or its canary) serves.
fn stage_config(base: &Config, stage: &Stage, canary: Option<bool>) -> Config {
    let (routes, stage_variables) = match (canary, &stage.canary) {
        (Some(true), Some(c)) => (c.routes.clone(), c.stage_variables.clone()),
        _ => (stage.routes.clone(), stage.stage_variables.clone()),
    };
    Config {
        stage: stage.name.clone(),
        stage_variables,
        routes,
        stages: Vec::new(),
        websocket: None,
        canary,
        ..base.clone()
    }
}

impl Gateway {
    /// Builds the gateways of `config.stages`, taking over from `old`'s stages of the same
    /// names (a reload) what they can keep, and otherwise from this gateway.
    /// `websocket` is the `[websocket]` routes' compiled templates.
    pub(super) fn staged(
        mut self,
        old: Option<&Gateway>,
        websocket: Vec<super::CompiledRoute>,
    ) -> std::io::Result<Gateway> {
        let mut list = Vec::new();
        let mut hosts = HashMap::new();
        // Out of the configuration while each stage's is made from it, so no stage's copy
        // carries every stage's routes; back once they are built.
        let stages = std::mem::take(&mut self.config.stages);
        for stage in &stages {
            let was = old.and_then(|o| o.stages.get(&stage.name));
            let has_canary = stage.canary.is_some();
            let main = self.stage_gateway(
                stage_config(&self.config, stage, has_canary.then_some(false)),
                was.map(|w| &*w.main),
                None,
            )?;
            let canary = match &stage.canary {
                None => None,
                Some(c) => {
                    let was = was.and_then(|w| w.canary.as_ref()).map(|(_, g)| &**g);
                    let gw = self.stage_gateway(
                        stage_config(&self.config, stage, Some(true)),
                        was,
                        Some(&main),
                    )?;
                    Some((c.percent / 100.0, Arc::new(gw)))
                }
            };
            for h in &stage.hosts {
                hosts.insert(h.clone(), list.len());
            }
            list.push(StageGateway {
                name: stage.name.clone(),
                main: Arc::new(main),
                canary,
            });
        }
        self.websocket = self.websocket_gateway(old, websocket)?.map(Arc::new);
        self.config.stages = stages;
        self.stages = Stages { list, hosts };
        Ok(self)
    }

    /// The gateway of `[websocket]`'s routes: its own route table, batchers and route
    /// throttles; the keys, plans and clients of this one.
    fn websocket_gateway(
        &self,
        old: Option<&Gateway>,
        compiled: Vec<super::CompiledRoute>,
    ) -> std::io::Result<Option<Gateway>> {
        let Some(ws) = &self.config.websocket else {
            return Ok(None);
        };
        let config = Config {
            routes: ws.routes.clone(),
            stages: Vec::new(),
            canary: None,
            ..self.config.clone()
        };
        let was = old.and_then(|o| o.websocket.as_deref());
        let auth = match was {
            Some(w) => super::gateway::reconfigured(&config, &w.auth),
            None => super::gateway::for_stage(&config, &self.auth),
        };
        let mut gw = Gateway::build(
            config,
            Arc::new(compiled),
            self.clients.clone(),
            Arc::new(auth),
            Some(was.unwrap_or(self)),
        )?;
        gw.keys.clone_from(&self.keys);
        Ok(Some(gw))
    }

    /// One stage's gateway: from `was` (the same stage before a reload) if there is one,
    /// else from `beside` (a canary's stage) or this gateway.
    fn stage_gateway(
        &self,
        config: Config,
        was: Option<&Gateway>,
        beside: Option<&Gateway>,
    ) -> std::io::Result<Gateway> {
        let auth = match (was, beside) {
            (Some(w), _) => super::gateway::reconfigured(&config, &w.auth),
            (None, Some(b)) => super::gateway::reconfigured(&config, &b.auth),
            (None, None) => super::gateway::for_stage(&config, &self.auth),
        };
        let from = was.or(beside).unwrap_or(self);
        let mut gw = Gateway::build(
            config,
            self.compiled.clone(),
            self.clients.clone(),
            Arc::new(auth),
            Some(from),
        )?;
        gw.keys.clone_from(&self.keys);
        let canary = if gw.config.canary == Some(true) {
            "true"
        } else {
            "false"
        };
        gw.metrics = gw
            .config
            .routes
            .iter()
            .map(|r| {
                telemetry::RouteMetrics::new(&r.name(), Some(r.action.name())).labelled(vec![
                    ("stage", gw.config.stage.clone()),
                    ("canary", canary.to_string()),
                ])
            })
            .collect();
        Ok(gw)
    }

    /// The gateway that serves a request, and the path it sees: this one without stages;
    /// else the stage of the host, or of the path's first segment (without it), with the
    /// stage's canary chance. `None`: no stage.
    pub fn for_request<'p>(
        self: &Arc<Gateway>,
        host: Option<&str>,
        path: &'p str,
    ) -> Option<(Arc<Gateway>, std::borrow::Cow<'p, str>)> {
        if self.stages.list.is_empty() {
            return Some((self.clone(), path.into()));
        }
        let host = host.map(|h| {
            let h = h.rsplit_once(':').map_or(h, |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    h
                }
            });
            h.to_ascii_lowercase()
        });
        let (stage, path) = match host.and_then(|h| self.stages.hosts.get(&h)) {
            Some(&i) => (&self.stages.list[i], path.into()),
            None => {
                let rest = path.strip_prefix('/')?;
                let (name, tail) = rest.split_once('/').map_or((rest, ""), |(n, t)| (n, t));
                let stage = self.stages.get(name)?;
                (stage, format!("/{tail}").into())
            }
        };
        let gw = match &stage.canary {
            Some((share, canary)) if draw() < *share => canary.clone(),
            _ => stage.main.clone(),
        };
        Some((gw, path))
    }
}

#[cfg(test)]
mod tests {
    use super::draw;

    #[test]
    fn draws_are_spread_over_the_unit_interval() {
        let n = 20_000;
        let below: usize = (0..n).filter(|_| draw() < 0.1).count();
        assert!((1_600..2_400).contains(&below), "{below} of {n} under 0.1");
        assert!((0..1000).map(|_| draw()).all(|d| (0.0..1.0).contains(&d)));
    }
}
