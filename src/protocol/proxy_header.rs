//! The PROXY protocol header a trusted proxy sends before the client's first byte
//! (HAProxy's spec, v1 text and v2 binary): how long it is, and whose address it carries.
//!
//! The `ppp` crate does the parsing; this wrapper decides *when* to call it and bounds what it
//! may be shown, so the caller can peek at the socket, ask, and consume exactly the header:
//! - v1: nothing is parsed until the line's `\r\n` has arrived within the spec's 107 bytes.
//!   (`ppp` reads a half-received `PROXY TCP4 1.2.` as a bad address, not as a partial one,
//!   so a header dribbled a byte at a time would otherwise be refused.) Bytes that cannot be
//!   the start of `PROXY ` are refused at once.
//! - v2: the 16-byte fixed part gives the length; a header whose TLV section (the part after
//!   the addresses) is longer than [`MAX_V2_TLV_BYTES`] is refused as soon as that length is
//!   known, before its bytes are waited for. 1 KiB holds every TLV HAProxy, AWS NLB
//!   (`PP2_TYPE_AWS`, ~30 bytes) and Azure send in practice (ALPN, authority, unique id up to
//!   128 bytes, CRC, NETNS, the SSL sub-TLVs with a certificate's CN), while the spec's u16
//!   length would allow 64 KiB per connection of bytes we never use. TLVs must be well formed
//!   (each length within the section); their contents are ignored.
//!
//! The longest header accepted is so [`MAX_HEADER_BYTES`]: 16 + 216 (two UNIX paths) + 1024.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{self, ParseError as V2Error};
use ppp::{v1, PartialResult as _};

use crate::config::ProxyMode;

/// The spec's limit on a v1 line, `\r\n` included.
pub const MAX_V1_BYTES: usize = 107;
/// The most TLV bytes a v2 header may carry (see the module docs for why 1 KiB).
pub const MAX_V2_TLV_BYTES: usize = 1024;
/// v2's fixed part: the 12-byte signature, version/command, family/protocol, length.
const V2_FIXED_BYTES: usize = 16;
/// The largest v2 address block (two 108-byte UNIX paths).
const V2_MAX_ADDRESS_BYTES: usize = 216;
/// The most bytes any accepted header has: what the caller must be able to peek.
pub const MAX_HEADER_BYTES: usize = V2_FIXED_BYTES + V2_MAX_ADDRESS_BYTES + MAX_V2_TLV_BYTES;

const V1_PREFIX: &[u8] = b"PROXY ";

/// What a header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A proxied TCP connection from this client address.
    Client(SocketAddr),
    /// v2 `LOCAL` (the proxy's own connection, its health checks) or v1 `UNKNOWN`, or a
    /// family vigild does not map to an address (UNIX, UDP): the peer's address stays.
    Proxy,
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes: exactly what to consume from the socket.
    pub len: usize,
    /// 1 or 2.
    pub version: u8,
    pub origin: Origin,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a header of an accepted version, or one that does not parse (bad numbers, bad
    /// addresses, bad TLVs, a version the config does not accept).
    Malformed,
    /// Longer than the bound: a v1 line past 107 bytes, a v2 TLV section past 1 KiB.
    TooLarge,
}

/// The result of looking at the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// Consistent with a header so far; wait for more bytes.
    Incomplete,
    Done(Header),
    Refused(Refusal),
}

/// Looks at `input`, the connection's first bytes (at most [`MAX_HEADER_BYTES`] are needed;
/// more are ignored), for a header `mode` accepts.
pub fn parse(input: &[u8], mode: ProxyMode) -> Parse {
    let v2_sig = v2::PROTOCOL_PREFIX;
    let maybe_v2 = common_prefix(input, v2_sig);
    let maybe_v1 = common_prefix(input, V1_PREFIX);
    let (v1_ok, v2_ok) = match mode {
        ProxyMode::Off => (false, false),
        ProxyMode::V1 => (true, false),
        ProxyMode::V2 => (false, true),
        ProxyMode::Any => (true, true),
    };
    if v2_ok && maybe_v2 {
        return parse_v2(input);
    }
    if v1_ok && maybe_v1 {
        return parse_v1(input);
    }
    Parse::Refused(Refusal::Malformed)
}

/// Whether `input` and `prefix` agree on their common length.
fn common_prefix(input: &[u8], prefix: &[u8]) -> bool {
    let n = input.len().min(prefix.len());
    input[..n] == prefix[..n]
}

fn parse_v1(input: &[u8]) -> Parse {
    let window = &input[..input.len().min(MAX_V1_BYTES)];
    let Some(cr) = memchr::memmem::find(window, b"\r\n") else {
        return if input.len() >= MAX_V1_BYTES {
            Parse::Refused(Refusal::TooLarge)
        } else if window.contains(&b'\r') && !window.ends_with(b"\r") {
            // A lone CR inside the line: it can never end well.
            Parse::Refused(Refusal::Malformed)
        } else {
            Parse::Incomplete
        };
    };
    let line = &input[..cr + 2];
    match v1::Header::try_from(line) {
        Ok(h) => {
            let origin = match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Origin::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Origin::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                v1::Addresses::Unknown => Origin::Proxy,
            };
            Parse::Done(Header {
                len: line.len(),
                version: 1,
                origin,
            })
        }
        // The whole line is here: whatever is wrong with it stays wrong.
        Err(_) => Parse::Refused(Refusal::Malformed),
    }
}

fn parse_v2(input: &[u8]) -> Parse {
    if input.len() < V2_FIXED_BYTES {
        return Parse::Incomplete;
    }
    let length = usize::from(u16::from_be_bytes([input[14], input[15]]));
    let addresses = match input[13] >> 4 {
        0x0 => 0,
        0x1 => 12,
        0x2 => 36,
        0x3 => V2_MAX_ADDRESS_BYTES,
        _ => return Parse::Refused(Refusal::Malformed),
    };
    if length.saturating_sub(addresses) > MAX_V2_TLV_BYTES {
        return Parse::Refused(Refusal::TooLarge);
    }
    let total = V2_FIXED_BYTES + length;
    if input.len() < total {
        // Check what is already known (version, command, family) before waiting.
        return match v2::Header::try_from(&input[..V2_FIXED_BYTES]) {
            Err(V2Error::Partial(..) | V2Error::Incomplete(..)) | Ok(_) => Parse::Incomplete,
            Err(_) => Parse::Refused(Refusal::Malformed),
        };
    }
    let header = match v2::Header::try_from(&input[..total]) {
        Ok(h) => h,
        Err(e) if e.is_incomplete() => return Parse::Incomplete,
        Err(_) => return Parse::Refused(Refusal::Malformed),
    };
    if header.tlvs().any(|t| t.is_err()) {
        return Parse::Refused(Refusal::Malformed);
    }
    let origin = match (header.command, header.protocol, header.addresses) {
        (v2::Command::Local, _, _) => Origin::Proxy,
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => {
            Origin::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => {
            Origin::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        // UNSPEC, UNIX or a datagram: the spec says to keep the connection's own address.
        _ => Origin::Proxy,
    };
    Parse::Done(Header {
        len: total,
        version: 2,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addr: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = v2::PROTOCOL_PREFIX.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend(((addr.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend(addr);
        h.extend(tlvs);
        h
    }

    const V4: [u8; 12] = [192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0x1c, 0xd3];

    #[test]
    fn v1_lines_give_the_client_and_their_length() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 7379\r\n*1\r\n$4\r\nPING\r\n";
        let want = Parse::Done(Header {
            len: 42,
            version: 1,
            origin: Origin::Client("192.0.2.7:12345".parse().unwrap()),
        });
        assert_eq!(parse(line, ProxyMode::V1), want);
        assert_eq!(parse(line, ProxyMode::Any), want);
        assert_eq!(
            parse(line, ProxyMode::V2),
            Parse::Refused(Refusal::Malformed)
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n";
        assert!(matches!(
            parse(v6, ProxyMode::V1),
            Parse::Done(Header { origin: Origin::Client(a), .. }) if a.to_string() == "[2001:db8::7]:1"
        ));
        assert!(matches!(
            parse(b"PROXY UNKNOWN\r\n", ProxyMode::V1),
            Parse::Done(Header {
                len: 15,
                origin: Origin::Proxy,
                ..
            })
        ));
    }

    #[test]
    fn a_header_given_a_byte_at_a_time_is_incomplete_until_its_end() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 7379\r\n";
        let bin = v2_header(1, 0x11, &V4, &[0x04, 0, 2, b'h', b'i']);
        for (input, mode) in [(&line[..], ProxyMode::Any), (&bin[..], ProxyMode::Any)] {
            for n in 0..input.len() {
                assert_eq!(parse(&input[..n], mode), Parse::Incomplete, "at {n}");
            }
            assert!(matches!(parse(input, mode), Parse::Done(h) if h.len == input.len()));
        }
    }

    #[test]
    fn bad_v1_lines_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 7379\r\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 7379\r\n",
            b"PROXY TCP4 300.0.2.7 10.0.0.1 1 7379\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n",
            b"PROXY TCP5 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7  10.0.0.1 1 2\r\n",
            b"PROXY \xff\xfe\r\n",
            b"PROXY TCP4 1.2.3.4\r5.6.7.8",
            b"*1\r\n$4\r\nPING\r\n",
            b"GET / HTTP/1.1\r\n",
            b"proxy TCP4",
        ] {
            assert_eq!(
                parse(bad, ProxyMode::Any),
                Parse::Refused(Refusal::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(
            parse(&long, ProxyMode::V1),
            Parse::Refused(Refusal::TooLarge)
        );
    }

    #[test]
    fn v2_headers_are_bounded_and_checked() {
        let local = v2_header(0, 0x00, &[], &[]);
        assert_eq!(
            parse(&local, ProxyMode::V2),
            Parse::Done(Header {
                len: 16,
                version: 2,
                origin: Origin::Proxy
            })
        );
        let ok = v2_header(1, 0x11, &V4, &[]);
        assert_eq!(
            parse(&ok, ProxyMode::V2),
            Parse::Done(Header {
                len: 28,
                version: 2,
                origin: Origin::Client("192.0.2.7:12345".parse().unwrap())
            })
        );
        assert_eq!(
            parse(&ok, ProxyMode::V1),
            Parse::Refused(Refusal::Malformed)
        );
        // The largest TLV section accepted, then one byte more (refused from the fixed part).
        let mut tlv = vec![0xE0];
        tlv.extend(((MAX_V2_TLV_BYTES - 3) as u16).to_be_bytes());
        tlv.resize(MAX_V2_TLV_BYTES, 0);
        let big = v2_header(1, 0x11, &V4, &tlv);
        assert!(matches!(parse(&big, ProxyMode::V2), Parse::Done(h) if h.len == big.len()));
        let mut tlv = vec![0xE0];
        tlv.extend(((MAX_V2_TLV_BYTES - 2) as u16).to_be_bytes());
        tlv.resize(MAX_V2_TLV_BYTES + 1, 0);
        let over = v2_header(1, 0x11, &V4, &tlv);
        assert_eq!(
            parse(&over[..16], ProxyMode::V2),
            Parse::Refused(Refusal::TooLarge)
        );
        // A TLV that claims more than the section holds.
        let lying = v2_header(1, 0x11, &V4, &[0x04, 0x00, 0x40, 1, 2]);
        assert_eq!(
            parse(&lying, ProxyMode::V2),
            Parse::Refused(Refusal::Malformed)
        );
        // Version 1 in the binary form, an unknown command, family, or too short a block.
        for (vc, fam, addr) in [
            (0x11u8, 0x11u8, &V4[..]),
            (0x2F, 0x11, &V4),
            (0x21, 0x51, &V4),
        ] {
            let mut h = v2_header(1, fam, addr, &[]);
            h[12] = vc;
            assert_eq!(
                parse(&h, ProxyMode::V2),
                Parse::Refused(Refusal::Malformed),
                "{vc:#x} {fam:#x}"
            );
        }
        let mut short = v2_header(1, 0x11, &V4[..4], &[]);
        short[15] = 4;
        assert_eq!(
            parse(&short, ProxyMode::V2),
            Parse::Refused(Refusal::Malformed)
        );
    }
}
