//! The admin listener's view of the fleet (`[fleet]`, docs/fleet.md): `FLEET NODES`, and the
//! fleet's answer to `CLIENT LOOKUP` for a name no session of this node holds. Both read the
//! copy of the fleet the worker refreshes every second (`fleet::View`), so they never wait
//! for Redis and are at most about a second old (`view-age-ms=` says how old).

use std::fmt::Write as _;

use super::View;
use crate::protocol::args::Args;
use crate::protocol::resp::{self, Proto};

/// `FLEET NODES`: one line per node the fleet knows, `node=N epoch=E lease-age-ms=A
/// lease-left-ms=L sessions=S self=0|1 view-age-ms=V`; an error when the fleet is off.
pub(super) fn fleet_command(args: Args<'_>, view: &View<'_>, _proto: Proto, out: &mut Vec<u8>) {
    if !(args.len() == 2 && args.is(1, "NODES")) {
        resp::write_error(
            out,
            "ERR unknown subcommand or wrong number of arguments for 'fleet': use FLEET NODES",
        );
        return;
    }
    if !view.fleet.is_on() {
        resp::write_error(out, "ERR the fleet is off (set fleet.redis)");
        return;
    }
    let (me, _) = view.fleet.node();
    let v = view.fleet.view();
    let age = v.at.map_or(-1, |at| {
        i64::try_from(view.now.saturating_duration_since(at).as_millis()).unwrap_or(i64::MAX)
    });
    let lease = i64::try_from(view.config.fleet.lease.as_millis()).unwrap_or(i64::MAX);
    let mut text = String::new();
    for n in &v.nodes {
        let _ = writeln!(
            text,
            "node={} epoch={} lease-age-ms={} lease-left-ms={} sessions={} self={} view-age-ms={age}",
            n.node,
            n.epoch,
            (lease - n.lease_left_ms).max(0),
            n.lease_left_ms,
            n.sessions,
            u8::from(n.node == me),
        );
    }
    resp::write_bulk(out, text.as_bytes());
}

/// `CLIENT LOOKUP name` for a name no local session holds: the holders on other nodes, one
/// line each, `node=N id=I addr=A name=NAME [identity=ID] view-age-ms=V`; `None` when the fleet is off or
/// knows no holder either.
pub(super) fn lookup(name: &[u8], view: &View<'_>) -> Option<String> {
    let names = view.fleet.view().names.as_ref()?;
    let name = std::str::from_utf8(name).ok()?;
    let holders = names.get(name)?;
    let (me, _) = view.fleet.node();
    let age = view.fleet.view().at.map_or(-1, |at| {
        i64::try_from(view.now.saturating_duration_since(at).as_millis()).unwrap_or(i64::MAX)
    });
    let mut text = String::new();
    for h in holders.iter().filter(|h| h.node != me) {
        let _ = write!(
            text,
            "node={} id={} addr={} name={name}",
            h.node, h.id, h.addr
        );
        if let Some(identity) = &h.identity {
            let _ = write!(text, " identity={identity}");
        }
        let _ = writeln!(text, " view-age-ms={age}");
    }
    (!text.is_empty()).then_some(text)
}
