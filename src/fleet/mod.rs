//! The fleet: this node's share of one presence view kept in Redis (docs/fleet.md).
//!
//! The event loop owns a [`Fleet`]; a side thread (`worker.rs`) owns the Redis connection.
//! They talk through two channels: a bounded queue of [`Command`]s from the loop (each
//! presence event, a snapshot of the live sessions, shutdown) and [`Report`]s back (a
//! snapshot is wanted, a remote node takes a name, the lease lapsed, the fleet's view), with
//! a `mio::Waker` on token [`FLEET`] so the loop picks them up on its next turn.
//!
//! Invariants:
//! - The loop never blocks on Redis: it only `try_send`s. A full queue drops the event,
//!   counts it and owes the worker a snapshot ([`Fleet::snapshot_due`]), which the worker
//!   turns into one atomic resync, so the table in Redis converges to the node's truth.
//! - Off (`fleet.redis` empty) nothing is started and every call is a no-op.
//! - The event JSON written to the stream is the admin channel's JSON (the same bytes, so the
//!   same `seq`, `epoch` and `at`) with `"node"` added at the end.

mod cluster;
mod scripts;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Registry, Token, Waker};
use serde::Serialize;

use crate::config::Config;
use crate::telemetry::presence_events::Event;

/// The worker's waker. Far above every session token (`SESSION_BASE` + slab key).
pub(crate) const FLEET: Token = Token(usize::MAX - 1);

/// Events the queue holds before the loop drops them (and owes a snapshot). At a few hundred
/// bytes each, at most some tens of MB while Redis is slow; the worker drains it at once
/// while Redis is away (counting what it could not write).
const QUEUE_BOUND: usize = 65_536;

/// How often the worker looks at its inbox (takeovers) and the loop retries a snapshot.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// A presence event as the worker writes it.
#[derive(Debug)]
pub(crate) struct Entry {
    id: u64,
    op: Op,
    /// The stream entry's `event` field.
    json: String,
}

#[derive(Debug)]
enum Op {
    /// The session's row in the live table.
    Joined {
        row: String,
    },
    Named {
        name: Option<String>,
        previous: Option<String>,
        /// The session's identity, for the identity rule across nodes.
        identity: Option<String>,
    },
    Left {
        name: Option<String>,
    },
}

/// One live session, for a snapshot.
#[derive(Debug)]
pub(crate) struct Row {
    id: u64,
    json: String,
    name: Option<String>,
}

/// What the loop hands the worker.
#[derive(Debug)]
enum Command {
    Event(Entry),
    Snapshot(Vec<Row>),
    /// A holder here kept `name` against another node's claim: drop the claim and tell the
    /// claimant's node it lost.
    RefuseClaim(String),
    Shutdown,
}

/// Why a claim of a name made on this node lost to another node's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The holder on the other node proved another identity.
    Identity,
    /// The holder on the other node is live and keeps it (`session.takeover = "stale"`).
    LiveHolder,
    /// A newer claim of the name, from another session, took it first.
    Superseded,
    /// Another node's session took the name while this node could not write (a resync).
    TakenMeanwhile,
}

impl Lost {
    /// The word an inbox entry carries (`lost`), as the scripts write it.
    fn from_word(w: &str) -> Lost {
        match w {
            "live-holder" => Lost::LiveHolder,
            "identity" => Lost::Identity,
            _ => Lost::Superseded,
        }
    }

    /// For the log line.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Lost::Identity => "a session there holds it with another identity",
            Lost::LiveHolder => "its live holder there keeps it (session.takeover = \"stale\")",
            Lost::Superseded => "a newer claim from there took it",
            Lost::TakenMeanwhile => "a session there took it while this node was cut off",
        }
    }
}

/// What the worker hands back.
#[derive(Debug)]
enum Report {
    /// Send a snapshot of the live sessions (after a connect, a lapse, a dropped event).
    WantSnapshot,
    /// Node `by` claimed `name`: reap its holder `id` here (`replaced`).
    Takeover {
        id: u64,
        name: String,
        by: String,
    },
    /// This node's session `id` took `name`, and lost it to node `by`: reap the claimant.
    Lost {
        id: u64,
        name: String,
        by: String,
        why: Lost,
    },
    View(View),
}

/// What the loop must do after [`Fleet::ready`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// Reap the session with this id if it still holds this name (`replaced`): node `by`
    /// claimed it.
    Replace { id: u64, name: String, by: String },
    /// Reap the session with this id if it still holds this name: its claim lost to node `by`
    /// (`name-refused`, or `replaced` when another session took the name).
    Lost {
        id: u64,
        name: String,
        by: String,
        why: Lost,
    },
}

/// The fleet as the worker last read it (every second): for `FLEET NODES` and `CLIENT LOOKUP`.
#[derive(Debug, Default, Clone)]
pub(crate) struct View {
    pub nodes: Vec<NodeInfo>,
    /// Name → holders (node, session id, address); `None` when the fleet holds too many names
    /// to copy (lookups answer from this node alone).
    pub names: Option<std::collections::HashMap<String, Vec<Holder>>>,
    /// When it was read.
    pub at: Option<Instant>,
}

/// A name's holder somewhere in the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub node: String,
    pub id: u64,
    pub addr: String,
    /// The identity it proved (a certificate, a token), if any.
    pub identity: Option<String>,
}

impl Holder {
    /// One entry of a `T:names` list: `[node, id, addr, identity]`, the identity `""` when
    /// none (nodes before the identity rule wrote three elements).
    fn from_json(v: &serde_json::Value) -> Option<Holder> {
        let a = v.as_array()?;
        Some(Holder {
            node: a.first()?.as_str()?.to_owned(),
            id: a.get(1)?.as_u64()?,
            addr: a.get(2)?.as_str()?.to_owned(),
            identity: a
                .get(3)
                .and_then(|i| i.as_str())
                .filter(|i| !i.is_empty())
                .map(str::to_owned),
        })
    }

    /// The holders in one `T:names` value (unparsable entries are left out).
    pub(crate) fn list(json: &str) -> Vec<Holder> {
        serde_json::from_str::<Vec<serde_json::Value>>(json)
            .map(|l| l.iter().filter_map(Holder::from_json).collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeInfo {
    pub node: String,
    pub epoch: u64,
    /// Time left on its lease, in ms (negative: gone, not yet swept).
    pub lease_left_ms: i64,
    pub sessions: u64,
}

/// Counters the worker keeps and `INFO` / `/metrics` read.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What `held_ms` counts from.
    pub base: Instant,
    /// When the lease was last known held (renewed or registered), in ms after `base`; 0 =
    /// not yet. The loop reads it for `fleet.fence`, so fencing never waits for the worker
    /// (which may sit in a Redis call for up to a lease).
    pub held_ms: AtomicU64,
    /// `session.unique_names`, as the last reload left it.
    pub unique_names: AtomicBool,
    pub up: AtomicBool,
    pub queued: AtomicU64,
    pub taken: AtomicU64,
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub batches: AtomicU64,
    pub write_us_total: AtomicU64,
    pub write_us_max: AtomicU64,
    pub nodes_lost: AtomicU64,
    pub sessions_lost: AtomicU64,
    pub resyncs: AtomicU64,
    pub lapses: AtomicU64,
    pub takeovers: AtomicU64,
    pub errors: AtomicU64,
    /// `MOVED` replies followed (Redis Cluster).
    pub redirects: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            base: Instant::now(),
            held_ms: AtomicU64::new(0),
            unique_names: AtomicBool::new(false),
            up: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            write_us_total: AtomicU64::new(0),
            write_us_max: AtomicU64::new(0),
            nodes_lost: AtomicU64::new(0),
            sessions_lost: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            lapses: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
        }
    }

    /// Records that the lease is held now.
    pub(crate) fn held(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(0);
        self.held_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// When the lease lapses (or lapsed), if it was ever held.
    fn lapses_at(&self, lease: Duration) -> Option<Instant> {
        match self.held_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms) + lease),
        }
    }
}

/// A copy of the counters, for `INFO` and `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub on: bool,
    pub node: String,
    pub epoch: u64,
    pub up: bool,
    pub queue_depth: u64,
    pub written: u64,
    pub dropped: u64,
    pub batches: u64,
    pub write_us_total: u64,
    pub write_us_max: u64,
    pub nodes_lost: u64,
    pub sessions_lost: u64,
    pub resyncs: u64,
    pub lapses: u64,
    pub takeovers: u64,
    pub errors: u64,
    pub redirects: u64,
    pub fenced: u64,
}

struct Link {
    tx: SyncSender<Command>,
    rx: Receiver<Report>,
    shared: Arc<Shared>,
    /// Told when the worker has said goodbye to Redis.
    done: Receiver<()>,
}

/// The loop's side of the fleet.
pub(crate) struct Fleet {
    link: Option<Link>,
    node: String,
    epoch: u64,
    snapshot_due: bool,
    /// A snapshot that did not fit in the queue is tried again at this time, not every turn
    /// (building one costs a pass over the sessions).
    snapshot_retry: Option<Instant>,
    view: View,
    /// Events the loop could not queue (the worker counts what it could not write).
    dropped_here: u64,
    /// Sessions reaped `fenced`.
    pub fenced: u64,
    /// The fencing warning was logged for this lapse.
    pub fence_warned: bool,
    /// `fleet.fence`, and the lease.
    fence: bool,
    lease: Duration,
}

impl Fleet {
    /// A fleet that is off.
    pub(crate) fn off(epoch: u64) -> Fleet {
        Fleet {
            link: None,
            node: String::new(),
            epoch,
            snapshot_due: false,
            snapshot_retry: None,
            view: View::default(),
            dropped_here: 0,
            fenced: 0,
            fence_warned: false,
            fence: false,
            lease: Duration::ZERO,
        }
    }

    /// Starts the worker when `fleet.redis` is set. `port` names the node by default.
    pub(crate) fn start(
        config: &Config,
        port: u16,
        epoch: u64,
        registry: &Registry,
    ) -> io::Result<Fleet> {
        let mut fleet = Fleet::off(epoch);
        let Some(url) = config.fleet.redis.clone() else {
            return Ok(fleet);
        };
        let node = config.fleet.node_name(port);
        let url_is_tls = url.starts_with("rediss://");
        let waker = Arc::new(Waker::new(registry, FLEET)?);
        let (tx, commands) = mpsc::sync_channel(QUEUE_BOUND);
        let (reports, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let shared = Arc::new(Shared::new());
        shared
            .unique_names
            .store(config.session.unique_names, Ordering::Relaxed);
        let setup = worker::Setup {
            url,
            password: config
                .fleet
                .password
                .as_ref()
                .map(|p| String::from_utf8_lossy(p.secret()).into_owned()),
            node: node.clone(),
            epoch,
            tag: config.fleet.hash_tag().to_owned(),
            stream: config.fleet.stream.clone(),
            maxlen: config.fleet.stream_maxlen,
            lease: config.fleet.lease,
            fence: config.fleet.fence,
            tls: url_is_tls.then(|| config.fleet.tls.clone()),
        };
        let w = worker::Worker::new(setup, commands, reports, waker, shared.clone(), done_tx);
        std::thread::Builder::new()
            .name("vigild-fleet".into())
            .spawn(move || w.run())?;
        info!(
            "fleet: node {node} epoch {epoch} on {} (stream {}, lease {} ms)",
            config.fleet.redis.as_deref().unwrap_or(""),
            config.fleet.stream,
            config.fleet.lease.as_millis()
        );
        fleet.link = Some(Link {
            tx,
            rx,
            shared,
            done,
        });
        fleet.node = node;
        fleet.fence = config.fleet.fence;
        fleet.lease = config.fleet.lease;
        Ok(fleet)
    }

    pub(crate) fn is_on(&self) -> bool {
        self.link.is_some()
    }

    /// Queues one presence event, `json` being the admin channel's bytes for it.
    pub(crate) fn publish(&mut self, event: &Event<'_>, json: &[u8], at_ms: u64) {
        let Some(link) = &self.link else {
            return;
        };
        let mut text = String::with_capacity(json.len() + self.node.len() + 12);
        text.push_str(std::str::from_utf8(json).unwrap_or("{}"));
        if text.ends_with('}') {
            text.pop();
            text.push_str(",\"node\":");
            text.push_str(&serde_json::to_string(&self.node).unwrap_or_default());
            text.push('}');
        }
        let (id, op) = match *event {
            Event::Joined { id, addr, laddr } => (
                id,
                Op::Joined {
                    row: row_json(id, addr, laddr, None, None, at_ms, self.epoch),
                },
            ),
            Event::Named {
                id,
                name,
                previous,
                identity,
            } => (
                id,
                Op::Named {
                    name: name.map(str::to_owned),
                    previous: previous.map(str::to_owned),
                    identity: identity.map(str::to_owned),
                },
            ),
            Event::Left(l) => (
                l.id,
                Op::Left {
                    name: l.name.map(str::to_owned),
                },
            ),
        };
        let entry = Entry { id, op, json: text };
        match link.tx.try_send(Command::Event(entry)) {
            Ok(()) => {
                link.shared.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped_here += 1;
                self.snapshot_due = true;
            }
        }
    }

    /// The worker woke the loop: takes its reports and says what the loop must do.
    pub(crate) fn ready(&mut self) -> Vec<Wanted> {
        let mut wanted = Vec::new();
        let Some(link) = &self.link else {
            return wanted;
        };
        while let Ok(report) = link.rx.try_recv() {
            match report {
                Report::WantSnapshot => self.snapshot_due = true,
                Report::Takeover { id, name, by } => wanted.push(Wanted::Replace { id, name, by }),
                Report::Lost { id, name, by, why } => {
                    wanted.push(Wanted::Lost { id, name, by, why })
                }
                Report::View(v) => self.view = v,
            }
        }
        wanted
    }

    /// A holder here kept `name` against another node's claim: the worker drops the claim
    /// and tells the claimant's node. Not queued (the queue is full or the fleet off): the
    /// claimant's node keeps the name until the next takeover request (counted as dropped).
    pub(crate) fn refuse_claim(&mut self, name: &str) {
        let Some(link) = &self.link else {
            return;
        };
        match link.tx.try_send(Command::RefuseClaim(name.to_owned())) {
            Ok(()) => {
                link.shared.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => self.dropped_here += 1,
        }
    }

    /// Whether the worker waits for a snapshot of the live sessions and the loop should build
    /// one now: not while the queue is full, and at most once a tick after a failed try.
    pub(crate) fn snapshot_due(&self, now: Instant) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        let depth = link
            .shared
            .queued
            .load(Ordering::Relaxed)
            .saturating_sub(link.shared.taken.load(Ordering::Relaxed));
        self.snapshot_due
            && self.snapshot_retry.is_none_or(|at| now >= at)
            && depth < QUEUE_BOUND as u64
    }

    /// Hands the worker the live sessions; when the queue is full it is tried again a tick
    /// later. A worker that is gone (it never exits while the loop runs, but if it did)
    /// turns the fleet off, said once.
    pub(crate) fn send_snapshot(&mut self, rows: Vec<Row>, now: Instant) {
        let Some(link) = &self.link else {
            return;
        };
        match link.tx.try_send(Command::Snapshot(rows)) {
            Ok(()) => {
                link.shared.queued.fetch_add(1, Ordering::Relaxed);
                self.snapshot_due = false;
                self.snapshot_retry = None;
            }
            Err(TrySendError::Full(_)) => self.snapshot_retry = Some(now + TICK),
            Err(TrySendError::Disconnected(_)) => {
                warn!("fleet: the Redis thread is gone; the fleet is off until a restart");
                self.link = None;
            }
        }
    }

    /// A snapshot that could not be queued is retried a tick later; with `fleet.fence`, the
    /// lease's lapse (and every tick while lapsed) is a deadline too.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        let snapshot = (self.snapshot_due && self.link.is_some()).then(|| {
            self.snapshot_retry
                .map_or(now, |at| at.max(now))
                .max(now + TICK)
        });
        let lapse = self.fencing_from().map(|at| at.max(now + TICK));
        snapshot.into_iter().chain(lapse).min()
    }

    /// With `fleet.fence`: when the lease lapses (or lapsed), by this node's own clock.
    fn fencing_from(&self) -> Option<Instant> {
        let link = self.link.as_ref().filter(|_| self.fence)?;
        link.shared.lapses_at(self.lease)
    }

    /// `fleet.fence` and the lease has lapsed: no session may be served as if the fleet
    /// knew it (the loop reaps them `fenced`, newcomers too, until the lease is held again).
    pub(crate) fn fenced_now(&self, now: Instant) -> bool {
        self.fencing_from().is_some_and(|at| now >= at)
    }

    /// After a reload: `session.unique_names` applies to the fleet's next writes; the rest of
    /// `[fleet]` only at the next start (said once, as the other restart-only keys are).
    pub(crate) fn reload(&self, old: &Config, new: &Config) {
        if let Some(link) = &self.link {
            link.shared
                .unique_names
                .store(new.session.unique_names, Ordering::Relaxed);
        }
        if old.fleet != new.fleet {
            warn!(
                "reload: [fleet] changes apply at the next start; the running node {} keeps \
                 its Redis link and lease",
                if self.node.is_empty() {
                    "(fleet off)"
                } else {
                    &self.node
                }
            );
        }
    }

    pub(crate) fn view(&self) -> &View {
        &self.view
    }

    /// The identity rule across nodes, as far as the view (at most about a second old) knows:
    /// the node of a holder elsewhere that proved an identity other than `identity`, which a
    /// claim of `name` cannot take the name from. Redis makes the final check atomically
    /// (a claim the view let through may still be refused there: [`Wanted::Refused`]).
    pub(crate) fn outranked_by(&self, name: &str, identity: Option<&str>) -> Option<&Holder> {
        let names = self.view.names.as_ref()?;
        names.get(name)?.iter().find(|h| {
            h.node != self.node
                && h.identity
                    .as_deref()
                    .is_some_and(|held| Some(held) != identity)
        })
    }

    /// This node's name and epoch.
    pub(crate) fn node(&self) -> (&str, u64) {
        (&self.node, self.epoch)
    }

    pub(crate) fn status(&self) -> Status {
        let Some(link) = &self.link else {
            return Status {
                epoch: self.epoch,
                ..Status::default()
            };
        };
        let s = &link.shared;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Status {
            on: true,
            node: self.node.clone(),
            epoch: self.epoch,
            up: s.up.load(Ordering::Relaxed),
            queue_depth: get(&s.queued).saturating_sub(get(&s.taken)),
            written: get(&s.written),
            dropped: get(&s.dropped) + self.dropped_here,
            batches: get(&s.batches),
            write_us_total: get(&s.write_us_total),
            write_us_max: get(&s.write_us_max),
            nodes_lost: get(&s.nodes_lost),
            sessions_lost: get(&s.sessions_lost),
            resyncs: get(&s.resyncs),
            lapses: get(&s.lapses),
            takeovers: get(&s.takeovers),
            errors: get(&s.errors),
            redirects: get(&s.redirects),
            fenced: self.fenced,
        }
    }

    /// At shutdown, after the last `left` events were queued: the worker writes them, says
    /// goodbye to Redis (the node leaves the fleet cleanly) and stops. Waits at most `bound`.
    pub(crate) fn shutdown(&mut self, bound: Duration) {
        let Some(link) = self.link.take() else {
            return;
        };
        let deadline = Instant::now() + bound;
        let mut cmd = Command::Shutdown;
        // The queue may be full: a blocking send, bounded, is fine now that the loop stops.
        loop {
            match link.tx.try_send(cmd) {
                Ok(()) => break,
                Err(TrySendError::Full(c)) if Instant::now() < deadline => {
                    cmd = c;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => {
                    warn!("fleet: shutdown could not reach the worker; its lease will lapse");
                    return;
                }
            }
        }
        if link
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            warn!("fleet: Redis did not take the last events within {bound:?}; the fleet will see this node lost when its lease lapses");
        }
    }
}

#[derive(Serialize)]
struct RowJson<'a> {
    id: u64,
    addr: SocketAddr,
    laddr: Option<SocketAddr>,
    name: Option<&'a str>,
    at: u64,
    epoch: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
}

/// A session's row in the live table.
pub(crate) fn row_json(
    id: u64,
    addr: SocketAddr,
    laddr: Option<SocketAddr>,
    name: Option<&str>,
    identity: Option<&str>,
    at: u64,
    epoch: u64,
) -> String {
    serde_json::to_string(&RowJson {
        id,
        addr,
        laddr,
        name,
        at,
        epoch,
        identity,
    })
    .unwrap_or_default()
}

/// One live session for [`Fleet::send_snapshot`].
pub(crate) fn row(
    id: u64,
    addr: SocketAddr,
    laddr: Option<SocketAddr>,
    name: Option<&str>,
    identity: Option<&str>,
    at: u64,
    epoch: u64,
) -> Row {
    Row {
        id,
        json: row_json(id, addr, laddr, name, identity, at, epoch),
        name: name.map(str::to_owned),
    }
}
