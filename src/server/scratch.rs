//! The loop's scratch buffers, shared by every session in turn: reads land in `read`, the
//! replies of the current batch are built in `out`, and the argument ranges of the request
//! being run go in `args`. A session holds none of them between requests (only what the
//! kernel refused, or an unfinished request, is copied into it), so an idle session holds no
//! buffer and a fast client costs no allocation per request.
//!
//! After a spike (a batch of large replies, a request with thousands of arguments) the buffers
//! return to their usual size instead of keeping the largest batch ever built: the output
//! buffer is replaced by a 64 KiB one once it grew past 256 KiB, the argument list past 1024
//! ranges.

use std::ops::Range;

/// Bytes read per `read` call, into [`Scratch::read`].
pub(super) const READ_BUF_BYTES: usize = 64 * 1024;
/// Above this capacity the output buffer is given back after a batch (a spike of replies, up
/// to `max_output_bytes` and one reply); below it the capacity is kept, so the common batch
/// allocates nothing.
const OUT_BUF_KEEP_BYTES: usize = 4 * READ_BUF_BYTES;
/// Above this many argument ranges (16 bytes each) the argument list is given back.
const ARGS_KEEP: usize = 1024;

/// The loop's scratch buffers (see the module docs).
#[derive(Debug)]
pub(super) struct Scratch {
    /// Reads land here; only unfinished requests are copied into a session.
    pub(super) read: Vec<u8>,
    /// Replies of the current request batch; only what the kernel refuses is copied.
    pub(super) out: Vec<u8>,
    /// Argument ranges of the request being executed.
    pub(super) args: Vec<Range<usize>>,
    /// TLS: a read's plaintext, before it is moved to the front of `read`.
    pub(super) plain: Vec<u8>,
    /// TLS: ciphertext to send (replies encrypted, handshake flights).
    pub(super) wire: Vec<u8>,
}

impl Scratch {
    pub(super) fn new() -> Scratch {
        Scratch {
            read: vec![0; READ_BUF_BYTES],
            out: Vec::with_capacity(READ_BUF_BYTES),
            args: Vec::with_capacity(16),
            plain: Vec::new(),
            wire: Vec::new(),
        }
    }

    /// After a batch was sent or queued: empties the output buffer, and gives back what a
    /// spike grew (see the module docs).
    pub(super) fn batch_done(&mut self) {
        self.out.clear();
        if self.out.capacity() > OUT_BUF_KEEP_BYTES {
            self.out = Vec::with_capacity(READ_BUF_BYTES);
        }
        if self.wire.capacity() > OUT_BUF_KEEP_BYTES {
            self.wire = Vec::new();
        }
        if self.args.capacity() > ARGS_KEEP {
            self.args = Vec::with_capacity(16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_is_given_back_and_the_usual_size_kept() {
        let mut s = Scratch::new();
        s.out.extend_from_slice(&[0; 1000]);
        s.batch_done();
        assert!(s.out.is_empty());
        assert_eq!(
            s.out.capacity(),
            READ_BUF_BYTES,
            "the usual batch allocates nothing"
        );
        s.out.reserve(OUT_BUF_KEEP_BYTES + 1);
        s.args.reserve(ARGS_KEEP + 1);
        s.batch_done();
        assert_eq!((s.out.capacity(), s.args.capacity()), (READ_BUF_BYTES, 16));
    }
}
