//! The request parser: one RESP2 request (multibulk or inline) from the front of a buffer, and
//! [`parse_resumable`], which picks up where an unfinished request's previous parse stopped.
//! The contract the event loop relies on is in the module docs of [`super`].

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
    let Some(newline) = memchr::memchr(b'\n', &buf[..buf.len().min(window)]) else {
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
            let close = memchr::memchr(b, line.get(open..).unwrap_or_default())
                .map(|p| open + p)
                .ok_or(ProtocolError::UnbalancedQuotes)?;
            // `"a"b` is refused by redis-server too; accepting it would need a rewritten `ab`.
            if line.get(close + 1).is_some_and(|&c| !is_blank(c)) {
                return Err(ProtocolError::UnbalancedQuotes);
            }
            args.push(open..close);
            i = close + 1;
        } else {
            let end = memchr::memchr2(b' ', b'\t', line.get(i..).unwrap_or_default())
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
            let newline = buf
                .get(scanned..end)
                .is_some_and(|b| memchr::memchr(b'\n', b).is_some());
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
