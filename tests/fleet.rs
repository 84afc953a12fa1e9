//! The fleet store (`auth.key_store = "dynamodb://PREFIX"`) against the emulator's DynamoDB,
//! with several gateway processes on one machine: keys changed on one node reach the
//! others, a quota holds exactly across nodes (and after one is killed), unspent leases go
//! back at SIGTERM, and the throttles are shared by the live nodes.
//!
//! The routes are mock integrations, so the only AWS calls are the fleet store's.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Gateway, Project, Response};

const MOCK: (&str, &str) = ("mock.vtl", r#"{"statusCode": 200}"#);
const OK: (&str, &str) = ("ok.vtl", r#"{"ok": true}"#);

/// A configuration on the fleet store `fleet-{S}` with plans for each test.
const CONFIG: &str = r#"
[auth]
key_store = "dynamodb://fleet-{S}"

[usage_plans.open]
throttle = { rate = 10000, burst = 10000 }

[usage_plans.exact]
throttle = { rate = 10000, burst = 10000 }
quota = { limit = 300, period = "DAY" }

[usage_plans.large]
throttle = { rate = 10000, burst = 10000 }
quota = { limit = 1500, period = "DAY" }

[usage_plans.returned]
throttle = { rate = 10000, burst = 10000 }
quota = { limit = 100, period = "DAY" }

[usage_plans.shared]
throttle = { rate = 1, burst = 20 }

[[routes]]
method = "POST"
path = "/v1/events"
api_key_required = true
action = "mock"
request_templates = { "application/json" = "mock.vtl" }

[[routes.responses]]
status = 200
template = "ok.vtl"
"#;

fn project(test: &str) -> Option<(Project, String)> {
    let endpoint = support::emulator()?;
    let p = Project::custom(test, CONFIG, &[MOCK, OK]);
    let out = p.cli(&["provision"]);
    assert!(
        out.status.success(),
        "provision: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((p, endpoint))
}

fn env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

fn node(p: &Project, endpoint: &str) -> Gateway {
    let env = env(endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start_with_env(&p.config, &env)
}

/// Runs a CLI command of the project against the emulator; what it did.
fn run_cli<S: AsRef<std::ffi::OsStr>>(
    config: &std::path::Path,
    endpoint: &str,
    args: &[S],
) -> std::process::Output {
    std::process::Command::new(support::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env(endpoint))
        .output()
        .unwrap()
}

/// Runs a CLI command against the emulator; its stdout, which must succeed.
fn cli(p: &Project, endpoint: &str, args: &[&str]) -> String {
    let out = run_cli(&p.config, endpoint, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn three(p: &Project, endpoint: &str) -> [Gateway; 3] {
    [node(p, endpoint), node(p, endpoint), node(p, endpoint)]
}

/// Issues a key named `k` in `plan`; the key.
fn issue(p: &Project, endpoint: &str, plan: &str) -> String {
    let key = cli(
        p,
        endpoint,
        &["keys", "create", "--name", "k", "--plan", plan],
    );
    key.trim().to_string()
}

fn send(gw: &Gateway, key: &str) -> Response {
    gw.post_json_with_key("/v1/events", key, "{}")
}

fn key_id(p: &Project, endpoint: &str, name: &str) -> String {
    let list: serde_json::Value =
        serde_json::from_str(&cli(p, endpoint, &["keys", "list", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How long until every node answers `status` for `key`.
fn until_all(nodes: &[&Gateway], key: &str, status: u16) -> Duration {
    let start = Instant::now();
    for n in nodes {
        loop {
            let got = send(n, key).status;
            if got == status {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "a node still answers {got}, not {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    start.elapsed()
}

#[test]
fn keys_changed_on_one_machine_reach_every_node_within_two_seconds() {
    let Some((p, endpoint)) = project("fleet-keys") else {
        return;
    };
    let nodes = three(&p, &endpoint);
    let all: Vec<&Gateway> = nodes.iter().collect();
    let key = &issue(&p, &endpoint, "open");
    let issued = until_all(&all, key, 200);
    let id = key_id(&p, &endpoint, "k");
    cli(&p, &endpoint, &["keys", "disable", &id]);
    let disabled = until_all(&all, key, 403);
    cli(&p, &endpoint, &["keys", "enable", &id]);
    until_all(&all, key, 200);
    let rotated = cli(&p, &endpoint, &["keys", "rotate", &id]);
    let rotated = rotated.trim();
    let rotation = until_all(&all, key, 403);
    until_all(&all, rotated, 200);
    cli(&p, &endpoint, &["keys", "revoke", &id]);
    let revoked = until_all(&all, rotated, 403);
    eprintln!(
        "issued {issued:?}, disabled {disabled:?}, rotated {rotation:?}, revoked {revoked:?}"
    );
    for d in [issued, disabled, rotation, revoked] {
        assert!(d < Duration::from_secs(2), "{d:?}");
    }
    // A revoked value is never issued again, whichever machine asks.
    let out = run_cli(
        &p.config,
        &endpoint,
        &[
            "keys", "create", "--name", "again", "--plan", "open", "--value", rotated,
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("never issued twice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in nodes {
        n.stop_cleanly();
    }
}

/// Sends `total` requests from `threads` threads, spread over `nodes` in turn (`stop`
/// ends early); the counts of 200 and 429 answers.
fn load(nodes: &[&Gateway], key: &str, total: usize, threads: usize) -> (usize, usize) {
    let (ok, limited, next) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    support::concurrently(threads, |_| {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                break;
            }
            let r = send(nodes[i % nodes.len()], key);
            match r.status {
                200 => ok.fetch_add(1, Ordering::Relaxed),
                429 => {
                    assert_eq!(r.json()["message"], "Limit Exceeded", "{}", r.text());
                    limited.fetch_add(1, Ordering::Relaxed)
                }
                other => panic!("{other}: {}", r.text()),
            };
        }
    });
    (ok.into_inner(), limited.into_inner())
}

fn usage_of(p: &Project, endpoint: &str, id: &str) -> u64 {
    let out = cli(p, endpoint, &["usage", "--key", id]);
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_quota_is_exact_across_three_nodes_under_concurrent_load() {
    let Some((p, endpoint)) = project("fleet-exact") else {
        return;
    };
    let nodes = three(&p, &endpoint);
    let all: Vec<&Gateway> = nodes.iter().collect();
    let key = issue(&p, &endpoint, "exact");
    let (ok, limited) = load(&all, &key, 600, 12);
    assert_eq!(ok, 300, "admitted exactly the quota ({limited} refused)");
    assert_eq!(limited, 300);
    // `usage` reports admitted requests, once the nodes wrote them (at the latest when
    // they stop).
    for n in nodes {
        n.stop_cleanly();
    }
    let id = key_id(&p, &endpoint, "k");
    assert_eq!(usage_of(&p, &endpoint, &id), 300);
}

#[test]
fn a_node_killed_mid_run_leaves_the_fleet_under_the_limit_by_its_lease_at_most() {
    let Some((p, endpoint)) = project("fleet-kill") else {
        return;
    };
    let (a, b, c) = (
        node(&p, &endpoint),
        node(&p, &endpoint),
        node(&p, &endpoint),
    );
    let key = &issue(&p, &endpoint, "large");
    // Blocks are sized by the nodes each counts: all three, before the load.
    for n in [&a, &b, &c] {
        until_nodes(n, 3);
    }
    let (first, _) = load(&[&a, &b, &c], key, 600, 6);
    // Unspent: less than its last block and half the one before, each at most the units
    // left over twice the nodes.
    let stranded_bound = 1500 * 3 / (4 * 3);
    c.kill();
    // The rest of the quota, and more, against the two left.
    let (second, refused) = load(&[&a, &b], key, 1500, 6);
    let admitted = first + second;
    eprintln!("admitted {first} + {second} = {admitted} of 1500; {refused} refused");
    assert!(admitted <= 1500, "the fleet admitted {admitted} of 1500");
    assert!(
        1500 - admitted <= stranded_bound,
        "{} units stranded on the killed node, over the bound {stranded_bound}",
        1500 - admitted
    );
    assert!(refused > 0);
    a.stop_cleanly();
    b.stop_cleanly();
}

#[test]
fn unspent_leases_go_back_to_the_fleet_at_sigterm() {
    let Some((p, endpoint)) = project("fleet-return") else {
        return;
    };
    let (a, b) = (node(&p, &endpoint), node(&p, &endpoint));
    let key = &issue(&p, &endpoint, "returned");
    // Node A alone serves 40, leasing ahead of its need.
    let (ok, _) = load(&[&a], key, 40, 4);
    assert_eq!(ok, 40);
    a.stop_cleanly();
    // Node B gets every unit A did not spend.
    let (ok, refused) = load(&[&b], key, 100, 4);
    assert_eq!(ok, 60, "{refused} refused");
    b.stop_cleanly();
}

fn nodes_seen(gw: &Gateway) -> Option<u32> {
    let metrics = gw.request("GET", "/metrics", &[], b"").text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_fleet_nodes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u32)
}

fn until_nodes(gw: &Gateway, n: u32) -> Duration {
    let start = Instant::now();
    while nodes_seen(gw) != Some(n) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the node counts {:?} nodes, not {n}",
            nodes_seen(gw)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Requests admitted out of a quick burst of `n`.
fn burst(gw: &Gateway, key: &str, n: usize) -> usize {
    (0..n).filter(|_| send(gw, key).status == 200).count()
}

#[test]
fn throttles_are_shared_by_the_live_nodes_as_they_join_and_leave() {
    let Some((p, endpoint)) = project("fleet-share") else {
        return;
    };
    let a = node(&p, &endpoint);
    let key = &issue(&p, &endpoint, "shared");
    until_nodes(&a, 1);
    // Alone, a node has the plan's whole burst of 20.
    let alone = burst(&a, key, 30);
    assert!((20..=21).contains(&alone), "{alone} of a burst of 20");
    let (b, c) = (node(&p, &endpoint), node(&p, &endpoint));
    let joined = until_nodes(&a, 3);
    until_nodes(&b, 3);
    until_nodes(&c, 3);
    // Each of three takes a third of it (a fresh bucket: the key is new to b and c).
    let shares = [burst(&b, key, 30), burst(&c, key, 30)];
    eprintln!("joined after {joined:?}; bursts admitted by two of three nodes: {shares:?}");
    for s in shares {
        assert!((6..=7).contains(&s), "{s} of a burst of 20 shared by 3");
    }
    b.stop_cleanly();
    let left = until_nodes(&a, 2);
    until_nodes(&c, 2);
    eprintln!("a node's leaving seen after {left:?}");
    // A node that crashed is counted out once its heartbeat is old.
    let crashed = Instant::now();
    c.kill();
    until_nodes(&a, 1);
    eprintln!("a crashed node counted out after {:?}", crashed.elapsed());
    a.stop_cleanly();
}

#[test]
fn a_sqlite_store_moves_to_the_fleet_with_its_keys_and_usage() {
    let Some((fleet, endpoint)) = project("fleet-import") else {
        return;
    };
    let sqlite_config = CONFIG.replace("dynamodb://fleet-{S}", "keys.db");
    let single = Project::custom("fleet-import-sqlite", &sqlite_config, &[MOCK, OK]);
    let key = single.key("returned");
    let gw = node(&single, &endpoint);
    let (ok, _) = load(&[&gw], &key, 10, 2);
    assert_eq!(ok, 10);
    gw.stop_cleanly();
    let db = single.dir.join("keys.db");
    let report = run_cli(
        &fleet.config,
        &endpoint,
        &["keys", "import", db.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&report.stderr);
    assert!(report.status.success(), "{text}");
    assert!(text.contains("imported 1 keys"), "{text}");
    // Run again: nothing twice.
    let again = run_cli(
        &fleet.config,
        &endpoint,
        &["keys", "import", db.to_str().unwrap()],
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("imported 0 keys"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // API Gateway's CSV too, in transactions of many keys: a row whose value is taken is
    // refused alone.
    let mut csv = String::from("Name,Key,Enabled\n");
    for i in 0..60 {
        csv.push_str(&format!("csv{i},csv-imported-key-{i:012},true\n"));
    }
    csv.push_str("dup,csv-imported-key-000000000007,true\n");
    let file = fleet.dir.join("keys.csv");
    std::fs::write(&file, csv).unwrap();
    let out = run_cli(
        &fleet.config,
        &endpoint,
        &["keys", "import", "--plan", "open", file.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("imported 60 keys, 1 rows skipped"), "{text}");
    assert!(
        text.contains("line 62: a key with this value already exists"),
        "{text}"
    );
    // The same value works on the fleet, and its quota goes on from the usage it had.
    let nodes = [node(&fleet, &endpoint), node(&fleet, &endpoint)];
    let (ok, refused) = load(&[&nodes[0], &nodes[1]], &key, 120, 4);
    assert_eq!(ok, 90, "{refused} refused");
    let (ok, _) = load(&[&nodes[1]], "csv-imported-key-000000000059", 3, 1);
    assert_eq!(ok, 3);
    // Another node's store (the same secret) moved in while the fleet runs: every node
    // loads the whole store again.
    let other = Project::custom("fleet-import-other", &sqlite_config, &[MOCK, OK]);
    std::fs::copy(
        single.dir.join("keys.db.secret"),
        other.dir.join("keys.db.secret"),
    )
    .unwrap();
    let late = other.key("open");
    let out = run_cli(
        &fleet.config,
        &endpoint,
        &[
            "keys",
            "import",
            other.dir.join("keys.db").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = until_all(&[&nodes[0], &nodes[1]], &late, 200);
    assert!(seen < Duration::from_secs(2), "{seen:?}");
    for n in nodes {
        n.stop_cleanly();
    }
    let id = key_id(&fleet, &endpoint, "test");
    assert_eq!(usage_of(&fleet, &endpoint, &id), 100);
}

/// A TCP proxy to `target` that, while `stalled` is set, forwards nothing (a DynamoDB
/// that stops answering); its address.
async fn stalling_proxy(
    target: String,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (target, stalled) = (target.clone(), stalled.clone());
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                let pipe =
                    |mut from: tokio::net::tcp::OwnedReadHalf,
                     mut to: tokio::net::tcp::OwnedWriteHalf,
                     stalled: std::sync::Arc<std::sync::atomic::AtomicBool>| async move {
                        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let Ok(n) = from.read(&mut buf).await else {
                                return;
                            };
                            if n == 0 {
                                return;
                            }
                            while stalled.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                tokio::join!(pipe(cr, uw, stalled.clone()), pipe(ur, cw, stalled));
            });
        }
    });
    format!("http://{addr}")
}

/// DynamoDB stops answering: a request that needs a lease is answered 503 within a few
/// seconds (not after its store calls' retries), one with an unknown key 403 within a
/// couple; once the store answers again, the key is admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_answering_costs_requests_seconds_not_their_timeout() {
    let Some((p, endpoint)) = tokio::task::block_in_place(|| project("fleet-brownout")) else {
        return;
    };
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let target = endpoint.trim_start_matches("http://").to_string();
    let proxy = stalling_proxy(target, stalled.clone()).await;
    let key = tokio::task::block_in_place(|| issue(&p, &endpoint, "exact"));
    let gw = tokio::task::block_in_place(|| node(&p, &proxy));
    // The first request takes a lease of one unit (no rate known yet).
    assert_eq!(tokio::task::block_in_place(|| send(&gw, &key)).status, 200);
    stalled.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let r = tokio::task::block_in_place(|| send(&gw, &key));
    let waited = start.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    let start = Instant::now();
    let r = tokio::task::block_in_place(|| send(&gw, "an-unknown-key-0000000000000"));
    assert_eq!(r.status, 403);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    eprintln!("503 after {waited:?}, 403 after {:?}", start.elapsed());
    stalled.store(false, Ordering::SeqCst);
    let start = Instant::now();
    loop {
        let r = tokio::task::block_in_place(|| send(&gw, &key));
        if r.status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{}", r.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| gw.stop_cleanly());
}

#[test]
fn a_fleet_store_prefix_that_cannot_name_tables_is_a_configuration_error() {
    let p = Project::custom(
        "fleet-bad-prefix",
        &CONFIG.replace("dynamodb://fleet-{S}", "dynamodb://no spaces/here"),
        &[MOCK, OK],
    );
    let out = p.cli(&["check-config"]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("auth.key_store"), "{text}");
    assert!(text.contains("PREFIX-keys"), "{text}");
}
