//! The `[tls]` table: TLS client listeners beside `server.listen`, the server's certificate,
//! and how client certificates are asked for and turned into identities. Names follow Redis
//! and mosquitto (`cert_file`, `key_file`, `client_ca_file`), so operators and tools can rely
//! on them.
//!
//! This file checks the settings (stage 2 of the config); reading the certificate and key files
//! is `credentials.rs`, done at start, at every reload (so a rotated file is picked up even when
//! the config text did not change) and by `--check-config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration::DurationValue;
use crate::config::validate::Check;
use crate::config::ConfigError;

pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A handshake takes a few round trips; a minute is already generous on a satellite link.
pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// `tls.client_auth`: whether a TLS client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for.
    None,
    /// Asked for; a client without one is served without an identity, one with a bad one is
    /// refused.
    Optional,
    /// A client without a valid certificate is refused in the handshake.
    Required,
}

impl ClientAuth {
    pub const fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// `tls.identity`: which part of a client certificate is the session's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    /// The subject's common name.
    Cn,
    /// The first DNS name of the subject alternative names.
    SanDns,
    /// The first URI of the subject alternative names (SPIFFE ids, for example).
    SanUri,
}

impl IdentityField {
    pub const fn name(self) -> &'static str {
        match self {
            IdentityField::Cn => "cn",
            IdentityField::SanDns => "san-dns",
            IdentityField::SanUri => "san-uri",
        }
    }
}

/// `tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

impl MinVersion {
    pub const fn name(self) -> &'static str {
        match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        }
    }
}

/// The checked `[tls]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// TLS client listeners; empty = no TLS.
    pub listen: Vec<SocketAddr>,
    /// The certificate chain, leaf first (resolved against the config file's directory).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// CA bundle client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub identity: IdentityField,
    pub min_version: MinVersion,
    /// A TLS session whose handshake is not done this long after accept is reaped
    /// (`tls-handshake`).
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: Vec::new(),
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: ClientAuth::None,
            identity: IdentityField::Cn,
            min_version: MinVersion::Tls12,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl TlsConfig {
    /// Whether any TLS listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// Whether client certificates give sessions identities.
    pub fn gives_identities(&self) -> bool {
        self.enabled() && self.client_auth != ClientAuth::None
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [tls] table")]
pub(super) struct RawTls {
    pub(super) listen: Option<Vec<String>>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) client_auth: Option<String>,
    pub(super) identity: Option<String>,
    pub(super) min_version: Option<String>,
    pub(super) handshake_timeout: Option<DurationValue>,
}

fn one_of<T: Copy>(
    key: &str,
    raw: Option<&str>,
    default: T,
    choices: &[(&str, T)],
    check: &Check<'_>,
) -> Result<T, ConfigError> {
    let Some(given) = raw else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(name, _)| *name == given)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            check.invalid(key, format!("{given:?} is not one of {}", names.join(", ")))
        })
}

impl TlsConfig {
    pub(super) fn from_raw(
        raw: RawTls,
        plain: &[SocketAddr],
        check: &Check<'_>,
    ) -> Result<Self, ConfigError> {
        let default = TlsConfig::default();
        let listen = match raw.listen {
            None => Vec::new(),
            Some(entries) if entries.is_empty() => Vec::new(),
            Some(entries) => super::validate::parse_listen_key("tls.listen", &entries, check)?,
        };
        for (i, addr) in listen.iter().enumerate() {
            // Port 0 is a fresh port for each listener, never the same one twice.
            if addr.port() != 0 && plain.contains(addr) {
                return Err(check.invalid(
                    &format!("tls.listen[{i}]"),
                    format!("{addr} is also in server.listen; a port speaks TLS or plain RESP, not both"),
                ));
            }
        }
        let client_auth = one_of(
            "tls.client_auth",
            raw.client_auth.as_deref(),
            default.client_auth,
            &[
                ("none", ClientAuth::None),
                ("optional", ClientAuth::Optional),
                ("required", ClientAuth::Required),
            ],
            check,
        )?;
        let identity = one_of(
            "tls.identity",
            raw.identity.as_deref(),
            default.identity,
            &[
                ("cn", IdentityField::Cn),
                ("san-dns", IdentityField::SanDns),
                ("san-uri", IdentityField::SanUri),
            ],
            check,
        )?;
        let min_version = one_of(
            "tls.min_version",
            raw.min_version.as_deref(),
            default.min_version,
            &[("1.2", MinVersion::Tls12), ("1.3", MinVersion::Tls13)],
            check,
        )?;
        let handshake_timeout = check
            .duration("tls.handshake_timeout", raw.handshake_timeout)?
            .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
        if handshake_timeout.is_zero() || handshake_timeout > MAX_HANDSHAKE_TIMEOUT {
            return Err(check.invalid(
                "tls.handshake_timeout",
                "must be more than 0s and at most 60s: a TLS client that has not finished its \
                 handshake by then is stalling (slowloris)",
            ));
        }
        let config = TlsConfig {
            listen,
            cert_file: check.optional_file(raw.cert_file),
            key_file: check.optional_file(raw.key_file),
            client_ca_file: check.optional_file(raw.client_ca_file),
            client_auth,
            identity,
            min_version,
            handshake_timeout,
        };
        if config.enabled() {
            if config.cert_file.is_none() {
                return Err(check.invalid(
                    "tls.cert_file",
                    "is not set; a TLS listener needs the server's certificate chain (PEM, \
                     leaf first)",
                ));
            }
            if config.key_file.is_none() {
                return Err(check.invalid(
                    "tls.key_file",
                    "is not set; a TLS listener needs the certificate's private key (PEM)",
                ));
            }
        }
        if config.client_auth != ClientAuth::None && config.client_ca_file.is_none() {
            return Err(check.invalid(
                "tls.client_auth",
                format!(
                    "is {:?} but tls.client_ca_file is not set; client certificates are checked \
                     against that CA bundle",
                    config.client_auth.name()
                ),
            ));
        }
        Ok(config)
    }

    pub(super) fn to_raw(&self) -> RawTls {
        let path = |p: &Option<PathBuf>| {
            Some(
                p.as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
            )
        };
        RawTls {
            listen: Some(self.listen.iter().map(|a| a.to_string()).collect()),
            cert_file: path(&self.cert_file),
            key_file: path(&self.key_file),
            client_ca_file: path(&self.client_ca_file),
            client_auth: Some(self.client_auth.name().to_owned()),
            identity: Some(self.identity.name().to_owned()),
            min_version: Some(self.min_version.name().to_owned()),
            handshake_timeout: Some(self.handshake_timeout.into()),
        }
    }
}
