//! The fleet's side thread: it alone talks to Redis, with the `redis` crate's blocking client,
//! so the event loop never waits for it.
//!
//! One connection, keepalive and `TCP_USER_TIMEOUT` on its socket and read/write timeouts of
//! one lease, so a dead Redis is noticed about as fast as a dead client. With `rediss://` it is
//! TLS (rustls, through the `redis` crate), its files read again at every connect so a rotated
//! certificate is used by the next connection (a file that became unreadable or bad is warned
//! about and the last good one used). The thread loops:
//! take what the loop queued (waiting at most [`TICK`]), write the events in one script call
//! per batch, then its timers: the lease (every lease/3) with a sweep for lost nodes, the
//! takeover inbox (every tick), the fleet view (every second). Any Redis error drops the
//! connection; the next connect asks the loop for a snapshot and resynchronises, so whatever
//! was dropped meanwhile (counted) is repaired in one atomic step.
//!
//! States: disconnected → connected, waiting for the snapshot (events are dropped and
//! counted: the snapshot covers them) → live (events are written, the lease renewed).
//!
//! On Redis Cluster every call goes through [`Worker::query`]: a `MOVED` reply reconnects to
//! the slot's owner and sends the call again (`cluster.rs` keeps the route), within the same
//! state, since the fleet's data is the same wherever the slot lives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use mio::Waker;
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{ClientTlsConfig, IntoConnectionInfo, TlsCertificates, Value};

use crate::config::credentials::{self, RedisTlsPem};
use crate::config::RedisTlsFiles;

use super::cluster::Route;
use super::{scripts, Command, Entry, Holder, Lost, NodeInfo, Op, Report, Row, Shared, View, TICK};

/// Events per script call.
const BATCH: usize = 512;
/// The fleet view is read this often.
const VIEW_EVERY: Duration = Duration::from_secs(1);
/// Names copied into the view at most (else lookups answer from the node alone).
const VIEW_MAX_NAMES: usize = 100_000;
/// A failed connect is retried after this long.
const RECONNECT_AFTER: Duration = Duration::from_millis(250);
/// Warnings about Redis at most this often (the rest are counted in `fleet_errors`).
const WARN_EVERY: Duration = Duration::from_secs(10);
/// `MOVED` replies followed within one call at most (a slot moves once; during a failover
/// the nodes may disagree for a moment: the call then fails and is retried after
/// [`RECONNECT_AFTER`]).
const MAX_HOPS: usize = 3;

/// What the worker needs from the config.
pub(super) struct Setup {
    pub url: String,
    pub password: Option<String>,
    pub node: String,
    pub epoch: u64,
    pub tag: String,
    pub stream: String,
    pub maxlen: u64,
    pub lease: Duration,
    pub fence: bool,
    /// With a `rediss://` URL: the files to read at every connect.
    pub tls: Option<RedisTlsFiles>,
}

pub(super) struct Worker {
    setup: Setup,
    commands: Receiver<Command>,
    reports: Sender<Report>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    done: Sender<()>,
    conn: Option<redis::Connection>,
    /// Which Redis node the next connect dials (Redis Cluster: the tag's slot owner).
    route: Route,
    /// The scripts' SHA1s, in [`scripts::ALL`]'s order, as Redis answered `SCRIPT LOAD`.
    shas: Vec<String>,
    /// Connected and resynchronised: events are written and the lease renewed.
    live: bool,
    /// The last time the lease was known held (renewed or registered).
    held_at: Option<Instant>,
    lapse_told: bool,
    next_renew: Instant,
    next_view: Instant,
    next_connect: Instant,
    /// No sweep for lost nodes before this: one lease after each connect, so that after a
    /// Redis restart (leases expired meanwhile) the live nodes re-register before anyone
    /// declares them lost.
    sweep_from: Instant,
    warned_at: Option<Instant>,
    /// When "connected" was last logged (on a cluster at most every [`WARN_EVERY`]: while
    /// the tag's master fails over, connects to the survivors succeed every few hundred ms).
    connected_logged: Option<Instant>,
    /// The TLS files as last read without fault.
    tls_pem: Option<RedisTlsPem>,
    tls_warned_at: Option<Instant>,
}

#[derive(Clone, Copy)]
enum Script {
    Publish = 0,
    Resync = 1,
    Renew = 2,
    Sweep = 3,
    Bye = 4,
    View = 5,
    Refuse = 6,
}

impl Worker {
    pub(super) fn new(
        setup: Setup,
        commands: Receiver<Command>,
        reports: Sender<Report>,
        waker: Arc<Waker>,
        shared: Arc<Shared>,
        done: Sender<()>,
    ) -> Worker {
        let now = Instant::now();
        let route = match setup.url.as_str().into_connection_info() {
            Ok(info) => Route::new(info.addr()),
            // Refused again, and logged, at the first connect.
            Err(_) => Route::default(),
        };
        Worker {
            route,
            setup,
            commands,
            reports,
            waker,
            shared,
            done,
            conn: None,
            shas: Vec::new(),
            live: false,
            held_at: None,
            lapse_told: false,
            next_renew: now,
            next_view: now,
            next_connect: now,
            sweep_from: now,
            warned_at: None,
            connected_logged: None,
            tls_pem: None,
            tls_warned_at: None,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            self.timers(Instant::now());
            let first = match self.commands.recv_timeout(TICK) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < 4 * BATCH {
                match self.commands.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.shared
                .taken
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let mut events = Vec::new();
            for cmd in batch {
                match cmd {
                    Command::Event(e) if self.live => events.push(e),
                    Command::Event(_) => {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Command::Snapshot(rows) => {
                        // Queued before the snapshot was taken: the snapshot has them.
                        events.clear();
                        if self.conn.is_some() {
                            self.resync(rows);
                        }
                    }
                    Command::RefuseClaim(name) => {
                        // After the events queued before it, so the claim it drops is there.
                        self.flush(std::mem::take(&mut events));
                        if self.live {
                            self.refuse(&name);
                        }
                    }
                    Command::Shutdown => {
                        self.flush(events);
                        self.bye();
                        let _ = self.done.send(());
                        return;
                    }
                }
            }
            self.flush(events);
        }
    }

    /// `session.unique_names` as a script argument.
    fn unique(&self) -> &'static str {
        if self.shared.unique_names.load(Ordering::Relaxed) {
            "1"
        } else {
            "0"
        }
    }

    fn report(&self, r: Report) {
        if self.reports.send(r).is_ok() {
            // The loop is gone or its poller closed only at shutdown; nothing to do then.
            let _ = self.waker.wake();
        }
    }

    /// Counts a Redis error and drops the connection: the next connect resynchronises.
    fn fail(&mut self, what: &str, e: &redis::RedisError) {
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        self.shared.up.store(false, Ordering::Relaxed);
        let now = Instant::now();
        if self.warned_at.is_none_or(|at| now >= at + WARN_EVERY) {
            self.warned_at = Some(now);
            warn!(
                "fleet: Redis {what} failed: {e}; serving on, reconnecting (fleet_errors={})",
                self.shared.errors.load(Ordering::Relaxed)
            );
        }
        self.conn = None;
        self.live = false;
        self.next_connect = now + RECONNECT_AFTER;
    }

    fn connect(&mut self) -> Result<(), redis::RedisError> {
        let lease = self.setup.lease;
        let mut info = self.setup.url.as_str().into_connection_info()?;
        if let Some(addr) = self.route.aim(info.addr()) {
            info = info.set_addr(addr);
        }
        let tcp = TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(
                TcpKeepalive::new()
                    .with_time(Duration::from_secs(1))
                    .with_interval(Duration::from_secs(1))
                    .with_retries(lease.as_secs().clamp(1, 10) as u32),
            )
            .set_user_timeout(lease);
        info = info.set_tcp_settings(tcp);
        if let Some(pw) = &self.setup.password {
            let redis = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(redis);
        }
        let client = match self.setup.tls.clone() {
            None => redis::Client::open(info)?,
            Some(files) => redis::Client::build_with_tls(info, self.tls_certificates(&files)?)?,
        };
        let mut conn = client.get_connection_with_timeout(lease)?;
        conn.set_read_timeout(Some(lease))?;
        conn.set_write_timeout(Some(lease))?;
        let mut shas = Vec::with_capacity(scripts::ALL.len());
        for body in scripts::ALL {
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(scripts::source(body))
                .query(&mut conn)?;
            shas.push(sha);
        }
        self.route.learn(&mut conn);
        self.shas = shas;
        self.conn = Some(conn);
        self.shared.up.store(true, Ordering::Relaxed);
        self.sweep_from = Instant::now() + lease;
        self.log_connected(Instant::now());
        Ok(())
    }

    /// "connected", on a cluster at most every [`WARN_EVERY`].
    fn log_connected(&mut self, now: Instant) {
        if self.route.is_cluster()
            && self
                .connected_logged
                .is_some_and(|at| now < at + WARN_EVERY)
        {
            return;
        }
        self.connected_logged = Some(now);
        info!(
            "fleet: connected to Redis{} as node {}",
            if self.setup.tls.is_some() {
                " over TLS"
            } else {
                ""
            },
            self.setup.node
        );
    }

    /// The `rediss://` files, read again now; when they cannot be used, the last good ones
    /// (warned about at most every [`WARN_EVERY`]), or the error when there are none.
    fn tls_certificates(
        &mut self,
        files: &RedisTlsFiles,
    ) -> Result<TlsCertificates, redis::RedisError> {
        match credentials::load_redis_tls(files, SystemTime::now()) {
            Ok(pem) => self.tls_pem = Some(pem),
            Err(e) => {
                if self.tls_pem.is_none() {
                    return Err(redis::RedisError::from(std::io::Error::other(
                        e.to_string(),
                    )));
                }
                let now = Instant::now();
                if self.tls_warned_at.is_none_or(|at| now >= at + WARN_EVERY) {
                    self.tls_warned_at = Some(now);
                    warn!("fleet: {e}; connecting with the TLS files as last read");
                }
            }
        }
        let pem = self.tls_pem.clone().unwrap_or_default();
        Ok(TlsCertificates {
            client_tls: pem.client.map(|(client_cert, client_key)| ClientTlsConfig {
                client_cert,
                client_key,
            }),
            root_cert: pem.roots,
        })
    }

    /// `EVALSHA` of one script with the common arguments, then `extra`.
    fn eval<T: redis::FromRedisValue>(
        &mut self,
        script: Script,
        extra: impl FnOnce(&mut redis::Cmd),
    ) -> Result<T, redis::RedisError> {
        if self.shas.len() <= script as usize {
            return Err(not_connected());
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.shas[script as usize])
            .arg(1)
            .arg(&self.setup.stream)
            .arg(&self.setup.tag)
            .arg(&self.setup.node)
            .arg(self.setup.epoch)
            .arg(self.setup.maxlen);
        extra(&mut cmd);
        self.query(&cmd)
    }

    /// Sends `cmd`; a `MOVED` reply (Redis Cluster: the tag's slot lives elsewhere)
    /// reconnects to the node it names and sends `cmd` again, at most [`MAX_HOPS`] times.
    /// MOVED means the command did not run, so a retried batch is written once.
    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut hops = 0;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(not_connected());
            };
            match cmd.query(conn) {
                Err(e) if hops < MAX_HOPS && self.follow(&e) => hops += 1,
                result => return result,
            }
        }
    }

    /// A `MOVED` reply: counted, and the connection moved to the node it names. False when
    /// `e` is no MOVED or that node cannot be reached (the caller fails as for any error;
    /// the next connect tries the other nodes).
    fn follow(&mut self, e: &redis::RedisError) -> bool {
        let Some((to, slot)) = e.redirect_node() else {
            return false;
        };
        if e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::Moved) {
            return false;
        }
        let n = self.shared.redirects.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.route.moved(to, slot, n, Instant::now()) {
            return false;
        }
        self.conn = None;
        match self.connect() {
            Ok(()) => true,
            Err(_) => {
                self.route.unreachable();
                false
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        if self.conn.is_none() && now >= self.next_connect {
            match self.connect() {
                Ok(()) => self.report(Report::WantSnapshot),
                Err(e) => {
                    self.route.unreachable();
                    self.fail("connect", &e);
                }
            }
        }
        let lease = self.setup.lease;
        if !self.lapse_told && self.held_at.is_some_and(|at| now >= at + lease) {
            self.lapse(now);
        }
        if self.live && now >= self.next_renew {
            self.next_renew = now + lease / 3;
            let ms = lease.as_millis() as u64;
            match self.eval::<i64>(Script::Renew, |c| {
                c.arg(ms);
            }) {
                Ok(1) => {
                    self.held_at = Some(now);
                    self.shared.held(now);
                    self.lapse_told = false;
                }
                Ok(_) => self.lost(now),
                Err(e) => return self.fail("lease renewal", &e),
            }
            if now < self.sweep_from {
                return self.after_renew(now);
            }
            match self.eval::<(u64, u64)>(Script::Sweep, |_| {}) {
                Ok((0, _)) => {}
                Ok((nodes, sessions)) => {
                    self.shared.nodes_lost.fetch_add(nodes, Ordering::Relaxed);
                    self.shared
                        .sessions_lost
                        .fetch_add(sessions, Ordering::Relaxed);
                    info!("fleet: {nodes} node(s) lost (lease lapsed): published {sessions} sessions as left node-lost");
                }
                Err(e) => return self.fail("sweep", &e),
            }
        }
        self.after_renew(now);
    }

    /// The timers of every tick: the takeover inbox and the fleet view.
    fn after_renew(&mut self, now: Instant) {
        if self.live {
            self.inbox();
        }
        if self.conn.is_some() && now >= self.next_view {
            self.next_view = now + VIEW_EVERY;
            self.view(now);
        }
    }

    /// The lease lapsed: the fleet has (or will have) published this node's sessions
    /// `node-lost`. With `fleet.fence` the loop reaps them `fenced`.
    fn lapse(&mut self, _now: Instant) {
        self.lapse_told = true;
        self.shared.lapses.fetch_add(1, Ordering::Relaxed);
        warn!(
            "fleet: node {} lost its lease (Redis unreachable or slow for {} ms){}",
            self.setup.node,
            self.setup.lease.as_millis(),
            if self.setup.fence {
                ": fleet.fence reaps every session as fenced"
            } else {
                ": serving on; sessions are re-announced when Redis is back"
            }
        );
        // `fleet.fence` is the loop's: it reads `Shared::held_ms` on its own clock.
    }

    /// Redis said the node's lease had lapsed: resynchronise. `fleet.fence` applies at once,
    /// whatever this node's clock says about the lease.
    fn lost(&mut self, now: Instant) {
        self.shared.held_ms.store(1, Ordering::Relaxed);
        if !self.lapse_told {
            self.lapse(now);
        }
        self.live = false;
        self.report(Report::WantSnapshot);
    }

    fn flush(&mut self, events: Vec<Entry>) {
        for chunk in events.chunks(BATCH) {
            if !self.live {
                self.shared
                    .dropped
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                continue;
            }
            let unique = self.unique();
            let started = Instant::now();
            let result = self.eval::<(String, Vec<String>)>(Script::Publish, |c| {
                c.arg(unique);
                for e in chunk {
                    let (op, name, prev, row) = match &e.op {
                        Op::Joined { row } => ("j", "", "", row.as_str()),
                        Op::Named {
                            name,
                            previous,
                            identity,
                        } => (
                            "n",
                            name.as_deref().unwrap_or(""),
                            previous.as_deref().unwrap_or(""),
                            identity.as_deref().unwrap_or(""),
                        ),
                        Op::Left { name } => ("l", name.as_deref().unwrap_or(""), "", ""),
                    };
                    c.arg(op)
                        .arg(e.id)
                        .arg(name)
                        .arg(prev)
                        .arg(&e.json)
                        .arg(row);
                }
            });
            let us = started.elapsed().as_micros() as u64;
            let n = chunk.len() as u64;
            let (result, refused) = match result {
                Ok((status, refused)) => (Ok(status), refused),
                Err(e) => (Err(e), Vec::new()),
            };
            for r in refused.chunks(3) {
                if let [id, name, by] = r {
                    self.report(Report::Lost {
                        id: id.parse().unwrap_or(0),
                        name: name.clone(),
                        by: by.clone(),
                        why: Lost::Identity,
                    });
                }
            }
            match result.as_deref() {
                Ok("ok") | Ok("resync") => {
                    let s = &self.shared;
                    s.written.fetch_add(n, Ordering::Relaxed);
                    s.batches.fetch_add(1, Ordering::Relaxed);
                    s.write_us_total.fetch_add(us, Ordering::Relaxed);
                    max(&s.write_us_max, us);
                    if result.as_deref() == Ok("resync") {
                        self.live = false;
                        self.report(Report::WantSnapshot);
                    }
                }
                Ok(_) => {
                    self.shared.dropped.fetch_add(n, Ordering::Relaxed);
                    self.lost(Instant::now());
                }
                Err(e) => {
                    self.shared.dropped.fetch_add(n, Ordering::Relaxed);
                    self.fail("write", e);
                }
            }
        }
    }

    fn resync(&mut self, rows: Vec<Row>) {
        let names: HashMap<u64, String> = rows
            .iter()
            .filter_map(|r| r.name.clone().map(|n| (r.id, n)))
            .collect();
        let ms = self.setup.lease.as_millis() as u64;
        let unique = self.unique();
        let count = rows.len();
        match self.eval::<Vec<u64>>(Script::Resync, |c| {
            c.arg(ms).arg(unique);
            for r in &rows {
                c.arg(r.id)
                    .arg(&r.json)
                    .arg(r.name.as_deref().unwrap_or(""));
            }
        }) {
            Ok(conflicts) => {
                let now = Instant::now();
                self.live = true;
                self.held_at = Some(now);
                self.shared.held(now);
                self.lapse_told = false;
                self.next_renew = now + self.setup.lease / 3;
                self.shared.resyncs.fetch_add(1, Ordering::Relaxed);
                info!(
                    "fleet: node {} announced {count} live sessions (resync)",
                    self.setup.node
                );
                for id in conflicts {
                    if let Some(name) = names.get(&id) {
                        self.report(Report::Lost {
                            id,
                            name: name.clone(),
                            by: "(resync)".to_owned(),
                            why: Lost::TakenMeanwhile,
                        });
                    }
                }
            }
            Err(e) => self.fail("resync", &e),
        }
    }

    /// A holder here kept `name`: the claim waiting for it is dropped and its node told.
    fn refuse(&mut self, name: &str) {
        if let Err(e) = self.eval::<i64>(Script::Refuse, |c| {
            c.arg(name);
        }) {
            self.fail("refuse", &e);
        }
    }

    /// Takeover requests from other nodes (their sessions claimed names held here), and
    /// claims made here that lost.
    fn inbox(&mut self) {
        let key = format!("{}:inbox:{}", self.setup.tag, self.setup.node);
        if self.conn.is_none() {
            return;
        }
        let items: Result<Option<Vec<String>>, _> =
            self.query(redis::cmd("LPOP").arg(&key).arg(256));
        match items {
            Ok(items) => {
                for item in items.unwrap_or_default() {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&item) else {
                        continue;
                    };
                    let (Some(id), Some(name)) = (v["id"].as_u64(), v["name"].as_str()) else {
                        continue;
                    };
                    let by = v["by"].as_str().unwrap_or("?").to_owned();
                    let name = name.to_owned();
                    if let Some(word) = v["lost"].as_str() {
                        self.report(Report::Lost {
                            id,
                            name,
                            by,
                            why: Lost::from_word(word),
                        });
                        continue;
                    }
                    self.shared.takeovers.fetch_add(1, Ordering::Relaxed);
                    self.report(Report::Takeover { id, name, by });
                }
            }
            Err(e) => self.fail("inbox", &e),
        }
    }

    fn view(&mut self, now: Instant) {
        let result = self.eval::<(Vec<Value>, Option<Vec<String>>)>(Script::View, |c| {
            c.arg(VIEW_MAX_NAMES);
        });
        let (flat, names) = match result {
            Ok(v) => v,
            Err(e) => return self.fail("view", &e),
        };
        let mut nodes = Vec::new();
        for n in flat.chunks(4) {
            if let [node, epoch, left, sessions] = n {
                nodes.push(NodeInfo {
                    node: text(node),
                    epoch: text(epoch).parse().unwrap_or(0),
                    lease_left_ms: int(left),
                    sessions: int(sessions).max(0) as u64,
                });
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let names = names.map(|flat| {
            let mut map = HashMap::new();
            for kv in flat.chunks(2) {
                if let [name, list] = kv {
                    map.insert(name.clone(), Holder::list(list));
                }
            }
            map
        });
        self.report(Report::View(View {
            nodes,
            names,
            at: Some(now),
        }));
    }

    /// A clean shutdown: the node leaves the fleet (its lease and entry removed).
    fn bye(&mut self) {
        if self.live {
            if let Err(e) = self.eval::<i64>(Script::Bye, |_| {}) {
                warn!("fleet: could not leave the fleet cleanly: {e}; its lease will lapse");
            }
        }
    }
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected))
}

fn max(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => text(other).parse().unwrap_or(-1),
    }
}
