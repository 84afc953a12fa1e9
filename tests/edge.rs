//! The public edge through the real binary on a real socket: TLS (SNI, mutual TLS, reloads),
//! CORS, compressed and NDJSON bodies, client addresses behind proxies, IP policy, the
//! per-address throttle and browser-bound keys. The upstream is the stub Kinesis, which
//! counts calls (so "no upstream call" can be asserted) and keeps what it received; the
//! deliveries to a real Kinesis are in `browser_shaped_requests_reach_kinesis`.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// Certificates

/// A CA and what it signs.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (server) or with a subject `cn` (client): (cert PEM, key PEM, DER).
    fn leaf(
        &self,
        names: &[&str],
        cn: &str,
        client: bool,
    ) -> (String, String, CertificateDer<'static>) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme Partners");
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client trusting `ca`, with a client certificate if given.
fn client(
    ca: &Ca,
    version: &'static rustls::SupportedProtocolVersion,
    identity: Option<(&str, &str)>,
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject as _;
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    addr: &str,
    name: &str,
) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    // TLS 1.3 sends the server's verdict on a client certificate after the handshake: a
    // refusal shows on the first read.
    tls.flush().await?;
    Ok(tls)
}

/// The leaf certificate the server presented.
fn presented(tls: &Tls) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One HTTP/1.1 request on a kept-alive connection; reads exactly its response.
async fn exchange(
    tls: &mut Tls,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<support::Response> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("no response"))??;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if raw.len() >= end + 4 + length {
                return Ok(support::parse_response(&raw[..end + 4 + length]));
            }
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    // Written beside and renamed, as certificate managers do, so a reader never sees half.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// Each record: what the template saw of the client, and the body.
const RECORD_TEMPLATE: &str = r#"#set($q = '"')
#set($data = "{${q}ip${q}: ${q}$context.identity.sourceIp${q}, ${q}subject${q}: ${q}$!context.identity.clientCert.subjectDN${q}, ${q}serial${q}: ${q}$!context.identity.clientCert.serialNumber${q}, ${q}body${q}: $input.json('$')}")
{"StreamName": "edge-stream", "Records": [{"Data": "$util.base64Encode($data)", "PartitionKey": "pk"}]}
"#;

fn record_template() -> String {
    RECORD_TEMPLATE.to_string()
}

const ROUTE: &str = r#"
[[routes]]
method = "POST"
path = "/v1/events"
action = "kinesis:PutRecords"
target = "edge-stream"
request_templates = { "application/json" = "record.vtl" }
passthrough = "never"
timeout = "5s"
batch = { linger = "1ms" }
"#;

// ---------------------------------------------------------------------------------------
// TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_by_sni_refuses_plain_http_and_reloads_without_dropping_connections() {
    let stub = support::stub_kinesis().await;
    let ca = Ca::new("Edge Test CA");
    let (cert, key, default_der) = ca.leaf(&["localhost"], "localhost", false);
    let (shop_cert, shop_key, shop_der) = ca.leaf(&["ingest.shop.example"], "shop", false);
    let config = format!(
        r#"
[server.tls]
cert = "certs/gateway.pem"
key = "certs/gateway.key"
[[server.tls.sni]]
names = ["ingest.shop.example"]
cert = "certs/shop.pem"
key = "certs/shop.key"
{ROUTE}"#
    );
    let template = record_template();
    let project = support::Project::custom(
        "edge-tls",
        &config,
        &[
            ("certs/gateway.pem", &cert),
            ("certs/gateway.key", &key),
            ("certs/shop.pem", &shop_cert),
            ("certs/shop.key", &shop_key),
            ("record.vtl", &template),
        ],
    );
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let certs = project.dir.join("certs");

    // TLS 1.2 and 1.3, each name its certificate; h2 offered, h2 chosen.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let c = client(&ca, version, None, &[b"h2", b"http/1.1"]);
        let tls = connect(&c, &gw.addr, "localhost").await.unwrap();
        assert_eq!(presented(&tls), default_der);
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let tls = connect(&c, &gw.addr, "ingest.shop.example").await.unwrap();
        assert_eq!(presented(&tls), shop_der);
    }
    // Over HTTP/1.1: a request served, and its record delivered.
    let c = client(&ca, &rustls::version::TLS13, None, &[b"http/1.1"]);
    let mut kept = connect(&c, &gw.addr, "localhost").await.unwrap();
    let r = exchange(
        &mut kept,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        br#"{"n": 1}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(stub.data.lock().unwrap()[0].contains(r#""n":1"#));

    // Plain HTTP to the TLS port: told, and closed.
    let plain = support::try_request(&gw.addr, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(plain.status, 400);
    assert!(plain.text().contains("HTTPS"), "{}", plain.text());
    // Noise that is neither: closed without a word, and the listener still serves.
    let mut noise = std::net::TcpStream::connect(&gw.addr).unwrap();
    let _ = noise.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
    drop(noise);

    // A new certificate, on SIGHUP: new connections get it, the open one goes on.
    let (cert2, key2, der2) = ca.leaf(&["localhost"], "localhost-2", false);
    write(&certs, "gateway.key", &key2);
    write(&certs, "gateway.pem", &cert2);
    gw.hangup();
    let renewed = support::eventually(10, || async {
        let tls = connect(&c, &gw.addr, "localhost").await.ok()?;
        (presented(&tls) == der2).then_some(())
    })
    .await;
    assert!(
        renewed.is_some(),
        "the new certificate is served after SIGHUP"
    );
    let r = exchange(&mut kept, "GET", "/healthz", &[], b"")
        .await
        .unwrap();
    assert_eq!(
        r.status, 200,
        "the connection opened before the reload still works"
    );

    // A broken certificate: the reload fails, the last good one stays, and the log says so.
    write(
        &certs,
        "gateway.pem",
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    gw.hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tls = connect(&c, &gw.addr, "localhost").await.unwrap();
    assert_eq!(
        presented(&tls),
        der2,
        "the previous certificate stays in use"
    );

    // Changed files are picked up without a signal too.
    let (cert3, key3, der3) = ca.leaf(&["localhost"], "localhost-3", false);
    write(&certs, "gateway.key", &key3);
    write(&certs, "gateway.pem", &cert3);
    let watched = support::eventually(15, || async {
        let tls = connect(&c, &gw.addr, "localhost").await.ok()?;
        (presented(&tls) == der3).then_some(())
    })
    .await;
    assert!(watched.is_some(), "a changed certificate file is reloaded");
    let r = exchange(&mut kept, "GET", "/healthz", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    let (status, log) = gw.stop();
    assert!(status.success());
    assert!(
        log.contains("Reloading the TLS certificates failed"),
        "the failed reload is logged:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_signed_clients_only_and_templates_see_the_certificate() {
    let stub = support::stub_kinesis().await;
    let ca = Ca::new("Edge Server CA");
    let partners = Ca::new("Partners CA");
    let stranger = Ca::new("Someone Else");
    let (cert, key, _) = ca.leaf(&["localhost"], "localhost", false);
    let (client_cert, client_key, client_der) = partners.leaf(&[], "acme-ingest", true);
    let (other_cert, other_key, _) = stranger.leaf(&[], "acme-ingest", true);
    let config = format!(
        r#"
[server.tls]
cert = "gateway.pem"
key = "gateway.key"
client_ca = "partners.pem"
{ROUTE}"#
    );
    let template = record_template();
    let project = support::Project::custom(
        "edge-mtls",
        &config,
        &[
            ("gateway.pem", &cert),
            ("gateway.key", &key),
            ("partners.pem", &partners.pem),
            ("record.vtl", &template),
        ],
    );
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let v13 = &rustls::version::TLS13;

    let signed = client(&ca, v13, Some((&client_cert, &client_key)), &[b"http/1.1"]);
    let mut tls = connect(&signed, &gw.addr, "localhost").await.unwrap();
    let r = exchange(
        &mut tls,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        b"{}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let record: serde_json::Value = serde_json::from_str(&stub.data.lock().unwrap()[0]).unwrap();
    assert_eq!(record["subject"], "CN=acme-ingest, O=Acme Partners");
    let (_, parsed) = x509_parser::parse_x509_certificate(&client_der).unwrap();
    assert_eq!(record["serial"], parsed.raw_serial_as_string());
    assert_eq!(record["ip"], "127.0.0.1");

    // No certificate, or one from another CA, over TLS 1.2 and 1.3: no request gets through.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        for identity in [None, Some((other_cert.as_str(), other_key.as_str()))] {
            let c = client(&ca, version, identity, &[b"http/1.1"]);
            let calls = stub.calls.load(Ordering::SeqCst);
            let refused = match connect(&c, &gw.addr, "localhost").await {
                Err(_) => true,
                Ok(mut tls) => exchange(&mut tls, "POST", "/v1/events", &[], b"{}")
                    .await
                    .is_err(),
            };
            assert!(refused, "{version:?}, certificate {:?}", identity.is_some());
            assert_eq!(stub.calls.load(Ordering::SeqCst), calls, "no upstream call");
        }
    }
    gw.stop_cleanly();
}

#[test]
fn check_config_reports_a_key_that_is_not_its_certificates() {
    let ca = Ca::new("CA");
    let (cert, _, _) = ca.leaf(&["localhost"], "a", false);
    let (_, other_key, _) = ca.leaf(&["localhost"], "b", false);
    let config = format!(
        "[server.tls]\ncert = \"gateway.pem\"\nkey = \"gateway.key\"\nclient_ca = \"missing.pem\"\n{ROUTE}"
    );
    let template = record_template();
    let project = support::Project::custom(
        "edge-tls-check",
        &config,
        &[
            ("gateway.pem", &cert),
            ("gateway.key", &other_key),
            ("record.vtl", &template),
        ],
    );
    let out = project.cli(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("server.tls.client_ca") && err.contains("does not exist"),
        "{err}"
    );
    std::fs::write(project.dir.join("missing.pem"), &ca.pem).unwrap();
    let out = project.cli(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("server.tls:") && err.contains("gateway.key"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// CORS

const CORS: &str = r#"
[server.cors]
allow_origins = ["https://shop.example", "https://*.shop.example"]
expose_headers = ["x-amzn-requestid", "retry-after"]
max_age = "10m"

[usage_plans.web]
throttle = { rate = 0.01, burst = 2 }

[[routes]]
method = "POST"
path = "/v1/events"
api_key_required = true
action = "kinesis:PutRecords"
target = "edge-stream"
request_templates = { "application/json" = "record.vtl" }
passthrough = "never"
max_body_bytes = 1024
timeout = "5s"
batch = { linger = "1ms" }

[[routes]]
method = "POST"
path = "/v1/open"
action = "kinesis:PutRecords"
target = "edge-stream"
request_templates = { "application/json" = "record.vtl" }
passthrough = "never"
timeout = "2s"
batch = false

[[routes]]
method = "POST"
path = "/v1/partners"
cors = false
action = "kinesis:PutRecords"
target = "edge-stream"
request_templates = { "application/json" = "record.vtl" }

[[routes]]
method = "POST"
path = "/v1/admin"
cors = { allow_origins = ["https://admin.example"], allow_credentials = true }
action = "kinesis:PutRecords"
target = "edge-stream"
request_templates = { "application/json" = "record.vtl" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_and_lets_allowed_pages_read_every_error() {
    let stub = support::stub_kinesis().await;
    let template = record_template();
    let project = support::Project::custom("edge-cors", CORS, &[("record.vtl", &template)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let key = project.key("web");
    let calls = stub.calls.clone();
    let outage = stub.outage.clone();
    tokio::task::spawn_blocking(move || {
        let preflight = |origin: &str, path: &str| {
            gw.request(
                "OPTIONS",
                path,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type, x-api-key"),
                ],
                b"",
            )
        };
        // Preflights: answered here, no key, no upstream call.
        for origin in [
            "https://shop.example",
            "https://www.shop.example",
            "https://a.b.shop.example",
        ] {
            let r = preflight(origin, "/v1/events");
            assert_eq!(r.status, 204, "{origin}: {}", r.text());
            assert_eq!(r.header("access-control-allow-origin"), Some(origin));
            assert_eq!(
                r.header("access-control-allow-methods"),
                Some("POST, OPTIONS")
            );
            assert_eq!(
                r.header("access-control-allow-headers"),
                Some("content-type, x-api-key, content-encoding, authorization")
            );
            assert_eq!(r.header("access-control-max-age"), Some("600"));
            assert_eq!(r.header("vary"), Some("Origin"));
        }
        // Disallowed and lookalike origins: refused, with nothing a browser would accept.
        for origin in [
            "https://shop.example.evil.example",
            "https://evilshop.example",
            "http://shop.example",
            "https://shop.example:8443",
            "null",
        ] {
            let r = preflight(origin, "/v1/events");
            assert_eq!(r.status, 403, "{origin}");
            assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
            assert_eq!(r.header("x-amzn-ErrorType"), Some("AccessDeniedException"));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "preflights make no upstream call"
        );

        let page = |path: &str, origin: &str, key: Option<&str>, body: &[u8]| {
            let mut headers = vec![("origin", origin), ("content-type", "application/json")];
            if let Some(k) = key {
                headers.push(("x-api-key", k));
            }
            gw.request("POST", path, &headers, body)
        };
        let readable = |r: &support::Response, status: u16, origin: &str| {
            assert_eq!(r.status, status, "{}", r.text());
            assert_eq!(
                r.header("access-control-allow-origin"),
                Some(origin),
                "{status}"
            );
            assert_eq!(r.header("vary"), Some("Origin"));
            assert_eq!(
                r.header("access-control-expose-headers"),
                Some("x-amzn-requestid, retry-after")
            );
        };
        let shop = "https://shop.example";
        // 403 without a key, 413, 200 (the two spend the burst), then 429: all readable.
        readable(&page("/v1/events", shop, None, b"{}"), 403, shop);
        readable(
            &page("/v1/events", shop, Some(&key), &[b' '; 2048]),
            413,
            shop,
        );
        readable(&page("/v1/events", shop, Some(&key), b"{}"), 200, shop);
        let throttled = page("/v1/events", shop, Some(&key), b"{}");
        readable(&throttled, 429, shop);
        assert!(throttled.header("retry-after").is_some());
        // 404-style answers for paths with no route, and the gateway's own 5xx.
        readable(&page("/v1/nothing", shop, None, b"{}"), 403, shop);
        outage.store(true, Ordering::SeqCst);
        let failed = page("/v1/open", "https://m.shop.example", None, b"{}");
        assert!(failed.status >= 500, "{}", failed.text());
        assert_eq!(
            failed.header("access-control-allow-origin"),
            Some("https://m.shop.example")
        );
        outage.store(false, Ordering::SeqCst);
        // Another origin reads nothing, whatever the answer.
        for path in ["/v1/events", "/v1/open", "/v1/nothing"] {
            let r = page(path, "https://shop.example.evil.example", Some(&key), b"{}");
            assert_eq!(r.header("access-control-allow-origin"), None, "{path}");
            assert_eq!(r.header("vary"), Some("Origin"));
        }
        // A route with CORS off: preflights fall through to routing, responses carry nothing.
        let r = preflight(shop, "/v1/partners");
        assert_eq!(r.status, 403);
        assert_eq!(r.header("access-control-allow-origin"), None);
        let r = page("/v1/partners", shop, None, b"{}");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), None);
        // A route with its own policy: its origin, with credentials; not the server's.
        let r = preflight("https://admin.example", "/v1/admin");
        assert_eq!(r.status, 204);
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(preflight(shop, "/v1/admin").status, 403);
        // The tracker is served when CORS is configured.
        let js = gw.request("GET", "/sdk/tracker.js", &[("origin", shop)], b"");
        assert_eq!(js.status, 200);
        assert!(
            js.header("content-type")
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(js.text().contains("IngestTracker"));
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Compressed and NDJSON bodies

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_decoded_within_the_limit_and_bad_ones_are_refused() {
    let stub = support::stub_kinesis().await;
    let template = record_template();
    let config = format!(
        "[server]\nmax_body_bytes = 1048576\n{ROUTE}\n[[routes]]\nmethod = \"POST\"\npath = \"/v1/lines\"\naction = \"kinesis:PutRecords\"\ntarget = \"edge-stream\"\nrequest_templates = {{ \"application/json\" = \"record.vtl\" }}\npassthrough = \"never\"\n"
    );
    let project = support::Project::custom("edge-gzip", &config, &[("record.vtl", &template)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let calls = stub.calls.clone();
    let data = stub.data.clone();
    tokio::task::spawn_blocking(move || {
        let post = |encoding: &str, body: &[u8]| {
            gw.request(
                "POST",
                "/v1/events",
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", encoding),
                ],
                body,
            )
        };
        let event = br#"{"kind": "compressed"}"#;
        let r = post("gzip", &gzip(event));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            data.lock()
                .unwrap()
                .last()
                .unwrap()
                .contains(r#""kind":"compressed""#)
        );
        let before = calls.load(Ordering::SeqCst);
        let rss_before = gw.peak_rss_kib();

        // A bomb: 512 MiB of zeros in half a MiB, against a 1 MiB limit: 512 gzip members
        // of 1 MiB of zeros each, one after another (a valid gzip stream).
        let member = gzip(&vec![0u8; 1 << 20]);
        let bomb: Vec<u8> = member
            .iter()
            .copied()
            .cycle()
            .take(member.len() * 512)
            .collect();
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let started = std::time::Instant::now();
        let r = post("gzip", &bomb);
        assert_eq!(r.status, 413, "{}", r.text());
        assert_eq!(r.json(), json!({"message": "Request Too Long"}));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let grown = gw.peak_rss_kib().saturating_sub(rss_before);
        assert!(grown < 64 * 1024, "peak memory grew {grown} KiB for a bomb");

        // Truncated and corrupt streams, and codings not decoded.
        let g = gzip(event);
        for (case, encoding, body) in [
            ("truncated", "gzip", g[..g.len() - 8].to_vec()),
            (
                "corrupt",
                "gzip",
                b"\x1f\x8b\x08\x00garbage garbage garbage".to_vec(),
            ),
            ("not deflate", "deflate", b"plain text".to_vec()),
            ("not br", "br", b"plain text, not brotli".to_vec()),
            ("not zstd", "zstd", b"plain text".to_vec()),
        ] {
            let r = post(encoding, &body);
            assert_eq!(r.status, 400, "{case}: {}", r.text());
            assert!(
                r.json()["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("The request body could not be decoded"),
                "{case}"
            );
            assert_eq!(r.header("x-amzn-ErrorType"), Some("BadRequestException"));
        }
        for encoding in ["compress", "gzip, gzip, gzip, gzip", "x-unknown"] {
            let r = post(encoding, &g);
            assert_eq!(r.status, 415, "{encoding}: {}", r.text());
            assert_eq!(
                r.json()["acceptedEncodings"],
                json!(["gzip", "deflate", "br", "zstd"])
            );
        }
        // NDJSON: lines that are not JSON are the client's 400.
        let r = gw.request(
            "POST",
            "/v1/lines",
            &[("content-type", "application/x-ndjson")],
            b"{\"a\": 1}\n{oops\n",
        );
        assert_eq!(r.status, 400);
        assert!(r.text().contains("line 2"), "{}", r.text());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before,
            "no upstream call for any of them"
        );
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Client addresses, IP policy, the per-address throttle, browser keys

const CLIENTS: &str = r#"
[server]
trusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]
deny_ips = ["198.51.100.66"]
ip_throttle = { rate = 1, burst = 3 }

[usage_plans.site]
throttle = { rate = 1, burst = 2 }
throttle_by = ["key", "source_ip"]

[usage_plans.apps]

[[routes]]
method = "POST"
path = "/v1/events"
api_key_required = true
api_key_query = "api_key"
action = "kinesis:PutRecords"
target = "edge-stream"
request_templates = { "application/json" = "record.vtl" }
passthrough = "never"
timeout = "5s"
batch = { linger = "1ms" }

[[routes]]
method = "POST"
path = "/v1/internal"
allow_ips = ["10.1.0.0/16", "2001:db8::/32"]
action = "kinesis:PutRecords"
target = "edge-stream"
request_templates = { "application/json" = "record.vtl" }
passthrough = "never"
batch = { linger = "1ms" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_policies_throttles_and_browser_keys() {
    let stub = support::stub_kinesis().await;
    let template = record_template();
    let project = support::Project::custom("edge-clients", CLIENTS, &[("record.vtl", &template)]);
    let gw = support::Gateway::start_against(&project.config, &stub.endpoint);
    let apps_key = project.key("apps");
    let out = project.cli(&[
        "keys",
        "create",
        "--name",
        "site",
        "--plan",
        "site",
        "--origins",
        "https://shop.example,https://www.shop.example",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let site_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = project.cli(&[
        "keys",
        "create",
        "--name",
        "hybrid",
        "--plan",
        "apps",
        "--origins",
        "https://shop.example",
        "--allow-no-origin",
    ]);
    let hybrid_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let calls = stub.calls.clone();
    let data = stub.data.clone();
    tokio::task::spawn_blocking(move || {
        let post = |path: &str, xff: &str, key: &str, origin: Option<&str>| {
            let mut h = vec![
                ("content-type", "application/json"),
                ("x-forwarded-for", xff),
            ];
            if !key.is_empty() {
                h.push(("x-api-key", key));
            }
            if let Some(o) = origin {
                h.push(("origin", o));
            }
            gw.request("POST", path, &h, b"{}")
        };
        let last_ip = || -> String {
            let d = data.lock().unwrap();
            let v: serde_json::Value = serde_json::from_str(d.last().unwrap()).unwrap();
            v["ip"].as_str().unwrap().to_string()
        };
        // The right-most address the proxies did not add; spoofed entries left of it ignored.
        let r = post(
            "/v1/events",
            "6.6.6.6, 203.0.113.7, 10.0.0.2",
            &apps_key,
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(last_ip(), "203.0.113.7");
        let r = post("/v1/events", "203.0.113.8", &apps_key, None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(last_ip(), "203.0.113.8");

        // Deny lists, global and per route, with API Gateway's body.
        let before = calls.load(Ordering::SeqCst);
        let r = post("/v1/events", "198.51.100.66", &apps_key, None);
        assert_eq!(r.status, 403);
        assert_eq!(r.header("x-amzn-ErrorType"), Some("AccessDeniedException"));
        assert!(
            r.json()["Message"]
                .as_str()
                .unwrap()
                .contains("not authorized to perform: execute-api:Invoke")
        );
        let r = post("/v1/events", "198.51.100.66, 10.0.0.9", &apps_key, None);
        assert_eq!(r.status, 403, "the denied client behind a trusted proxy");
        let r = post("/v1/internal", "203.0.113.9", "", None);
        assert_eq!(r.status, 403, "outside the route's allow list");
        let r = post("/v1/internal", "10.1.2.3, 192.0.2.1", "", None);
        assert_eq!(
            r.status, 403,
            "a spoofed allowed address left of the real one"
        );
        assert_eq!(calls.load(Ordering::SeqCst), before, "no upstream call");
        let r = post("/v1/internal", "10.1.2.3", "", None);
        assert_eq!(r.status, 200, "{}", r.text());
        let r = post("/v1/internal", "2001:db8::5", "", None);
        assert_eq!(r.status, 200, "{}", r.text());

        // The per-address throttle, before any key: a flood of bad keys from one address
        // gets 429, another address is unaffected.
        let flood: Vec<u16> = (0..6)
            .map(|_| post("/v1/events", "192.0.2.50", "not-a-key-at-all-000000", None).status)
            .collect();
        assert_eq!(&flood[..3], &[403, 403, 403]);
        assert!(flood[3..].iter().all(|s| *s == 429), "{flood:?}");
        let r = post("/v1/events", "192.0.2.50", &apps_key, None);
        assert_eq!(r.status, 429);
        assert!(r.header("retry-after").is_some());
        assert_eq!(
            post("/v1/events", "192.0.2.51", &apps_key, None).status,
            200
        );

        // Browser keys: their origins only; no Origin unless the key allows it.
        let site =
            |xff: &str, origin: Option<&str>| post("/v1/events", xff, &site_key, origin).status;
        assert_eq!(site("192.0.2.60", Some("https://shop.example")), 200);
        assert_eq!(site("192.0.2.61", Some("https://www.shop.example")), 200);
        assert_eq!(site("192.0.2.62", Some("https://evil.example")), 403);
        assert_eq!(
            site("192.0.2.63", Some("https://shop.example.evil.example")),
            403
        );
        assert_eq!(site("192.0.2.64", None), 403);
        assert_eq!(
            post("/v1/events", "192.0.2.65", &hybrid_key, None).status,
            200
        );
        assert_eq!(
            post(
                "/v1/events",
                "192.0.2.65",
                &hybrid_key,
                Some("https://evil.example")
            )
            .status,
            403
        );
        // The site plan throttles per key and address: one visitor spends only their own.
        let one: Vec<u16> = (0..3)
            .map(|_| site("192.0.2.70", Some("https://shop.example")))
            .collect();
        assert_eq!(one, vec![200, 200, 429]);
        assert_eq!(site("192.0.2.71", Some("https://shop.example")), 200);
        gw.stop_cleanly();
    })
    .await
    .unwrap();
}

#[test]
fn edge_settings_that_cannot_work_are_reported_by_check_config() {
    let config = r#"
[server]
trusted_proxies = ["10.0.0.0/33", "proxy.internal"]
allow_ips = ["not-an-ip"]
[server.cors]
allow_origins = ["shop.example", "https://*.example", "*"]
allow_credentials = true
[usage_plans.p]
throttle_by = ["visitor"]
[[routes]]
method = "POST"
path = "/v1/p"
pixel = true
action = "kinesis:PutRecords"
target = "s"
"#;
    let project = support::Project::custom("edge-check", config, &[]);
    let out = project.cli(&["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "server.trusted_proxies: \"10.0.0.0/33\"",
        "server.trusted_proxies: \"proxy.internal\"",
        "server.allow_ips: \"not-an-ip\"",
        "\"shop.example\" is not an origin",
        "\"https://*.example\": a wildcard",
        "allow_credentials cannot be used",
        "throttle_by: \"visitor\"",
        "pixel routes answer GET",
    ] {
        assert!(err.contains(expected), "{expected}:\n{err}");
    }
}

// ---------------------------------------------------------------------------------------
// The example API's browser-shaped requests, into a real Kinesis

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shaped_requests_reach_kinesis() {
    let Some(endpoint) = support::emulator() else {
        return;
    };
    let project = support::Project::new("edge-e2e");
    project.provision();
    let key = project.key("clickstream");
    let gw = support::Gateway::start(&project.config);
    let stream = project.name("clickstream-events");
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        let json = "application/json";
        let post = |encoding: Option<&str>, content_type: &str, path: &str, body: &[u8]| {
            let mut h = vec![("content-type", content_type), ("x-api-key", k.as_str())];
            if let Some(e) = encoding {
                h.push(("content-encoding", e));
            }
            gw.request("POST", path, &h, body)
        };
        let event = |marker: &str| format!(r#"{{"events": [{{"type": "click", "marker": "{marker}"}}]}}"#);
        // Each encoding.
        let r = post(Some("gzip"), json, "/v1/events", &gzip(event("gzip").as_bytes()));
        assert_eq!(r.status, 200, "gzip: {}", r.text());
        let deflate = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(event("deflate").as_bytes()).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(post(Some("deflate"), json, "/v1/events", &deflate).status, 200);
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut event("br").as_bytes(), &mut br, &Default::default()).unwrap();
        assert_eq!(post(Some("br"), json, "/v1/events", &br).status, 200);
        let zstd = zstd::stream::encode_all(event("zstd").as_bytes(), 3).unwrap();
        assert_eq!(post(Some("zstd"), json, "/v1/events", &zstd).status, 200);
        // A beacon: text/plain holding JSON, the key in the query string, no x-api-key.
        let beacon = gw.request(
            "POST",
            &format!("/v1/events?api_key={k}"),
            &[("content-type", "text/plain;charset=UTF-8"), ("origin", "http://localhost:3000")],
            event("beacon").as_bytes(),
        );
        assert_eq!(beacon.status, 200, "beacon: {}", beacon.text());
        assert_eq!(beacon.header("access-control-allow-origin"), Some("http://localhost:3000"));
        let r = post(None, "text/plain;charset=UTF-8", "/v1/events", b"type=click&not=json");
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["message"], "Invalid request body");
        // NDJSON: one event per line.
        let lines = "{\"type\": \"view\", \"marker\": \"ndjson-1\"}\n{\"type\": \"view\", \"marker\": \"ndjson-2\"}\r\n\n";
        let r = post(None, "application/x-ndjson", "/v1/events", lines.as_bytes());
        assert_eq!(r.status, 200, "ndjson: {}", r.text());
        assert_eq!(r.json()["Records"].as_array().map(Vec::len), Some(2));
        // The pixel: a GIF, never cached, once the record is in.
        let pixel = gw.request(
            "GET",
            &format!("/v1/pixel?type=view&marker=pixel&page=%2Fhome%3Fa%3D%22b%22&api_key={k}"),
            &[],
            b"",
        );
        assert_eq!(pixel.status, 200, "pixel: {}", pixel.text());
        assert_eq!(pixel.header("content-type"), Some("image/gif"));
        assert_eq!(pixel.body.len(), 43);
        assert!(pixel.body.starts_with(b"GIF89a"));
        assert!(pixel.header("cache-control").unwrap().contains("no-store"));
        let r = gw.request("GET", "/v1/pixel?type=view", &[], b"");
        assert_eq!(r.status, 403, "no key, no pixel");
        gw.stop_cleanly();
    })
    .await
    .unwrap();

    let sdk = support::aws(&endpoint).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let records = support::stream_data(&kinesis, &stream).await;
    let events: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect();
    let mut markers: Vec<&str> = events.iter().filter_map(|e| e["marker"].as_str()).collect();
    markers.sort_unstable();
    assert_eq!(
        markers,
        [
            "beacon", "br", "deflate", "gzip", "ndjson-1", "ndjson-2", "pixel", "zstd"
        ],
        "every event exactly once"
    );
    let pixel = events.iter().find(|e| e["marker"] == "pixel").unwrap();
    assert_eq!(pixel["page"], "/home?a=\"b\"");
    assert_eq!(pixel["type"], "view");
    assert!(
        pixel.get("api_key").is_none(),
        "the key is not an event field"
    );
    assert_eq!(pixel["ingest"]["sourceIp"], "127.0.0.1");
}
