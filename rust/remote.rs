//! State kept in a remote store (Redis), under the same breaker and bucket as local state.
//!
//! A breaker or bucket whose state lives in a remote store asks the store instead of its own
//! atomics; when the store cannot be reached, `OnBackendError` decides what the call gets,
//! here and nowhere else: the local state machine of the same settings stands in (`Local`),
//! every call is admitted (`FailOpen`) or every call is refused (`FailClosed`) until the
//! store answers again.

use crate::breaker::{Admission, CLOSED, OPEN};
use crate::bucket::Decision;

/// What a breaker or bucket does while its remote store cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBackendError {
    /// The in-process state machine of the same settings decides.
    Local,
    /// Every call is admitted (and counted nowhere but in this process).
    FailOpen,
    /// Every call is refused, as by an open circuit or an empty bucket.
    FailClosed,
}

impl OnBackendError {
    /// Every policy, by the name users give it.
    pub const NAMES: [(&'static str, OnBackendError); 3] = [
        ("fail_closed", OnBackendError::FailClosed),
        ("fail_open", OnBackendError::FailOpen),
        ("local", OnBackendError::Local),
    ];

    pub fn parse(name: &str) -> Option<OnBackendError> {
        OnBackendError::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, policy)| *policy)
    }

    pub fn name(self) -> &'static str {
        OnBackendError::NAMES
            .iter()
            .find(|(_, policy)| *policy == self)
            .map(|(n, _)| *n)
            .unwrap_or("local")
    }

    /// An acquire during an outage: `None` asks the local bucket; otherwise the decision.
    /// A refusal waits `retry` ns: when the store will be tried again.
    pub fn decision(self, retry: u64) -> Option<Decision> {
        match self {
            OnBackendError::Local => None,
            OnBackendError::FailOpen => Some(Decision::Admitted),
            OnBackendError::FailClosed => Some(Decision::Rejected { wait: retry.max(1) }),
        }
    }

    /// A breaker's admission during an outage: `None` asks the local breaker. An admitted
    /// call is outside every state machine (its outcome counts, but changes no state).
    pub fn admission(self, retry: u64) -> Option<Ticket> {
        match self {
            OnBackendError::Local => None,
            OnBackendError::FailOpen => Some(Ticket::Remote(BYPASS)),
            OnBackendError::FailClosed => Some(Ticket::Local(Admission::Rejected {
                remaining: retry.max(1),
            })),
        }
    }

    /// The state a breaker shows during an outage: `None` shows the local breaker's.
    pub fn state(self) -> Option<u8> {
        match self {
            OnBackendError::Local => None,
            OnBackendError::FailOpen => Some(CLOSED),
            OnBackendError::FailClosed => Some(OPEN),
        }
    }
}

/// A remote admission of a call let through outside the state machine (the store's code
/// for it, as for `Admission::Bypass`).
pub const BYPASS: u64 = 3;

/// Marks an admission code that a remote store gave: its outcome goes back to the store.
/// Local codes stay far below it (kind and a 21-bit epoch).
pub const REMOTE: u64 = 1 << 62;

/// Which state machine admitted a call, so that its outcome is recorded by the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ticket {
    /// The breaker's own atomics (in this process or a shared file), or the local stand-in
    /// during an outage of its store.
    Local(Admission),
    /// The remote store, with the store's own admission code (kind + 4 * period).
    Remote(u64),
}

impl Ticket {
    /// The int handed to Python wrappers and back: local codes as `Admission::code`,
    /// remote ones with the `REMOTE` bit.
    pub fn code(self) -> u64 {
        match self {
            Ticket::Local(admission) => admission.code(),
            Ticket::Remote(code) => REMOTE | code,
        }
    }

    pub fn from_code(code: u64) -> Option<Ticket> {
        if code & REMOTE != 0 {
            return Some(Ticket::Remote(code & !REMOTE));
        }
        Admission::from_code(code).map(Ticket::Local)
    }

    pub fn is_rejected(self) -> bool {
        matches!(self, Ticket::Local(Admission::Rejected { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_is_found_by_its_name_and_gives_it_back() {
        for (name, policy) in OnBackendError::NAMES {
            assert_eq!(OnBackendError::parse(name), Some(policy));
            assert_eq!(policy.name(), name);
        }
        assert_eq!(OnBackendError::parse("fail-open"), None);
    }

    #[test]
    fn an_outage_admits_refuses_or_asks_the_local_state_machine_by_policy() {
        assert_eq!(OnBackendError::Local.decision(5), None);
        assert_eq!(
            OnBackendError::FailOpen.decision(5),
            Some(Decision::Admitted)
        );
        assert_eq!(
            OnBackendError::FailClosed.decision(5),
            Some(Decision::Rejected { wait: 5 })
        );
        assert_eq!(OnBackendError::Local.admission(5), None);
        assert_eq!(
            OnBackendError::FailOpen.admission(5),
            Some(Ticket::Remote(BYPASS))
        );
        assert!(OnBackendError::FailClosed
            .admission(5)
            .unwrap()
            .is_rejected());
        assert_eq!(OnBackendError::FailClosed.state(), Some(OPEN));
    }

    #[test]
    fn a_refusal_during_an_outage_never_says_to_retry_at_once() {
        assert_eq!(
            OnBackendError::FailClosed.decision(0),
            Some(Decision::Rejected { wait: 1 })
        );
    }

    #[test]
    fn tickets_survive_the_trip_through_python_whichever_machine_admitted_them() {
        let tickets = [
            Ticket::Local(Admission::Normal { epoch: 7 }),
            Ticket::Local(Admission::Trial {
                epoch: (1 << 21) - 1,
            }),
            Ticket::Local(Admission::Bypass),
            Ticket::Remote(2 + 4 * 123_456_789),
            Ticket::Remote(BYPASS),
        ];
        for ticket in tickets {
            assert_eq!(Ticket::from_code(ticket.code()), Some(ticket));
        }
    }
}
