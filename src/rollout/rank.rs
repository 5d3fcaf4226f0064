//! The stable rank of a node in a rollout, and the release rule.
//!
//! ```text
//! u(N) = (first 8 bytes of SHA-256(rollout_id + "/" + N), big-endian, >> 11) / 2^53
//! node N is released  iff  u(N) <= t
//! ```
//!
//! The top 53 bits make `u` exact in an IEEE double, so every platform and
//! every language computes the same rank, in [0, 1). Node names cannot
//! contain `/`, so `id/N` is unambiguous. In Ruby:
//! `(Digest::SHA256.digest("#{id}/#{node}")[0, 8].unpack1('Q>') >> 11) / 2.0**53`.

use sha2::{Digest, Sha256};

/// 2^53, the scale of a rank.
const SCALE: f64 = (1u64 << 53) as f64;

/// The rank `u(N)` of `node` in the rollout `rollout_id`, in [0, 1).
pub fn rank(rollout_id: &str, node: &str) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(rollout_id.as_bytes());
    hasher.update(b"/");
    hasher.update(node.as_bytes());
    let digest = hasher.finalize();
    let top = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (top >> 11) as f64 / SCALE
}

/// Whether a node of rank `rank` is released at threshold `threshold`.
pub fn is_released(rank: f64, threshold: f64) -> bool {
    rank <= threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rank_is_pinned_across_platforms() {
        // Computed independently: python3 -c 'import hashlib;
        // print((int.from_bytes(hashlib.sha256(b"web-2.4.1/web-01").digest()[:8], "big") >> 11) / 2**53)'
        assert_eq!(rank("web-2.4.1", "web-01"), PINNED_WEB_01);
    }

    const PINNED_WEB_01: f64 = 0.6647369042861586;

    #[test]
    fn threshold_zero_releases_nobody_in_practice_and_one_releases_all() {
        let names: Vec<String> = (0..1000).map(|i| format!("node-{i}")).collect();
        assert!(names
            .iter()
            .all(|n| !is_released(rank("r", n), 0.0) || rank("r", n) == 0.0));
        assert!(names.iter().all(|n| is_released(rank("r", n), 1.0)));
    }

    #[test]
    fn ranks_differ_between_rollouts() {
        let same = (0..100)
            .filter(|i| {
                let n = format!("n{i}");
                rank("a", &n) == rank("b", &n)
            })
            .count();
        assert_eq!(same, 0);
    }

    proptest! {
        #[test]
        fn rank_is_in_unit_interval_and_deterministic(id in "[a-z0-9.-]{1,20}", node in "[a-z0-9.-]{1,30}") {
            let u = rank(&id, &node);
            prop_assert!((0.0..1.0).contains(&u));
            prop_assert_eq!(u, rank(&id, &node));
        }

        #[test]
        fn released_fraction_tracks_the_threshold(id in "[a-z0-9-]{1,12}", t in 0.0f64..=1.0) {
            let released = (0..10_000)
                .filter(|i| is_released(rank(&id, &format!("node-{i}")), t))
                .count();
            let fraction = released as f64 / 10_000.0;
            prop_assert!((fraction - t).abs() <= 0.02, "t={} fraction={}", t, fraction);
        }

        #[test]
        fn raising_the_threshold_never_unreleases(id in "[a-z]{1,8}", a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            for i in 0..200 {
                let u = rank(&id, &format!("n{i}"));
                prop_assert!(!is_released(u, lo) || is_released(u, hi));
            }
        }
    }
}
