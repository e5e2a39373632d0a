//! Fuzzes the RESP request parser with the properties the event loop relies on:
//! - `parse` never panics, and a returned request's argument ranges lie inside what it consumed;
//! - `Incomplete` is only returned while the buffer holds at most `max_request_bytes + 1` bytes;
//! - feeding the same bytes in two pieces, split where the input says, yields the same requests
//!   and the same error (or none) as feeding them in one piece;
//! - `parse_resumable`, as the event loop uses it (resume point kept between reads), gives what
//!   `parse` gives, for the two pieces and for the stream fed a byte at a time.
//!
//! The first two bytes choose `max_request_bytes` (64 + n, small so limits are reached) and the
//! split point; the rest is the stream.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use vigild::protocol::resp::{parse, parse_resumable, Parsed, ProtocolError, Resume};

type Requests = Vec<Vec<Vec<u8>>>;

/// Feeds `chunks` the way the event loop does: append, parse until `Incomplete`, drop what was
/// consumed. Checks the per-call invariants on the way.
fn drive(
    chunks: &[&[u8]],
    max: usize,
    resumable: bool,
) -> (Requests, Result<usize, ProtocolError>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut args: Vec<Range<usize>> = Vec::new();
    let mut requests = Vec::new();
    let mut resume = Resume::Fresh;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let result = if resumable {
                parse_resumable(&buf, max, &mut args, &mut resume)
            } else {
                parse(&buf, max, &mut args)
            };
            match result {
                Ok(Parsed::Incomplete) => {
                    assert!(args.is_empty());
                    assert!(buf.len() <= max + 1, "Incomplete with {} bytes", buf.len());
                    break;
                }
                Ok(Parsed::Request { consumed }) => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    for r in &args {
                        assert!(r.start <= r.end && r.end <= consumed);
                    }
                    if !args.is_empty() {
                        requests.push(args.iter().map(|r| buf[r.clone()].to_vec()).collect());
                    }
                    buf.drain(..consumed);
                }
                Err(e) => {
                    assert!(args.is_empty());
                    return (requests, Err(e));
                }
            }
        }
    }
    (requests, Ok(buf.len()))
}

fuzz_target!(|data: &[u8]| {
    let [a, b, stream @ ..] = data else {
        return;
    };
    let max = 64 + usize::from(*a);
    let cut = usize::from(*b) * stream.len() / 255;
    let whole = drive(&[stream], max, false);
    let pieces = [&stream[..cut], &stream[cut..]];
    let split = drive(&pieces, max, false);
    assert_eq!(whole, split, "split at {cut}");
    assert_eq!(drive(&pieces, max, true), split, "resumed, split at {cut}");
    if stream.len() <= 512 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            drive(&bytes, max, true),
            drive(&bytes, max, false),
            "byte at a time"
        );
    }
});
