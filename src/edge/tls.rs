//! TLS termination (rustls): the certificate by SNI, mutual TLS against a client CA, and
//! reloads without a restart. Each new connection takes the configuration current when it
//! arrives; open connections keep the one they began with, so a reload never drops them. A
//! reload that fails (a missing file, a key that does not match its certificate) keeps the
//! old certificates and says why. Session tickets and the session cache outlive reloads, so
//! clients resume across them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, server::ProducesTickets};
use serde_json::{Value as Json, json};

/// Sessions the cache holds for resumption without tickets (TLS 1.2 clients).
const SESSION_CACHE: usize = 16_384;

/// How often the certificate files are checked for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// `[server.tls]`, validated: the files to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub sni: Vec<SniFiles>,
}

/// One `[[server.tls.sni]]`: names (lower-case; `*.example.com` for one label) and their
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniFiles {
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    fn all(&self) -> Vec<&Path> {
        let mut files = vec![self.cert.as_path(), self.key.as_path()];
        files.extend(self.client_ca.as_deref());
        for s in &self.sni {
            files.push(&s.cert);
            files.push(&s.key);
        }
        files
    }
}

/// The listener's TLS state: the configuration new connections get, and how to renew it.
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
    /// The files' modification times and sizes when last loaded.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    /// Loads the certificates; the error names the file and what is wrong with it.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| format!("cannot make a session ticket key: {e}"))?;
        let sessions = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        let stamps = stamps(files);
        let config = build(files, sessions.clone(), ticketer.clone())?;
        Ok(Tls {
            files: files.clone(),
            current: ArcSwap::from_pointee(config),
            sessions,
            ticketer,
            stamps: Mutex::new(stamps),
        })
    }

    /// The configuration for a connection arriving now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Loads the files again; on success new connections use them, on failure nothing
    /// changes and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let stamps = stamps(&self.files);
        let config = build(&self.files, self.sessions.clone(), self.ticketer.clone())?;
        self.current.store(Arc::new(config));
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        Ok(())
    }

    /// Whether a file changed since the last load (or failed reload attempt).
    fn changed(&self) -> bool {
        let now = stamps(&self.files);
        let mut last = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if *last == now {
            return false;
        }
        *last = now;
        true
    }

    /// Reloads on SIGHUP and when a file changes, until the process ends.
    pub fn watch(self: &Arc<Self>) {
        let tls = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let why = tokio::select! {
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                    _ = tick.tick() => "changed",
                };
                #[cfg(not(unix))]
                let why = {
                    tick.tick().await;
                    "changed"
                };
                if why == "changed" && !tls.changed() {
                    continue;
                }
                match tls.reload() {
                    Ok(()) => tracing::info!(trigger = why, "TLS certificates reloaded."),
                    Err(e) => tracing::error!(
                        trigger = why,
                        error = %e,
                        "Reloading the TLS certificates failed; the previous ones stay in use."
                    ),
                }
            }
        });
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    files
        .all()
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn build(
    files: &TlsFiles,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<ServerConfig, String> {
    let provider = provider();
    let default = certified_key(&files.cert, &files.key, &provider)?;
    let mut by_name = Vec::new();
    for s in &files.sni {
        let key = Arc::new(certified_key(&s.cert, &s.key, &provider)?);
        for name in &s.names {
            by_name.push((name.clone(), key.clone()));
        }
    }
    let resolver = Arc::new(SniResolver {
        default: Arc::new(default),
        by_name,
    });
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a CA certificate: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = sessions;
    config.ticketer = ticketer;
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?;
    CertifiedKey::from_der(chain, der, provider)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))
}

/// The certificate for a client hello: by SNI name (exact, then `*.` one label up), else
/// the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        let found = self.by_name.iter().find(|(n, _)| *n == name).or_else(|| {
            let w = wildcard.as_deref()?;
            self.by_name.iter().find(|(n, _)| n == w)
        });
        Some(found.map_or_else(|| self.default.clone(), |(_, k)| k.clone()))
    }
}

/// What a client certificate says, under API Gateway's names for
/// `$context.identity.clientCert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub pem: String,
    pub subject_dn: String,
    pub issuer_dn: String,
    pub serial_number: String,
    pub not_before: String,
    pub not_after: String,
}

impl ClientCert {
    /// Reads the (already verified) end-entity certificate.
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        Some(ClientCert {
            pem: pem(der),
            subject_dn: cert.subject().to_string(),
            issuer_dn: cert.issuer().to_string(),
            serial_number: cert.raw_serial_as_string(),
            not_before: gmt(validity.not_before.timestamp()),
            not_after: gmt(validity.not_after.timestamp()),
        })
    }

    /// `$context.identity.clientCert`.
    pub fn to_json(&self) -> Json {
        json!({
            "clientCertPem": self.pem,
            "subjectDN": self.subject_dn,
            "issuerDN": self.issuer_dn,
            "serialNumber": self.serial_number,
            "validity": {"notBefore": self.not_before, "notAfter": self.not_after},
        })
    }
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// `May 28 12:30:02 2019 GMT`, as API Gateway shows certificate validity.
fn gmt(epoch_seconds: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = epoch_seconds.div_euclid(86_400);
    let secs = epoch_seconds.rem_euclid(86_400);
    let (y, m, d) = crate::mapping::context::civil_from_days(days);
    format!(
        "{} {d:2} {:02}:{:02}:{:02} {y} GMT",
        MONTHS[(m as usize).saturating_sub(1) % 12],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Whether the first bytes of a connection are a TLS handshake record (else it is plain
/// HTTP or noise, answered in plain text and closed).
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&0x16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_reads_as_api_gateway_shows_it() {
        assert_eq!(gmt(1_559_046_602), "May 28 12:30:02 2019 GMT");
        assert_eq!(gmt(0), "Jan  1 00:00:00 1970 GMT");
    }

    #[test]
    fn a_handshake_is_told_from_plain_http() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_tls(b"GET / HTTP/1.1"));
        assert!(!looks_like_tls(b""));
    }
}
