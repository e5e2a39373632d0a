//! The `[fleet]` table: several vigild nodes sharing one presence view through Redis
//! (docs/fleet.md). Off unless `redis` is set, so a single host works exactly as without it.
//!
//! Invariants of a [`FleetConfig`] that passed [`FleetConfig::from_raw`]: the URL is
//! `redis://`, `rediss://` (TLS; its files readable and checked, `fleet.tls_*`) or `unix://`
//! and carries no password (that goes in `password_file`, so the URL
//! can be shown by `--check-config`, `CONFIG GET` and logs), the stream key carries a hash
//! tag (`{...}`) that every other fleet key shares, so the scripts run on Redis Cluster too,
//! the node name is 1 to 255 bytes of printable ASCII, and the lease is 1 s to 1 h.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::raw::RawInt;
use super::secret::{self, Password, PasswordSource};
use super::validate::Check;
use super::ConfigError;
use crate::config::credentials;
use crate::config::duration::DurationValue;

pub const DEFAULT_FLEET_REDIS: &str = "";
/// Lost within 5 s: the lease, plus one sweep (lease/3), plus the script.
pub const DEFAULT_FLEET_LEASE: Duration = Duration::from_secs(3);
pub const DEFAULT_FLEET_STREAM: &str = "{vigild}:presence";
pub const DEFAULT_FLEET_STREAM_MAXLEN: u64 = 1_000_000;
/// Availability first: a node cut off from Redis keeps serving its clients (docs/fleet.md).
pub const DEFAULT_FLEET_FENCE: bool = false;
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = Duration::from_secs(3600);
const MAX_NODE_BYTES: usize = 255;

/// `[fleet]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [fleet] table")]
pub(super) struct RawFleet {
    pub(super) redis: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) node: Option<String>,
    pub(super) lease: Option<DurationValue>,
    pub(super) stream: Option<String>,
    pub(super) stream_maxlen: Option<RawInt>,
    pub(super) fence: Option<bool>,
    pub(super) tls_ca_file: Option<String>,
    pub(super) tls_cert_file: Option<String>,
    pub(super) tls_key_file: Option<String>,
}

/// The files of a `rediss://` link: the CAs that sign Redis's certificate (unset: the system's
/// trust store) and a client certificate for a Redis with `tls-auth-clients` (both or neither).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The checked `[fleet]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// `None`: the fleet is off (the default).
    pub redis: Option<String>,
    /// `AUTH` to Redis with it; `Debug` never shows it.
    pub password: Option<Password>,
    /// This node's name in the fleet, as configured ("" = `hostname:port`, see [`Self::node_name`]).
    pub node: String,
    /// A node silent this long is lost.
    pub lease: Duration,
    pub stream: String,
    pub stream_maxlen: u64,
    /// A node whose lease lapsed reaps its own sessions as `fenced`.
    pub fence: bool,
    /// With a `rediss://` URL: its files (checked when the config was read).
    pub tls: RedisTlsFiles,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            redis: None,
            password: None,
            node: String::new(),
            lease: DEFAULT_FLEET_LEASE,
            stream: DEFAULT_FLEET_STREAM.to_owned(),
            stream_maxlen: DEFAULT_FLEET_STREAM_MAXLEN,
            fence: DEFAULT_FLEET_FENCE,
            tls: RedisTlsFiles::default(),
        }
    }
}

impl FleetConfig {
    /// The node's name: `node`, or `hostname:port` of the first client listener.
    pub fn node_name(&self, port: u16) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{port}")
    }

    /// The hash tag every fleet key carries, braces included (`{vigild}`).
    pub fn hash_tag(&self) -> &str {
        hash_tag(&self.stream).unwrap_or("{vigild}")
    }

    pub(super) fn from_raw(raw: RawFleet, check: &Check<'_>) -> Result<Self, ConfigError> {
        let redis = raw.redis.filter(|u| !u.is_empty());
        if let Some(url) = &redis {
            redis_url(url, check)?;
        }
        let password = match raw.password_file.filter(|p| !p.is_empty()) {
            None => None,
            Some(f) => {
                let path = check.file(&f);
                let secret = secret::read_password_file(&path)
                    .map_err(|m| check.invalid("fleet.password_file", m))?;
                Some(Password::new(secret, PasswordSource::File(path)))
            }
        };
        let node = raw.node.unwrap_or_default();
        if node.len() > MAX_NODE_BYTES
            || node
                .bytes()
                .any(|b| !(0x21..0x7f).contains(&b) || b == b'|')
        {
            return Err(check.invalid(
                "fleet.node",
                format!(
                    "must be at most {MAX_NODE_BYTES} bytes of printable ASCII without blanks \
                     or '|' (it names the node in every key and event), or \"\" for hostname:port"
                ),
            ));
        }
        let lease = check
            .duration("fleet.lease", raw.lease)?
            .unwrap_or(DEFAULT_FLEET_LEASE);
        if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
            return Err(check.invalid(
                "fleet.lease",
                "use \"1s\" to \"1h\": the lease is renewed every third of it, and a node \
                 silent that long is declared lost",
            ));
        }
        let stream = raw
            .stream
            .unwrap_or_else(|| DEFAULT_FLEET_STREAM.to_owned());
        if hash_tag(&stream).is_none() || stream.len() > 1024 {
            return Err(check.invalid(
                "fleet.stream",
                format!(
                    "{stream:?} carries no hash tag: write it as \"{{tag}}:name\" (the default is \
                     \"{DEFAULT_FLEET_STREAM}\"), so that every fleet key lands on one Redis \
                     Cluster slot"
                ),
            ));
        }
        let stream_maxlen = check.int(
            "fleet.stream_maxlen",
            raw.stream_maxlen,
            DEFAULT_FLEET_STREAM_MAXLEN,
            1000..=i64::MAX,
            "entries kept in the stream; a watcher further behind than this must resynchronise",
        )?;
        let tls = RedisTlsFiles {
            ca_file: check.optional_file(raw.tls_ca_file),
            cert_file: check.optional_file(raw.tls_cert_file),
            key_file: check.optional_file(raw.tls_key_file),
        };
        redis_tls(redis.as_deref(), &tls, check)?;
        Ok(FleetConfig {
            redis,
            password,
            node,
            lease,
            stream,
            stream_maxlen,
            fence: raw.fence.unwrap_or(DEFAULT_FLEET_FENCE),
            tls,
        })
    }

    pub(super) fn to_raw(&self) -> RawFleet {
        RawFleet {
            redis: Some(self.redis.clone().unwrap_or_default()),
            password_file: Some(match self.password.as_ref().map(|p| &p.source) {
                Some(PasswordSource::File(path)) => path.display().to_string(),
                _ => String::new(),
            }),
            node: Some(self.node.clone()),
            lease: Some(self.lease.into()),
            stream: Some(self.stream.clone()),
            stream_maxlen: Some(RawInt(
                i64::try_from(self.stream_maxlen).unwrap_or(i64::MAX),
            )),
            fence: Some(self.fence),
            tls_ca_file: Some(path_text(&self.tls.ca_file)),
            tls_cert_file: Some(path_text(&self.tls.cert_file)),
            tls_key_file: Some(path_text(&self.tls.key_file)),
        }
    }

    /// Sentences for the start-up warnings.
    pub(super) fn warnings(&self, out: &mut Vec<String>) {
        if let Some(PasswordSource::File(path)) = self.password.as_ref().map(|p| &p.source) {
            out.extend(
                secret::file_mode_warning(path)
                    .map(|w| w.replacen("server.password_file", "fleet.password_file", 1)),
            );
        }
        if self.redis.is_none() && self.password.is_some() {
            out.push(
                "fleet.password_file is set but fleet.redis is empty, so the fleet is off."
                    .to_owned(),
            );
        }
    }
}

/// The first `{...}` of a key with something inside, as Redis Cluster hashes it.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open..].find('}')? + open;
    (close > open + 1).then(|| &key[open..=close])
}

fn path_text(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn redis_url(url: &str, check: &Check<'_>) -> Result<(), ConfigError> {
    let invalid = |m: &str| Err(check.invalid("fleet.redis", m.to_owned()));
    let rest = if let Some(r) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    {
        r
    } else if url.starts_with("unix://") || url.starts_with("redis+unix://") {
        return Ok(());
    } else {
        return invalid(
            "must start with redis://, rediss:// (TLS) or unix://, e.g. \"redis://127.0.0.1:6379/0\"",
        );
    };
    if rest.contains('#') {
        return invalid(
            "carries a #fragment; \"#insecure\" (no certificate check) is not offered: give \
             the CA that signs Redis's certificate in fleet.tls_ca_file instead",
        );
    }
    let authority = rest.split('/').next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return invalid(
                "carries a password: put it in fleet.password_file instead, so it stays out of \
                 logs and CONFIG GET",
            );
        }
    }
    if authority.is_empty() {
        return invalid("names no host, e.g. \"redis://127.0.0.1:6379/0\"");
    }
    Ok(())
}

/// The `fleet.tls_*` files: only with a `rediss://` URL, the certificate and key together, and
/// each readable and checked now (so a start or `--check-config` names a bad file at once).
fn redis_tls(url: Option<&str>, tls: &RedisTlsFiles, check: &Check<'_>) -> Result<(), ConfigError> {
    let set = [
        ("fleet.tls_ca_file", &tls.ca_file),
        ("fleet.tls_cert_file", &tls.cert_file),
        ("fleet.tls_key_file", &tls.key_file),
    ];
    let tls_url = url.is_some_and(|u| u.starts_with("rediss://"));
    if let Some((key, _)) = set.iter().find(|(_, p)| p.is_some()) {
        if !tls_url {
            return Err(check.invalid(
                key,
                "is set but fleet.redis is not a rediss:// URL; the file would not be used",
            ));
        }
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => {
            return Err(check.invalid(
                "fleet.tls_key_file",
                "must be set with fleet.tls_cert_file (the client certificate's private key)",
            ))
        }
        (None, Some(_)) => {
            return Err(check.invalid(
                "fleet.tls_cert_file",
                "must be set with fleet.tls_key_file (the certificate of that key)",
            ))
        }
        _ => {}
    }
    if tls_url {
        credentials::load_redis_tls(tls, SystemTime::now()).map_err(|e| ConfigError::Invalid {
            path: e.path.clone(),
            key: e.key.to_owned(),
            message: e.message.clone(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn off_by_default_checked_when_on_and_round_trips() {
        let p = Path::new("/etc/vigild/t.toml");
        let off = Config::parse("", p).unwrap().config;
        assert_eq!(off.fleet, FleetConfig::default());
        assert!(off.fleet.redis.is_none());
        let on = Config::parse(
            "[fleet]\nredis = \"redis://127.0.0.1:6379/0\"\nnode = \"a\"\nlease = \"2s\"\nfence = true\n",
            p,
        )
        .unwrap()
        .config;
        assert_eq!(on.fleet.redis.as_deref(), Some("redis://127.0.0.1:6379/0"));
        assert_eq!(on.fleet.lease, Duration::from_secs(2));
        assert!(on.fleet.fence);
        assert_eq!(on.fleet.hash_tag(), "{vigild}");
        assert_eq!(Config::parse(&on.to_toml(), p).unwrap().config, on);
        for (text, key) in [
            ("redis = \"http://x\"", "fleet.redis"),
            ("redis = \"redis://u:secret@h:1\"", "fleet.redis"),
            ("redis = \"rediss://h:1/#insecure\"", "fleet.redis"),
            ("tls_ca_file = \"/etc/hosts\"", "fleet.tls_ca_file"),
            ("lease = \"500ms\"", "fleet.lease"),
            ("stream = \"presence\"", "fleet.stream"),
            ("node = \"a b\"", "fleet.node"),
            ("stream_maxlen = 10", "fleet.stream_maxlen"),
            ("password_file = \"/nonexistent/pw\"", "fleet.password_file"),
            ("colour = 1", "colour"),
        ] {
            let e = Config::parse(&format!("[fleet]\n{text}\n"), p)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn hash_tags_are_found_as_redis_cluster_finds_them() {
        assert_eq!(hash_tag("{vigild}:presence"), Some("{vigild}"));
        assert_eq!(hash_tag("a{b}c"), Some("{b}"));
        assert_eq!(hash_tag("{}:x"), None);
        assert_eq!(hash_tag("presence"), None);
    }
}
