//! One request's words as the parser left them ([`Args`]: ranges into the loop's read
//! buffer, never copied), and the replies every command table gives about words that are
//! wrong: an unknown command, a wrong number of arguments, and [`printable`] for quoting a
//! client's bytes in an error line.

use std::ops::Range;

use crate::protocol::resp;

/// The arguments of one request: ranges into the read buffer.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    pub fn new(buf: &'a [u8], ranges: &'a [Range<usize>]) -> Args<'a> {
        Args { buf, ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i`, or an empty slice when it is missing (ranges come from the parser, which
    /// keeps them inside the buffer; `get` keeps that a non-panicking fact).
    pub fn get(&self, i: usize) -> &'a [u8] {
        self.ranges
            .get(i)
            .and_then(|r| self.buf.get(r.clone()))
            .unwrap_or(&[])
    }

    /// Whether argument `i` is `word`, ignoring ASCII case.
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }
}

/// A request's words laid out as the parser would hand them over: one buffer and the range of
/// each argument in it. For unit tests that build `Args` by hand.
#[cfg(test)]
pub(crate) fn test_words<W: AsRef<[u8]>>(words: &[W]) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut buf = Vec::new();
    let mut ranges = Vec::new();
    for w in words {
        let w = w.as_ref();
        ranges.push(buf.len()..buf.len() + w.len());
        buf.extend_from_slice(w);
    }
    (buf, ranges)
}

/// A byte string made safe for an error line: printable ASCII kept, the rest escaped, and cut
/// to 128 bytes.
pub(crate) fn printable(v: &[u8]) -> String {
    let mut s = String::new();
    for &b in v.iter().take(128) {
        if (b' '..=b'~').contains(&b) && b != b'\'' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

pub(crate) fn wrong_arity(out: &mut Vec<u8>, cmd: &str) {
    resp::write_error(
        out,
        &format!("ERR wrong number of arguments for '{cmd}' command"),
    );
}

pub(crate) fn unknown_command(args: Args<'_>, out: &mut Vec<u8>) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with:",
        printable(args.get(0))
    );
    for i in 1..args.len().min(4) {
        msg.push_str(&format!(" '{}'", printable(args.get(i))));
    }
    resp::write_error(out, &msg);
}
