//! Consent-bound retention: the end of a statement's data life (Sahamati's `DataLife` of the
//! consent), and the expiry index that lets a sweep find what has expired without listing
//! what has not.
//!
//! The index holds one empty object per statement with an end of life,
//! `{RETENTION_INDEX_PREFIX}{YYYY-MM-DD}/{client_id}/{statement_id}`, the day being the UTC
//! day of `retain_until`. Keys sort by day, so a sweep lists from the start of the prefix and
//! stops at the first day after its own: its cost follows what has expired, not what is kept.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_types::{DateTime, date_time::Format};

use super::{ClientId, Prefix, StatementId};

/// The latest end of life accepted: far enough for any consent, early enough that every
/// day of the index is a four-digit year (the index sorts by the key's text).
const LATEST: &str = "9999-12-31T23:59:59Z";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetainUntilError {
    #[error("must be an RFC 3339 date-time, e.g. 2027-03-31T23:59:59Z")]
    Format,
    #[error("must not be in the past (the consent's data life is already over)")]
    Past,
    #[error("must be before the year 10000")]
    TooLate,
}

/// When a statement's data life ends, to the second (UTC). Ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetainUntil(i64);

impl RetainUntil {
    /// Parses a caller's RFC 3339 date-time (any offset; fractions of a second are dropped).
    /// One that has passed by `now` is refused: storing a statement whose data life is over
    /// would break the consent it was fetched under.
    pub fn parse(raw: &str, now: SystemTime) -> Result<Self, RetainUntilError> {
        let at = Self::read(raw).ok_or(RetainUntilError::Format)?;
        if at.0 > latest() {
            return Err(RetainUntilError::TooLate);
        }
        if at.has_passed(now) {
            return Err(RetainUntilError::Past);
        }
        Ok(at)
    }

    /// What the object metadata holds (written by [`Self::to_rfc3339`]); `None` if unreadable.
    pub fn from_stored(raw: &str) -> Option<Self> {
        Self::read(raw)
    }

    /// `days` after `now` (`STATEMENT_RETENTION_DAYS`).
    pub fn days_after(now: SystemTime, days: u64) -> Self {
        let at = now + Duration::from_secs(days.saturating_mul(86_400));
        Self(seconds(at).min(latest()))
    }

    fn read(raw: &str) -> Option<Self> {
        DateTime::from_str(raw.trim(), Format::DateTimeWithOffset)
            .ok()
            .map(|t| Self(t.secs()))
    }

    /// True once `now` has reached the end of life.
    pub fn has_passed(&self, now: SystemTime) -> bool {
        self.0 <= seconds(now)
    }

    /// `2027-03-31T23:59:59Z`: what the API shows and the metadata stores.
    pub fn to_rfc3339(&self) -> String {
        DateTime::from_secs(self.0)
            .fmt(Format::DateTime)
            .unwrap_or_default()
    }

    /// `2027-03-31`: the index day.
    pub fn day(&self) -> String {
        self.to_rfc3339().chars().take(10).collect()
    }
}

impl std::fmt::Display for RetainUntil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn latest() -> i64 {
    DateTime::from_str(LATEST, Format::DateTime).map_or(i64::MAX, |t| t.secs())
}

/// The expiry index entry of a statement.
pub fn retention_index_key(
    index: &Prefix,
    until: &RetainUntil,
    client: &ClientId,
    id: &StatementId,
) -> String {
    format!(
        "{}{}/{}/{}",
        index.as_str(),
        until.day(),
        client.as_str(),
        id.as_str()
    )
}

/// One entry of the expiry index, read back from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub client: ClientId,
    pub statement: StatementId,
}

/// Reads an index key; `None` for anything that is not one (a stray object under the prefix).
pub fn parse_index_key(index: &Prefix, key: &str) -> Option<IndexEntry> {
    let rest = key.strip_prefix(index.as_str())?;
    let mut parts = rest.split('/');
    let (day, client, statement) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_day(day) {
        return None;
    }
    Some(IndexEntry {
        day: day.to_owned(),
        client: ClientId::parse(client).ok()?,
        statement: StatementId::parse(statement).ok()?,
    })
}

/// `YYYY-MM-DD` in digits (the index's own format; the calendar is not re-checked).
fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// The UTC day of `now` (`YYYY-MM-DD`): a sweep at `now` looks at index days up to this one.
pub fn day_of(now: SystemTime) -> String {
    RetainUntil(seconds(now)).day()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(DateTime::from_str(s, Format::DateTime).expect("t").secs() as u64)
    }

    #[test]
    fn parses_offsets_to_utc_and_refuses_the_past_and_garbage() {
        let now = at("2026-12-03T10:00:00Z");
        let r = RetainUntil::parse("2027-01-01T05:30:00+05:30", now).expect("valid");
        assert_eq!(r.to_rfc3339(), "2027-01-01T00:00:00Z");
        assert_eq!(r.day(), "2027-01-01");
        assert_eq!(
            RetainUntil::parse("2026-12-03T09:59:59Z", now),
            Err(RetainUntilError::Past)
        );
        assert_eq!(
            RetainUntil::parse("2026-12-03T10:00:00Z", now),
            Err(RetainUntilError::Past)
        );
        for bad in [
            "",
            "tomorrow",
            "2027-01-01",
            "2027-13-01T00:00:00Z",
            "1700000000",
        ] {
            assert_eq!(
                RetainUntil::parse(bad, now),
                Err(RetainUntilError::Format),
                "{bad}"
            );
        }
        assert!(RetainUntil::parse("10000-01-01T00:00:00Z", now).is_err());
        assert_eq!(
            RetainUntil::from_stored(&r.to_rfc3339()),
            Some(r),
            "round trip through metadata"
        );
    }

    #[test]
    fn the_default_is_days_after_now() {
        let now = at("2026-12-03T10:00:00Z");
        assert_eq!(
            RetainUntil::days_after(now, 30).to_rfc3339(),
            "2027-01-02T10:00:00Z"
        );
        assert!(!RetainUntil::days_after(now, 1).has_passed(now));
        assert!(RetainUntil::days_after(now, 1).has_passed(at("2026-12-04T10:00:00Z")));
    }

    #[test]
    fn index_keys_round_trip_and_strays_are_ignored() {
        let index = Prefix::parse("_retention/").expect("prefix");
        let client = ClientId::parse("aa_1").expect("client");
        let id = StatementId::parse("HDFC-FIP-abc").expect("id");
        let until =
            RetainUntil::parse("2027-01-01T00:00:00Z", at("2026-01-01T00:00:00Z")).expect("until");
        let key = retention_index_key(&index, &until, &client, &id);
        assert_eq!(key, "_retention/2027-01-01/aa_1/HDFC-FIP-abc");
        assert_eq!(
            parse_index_key(&index, &key),
            Some(IndexEntry {
                day: "2027-01-01".into(),
                client,
                statement: id,
            })
        );
        for stray in [
            "_retention/2027-01-01/aa_1",
            "_retention/2027-01-01/aa_1/x/y",
            "_retention/2027-1-01/aa_1/x",
            "_retention/2027-01-01/a a/x",
            "other/2027-01-01/aa_1/x",
        ] {
            assert_eq!(parse_index_key(&index, stray), None, "{stray}");
        }
        assert_eq!(day_of(at("2026-12-03T23:59:59Z")), "2026-12-03");
    }
}
