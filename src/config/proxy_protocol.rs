//! `server.proxy_protocol`, `server.proxy_trusted` and `server.proxy_header_timeout`: whether
//! the client listeners expect a PROXY protocol header (HAProxy's, v1 text or v2 binary) in
//! front of every connection, from which sources, and how long it may take to arrive.
//!
//! With the protocol on, *every* connection on the client listeners must start with a header,
//! and only from a source in `proxy_trusted`: the spec forbids guessing whether a header is
//! present (a client could otherwise forge its address), so a connection from anywhere else is
//! refused at accept, before a byte is read. That is why `proxy_trusted` may not be empty while
//! the protocol is on: an empty list would refuse everyone, which is never meant.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// `server.proxy_header_timeout` by default: the spec's "at least 3 seconds".
pub const DEFAULT_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// The shortest `server.proxy_header_timeout`: a proxy writes the header with its connect.
pub const MIN_PROXY_HEADER_TIMEOUT: Duration = Duration::from_millis(100);
/// The longest `server.proxy_header_timeout`.
pub const MAX_PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// The most entries `server.proxy_trusted` may list (each connection is checked against all).
pub const MAX_PROXY_TRUSTED: usize = 256;

/// Which PROXY protocol versions the client listeners expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// No header: the peer's address is the client's.
    Off,
    /// The text header (`PROXY TCP4 ...\r\n`) only.
    V1,
    /// The binary header only.
    V2,
    /// Either, told apart by their first bytes (a header is still required).
    Any,
}

impl ProxyMode {
    /// The value as the config file spells it.
    pub const fn name(self) -> &'static str {
        match self {
            ProxyMode::Off => "off",
            ProxyMode::V1 => "v1",
            ProxyMode::V2 => "v2",
            ProxyMode::Any => "any",
        }
    }

    pub fn parse(s: &str) -> Option<ProxyMode> {
        Some(match s {
            "off" => ProxyMode::Off,
            "v1" => ProxyMode::V1,
            "v2" => ProxyMode::V2,
            "any" => ProxyMode::Any,
            _ => return None,
        })
    }

    pub const fn is_on(self) -> bool {
        !matches!(self, ProxyMode::Off)
    }
}

/// An address block, `10.0.0.0/8` or `::1/128`; a bare address is its own /32 (or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n` or a bare address; the address is masked to the prefix,
    /// so `10.1.2.3/8` is `10.0.0.0/8`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?} has a prefix length outside 0..={max}")),
            },
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, from a
    /// dual-stack listener) is matched as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The PROXY protocol settings of the client listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub mode: ProxyMode,
    /// The proxies allowed to connect (and so to send a header).
    pub trusted: Vec<Cidr>,
    /// A header not complete this long after the accept: reaped `protocol-error`.
    pub header_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            mode: ProxyMode::Off,
            trusted: Vec::new(),
            header_timeout: DEFAULT_PROXY_HEADER_TIMEOUT,
        }
    }
}

impl ProxyConfig {
    /// Whether a connection from `ip` may send a header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_their_addresses_only() {
        let c = Cidr::parse("10.1.2.3/8").unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.9".parse().unwrap()), "v4-mapped");
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.7".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()), "families differ");
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "10.0.0.0/-1",
            "10.0.0.0/",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
