//! `ingest-gateway serve`: load and check everything, build the AWS clients once, listen.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::auth::sync;
use crate::config;
use crate::integrations::Clients;
use crate::pipeline::{self, Gateway};
use crate::{server, telemetry};

pub async fn run(config_path: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    telemetry::init_logging();
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    telemetry::install(&config.buckets.latency, &config.buckets.size);
    let compiled =
        pipeline::compile_templates(&config).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let clients = Clients::new(&config.aws).await;
    let now_ms = crate::server::epoch_ms();
    // The fleet store's calls run on its own runtime: opened and read off this one.
    let (location, aws) = (config.key_store.clone(), config.aws.clone());
    let (store, loaded) = tokio::task::spawn_blocking(move || {
        let store = sync::open(&location, &aws)
            .with_context(|| format!("opening the key store {location}"))?;
        let loaded = sync::load(&store, now_ms)?;
        anyhow::Ok((store, loaded))
    })
    .await??;
    tracing::info!(keys = loaded.snapshot.len(), store = %config.key_store, "Loaded API keys.");
    let auth = Arc::new(pipeline::authorizer(&config, loaded.snapshot, loaded.usage));
    let address = listen.unwrap_or(config.listen);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr()?;
    let admin = match config.admin_listen {
        None => None,
        Some(address) => {
            let admin = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (server.admin_listen)"))?;
            tracing::info!(address = %admin.local_addr()?, "Admin listener: /healthz, /readyz, /metrics and the OpenAPI document.");
            Some(admin)
        }
    };
    tracing::info!(address = %local, routes = config.routes.len(), stage = %config.stage, "Listening.");
    let keys = Arc::new(sync::KeySync::new(
        store,
        auth.clone(),
        loaded.version,
        loaded.change,
    ));
    let mut gw = Gateway::new(config, compiled, clients, auth.clone())?;
    let scheme = if gw.tls.is_some() { "https" } else { "http" };
    crate::server::catch_signals();
    println!("listening on {scheme}://{local}");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let fleet_tasks = match gw.config.key_store.fleet() {
        Some(prefix) => fleet(prefix, &gw.clients.aws, &keys, &auth, &stopped),
        None => Vec::new(),
    };
    gw.set_keys(keys.clone());
    let gw = Arc::new(gw);
    tokio::spawn(pipeline::readiness::watch(gw.clone()));
    telemetry::spawn_upkeep();
    let sync_task = tokio::spawn(sync::run(keys, stopped));
    let live = pipeline::Live::new(gw, Some(config_path.to_path_buf()));
    tokio::spawn(reload_on_hangup(live.clone()));
    let served = server::run_with_admin(live, listener, admin).await;
    // The last usage counts reach the store before the process exits.
    let _ = stop.send(true);
    let _ = sync_task.await;
    // Unspent quota leases go back to the fleet and the node leaves it.
    for task in fleet_tasks {
        let _ = task.await;
    }
    served?;
    tracing::info!("Stopped.");
    Ok(())
}

/// With the fleet store: quota leases for the request path, and the membership that
/// shares the throttles; their tasks run until `stopped`.
fn fleet(
    prefix: &str,
    signer: &crate::integrations::aws::Signer,
    keys: &Arc<sync::KeySync>,
    auth: &Arc<crate::auth::Authorizer>,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use crate::auth::fleet::{Dynamo, Tables, leases, members};
    let tables = Tables::new(prefix);
    let leases = Arc::new(leases::Leases::new(
        Dynamo::new(signer.clone()),
        tables.clone(),
    ));
    keys.set_leases(leases.clone());
    let members = Arc::new(members::Members::new(Dynamo::new(signer.clone()), tables));
    tracing::info!(node = %members.node, "Joining the fleet.");
    vec![
        tokio::spawn(leases::run(leases, auth.clone(), stopped.clone())),
        tokio::spawn(members::run(members, auth.clone(), stopped.clone())),
    ]
}

/// Reloads the configuration on every SIGHUP (see `pipeline::reload`).
async fn reload_on_hangup(live: Arc<pipeline::Live>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("Cannot listen for SIGHUP: reload through the admin listener instead.");
        return;
    };
    while hup.recv().await.is_some() {
        let _ = live.reload_and_log("SIGHUP").await;
    }
}
