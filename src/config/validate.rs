//! Stage 2 of loading the config: each `Raw*` table from [`super::raw`] becomes its checked,
//! typed struct (`from_raw`), with the `DEFAULT_*` constants filled in. [`Check`] carries the
//! file's path so every error names the file, the key and the limit that was broken.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use log::LevelFilter;

use super::secret::{self, Password, PasswordSource};
use crate::config::duration::{DurationValue, ACCEPTED_FORMS};

use super::raw::{RawInt, RawKeepalive, RawLog, RawServer, RawSession, RawStats};
use super::*;

/// The longest `server.auth_timeout` and `server.auth_backoff_max`.
const MAX_AUTH_TIMER: Duration = Duration::from_secs(3600);

/// Context for stage 2: where the text came from, so each error can name the file.
pub(super) struct Check<'a> {
    pub(super) path: &'a Path,
}

impl Check<'_> {
    /// The file a path key names: relative paths are taken from the config file's directory,
    /// and made absolute, so a reload or `to_toml` output read from elsewhere finds the same
    /// file.
    pub(super) fn file(&self, given: &str) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        let joined = dir.join(given);
        std::path::absolute(&joined).unwrap_or(joined)
    }

    /// An optional path key: empty (or blank) means unset.
    pub(super) fn optional_file(&self, given: Option<String>) -> Option<PathBuf> {
        given
            .filter(|p| !p.trim().is_empty())
            .map(|p| self.file(&p))
    }

    pub(super) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// An integer in `range`; `why` explains the limits to the person fixing the file.
    pub(super) fn int<T: TryFrom<i64>>(
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

    pub(super) fn duration(
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
    pub(super) fn optional_timer(
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
    pub(super) fn kernel_secs(
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
    pub(super) fn from_raw(raw: RawServer, check: &Check<'_>) -> Result<Self, ConfigError> {
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
        let busy_poll_us: u64 = check.int(
            "server.busy_poll_us",
            raw.busy_poll_us,
            DEFAULT_BUSY_POLL_US,
            0..=MAX_BUSY_POLL_US as i64,
            "microseconds; 0 turns busy polling off",
        )?;
        let password = password(raw.password, raw.password_file, check)?;
        let auth_timeout = check.optional_timer(
            "server.auth_timeout",
            raw.auth_timeout,
            DEFAULT_AUTH_TIMEOUT,
            "no deadline for AUTH",
        )?;
        if let Some(t) = auth_timeout.filter(|t| *t > MAX_AUTH_TIMER) {
            return Err(check.invalid(
                "server.auth_timeout",
                format!(
                    "{} is too long: use at most \"1h\"; a client authenticates right after \
                     connecting",
                    format_duration(t)
                ),
            ));
        }
        let auth_failures_before_backoff = check.int(
            "server.auth_failures_before_backoff",
            raw.auth_failures_before_backoff,
            DEFAULT_AUTH_FAILURES_BEFORE_BACKOFF,
            0..=1000,
            "wrong passwords from one address before it is locked out; 0 = no per-address limit",
        )?;
        let auth_backoff_max = check
            .duration("server.auth_backoff_max", raw.auth_backoff_max)?
            .unwrap_or(DEFAULT_AUTH_BACKOFF_MAX);
        if auth_backoff_max < Duration::from_secs(1) || auth_backoff_max > MAX_AUTH_TIMER {
            return Err(check.invalid(
                "server.auth_backoff_max",
                format!(
                    "{} is out of range: use \"1s\" to \"1h\" (lockouts start at 1s and double \
                     up to it)",
                    format_duration(auth_backoff_max)
                ),
            ));
        }
        Ok(ServerConfig {
            listen,
            backlog,
            max_connections,
            max_connections_per_ip,
            reuse_port: raw.reuse_port.unwrap_or(DEFAULT_REUSE_PORT),
            busy_poll: Duration::from_micros(busy_poll_us),
            password,
            auth_timeout,
            auth_failures_before_backoff,
            auth_backoff_max,
            proxy: proxy_config(
                raw.proxy_protocol,
                raw.proxy_trusted,
                raw.proxy_header_timeout,
                check,
            )?,
        })
    }
}

/// `server.proxy_protocol`, `server.proxy_trusted`, `server.proxy_header_timeout`.
fn proxy_config(
    mode: Option<String>,
    trusted: Option<Vec<String>>,
    timeout: Option<DurationValue>,
    check: &Check<'_>,
) -> Result<ProxyConfig, ConfigError> {
    use super::proxy_protocol::{
        MAX_PROXY_HEADER_TIMEOUT, MAX_PROXY_TRUSTED, MIN_PROXY_HEADER_TIMEOUT,
    };
    let mode = match mode {
        None => ProxyMode::Off,
        Some(m) => ProxyMode::parse(m.trim()).ok_or_else(|| {
            check.invalid(
                "server.proxy_protocol",
                format!("{m:?} is not one of \"off\", \"v1\", \"v2\", \"any\""),
            )
        })?,
    };
    let entries = trusted.unwrap_or_default();
    if entries.len() > MAX_PROXY_TRUSTED {
        return Err(check.invalid(
            "server.proxy_trusted",
            format!(
                "lists {} entries; use at most {MAX_PROXY_TRUSTED} (write address blocks such as \"10.0.0.0/8\")",
                entries.len()
            ),
        ));
    }
    let mut list = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let cidr = Cidr::parse(e.trim()).map_err(|m| {
            check.invalid(
                &format!("server.proxy_trusted[{i}]"),
                format!(
                    "{m}; write an address or a block such as \"127.0.0.1/32\" or \"fd00::/8\""
                ),
            )
        })?;
        list.push(cidr);
    }
    if mode.is_on() && list.is_empty() {
        return Err(check.invalid(
            "server.proxy_trusted",
            format!(
                "is empty with server.proxy_protocol = \"{}\": every connection would be refused; list the proxies' addresses, such as [\"127.0.0.1/32\"]",
                mode.name()
            ),
        ));
    }
    let header_timeout = check
        .duration("server.proxy_header_timeout", timeout)?
        .unwrap_or(DEFAULT_PROXY_HEADER_TIMEOUT);
    if !(MIN_PROXY_HEADER_TIMEOUT..=MAX_PROXY_HEADER_TIMEOUT).contains(&header_timeout) {
        return Err(check.invalid(
            "server.proxy_header_timeout",
            format!(
                "{} is out of range: use \"100ms\" to \"1m\" (the spec suggests at least 3s)",
                format_duration(header_timeout)
            ),
        ));
    }
    Ok(ProxyConfig {
        mode,
        trusted: list,
        header_timeout,
    })
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
        (Some(p), None) if p.len() > secret::MAX_PASSWORD_BYTES => Err(check.invalid(
            "server.password",
            format!(
                "is {} bytes long; use at most {} (it must fit in one AUTH request)",
                p.len(),
                secret::MAX_PASSWORD_BYTES
            ),
        )),
        (Some(p), None) => Ok(Some(Password::new(p.into_bytes(), PasswordSource::Inline))),
        (None, Some(f)) => {
            let path = check.file(&f);
            let secret = secret::read_password_file(&path)
                .map_err(|message| check.invalid("server.password_file", message))?;
            Ok(Some(Password::new(secret, PasswordSource::File(path))))
        }
    }
}

fn parse_listen(entries: &[String], check: &Check<'_>) -> Result<Vec<SocketAddr>, ConfigError> {
    parse_listen_key("server.listen", entries, check)
}

/// A list of listen addresses under `key`: non-empty, each ip:port, none twice.
pub(super) fn parse_listen_key(
    key: &str,
    entries: &[String],
    check: &Check<'_>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let list = key;
    if entries.is_empty() {
        return Err(check.invalid(
            list,
            "is empty; give at least one address, such as [\"127.0.0.1:7379\"]",
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let key = format!("{list}[{i}]");
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
                format!("{addr} is listed twice (also {list}[{first}]); remove one"),
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

impl KeepaliveConfig {
    pub(super) fn from_raw(raw: RawKeepalive, check: &Check<'_>) -> Result<Self, ConfigError> {
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

pub(super) fn check_user_timeout_range(d: Duration, check: &Check<'_>) -> Result<(), ConfigError> {
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
    pub(super) fn from_raw(raw: RawSession, check: &Check<'_>) -> Result<Self, ConfigError> {
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
            takeover: takeover_policy(raw.takeover.as_deref(), check)?,
            takeover_after: check.optional_timer(
                "session.takeover_after",
                raw.takeover_after,
                DEFAULT_TAKEOVER_AFTER,
                "no silence test (only the holder's TCP state counts)",
            )?,
            flap_threshold: check.int(
                "session.flap_threshold",
                raw.flap_threshold,
                DEFAULT_FLAP_THRESHOLD,
                0..=10_000,
                "replacements of one name within a minute before it is logged as flapping; 0 \
                 turns the warning off",
            )?,
            max_name_bytes: check.int(
                "session.max_name_bytes",
                raw.max_name_bytes,
                DEFAULT_MAX_NAME_BYTES,
                1..=MAX_FIELD_BYTES as i64,
                "bytes; a name is copied into every CLIENT LIST line and presence event about \
                 its session, so keep it to a few hundred",
            )?,
            max_lib_bytes: check.int(
                "session.max_lib_bytes",
                raw.max_lib_bytes,
                DEFAULT_MAX_LIB_BYTES,
                1..=MAX_FIELD_BYTES as i64,
                "bytes, for CLIENT SETINFO LIB-NAME and LIB-VER each; they are copied into every \
                 CLIENT LIST line",
            )?,
            max_sessions_per_identity: check.int(
                "session.max_sessions_per_identity",
                raw.max_sessions_per_identity,
                DEFAULT_MAX_SESSIONS_PER_IDENTITY,
                0..=1_000_000,
                "sessions one certificate or token identity may hold at once; 0 = no limit",
            )?,
        })
    }
}

/// `session.takeover`: "stale" or "newest".
fn takeover_policy(raw: Option<&str>, check: &Check<'_>) -> Result<TakeoverPolicy, ConfigError> {
    match raw.map(|t| t.trim().to_ascii_lowercase()) {
        None => Ok(DEFAULT_TAKEOVER),
        Some(t) if t == "stale" => Ok(TakeoverPolicy::Stale),
        Some(t) if t == "newest" => Ok(TakeoverPolicy::Newest),
        Some(_) => Err(check.invalid(
            "session.takeover",
            format!(
                "{:?} is not a policy; use \"stale\" (replace a holder only when it is \
                 plausibly stale, refuse the name otherwise) or \"newest\" (the newcomer always \
                 takes the name)",
                raw.unwrap_or_default()
            ),
        )),
    }
}

impl StatsConfig {
    pub(super) fn from_raw(raw: RawStats, check: &Check<'_>) -> Result<Self, ConfigError> {
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
    pub(super) fn from_raw(raw: RawLog, check: &Check<'_>) -> Result<Self, ConfigError> {
        let reap_lines_per_second = check.int(
            "log.reap_lines_per_second",
            raw.reap_lines_per_second,
            DEFAULT_REAP_LINES_PER_SECOND,
            0..=1_000_000,
            "0 logs every reap; past the limit reaps are counted by reason in one line a second",
        )?;
        let bytes_per_second = log_bytes_per_second(raw.bytes_per_second, check)?;
        let Some(text) = raw.level else {
            return Ok(LogConfig {
                reap_lines_per_second,
                bytes_per_second,
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
            bytes_per_second,
        })
    }
}

/// `log.bytes_per_second`: 0 (no limit) or from a few lines' worth up to 1 GiB.
fn log_bytes_per_second(raw: Option<RawInt>, check: &Check<'_>) -> Result<u64, ConfigError> {
    const KEY: &str = "log.bytes_per_second";
    let bytes: u64 = check.int(
        KEY,
        raw,
        DEFAULT_LOG_BYTES_PER_SECOND,
        0..=1024 * MIB,
        "0 means no limit; past the limit client-caused lines are counted by kind in one line \
         a second",
    )?;
    if bytes != 0 && bytes < MIN_LOG_BYTES_PER_SECOND {
        return Err(check.invalid(
            KEY,
            format!(
                "{bytes} is too small: use 0 (no limit) or at least {MIN_LOG_BYTES_PER_SECOND} \
                 (one reap line is 300-700 bytes)"
            ),
        ));
    }
    Ok(bytes)
}
