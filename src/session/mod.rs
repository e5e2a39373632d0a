//! One client session, and the table of live sessions keyed by mio `Token`.
//!
//! A session holds no heap buffers while it is idle: requests are read into a buffer the event
//! loop owns, and a session keeps only the unfinished tail of a request (`unfinished`, boxed:
//! `None` unless a request spans reads) and output the kernel did not take yet (`output`, an
//! [`Output`] that holds no memory when idle). An idle session is its table entry and nothing else. A session
//! whose output reached `session.max_output_bytes` keeps its unexecuted requests in
//! `unfinished` too, marked [`Unfinished::held`] (see `server/session_io.rs`).
//!
//! The table also keeps the name index (name → the sessions holding it, oldest first) for
//! `CLIENT LOOKUP` and `session.unique_names`. It is maintained in exactly two places:
//! [`SessionTable::rename`], the only writer of `Session::name` once a session is in the table,
//! and [`SessionTable::remove`].
//!
//! The rest of this folder is what the loop knows about clients beyond the wire protocol: why a
//! session ended (`reap`), which holder of a name a newcomer may replace (`takeover`), and the
//! failed passwords counted per source address across sessions (`auth_throttle`).

mod multi;
mod output;

pub use multi::Transaction;
pub use output::{write_until_blocked, Output};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use slab::Slab;

pub(crate) mod auth_throttle;
pub mod identity;
pub mod reap;
pub(crate) mod takeover;
pub mod tls_layer;

/// Session tokens are `SESSION_BASE + key`; everything below belongs to listeners, the
/// operator side and signals. Defined here, where the table numbers its sessions, so this
/// layer imports nothing from the loop; the whole layout is `server/tokens.rs`.
pub const SESSION_BASE: usize = 1 << 16;

/// The client library a session announced with `CLIENT SETINFO`.
#[derive(Debug, Default, Clone)]
pub struct LibInfo {
    pub name: Box<str>,
    pub version: Box<str>,
}

/// What few sessions have, boxed together so that a session with none of it pays one pointer
/// (`Session::extras`): the library it announced, an open `MULTI`, and the proxy it came
/// through.
#[derive(Debug, Default)]
pub struct Extras {
    pub lib: LibInfo,
    pub transaction: Option<Box<Transaction>>,
    /// Who the peer proved to be (a client certificate), if anyone (see `identity.rs`).
    pub identity: Option<identity::Identity>,
    /// The TLS layer of a session from a TLS listener (`tls_layer.rs`); `None` for plain TCP. Here
    /// rather than in the session itself, whose entry every plain session pays for.
    pub tls: Option<Box<tls_layer::Tls>>,
    /// A token identity verified by `AUTH` and waiting for the loop (`identity::Pending`).
    /// Boxed: it lives for one request, and every TLS session has these extras.
    pub pending_identity: Option<Box<identity::Pending>>,
    /// The connection's own peer when a PROXY header gave the session its address (`peer`
    /// is then the client's): `proxy=` in `CLIENT LIST` and the reap line.
    pub proxy_hop: Option<SocketAddr>,
}

impl Extras {
    /// Nothing in it: the box can go.
    pub fn is_empty(&self) -> bool {
        self.lib.name.is_empty()
            && self.lib.version.is_empty()
            && self.transaction.is_none()
            && self.proxy_hop.is_none()
            && self.identity.is_none()
            && self.tls.is_none()
            && self.pending_identity.is_none()
    }
}

/// Where a session is in the PROXY protocol phase (`server/proxy_phase.rs`). One byte, so it
/// packs with the other small fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyStage {
    /// Its listener takes no PROXY header: `peer` is the client.
    Direct,
    /// Waiting for the header: nothing else is read, no request runs, and no presence event
    /// has been published (its address is not known yet).
    AwaitingHeader,
    /// The header was taken: `peer` is what it said (or the proxy's, for `LOCAL`/`UNKNOWN`).
    Received,
}

/// One live client connection.
#[derive(Debug)]
pub struct Session {
    /// Unique for the daemon's lifetime (tokens are reused, ids never).
    pub id: u64,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Set through [`SessionTable::rename`] only, which keeps the name index.
    pub name: Option<Box<str>>,
    /// The library it announced and an open `MULTI`; `None` while it has neither.
    pub extras: Option<Box<Extras>>,
    pub connected_at: Instant,
    pub last_rx: Instant,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub commands: u64,
    /// The unfinished tail of a request, kept between reads.
    pub unfinished: Option<Box<Unfinished>>,
    /// Output the kernel has not taken yet.
    pub output: Output,
    /// The peer sent FIN (or the session asked to close): no more reading; reap once the
    /// pending output is delivered.
    pub closing: Option<crate::session::reap::ReapReason>,
    /// The interest currently registered with the poller.
    pub interest: Interest,
    /// RESP2 or RESP3, as chosen with `HELLO`.
    pub proto: crate::protocol::resp::Proto,
    /// May run commands: set at accept when no password is required, or by a good `AUTH`.
    pub authenticated: bool,
    /// Wrong passwords sent on this session (see `auth::MAX_FAILURES`; a byte, so that it
    /// packs with the other small fields and the entry stays within its size).
    pub auth_failures: u8,
    /// Passwords its address may still have compared, set by the loop before requests run
    /// (see `auth_throttle.rs`).
    pub guess_budget: crate::session::auth_throttle::GuessBudget,
    /// The last command run, for `CLIENT LIST`'s `cmd=` (see `command_table::id_of`).
    pub last_command: u8,
    /// The PROXY protocol phase (`Direct` unless `server.proxy_protocol` is on).
    pub proxy: ProxyStage,
}

/// A request that spans reads. Boxed in the session, so that the much more common session with
/// nothing unfinished does not pay for these fields (56 bytes of a 240-byte entry).
#[derive(Debug)]
pub struct Unfinished {
    /// Its bytes so far (and any pipelined bytes after them).
    pub bytes: Vec<u8>,
    /// Where parsing stopped, so the next read checks only the new bytes.
    pub resume: crate::protocol::resp::Resume,
    /// When its first byte arrived: a request must be completed within `session.idle_timeout`
    /// of it (so a client dribbling bytes counts as idle).
    pub since: Instant,
    /// The bytes were not (all) parsed because the session's pending output reached
    /// `session.max_output_bytes`: they may hold complete requests, to be run, before any
    /// further read, once the output drains below the limit.
    pub held: bool,
}

impl Session {
    pub fn new(id: u64, stream: TcpStream, peer: SocketAddr, now: Instant) -> Session {
        Session {
            id,
            stream,
            peer,
            name: None,
            extras: None,
            connected_at: now,
            last_rx: now,
            bytes_in: 0,
            bytes_out: 0,
            commands: 0,
            unfinished: None,
            output: Output::new(),
            closing: None,
            interest: Interest::READABLE,
            proto: crate::protocol::resp::Proto::Resp2,
            authenticated: false,
            auth_failures: 0,
            guess_budget: crate::session::auth_throttle::GuessBudget::Unlimited,
            last_command: 0,
            proxy: ProxyStage::Direct,
        }
    }

    /// The proxy this session came through, when a PROXY header replaced its address.
    pub fn proxy_hop(&self) -> Option<SocketAddr> {
        self.extras.as_deref().and_then(|e| e.proxy_hop)
    }

    /// Its TLS layer, for a session from a TLS listener.
    pub fn tls(&self) -> Option<&tls_layer::Tls> {
        self.extras.as_deref().and_then(|e| e.tls.as_deref())
    }

    pub fn tls_mut(&mut self) -> Option<&mut tls_layer::Tls> {
        self.extras
            .as_deref_mut()
            .and_then(|e| e.tls.as_deref_mut())
    }

    /// Whether a verified token identity waits for the loop to bind it.
    pub fn identity_pending(&self) -> bool {
        self.extras
            .as_deref()
            .is_some_and(|e| e.pending_identity.is_some())
    }

    /// Its extras, made when it has none.
    pub fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Default::default)
    }

    /// Who the peer proved to be, if anyone.
    pub fn identity(&self) -> Option<&identity::Identity> {
        self.extras.as_deref().and_then(|e| e.identity.as_ref())
    }

    /// The library it announced with `CLIENT SETINFO`, if any.
    pub fn lib(&self) -> Option<&LibInfo> {
        self.extras.as_deref().map(|e| &e.lib)
    }

    /// Its open `MULTI`, if any.
    pub fn transaction(&self) -> Option<&Transaction> {
        self.extras
            .as_deref()
            .and_then(|e| e.transaction.as_deref())
    }

    /// Bytes queued for the peer and not yet written.
    pub fn pending_output(&self) -> usize {
        self.output.pending()
    }

    /// The bytes of input waiting unexecuted for lack of output room, if any (see
    /// [`Unfinished::held`]).
    pub fn held_input(&self) -> Option<usize> {
        self.unfinished
            .as_ref()
            .filter(|u| u.held)
            .map(|u| u.bytes.len())
    }

    /// The interest this session needs now: readable until it is closing, writable while
    /// output is pending. The one place interest is derived from state.
    pub fn wanted_interest(&self) -> Interest {
        let writable = self.pending_output() > 0;
        match (self.closing.is_some(), writable) {
            (false, false) => Interest::READABLE,
            (false, true) => Interest::READABLE | Interest::WRITABLE,
            // Closing with nothing to write is reaped at once; WRITABLE keeps the registration
            // valid until then.
            (true, _) => Interest::WRITABLE,
        }
    }

    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_rx)
    }

    /// When `session.idle_timeout` = `limit` reaps this session: `limit` after the last byte
    /// received, or after the start of a request that is still unfinished, whichever is first.
    /// Never earlier than a deadline computed before (the idle heap relies on that).
    pub fn idle_deadline(&self, limit: Duration) -> Instant {
        let started = self.unfinished.as_ref().map_or(self.last_rx, |u| u.since);
        started.min(self.last_rx) + limit
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.connected_at)
    }
}

/// The live sessions, plus the per-address counts `max_connections_per_ip` needs and the name
/// index.
#[derive(Debug, Default)]
pub struct SessionTable {
    slab: Slab<Session>,
    per_ip: HashMap<IpAddr, u32>,
    /// Name → the sessions holding it, in the order they took it (one, when names are
    /// unique).
    names: HashMap<Box<str>, Vec<Token>>,
    /// Identity → how many live sessions have it (`session.max_sessions_per_identity`).
    identities: HashMap<Box<str>, u32>,
    next_id: u64,
}

impl SessionTable {
    pub fn with_capacity(n: usize) -> SessionTable {
        SessionTable {
            slab: Slab::with_capacity(n),
            per_ip: HashMap::new(),
            names: HashMap::new(),
            identities: HashMap::new(),
            next_id: 1,
        }
    }

    /// Gives the session `name` (`None` clears it). Returns its previous name, or `Err` when
    /// there is no such session.
    pub fn rename(
        &mut self,
        token: Token,
        name: Option<Box<str>>,
    ) -> Result<Option<Box<str>>, NoSuchSession> {
        let key = token.0.checked_sub(SESSION_BASE).ok_or(NoSuchSession)?;
        let session = self.slab.get_mut(key).ok_or(NoSuchSession)?;
        if let Some(old) = &session.name {
            unindex(&mut self.names, old, token);
        }
        if let Some(new) = &name {
            self.names.entry(new.clone()).or_default().push(token);
        }
        Ok(std::mem::replace(&mut session.name, name))
    }

    /// Gives the session at `token` its identity (the only writer of `Extras::identity`, which
    /// keeps the per-identity counts). Replaces one it had.
    pub fn set_identity(
        &mut self,
        token: Token,
        identity: identity::Identity,
    ) -> Result<(), NoSuchSession> {
        let key = token.0.checked_sub(SESSION_BASE).ok_or(NoSuchSession)?;
        let session = self.slab.get_mut(key).ok_or(NoSuchSession)?;
        *self.identities.entry(identity.name.clone()).or_insert(0) += 1;
        if let Some(old) = session.extras_mut().identity.replace(identity) {
            uncount(&mut self.identities, &old.name);
        }
        Ok(())
    }

    /// Distinct identities held by live sessions.
    pub fn identities(&self) -> usize {
        self.identities.len()
    }

    /// Live sessions with the identity `name`.
    pub fn with_identity(&self, name: &str) -> u32 {
        self.identities.get(name).copied().unwrap_or(0)
    }

    /// The sessions holding `name`, oldest holder first.
    pub fn holders(&self, name: &[u8]) -> &[Token] {
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.names.get(n))
            .map_or(&[], Vec::as_slice)
    }

    /// Distinct names held now.
    pub fn names(&self) -> usize {
        self.names.len()
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn count_for_ip(&self, ip: IpAddr) -> u32 {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Inserts a session built by `make` from its id; returns its token.
    pub fn insert(&mut self, make: impl FnOnce(u64) -> Session) -> Token {
        let id = self.next_id;
        self.next_id += 1;
        let session = make(id);
        *self.per_ip.entry(session.peer.ip()).or_insert(0) += 1;
        Token(SESSION_BASE + self.slab.insert(session))
    }

    /// Gives the session the address its PROXY header carried: the per-address counts move
    /// with it, and the connection's own peer is kept as its proxy hop (unless it is the same
    /// address). Returns how many sessions now have the new address's IP, this one included.
    pub fn move_peer(&mut self, token: Token, to: SocketAddr) -> Result<u32, NoSuchSession> {
        let key = token.0.checked_sub(SESSION_BASE).ok_or(NoSuchSession)?;
        let session = self.slab.get_mut(key).ok_or(NoSuchSession)?;
        let from = std::mem::replace(&mut session.peer, to);
        if from != to {
            session.extras.get_or_insert_with(Box::default).proxy_hop = Some(from);
        }
        if let Some(n) = self.per_ip.get_mut(&from.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&from.ip());
            }
        }
        let n = self.per_ip.entry(to.ip()).or_insert(0);
        *n += 1;
        Ok(*n)
    }

    pub fn get(&self, token: Token) -> Option<&Session> {
        token
            .0
            .checked_sub(SESSION_BASE)
            .and_then(|k| self.slab.get(k))
    }

    pub fn get_mut(&mut self, token: Token) -> Option<&mut Session> {
        token
            .0
            .checked_sub(SESSION_BASE)
            .and_then(|k| self.slab.get_mut(k))
    }

    pub fn remove(&mut self, token: Token) -> Option<Session> {
        let key = token.0.checked_sub(SESSION_BASE)?;
        let session = self.slab.try_remove(key)?;
        if let Some(name) = &session.name {
            unindex(&mut self.names, name, token);
        }
        if let Some(identity) = session.identity() {
            uncount(&mut self.identities, &identity.name);
        }
        let ip = session.peer.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(session)
    }

    pub fn tokens(&self) -> Vec<Token> {
        self.slab
            .iter()
            .map(|(k, _)| Token(SESSION_BASE + k))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Token, &Session)> {
        self.slab.iter().map(|(k, s)| (Token(SESSION_BASE + k), s))
    }
}

/// A token that names no live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchSession;

fn uncount(counts: &mut HashMap<Box<str>, u32>, name: &str) {
    if let Some(n) = counts.get_mut(name) {
        *n -= 1;
        if *n == 0 {
            counts.remove(name);
        }
    }
}

fn unindex(names: &mut HashMap<Box<str>, Vec<Token>>, name: &str, token: Token) {
    if let Some(holders) = names.get_mut(name) {
        holders.retain(|t| *t != token);
        if holders.is_empty() {
            names.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (std::net::TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, TcpStream::from_std(s))
    }

    #[test]
    fn insert_remove_keeps_per_ip_counts_and_unique_ids() {
        let now = Instant::now();
        let mut table = SessionTable::with_capacity(4);
        let (_c1, s1) = stream();
        let (_c2, s2) = stream();
        let peer: SocketAddr = "127.0.0.9:1000".parse().unwrap();
        let t1 = table.insert(|id| Session::new(id, s1, peer, now));
        let t2 = table.insert(|id| Session::new(id, s2, peer, now));
        assert_eq!(table.count_for_ip(peer.ip()), 2);
        assert_ne!(table.get(t1).unwrap().id, table.get(t2).unwrap().id);
        let removed = table.remove(t1).unwrap();
        assert_eq!(removed.id, 1);
        assert!(table.remove(t1).is_none(), "a stale token finds nothing");
        assert_eq!(table.count_for_ip(peer.ip()), 1);
        table.remove(t2).unwrap();
        assert_eq!(table.count_for_ip(peer.ip()), 0);
        assert!(table.per_ip.is_empty());
        assert!(
            table.get(Token(3)).is_none(),
            "listener tokens are not sessions"
        );
    }

    #[test]
    fn the_name_index_follows_renames_and_removals() {
        let now = Instant::now();
        let mut table = SessionTable::with_capacity(4);
        let peer: SocketAddr = "127.0.0.9:1000".parse().unwrap();
        let (_c1, s1) = stream();
        let (_c2, s2) = stream();
        let t1 = table.insert(|id| Session::new(id, s1, peer, now));
        let t2 = table.insert(|id| Session::new(id, s2, peer, now));
        assert_eq!(table.rename(t1, Some("x".into())), Ok(None));
        assert_eq!(table.rename(t2, Some("x".into())), Ok(None));
        assert_eq!(table.holders(b"x"), &[t1, t2], "oldest holder first");
        assert_eq!(
            table.rename(t1, Some("y".into())),
            Ok(Some("x".into())),
            "the previous name comes back"
        );
        assert_eq!(table.holders(b"x"), &[t2]);
        assert_eq!(table.get(t1).unwrap().name.as_deref(), Some("y"));
        assert_eq!(table.names(), 2);
        table.remove(t2).unwrap();
        assert!(table.holders(b"x").is_empty());
        assert_eq!(table.rename(t1, None), Ok(Some("y".into())));
        assert_eq!(table.names(), 0);
        assert!(table.names.is_empty());
        assert_eq!(table.rename(t2, Some("z".into())), Err(NoSuchSession));
        assert!(table.holders(b"\xff").is_empty());
    }

    #[test]
    fn a_moved_peer_takes_its_count_along_and_keeps_the_hop() {
        let now = Instant::now();
        let mut table = SessionTable::with_capacity(4);
        let proxy: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let client: SocketAddr = "127.0.0.7:5000".parse().unwrap();
        let (_c1, s1) = stream();
        let (_c2, s2) = stream();
        let t1 = table.insert(|id| Session::new(id, s1, proxy, now));
        let t2 = table.insert(|id| Session::new(id, s2, proxy, now));
        assert_eq!(table.count_for_ip(proxy.ip()), 2);
        assert_eq!(table.move_peer(t1, client), Ok(1));
        assert_eq!(table.move_peer(t2, client), Ok(2));
        assert_eq!(table.count_for_ip(proxy.ip()), 0);
        assert!(!table.per_ip.contains_key(&proxy.ip()));
        let s = table.get(t1).unwrap();
        assert_eq!((s.peer, s.proxy_hop()), (client, Some(proxy)));
        table.remove(t1).unwrap();
        assert_eq!(table.count_for_ip(client.ip()), 1);
        // LOCAL: the same address; no hop recorded.
        let (_c3, s3) = stream();
        let t3 = table.insert(|id| Session::new(id, s3, proxy, now));
        assert_eq!(table.move_peer(t3, proxy), Ok(1));
        assert_eq!(table.get(t3).unwrap().proxy_hop(), None);
        assert_eq!(table.move_peer(Token(1), client), Err(NoSuchSession));
    }

    #[test]
    fn interest_follows_pending_output() {
        let (_c, s) = stream();
        let mut session = Session::new(1, s, "127.0.0.1:1".parse().unwrap(), Instant::now());
        assert_eq!(session.wanted_interest(), Interest::READABLE);
        session.output.push(b"+PONG\r\n");
        assert_eq!(
            session.wanted_interest(),
            Interest::READABLE | Interest::WRITABLE
        );
        session.closing = Some(crate::session::reap::ReapReason::Quit);
        assert_eq!(session.wanted_interest(), Interest::WRITABLE);
    }

    #[test]
    fn an_idle_session_stays_small() {
        // The table entry is all an idle session costs (docs/benchmarks.md: bytes per idle
        // session, target <= 256 B). Unfinished requests live in a box for that reason.
        let size = std::mem::size_of::<Session>();
        assert!(size <= 192, "Session is {size} bytes");
    }
}
