//! Helpers for the hostile-input and load tests: a control client that keeps measuring `PING`
//! round trips while a test attacks the daemon, the daemon's descriptors, memory and CPU time
//! from `/proc`, and client sockets bound to many loopback source addresses.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The round trip a control client must stay under throughout every case.
pub const CONTROL_BOUND: Duration = Duration::from_millis(50);
/// Pause between control pings.
const CONTROL_EVERY: Duration = Duration::from_millis(10);

/// What a control client saw.
#[derive(Debug, Clone)]
pub struct ControlReport {
    pub pings: u64,
    pub max: Duration,
    /// Round trips of [`CONTROL_BOUND`] or more.
    pub slow: u64,
    /// The first failure (an error or a wrong reply), if any.
    pub error: Option<String>,
}

impl ControlReport {
    /// Every ping answered `+PONG` within [`CONTROL_BOUND`].
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.pings >= 5 && self.slow == 0 && self.max < CONTROL_BOUND
    }

    /// Fails the test unless every ping was answered `+PONG` within [`CONTROL_BOUND`].
    pub fn assert_ok(&self, case: &str) {
        assert!(
            self.error.is_none(),
            "{case}: control client failed: {self:?}"
        );
        assert!(
            self.pings >= 5,
            "{case}: control client barely ran: {self:?}"
        );
        assert!(
            self.slow == 0 && self.max < CONTROL_BOUND,
            "{case}: control client saw PONG after {:?} (bound {CONTROL_BOUND:?}): {self:?}",
            self.max
        );
    }
}

/// A client that sends `PING` every 10 ms from 127.0.0.1 and times each `+PONG`.
pub struct Control {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ControlReport>>,
}

impl Control {
    /// Connects (sending `AUTH password` first when given) and starts pinging.
    pub fn start(addr: SocketAddr, password: Option<&str>) -> Control {
        let mut s = TcpStream::connect(addr).expect("control connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if let Some(pw) = password {
            s.write_all(format!("AUTH {pw}\r\n").as_bytes()).unwrap();
            assert_eq!(read_line(&mut s).unwrap(), "+OK", "control AUTH");
        }
        // One round trip before the attack starts, so the session is surely established.
        s.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "+PONG");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            raise_priority(0);
            let mut r = ControlReport {
                pings: 0,
                max: Duration::ZERO,
                slow: 0,
                error: None,
            };
            while !flag.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let reply = s.write_all(b"PING\r\n").and_then(|()| read_line(&mut s));
                let rtt = t0.elapsed();
                match reply {
                    Ok(line) if line == "+PONG" => {}
                    Ok(line) => r.error = Some(format!("reply {line:?}")),
                    Err(e) => r.error = Some(format!("{e}")),
                }
                if r.error.is_some() {
                    break;
                }
                r.pings += 1;
                r.max = r.max.max(rtt);
                if rtt >= CONTROL_BOUND {
                    r.slow += 1;
                }
                // Pacing, not waiting: the control client pings every CONTROL_EVERY.
                std::thread::sleep(CONTROL_EVERY);
            }
            r
        });
        Control {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> ControlReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("thread")
            .join()
            .expect("control thread")
    }
}

/// Sends one inline command and reads its one-line reply.
pub fn say(s: &mut TcpStream, line: &str) -> String {
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    read_line(s).unwrap()
}

/// Reads one `\r\n`-terminated line (without it), byte by byte: replies are short.
pub fn read_line(s: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed after {:?}", String::from_utf8_lossy(&line)),
                ))
            }
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Reads until the peer closes (or resets); returns what arrived. Times out after `limit`.
pub fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, io::Result<()>) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, Err(io::ErrorKind::TimedOut.into()));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Err(e)),
        }
    }
}

/// A loopback source address for client `n`: 127.0.1.1, 127.0.1.2, ... (never 127.0.0.1,
/// which the control client uses).
pub fn source_ip(n: usize) -> Ipv4Addr {
    let n = n % (250 * 250);
    Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8)
}

/// Connects to `dst` from `src` (port chosen at connect time, `IP_BIND_ADDRESS_NO_PORT`, so
/// each source address has its own ephemeral port range and bind does not reserve a port).
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    super::connect_from(src, dst)
}

/// Closes with RST instead of FIN (`SO_LINGER` 0): no `TIME_WAIT` on the client side.
pub fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// Open descriptors of process `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...); 0 when it cannot be read.
pub fn status_kb(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of process `pid`, in KiB (`VmRSS`).
pub fn rss_kb(pid: i32) -> u64 {
    status_kb(pid, "VmRSS")
}

/// The peak resident memory of process `pid`, in KiB (`VmHWM`); see [`reset_hwm`]. Panics when
/// it cannot be read, so that a growth check cannot pass by reading 0 twice.
pub fn hwm_kb(pid: i32) -> u64 {
    let kb = status_kb(pid, "VmHWM");
    assert!(kb > 0, "no VmHWM in /proc/{pid}/status");
    kb
}

/// Resets `VmHWM` to the current RSS (`clear_refs` value 5), so the next reading is the peak
/// from now on.
pub fn reset_hwm(pid: i32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// One multibulk request of `words`, as a client library writes it.
pub fn multibulk(words: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        out.extend_from_slice(w);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// User + system CPU time of process `pid` so far.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields after its closing parenthesis are fixed.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// RSS an attack case may leave behind (allocator caches, slab growth), in KiB: the suites'
/// "back within 2 MiB of baseline".
pub const RSS_SLACK_KB: u64 = 2048;

/// Ends an attack case: waits for the daemon's footprint to come back to `base` (within
/// [`RSS_SLACK_KB`]), stops the control client and prints both (the figures
/// docs/robustness.md quotes; `--nocapture` shows them), then asserts the control client was
/// always answered in time.
pub fn release(pid: i32, control: Control, base: Footprint, case: &str) -> Footprint {
    let after = base.assert_back(pid, 0, RSS_SLACK_KB, case);
    let report = control.stop();
    eprintln!(
        "{case}: control {} pings, max {:?}; fds {} -> {}; rss {} -> {} KiB",
        report.pings, report.max, base.fds, after.fds, base.rss_kb, after.rss_kb
    );
    report.assert_ok(case);
    after
}

/// Bytes waiting in a socket's receive queue (`FIONREAD`).
pub fn queued(s: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the valid pointer given.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// Waits until the bytes queued at never-reading `readers` stop growing for 500 ms (the daemon
/// has written all the socket buffers take and holds the rest), at most `limit`; returns them.
pub fn wait_stuck(readers: &[TcpStream], limit: Duration) -> usize {
    let mut last = usize::MAX;
    let mut since = Instant::now();
    super::wait_until(
        limit,
        "the bytes queued at the never-reading clients to stop growing for 500 ms",
        || {
            let now: usize = readers.iter().map(queued).sum();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(500) {
                return Ok(now);
            }
            Err(format!("{now} bytes"))
        },
    )
}

/// Descriptors and memory of the daemon at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub fds: usize,
    pub rss_kb: u64,
}

impl Footprint {
    pub fn of(pid: i32) -> Footprint {
        Footprint {
            fds: fd_count(pid),
            rss_kb: rss_kb(pid),
        }
    }

    /// The footprint once it holds still (unchanged across five control pings, 50 ms): a
    /// case's baseline, taken after the daemon's first allocations for a new session, which
    /// happen with its first requests. (The control client's first pings count towards the
    /// five its report needs, even in a case that is over in a moment.)
    pub fn settled(pid: i32) -> Footprint {
        let mut last = Footprint::of(pid);
        let mut since = Instant::now();
        super::wait_until(
            Duration::from_secs(5),
            "the daemon's descriptors and RSS to hold still for 50 ms",
            || {
                let now = Footprint::of(pid);
                if now.fds != last.fds || now.rss_kb != last.rss_kb {
                    (last, since) = (now, Instant::now());
                }
                if since.elapsed() >= Duration::from_millis(50) {
                    Ok(now)
                } else {
                    Err(format!("{now:?}"))
                }
            },
        )
    }

    /// Waits (up to 5 s) until the daemon holds `self.fds + extra_fds` descriptors again and
    /// its RSS is at most `slack_kb` above `self`; returns what was measured last.
    pub fn assert_back(&self, pid: i32, extra_fds: usize, slack_kb: u64, case: &str) -> Footprint {
        super::wait_until(
            Duration::from_secs(5),
            &format!(
                "{case}: the daemon's footprint back at baseline {self:?} (+{extra_fds} fds, \
                 +{slack_kb} KiB allowed)"
            ),
            || {
                let now = Footprint::of(pid);
                let ok = now.fds == self.fds + extra_fds && now.rss_kb <= self.rss_kb + slack_kb;
                if ok {
                    Ok(now)
                } else {
                    Err(format!("{now:?}"))
                }
            },
        )
    }
}

/// A small deterministic generator for junk bytes (xorshift64*), so failures reproduce.
pub struct Junk(u64);

impl Junk {
    pub fn new(seed: u64) -> Junk {
        Junk(seed.max(1))
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }
}

/// The kernel's count of connections dropped because a listen queue was full
/// (`TcpExt: ListenDrops` in `/proc/net/netstat`, for this network namespace). A connection
/// dropped there and then reset by its client never reaches `accept`.
pub fn listen_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenDrops")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Lowers the calling thread's CPU priority (nice 10). Load generators call it so that on a
/// two-core machine they do not starve the daemon and the control client of CPU: the test
/// measures how vigild serves others while it handles the load, not how the scheduler shares
/// two cores among more busy threads than that.
pub fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers. On Linux the nice value belongs to
    // the thread, so this leaves the rest of the test process alone.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    assert_eq!(rc, 0, "setpriority: {}", io::Error::last_os_error());
}

/// Open descriptors of process `pid` numbered below `n` (those that count against a
/// descriptor limit of `n`; a process may also hold inherited ones above it).
pub fn fds_below(pid: i32, n: usize) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
                .filter(|&fd| fd < n)
                .count()
        })
        .unwrap_or(0)
}

/// Raises the CPU priority (nice -5) of thread or single-threaded process `tid`; 0 means the
/// calling thread. Where the test may (root), the daemon under test and the control client
/// get ahead of the machine's other work, so a 50 ms bound measures vigild and not whatever
/// else shares the two cores. Returns false, changing nothing, without the privilege.
pub fn raise_priority(tid: i32) -> bool {
    // SAFETY: gettid and setpriority take and return plain integers.
    let rc = unsafe {
        let who = if tid == 0 { libc::gettid() } else { tid };
        libc::setpriority(libc::PRIO_PROCESS, who as libc::id_t, -5)
    };
    rc == 0
}
