//! Private network namespaces and the raw socket tricks the fault tests need, in one small
//! module: the only test code that calls `libc` with `unsafe` (each block says why it is sound).
//!
//! A fault test calls [`enter_private`] on its own thread: `unshare(CLONE_NEWNET)` moves only
//! the calling thread, and every process or thread it then starts (vigild, `nft`) inherits the
//! namespace. The namespace, its nftables rules and its loopback vanish when the last thread,
//! process and socket in it are gone: nothing needs tearing down, even after a panic. vigild
//! children are started with [`kill_with_parent`], so they die with the thread that started
//! them even if the test process is killed outright.

use std::io::{self, Write as _};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

/// Moves the calling thread into a new, private network namespace and brings its `lo` up.
pub fn enter_private() -> io::Result<()> {
    // SAFETY: unshare(2) takes a flag word and touches no memory of ours; CLONE_NEWNET affects
    // only the calling thread, which is what we want.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_loopback_up()
}

/// `SIOCGIFFLAGS` then `SIOCSIFFLAGS` with `IFF_UP` on `lo`: what `ip link set lo up` does,
/// without needing iproute2.
fn set_loopback_up() -> io::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: ifreq is plain old data (a name and a union of integers and addresses); all
    // zeroes is a valid value of it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid, writable ifreq that outlives the call; SIOCGIFFLAGS writes
    // only its flags member.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the flags member of the union, so reading it is sound.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads the name and the flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks on a throwaway thread that this process may create a private network namespace
/// and run `nft` in it. `Err` says why not, for the skip message.
pub fn probe() -> Result<(), String> {
    std::thread::spawn(|| {
        enter_private().map_err(|e| format!("cannot create a private network namespace: {e}"))?;
        nft("table inet probe {\n chain i {\n type filter hook input priority 0; policy accept;\n }\n}\n")
            .map_err(|e| format!("cannot use nftables in it: {e}"))
    })
    .join()
    .unwrap_or_else(|_| Err("the namespace probe panicked".into()))
}

/// Loads nftables rules (`nft -f -`) into the calling thread's namespace.
pub fn nft(rules: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft -f - failed ({}): {}\nrules:\n{rules}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Waits until every established connection the daemon on `port` holds (to peers at `peer`
/// only, when given) has nothing unacknowledged: the peer's delayed ACK of the last reply is
/// out, so a fault applied now finds an idle connection, not a retransmission. Read with `ss`
/// in the calling thread's namespace.
pub fn wait_acked(port: u16, peer: Option<&str>) {
    let mut filter = format!("sport = :{port}");
    if let Some(ip) = peer {
        filter.push_str(&format!(" and dst {ip}"));
    }
    super::wait_until(
        std::time::Duration::from_secs(5),
        &format!("the daemon's replies on port {port} acknowledged ({filter})"),
        || {
            let out = Command::new("ss")
                .args(["-tniH", "state", "established", &filter])
                .output()
                .expect("ss (iproute2; scripts/test installs it)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !text.trim().is_empty() && !text.contains("unacked:") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
}

/// Whether a socket of the calling thread's namespace listens on the IPv4 `addr`
/// (`/proc/thread-self/net/tcp`). For waiting until a server started by a test listens without
/// binding the port to find out, which would race the server's own bind and make it fail.
pub fn listening(addr: std::net::SocketAddrV4) -> bool {
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    );
    std::fs::read_to_string("/proc/thread-self/net/tcp").is_ok_and(|table| {
        table.lines().skip(1).any(|l| {
            let mut f = l.split_whitespace();
            let (local, state) = (f.nth(1), f.nth(1));
            local == Some(want.as_str()) && state == Some("0A")
        })
    })
}

/// A `TcpExt` counter of the calling thread's namespace (`/proc/thread-self/net/netstat`;
/// `/proc/self/net` would show the main thread's namespace instead).
pub fn tcp_ext(name: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let found = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name);
        if let Some((_, v)) = found {
            return v.parse().map_err(io::Error::other);
        }
    }
    Err(io::Error::other(format!("no TcpExt counter {name}")))
}

/// Makes a connected socket vanish without FIN or RST, as if its host crashed and rebooted:
/// `TCP_REPAIR` on, then close. The peer's next segment is answered with RST.
pub fn vanish(stream: TcpStream) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the whole call and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    drop(stream);
    Ok(())
}

/// `IP_BIND_ADDRESS_NO_PORT`: bind to a source address now, pick the port at connect from
/// the full 4-tuple, so thousands of connections from one address connect quickly.
pub fn bind_address_no_port(sock: &socket2::Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: as in `vanish`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Has the child killed (SIGKILL) when the thread that started it exits, so a daemon never
/// outlives its test, even when the test process is killed.
pub fn kill_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2) and
    // getppid(2), which are async-signal-safe, and builds errors without allocating.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Raises this process's soft descriptor limit to the hard one (the mass-partition case holds
/// thousands of client sockets; CI shells often start with a soft limit of 1024).
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit; the kernel only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// Puts the calling thread in the `SCHED_RR` real-time class at `priority` (1 = lowest), or
/// back into the normal class with `None`. Threads and processes it starts afterwards inherit
/// the policy. The mass-partition case uses it so that its daemon, log reader and control
/// client are measured, not the machine's other tenants. The kernel's real-time throttling
/// (95 % of each second) still applies.
pub fn set_thread_realtime(priority: Option<i32>) -> io::Result<()> {
    let (policy, sched_priority) = match priority {
        Some(p) => (libc::SCHED_RR, p),
        None => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param { sched_priority };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the
    // calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread (and what it spawns from now on, threads and processes alike) to
/// `cpu`, or lets it run on every CPU again (`None`).
pub fn set_thread_cpu(cpu: Option<usize>) -> io::Result<()> {
    // SAFETY: `set` is a plain bit mask, zeroed and then filled with CPU_SET below its size;
    // pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => {
                for c in 0..cpus() {
                    libc::CPU_SET(c, &mut set);
                }
            }
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs this machine has online (not the calling thread's mask, which pinning narrows).
pub fn cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Has the child sent SIGTERM when the thread that started it exits: for `systemd-nspawn`,
/// which powers its container off on SIGTERM (a SIGKILL would orphan the container's systemd).
pub fn terminate_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: as in `kill_with_parent`.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Moves the calling thread into the network namespace of process `pid` (a container's): the
/// sockets it then opens live there, and stay there when handed to other threads.
pub fn enter_netns_of(pid: i32) -> io::Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns(2) takes a descriptor we own (open for the call's duration) and a flag;
    // CLONE_NEWNET moves only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
