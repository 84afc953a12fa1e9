//! Whether each route's upstream is there: at start-up, and then every [`RECHECK_EVERY`]
//! until it is, each route's target is read through the SDK (`Integration::check`). A
//! missing or unreachable target is logged once, naming it and the endpoint, shown in
//! `gateway_upstream_ready{route}`, and (with `server.require_upstreams`) keeps `/readyz`
//! failing, as Vector's sink health checks do.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use super::Gateway;
use crate::upstream::Action;

pub const RECHECK_EVERY: Duration = Duration::from_secs(10);
/// One check's longest wait.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

const UNKNOWN: u8 = 0;
const READY: u8 = 1;
const FAILING: u8 = 2;

/// Each route's upstream state, by route index.
#[derive(Debug, Default)]
pub struct Upstreams {
    state: Vec<AtomicU8>,
    /// Why each failing one failed, for `/readyz`.
    reasons: std::sync::Mutex<Vec<Option<String>>>,
}

impl Upstreams {
    pub fn new(routes: usize) -> Upstreams {
        Upstreams {
            state: (0..routes).map(|_| AtomicU8::new(UNKNOWN)).collect(),
            reasons: std::sync::Mutex::new(vec![None; routes]),
        }
    }

    /// Whether every checked upstream was found.
    pub fn all_ready(&self) -> bool {
        self.state
            .iter()
            .all(|s| s.load(Ordering::Relaxed) == READY)
    }

    /// The routes whose upstream is not (yet) known to be there, with why.
    pub fn not_ready(&self, gw: &Gateway) -> Vec<(String, String)> {
        let reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        self.state
            .iter()
            .enumerate()
            .filter(|(_, s)| s.load(Ordering::Relaxed) != READY)
            .map(|(i, _)| {
                let why = reasons[i]
                    .clone()
                    .unwrap_or_else(|| "not checked yet".into());
                (gw.config.routes[i].name(), why)
            })
            .collect()
    }

    fn set(&self, route: usize, state: u8, reason: Option<String>) {
        self.state[route].store(state, Ordering::Relaxed);
        self.reasons.lock().unwrap_or_else(|p| p.into_inner())[route] = reason;
    }
}

/// Checks every route's upstream until all are there, or until the gateway is out of
/// service (a reload replaced it and its last request is answered).
pub async fn watch(gw: Arc<Gateway>) {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .or_else(|| gw.config.aws.endpoint_url.clone())
        .unwrap_or_else(|| "the AWS endpoint of the region".into());
    let weak = Arc::downgrade(&gw);
    drop(gw);
    loop {
        let Some(gw) = weak.upgrade() else { return };
        // Routes sharing a target share one check per pass: an API of many routes on a few
        // streams makes a few calls, not one per route.
        let mut checked: std::collections::HashMap<(Action, String), Result<(), String>> =
            std::collections::HashMap::new();
        for (i, upstream) in gw.upstreams.iter().enumerate() {
            if gw.upstream_state.state[i].load(Ordering::Relaxed) == READY {
                continue;
            }
            let route = gw.config.routes[i].name();
            // A target the template chooses cannot be checked ahead of a request.
            let Some(target) = upstream.target.as_deref() else {
                gw.upstream_state.set(i, READY, None);
                crate::telemetry::upstream_ready(&route, true);
                continue;
            };
            let key = (upstream.action, target.to_string());
            let result = match checked.get(&key) {
                Some(done) => done.clone(),
                None => {
                    let check = upstream
                        .integration
                        .check(&gw.clients, upstream.action, target);
                    let result = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                    };
                    checked.insert(key, result.clone());
                    result
                }
            };
            let was = gw.upstream_state.state[i].load(Ordering::Relaxed);
            crate::telemetry::upstream_ready(&route, result.is_ok());
            match result {
                Ok(()) => {
                    if was == FAILING {
                        tracing::info!(route = %route, target, "The route's upstream is there now.");
                    }
                    gw.upstream_state.set(i, READY, None);
                }
                Err(e) => {
                    if was != FAILING {
                        tracing::warn!(route = %route, target, endpoint = %endpoint, error = %e, "The route's upstream is missing or unreachable: its requests will fail until it is there. Create it (ingest-gateway provision) or point aws.endpoint_url at the right endpoint.");
                    }
                    gw.upstream_state
                        .set(i, FAILING, Some(format!("{target}: {e}")));
                }
            }
        }
        if gw.upstream_state.all_ready() {
            return;
        }
        drop(gw);
        tokio::time::sleep(RECHECK_EVERY).await;
    }
}
