//! How many tokens to draft next. A draft token the target rejects still costs its share of the
//! verify pass (on a CPU, a large share: see the chapter's verify-cost table), so a fixed k
//! loses wherever drafts fail — free chat for prompt lookup. The adaptive budget grows while
//! drafts stand and backs off, down to not drafting at all for a while, when they fall.
//!
//! The budget is decided before each draft from earlier verdicts only, so the output is what
//! any fixed k gives: greedy tokens identical, sampling's distribution unchanged.

// ANCHOR: budget
/// The draft length policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftLength {
    /// Always up to k tokens.
    Fixed(usize),
    /// Up to k tokens, adapted to how the drafts fare (see [`Budget`]).
    Adaptive(usize),
}

impl From<usize> for DraftLength {
    fn from(k: usize) -> Self {
        DraftLength::Fixed(k)
    }
}

impl DraftLength {
    /// The most tokens a draft may have.
    pub fn max(self) -> usize {
        match self {
            DraftLength::Fixed(k) | DraftLength::Adaptive(k) => k,
        }
    }
}

/// The running state of a [`DraftLength`] over one request.
///
/// Adaptive rule: start at 2 (never above k). A draft that stands whole doubles the next
/// length; one cut short sets it to what stood plus one. A draft of which nothing stood
/// makes the next `skip` steps draft nothing, `skip` doubling with each such miss in a row
/// (1, 2, 4, at most 16) and resetting when a draft token stands.
#[derive(Debug, Clone)]
pub struct Budget {
    policy: DraftLength,
    next: usize,
    skip: usize,
    cooling: usize,
}

impl Budget {
    pub fn new(policy: DraftLength) -> Budget {
        let next = match policy {
            DraftLength::Fixed(k) => k,
            DraftLength::Adaptive(k) => k.min(2),
        };
        Budget {
            policy,
            next,
            skip: 0,
            cooling: 0,
        }
    }

    /// Tokens to draft at this step (0: a plain step).
    pub fn take(&mut self) -> usize {
        if self.cooling > 0 {
            self.cooling -= 1;
            return 0;
        }
        self.next
    }

    /// What the target did with a draft of `proposed` tokens: it accepted the first `accepted`.
    pub fn record(&mut self, proposed: usize, accepted: usize) {
        let DraftLength::Adaptive(k) = self.policy else {
            return;
        };
        if proposed == 0 {
            return; // nothing drafted (cooling, or the drafter found nothing): no evidence
        }
        if accepted == 0 {
            self.skip = (self.skip * 2).clamp(1, 16);
            self.cooling = self.skip;
            self.next = 1;
        } else {
            self.skip = 0;
            self.next = if accepted == proposed {
                (2 * proposed).min(k)
            } else {
                (accepted + 1).min(k)
            };
        }
    }
}
// ANCHOR_END: budget

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_budget_never_changes() {
        let mut b = Budget::new(DraftLength::Fixed(5));
        for (p, a) in [(5, 0), (5, 5), (3, 1)] {
            assert_eq!(b.take(), 5);
            b.record(p, a);
        }
        assert_eq!(b.take(), 5);
    }

    #[test]
    fn an_adaptive_budget_grows_while_drafts_stand_and_backs_off_when_they_fall() {
        let mut b = Budget::new(DraftLength::Adaptive(8));
        assert_eq!(b.take(), 2);
        b.record(2, 2);
        assert_eq!(b.take(), 4);
        b.record(4, 4);
        assert_eq!(b.take(), 8);
        b.record(8, 8);
        assert_eq!(b.take(), 8, "never above k");
        b.record(8, 3);
        assert_eq!(b.take(), 4, "what stood, plus one");
        // Misses in a row: skip 1, then 2, then 4 steps.
        for skip in [1, 2, 4] {
            b.record(4, 0);
            for _ in 0..skip {
                assert_eq!(b.take(), 0);
            }
            assert_eq!(b.take(), 1);
        }
        b.record(1, 1);
        assert_eq!(b.take(), 2, "a token that stands ends the back-off");
        b.record(2, 0);
        assert_eq!(b.take(), 0);
        assert_eq!(b.take(), 1, "back to a skip of one");
        // An empty draft is no evidence.
        b.record(0, 0);
        assert_eq!(b.take(), 1);
        assert_eq!(Budget::new(DraftLength::Adaptive(1)).take(), 1);
    }
}
