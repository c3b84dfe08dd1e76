//! Timestamps of the runner's files: ISO-8601 text to Unix milliseconds.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// What a timestamp column held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timestamp {
    /// NULL or empty: 0, "not set".
    Unset,
    /// A time with a UTC offset (or `Z`).
    Utc(i64),
    /// A time without an offset, taken as UTC.
    Naive(i64),
    /// Text that is no ISO-8601 time; the field stays 0.
    Invalid,
}

impl Timestamp {
    /// Unix milliseconds, 0 for unset or invalid.
    pub fn ms(self) -> i64 {
        match self {
            Timestamp::Utc(ms) | Timestamp::Naive(ms) => ms,
            Timestamp::Unset | Timestamp::Invalid => 0,
        }
    }
}

const WITH_OFFSET: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
];
const WITHOUT_OFFSET: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// Parses ISO-8601 text: any UTC offset or `Z`, `T` or a space between date
/// and time, with or without fractional seconds; a bare date is midnight.
/// Text without an offset is read as UTC and marked [`Timestamp::Naive`].
pub fn parse(text: Option<&str>) -> Timestamp {
    let Some(s) = text.map(str::trim).filter(|s| !s.is_empty()) else {
        return Timestamp::Unset;
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Timestamp::Utc(t.timestamp_millis());
    }
    // `Z` is an offset that chrono's %z does not read.
    let zulu = s.strip_suffix(['Z', 'z']).map(|b| format!("{b}+00:00"));
    let with_offset = zulu.as_deref().unwrap_or(s);
    for f in WITH_OFFSET {
        if let Ok(t) = DateTime::parse_from_str(with_offset, f) {
            return Timestamp::Utc(t.timestamp_millis());
        }
    }
    for f in WITHOUT_OFFSET {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Timestamp::Naive(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Timestamp::Naive(t.and_utc().timestamp_millis());
    }
    Timestamp::Invalid
}

/// Unix milliseconds as RFC 3339 UTC text with milliseconds, for display;
/// `-` for 0 (not set).
pub fn format_ms(ms: i64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-04-10T12:00:00Z in Unix milliseconds.
    const NOON: i64 = 1_775_822_400_000;

    fn check(input: Option<&str>, expected: Timestamp) {
        assert_eq!(parse(input), expected, "parsing {input:?}");
    }

    #[test]
    fn iso_8601_variants() {
        use Timestamp::*;
        check(Some("2026-04-10T12:00:00+00:00"), Utc(NOON));
        check(Some("2026-04-10T12:00:00Z"), Utc(NOON));
        check(Some("2026-04-10T12:00:00z"), Utc(NOON));
        check(Some("2026-04-10T12:00:00.250Z"), Utc(NOON + 250));
        check(Some("2026-04-10T12:00:00.123456+00:00"), Utc(NOON + 123));
        check(Some("2026-04-10T14:00:00+02:00"), Utc(NOON));
        check(Some("2026-04-10T07:30:00-04:30"), Utc(NOON));
        check(Some("2026-04-10T14:00:00+0200"), Utc(NOON));
        check(Some("2026-04-10 12:00:00+00:00"), Utc(NOON));
        check(Some("2026-04-10 12:00:00.5Z"), Utc(NOON + 500));
        check(Some(" 2026-04-10T12:00:00Z "), Utc(NOON));
        check(Some("2026-04-10T12:00:00"), Naive(NOON));
        check(Some("2026-04-10 12:00:00.750"), Naive(NOON + 750));
        check(Some("2026-04-10T12:00"), Naive(NOON));
        check(Some("2026-04-10"), Naive(NOON - 12 * 3_600_000));
        check(None, Unset);
        check(Some(""), Unset);
        check(Some("   "), Unset);
        check(Some("yesterday"), Invalid);
        check(Some("2026-13-40T12:00:00Z"), Invalid);
        check(Some("1775822400"), Invalid);
    }

    #[test]
    fn formats_for_display() {
        assert_eq!(format_ms(NOON + 5), "2026-04-10T12:00:00.005Z");
        assert_eq!(format_ms(0), "-");
    }
}
