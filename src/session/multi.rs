//! A session's open transaction: what `MULTI` started and `EXEC` or `DISCARD` ends. The data
//! lives with the session that owns it (in its rarely-used `Extras`); the rules of queueing and
//! running it are the protocol's (src/protocol/transaction.rs).

/// An open transaction: the requests queued since `MULTI`.
#[derive(Debug, Default)]
pub struct Transaction {
    /// The queued requests, re-encoded as RESP multibulk.
    pub(crate) queued: Vec<u8>,
    pub(crate) count: usize,
    /// A command was refused while queueing: `EXEC` aborts.
    pub(crate) dirty: bool,
}

impl Transaction {
    /// Commands queued so far (`CLIENT LIST`'s `multi=`).
    pub fn queued(&self) -> usize {
        self.count
    }

    /// Heap bytes the queue holds (`multi-mem=`).
    pub fn memory(&self) -> usize {
        self.queued.capacity()
    }
}
