//! `ingest-gateway reload`: asks the running gateway to load its configuration again, through
//! its admin listener (`POST /reload`), and prints what it answered: what changed, or every
//! error (the running configuration then keeps serving). SIGHUP does the same without an
//! answer.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value as Json;

/// How long the gateway may take to load, compile and swap.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

pub fn run(config_path: &Path) -> anyhow::Result<bool> {
    let admin = admin_address(config_path)?;
    let (status, body) = post_reload(admin).with_context(|| {
        format!("asking the gateway at {admin} (server.admin_listen) to reload")
    })?;
    let answer: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
    if status == 200 {
        println!(
            "reloaded: {} routes, {} kept their batchers",
            answer["routes"], answer["kept_batchers"]
        );
        for setting in answer["at_restart"].as_array().into_iter().flatten() {
            println!(
                "{}: changed, takes effect at the next restart",
                setting.as_str().unwrap_or_default()
            );
        }
        return Ok(true);
    }
    let errors: Vec<&str> = answer["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect();
    if errors.is_empty() {
        bail!("the gateway answered {status}: {body}");
    }
    eprintln!("not reloaded; the running configuration keeps serving:");
    for e in errors {
        eprintln!("{e}");
    }
    Ok(false)
}

/// `server.admin_listen` of the file, read leniently: the file may hold the very errors the
/// reload is to report.
fn admin_address(config_path: &Path) -> anyhow::Result<SocketAddr> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{} is not TOML ({e}); run check-config",
            config_path.display()
        )
    })?;
    let Some(address) = doc
        .get("server")
        .and_then(|s| s.get("admin_listen"))
        .and_then(toml::Value::as_str)
    else {
        bail!(
            "{} sets no server.admin_listen: set one to reload with this command, or send SIGHUP to the gateway's process",
            config_path.display()
        );
    };
    let mut addr: SocketAddr = address
        .parse()
        .map_err(|e| anyhow!("server.admin_listen {address:?}: {e}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr)
}

fn post_reload(admin: SocketAddr) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(ANSWER_WITHIN))?;
    write!(
        stream,
        "POST /reload HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(1 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no complete answer"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer: {head}"))?;
    // The admin listener answers with a length, never chunked, for a small JSON body.
    Ok((status, body.to_string()))
}
