//! A session's TLS layer: rustls' *unbuffered* server connection, driven by the loop.
//!
//! The unbuffered API leaves every buffer to the caller, and that is what keeps an idle TLS
//! session small: ciphertext is read into the loop's read buffer and processed there, the
//! plaintext is handed on in the loop's buffers, replies are encrypted into a loop buffer and
//! written at once. What a session keeps between turns is the connection state (keys and
//! handshake state, boxed) plus, only while a read cut a record in two, that record's bytes
//! (`partial`, freed when it completes); output the kernel refused waits, as ciphertext, in the
//! session's `Output` like any other. rustls' buffered `ServerConnection` keeps a 4 KiB read
//! buffer per connection for good, which alone is the whole per-session budget.
//!
//! The handshake's bound (`tls.handshake_timeout`) is the loop's (`server/tls_guard.rs`);
//! failures here are [`Failure`]s with a counted [`FailureCause`] and a detail for the reap line.

use std::sync::Arc;

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::HandshakeKind;

/// The most ciphertext kept for an unfinished record or handshake flight. A record is at most
/// 16 KiB plus overhead; a client certificate chain of several certificates fits. The rest of
/// the loop's 64 KiB read buffer is the room for the next read.
pub const MAX_PARTIAL_BYTES: usize = 32 * 1024;
/// The first byte of every TLS connection: a handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Where a TLS session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Handshaking,
    Open,
    /// The peer sent `close_notify`.
    PeerClosed,
}

/// Why a TLS session failed: one counter each (`INFO` tls, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// Not TLS at all: a plaintext client on a TLS port.
    Plaintext,
    /// The handshake did not finish within `tls.handshake_timeout`.
    Timeout,
    /// The client's certificate was refused (unknown CA, expired, bad signature, ...).
    BadCertificate,
    /// `tls.client_auth = "required"` and the client sent none.
    NoCertificate,
    /// The certificate has no usable identity (`tls.identity`).
    NoIdentity,
    /// No common version or cipher suite.
    Incompatible,
    /// The peer sent a fatal alert.
    Alert,
    /// Malformed records or messages, failed decryption, an oversized flight.
    Protocol,
}

impl FailureCause {
    pub const ALL: [FailureCause; 8] = [
        FailureCause::Plaintext,
        FailureCause::Timeout,
        FailureCause::BadCertificate,
        FailureCause::NoCertificate,
        FailureCause::NoIdentity,
        FailureCause::Incompatible,
        FailureCause::Alert,
        FailureCause::Protocol,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            FailureCause::Plaintext => "plaintext",
            FailureCause::Timeout => "timeout",
            FailureCause::BadCertificate => "bad-certificate",
            FailureCause::NoCertificate => "no-certificate",
            FailureCause::NoIdentity => "no-identity",
            FailureCause::Incompatible => "incompatible",
            FailureCause::Alert => "alert",
            FailureCause::Protocol => "protocol",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A failed TLS session: why, and the error or alert in words (for the reap line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: FailureCause,
    /// Whether it failed before the handshake finished (`tls-handshake`), or after
    /// (`tls-error`).
    pub in_handshake: bool,
    pub detail: Box<str>,
}

impl Failure {
    pub fn new(cause: FailureCause, in_handshake: bool, detail: impl Into<Box<str>>) -> Failure {
        Failure {
            cause,
            in_handshake,
            detail: detail.into(),
        }
    }

    fn from_rustls(e: &rustls::Error, in_handshake: bool) -> Failure {
        use rustls::Error as E;
        let cause = match e {
            E::InvalidCertificate(_) => FailureCause::BadCertificate,
            E::NoCertificatesPresented => FailureCause::NoCertificate,
            E::PeerIncompatible(_) => FailureCause::Incompatible,
            E::AlertReceived(_) => FailureCause::Alert,
            _ => FailureCause::Protocol,
        };
        Failure::new(cause, in_handshake, e.to_string())
    }
}

/// What one [`Tls::feed`] did besides producing plaintext.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The handshake finished in this call.
    pub established: bool,
    /// The peer's `close_notify` arrived in this call.
    pub peer_closed: bool,
}

/// One session's TLS state (see the module docs).
pub struct Tls {
    conn: UnbufferedServerConnection,
    /// Ciphertext of a record cut by a read; empty, with no allocation, otherwise.
    partial: Vec<u8>,
    pub phase: Phase,
    /// Whether any byte was received yet (the first one tells TLS from plaintext).
    started: bool,
    /// The failure that ends the session, once known (read by the reaper for its line).
    /// Boxed: every live TLS session carries the field, few ever fill it.
    pub failure: Option<Box<Failure>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("phase", &self.phase)
            .field("partial", &self.partial.len())
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> Result<Tls, Failure> {
        let conn =
            UnbufferedServerConnection::new(config).map_err(|e| Failure::from_rustls(&e, true))?;
        Ok(Tls {
            conn,
            partial: Vec::new(),
            phase: Phase::Handshaking,
            started: false,
            failure: None,
        })
    }

    /// Whether the handshake is done (and not failed).
    pub fn is_open(&self) -> bool {
        self.phase != Phase::Handshaking
    }

    /// Whether this session resumed an earlier one (a ticket or session id).
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// The negotiated version, as `1.2` / `1.3` (for `CLIENT INFO`).
    pub fn version(&self) -> &'static str {
        match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
            _ => "-",
        }
    }

    /// The client's leaf certificate, once the handshake verified it.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref())
    }

    /// Bytes of an unfinished record kept between reads.
    pub fn partial_len(&self) -> usize {
        self.partial.len()
    }

    /// Moves the kept partial record to the front of `buf` (the loop's read buffer) and
    /// returns its length: the next read goes after it, and [`Tls::feed`] gets both.
    pub fn restore_partial(&mut self, buf: &mut [u8]) -> usize {
        let n = self.partial.len().min(buf.len());
        buf[..n].copy_from_slice(&self.partial[..n]);
        self.partial = Vec::new();
        n
    }

    /// Processes the ciphertext in `buf`: application data is appended to `plain`, and what
    /// must be sent (handshake flights, tickets, alerts) to `wire`. A record cut at the end
    /// of `buf` is kept for the next call. On failure an alert for the peer may be in `wire`.
    pub fn feed(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<Progress, Failure> {
        let first = buf.first().copied();
        if !self.started && first.is_some() {
            self.started = true;
            if first != Some(HANDSHAKE_RECORD) {
                return Err(Failure::new(
                    FailureCause::Plaintext,
                    true,
                    "the client did not start a TLS handshake (plaintext on a TLS port?)",
                ));
            }
        }
        let mut progress = Progress::default();
        let mut start = 0;
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut buf[start..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    let failure = Failure::from_rustls(&e, self.phase == Phase::Handshaking);
                    // The alert is fetched with the same buffer: rustls may still hold
                    // messages of this flight as ranges into it (a client's Certificate
                    // refused, its CertificateVerify and Finished pending), and panics on a
                    // buffer that does not have them.
                    let rest = (start + discard).min(buf.len());
                    self.send_alert(&mut buf[rest..], wire);
                    return Err(failure);
                }
            };
            let mut stop = false;
            let mut extra = 0;
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(|e| Failure::from_rustls(&e, false))?;
                        extra += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::ReadEarlyData(mut records) => {
                    // Early data is not enabled (`max_early_data_size` is 0); drained if sent.
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(|e| Failure::from_rustls(&e, true))?;
                        extra += record.discard;
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_pending(&mut encode, wire);
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // `wire` is written by the caller, in order, right after this call.
                    transmit.done();
                }
                ConnectionState::PeerClosed => {
                    self.phase = Phase::PeerClosed;
                    progress.peer_closed = true;
                    stop = true;
                }
                // Waiting for more of the handshake, or established with nothing left to
                // process, or closed both ways.
                _ => stop = true,
            }
            start += discard + extra;
            if stop {
                break;
            }
        }
        if self.phase == Phase::Handshaking && !self.conn.is_handshaking() {
            self.phase = Phase::Open;
            progress.established = true;
        }
        let rest = &buf[start.min(buf.len())..];
        if rest.len() > MAX_PARTIAL_BYTES {
            return Err(Failure::new(
                FailureCause::Protocol,
                self.phase == Phase::Handshaking,
                format!("an unfinished TLS record or flight over {MAX_PARTIAL_BYTES} bytes"),
            ));
        }
        if !rest.is_empty() {
            self.partial = rest.to_vec();
        }
        Ok(progress)
    }

    /// Encrypts `plain` into `wire`. Fails when the connection cannot carry application data
    /// (not established, or closed).
    pub fn encrypt(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), Failure> {
        self.with_writer(wire, |writer, wire| {
            append_encoded(wire, |out| writer.encrypt(plain, out).map_err(insufficient))
        })
    }

    /// Queues a `close_notify` alert into `wire` (best effort: nothing when the connection
    /// cannot send one).
    pub fn close_notify(&mut self, wire: &mut Vec<u8>) {
        let _ = self.with_writer(wire, |writer, wire| {
            append_encoded(wire, |out| {
                writer.queue_close_notify(out).map_err(insufficient)
            })
        });
    }

    /// Runs `write` once the connection offers `WriteTraffic`, encoding any pending TLS
    /// messages into `wire` first.
    fn with_writer(
        &mut self,
        wire: &mut Vec<u8>,
        write: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
        ) -> bool,
    ) -> Result<(), Failure> {
        let in_handshake = self.phase == Phase::Handshaking;
        // Bounded: each pass either encodes a pending message or ends.
        for _ in 0..64 {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut self.partial);
            match state {
                Ok(ConnectionState::WriteTraffic(mut writer)) => {
                    return if write(&mut writer, wire) {
                        Ok(())
                    } else {
                        Err(Failure::new(
                            FailureCause::Protocol,
                            in_handshake,
                            "cannot encrypt",
                        ))
                    };
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_pending(&mut encode, wire);
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(_) => break,
                Err(e) => return Err(Failure::from_rustls(&e, in_handshake)),
            }
        }
        Err(Failure::new(
            FailureCause::Protocol,
            in_handshake,
            "the connection cannot send application data",
        ))
    }

    /// After an error: the alert rustls queued for the peer, if any, into `wire`. `buf` is
    /// what is left of the buffer the error came from (see [`Tls::feed`]).
    fn send_alert(&mut self, buf: &mut [u8], wire: &mut Vec<u8>) {
        let mut at = 0;
        for _ in 0..4 {
            let from = at.min(buf.len());
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut buf[from..]);
            at += discard;
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_pending(&mut encode, wire);
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }
}

/// Appends the TLS message rustls has ready (a handshake flight, a ticket, an alert) to `wire`.
fn encode_pending(
    encode: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    wire: &mut Vec<u8>,
) {
    append_encoded(wire, |out| {
        encode.encode(out).map_err(|e| match e {
            EncodeError::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        })
    });
}

fn insufficient(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// Appends what `encode` writes to `wire`, growing it to the size `encode` asks for. Returns
/// false when `encode` failed for another reason (nothing is appended then).
fn append_encoded(
    wire: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> bool {
    let start = wire.len();
    let mut room = 1024;
    // Twice at most: the first failure says the size needed.
    for _ in 0..3 {
        wire.resize(start + room, 0);
        match encode(&mut wire[start..]) {
            Ok(n) => {
                wire.truncate(start + n);
                return true;
            }
            Err(Some(needed)) if needed > room => room = needed,
            Err(_) => break,
        }
    }
    wire.truncate(start);
    false
}
