//! Configuration reload without a restart (SIGHUP, `POST /reload` on the admin listener,
//! `ingest-gateway reload`).
//!
//! The gateway in service is one [`Gateway`] behind an [`ArcSwap`]; each request takes the
//! one current when it arrives and keeps it to its end. A reload loads the file again,
//! validates it and compiles every template first; only when all of that succeeds is a new
//! gateway built from it ([`Gateway::succeeding`]: unchanged routes keep their batchers and
//! spools, the authorizer keeps its keys and counts) and swapped in. Anything that fails
//! leaves the old one serving, and the errors name their file, line and column.
//!
//! Settings of the listener itself (its address, TLS on or off, connection limits and
//! timers, the admin listener, the key store, the AWS settings) take effect at the next
//! restart; a reload that changes them says so.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use super::Gateway;
use crate::config::{self, Config};

/// The gateway in service, and how to replace it.
pub struct Live {
    current: ArcSwap<Gateway>,
    /// The configuration file; `None` for a gateway built in process (tests).
    path: Option<PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Set once shutdown begins: `/readyz` fails, and no reload starts.
    stopping: AtomicBool,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub routes: usize,
    /// Routes that kept their batcher and spool.
    pub kept: usize,
    /// Settings that changed but wait for a restart.
    pub at_restart: Vec<&'static str>,
}

impl Live {
    pub fn new(gw: Arc<Gateway>, path: Option<PathBuf>) -> Arc<Live> {
        Arc::new(Live {
            current: ArcSwap::new(gw),
            path,
            reloading: tokio::sync::Mutex::new(()),
            stopping: AtomicBool::new(false),
        })
    }

    /// The gateway a request arriving now is served by.
    pub fn load(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Begins shutdown: `/readyz` fails from now on, and reloads are refused.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.load().ready.store(false, Ordering::Relaxed);
    }

    /// Loads the configuration file again and, if all of it is valid, serves it; otherwise
    /// the errors, and the old configuration keeps serving.
    pub async fn reload(&self) -> Result<Reloaded, Vec<String>> {
        let _one = self.reloading.lock().await;
        if self.stopping() {
            return Err(vec!["the gateway is shutting down".into()]);
        }
        let Some(path) = self.path.clone() else {
            return Err(vec![
                "this gateway was not started from a configuration file".into(),
            ]);
        };
        // Reading files and compiling templates is blocking work.
        let loaded = tokio::task::spawn_blocking(move || {
            let config = config::load(&path)
                .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
            let compiled = super::compile_templates(&config)?;
            Ok::<_, Vec<String>>((config, compiled))
        })
        .await
        .map_err(|e| vec![format!("the reload stopped: {e}")])?;
        let (config, compiled) = loaded?;
        let old = self.load();
        let at_restart = at_restart(&old.config, &config);
        let gw = Gateway::succeeding(config, compiled, &old).map_err(|e| vec![e.to_string()])?;
        let before: std::collections::HashSet<*const crate::dispatch::Upstream> =
            old.upstreams.iter().map(Arc::as_ptr).collect();
        let kept = gw
            .upstreams
            .iter()
            .filter(|u| before.contains(&Arc::as_ptr(u)))
            .count();
        let reloaded = Reloaded {
            routes: gw.config.routes.len(),
            kept,
            at_restart,
        };
        let gw = Arc::new(gw);
        tokio::spawn(super::readiness::watch(gw.clone()));
        self.current.store(gw);
        Ok(reloaded)
    }

    /// Reloads, and logs what happened.
    pub async fn reload_and_log(&self, trigger: &str) -> Result<Reloaded, Vec<String>> {
        let result = self.reload().await;
        match &result {
            Ok(r) => {
                tracing::info!(
                    trigger,
                    routes = r.routes,
                    kept_batchers = r.kept,
                    "Configuration reloaded."
                );
                for setting in &r.at_restart {
                    tracing::warn!(
                        setting,
                        "This setting changed; it takes effect at the next restart."
                    );
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::error!(trigger, error = %e, "The reload was refused; the running configuration keeps serving.");
                }
            }
        }
        result
    }
}

/// The listener's own settings that differ between `old` and `new`.
fn at_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, name: &'static str| {
        if differs {
            changed.push(name);
        }
    };
    check(old.listen != new.listen, "server.listen");
    check(old.admin_listen != new.admin_listen, "server.admin_listen");
    check(old.edge.tls != new.edge.tls, "server.tls");
    check(
        old.max_connections != new.max_connections,
        "server.max_connections",
    );
    check(
        old.max_connections_per_ip != new.max_connections_per_ip,
        "server.max_connections_per_ip",
    );
    check(old.max_headers != new.max_headers, "server.max_headers");
    check(old.idle_timeout != new.idle_timeout, "server.idle_timeout");
    check(
        old.header_read_timeout != new.header_read_timeout,
        "server.header_read_timeout",
    );
    check(
        old.first_byte_timeout != new.first_byte_timeout,
        "server.first_byte_timeout",
    );
    check(
        old.shutdown_grace != new.shutdown_grace || old.shutdown_delay != new.shutdown_delay,
        "server.shutdown_grace / shutdown_delay",
    );
    check(old.key_store != new.key_store, "auth.key_store");
    check(
        old.buckets != new.buckets,
        "telemetry.latency_buckets / size_buckets",
    );
    check(old.openapi_path != new.openapi_path, "server.openapi_path");
    check(
        old.sdk_downloads != new.sdk_downloads,
        "server.sdk_downloads",
    );
    check(old.aws != new.aws, "[aws]");
    check(old.spool != new.spool, "[spool]");
    changed
}
