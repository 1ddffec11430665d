//! When a check runs: at `splay + k × interval` since the epoch, where the splay is a stable
//! hash of the check's name. Runs never drift, a restart keeps the phase, checks with the same
//! interval spread over it instead of firing together, and the server and every agent agree on
//! the grid without talking.

use std::time::Duration;

/// The offset of a check's runs within its interval, in ms: a hash of its name, stable across
/// restarts, machines and versions (FNV-1a: tiny and good enough to spread names).
pub fn splay(name: &str, interval: Duration) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let interval_ms = interval_ms(interval);
    i64::try_from(hash % interval_ms.unsigned_abs()).unwrap_or(0)
}

/// The first run time strictly after `now` (ms since the epoch) on a check's grid.
pub fn next_run(now: i64, interval: Duration, splay: i64) -> i64 {
    let interval_ms = interval_ms(interval);
    let k = (now - splay).div_euclid(interval_ms) + 1;
    splay + k * interval_ms
}

fn interval_ms(interval: Duration) -> i64 {
    i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fall_on_a_fixed_grid() {
        let interval = Duration::from_secs(30);
        let s = splay("ams1-dns", interval);
        assert!((0..30_000).contains(&s));
        assert_eq!(s, splay("ams1-dns", interval), "stable");
        assert_ne!(s, splay("ams1-ldap", interval), "spread");
        let first = next_run(1_000_000, interval, s);
        assert!(first > 1_000_000 && first <= 1_030_000);
        assert_eq!((first - s) % 30_000, 0);
        // Asking again at the due time gives the next slot, never the same one twice.
        assert_eq!(next_run(first, interval, s), first + 30_000);
        // A late wake-up does not shift later runs.
        assert_eq!(next_run(first + 7_000, interval, s), first + 30_000);
    }

    #[test]
    fn names_spread_over_the_interval() {
        let interval = Duration::from_secs(60);
        let mut buckets = [0u32; 6];
        for i in 0..600 {
            let s = splay(&format!("check-{i}"), interval);
            buckets[usize::try_from(s / 10_000).unwrap_or(0)] += 1;
        }
        // 100 expected per 10-second bucket; a hash that clumps would miss by far more.
        assert!(
            buckets.iter().all(|&n| (60..=140).contains(&n)),
            "{buckets:?}"
        );
    }
}
