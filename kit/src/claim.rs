//! Who decides the fate of work queued for someone else: the worker (it runs it) or the waiting
//! caller (its deadline passed first, so the work is abandoned and must never run). Exactly one
//! of them wins, so the caller can tell its client the truth: DEADLINE_EXCEEDED when it won
//! (the work never ran), the work's real outcome when the worker won.

use std::sync::atomic::{AtomicU8, Ordering};

/// Nobody has decided yet.
const WAITING: u8 = 0;
/// The worker took it: it runs, and its outcome is the answer.
const RUNNING: u8 = 1;
/// The caller gave up first: it never runs.
const ABANDONED: u8 = 2;

/// A one-time decision between a worker and a waiting caller; see the module docs.
#[derive(Debug, Default)]
pub struct Claim(AtomicU8);

impl Claim {
    /// The worker's side: true if it may run the work (the caller has not abandoned it).
    pub fn start(&self) -> bool {
        self.take(RUNNING)
    }

    /// The caller's side: true if the work is now abandoned and will never run; false if the
    /// worker already started it.
    pub fn abandon(&self) -> bool {
        self.take(ABANDONED)
    }

    fn take(&self, to: u8) -> bool {
        self.0
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_has_exactly_one_winner() {
        let abandoned = Claim::default();
        assert!(abandoned.abandon());
        assert!(!abandoned.start());
        assert!(!abandoned.abandon());
        let started = Claim::default();
        assert!(started.start());
        assert!(!started.abandon());
    }
}
