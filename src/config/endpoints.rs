//! The operator listeners' config: `[admin]` (RESP commands that list and kill sessions) and
//! `[metrics]` (Prometheus over HTTP). Both are off unless `listen` is set.
//!
//! Neither listener has authentication, so both are safe by default: `listen` must be a
//! loopback address or a unix socket path (created with mode 0600) unless `allow_remote = true`
//! says that exposing it is on purpose. Anything else is a config error, so vigild refuses to
//! start (and a reload is refused) rather than open the port.
//!
//! Each listener has its own connection cap and idle timeout (`max_connections`,
//! `idle_timeout`), so idle metrics connections cannot lock out the admin listener, nor the
//! other way round. Their defaults differ by table (a subscriber on the admin listener is idle
//! by nature, a scraper reconnects), hence [`OpsListenerConfig::admin`] and
//! [`OpsListenerConfig::metrics`] rather than one `Default`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::RawInt;
use super::{Check, ConfigError, ServerConfig};
use crate::config::duration::DurationValue;

pub const DEFAULT_ADMIN_LISTEN: Option<Endpoint> = None;
pub const DEFAULT_METRICS_LISTEN: Option<Endpoint> = None;
pub const DEFAULT_ALLOW_REMOTE: bool = false;
/// `[admin]`: the longest channel name or pattern a connection may subscribe to. Redis has
/// no bound; a few hundred bytes is far more than any real name ("presence" is 8).
pub const DEFAULT_MAX_CHANNEL_BYTES: usize = 256;
/// `[admin]`: the total bytes of one connection's channel names and patterns.
pub const DEFAULT_MAX_SUBSCRIPTION_BYTES: usize = 64 * 1024;
/// Admin connections held at once. Each may hold a `CLIENT LIST` in progress (a snapshot of
/// at most 80 bytes per session plus one 64 KiB output window), so this bounds what all admin
/// connections together can take: 128 × (80 B × 10,000 sessions + 80 KiB) ≈ 108 MiB, where
/// one reply buffer each would be 128 × 3.9 MB ≈ 500 MB.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 128;
/// Metrics connections held at once; a scraper needs one. Each holds at most one response
/// (about 40 KiB) above its 64 KiB output window.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 256;
/// Admin connections quiet this long are closed (`0s` = never). Subscribed connections are
/// exempt, as Redis's `timeout` spares pub/sub clients; `redis-cli` reconnects by itself.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(300));
/// Metrics connections quiet this long are closed; longer than common scrape intervals, so
/// Prometheus keeps its connection.
pub const DEFAULT_METRICS_IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(120));
/// Both caps together must fit the operator side's token range.
pub const MAX_OPS_LISTENER_CONNECTIONS: usize = 16_000;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_UNIX_PATH_BYTES: usize = 107;

/// Where an operator listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(SocketAddr),
    /// An absolute path; the socket file is created with mode 0600.
    Unix(PathBuf),
}

impl Endpoint {
    /// Whether only this host can connect: a loopback address or a unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            Endpoint::Tcp(addr) => addr.ip().to_canonical().is_loopback(),
            Endpoint::Unix(_) => true,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One operator listener: `[admin]` or `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsListenerConfig {
    /// `None` = off.
    pub listen: Option<Endpoint>,
    /// A non-loopback `listen` is refused unless this is set.
    pub allow_remote: bool,
    /// `[admin]` only (refused in `[metrics]`): the longest channel name or pattern.
    pub max_channel_bytes: usize,
    /// `[admin]` only: the total bytes of one connection's channel names and patterns.
    pub max_subscription_bytes: usize,
    /// Connections of this listener held at once; more are told so and closed.
    pub max_connections: usize,
    /// `None` = connections are never closed for being quiet.
    pub idle_timeout: Option<Duration>,
}

impl OpsListenerConfig {
    /// `[admin]` with every key at its default (off).
    pub fn admin() -> Self {
        OpsListenerConfig {
            listen: DEFAULT_ADMIN_LISTEN,
            allow_remote: DEFAULT_ALLOW_REMOTE,
            max_channel_bytes: DEFAULT_MAX_CHANNEL_BYTES,
            max_subscription_bytes: DEFAULT_MAX_SUBSCRIPTION_BYTES,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_ADMIN_IDLE_TIMEOUT,
        }
    }

    /// `[metrics]` with every key at its default (off).
    pub fn metrics() -> Self {
        OpsListenerConfig {
            listen: DEFAULT_METRICS_LISTEN,
            allow_remote: DEFAULT_ALLOW_REMOTE,
            max_connections: DEFAULT_METRICS_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_METRICS_IDLE_TIMEOUT,
            max_channel_bytes: DEFAULT_MAX_CHANNEL_BYTES,
            max_subscription_bytes: DEFAULT_MAX_SUBSCRIPTION_BYTES,
        }
    }
}

/// What each table's listener exposes, for the error that refuses a remote address.
fn exposure(table: &str) -> &'static str {
    if table == "admin" {
        "the admin listener lists and kills every session and has no authentication"
    } else {
        "the metrics listener has no authentication"
    }
}

impl OpsListenerConfig {
    /// Stage 2 for `[admin]` or `[metrics]` (`table` names it in errors).
    fn from_raw(table: &str, raw: RawOpsListener, check: &Check<'_>) -> Result<Self, ConfigError> {
        let defaults = if table == "admin" {
            OpsListenerConfig::admin()
        } else {
            OpsListenerConfig::metrics()
        };
        let RawOpsListener {
            listen,
            allow_remote,
            max_connections,
            idle_timeout,
            max_channel_bytes,
            max_subscription_bytes,
        } = raw;
        let allow_remote = allow_remote.unwrap_or(DEFAULT_ALLOW_REMOTE);
        let max_connections = check.int(
            &format!("{table}.max_connections"),
            max_connections,
            defaults.max_connections,
            1..=MAX_OPS_LISTENER_CONNECTIONS as i64,
            "each operator listener can hold 1 to 16000 connections",
        )?;
        let idle_timeout = check.optional_timer(
            &format!("{table}.idle_timeout"),
            idle_timeout,
            defaults.idle_timeout,
            "no idle timeout",
        )?;
        if table != "admin" {
            for (name, set) in [
                ("max_channel_bytes", max_channel_bytes.is_some()),
                ("max_subscription_bytes", max_subscription_bytes.is_some()),
            ] {
                if set {
                    return Err(check.invalid(
                        &format!("{table}.{name}"),
                        format!(
                            "bounds pub/sub subscriptions, which only the admin listener has: \
                             set admin.{name} instead"
                        ),
                    ));
                }
            }
        }
        let max_channel_bytes = check.int(
            &format!("{table}.max_channel_bytes"),
            max_channel_bytes,
            DEFAULT_MAX_CHANNEL_BYTES,
            8..=65_536,
            "8 bytes (\"presence\") to 64 KiB",
        )?;
        let max_subscription_bytes = check.int(
            &format!("{table}.max_subscription_bytes"),
            max_subscription_bytes,
            DEFAULT_MAX_SUBSCRIPTION_BYTES,
            8..=16 * 1024 * 1024,
            "8 bytes to 16 MiB per connection",
        )?;
        let key = format!("{table}.listen");
        let Some(text) = listen else {
            return Ok(OpsListenerConfig {
                allow_remote,
                max_connections,
                idle_timeout,
                max_channel_bytes,
                max_subscription_bytes,
                ..defaults
            });
        };
        let endpoint = parse_endpoint(&key, text.trim(), check)?;
        if !endpoint.is_local() && !allow_remote {
            return Err(check.invalid(
                &key,
                format!(
                    "{endpoint} is not a loopback address and {}: listen on 127.0.0.1 or \
                     [::1], or on a unix socket path, or set {table}.allow_remote = true to \
                     expose it on purpose (and firewall it)",
                    exposure(table)
                ),
            ));
        }
        Ok(OpsListenerConfig {
            listen: Some(endpoint),
            allow_remote,
            max_connections,
            idle_timeout,
            max_channel_bytes,
            max_subscription_bytes,
        })
    }

    fn to_raw(&self) -> RawOpsListener {
        // The subscription bounds only when not the default: `[metrics]` refuses them, and
        // there they are always the default.
        let unless_default =
            |v: usize, d: usize| (v != d).then_some(RawInt(i64::try_from(v).unwrap_or(i64::MAX)));
        RawOpsListener {
            listen: self.listen.as_ref().map(|e| e.to_string()),
            allow_remote: Some(self.allow_remote),
            max_connections: Some(RawInt(self.max_connections as i64)),
            idle_timeout: Some(DurationValue::from(
                self.idle_timeout.unwrap_or(Duration::ZERO),
            )),
            max_channel_bytes: unless_default(self.max_channel_bytes, DEFAULT_MAX_CHANNEL_BYTES),
            max_subscription_bytes: unless_default(
                self.max_subscription_bytes,
                DEFAULT_MAX_SUBSCRIPTION_BYTES,
            ),
        }
    }
}

fn parse_endpoint(key: &str, text: &str, check: &Check<'_>) -> Result<Endpoint, ConfigError> {
    if text.is_empty() {
        return Err(check.invalid(
            key,
            "is empty; remove the key to turn the listener off, or give \"127.0.0.1:PORT\" or \
             an absolute unix socket path",
        ));
    }
    if text.starts_with('/') {
        if text.ends_with('/') {
            return Err(check.invalid(
                key,
                format!(
                    "{text:?} is a directory; name the socket file, such as \"{text}admin.sock\""
                ),
            ));
        }
        if text.len() > MAX_UNIX_PATH_BYTES {
            return Err(check.invalid(
                key,
                format!(
                    "the path is {} bytes; a unix socket path can have at most \
                     {MAX_UNIX_PATH_BYTES}: use a shorter one",
                    text.len()
                ),
            ));
        }
        return Ok(Endpoint::Unix(PathBuf::from(text)));
    }
    if text.contains('/') {
        return Err(check.invalid(
            key,
            format!(
                "{text:?} is a relative path; a unix socket path must be absolute, such as \
                 \"/run/vigild/admin.sock\""
            ),
        ));
    }
    text.parse().map(Endpoint::Tcp).map_err(|_| {
        check.invalid(
            key,
            format!(
                "{text:?} is neither ip:port nor an absolute unix socket path; write \
                 \"127.0.0.1:7380\", \"[::1]:7380\" or \"/run/vigild/admin.sock\" (host names \
                 are not resolved)"
            ),
        )
    })
}

/// Both tables, checked together and against `[server]`: one address cannot serve two
/// listeners. Port 0 (any free port) never collides.
pub(super) fn from_raw(
    admin: RawOpsListener,
    metrics: RawOpsListener,
    server: &ServerConfig,
    check: &Check<'_>,
) -> Result<(OpsListenerConfig, OpsListenerConfig), ConfigError> {
    let admin = OpsListenerConfig::from_raw("admin", admin, check)?;
    let metrics = OpsListenerConfig::from_raw("metrics", metrics, check)?;
    let fixed = |e: &Option<Endpoint>| match e {
        Some(Endpoint::Tcp(a)) if a.port() == 0 => None,
        other => other.clone(),
    };
    for (table, endpoint) in [
        ("admin", fixed(&admin.listen)),
        ("metrics", fixed(&metrics.listen)),
    ] {
        let Some(endpoint) = endpoint else { continue };
        if let Some(i) = server
            .listen
            .iter()
            .position(|a| Endpoint::Tcp(*a) == endpoint)
        {
            return Err(check.invalid(
                &format!("{table}.listen"),
                format!("{endpoint} is also server.listen[{i}]; give each listener its own port"),
            ));
        }
    }
    if let (Some(a), Some(m)) = (fixed(&admin.listen), fixed(&metrics.listen)) {
        if a == m {
            return Err(check.invalid(
                "metrics.listen",
                format!("{m} is also admin.listen; give each listener its own address"),
            ));
        }
    }
    Ok((admin, metrics))
}

/// Warnings about a valid config: an exposed admin listener.
pub(super) fn warnings(admin: &OpsListenerConfig, out: &mut Vec<String>) {
    if let Some(endpoint) = admin.listen.as_ref().filter(|e| !e.is_local()) {
        out.push(format!(
            "admin.listen = {endpoint} with admin.allow_remote = true: anyone who can reach \
             it can list and kill every session; keep it behind a firewall."
        ));
    }
}

/// Stage 1 of `[admin]` and `[metrics]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "an [admin] or [metrics] table")]
pub(super) struct RawOpsListener {
    listen: Option<String>,
    allow_remote: Option<bool>,
    max_connections: Option<RawInt>,
    idle_timeout: Option<DurationValue>,
    /// `[admin]` only.
    max_channel_bytes: Option<RawInt>,
    /// `[admin]` only.
    max_subscription_bytes: Option<RawInt>,
}

/// Stage 1 from a validated config, for `Config::to_toml`.
pub(super) fn to_raw(c: &OpsListenerConfig) -> RawOpsListener {
    c.to_raw()
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, Loaded};
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    fn invalid(text: &str, key: &str, needle: &str) {
        match parse(text) {
            Err(ConfigError::Invalid {
                key: got, message, ..
            }) => {
                assert_eq!(got, key, "{text:?}: {message}");
                assert!(
                    message.contains(needle),
                    "{text:?}: {message:?} lacks {needle:?}"
                );
            }
            other => panic!("{text:?}: expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn off_by_default_and_loopback_or_unix_accepted() {
        let c = parse("").unwrap().config;
        assert_eq!(c.admin.listen, None);
        assert_eq!(c.metrics.listen, None);
        let c =
            parse("[admin]\nlisten = \"127.0.0.1:7380\"\n[metrics]\nlisten = \" [::1]:9479 \"\n")
                .unwrap()
                .config;
        assert_eq!(
            c.admin.listen,
            Some(Endpoint::Tcp("127.0.0.1:7380".parse().unwrap()))
        );
        assert_eq!(
            c.metrics.listen,
            Some(Endpoint::Tcp("[::1]:9479".parse().unwrap()))
        );
        let c = parse("[admin]\nlisten = \"/run/vigild/admin.sock\"\n")
            .unwrap()
            .config;
        assert_eq!(
            c.admin.listen,
            Some(Endpoint::Unix("/run/vigild/admin.sock".into()))
        );
        let l = parse("[admin]\nlisten = \"127.0.0.2:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"")
            .unwrap();
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn subscription_bounds_are_admin_keys_with_ranges() {
        let c = parse("").unwrap().config;
        assert_eq!(c.admin.max_channel_bytes, DEFAULT_MAX_CHANNEL_BYTES);
        assert_eq!(c.admin.max_subscription_bytes, 65_536);
        let c = parse("[admin]\nmax_channel_bytes = 1024\nmax_subscription_bytes = 8192\n")
            .unwrap()
            .config;
        assert_eq!(
            (c.admin.max_channel_bytes, c.admin.max_subscription_bytes),
            (1024, 8192)
        );
        let back = parse(&c.to_toml()).unwrap().config;
        assert_eq!(back, c, "to_toml keeps them");
        invalid(
            "[admin]\nmax_channel_bytes = 7",
            "admin.max_channel_bytes",
            "8 bytes (\"presence\") to 64 KiB",
        );
        invalid(
            "[admin]\nmax_subscription_bytes = 17000000",
            "admin.max_subscription_bytes",
            "out of range",
        );
        invalid(
            "[metrics]\nmax_channel_bytes = 256",
            "metrics.max_channel_bytes",
            "set admin.max_channel_bytes instead",
        );
        invalid(
            "[metrics]\nmax_subscription_bytes = 256",
            "metrics.max_subscription_bytes",
            "only the admin listener",
        );
    }

    #[test]
    fn remote_addresses_need_allow_remote() {
        for (table, addr) in [
            ("admin", "0.0.0.0:7380"),
            ("metrics", "[::]:9479"),
            ("admin", "10.1.2.3:1"),
        ] {
            invalid(
                &format!("[{table}]\nlisten = \"{addr}\""),
                &format!("{table}.listen"),
                &format!("set {table}.allow_remote = true"),
            );
        }
        invalid(
            "[admin]\nlisten = \"0.0.0.0:7380\"",
            "admin.listen",
            "lists and kills every session",
        );
        let l = parse("[admin]\nlisten = \"0.0.0.0:7380\"\nallow_remote = true").unwrap();
        assert_eq!(
            l.config.admin.listen,
            Some(Endpoint::Tcp("0.0.0.0:7380".parse().unwrap()))
        );
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].contains("firewall"), "{:?}", l.warnings);
        let l = parse("[metrics]\nlisten = \"0.0.0.0:9479\"\nallow_remote = true").unwrap();
        assert!(
            l.warnings.is_empty(),
            "an exposed metrics port is common: no warning"
        );
        // IPv4-mapped loopback is loopback.
        assert!(parse("[admin]\nlisten = \"[::ffff:127.0.0.1]:7380\"").is_ok());
    }

    #[test]
    fn bad_endpoints_name_the_key() {
        invalid("[admin]\nlisten = \"\"", "admin.listen", "remove the key");
        invalid(
            "[admin]\nlisten = \"localhost:7380\"",
            "admin.listen",
            "host names are not resolved",
        );
        invalid(
            "[metrics]\nlisten = \"run/m.sock\"",
            "metrics.listen",
            "must be absolute",
        );
        invalid(
            "[admin]\nlisten = \"/run/vigild/\"",
            "admin.listen",
            "is a directory",
        );
        let long = format!("[admin]\nlisten = \"/{}\"", "x".repeat(120));
        invalid(&long, "admin.listen", "at most 107");
        invalid(
            "[server]\nlisten = [\"127.0.0.1:7379\"]\n[admin]\nlisten = \"127.0.0.1:7379\"",
            "admin.listen",
            "also server.listen[0]",
        );
        invalid(
            "[admin]\nlisten = \"127.0.0.1:7380\"\n[metrics]\nlisten = \"127.0.0.1:7380\"",
            "metrics.listen",
            "also admin.listen",
        );
        let unknown = parse("[admin]\nport = 5").unwrap_err().to_string();
        assert!(unknown.contains("admin.port: unknown field"), "{unknown}");
        let wrong = parse("[metrics]\nallow_remote = \"yes\"")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("metrics.allow_remote"), "{wrong}");
    }

    #[test]
    fn caps_and_idle_timeouts_are_per_table() {
        let c = parse("").unwrap().config;
        assert_eq!(
            (c.admin.max_connections, c.admin.idle_timeout),
            (DEFAULT_ADMIN_MAX_CONNECTIONS, DEFAULT_ADMIN_IDLE_TIMEOUT)
        );
        assert_eq!(
            (c.metrics.max_connections, c.metrics.idle_timeout),
            (
                DEFAULT_METRICS_MAX_CONNECTIONS,
                DEFAULT_METRICS_IDLE_TIMEOUT
            )
        );
        let c = parse(
            "[admin]\nmax_connections = 4\nidle_timeout = \"0s\"\n\
             [metrics]\nmax_connections = 16000\nidle_timeout = \"3s\"",
        )
        .unwrap()
        .config;
        assert_eq!((c.admin.max_connections, c.admin.idle_timeout), (4, None));
        assert_eq!(
            (c.metrics.max_connections, c.metrics.idle_timeout),
            (16_000, Some(Duration::from_secs(3)))
        );
        assert_eq!(parse(&c.to_toml()).unwrap().config, c, "round trip");
        invalid(
            "[admin]\nmax_connections = 0",
            "admin.max_connections",
            "use 1 to 16000",
        );
        invalid(
            "[metrics]\nmax_connections = 16001",
            "metrics.max_connections",
            "use 1 to 16000",
        );
        invalid(
            "[metrics]\nidle_timeout = \"200ms\"",
            "metrics.idle_timeout",
            "\"0s\" for no idle timeout",
        );
    }

    #[test]
    fn round_trips_through_to_toml() {
        let c = parse(
            "[admin]\nlisten = \"/tmp/a.sock\"\n[metrics]\nlisten = \"0.0.0.0:9479\"\nallow_remote = true",
        )
        .unwrap()
        .config;
        let text = c.to_toml();
        assert!(
            text.contains("[admin]") && text.contains("listen = \"/tmp/a.sock\""),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap().config, c);
    }
}
