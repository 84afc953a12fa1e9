//! `ingest-gateway spool status|inspect|replay`: what waits in the spool, the records
//! themselves, and delivering them without a running gateway.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::Subcommand;
use serde_json::{Value as Json, json};

use crate::config::{self, Config};
use crate::integrations::kinesis::Entry;
use crate::integrations::{self, BatchRoute, Clients};

use crate::spool::{self, Record, Spool, log};

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Records and bytes waiting per route, and whether a gateway holds the spool.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print waiting records as JSON lines, oldest first (reads only; safe while serving).
    Inspect {
        /// Only this route (`"POST /v1/events"`).
        #[arg(long)]
        route: Option<String>,
        /// Records per route, at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The dead letters (records the upstream refused for good) instead.
        #[arg(long)]
        dead_letters: bool,
    },
    /// Deliver everything waiting, then exit (the gateway must not be running: it replays by
    /// itself).
    Replay {
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Send the dead letters again instead, once each, after their cause is fixed: what
        /// is accepted leaves them, the rest stays. Works while a gateway runs.
        #[arg(long)]
        dead_letters: bool,
    },
}

pub fn run(config_path: &Path, command: &SpoolCommand) -> anyhow::Result<bool> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    match command {
        SpoolCommand::Status { json } => status(&config, *json),
        SpoolCommand::Inspect {
            route,
            limit,
            dead_letters,
        } => inspect(&config, route.as_deref(), *limit, *dead_letters),
        SpoolCommand::Replay {
            route,
            dead_letters,
        } => tokio::runtime::Runtime::new()?.block_on(replay(
            &config,
            route.as_deref(),
            *dead_letters,
        )),
    }
}

/// A spool directory: the route it belongs to and whether that route is still configured.
struct Found {
    route: String,
    dir: PathBuf,
    configured: bool,
}

/// The spools of the configured routes that spool, then any other spool directory under the
/// spool root (a route since renamed or removed, whose records still wait).
fn spools(config: &Config) -> Vec<Found> {
    let mut found: Vec<Found> = config
        .routes
        .iter()
        .filter(|r| r.spool.is_some())
        .map(|r| Found {
            route: r.name(),
            dir: spool::route_dir(&config.spool.dir, &r.name()),
            configured: true,
        })
        .collect();
    if let Ok(entries) = fs::read_dir(&config.spool.dir) {
        let mut others: Vec<Found> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !found.iter().any(|f| &f.dir == p))
            .map(|dir| Found {
                route: fs::read_to_string(dir.join("route")).unwrap_or_default(),
                dir,
                configured: false,
            })
            .collect();
        others.sort_by(|a, b| a.dir.cmp(&b.dir));
        found.extend(others);
    }
    found
}

/// Whether a process holds the spool's lock.
fn in_use(dir: &Path) -> bool {
    let Ok(f) = fs::OpenOptions::new().write(true).open(dir.join("lock")) else {
        return false;
    };
    matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))
}

fn status(config: &Config, as_json: bool) -> anyhow::Result<bool> {
    let mut rows = Vec::new();
    for f in spools(config) {
        let (records, bytes, segments, oldest) = if f.dir.is_dir() {
            let s = log::survey(&f.dir)?;
            let oldest = s
                .segments
                .iter()
                .find(|seg| seg.records > 0)
                .and_then(|seg| fs::metadata(f.dir.join(spool::format::segment_name(seg.id))).ok())
                .and_then(|m| m.created().or_else(|_| m.modified()).ok())
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs());
            (
                s.segments.iter().map(|seg| seg.records).sum::<u64>(),
                s.segments.iter().map(|seg| seg.bytes).sum::<u64>(),
                s.segments.len(),
                oldest,
            )
        } else {
            (0, 0, 0, None)
        };
        rows.push(json!({
            "route": f.route,
            "configured": f.configured,
            "dir": f.dir.display().to_string(),
            "records": records,
            "bytes": bytes,
            "segments": segments,
            "oldest_segment_age_seconds": oldest,
            "in_use": f.dir.is_dir() && in_use(&f.dir),
            "dead_letters": log::read_frames(&f.dir.join(spool::DEAD_LETTERS), usize::MAX)
                .map_or(0, |d| d.len()),
        }));
    }
    if as_json {
        println!("{}", json!({ "routes": rows }));
        return Ok(true);
    }
    if rows.is_empty() {
        println!("no route spools (set [spool] mode or a route's spool)");
        return Ok(true);
    }
    println!(
        "{:<32} {:>10} {:>12} {:>8} {:>10}  state",
        "route", "records", "bytes", "segments", "oldest"
    );
    for r in &rows {
        let oldest = r["oldest_segment_age_seconds"]
            .as_u64()
            .map_or("-".to_string(), |s| format!("{s}s"));
        let mut state = vec![];
        if r["in_use"] == true {
            state.push("held by a running gateway");
        }
        if r["configured"] == false {
            state.push("NOT CONFIGURED: no route replays it");
        }
        let dead = format!(
            "{} dead letters (spool inspect --dead-letters)",
            r["dead_letters"]
        );
        if r["dead_letters"].as_u64().is_some_and(|n| n > 0) {
            state.push(&dead);
        }
        println!(
            "{:<32} {:>10} {:>12} {:>8} {:>10}  {}",
            r["route"].as_str().unwrap_or(""),
            r["records"],
            r["bytes"],
            r["segments"],
            oldest,
            state.join("; ")
        );
    }
    Ok(true)
}

/// A spooled record as JSON: its keys, and its data as text when it is UTF-8.
fn describe(route: &str, payload: &[u8]) -> Json {
    let data = |d: &[u8]| match std::str::from_utf8(d) {
        Ok(text) => json!({ "data": text }),
        Err(_) => json!({ "data_base64": base64::engine::general_purpose::STANDARD.encode(d) }),
    };
    let mut out = if let Some(e) = Entry::decode(payload) {
        let mut v = data(&e.data);
        v["partition_key"] = json!(e.partition_key);
        if let Some(h) = e.explicit_hash_key {
            v["explicit_hash_key"] = json!(h);
        }
        v
    } else if let Some(d) = Vec::<u8>::decode(payload) {
        data(&d)
    } else {
        json!({ "undecodable_bytes": payload.len() })
    };
    out["route"] = json!(route);
    out
}

fn inspect(
    config: &Config,
    route: Option<&str>,
    limit: usize,
    dead_letters: bool,
) -> anyhow::Result<bool> {
    let mut any = false;
    for f in spools(config) {
        if route.is_some_and(|r| r != f.route) || !f.dir.is_dir() {
            continue;
        }
        any = true;
        let payloads = if dead_letters {
            log::read_frames(&f.dir.join(spool::DEAD_LETTERS), limit)?
        } else {
            log::peek(&f.dir, limit)?
        };
        for payload in payloads {
            println!("{}", describe(&f.route, &payload));
        }
    }
    if !any && let Some(r) = route {
        anyhow::bail!("no spool for the route {r:?}");
    }
    Ok(true)
}

async fn replay(config: &Config, only: Option<&str>, dead_letters: bool) -> anyhow::Result<bool> {
    let clients = Clients::new(&config.aws).await;
    let mut any = false;
    for r in &config.routes {
        let name = r.name();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let (Some(_), Some(policy), Some(target)) = (r.spool, r.batch, r.target.clone()) else {
            continue;
        };
        any = true;
        let route = BatchRoute {
            action: r.action,
            target: &target,
            policy,
            name: &name,
            replay_in_flight: config.spool.replay_in_flight,
        };
        let Some(integration) = integrations::of(r.action) else {
            continue;
        };
        if dead_letters {
            let dir = spool::route_dir(&config.spool.dir, &name);
            let what = spool::Replay::DeadLetters(&dir);
            if let Some(replay) = integration.replay(&clients, route, what) {
                let done = replay.await?;
                println!(
                    "{name}: {} dead letters delivered, {} still refused",
                    done.delivered, done.refused
                );
            }
            continue;
        }
        let (spool, recovered) = Spool::open(&name, &config.spool)?;
        eprintln!("{name}: {} records waiting", recovered.records);
        let delivered = match integration.replay(&clients, route, spool::Replay::Spool(&spool)) {
            Some(replay) => replay.await?.delivered,
            None => 0,
        };
        println!("{name}: {delivered} records delivered");
    }
    if !any {
        anyhow::bail!(match only {
            Some(r) => format!("no route {r:?} with a spool"),
            None => "no route has a spool".to_string(),
        });
    }
    Ok(true)
}
