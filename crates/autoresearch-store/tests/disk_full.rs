//! A write that fails for lack of space names the cause and the file, and
//! so does every later one (not redb's bare "Previous I/O error occurred").
//!
//! The disk is made "full" with RLIMIT_FSIZE (writes past the limit fail
//! with EFBIG), which applies to the whole process: this file holds one
//! test, so its test binary is a process of its own.

use autoresearch_core::{Change, EntityId, Storage, StorageError, Tick, TickRecord};
use autoresearch_store::{RedbConfig, RedbStorage};
use std::error::Error as _;

fn tick(t: u64, bytes: usize) -> TickRecord {
    TickRecord {
        tick: Tick(t),
        at_ms: 1,
        changes: vec![
            Change::Spawn {
                entity: EntityId(t),
            },
            Change::Set {
                entity: EntityId(t),
                component: "Blob".into(),
                value: vec![t as u8; bytes],
            },
        ],
    }
}

/// Whether `e`'s source chain holds an `io::Error` with `errno`.
fn has_errno(e: &StorageError, errno: i32) -> bool {
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            == Some(errno)
        {
            return true;
        }
        if let Some(redb::Error::Io(io)) = c.downcast_ref::<redb::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

#[tokio::test]
async fn a_full_disk_names_the_cause_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.redb");
    let st = RedbStorage::open(&path, RedbConfig::default()).unwrap();
    let w = st.create_world("w").await.unwrap().id;
    st.append(w, tick(1, 10), None).await.unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    // SAFETY: plain libc calls on this process: ignore SIGXFSZ (so that a
    // write past the limit fails with EFBIG instead of killing the
    // process), then cap the size of files it writes at the ledger's size.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: size,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let mut first = None;
    for t in 2..200 {
        if let Err(e) = st.append(w, tick(t, 256 << 10), None).await {
            first = Some((t, e));
            break;
        }
    }
    let (t, err) = first.expect("appends past the size limit must fail");
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Backend { .. }), "{msg}");
    assert!(msg.contains("full.redb"), "{msg}");
    assert!(has_errno(&err, libc::EFBIG), "{msg}");
    // Later writes fail too, still naming the first cause.
    let again = st.append(w, tick(t, 10), None).await.unwrap_err();
    let msg = again.to_string();
    assert!(msg.contains("full.redb"), "{msg}");
    assert!(has_errno(&again, libc::EFBIG), "{msg}");
    // SAFETY: as above; lifts the cap.
    unsafe {
        let limit = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
    }
    drop(st);
    // The failed write left the file unclean: a read-only open says so,
    // a read-write open repairs it, and nothing of the failed ticks was
    // stored.
    let err = RedbStorage::open_read_only(&path).err().unwrap();
    assert!(
        matches!(&err, StorageError::NeedsRepair { path: p } if *p == path),
        "{err}"
    );
    drop(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let st = RedbStorage::open_read_only(&path).unwrap();
    assert_eq!(st.world(w).await.unwrap().head, Tick(t - 1));
}
