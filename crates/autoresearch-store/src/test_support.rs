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

/// The redb file at `path` opened directly, as the store opens it
/// (several processes may write): for tests that edit tables the way an
/// older build or damage would.
pub(crate) fn raw_db(path: &std::path::Path) -> redb::Database {
    redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap()
}
