//! The one-line description of a session used by `CLIENT INFO` (and `CLIENT LIST`).
//!
//! Every field Redis 7 shows comes first, in Redis's order and with Redis's names (`id addr
//! laddr fd name age idle flags db sub psub ssub multi watch qbuf qbuf-free argv-mem multi-mem
//! rbs rbp obl oll omem tot-mem events cmd user redir resp lib-name lib-ver`, then Redis 7.4's
//! `tot-net-in tot-net-out tot-cmds`), so libraries that parse it into a map (valkey-py's
//! `client_info()` reads `oll`) and tools keep working. Values are real where vigild has them
//! (buffers, memory, the last command, the protocol) and Redis's neutral ones where it has no
//! such thing (no databases but 0, no pub/sub on the client port, one user `default`).
//! vigild's own fields follow: `proxy=` (the proxy's address, only for a session whose PROXY
//! protocol header gave `addr=`), the keepalive options read back from the kernel, a few
//! `TCP_INFO` fields, and `state`, which is `suspect` while keepalive probes are outstanding or
//! data waits unacknowledged.

use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::os::sockopt;
use crate::os::sys;
use crate::session::Session;

/// Appends the session's line (no trailing newline) to `out`.
pub fn describe(session: &Session, now: Instant, out: &mut String) {
    describe_with(session, now, sys::tcp_info(&session.stream).ok(), out);
}

/// [`describe`] with `TCP_INFO` as read earlier (`None`: it could not be read), so a line
/// rendered twice comes out the same (src/ops/admin/listing.rs measures, then writes).
pub fn describe_with(
    session: &Session,
    now: Instant,
    info: Option<sys::TcpInfo>,
    out: &mut String,
) {
    let laddr = session
        .stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (lib_name, lib_ver) = session
        .lib()
        .map(|l| (&*l.name, &*l.version))
        .unwrap_or(("", ""));
    let qbuf = session.unfinished.as_ref().map_or(0, |u| u.bytes.len());
    let qbuf_cap = session
        .unfinished
        .as_ref()
        .map_or(0, |u| u.bytes.capacity());
    let (multi, multi_mem) = session
        .transaction()
        .map_or((-1, 0), |t| (t.queued() as i64, t.memory()));
    let pending = session.pending_output();
    let omem = session.output.capacity();
    let name = session.name.as_deref().unwrap_or("");
    let extras = if session.extras.is_some() {
        std::mem::size_of::<crate::session::Extras>()
    } else {
        0
    };
    let tls_mem = session.tls().map_or(0, |t| {
        std::mem::size_of::<crate::session::tls_layer::Tls>() + t.partial_len()
    });
    let tot_mem = std::mem::size_of::<Session>()
        + extras
        + tls_mem
        + qbuf_cap
        + omem
        + multi_mem
        + name.len()
        + lib_name.len()
        + lib_ver.len();
    let events = match (
        session.interest.is_readable(),
        session.interest.is_writable(),
    ) {
        (true, true) => "rw",
        (false, true) => "w",
        _ => "r",
    };
    let _ =
        write!(
        out,
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db=0 sub=0 psub=0 ssub=0 \
         multi={} watch=0 qbuf={} qbuf-free={} argv-mem=0 multi-mem={} rbs={} rbp={} obl={} \
         oll={} omem={} tot-mem={} events={} cmd={} user=default redir=-1 resp={} lib-name={} \
         lib-ver={} tot-net-in={} tot-net-out={} tot-cmds={}",
        session.id,
        session.peer,
        laddr,
        session.stream.as_raw_fd(),
        name,
        session.age(now).as_secs(),
        session.idle_for(now).as_secs(),
        if multi >= 0 { "x" } else { "N" },
        multi,
        qbuf,
        qbuf_cap - qbuf,
        multi_mem,
        qbuf_cap,
        qbuf,
        pending,
        u8::from(pending > 0),
        omem,
        tot_mem,
        events,
        crate::protocol::command_table::name_of(session.last_command),
        if session.proto == crate::protocol::resp::Proto::Resp3 { 3 } else { 2 },
        lib_name,
        lib_ver,
        session.bytes_in,
        session.bytes_out,
        session.commands,
    );
    if let Some(hop) = session.proxy_hop() {
        // The proxy a PROXY protocol header came through; `addr=` is then the client's.
        let _ = write!(out, " proxy={hop}");
    }
    let _ = write!(
        out,
        " tls={} identity={}",
        session.tls().map_or("-", |t| t.version()),
        session.identity().map_or("", |i| &*i.name),
    );
    match sockopt::read_back(&session.stream) {
        Ok(a) => {
            let _ = write!(
                out,
                " keepalive={} ka-idle={} ka-intvl={} ka-cnt={} user-timeout-ms={} nodelay={}",
                u8::from(a.keepalive),
                a.idle.as_secs(),
                a.interval.as_secs(),
                a.probes,
                a.user_timeout.map_or(0, |d| d.as_millis()),
                u8::from(a.nodelay),
            );
        }
        Err(e) => {
            let _ = write!(out, " sockopt-error={}", e.raw_os_error().unwrap_or(0));
        }
    }
    match info {
        Some(i) => {
            let suspect = i.probes > 0 || i.retransmits > 0 || i.backoff > 0;
            let _ = write!(
                out,
                " tcpi-rtt-us={} tcpi-rttvar-us={} tcpi-probes={} tcpi-retransmits={} \
                 tcpi-unacked={} tcpi-last-data-recv-ms={} state={}",
                i.rtt_us,
                i.rttvar_us,
                i.probes,
                i.retransmits,
                i.unacked,
                i.last_data_recv_ms,
                if suspect { "suspect" } else { "ok" },
            );
        }
        None => out.push_str(" state=dead"),
    }
}
