//! API keys and usage plans through the real binary and CLI, sharing one key store while the
//! gateway runs. The upstream is a closed port: an admitted request gets 502, which is
//! enough to see admission, throttling and quota counting without AWS.

mod support;

use std::time::{Duration, Instant};

use support::{Gateway, Project, Response};

const RECORD: (&str, &str) = (
    "record.vtl",
    r#"{"Data": "e30=", "PartitionKey": "k-$context.identity.apiKeyId"}"#,
);

const CONFIG: &str = r#"
[auth]
key_store = "keys.db"

[usage_plans.gold]
throttle = { rate = 1000, burst = 1000 }
quota = { limit = 3, period = "DAY" }

[usage_plans.slow]
throttle = { rate = 1, burst = 2 }

[usage_plans.free]
throttle = { rate = 1000, burst = 1000 }

[[routes]]
method = "POST"
path = "/v1/events"
api_key_required = true
api_key_query = "api_key"
rate_limit_headers = true
action = "kinesis:PutRecord"
target = "s"
request_templates = { "application/json" = "record.vtl" }

[[routes]]
method = "POST"
path = "/v1/open"
action = "kinesis:PutRecord"
target = "s"
request_templates = { "application/json" = "record.vtl" }
"#;

fn closed_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn start(project: &Project) -> Gateway {
    Gateway::start_with_env(
        &project.config,
        &[
            ("AWS_ENDPOINT_URL", &closed_endpoint()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            // Fail fast against the closed port instead of retrying with backoff.
            ("AWS_MAX_ATTEMPTS", "1"),
        ],
    )
}

fn call(gw: &Gateway, key: Option<&str>) -> Response {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(k) = key {
        headers.push(("x-api-key", k));
    }
    gw.request("POST", "/v1/events", &headers, b"{}")
}

fn assert_forbidden(r: &Response) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"message": "Forbidden"}));
    assert_eq!(r.header("x-amzn-errortype"), Some("ForbiddenException"));
}

/// Polls until `f` holds; returns how long it took.
#[track_caller]
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn issue_call_quota_and_revoke_while_serving() {
    let project = Project::custom("keys", CONFIG, &[RECORD]);
    let key = project.key("gold");
    assert_eq!(key.len(), 40);
    let gw = start(&project);

    assert_forbidden(&call(&gw, None));
    assert_forbidden(&call(&gw, Some("not-a-key-0123456789abcdefghij")));
    // The open route needs no key.
    assert_eq!(
        gw.request(
            "POST",
            "/v1/open",
            &[("content-type", "application/json")],
            b"{}"
        )
        .status,
        502
    );

    // Admitted requests (502: the upstream is closed) count against the quota of 3.
    for remaining in ["2", "1", "0"] {
        let r = call(&gw, Some(&key));
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=86_400).contains(&reset));
    }
    let r = call(&gw, Some(&key));
    assert_eq!(r.status, 429);
    assert_eq!(r.json(), serde_json::json!({"message": "Limit Exceeded"}));
    assert_eq!(r.header("x-amzn-errortype"), Some("LimitExceededException"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=86_400).contains(&retry),
        "seconds to the next UTC day: {retry}"
    );

    // A key issued while serving works within a second, and stops within a second of being
    // disabled or revoked.
    let second = project.named_key("second", "free");
    let took = within(Duration::from_secs(3), || {
        call(&gw, Some(&second)).status == 502
    });
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let id = key_id(&project, "second");
    let out = project.cli(&["keys", "disable", &id]);
    assert!(out.status.success());
    within(Duration::from_millis(1500), || {
        call(&gw, Some(&second)).status == 403
    });
    assert!(project.cli(&["keys", "enable", &id]).status.success());
    within(Duration::from_millis(1500), || {
        call(&gw, Some(&second)).status == 502
    });
    assert!(project.cli(&["keys", "revoke", &id]).status.success());
    let took = within(Duration::from_secs(3), || {
        call(&gw, Some(&second)).status == 403
    });
    assert!(
        took < Duration::from_millis(1500),
        "revocation took {took:?}"
    );
    assert_forbidden(&call(&gw, Some(&second)));

    // The log names key ids, never keys.
    let (_, log) = gw.stop();
    assert!(log.contains("\"key_id\""), "{log}");
    assert!(
        !log.contains(&key) && !log.contains(&second),
        "a key reached the log"
    );
}

/// The id of the key named `name`, from `keys list --json`.
fn key_id(project: &Project, name: &str) -> String {
    let out = project.cli(&["keys", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .expect("a key with that name");
    key["id"].as_str().unwrap().to_string()
}

#[test]
fn throttling_answers_429_with_retry_after() {
    let project = Project::custom("throttle", CONFIG, &[RECORD]);
    let key = project.key("slow");
    let gw = start(&project);
    assert_eq!(call(&gw, Some(&key)).status, 502);
    assert_eq!(call(&gw, Some(&key)).status, 502);
    let r = call(&gw, Some(&key));
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        serde_json::json!({"message": "Too Many Requests"})
    );
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    // The key may also come as the route's query parameter.
    std::thread::sleep(Duration::from_millis(1100));
    let r = gw.request(
        "POST",
        &format!("/v1/events?api_key={key}"),
        &[("content-type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 502);
}

#[test]
fn quota_counts_survive_a_restart_and_the_store_holds_no_key() {
    let project = Project::custom("restart", CONFIG, &[RECORD]);
    let key = project.key("gold");
    let gw = start(&project);
    assert_eq!(call(&gw, Some(&key)).status, 502);
    assert_eq!(call(&gw, Some(&key)).status, 502);
    let (status, _) = gw.stop();
    assert!(status.success());

    let usage = project.cli(&["usage"]);
    let usage = String::from_utf8(usage.stdout).unwrap();
    assert!(
        usage.lines().any(|l| l.trim_end().ends_with(" 2")),
        "{usage}"
    );

    let gw = start(&project);
    assert_eq!(
        call(&gw, Some(&key)).status,
        502,
        "the third request of three"
    );
    assert_eq!(
        call(&gw, Some(&key)).status,
        429,
        "the quota remembers the first two"
    );
    drop(gw);

    for file in ["keys.db", "keys.db-wal"] {
        let bytes = std::fs::read(project.dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "{file} holds the key"
        );
    }
    let list = project.cli(&["keys", "list", "--json"]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&key));
}

#[test]
fn rotation_keeps_the_old_key_for_the_grace_period() {
    let project = Project::custom("rotate", CONFIG, &[RECORD]);
    let old = project.key("slow");
    let id = key_id(&project, "test");
    let gw = start(&project);
    assert_eq!(call(&gw, Some(&old)).status, 502);
    let out = project.cli(&["keys", "rotate", &id, "--grace", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_ne!(new, old);
    within(Duration::from_secs(3), || {
        call(&gw, Some(&new)).status != 403
    });
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        call(&gw, Some(&old)).status,
        502,
        "the old key works during the grace period"
    );
    let out = project.cli(&["keys", "rotate", &id, "--grace", "0s"]);
    let newest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    within(Duration::from_secs(3), || {
        call(&gw, Some(&new)).status == 403
    });
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(call(&gw, Some(&newest)).status, 502);
    // The plan allows one request a second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        call(&gw, Some(&old)).status,
        502,
        "the first value keeps its own hour of grace through the second rotation"
    );
    // A value rotated away can never be issued again, to this key or another.
    // `--value=...`: an old value may start with `-`.
    let value = format!("--value={new}");
    let out = project.cli(&[
        "keys", "create", "--name", "again", "--plan", "slow", &value,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("never issued twice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store written before keys were hashed with a secret (plain SHA-256, one previous
/// value per key) is migrated when the gateway opens it: its keys keep working, a copy of
/// the store alone no longer matches them, and a revoked value is never issued again.
#[test]
fn an_older_store_migrates_and_a_revoked_value_stays_revoked() {
    use sha2::Digest as _;
    let project = Project::custom("legacy-store", CONFIG, &[RECORD]);
    let value = "an-operator-chosen-value-01";
    let store = project.dir.join("keys.db");
    {
        let conn = rusqlite::Connection::open(&store).unwrap();
        conn.execute_batch(
            "CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, plan TEXT NOT NULL,
                 key_hash BLOB NOT NULL UNIQUE, enabled INTEGER NOT NULL, created_at INTEGER NOT NULL,
                 expires_at INTEGER, description TEXT, customer TEXT, previous_hash BLOB,
                 previous_valid_until INTEGER);
             CREATE TABLE usage (key_id TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL,
                 PRIMARY KEY (key_id, day));",
        )
        .unwrap();
        let hash: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        conn.execute(
            "INSERT INTO api_keys (id, name, plan, key_hash, enabled, created_at) VALUES ('legacy0001', 'old', 'gold', ?1, 1, 0)",
            [hash.as_slice()],
        )
        .unwrap();
    }
    let gw = start(&project);
    assert_eq!(
        call(&gw, Some(value)).status,
        502,
        "the old key still works"
    );
    let secret = project.dir.join("keys.db.secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let stored: Vec<u8> = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row("SELECT key_hash FROM api_keys", [], |r| r.get(0))
        .unwrap();
    let plain: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
    assert_ne!(
        stored,
        plain.to_vec(),
        "the store no longer holds plain SHA-256"
    );

    let out = project.cli(&["keys", "revoke", "legacy0001"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    within(Duration::from_secs(3), || {
        call(&gw, Some(value)).status == 403
    });
    let out = project.cli(&[
        "keys", "create", "--name", "x", "--plan", "gold", "--value", value,
    ]);
    assert!(!out.status.success(), "a revoked value was issued again");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("never issued twice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_forbidden(&call(&gw, Some(value)));
}

#[test]
fn keys_cli_contract() {
    let project = Project::custom("cli", CONFIG, &[RECORD]);
    // The key alone on stdout; the rest on stderr.
    let out = project.cli(&[
        "keys",
        "create",
        "--name",
        "acme",
        "--plan",
        "gold",
        "--expires",
        "90d",
        "--customer",
        "acme-co",
    ]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.trim_end().len(), 40);
    assert_eq!(key.lines().count(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("created key"));
    let bad = project.cli(&["keys", "create", "--name", "x", "--plan", "platinum"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no usage plan \"platinum\""));
    let short = project.cli(&[
        "keys", "create", "--name", "x", "--plan", "gold", "--value", "short",
    ]);
    assert_eq!(short.status.code(), Some(2));

    let id = key_id(&project, "acme");
    let show = project.cli(&["keys", "show", &id]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["name"], "acme");
    assert_eq!(shown["customer"], "acme-co");
    assert!(shown["expires"].as_str().is_some());
    assert_eq!(
        project.cli(&["keys", "show", "nope"]).status.code(),
        Some(2)
    );

    // API Gateway's CSV export imports as is.
    let csv = project.dir.join("keys.csv");
    std::fs::write(
        &csv,
        "Name,Key,Description,Enabled,UsagePlanIds\nwidget,widget-key-0123456789abcdef,\"the, widget\",true,gold\nold,old-key-0123456789abcdefgh,,false,\nbad,short,,true,gold\n",
    )
    .unwrap();
    let out = project.cli(&["keys", "import", csv.to_str().unwrap(), "--plan", "slow"]);
    assert_eq!(out.status.code(), Some(2), "one row is invalid");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("imported 2 keys, 1 rows skipped"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    let list = project.cli(&["keys", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let widget = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "widget")
        .unwrap();
    assert_eq!(
        (widget["plan"].as_str(), widget["enabled"].as_bool()),
        (Some("gold"), Some(true))
    );
    let old = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "old")
        .unwrap();
    assert_eq!(
        (old["plan"].as_str(), old["enabled"].as_bool()),
        (Some("slow"), Some(false))
    );
}

/// A key works on its first request, however soon after it was issued: a key the gateway's
/// snapshot does not know is looked up in the store before it is refused.
#[test]
fn a_key_just_issued_works_on_its_first_request() {
    let project = Project::custom("first-request", CONFIG, &[RECORD]);
    let gw = start(&project);
    for i in 0..5 {
        let key = project.named_key(&format!("fresh-{i}"), "gold");
        let r = call(&gw, Some(&key));
        assert_eq!(r.status, 502, "issued key {i} refused: {}", r.text());
    }
}

/// Made-up keys cannot turn into store reads: the node checks the store for unknown keys at
/// most ten times a second, and not again for a key that just missed.
#[test]
fn made_up_keys_cost_a_bounded_number_of_store_checks() {
    let project = Project::custom("miss-budget", CONFIG, &[RECORD]);
    let gw = start(&project);
    let started = Instant::now();
    for _ in 0..20 {
        assert_forbidden(&call(&gw, Some("the-same-made-up-key-xxxxxxxx")));
    }
    for i in 0..300 {
        assert_forbidden(&call(
            &gw,
            Some(&format!("made-up-key-{i:04}-xxxxxxxxxxxx")),
        ));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = gw.request("GET", "/metrics", &[], b"").text();
    let count = |result: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("gateway_key_miss_checks_total")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let checked = count("unchanged") + count("reloaded");
    assert!(
        checked >= 1.0 && checked <= 10.0 * (elapsed + 1.0),
        "{checked} store checks in {elapsed:.1}s:\n{metrics}"
    );
    assert!(count("over_budget") > 0.0, "{metrics}");
    assert!(count("remembered") > 0.0, "{metrics}");
}
