//! What `COMMAND` says about the commands a listener has: `COMMAND`, `COMMAND COUNT`,
//! `COMMAND INFO name...`, `COMMAND DOCS [name...]` and `COMMAND LIST`, in Redis 7's reply
//! shapes, so that client libraries and tools that introspect the server (redis-cli's hints,
//! cluster-aware clients reading key positions) see the truth: vigild's commands, none with
//! keys.
//!
//! One table per listener ([`CLIENT_PORT`], [`ADMIN`]); the tables are data, the replies are
//! rendered from them, and a unit test checks that every command the listener runs is listed.

use crate::protocol::args::Args;
use crate::protocol::resp::{self, Proto};

/// One command (or subcommand) as `COMMAND INFO` and `COMMAND DOCS` describe it.
#[derive(Debug)]
pub struct Spec {
    /// Lower case, as Redis lists it (`client|setname` for a subcommand).
    pub name: &'static str,
    /// Redis's arity: positive = exactly that many words, negative = at least that many.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub acl: &'static [&'static str],
    pub group: &'static str,
    pub summary: &'static str,
    pub since: &'static str,
    pub subcommands: &'static [Spec],
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    acl: &'static [&'static str],
    group: &'static str,
    summary: &'static str,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        acl,
        group,
        summary,
        since: "1.0.0",
        subcommands: &[],
    }
}

const FAST: &[&str] = &["fast"];
const STALE_FAST: &[&str] = &["loading", "stale", "fast"];
const CONN: &[&str] = &["@fast", "@connection"];
const SLOW_CONN: &[&str] = &["@slow", "@connection"];

/// A command with subcommands (`CLIENT`, `COMMAND`, `CONFIG`).
const fn container(
    name: &'static str,
    flags: &'static [&'static str],
    acl: &'static [&'static str],
    group: &'static str,
    summary: &'static str,
    subcommands: &'static [Spec],
) -> Spec {
    Spec {
        subcommands,
        ..spec(name, -2, flags, acl, group, summary)
    }
}

/// `CLIENT` with a listener's subcommands.
const fn client(subcommands: &'static [Spec]) -> Spec {
    container(
        "client",
        &[],
        SLOW_CONN,
        "connection",
        "A container for client connection commands.",
        subcommands,
    )
}

/// `CONFIG` with a listener's `CONFIG GET`.
const fn config(subcommands: &'static [Spec]) -> Spec {
    container(
        "config",
        &[],
        &["@slow"],
        "server",
        "A container for server configuration commands.",
        subcommands,
    )
}

// What both listeners have, described once.
const ECHO: Spec = spec(
    "echo",
    2,
    FAST,
    CONN,
    "connection",
    "Returns the given string.",
);
const HELLO: Spec = spec(
    "hello",
    -1,
    &["noscript", "loading", "stale", "fast", "no-auth"],
    CONN,
    "connection",
    "Handshakes with the server: protocol, authentication, name.",
);
const PING: Spec = spec(
    "ping",
    -1,
    FAST,
    CONN,
    "connection",
    "Returns the server's liveliness response.",
);
const QUIT: Spec = spec(
    "quit",
    -1,
    &["loading", "stale", "fast", "no-auth"],
    CONN,
    "connection",
    "Closes the connection.",
);
const SELECT: Spec = spec(
    "select",
    2,
    STALE_FAST,
    CONN,
    "connection",
    "Changes the selected database (only 0 exists).",
);
const CLIENT_GETNAME: Spec = spec(
    "client|getname",
    2,
    STALE_FAST,
    CONN,
    "connection",
    "Returns the name of the connection.",
);
const CLIENT_ID: Spec = spec(
    "client|id",
    2,
    STALE_FAST,
    CONN,
    "connection",
    "Returns the unique client ID of the connection.",
);
const CLIENT_INFO: Spec = spec(
    "client|info",
    2,
    STALE_FAST,
    SLOW_CONN,
    "connection",
    "Returns information about the connection.",
);
const CLIENT_SETINFO: Spec = spec(
    "client|setinfo",
    4,
    STALE_FAST,
    SLOW_CONN,
    "connection",
    "Sets information specific to the client or connection.",
);
const CLIENT_SETNAME: Spec = spec(
    "client|setname",
    3,
    STALE_FAST,
    SLOW_CONN,
    "connection",
    "Sets the connection name.",
);
const COMMAND: Spec = Spec {
    arity: -1,
    ..container(
        "command",
        &["loading", "stale"],
        SLOW_CONN,
        "server",
        "Returns detailed information about all commands.",
        &[
            spec(
                "command|count",
                2,
                &["loading", "stale"],
                SLOW_CONN,
                "server",
                "Returns a count of commands.",
            ),
            spec(
                "command|docs",
                -2,
                &["loading", "stale"],
                SLOW_CONN,
                "server",
                "Returns documentary information about one, multiple or all commands.",
            ),
            spec(
                "command|info",
                -2,
                &["loading", "stale"],
                SLOW_CONN,
                "server",
                "Returns information about one, multiple or all commands.",
            ),
            spec(
                "command|list",
                -2,
                &["loading", "stale"],
                SLOW_CONN,
                "server",
                "Returns a list of command names.",
            ),
        ],
    )
};
const TRANSACTION_FLAGS: &[&str] = &["noscript", "loading", "stale", "fast", "allow-busy"];
const TRANSACTION_ACL: &[&str] = &["@fast", "@transaction"];
/// `CLIENT KILL`, `LIST` and `LOOKUP`: what only the admin listener has.
const ADMIN_FLAGS: &[&str] = &["admin", "loading", "stale"];

/// The client port's commands.
pub static CLIENT_PORT: [Spec; 14] = [
    spec(
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast", "no-auth"],
        CONN,
        "connection",
        "Authenticates the connection.",
    ),
    client(&[
        CLIENT_GETNAME,
        CLIENT_ID,
        CLIENT_INFO,
        CLIENT_SETINFO,
        CLIENT_SETNAME,
    ]),
    COMMAND,
    config(&[spec(
        "config|get",
        -3,
        &["loading", "stale"],
        &["@slow"],
        "server",
        "Returns the effective values of a few neutral parameters tools ask for.",
    )]),
    spec(
        "discard",
        1,
        TRANSACTION_FLAGS,
        TRANSACTION_ACL,
        "transactions",
        "Discards a transaction.",
    ),
    ECHO,
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip-slowlog"],
        &["@slow", "@transaction"],
        "transactions",
        "Executes all commands in a transaction.",
    ),
    HELLO,
    spec(
        "info",
        -1,
        &["loading", "stale"],
        &["@slow"],
        "server",
        "Returns the server's identity (operator data is on the admin listener).",
    ),
    spec(
        "multi",
        1,
        TRANSACTION_FLAGS,
        TRANSACTION_ACL,
        "transactions",
        "Starts a transaction.",
    ),
    PING,
    QUIT,
    SELECT,
    spec(
        "unwatch",
        1,
        TRANSACTION_FLAGS,
        TRANSACTION_ACL,
        "transactions",
        "Forgets about watched keys (vigild has none).",
    ),
];

/// The admin listener's commands.
pub static ADMIN: [Spec; 13] = [
    client(&[
        CLIENT_GETNAME,
        CLIENT_ID,
        CLIENT_INFO,
        spec(
            "client|kill",
            -3,
            ADMIN_FLAGS,
            &["@admin", "@slow", "@dangerous", "@connection"],
            "connection",
            "Reaps sessions by id or address (reason killed).",
        ),
        spec(
            "client|list",
            -2,
            ADMIN_FLAGS,
            &["@admin", "@slow", "@dangerous", "@connection"],
            "connection",
            "Lists the live sessions.",
        ),
        spec(
            "client|lookup",
            3,
            ADMIN_FLAGS,
            &["@admin", "@slow", "@connection"],
            "connection",
            "Finds the sessions holding a name.",
        ),
        CLIENT_SETINFO,
        CLIENT_SETNAME,
    ]),
    COMMAND,
    config(&[spec(
        "config|get",
        -3,
        ADMIN_FLAGS,
        &["@admin", "@slow", "@dangerous"],
        "server",
        "Returns the effective values of configuration keys.",
    )]),
    ECHO,
    HELLO,
    spec(
        "info",
        -1,
        &["loading", "stale"],
        &["@slow", "@dangerous"],
        "server",
        "Returns information and statistics about the server.",
    ),
    PING,
    spec(
        "psubscribe",
        -2,
        &["pubsub", "noscript", "loading", "stale"],
        &["@pubsub", "@slow"],
        "pubsub",
        "Listens for presence events on channels that match patterns.",
    ),
    spec(
        "punsubscribe",
        -1,
        &["pubsub", "noscript", "loading", "stale"],
        &["@pubsub", "@slow"],
        "pubsub",
        "Stops listening to patterns.",
    ),
    QUIT,
    SELECT,
    spec(
        "subscribe",
        -2,
        &["pubsub", "noscript", "loading", "stale"],
        &["@pubsub", "@slow"],
        "pubsub",
        "Listens for presence events (channel presence).",
    ),
    spec(
        "unsubscribe",
        -1,
        &["pubsub", "noscript", "loading", "stale"],
        &["@pubsub", "@slow"],
        "pubsub",
        "Stops listening to channels.",
    ),
];

/// Answers `COMMAND [COUNT|INFO|DOCS|LIST ...]` from `table`.
pub fn command(args: Args<'_>, table: &[Spec], proto: Proto, out: &mut Vec<u8>) {
    if args.len() == 1 {
        resp::write_array_len(out, table.len());
        for s in table {
            write_info(s, out);
        }
    } else if args.is(1, "COUNT") && args.len() == 2 {
        resp::write_integer(out, table.len() as i64);
    } else if args.is(1, "LIST") {
        // FILTERBY (module, aclcat, pattern) is accepted by Redis; with nothing matching a
        // module or a pattern here, only an unfiltered list is answered.
        if args.len() > 2 {
            resp::write_array_len(out, 0);
            return;
        }
        resp::write_array_len(out, table.len());
        for s in table {
            resp::write_bulk(out, s.name.as_bytes());
        }
    } else if args.is(1, "INFO") {
        if args.len() == 2 {
            resp::write_array_len(out, table.len());
            for s in table {
                write_info(s, out);
            }
            return;
        }
        resp::write_array_len(out, args.len() - 2);
        for i in 2..args.len() {
            match find(table, args.get(i)) {
                Some(s) => write_info(s, out),
                None => resp::write_null(out, proto),
            }
        }
    } else if args.is(1, "DOCS") {
        let wanted: Vec<&Spec> = if args.len() == 2 {
            table.iter().collect()
        } else {
            (2..args.len())
                .filter_map(|i| find(table, args.get(i)))
                .collect()
        };
        resp::write_map_len(out, wanted.len(), proto);
        for s in wanted {
            resp::write_bulk(out, s.name.as_bytes());
            write_docs(s, proto, out);
        }
    } else {
        let sub = crate::protocol::args::printable(args.get(1));
        resp::write_error(
            out,
            &format!("ERR unknown subcommand or wrong number of arguments for 'COMMAND {sub}'"),
        );
    }
}

/// The command named `name` (any case; `client|setname` finds a subcommand).
pub fn find<'t>(table: &'t [Spec], name: &[u8]) -> Option<&'t Spec> {
    let (top, sub) = match name.iter().position(|&b| b == b'|') {
        Some(i) => (&name[..i], Some(name)),
        None => (name, None),
    };
    let s = table
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(top))?;
    match sub {
        None => Some(s),
        Some(full) => s
            .subcommands
            .iter()
            .find(|c| c.name.as_bytes().eq_ignore_ascii_case(full)),
    }
}

/// A small number for the client-port command (or subcommand) `args` runs, kept per session
/// for `CLIENT LIST`'s `cmd=` (one byte instead of a name); 0 for anything not in the table.
pub fn id_of(args: Args<'_>) -> u8 {
    let mut id = 0u8;
    for s in &CLIENT_PORT {
        id += 1;
        if !args.is(0, s.name) {
            id += s.subcommands.len() as u8;
            continue;
        }
        for c in s.subcommands {
            id += 1;
            let sub = c.name.rsplit('|').next().unwrap_or_default();
            if args.is(1, sub) {
                return id;
            }
        }
        return id - s.subcommands.len() as u8;
    }
    0
}

/// The name `id_of` numbered, as `CLIENT LIST` shows it (`NULL`, as in Redis, for none).
pub fn name_of(id: u8) -> &'static str {
    let mut n = 0u8;
    for s in &CLIENT_PORT {
        n += 1;
        if n == id {
            return s.name;
        }
        for c in s.subcommands {
            n += 1;
            if n == id {
                return c.name;
            }
        }
    }
    "NULL"
}

/// Redis 7's ten-element command info: name, arity, flags, first key, last key, step, ACL
/// categories, tips, key specs, subcommands.
fn write_info(s: &Spec, out: &mut Vec<u8>) {
    resp::write_array_len(out, 10);
    resp::write_bulk(out, s.name.as_bytes());
    resp::write_integer(out, s.arity);
    resp::write_array_len(out, s.flags.len());
    for f in s.flags {
        resp::write_simple(out, f);
    }
    for _ in 0..3 {
        resp::write_integer(out, 0); // no keys: first, last, step
    }
    resp::write_array_len(out, s.acl.len());
    for c in s.acl {
        resp::write_simple(out, c);
    }
    resp::write_array_len(out, 0); // tips
    resp::write_array_len(out, 0); // key specs
    resp::write_array_len(out, s.subcommands.len());
    for c in s.subcommands {
        write_info(c, out);
    }
}

/// `COMMAND DOCS`' map for one command: summary, since, group, complexity, and subcommands
/// when it has them (no arguments: vigild's commands take plain words).
fn write_docs(s: &Spec, proto: Proto, out: &mut Vec<u8>) {
    let pairs = 4 + usize::from(!s.subcommands.is_empty());
    resp::write_map_len(out, pairs, proto);
    for (k, v) in [
        ("summary", s.summary),
        ("since", s.since),
        ("group", s.group),
        ("complexity", "O(1)"),
    ] {
        resp::write_bulk(out, k.as_bytes());
        resp::write_bulk(out, v.as_bytes());
    }
    if !s.subcommands.is_empty() {
        resp::write_bulk(out, b"subcommands");
        resp::write_map_len(out, s.subcommands.len(), proto);
        for c in s.subcommands {
            resp::write_bulk(out, c.name.as_bytes());
            write_docs(c, proto, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::args::test_words;

    fn run(table: &[Spec], words: &[&str]) -> String {
        let (buf, ranges) = test_words(words);
        let mut out = Vec::new();
        command(Args::new(&buf, &ranges), table, Proto::Resp2, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn count_list_and_info_follow_the_table() {
        assert_eq!(run(&CLIENT_PORT, &["COMMAND", "COUNT"]), ":14\r\n");
        assert_eq!(run(&ADMIN, &["command", "count"]), ":13\r\n");
        let list = run(&CLIENT_PORT, &["COMMAND", "LIST"]);
        assert!(list.starts_with("*14\r\n"), "{list}");
        assert!(list.contains("$4\r\nping\r\n") && list.contains("$5\r\nmulti\r\n"));
        let info = run(
            &CLIENT_PORT,
            &["COMMAND", "INFO", "ping", "nosuch", "CLIENT|SETNAME"],
        );
        assert!(
            info.starts_with("*3\r\n*10\r\n$4\r\nping\r\n:-1\r\n*1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n"),
            "{info}"
        );
        assert!(
            info.contains("$-1\r\n"),
            "an unknown command is a null: {info}"
        );
        assert!(info.contains("$14\r\nclient|setname\r\n:3\r\n"), "{info}");
        assert!(run(&CLIENT_PORT, &["COMMAND", "BOGUS"]).starts_with("-ERR unknown subcommand"));
        // Admin-only commands are not on the client port's list, and the other way round.
        assert!(find(&CLIENT_PORT, b"subscribe").is_none());
        assert!(find(&CLIENT_PORT, b"client|list").is_none());
        assert!(find(&ADMIN, b"client|list").is_some());
        assert!(find(&ADMIN, b"multi").is_none());
    }

    #[test]
    fn docs_is_a_map_of_maps() {
        let docs = run(&CLIENT_PORT, &["COMMAND", "DOCS", "echo"]);
        assert_eq!(
            docs,
            "*2\r\n$4\r\necho\r\n*8\r\n$7\r\nsummary\r\n$25\r\nReturns the given string.\r\n\
             $5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$10\r\nconnection\r\n\
             $10\r\ncomplexity\r\n$4\r\nO(1)\r\n"
        );
        let all = run(&CLIENT_PORT, &["COMMAND", "DOCS"]);
        assert!(all.starts_with("*28\r\n"), "{all}");
        assert!(all.contains("$11\r\nsubcommands\r\n"), "{all}");
    }

    #[test]
    fn command_ids_name_commands_and_subcommands() {
        let id = |words: &[&str]| {
            let (buf, ranges) = test_words(words);
            name_of(id_of(Args::new(&buf, &ranges)))
        };
        assert_eq!(id(&["PING"]), "ping");
        assert_eq!(id(&["client", "setname", "x"]), "client|setname");
        assert_eq!(id(&["CLIENT", "INFO"]), "client|info");
        assert_eq!(id(&["CLIENT", "NOSUCH"]), "client");
        assert_eq!(id(&["unwatch"]), "unwatch");
        assert_eq!(id(&["GET", "k"]), "NULL");
        assert_eq!(name_of(0), "NULL");
        assert_eq!(name_of(255), "NULL");
    }

    #[test]
    fn every_table_is_sorted_and_names_its_subcommands_under_itself() {
        for table in [&CLIENT_PORT[..], &ADMIN[..]] {
            for pair in table.windows(2) {
                assert!(
                    pair[0].name < pair[1].name,
                    "{} before {}",
                    pair[0].name,
                    pair[1].name
                );
            }
            for s in table {
                for c in s.subcommands {
                    assert!(c.name.starts_with(&format!("{}|", s.name)), "{}", c.name);
                }
            }
        }
    }
}
