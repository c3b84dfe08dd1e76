//! Newtypes for the identifiers that cross layer boundaries.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A world in a ledger. Allocated by the storage backend, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorldId(pub u64);

/// A tick of a world. Tick 0 is the empty world; the first `commit()` makes tick 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Tick(pub u64);

/// A stable entity id, allocated by its world and never reused, even after a
/// despawn. Unlike `hecs::Entity` it survives snapshots, replays and forks.
///
/// Every materialized entity carries its `EntityId` as a hecs component, so
/// `world.hecs().query::<(&EntityId, &Run)>()` yields stable ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId(pub u64);

impl Tick {
    /// The empty world, before the first commit.
    pub const ZERO: Tick = Tick(0);

    /// The tick after this one.
    pub fn next(self) -> Tick {
        Tick(self.0 + 1)
    }
}

impl fmt::Display for WorldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "world#{}", self.0)
    }
}

impl fmt::Display for Tick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// A git commit id (full hex, as git prints it), carried between the loop,
/// its executors and the ledger. Stored in components as plain text.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommitHash(pub String);

impl CommitHash {
    /// How many hex digits [`CommitHash::short`] keeps (git's default abbreviation).
    pub const SHORT_LEN: usize = 7;

    /// The first [`CommitHash::SHORT_LEN`] characters, as people read a
    /// commit (the whole text when shorter).
    pub fn short(&self) -> &str {
        short_commit(&self.0)
    }

    /// The full hash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether no commit is recorded (empty text).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The short form of a commit hash held as text (see [`CommitHash::short`]).
pub fn short_commit(commit: &str) -> &str {
    let end = commit
        .char_indices()
        .nth(CommitHash::SHORT_LEN)
        .map_or(commit.len(), |(i, _)| i);
    &commit[..end]
}

/// The id of a run (an attempt), unique within a ledger; Results and Votes
/// join their run by it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_id {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $t {
            fn from(s: String) -> Self {
                $t(s)
            }
        }

        impl From<&str> for $t {
            fn from(s: &str) -> Self {
                $t(s.to_string())
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

text_id!(CommitHash);
text_id!(RunId);

/// Milliseconds since the Unix epoch, the time unit of every record (0 = not set).
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
