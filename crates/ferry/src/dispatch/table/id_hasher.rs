//! The table's hash of request ids. Ids are the master's own counter, never a
//! peer's choice, so nothing can aim collisions at the table, and SipHash's defence
//! (three hashes per request: insert, lookup, remove) buys nothing. A multiply by
//! the golden ratio spreads consecutive ids over both the low bits hashbrown picks a
//! bucket with and the top seven it keeps as a tag.

use std::hash::{BuildHasherDefault, Hasher};

pub type BuildIdHasher = BuildHasherDefault<IdHasher>;

#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write_u64(&mut self, n: u64) {
        // From the initial 0 this is `id * K`; later writes mix into what came before.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write(&mut self, bytes: &[u8]) {
        // The table's keys are u64s and never come here; other input still hashes.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn hash(id: u64) -> u64 {
        let mut h = IdHasher::default();
        h.write_u64(id);
        h.finish()
    }

    #[test]
    fn consecutive_ids_spread_over_buckets_and_tags() {
        // 4096 ids in flight at once, as a busy worker might have: with 8192
        // buckets, how many distinct buckets (low 13 bits) and tags (top 7) they use.
        let buckets: HashSet<u64> = (1..=4096).map(|id| hash(id) & 8191).collect();
        let tags: HashSet<u64> = (1..=4096).map(|id| hash(id) >> 57).collect();
        assert!(buckets.len() > 4000, "{} buckets", buckets.len());
        assert_eq!(tags.len(), 128);
        // A long-lived worker's ids are large: they spread as well.
        let far: HashSet<u64> = (0..4096).map(|i| hash((1 << 40) + i) & 8191).collect();
        assert!(far.len() > 4000, "{} buckets", far.len());
    }

    #[test]
    fn other_input_still_hashes() {
        let mut a = IdHasher::default();
        a.write(b"ab");
        let mut b = IdHasher::default();
        b.write(b"ba");
        assert_ne!(a.finish(), b.finish());
    }
}
