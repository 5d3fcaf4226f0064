//! The arithmetic of a rollout, kept pure so it can be tested on its own:
//! which threshold releases the next batch, which one takes a batch back, and
//! when a batch's gate opens.
//!
//! Nodes are ordered by their rank `u(N)` ([`super::rank::rank`]); node N is
//! released iff `u(N) <= threshold`. Raising the threshold to the rank of the
//! k-th member not yet released releases exactly k known members in one
//! write; a node never flips back while it only rises; a node that joins
//! later lands on whichever side its rank puts it.

use super::plan::{Amount, BatchSizes};
use super::rank::rank;

/// A member and its rank in one rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// The node.
    pub node: String,
    /// Its rank `u(N)` in [0, 1).
    pub rank: f64,
}

/// The members in rank order (ties, which SHA-256 makes vanishingly rare,
/// by name).
pub fn ranked<'a>(rollout_id: &str, members: impl IntoIterator<Item = &'a str>) -> Vec<Ranked> {
    let mut out: Vec<Ranked> = members
        .into_iter()
        .map(|node| Ranked {
            node: node.to_string(),
            rank: rank(rollout_id, node),
        })
        .collect();
    out.sort_by(|a, b| a.rank.total_cmp(&b.rank).then_with(|| a.node.cmp(&b.node)));
    out
}

/// The threshold that releases the next `k` (at least 1) members not yet
/// released at `threshold`. When that is every one left, 1.0: everybody,
/// including nodes nobody knows of yet.
pub fn next_threshold(ranked: &[Ranked], threshold: f64, k: usize) -> f64 {
    let waiting: Vec<&Ranked> = ranked.iter().filter(|r| r.rank > threshold).collect();
    let k = k.max(1);
    if k >= waiting.len() {
        1.0
    } else {
        waiting[k - 1].rank
    }
}

/// The threshold that takes back the `k` (at least 1) released members of
/// highest rank; `None` when that is every one of them (the rollout ends).
pub fn previous_threshold(ranked: &[Ranked], threshold: f64, k: usize) -> Option<f64> {
    let released: Vec<&Ranked> = ranked.iter().filter(|r| r.rank <= threshold).collect();
    let k = k.max(1);
    if k >= released.len() {
        None
    } else {
        Some(released[released.len() - k - 1].rank)
    }
}

/// How many members batch number `index` (from 0) holds: the canary first
/// (when there is one), then the batch sizes in turn, the last repeating,
/// each of all members and at least one.
pub fn batch_size(index: usize, canary: u32, batch: &BatchSizes, members: usize) -> usize {
    match (index, canary) {
        (0, c) if c > 0 => c as usize,
        (i, c) => batch.at(if c > 0 { i - 1 } else { i }).of(members).max(1),
    }
}

/// Where the members a gate looks at stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateCounts {
    /// Members the gate waits for (released, or taken back, and present).
    pub watched: usize,
    /// Of those, converged to the generation computed for them.
    pub converged: usize,
    /// Of those, whose last run failed.
    pub failed: usize,
}

impl GateCounts {
    /// Watched members neither converged nor failed.
    pub fn pending(&self) -> usize {
        self.watched - self.converged - self.failed
    }
}

/// What a gate says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Not yet: members are still converging.
    Wait,
    /// The batch is done: go on.
    Pass,
    /// More failures than allowed: pause the rollout.
    TooManyFailures { failed: usize, allowed: usize },
}

/// The gate of a batch: too many failures pause; otherwise it opens once
/// enough of the watched members have converged (`min_converged`, default
/// all), a tolerated failure counting as settled.
pub fn gate(counts: GateCounts, max_failed: usize, min_converged: Amount) -> Gate {
    if counts.failed > max_failed {
        return Gate::TooManyFailures {
            failed: counts.failed,
            allowed: max_failed,
        };
    }
    let need = min_converged.of(counts.watched).min(counts.watched);
    if counts.converged + counts.failed >= need {
        Gate::Pass
    } else {
        Gate::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fleet(n: usize) -> Vec<Ranked> {
        let names: Vec<String> = (0..n).map(|i| format!("n{i:03}")).collect();
        ranked("r1", names.iter().map(String::as_str))
    }

    fn released(r: &[Ranked], t: f64) -> usize {
        r.iter().filter(|m| m.rank <= t).count()
    }

    #[test]
    fn batches_are_exact_and_the_last_releases_everyone() {
        let r = fleet(10);
        let mut t = 0.0;
        t = next_threshold(&r, t, 1);
        assert_eq!(released(&r, t), 1, "the canary");
        t = next_threshold(&r, t, 3);
        assert_eq!(released(&r, t), 4);
        t = next_threshold(&r, t, 3);
        assert_eq!(released(&r, t), 7);
        t = next_threshold(&r, t, 3);
        assert_eq!(t, 1.0, "the last batch releases nodes not yet known too");
    }

    #[test]
    fn rollback_takes_back_the_highest_ranks_first() {
        let r = fleet(10);
        let t = 1.0;
        let t1 = previous_threshold(&r, t, 3).unwrap();
        assert_eq!(released(&r, t1), 7);
        assert!(
            r[7..].iter().all(|m| m.rank > t1),
            "the three highest went back"
        );
        let t2 = previous_threshold(&r, t1, 5).unwrap();
        assert_eq!(released(&r, t2), 2);
        assert_eq!(
            previous_threshold(&r, t2, 2),
            None,
            "the last batch ends the rollout"
        );
    }

    #[test]
    fn sizes() {
        let one = |a| BatchSizes(vec![a]);
        assert_eq!(batch_size(0, 1, &one(Amount::Percent(25.0)), 10), 1);
        assert_eq!(batch_size(1, 1, &one(Amount::Percent(25.0)), 10), 3);
        assert_eq!(batch_size(0, 0, &one(Amount::Count(4)), 10), 4);
        assert_eq!(batch_size(3, 0, &one(Amount::Percent(10.0)), 3), 1);
        let list = BatchSizes(vec![
            Amount::Count(1),
            Amount::Count(5),
            Amount::Percent(25.0),
        ]);
        let sizes: Vec<usize> = (0..5).map(|i| batch_size(i, 0, &list, 100)).collect();
        assert_eq!(sizes, [1, 5, 25, 25, 25], "the last size repeats");
        let sizes: Vec<usize> = (0..4).map(|i| batch_size(i, 2, &list, 100)).collect();
        assert_eq!(sizes, [2, 1, 5, 25], "the canary comes first");
    }

    #[test]
    fn the_gate() {
        let all = Amount::Percent(100.0);
        let c = |watched, converged, failed| GateCounts {
            watched,
            converged,
            failed,
        };
        assert_eq!(gate(c(4, 3, 0), 0, all), Gate::Wait);
        assert_eq!(gate(c(4, 4, 0), 0, all), Gate::Pass);
        assert_eq!(
            gate(c(4, 3, 1), 1, all),
            Gate::Pass,
            "a tolerated failure is settled"
        );
        assert_eq!(
            gate(c(4, 2, 2), 1, all),
            Gate::TooManyFailures {
                failed: 2,
                allowed: 1
            }
        );
        assert_eq!(gate(c(10, 8, 0), 0, Amount::Percent(80.0)), Gate::Pass);
        assert_eq!(
            gate(c(0, 0, 0), 0, all),
            Gate::Pass,
            "nobody present: nothing to wait for"
        );
        assert_eq!(c(4, 1, 1).pending(), 2);
    }

    proptest! {
        #[test]
        fn releasing_in_batches_never_unreleases_and_sizes_are_exact(
            n in 1usize..200, canary in 0u32..4, sizes in proptest::collection::vec(1u32..50, 1..4)
        ) {
            let r = fleet(n);
            let mut t = 0.0;
            let mut before: Vec<bool> = r.iter().map(|m| m.rank <= t).collect();
            let batches = BatchSizes(sizes.iter().map(|s| Amount::Count(*s)).collect());
            let mut index = 0;
            while t < 1.0 {
                let k = batch_size(index, canary, &batches, n);
                let was = released(&r, t);
                t = next_threshold(&r, t, k);
                let now = released(&r, t);
                prop_assert!(now == (was + k).min(n), "{} + {} -> {}", was, k, now);
                let after: Vec<bool> = r.iter().map(|m| m.rank <= t).collect();
                prop_assert!(before.iter().zip(&after).all(|(b, a)| !b || *a), "a node flipped back");
                before = after;
                index += 1;
            }
            prop_assert_eq!(released(&r, t), n);
        }

        #[test]
        fn rollback_returns_at_most_one_batch_at_a_time(n in 1usize..200, batch in 1usize..50) {
            let r = fleet(n);
            let mut t = Some(1.0);
            let mut was = n;
            while let Some(threshold) = t {
                t = previous_threshold(&r, threshold, batch);
                let now = t.map_or(0, |t| released(&r, t));
                prop_assert!(was - now <= batch && was > now);
                was = now;
            }
        }
    }
}
