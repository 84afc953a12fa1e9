//! `ingest-gateway serve`: load and check everything, build the AWS clients once, listen.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config;
use crate::integrations::Clients;
use crate::pipeline::{self, Gateway};
use crate::route::RouteTable;
use crate::{server, telemetry};

pub async fn run(config_path: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    telemetry::init_logging();
    let _ = telemetry::prometheus();
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compiled =
        pipeline::compile_templates(&config).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let clients = Clients::new(&config.aws).await;
    let routes = RouteTable::new(
        config
            .routes
            .iter()
            .map(|r| (r.method.clone(), r.path.clone())),
    );
    let address = listen.unwrap_or(config.listen);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, routes = config.routes.len(), stage = %config.stage, "Listening.");
    println!("listening on http://{local}");
    let gw = Arc::new(Gateway {
        config,
        routes,
        compiled,
        clients,
        ready: AtomicBool::new(true),
    });
    server::run(gw, listener).await?;
    tracing::info!("Stopped.");
    Ok(())
}
