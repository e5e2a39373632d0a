//! The client commands: a RESP2 subset that any Redis client library can speak.
//!
//! [`execute`] runs one parsed request against its own session and writes the reply into the
//! loop's output buffer. It returns a [`Step`]: carry on, or close the session with a reason.
//! Commands that read or change other sessions are not here: they belong to the admin listener.

use std::ops::Range;
use std::time::Instant;

use crate::client_info;
use crate::reap::ReapReason;
use crate::resp;
use crate::session::Session;

/// What the event loop does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Deliver what is queued, then reap with this reason.
    Close(ReapReason),
}

/// The arguments of one request: ranges into the read buffer.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    pub fn new(buf: &'a [u8], ranges: &'a [Range<usize>]) -> Args<'a> {
        Args { buf, ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i`, or an empty slice when it is missing (ranges come from the parser, which
    /// keeps them inside the buffer; `get` keeps that a non-panicking fact).
    pub fn get(&self, i: usize) -> &'a [u8] {
        self.ranges
            .get(i)
            .and_then(|r| self.buf.get(r.clone()))
            .unwrap_or(&[])
    }

    pub fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }
}

/// Runs one request. `out` receives the reply.
pub fn execute(args: Args<'_>, session: &mut Session, now: Instant, out: &mut Vec<u8>) -> Step {
    if args.is_empty() {
        return Step::Continue;
    }
    session.commands += 1;
    let n = args.len();
    if args.is(0, "PING") {
        match n {
            1 => resp::write_simple(out, "PONG"),
            2 => resp::write_bulk(out, args.get(1)),
            _ => wrong_arity(out, "ping"),
        }
    } else if args.is(0, "ECHO") {
        if n == 2 {
            resp::write_bulk(out, args.get(1));
        } else {
            wrong_arity(out, "echo");
        }
    } else if args.is(0, "QUIT") {
        resp::write_simple(out, "OK");
        return Step::Close(ReapReason::Quit);
    } else if args.is(0, "CLIENT") {
        client(args, session, now, out);
    } else if args.is(0, "HELLO") {
        hello(args, session, out);
    } else if args.is(0, "SELECT") {
        if n != 2 {
            wrong_arity(out, "select");
        } else if args.get(1) == b"0" {
            resp::write_simple(out, "OK");
        } else {
            resp::write_error(out, "ERR DB index is out of range");
        }
    } else if args.is(0, "COMMAND") {
        // `redis-cli` asks for COMMAND DOCS in interactive mode: an empty answer is enough.
        if args.is(1, "COUNT") {
            resp::write_integer(out, 0);
        } else {
            resp::write_array_len(out, 0);
        }
    } else {
        unknown_command(args, out);
    }
    Step::Continue
}

fn client(args: Args<'_>, session: &mut Session, now: Instant, out: &mut Vec<u8>) {
    let n = args.len();
    if args.is(1, "SETNAME") && n == 3 {
        let name = args.get(2);
        if !valid_token(name) {
            resp::write_error(
                out,
                "ERR Client names cannot contain spaces, newlines or special characters.",
            );
            return;
        }
        session.name = if name.is_empty() {
            None
        } else {
            Some(String::from_utf8_lossy(name).into())
        };
        resp::write_simple(out, "OK");
    } else if args.is(1, "GETNAME") && n == 2 {
        match &session.name {
            Some(name) => resp::write_bulk(out, name.as_bytes()),
            None => resp::write_null(out),
        }
    } else if args.is(1, "ID") && n == 2 {
        resp::write_integer(out, i64::try_from(session.id).unwrap_or(i64::MAX));
    } else if args.is(1, "INFO") && n == 2 {
        let mut line = String::with_capacity(512);
        client_info::describe(session, now, &mut line);
        line.push('\n');
        resp::write_bulk(out, line.as_bytes());
    } else if args.is(1, "SETINFO") && n == 4 {
        let value = args.get(3);
        if !valid_token(value) {
            resp::write_error(
                out,
                "ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.",
            );
            return;
        }
        let value: Box<str> = String::from_utf8_lossy(value).into();
        let lib = session.lib.get_or_insert_with(Box::default);
        if args.is(2, "LIB-NAME") {
            lib.name = value;
        } else if args.is(2, "LIB-VER") {
            lib.version = value;
        } else {
            let attr = printable(args.get(2));
            resp::write_error(out, &format!("ERR Unrecognized option '{attr}'"));
            return;
        }
        resp::write_simple(out, "OK");
    } else if args.is(1, "LIST") || args.is(1, "KILL") {
        resp::write_error(
            out,
            "ERR CLIENT LIST and CLIENT KILL are only available on the admin listener",
        );
    } else {
        let sub = printable(args.get(1));
        resp::write_error(
            out,
            &format!("ERR unknown subcommand or wrong number of arguments for 'CLIENT {sub}'"),
        );
    }
}

fn hello(args: Args<'_>, session: &Session, out: &mut Vec<u8>) {
    if args.len() >= 2 && args.get(1) != b"2" {
        // What redis-server 7 answers; clients fall back to RESP2.
        resp::write_error(out, "NOPROTO unsupported protocol version");
        return;
    }
    let id = session.id.to_string();
    let fields: [(&str, &[u8]); 6] = [
        ("server", b"vigild"),
        ("version", env!("CARGO_PKG_VERSION").as_bytes()),
        ("proto", b"2"),
        ("id", id.as_bytes()),
        ("mode", b"standalone"),
        ("role", b"master"),
    ];
    resp::write_array_len(out, fields.len() * 2 + 2);
    for (k, v) in fields {
        resp::write_bulk(out, k.as_bytes());
        if k == "proto" || k == "id" {
            let n: i64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            resp::write_integer(out, n);
        } else {
            resp::write_bulk(out, v);
        }
    }
    resp::write_bulk(out, b"modules");
    resp::write_array_len(out, 0);
}

/// Names and library info are shown in space-separated lines: printable ASCII, no spaces.
fn valid_token(v: &[u8]) -> bool {
    v.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// A byte string made safe for an error line: printable ASCII kept, the rest escaped, and cut
/// to 128 bytes.
fn printable(v: &[u8]) -> String {
    let mut s = String::new();
    for &b in v.iter().take(128) {
        if (b' '..=b'~').contains(&b) && b != b'\'' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

fn wrong_arity(out: &mut Vec<u8>, cmd: &str) {
    resp::write_error(
        out,
        &format!("ERR wrong number of arguments for '{cmd}' command"),
    );
}

fn unknown_command(args: Args<'_>, out: &mut Vec<u8>) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with:",
        printable(args.get(0))
    );
    for i in 1..args.len().min(4) {
        msg.push_str(&format!(" '{}'", printable(args.get(i))));
    }
    resp::write_error(out, &msg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::TcpStream;

    fn session() -> (std::net::TcpStream, Session) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        (
            c,
            Session::new(7, TcpStream::from_std(s), peer, Instant::now()),
        )
    }

    fn run(session: &mut Session, words: &[&[u8]]) -> (Step, String) {
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for w in words {
            ranges.push(buf.len()..buf.len() + w.len());
            buf.extend_from_slice(w);
        }
        let mut out = Vec::new();
        let step = execute(Args::new(&buf, &ranges), session, Instant::now(), &mut out);
        (step, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn ping_echo_quit() {
        let (_c, mut s) = session();
        assert_eq!(run(&mut s, &[b"ping"]).1, "+PONG\r\n");
        assert_eq!(run(&mut s, &[b"PING", b"hi"]).1, "$2\r\nhi\r\n");
        assert_eq!(run(&mut s, &[b"ECHO", b"a\0b"]).1, "$3\r\na\0b\r\n");
        assert!(run(&mut s, &[b"ECHO"]).1.starts_with("-ERR wrong number"));
        assert_eq!(
            run(&mut s, &[b"QUIT"]),
            (Step::Close(ReapReason::Quit), "+OK\r\n".into())
        );
        assert_eq!(s.commands, 5);
    }

    #[test]
    fn client_names() {
        let (_c, mut s) = session();
        assert_eq!(run(&mut s, &[b"CLIENT", b"GETNAME"]).1, "$-1\r\n");
        assert_eq!(run(&mut s, &[b"client", b"setname", b"dev-1"]).1, "+OK\r\n");
        assert_eq!(run(&mut s, &[b"CLIENT", b"GETNAME"]).1, "$5\r\ndev-1\r\n");
        assert!(run(&mut s, &[b"CLIENT", b"SETNAME", b"a b"])
            .1
            .starts_with("-ERR Client names"));
        assert!(run(&mut s, &[b"CLIENT", b"SETNAME", b"\xff"])
            .1
            .starts_with("-ERR"));
        assert_eq!(run(&mut s, &[b"CLIENT", b"SETNAME", b""]).1, "+OK\r\n");
        assert_eq!(s.name, None);
        assert_eq!(run(&mut s, &[b"CLIENT", b"ID"]).1, ":7\r\n");
    }

    #[test]
    fn client_info_has_redis_and_vigild_fields() {
        let (_c, mut s) = session();
        run(&mut s, &[b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-rs"]);
        let (_, reply) = run(&mut s, &[b"CLIENT", b"INFO"]);
        assert!(reply.starts_with('$'), "{reply}");
        for field in [
            "id=7 ",
            "addr=127.0.0.1:",
            "laddr=127.0.0.1:",
            "lib-name=redis-rs",
            "keepalive=",
            "tcpi-rtt-us=",
            "state=ok",
        ] {
            assert!(reply.contains(field), "{field} missing in {reply}");
        }
    }

    #[test]
    fn unknown_commands_keep_the_session() {
        let (_c, mut s) = session();
        let (step, reply) = run(&mut s, &[b"FLUSHALL", b"x\r\n"]);
        assert_eq!(step, Step::Continue);
        assert_eq!(
            reply,
            "-ERR unknown command 'FLUSHALL', with args beginning with: 'x\\x0d\\x0a'\r\n"
        );
        assert!(run(&mut s, &[b"CLIENT", b"LIST"])
            .1
            .contains("admin listener"));
        assert_eq!(
            run(&mut s, &[b"HELLO", b"3"]).1,
            "-NOPROTO unsupported protocol version\r\n"
        );
        assert!(run(&mut s, &[b"HELLO"]).1.starts_with("*14\r\n"));
        assert_eq!(run(&mut s, &[b"SELECT", b"0"]).1, "+OK\r\n");
        assert_eq!(run(&mut s, &[b"COMMAND", b"DOCS"]).1, "*0\r\n");
    }
}
