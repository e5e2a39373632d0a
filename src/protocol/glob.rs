//! Redis-style glob patterns, as `CONFIG GET` takes them: `*` (any run), `?` (one byte),
//! `[abc]`, `[a-z]`, `[^a]` (a class, `^` negates), and `\x` (a literal `x`). Matching is
//! ASCII case-insensitive, like `CONFIG GET`.
//!
//! The matcher backtracks only to the most recent `*`, which is enough for globs (a later star
//! can always absorb what an earlier one would have), so the cost is at most pattern × text,
//! whatever the pattern: an operator's typo cannot stall the event loop.

/// Whether `text` matches `pattern` in full.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern just past it, and the text position it
    // has absorbed up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(_) => {
                if let Some(next) = match_one(pattern, p, text[t]) {
                    p = next;
                    t += 1;
                    continue;
                }
            }
            None => {}
        }
        // Mismatch: let the last star take one more byte, or fail.
        match star {
            Some((after, absorbed)) => {
                p = after;
                t = absorbed + 1;
                star = Some((after, absorbed + 1));
            }
            None => return false,
        }
    }
    // The text is used up: what is left of the pattern must be stars only.
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

/// Matches one pattern element at `p` against byte `c`; returns the position after the
/// element, or `None` on a mismatch. `*` is handled by the caller.
fn match_one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let c = c.to_ascii_lowercase();
    match pattern.get(p)? {
        b'?' => Some(p + 1),
        b'[' => match_class(pattern, p + 1, c),
        // A trailing backslash stands for itself, as in Redis.
        b'\\' if p + 1 < pattern.len() => {
            (pattern[p + 1].to_ascii_lowercase() == c).then_some(p + 2)
        }
        &b => (b.to_ascii_lowercase() == c).then_some(p + 1),
    }
}

/// Matches a `[...]` class whose body starts at `p`. An unclosed class runs to the end of the
/// pattern (Redis does the same).
fn match_class(pattern: &[u8], mut p: usize, c: u8) -> Option<usize> {
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut hit = false;
    while let Some(&b) = pattern.get(p) {
        if b == b']' {
            p += 1;
            break;
        }
        if b == b'\\' && p + 1 < pattern.len() {
            hit |= pattern[p + 1].to_ascii_lowercase() == c;
            p += 2;
        } else if pattern.get(p + 1) == Some(&b'-') && p + 2 < pattern.len() {
            let (mut lo, mut hi) = (b.to_ascii_lowercase(), pattern[p + 2].to_ascii_lowercase());
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            hit |= (lo..=hi).contains(&c);
            p += 3;
        } else {
            hit |= b.to_ascii_lowercase() == c;
            p += 1;
        }
    }
    (hit != negate).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, t: &str) -> bool {
        matches(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", ""));
        assert!(m("*", "keepalive.idle"));
        assert!(m("keepalive.*", "keepalive.idle"));
        assert!(!m("keepalive.*", "server.listen"));
        assert!(m("*idle*", "session.idle_timeout"));
        assert!(m("*.idle", "keepalive.idle"));
        assert!(!m("*.idle", "keepalive.idle_x"));
        assert!(m("k?epalive.idle", "keepalive.idle"));
        assert!(!m("?", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**a**", "a"));
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn classes_escapes_and_case() {
        assert!(m("[ks]*", "keepalive.idle"));
        assert!(m("[ks]*", "server.listen"));
        assert!(!m("[ks]*", "log.level"));
        assert!(m("[^ks]*", "log.level"));
        assert!(m("[a-m]*", "log.level"));
        assert!(m("[m-a]*", "log.level"), "reversed ranges work as in Redis");
        assert!(!m("[n-z]*", "log.level"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "aXb"));
        assert!(m("[\\]]", "]"));
        assert!(m("KEEPALIVE.*", "keepalive.idle"));
        assert!(m("[A-Z]", "q"));
        assert!(m("x\\", "x\\"), "a trailing backslash is literal");
        assert!(m("[abc", "b"), "an unclosed class runs to the end");
    }

    proptest! {
        /// Never panics, and a literal pattern (no metacharacters) matches only itself.
        #[test]
        fn literal_patterns_match_themselves(text in "[a-z._]{0,20}", other in "[a-z._]{0,20}") {
            prop_assert!(matches(text.as_bytes(), text.as_bytes()));
            prop_assert_eq!(matches(text.as_bytes(), other.as_bytes()), text == other);
        }

        #[test]
        fn arbitrary_bytes_do_not_panic(p in proptest::collection::vec(any::<u8>(), 0..40),
                                        t in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = matches(&p, &t);
            prop_assert!(matches(b"*", &t));
        }
    }
}
