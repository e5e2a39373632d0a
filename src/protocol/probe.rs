//! What client libraries and tools ask a server about itself when they connect, answered on the
//! client port in the shape Redis gives, without operator data (which stays on the admin
//! listener):
//!
//! - `INFO [section]`: `# Server` (who this is) and `# Persistence` with `loading:0`. ioredis's
//!   ready check sends `INFO` after every connect and treats an error as a failed connection;
//!   it waits while `loading` is not 0. The counters an operator reads (`connected_clients`,
//!   memory, reaps) are only on the admin listener's `INFO`.
//! - `CONFIG GET pattern...`: a few neutral keys (`save`, `appendonly`: what redis-benchmark
//!   asks before every run, to warn about persistence; `databases`, `maxmemory`, `timeout`),
//!   matched with Redis's glob; `CONFIG SET` and the other subcommands are refused with the
//!   reason.
//! - `MONITOR`, `SHUTDOWN` and the like: a clear refusal saying why and what to use instead,
//!   rather than "unknown command".
//!
//! Which commands these are, and why, is the README's table "What clients probe".

use crate::protocol::args::{self, Args};
use crate::protocol::glob;
use crate::protocol::resp::{self, Proto};

/// The Redis version whose client protocol vigild follows (RESP3 through `HELLO`, `CLIENT
/// SETINFO`, Redis 7 `CLIENT INFO` fields and `COMMAND` replies): what `redis_version` says, so
/// a library that checks it enables what vigild really has. vigild's own version is
/// `vigild_version` (and `HELLO`'s `version`).
pub const REDIS_PROTOCOL_VERSION: &str = "7.2.0";

/// `INFO` sections on the client port, in order.
const SECTIONS: [&str; 2] = ["server", "persistence"];

/// The neutral `CONFIG GET` answers of the client port.
const NEUTRAL_CONFIG: [(&str, &str); 5] = [
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("timeout", "0"),
];

/// Whether `INFO wanted...` asks for `section`: every section when `wanted` is empty or names
/// `all`, `default` or `everything`; otherwise the sections it names (any case). Shared with the
/// admin listener's `INFO`.
pub fn info_selects(wanted: &[&[u8]], section: &str) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| {
            [&b"all"[..], b"default", b"everything", section.as_bytes()]
                .iter()
                .any(|a| w.eq_ignore_ascii_case(a))
        })
}

/// `CONFIG GET pattern...`'s reply from `pairs`: those whose key matches any pattern (Redis's
/// glob, any case), as a map.
fn config_get_reply<K: AsRef<str>, V: AsRef<str>>(
    args: Args<'_>,
    pairs: &[(K, V)],
    proto: Proto,
    out: &mut Vec<u8>,
) {
    let hits: Vec<&(K, V)> = pairs
        .iter()
        .filter(|(k, _)| (2..args.len()).any(|i| glob::matches(args.get(i), k.as_ref().as_bytes())))
        .collect();
    resp::write_map_len(out, hits.len(), proto);
    for (k, v) in hits {
        resp::write_bulk(out, k.as_ref().as_bytes());
        resp::write_bulk(out, v.as_ref().as_bytes());
    }
}

/// `INFO [section ...]` on the client port. Unknown sections give nothing, as in Redis.
pub fn info(args: Args<'_>, out: &mut Vec<u8>) {
    let wanted: Vec<&[u8]> = (1..args.len()).map(|i| args.get(i)).collect();
    let mut text = String::with_capacity(256);
    for section in SECTIONS {
        if !info_selects(&wanted, section) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        match section {
            "server" => {
                text.push_str("# Server\r\n");
                for (k, v) in [
                    ("redis_version", REDIS_PROTOCOL_VERSION),
                    ("server_name", "vigild"),
                    ("vigild_version", env!("CARGO_PKG_VERSION")),
                    ("redis_mode", "standalone"),
                ] {
                    text.push_str(&format!("{k}:{v}\r\n"));
                }
            }
            _ => text.push_str("# Persistence\r\nloading:0\r\n"),
        }
    }
    resp::write_bulk(out, text.as_bytes());
}

/// `CONFIG ...` on the client port.
pub fn config(args: Args<'_>, proto: Proto, out: &mut Vec<u8>) {
    config_command(
        args,
        proto,
        out,
        || NEUTRAL_CONFIG,
        |sub| {
            format!(
                "ERR CONFIG {sub} is not available on the client port: vigild's configuration \
                 is its TOML file (edit it, then reload with SIGHUP); the admin listener's \
                 CONFIG GET shows it"
            )
        },
    );
}

/// `CONFIG GET pattern...` answered from `pairs` (built only for a GET), any other
/// subcommand refused with `refusal(SUBCOMMAND)`, wrong arity as Redis says it. Shared by both
/// listeners, which differ in what they show and why they refuse.
pub fn config_command<K: AsRef<str>, V: AsRef<str>, P: AsRef<[(K, V)]>>(
    args: Args<'_>,
    proto: Proto,
    out: &mut Vec<u8>,
    pairs: impl FnOnce() -> P,
    refusal: impl FnOnce(&str) -> String,
) {
    if args.is(1, "GET") && args.len() >= 3 {
        config_get_reply(args, pairs().as_ref(), proto, out);
    } else if args.is(1, "GET") {
        args::wrong_arity(out, "config|get");
    } else if args.len() >= 2 {
        let sub = args::printable(args.get(1)).to_ascii_uppercase();
        resp::write_error(out, &refusal(&sub));
    } else {
        args::wrong_arity(out, "config");
    }
}

/// A refusal for a server command vigild does not offer to clients, with the reason; `None`
/// for a command that is not one of those.
pub fn refusal(args: Args<'_>) -> Option<String> {
    let why = if args.is(0, "MONITOR") {
        "MONITOR is not supported: vigild has no keyspace to monitor; to watch sessions come \
         and go, SUBSCRIBE presence on the admin listener"
    } else if args.is(0, "SHUTDOWN") {
        "SHUTDOWN is not available to clients: stop vigild through its service manager \
         (SIGTERM, systemctl stop)"
    } else if args.is(0, "DEBUG") || args.is(0, "SLOWLOG") || args.is(0, "LATENCY") {
        "this server command is not available on the client port; operator data is on the \
         admin listener (INFO, CLIENT LIST)"
    } else if args.is(0, "REPLICAOF") || args.is(0, "SLAVEOF") || args.is(0, "FAILOVER") {
        "vigild does not replicate: each process is standalone"
    } else {
        return None;
    };
    Some(format!("ERR {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::args::test_words;

    fn run(f: impl Fn(Args<'_>, &mut Vec<u8>), words: &[&str]) -> String {
        let (buf, ranges) = test_words(words);
        let mut out = Vec::new();
        f(Args::new(&buf, &ranges), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn info_has_the_server_and_loading_and_no_operator_data() {
        let all = run(info, &["INFO"]);
        assert!(all.starts_with("$"), "{all}");
        assert!(all.contains("# Server\r\nredis_version:7.2.0\r\n"), "{all}");
        assert!(
            all.contains("\r\n\r\n# Persistence\r\nloading:0\r\n"),
            "{all}"
        );
        assert!(!all.contains("connected_clients"), "{all}");
        assert_eq!(
            run(info, &["INFO", "persistence"]).lines().nth(1),
            Some("# Persistence")
        );
        assert_eq!(run(info, &["INFO", "clients"]), "$0\r\n\r\n");
        assert!(run(info, &["INFO", "EVERYTHING"]).contains("loading:0"));
    }

    #[test]
    fn config_get_answers_neutral_keys_and_refuses_the_rest() {
        let c = |a: Args<'_>, out: &mut Vec<u8>| config(a, Proto::Resp2, out);
        assert_eq!(
            run(c, &["CONFIG", "GET", "save"]),
            "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
        );
        assert_eq!(
            run(c, &["config", "get", "appendonly", "nosuch"]),
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
        assert!(run(c, &["CONFIG", "GET", "*"]).starts_with("*10\r\n"));
        assert_eq!(run(c, &["CONFIG", "GET", "keepalive.*"]), "*0\r\n");
        assert!(run(c, &["CONFIG", "SET", "timeout", "1"])
            .starts_with("-ERR CONFIG SET is not available on the client port"));
        assert!(run(c, &["CONFIG", "GET"]).starts_with("-ERR wrong number"));
        let r3 = |a: Args<'_>, out: &mut Vec<u8>| config(a, Proto::Resp3, out);
        assert!(run(r3, &["CONFIG", "GET", "save"]).starts_with("%1\r\n"));
    }

    #[test]
    fn server_commands_are_refused_with_a_reason() {
        let (buf, ranges) = test_words(&["monitor"]);
        assert!(refusal(Args::new(&buf, &ranges))
            .unwrap()
            .contains("SUBSCRIBE presence"));
        let (buf, ranges) = test_words(&["SHUTDOWN", "NOSAVE"]);
        assert!(refusal(Args::new(&buf, &ranges))
            .unwrap()
            .contains("SIGTERM"));
        let (buf, ranges) = test_words(&["GET", "k"]);
        assert_eq!(refusal(Args::new(&buf, &ranges)), None);
    }
}
