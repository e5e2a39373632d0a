//! Reply encoders: each `write_*` appends one RESP frame (or a frame header) to a connection's
//! write buffer, in RESP2 or, where the two differ, RESP3 ([`Proto`]).

/// `+s\r\n`. CR and LF would end the reply early and desynchronise the client, so they become
/// spaces.
pub fn write_simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    push_line(out, s);
}

/// `-msg\r\n`; `msg` carries its own prefix (`ERR ...`, `NOPROTO ...`). CR/LF become spaces.
pub fn write_error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    push_line(out, msg);
}

/// `$len\r\n<data>\r\n`; binary-safe.
pub fn write_bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    push_decimal(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The reply protocol a connection chose with `HELLO`: RESP2 until it asks for 3. RESP3 only
/// changes how a few replies are framed (null, maps, pushes); everything else is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

/// The null reply: `$-1\r\n` in RESP2, `_\r\n` in RESP3.
pub fn write_null(out: &mut Vec<u8>, proto: Proto) {
    out.extend_from_slice(match proto {
        Proto::Resp2 => b"$-1\r\n",
        Proto::Resp3 => b"_\r\n",
    });
}

/// A map of `pairs` key/value pairs: `%n` in RESP3, a flat array of `2n` in RESP2.
pub fn write_map_len(out: &mut Vec<u8>, pairs: usize, proto: Proto) {
    match proto {
        Proto::Resp2 => write_array_len(out, pairs * 2),
        Proto::Resp3 => {
            out.push(b'%');
            push_decimal(out, pairs as u64);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// An out-of-band push (pub/sub messages): `>n` in RESP3, an array in RESP2. Both headers
/// have the same length, so a frame built for one can be turned into the other in place.
pub fn write_push_len(out: &mut Vec<u8>, n: usize, proto: Proto) {
    let start = out.len();
    write_array_len(out, n);
    if proto == Proto::Resp3 {
        out[start] = b'>';
    }
}

/// `:n\r\n`.
pub fn write_integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    if n < 0 {
        out.push(b'-');
    }
    // unsigned_abs, because -i64::MIN does not fit in i64.
    push_decimal(out, n.unsigned_abs());
    out.extend_from_slice(b"\r\n");
}

/// `*n\r\n`; the caller then writes `n` elements.
pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

fn push_line(out: &mut Vec<u8>, s: &str) {
    // UTF-8 continuation bytes are never CR or LF, so a byte-wise replace keeps `s` valid.
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Decimal digits without `format!`, which would allocate on every reply.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
