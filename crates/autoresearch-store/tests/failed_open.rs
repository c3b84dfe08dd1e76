//! A ledger whose table catalogue is damaged (one bit flipped in a table
//! definition, a file from a user's trial): a read-write open fails
//! cleanly, and leaves the file as readable as it was found, however often
//! it is tried; `check_structure` (what `doctor` runs) names the damage
//! that replays of the worlds never read. (Before the open closed the
//! database outside the unwinding panic, a release build's failed open
//! left redb's recovery flag set, and every later open failed.)

use autoresearch_core::Storage;
use autoresearch_store::{RedbConfig, RedbStorage};
use std::path::Path;

/// The damaged ledger, unpacked into `dir`.
fn damaged(dir: &Path) -> std::path::PathBuf {
    let packed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/damaged-table-tree.redb.zst"),
    )
    .unwrap();
    let path = dir.join("ledger.redb");
    std::fs::write(&path, zstd::decode_all(packed.as_slice()).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn a_failed_open_leaves_a_damaged_ledger_readable_and_the_check_names_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged(dir.path());
    let before = std::fs::read(&path).unwrap();
    for attempt in 0..3 {
        let err = match RedbStorage::open(&path, RedbConfig::default()) {
            Ok(_) => panic!("attempt {attempt}: the damaged file opened for writing"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("damaged"), "attempt {attempt}: {err}");
        // Still readable, as before the failed open.
        let ro = RedbStorage::open_read_only(&path).unwrap();
        let worlds = ro.list_worlds().await.unwrap();
        assert_eq!(worlds.len(), 1, "attempt {attempt}");
        let records = autoresearch_core::ledger::read_records(
            &ro,
            worlds[0].id,
            autoresearch_core::Tick(1),
            worlds[0].head,
        )
        .await
        .unwrap();
        assert_eq!(records.len() as u64, worlds[0].head.0, "attempt {attempt}");
        let problems = ro.check_structure().await.unwrap();
        assert_eq!(problems.len(), 1, "attempt {attempt}: {problems:?}");
        assert!(problems[0].contains("cannot all be read"), "{problems:?}");
    }
    // Only redb's header may differ (a clean close rewrites it): every page
    // after the first is as it was.
    let after = std::fs::read(&path).unwrap();
    assert_eq!(before.len(), after.len());
    assert_eq!(before[4096..], after[4096..]);
}

#[tokio::test]
async fn a_sound_ledger_has_no_structural_problem() {
    let dir = tempfile::tempdir().unwrap();
    let st = RedbStorage::open(&dir.path().join("ok.redb"), RedbConfig::default()).unwrap();
    st.create_world("w").await.unwrap();
    assert!(st.check_structure().await.unwrap().is_empty());
}
