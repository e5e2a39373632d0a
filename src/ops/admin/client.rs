//! The admin listener's `CLIENT` subcommands: `LIST`, `KILL` and `LOOKUP`, which see or end
//! other sessions, and the connection's own (`ID`, `SETNAME`, `GETNAME`, `SETINFO`, `INFO`).

use std::net::SocketAddr;
use std::time::Instant;

use mio::Token;

use crate::protocol::args::{printable, Args};
use crate::protocol::command;
use crate::protocol::resp::{self, Proto};
use crate::session::Session;

use super::listing::{list_line, Listing, Stamp};
use super::{AdminClient, AdminStep, View};

/// Listings of at most this many sessions are written at once (one turn renders them in
/// about 3 ms in a debug build); longer ones are built turn by turn (`listing.rs`).
pub(super) const SMALL_LISTING: usize = 256;

pub(super) fn client_command(
    args: Args<'_>,
    client: &mut AdminClient,
    view: &View<'_>,
    out: &mut Vec<u8>,
) -> AdminStep {
    let n = args.len();
    if args.is(1, "LIST") {
        return client_list(args, view, out);
    } else if args.is(1, "KILL") {
        return client_kill(args, view, out);
    } else if args.is(1, "LOOKUP") && n == 3 {
        return client_lookup(args.get(2), view, client.proto, out);
    } else if args.is(1, "ID") && n == 2 {
        resp::write_integer(out, i64::try_from(client.id).unwrap_or(i64::MAX));
    } else if args.is(1, "SETNAME") && n == 3 {
        let limits = command::FieldLimits::of(&view.config.session);
        command::set_name(&mut client.name, args.get(2), limits, out);
    } else if args.is(1, "GETNAME") && n == 2 {
        match &client.name {
            Some(name) => resp::write_bulk(out, name.as_bytes()),
            None => resp::write_null(out, client.proto),
        }
    } else if args.is(1, "SETINFO") && n == 4 {
        let limits = command::FieldLimits::of(&view.config.session);
        command::set_lib_info(&mut client.lib, args, limits, out);
    } else if args.is(1, "INFO") && n == 2 {
        let line = admin_line(client, view.now);
        resp::write_bulk(out, line.as_bytes());
    } else {
        let sub = printable(args.get(1));
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

fn client_list(args: Args<'_>, view: &View<'_>, out: &mut Vec<u8>) -> AdminStep {
    let mut ids: Option<Vec<u64>> = None;
    let mut any_type = true;
    let mut i = 2;
    while i < args.len() {
        if args.is(i, "TYPE") && i + 1 < args.len() {
            match client_type(args.get(i + 1)) {
                Some(normal) => any_type = normal,
                None => {
                    let t = printable(args.get(i + 1));
                    resp::write_error(out, &format!("ERR Unknown client type '{t}'"));
                    return AdminStep::Continue;
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
                        return AdminStep::Continue;
                    }
                }
            }
            ids = Some(list);
            i = args.len();
        } else {
            resp::write_error(out, "ERR syntax error");
            return AdminStep::Continue;
        }
    }
    let mut listed = Vec::new();
    if any_type {
        listed = sessions_by_id(view);
        if let Some(ids) = &ids {
            let wanted: std::collections::HashSet<u64> = ids.iter().copied().collect();
            listed.retain(|(_, s)| wanted.contains(&s.id));
        }
    }
    reply_lines(listed, view, out)
}

/// Writes the lines of `listed` as one bulk string, or, above [`SMALL_LISTING`] sessions,
/// returns the [`Listing`] that builds it turn by turn.
fn reply_lines(listed: Vec<(Token, &Session)>, view: &View<'_>, out: &mut Vec<u8>) -> AdminStep {
    let seq = Stamp {
        epoch: view.stats.presence.epoch,
        seq: view.stats.presence.seq,
    };
    if listed.len() > SMALL_LISTING {
        return AdminStep::List(Box::new(Listing::new(listed.into_iter(), view.now, seq)));
    }
    let mut text = String::new();
    for (_, session) in listed {
        list_line(session, view.now, seq, &mut text);
    }
    resp::write_bulk(out, text.as_bytes());
    AdminStep::Continue
}

/// `CLIENT LOOKUP name`: the `CLIENT LIST` line of the session holding `name` (of each holder,
/// oldest first, when names are not unique), or nil.
fn client_lookup(name: &[u8], view: &View<'_>, proto: Proto, out: &mut Vec<u8>) -> AdminStep {
    let holders = view.sessions.holders(name);
    if holders.is_empty() {
        // `[fleet]`: a holder on another node.
        if let Some(text) = super::fleet_view::lookup(name, view) {
            resp::write_bulk(out, text.as_bytes());
            return AdminStep::Continue;
        }
        resp::write_null(out, proto);
        return AdminStep::Continue;
    }
    let listed = holders
        .iter()
        .filter_map(|t| view.sessions.get(*t).map(|s| (*t, s)))
        .collect();
    reply_lines(listed, view, out)
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
                        let t = printable(value);
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
