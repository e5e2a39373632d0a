//! The TLS files (`tls.cert_file`, `tls.key_file`, `tls.client_ca_file`) read and checked, and
//! the rustls server configuration built from them; and the fleet's files for its TLS link to
//! Redis (`fleet.tls_*`, [`load_redis_tls`]), checked the same way. Done at start, at every reload (a rotated
//! file is picked up even when the config text is the same; a bad one keeps the previous
//! credentials, see `server/control.rs`) and by `--check-config`.
//!
//! Each file is read like the config file (`os/small_file.rs`: a regular file, at most 1 MiB,
//! not a FIFO that would block the loop). Checks, each failing with one line that names the
//! file: PEM with at least one certificate (or exactly the key), the key matches the leaf
//! certificate, the chain is in order (each certificate issued by the next), the leaf is
//! valid now.
//!
//! Crypto provider: *ring*. It builds with a C compiler alone (aws-lc-rs needs cmake and, for
//! some targets, bindgen), covers every suite we offer, and is what the Debian build of the
//! package links without extra build dependencies.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::tls::{ClientAuth, MinVersion, TlsConfig};
use crate::config::RedisTlsFiles;
use crate::os::small_file;

/// Largest certificate, key or CA file read: a bundle of hundreds of CAs is a few hundred KB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;
/// Resumption tickets per full TLS 1.3 handshake: one per reconnect is enough (rustls sends
/// two by default; each costs an encryption and a record).
const TICKETS_PER_HANDSHAKE: usize = 1;
/// TLS 1.2 session ids remembered for resumption (TLS 1.3 uses stateless tickets).
const TLS12_SESSION_CACHE: usize = 4096;

/// What the TLS listeners serve with.
#[derive(Clone)]
pub struct Credentials {
    pub server: Arc<ServerConfig>,
    /// The leaf certificate's `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The leaf's subject, for log lines.
    pub subject: String,
    /// Certificates in the chain, and CAs trusted for clients.
    pub chain_len: usize,
    pub client_cas: usize,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Seconds until the leaf expires at `now` (negative once expired).
    pub fn expires_in(&self, now: SystemTime) -> i64 {
        self.not_after - unix_secs(now)
    }
}

/// A certificate closer than this to its expiry is warned about (start, reload, check).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The warning for a certificate that expires within [`EXPIRY_WARNING`] of `now`.
pub fn expiry_warning(c: &Credentials, now: SystemTime) -> Option<String> {
    let left = c.expires_in(now);
    (left < EXPIRY_WARNING.as_secs() as i64).then(|| {
        format!(
            "tls: the certificate ({}) expires in {} days ({left} s); renew it and send SIGHUP",
            c.subject,
            left / 86_400
        )
    })
}

/// One line about the credentials in use, for `--check-config` and the start-up log.
pub fn describe(c: &Credentials, tls: &TlsConfig, now: SystemTime) -> String {
    let listen: Vec<String> = tls.listen.iter().map(|a| a.to_string()).collect();
    let clients = match tls.client_auth {
        ClientAuth::None => "no client certificates".to_string(),
        auth => format!(
            "client certificates {} ({} CAs), identity from {}",
            auth.name(),
            c.client_cas,
            tls.identity.name()
        ),
    };
    format!(
        "tls: {} serves {} ({} in chain, expires in {} days), TLS {}+, {clients}; handshakes \
         must finish within {}s",
        listen.join(", "),
        c.subject,
        c.chain_len,
        c.expires_in(now) / 86_400,
        tls.min_version.name(),
        tls.handshake_timeout.as_secs()
    )
}

/// A TLS file that cannot be used: which key, which file, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError {
    pub key: &'static str,
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path.display(), self.key, self.message)
    }
}

impl std::error::Error for CredentialError {}

/// The one certificate served to every client (no SNI selection).
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The crypto provider every TLS object of the daemon uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A ticket encrypter for session resumption. Kept by the caller across reloads, so tickets
/// issued before a certificate rotation still resume after it.
pub fn new_ticketer() -> Result<Arc<dyn ProducesTickets>, String> {
    rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, CredentialError> {
    small_file::read_regular(path, MAX_PEM_BYTES).map_err(|e| CredentialError {
        key,
        path: path.to_owned(),
        message: match e {
            small_file::ReadError::TooLarge => {
                format!(
                    "is larger than {} KiB; is this a PEM file?",
                    MAX_PEM_BYTES / 1024
                )
            }
            e => e.to_string(),
        },
    })
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let bytes = read(key, path)?;
    let fail = |message: String| CredentialError {
        key,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no certificate (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")".into(),
        ));
    }
    Ok(certs)
}

/// Parsed facts about one certificate that the checks need.
struct CertFacts {
    subject: String,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

fn facts(der: &CertificateDer<'_>) -> Result<CertFacts, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("a certificate cannot be parsed: {e}"))?;
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Reads and checks the files of `tls` at `now`, and builds the server configuration. `tickets`
/// encrypts resumption tickets.
pub fn load(
    tls: &TlsConfig,
    tickets: Arc<dyn ProducesTickets>,
    now: SystemTime,
) -> Result<Credentials, CredentialError> {
    let (Some(cert_path), Some(key_path)) = (&tls.cert_file, &tls.key_file) else {
        // The config check already refuses a listener without them; this is for callers that
        // did not look.
        return Err(CredentialError {
            key: "tls.cert_file",
            path: PathBuf::from("-"),
            message: "tls.cert_file and tls.key_file must both be set".into(),
        });
    };
    let cert_fail = |message: String| CredentialError {
        key: "tls.cert_file",
        path: cert_path.clone(),
        message,
    };
    let (chain, leaf) = checked_chain("tls.cert_file", cert_path, now)?;
    let provider = provider();
    let certified = matching_key("tls.key_file", key_path, cert_path, &chain, &provider)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| cert_fail(format!("TLS versions: {e}")))?;
    let (builder, client_cas) = match (&tls.client_ca_file, tls.client_auth) {
        (_, ClientAuth::None) | (None, _) => (builder.with_no_client_auth(), 0),
        (Some(ca_path), auth) => {
            let ca_fail = |message: String| CredentialError {
                key: "tls.client_ca_file",
                path: ca_path.clone(),
                message,
            };
            let (roots, added) = trust_anchors("tls.client_ca_file", ca_path)?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| ca_fail(format!("cannot verify clients with it: {e}")))?;
            (builder.with_client_cert_verifier(verifier), added)
        }
    };
    let mut server = builder.with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
    server.ticketer = tickets;
    server.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    server.session_storage = rustls::server::ServerSessionMemoryCache::new(TLS12_SESSION_CACHE);
    Ok(Credentials {
        server: Arc::new(server),
        not_after: leaf.not_after,
        subject: leaf.subject.clone(),
        chain_len: chain.len(),
        client_cas,
    })
}

/// The certificate chain in `path` (`key` names its setting), checked: in order, each
/// certificate issued by the next, and the leaf valid at `now`. Returns the chain and the
/// leaf's facts.
fn checked_chain(
    key: &'static str,
    path: &Path,
    now: SystemTime,
) -> Result<(Vec<CertificateDer<'static>>, CertFacts), CredentialError> {
    let fail = |message: String| CredentialError {
        key,
        path: path.to_owned(),
        message,
    };
    let chain = certificates(key, path)?;
    let mut parsed = chain
        .iter()
        .map(facts)
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer_raw != pair[1].subject_raw {
            return Err(fail(format!(
                "certificate {} ({}) did not issue certificate {} ({}): the chain must be the \
                 leaf first, each certificate followed by its issuer",
                i + 2,
                pair[1].subject,
                i + 1,
                pair[0].subject
            )));
        }
    }
    let leaf = parsed.swap_remove(0);
    let now_secs = unix_secs(now);
    if leaf.not_after < now_secs {
        return Err(fail(format!(
            "the certificate ({}) expired {} ago; its peers will refuse it",
            leaf.subject,
            crate::config::duration::format_duration(Duration::from_secs(
                (now_secs - leaf.not_after).unsigned_abs()
            ))
        )));
    }
    if leaf.not_before > now_secs {
        return Err(fail(format!(
            "the certificate ({}) is not valid yet (notBefore is in {} s); check the clock",
            leaf.subject,
            leaf.not_before - now_secs
        )));
    }
    Ok((chain, leaf))
}

/// The private key in `key_path` (setting `key`), which must be the key of `chain`'s leaf
/// (read from `cert_path`).
fn matching_key(
    key: &'static str,
    key_path: &Path,
    cert_path: &Path,
    chain: &[CertificateDer<'static>],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CredentialError> {
    let fail = |message: String| CredentialError {
        key,
        path: key_path.to_owned(),
        message,
    };
    let key_bytes = read(key, key_path)?;
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        fail(format!(
            "holds no usable private key ({e}); expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE \
             KEY\" or \"EC PRIVATE KEY\" block"
        ))
    })?;
    CertifiedKey::from_der(chain.to_vec(), private, provider).map_err(|e| {
        fail(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "does not match the certificate in {} (a different key pair)",
                cert_path.display()
            ),
            e => format!("cannot be used: {e}"),
        })
    })
}

/// The CA bundle in `path` (setting `key`) as trust anchors, and how many it holds.
fn trust_anchors(
    key: &'static str,
    path: &Path,
) -> Result<(RootCertStore, usize), CredentialError> {
    let cas = certificates(key, path)?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(CredentialError {
            key,
            path: path.to_owned(),
            message: format!("none of its {ignored} certificate(s) can be used as a trust anchor"),
        });
    }
    Ok((roots, added))
}

/// The fleet's TLS files for its link to Redis, read and checked, as the PEM text the `redis`
/// crate takes. Read at start and by `--check-config` (the config check), and again by the
/// fleet's thread at every connect, so a rotated file is used by the next connection.
#[derive(Clone, Default)]
pub struct RedisTlsPem {
    /// The CAs Redis's certificate must chain to; `None`: the system's trust store.
    pub roots: Option<Vec<u8>>,
    /// A client certificate chain and its key, for a Redis with `tls-auth-clients yes`.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTlsPem")
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Reads and checks `fleet.tls_ca_file` and the `fleet.tls_cert_file` / `fleet.tls_key_file`
/// pair of `files` at `now`.
pub fn load_redis_tls(
    files: &RedisTlsFiles,
    now: SystemTime,
) -> Result<RedisTlsPem, CredentialError> {
    let roots = match &files.ca_file {
        None => None,
        Some(path) => {
            trust_anchors("fleet.tls_ca_file", path)?;
            Some(read("fleet.tls_ca_file", path)?)
        }
    };
    let client = match (&files.cert_file, &files.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let (chain, _) = checked_chain("fleet.tls_cert_file", cert_path, now)?;
            matching_key(
                "fleet.tls_key_file",
                key_path,
                cert_path,
                &chain,
                &provider(),
            )?;
            Some((
                read("fleet.tls_cert_file", cert_path)?,
                read("fleet.tls_key_file", key_path)?,
            ))
        }
        _ => None,
    };
    Ok(RedisTlsPem { roots, client })
}
