//! Helpers shared by the benchmark tools: a monotonic clock the driver script can compare
//! across processes, a tiny `--key value` argument parser, client sockets bound to a chosen
//! loopback source address, and the percentile arithmetic.
//!
//! The tools are part of the benchmark, not of the daemon: they may exit on bad arguments, and
//! the one `unsafe` call (`setsockopt(IP_BIND_ADDRESS_NO_PORT)`, which socket2 does not wrap)
//! lives here.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::str::FromStr;

use socket2::{Domain, Protocol, Socket, Type};

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock as Python's `time.monotonic_ns()`, so the
/// driver can line up timestamps printed by several processes.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `--key value` pairs (and bare `--flag`s, stored as "1") after the subcommand.
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    pub fn parse(args: impl Iterator<Item = String>) -> Args {
        let mut map = HashMap::new();
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            let Some(key) = a.strip_prefix("--") else {
                fail(&format!("unexpected argument {a:?}"));
            };
            let value = match args.peek() {
                Some(v) if !v.starts_with("--") => args.next().unwrap_or_default(),
                _ => "1".to_owned(),
            };
            map.insert(key.to_owned(), value);
        }
        Args { map }
    }

    pub fn get<T: FromStr>(&self, key: &str, default: T) -> T {
        match self.map.get(key) {
            None => default,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| fail(&format!("--{key}: cannot parse {v:?}"))),
        }
    }

    pub fn req<T: FromStr>(&self, key: &str) -> T {
        match self.map.get(key) {
            None => fail(&format!("--{key} is required")),
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| fail(&format!("--{key}: cannot parse {v:?}"))),
        }
    }

    pub fn flag(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}

/// Writes one line to stdout at once (bench/run reads the tools' stdout line by line).
pub fn say(line: &str) {
    use std::io::Write as _;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Forwards stdin lines to an event loop (a thread, so the loop never blocks on a pipe),
/// waking it through `waker`; `eof` when stdin closes.
pub fn stdin_lines(waker: mio::Waker) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_owned()).is_err() {
                return;
            }
            let _ = waker.wake();
        }
        let _ = tx.send("eof".to_owned());
        let _ = waker.wake();
    });
    rx
}

pub fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

/// The `i`-th source address counting up from `base` (127.x.y.z arithmetic on the whole u32),
/// `per_addr` connections each: keeps every source address under the ephemeral-port search
/// limit that makes loopback connects slow past about 1,000 per address.
pub fn source_addr(base: Ipv4Addr, i: usize, per_addr: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add((i / per_addr.max(1)) as u32))
}

/// A non-blocking TCP socket bound to `src` with `IP_BIND_ADDRESS_NO_PORT`, so the port is
/// chosen at `connect` from the full 4-tuple instead of reserved at `bind`.
pub fn client_socket(src: Ipv4Addr, nonblocking: bool) -> io::Result<Socket> {
    let ty = if nonblocking {
        Type::STREAM.nonblocking()
    } else {
        Type::STREAM
    };
    let s = Socket::new(Domain::IPV4, ty.cloexec(), Some(Protocol::TCP))?;
    let one: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `s`; `one` outlives the call and its exact size
    // is passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    Ok(s)
}

/// The `q` quantile (0..=1) of sorted values, nearest-rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_step_every_per_addr() {
        let base: Ipv4Addr = "127.1.0.1".parse().unwrap();
        assert_eq!(source_addr(base, 0, 1000), base);
        assert_eq!(source_addr(base, 999, 1000), base);
        assert_eq!(
            source_addr(base, 1000, 1000),
            "127.1.0.2".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            source_addr(base, 255_000, 1000),
            "127.1.1.0".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
