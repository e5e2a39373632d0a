//! Stage 1 of loading the config: the file as written. One serde struct per table, every field
//! optional and every table `deny_unknown_fields`, so a typo fails with the key's name, line
//! and column. `From<&Config> for RawConfig` goes the other way, for [`Config::to_toml`].

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::config::duration::DurationValue;

use super::*;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "the config tables")]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) keepalive: RawKeepalive,
    #[serde(default)]
    pub(super) session: RawSession,
    #[serde(default)]
    pub(super) stats: RawStats,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) admin: endpoints::RawOpsListener,
    #[serde(default)]
    pub(super) metrics: endpoints::RawOpsListener,
    #[serde(default)]
    pub(super) tls: tls::RawTls,
    #[serde(default)]
    pub(super) token: token::RawToken,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [server] table")]
pub(super) struct RawServer {
    pub(super) listen: Option<Vec<String>>,
    pub(super) backlog: Option<RawInt>,
    pub(super) max_connections: Option<RawInt>,
    pub(super) max_connections_per_ip: Option<RawInt>,
    pub(super) reuse_port: Option<bool>,
    pub(super) busy_poll_us: Option<RawInt>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) auth_timeout: Option<DurationValue>,
    pub(super) auth_failures_before_backoff: Option<RawInt>,
    pub(super) auth_backoff_max: Option<DurationValue>,
    pub(super) proxy_protocol: Option<String>,
    pub(super) proxy_trusted: Option<Vec<String>>,
    pub(super) proxy_header_timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [keepalive] table")]
pub(super) struct RawKeepalive {
    pub(super) enabled: Option<bool>,
    pub(super) idle: Option<DurationValue>,
    pub(super) interval: Option<DurationValue>,
    pub(super) probes: Option<RawInt>,
    pub(super) user_timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [session] table")]
pub(super) struct RawSession {
    pub(super) idle_timeout: Option<DurationValue>,
    pub(super) max_request_bytes: Option<RawInt>,
    pub(super) max_output_bytes: Option<RawInt>,
    pub(super) unique_names: Option<bool>,
    pub(super) takeover: Option<String>,
    pub(super) takeover_after: Option<DurationValue>,
    pub(super) flap_threshold: Option<RawInt>,
    pub(super) max_name_bytes: Option<RawInt>,
    pub(super) max_lib_bytes: Option<RawInt>,
    pub(super) max_sessions_per_identity: Option<RawInt>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [stats] table")]
pub(super) struct RawStats {
    pub(super) interval: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a [log] table")]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) reap_lines_per_second: Option<RawInt>,
    pub(super) bytes_per_second: Option<RawInt>,
}

/// Any TOML integer; range checks happen in stage 2 where the message can explain the limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawInt(pub(super) i64);

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
                busy_poll_us: Some(RawInt(
                    i64::try_from(config.server.busy_poll.as_micros()).unwrap_or(i64::MAX),
                )),
                password: Some(match config.server.password.as_ref().map(|p| &p.source) {
                    Some(PasswordSource::Inline) => REDACTED.to_owned(),
                    _ => String::new(),
                }),
                password_file: Some(match config.server.password.as_ref().map(|p| &p.source) {
                    Some(PasswordSource::File(path)) => path.display().to_string(),
                    _ => String::new(),
                }),
                auth_timeout: timer(config.server.auth_timeout),
                auth_failures_before_backoff: Some(RawInt(i64::from(
                    config.server.auth_failures_before_backoff,
                ))),
                auth_backoff_max: Some(config.server.auth_backoff_max.into()),
                proxy_protocol: Some(config.server.proxy.mode.name().to_owned()),
                proxy_trusted: Some(
                    config
                        .server
                        .proxy
                        .trusted
                        .iter()
                        .map(|c| c.to_string())
                        .collect(),
                ),
                proxy_header_timeout: Some(config.server.proxy.header_timeout.into()),
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
                takeover: Some(config.session.takeover.name().to_owned()),
                takeover_after: timer(config.session.takeover_after),
                flap_threshold: Some(RawInt(i64::from(config.session.flap_threshold))),
                max_name_bytes: int(config.session.max_name_bytes),
                max_lib_bytes: int(config.session.max_lib_bytes),
                max_sessions_per_identity: int(config.session.max_sessions_per_identity),
            },
            stats: RawStats {
                interval: timer(config.stats.interval),
            },
            log: RawLog {
                level: Some(config.log.level.as_str().to_ascii_lowercase()),
                reap_lines_per_second: Some(RawInt(
                    i64::try_from(config.log.reap_lines_per_second).unwrap_or(i64::MAX),
                )),
                bytes_per_second: Some(RawInt(
                    i64::try_from(config.log.bytes_per_second).unwrap_or(i64::MAX),
                )),
            },
            admin: endpoints::to_raw(&config.admin),
            metrics: endpoints::to_raw(&config.metrics),
            tls: config.tls.to_raw(),
            token: config.token.to_raw(),
        }
    }
}
