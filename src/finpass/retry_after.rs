//! `Retry-After` from Finpass. It is untrusted input that decides how long a caller waits, so it
//! is parsed strictly and clamped: `18446744073709551615` once made `Instant + Duration`
//! overflow and panic the request handler, dropping the caller's connection with no answer.

use std::time::{Duration, SystemTime};

use aws_smithy_types::{DateTime, date_time::Format};

/// The longest wait a `Retry-After` can ask for. Beyond the call's deadline anyway; callers
/// are then told to come back after this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long to wait from `now` before the next attempt, per a `Retry-After` value (RFC 9110
/// §10.2.3: delay-seconds or an IMF-fixdate HTTP-date), clamped to [`MAX_RETRY_AFTER`]. A date
/// in the past means "now". `None` for anything else (negative, fractional, obsolete date
/// formats, garbage): the caller then backs off as for any retryable error.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    parse_retry_after_within(value, now, MAX_RETRY_AFTER)
}

/// [`parse_retry_after`] clamped to `max` instead: a webhook receiver may ask for hours, which
/// a job waits out (its retries are spread over a day anyway).
pub fn parse_retry_after_within(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: a number too large for u64 still means "a very long time".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(max));
    }
    let at = DateTime::from_str(value, Format::HttpDate).ok()?;
    let at = SystemTime::try_from(at).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(max))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2015-10-21T07:28:00Z
    const NOW: u64 = 1_445_412_480;

    #[test]
    fn delay_seconds() {
        let now = at(NOW);
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 12 ", now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(parse_retry_after("60", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("61", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn http_dates() {
        let now = at(NOW);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn anything_else_is_unknown() {
        let now = at(NOW);
        for v in [
            "",
            " ",
            "-1",
            "+5",
            "1.5",
            "5s",
            "soon",
            "0x10",
            "١٢",
            // RFC 850 and asctime forms are obsolete; we back off instead.
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
        ] {
            assert_eq!(parse_retry_after(v, now), None, "{v:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_never_exceeds_the_clamp(
            value in prop_oneof![
                "\\PC{0,40}",
                any::<u64>().prop_map(|n| n.to_string()),
                any::<u128>().prop_map(|n| n.to_string()),
                "[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
            ],
            now in any::<u64>(),
        ) {
            let now = SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(now))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if let Some(d) = parse_retry_after(&value, now) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn any_number_of_seconds_is_read_and_clamped(n in any::<u64>()) {
            prop_assert_eq!(
                parse_retry_after(&n.to_string(), SystemTime::UNIX_EPOCH),
                Some(Duration::from_secs(n).min(MAX_RETRY_AFTER))
            );
        }
    }
}
