//! Keeping floods out of the log. [`RateLimited`]: a warning logged at most once per period,
//! with the count of occurrences it stands for (descriptor exhaustion, connection limits,
//! accept errors, failed authentication). [`LogBudget`]: the one budget, owned by the event
//! loop, for every line a client can cause (reaps, renames, name takeovers, failed passwords,
//! connects): at most `log.bytes_per_second` bytes of them a second, and of reap lines at most
//! `log.reap_lines_per_second`; the lines left out are counted by kind and reported in one line
//! a second. Write such lines with [`budgeted!`].
//!
//! Both budgets count in fixed one-second windows, a window opening with the first line after
//! the previous one ended. A line is admitted while the window has bytes left and charged what
//! it wrote, so a window writes at most `bytes_per_second` plus one line; any `T` seconds
//! touch at most `T + 2` windows (one may have opened just before), so they get at most
//! `(T + 2) × (bytes_per_second + longest line)`. Lines are short by construction: client
//! strings in them go through `logging::clipped` (at most 256 bytes each).
//!
//! Time is a parameter: the caller passes the loop's `now`.

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use log::Level;

use crate::session::reap::ReapReason;

/// At most one line of each kind per this period.
pub const WARN_EVERY: Duration = Duration::from_secs(1);

/// Occurrences of one kind of event, and when a line about them was last logged.
#[derive(Debug, Default)]
pub struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// Records one occurrence. `Some(n)` when a line should be logged now, `n` being the
    /// occurrences it covers (this one and those suppressed since the last line).
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.suppressed += 1;
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// What a line a client can cause is about; lines left out are counted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A reap line: also under `log.reap_lines_per_second`.
    Reap(ReapReason),
    /// `named id=...` (debug): a session changed its name.
    Rename,
    /// `session ... takes the name ...: reaping its holder` (`session.unique_names`).
    Takeover,
    /// `auth failed ...`, and other lines about passwords and who may try them.
    Auth,
    /// `accepted id=...` and `refused <peer>: ...` (debug).
    Connect,
}

impl LineKind {
    /// The kinds besides reap lines, in the order the report lists them.
    const OTHERS: [LineKind; 4] = [
        LineKind::Rename,
        LineKind::Takeover,
        LineKind::Auth,
        LineKind::Connect,
    ];

    /// Index into the left-out counts: reap reasons first, then [`LineKind::OTHERS`].
    fn key(self) -> usize {
        let others = ReapReason::ALL.len();
        match self {
            LineKind::Reap(r) => r.index(),
            LineKind::Rename => others,
            LineKind::Takeover => others + 1,
            LineKind::Auth => others + 2,
            LineKind::Connect => others + 3,
        }
    }

    fn count() -> usize {
        ReapReason::ALL.len() + LineKind::OTHERS.len()
    }

    fn all() -> impl Iterator<Item = LineKind> {
        ReapReason::ALL
            .into_iter()
            .map(LineKind::Reap)
            .chain(LineKind::OTHERS)
    }
}

impl fmt::Display for LineKind {
    /// The key of its count in the report: `reap.<reason>`, `rename`, `takeover`, `auth`,
    /// `connect`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineKind::Reap(r) => write!(f, "reap.{r}"),
            LineKind::Rename => f.write_str("rename"),
            LineKind::Takeover => f.write_str("takeover"),
            LineKind::Auth => f.write_str("auth"),
            LineKind::Connect => f.write_str("connect"),
        }
    }
}

/// What a line costs besides its message: env_logger's `2026-12-01T07:46:42.123Z INFO  `
/// prefix and the newline (journald's `<6>INFO  ` is shorter).
pub const LINE_OVERHEAD: usize = 32;

/// The scratch buffer a line is formatted in keeps at most this capacity between lines.
const SCRATCH_KEEP: usize = 4096;

/// The loop's budget for client-caused lines; see the module doc.
///
/// Why lines and bytes: a flood of resets costs a line per connection, and in a debug build
/// logging was two thirds of the daemon's work per reset (100,000 connect-RST cycles: 4.5 s of
/// CPU with a line each, 1.5 s without), enough to delay other clients' replies by 45-70 ms on
/// two cores. Counting lines alone let long lines through: rename churn with 60 KB names wrote
/// 72 MB of log in 3 s, and name takeovers with `unique_names` 688 MB in 4 s. A line left out
/// is not even formatted.
#[derive(Debug)]
pub struct LogBudget {
    /// `log.reap_lines_per_second` and `log.bytes_per_second`, 0 = no limit.
    reap_lines_per_second: u64,
    bytes_per_second: u64,
    window: Option<Instant>,
    reap_lines: u64,
    bytes: u64,
    left_out: Vec<u64>,
    last_report: Option<Instant>,
    /// Where an admitted line is formatted, to learn its length.
    scratch: String,
}

impl LogBudget {
    /// A budget of `reap_lines_per_second` reap lines and `bytes_per_second` bytes of lines
    /// (0 = no limit, for either).
    pub fn new(reap_lines_per_second: u64, bytes_per_second: u64) -> LogBudget {
        LogBudget {
            reap_lines_per_second,
            bytes_per_second,
            window: None,
            reap_lines: 0,
            bytes: 0,
            left_out: vec![0; LineKind::count()],
            last_report: None,
            scratch: String::new(),
        }
    }

    /// Changes the limits (a reload); what was counted so far is still reported.
    pub fn set_limits(&mut self, reap_lines_per_second: u64, bytes_per_second: u64) {
        self.reap_lines_per_second = reap_lines_per_second;
        self.bytes_per_second = bytes_per_second;
    }

    /// Whether a line of `kind` may be written now; if not, it is counted as left out. An
    /// admitted line must then be [`charge`](LogBudget::charge)d what it wrote.
    pub fn admit(&mut self, kind: LineKind, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= WARN_EVERY)
        {
            self.window = Some(now);
            self.reap_lines = 0;
            self.bytes = 0;
        }
        let is_reap = matches!(kind, LineKind::Reap(_));
        let lines_left = !is_reap
            || self.reap_lines_per_second == 0
            || self.reap_lines < self.reap_lines_per_second;
        let bytes_left = self.bytes_per_second == 0 || self.bytes < self.bytes_per_second;
        if lines_left && bytes_left {
            self.reap_lines += u64::from(is_reap);
            return true;
        }
        if let Some(n) = self.left_out.get_mut(kind.key()) {
            *n += 1;
        }
        false
    }

    /// Charges an admitted line's `bytes` (its message; the prefix is added here).
    pub fn charge(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add((bytes + LINE_OVERHEAD) as u64);
    }

    /// Logs `args` at `level` (as if from `target`) if the level is enabled and the budget
    /// admits a line of `kind`; returns whether it was written. A line filtered out by the
    /// level costs nothing and is not counted. Use it through [`budgeted!`].
    pub fn write(
        &mut self,
        target: &str,
        level: Level,
        kind: LineKind,
        now: Instant,
        args: fmt::Arguments<'_>,
    ) -> bool {
        if !log::log_enabled!(target: target, level) || !self.admit(kind, now) {
            return false;
        }
        self.scratch.clear();
        let _ = self.scratch.write_fmt(args);
        log::log!(target: target, level, "{}", self.scratch);
        self.charge(self.scratch.len());
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = String::new();
        }
        true
    }

    /// When a report of left-out lines is due (none is pending: `None`).
    pub fn report_due(&self) -> Option<Instant> {
        if self.left_out.iter().all(|&n| n == 0) {
            return None;
        }
        let first = self.window.unwrap_or_else(Instant::now);
        Some(self.last_report.map_or(first, |t| t + WARN_EVERY))
    }

    /// The counts of left-out lines by kind (non-zero ones), once their report is due.
    pub fn take_report(&mut self, now: Instant) -> Option<Vec<(LineKind, u64)>> {
        if self.report_due().is_none_or(|due| due > now) {
            return None;
        }
        self.last_report = Some(now);
        let counts = LineKind::all()
            .filter_map(|kind| {
                let n = self.left_out.get_mut(kind.key())?;
                (*n > 0).then(|| (kind, std::mem::take(n)))
            })
            .collect();
        Some(counts)
    }

    /// Logs the left-out lines by kind, at most once a second, in one warning:
    /// `log lines left out: 98160 over the log budget (log.reap_lines_per_second=1000
    /// log.bytes_per_second=524288); reap lines left out: 98000; reap.reset=98000 rename=160
    /// (the statistics count every reap)`.
    pub fn report_left_out(&mut self, now: Instant) {
        let (reap_lines, bytes) = (self.reap_lines_per_second, self.bytes_per_second);
        let Some(counts) = self.take_report(now) else {
            return;
        };
        if let Some(line) = report_line(&counts, reap_lines, bytes) {
            log::warn!("{line}");
        }
    }
}

/// The report's text, or `None` when nothing was left out.
fn report_line(counts: &[(LineKind, u64)], reap_lines: u64, bytes: u64) -> Option<String> {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let reaps: u64 = counts
        .iter()
        .filter(|(k, _)| matches!(k, LineKind::Reap(_)))
        .map(|(_, n)| n)
        .sum();
    let mut line = format!(
        "log lines left out: {total} over the log budget (log.reap_lines_per_second={reap_lines} \
         log.bytes_per_second={bytes}); reap lines left out: {reaps};"
    );
    for (kind, n) in counts {
        let _ = write!(line, " {kind}={n}");
    }
    line.push_str(" (the statistics count every reap)");
    Some(line)
}

/// Logs a line a client can cause through the loop's [`LogBudget`], with the calling module
/// as its target: `budgeted!(self.log_budget, LineKind::Rename, Level::Debug, now, "named
/// id={id}")`. Evaluates to whether the line was written. Client strings in it go through
/// `logging::clipped`.
macro_rules! budgeted {
    ($budget:expr, $kind:expr, $level:expr, $now:expr, $($arg:tt)+) => {
        $budget.write(module_path!(), $level, $kind, $now, format_args!($($arg)+))
    };
}
pub(crate) use budgeted;

#[cfg(test)]
mod tests {
    use super::*;

    const RESET: LineKind = LineKind::Reap(ReapReason::Reset);
    const CLOSED: LineKind = LineKind::Reap(ReapReason::Closed);

    /// Admits and charges a line of `bytes` (as `write` does), returning whether it was in.
    fn line(b: &mut LogBudget, kind: LineKind, bytes: usize, now: Instant) -> bool {
        let ok = b.admit(kind, now);
        if ok {
            b.charge(bytes);
        }
        ok
    }

    #[test]
    fn reap_lines_are_counted_by_reason_and_reported_once_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = LogBudget::new(2, 0);
        assert!(line(&mut b, RESET, 100, t0) && line(&mut b, CLOSED, 100, ms(1)));
        assert_eq!(b.report_due(), None);
        assert!(!b.admit(CLOSED, ms(2)) && !b.admit(RESET, ms(3)) && !b.admit(CLOSED, ms(4)));
        // The reap-line limit does not hold back other kinds.
        assert!(line(&mut b, LineKind::Rename, 100, ms(4)));
        // The first report is due at once; later ones a second after the previous one.
        assert_eq!(b.take_report(ms(5)), Some(vec![(CLOSED, 2), (RESET, 1)]));
        assert_eq!(b.take_report(ms(6)), None);
        assert!(!b.admit(RESET, ms(500)));
        assert_eq!(b.report_due(), Some(ms(1005)));
        assert_eq!(b.take_report(ms(1000)), None);
        // A new window: lines are written again.
        assert!(line(&mut b, CLOSED, 100, ms(1001)));
        assert_eq!(b.take_report(ms(1005)), Some(vec![(RESET, 1)]));
        assert_eq!(b.report_due(), None);
    }

    #[test]
    fn the_byte_budget_covers_every_kind_and_overshoots_by_one_line_at_most() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = LogBudget::new(0, 1000);
        let each = 300 - LINE_OVERHEAD;
        // 300, 600, 900 charged: the fourth line still finds bytes left, the fifth does not.
        for (i, kind) in [LineKind::Rename, LineKind::Takeover, RESET, LineKind::Auth]
            .into_iter()
            .enumerate()
        {
            assert!(line(&mut b, kind, each, ms(i as u64)), "{kind}");
        }
        assert_eq!(b.bytes, 1200, "one line past the budget at most");
        for kind in [LineKind::Rename, RESET, LineKind::Connect, LineKind::Rename] {
            assert!(!line(&mut b, kind, each, ms(10)), "{kind}");
        }
        let report = b.take_report(ms(11)).unwrap();
        assert_eq!(
            report,
            vec![(RESET, 1), (LineKind::Rename, 2), (LineKind::Connect, 1)]
        );
        assert_eq!(
            report_line(&report, 0, 1000).unwrap(),
            "log lines left out: 4 over the log budget (log.reap_lines_per_second=0 \
             log.bytes_per_second=1000); reap lines left out: 1; reap.reset=1 rename=2 \
             connect=1 (the statistics count every reap)"
        );
        // The next window starts with the whole budget.
        assert!(line(&mut b, LineKind::Rename, each, ms(1000)));
        assert_eq!(b.bytes, 300);
        // A reload lowers it; the count left so far is still reported.
        b.set_limits(0, 300);
        assert!(!b.admit(LineKind::Auth, ms(1001)));
        assert_eq!(b.take_report(ms(1011)), Some(vec![(LineKind::Auth, 1)]));
        assert_eq!(report_line(&[], 0, 0), None);
    }

    #[test]
    fn no_limits_admit_everything() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(0, 0);
        for _ in 0..10_000 {
            assert!(line(&mut b, RESET, 10_000, t0));
        }
        assert_eq!(b.report_due(), None);
    }

    #[test]
    fn write_skips_lines_below_the_level_without_counting_them() {
        // No logger is installed in unit tests: the max level is Off, so nothing is enabled.
        let mut b = LogBudget::new(1, 1000);
        let now = Instant::now();
        assert!(!budgeted!(b, RESET, Level::Error, now, "reap id={}", 1));
        assert_eq!(b.report_due(), None, "filtered by level: not left out");
        assert!(b.admit(RESET, now), "and the budget was not used");
    }

    #[test]
    fn counts_what_it_suppressed() {
        let t0 = Instant::now();
        let mut r = RateLimited::default();
        assert_eq!(r.hit(t0), Some(1));
        assert_eq!(r.hit(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.hit(t0 + Duration::from_millis(500)), None);
        assert_eq!(r.hit(t0 + Duration::from_millis(1001)), Some(3));
        assert_eq!(r.hit(t0 + Duration::from_millis(1002)), None);
    }
}
