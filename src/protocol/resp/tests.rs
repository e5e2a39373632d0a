//! Unit tests and proptests for the parser and encoders: every split of a stream parses the
//! same, the limit decides before later bytes, encoded frames parse back to their arguments.

use super::ProtocolError::*;
use super::*;
use proptest::prelude::*;
use std::ops::Range;

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
        while let Parsed::Request { consumed } = parse_resumable(&buf, max, &mut args, &mut resume)?
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
