//! The one-line description of a session used by `CLIENT INFO` (and `CLIENT LIST`).
//!
//! Redis's field order and names come first (`id addr laddr fd name age idle ... lib-name
//! lib-ver`), so tools that parse Redis's output keep working; vigild's own fields follow: the
//! keepalive options read back from the kernel, a few `TCP_INFO` fields, and `state`, which is
//! `suspect` while keepalive probes are outstanding or data waits unacknowledged.

use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::session::Session;
use crate::sockopt;
use crate::sys;

/// Appends the session's line (no trailing newline) to `out`.
pub fn describe(session: &Session, now: Instant, out: &mut String) {
    describe_with(session, now, sys::tcp_info(&session.stream).ok(), out);
}

/// [`describe`] with `TCP_INFO` as read earlier (`None`: it could not be read), so a line
/// rendered twice comes out the same (src/admin/listing.rs measures, then writes).
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
        .lib
        .as_deref()
        .map(|l| (&*l.name, &*l.version))
        .unwrap_or(("", ""));
    let _ = write!(
        out,
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags=N db=0 sub=0 psub=0 \
         multi=-1 qbuf={} obl={} tot-net-in={} tot-net-out={} tot-cmds={} lib-name={} lib-ver={}",
        session.id,
        session.peer,
        laddr,
        session.stream.as_raw_fd(),
        session.name.as_deref().unwrap_or(""),
        session.age(now).as_secs(),
        session.idle_for(now).as_secs(),
        session.unfinished.as_ref().map_or(0, |u| u.bytes.len()),
        session.pending_output(),
        session.bytes_in,
        session.bytes_out,
        session.commands,
        lib_name,
        lib_ver,
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
