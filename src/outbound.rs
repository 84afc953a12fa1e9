//! The gateway's own HTTP client, for what it calls besides the AWS SDKs: HTTP backends,
//! signed calls to AWS services' APIs, and issuers' signing keys. One pooled client (hyper
//! with rustls, HTTP/1.1 and HTTP/2), bodies read with a bound.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt as _, Full};

/// A pooled client over plain TCP and TLS.
pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// Why a call did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made (refused, unreachable, TLS failed): nothing was sent.
    Connect(String),
    /// The connection broke after the request was (perhaps) sent.
    Broken(String),
    /// No answer in time.
    Timeout,
    /// The answer's body is larger than allowed.
    TooLarge(usize),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "could not connect: {e}"),
            Failure::Broken(e) => write!(f, "the connection failed: {e}"),
            Failure::Timeout => f.write_str("no answer in time"),
            Failure::TooLarge(n) => write!(f, "the answer is larger than {n} bytes"),
        }
    }
}

/// The client, trusting the system's CAs (and `extra_roots`, PEM, when given); without
/// system CAs only `http://` and the extra roots work.
pub fn client(connect_timeout: Duration, extra_roots: Option<&[u8]>) -> Result<Client, String> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(pem) = extra_roots {
        use rustls::pki_types::pem::PemObject as _;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("the CA file: {e}"))?;
            roots.add(cert).map_err(|e| format!("the CA file: {e}"))?;
        }
    }
    if roots.is_empty() {
        tracing::warn!("No CA certificates: calls over https will fail.");
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https),
    )
}

/// An answer, its body read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends a request and reads the answer's body (at most `max_body` bytes), all within
/// `timeout`.
pub async fn send(
    client: &Client,
    req: http::Request<Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, Failure> {
    let work = async {
        let resp = client.request(req).await.map_err(|e| {
            let text = chain(&e);
            if e.is_connect() {
                Failure::Connect(text)
            } else {
                Failure::Broken(text)
            }
        })?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Failure::TooLarge(max_body)
                } else {
                    Failure::Broken(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
