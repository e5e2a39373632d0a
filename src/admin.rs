//! The admin listener's commands: the client protocol's connection commands, plus those that
//! see or change other sessions, in Redis's formats so `redis-cli` and Redis tooling work:
//!
//! - `CLIENT LIST [TYPE normal] [ID id ...]`: one [`client_info::describe`] line per session,
//!   each ending with `presence-seq=N`, the sequence number of the last presence event the list
//!   reflects (the resync recipe of docs/presence.md).
//! - `CLIENT LOOKUP name`: the `CLIENT LIST` line(s) of the session(s) holding `name`, or nil.
//! - `SUBSCRIBE presence` and the rest of pub/sub (src/pubsub.rs).
//! - `CLIENT KILL ID n | ADDR ip:port | LADDR ip:port | MAXAGE s | SKIPME yes/no ...` (filters
//!   combine; the reply is the number killed) and the old `CLIENT KILL ip:port` (`+OK`, or
//!   `-ERR No such client`). Killed sessions are reaped with reason `killed`.
//! - `INFO [section ...]` (src/info.rs) and `CONFIG GET pattern ...` (glob, case-insensitive).
//!
//! [`execute`] is a function of a read-only [`View`] of the loop's state: it writes the reply and
//! returns what the loop must do ([`AdminStep`]), so the one place sessions end stays
//! `Server::reap`. Admin connections are not sessions: they have their own ids, are not listed
//! by `CLIENT LIST`, and cannot be killed with `CLIENT KILL`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use mio::Token;

use crate::client_info;
use crate::command::{self, Args};
use crate::config::Config;
use crate::glob;
use crate::info;
use crate::pubsub::{self, Subscriptions};
use crate::resp::{self, Proto};
use crate::session::{LibInfo, Session, SessionTable};
use crate::stats::Stats;

/// One admin connection's own state.
#[derive(Debug)]
pub struct AdminClient {
    pub id: u64,
    pub peer: String,
    pub local: String,
    pub name: Option<Box<str>>,
    pub lib: Option<Box<LibInfo>>,
    pub connected_at: Instant,
    pub last_command: Instant,
    pub commands: u64,
    /// Pub/sub channels and patterns (presence events).
    pub subscriptions: Subscriptions,
    /// RESP2 or RESP3, as chosen with `HELLO`.
    pub proto: Proto,
}

impl AdminClient {
    pub fn new(id: u64, peer: String, local: String, now: Instant) -> AdminClient {
        AdminClient {
            id,
            peer,
            local,
            name: None,
            lib: None,
            proto: Proto::Resp2,
            connected_at: now,
            last_command: now,
            commands: 0,
            subscriptions: Subscriptions::default(),
        }
    }
}

/// What the admin commands may read: a borrow of the event loop's state for one request.
pub struct View<'a> {
    pub now: Instant,
    pub sessions: &'a SessionTable,
    pub stats: &'a Stats,
    pub config: &'a Config,
    pub config_path: &'a Path,
    /// When the daemon started.
    pub started: Instant,
    /// The client listeners' bound addresses.
    pub listeners: &'a [SocketAddr],
    pub admin_listener: Option<&'a str>,
    pub metrics_listener: Option<&'a str>,
    /// Admin connections open now, this one included.
    pub admin_clients: usize,
}

/// What the event loop does after an admin request (whose reply is already written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminStep {
    Continue,
    /// Deliver the reply, then close this admin connection (`QUIT`).
    Close,
    /// Reap these sessions with reason `killed`.
    Kill(Vec<Token>),
}

/// The admin listener's commands besides pub/sub (for the subscribed-mode refusal, which tells
/// a known command from an unknown one as Redis does).
const COMMANDS: [&str; 9] = [
    "PING", "ECHO", "SELECT", "COMMAND", "QUIT", "CLIENT", "INFO", "CONFIG", "HELLO",
];

/// Runs one admin request, writing its reply to `out`.
pub fn execute(
    args: Args<'_>,
    client: &mut AdminClient,
    view: &View<'_>,
    out: &mut Vec<u8>,
) -> AdminStep {
    if args.is_empty() {
        return AdminStep::Continue;
    }
    client.commands += 1;
    client.last_command = view.now;
    // First: a subscribed connection may run only a few commands, PING included.
    if pubsub::execute(args, &mut client.subscriptions, client.proto, out) == pubsub::Outcome::Done
    {
        return AdminStep::Continue;
    }
    // RESP3 lifts the subscribed-mode restriction (pushes and replies are told apart by
    // type), as Redis does.
    if client.subscriptions.active() && client.proto == Proto::Resp2 && !args.is(0, "QUIT") {
        if COMMANDS.iter().any(|c| args.is(0, c)) {
            pubsub::refuse(args, out);
        } else {
            command::unknown_command(args, out);
        }
        return AdminStep::Continue;
    }
    if command::common(args, out) {
        return AdminStep::Continue;
    }
    if args.is(0, "QUIT") {
        resp::write_simple(out, "OK");
        return AdminStep::Close;
    } else if args.is(0, "CLIENT") {
        return client_command(args, client, view, out);
    } else if args.is(0, "INFO") {
        let wanted: Vec<&[u8]> = (1..args.len()).map(|i| args.get(i)).collect();
        let mut text = String::with_capacity(2048);
        info::render(view, &wanted, &mut text);
        resp::write_bulk(out, text.as_bytes());
    } else if args.is(0, "CONFIG") {
        config_command(args, view, client.proto, out);
    } else if args.is(0, "HELLO") {
        if let command::Hello::SetName(name) =
            command::hello(args, client.id, &mut client.proto, out)
        {
            client.name = name;
        }
    } else {
        command::unknown_command(args, out);
    }
    AdminStep::Continue
}

fn client_command(
    args: Args<'_>,
    client: &mut AdminClient,
    view: &View<'_>,
    out: &mut Vec<u8>,
) -> AdminStep {
    let n = args.len();
    if args.is(1, "LIST") {
        client_list(args, view, out);
    } else if args.is(1, "KILL") {
        return client_kill(args, view, out);
    } else if args.is(1, "LOOKUP") && n == 3 {
        client_lookup(args.get(2), view, client.proto, out);
    } else if args.is(1, "ID") && n == 2 {
        resp::write_integer(out, i64::try_from(client.id).unwrap_or(i64::MAX));
    } else if args.is(1, "SETNAME") && n == 3 {
        command::set_name(&mut client.name, args.get(2), out);
    } else if args.is(1, "GETNAME") && n == 2 {
        match &client.name {
            Some(name) => resp::write_bulk(out, name.as_bytes()),
            None => resp::write_null(out, client.proto),
        }
    } else if args.is(1, "SETINFO") && n == 4 {
        command::set_lib_info(&mut client.lib, args, out);
    } else if args.is(1, "INFO") && n == 2 {
        let line = admin_line(client, view.now);
        resp::write_bulk(out, line.as_bytes());
    } else {
        let sub = command::printable(args.get(1));
        resp::write_error(
            out,
            &format!("ERR unknown subcommand or wrong number of arguments for 'CLIENT {sub}'"),
        );
    }
    AdminStep::Continue
}

/// `CLIENT INFO` of an admin connection: Redis's leading fields, and `listener=admin`.
fn admin_line(client: &AdminClient, now: Instant) -> String {
    let (lib_name, lib_ver) = client
        .lib
        .as_deref()
        .map(|l| (&*l.name, &*l.version))
        .unwrap_or(("", ""));
    format!(
        "id={} addr={} laddr={} name={} age={} idle={} flags={} db=0 sub={} psub={} tot-cmds={} \
         lib-name={} lib-ver={} listener=admin\n",
        client.id,
        client.peer,
        client.local,
        client.name.as_deref().unwrap_or(""),
        now.saturating_duration_since(client.connected_at).as_secs(),
        now.saturating_duration_since(client.last_command).as_secs(),
        // Redis's flag for a connection in subscribed mode.
        if client.subscriptions.active() {
            "P"
        } else {
            "N"
        },
        client.subscriptions.channels(),
        client.subscriptions.patterns(),
        client.commands,
        lib_name,
        lib_ver,
    )
}

/// Redis's client types: sessions are `normal`; the others exist but match no session.
fn client_type(name: &[u8]) -> Option<bool> {
    if name.eq_ignore_ascii_case(b"normal") {
        Some(true)
    } else if [&b"master"[..], b"replica", b"slave", b"pubsub"]
        .iter()
        .any(|t| name.eq_ignore_ascii_case(t))
    {
        Some(false)
    } else {
        None
    }
}

fn parse_id(arg: &[u8]) -> Option<u64> {
    std::str::from_utf8(arg)
        .ok()?
        .parse()
        .ok()
        .filter(|&id| id > 0)
}

/// Sessions in id order (the slab's order is its free list's, which means nothing to a person).
fn sessions_by_id<'a>(view: &View<'a>) -> Vec<(Token, &'a Session)> {
    let mut all: Vec<(Token, &Session)> = view.sessions.iter().collect();
    all.sort_unstable_by_key(|(_, s)| s.id);
    all
}

fn client_list(args: Args<'_>, view: &View<'_>, out: &mut Vec<u8>) {
    let mut ids: Option<Vec<u64>> = None;
    let mut any_type = true;
    let mut i = 2;
    while i < args.len() {
        if args.is(i, "TYPE") && i + 1 < args.len() {
            match client_type(args.get(i + 1)) {
                Some(normal) => any_type = normal,
                None => {
                    let t = command::printable(args.get(i + 1));
                    resp::write_error(out, &format!("ERR Unknown client type '{t}'"));
                    return;
                }
            }
            i += 2;
        } else if args.is(i, "ID") && i + 1 < args.len() {
            let mut list = Vec::new();
            for j in i + 1..args.len() {
                match parse_id(args.get(j)) {
                    Some(id) => list.push(id),
                    None => {
                        resp::write_error(out, "ERR Invalid client ID");
                        return;
                    }
                }
            }
            ids = Some(list);
            i = args.len();
        } else {
            resp::write_error(out, "ERR syntax error");
            return;
        }
    }
    let mut text = String::new();
    if any_type {
        for (_, session) in sessions_by_id(view) {
            if ids.as_ref().is_some_and(|ids| !ids.contains(&session.id)) {
                continue;
            }
            list_line(session, view, &mut text);
        }
    }
    resp::write_bulk(out, text.as_bytes());
}

/// One `CLIENT LIST` line: the session's description and the presence sequence number it
/// reflects (the same on every line: the loop changes nothing while it lists).
fn list_line(session: &Session, view: &View<'_>, text: &mut String) {
    client_info::describe(session, view.now, text);
    text.push_str(" presence-seq=");
    text.push_str(&view.stats.presence.seq.to_string());
    text.push('\n');
}

/// `CLIENT LOOKUP name`: the `CLIENT LIST` line of the session holding `name` (of each holder,
/// oldest first, when names are not unique), or nil.
fn client_lookup(name: &[u8], view: &View<'_>, proto: Proto, out: &mut Vec<u8>) {
    let holders = view.sessions.holders(name);
    if holders.is_empty() {
        resp::write_null(out, proto);
        return;
    }
    let mut text = String::new();
    for session in holders.iter().filter_map(|t| view.sessions.get(*t)) {
        list_line(session, view, &mut text);
    }
    resp::write_bulk(out, text.as_bytes());
}

/// The filters of `CLIENT KILL`; a session must pass all that are set.
#[derive(Debug, Default)]
struct KillFilter {
    id: Option<u64>,
    /// `None` inside: an address that cannot match any session.
    addr: Option<Option<SocketAddr>>,
    laddr: Option<Option<SocketAddr>>,
    max_age_secs: Option<u64>,
    any_type: bool,
}

impl KillFilter {
    fn matches(&self, s: &Session, now: Instant) -> bool {
        self.any_type
            && self.id.is_none_or(|id| s.id == id)
            && self.addr.is_none_or(|a| a == Some(s.peer))
            && self
                .laddr
                .is_none_or(|a| a.is_some() && a == s.stream.local_addr().ok())
            && self
                .max_age_secs
                .is_none_or(|max| s.age(now).as_secs() >= max)
    }
}

fn socket_addr(arg: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(arg).ok()?.trim().parse().ok()
}

fn client_kill(args: Args<'_>, view: &View<'_>, out: &mut Vec<u8>) -> AdminStep {
    let n = args.len();
    let old_style = n == 3;
    let mut filter = KillFilter {
        any_type: true,
        ..KillFilter::default()
    };
    if old_style {
        filter.addr = Some(socket_addr(args.get(2)));
    } else if n < 3 || !n.is_multiple_of(2) {
        resp::write_error(out, "ERR syntax error");
        return AdminStep::Continue;
    } else {
        for i in (2..n).step_by(2) {
            let value = args.get(i + 1);
            if args.is(i, "ID") {
                match parse_id(value) {
                    Some(id) => filter.id = Some(id),
                    None => {
                        resp::write_error(out, "ERR client-id should be greater than 0");
                        return AdminStep::Continue;
                    }
                }
            } else if args.is(i, "ADDR") {
                filter.addr = Some(socket_addr(value));
            } else if args.is(i, "LADDR") {
                filter.laddr = Some(socket_addr(value));
            } else if args.is(i, "MAXAGE") {
                match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                    Some(secs) => filter.max_age_secs = Some(secs),
                    None => {
                        resp::write_error(out, "ERR value is not an integer or out of range");
                        return AdminStep::Continue;
                    }
                }
            } else if args.is(i, "TYPE") {
                match client_type(value) {
                    Some(normal) => filter.any_type = normal,
                    None => {
                        let t = command::printable(value);
                        resp::write_error(out, &format!("ERR Unknown client type '{t}'"));
                        return AdminStep::Continue;
                    }
                }
            } else if args.is(i, "SKIPME") {
                // The admin connection is not a session, so it is skipped either way.
                if !(value.eq_ignore_ascii_case(b"yes") || value.eq_ignore_ascii_case(b"no")) {
                    resp::write_error(out, "ERR syntax error");
                    return AdminStep::Continue;
                }
            } else {
                resp::write_error(out, "ERR syntax error");
                return AdminStep::Continue;
            }
        }
    }
    let victims: Vec<Token> = view
        .sessions
        .iter()
        .filter(|(_, s)| filter.matches(s, view.now))
        .map(|(t, _)| t)
        .collect();
    if old_style {
        if victims.is_empty() {
            resp::write_error(out, "ERR No such client");
        } else {
            resp::write_simple(out, "OK");
        }
    } else {
        resp::write_integer(out, i64::try_from(victims.len()).unwrap_or(i64::MAX));
    }
    if victims.is_empty() {
        AdminStep::Continue
    } else {
        AdminStep::Kill(victims)
    }
}

fn config_command(args: Args<'_>, view: &View<'_>, proto: Proto, out: &mut Vec<u8>) {
    if args.is(1, "GET") && args.len() >= 3 {
        let pairs = config_pairs(view.config);
        let hits: Vec<&(String, String)> = pairs
            .iter()
            .filter(|(k, _)| (2..args.len()).any(|i| glob::matches(args.get(i), k.as_bytes())))
            .collect();
        resp::write_map_len(out, hits.len(), proto);
        for (k, v) in hits {
            resp::write_bulk(out, k.as_bytes());
            resp::write_bulk(out, v.as_bytes());
        }
    } else if args.is(1, "GET") {
        command::wrong_arity(out, "config|get");
    } else if args.len() >= 2 {
        let sub = command::printable(args.get(1)).to_ascii_uppercase();
        resp::write_error(
            out,
            &format!(
                "ERR CONFIG {sub} is not supported: edit {} and send SIGHUP to reload it",
                view.config_path.display()
            ),
        );
    } else {
        command::wrong_arity(out, "config");
    }
}

/// The effective config as `(dotted key, value)` pairs, rendered from the same TOML that
/// `--check-config` prints, so every key of the file is here, including keys added later.
/// Arrays are space-separated (as Redis shows `bind`). Secrets are not shown.
fn config_pairs(config: &Config) -> Vec<(String, String)> {
    let table: toml::Table = toml::from_str(&config.to_toml()).unwrap_or_default();
    let mut out = Vec::new();
    flatten("", &table, &mut out);
    out
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            v => {
                let secret = k.contains("password") || k.contains("secret");
                let text = if secret {
                    "(hidden)".to_string()
                } else {
                    value_text(v)
                };
                out.push((key, text));
            }
        }
    }
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Fixture {
        sessions: SessionTable,
        stats: Stats,
        config: Config,
        listeners: Vec<SocketAddr>,
        started: Instant,
        // Client ends of the sessions, kept open.
        _clients: Vec<std::net::TcpStream>,
    }

    impl Fixture {
        fn new(n: usize) -> Fixture {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut sessions = SessionTable::with_capacity(n);
            let mut stats = Stats::default();
            let mut clients = Vec::new();
            let started = Instant::now();
            for _ in 0..n {
                let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (s, peer) = l.accept().unwrap();
                sessions
                    .insert(|id| Session::new(id, mio::net::TcpStream::from_std(s), peer, started));
                stats.on_accept();
                clients.push(c);
            }
            Fixture {
                sessions,
                stats,
                config: Config::default(),
                listeners: vec![l.local_addr().unwrap()],
                started,
                _clients: clients,
            }
        }

        fn view(&self, now: Instant) -> View<'_> {
            View {
                now,
                sessions: &self.sessions,
                stats: &self.stats,
                config: &self.config,
                config_path: Path::new("/etc/vigild/vigild.toml"),
                started: self.started,
                listeners: &self.listeners,
                admin_listener: Some("127.0.0.1:7380"),
                metrics_listener: None,
                admin_clients: 1,
            }
        }

        fn run(&self, words: &[&str]) -> (AdminStep, String) {
            let now = self.started + Duration::from_secs(90_000);
            let mut client = AdminClient::new(1, "127.0.0.1:1".into(), String::new(), now);
            self.run_as(&mut client, words)
        }

        /// Runs a request on a given admin connection (whose state carries over).
        fn run_as(&self, client: &mut AdminClient, words: &[&str]) -> (AdminStep, String) {
            let mut buf = Vec::new();
            let mut ranges = Vec::new();
            for w in words {
                ranges.push(buf.len()..buf.len() + w.len());
                buf.extend_from_slice(w.as_bytes());
            }
            let now = self.started + Duration::from_secs(90_000);
            let mut out = Vec::new();
            let step = execute(Args::new(&buf, &ranges), client, &self.view(now), &mut out);
            (step, String::from_utf8_lossy(&out).into_owned())
        }

        fn token(&self, id: u64) -> Token {
            self.sessions
                .iter()
                .find(|(_, s)| s.id == id)
                .map(|(t, _)| t)
                .unwrap()
        }

        fn peer(&self, id: u64) -> SocketAddr {
            self.sessions
                .iter()
                .find(|(_, s)| s.id == id)
                .unwrap()
                .1
                .peer
        }
    }

    #[test]
    fn client_list_has_one_line_per_session_in_id_order() {
        let f = Fixture::new(3);
        let (_, reply) = f.run(&["CLIENT", "LIST"]);
        let body: Vec<&str> = reply.lines().skip(1).filter(|l| !l.is_empty()).collect();
        assert_eq!(body.len(), 3, "{reply}");
        for (i, line) in body.iter().enumerate() {
            assert!(line.starts_with(&format!("id={} addr=", i + 1)), "{line}");
            assert!(
                line.contains(" ka-idle=") && line.contains(" state="),
                "{line}"
            );
        }
        let (_, one) = f.run(&["client", "list", "ID", "2"]);
        assert_eq!(one.matches("id=").count(), 1);
        assert!(one.contains("id=2 "));
        let (_, none) = f.run(&["CLIENT", "LIST", "TYPE", "pubsub"]);
        assert_eq!(none, "$0\r\n\r\n");
        assert!(f
            .run(&["CLIENT", "LIST", "TYPE", "x"])
            .1
            .starts_with("-ERR Unknown client type"));
        assert!(f
            .run(&["CLIENT", "LIST", "ID", "0"])
            .1
            .starts_with("-ERR Invalid client ID"));
        assert!(f
            .run(&["CLIENT", "LIST", "bogus"])
            .1
            .starts_with("-ERR syntax error"));
    }

    #[test]
    fn client_kill_forms_and_replies() {
        let f = Fixture::new(3);
        let (step, reply) = f.run(&["CLIENT", "KILL", "ID", "2"]);
        assert_eq!(reply, ":1\r\n");
        let AdminStep::Kill(tokens) = step else {
            panic!("{step:?}")
        };
        assert_eq!(f.sessions.get(tokens[0]).unwrap().id, 2);
        assert_eq!(
            f.run(&["CLIENT", "KILL", "ID", "99"]),
            (AdminStep::Continue, ":0\r\n".into())
        );
        let addr = f.peer(3).to_string();
        let (step, reply) = f.run(&["CLIENT", "KILL", "ADDR", &addr]);
        assert_eq!(reply, ":1\r\n");
        assert!(matches!(step, AdminStep::Kill(t) if t.len() == 1));
        // ID and ADDR of different sessions: no session passes both.
        assert_eq!(
            f.run(&["CLIENT", "KILL", "ID", "1", "ADDR", &addr]).1,
            ":0\r\n"
        );
        assert_eq!(
            f.run(&["CLIENT", "KILL", "ID", "1", "SKIPME", "yes"]).1,
            ":1\r\n"
        );
        // The old form.
        let (step, reply) = f.run(&["CLIENT", "KILL", &addr]);
        assert_eq!(reply, "+OK\r\n");
        assert!(matches!(step, AdminStep::Kill(_)));
        assert_eq!(
            f.run(&["CLIENT", "KILL", "1.2.3.4:5"]).1,
            "-ERR No such client\r\n"
        );
        assert_eq!(
            f.run(&["CLIENT", "KILL", "garbage"]).1,
            "-ERR No such client\r\n"
        );
        // Filters that select everyone or no one.
        assert_eq!(f.run(&["CLIENT", "KILL", "MAXAGE", "10"]).1, ":3\r\n");
        assert_eq!(f.run(&["CLIENT", "KILL", "MAXAGE", "999999"]).1, ":0\r\n");
        assert_eq!(f.run(&["CLIENT", "KILL", "TYPE", "normal"]).1, ":3\r\n");
        assert_eq!(f.run(&["CLIENT", "KILL", "TYPE", "master"]).1, ":0\r\n");
        let laddr = f.listeners[0].to_string();
        assert_eq!(f.run(&["CLIENT", "KILL", "LADDR", &laddr]).1, ":3\r\n");
        // Errors.
        assert!(f
            .run(&["CLIENT", "KILL", "ID", "0"])
            .1
            .contains("greater than 0"));
        assert!(f
            .run(&["CLIENT", "KILL", "ID", "x"])
            .1
            .contains("greater than 0"));
        assert!(f
            .run(&["CLIENT", "KILL", "ID"])
            .1
            .starts_with("-ERR No such client"));
        assert!(f
            .run(&["CLIENT", "KILL", "ID", "1", "ID"])
            .1
            .starts_with("-ERR syntax"));
        assert!(f
            .run(&["CLIENT", "KILL", "NAME", "x"])
            .1
            .starts_with("-ERR syntax"));
        assert!(f
            .run(&["CLIENT", "KILL", "SKIPME", "maybe"])
            .1
            .starts_with("-ERR syntax"));
        assert!(f.run(&["CLIENT", "KILL"]).1.starts_with("-ERR syntax"));
    }

    #[test]
    fn info_sections_in_redis_format() {
        let f = Fixture::new(2);
        let (_, all) = f.run(&["INFO"]);
        let text = all.split_once("\r\n").unwrap().1;
        for header in [
            "# Server\r\n",
            "# Clients\r\n",
            "# Stats\r\n",
            "# Keepalive\r\n",
            "# Reaper\r\n",
        ] {
            assert!(text.contains(header), "{header} in {text}");
        }
        assert!(
            text.contains("\r\n\r\n# Clients\r\n"),
            "a blank line between sections"
        );
        assert!(text.contains("connected_clients:2\r\n"));
        assert!(text.contains("uptime_in_days:1\r\n"));
        assert!(text.contains("keepalive_detection_bound_seconds:120\r\n"));
        assert!(
            text.contains("keepalive_user_timeout:auto\r\nkeepalive_user_timeout_ms:120000\r\n")
        );
        assert!(text.contains("reaped_keepalive-timeout:0\r\n"));
        assert!(text.contains("admin_listener:127.0.0.1:7380\r\nmetrics_listener:off\r\n"));
        let mut keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_once(':').unwrap().0)
            .collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "keys are unique across sections");
        let (_, ka) = f.run(&["info", "KEEPALIVE"]);
        assert!(
            ka.contains("# Keepalive\r\n") && !ka.contains("# Server"),
            "{ka}"
        );
        let (_, two) = f.run(&["INFO", "server", "clients"]);
        assert!(two.contains("# Server") && two.contains("# Clients") && !two.contains("# Stats"));
        assert_eq!(f.run(&["INFO", "nosuch"]).1, "$0\r\n\r\n");
    }

    #[test]
    fn config_get_globs_over_dotted_keys() {
        let f = Fixture::new(0);
        let (_, reply) = f.run(&["CONFIG", "GET", "keepalive.*"]);
        let items: Vec<&str> = reply.split("\r\n").collect();
        assert_eq!(items[0], "*10", "{reply}");
        assert!(
            reply.contains("$14\r\nkeepalive.idle\r\n$2\r\n1m\r\n"),
            "{reply}"
        );
        assert!(
            reply.contains("keepalive.user_timeout\r\n$4\r\nauto\r\n"),
            "{reply}"
        );
        let (_, listen) = f.run(&["CONFIG", "GET", "SERVER.LISTEN"]);
        assert!(listen.ends_with("$14\r\n127.0.0.1:7379\r\n"), "{listen}");
        let (_, two) = f.run(&["CONFIG", "GET", "log.level", "*.probes"]);
        assert!(two.starts_with("*4\r\n"), "{two}");
        assert_eq!(f.run(&["CONFIG", "GET", "nothing*"]).1, "*0\r\n");
        let (_, everything) = f.run(&["CONFIG", "GET", "*"]);
        assert!(everything.contains("admin.allow_remote"), "{everything}");
        assert!(f
            .run(&["CONFIG", "SET", "a", "b"])
            .1
            .contains("send SIGHUP"));
        assert!(f
            .run(&["CONFIG", "GET"])
            .1
            .contains("wrong number of arguments"));
    }

    #[test]
    fn connection_commands_work_here_too() {
        let f = Fixture::new(0);
        assert_eq!(f.run(&["PING"]).1, "+PONG\r\n");
        assert_eq!(f.run(&["ECHO", "x"]).1, "$1\r\nx\r\n");
        assert_eq!(f.run(&["QUIT"]), (AdminStep::Close, "+OK\r\n".into()));
        assert_eq!(f.run(&["CLIENT", "ID"]).1, ":1\r\n");
        assert_eq!(f.run(&["CLIENT", "SETNAME", "ops"]).1, "+OK\r\n");
        assert!(f.run(&["CLIENT", "INFO"]).1.contains("listener=admin"));
        assert!(f.run(&["HELLO", "4"]).1.starts_with("-NOPROTO"));
        assert!(f.run(&["HELLO", "3"]).1.starts_with("%7\r\n"));
        assert_eq!(f.run(&["COMMAND", "DOCS"]).1, "*0\r\n");
        assert!(f.run(&["FLUSHALL"]).1.starts_with("-ERR unknown command"));
    }

    #[test]
    fn client_list_carries_the_presence_seq_and_lookup_finds_names() {
        let mut f = Fixture::new(3);
        f.stats.presence.seq = 41;
        let (_, list) = f.run(&["CLIENT", "LIST"]);
        let lines: Vec<&str> = list.lines().filter(|l| l.starts_with("id=")).collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines.iter().all(|l| l.ends_with(" presence-seq=41")),
            "{list}"
        );
        assert_eq!(f.run(&["CLIENT", "LOOKUP", "dev-1"]).1, "$-1\r\n");
        let (t2, t3) = (f.token(2), f.token(3));
        f.sessions.rename(t3, Some("dev-1".into())).unwrap();
        let (_, one) = f.run(&["client", "lookup", "dev-1"]);
        assert!(
            one.contains("\r\nid=3 ") && one.contains(" name=dev-1 "),
            "{one}"
        );
        assert!(one.ends_with(" presence-seq=41\n\r\n"), "{one}");
        assert_eq!(one.matches("id=").count(), 1);
        // Without unique names, two sessions may hold a name: both lines, oldest first.
        f.sessions.rename(t2, Some("dev-1".into())).unwrap();
        let (_, two) = f.run(&["CLIENT", "LOOKUP", "dev-1"]);
        let ids: Vec<&str> = two
            .lines()
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("id=")))
            .collect();
        assert_eq!(ids, ["id=3", "id=2"], "{two}");
        assert!(f
            .run(&["CLIENT", "LOOKUP"])
            .1
            .starts_with("-ERR unknown subcommand"));
    }

    #[test]
    fn a_subscribed_connection_runs_only_pub_sub_commands() {
        let f = Fixture::new(1);
        let now = f.started;
        let mut c = AdminClient::new(7, "127.0.0.1:1".into(), String::new(), now);
        let (step, r) = f.run_as(&mut c, &["SUBSCRIBE", "presence"]);
        assert_eq!(step, AdminStep::Continue);
        assert_eq!(r, "*3\r\n$9\r\nsubscribe\r\n$8\r\npresence\r\n:1\r\n");
        assert_eq!(
            f.run_as(&mut c, &["PING"]).1,
            "*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        );
        assert!(f
            .run_as(&mut c, &["CLIENT", "LIST"])
            .1
            .starts_with("-ERR Can't execute 'client|list'"));
        assert!(f
            .run_as(&mut c, &["CLIENT", "KILL", "ID", "1"])
            .1
            .starts_with("-ERR Can't execute 'client|kill'"));
        assert!(f
            .run_as(&mut c, &["FLUSHALL"])
            .1
            .starts_with("-ERR unknown command 'FLUSHALL'"));
        let (_, info) = f.run_as(&mut c, &["SUBSCRIBE", "x"]);
        assert!(info.ends_with(":2\r\n"));
        f.run_as(&mut c, &["UNSUBSCRIBE"]);
        assert!(f
            .run_as(&mut c, &["CLIENT", "INFO"])
            .1
            .contains(" flags=N db=0 sub=0 psub=0 "));
        assert_eq!(f.run_as(&mut c, &["PING"]).1, "+PONG\r\n");
        f.run_as(&mut c, &["PSUBSCRIBE", "*"]);
        assert!(f
            .run_as(&mut c, &["CLIENT", "INFO"])
            .1
            .starts_with("-ERR Can't execute"));
        assert_eq!(
            f.run_as(&mut c, &["QUIT"]),
            (AdminStep::Close, "+OK\r\n".into())
        );
    }

    #[test]
    fn secrets_are_hidden_from_config_get() {
        let mut out = Vec::new();
        let table: toml::Table =
            toml::from_str("[server]\npassword = \"hunter2\"\nlisten = [\"a\", \"b\"]\n").unwrap();
        flatten("", &table, &mut out);
        assert!(out.contains(&("server.password".into(), "(hidden)".into())));
        assert!(out.contains(&("server.listen".into(), "a b".into())));
    }
}
