//! Generated client SDKs, built and run for real: both languages generated for the root
//! example and for an imported API Gateway export and built (`tsc --strict`, `mypy
//! --strict`, `pip install` into a fresh venv); then each client, against the real gateway
//! in front of the stub Kinesis that injects partial failures, delivers every event of a
//! batch exactly once, waits out `Retry-After`, and does not retry a 400.
//!
//! The compilers come from `scripts/sdk-tools install` (`scripts/test` runs it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{Gateway, Project};

fn tools() -> Option<(PathBuf, PathBuf)> {
    let repo = support::repo();
    let tsc = repo.join("tests/sdk/node_modules/.bin/tsc");
    let mypy = repo.join(".venv-sdk/bin/mypy");
    if tsc.exists() && mypy.exists() {
        return Some((tsc, mypy));
    }
    assert!(
        std::env::var_os("INGEST_GATEWAY_REQUIRE_EMULATOR").is_none(),
        "the SDK compilers are missing: run scripts/sdk-tools install"
    );
    eprintln!("skipped: no SDK compilers (scripts/sdk-tools install)");
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}:\n{text}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Generates both clients for `config` under `dir` and builds them; the TypeScript build's
/// `dist/` and the venv's python.
fn build(config: &Path, dir: &Path, (tsc, mypy): &(PathBuf, PathBuf)) -> (PathBuf, PathBuf) {
    let ts = dir.join("ts");
    let py = dir.join("py");
    for (lang, out) in [("typescript", &ts), ("python", &py)] {
        run(Command::new(support::bin())
            .arg("--config")
            .arg(config)
            .args(["sdk", "--lang", lang, "--out"])
            .arg(out));
    }
    run(Command::new(tsc).arg("-p").arg(&ts));
    run(Command::new(mypy)
        .arg("--strict")
        .arg("--cache-dir")
        .arg(dir.join("mypy-cache"))
        .arg(py.join("ingest_gateway_client")));
    let venv = dir.join("venv");
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(&py));
    (ts.join("dist"), venv.join("bin/python"))
}

#[test]
fn both_sdks_build_for_the_root_example_and_for_an_imported_export() {
    let Some(tools) = tools() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ingest-gateway-sdk-{}", support::unique("b")));
    std::fs::create_dir_all(&dir).unwrap();
    let root = support::repo().join("gateway.toml");
    let (dist, python) = build(&root, &dir.join("root"), &tools);
    let index = std::fs::read_to_string(dist.join("index.d.ts")).unwrap();
    for method in [
        "postV1Events(",
        "postV1EventsBatch(",
        "postV1PartnersByPartnerMessages(partner: string",
    ] {
        assert!(index.contains(method), "{method} in:\n{index}");
    }
    run(Command::new(&python).args([
        "-c",
        "import ingest_gateway_client as c; assert callable(c.Client.post_v1_events_batch)",
    ]));
    let imported = dir.join("imported-config");
    support::import_openapi(
        &support::repo().join("tests/fixtures/openapi/clickstream-export.yaml"),
        &imported,
    );
    build(
        &imported.join("gateway.toml"),
        &dir.join("imported"),
        &tools,
    );
}

const CONFIG: &str = r#"
[auth]
key_store = "keys.db"

[usage_plans.fast]
throttle = { rate = 10000, burst = 10000 }

[usage_plans.slow]
throttle = { rate = 1, burst = 1 }

[[routes]]
method = "POST"
path = "/v1/events"
api_key_required = true
action = "kinesis:PutRecords"
target = "s"
request_templates = { "application/json" = "records.vtl" }
request_model = "events.json"
passthrough = "never"
timeout = "500ms"
"#;

const TEMPLATE: &str = r#"{"StreamName": "s", "Records": [
#foreach($e in $input.path('$'))
{"Data": "$util.base64Encode($input.json("$[$foreach.index]"))", "PartitionKey": "$e.pk"}#if($foreach.hasNext),#end
#end
]}"#;

const MODEL: &str = r#"{
  "$schema": "http://json-schema.org/draft-04/schema#",
  "title": "sdk-events",
  "type": "array",
  "minItems": 1,
  "items": {"type": "object", "required": ["pk"], "properties": {"pk": {"type": "string"}}}
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_clients_deliver_each_event_once_through_partial_failures_and_honour_retry_after()
{
    let Some(tools) = tools() else {
        return;
    };
    let stub = support::stub_kinesis().await;
    let project = Project::custom(
        "sdk-run",
        CONFIG,
        &[("records.vtl", TEMPLATE), ("events.json", MODEL)],
    );
    let gw = Gateway::start_against(&project.config, &stub.endpoint);
    let (fast, slow) = (project.key("fast"), project.key("slow"));
    let (dist, python) =
        tokio::task::block_in_place(|| build(&project.config, &project.dir.join("sdk"), &tools));
    let drive = support::repo().join("tests/sdk");
    let clients: [(&str, Command); 2] = [
        ("typescript", {
            let mut c = Command::new("node");
            c.arg(drive.join("drive.mjs")).arg(&dist);
            c
        }),
        ("python", {
            let mut c = Command::new(&python);
            c.arg(drive.join("drive.py"));
            c
        }),
    ];
    for (lang, mut command) in clients {
        stub.data.lock().unwrap().clear();
        stub.stubborn_failed.store(0, Ordering::SeqCst);
        stub.stubborn.store(true, Ordering::SeqCst);
        let child = command
            .env("BASE_URL", format!("http://{}", gw.addr))
            .env("API_KEY", &fast)
            .env("SLOW_KEY", &slow)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Once the stubborn records failed and the gateway gave up on them (its deadline is
        // 80% of 500 ms), the cause is fixed: the client's resend, after the gateway's
        // Retry-After, succeeds.
        let stubborn = stub.stubborn.clone();
        let failed = stub.stubborn_failed.clone();
        let healer = std::thread::spawn(move || {
            while failed.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(700));
            stubborn.store(false, Ordering::SeqCst);
        });
        let out = tokio::task::block_in_place(|| child.wait_with_output().unwrap());
        healer.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{lang}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        eprintln!("{lang}: {report}");
        // Every event delivered, exactly once, under the id the client gave it.
        let delivered = report["delivered"].as_array().unwrap();
        assert_eq!(delivered.len(), 30, "{lang}: {report}");
        assert!(
            report["failed"].as_array().unwrap().is_empty(),
            "{lang}: {report}"
        );
        let data = stub.data.lock().unwrap().clone();
        for id in delivered {
            let id = id.as_str().unwrap();
            let copies = data.iter().filter(|d| d.contains(id)).count();
            assert_eq!(copies, 1, "{lang}: event {id} arrived {copies} times");
        }
        assert!(
            stub.stubborn_failed.load(Ordering::SeqCst) >= 6,
            "{lang}: partial failures happened"
        );
        // The 400 was not retried.
        assert_eq!(report["bad"]["status"], 400, "{lang}: {report}");
        assert_eq!(report["bad"]["attempts"], 1, "{lang}: {report}");
        // Three calls on a key allowed one a second: the throttled ones waited.
        assert!(report["attempts"].as_u64().unwrap() > 3, "{lang}: {report}");
        assert!(
            report["waited_ms"].as_u64().unwrap() >= 1500,
            "{lang}: Retry-After honoured: {report}"
        );
    }
    gw.stop_cleanly();
}

#[test]
fn the_gateway_serves_its_sdks_only_when_asked() {
    let on = Project::custom(
        "sdk-serve",
        &format!("[server]\nsdk_downloads = true\ntracker = true\n{CONFIG}"),
        &[("records.vtl", TEMPLATE), ("events.json", MODEL)],
    );
    let gw = Gateway::start(&on.config);
    for lang in ["typescript", "python"] {
        let r = gw.request("GET", &format!("/sdk/{lang}.tar.gz"), &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/gzip"));
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut tar)
            .unwrap();
        let listing = String::from_utf8_lossy(&tar);
        let file = if lang == "typescript" {
            "ingest-gateway-client-typescript/src/index.ts"
        } else {
            "ingest-gateway-client-python/ingest_gateway_client/__init__.py"
        };
        assert!(listing.contains(file), "{file} in the tarball");
        assert!(listing.contains("postV1Events") || listing.contains("post_v1_events"));
    }
    assert_ne!(gw.request("GET", "/sdk/cobol.tar.gz", &[], b"").status, 200);
    // The edge's tracker is still where it was.
    let tracker = gw.request("GET", "/sdk/tracker.js", &[], b"");
    assert_eq!(tracker.status, 200, "{}", tracker.text());
    gw.stop_cleanly();
    let off = Project::custom(
        "sdk-off",
        CONFIG,
        &[("records.vtl", TEMPLATE), ("events.json", MODEL)],
    );
    let gw = Gateway::start(&off.config);
    let r = gw.request("GET", "/sdk/typescript.tar.gz", &[], b"");
    assert_ne!(r.status, 200, "off by default");
    gw.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_clients_deliver_to_the_example_api_on_the_emulator() {
    let (Some(tools), Some(endpoint)) = (tools(), support::emulator()) else {
        return;
    };
    let project = Project::new("sdk-e2e");
    let key = tokio::task::block_in_place(|| {
        project.provision();
        project.key("clickstream")
    });
    let gw = Gateway::start_on_emulator(&project.config, &endpoint);
    let (dist, python) =
        tokio::task::block_in_place(|| build(&project.config, &project.dir.join("sdk"), &tools));
    let base = format!("http://{}", gw.addr);
    let ts = format!(
        r#"const {{ Client }} = await import("{}/index.js");
const c = new Client({{ baseUrl: "{base}", apiKey: "{key}", gzip: true }});
const events = Array.from({{ length: 25 }}, (_, i) => ({{ userId: `u-${{i}}`, type: "view", lang: "ts" }}));
console.log(JSON.stringify(await c.postV1EventsBatch(events)));"#,
        dist.display()
    );
    let py = format!(
        r#"import json
from ingest_gateway_client import Client
c = Client("{base}", api_key="{key}", gzip=True)
events = [{{"userId": "u-%d" % i, "type": "view", "lang": "py"}} for i in range(25)]
r = c.post_v1_events_batch(events)
print(json.dumps({{"delivered": r.delivered, "failed": r.failed, "spooled": r.spooled}}))"#
    );
    let mut delivered = Vec::new();
    for mut command in [
        {
            let mut c = Command::new("node");
            c.args(["--input-type=module", "-e", &ts]);
            c
        },
        {
            let mut c = Command::new(&python);
            c.args(["-c", &py]);
            c
        },
    ] {
        let out = tokio::task::block_in_place(|| run(&mut command));
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(report["failed"].as_array().unwrap().is_empty(), "{report}");
        let ids = report["delivered"].as_array().unwrap().clone();
        assert_eq!(ids.len(), 25, "{report}");
        delivered.extend(ids);
    }
    let kinesis = aws_sdk_kinesis::Client::new(&support::aws(&endpoint).await);
    let records = support::stream_data(&kinesis, &project.name("clickstream-events")).await;
    let records: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    for id in &delivered {
        let id = id.as_str().unwrap();
        assert_eq!(
            records.iter().filter(|r| r.contains(id)).count(),
            1,
            "event {id} in the stream once"
        );
    }
    gw.stop_cleanly();
}
