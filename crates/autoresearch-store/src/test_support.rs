//! What the store's randomized tests share: the standard registry and a
//! small deterministic generator.

use autoresearch_core::ComponentRegistry;
use std::sync::Arc;

/// The standard component registry, shared.
pub(crate) fn registry() -> Arc<ComponentRegistry> {
    Arc::new(ComponentRegistry::standard())
}

/// xorshift64*: a small deterministic generator, so that a failing seed
/// replays.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 pseudo-random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One element of `v` (not empty).
    pub(crate) fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}
