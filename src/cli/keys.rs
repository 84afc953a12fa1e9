//! `ingest-gateway keys ...` and `ingest-gateway usage`: manage API keys in the key store
//! while the gateway runs (it picks changes up within a second).
//!
//! `keys create` and `keys rotate` print the key alone on stdout, the only time it is ever
//! shown; everything else goes to stderr, so `KEY=$(ingest-gateway keys create ...)` works.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::auth::backend::{Backend, StoreLocation};
use crate::auth::fleet::store::DynamoStore;
use crate::auth::plans::{day_label, parse_day};
use crate::auth::store::{self, KeyRecord, KeyStore, NewKey};
use crate::config::{self, Config, parse_duration};
use crate::server::epoch_ms;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Issue a key; prints it (only now) on stdout.
    Create {
        #[arg(long)]
        name: String,
        /// A usage plan declared in gateway.toml.
        #[arg(long)]
        plan: String,
        /// Lifetime, e.g. 90d or 12h.
        #[arg(long)]
        expires: Option<String>,
        /// Use this value instead of generating one (20-128 characters).
        #[arg(long)]
        value: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        customer: Option<String>,
        /// A browser key: accepted only from pages of these origins (comma-separated,
        /// `https://shop.example,https://www.shop.example`), by their `Origin` header.
        #[arg(long, value_delimiter = ',')]
        origins: Vec<String>,
        /// With --origins: also accept requests that send no `Origin` (apps, servers).
        #[arg(long, requires = "origins")]
        allow_no_origin: bool,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List keys (never their values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one key.
    Show {
        id: String,
    },
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
    /// Delete a key for good.
    Revoke {
        id: String,
    },
    /// Give a key a new value; prints it on stdout. The old value works for the grace period.
    Rotate {
        id: String,
        #[arg(long, default_value = "0s")]
        grace: String,
    },
    /// Import keys from a CSV file as API Gateway exports them (columns Name, Key,
    /// Description, Enabled, UsagePlanIds), or, into the fleet store, every key and its
    /// usage from a SQLite key store (`keys import keys.db`).
    Import {
        file: PathBuf,
        /// Plan for rows without UsagePlanIds.
        #[arg(long)]
        plan: Option<String>,
    },
}

fn open(config_path: &Path) -> anyhow::Result<(Config, Backend)> {
    let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = Backend::open(&config.key_store, &config.aws)
        .with_context(|| format!("opening the key store {}", config.key_store))?;
    Ok((config, store))
}

/// Whether `file` is a SQLite database (a key store to move), not a CSV export.
fn is_sqlite(file: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 16];
    std::fs::File::open(file)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0")
}

/// `keys import STORE.db` into the fleet store: every key with its hashes (no value is
/// needed), previous and retired values, and the usage recorded so far.
fn import_store(config: &Config, file: &Path) -> anyhow::Result<bool> {
    let StoreLocation::Dynamo { prefix } = &config.key_store else {
        bail!(
            "{} is a SQLite key store: it can be imported into the fleet store (auth.key_store = \"dynamodb://PREFIX\"), not into another SQLite store",
            file.display()
        );
    };
    let from = KeyStore::open(file).with_context(|| format!("opening {}", file.display()))?;
    let secret = store::read_secret(file)?;
    let to = DynamoStore::open(prefix, &config.aws, Some(secret))
        .with_context(|| format!("opening the key store {}", config.key_store))?;
    let (imported, skipped) = to.import_store(&from)?;
    eprintln!(
        "imported {imported} keys from {} into {} ({skipped} were there already), with their usage",
        file.display(),
        config.key_store
    );
    Ok(true)
}

fn check_plan(config: &Config, plan: &str) -> anyhow::Result<()> {
    if config.usage_plans.iter().any(|p| p.name == plan) {
        return Ok(());
    }
    let known: Vec<&str> = config.usage_plans.iter().map(|p| p.name.as_str()).collect();
    bail!(
        "no usage plan {plan:?} in the configuration (plans: {})",
        known.join(", ")
    )
}

fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000) % 86_400;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        day_label(ms),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn describe(k: &KeyRecord) -> serde_json::Value {
    json!({
        "id": k.id,
        "name": k.name,
        "plan": k.plan,
        "enabled": k.enabled,
        "created": time(k.created_at),
        "expires": k.expires_at.map(time),
        "description": k.description,
        "customer": k.customer,
        "origins": k.origins,
        "allow_no_origin": k.allow_no_origin,
        "previous_value_valid_until": k.previous.iter().map(|(_, until)| *until).max().map(time),
        "previous_values": k.previous.len(),
    })
}

pub fn run(config_path: &Path, command: &KeysCommand) -> anyhow::Result<bool> {
    if let KeysCommand::Import { file, .. } = command
        && is_sqlite(file)
    {
        let config = config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        return import_store(&config, file);
    }
    let (config, mut store) = open(config_path)?;
    let now = epoch_ms();
    match command {
        KeysCommand::Create {
            name,
            plan,
            expires,
            value,
            description,
            customer,
            origins,
            allow_no_origin,
            disabled,
        } => {
            check_plan(&config, plan)?;
            let expires_at = match expires {
                None => None,
                Some(e) => {
                    let d = parse_duration(e)
                        .with_context(|| format!("--expires {e:?}: use e.g. 90d, 12h"))?;
                    Some(now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
                }
            };
            let new = NewKey {
                name: name.clone(),
                plan: plan.clone(),
                value: value.clone(),
                expires_at,
                description: description.clone(),
                customer: customer.clone(),
                enabled: !disabled,
                origins: origins
                    .iter()
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect(),
                allow_no_origin: *allow_no_origin,
            };
            let (rec, key) = store.create(&new, now)?;
            eprintln!("created key {} ({}) in plan {}", rec.id, rec.name, rec.plan);
            println!("{key}");
        }
        KeysCommand::List { json } => {
            let keys = store.list()?;
            if *json {
                let all: Vec<_> = keys.iter().map(describe).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:<12} {:<24} {:<16} {:<8} {:<21} EXPIRES",
                    "ID", "NAME", "PLAN", "ENABLED", "CREATED"
                );
                for k in &keys {
                    println!(
                        "{:<12} {:<24} {:<16} {:<8} {:<21} {}",
                        k.id,
                        k.name,
                        k.plan,
                        k.enabled,
                        time(k.created_at),
                        k.expires_at.map_or("-".to_string(), time)
                    );
                }
            }
        }
        KeysCommand::Show { id } => match store.get(id)? {
            Some(k) => println!("{}", serde_json::to_string_pretty(&describe(&k))?),
            None => bail!("no key {id}"),
        },
        KeysCommand::Disable { id } | KeysCommand::Enable { id } => {
            let enable = matches!(command, KeysCommand::Enable { .. });
            if !store.set_enabled(id, enable)? {
                bail!("no key {id}");
            }
            eprintln!("{} key {id}", if enable { "enabled" } else { "disabled" });
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke(id, now)? {
                bail!("no key {id}");
            }
            eprintln!("revoked key {id}");
        }
        KeysCommand::Rotate { id, grace } => {
            let grace = parse_duration(grace)
                .or_else(|| (grace.trim() == "0").then_some(std::time::Duration::ZERO))
                .with_context(|| format!("--grace {grace:?}: use e.g. 24h"))?;
            let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 2);
            let Some(key) = store.rotate(id, grace_ms, now)? else {
                bail!("no key {id}");
            };
            eprintln!(
                "rotated key {id}; the previous value works for {}s more",
                grace.as_secs()
            );
            println!("{key}");
        }
        KeysCommand::Import { file, plan } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let (imported, problems) = import(&config, &mut store, &text, plan.as_deref(), now);
            for p in &problems {
                eprintln!("{}: {p}", file.display());
            }
            eprintln!("imported {imported} keys, {} rows skipped", problems.len());
            return Ok(problems.is_empty());
        }
    }
    Ok(true)
}

/// Keys created per transaction by an import: a million-key export loads in seconds, and a
/// failure stops at a chunk boundary.
const IMPORT_CHUNK: usize = 10_000;

/// Imports API Gateway's CSV key export. Returns the number imported and the problems.
fn import(
    config: &Config,
    store: &mut Backend,
    text: &str,
    default_plan: Option<&str>,
    now: i64,
) -> (usize, Vec<String>) {
    let rows = parse_csv(text);
    let mut problems = Vec::new();
    let Some((header, rows)) = rows.split_first() else {
        return (0, vec!["empty file".into()]);
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(key_col), name_col) = (col("key"), col("name")) else {
        return (0, vec!["no Key column".into()]);
    };
    let (desc_col, enabled_col, plan_col) =
        (col("description"), col("enabled"), col("usageplanids"));
    let mut imported = 0;
    // The chunk being read: each key and its line.
    let (mut lines, mut keys): (Vec<usize>, Vec<NewKey>) = (Vec::new(), Vec::new());
    let mut create =
        |lines: &mut Vec<usize>, keys: &mut Vec<NewKey>, problems: &mut Vec<String>| {
            match store.create_all(keys, now) {
                Ok(results) => {
                    for (line, r) in lines.iter().zip(results) {
                        match r {
                            Ok(_) => imported += 1,
                            Err(e) => problems.push(format!("line {line}: {e}")),
                        }
                    }
                }
                Err(e) => {
                    let (first, last) = (lines[0], lines[lines.len() - 1]);
                    problems.push(format!("lines {first}-{last}: not imported: {e}"));
                }
            }
            lines.clear();
            keys.clear();
        };
    for (i, row) in rows.iter().enumerate() {
        let line = i + 2;
        let get = |c: Option<usize>| {
            c.and_then(|c| row.get(c))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let Some(value) = get(Some(key_col)) else {
            problems.push(format!("line {line}: no key"));
            continue;
        };
        let plan = get(plan_col)
            .and_then(|p| p.split([';', ',']).next().map(str::to_string))
            .or_else(|| default_plan.map(str::to_string));
        let Some(plan) = plan else {
            problems.push(format!("line {line}: no usage plan (add --plan)"));
            continue;
        };
        if let Err(e) = check_plan(config, &plan) {
            problems.push(format!("line {line}: {e}"));
            continue;
        }
        let new = NewKey {
            name: get(name_col).unwrap_or_else(|| format!("imported-{line}")),
            plan,
            value: Some(value),
            expires_at: None,
            description: get(desc_col),
            customer: None,
            enabled: get(enabled_col).is_none_or(|e| !e.eq_ignore_ascii_case("false")),
            ..NewKey::default()
        };
        lines.push(line);
        keys.push(new);
        if keys.len() == IMPORT_CHUNK {
            create(&mut lines, &mut keys, &mut problems);
        }
    }
    if !keys.is_empty() {
        create(&mut lines, &mut keys, &mut problems);
    }
    (imported, problems)
}

/// A small CSV reader: commas, double-quoted fields with `""` escapes, CRLF or LF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows.retain(|r| !(r.len() == 1 && r[0].trim().is_empty()));
    rows
}

/// `ingest-gateway usage`: requests counted per key and UTC day (like GetUsage).
pub fn usage(
    config_path: &Path,
    key: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> anyhow::Result<bool> {
    let (_, store) = open(config_path)?;
    let today = day_label(epoch_ms());
    let from = from.map_or_else(|| today.clone(), str::to_string);
    let to = to.map_or(today, str::to_string);
    for d in [&from, &to] {
        if parse_day(d).is_none() {
            bail!("{d:?} is not a YYYY-MM-DD date");
        }
    }
    let rows = store.usage(key, &from, &to)?;
    println!("{:<12} {:<10} {:>10}", "KEY", "DAY", "REQUESTS");
    for (k, day, n) in rows {
        println!("{k:<12} {day:<10} {n:>10}");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn csv_fields() {
        let rows = parse_csv("Name,Key,Description\r\n\"a, b\",k1,\"say \"\"hi\"\"\"\nc,k2,\n\n");
        assert_eq!(
            rows,
            vec![
                vec!["Name", "Key", "Description"],
                vec!["a, b", "k1", "say \"hi\""],
                vec!["c", "k2", ""]
            ]
        );
    }
}
