//! Opening the ledger: the one place the CLI picks a Storage implementation.

use autoresearch_core::{ComponentRegistry, Storage, StorageError};
use autoresearch_store::{RedbConfig, RedbStorage};
use std::path::Path;
use std::sync::Arc;

/// Opens (creating if needed) the redb ledger at `path`.
pub fn open(path: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    let store = RedbStorage::open(path, RedbConfig::default())
        .map_err(|e| in_context(e, path, "opening ledger"))?;
    Ok(Arc::new(store))
}

/// `e` with "{doing} {path}" before it, unless its own message already
/// names the ledger (a damaged file's error does): the path once, not
/// twice.
fn in_context(e: StorageError, path: &Path, doing: &str) -> anyhow::Error {
    let named = e.to_string().contains(&path.display().to_string());
    let e = anyhow::Error::new(e);
    if named {
        e
    } else {
        e.context(format!("{doing} {}", path.display()))
    }
}

/// Opens the existing redb ledger at `path` for reading only (the read
/// commands): it never creates the file or its directory, and works on a
/// read-only filesystem and beside a running `autoresearch run`.
/// A file a crashed writer left unclean is repaired by a read-write open
/// first (the file exists; nothing is created), when the filesystem allows.
pub fn open_read_only(path: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    let store = match RedbStorage::open_read_only(path) {
        Err(StorageError::NeedsRepair { .. }) => {
            drop(open(path)?);
            RedbStorage::open_read_only(path)
        }
        other => other,
    }
    .map_err(|e| in_context(e, path, "opening read-only ledger"))?;
    Ok(Arc::new(store))
}

/// The registry every command uses: the standard components plus the
/// runner's `RunReport`.
pub fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::standard();
    autoresearch_runner::register(&mut r).expect("RunReport is not a standard name");
    Arc::new(r)
}

/// `s` with every character but ASCII letters, digits, `-`, `_` and `.`
/// replaced by `with`: safe in a file name and in a git ref component.
pub fn plain_chars(s: &str, with: char) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                with
            }
        })
        .collect()
}

/// The OS lock file of `world`'s lease (see `autoresearch_controller`'s
/// lease): beside the ledger, so that every process using this ledger file
/// meets the same lock, from any checkout: `{ledger}.locks/{name}-{hash}.lock`,
/// the world name made safe for a file name plus a stable hash of the whole
/// name (FNV-1a, 64 bits), so that two names made alike stay apart. The
/// ledger's path is resolved first (symbolic links, `..`, the working
/// directory), so that a second path to the same file (a symlink) meets
/// the same lock; a hard link or a bind mount of the file under another
/// path does not (give every process the same path).
pub fn lease_lock_path(ledger: &Path, world: &str) -> std::path::PathBuf {
    let ledger = ledger
        .canonicalize()
        .unwrap_or_else(|_| ledger.to_path_buf());
    let safe = plain_chars(world, '_');
    let hash = world.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut dir = ledger.as_os_str().to_owned();
    dir.push(".locks");
    std::path::PathBuf::from(dir).join(format!("{safe}-{hash:016x}.lock"))
}
