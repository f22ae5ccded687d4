//! The retry policy: exponential backoff with full jitter, as a pure function
//! of the attempt number and a random sample the caller supplies.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long to wait before the next attempt of a call whose answer was
/// unknown or "still working".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Delay before the first retry, in milliseconds.
    pub initial_ms: u64,
    /// Upper bound of any delay, in milliseconds.
    pub max_ms: u64,
    /// Growth factor of the delay per attempt.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_ms: 200,
            max_ms: 30_000,
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry).
    ///
    /// `jitter` is a sample in `[0, 1)`. Half of the delay is fixed and half is
    /// random ("equal jitter"), so retries of many transactions that failed
    /// together spread out, yet no retry comes back immediately.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(63) as i32;
        let ceiling = (self.initial_ms as f64 * self.multiplier.powi(exponent))
            .min(self.max_ms as f64)
            .max(0.0);
        let jitter = jitter.clamp(0.0, 1.0);
        Duration::from_millis((ceiling / 2.0 + ceiling / 2.0 * jitter) as u64)
    }

    /// Checks the policy makes sense; returns a sentence for the caller if not.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial_ms == 0 || self.max_ms < self.initial_ms {
            return Err("retry: initial_ms must be above 0 and max_ms at least initial_ms".into());
        }
        if !(self.multiplier >= 1.0 && self.multiplier <= 10.0) {
            return Err("retry: multiplier must be between 1 and 10".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_then_caps() {
        let p = RetryPolicy {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 2.0,
        };
        let no_jitter: Vec<u64> = (1..=6)
            .map(|r| p.delay(r, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(no_jitter, vec![50, 100, 200, 400, 500, 500]);
        let full: Vec<u64> = (1..=6)
            .map(|r| p.delay(r, 0.999_999).as_millis() as u64)
            .collect();
        assert_eq!(full, vec![99, 199, 399, 799, 999, 999]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_millis(15_000));
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(
            RetryPolicy {
                initial_ms: 0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                max_ms: 1,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                multiplier: 0.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
