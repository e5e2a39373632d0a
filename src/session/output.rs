//! An output buffer: bytes the peer has not taken yet, for client sessions and operator
//! connections alike.
//!
//! Bytes are appended at the end and written from a position; the buffer keeps what the kernel
//! refused. Invariants:
//! - the unsent bytes are `bytes[pos..]`, and `pos <= bytes.len()`;
//! - once everything is written the memory is freed (an idle peer holds no buffer);
//! - once more than half of it is written, the written half is dropped, so a peer that reads
//!   slowly costs at most twice its unsent bytes and each byte is moved at most once per
//!   halving.

use std::io::{self, Write};

use crate::session::reap::{classify, IoClass};

/// Bytes waiting for the peer (see the module docs).
#[derive(Debug, Default)]
pub struct Output {
    bytes: Vec<u8>,
    pos: usize,
}

impl Output {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Output {
        Output {
            bytes: Vec::new(),
            pos: 0,
        }
    }

    /// Bytes not written yet.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// The bytes not written yet.
    #[cfg(test)]
    pub fn unsent(&self) -> &[u8] {
        &self.bytes[self.pos..]
    }

    /// The memory held (`omem` in `CLIENT LIST`).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Appends `data` behind what waits.
    pub fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }

    /// Drops everything that waits (and the memory).
    #[cfg(test)]
    pub fn clear(&mut self) {
        *self = Output::new();
    }

    /// The buffer itself, for writers that append to a `Vec<u8>` (replies, frames, listings).
    /// Only append to it: the unsent bytes start at [`Output::start`], and bytes before it
    /// are already written.
    pub fn append(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Where the unsent bytes start in [`Output::append`]'s buffer: `append().len() - start()`
    /// is what is pending.
    pub fn start(&self) -> usize {
        self.pos
    }

    /// Writes the unsent bytes to `w` until done or `WouldBlock` (`Interrupted` is retried),
    /// adding each write to `written`, then frees or compacts the buffer (see the module
    /// docs). A write of zero bytes is `WriteZero`. On an error the bytes written before it
    /// stay consumed and the buffer is left as it is (its owner is closed).
    pub fn write_to(&mut self, w: &mut impl Write, written: &mut u64) -> io::Result<()> {
        let n = write_until_blocked(w, &self.bytes[self.pos..], written)?;
        self.pos += n;
        if self.pos == self.bytes.len() {
            self.bytes = Vec::new();
            self.pos = 0;
        } else if self.pos > self.bytes.len() / 2 {
            self.bytes.drain(..self.pos);
            self.pos = 0;
        }
        Ok(())
    }
}

/// Writes `data` to `w` until done or `WouldBlock` (`Interrupted` is retried), adding what was
/// written to `written`. Returns the bytes written; a write of zero bytes is `WriteZero`.
pub fn write_until_blocked(
    w: &mut impl Write,
    data: &[u8],
    written: &mut u64,
) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match w.write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                done += n;
                *written += n as u64;
            }
            Err(e) => match classify(&e) {
                IoClass::Retry => continue,
                IoClass::WouldBlock => break,
                IoClass::Exhausted(_) | IoClass::Fatal(_) => return Err(e),
            },
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `take` bytes per call, then says `WouldBlock`.
    struct Slow {
        got: Vec<u8>,
        take: usize,
        calls: usize,
    }

    impl Write for Slow {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.calls == 1 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls += 1;
            let n = data.len().min(self.take);
            self.got.extend_from_slice(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_short_write_keeps_the_rest_and_compacts_past_half() {
        let mut out = Output::new();
        out.push(b"0123456789");
        let mut w = Slow {
            got: Vec::new(),
            take: 4,
            calls: 0,
        };
        let mut written = 0;
        out.write_to(&mut w, &mut written).unwrap();
        assert_eq!(
            (out.pending(), out.start(), written),
            (6, 4, 4),
            "under half: kept"
        );
        w.calls = 0;
        out.write_to(&mut w, &mut written).unwrap();
        assert_eq!(
            (out.unsent(), out.start()),
            (&b"89"[..], 0),
            "past half: compacted"
        );
        w.calls = 0;
        out.write_to(&mut w, &mut written).unwrap();
        assert!(out.is_empty());
        assert_eq!((out.capacity(), written), (0, 10), "freed once written");
        assert_eq!(w.got, b"0123456789");
    }

    #[test]
    fn a_zero_write_is_an_error() {
        let mut out = Output::new();
        out.push(b"x");
        let mut written = 0;
        let e = out.write_to(&mut &mut [][..], &mut written).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        assert_eq!(out.pending(), 1);
        out.clear();
        assert_eq!((out.pending(), out.capacity()), (0, 0));
    }

    #[test]
    fn appending_writers_see_the_pending_bytes_from_start() {
        let mut out = Output::new();
        out.push(b"abcdef");
        let mut w = Slow {
            got: Vec::new(),
            take: 2,
            calls: 0,
        };
        out.write_to(&mut w, &mut 0).unwrap();
        out.append().extend_from_slice(b"gh");
        assert_eq!(out.append().len() - out.start(), out.pending());
        assert_eq!(out.unsent(), b"cdefgh");
    }
}
