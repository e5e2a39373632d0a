//! Human-written durations for the config file: `"500ms"`, `"10s"`, `"2m"`, `"1h"`, compounds
//! such as `"1m30s"`, or an integer meaning whole seconds.
//!
//! Invariants: every duration this module accepts is a whole number of milliseconds no larger
//! than `u64::MAX` ms, so `Instant + d` cannot overflow and [`format_duration`] prints it back
//! exactly. Days and larger units are left out on purpose: timeouts that long belong in a
//! number of hours, where nobody has to wonder about calendar days.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What to tell a person whose duration did not parse.
pub const ACCEPTED_FORMS: &str = "accepted forms: \"500ms\", \"10s\", \"2m\", \"1h\", \"1m30s\" \
     (units ms, s, m, h, largest first) or an integer for whole seconds";

/// Units from largest to smallest; a compound must use them in this order, each at most once.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses `"500ms"`, `"10s"`, `"2m"`, `"1h"` or a compound such as `"1h30m"` or `"1m30s500ms"`.
///
/// Surrounding whitespace is ignored. Negative, fractional and unit-less values are refused
/// with a message that says what to write instead.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    if text.starts_with('-') {
        return Err(format!(
            "{text:?} is negative; durations cannot be negative"
        ));
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    // Index into UNITS of the last unit used: later parts must use a strictly smaller unit.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?}: expected a number at {rest:?}"));
        }
        let (number, after) = rest.split_at(digits);
        if after.starts_with('.') {
            return Err(format!(
                "{text:?}: fractions are not accepted; use a smaller unit (\"1500ms\", \"1m30s\")"
            ));
        }
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "{text:?}: missing unit after {number}; add one of ms, s, m, h (\"{number}s\")"
            ));
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s, m or h"
            ));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(format!(
                "{text:?}: units must go from largest to smallest, each once (\"1h30m\", \"1m30s\")"
            ));
        }
        last_unit = Some(index);
        let too_large = || format!("{text:?} is too large");
        let value: u64 = number.parse().map_err(|_| too_large())?;
        let part = value.checked_mul(UNITS[index].1).ok_or_else(too_large)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_large)?;
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the form [`parse_duration`] reads back: largest units first, zero
/// parts left out (`"1m30s"`, `"500ms"`, `"1h1s"`), and `"0s"` for zero.
///
/// A sub-millisecond remainder cannot be written; it is rounded *up* to the next millisecond
/// so that a nonzero timeout never prints as `"0s"` (which means "off" in the config).
pub fn format_duration(d: Duration) -> String {
    let mut ms_part = u64::from(d.subsec_nanos()).div_ceil(1_000_000);
    let mut secs = d.as_secs();
    if ms_part == 1_000 {
        // Rounding up carried into the seconds; saturate rather than overflow at the very top.
        ms_part = 0;
        secs = secs.saturating_add(1);
    }
    if secs == 0 && ms_part == 0 {
        return "0s".to_owned();
    }
    let parts = [
        (secs / 3_600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (ms_part, "ms"),
    ];
    let mut out = String::new();
    for (value, unit) in parts {
        if value != 0 {
            out.push_str(&value.to_string());
            out.push_str(unit);
        }
    }
    out
}

/// A duration as written in the file, before it is checked: an integer is whole seconds, a
/// string is parsed by [`parse_duration`] (or, for keys that allow them, is a word such as
/// `"auto"`). Parsing is left to the config's second stage so its errors can name the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    /// The duration this value stands for, with the same limits as [`parse_duration`].
    pub fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(secs) => secs
                .checked_mul(1_000)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("{secs} seconds is too large")),
            DurationValue::Text(text) => parse_duration(text),
        }
    }
}

impl From<Duration> for DurationValue {
    fn from(d: Duration) -> Self {
        DurationValue::Text(format_duration(d))
    }
}

impl Serialize for DurationValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DurationValue::Seconds(secs) => serializer.serialize_u64(*secs),
            DurationValue::Text(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A hand-written visitor rather than `#[serde(untagged)]`: a wrong type then reads
        // "expected a duration such as ..." instead of "did not match any variant".
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10s\", \"500ms\", \"1m30s\" or whole seconds")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                u64::try_from(v)
                    .map(DurationValue::Seconds)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                Ok(DurationValue::Text(v.to_owned()))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_compounds_and_trims() {
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h1s"), Ok(ms(3_601_000)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_duration("  10s\t"), Ok(ms(10_000)));
        assert_eq!(parse_duration("90s"), Ok(ms(90_000)));
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("-5s", "negative"),
            ("10", "missing unit"),
            ("1.5s", "fractions"),
            ("1d", "unknown unit"),
            ("10S", "unknown unit"),
            ("10 s", "missing unit"),
            ("s", "expected a number"),
            ("30s1m", "largest to smallest"),
            ("1s1s", "largest to smallest"),
            ("+5s", "expected a number"),
            ("1m 30s", "expected a number"),
        ];
        for (input, needle) in cases {
            let err = parse_duration(input).expect_err(input);
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let max_ms = u64::MAX.to_string() + "ms";
        assert_eq!(parse_duration(&max_ms), Ok(ms(u64::MAX)));
        for input in [
            "18446744073709551616ms",
            "18446744073709552s",
            "5124095576030432h",
        ] {
            let err = parse_duration(input).expect_err(input);
            assert!(err.contains("too large"), "{input}: {err}");
        }
        let sum = format!("{}h{}ms", u64::MAX / 3_600_000, u64::MAX);
        assert!(parse_duration(&sum).is_err());
        assert!(DurationValue::Seconds(u64::MAX).to_duration().is_err());
    }

    #[test]
    fn formats_shortest_exact_form() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(ms(500)), "500ms");
        assert_eq!(format_duration(ms(90_000)), "1m30s");
        assert_eq!(format_duration(ms(60_000)), "1m");
        assert_eq!(format_duration(ms(3_601_000)), "1h1s");
        assert_eq!(format_duration(ms(60_500)), "1m500ms");
        assert_eq!(format_duration(ms(100 * 3_600_000)), "100h");
        assert_eq!(format_duration(ms(i32::MAX as u64)), "596h31m23s647ms");
    }

    #[test]
    fn format_rounds_sub_millisecond_up() {
        assert_eq!(format_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(format_duration(Duration::from_micros(1_500)), "2ms");
        assert_eq!(format_duration(Duration::from_nanos(999_999_999)), "1s");
        assert_eq!(
            format_duration(Duration::MAX),
            format_duration(Duration::MAX)
        );
    }

    #[test]
    fn round_trips() {
        let samples = [
            0,
            1,
            999,
            1_000,
            59_999,
            60_000,
            90_000,
            3_599_999,
            3_600_000,
            86_400_000,
            i32::MAX as u64,
            u64::MAX / 7,
            u64::MAX,
        ];
        for n in samples {
            let text = format_duration(ms(n));
            assert_eq!(parse_duration(&text), Ok(ms(n)), "{n} -> {text}");
        }
    }

    #[derive(Debug, Deserialize, Serialize)]
    struct Holder {
        d: DurationValue,
    }

    fn from_toml(text: &str) -> Result<Duration, String> {
        let holder: Holder = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        holder.d.to_duration()
    }

    #[test]
    fn serde_accepts_strings_and_integer_seconds() {
        assert_eq!(from_toml("d = \"1m30s\""), Ok(ms(90_000)));
        assert_eq!(from_toml("d = 30"), Ok(ms(30_000)));
        assert_eq!(from_toml("d = 0"), Ok(Duration::ZERO));
    }

    #[test]
    fn serde_rejects_wrong_types_and_negatives() {
        for input in ["d = true", "d = 1.5", "d = [1]", "d = -3"] {
            let err = from_toml(input).expect_err(input);
            assert!(err.contains("expected a duration"), "{input}: {err}");
        }
        assert!(from_toml("d = \"3x\"").is_err());
    }

    #[test]
    fn serde_writes_text_and_seconds() {
        let text = toml::to_string(&Holder {
            d: ms(90_000).into(),
        })
        .expect("serializes");
        assert_eq!(text.trim(), "d = \"1m30s\"");
        let holder = Holder {
            d: DurationValue::Seconds(5),
        };
        let text = toml::to_string(&holder).expect("serializes");
        assert_eq!(text.trim(), "d = 5");
    }
}
