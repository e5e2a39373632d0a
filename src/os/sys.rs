//! The only module with `unsafe`: the few system calls no safe crate covers here.
//!
//! - `getsockopt(TCP_INFO)`: the kernel's view of a connection, snapshotted just before a reaped
//!   socket is closed. It is what tells a keepalive death from a retransmission death, and
//!   both from a peer that stopped reading (zero window).
//! - `getrlimit`/`setrlimit(RLIMIT_NOFILE)`: raise the soft descriptor limit to the hard one.
//! - `umask`: create the admin unix socket with mode 0600 from its first moment.
//! - `clock_gettime(CLOCK_MONOTONIC)`: the raw clock value systemd wants in `MONOTONIC_USEC=`
//!   (std's `Instant` uses the same clock but does not expose its value).
//! - Taking ownership of descriptors passed by socket activation (fd 3 onwards).
//! - `mallopt(M_MMAP_THRESHOLD)` (glibc): large buffers go back to the kernel when freed.
//! - `mkfifo`, for unit tests only: the readers of hostile files must refuse a FIFO.
//!
//! Every `unsafe` block carries a `SAFETY:` comment. Nothing here panics.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The leading part of Linux's `struct tcp_info`, up to `tcpi_snd_wnd` (Linux 5.8). The kernel
/// copies at most the length we pass and reports how much it wrote, so fields an older kernel
/// does not know stay zero and are recognised by that length.
#[repr(C)]
#[derive(Default)]
struct RawTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    app_limited: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    snd_wnd: u32,
}

// The kernel's UAPI layout (include/uapi/linux/tcp.h): `tcpi_snd_wnd` sits at byte 228.
const _: () = assert!(mem::offset_of!(RawTcpInfo, snd_wnd) == 228);

/// What vigild keeps of `TCP_INFO`: the fields that explain how a session died or why it is
/// suspect. Times are the kernel's (microseconds for RTT and RTO, milliseconds for `last_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `TCP_ESTABLISHED` = 1, `TCP_CLOSE` = 7, ...
    pub state: u8,
    /// Retransmissions of the current unacknowledged segment (0 after a keepalive death).
    pub retransmits: u8,
    /// Keepalive or zero-window probes sent without an answer.
    pub probes: u8,
    /// Exponential backoff count of the retransmission timer.
    pub backoff: u8,
    /// Segments sent and not yet acknowledged (reads 0 once the kernel gave up).
    pub unacked: u32,
    pub rtt_us: u32,
    pub rttvar_us: u32,
    pub rto_us: u32,
    /// Milliseconds since the last data segment was received.
    pub last_data_recv_ms: u32,
    /// Milliseconds since the last ACK was received.
    pub last_ack_recv_ms: u32,
    pub total_retrans: u32,
    /// Bytes queued in the kernel and never sent. Survives the purge when the kernel gives up
    /// (measured on 6.18), so after a death with nothing retransmitted, `> 0` means the data
    /// waited for the peer's window: the peer had stopped reading. 0 before Linux 4.6.
    pub notsent_bytes: u32,
    /// The peer's last advertised receive window (0 = it stopped reading); `None` before
    /// Linux 5.8.
    pub snd_wnd: Option<u32>,
}

/// Reads `TCP_INFO` from a TCP socket.
pub fn tcp_info(socket: &impl AsRawFd) -> io::Result<TcpInfo> {
    let mut raw = RawTcpInfo::default();
    let mut len = mem::size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: `raw` is a plain-old-data struct that lives for the whole call, `len` holds its
    // exact size, and the kernel writes at most `len` bytes into it and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut RawTcpInfo).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let written = len as usize;
    let knows = |end: usize| written >= end;
    Ok(TcpInfo {
        state: raw.state,
        retransmits: raw.retransmits,
        probes: raw.probes,
        backoff: raw.backoff,
        unacked: raw.unacked,
        rtt_us: raw.rtt,
        rttvar_us: raw.rttvar,
        rto_us: raw.rto,
        last_data_recv_ms: raw.last_data_recv,
        last_ack_recv_ms: raw.last_ack_recv,
        total_retrans: raw.total_retrans,
        notsent_bytes: raw.notsent_bytes,
        snd_wnd: knows(mem::offset_of!(RawTcpInfo, snd_wnd) + mem::size_of::<u32>())
            .then_some(raw.snd_wnd),
    })
}

/// The descriptor limit after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so capacity is what the operator (or
/// systemd's `LimitNOFILE=`) granted rather than the historical soft default of 1024.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit struct; the kernel only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(NofileLimit {
        before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Runs `f` with the process umask set to `mask`, then restores the previous one. `bind(2)` of
/// a unix socket applies the umask to the socket file, so this creates it with the right mode
/// from the start: there is no moment, as there would be before a `chmod`, in which another
/// user could connect. The umask is process-wide; vigild calls this from its only thread.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask(2) swaps one integer of process state; it cannot fail and takes no pointers.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let out = f();
    // SAFETY: as above; this puts the previous mask back.
    unsafe { libc::umask(old) };
    out
}

/// `CLOCK_MONOTONIC` in microseconds, as `sd_notify`'s `MONOTONIC_USEC=` expects.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    // CLOCK_MONOTONIC always exists on Linux, so the call cannot fail; were it to, `ts` stays
    // zero, which systemd treats as "no timestamp".
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

/// Allocations at least this large are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD_BYTES: usize = 128 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`] (its initial value). Left dynamic,
/// glibc raises the threshold to the size of each large block freed, up to 32 MiB, so after one
/// spike (a batch of replies built up to `session.max_output_bytes`, a long `CLIENT LIST`)
/// later blocks of that size come from the heap and stay in the RSS when freed: 3 MiB stayed
/// after one pipelined `CLIENT INFO` attack. Fixed, a freed large buffer is unmapped at once.
/// The common path allocates no such buffer, so this costs it nothing. A no-op elsewhere than
/// glibc.
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = libc::c_int::try_from(MMAP_THRESHOLD_BYTES).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt(3) sets one allocator parameter; it takes no pointers and only
        // reports failure (a rejected value) through its return value, which leaves glibc's
        // default in place: nothing to handle.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
    }
}

/// Bytes the allocator has handed out and not yet taken back (what Redis's `used_memory`
/// reports: heap in use, not pages mapped), from glibc's `mallinfo2`; `None` elsewhere.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2(3) takes no arguments and returns a plain struct by value; it
        // walks glibc's arenas under their locks and touches no memory of ours.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks as u64).saturating_add(m.hblkhd as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// The process's resident memory in bytes (`used_memory_rss`), from `/proc/self/statm`
/// (procfs answers from memory: this never waits on a disk).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf(3) takes a constant and returns a number; no memory is involved.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

/// Takes ownership of descriptor `fd`, passed by the service manager (`LISTEN_FDS`), and
/// marks it close-on-exec as `sd_listen_fds(3)` does. Fails if `fd` is not open.
///
/// Call at most once per descriptor, and only for descriptors nothing else in the process
/// owns: the activation protocol hands fds `3..3+LISTEN_FDS` to the service and nothing in
/// vigild opens descriptors before reading them (the caller runs first thing at start-up).
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD takes no pointer argument; on a closed descriptor it fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFD with an int argument only changes the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (F_GETFD succeeded) and, per the activation protocol and the
    // contract above, owned by no other object in this process, so the returned `OwnedFd` is
    // its only owner and closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes a FIFO (named pipe, mode 0600) at `path`: the unit tests of readers that must refuse
/// one (`small_file`, the config and password-file loaders) need one on disk.
#[cfg(test)]
pub(crate) fn make_fifo(path: &std::path::Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: mkfifo reads the NUL-terminated path, which lives until the call returns.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn tcp_info_of_a_live_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let info = tcp_info(&client).unwrap();
        assert_eq!(info.state, 1, "a connected socket is ESTABLISHED");
        assert_eq!(info.probes, 0);
        assert_eq!(info.unacked, 0);
        assert_eq!(info.notsent_bytes, 0);
        assert!(
            info.snd_wnd.is_some_and(|w| w > 0),
            "an open window on Linux >= 5.8: {info:?}"
        );
    }

    #[test]
    fn memory_figures_are_plausible() {
        let rss = resident_bytes().expect("statm");
        assert!(rss > 100_000, "rss {rss}");
        // The figure is the whole process's, and other tests run on other threads meanwhile:
        // a 64 MiB block stands out from what they allocate and free (a 4 MiB one failed once
        // in about 30 runs).
        let heap = heap_in_use().expect("glibc");
        let big = vec![1u8; 64 << 20];
        let more = heap_in_use().expect("glibc");
        assert!(more >= heap + (48 << 20), "{heap} -> {more}");
        drop(big);
    }

    #[test]
    fn tcp_info_on_a_non_socket_is_an_error() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(tcp_info(&file).is_err());
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(a > 0 && b >= a + 1_000, "{a} {b}");
    }

    #[test]
    fn taking_an_inherited_fd() {
        use std::os::fd::IntoRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let raw = listener.into_raw_fd();
        let owned = take_inherited_fd(raw).unwrap();
        let back = TcpListener::from(owned);
        assert_eq!(back.local_addr().unwrap(), addr);
        // A descriptor number that cannot be open is refused, not wrapped.
        assert!(take_inherited_fd(-1).is_err());
        assert!(take_inherited_fd(1 << 30).is_err());
    }

    #[test]
    fn nofile_limit_is_raised_to_hard() {
        let lim = raise_nofile_limit().unwrap();
        assert_eq!(lim.soft, lim.hard);
        assert!(lim.before <= lim.soft);
    }
}
