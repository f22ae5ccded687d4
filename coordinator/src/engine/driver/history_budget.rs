//! The bound on a transaction's history (`--max-history-events`): how many
//! events its drivers may still append, and the one event that says the
//! bound was reached.
//!
//! Status changes are always written: a transaction has a handful of them
//! whatever happens, and its outcome must be in its history. Everything
//! else a driver writes (branch results, call failures, the operator flag)
//! counts against the bound, and once the history holds that many events,
//! one `history_limit` event says so and the rest are left out. Failures of
//! one call in a row are already logged sparsely (at attempts 1, 2, 4, 8,
//! ..., each event carrying the count so far: a million failures in a row
//! are 21 events), but a participant that alternates between "still
//! working" and failing starts a new run each time, two events per cycle
//! for as long as it keeps doing so; the bound is what stops that.
//!
//! The count is the driver's: a driver that registered its transaction
//! starts from the registration's one event, and one that took a
//! transaction over (claim, restart, takeover) reads how many events the
//! history holds. Events written outside drivers (branches registered by
//! the API, each bounded by `--max-branches`, and the takeovers themselves)
//! add to the history without being counted until the next driver's read,
//! so the bound can be passed by those few.

use crate::store::Event;

/// The kind of the event written when the bound is reached.
pub(crate) const LIMIT_KIND: &str = "history_limit";

/// How many more events the history of one transaction may take.
#[derive(Debug)]
pub(crate) struct HistoryBudget {
    limit: usize,
    held: usize,
}

impl HistoryBudget {
    /// A budget of `limit` events for a history that holds `held` already.
    pub(crate) fn new(limit: usize, held: usize) -> HistoryBudget {
        HistoryBudget { limit, held }
    }

    /// Whether the bound has been reached.
    #[cfg(test)]
    fn is_spent(&self) -> bool {
        self.held >= self.limit
    }

    /// The events of one write that the bound lets through, in order:
    /// every status change; the others while there is room, the last slot
    /// going to the event that says the rest are left out.
    pub(crate) fn admit(&mut self, events: Vec<Event>, at_ms: i64) -> Vec<Event> {
        let mut admitted = Vec::with_capacity(events.len());
        for event in events {
            if event.kind == "status" || self.held + 1 < self.limit {
                self.held += 1;
                admitted.push(event);
            } else if self.held + 1 == self.limit {
                self.held += 1;
                admitted.push(self.limit_event(at_ms));
            }
        }
        admitted
    }

    fn limit_event(&self, at_ms: i64) -> Event {
        Event {
            at_ms,
            kind: LIMIT_KIND.to_owned(),
            branch_id: None,
            detail: format!(
                "the history holds {} events (`--max-history-events`): later branch results, \
                 call failures and notes of this transaction are not recorded; status changes \
                 still are, and the branches' rows keep their latest attempt",
                self.limit
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Event {
        Event {
            at_ms: 1,
            kind: kind.to_owned(),
            branch_id: None,
            detail: String::new(),
        }
    }

    fn kinds(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn events_pass_until_one_slot_is_left_which_says_the_rest_are_left_out() {
        let mut budget = HistoryBudget::new(4, 1);
        let first = budget.admit(vec![event("call_failed"), event("call_failed")], 5);
        assert_eq!(kinds(&first), ["call_failed", "call_failed"]);
        assert!(!budget.is_spent());
        let second = budget.admit(vec![event("branch"), event("call_failed")], 6);
        assert_eq!(kinds(&second), [LIMIT_KIND]);
        assert_eq!(second[0].at_ms, 6);
        assert!(budget.is_spent());
        assert!(budget.admit(vec![event("attention")], 7).is_empty());
    }

    #[test]
    fn status_changes_are_always_written() {
        let mut budget = HistoryBudget::new(2, 5);
        let admitted = budget.admit(
            vec![event("call_failed"), event("status"), event("branch")],
            9,
        );
        assert_eq!(kinds(&admitted), ["status"]);
    }

    #[test]
    fn a_history_taken_over_full_gets_no_second_limit_event() {
        let mut budget = HistoryBudget::new(3, 3);
        assert!(budget.is_spent());
        assert!(budget.admit(vec![event("call_failed")], 1).is_empty());
    }
}
