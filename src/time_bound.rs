//! A point in time as a person or a script writes it, for `since` and
//! `until`: the one parser the HTTP API and the command line share.
//!
//! Three forms are accepted everywhere, because each audience has its own
//! habit: an RFC 3339 time (`2026-11-01T12:00:00Z`, any offset, or a bare
//! date for midnight UTC) is what the JSON answers carry; seconds since the
//! epoch (`1764590400`, fractions allowed) are what rLLM's client and
//! `date +%s` produce; and a duration (`90m`, `1h`, `7d`) means "that long
//! ago", as a person at a terminal thinks. Parsing them in one place keeps
//! `GET /traces?since=1h` and `tracegate traces list --since 1h` the same
//! question.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time bound of a query (`since`, `until`), resolved to an instant when
/// it is read (a duration counts back from that moment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBound(SystemTime);

/// A value that is none of the accepted forms; its message lists them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a time: use an RFC 3339 time (2026-11-01T12:00:00Z) or date \
     (2026-11-01), seconds since the epoch (1764590400) or a duration back from now (90m, 1h, 7d)"
)]
pub struct TimeBoundError(pub String);

impl TimeBound {
    /// Reads `text` in any of the accepted forms.
    pub fn parse(text: &str) -> Result<TimeBound, TimeBoundError> {
        let t = text.trim();
        let invalid = || TimeBoundError(text.to_string());
        if let Ok(seconds) = t.parse::<f64>() {
            return epoch(seconds).map(TimeBound).ok_or_else(invalid);
        }
        if let Ok(back) = humantime::parse_duration(t) {
            return SystemTime::now()
                .checked_sub(back)
                .map(TimeBound)
                .ok_or_else(invalid);
        }
        rfc3339(t).map(TimeBound).ok_or_else(invalid)
    }

    /// The instant.
    pub fn at(self) -> SystemTime {
        self.0
    }

    /// The instant as seconds since the epoch (what the store's filters take).
    pub fn epoch_seconds(self) -> f64 {
        crate::record::epoch_seconds(self.0)
    }
}

impl FromStr for TimeBound {
    type Err = TimeBoundError;

    fn from_str(text: &str) -> Result<TimeBound, TimeBoundError> {
        TimeBound::parse(text)
    }
}

/// Seconds since the epoch, when they are a time (finite, not negative).
pub fn epoch(seconds: f64) -> Option<SystemTime> {
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(seconds).ok()?))
        .flatten()
}

/// An RFC 3339 time in any offset, or a date (midnight UTC).
fn rfc3339(t: &str) -> Option<SystemTime> {
    if !t.is_ascii() {
        return None;
    }
    if t.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{t}T00:00:00Z")).ok();
    }
    // humantime reads only UTC ("Z"); apply a numeric offset ourselves. The
    // text is ASCII here, so byte positions are character positions.
    let at = t.len().saturating_sub(6);
    let sign = t.as_bytes().get(at).copied();
    if at <= 10 || !matches!(sign, Some(b'+' | b'-')) || t.as_bytes().get(at + 3) != Some(&b':') {
        return humantime::parse_rfc3339_weak(t).ok();
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        t.get(range)
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
    };
    let offset = Duration::from_secs(number(at + 1..at + 3)? * 3600 + number(at + 4..at + 6)? * 60);
    let local = humantime::parse_rfc3339_weak(&format!("{}Z", &t[..at])).ok()?;
    if sign == Some(b'+') {
        local.checked_sub(offset)
    } else {
        local.checked_add(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn dates_times_offsets_and_epoch_seconds() {
        for (text, utc) in [
            ("2026-11-01", "2026-11-01T00:00:00Z"),
            ("2026-11-01T12:30:00.5Z", "2026-11-01T12:30:00.5Z"),
            ("2026-11-01T14:30:00+02:00", "2026-11-01T12:30:00Z"),
            ("2026-11-01T10:00:00-01:30", "2026-11-01T11:30:00Z"),
            ("1793536200", "2026-11-01T12:30:00Z"),
            ("1793536200.5", "2026-11-01T12:30:00.5Z"),
        ] {
            assert_eq!(TimeBound::parse(text).unwrap().at(), at(utc), "{text}");
        }
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-11-01T10:00:00+2:00x",
            "",
            "-5",
            "NaN",
            "inf",
        ] {
            assert!(TimeBound::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_duration_counts_back_from_now() {
        let before = SystemTime::now() - Duration::from_secs(3600);
        let since = TimeBound::parse("1h").unwrap().at();
        let after = SystemTime::now() - Duration::from_secs(3600);
        assert!(before <= since && since <= after);
    }

    #[test]
    fn the_refusal_names_every_form() {
        let message = TimeBound::parse("soon").unwrap_err().to_string();
        for form in ["'soon'", "RFC 3339", "epoch", "1h"] {
            assert!(message.contains(form), "{message}");
        }
    }
}
