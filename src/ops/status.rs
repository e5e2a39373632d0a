//! `/status.json`: the status page's data, one JSON object whose schema is documented field by
//! field in docs/status.md (tests/status_page.rs checks the two agree).
//!
//! Invariants:
//! - Bounded whatever the number of sessions: the counters, 60 minutes of per-minute counts,
//!   one entry per detection reason, and at most [`TOP`] sessions per list, each with a name
//!   and library name cut to 64 bytes (`session_watch::SHOWN_NAME_BYTES`): 3 KiB idle, 6 KiB
//!   with 3,000 sessions, about 40 KiB at most (40 entries of two 64-byte names that are all
//!   `<`, each escaped to 6 bytes).
//! - Every string a client chose (names, library names) goes through serde_json, with `<`,
//!   `>` and `&` written as `\u003c`, `\u003e` and `\u0026` as well ([`Escaping`]), so the
//!   body stays inert even if someone pastes it into HTML. The page inserts them with
//!   `textContent`, never as markup.
//! - The counters are read in the same loop turn as the reply is written, so they agree with
//!   `INFO` asked for at the same moment. The session lists come from the last complete sweep
//!   (src/ops/session_watch.rs), whose age is in `watch.age_ms`.
//! - `fleet` is left out while `[fleet]` is off; the fleet issue fills it in (its shape is
//!   in docs/status.md, "Fleet").

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::admin::OpsCounters;
use super::session_watch::{Seen, Swept, TOP};
use crate::config::{timers, Config, UserTimeout};
use crate::session::reap::ReapReason;
use crate::telemetry::last_hour::MINUTE;
use crate::telemetry::stats::{RejectCause, Stats};

/// The schema's version: raised when a field changes meaning or goes away (new fields do not
/// raise it).
pub(super) const SCHEMA: u32 = 1;

/// What one `/status.json` is made of, borrowed for the reply.
pub(super) struct Inputs<'a> {
    pub now: Instant,
    pub stats: &'a Stats,
    pub config: &'a Config,
    pub ops: &'a OpsCounters,
    pub started: Instant,
    /// The wall clock at `started`: the reply's `now_unix_ms` is this plus uptime.
    pub started_at: SystemTime,
    /// The fleet's nodes; `None` while `[fleet]` is off (the fleet issue sets it).
    pub fleet: Option<Fleet>,
    /// The last complete sweep of the session table, if one finished.
    pub swept: Option<&'a Swept>,
}

#[derive(Serialize)]
struct Status<'a> {
    schema: u32,
    version: &'static str,
    uptime_ms: u64,
    /// Wall clock at the reply, for the page's "as of".
    now_unix_ms: u64,
    refresh_ms: u64,
    sessions: Sessions,
    rates: Rates,
    reaps: Reaps,
    detection: Vec<Detection>,
    keepalive: Keepalive,
    watch: Watch,
    suspect: Vec<Entry<'a>>,
    silent: Vec<Entry<'a>>,
    presence: Presence,
    operators: Operators,
    /// Present when `[fleet]` is on (docs/status.md, "Fleet").
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<Fleet>,
}

/// The `fleet` member, while `[fleet]` is on: the nodes as this node last read them from
/// Redis (`FLEET NODES` shows the same). Its shape is documented in docs/status.md and drawn
/// by the page's Fleet table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Fleet {
    pub nodes: Vec<FleetNode>,
}

impl Fleet {
    /// From the fleet's view: a node's lease age is the lease minus the time left on it
    /// (renewed every lease/3, so a live node reads at most about a third of the lease; past
    /// the lease it is lost).
    pub(crate) fn of(nodes: &[crate::fleet::NodeInfo], lease: std::time::Duration) -> Fleet {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        Fleet {
            nodes: nodes
                .iter()
                .map(|n| FleetNode {
                    node: n.node.clone(),
                    epoch: n.epoch,
                    lease_age_ms: u64::try_from(lease_ms.saturating_sub(n.lease_left_ms))
                        .unwrap_or(0),
                    sessions: n.sessions,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FleetNode {
    pub node: String,
    pub epoch: u64,
    pub lease_age_ms: u64,
    pub sessions: u64,
}

#[derive(Serialize)]
struct Sessions {
    live: u64,
    peak: u64,
    max: usize,
    accepted: u64,
    rejected: u64,
    reaped: u64,
}

#[derive(Serialize)]
struct Rates {
    window_ms: u64,
    accepts_per_s: f64,
    reaps_per_s: f64,
}

#[derive(Serialize)]
struct Reaps {
    /// Every reason, since start, zeros included.
    total: Vec<Count>,
    minute_ms: u64,
    /// Accepts per minute, oldest first, the last entry the current minute.
    accepts_per_minute: Vec<u32>,
    /// Reasons with at least one reap in the hour, each its per-minute series.
    per_minute: Vec<Series>,
}

#[derive(Serialize)]
struct Count {
    reason: &'static str,
    count: u64,
}

#[derive(Serialize)]
struct Series {
    reason: &'static str,
    counts: Vec<u32>,
}

#[derive(Serialize)]
struct Detection {
    reason: &'static str,
    count: u64,
    min_ms: Option<u64>,
    p50_ms: Option<u64>,
    p99_ms: Option<u64>,
    max_ms: Option<u64>,
    mean_ms: Option<u64>,
    /// The configured bound for this reason, if there is one.
    bound_ms: Option<u64>,
    /// The keys the bound follows from.
    bound_from: Option<&'static str>,
}

#[derive(Serialize)]
struct Keepalive {
    headline: String,
    summary: Vec<String>,
    enabled: bool,
    idle_ms: u64,
    interval_ms: u64,
    probes: u64,
    user_timeout: String,
    user_timeout_ms: Option<u64>,
    idle_reap_after_ms: Option<u64>,
    session_idle_timeout_ms: Option<u64>,
}

#[derive(Serialize)]
struct Watch {
    top: usize,
    complete: bool,
    age_ms: Option<u64>,
    sweep_ms: Option<u64>,
    scanned: u64,
    ok: u64,
    suspect: u64,
    dead: u64,
}

#[derive(Serialize)]
struct Entry<'a> {
    id: u64,
    name: Option<&'a str>,
    lib_name: Option<&'a str>,
    addr: String,
    silent_ms: u64,
    age_ms: u64,
    state: &'static str,
    probes: u8,
    retransmits: u8,
    unacked: u32,
}

#[derive(Serialize)]
struct Presence {
    events: u64,
    subscribers: u64,
    dropped: u64,
}

#[derive(Serialize)]
struct Operators {
    admin_connections: u64,
    metrics_connections: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How often the page asks for this (it reads `refresh_ms`).
pub(super) const REFRESH: Duration = Duration::from_secs(2);

/// The configured bound on a detection reason's latency, and the keys it follows from.
fn bound(reason: ReapReason, config: &Config) -> (Option<Duration>, Option<&'static str>) {
    let ka = &config.keepalive;
    match reason {
        ReapReason::KeepaliveTimeout if ka.enabled => (
            Some(timers::idle_reap_after(ka)),
            Some("keepalive.idle + keepalive.interval × keepalive.probes (keepalive.user_timeout)"),
        ),
        ReapReason::RetransmitTimeout | ReapReason::Stalled => {
            (ka.effective_user_timeout(), Some("keepalive.user_timeout"))
        }
        ReapReason::IdleTimeout => (config.session.idle_timeout, Some("session.idle_timeout")),
        _ => (None, None),
    }
}

fn entry(e: &Seen, now: Instant) -> Entry<'_> {
    Entry {
        id: e.id,
        name: e.name.as_deref(),
        lib_name: e.lib_name.as_deref(),
        addr: e.addr.to_string(),
        silent_ms: ms(now.saturating_duration_since(e.last_rx)),
        age_ms: ms(now.saturating_duration_since(e.connected_at)),
        state: e.state.name(),
        probes: e.probes,
        retransmits: e.retransmits,
        unacked: e.unacked,
    }
}

/// Appends the JSON document.
pub(super) fn render(i: &Inputs<'_>, out: &mut Vec<u8>) {
    let (stats, config, now) = (i.stats, i.config, i.now);
    let minutes = stats.last_hour.minutes(now);
    let ka = &config.keepalive;
    let detection = ReapReason::ALL
        .into_iter()
        .filter(|r| r.is_detection())
        .map(|reason| {
            let h = &stats.reason(reason).latency;
            let q = h.summary();
            let (b, from) = bound(reason, config);
            Detection {
                reason: reason.name(),
                count: h.count(),
                min_ms: q.as_ref().map(|q| q.min),
                p50_ms: q.as_ref().map(|q| q.p50),
                p99_ms: q.as_ref().map(|q| q.p99),
                max_ms: q.as_ref().map(|q| q.max),
                mean_ms: (h.count() > 0).then(|| h.sum_ms() / h.count()),
                bound_ms: b.map(ms),
                bound_from: b.and(from),
            }
        })
        .collect();
    let swept = i.swept;
    let list = |pick: fn(&Swept) -> &Vec<Seen>| -> Vec<Entry<'_>> {
        swept
            .map(|s| pick(s).iter().take(TOP).map(|e| entry(e, now)).collect())
            .unwrap_or_default()
    };
    let doc = Status {
        schema: SCHEMA,
        version: env!("CARGO_PKG_VERSION"),
        uptime_ms: ms(now.saturating_duration_since(i.started)),
        now_unix_ms: ms((i.started_at + now.saturating_duration_since(i.started))
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()),
        refresh_ms: ms(REFRESH),
        sessions: Sessions {
            live: stats.live,
            peak: stats.peak,
            max: config.server.max_connections,
            accepted: stats.accepted,
            rejected: RejectCause::ALL.iter().map(|&c| stats.rejected(c)).sum(),
            reaped: stats.reaped_total(),
        },
        rates: Rates {
            window_ms: ms(minutes.rate_window()),
            accepts_per_s: minutes.rate(&minutes.accepts),
            reaps_per_s: minutes.rate(&minutes.all_reaps()),
        },
        reaps: Reaps {
            total: ReapReason::ALL
                .into_iter()
                .map(|r| Count {
                    reason: r.name(),
                    count: stats.reason(r).count,
                })
                .collect(),
            minute_ms: ms(MINUTE),
            accepts_per_minute: minutes.accepts.to_vec(),
            per_minute: ReapReason::ALL
                .into_iter()
                .filter(|r| minutes.reaps[r.index()].iter().any(|&n| n > 0))
                .map(|r| Series {
                    reason: r.name(),
                    counts: minutes.reaps[r.index()].to_vec(),
                })
                .collect(),
        },
        detection,
        keepalive: Keepalive {
            headline: timers::headline(config),
            summary: timers::summary(config),
            enabled: ka.enabled,
            idle_ms: ms(ka.idle),
            interval_ms: ms(ka.interval),
            probes: u64::from(ka.probes),
            user_timeout: match ka.user_timeout {
                UserTimeout::Auto => "auto".to_string(),
                UserTimeout::Off => "off".to_string(),
                UserTimeout::Fixed(d) => crate::config::duration::format_duration(d),
            },
            user_timeout_ms: ka.effective_user_timeout().map(ms),
            idle_reap_after_ms: ka.enabled.then(|| ms(timers::idle_reap_after(ka))),
            session_idle_timeout_ms: config.session.idle_timeout.map(ms),
        },
        watch: Watch {
            top: TOP,
            complete: swept.is_some(),
            age_ms: swept
                .and_then(|s| s.started)
                .map(|at| ms(now.saturating_duration_since(at))),
            sweep_ms: swept
                .and_then(|s| Some(s.done?.saturating_duration_since(s.started?)))
                .map(ms),
            scanned: swept.map_or(0, |s| s.scanned),
            ok: swept.map_or(0, |s| s.states[0]),
            suspect: swept.map_or(0, |s| s.states[1]),
            dead: swept.map_or(0, |s| s.states[2]),
        },
        suspect: list(|s| &s.suspect),
        silent: list(|s| &s.silent),
        presence: Presence {
            events: stats.presence.seq,
            subscribers: stats.presence.subscribers,
            dropped: stats.presence.dropped,
        },
        operators: Operators {
            admin_connections: i.ops.open[0],
            metrics_connections: i.ops.open[1],
        },
        fleet: i.fleet.clone(),
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, Escaping);
    // Serializing plain structs into a Vec cannot fail.
    let _ = doc.serialize(&mut ser);
}

/// serde_json's compact output, with `<`, `>` and `&` inside strings written as `\u003c`,
/// `\u003e` and `\u0026` (as Go's encoding/json does), so no client string is markup anywhere.
struct Escaping;

impl serde_json::ser::Formatter for Escaping {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(['<', '>', '&']) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let code = match rest.as_bytes()[at] {
                b'<' => "\\u003c",
                b'>' => "\\u003e",
                _ => "\\u0026",
            };
            writer.write_all(code.as_bytes())?;
            rest = &rest[at + 1..];
        }
        writer.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::last_hour::MINUTES;

    fn doc(stats: &Stats, now: Instant) -> serde_json::Value {
        doc_with(stats, now, None)
    }

    fn doc_with(stats: &Stats, now: Instant, fleet: Option<Fleet>) -> serde_json::Value {
        let config = Config::default();
        let mut out = Vec::new();
        render(
            &Inputs {
                now,
                stats,
                config: &config,
                ops: &OpsCounters::default(),
                started: now,
                started_at: SystemTime::now(),
                fleet,
                swept: None,
            },
            &mut out,
        );
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn counters_minutes_and_bounds() {
        let now = Instant::now();
        let mut stats = Stats::default();
        stats.on_accept(now);
        stats.on_accept(now);
        stats.on_reap(
            ReapReason::KeepaliveTimeout,
            Duration::from_secs(200),
            Duration::from_millis(120_500),
            now,
        );
        let v = doc(&stats, now);
        assert_eq!(v["schema"], 1);
        assert_eq!(v["sessions"]["live"], 1);
        assert_eq!(v["sessions"]["accepted"], 2);
        assert_eq!(v["reaps"]["accepts_per_minute"][MINUTES - 1], 2);
        assert_eq!(v["reaps"]["per_minute"][0]["reason"], "keepalive-timeout");
        assert_eq!(v["reaps"]["per_minute"][0]["counts"][MINUTES - 1], 1);
        assert_eq!(
            v["reaps"]["total"].as_array().unwrap().len(),
            ReapReason::ALL.len()
        );
        let ka = v["detection"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["reason"] == "keepalive-timeout")
            .unwrap();
        assert_eq!(ka["count"], 1);
        assert_eq!(ka["bound_ms"], 120_000, "the default 1m + 10s × 6");
        let reset = v["detection"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["reason"] == "reset")
            .unwrap();
        assert!(reset["bound_ms"].is_null() && reset["p50_ms"].is_null());
        assert_eq!(v["keepalive"]["summary"].as_array().unwrap().len(), 3);
        assert_eq!(v["watch"]["complete"], false);
        assert!(v.get("fleet").is_none(), "[fleet] is off");
    }

    #[test]
    fn a_fleet_member_has_the_documented_shape() {
        let fleet = Fleet {
            nodes: vec![FleetNode {
                node: "<b>node-a</b>".into(),
                epoch: 7,
                lease_age_ms: 1200,
                sessions: 42,
            }],
        };
        let v = doc_with(&Stats::default(), Instant::now(), Some(fleet));
        let n = &v["fleet"]["nodes"][0];
        assert_eq!(
            (&n["node"], &n["epoch"], &n["lease_age_ms"], &n["sessions"]),
            (&"<b>node-a</b>".into(), &7.into(), &1200.into(), &42.into())
        );
    }

    #[test]
    fn markup_characters_are_escaped_in_strings() {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut out, Escaping);
        "<script>\"a&b\"</script>".serialize(&mut ser).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#""\u003cscript\u003e\"a\u0026b\"\u003c/script\u003e""#
        );
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, "<script>\"a&b\"</script>");
    }
}
