//! A tiny deterministic xorshift and random byte changes, for the parsers'
//! property tests (test builds only; no crate for it).

/// The next value of the xorshift whose state is `state` (not zero).
pub fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Change `v` (not empty) `times` times at random places: a byte replaced
/// by one of `bytes`, one of `bytes` inserted, or a byte removed.
pub fn mutate(state: &mut u64, v: &mut Vec<u8>, bytes: &[u8], times: u64) {
    for _ in 0..times {
        let i = (next(state) as usize) % v.len();
        match next(state) % 3 {
            0 => v[i] = bytes[(next(state) as usize) % bytes.len()],
            1 => v.insert(i, bytes[(next(state) as usize) % bytes.len()]),
            _ => {
                v.remove(i);
            }
        }
    }
}
