//! RESP2 framing for the client protocol: parse one request from the front of a connection's
//! read buffer, and append replies to its write buffer.
//!
//! Two request forms are accepted, as redis-server does:
//! - **multibulk**, anything starting with `*`: `*<count>\r\n` then `count` times
//!   `$<len>\r\n<len bytes>\r\n`. Arguments are binary-safe.
//! - **inline**, anything else: one line ending in `\n` (a `\r` before it is dropped, so both
//!   `redis-cli` and `nc` work), split on spaces and tabs. An argument that *starts* with `"` or
//!   `'` runs to the matching quote and may hold blanks. Unlike Redis there is no escape
//!   processing (`\n` and `\x41` stay as written, `\"` does not hide a quote) and a quote
//!   inside a bare word is an ordinary byte: arguments are ranges into the buffer, so they
//!   cannot be rewritten.
//!
//! Invariants the event loop relies on:
//! - [`parse`] never panics, allocates nothing beyond growing the caller's `args`, and looks
//!   only at the first request; bytes after it are left for the next call.
//! - It keeps no state: a partial request is scanned again from its start on every call, so
//!   call it once per read that added bytes. The limit below bounds that rescan.
//! - `max_request_bytes` bounds what a client can make us buffer. A multibulk request may be at
//!   most that many bytes in total; an inline line at most that many bytes before its line
//!   ending. Lengths that could never fit are rejected as soon as their header is read, without
//!   waiting for the data, and [`Parsed::Incomplete`] is only returned while the buffer holds at
//!   most `max_request_bytes + 1` bytes.
//! - Every [`ProtocolError`] is fatal for the connection: the framing is lost. Reply
//!   `-ERR <error>` and close, as redis-server does.
use std::fmt;
use std::ops::Range;

/// Smallest possible encoded argument, `$0\r\n\r\n`; bounds how many a count can promise.
const MIN_ARG_BYTES: usize = 6;
/// `*N` / `$N` lengths: more digits than this cannot be a sane length (`i64` has 19).
const MAX_LENGTH_DIGITS: usize = 19;
/// Never pre-allocate more argument slots than this, whatever a client claims.
const MAX_ARGS_RESERVE: usize = 1024;

/// Result of trying to parse one request from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet for a whole request; nothing consumed. Keep the bytes and read more.
    Incomplete,
    /// A whole request: `consumed` bytes from the front of the buffer; `args` (the vector the
    /// caller passed) was cleared and filled with byte ranges into the buffer, one per argument
    /// (`args[0]` = command name). An empty `args` means a frame with nothing to answer (blank
    /// inline line, `*0`, `*-1`): consume and go on.
    Request { consumed: usize },
}

/// Why a request cannot be parsed. `Display` gives the text that follows `-ERR ` in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*` not followed by a well-formed count line.
    InvalidMultibulkLength,
    /// `$` not followed by a well-formed, non-negative length line.
    InvalidBulkLength,
    /// A multibulk argument did not start with `$`; holds the byte found instead.
    ExpectedDollar(u8),
    /// The bytes after a bulk argument's data were not `\r\n` (often: data longer than declared).
    BulkNotTerminated,
    /// An inline argument's quote was not closed, or not followed by a blank or the line end.
    UnbalancedQuotes,
    /// The request is, or has promised to be, longer than `max_request_bytes`.
    TooLarge {
        /// The `max_request_bytes` in force, for the reply text.
        limit: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            Self::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            Self::InvalidBulkLength => f.write_str("invalid bulk length"),
            // Escape the byte: the text goes into a one-line error reply and into our logs.
            Self::ExpectedDollar(b) if b.is_ascii_graphic() || *b == b' ' => {
                write!(f, "expected '$', got '{}'", char::from(*b))
            }
            Self::ExpectedDollar(b) => write!(f, "expected '$', got '\\x{b:02x}'"),
            Self::BulkNotTerminated => f.write_str("bulk string not terminated by CRLF"),
            Self::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            Self::TooLarge { limit } => write!(f, "request exceeds max_request_bytes ({limit})"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Parses the first request in `buf`. See [`Parsed`] for the contract on success; `args` is
/// left empty unless a request is returned. The caller consumes `consumed` bytes and calls
/// again until `Incomplete`, which makes pipelined requests work.
pub fn parse(
    buf: &[u8],
    max_request_bytes: usize,
    args: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    args.clear();
    let result = match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'*') => parse_multibulk(buf, max_request_bytes, args),
        Some(_) => parse_inline(buf, max_request_bytes, args),
    };
    if !matches!(result, Ok(Parsed::Request { .. })) {
        // Do not hand the caller ranges of a half-parsed request.
        args.clear();
    }
    result
}

fn parse_inline(
    buf: &[u8],
    max: usize,
    args: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    // Only look as far as a line of `max` bytes plus `\r\n` could reach, so a client sending
    // no newline costs one bounded scan per read, and the answer is final once that is full.
    let window = max.saturating_add(2);
    let Some(newline) = buf.iter().take(window).position(|&b| b == b'\n') else {
        return if buf.len() >= window {
            Err(ProtocolError::TooLarge { limit: max })
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = buf.get(..newline).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max {
        return Err(ProtocolError::TooLarge { limit: max });
    }
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if is_blank(b) {
            i += 1;
        } else if b == b'"' || b == b'\'' {
            let open = i + 1;
            let close = line
                .iter()
                .skip(open)
                .position(|&c| c == b)
                .map(|p| open + p)
                .ok_or(ProtocolError::UnbalancedQuotes)?;
            // `"a"b` is refused by redis-server too; accepting it would need a rewritten `ab`.
            if line.get(close + 1).is_some_and(|&c| !is_blank(c)) {
                return Err(ProtocolError::UnbalancedQuotes);
            }
            args.push(open..close);
            i = close + 1;
        } else {
            let end = line
                .iter()
                .skip(i)
                .position(|&c| is_blank(c))
                .map_or(line.len(), |p| i + p);
            args.push(i..end);
            i = end;
        }
    }
    Ok(Parsed::Request {
        consumed: newline + 1,
    })
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn parse_multibulk(
    buf: &[u8],
    max: usize,
    args: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    let buf = multibulk_view(buf, max);
    let Some((count, pos)) = count_header(buf, max)? else {
        return incomplete(buf, max);
    };
    if count == 0 {
        // redis-server treats `*0` and `*-1` as nothing to do; so do we.
        return Ok(Parsed::Request { consumed: pos });
    }
    args.reserve(count.min(MAX_ARGS_RESERVE));
    match walk_args(buf, max, pos, count, Some(args))? {
        Walk::Done(consumed) => Ok(Parsed::Request { consumed }),
        Walk::Stopped { .. } => incomplete(buf, max),
    }
}

/// The part of a buffer a multibulk request is judged on: at most `max + 1` bytes. A request
/// that fits ends within `max` bytes, and with one byte more an unfinished one is already too
/// large, so later bytes could only change *which* error is reported. Not looking at them makes
/// the outcome the same however the stream was split into reads: the bytes that decide it are
/// the same ones.
fn multibulk_view(buf: &[u8], max: usize) -> &[u8] {
    buf.get(..max.saturating_add(1)).unwrap_or(buf)
}

/// The `*N\r\n` line: `None` while incomplete, else the argument count (0 for `*0` and
/// negative counts) and the offset of the first argument.
fn count_header(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, ProtocolError> {
    let too_large = ProtocolError::TooLarge { limit: max };
    let (count, pos) = match header(buf, 0) {
        Header::Incomplete => return Ok(None),
        Header::Invalid => return Err(ProtocolError::InvalidMultibulkLength),
        Header::Value { n, next } => (n, next),
    };
    if pos > max {
        return Err(too_large);
    }
    if count <= 0 {
        return Ok(Some((0, pos)));
    }
    // Refuse a count that could not fit even with empty arguments before reserving anything:
    // otherwise `*2147483647` would make us wait for (and buffer) gigabytes.
    let room = (max - pos) / MIN_ARG_BYTES;
    match usize::try_from(count) {
        Ok(c) if c <= room => Ok(Some((c, pos))),
        _ => Err(too_large),
    }
}

/// How far a walk over a multibulk request's arguments got.
enum Walk {
    /// All arguments are here; the request ends at this offset.
    Done(usize),
    /// The argument at `pos` is not complete yet; `remaining` arguments (it included) to go.
    Stopped { pos: usize, remaining: usize },
}

/// Checks `remaining` arguments starting at `pos`, pushing their ranges into `args` if given.
/// Everything before `pos` must already have been checked.
fn walk_args(
    buf: &[u8],
    max: usize,
    mut pos: usize,
    remaining: usize,
    mut args: Option<&mut Vec<Range<usize>>>,
) -> Result<Walk, ProtocolError> {
    let too_large = ProtocolError::TooLarge { limit: max };
    for done in 0..remaining {
        let stopped = Walk::Stopped {
            pos,
            remaining: remaining - done,
        };
        match buf.get(pos) {
            None => return Ok(stopped),
            Some(b'$') => {}
            Some(&b) => return Err(ProtocolError::ExpectedDollar(b)),
        }
        let (len, data) = match header(buf, pos) {
            Header::Incomplete => return Ok(stopped),
            Header::Invalid => return Err(ProtocolError::InvalidBulkLength),
            Header::Value { n, next } => (n, next),
        };
        let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
        // Judge the declared length now, not when the data has arrived.
        let data_end = data.checked_add(len).ok_or(too_large.clone())?;
        let end = data_end.checked_add(2).ok_or(too_large.clone())?;
        if end > max {
            return Err(too_large);
        }
        // Check whatever part of the terminator is already here, so a bulk longer than
        // declared fails now instead of after more reads.
        for (at, want) in [(data_end, b'\r'), (data_end + 1, b'\n')] {
            if buf.get(at).is_some_and(|&b| b != want) {
                return Err(ProtocolError::BulkNotTerminated);
            }
        }
        if buf.len() < end {
            return Ok(stopped);
        }
        if let Some(args) = args.as_deref_mut() {
            args.push(data..data_end);
        }
        pos = end;
    }
    Ok(Walk::Done(pos))
}

/// Where a [`parse`] of an unfinished request stopped, so that the next call on the same
/// buffer, grown at its end, checks only the new bytes instead of the whole request again.
///
/// Without it a client that sends a large request a byte at a time costs a rescan of
/// everything buffered per byte: measured on a debug build, 65 KB dribbled over 9 s cost the
/// daemon 6.4 s of CPU. With it each read costs the new bytes plus one full parse per request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Nothing known: parse from the start.
    #[default]
    Fresh,
    /// An inline request whose first `scanned` bytes hold no `\n`.
    Inline { scanned: usize },
    /// A multibulk request whose arguments before `pos` are complete and valid, with
    /// `remaining` still to come.
    Multibulk { pos: usize, remaining: usize },
}

/// [`parse`], resumed from where the previous call on the same buffer stopped. The caller
/// keeps `resume` with the buffer, only appends to the buffer between calls, and starts with
/// [`Resume::Fresh`] for a buffer that begins a new request. The result is always the one
/// [`parse`] would give; `resume` is left [`Resume::Fresh`] unless it returns `Incomplete`.
pub fn parse_resumable(
    buf: &[u8],
    max_request_bytes: usize,
    args: &mut Vec<Range<usize>>,
    resume: &mut Resume,
) -> Result<Parsed, ProtocolError> {
    let max = max_request_bytes;
    match *resume {
        Resume::Fresh => {}
        Resume::Inline { scanned } => {
            // `parse` looks for `\n` in the first `window` bytes; the first `scanned` hold none.
            let window = max.saturating_add(2);
            let end = buf.len().min(window);
            let newline = buf.get(scanned..end).is_some_and(|b| b.contains(&b'\n'));
            if !newline && buf.len() < window {
                args.clear();
                *resume = Resume::Inline { scanned: end };
                return Ok(Parsed::Incomplete);
            }
        }
        Resume::Multibulk { pos, remaining } => {
            let view = multibulk_view(buf, max);
            if let Ok(Walk::Stopped { pos, remaining }) = walk_args(view, max, pos, remaining, None)
            {
                let result = incomplete(buf, max);
                args.clear();
                *resume = match result {
                    Ok(_) => Resume::Multibulk { pos, remaining },
                    Err(_) => Resume::Fresh,
                };
                return result;
            }
            // Complete, or an error: the full parse below gives the answer and the ranges.
        }
    }
    *resume = Resume::Fresh;
    let result = parse(buf, max, args);
    if result == Ok(Parsed::Incomplete) {
        *resume = resume_point(buf, max);
    }
    result
}

/// The [`Resume`] for a buffer that [`parse`] just found incomplete.
fn resume_point(buf: &[u8], max: usize) -> Resume {
    match buf.first() {
        // Nothing yet: the first byte decides between the two forms.
        None => return Resume::Fresh,
        Some(b'*') => {}
        Some(_) => {
            return Resume::Inline {
                scanned: buf.len().min(max.saturating_add(2)),
            }
        }
    }
    let buf = multibulk_view(buf, max);
    match count_header(buf, max) {
        Ok(Some((count, pos))) if count > 0 => match walk_args(buf, max, pos, count, None) {
            Ok(Walk::Stopped { pos, remaining }) => Resume::Multibulk { pos, remaining },
            _ => Resume::Fresh,
        },
        _ => Resume::Fresh,
    }
}

/// A multibulk request still waiting for bytes is the whole buffer; past the limit it can only
/// end too large, so say so now rather than buffer more.
fn incomplete(buf: &[u8], max: usize) -> Result<Parsed, ProtocolError> {
    if buf.len() > max {
        Err(ProtocolError::TooLarge { limit: max })
    } else {
        Ok(Parsed::Incomplete)
    }
}

enum Header {
    Incomplete,
    Invalid,
    /// The number, and the offset just past its `\r\n`.
    Value {
        n: i64,
        next: usize,
    },
}

/// Reads a `*N\r\n` or `$N\r\n` line whose marker byte is at `start`. Bytes are validated as
/// they arrive, so junk is refused at once and a header can never be longer than
/// 1 + 1 + 19 + 2 bytes while it is incomplete.
fn header(buf: &[u8], start: usize) -> Header {
    let mut i = start + 1;
    let negative = buf.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let digits_start = i;
    let mut n: i64 = 0;
    loop {
        match buf.get(i) {
            None => return Header::Incomplete,
            Some(&b) if b.is_ascii_digit() => {
                if i - digits_start >= MAX_LENGTH_DIGITS {
                    return Header::Invalid;
                }
                // 19 digits can still overflow i64; that is as invalid as junk (so says Redis).
                n = match n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(i64::from(b - b'0')))
                {
                    Some(n) => n,
                    None => return Header::Invalid,
                };
                i += 1;
            }
            Some(b'\r') if i > digits_start => break,
            Some(_) => return Header::Invalid,
        }
    }
    match buf.get(i + 1) {
        None => Header::Incomplete,
        Some(b'\n') => Header::Value {
            n: if negative { -n } else { n },
            next: i + 2,
        },
        Some(_) => Header::Invalid,
    }
}

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

#[cfg(test)]
mod tests {
    use super::ProtocolError::*;
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1024;

    /// The arguments of one request, copied out of the buffer.
    type Args = Vec<Vec<u8>>;

    /// One `parse` call: `None` for Incomplete, else bytes consumed and the arguments.
    fn parse_one(buf: &[u8], max: usize) -> Result<Option<(usize, Args)>, ProtocolError> {
        let mut args = Vec::new();
        Ok(match parse(buf, max, &mut args)? {
            Parsed::Incomplete => None,
            Parsed::Request { consumed } => Some((consumed, copy(buf, &args))),
        })
    }

    fn copy(buf: &[u8], args: &[Range<usize>]) -> Args {
        args.iter().map(|r| buf[r.clone()].to_vec()).collect()
    }

    /// Parses `buf`, which must be exactly one whole request.
    fn args_of(buf: &[u8]) -> Args {
        let (consumed, args) = parse_one(buf, MAX).unwrap().expect("complete request");
        assert_eq!(consumed, buf.len(), "whole input consumed");
        args
    }

    fn v(words: &[&str]) -> Args {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    /// Feeds `chunks` the way the event loop does: append, parse until Incomplete, drop what
    /// was consumed. Returns the non-empty requests in order and how many bytes are left.
    fn drive(chunks: &[&[u8]], max: usize) -> Result<(Vec<Args>, usize), ProtocolError> {
        let (mut buf, mut args, mut requests) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Parsed::Request { consumed } = parse(&buf, max, &mut args)? {
                if !args.is_empty() {
                    requests.push(copy(&buf, &args));
                }
                buf.drain(..consumed);
            }
        }
        Ok((requests, buf.len()))
    }

    /// [`drive`] with [`parse_resumable`], keeping the resume point with the buffer as the event
    /// loop does.
    fn drive_resumable(chunks: &[&[u8]], max: usize) -> Result<(Vec<Args>, usize), ProtocolError> {
        let (mut buf, mut args, mut requests) = (Vec::new(), Vec::new(), Vec::new());
        let mut resume = Resume::Fresh;
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Parsed::Request { consumed } =
                parse_resumable(&buf, max, &mut args, &mut resume)?
            {
                assert_eq!(resume, Resume::Fresh);
                if !args.is_empty() {
                    requests.push(copy(&buf, &args));
                }
                buf.drain(..consumed);
            }
        }
        Ok((requests, buf.len()))
    }

    #[test]
    fn resuming_checks_only_new_bytes() {
        let mut args = Vec::new();
        let mut resume = Resume::Fresh;
        let mut buf = b"*3\r\n$4\r\nECHO\r\n$2\r\nab\r\n$3\r\nx".to_vec();
        assert_eq!(
            parse_resumable(&buf, MAX, &mut args, &mut resume),
            Ok(Parsed::Incomplete)
        );
        assert_eq!(
            resume,
            Resume::Multibulk {
                pos: 22,
                remaining: 1
            }
        );
        buf.extend_from_slice(b"yz\r\n");
        let got = parse_resumable(&buf, MAX, &mut args, &mut resume);
        assert_eq!(
            got,
            Ok(Parsed::Request {
                consumed: buf.len()
            })
        );
        assert_eq!(copy(&buf, &args), v(&["ECHO", "ab", "xyz"]));
        assert_eq!(resume, Resume::Fresh);

        let mut buf = b"ECHO abc".to_vec();
        assert_eq!(
            parse_resumable(&buf, 16, &mut args, &mut resume),
            Ok(Parsed::Incomplete)
        );
        assert_eq!(resume, Resume::Inline { scanned: 8 });
        buf.extend_from_slice(b"defghijkl");
        assert_eq!(
            parse_resumable(&buf, 16, &mut args, &mut resume),
            Ok(Parsed::Incomplete)
        );
        assert_eq!(resume, Resume::Inline { scanned: 17 });
        buf.push(b'm');
        assert_eq!(
            parse_resumable(&buf, 16, &mut args, &mut resume),
            Err(TooLarge { limit: 16 })
        );
        // A byte-at-a-time stream gives the same requests.
        let stream = b"*2\r\n$4\r\nECHO\r\n$5\r\na\nb\r\n\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n";
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(drive_resumable(&bytes, MAX), drive(&[stream], MAX));
    }

    #[test]
    fn inline() {
        assert_eq!(args_of(b"PING\r\n"), v(&["PING"]));
        assert_eq!(args_of(b"PING\n"), v(&["PING"]));
        assert_eq!(args_of(b"ECHO  hi\tyou \r\n"), v(&["ECHO", "hi", "you"]));
        assert_eq!(args_of(b"\t ping\t\n"), v(&["ping"]));
        assert_eq!(parse_one(b"PING", MAX), Ok(None));
        assert_eq!(parse_one(b"PING\r", MAX), Ok(None));
        // Blank lines are frames with nothing to answer.
        for blank in [&b"\r\n"[..], b"\n", b"  \t \r\n"] {
            assert_eq!(parse_one(blank, MAX), Ok(Some((blank.len(), vec![]))));
        }
    }

    #[test]
    fn inline_quotes() {
        let name = args_of(b"CLIENT SETNAME \"my app\"\r\n");
        assert_eq!(name, v(&["CLIENT", "SETNAME", "my app"]));
        assert_eq!(args_of(b"ECHO 'a \"b\" c'\n"), v(&["ECHO", "a \"b\" c"]));
        assert_eq!(args_of(b"ECHO \"\" ''\t\"x\"\n"), v(&["ECHO", "", "", "x"]));
        // No escape processing: the backslash stays.
        assert_eq!(args_of(b"ECHO \"a\\nb\"\n"), v(&["ECHO", "a\\nb"]));
        // A quote inside a bare word is an ordinary byte.
        assert_eq!(args_of(b"ECHO it's\n"), v(&["ECHO", "it's"]));
    }

    #[test]
    fn multibulk() {
        assert_eq!(args_of(b"*1\r\n$4\r\nPING\r\n"), v(&["PING"]));
        assert_eq!(args_of(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"), v(&["ECHO", ""]));
        for empty in [&b"*0\r\n"[..], b"*-1\r\n", b"*-0\r\n"] {
            assert_eq!(parse_one(empty, MAX), Ok(Some((empty.len(), vec![]))));
        }
        // Binary-safe: CR, LF, NUL and non-UTF-8 inside an argument.
        let binary = args_of(b"*2\r\n$4\r\nECHO\r\n$6\r\n\0\r\n\xff \0\r\n");
        assert_eq!(binary, vec![b"ECHO".to_vec(), b"\0\r\n\xff \0".to_vec()]);
        // Every strict prefix is incomplete.
        let full = b"*2\r\n$4\r\nECHO\r\n$3\r\nhey\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_one(&full[..cut], MAX), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_stream_is_the_same_at_every_split_point() {
        let stream: &[u8] = b"PING\r\n*2\r\n$4\r\nECHO\r\n$5\r\na\r\nb\0\r\n\n*0\r\nECHO 'x y'\n\
            *-1\r\n*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$0\r\n\r\n  \r\nQUIT\n";
        let want = vec![
            v(&["PING"]),
            vec![b"ECHO".to_vec(), b"a\r\nb\0".to_vec()],
            v(&["ECHO", "x y"]),
            v(&["CLIENT", "SETNAME", ""]),
            v(&["QUIT"]),
        ];
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let chunks = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(drive(&chunks, MAX), Ok((want.clone(), 0)), "split {i}/{j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(drive(&bytes, MAX), Ok((want, 0)));
        // One call handles one request and leaves the rest, even garbage, alone.
        assert_eq!(parse_one(b"PING\r\nX \"", MAX), Ok(Some((6, v(&["PING"])))));
    }

    #[test]
    fn size_limit() {
        // Inline: the limit is the line without its ending.
        assert_eq!(
            parse_one(b"ECHO 123\r\n", 8),
            Ok(Some((10, v(&["ECHO", "123"]))))
        );
        assert_eq!(
            parse_one(b"ECHO 123\n", 8),
            Ok(Some((9, v(&["ECHO", "123"]))))
        );
        // No newline: incomplete while a max-size line plus CRLF could still fit.
        assert_eq!(parse_one(b"ECHO 1234", 8), Ok(None));
        // Multibulk: the limit is the whole request, here 4 + 4 + 2 + 2 bytes.
        assert_eq!(
            parse_one(b"*1\r\n$2\r\nab\r\n", 12),
            Ok(Some((12, v(&["ab"]))))
        );
        assert_eq!(parse_one(b"*2\r\n$2\r\nab\r\n$123", 16), Ok(None));
        let cases: &[(&[u8], usize)] = &[
            (b"ECHO 1234\r\n", 8),
            (b"ECHO 1234\n", 8),
            (b"ECHO 12345", 8),
            (&[b'x'; 70_000], 65536),
            // Refused from the header, without waiting for the promised bytes.
            (b"*2147483647\r\n", 65536),
            (b"*9223372036854775807\r\n", 65536),
            (b"*1\r\n$9999999999\r\n", 65536),
            (b"*1\r\n$1234567890123456789\r\n", 65536),
            (b"*1\r\n$3\r\n", 12),
            (b"*3\r\n", 20),
            (b"*0\r\n", 3),
            // A half-read header that already runs past the limit.
            (b"*2\r\n$2\r\nab\r\n$1234", 16),
        ];
        for &(input, limit) in cases {
            let got = parse_one(input, limit);
            assert_eq!(got, Err(TooLarge { limit }), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn the_limit_decides_before_bytes_beyond_it() {
        // An unfinished header straddles the limit: the outcome must not depend on whether
        // the bytes after it (here an invalid one) arrived in the same read.
        let mut stream = b"*2\r\n$50\r\n".to_vec();
        stream.extend_from_slice(&[b'a'; 50]);
        stream.extend_from_slice(b"\r\n$123x\r\n");
        let at_limit = 65; // ends inside "$123", one byte past max = 64
        let whole = drive(&[&stream], 64);
        let split = drive(&[&stream[..at_limit], &stream[at_limit..]], 64);
        assert_eq!(whole, Err(TooLarge { limit: 64 }));
        assert_eq!(split, whole);
        // With room for it, the invalid header is what is reported.
        assert_eq!(drive(&[&stream], 128), Err(InvalidBulkLength));
    }

    #[test]
    fn malformed() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", InvalidMultibulkLength),
            (b"*\r\n", InvalidMultibulkLength),
            (b"*-\r\n", InvalidMultibulkLength),
            (b"*1x\r\n", InvalidMultibulkLength),
            (b"*1 \r\n", InvalidMultibulkLength),
            (b"*1\n", InvalidMultibulkLength),
            (b"*1\rX", InvalidMultibulkLength),
            (b"*+1\r\n", InvalidMultibulkLength),
            (b"*12345678901234567890", InvalidMultibulkLength), // 20 digits: no need for more
            (b"*9999999999999999999\r\n", InvalidMultibulkLength), // 19, overflows i64
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$abc\r\n", InvalidBulkLength),
            (b"*1\r\n$\r\n", InvalidBulkLength),
            (b"*1\r\n$3\n", InvalidBulkLength),
            (b"*1\r\n$12345678901234567890\r\n", InvalidBulkLength),
            (b"*1\r\n$-9223372036854775808\r\n", InvalidBulkLength),
            (b"*1\r\n+PING\r\n", ExpectedDollar(b'+')),
            (b"*2\r\n$1\r\na\r\n\0", ExpectedDollar(0)),
            // Bulk longer than declared: fails once the byte after the data is there.
            (b"*1\r\n$2\r\nabc", BulkNotTerminated),
            (b"*1\r\n$2\r\nab\rc", BulkNotTerminated),
            // Shorter: the next request's bytes end up where CRLF belongs.
            (b"*1\r\n$5\r\nab\r\n*1\r\n", BulkNotTerminated),
            (b"ECHO \"abc\r\n", UnbalancedQuotes),
            (b"ECHO 'abc\n", UnbalancedQuotes),
            (b"ECHO \"a\"b\n", UnbalancedQuotes),
            (b"ECHO 'a'\"b\"\n", UnbalancedQuotes),
            (b"ECHO \"a\\\"b\"\n", UnbalancedQuotes), // no escapes: `\"` closes the quote
        ];
        for (input, want) in cases {
            let got = parse_one(input, 65536);
            assert_eq!(got.as_ref(), Err(want), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn error_texts() {
        let cases = [
            (InvalidMultibulkLength, "invalid multibulk length"),
            (InvalidBulkLength, "invalid bulk length"),
            (ExpectedDollar(b'+'), "expected '$', got '+'"),
            (ExpectedDollar(0), "expected '$', got '\\x00'"),
            (BulkNotTerminated, "bulk string not terminated by CRLF"),
            (UnbalancedQuotes, "unbalanced quotes in request"),
            (
                TooLarge { limit: 65536 },
                "request exceeds max_request_bytes (65536)",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), format!("Protocol error: {text}"));
        }
    }

    #[test]
    fn args_are_cleared_unless_a_request_is_returned() {
        let mut args = vec![0..1, 2..3];
        let got = parse(b"*2\r\n$1\r\na\r\n", MAX, &mut args);
        assert_eq!((got, args.len()), (Ok(Parsed::Incomplete), 0));
        args.push(0..1);
        assert!(parse(b"*2\r\n$1\r\na\r\n$", MAX, &mut args).is_ok());
        assert!(args.is_empty());
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        write_simple(&mut out, "PONG");
        write_simple(&mut out, "a\r\nb");
        write_error(&mut out, "ERR unknown command 'x\ny'");
        write_bulk(&mut out, b"a\0\r\n");
        write_bulk(&mut out, b"");
        write_null(&mut out, Proto::Resp2);
        write_null(&mut out, Proto::Resp3);
        write_map_len(&mut out, 2, Proto::Resp3);
        write_map_len(&mut out, 2, Proto::Resp2);
        write_push_len(&mut out, 3, Proto::Resp3);
        for n in [0, 7, -42, i64::MAX, i64::MIN] {
            write_integer(&mut out, n);
        }
        write_array_len(&mut out, 0);
        write_array_len(&mut out, 1234);
        let want: &[u8] = b"+PONG\r\n+a  b\r\n-ERR unknown command 'x y'\r\n$4\r\na\0\r\n\r\n\
            $0\r\n\r\n$-1\r\n_\r\n%2\r\n*4\r\n>3\r\n:0\r\n:7\r\n:-42\r\n:9223372036854775807\r\n\
            :-9223372036854775808\r\n*0\r\n*1234\r\n";
        assert_eq!(
            out.escape_ascii().to_string(),
            want.escape_ascii().to_string()
        );
    }

    /// Bytes that look like protocol more often than uniform noise does.
    fn protocolish() -> impl Strategy<Value = Vec<u8>> {
        let tokens = b"*|$|\r\n|\n|\r|-|0|1|2|3|12|9999999999|\"|'| |\t|x|\0|*1\r\n|$3\r\n";
        let token = prop::sample::select(tokens.split(|&b| b == b'|').collect::<Vec<_>>());
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(token, 0..40).prop_map(|t| t.concat()),
        ]
    }

    /// A valid request, and whether to try the inline form and which line ending to use.
    type Frame = (Args, bool, bool, Option<u8>);

    fn frame() -> impl Strategy<Value = Frame> {
        let arg = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..12),
            "[a-z*'\" \t]{0,8}".prop_map(String::into_bytes),
        ];
        let args = prop::collection::vec(arg, 1..5);
        (args, any::<bool>(), any::<bool>(), prop::option::of(0u8..4))
    }

    /// The inline form, where these arguments have one (no escapes, so not always).
    fn encode_inline(args: &[Vec<u8>], crlf: bool) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        for (k, arg) in args.iter().enumerate() {
            if k > 0 {
                line.push(if k % 2 == 0 { b' ' } else { b'\t' });
            }
            let bare = arg
                .first()
                .is_some_and(|&b| b != b'"' && b != b'\'' && (k > 0 || b != b'*'))
                && !arg
                    .iter()
                    .any(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
            let quote = [b'"', b'\''].into_iter().find(|q| !arg.contains(q));
            if arg.contains(&b'\n') {
                return None;
            } else if bare {
                line.extend_from_slice(arg);
            } else {
                let q = quote?;
                line.push(q);
                line.extend_from_slice(arg);
                line.push(q);
            }
        }
        line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        Some(line)
    }

    fn encode_multibulk(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        write_array_len(&mut out, args.len());
        for arg in args {
            write_bulk(&mut out, arg);
        }
        out
    }

    proptest! {
        #[test]
        fn never_panics_and_ranges_stay_inside(buf in protocolish(), max in 0usize..300) {
            let mut args = Vec::new();
            if let Ok(Parsed::Request { consumed }) = parse(&buf, max, &mut args) {
                prop_assert!(consumed > 0 && consumed <= buf.len());
                for r in &args {
                    prop_assert!(r.start <= r.end && r.end <= consumed, "{r:?} / {consumed}");
                }
            } else {
                prop_assert!(args.is_empty());
            }
        }

        #[test]
        fn split_stream_yields_original_requests(
            frames in prop::collection::vec(frame(), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for (args, inline, crlf, empty_before) in frames {
                if let Some(e) = empty_before {
                    stream.extend_from_slice([&b"\r\n"[..], b" \t\n", b"*0\r\n", b"*-1\r\n"][usize::from(e)]);
                }
                let inline = if inline { encode_inline(&args, crlf) } else { None };
                stream.extend(inline.unwrap_or_else(|| encode_multibulk(&args)));
                want.push(args);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            prop_assert_eq!(drive(&chunks, 4096), Ok((want, 0)));
        }

        #[test]
        fn any_stream_split_anywhere_parses_as_in_one_piece(
            // Valid requests with junk after them, and a limit that falls near the end, so
            // that limits, junk and unfinished headers meet at the split points.
            (stream, max) in (
                prop::collection::vec(frame(), 0..4),
                protocolish(),
                0usize..48,
            ).prop_map(|(frames, junk, back)| {
                let mut stream: Vec<u8> =
                    frames.iter().flat_map(|f| encode_multibulk(&f.0)).collect();
                stream.extend_from_slice(&junk);
                // Config allows 64 and up; below that a header alone can exceed the limit.
                let max = stream.len().saturating_sub(back).max(64);
                (stream, max)
            }),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            // The same requests, then the same error or the same bytes left over.
            prop_assert_eq!(drive(&chunks, max), drive(&[&stream], max));
        }

        #[test]
        fn resuming_gives_what_parsing_from_scratch_gives(
            stream in prop_oneof![
                protocolish(),
                prop::collection::vec(frame(), 1..6).prop_map(|frames| {
                    frames.iter().flat_map(|f| encode_multibulk(&f.0)).collect()
                }),
            ],
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            max in 0usize..300,
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            prop_assert_eq!(drive_resumable(&chunks, max), drive(&chunks, max));
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(drive_resumable(&bytes, max), drive(&bytes, max));
        }

        #[test]
        fn incomplete_only_for_short_buffers(
            buf in prop_oneof![
                protocolish(),
                (prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..4),
                 any::<prop::sample::Index>())
                    .prop_map(|(args, cut)| {
                        let full = encode_multibulk(&args);
                        full[..cut.index(full.len() + 1)].to_vec()
                    }),
            ],
            max in 0usize..200,
        ) {
            let mut args = Vec::new();
            if parse(&buf, max, &mut args) == Ok(Parsed::Incomplete) {
                // The documented bound; it implies the required `max + 64`.
                prop_assert!(buf.len() <= max + 1, "{} bytes, max {}", buf.len(), max);
            }
        }
    }
}
