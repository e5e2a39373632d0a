//! Redis pub/sub on the admin listener: `SUBSCRIBE`, `UNSUBSCRIBE`, `PSUBSCRIBE`,
//! `PUNSUBSCRIBE`, and the rules of a subscribed connection, in Redis's RESP2 framing, so
//! `redis-cli subscribe presence` and every client library's pub/sub API work unchanged.
//!
//! vigild publishes on one channel, [`PRESENCE`]. Any other channel name is accepted, as Redis
//! would (a client may subscribe to several channels at once), and simply never carries a
//! message. Patterns are matched against `presence` when they are subscribed (Redis globs,
//! case-insensitive as for `CONFIG GET`).
//!
//! A connection with at least one subscription is in subscribed mode: only `(P)SUBSCRIBE`,
//! `(P)UNSUBSCRIBE`, `PING` (answered `*2 pong <message>`, as Redis does there) and `QUIT` are
//! allowed; the admin listener refuses its other commands with Redis's error ([`refuse`]) and
//! unknown ones as unknown, in that order as Redis does. Unsubscribing from the last subscription
//! leaves subscribed mode. The `redis` crate unsubscribes with both `UNSUBSCRIBE` and
//! `PUNSUBSCRIBE` when its `PubSub` is dropped, so both must answer.
//!
//! What one connection can make us keep is bounded ([`Limits`]): at most [`MAX_SUBSCRIPTIONS`]
//! channels and patterns, each name at most `admin.max_channel_bytes`, all names together at
//! most `admin.max_subscription_bytes`. Over a bound the name is refused with an `-ERR` (the
//! other names of the same command still count) and the connection stays. A name already held
//! is one subscription, as in Redis: subscribing again confirms with the same count, costs
//! nothing, and the events are delivered once per channel and once per pattern.

use crate::protocol::args::{self, Args};
use crate::protocol::resp::{self, Proto};

/// The channel vigild publishes presence events on.
pub const PRESENCE: &[u8] = b"presence";
/// Channels plus patterns one connection may hold; a bound on what a client can make us keep.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// The bounds on one connection's subscriptions, from `[admin]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest channel name or pattern.
    pub max_name_bytes: usize,
    /// All names and patterns of one connection together.
    pub max_total_bytes: usize,
}

impl Limits {
    pub fn of(admin: &crate::config::OpsListenerConfig) -> Limits {
        Limits {
            max_name_bytes: admin.max_channel_bytes,
            max_total_bytes: admin.max_subscription_bytes,
        }
    }
}

/// One admin connection's subscriptions.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: Vec<Box<[u8]>>,
    /// Patterns, each with whether it matches [`PRESENCE`] (decided once, at subscribe).
    patterns: Vec<(Box<[u8]>, bool)>,
    /// Bytes of all the names in `channels` and `patterns`.
    bytes: usize,
}

impl Subscriptions {
    /// Bytes of the names held (what `admin.max_subscription_bytes` bounds).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// In subscribed mode: only pub/sub commands, `PING` and `QUIT` are allowed.
    pub fn active(&self) -> bool {
        self.count() > 0
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    pub fn patterns(&self) -> usize {
        self.patterns.len()
    }

    /// Whether presence events reach this connection (by channel or by a pattern).
    pub fn wants_presence(&self) -> bool {
        self.channels.iter().any(|c| &**c == PRESENCE) || self.patterns.iter().any(|(_, m)| *m)
    }

    /// Appends this connection's frames for one presence event: `message` (already framed by
    /// [`write_message`], shared by every subscriber) when it holds the channel, and one
    /// `pmessage` per matching pattern, as Redis delivers them. Returns the frames written.
    /// `proto` is the subscriber's: a RESP3 connection gets pushes (`>`), whose header is
    /// the array's with another first byte.
    pub fn frames(&self, message: &[u8], payload: &[u8], proto: Proto, out: &mut Vec<u8>) -> u64 {
        let mut n = 0;
        if self.channels.iter().any(|c| &**c == PRESENCE) {
            let start = out.len();
            out.extend_from_slice(message);
            if proto == Proto::Resp3 {
                out[start] = b'>';
            }
            n += 1;
        }
        for (pattern, _) in self.patterns.iter().filter(|(_, m)| *m) {
            resp::write_push_len(out, 4, proto);
            resp::write_bulk(out, b"pmessage");
            resp::write_bulk(out, pattern);
            resp::write_bulk(out, PRESENCE);
            resp::write_bulk(out, payload);
            n += 1;
        }
        n
    }
}

/// `*3 message <channel> <payload>`.
pub fn write_message(out: &mut Vec<u8>, channel: &[u8], payload: &[u8]) {
    resp::write_array_len(out, 3);
    resp::write_bulk(out, b"message");
    resp::write_bulk(out, channel);
    resp::write_bulk(out, payload);
}

/// What [`execute`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a pub/sub matter: the admin commands run it.
    NotMine,
    /// Answered here.
    Done,
}

/// Runs the pub/sub commands, and refuses the rest in subscribed mode.
pub fn execute(
    args: Args<'_>,
    subs: &mut Subscriptions,
    proto: Proto,
    limits: Limits,
    out: &mut Vec<u8>,
) -> Outcome {
    let names = 1..args.len();
    if args.is(0, "SUBSCRIBE") || args.is(0, "PSUBSCRIBE") {
        let pattern = args.is(0, "PSUBSCRIBE");
        let kind: &[u8] = if pattern { b"psubscribe" } else { b"subscribe" };
        if names.is_empty() {
            args::wrong_arity(out, if pattern { "psubscribe" } else { "subscribe" });
            return Outcome::Done;
        }
        for i in names {
            let name = args.get(i);
            let held = if pattern {
                subs.patterns.iter().any(|(p, _)| &**p == name)
            } else {
                subs.channels.iter().any(|c| &**c == name)
            };
            if !held {
                let what = if pattern { "pattern" } else { "channel name" };
                if name.len() > limits.max_name_bytes {
                    resp::write_error(
                        out,
                        &format!(
                            "ERR {what} is {} bytes, at most {} (admin.max_channel_bytes)",
                            name.len(),
                            limits.max_name_bytes
                        ),
                    );
                    continue;
                }
                if subs.bytes + name.len() > limits.max_total_bytes {
                    resp::write_error(
                        out,
                        &format!(
                            "ERR this connection's channel names and patterns would take {} \
                             bytes, at most {} (admin.max_subscription_bytes)",
                            subs.bytes + name.len(),
                            limits.max_total_bytes
                        ),
                    );
                    continue;
                }
                if subs.count() >= MAX_SUBSCRIPTIONS {
                    resp::write_error(
                        out,
                        &format!(
                            "ERR at most {MAX_SUBSCRIPTIONS} subscriptions per connection \
                             (vigild publishes only on 'presence')"
                        ),
                    );
                    continue;
                }
                if pattern {
                    let matches = crate::protocol::glob::matches(name, PRESENCE);
                    subs.patterns.push((name.into(), matches));
                } else {
                    subs.channels.push(name.into());
                }
                subs.bytes += name.len();
            }
            confirm(out, proto, kind, Some(name), subs.count());
        }
    } else if args.is(0, "UNSUBSCRIBE") || args.is(0, "PUNSUBSCRIBE") {
        let pattern = args.is(0, "PUNSUBSCRIBE");
        let kind: &[u8] = if pattern {
            b"punsubscribe"
        } else {
            b"unsubscribe"
        };
        if names.is_empty() {
            // All of them, one confirmation each; none held: one confirmation with a nil name.
            let all: Vec<Box<[u8]>> = if pattern {
                subs.patterns.drain(..).map(|(p, _)| p).collect()
            } else {
                std::mem::take(&mut subs.channels)
            };
            subs.bytes -= all.iter().map(|n| n.len()).sum::<usize>();
            if all.is_empty() {
                confirm(out, proto, kind, None, subs.count());
            }
            let mut left = subs.count() + all.len();
            for name in all {
                left -= 1;
                confirm(out, proto, kind, Some(&name), left);
            }
        } else {
            for i in names {
                let name = args.get(i);
                let before = subs.count();
                if pattern {
                    subs.patterns.retain(|(p, _)| &**p != name);
                } else {
                    subs.channels.retain(|c| &**c != name);
                }
                // Names are unique per kind, so at most one went.
                if subs.count() < before {
                    subs.bytes -= name.len();
                }
                confirm(out, proto, kind, Some(name), subs.count());
            }
        }
    } else if subs.active() && args.is(0, "PING") && proto == Proto::Resp2 {
        // RESP3 connections can mix pushes and replies, so there PING answers as usual.
        match args.len() {
            1 | 2 => {
                resp::write_array_len(out, 2);
                resp::write_bulk(out, b"pong");
                resp::write_bulk(out, args.get(1));
            }
            _ => args::wrong_arity(out, "ping"),
        }
    } else {
        return Outcome::NotMine;
    }
    Outcome::Done
}

/// Refuses a known command on a subscribed connection, with Redis's error (its 6.2 text
/// without `RESET`, which vigild does not have). A container command is named with its
/// subcommand, as Redis 7 does: `'client|list'`.
pub fn refuse(args: Args<'_>, out: &mut Vec<u8>) {
    let mut cmd = args::printable(args.get(0)).to_ascii_lowercase();
    if args.len() > 1 && ["client", "config", "command"].contains(&cmd.as_str()) {
        cmd.push('|');
        cmd.push_str(&args::printable(args.get(1)).to_ascii_lowercase());
    }
    resp::write_error(
        out,
        &format!(
            "ERR Can't execute '{cmd}': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT are \
             allowed in this context"
        ),
    );
}

/// `*3 <kind> <name or nil> :<subscriptions left>`.
fn confirm(out: &mut Vec<u8>, proto: Proto, kind: &[u8], name: Option<&[u8]>, count: usize) {
    resp::write_push_len(out, 3, proto);
    resp::write_bulk(out, kind);
    match name {
        Some(n) => resp::write_bulk(out, n),
        None => resp::write_null(out, proto),
    }
    resp::write_integer(out, i64::try_from(count).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_name_bytes: 256,
        max_total_bytes: 64 * 1024,
    };

    fn run(subs: &mut Subscriptions, words: &[&str]) -> (Outcome, String) {
        let (buf, ranges) = crate::protocol::args::test_words(words);
        let mut out = Vec::new();
        let o = execute(
            Args::new(&buf, &ranges),
            subs,
            Proto::Resp2,
            LIMITS,
            &mut out,
        );
        (o, String::from_utf8(out).unwrap())
    }

    #[test]
    fn subscribe_and_unsubscribe_in_redis_framing() {
        let mut s = Subscriptions::default();
        assert_eq!(run(&mut s, &["PING"]).0, Outcome::NotMine);
        assert_eq!(
            run(&mut s, &["SUBSCRIBE", "presence"]).1,
            "*3\r\n$9\r\nsubscribe\r\n$8\r\npresence\r\n:1\r\n"
        );
        assert!(s.active() && s.wants_presence());
        // Again: no second subscription, same count.
        assert!(run(&mut s, &["subscribe", "presence", "other"])
            .1
            .ends_with("$5\r\nother\r\n:2\r\n"));
        assert_eq!(s.count(), 2);
        assert_eq!(
            run(&mut s, &["PING"]).1,
            "*2\r\n$4\r\npong\r\n$0\r\n\r\n",
            "Redis's subscribed PING"
        );
        assert_eq!(
            run(&mut s, &["PING", "hi"]).1,
            "*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"
        );
        assert_eq!(run(&mut s, &["CLIENT", "LIST"]).0, Outcome::NotMine);
        assert_eq!(run(&mut s, &["QUIT"]).0, Outcome::NotMine);
        assert_eq!(
            run(&mut s, &["UNSUBSCRIBE", "presence"]).1,
            "*3\r\n$11\r\nunsubscribe\r\n$8\r\npresence\r\n:1\r\n"
        );
        assert!(!s.wants_presence() && s.active());
        let (_, all) = run(&mut s, &["UNSUBSCRIBE"]);
        assert_eq!(all, "*3\r\n$11\r\nunsubscribe\r\n$5\r\nother\r\n:0\r\n");
        assert!(!s.active());
        assert_eq!(
            run(&mut s, &["UNSUBSCRIBE"]).1,
            "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
            "nothing held: one confirmation with a nil channel"
        );
        assert!(run(&mut s, &["SUBSCRIBE"]).1.contains("wrong number"));
    }

    #[test]
    fn patterns_match_presence_once_and_get_pmessages() {
        let mut s = Subscriptions::default();
        run(&mut s, &["PSUBSCRIBE", "pres*", "x*"]);
        assert_eq!((s.channels(), s.patterns()), (0, 2));
        assert!(s.wants_presence());
        run(&mut s, &["SUBSCRIBE", "presence"]);
        let mut message = Vec::new();
        write_message(&mut message, PRESENCE, b"{}");
        let mut out = Vec::new();
        assert_eq!(s.frames(&message, b"{}", Proto::Resp2, &mut out), 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "*3\r\n$7\r\nmessage\r\n$8\r\npresence\r\n$2\r\n{}\r\n\
             *4\r\n$8\r\npmessage\r\n$5\r\npres*\r\n$8\r\npresence\r\n$2\r\n{}\r\n"
        );
        // What the redis crate sends when its PubSub is dropped.
        let (_, un) = run(&mut s, &["UNSUBSCRIBE"]);
        assert!(un.ends_with(":2\r\n"), "{un}");
        let (_, pun) = run(&mut s, &["PUNSUBSCRIBE"]);
        assert!(pun.ends_with("$2\r\nx*\r\n:0\r\n"), "{pun}");
        assert!(!s.active());
    }

    #[test]
    fn refusal_names_the_command_as_redis_does() {
        let (buf, ranges) = crate::protocol::args::test_words(&["CLIENT", "List"]);
        let mut out = Vec::new();
        refuse(Args::new(&buf, &ranges), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-ERR Can't execute 'client|list': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT \
             are allowed in this context\r\n"
        );
        let mut out = Vec::new();
        refuse(Args::new(&buf[..6], &ranges[..1]), &mut out);
        assert!(String::from_utf8(out).unwrap().contains("'client'"));
    }

    #[test]
    fn subscriptions_are_bounded() {
        let mut s = Subscriptions::default();
        for i in 0..MAX_SUBSCRIPTIONS {
            run(&mut s, &["SUBSCRIBE", &format!("c{i}")]);
        }
        let (_, r) = run(&mut s, &["SUBSCRIBE", "presence"]);
        assert!(r.starts_with("-ERR at most 1024"), "{r}");
        assert_eq!(s.count(), MAX_SUBSCRIPTIONS);
    }

    #[test]
    fn names_and_their_total_are_bounded_in_bytes() {
        let mut s = Subscriptions::default();
        let long = "x".repeat(257);
        let (_, r) = run(&mut s, &["SUBSCRIBE", &long, "presence"]);
        assert!(
            r.starts_with(
                "-ERR channel name is 257 bytes, at most 256 (admin.max_channel_bytes)\r\n"
            ),
            "{r}"
        );
        assert!(
            r.ends_with("$8\r\npresence\r\n:1\r\n"),
            "the other name counts: {r}"
        );
        let (_, r) = run(&mut s, &["PSUBSCRIBE", &long]);
        assert!(r.starts_with("-ERR pattern is 257 bytes"), "{r}");
        assert_eq!((s.count(), s.bytes()), (1, 8));
        // 256-byte names: 255 more fit in 64 KiB next to "presence", the next does not.
        for i in 0..255 {
            let (_, r) = run(&mut s, &["PSUBSCRIBE", &format!("{i:0>256}")]);
            assert!(r.starts_with("*3"), "{i}: {r}");
        }
        assert_eq!(s.bytes(), 8 + 255 * 256);
        let (_, r) = run(&mut s, &["SUBSCRIBE", &"y".repeat(256)]);
        assert!(
            r.contains("would take 65544 bytes, at most 65536 (admin.max_subscription_bytes)"),
            "{r}"
        );
        // Again: one subscription, no bytes.
        let (_, r) = run(&mut s, &["PSUBSCRIBE", &format!("{:0>256}", 3)]);
        assert!(r.ends_with(":256\r\n"), "{r}");
        assert_eq!(s.bytes(), 8 + 255 * 256);
        // Unsubscribing gives the bytes back, by name and all at once.
        run(
            &mut s,
            &["PUNSUBSCRIBE", &format!("{:0>256}", 3), "never-held"],
        );
        assert_eq!(s.bytes(), 8 + 254 * 256);
        run(&mut s, &["PUNSUBSCRIBE"]);
        run(&mut s, &["UNSUBSCRIBE"]);
        assert_eq!((s.count(), s.bytes()), (0, 0));
    }

    #[test]
    fn a_pattern_subscribed_twice_is_one_subscription_delivered_once() {
        let mut s = Subscriptions::default();
        let first = run(&mut s, &["PSUBSCRIBE", "pres*"]).1;
        let again = run(&mut s, &["PSUBSCRIBE", "pres*", "pres*"]).1;
        assert!(first.ends_with(":1\r\n"));
        assert_eq!(
            again,
            first.repeat(2),
            "Redis confirms each, with the same count"
        );
        let mut out = Vec::new();
        assert_eq!(s.frames(b"", b"{}", Proto::Resp2, &mut out), 1);
    }
}
