//! Unit tests for the admin commands, run against a fixture of real sessions in a table.

use super::client::SMALL_LISTING as SMALL;
use super::config_get::shown;
use super::*;
use crate::session::Session;
use std::time::Duration;

struct Fixture {
    sessions: SessionTable,
    stats: Stats,
    config: Config,
    listeners: Vec<SocketAddr>,
    started: Instant,
    ops: OpsCounters,
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
            sessions.insert(|id| Session::new(id, mio::net::TcpStream::from_std(s), peer, started));
            stats.on_accept(started);
            clients.push(c);
        }
        Fixture {
            sessions,
            stats,
            config: Config::default(),
            listeners: vec![l.local_addr().unwrap()],
            started,
            ops: OpsCounters::default(),
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
            ops: &self.ops,
        }
    }

    fn run(&self, words: &[&str]) -> (AdminStep, String) {
        let now = self.started + Duration::from_secs(90_000);
        let mut client = AdminClient::new(1, "127.0.0.1:1".into(), String::new(), now);
        self.run_as(&mut client, words)
    }

    /// Runs a request on a given admin connection (whose state carries over).
    fn run_as(&self, client: &mut AdminClient, words: &[&str]) -> (AdminStep, String) {
        let (buf, ranges) = crate::protocol::args::test_words(words);
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
    assert!(text.contains("keepalive_user_timeout:auto\r\nkeepalive_user_timeout_ms:120000\r\n"));
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
    assert!(f.run(&["COMMAND", "DOCS"]).1.starts_with("*26\r\n"));
    assert_eq!(f.run(&["COMMAND", "COUNT"]).1, ":13\r\n");
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
    let text = |s: &str| toml::Value::String(s.into());
    assert_eq!(shown("server.password", &text("hunter2")), "(hidden)");
    assert_eq!(shown("server.password_file", &text("/etc/p")), "(hidden)");
    let listen = toml::Value::Array(vec![text("a"), text("b")]);
    assert_eq!(shown("server.listen", &listen), "a b");
}

/// Drives a listing to its end in small turns, draining its output as a reader would.
fn drive(listing: &mut Listing, sessions: &SessionTable, mut between: impl FnMut(usize)) -> String {
    let mut all = Vec::new();
    let mut out = Vec::new();
    let mut turns = 0;
    loop {
        let mut budget = 40;
        let done = listing.advance(sessions, &mut budget, &mut out, |o| o.len(), 4096);
        assert!(out.len() < 4096 + 1024, "the window holds: {}", out.len());
        all.append(&mut out);
        turns += 1;
        assert!(turns < 10_000);
        if done {
            break;
        }
        between(turns);
    }
    String::from_utf8(all).unwrap()
}

/// `tcpi-last-data-recv-ms` moves with the clock; everything else of an idle session stays.
fn steady(text: &str) -> String {
    text.split(' ')
        .map(|f| {
            if f.starts_with("tcpi-last-data-recv-ms=") {
                "tcpi-last-data-recv-ms=_"
            } else {
                f
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The bulk string's declared length and its body.
fn bulk(reply: &str) -> (usize, &str) {
    let (head, rest) = reply.split_once("\r\n").unwrap();
    let len: usize = head[1..].parse().unwrap();
    assert!(rest.ends_with("\r\n"), "{rest:?}");
    (len, &rest[..rest.len() - 2])
}

#[test]
fn long_listings_are_built_in_turns_and_match_the_one_buffer_reply() {
    let f = Fixture::new(SMALL + 44);
    let now = f.started + Duration::from_secs(90_000);
    let (step, direct) = f.run(&["CLIENT", "LIST"]);
    let AdminStep::List(mut listing) = step else {
        panic!("a listing of {} sessions is built in turns", SMALL + 44);
    };
    assert_eq!(direct, "", "nothing is written at the request");
    let built = drive(&mut listing, &f.sessions, |_| {});
    let (len, body) = bulk(&built);
    assert_eq!(len, body.len());
    // The one-buffer rendering of the same table.
    let mut text = String::new();
    let mut all: Vec<_> = f.sessions.iter().collect();
    all.sort_by_key(|(_, s)| s.id);
    for (_, s) in all {
        super::listing::list_line(s, now, f.stats.presence.seq, &mut text);
    }
    assert_eq!(steady(body), steady(&text));
    assert_eq!(body.lines().count(), SMALL + 44);
}

#[test]
fn a_listing_shows_the_snapshot_sessions_and_names_whatever_happens_meanwhile() {
    let mut f = Fixture::new(SMALL + 4);
    let (id_a, id_b) = (3, SMALL as u64 + 2);
    f.sessions
        .rename(f.token(id_a), Some("before".into()))
        .unwrap();
    let (step, _) = f.run(&["CLIENT", "LIST"]);
    let AdminStep::List(mut listing) = step else {
        panic!("built in turns");
    };
    // Meanwhile, in the middle of the measuring: session A is renamed, session C (measured
    // already) and session B (not yet) leave.
    let (ta, tb, tc) = (f.token(id_a), f.token(id_b), f.token(5));
    let sessions = std::cell::RefCell::new(std::mem::replace(
        &mut f.sessions,
        SessionTable::with_capacity(1),
    ));
    // (The fixture's own table is not used below.)
    let mut all = Vec::new();
    let mut out = Vec::new();
    let mut turn = 0;
    loop {
        let mut budget = 40;
        let done = listing.advance(&sessions.borrow(), &mut budget, &mut out, |o| o.len(), 4096);
        all.append(&mut out);
        if done {
            break;
        }
        turn += 1;
        if turn == 3 {
            let mut s = sessions.borrow_mut();
            s.rename(ta, Some("after-a-much-longer-name".into()))
                .unwrap();
            s.remove(tb).unwrap();
            s.remove(tc).unwrap();
        }
    }
    let built = String::from_utf8(all).unwrap();
    let (len, body) = bulk(&built);
    assert_eq!(len, body.len(), "the declared length holds");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), SMALL + 4, "every snapshot session is listed");
    let a = lines.iter().find(|l| l.starts_with("id=3 ")).unwrap();
    assert!(a.contains(" name=before "), "{a}");
    let b = lines
        .iter()
        .find(|l| l.starts_with(&format!("id={id_b} ")))
        .unwrap();
    assert_eq!(*b, format!("id={id_b} name= state=gone presence-seq=0"));
    let c = lines.iter().find(|l| l.starts_with("id=5 ")).unwrap();
    assert!(c.starts_with("id=5 name= state=gone pad=0000"), "{c}");
    for line in lines {
        // Every field is key=value, as Redis clients split them.
        assert!(
            line.split(' ')
                .all(|f| f.split_once('=').is_some_and(|(k, _)| !k.is_empty())),
            "{line}"
        );
        assert!(line.ends_with(" presence-seq=0"), "{line}");
    }
}
