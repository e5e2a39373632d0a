//! The client commands: a RESP2 subset that any Redis client library can speak.
//!
//! [`execute`] runs one parsed request against its own session and writes the reply into the
//! loop's output buffer. It returns a [`Step`]: carry on, or close the session with a reason.
//! Commands that read or change other sessions are not here: they belong to the admin listener
//! (the operator side's `admin` module), which shares the connection commands below
//! ([`common`], [`set_name`], [`set_lib_info`], [`hello`]) and refuses nothing that is refused
//! here by accident.
//!
//! What a connection stores about itself is bounded ([`FieldLimits`]): a name longer than
//! `session.max_name_bytes`, or a lib-name or lib-ver longer than `session.max_lib_bytes`, is
//! refused with an `-ERR` naming the limit, and the connection keeps its old value. A reload
//! that lowers a bound leaves values set before as they are.

use std::time::Instant;

use crate::config::SessionConfig;
use crate::protocol::args::{printable, unknown_command, wrong_arity, Args};
use crate::protocol::client_info;
use crate::protocol::command_table::{self, Spec};
use crate::protocol::probe;
use crate::protocol::resp::{self, Proto};
use crate::protocol::step::{OnRenamed, Rename, Step};
use crate::protocol::transaction;
use crate::session::reap::ReapReason;
use crate::session::{LibInfo, Session};

/// The longest values a connection may store about itself, from the `[session]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimits {
    /// `session.max_name_bytes`
    pub name: usize,
    /// `session.max_lib_bytes`, for lib-name and lib-ver each
    pub lib: usize,
    /// `session.max_request_bytes`: what a `MULTI` may queue in all
    pub transaction: usize,
}

impl FieldLimits {
    pub fn of(session: &SessionConfig) -> FieldLimits {
        FieldLimits {
            name: session.max_name_bytes,
            lib: session.max_lib_bytes,
            transaction: session.max_request_bytes,
        }
    }
}

/// Commands that touch no connection state, answered alike on every listener: `PING`,
/// `ECHO`, `SELECT`, and `COMMAND` from the listener's own `table`. Returns false (and writes
/// nothing) for any other command.
pub(crate) fn common(args: Args<'_>, table: &[Spec], proto: Proto, out: &mut Vec<u8>) -> bool {
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
    } else if args.is(0, "SELECT") {
        if n != 2 {
            wrong_arity(out, "select");
        } else if args.get(1) == b"0" {
            resp::write_simple(out, "OK");
        } else {
            resp::write_error(out, "ERR DB index is out of range");
        }
    } else if args.is(0, "COMMAND") {
        command_table::command(args, table, proto, out);
    } else {
        return false;
    }
    true
}

/// Runs one request. `out` receives the reply.
pub fn execute(
    args: Args<'_>,
    session: &mut Session,
    limits: FieldLimits,
    now: Instant,
    out: &mut Vec<u8>,
) -> Step {
    if args.is_empty() {
        return Step::Continue;
    }
    session.commands += 1;
    session.last_command = command_table::id_of(args);
    match transaction::intercept(args, &mut session.extras, limits.transaction, out) {
        transaction::Outcome::Run => {}
        transaction::Outcome::Answered => return Step::Continue,
        transaction::Outcome::Exec(queued) => return Step::Exec(queued),
    }
    if common(args, &command_table::CLIENT_PORT, session.proto, out) {
        return Step::Continue;
    }
    if args.is(0, "QUIT") {
        resp::write_simple(out, "OK");
        return Step::Close(ReapReason::Quit);
    } else if args.is(0, "CLIENT") {
        return client(args, session, limits, now, out);
    } else if args.is(0, "HELLO") {
        if let Hello::SetName { name, proto } =
            hello(args, session.id, &mut session.proto, limits, out)
        {
            return Step::Rename(Rename {
                name,
                reply: OnRenamed::Hello(proto),
            });
        }
    } else if args.is(0, "INFO") {
        probe::info(args, out);
    } else if args.is(0, "CONFIG") {
        probe::config(args, session.proto, out);
    } else if let Some(why) = probe::refusal(args) {
        resp::write_error(out, &why);
    } else {
        unknown_command(args, out);
    }
    Step::Continue
}

fn client(
    args: Args<'_>,
    session: &mut Session,
    limits: FieldLimits,
    now: Instant,
    out: &mut Vec<u8>,
) -> Step {
    let n = args.len();
    if args.is(1, "SETNAME") && n == 3 {
        if let Some(name) = checked_name(args.get(2), limits, out) {
            if session.name == name {
                // The same name again changes nothing: no event, no takeover.
                resp::write_simple(out, "OK");
            } else {
                return Step::rename(name);
            }
        }
    } else if args.is(1, "GETNAME") && n == 2 {
        match &session.name {
            Some(name) => resp::write_bulk(out, name.as_bytes()),
            None => resp::write_null(out, session.proto),
        }
    } else if args.is(1, "ID") && n == 2 {
        resp::write_integer(out, i64::try_from(session.id).unwrap_or(i64::MAX));
    } else if args.is(1, "INFO") && n == 2 {
        let mut line = String::with_capacity(512);
        client_info::describe(session, now, &mut line);
        line.push('\n');
        resp::write_bulk(out, line.as_bytes());
    } else if args.is(1, "SETINFO") && n == 4 {
        if let Some((field, value)) = checked_lib_info(args, limits, out) {
            session
                .extras
                .get_or_insert_with(Box::default)
                .lib
                .set(field, value);
            resp::write_simple(out, "OK");
        }
    } else if args.is(1, "LIST") || args.is(1, "KILL") || args.is(1, "LOOKUP") {
        resp::write_error(
            out,
            "ERR CLIENT LIST, KILL and LOOKUP are only available on the admin listener",
        );
    } else {
        let sub = printable(args.get(1));
        resp::write_error(
            out,
            &format!("ERR unknown subcommand or wrong number of arguments for 'CLIENT {sub}'"),
        );
    }
    Step::Continue
}

/// `CLIENT SETNAME name` for a connection whose name is unique to nobody (the admin
/// listener's): answers it and returns the new name (`None` clears it), or writes the error
/// and returns `None` for a name Redis would refuse or one over `limits.name`. The client port
/// answers only once the loop applied the name ([`Step::Rename`]).
#[allow(clippy::option_option)] // "no change" and "clear the name" are different answers
pub(crate) fn parse_name(
    name: &[u8],
    limits: FieldLimits,
    out: &mut Vec<u8>,
) -> Option<Option<Box<str>>> {
    let name = checked_name(name, limits, out)?;
    resp::write_simple(out, "OK");
    Some(name)
}

/// A name as `CLIENT SETNAME` and `HELLO ... SETNAME` take it (empty: `None`, no name), or
/// the error written and `None`.
#[allow(clippy::option_option)]
fn checked_name(name: &[u8], limits: FieldLimits, out: &mut Vec<u8>) -> Option<Option<Box<str>>> {
    if name.len() > limits.name {
        resp::write_error(
            out,
            &format!(
                "ERR client name is longer than {} bytes (session.max_name_bytes)",
                limits.name
            ),
        );
        return None;
    }
    if !valid_token(name) {
        resp::write_error(
            out,
            "ERR Client names cannot contain spaces, newlines or special characters.",
        );
        return None;
    }
    Some(if name.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(name).into())
    })
}

/// `CLIENT SETNAME name` for a connection that keeps its own name (the admin listener's).
pub(crate) fn set_name(
    slot: &mut Option<Box<str>>,
    name: &[u8],
    limits: FieldLimits,
    out: &mut Vec<u8>,
) {
    if let Some(name) = parse_name(name, limits, out) {
        *slot = name;
    }
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value` (args 2 and 3) for a connection that keeps its
/// library in `lib` (the admin listener's).
pub(crate) fn set_lib_info(
    lib: &mut Option<Box<LibInfo>>,
    args: Args<'_>,
    limits: FieldLimits,
    out: &mut Vec<u8>,
) {
    if let Some((field, value)) = checked_lib_info(args, limits, out) {
        lib.get_or_insert_with(Box::default).set(field, value);
        resp::write_simple(out, "OK");
    }
}

/// Checks `CLIENT SETINFO LIB-NAME|LIB-VER value`: the field and value to store, or `None`
/// with the error written.
fn checked_lib_info(
    args: Args<'_>,
    limits: FieldLimits,
    out: &mut Vec<u8>,
) -> Option<(LibField, Box<str>)> {
    let value = args.get(3);
    if !valid_token(value) {
        resp::write_error(
            out,
            "ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.",
        );
        return None;
    }
    let field = if args.is(2, "LIB-NAME") {
        LibField::Name
    } else if args.is(2, "LIB-VER") {
        LibField::Version
    } else {
        let attr = printable(args.get(2));
        resp::write_error(out, &format!("ERR Unrecognized option '{attr}'"));
        return None;
    };
    if value.len() > limits.lib {
        let name = match field {
            LibField::Name => "lib-name",
            LibField::Version => "lib-ver",
        };
        resp::write_error(
            out,
            &format!(
                "ERR {name} is longer than {} bytes (session.max_lib_bytes)",
                limits.lib
            ),
        );
        return None;
    }
    Some((field, String::from_utf8_lossy(value).into()))
}

/// Which of `CLIENT SETINFO`'s fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LibField {
    Name,
    Version,
}

impl LibInfo {
    fn set(&mut self, field: LibField, value: Box<str>) {
        match field {
            LibField::Name => self.name = value,
            LibField::Version => self.version = value,
        }
    }
}

/// What `HELLO` asked for besides the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hello {
    /// Answered (with the server map or an error); nothing else to do.
    Done,
    /// Not answered yet: the connection also asked for this name (`SETNAME`), already
    /// validated. Once the name is taken, the caller answers with [`hello_reply`] for `proto`
    /// (which switches the protocol); if it is refused, the protocol stays as it was.
    SetName {
        name: Option<Box<str>>,
        proto: Proto,
    },
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]` for the connection with `id`: switches
/// `proto` to RESP2 or RESP3 and answers with the server's map in that protocol, except with
/// `SETNAME`, where the caller does both once the name is taken ([`Hello::SetName`]). redis-py 8
/// and other current clients open with `HELLO 3` and do not fall back when refused, so RESP3
/// is spoken, not only RESP2. `AUTH` is handled before this (see `auth`); here it is skipped.
pub(crate) fn hello(
    args: Args<'_>,
    id: u64,
    proto: &mut Proto,
    limits: FieldLimits,
    out: &mut Vec<u8>,
) -> Hello {
    let mut wanted = *proto;
    let mut name = None;
    if args.len() >= 2 {
        wanted = match args.get(1) {
            b"2" => Proto::Resp2,
            b"3" => Proto::Resp3,
            v if v.iter().all(u8::is_ascii_digit) && !v.is_empty() => {
                resp::write_error(out, "NOPROTO unsupported protocol version");
                return Hello::Done;
            }
            _ => {
                resp::write_error(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                );
                return Hello::Done;
            }
        };
        let mut i = 2;
        while i < args.len() {
            if args.is(i, "AUTH") && i + 2 < args.len() {
                i += 3;
            } else if args.is(i, "SETNAME") && i + 1 < args.len() {
                // A refused name refuses the whole HELLO: the protocol does not change either.
                let Some(value) = checked_name(args.get(i + 1), limits, out) else {
                    return Hello::Done;
                };
                name = Some(value);
                i += 2;
            } else {
                let opt = printable(args.get(i));
                resp::write_error(out, &format!("ERR Syntax error in HELLO option '{opt}'"));
                return Hello::Done;
            }
        }
    }
    match name {
        Some(name) => Hello::SetName {
            name,
            proto: wanted,
        },
        None => {
            hello_reply(id, proto, wanted, out);
            Hello::Done
        }
    }
}

/// A successful `HELLO`'s answer: switches `proto` to `wanted` and writes the server map in it.
pub(crate) fn hello_reply(id: u64, proto: &mut Proto, wanted: Proto, out: &mut Vec<u8>) {
    *proto = wanted;
    // Redis 7's order: node-redis reads the RESP2 reply by position.
    resp::write_map_len(out, 7, wanted);
    resp::write_bulk(out, b"server");
    resp::write_bulk(out, b"vigild");
    resp::write_bulk(out, b"version");
    resp::write_bulk(out, env!("CARGO_PKG_VERSION").as_bytes());
    resp::write_bulk(out, b"proto");
    resp::write_integer(out, if wanted == Proto::Resp3 { 3 } else { 2 });
    resp::write_bulk(out, b"id");
    resp::write_integer(out, i64::try_from(id).unwrap_or(i64::MAX));
    resp::write_bulk(out, b"mode");
    resp::write_bulk(out, b"standalone");
    resp::write_bulk(out, b"role");
    resp::write_bulk(out, b"master");
    resp::write_bulk(out, b"modules");
    resp::write_array_len(out, 0);
}

/// Answers a name change the loop applied: `+OK`, or for `HELLO` the switch and the map.
pub(crate) fn answer_renamed(session: &mut Session, reply: OnRenamed, out: &mut Vec<u8>) {
    match reply {
        OnRenamed::Ok => resp::write_simple(out, "OK"),
        OnRenamed::Hello(wanted) => hello_reply(session.id, &mut session.proto, wanted, out),
    }
}

/// Names and library info are shown in space-separated lines: printable ASCII, no spaces.
fn valid_token(v: &[u8]) -> bool {
    v.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::args::test_words;
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
        let limits = FieldLimits::of(&SessionConfig::default());
        run_with(session, limits, words)
    }

    fn run_with(session: &mut Session, limits: FieldLimits, words: &[&[u8]]) -> (Step, String) {
        let (buf, ranges) = test_words(words);
        let mut out = Vec::new();
        let step = execute(
            Args::new(&buf, &ranges),
            session,
            limits,
            Instant::now(),
            &mut out,
        );
        (step, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn names_and_lib_fields_over_their_bounds_are_refused_and_the_old_values_kept() {
        let (_c, mut s) = session();
        let limits = FieldLimits {
            name: 8,
            lib: 4,
            transaction: 1024,
        };
        let run = |s: &mut Session, words: &[&[u8]]| run_with(s, limits, words);
        assert_eq!(
            run(&mut s, &[b"CLIENT", b"SETNAME", b"12345678"]),
            (Step::rename(Some("12345678".into())), String::new()),
            "a name at the bound is taken (the loop answers once it applied it)"
        );
        s.name = Some("12345678".into());
        let over = "-ERR client name is longer than 8 bytes (session.max_name_bytes)\r\n";
        assert_eq!(
            run(&mut s, &[b"CLIENT", b"SETNAME", b"123456789"]),
            (Step::Continue, over.into())
        );
        // Over the bound and invalid too: the bound is named first (no scan of a long value).
        assert_eq!(
            run(&mut s, &[b"CLIENT", b"SETNAME", b"a b c d e f"]).1,
            over
        );
        // HELLO ... SETNAME: the whole HELLO is refused, the protocol stays.
        assert_eq!(
            run(&mut s, &[b"HELLO", b"3", b"SETNAME", b"123456789"]),
            (Step::Continue, over.into())
        );
        assert_eq!(s.proto, Proto::Resp2);
        assert_eq!(
            run(&mut s, &[b"CLIENT", b"GETNAME"]).1,
            "$8\r\n12345678\r\n"
        );

        assert_eq!(
            run(&mut s, &[b"CLIENT", b"SETINFO", b"lib-name", b"abcd"]).1,
            "+OK\r\n"
        );
        assert_eq!(
            run(&mut s, &[b"CLIENT", b"SETINFO", b"LIB-NAME", b"abcde"]).1,
            "-ERR lib-name is longer than 4 bytes (session.max_lib_bytes)\r\n"
        );
        assert_eq!(
            run(&mut s, &[b"CLIENT", b"SETINFO", b"LIB-VER", b"1.2.3"]).1,
            "-ERR lib-ver is longer than 4 bytes (session.max_lib_bytes)\r\n"
        );
        assert!(run(&mut s, &[b"CLIENT", b"SETINFO", b"LIB-FOO", b"abcde"])
            .1
            .starts_with("-ERR Unrecognized option 'LIB-FOO'"));
        let lib = s.lib().unwrap();
        assert_eq!((&*lib.name, &*lib.version), ("abcd", ""));

        // The admin listener's own name goes through the same check.
        let mut slot = Some("old".into());
        let mut out = Vec::new();
        set_name(&mut slot, b"123456789", limits, &mut out);
        assert_eq!((slot.as_deref(), &out[..]), (Some("old"), over.as_bytes()));
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
        // The loop applies the name (through the session table), then answers.
        assert_eq!(
            run(&mut s, &[b"client", b"setname", b"dev-1"]),
            (Step::rename(Some("dev-1".into())), String::new())
        );
        let mut out = Vec::new();
        answer_renamed(&mut s, OnRenamed::Ok, &mut out);
        assert_eq!(out, b"+OK\r\n");
        s.name = Some("dev-1".into());
        assert_eq!(run(&mut s, &[b"CLIENT", b"GETNAME"]).1, "$5\r\ndev-1\r\n");
        assert_eq!(
            run(&mut s, &[b"CLIENT", b"SETNAME", b"dev-1"]),
            (Step::Continue, "+OK\r\n".into()),
            "the same name again changes nothing"
        );
        assert!(run(&mut s, &[b"CLIENT", b"SETNAME", b"a b"])
            .1
            .starts_with("-ERR Client names"));
        assert!(run(&mut s, &[b"CLIENT", b"SETNAME", b"\xff"])
            .1
            .starts_with("-ERR"));
        assert_eq!(
            run(&mut s, &[b"CLIENT", b"SETNAME", b""]),
            (Step::rename(None), String::new())
        );
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
        assert!(run(&mut s, &[b"HELLO"]).1.starts_with("*14\r\n"));
        assert_eq!(
            run(&mut s, &[b"HELLO", b"4"]).1,
            "-NOPROTO unsupported protocol version\r\n"
        );
        assert!(run(&mut s, &[b"HELLO", b"x"])
            .1
            .starts_with("-ERR Protocol version"));
        assert!(run(&mut s, &[b"HELLO", b"3", b"BOGUS"])
            .1
            .starts_with("-ERR Syntax error"));
        assert_eq!(s.proto, Proto::Resp2, "a refused HELLO changes nothing");
        assert_eq!(run(&mut s, &[b"SELECT", b"0"]).1, "+OK\r\n");
        assert!(run(&mut s, &[b"COMMAND", b"DOCS"]).1.starts_with("*28\r\n"));
        assert_eq!(run(&mut s, &[b"COMMAND", b"COUNT"]).1, ":14\r\n");
        // HELLO 3 SETNAME: nothing switched or written until the loop took the name (a
        // refused name refuses the HELLO); then RESP3: a map reply, and nulls become `_`.
        let (step, reply) = run(&mut s, &[b"HELLO", b"3", b"SETNAME", b"dev-9"]);
        assert_eq!(reply, "");
        assert_eq!(s.proto, Proto::Resp2);
        let Step::Rename(rename) = step else {
            panic!("{step:?}");
        };
        assert_eq!(rename.name.as_deref(), Some("dev-9"));
        assert_eq!(rename.reply, OnRenamed::Hello(Proto::Resp3));
        let mut out = Vec::new();
        answer_renamed(&mut s, rename.reply, &mut out);
        let reply = String::from_utf8(out).unwrap();
        assert!(reply.starts_with("%7\r\n$6\r\nserver\r\n"), "{reply}");
        assert!(reply.contains("$5\r\nproto\r\n:3\r\n"), "{reply}");
        assert_eq!(s.proto, Proto::Resp3);
        assert_eq!(run(&mut s, &[b"CLIENT", b"GETNAME"]).1, "_\r\n");
        assert!(run(&mut s, &[b"HELLO", b"2"]).1.starts_with("*14\r\n"));
        assert_eq!(run(&mut s, &[b"CLIENT", b"GETNAME"]).1, "$-1\r\n");
        // What libraries probe at connect is answered, without operator data.
        let (step, info) = run(&mut s, &[b"INFO"]);
        assert_eq!(step, Step::Continue);
        assert!(info.contains("loading:0") && !info.contains("connected_clients"));
        assert_eq!(
            run(&mut s, &[b"config", b"get", b"appendonly"]).1,
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
        assert!(run(&mut s, &[b"MONITOR"]).1.contains("SUBSCRIBE presence"));
    }

    #[test]
    fn hello_fields_come_in_redis_order() {
        let (_c, mut s) = session();
        let (_, reply) = run(&mut s, &[b"HELLO"]);
        let at = |key: &str| {
            reply
                .find(&format!("${}\r\n{key}\r\n", key.len()))
                .unwrap_or_else(|| panic!("no {key} in {reply}"))
        };
        let keys = [
            "server", "version", "proto", "id", "mode", "role", "modules",
        ];
        for pair in keys.windows(2) {
            assert!(
                at(pair[0]) < at(pair[1]),
                "{} before {}: {reply}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn multi_queues_and_exec_hands_the_requests_to_the_loop() {
        let (_c, mut s) = session();
        assert_eq!(run(&mut s, &[b"MULTI"]).1, "+OK\r\n");
        assert_eq!(run(&mut s, &[b"PING"]).1, "+QUEUED\r\n");
        let (step, reply) = run(&mut s, &[b"EXEC"]);
        assert_eq!(reply, "*1\r\n");
        assert_eq!(step, Step::Exec(b"*1\r\n$4\r\nPING\r\n"[..].into()));
        assert!(s.transaction().is_none());
    }
}
