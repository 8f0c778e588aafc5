//! Delay schedules ("ladders") for job polls and webhook retries.
//!
//! A ladder is written the way operators read it: `"5s,15s,30s,1m,2m,5m,15m"` (units `ms`, `s`,
//! `m`, `h`). Polls repeat the last step forever ([`Ladder::repeating`]) until the job's deadline;
//! webhook retries stop past the end ([`Ladder::step`]). Every delay is jittered by ±20 %
//! ([`jittered`]) so that 1,000 jobs created in the same second do not poll Finpass in lock-step.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A non-empty delay schedule whose every step is longer than zero. Built only by parsing or by
/// the two defaults, so a `Ladder` in hand is always usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder(Vec<Duration>);

/// Why a schedule string was refused. Names the offending step (1-based) so that a bad
/// `JOB_POLL_SCHEDULE` is fixed at a glance.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LadderError {
    #[error("the schedule is empty: give comma-separated delays such as 5s,15s,1m")]
    Empty,
    #[error("step {step} ({text:?}) is not a number followed by ms, s, m or h")]
    Malformed { step: usize, text: String },
    #[error("step {step} ({text:?}) is zero: every delay must be longer than zero")]
    Zero { step: usize, text: String },
    #[error("step {step} ({text:?}) is too long")]
    TooLong { step: usize, text: String },
}

/// The longest single step accepted (a week): a longer one is certainly a typo, and it keeps
/// every arithmetic on steps far from overflow.
const MAX_STEP: Duration = Duration::from_secs(7 * 24 * 3600);

impl Ladder {
    /// The issue's polling ladder: about 5 s, 15 s, 30 s, 1 min, 2 min, 5 min, then every 15 min.
    pub fn polls() -> Self {
        Self::from_secs(&[5, 15, 30, 60, 120, 300, 900])
    }

    /// Standard Webhooks' suggested retry ladder: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h,
    /// 24 h after the first attempt (about three days of retries in all).
    pub fn webhook_retries() -> Self {
        const H: u64 = 3600;
        Self::from_secs(&[5, 300, 1800, 2 * H, 5 * H, 10 * H, 14 * H, 20 * H, 24 * H])
    }

    fn from_secs(secs: &[u64]) -> Self {
        Self(secs.iter().copied().map(Duration::from_secs).collect())
    }

    /// The `n`-th delay (0-based); past the end the last step repeats. For polls.
    pub fn repeating(&self, n: u32) -> Duration {
        let last = self.0.len() - 1;
        self.0[(n as usize).min(last)]
    }

    /// The `n`-th delay (0-based), `None` past the end. For retries, which give up.
    pub fn step(&self, n: u32) -> Option<Duration> {
        self.0.get(n as usize).copied()
    }

    /// How many steps the ladder has (never zero).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a ladder has at least one step. Present because clippy pairs it with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Duration] {
        &self.0
    }
}

impl FromStr for Ladder {
    type Err = LadderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(LadderError::Empty);
        }
        s.split(',')
            .enumerate()
            .map(|(i, text)| parse_step(i + 1, text.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

fn parse_step(step: usize, text: &str) -> Result<Duration, LadderError> {
    let malformed = || LadderError::Malformed {
        step,
        text: text.to_owned(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(malformed)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(malformed());
    }
    let too_long = || LadderError::TooLong {
        step,
        text: text.to_owned(),
    };
    let value: u64 = digits.parse().map_err(|_| too_long())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(malformed()),
    };
    let millis = value.checked_mul(millis_per_unit).ok_or_else(too_long)?;
    let d = Duration::from_millis(millis);
    if d.is_zero() {
        return Err(LadderError::Zero {
            step,
            text: text.to_owned(),
        });
    }
    if d > MAX_STEP {
        return Err(too_long());
    }
    Ok(d)
}

impl fmt::Display for Ladder {
    /// Writes the ladder back in the syntax it is parsed from (the largest exact unit per step).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let ms = d.as_millis();
            match ms {
                ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000)?,
                ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000)?,
                ms if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000)?,
                ms => write!(f, "{ms}ms")?,
            }
        }
        Ok(())
    }
}

/// `d` moved by a uniformly random amount within ±20 %; never below zero. Spreads the polls and
/// retries of jobs created together (thundering herd) without changing the ladder's shape.
pub fn jittered(d: Duration) -> Duration {
    // factor in [0.8, 1.2)
    let factor = 0.8 + 0.4 * fastrand::f64();
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_every_unit_and_spaces() {
        let l: Ladder = "250ms, 5s,1m , 2h".parse().unwrap();
        assert_eq!(
            l.steps(),
            &[Duration::from_millis(250), secs(5), secs(60), secs(7200)]
        );
    }

    #[test]
    fn defaults_are_the_issues_ladders() {
        assert_eq!(Ladder::polls().to_string(), "5s,15s,30s,1m,2m,5m,15m");
        assert_eq!(
            Ladder::webhook_retries().to_string(),
            "5s,5m,30m,2h,5h,10h,14h,20h,24h"
        );
        assert_eq!(
            "5s,15s,30s,1m,2m,5m,15m".parse::<Ladder>().unwrap(),
            Ladder::polls()
        );
    }

    #[test]
    fn refuses_bad_schedules_naming_the_step() {
        assert_eq!("".parse::<Ladder>(), Err(LadderError::Empty));
        assert_eq!("  ".parse::<Ladder>(), Err(LadderError::Empty));
        let cases = [
            ("5", 1, "malformed"),
            ("5s,,1m", 2, "malformed"),
            ("5s,s", 2, "malformed"),
            ("5s,1d", 2, "malformed"),
            ("5s,-1s", 2, "malformed"),
            ("1.5s", 1, "malformed"),
            ("5S", 1, "malformed"),
            ("0s", 1, "zero"),
            ("1s,0ms", 2, "zero"),
            ("169h", 1, "too long"),
            ("99999999999999999999s", 1, "too long"),
            ("18446744073709551615h", 1, "too long"),
        ];
        for (text, step, kind) in cases {
            let err = text.parse::<Ladder>().unwrap_err();
            let got_step = match &err {
                LadderError::Malformed { step, .. } if kind == "malformed" => *step,
                LadderError::Zero { step, .. } if kind == "zero" => *step,
                LadderError::TooLong { step, .. } if kind == "too long" => *step,
                other => panic!("{text:?}: expected {kind}, got {other:?}"),
            };
            assert_eq!(got_step, step, "{text:?}");
            assert!(err.to_string().contains(&format!("step {step}")), "{err}");
        }
    }

    #[test]
    fn repeating_holds_the_last_step() {
        let l: Ladder = "1s,2s,3s".parse().unwrap();
        let got: Vec<_> = (0..6).map(|n| l.repeating(n)).collect();
        assert_eq!(got, [secs(1), secs(2), secs(3), secs(3), secs(3), secs(3)]);
        assert_eq!(l.repeating(u32::MAX), secs(3));
    }

    #[test]
    fn step_ends_past_the_ladder() {
        let l: Ladder = "1s,2s".parse().unwrap();
        assert_eq!(l.step(0), Some(secs(1)));
        assert_eq!(l.step(1), Some(secs(2)));
        assert_eq!(l.step(2), None);
        assert_eq!(l.step(u32::MAX), None);
        assert_eq!(Ladder::webhook_retries().step(8), Some(secs(24 * 3600)));
        assert_eq!(Ladder::webhook_retries().step(9), None);
    }

    #[test]
    fn jitter_spreads_values() {
        // Not a timing test: 200 draws from a continuous distribution are not all equal.
        let d = secs(100);
        let draws: std::collections::BTreeSet<_> = (0..200).map(|_| jittered(d)).collect();
        assert!(
            draws.len() > 100,
            "jitter produced {} distinct values",
            draws.len()
        );
    }

    proptest! {
        #[test]
        fn jitter_stays_within_twenty_percent(ms in 0u64..=MAX_STEP.as_millis() as u64) {
            let d = Duration::from_millis(ms);
            let j = jittered(d);
            prop_assert!(j >= d.mul_f64(0.8) - Duration::from_nanos(1), "{j:?} < 80% of {d:?}");
            prop_assert!(j <= d.mul_f64(1.2) + Duration::from_nanos(1), "{j:?} > 120% of {d:?}");
        }

        #[test]
        fn display_round_trips(steps in proptest::collection::vec(1u64..=MAX_STEP.as_millis() as u64, 1..10)) {
            let l = Ladder(steps.into_iter().map(Duration::from_millis).collect());
            prop_assert_eq!(l.to_string().parse::<Ladder>(), Ok(l));
        }
    }
}
