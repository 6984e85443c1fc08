//! Deterministic pseudo-random values for synthetic test and benchmark inputs (no `rand`
//! dependency, and the same values on every platform and run).

/// An endless xorshift64 stream of values in [0, 1), multiples of 2^-24, from `seed` (any
/// value; the same seed gives the same stream).
pub fn unit_floats(seed: u64) -> impl Iterator<Item = f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::repeat_with(move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    })
}
