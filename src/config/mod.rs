//! The configuration file: what it may contain, its defaults, and the checks that turn it into
//! a [`Config`] the event loop can use without further doubt.
//!
//! Two stages. Stage 1 is a set of `Raw*` serde structs, one per table, every field optional and
//! every table `deny_unknown_fields`, so a typo fails with the key's name, line and column.
//! Stage 2 (`from_raw`) fills in the `DEFAULT_*` constants and checks each value against what
//! the kernel and the daemon can take, producing real types (`SocketAddr`, `Duration`,
//! `LevelFilter`). Combinations that are legal but probably not what the operator meant become
//! warnings, computed from the validated config alone.
//!
//! Invariants of a `Config` that came from [`Config::parse`]: every keepalive duration is whole
//! seconds in 1..=32767 s, [`KeepaliveConfig::effective_user_timeout`] fits the kernel's `int`
//! of milliseconds, and [`Config::to_toml`] parses back to an equal `Config`, except that an
//! inline `server.password` is shown as [`REDACTED`] (a `password_file` is shown as its path).
//!
//! Adding a key: a field in its `Raw*` struct, a field and `DEFAULT_*` constant in the typed
//! struct, one line in its `from_raw` and one in `From<&Config> for RawConfig`, one line in
//! `config/vigild.toml`. Adding a table: the same, plus a field in `RawConfig` and `Config`.
//!
//! Files: this one holds the typed structs, defaults, [`Config::load`]/[`Config::parse`]/
//! [`Config::to_toml`] and the warnings; `raw.rs` stage 1, `validate.rs` stage 2,
//! `toml_error.rs` the one-line parse errors, `endpoints.rs` the `[admin]`/`[metrics]` tables,
//! `timers.rs` what the timers mean (the `--check-config` summary).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::config::duration::format_duration;
use crate::os::small_file;

pub mod credentials;
pub mod duration;
mod endpoints;
mod fleet;
pub mod proxy_protocol;
mod raw;
mod secret;
#[cfg(test)]
mod tests;
pub mod timers;
pub mod tls;
pub mod token;
mod toml_error;
mod validate;

pub use endpoints::{
    Endpoint, OpsListenerConfig, DEFAULT_ADMIN_IDLE_TIMEOUT, DEFAULT_ADMIN_LISTEN,
    DEFAULT_ADMIN_MAX_CONNECTIONS, DEFAULT_ALLOW_REMOTE, DEFAULT_METRICS_IDLE_TIMEOUT,
    DEFAULT_METRICS_LISTEN, DEFAULT_METRICS_MAX_CONNECTIONS, MAX_OPS_LISTENER_CONNECTIONS,
};
pub use fleet::{
    FleetConfig, RedisTlsFiles, DEFAULT_FLEET_FENCE, DEFAULT_FLEET_LEASE, DEFAULT_FLEET_REDIS,
    DEFAULT_FLEET_STREAM, DEFAULT_FLEET_STREAM_MAXLEN,
};
pub use proxy_protocol::{Cidr, ProxyConfig, ProxyMode, DEFAULT_PROXY_HEADER_TIMEOUT};
use raw::RawConfig;
pub use secret::{Password, PasswordSource};
// The keepalive settings are the socket options `os::sockopt` applies; config builds them.
pub use crate::os::sockopt::{KeepaliveConfig, UserTimeout};
use toml_error::describe_toml_error;
use validate::Check;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/vigild/vigild.toml";
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 7379));
pub const DEFAULT_BACKLOG: u32 = 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 0;
pub const DEFAULT_REUSE_PORT: bool = false;
pub const DEFAULT_BUSY_POLL_US: u64 = 0;
/// Longest `server.busy_poll_us` accepted: past a millisecond, polling costs more than any
/// wakeup saves.
pub const MAX_BUSY_POLL_US: u64 = 1_000;
pub const DEFAULT_AUTH_TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));
pub const DEFAULT_AUTH_FAILURES_BEFORE_BACKOFF: u32 = 10;
pub const DEFAULT_AUTH_BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const DEFAULT_KEEPALIVE_ENABLED: bool = true;
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE_PROBES: u32 = 6;
pub const DEFAULT_USER_TIMEOUT: UserTimeout = UserTimeout::Auto;
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Option<Duration> = None;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;
pub const DEFAULT_UNIQUE_NAMES: bool = false;
/// A live holder keeps its name; only a plausibly stale one is replaced (docs/presence.md).
pub const DEFAULT_TAKEOVER: TakeoverPolicy = TakeoverPolicy::Stale;
/// Off: with keepalive on, a holder silent (no data, no ACK) for `keepalive.idle` already has a
/// probe outstanding, which the TCP test sees; a shorter silence would take live idle clients
/// (most Redis connections sit idle between uses) for stale. See docs/presence.md.
pub const DEFAULT_TAKEOVER_AFTER: Option<Duration> = None;
/// More replacements than this of one name within a minute is flapping (two live clients).
pub const DEFAULT_FLAP_THRESHOLD: u32 = 5;
/// A FQDN (253 bytes) fits; Redis-style names are device ids, hostnames, UUIDs.
pub const DEFAULT_MAX_NAME_BYTES: usize = 256;
/// Library names and versions are a few dozen bytes (`redis-py`, `5.0.1`).
pub const DEFAULT_MAX_LIB_BYTES: usize = 128;
/// No limit: with `session.unique_names` an identity holds one name anyway.
pub const DEFAULT_MAX_SESSIONS_PER_IDENTITY: usize = 0;
pub const DEFAULT_STATS_INTERVAL: Option<Duration> = Some(Duration::from_secs(60));
pub const DEFAULT_LOG_LEVEL: LevelFilter = LevelFilter::Info;
pub const DEFAULT_REAP_LINES_PER_SECOND: u64 = 1000;
/// Room for 1000 reap lines a second of the usual 300-400 bytes (so
/// `log.reap_lines_per_second` stays the limit a reset flood meets) plus other client-caused
/// lines; it binds when lines are long (names near their bound) or kinds add up. Sustained, it is
/// 1.8 GB an hour: the bound on what an attacker can write, not a comfortable rate.
pub const DEFAULT_LOG_BYTES_PER_SECOND: u64 = 512 * 1024;
/// The smallest non-zero `log.bytes_per_second`: a few lines' worth.
pub const MIN_LOG_BYTES_PER_SECOND: u64 = 4096;
/// The largest `session.max_name_bytes` and `session.max_lib_bytes`.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Longest config file read; real ones are a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// What `to_toml` (and so `--check-config`) prints instead of an inline password.
pub const REDACTED: &str = "(redacted)";

/// TCP_KEEPIDLE and TCP_KEEPINTVL are whole seconds, at most this many.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// TCP_USER_TIMEOUT is an `int` of milliseconds.
const MAX_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
const MIB: i64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub keepalive: KeepaliveConfig,
    pub session: SessionConfig,
    pub stats: StatsConfig,
    pub log: LogConfig,
    pub admin: OpsListenerConfig,
    pub metrics: OpsListenerConfig,
    /// `[fleet]`: presence shared through Redis (docs/fleet.md); off by default.
    pub fleet: FleetConfig,
    pub tls: tls::TlsConfig,
    pub token: token::TokenConfig,
}

impl Default for Config {
    /// Every key at its default; `[admin]` and `[metrics]` differ in theirs.
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            keepalive: KeepaliveConfig::default(),
            session: SessionConfig::default(),
            stats: StatsConfig::default(),
            log: LogConfig::default(),
            admin: OpsListenerConfig::admin(),
            metrics: OpsListenerConfig::metrics(),
            fleet: FleetConfig::default(),
            tls: tls::TlsConfig::default(),
            token: token::TokenConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub backlog: u32,
    pub max_connections: usize,
    /// 0 = no limit
    pub max_connections_per_ip: usize,
    /// `SO_REUSEPORT` on the client listeners, so several processes can share a port and the
    /// kernel spreads new connections across them.
    pub reuse_port: bool,
    /// After a turn with events, poll without sleeping this long before blocking; zero = off
    /// (see `server/busy_poll.rs`).
    pub busy_poll: Duration,
    /// Clients must `AUTH` with it first; None = no password ("" in the file).
    pub password: Option<Password>,
    /// With a password: a session not authenticated this long after connecting is reaped
    /// (`auth-timeout`). None = off ("0s").
    pub auth_timeout: Option<Duration>,
    /// Wrong passwords from one address (IPv6: one /64) before it is locked out; 0 = no
    /// per-address limit (see `auth_throttle.rs`).
    pub auth_failures_before_backoff: u32,
    /// The longest lockout; lockouts start at 1 s and double up to it.
    pub auth_backoff_max: Duration,
    /// `proxy_protocol`, `proxy_trusted`, `proxy_header_timeout` (src/config/proxy_protocol.rs).
    pub proxy: ProxyConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Reap after this long with nothing received, or with a request unfinished this long.
    /// None = off ("0s")
    pub idle_timeout: Option<Duration>,
    pub max_request_bytes: usize,
    pub max_output_bytes: usize,
    /// `CLIENT SETNAME x` reaps the older session holding `x` (reason `replaced`) or, with
    /// `takeover = "stale"`, refuses the name while that session is live.
    pub unique_names: bool,
    /// Which holder of a name a newcomer's `CLIENT SETNAME` may replace (src/session/takeover.rs).
    pub takeover: TakeoverPolicy,
    /// With `takeover = "stale"`: a holder silent (nothing received, no ACK) this long is
    /// stale. None = off ("0s"): only its TCP state counts.
    pub takeover_after: Option<Duration>,
    /// A name replaced more than this many times in a minute is logged as flapping; 0 = off.
    pub flap_threshold: u32,
    /// Longest client name (`CLIENT SETNAME`, `HELLO ... SETNAME`); longer is refused.
    pub max_name_bytes: usize,
    /// Longest `CLIENT SETINFO LIB-NAME` or `LIB-VER` value; longer is refused.
    pub max_lib_bytes: usize,
    /// Sessions one identity (certificate or token) may hold at once; past it the newest is
    /// refused (`identity-limit`). 0 = no limit.
    pub max_sessions_per_identity: usize,
}

/// `session.takeover`: whom a newcomer's `CLIENT SETNAME` of a held name may replace, with
/// `session.unique_names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverPolicy {
    /// Only a holder that is plausibly stale (its TCP state in trouble, or silent past
    /// `session.takeover_after`); a live holder keeps the name and the newcomer is refused.
    Stale,
    /// Always the newcomer (before issue 12): two live clients sharing a name evict each other.
    Newest,
}

impl TakeoverPolicy {
    /// The value as the config file spells it.
    pub const fn name(self) -> &'static str {
        match self {
            TakeoverPolicy::Stale => "stale",
            TakeoverPolicy::Newest => "newest",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    /// None = only on demand ("0s")
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: LevelFilter,
    /// Reap lines written per second before the rest are only counted; 0 = no limit.
    pub reap_lines_per_second: u64,
    /// Bytes a second of every line a client can cause (reaps, renames, takeovers, failed
    /// passwords, connects) together, before the rest are only counted; 0 = no limit.
    pub bytes_per_second: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![DEFAULT_LISTEN],
            backlog: DEFAULT_BACKLOG,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            reuse_port: DEFAULT_REUSE_PORT,
            busy_poll: Duration::from_micros(DEFAULT_BUSY_POLL_US),
            password: None,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            auth_failures_before_backoff: DEFAULT_AUTH_FAILURES_BEFORE_BACKOFF,
            auth_backoff_max: DEFAULT_AUTH_BACKOFF_MAX,
            proxy: ProxyConfig::default(),
        }
    }
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            enabled: DEFAULT_KEEPALIVE_ENABLED,
            idle: DEFAULT_KEEPALIVE_IDLE,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            probes: DEFAULT_KEEPALIVE_PROBES,
            user_timeout: DEFAULT_USER_TIMEOUT,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            unique_names: DEFAULT_UNIQUE_NAMES,
            takeover: DEFAULT_TAKEOVER,
            takeover_after: DEFAULT_TAKEOVER_AFTER,
            flap_threshold: DEFAULT_FLAP_THRESHOLD,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_lib_bytes: DEFAULT_MAX_LIB_BYTES,
            max_sessions_per_identity: DEFAULT_MAX_SESSIONS_PER_IDENTITY,
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            interval: DEFAULT_STATS_INTERVAL,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: DEFAULT_LOG_LEVEL,
            reap_lines_per_second: DEFAULT_REAP_LINES_PER_SECOND,
            bytes_per_second: DEFAULT_LOG_BYTES_PER_SECOND,
        }
    }
}

/// A config that passed every check, and what looked suspicious in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// Full sentences, meant to be logged at warn level; the config is usable regardless.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Parse {
        path: PathBuf,
        message: String,
    },
    /// The path is not a regular file, or the file changed while it was read.
    File {
        path: PathBuf,
        message: String,
    },
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            ConfigError::Parse { path, message } | ConfigError::File { path, message } => {
                write!(f, "{}: {message}", path.display())
            }
            ConfigError::Invalid { path, key, message } => {
                write!(f, "{}: {key}: {message}", path.display())
            }
        }
    }
}

// `source()` stays `None`: the I/O error is already part of the one-line `Display`, and a
// reporter walking the chain would print it twice.
impl std::error::Error for ConfigError {}

impl Config {
    /// Whether sessions must authenticate (a password, or signed tokens) before commands run.
    pub fn auth_required(&self) -> bool {
        self.server.password.is_some() || self.token.enabled()
    }

    /// Reads and checks the file at `path`. It must be a regular file (opened non-blocking and
    /// checked with `fstat`, so a FIFO or device cannot block a reload), at most 1 MiB, and
    /// unchanged while it was read (see `small_file.rs`).
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        // Capped, so `--config /dev/zero` (or a log file given by mistake) is an error, not
        // an unbounded allocation.
        let bytes = small_file::read_regular(path, MAX_CONFIG_BYTES).map_err(|e| match e {
            small_file::ReadError::Io(source) => ConfigError::Read {
                path: path.to_owned(),
                source,
            },
            small_file::ReadError::TooLarge => ConfigError::Parse {
                path: path.to_owned(),
                message: format!(
                    "is larger than {} KiB; is this the config file?",
                    MAX_CONFIG_BYTES / 1024
                ),
            },
            small_file::ReadError::NotRegular(_) => ConfigError::File {
                path: path.to_owned(),
                message: format!("cannot read: {e}; the config must be a regular file"),
            },
            small_file::ReadError::Changed(_) => ConfigError::File {
                path: path.to_owned(),
                message: e.to_string(),
            },
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            let byte = e.as_bytes().get(valid.len()).copied().unwrap_or(0);
            ConfigError::Parse {
                path: path.to_owned(),
                message: format!(
                    "line {line}, column {column}: byte 0x{byte:02x} is not UTF-8; the file must \
                     be UTF-8 text"
                ),
            }
        })?;
        Config::parse(&text, path)
    }

    /// `path` only labels the errors; nothing is read from it.
    pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &err),
        })?;
        let check = Check { path };
        let server = ServerConfig::from_raw(raw.server, &check)?;
        let (admin, metrics) = endpoints::from_raw(raw.admin, raw.metrics, &server, &check)?;
        let tls = tls::TlsConfig::from_raw(raw.tls, &server.listen, &check)?;
        let token = token::TokenConfig::from_raw(raw.token, &check)?;
        let config = Config {
            tls,
            token,
            server,
            keepalive: KeepaliveConfig::from_raw(raw.keepalive, &check)?,
            session: SessionConfig::from_raw(raw.session, &check)?,
            stats: StatsConfig::from_raw(raw.stats, &check)?,
            log: LogConfig::from_raw(raw.log, &check)?,
            admin,
            metrics,
            fleet: FleetConfig::from_raw(raw.fleet, &check)?,
        };
        let warnings = config.warnings();
        Ok(Loaded { config, warnings })
    }

    /// The effective config as TOML in the same shape as the file, every key present,
    /// durations formatted; parsing it back gives an equal Config.
    pub fn to_toml(&self) -> String {
        // Rendering the stage-1 structs keeps the output's shape identical to what is accepted.
        toml::to_string(&RawConfig::from(self))
            .unwrap_or_else(|err| format!("# cannot render the config: {err}\n"))
    }

    /// The effective config as `(dotted key, value)` pairs in file order, rendered from the
    /// same TOML as [`Config::to_toml`], so every key is here, keys added later included (an
    /// inline password shows as [`REDACTED`]). For `CONFIG GET` and the reload's list of what
    /// changed.
    pub fn dotted(&self) -> Vec<(String, toml::Value)> {
        fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(t) => flatten(&key, t, out),
                    v => out.push((key, v.clone())),
                }
            }
        }
        let table: toml::Table = toml::from_str(&self.to_toml()).unwrap_or_default();
        let mut out = Vec::new();
        flatten("", &table, &mut out);
        out
    }

    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        endpoints::warnings(&self.admin, &mut out);
        self.fleet.warnings(&mut out);
        let server = &self.server;
        if server.max_connections_per_ip > server.max_connections {
            out.push(format!(
                "server.max_connections_per_ip = {} is above server.max_connections = {}, so it \
                 never applies; lower it, or set 0 for no per-address limit.",
                server.max_connections_per_ip, server.max_connections
            ));
        }
        if let Some(PasswordSource::File(path)) = server.password.as_ref().map(|p| &p.source) {
            out.extend(secret::file_mode_warning(path));
        }
        if server.password.is_some() && server.auth_timeout.is_none() {
            out.push(
                "server.auth_timeout = \"0s\" (off) with a password set: connections that never \
                 authenticate keep their slot until they close, so they can fill \
                 server.max_connections; set a few seconds, such as \"5s\"."
                    .to_owned(),
            );
        }
        if server.password.is_some() && server.auth_failures_before_backoff == 0 {
            out.push(
                "server.auth_failures_before_backoff = 0: failed passwords are not limited per \
                 address, only to 3 per connection, so one address can guess as fast as it can \
                 reconnect; set a limit, such as 10."
                    .to_owned(),
            );
        }
        let ka = &self.keepalive;
        let bound = ka.detection_bound();
        let bound_sum = format!(
            "keepalive.idle + keepalive.interval × keepalive.probes = {} + {} × {} = {}",
            format_duration(ka.idle),
            format_duration(ka.interval),
            ka.probes,
            format_duration(bound)
        );
        let idle_timeout = self.session.idle_timeout;
        match (ka.enabled, ka.user_timeout) {
            (true, UserTimeout::Fixed(ut)) if ut < bound => out.push(format!(
                "keepalive.user_timeout = {} is below {bound_sum}: once set, TCP_USER_TIMEOUT \
                 overrides TCP_KEEPCNT, so the kernel gives up at the first probe past {} and \
                 keepalive is cut short of {} probes; use \"auto\" or at least {}.",
                format_duration(ut),
                format_duration(ut),
                ka.probes,
                format_duration(bound)
            )),
            (true, UserTimeout::Fixed(ut)) if ut > bound => out.push(format!(
                "keepalive.user_timeout = {} is above {bound_sum}: TCP_USER_TIMEOUT overrides \
                 TCP_KEEPCNT, so the kernel keeps probing and finds an idle dead peer after {}, \
                 not {}; use \"auto\" to keep the keepalive bound.",
                format_duration(ut),
                format_duration(ut),
                format_duration(bound)
            )),
            (false, UserTimeout::Fixed(ut)) => out.push(format!(
                "keepalive.enabled = false with keepalive.user_timeout = {}: the user timeout \
                 still applies to data in flight (unacknowledged sends are abandoned after {}), \
                 but it does not detect dead peers of idle sessions.",
                format_duration(ut),
                format_duration(ut)
            )),
            _ => {}
        }
        if !ka.enabled {
            out.push(match idle_timeout {
                Some(t) => format!(
                    "keepalive.enabled = false: silent dead peers are found only by \
                     session.idle_timeout = {}; set keepalive.enabled = true to find them \
                     without reaping live but quiet clients.",
                    format_duration(t)
                ),
                None => "keepalive.enabled = false and session.idle_timeout = \"0s\" (off): \
                         silent dead peers are never found and their sessions stay forever; \
                         set keepalive.enabled = true or a session.idle_timeout."
                    .to_owned(),
            });
        } else if let Some(t) = idle_timeout.filter(|t| *t < bound) {
            out.push(format!(
                "session.idle_timeout = {} is shorter than the keepalive detection bound \
                 ({bound_sum}): for silent clients the application idle timeout, not keepalive, \
                 decides (reason idle-timeout); raise session.idle_timeout above {} if live \
                 clients may stay silent that long.",
                format_duration(t),
                format_duration(bound)
            ));
        }
        out
    }
}
