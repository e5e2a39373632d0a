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

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::auth::{self, Password, PasswordSource};
use crate::duration::{format_duration, DurationValue, ACCEPTED_FORMS};

mod endpoints;
pub use endpoints::{
    Endpoint, OpsListenerConfig, DEFAULT_ADMIN_LISTEN, DEFAULT_ALLOW_REMOTE, DEFAULT_METRICS_LISTEN,
};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/vigild/vigild.toml";
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 7379));
pub const DEFAULT_BACKLOG: u32 = 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 0;
pub const DEFAULT_REUSE_PORT: bool = false;
pub const DEFAULT_KEEPALIVE_ENABLED: bool = true;
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE_PROBES: u32 = 6;
pub const DEFAULT_USER_TIMEOUT: UserTimeout = UserTimeout::Auto;
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Option<Duration> = None;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;
pub const DEFAULT_UNIQUE_NAMES: bool = false;
pub const DEFAULT_STATS_INTERVAL: Option<Duration> = Some(Duration::from_secs(60));
pub const DEFAULT_LOG_LEVEL: LevelFilter = LevelFilter::Info;
pub const DEFAULT_REAP_LINES_PER_SECOND: u64 = 1000;
/// Longest config file read; real ones are a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// What `to_toml` (and so `--check-config`) prints instead of an inline password.
pub const REDACTED: &str = "(redacted)";

/// TCP_KEEPIDLE and TCP_KEEPINTVL are whole seconds, at most this many.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// TCP_USER_TIMEOUT is an `int` of milliseconds.
const MAX_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
const MIB: i64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub keepalive: KeepaliveConfig,
    pub session: SessionConfig,
    pub stats: StatsConfig,
    pub log: LogConfig,
    pub admin: OpsListenerConfig,
    pub metrics: OpsListenerConfig,
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
    /// Clients must `AUTH` with it first; None = no password ("" in the file).
    pub password: Option<Password>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    pub enabled: bool,
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
    pub user_timeout: UserTimeout,
}

/// What to set as TCP_USER_TIMEOUT; see [`KeepaliveConfig::effective_user_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserTimeout {
    /// idle + interval × probes, so the bound the operator asked for is the one enforced.
    Auto,
    /// Not set: data in flight is retried for the kernel's tcp_retries2 (about 15 minutes).
    Off,
    Fixed(Duration),
}

impl KeepaliveConfig {
    /// idle + interval * probes: when an idle dead peer is detected
    pub fn detection_bound(&self) -> Duration {
        // Saturating: fields are public, and a hand-built config must not panic here.
        self.idle
            .saturating_add(self.interval.saturating_mul(self.probes))
    }

    /// The TCP_USER_TIMEOUT to set: Auto -> Some(detection_bound) when enabled, None when
    /// keepalive is disabled; Off -> None; Fixed(d) -> Some(d)
    pub fn effective_user_timeout(&self) -> Option<Duration> {
        match self.user_timeout {
            UserTimeout::Auto if self.enabled => Some(self.detection_bound()),
            UserTimeout::Auto | UserTimeout::Off => None,
            UserTimeout::Fixed(d) => Some(d),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Reap after this long with nothing received, or with a request unfinished this long.
    /// None = off ("0s")
    pub idle_timeout: Option<Duration>,
    pub max_request_bytes: usize,
    pub max_output_bytes: usize,
    /// `CLIENT SETNAME x` reaps the older session holding `x` (reason `replaced`).
    pub unique_names: bool,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![DEFAULT_LISTEN],
            backlog: DEFAULT_BACKLOG,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            reuse_port: DEFAULT_REUSE_PORT,
            password: None,
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
            ConfigError::Parse { path, message } => write!(f, "{}: {message}", path.display()),
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
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        // Capped, so `--config /dev/zero` (or a log file given by mistake) is an error, not
        // an unbounded allocation.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1),
            &mut bytes,
        )
        .map_err(read_error)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: format!(
                    "is larger than {} KiB; is this the config file?",
                    MAX_CONFIG_BYTES / 1024
                ),
            });
        }
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
        let config = Config {
            server,
            keepalive: KeepaliveConfig::from_raw(raw.keepalive, &check)?,
            session: SessionConfig::from_raw(raw.session, &check)?,
            stats: StatsConfig::from_raw(raw.stats, &check)?,
            log: LogConfig::from_raw(raw.log, &check)?,
            admin,
            metrics,
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

    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        endpoints::warnings(&self.admin, &mut out);
        let server = &self.server;
        if server.max_connections_per_ip > server.max_connections {
            out.push(format!(
                "server.max_connections_per_ip = {} is above server.max_connections = {}, so it \
                 never applies; lower it, or set 0 for no per-address limit.",
                server.max_connections_per_ip, server.max_connections
            ));
        }
        if let Some(PasswordSource::File(path)) = server.password.as_ref().map(|p| &p.source) {
            out.extend(auth::file_mode_warning(path));
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

// ---- Stage 2: raw values to checked, typed values -------------------------------------------

/// Context for stage 2: where the text came from, so each error can name the file.
struct Check<'a> {
    path: &'a Path,
}

impl Check<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// An integer in `range`; `why` explains the limits to the person fixing the file.
    fn int<T: TryFrom<i64>>(
        &self,
        key: &str,
        raw: Option<RawInt>,
        default: T,
        range: RangeInclusive<i64>,
        why: &str,
    ) -> Result<T, ConfigError> {
        let Some(RawInt(value)) = raw else {
            return Ok(default);
        };
        let out_of_range = || {
            let (lo, hi) = (range.start(), range.end());
            self.invalid(
                key,
                format!("{value} is out of range: use {lo} to {hi} ({why})"),
            )
        };
        if !range.contains(&value) {
            return Err(out_of_range());
        }
        T::try_from(value).map_err(|_| out_of_range())
    }

    fn duration(
        &self,
        key: &str,
        raw: Option<DurationValue>,
    ) -> Result<Option<Duration>, ConfigError> {
        raw.map(|value| {
            value
                .to_duration()
                .map_err(|err| self.invalid(key, format!("{err}; {ACCEPTED_FORMS}")))
        })
        .transpose()
    }

    /// A timer where "0s" means off and anything shorter than a second is a mistake.
    fn optional_timer(
        &self,
        key: &str,
        raw: Option<DurationValue>,
        default: Option<Duration>,
        zero_means: &str,
    ) -> Result<Option<Duration>, ConfigError> {
        match self.duration(key, raw)? {
            None => Ok(default),
            Some(Duration::ZERO) => Ok(None),
            Some(d) if d < Duration::from_secs(1) => Err(self.invalid(
                key,
                format!(
                    "{} is too short: use at least \"1s\", or \"0s\" for {zero_means}",
                    format_duration(d)
                ),
            )),
            Some(d) => Ok(Some(d)),
        }
    }

    /// A keepalive timer, which the kernel takes in whole seconds up to 32767.
    fn kernel_secs(
        &self,
        key: &str,
        raw: Option<DurationValue>,
        default: Duration,
        option: &str,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, raw)?.unwrap_or(default);
        let shown = format_duration(d);
        let secs = d.as_secs();
        if d.subsec_nanos() != 0 {
            let (down, up) = (secs.max(1), secs + 1);
            Err(self.invalid(
                key,
                format!(
                    "{shown} is not whole seconds; the kernel takes {option} in seconds: \
                     use \"{down}s\" or \"{up}s\""
                ),
            ))
        } else if secs == 0 {
            Err(self.invalid(
                key,
                format!(
                    "must be at least \"1s\" ({option} cannot be zero); to turn keepalive off \
                     set keepalive.enabled = false"
                ),
            ))
        } else if secs > MAX_KEEPALIVE_SECS {
            Err(self.invalid(
                key,
                format!(
                    "{shown} is above the kernel limit for {option} of {MAX_KEEPALIVE_SECS}s \
                     ({}); use a shorter duration",
                    format_duration(Duration::from_secs(MAX_KEEPALIVE_SECS))
                ),
            ))
        } else {
            Ok(d)
        }
    }
}

impl ServerConfig {
    fn from_raw(raw: RawServer, check: &Check<'_>) -> Result<Self, ConfigError> {
        let default = ServerConfig::default();
        let listen = match raw.listen {
            None => default.listen,
            Some(entries) => parse_listen(&entries, check)?,
        };
        let backlog = check.int(
            "server.backlog",
            raw.backlog,
            DEFAULT_BACKLOG,
            1..=65_535,
            "the kernel also caps it at net.core.somaxconn",
        )?;
        let max_connections = check.int(
            "server.max_connections",
            raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1..=1_000_000,
            "each session holds a file descriptor: stay below the per-process file limit, \
             ulimit -n or LimitNOFILE=",
        )?;
        let max_connections_per_ip = check.int(
            "server.max_connections_per_ip",
            raw.max_connections_per_ip,
            DEFAULT_MAX_CONNECTIONS_PER_IP,
            0..=1_000_000,
            "0 means no limit",
        )?;
        let password = password(raw.password, raw.password_file, check)?;
        Ok(ServerConfig {
            listen,
            backlog,
            max_connections,
            max_connections_per_ip,
            reuse_port: raw.reuse_port.unwrap_or(DEFAULT_REUSE_PORT),
            password,
        })
    }
}

/// `server.password` or `server.password_file` (relative to the config file's directory);
/// an empty string is the same as leaving the key out.
fn password(
    inline: Option<String>,
    file: Option<String>,
    check: &Check<'_>,
) -> Result<Option<Password>, ConfigError> {
    let inline = inline.filter(|p| !p.is_empty());
    let file = file.filter(|p| !p.is_empty());
    match (inline, file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(check.invalid(
            "server.password_file",
            "is set together with server.password; keep one of them",
        )),
        (Some(p), None) if p.len() > auth::MAX_PASSWORD_BYTES => Err(check.invalid(
            "server.password",
            format!(
                "is {} bytes long; use at most {} (it must fit in one AUTH request)",
                p.len(),
                auth::MAX_PASSWORD_BYTES
            ),
        )),
        (Some(p), None) => Ok(Some(Password::new(p.into_bytes(), PasswordSource::Inline))),
        (None, Some(f)) => {
            let dir = check.path.parent().unwrap_or(Path::new(""));
            // Absolute, so a reload or `to_toml` output read from elsewhere finds the same file.
            let joined = dir.join(f);
            let path = std::path::absolute(&joined).unwrap_or(joined);
            let secret = auth::read_password_file(&path)
                .map_err(|message| check.invalid("server.password_file", message))?;
            Ok(Some(Password::new(secret, PasswordSource::File(path))))
        }
    }
}

fn parse_listen(entries: &[String], check: &Check<'_>) -> Result<Vec<SocketAddr>, ConfigError> {
    if entries.is_empty() {
        return Err(check.invalid(
            "server.listen",
            "is empty; give at least one address, such as [\"127.0.0.1:7379\"]",
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("server.listen[{i}]");
        let addr: SocketAddr = entry.trim().parse().map_err(|_| {
            check.invalid(
                &key,
                format!(
                    "{entry:?} is not ip:port; write an IP address and a port such as \
                     \"127.0.0.1:7379\" or \"0.0.0.0:7379\", IPv6 in brackets as \"[::1]:7379\" \
                     (host names are not resolved)"
                ),
            )
        })?;
        if let Some(first) = out.iter().position(|seen| *seen == addr) {
            return Err(check.invalid(
                &key,
                format!("{addr} is listed twice (also server.listen[{first}]); remove one"),
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

impl KeepaliveConfig {
    fn from_raw(raw: RawKeepalive, check: &Check<'_>) -> Result<Self, ConfigError> {
        let config = KeepaliveConfig {
            enabled: raw.enabled.unwrap_or(DEFAULT_KEEPALIVE_ENABLED),
            idle: check.kernel_secs(
                "keepalive.idle",
                raw.idle,
                DEFAULT_KEEPALIVE_IDLE,
                "TCP_KEEPIDLE",
            )?,
            interval: check.kernel_secs(
                "keepalive.interval",
                raw.interval,
                DEFAULT_KEEPALIVE_INTERVAL,
                "TCP_KEEPINTVL",
            )?,
            probes: check.int(
                "keepalive.probes",
                raw.probes,
                DEFAULT_KEEPALIVE_PROBES,
                1..=127,
                "the kernel's TCP_KEEPCNT limit is 127",
            )?,
            user_timeout: user_timeout(raw.user_timeout, check)?,
        };
        // "auto" is only known to fit once idle, interval and probes are known.
        if let Some(d) = config.effective_user_timeout() {
            check_user_timeout_range(d, check)?;
        }
        Ok(config)
    }
}

const USER_TIMEOUT_KEY: &str = "keepalive.user_timeout";

fn user_timeout(raw: Option<DurationValue>, check: &Check<'_>) -> Result<UserTimeout, ConfigError> {
    if let Some(DurationValue::Text(text)) = &raw {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => return Ok(UserTimeout::Auto),
            "off" => return Ok(UserTimeout::Off),
            _ => {}
        }
    }
    let parsed = raw
        .map(|value| value.to_duration())
        .transpose()
        .map_err(|err| {
            check.invalid(
                USER_TIMEOUT_KEY,
                format!("{err}; use \"auto\", \"off\" or a duration; {ACCEPTED_FORMS}"),
            )
        })?;
    match parsed {
        None => Ok(DEFAULT_USER_TIMEOUT),
        Some(Duration::ZERO) => Ok(UserTimeout::Off),
        Some(d) => check_user_timeout_range(d, check).map(|()| UserTimeout::Fixed(d)),
    }
}

fn check_user_timeout_range(d: Duration, check: &Check<'_>) -> Result<(), ConfigError> {
    if d > Duration::ZERO && d < Duration::from_millis(1) {
        return Err(check.invalid(
            USER_TIMEOUT_KEY,
            "is below 1ms, the kernel's unit for TCP_USER_TIMEOUT; use at least \"1ms\" or \"off\"",
        ));
    }
    if d > MAX_USER_TIMEOUT {
        return Err(check.invalid(
            USER_TIMEOUT_KEY,
            format!(
                "{} is above the kernel limit for TCP_USER_TIMEOUT of {} ms ({}); with \"auto\" \
                 lower keepalive.idle, keepalive.interval or keepalive.probes, otherwise use a \
                 shorter duration or \"off\"",
                format_duration(d),
                i32::MAX,
                format_duration(MAX_USER_TIMEOUT)
            ),
        ));
    }
    Ok(())
}

impl SessionConfig {
    fn from_raw(raw: RawSession, check: &Check<'_>) -> Result<Self, ConfigError> {
        Ok(SessionConfig {
            idle_timeout: check.optional_timer(
                "session.idle_timeout",
                raw.idle_timeout,
                DEFAULT_SESSION_IDLE_TIMEOUT,
                "no idle timeout",
            )?,
            max_request_bytes: check.int(
                "session.max_request_bytes",
                raw.max_request_bytes,
                DEFAULT_MAX_REQUEST_BYTES,
                64..=512 * MIB,
                "64 bytes to 512 MiB",
            )?,
            max_output_bytes: check.int(
                "session.max_output_bytes",
                raw.max_output_bytes,
                DEFAULT_MAX_OUTPUT_BYTES,
                1024..=1024 * MIB,
                "1 KiB to 1 GiB",
            )?,
            unique_names: raw.unique_names.unwrap_or(DEFAULT_UNIQUE_NAMES),
        })
    }
}

impl StatsConfig {
    fn from_raw(raw: RawStats, check: &Check<'_>) -> Result<Self, ConfigError> {
        Ok(StatsConfig {
            interval: check.optional_timer(
                "stats.interval",
                raw.interval,
                DEFAULT_STATS_INTERVAL,
                "statistics only on demand",
            )?,
        })
    }
}

impl LogConfig {
    fn from_raw(raw: RawLog, check: &Check<'_>) -> Result<Self, ConfigError> {
        let reap_lines_per_second = check.int(
            "log.reap_lines_per_second",
            raw.reap_lines_per_second,
            DEFAULT_REAP_LINES_PER_SECOND,
            0..=1_000_000,
            "0 logs every reap; past the limit reaps are counted by reason in one line a second",
        )?;
        let Some(text) = raw.level else {
            return Ok(LogConfig {
                reap_lines_per_second,
                ..LogConfig::default()
            });
        };
        let level = match text.trim().to_ascii_lowercase().as_str() {
            "off" => LevelFilter::Off,
            "error" => LevelFilter::Error,
            "warn" => LevelFilter::Warn,
            "info" => LevelFilter::Info,
            "debug" => LevelFilter::Debug,
            "trace" => LevelFilter::Trace,
            _ => {
                return Err(check.invalid(
                    "log.level",
                    format!("{text:?} is not a level; use off, error, warn, info, debug or trace"),
                ))
            }
        };
        Ok(LogConfig {
            level,
            reap_lines_per_second,
        })
    }
}

// ---- Stage 1: the file as written --------------------------------------------------------

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "the config tables")]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    keepalive: RawKeepalive,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    stats: RawStats,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    admin: endpoints::RawOpsListener,
    #[serde(default)]
    metrics: endpoints::RawOpsListener,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [server] table")]
struct RawServer {
    listen: Option<Vec<String>>,
    backlog: Option<RawInt>,
    max_connections: Option<RawInt>,
    max_connections_per_ip: Option<RawInt>,
    reuse_port: Option<bool>,
    password: Option<String>,
    password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [keepalive] table")]
struct RawKeepalive {
    enabled: Option<bool>,
    idle: Option<DurationValue>,
    interval: Option<DurationValue>,
    probes: Option<RawInt>,
    user_timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [session] table")]
struct RawSession {
    idle_timeout: Option<DurationValue>,
    max_request_bytes: Option<RawInt>,
    max_output_bytes: Option<RawInt>,
    unique_names: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [stats] table")]
struct RawStats {
    interval: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [log] table")]
struct RawLog {
    level: Option<String>,
    reap_lines_per_second: Option<RawInt>,
}

/// Any TOML integer; range checks happen in stage 2 where the message can explain the limit.
#[derive(Debug, Clone, Copy)]
struct RawInt(i64);

impl<'de> Deserialize<'de> for RawInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;

        impl Visitor<'_> for IntVisitor {
            type Value = RawInt;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawInt, E> {
                Ok(RawInt(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawInt, E> {
                i64::try_from(v)
                    .map(RawInt)
                    .map_err(|_| E::custom(format!("integer {v} is too large")))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawInt, E> {
                i64::try_from(v)
                    .map(RawInt)
                    .map_err(|_| E::custom(format!("integer {v} is too large")))
            }
        }

        deserializer.deserialize_any(IntVisitor)
    }
}

impl Serialize for RawInt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.0)
    }
}

impl From<&Config> for RawConfig {
    fn from(config: &Config) -> Self {
        let int = |n: usize| Some(RawInt(i64::try_from(n).unwrap_or(i64::MAX)));
        let timer = |t: Option<Duration>| Some(DurationValue::from(t.unwrap_or(Duration::ZERO)));
        let ka = &config.keepalive;
        RawConfig {
            server: RawServer {
                listen: Some(config.server.listen.iter().map(|a| a.to_string()).collect()),
                backlog: Some(RawInt(i64::from(config.server.backlog))),
                max_connections: int(config.server.max_connections),
                max_connections_per_ip: int(config.server.max_connections_per_ip),
                reuse_port: Some(config.server.reuse_port),
                password: Some(match config.server.password.as_ref().map(|p| &p.source) {
                    Some(PasswordSource::Inline) => REDACTED.to_owned(),
                    _ => String::new(),
                }),
                password_file: Some(match config.server.password.as_ref().map(|p| &p.source) {
                    Some(PasswordSource::File(path)) => path.display().to_string(),
                    _ => String::new(),
                }),
            },
            keepalive: RawKeepalive {
                enabled: Some(ka.enabled),
                idle: Some(ka.idle.into()),
                interval: Some(ka.interval.into()),
                probes: Some(RawInt(i64::from(ka.probes))),
                user_timeout: Some(match ka.user_timeout {
                    UserTimeout::Auto => DurationValue::Text("auto".to_owned()),
                    UserTimeout::Off => DurationValue::Text("off".to_owned()),
                    UserTimeout::Fixed(d) => d.into(),
                }),
            },
            session: RawSession {
                idle_timeout: timer(config.session.idle_timeout),
                max_request_bytes: int(config.session.max_request_bytes),
                max_output_bytes: int(config.session.max_output_bytes),
                unique_names: Some(config.session.unique_names),
            },
            stats: RawStats {
                interval: timer(config.stats.interval),
            },
            log: RawLog {
                level: Some(config.log.level.as_str().to_ascii_lowercase()),
                reap_lines_per_second: Some(RawInt(
                    i64::try_from(config.log.reap_lines_per_second).unwrap_or(i64::MAX),
                )),
            },
            admin: endpoints::to_raw(&config.admin),
            metrics: endpoints::to_raw(&config.metrics),
        }
    }
}

// ---- Parse errors on one line ----------------------------------------------------------------

/// The toml crate's error as one line: `line L, column C: table.key: message`. The crate's
/// own `Display` draws a multi-line caret picture and does not expose the key, so the key is
/// recovered from the text around the error's position.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let Some(span) = err.span() else {
        return message;
    };
    let offset = span.start.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    match key_at(text, line - 1) {
        Some(key) => format!("line {line}, column {column}: {key}: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// The dotted key of the statement on line `index` (0-based): the nearest `key =` at or above
/// it, prefixed with the `[table]` it sits in; for a header line, the header itself.
fn key_at(text: &str, index: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(index + 1).collect();
    let mut key = None;
    for line in lines.iter().rev() {
        let line = line.trim_start();
        if let Some(header) = header_name(line) {
            return Some(match key {
                Some(key) => format!("{header}.{key}"),
                None => header,
            });
        }
        if key.is_none() {
            key = line.split_once('=').and_then(|(k, _)| bare_key(k));
        }
    }
    key
}

fn header_name(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    bare_key(inner.split(']').next()?)
}

/// `a.b` from ` a . b `, or None if this is not a plain dotted key (so not a key at all here).
fn bare_key(text: &str) -> Option<String> {
    let key: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    (!key.is_empty() && key.chars().all(plain)).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const PATH: &str = "test.toml";

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Config::parse(text, Path::new(PATH))
    }

    fn loaded(text: &str) -> Loaded {
        parse(text).unwrap_or_else(|err| panic!("rejected {text:?}: {err}"))
    }

    fn config(text: &str) -> Config {
        loaded(text).config
    }

    /// The one-line message, checked to start with the path and to contain every needle.
    fn error(text: &str, needles: &[&str]) -> ConfigError {
        let err = match parse(text) {
            Ok(loaded) => panic!("accepted {text:?}: {:?}", loaded.config),
            Err(err) => err,
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("test.toml: ") && !msg.contains('\n'),
            "{msg:?}"
        );
        for needle in needles {
            assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
        }
        err
    }

    /// An `Invalid` error naming exactly `key`, whose message contains `needle`.
    fn invalid(text: &str, key: &str, needle: &str) {
        match error(text, &[&format!("test.toml: {key}: "), needle]) {
            ConfigError::Invalid { key: got, .. } => assert_eq!(got, key, "{text:?}"),
            other => panic!("{text:?}: expected Invalid, got {other:?}"),
        }
    }

    /// A `Parse` error (stage 1): located by line and column, naming the key.
    fn rejected(text: &str, needles: &[&str]) {
        let err = error(text, needles);
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("line "), "{err}");
    }

    fn warnings(text: &str) -> Vec<String> {
        loaded(text).warnings
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults_are_the_designed_ones() {
        let c = Config::default();
        assert_eq!(
            c.server.listen,
            vec!["127.0.0.1:7379".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!((c.server.backlog, c.server.max_connections), (1024, 10_000));
        assert_eq!(c.server.max_connections_per_ip, 0);
        assert!(!c.server.reuse_port);
        let ka = c.keepalive;
        assert!(ka.enabled);
        assert_eq!((ka.idle, ka.interval, ka.probes), (secs(60), secs(10), 6));
        assert_eq!(ka.user_timeout, UserTimeout::Auto);
        assert_eq!(c.session.idle_timeout, None);
        assert_eq!(c.session.max_request_bytes, 65_536);
        assert_eq!(c.session.max_output_bytes, 1_048_576);
        assert_eq!(c.stats.interval, Some(secs(60)));
        assert_eq!(c.log.level, LevelFilter::Info);
    }

    #[test]
    fn empty_file_and_empty_tables_give_defaults_without_warnings() {
        for text in [
            "",
            "# nothing\n",
            "[server]\n[keepalive]\n[session]\n[stats]\n[log]\n",
        ] {
            let l = loaded(text);
            assert_eq!(l.config, Config::default());
            assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        }
    }

    #[test]
    fn shipped_example_is_the_default_config() {
        let l = loaded(include_str!("../config/vigild.toml"));
        assert_eq!(l.config, Config::default());
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn detection_bound_and_effective_user_timeout() {
        let mut ka = KeepaliveConfig::default();
        assert_eq!(ka.detection_bound(), secs(120));
        assert_eq!(ka.effective_user_timeout(), Some(secs(120)));
        ka.enabled = false;
        assert_eq!(ka.effective_user_timeout(), None);
        ka.user_timeout = UserTimeout::Fixed(secs(8));
        assert_eq!(ka.effective_user_timeout(), Some(secs(8)));
        ka.enabled = true;
        assert_eq!(ka.effective_user_timeout(), Some(secs(8)));
        ka.user_timeout = UserTimeout::Off;
        assert_eq!(ka.effective_user_timeout(), None);
        ka.idle = Duration::MAX;
        assert_eq!(ka.detection_bound(), Duration::MAX);
    }

    #[test]
    fn to_toml_round_trips_the_default() {
        let text = Config::default().to_toml();
        let l = loaded(&text);
        assert_eq!(l.config, Config::default());
        assert!(l.warnings.is_empty());
        for key in [
            "[server]",
            "listen",
            "backlog",
            "max_connections =",
            "max_connections_per_ip",
            "reuse_port = false",
            "[keepalive]",
            "enabled",
            "idle =",
            "interval",
            "probes",
            "user_timeout = \"auto\"",
            "[session]",
            "idle_timeout = \"0s\"",
            "max_request_bytes",
            "max_output_bytes",
            "unique_names = false",
            "[stats]",
            "[log]",
            "level = \"info\"",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
    }

    #[test]
    fn to_toml_round_trips_a_non_default_config() {
        let text = r#"
            [server]
            listen = ["0.0.0.0:7000", "[::1]:7001"]
            backlog = 4096
            max_connections = 50000
            max_connections_per_ip = 100
            reuse_port = true
            [keepalive]
            enabled = false
            idle = "1m30s"
            interval = 3
            probes = 4
            user_timeout = "2m500ms"
            [session]
            idle_timeout = "1h"
            max_request_bytes = 1024
            max_output_bytes = 4096
            unique_names = true
            [stats]
            interval = "0s"
            [log]
            level = "DEBUG"
        "#;
        let c = config(text);
        assert!(c.session.unique_names);
        assert!(c.server.reuse_port);
        assert_eq!(
            c.keepalive.user_timeout,
            UserTimeout::Fixed(Duration::from_millis(120_500))
        );
        assert_eq!(c.log.level, LevelFilter::Debug);
        assert_eq!(c.stats.interval, None);
        let rendered = c.to_toml();
        assert!(rendered.contains("idle = \"1m30s\""), "{rendered}");
        assert!(rendered.contains("level = \"debug\""), "{rendered}");
        assert_eq!(config(&rendered), c);
        let off = config("[keepalive]\nuser_timeout = \"off\"");
        assert_eq!(off.keepalive.user_timeout, UserTimeout::Off);
        assert_eq!(config(&off.to_toml()), off);
    }

    #[test]
    fn integers_are_whole_seconds() {
        let c = config(
            "[keepalive]\nidle = 30\ninterval = 5\nuser_timeout = 120\n\
             [session]\nidle_timeout = 300\n[stats]\ninterval = 0\n",
        );
        assert_eq!(
            (c.keepalive.idle, c.keepalive.interval),
            (secs(30), secs(5))
        );
        assert_eq!(c.keepalive.user_timeout, UserTimeout::Fixed(secs(120)));
        assert_eq!(c.session.idle_timeout, Some(secs(300)));
        assert_eq!(c.stats.interval, None);
        assert_eq!(
            config("[keepalive]\nuser_timeout = 0")
                .keepalive
                .user_timeout,
            UserTimeout::Off
        );
        assert_eq!(
            config("[keepalive]\nuser_timeout = \" AUTO \"")
                .keepalive
                .user_timeout,
            UserTimeout::Auto
        );
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_key() {
        let fields = "expected one of";
        rejected(
            "verbose = true",
            &["line 1, column 1", "verbose: unknown field `verbose`"],
        );
        rejected(
            "[server]\n[admn]\nx = 1",
            &["line 2, column 2", "admn: unknown field `admn`"],
        );
        rejected(
            "[server]\nlisen = []",
            &["line 2", "server.lisen: unknown field", fields],
        );
        rejected(
            "[keepalive]\nidel = 5",
            &["keepalive.idel: unknown field `idel`", fields],
        );
        rejected(
            "[session]\n\n  timeout = 5",
            &["line 3, column 3", "session.timeout: unknown"],
        );
        rejected(
            "[stats]\nperiod = 5",
            &["stats.period: unknown field `period`"],
        );
        rejected("[log]\nlevels = 5", &["log.levels: unknown field `levels`"]);
        rejected("server.idel = 3", &["server.idel: unknown field `idel`"]);
    }

    #[test]
    fn wrong_types_are_rejected_naming_the_key() {
        rejected(
            "[server]\nbacklog = \"x\"",
            &["line 2, column 11", "server.backlog: invalid type"],
        );
        rejected(
            "[server]\nbacklog = 1.5",
            &["server.backlog:", "expected an integer"],
        );
        rejected(
            "[server]\nlisten = \"127.0.0.1:1\"",
            &["server.listen: invalid type"],
        );
        rejected(
            "[server]\nlisten = [\n\"127.0.0.1:1\",\n 5]",
            &["line 4", "server.listen: "],
        );
        rejected(
            "[keepalive]\nenabled = \"yes\"",
            &["keepalive.enabled:", "a boolean"],
        );
        rejected(
            "[server]\nreuse_port = 1",
            &["server.reuse_port:", "a boolean"],
        );
        rejected(
            "[keepalive]\nidle = true",
            &["keepalive.idle:", "expected a duration"],
        );
        rejected(
            "[keepalive]\nidle = -5",
            &["keepalive.idle:", "expected a duration"],
        );
        rejected("[log]\nlevel = 3", &["log.level: invalid type", "a string"]);
        rejected("server = 5", &["server: invalid type", "a [server] table"]);
        rejected(
            "[server]\nbacklog = 99999999999999999999",
            &["server.backlog", "too large"],
        );
        rejected(
            "[server]\nbacklog = 1\nbacklog = 2",
            &["line 3", "server.backlog: duplicate"],
        );
        rejected("[server\n", &["line 1, column 8", "unclosed table"]);
    }

    #[test]
    fn listen_errors() {
        invalid(
            "[server]\nlisten = []",
            "server.listen",
            "at least one address",
        );
        let bad = ["localhost:7379", "127.0.0.1", "::1:7379", "[::1]", ""];
        for entry in bad {
            let text = format!("[server]\nlisten = [\"127.0.0.1:1\", \"{entry}\"]");
            invalid(
                &text,
                "server.listen[1]",
                "\"[::1]:7379\" (host names are not resolved)",
            );
        }
        let dup = "[server]\nlisten = [\"[::1]:1\", \"127.0.0.1:2\", \" [::1]:1\"]";
        invalid(
            dup,
            "server.listen[2]",
            "listed twice (also server.listen[0])",
        );
        let both = config("[server]\nlisten = [\"0.0.0.0:0\", \"[::]:7379\"]")
            .server
            .listen;
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn integer_range_errors() {
        let cases = [
            ("server", "backlog", "0", "use 1 to 65535"),
            ("server", "backlog", "65536", "net.core.somaxconn"),
            ("server", "max_connections", "0", "per-process file limit"),
            ("server", "max_connections", "1000001", "use 1 to 1000000"),
            ("server", "max_connections_per_ip", "-1", "0 means no limit"),
            ("keepalive", "probes", "0", "TCP_KEEPCNT"),
            ("keepalive", "probes", "128", "use 1 to 127"),
            ("session", "max_request_bytes", "63", "64 bytes to 512 MiB"),
            (
                "session",
                "max_request_bytes",
                "536870913",
                "use 64 to 536870912",
            ),
            ("session", "max_output_bytes", "1023", "1 KiB to 1 GiB"),
            (
                "session",
                "max_output_bytes",
                "1073741825",
                "use 1024 to 1073741824",
            ),
        ];
        for (table, key, value, needle) in cases {
            invalid(
                &format!("[{table}]\n{key} = {value}"),
                &format!("{table}.{key}"),
                needle,
            );
        }
        let edges = "[server]\nbacklog = 65535\nmax_connections = 1000000\n\
                     [keepalive]\nprobes = 127\n\
                     [session]\nmax_request_bytes = 64\nmax_output_bytes = 1073741824";
        assert_eq!(config(edges).keepalive.probes, 127);
    }

    #[test]
    fn keepalive_timer_errors() {
        for key in ["idle", "interval"] {
            let full = format!("keepalive.{key}");
            let text = |v: &str| format!("[keepalive]\n{key} = {v}");
            invalid(&text("\"0s\""), &full, "keepalive.enabled = false");
            invalid(&text("0"), &full, "must be at least \"1s\"");
            invalid(&text("\"500ms\""), &full, "not whole seconds");
            invalid(&text("\"1500ms\""), &full, "use \"1s\" or \"2s\"");
            invalid(&text("32768"), &full, "kernel limit");
            invalid(&text("\"10x\""), &full, "\"1m30s\"");
            invalid(
                &text("\"ten seconds\""),
                &full,
                "or an integer for whole seconds",
            );
            assert!(parse(&text("32767")).is_ok());
        }
    }

    #[test]
    fn user_timeout_errors() {
        let key = "keepalive.user_timeout";
        invalid(
            "[keepalive]\nuser_timeout = \"soon\"",
            key,
            "use \"auto\", \"off\" or a duration",
        );
        invalid("[keepalive]\nuser_timeout = \"597h\"", key, "2147483647 ms");
        invalid("[keepalive]\nuser_timeout = 2147484", key, "kernel limit");
        let huge_auto = "[keepalive]\nidle = 32767\ninterval = 32767\nprobes = 127";
        invalid(huge_auto, key, "lower keepalive.idle");
        assert!(parse(&format!("{huge_auto}\nenabled = false")).is_ok());
        assert!(parse(&format!("{huge_auto}\nuser_timeout = \"off\"")).is_ok());
        let check = Check {
            path: Path::new(PATH),
        };
        let err = check_user_timeout_range(Duration::from_micros(500), &check);
        assert!(err.is_err_and(|e| e.to_string().contains("below 1ms")));
    }

    #[test]
    fn session_stats_and_log_errors() {
        invalid(
            "[session]\nidle_timeout = \"500ms\"",
            "session.idle_timeout",
            "at least \"1s\"",
        );
        invalid(
            "[session]\nidle_timeout = \"1d\"",
            "session.idle_timeout",
            "unknown unit",
        );
        invalid(
            "[stats]\ninterval = \"999ms\"",
            "stats.interval",
            "only on demand",
        );
        invalid("[stats]\ninterval = \"-1s\"", "stats.interval", "negative");
        invalid(
            "[log]\nlevel = \"verbose\"",
            "log.level",
            "off, error, warn, info",
        );
        assert_eq!(
            config("[log]\nlevel = \"Trace\"").log.level,
            LevelFilter::Trace
        );
        assert_eq!(config("[log]\nlevel = \"off\"").log.level, LevelFilter::Off);
    }

    #[test]
    fn load_reads_the_file_and_reports_unreadable_ones() {
        let dir = std::env::temp_dir().join(format!("vigild-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vigild.toml");
        std::fs::write(&path, "[keepalive]\nprobes = 3\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().config.keepalive.probes, 3);
        let missing = dir.join("missing.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn one_warning(text: &str, needles: &[&str]) {
        let w = warnings(text);
        assert_eq!(w.len(), 1, "{text:?}: {w:?}");
        for needle in needles {
            assert!(w[0].contains(needle), "{:?} lacks {needle:?}", w[0]);
        }
    }

    #[test]
    fn user_timeout_against_the_detection_bound() {
        one_warning(
            "[keepalive]\nuser_timeout = \"30s\"",
            &[
                "keepalive.user_timeout = 30s",
                "1m + 10s × 6 = 2m",
                "first probe past 30s",
            ],
        );
        one_warning(
            "[keepalive]\nuser_timeout = \"5m\"",
            &["keepalive.user_timeout = 5m", "after 5m"],
        );
        assert!(warnings("[keepalive]\nuser_timeout = \"2m\"").is_empty());
        assert!(warnings("[keepalive]\nuser_timeout = \"off\"").is_empty());
    }

    #[test]
    fn idle_timeout_shorter_than_keepalive() {
        one_warning(
            "[session]\nidle_timeout = \"30s\"",
            &[
                "session.idle_timeout = 30s",
                "detection bound",
                "= 2m",
                "not keepalive",
            ],
        );
        assert!(warnings("[session]\nidle_timeout = \"2m\"").is_empty());
        assert!(warnings("[session]\nidle_timeout = \"1h\"").is_empty());
    }

    #[test]
    fn keepalive_disabled() {
        one_warning(
            "[keepalive]\nenabled = false",
            &["keepalive.enabled = false", "never found"],
        );
        one_warning(
            "[keepalive]\nenabled = false\n[session]\nidle_timeout = \"5m\"",
            &["only by session.idle_timeout = 5m"],
        );
        let w = warnings("[keepalive]\nenabled = false\nuser_timeout = \"30s\"");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("keepalive.user_timeout = 30s") && w[0].contains("data in flight"));
        assert!(w[1].contains("never found"));
    }

    #[test]
    fn passwords() {
        assert_eq!(config("[server]\npassword = \"\"").server.password, None);
        let c = config("[server]\npassword = \"s3cret\"");
        let pw = c.server.password.as_ref().expect("a password");
        assert!(pw.matches(b"s3cret") && !pw.matches(b"s3cre"));
        let shown = c.to_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("password = \"(redacted)\""), "{shown}");
        let long = "x".repeat(auth::MAX_PASSWORD_BYTES + 1);
        invalid(
            &format!("[server]\npassword = \"{long}\""),
            "server.password",
            "at most 1024",
        );
        invalid(
            "[server]\npassword = \"a\"\npassword_file = \"b\"",
            "server.password_file",
            "keep one of them",
        );
        invalid(
            "[server]\npassword_file = \"no-such-file\"",
            "server.password_file",
            "cannot read",
        );
        rejected("[server]\npassword = 5", &["server.password: invalid type"]);

        let dir = std::env::temp_dir().join(format!("vigild-config-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(&file, mode(0o600)).unwrap();
        let cfg_path = dir.join("vigild.toml");
        // Relative to the config file's directory, not to the working directory.
        let l = Config::parse("[server]\npassword_file = \"pw\"", &cfg_path).unwrap();
        let pw = l.config.server.password.as_ref().unwrap();
        assert!(pw.matches(b"from-file"));
        assert_eq!(pw.source, PasswordSource::File(file.clone()));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let again = Config::parse(&l.config.to_toml(), &cfg_path).unwrap();
        assert_eq!(again.config, l.config);
        std::fs::set_permissions(&file, mode(0o644)).unwrap();
        let l = Config::parse("[server]\npassword_file = \"pw\"", &cfg_path).unwrap();
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("chmod 600"), "{:?}", l.warnings);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn per_ip_limit_above_the_total() {
        one_warning(
            "[server]\nmax_connections = 10\nmax_connections_per_ip = 11",
            &[
                "server.max_connections_per_ip = 11",
                "server.max_connections = 10",
                "never applies",
            ],
        );
        assert!(warnings("[server]\nmax_connections = 10\nmax_connections_per_ip = 10").is_empty());
    }
}
