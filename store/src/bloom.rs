//! Bloom filters as bytes in DuckDB's `BIT` order (first bit = high bit of byte 0), probed by
//! double hashing over FNV-1a, which never changes, so stored filters stay valid across builds.
//! Attribute search stores one per block of spans; the trace summarizer keeps one in memory.

/// Bits per element: with [`PROBES`] probes about 1% of absent elements pass.
const BITS_PER_ELEMENT: usize = 10;
const PROBES: u64 = 7;
const MIN_BITS: usize = 1024;

/// FNV-1a of `bytes`.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// An empty filter for `elements` elements: a power of two of bits.
pub(crate) fn empty(elements: usize) -> Vec<u8> {
    let bits = (elements * BITS_PER_ELEMENT).max(MIN_BITS).next_power_of_two();
    vec![0u8; bits / 8]
}

/// How many elements `filter` was sized for.
pub(crate) fn capacity(filter: &[u8]) -> usize {
    filter.len() * 8 / BITS_PER_ELEMENT
}

pub(crate) fn insert(filter: &mut [u8], hash: u64) {
    for bit in probes(hash, filter.len() as u64 * 8) {
        filter[(bit / 8) as usize] |= 0x80 >> (bit % 8);
    }
}

/// Whether `filter` may hold the element hashed to `hash`.
pub(crate) fn holds(filter: &[u8], hash: u64) -> bool {
    probes(hash, filter.len() as u64 * 8).all(|bit| filter[(bit / 8) as usize] & (0x80 >> (bit % 8)) != 0)
}

/// The bit positions of an element in a filter of `bits` bits.
fn probes(hash: u64, bits: u64) -> impl Iterator<Item = u64> {
    let (h1, h2) = (hash & 0xffff_ffff, hash >> 32);
    (0..PROBES).map(move |i| (h1 + i * h2) % bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_holds_what_was_put_in_and_little_else() {
        let hash = |i: u32| fnv1a(i.to_le_bytes());
        let mut filter = empty(5000);
        (0..5000).for_each(|i| insert(&mut filter, hash(i)));
        assert!((0..5000).all(|i| holds(&filter, hash(i))));
        let false_positives = (5000..105_000).filter(|&i| holds(&filter, hash(i))).count();
        assert!(
            false_positives < 2000,
            "{false_positives} of 100000 absent elements pass"
        );
        assert!(capacity(&filter) >= 5000);
    }

    #[test]
    fn the_hash_is_fnv1a_as_stored_filters_were_built_with() {
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
