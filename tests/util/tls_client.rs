//! A blocking TLS client for the tests: rustls' `ClientConnection` in a `StreamOwned` over a
//! std `TcpStream` (the ring provider, as the daemon), with a small RESP2 reply reader. It
//! trusts the test's CA, may present a client certificate, can be held to TLS 1.2 or 1.3, and
//! resumes when the same [`ClientConfig`] is used again (rustls' in-memory session store).
//!
//! Every blocking call times out after [`IO_TIMEOUT`], so no test hangs on a daemon that does
//! not answer. Works inside a fault case's network namespace (its sockets are the thread's).

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};

use super::Daemon;

pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Which versions a client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    Both,
    Only12,
    Only13,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client certificate whose key is not checked against it (the wrong-key case: rustls'
/// `with_client_auth_cert` refuses a mismatched pair before any handshake).
#[derive(Debug)]
struct AnyCert(Arc<CertifiedKey>);

impl ResolvesClientCert for AnyCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client configuration trusting `ca_pem`, presenting `cert` (PEM certificate, PEM key)
/// when given.
pub fn config(ca_pem: &str, cert: Option<(&str, &str)>, versions: Versions) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let vs: &[&'static rustls::SupportedProtocolVersion] = match versions {
        Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Only12 => &[&rustls::version::TLS12],
        Versions::Only13 => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(vs)
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
            let signer = provider().key_provider.load_private_key(key).unwrap();
            builder.with_client_cert_resolver(Arc::new(AnyCert(Arc::new(CertifiedKey::new(
                chain, signer,
            )))))
        }
    };
    Arc::new(config)
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as text (status, error, bulk), for assertions.
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) => String::new(),
            Reply::Array(items) => items.iter().map(Reply::text).collect::<Vec<_>>().join(" "),
        }
    }
}

/// One TLS connection to the daemon.
pub struct TlsClient {
    pub tls: StreamOwned<ClientConnection, TcpStream>,
    /// The client's address: the `peer=` of its session's reap line.
    pub local: SocketAddr,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects and completes the handshake (from the client's side: a TLS 1.3 server may
    /// still refuse the client's certificate after that; the first reply tells).
    pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> io::Result<TlsClient> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        TlsClient::over(stream, config)
    }

    /// Runs TLS over an already connected stream.
    pub fn over(stream: TcpStream, config: &Arc<ClientConfig>) -> io::Result<TlsClient> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient {
            tls,
            local,
            buf: Vec::new(),
        })
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tls.sock
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.tls.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.conn.protocol_version()
    }

    /// The server's leaf certificate (DER), as served in this handshake (none when resumed).
    pub fn served_leaf(&self) -> Option<Vec<u8>> {
        self.tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
    }

    /// Sends one command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.send(args)?;
        self.reply()
    }

    /// Sends one command (multibulk) without reading.
    pub fn send(&mut self, args: &[&str]) -> io::Result<()> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        self.tls.write_all(&req)?;
        self.tls.flush()
    }

    /// `PING`, expecting `PONG`.
    pub fn ping(&mut self) -> io::Result<()> {
        match self.cmd(&["PING"])? {
            Reply::Status(s) if s == "PONG" => Ok(()),
            other => Err(io::Error::other(format!("PING answered {other:?}"))),
        }
    }

    /// Sends `close_notify` (the TCP connection stays open).
    pub fn close_notify(&mut self) -> io::Result<()> {
        self.tls.conn.send_close_notify();
        while self.tls.conn.wants_write() {
            self.tls.conn.write_tls(&mut self.tls.sock)?;
        }
        Ok(())
    }

    /// Reads until the peer closes (TLS `close_notify` or TCP EOF); returns the plaintext.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.buf);
        match self.tls.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            // EOF without close_notify still ends the read.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(out),
            Err(e) => Err(e),
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.tls.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..at + 2).take(at).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            self.fill()?;
        }
    }

    /// Reads one reply.
    pub fn reply(&mut self) -> io::Result<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        let num = || {
            rest.parse::<i64>()
                .map_err(|e| io::Error::other(format!("bad length {rest:?}: {e}")))
        };
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(num()?),
            "$" => {
                let n = num()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let n = n as usize;
                    while self.buf.len() < n + 2 {
                        self.fill()?;
                    }
                    let body: Vec<u8> = self.buf.drain(..n + 2).take(n).collect();
                    Reply::Bulk(Some(body))
                }
            }
            "*" => {
                let n = num()?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(self.reply()?);
                }
                Reply::Array(items)
            }
            _ => return Err(io::Error::other(format!("not RESP2: {line:?}"))),
        })
    }
}

/// The daemon's TLS listener, from its `listening on ... (TLS)` line.
pub fn tls_addr(d: &Daemon) -> SocketAddr {
    let line = d
        .log
        .wait_for(Duration::ZERO, |l| {
            l.contains("listening on ") && l.ends_with("(TLS)")
        })
        .unwrap_or_else(|| panic!("no TLS listener line:\n{}", d.log.text()));
    line.rsplit("listening on ")
        .next()
        .and_then(|a| a.trim_end_matches("(TLS)").trim().parse().ok())
        .expect("TLS listener address")
}
