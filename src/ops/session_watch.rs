//! The status page's view of individual sessions: the ones in `suspect` state and the
//! longest-silent ones, each a bounded top-N ([`TOP`]), from a sweep over the session table
//! that is spread over loop turns.
//!
//! `suspect` is what `CLIENT LIST` shows (src/protocol/client_info.rs): keepalive probes
//! outstanding, or data unacknowledged, read from `TCP_INFO`. That is one `getsockopt` per
//! session, so a sweep over 18,000 sessions cannot be one turn's work; it advances by at most
//! [`UNITS_PER_TURN`] work units a turn ([`SESSIONS_PER_UNIT`] sessions each, on the operator
//! side's shared budget, src/ops/work.rs), and a reply is made from the last *complete* sweep.
//! A request finds the last sweep, if it is older than [`FRESH`] starts the next one, and
//! runs it as far as this turn allows: with up to `UNITS_PER_TURN × SESSIONS_PER_UNIT`
//! sessions (512) it completes at once and the reply is of this moment; above that the reply
//! is at most one refresh old and says how old (`watch.age_ms` in /status.json).
//!
//! Measured (9,000 loopback sessions, named): a session costs 1.8 µs in a debug build and
//! 1.7 µs in release (the `getsockopt` dominates), so a turn's share (512 sessions) is about
//! 1 ms and 18,000 sessions take 36 turns; a full sweep in one turn would hold the loop for
//! about 30 ms. Without `TCP_INFO` (the longest-silent list alone) a full scan of 9,000 took
//! 0.66 ms debug and 0.2 ms release, but `suspect` cannot be known without it.
//!
//! The sweep walks the table in token order from a cursor, so sessions that come and go
//! between its turns are seen at most once (a session accepted behind the cursor waits for
//! the next sweep). What a sweep keeps is bounded: [`TOP`] entries per list, each with the
//! session's name and library name cut to [`SHOWN_NAME_BYTES`] (64 bytes and a marker), and
//! counts by state. Nothing here writes to a socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::os::sys;
use crate::session::{SessionTable, SESSION_BASE};

/// Entries per list.
pub(super) const TOP: usize = 20;
/// Sessions swept per budget unit: one unit is about a `CLIENT LIST` line's work (12 µs in a
/// debug build), and one session here is a `getsockopt(TCP_INFO)` and a comparison (about
/// 2 µs, measured; see the module docs), so four make a unit with room to spare.
const SESSIONS_PER_UNIT: usize = 4;
/// At most this much of the turn's budget goes to a sweep (the operator budget is 256).
const UNITS_PER_TURN: usize = 128;
/// A sweep younger than this is reused instead of starting another.
const FRESH: Duration = Duration::from_secs(1);
/// Bytes of a name or library name kept (`session.max_name_bytes` may be 64 KiB): a longer
/// one is cut and marked as the log lines mark it, `…(+NB)`, N being the bytes left out.
/// Names are printable ASCII, so the `…` never comes from a client.
pub(super) const SHOWN_NAME_BYTES: usize = 64;

/// The kernel's view of a session, as `CLIENT LIST`'s `state=` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Ok,
    /// Keepalive probes outstanding, or data unacknowledged.
    Suspect,
    /// `TCP_INFO` could not be read.
    Dead,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Suspect => "suspect",
            State::Dead => "dead",
        }
    }
}

/// One session as a sweep saw it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub id: u64,
    pub name: Option<Box<str>>,
    pub lib_name: Option<Box<str>>,
    pub addr: SocketAddr,
    /// When it last received data (silence is counted from here at the reply).
    pub last_rx: Instant,
    pub connected_at: Instant,
    pub state: State,
    pub probes: u8,
    pub retransmits: u8,
    pub unacked: u32,
}

/// A finished sweep.
#[derive(Debug, Clone, Default)]
pub(super) struct Swept {
    /// When it started (its sessions were read between this and `done`).
    pub started: Option<Instant>,
    pub done: Option<Instant>,
    pub scanned: u64,
    /// Sessions by [`State`]: ok, suspect, dead.
    pub states: [u64; 3],
    /// The longest-silent first.
    pub silent: Vec<Seen>,
    /// Suspect sessions, the longest-silent first.
    pub suspect: Vec<Seen>,
}

/// A sweep in progress.
#[derive(Debug)]
struct Sweep {
    /// The next token to look at.
    cursor: usize,
    result: Swept,
    silent: Top,
    suspect: Top,
}

/// The sweeps; owned by [`super::Ops`].
#[derive(Debug, Default)]
pub(super) struct SessionWatch {
    sweep: Option<Sweep>,
    last: Option<Swept>,
}

impl SessionWatch {
    /// A status request at `now`: starts a sweep unless the last one is fresh or one runs, and
    /// advances it within `budget`. Returns whether a sweep is still in progress (the caller
    /// gives it more turns).
    pub(super) fn request(
        &mut self,
        sessions: &SessionTable,
        now: Instant,
        budget: &mut usize,
    ) -> bool {
        let fresh = self
            .last
            .as_ref()
            .and_then(|l| l.started)
            .is_some_and(|at| now.saturating_duration_since(at) < FRESH);
        if self.sweep.is_none() && !fresh {
            self.sweep = Some(Sweep {
                cursor: SESSION_BASE,
                result: Swept {
                    started: Some(now),
                    ..Swept::default()
                },
                silent: Top::default(),
                suspect: Top::default(),
            });
        }
        self.advance(sessions, now, budget)
    }

    /// Advances a sweep in progress by at most [`UNITS_PER_TURN`] of `budget`. Returns
    /// whether it is still in progress.
    pub(super) fn advance(
        &mut self,
        sessions: &SessionTable,
        now: Instant,
        budget: &mut usize,
    ) -> bool {
        let Some(sweep) = self.sweep.as_mut() else {
            return false;
        };
        let units = (*budget).min(UNITS_PER_TURN);
        let limit = units * SESSIONS_PER_UNIT;
        let mut seen = 0;
        let mut finished = true;
        for (token, s) in sessions.iter().skip_while(|(t, _)| t.0 < sweep.cursor) {
            if seen == limit {
                finished = false;
                sweep.cursor = token.0;
                break;
            }
            seen += 1;
            let info = sys::tcp_info(&s.stream).ok();
            let state = match info {
                Some(i) if i.probes > 0 || i.retransmits > 0 || i.backoff > 0 => State::Suspect,
                Some(_) => State::Ok,
                None => State::Dead,
            };
            let r = &mut sweep.result;
            r.scanned += 1;
            r.states[state as usize] += 1;
            let i = info.unwrap_or_default();
            let entry = || Seen {
                id: s.id,
                name: s.name.as_deref().map(shown),
                lib_name: s.lib().map(|l| shown(&l.name)).filter(|n| !n.is_empty()),
                addr: s.peer,
                last_rx: s.last_rx,
                connected_at: s.connected_at,
                state,
                probes: i.probes,
                retransmits: i.retransmits,
                unacked: i.unacked,
            };
            sweep.silent.offer(s.last_rx, s.id, entry);
            if state == State::Suspect {
                sweep.suspect.offer(s.last_rx, s.id, entry);
            }
        }
        *budget -= seen.div_ceil(SESSIONS_PER_UNIT).min(*budget);
        if !finished {
            return true;
        }
        let Some(mut sweep) = self.sweep.take() else {
            return false;
        };
        sweep.result.silent = std::mem::take(sweep.silent.finish());
        sweep.result.suspect = std::mem::take(sweep.suspect.finish());
        sweep.result.done = Some(now);
        self.last = Some(sweep.result);
        false
    }

    /// The last complete sweep, if any.
    pub(super) fn last(&self) -> Option<&Swept> {
        self.last.as_ref()
    }
}

/// A name as kept: whole up to [`SHOWN_NAME_BYTES`], else cut and marked.
fn shown(name: &str) -> Box<str> {
    if name.len() <= SHOWN_NAME_BYTES {
        return name.into();
    }
    let mut cut = SHOWN_NAME_BYTES;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…(+{}B)", &name[..cut], name.len() - cut).into()
}

/// The longest-silent first; ties by id, so the order is stable.
fn order(list: &mut [Seen]) {
    list.sort_unstable_by_key(|e| (e.last_rx, e.id));
}

/// The [`TOP`] longest-silent sessions offered so far, kept cheaply: the list grows to twice
/// `TOP` before it is cut back, and after a cut an offer that is not more silent than the
/// `TOP`-th kept is refused before anything is cloned (it can never make the top).
#[derive(Debug, Default)]
struct Top {
    list: Vec<Seen>,
    /// The key of the `TOP`-th entry at the last cut.
    cut: Option<(Instant, u64)>,
}

impl Top {
    fn offer(&mut self, last_rx: Instant, id: u64, entry: impl FnOnce() -> Seen) {
        if self.cut.is_some_and(|cut| (last_rx, id) >= cut) {
            return;
        }
        self.list.push(entry());
        if self.list.len() >= 2 * TOP {
            self.finish();
        }
    }

    /// Orders and cuts the list to [`TOP`]; what [`Top::offer`] does as it goes, and the
    /// result once the sweep is over.
    fn finish(&mut self) -> &mut Vec<Seen> {
        order(&mut self.list);
        self.list.truncate(TOP);
        if self.list.len() == TOP {
            self.cut = self.list.last().map(|e| (e.last_rx, e.id));
        }
        &mut self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session;

    /// A table of `n` sessions over real loopback sockets; session `i` last received `i`
    /// seconds after `t0`.
    fn table(n: usize, t0: Instant) -> (SessionTable, Vec<std::net::TcpStream>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sessions = SessionTable::with_capacity(n);
        let mut clients = Vec::new();
        for i in 0..n {
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, peer) = l.accept().unwrap();
            let token =
                sessions.insert(|id| Session::new(id, mio::net::TcpStream::from_std(s), peer, t0));
            sessions.get_mut(token).unwrap().last_rx = t0 + Duration::from_secs(i as u64);
            clients.push(c);
        }
        (sessions, clients)
    }

    #[test]
    fn a_small_table_is_swept_at_once_and_the_top_is_the_longest_silent() {
        let t0 = Instant::now();
        let (sessions, _clients) = table(50, t0);
        let mut watch = SessionWatch::default();
        let mut budget = 256;
        let now = t0 + Duration::from_secs(100);
        assert!(!watch.request(&sessions, now, &mut budget), "one turn");
        assert_eq!(budget, 256 - 13, "50 sessions cost 13 units");
        let last = watch.last().unwrap();
        assert_eq!(last.scanned, 50);
        assert_eq!(last.states, [50, 0, 0]);
        let ids: Vec<u64> = last.silent.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=TOP as u64).collect::<Vec<_>>());
        assert!(last.suspect.is_empty());
        // A second request within FRESH reuses it.
        assert!(!watch.request(&sessions, now + Duration::from_millis(10), &mut budget));
        assert_eq!(budget, 256 - 13);
    }

    #[test]
    fn a_large_table_takes_several_turns_within_the_cap() {
        let t0 = Instant::now();
        let n = UNITS_PER_TURN * SESSIONS_PER_UNIT + 100;
        let (sessions, _clients) = table(n, t0);
        let mut watch = SessionWatch::default();
        let now = t0 + Duration::from_secs(10_000);
        let mut budget = 256;
        assert!(watch.request(&sessions, now, &mut budget), "not done");
        assert_eq!(budget, 256 - UNITS_PER_TURN);
        assert!(watch.last().is_none());
        let mut budget = 256;
        assert!(!watch.advance(&sessions, now, &mut budget));
        let last = watch.last().unwrap();
        assert_eq!(last.scanned, n as u64, "each session once");
        assert_eq!(last.silent.len(), TOP);
        assert_eq!(last.silent[0].id, 1);
        // No budget, no progress.
        let mut none = 0;
        assert!(watch.request(&sessions, now + FRESH, &mut none));
        assert!(watch.request(&sessions, now + FRESH, &mut none));
    }

    #[test]
    fn long_names_are_cut_and_marked() {
        assert_eq!(&*shown("sensor-1"), "sensor-1");
        let long = "n".repeat(SHOWN_NAME_BYTES + 10);
        assert_eq!(
            &*shown(&long),
            format!("{}…(+10B)", "n".repeat(SHOWN_NAME_BYTES))
        );
        let exact = "x".repeat(SHOWN_NAME_BYTES);
        assert_eq!(&*shown(&exact), exact);
    }

    #[test]
    fn offers_keep_the_top_in_order() {
        let t0 = Instant::now();
        let mut top = Top::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for id in (0..200u64).rev() {
            let last_rx = t0 + Duration::from_secs(id % 97);
            top.offer(last_rx, id, || Seen {
                id,
                name: None,
                lib_name: None,
                addr,
                last_rx,
                connected_at: t0,
                state: State::Ok,
                probes: 0,
                retransmits: 0,
                unacked: 0,
            });
            assert!(top.list.len() < 2 * TOP);
        }
        let list = top.finish();
        let keys: Vec<(u64, u64)> = list
            .iter()
            .map(|e| ((e.last_rx - t0).as_secs(), e.id))
            .collect();
        let mut want: Vec<(u64, u64)> = (0..200u64).map(|id| (id % 97, id)).collect();
        want.sort();
        want.truncate(TOP);
        assert_eq!(keys, want);
    }
}
