//! The redb ledger with real processes (the `ledger_child` binary): kill -9
//! in the middle of appending, two writers racing for one world, and a
//! reader following a writer, all on one file.

use autoresearch_core::{ComponentRegistry, Storage, Tick, TickRecord, WorldId, ledger};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD: &str = env!("CARGO_BIN_EXE_ledger_child");
const TIMEOUT: Duration = Duration::from_secs(120);

/// The child's component, field for field.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
struct Mark {
    writer: String,
    seq: u64,
}

/// A child in its own process group, killed with the group when dropped.
/// Stdout lines arrive on a channel; stderr goes to a file.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = Command::new(CHILD)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            stderr,
        }
    }

    fn kill_group(&mut self) {
        // SAFETY: kill(2) with the negated pid of a group this test created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// Waits for exit (bounded), then returns every stdout line.
    fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                self.kill_group();
                panic!("child timed out");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines: Vec<String> = self.lines.try_iter().collect();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(status.success(), "child failed: {status}: {err}");
        lines
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill_group();
        }
    }
}

/// `committed <world> <seq> <tick>` lines, as (world, seq, tick).
fn commits(lines: &[String]) -> Vec<(String, u64, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] == "committed").then(|| {
                (
                    f[1].to_string(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                )
            })
        })
        .collect()
}

fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::new();
    r.register::<Mark>("Mark").unwrap();
    Arc::new(r)
}

fn open(path: &Path) -> Arc<dyn Storage> {
    Arc::new(RedbStorage::open(path, RedbConfig::default()).unwrap())
}

/// Checks that `world` is whole: ticks 1..=head contiguous and decodable,
/// each spawning exactly one mark, time travel through snapshots agreeing
/// with a plain replay at every tick. Returns the mark of every tick.
async fn marks_of(st: &Arc<dyn Storage>, world: WorldId) -> BTreeMap<u64, Mark> {
    let reg = registry();
    let head = st.world(world).await.unwrap().head;
    let records: Vec<TickRecord> = ledger::read_records(st.as_ref(), world, Tick(1), head)
        .await
        .unwrap();
    let mut replay = autoresearch_core::State::empty();
    let mut marks = BTreeMap::new();
    for rec in &records {
        replay.apply(world, rec).unwrap();
        let via_snapshots = ledger::state_at(st.as_ref(), world, rec.tick)
            .await
            .unwrap();
        assert_eq!(via_snapshots, replay, "{world} tick {}", rec.tick);
        let sets: Vec<Mark> = rec
            .changes
            .iter()
            .filter_map(|c| match c {
                autoresearch_core::Change::Set { value, .. } => {
                    Some(reg.decode::<Mark>(world, value).unwrap())
                }
                _ => None,
            })
            .collect();
        assert_eq!(sets.len(), 1, "{world} tick {} holds one mark", rec.tick);
        marks.insert(rec.tick.0, sets[0].clone());
    }
    assert_eq!(marks.len() as u64, head.0);
    marks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_loses_no_reported_tick() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let p = path.to_str().unwrap();
    // A pseudo-random kill point per run, so that kills land in different
    // places of the commit path over many runs.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    for (round, wait_for) in [(0, 5 + nanos % 40), (1, 3 + nanos % 17)] {
        let tag = format!("k{round}");
        let mut child = Proc::spawn(dir.path(), &tag, &["append", p, "3", &tag, "0", "w"]);
        let mut seen = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while seen.len() < wait_for {
            let left = deadline.saturating_duration_since(Instant::now());
            match child.lines.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(e) => panic!("no output from the writer: {e}"),
            }
        }
        child.kill_group();
        // Lines written before the kill are reports too.
        seen.extend(child.lines.iter());
        let reported = commits(&seen);
        assert!(reported.len() >= wait_for);

        let st = open(&path);
        let w = st.find_world("w").await.unwrap().unwrap();
        let marks = marks_of(&st, w.id).await;
        for (world, seq, tick) in &reported {
            assert_eq!(world, "w");
            assert_eq!(
                marks.get(tick),
                Some(&Mark {
                    writer: tag.clone(),
                    seq: *seq
                }),
                "reported tick {tick} is stored intact"
            );
        }
        // Nothing beyond what was reported, bar the one commit that may
        // have landed between its fsync and its report.
        let last = reported.last().map_or(0, |r| r.2);
        assert!(
            w.head.0 <= last + 1,
            "head {} vs last report {last}",
            w.head
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_for_one_world_and_a_reader_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let p = path.to_str().unwrap();
    {
        let st = open(&path);
        for name in ["shared", "own-a", "own-b"] {
            st.create_world(name).await.unwrap();
        }
    }
    const N: u64 = 40;
    let n = N.to_string();
    let a = Proc::spawn(
        dir.path(),
        "a",
        &["append", p, "4", "a", &n, "shared", "own-a"],
    );
    let b = Proc::spawn(
        dir.path(),
        "b",
        &["append", p, "4", "b", &n, "shared", "own-b"],
    );
    let reader = Proc::spawn(dir.path(), "reader", &["read", p, "shared", "1500"]);
    let mut want: BTreeMap<String, BTreeMap<u64, Mark>> = BTreeMap::new();
    for (tag, lines) in [("a", a.finish()), ("b", b.finish())] {
        let reported = commits(&lines);
        eprintln!("{tag}: {:?}", lines.last());
        assert_eq!(reported.len() as u64, N, "{tag} reported every commit");
        for (world, seq, tick) in reported {
            let mark = Mark {
                writer: tag.to_string(),
                seq,
            };
            let earlier = want.entry(world.clone()).or_default().insert(tick, mark);
            assert!(earlier.is_none(), "{world} tick {tick} reported twice");
        }
    }
    let reads = reader.finish();

    // Every world holds exactly the ticks its writers reported, each with
    // the mark reported for it: nothing lost, nothing doubled.
    let st = open(&path);
    for (name, head) in [("shared", N), ("own-a", N / 2), ("own-b", N / 2)] {
        let info = st.find_world(name).await.unwrap().unwrap();
        assert_eq!(info.head.0, head, "{name} head");
        assert_eq!(marks_of(&st, info.id).await, want[name], "{name}");
    }
    assert!(
        reads.last().is_some_and(|l| l.starts_with("reads ")),
        "reader finished: {reads:?}"
    );
    assert!(reads.iter().filter(|l| l.starts_with("read ")).count() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_held_by_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    open(&path).create_world("w").await.unwrap();
    let mut holder = Proc::spawn(
        dir.path(),
        "holder",
        &["hold", path.to_str().unwrap(), "60000"],
    );
    let line = holder.lines.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(line, "held");
    let err = RedbStorage::open(&path, RedbConfig::default())
        .err()
        .unwrap();
    assert!(
        matches!(&err, autoresearch_core::StorageError::Locked { path: p, .. } if p.ends_with("ledger.redb")),
        "{err}"
    );
    holder.kill_group();
    // Once the holder is gone (even killed), the file opens, intact.
    let st = open(&path);
    assert!(st.find_world("w").await.unwrap().is_some());
}
