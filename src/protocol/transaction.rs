//! `MULTI` / `EXEC` / `DISCARD` on the client port, as Redis runs them, over the commands
//! vigild has: after `MULTI` every command is checked (known, right number of words), answered
//! `+QUEUED` and kept; `EXEC` answers an array with one reply per queued command, in order;
//! `DISCARD` forgets them. A command refused while queueing (unknown, wrong arity, over the
//! bound) makes `EXEC` answer `-EXECABORT` and run nothing, as Redis does. `WATCH` and
//! `UNWATCH` are `+OK`: vigild has no keys, so a watched transaction never aborts. `QUIT` is
//! never queued (it closes at once, as in Redis); `MULTI` inside a transaction and `WATCH`
//! inside one are errors that do not abort it.
//!
//! Why client libraries need it: redis-py's `pipeline()` is transactional by default, and
//! ioredis and node-redis `multi()` send `MULTI` ... `EXEC` (what they do at connect and on a
//! pipeline is listed in the README).
//!
//! Bounded: the queued requests, re-encoded as RESP, may take at most `max_bytes`
//! (`session.max_request_bytes`) in all; past it the transaction is refused. `EXEC` hands the
//! queued bytes back to the event loop ([`Step::Exec`]), which runs them like pipelined requests
//! in front of whatever the client sent after `EXEC`. So a queued `CLIENT SETNAME` takes the
//! same path (name index, presence event, takeover) as one sent outside a transaction, and
//! each queued command writes exactly its one reply into `EXEC`'s array.
//!
//! [`Step::Exec`]: crate::protocol::step::Step::Exec

use crate::protocol::args::{self, Args};
use crate::protocol::command_table::{self, CLIENT_PORT};
use crate::protocol::resp;
use crate::session::{Extras, Transaction};

/// What a request does to a session's transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a transaction matter: run the command as usual.
    Run,
    /// Answered (queued, refused, discarded, ...).
    Answered,
    /// `EXEC`: the array header is written; run these queued requests now, in order.
    Exec(Box<[u8]>),
}

/// Handles `args` for a session whose open transaction, if any, is in `extras` (allocated by
/// `MULTI` only; a session outside `MULTI` pays nothing here but a few comparisons).
pub fn intercept(
    args: Args<'_>,
    extras: &mut Option<Box<Extras>>,
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Outcome {
    let Some(tx) = extras.as_mut().and_then(|e| e.transaction.as_mut()) else {
        if args.is(0, "MULTI") {
            if args.len() != 1 {
                args::wrong_arity(out, "multi");
            } else {
                extras.get_or_insert_with(Box::default).transaction = Some(Box::default());
                resp::write_simple(out, "OK");
            }
        } else if args.is(0, "EXEC") || args.is(0, "DISCARD") {
            let cmd = args::printable(args.get(0)).to_ascii_uppercase();
            resp::write_error(out, &format!("ERR {cmd} without MULTI"));
        } else if args.is(0, "WATCH") || args.is(0, "UNWATCH") {
            if args.is(0, "WATCH") && args.len() < 2 {
                args::wrong_arity(out, "watch");
            } else {
                resp::write_simple(out, "OK");
            }
        } else {
            return Outcome::Run;
        }
        return Outcome::Answered;
    };
    if args.is(0, "EXEC") || args.is(0, "DISCARD") {
        let tx = close(extras);
        if args.is(0, "DISCARD") {
            resp::write_simple(out, "OK");
        } else if tx.dirty {
            resp::write_error(
                out,
                "EXECABORT Transaction discarded because of previous errors.",
            );
        } else {
            resp::write_array_len(out, tx.count);
            return Outcome::Exec(tx.queued.into_boxed_slice());
        }
    } else if args.is(0, "MULTI") {
        resp::write_error(out, "ERR MULTI calls can not be nested");
    } else if args.is(0, "WATCH") {
        resp::write_error(out, "ERR WATCH inside MULTI is not allowed");
    } else if args.is(0, "QUIT") {
        return Outcome::Run;
    } else if let Some(why) = refuse(args) {
        tx.dirty = true;
        resp::write_error(out, &why);
    } else {
        let size = encoded_len(args);
        if tx.queued.len() + size > max_bytes {
            tx.dirty = true;
            resp::write_error(
                out,
                &format!(
                    "ERR the transaction is larger than {max_bytes} bytes \
                     (session.max_request_bytes); it will be discarded"
                ),
            );
        } else {
            encode(args, &mut tx.queued);
            tx.count += 1;
            resp::write_simple(out, "QUEUED");
        }
    }
    Outcome::Answered
}

/// Ends the open transaction and returns it; the extras go too when nothing else is in them.
fn close(extras: &mut Option<Box<Extras>>) -> Box<Transaction> {
    let tx = extras
        .as_mut()
        .and_then(|e| e.transaction.take())
        .unwrap_or_default();
    if extras.as_ref().is_some_and(|e| e.is_empty()) {
        *extras = None;
    }
    tx
}

/// Why a command cannot be queued (Redis's messages), or `None` when it can.
fn refuse(args: Args<'_>) -> Option<String> {
    let name = args.get(0);
    let Some(spec) = command_table::find(&CLIENT_PORT, name) else {
        let mut out = Vec::new();
        args::unknown_command(args, &mut out);
        // The reply line without its `-` and CRLF.
        let line = String::from_utf8_lossy(&out);
        return Some(line.trim_start_matches('-').trim_end().to_string());
    };
    let n = args.len() as i64;
    let arity_ok = if spec.arity >= 0 {
        n == spec.arity
    } else {
        n >= -spec.arity
    };
    if !arity_ok {
        let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
        return Some(format!(
            "ERR wrong number of arguments for '{lower}' command"
        ));
    }
    None
}

fn encoded_len(args: Args<'_>) -> usize {
    let digits = |n: usize| n.to_string().len();
    let mut len = 3 + digits(args.len());
    for i in 0..args.len() {
        let a = args.get(i).len();
        len += 3 + digits(a) + a + 2;
    }
    len
}

fn encode(args: Args<'_>, out: &mut Vec<u8>) {
    resp::write_array_len(out, args.len());
    for i in 0..args.len() {
        resp::write_bulk(out, args.get(i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::args::test_words;

    fn run(slot: &mut Option<Box<Extras>>, words: &[&str]) -> (Outcome, String) {
        let (buf, ranges) = test_words(words);
        let mut out = Vec::new();
        let o = intercept(Args::new(&buf, &ranges), slot, 200, &mut out);
        (o, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn queue_then_exec_hands_back_the_requests() {
        let mut tx = None;
        assert_eq!(run(&mut tx, &["PING"]), (Outcome::Run, String::new()));
        assert_eq!(run(&mut tx, &["multi"]).1, "+OK\r\n");
        assert_eq!(run(&mut tx, &["PING"]).1, "+QUEUED\r\n");
        assert_eq!(run(&mut tx, &["ECHO", "x"]).1, "+QUEUED\r\n");
        assert_eq!(
            run(&mut tx, &["MULTI"]).1,
            "-ERR MULTI calls can not be nested\r\n"
        );
        assert_eq!(
            run(&mut tx, &["QUIT"]).0,
            Outcome::Run,
            "QUIT is never queued"
        );
        let (o, reply) = run(&mut tx, &["EXEC"]);
        assert_eq!(reply, "*2\r\n");
        let want: &[u8] = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n";
        assert_eq!(o, Outcome::Exec(want.into()));
        assert!(tx.is_none(), "the extras go with the transaction");
        assert_eq!(run(&mut tx, &["EXEC"]).1, "-ERR EXEC without MULTI\r\n");
        assert_eq!(
            run(&mut tx, &["DISCARD"]).1,
            "-ERR DISCARD without MULTI\r\n"
        );
    }

    #[test]
    fn a_refused_command_aborts_exec_and_discard_forgets() {
        let mut tx = None;
        run(&mut tx, &["MULTI"]);
        assert!(run(&mut tx, &["GET", "k"])
            .1
            .starts_with("-ERR unknown command 'GET'"));
        assert_eq!(
            run(&mut tx, &["ECHO"]).1,
            "-ERR wrong number of arguments for 'echo' command\r\n"
        );
        assert_eq!(
            run(&mut tx, &["EXEC"]),
            (
                Outcome::Answered,
                "-EXECABORT Transaction discarded because of previous errors.\r\n".into()
            )
        );
        run(&mut tx, &["MULTI"]);
        run(&mut tx, &["PING"]);
        assert_eq!(run(&mut tx, &["DISCARD"]).1, "+OK\r\n");
        assert!(tx.is_none());
        // A session with a library keeps it across a transaction.
        let mut extras = Some(Box::new(Extras {
            identity: None,
            tls: None,
            pending_identity: None,
            lib: crate::session::LibInfo {
                name: "redis-py".into(),
                version: "8".into(),
            },
            transaction: None,
            proxy_hop: None,
        }));
        run(&mut extras, &["MULTI"]);
        run(&mut extras, &["DISCARD"]);
        assert_eq!(extras.as_ref().map(|e| &*e.lib.name), Some("redis-py"));
        assert_eq!(run(&mut tx, &["WATCH", "k"]).1, "+OK\r\n");
        assert_eq!(run(&mut tx, &["UNWATCH"]).1, "+OK\r\n");
    }

    #[test]
    fn the_queue_is_bounded_and_encoded_lengths_are_exact() {
        let mut tx = None;
        run(&mut tx, &["MULTI"]);
        let big = "x".repeat(150);
        assert_eq!(run(&mut tx, &["ECHO", &big]).1, "+QUEUED\r\n");
        assert!(run(&mut tx, &["ECHO", &big])
            .1
            .contains("larger than 200 bytes"));
        assert!(run(&mut tx, &["EXEC"]).1.starts_with("-EXECABORT"));
        for words in [
            &["PING"][..],
            &["ECHO", ""],
            &["CLIENT", "SETNAME", "abcdefghij"],
        ] {
            let (buf, ranges) = test_words(words);
            let args = Args::new(&buf, &ranges);
            let mut out = Vec::new();
            encode(args, &mut out);
            assert_eq!(encoded_len(args), out.len(), "{words:?}");
        }
    }
}
