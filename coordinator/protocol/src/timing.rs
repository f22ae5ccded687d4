//! Time as the protocol core sees it: the instant an input happened
//! ([`Now`]) and the per-transaction settings that turn time into decisions
//! ([`Timing`]): the phase-one deadline, the retry backoff, the interval at
//! which a "still working" answer is asked again, and the window after which
//! a failing phase-two call needs an operator.
//!
//! The core never reads a clock. The driver passes `now` with every input and
//! asks [`crate::Transaction::poll_timeout`] when to come back; a timer is an
//! output of the core, never a sleep inside it.

use crate::retry::RetryPolicy;
use crate::spec::TxOptions;

/// The moment an input is handled, and a random sample for retry jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// Unix milliseconds (the time base of the transaction log).
    pub ms: i64,
    /// A sample in `[0, 1)`, used when the input schedules a retry.
    pub jitter: f64,
}

impl Now {
    /// `ms` with a jitter sample in the middle of the range.
    pub fn at(ms: i64) -> Now {
        Now { ms, jitter: 0.5 }
    }
}

/// What a transaction's timers are made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Unix milliseconds by which phase one must be over, or the transaction
    /// aborts.
    pub deadline_at_ms: i64,
    /// Backoff between attempts of a call whose answer was unknown.
    pub retry: RetryPolicy,
    /// How often a call answered "still working" (425) is asked again: a
    /// steady interval, since the participant is alive and busy.
    pub poll_interval_ms: u64,
    /// How long a phase-two call may keep failing before the transaction is
    /// flagged for an operator.
    pub attention_after_ms: u64,
}

impl Timing {
    /// The timing of a transaction with `options` whose phase one must end
    /// by `deadline_at_ms`.
    pub fn from_options(options: &TxOptions, deadline_at_ms: i64) -> Timing {
        Timing {
            deadline_at_ms,
            retry: options.retry,
            poll_interval_ms: options.poll_interval_ms,
            attention_after_ms: options.attention_after_ms,
        }
    }
}

impl Default for Timing {
    /// The default options, with the deadline one minute after time zero.
    fn default() -> Self {
        let options = TxOptions::default();
        Timing::from_options(&options, options.deadline_ms as i64)
    }
}
