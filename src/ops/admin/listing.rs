//! The `CLIENT LIST` line, and `CLIENT LIST` and `CLIENT LOOKUP` replies too large for one
//! loop turn, built in chunks as the admin connection's socket drains instead of as one buffer.
//!
//! A RESP2 bulk string states its length before its first byte, and the session table changes
//! between chunks, so a listing is made in three steps:
//!
//! 1. **Snapshot** (at the request, in its turn): the matching sessions' tokens, ids and
//!    names, sorted by id, with the request's `now` and presence sequence number. This fixes
//!    *which* sessions are listed and under *which name*: exactly those of presence sequence
//!    number N, as docs/presence.md's resync recipe needs.
//! 2. **Measure**: each line is rendered into one reused line buffer; its length and the
//!    `TCP_INFO` it showed are kept; at the end the header `$total\r\n` is written. With the
//!    snapshot that is at most 80 bytes per session (plus its name; a unit test keeps it so):
//!    800 KB for 10,000 sessions, against 3.9 MB for the reply itself.
//! 3. **Emit**: each line is rendered again from live data (same `now`, same name, same
//!    presence sequence number, same `TCP_INFO`) and written, as long as the connection's
//!    pending output is under its window (64 KiB, `OUTPUT_WINDOW_BYTES` in the caller).
//!
//! For a session table that does not change in between, step 3 renders what step 2 measured,
//! byte for byte, which is what the one-buffer reply was. When a line's live rendering has a
//! different length (a counter of a busy session gained a digit, the session left),
//! the fixed-width-safe rule makes it exactly the measured length while keeping it a valid
//! `key=value` line with `id`, `name` and `presence-seq`:
//!
//! - a session that left is listed as `id=N name=NAME state=gone presence-epoch=E
//!   presence-seq=S` (it was there at sequence number S; its `left` event comes after S);
//! - a line too long loses its last fields before `presence-epoch` (never `id` or `name`);
//! - a line too short gets ` pad=000…` before `presence-epoch`, or, for 1 to 4 bytes, leading
//!   zeros in its `idle` (else `id`) value, which every integer parser reads the same.
//!
//! Work is counted in lines (one unit per line rendered, in either step; the snapshot costs
//! one unit per 16 sessions) against a per-turn budget shared by all operator connections,
//! so a listing of 10,000 sessions takes about 80 turns and never holds the loop for long.

use std::time::Instant;

use mio::Token;

use crate::os::sys::{self, TcpInfo};
use crate::protocol::client_info;
use crate::session::{Session, SessionTable};

/// Where in the presence stream a listing stands: the process epoch and the sequence number
/// of the last event it reflects. Every line ends with ` presence-epoch=E presence-seq=S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub epoch: u64,
    pub seq: u64,
}

/// One `CLIENT LIST` line: the session's description and the presence position it reflects
/// (the same on every line: the listing is of the sessions at that number).
pub(super) fn list_line(session: &Session, now: Instant, seq: Stamp, text: &mut String) {
    let info = sys::tcp_info(&session.stream).ok();
    list_line_with(session, now, seq, info, text);
}

/// [`list_line`] with `TCP_INFO` as read earlier.
pub(super) fn list_line_with(
    session: &Session,
    now: Instant,
    seq: Stamp,
    info: Option<TcpInfo>,
    text: &mut String,
) {
    client_info::describe_with(session, now, info, text);
    text.push_str(" presence-epoch=");
    text.push_str(&seq.epoch.to_string());
    text.push_str(" presence-seq=");
    text.push_str(&seq.seq.to_string());
    text.push('\n');
}

/// One session of the snapshot.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    token: Token,
    id: u64,
    /// Its name at the snapshot (the listing shows that one, even after a rename).
    name: Option<Box<str>>,
    /// Its line's length, once measured.
    len: u32,
    /// `TCP_INFO` as read when measured, so both renderings show the same kernel figures.
    info: Option<TcpInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Measure,
    Emit,
    Done,
}

/// A listing in progress; see the module docs.
#[derive(Debug, PartialEq, Eq)]
pub struct Listing {
    entries: Vec<Entry>,
    now: Instant,
    seq: Stamp,
    step: Step,
    /// Next entry to measure or emit.
    next: usize,
    total: usize,
    /// One line, reused.
    line: Vec<u8>,
}

/// Snapshot entries cost one budget unit per this many sessions.
const SNAPSHOT_PER_UNIT: usize = 16;

impl Listing {
    /// Step 1: the snapshot of `sessions` (already filtered and in id order).
    pub(super) fn new<'a>(
        sessions: impl Iterator<Item = (Token, &'a Session)>,
        now: Instant,
        seq: Stamp,
    ) -> Listing {
        let entries = sessions
            .map(|(token, s)| Entry {
                token,
                id: s.id,
                name: s.name.clone(),
                len: 0,
                info: None,
            })
            .collect();
        Listing {
            entries,
            now,
            seq,
            step: Step::Measure,
            next: 0,
            total: 0,
            line: Vec::new(),
        }
    }

    /// Budget units the snapshot cost.
    pub fn snapshot_cost(&self) -> usize {
        self.entries.len() / SNAPSHOT_PER_UNIT + 1
    }

    /// Steps 2 and 3: does at most `*budget` lines of work (taking them off the budget), and
    /// appends to `out` while it holds fewer than `window` bytes. Returns true when the reply
    /// is complete.
    pub fn advance(
        &mut self,
        sessions: &SessionTable,
        budget: &mut usize,
        out: &mut Vec<u8>,
        pending: impl Fn(&Vec<u8>) -> usize,
        window: usize,
    ) -> bool {
        while *budget > 0 && self.step != Step::Done {
            match self.step {
                Step::Measure => {
                    let Some(entry) = self.entries.get_mut(self.next) else {
                        use std::io::Write as _;
                        let _ = write!(out, "${}\r\n", self.total);
                        self.step = Step::Emit;
                        self.next = 0;
                        continue;
                    };
                    entry.info = sessions
                        .get(entry.token)
                        .and_then(|s| sys::tcp_info(&s.stream).ok());
                    self.line.clear();
                    render(entry, sessions, self.now, self.seq, &mut self.line);
                    let len = u32::try_from(self.line.len()).unwrap_or(u32::MAX);
                    entry.len = len;
                    self.total += len as usize;
                    self.next += 1;
                    *budget -= 1;
                }
                Step::Emit => {
                    if pending(out) >= window {
                        return false;
                    }
                    let Some(entry) = self.entries.get(self.next) else {
                        out.extend_from_slice(b"\r\n");
                        self.step = Step::Done;
                        // The snapshot is no longer needed.
                        self.entries = Vec::new();
                        self.line = Vec::new();
                        continue;
                    };
                    self.line.clear();
                    render(entry, sessions, self.now, self.seq, &mut self.line);
                    fit(&mut self.line, entry.len as usize);
                    out.extend_from_slice(&self.line);
                    self.next += 1;
                    *budget -= 1;
                }
                Step::Done => {}
            }
        }
        self.step == Step::Done
    }
}

/// One entry's line: the live session's (under its snapshot name), or the `state=gone` line
/// of a session that has left.
fn render(entry: &Entry, sessions: &SessionTable, now: Instant, seq: Stamp, out: &mut Vec<u8>) {
    let name = entry.name.as_deref().unwrap_or("");
    match sessions.get(entry.token).filter(|s| s.id == entry.id) {
        Some(session) => {
            let mut text = String::with_capacity(512);
            list_line_with(session, now, seq, entry.info, &mut text);
            let live = session.name.as_deref().unwrap_or("");
            if live != name {
                rename_field(&mut text, live, name);
            }
            out.extend_from_slice(text.as_bytes());
        }
        None => {
            use std::io::Write as _;
            let _ = writeln!(
                out,
                "id={} name={name} state=gone presence-epoch={} presence-seq={}",
                entry.id, seq.epoch, seq.seq
            );
        }
    }
}

/// Replaces the ` name=LIVE ` field of a rendered line with ` name=SNAPSHOT `.
fn rename_field(text: &mut String, live: &str, snapshot: &str) {
    let field = format!(" name={live} ");
    if let Some(at) = text.find(&field) {
        text.replace_range(at..at + field.len(), &format!(" name={snapshot} "));
    }
}

const SEQ_FIELD: &[u8] = b" presence-seq=";
const EPOCH_FIELD: &[u8] = b" presence-epoch=";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Makes `line` (ending in `\n`) exactly `target` bytes; see the module docs for the rule.
fn fit(line: &mut Vec<u8>, target: usize) {
    if line.len() > target {
        // Too long: drop whole fields before the last (`presence-seq`), right to left, sparing
        // the first (`id`), `name` and `presence-epoch`.
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let mut fields: Vec<Option<&[u8]>> = body.split(|&b| b == b' ').map(Some).collect();
        let mut len = line.len();
        let mut j = fields.len().saturating_sub(1);
        while len > target && j > 1 {
            j -= 1;
            if let Some(f) = fields[j]
                .filter(|f| !f.starts_with(b"name=") && !f.starts_with(EPOCH_FIELD.trim_ascii()))
            {
                len -= f.len() + 1;
                fields[j] = None;
            }
        }
        let mut kept = Vec::with_capacity(len);
        for f in fields.into_iter().flatten() {
            if !kept.is_empty() {
                kept.push(b' ');
            }
            kept.extend_from_slice(f);
        }
        kept.push(b'\n');
        *line = kept;
    }
    if line.len() > target {
        // Only reachable if the measured line was shorter than its id, name and sequence
        // number, which it contains: cut to length and keep the line ending.
        line.truncate(target.saturating_sub(1));
        line.push(b'\n');
        return;
    }
    let short = target - line.len();
    if short == 0 {
        return;
    }
    if short >= 5 {
        let at = rfind(line, EPOCH_FIELD)
            .or_else(|| rfind(line, SEQ_FIELD))
            .unwrap_or(line.len() - 1);
        let mut pad = b" pad=".to_vec();
        pad.resize(short, b'0');
        line.splice(at..at, pad);
    } else {
        let at = find(line, b" idle=")
            .map(|p| p + 6)
            .or_else(|| line.starts_with(b"id=").then_some(3))
            .unwrap_or(0);
        line.splice(at..at, std::iter::repeat_n(b'0', short));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fitted(line: &str, target: usize) -> String {
        let mut v = line.as_bytes().to_vec();
        fit(&mut v, target);
        assert_eq!(
            v.len(),
            target,
            "{line:?} -> {:?}",
            String::from_utf8_lossy(&v)
        );
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn fit_keeps_equal_lines_and_pads_or_cuts_the_others() {
        let line = "id=7 addr=a name=x age=1 idle=2 tot-cmds=9 state=ok presence-seq=3\n";
        assert_eq!(fitted(line, line.len()), line);
        assert_eq!(
            fitted(line, line.len() + 2),
            "id=7 addr=a name=x age=1 idle=002 tot-cmds=9 state=ok presence-seq=3\n"
        );
        assert_eq!(
            fitted(line, line.len() + 8),
            "id=7 addr=a name=x age=1 idle=2 tot-cmds=9 state=ok pad=000 presence-seq=3\n"
        );
        // Two bytes too long: `state=ok` goes, and 7 bytes of padding make up the rest.
        assert_eq!(
            fitted(line, line.len() - 2),
            "id=7 addr=a name=x age=1 idle=2 tot-cmds=9 pad=00 presence-seq=3\n"
        );
        // Far too long: everything but id and name goes.
        let cut = fitted(line, "id=7 name=x presence-seq=3\n".len());
        assert_eq!(cut, "id=7 name=x presence-seq=3\n");
        let cut = fitted(line, "id=7 name=x presence-seq=3\n".len() + 1);
        assert_eq!(cut, "id=07 name=x presence-seq=3\n");
    }

    #[test]
    fn a_snapshot_entry_stays_small() {
        // The docs' bound: about 80 bytes per listed session (plus its name).
        assert!(
            std::mem::size_of::<Entry>() <= 80,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn renamed_fields_show_the_snapshot_name() {
        let mut t = "id=1 addr=a laddr=b fd=3 name=new age=0 idle=0\n".to_string();
        rename_field(&mut t, "new", "old");
        assert_eq!(t, "id=1 addr=a laddr=b fd=3 name=old age=0 idle=0\n");
        let mut t = "id=1 addr=a laddr=b fd=3 name= age=0\n".to_string();
        rename_field(&mut t, "", "n");
        assert_eq!(t, "id=1 addr=a laddr=b fd=3 name=n age=0\n");
    }
}
