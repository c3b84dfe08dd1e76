//! Held-out confirmation in the loop itself (real git, real processes, the
//! in-memory ledger): a kill requested while the confirm command runs, and
//! a confirmed keep with its record and cost.

use autoresearch_controller::{Config, Controller, LocalExecutor, LoopConfig, Shutdown};
use autoresearch_core::lifecycle::attempts;
use autoresearch_core::{
    ComponentRegistry, ConfirmStatus, Confirmation, MemoryStorage, Storage, World,
};
use autoresearch_test_support::evidence::MinScore;
use autoresearch_test_support::git::{commit_all, git, init_main};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    ctl: PathBuf,
    storage: Arc<dyn Storage>,
}

/// A repository scoring 1.0; the proposer writes `0.5`; the confirm command
/// prints `held: 1`, after touching `ctl/in_confirm` and sleeping when
/// `ctl/slow` exists and the checkout is a candidate.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let ctl = tmp.path().join("ctl");
    std::fs::create_dir(&repo).unwrap();
    std::fs::create_dir(&ctl).unwrap();
    init_main(&repo);
    std::fs::write(repo.join("score.txt"), "1.0\n").unwrap();
    commit_all(&repo, "start");
    Fixture {
        _tmp: tmp,
        repo,
        ctl,
        storage: Arc::new(MemoryStorage::new(Some(16))),
    }
}

impl Fixture {
    fn config(&self) -> LoopConfig {
        let c = self.ctl.display();
        let text = format!(
            r#"name = "exp"
branch = "main"
[propose]
command = "echo 0.5 > score.txt"
[evaluate]
command = 'echo "score: $(cat score.txt)"'
[confirm]
command = '''
if [ -f {c}/slow ] && [ "$(cat score.txt)" = "0.5" ]; then touch {c}/in_confirm; sleep 30; fi
echo "held: 1"
'''
metric = "held"
direction = "min"
[run]
sandbox = "none"
"#
        );
        let config = Config::parse(&text, &self.repo.join("autoresearch.toml")).unwrap();
        let mut cfg = LoopConfig::from_config(&config);
        cfg.iterations = 1;
        cfg.kill_grace = Duration::from_millis(200);
        cfg
    }

    async fn world(&self) -> World {
        World::open(
            self.storage.clone(),
            Arc::new(ComponentRegistry::standard()),
            "autoresearch:exp",
        )
        .await
        .unwrap()
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_kill_during_the_confirmation_is_an_interrupted_crash_never_a_keep() {
    let f = fixture();
    std::fs::write(f.ctl.join("slow"), "").unwrap();
    let start = git(&f.repo, &["rev-parse", "main"]);
    let cfg = f.config();
    let exec = Arc::new(LocalExecutor::new(cfg.state_dir.clone()));
    let shutdown = Shutdown::new();
    let c = Controller::open(cfg, f.storage.clone(), Arc::new(MinScore), exec)
        .await
        .unwrap()
        .with_shutdown(shutdown.clone());
    let running = tokio::spawn(Arc::new(c).run());
    let flag = f.ctl.join("in_confirm");
    tokio::task::spawn_blocking(move || wait_for(&flag))
        .await
        .unwrap();
    shutdown.escalate();
    shutdown.escalate();
    let s = running.await.unwrap().unwrap();
    assert_eq!((s.kept, s.crashed), (0, 1), "{s:?}");
    assert_eq!(git(&f.repo, &["rev-parse", "main"]), start);
    let w = f.world().await;
    let all = attempts(&w, "exp");
    let cand = &all[1];
    let o = cand.outcome.as_ref().unwrap();
    assert_eq!(
        (o.status.as_str(), o.reason.as_str()),
        ("crash", "interrupted")
    );
    let conf = w.get::<Confirmation>(cand.entity).unwrap();
    assert_eq!(conf.status, ConfirmStatus::Interrupted);
    // The incumbent's reference value was measured before the kill and kept.
    let base = w.get::<Confirmation>(all[0].entity).unwrap();
    assert_eq!(
        (base.status, base.value),
        (ConfirmStatus::Measured, Some(1.0))
    );
}

#[tokio::test]
async fn a_confirmed_candidate_is_kept_with_its_confirmation_in_the_descriptor() {
    let f = fixture();
    let cfg = f.config();
    let exec = Arc::new(LocalExecutor::new(cfg.state_dir.clone()));
    let c = Controller::open(cfg, f.storage.clone(), Arc::new(MinScore), exec)
        .await
        .unwrap();
    let s = Arc::new(c).run().await.unwrap();
    assert_eq!(s.kept, 1, "{s:?}");
    let w = f.world().await;
    let all = attempts(&w, "exp");
    let head = w.branch_head("exp").unwrap().1;
    assert_eq!(head.run_id, all[1].run.run_id);
    let d = head.descriptor().unwrap();
    assert_eq!(d["confirm"]["status"], "confirmed");
    assert_eq!(d["confirm"]["value"], 1.0);
    assert_eq!(d["confirm"]["incumbent_value"], 1.0);
    // Equal held-out values pass a tolerance of 0.
    let cost = w.get::<autoresearch_core::RunCost>(all[1].entity).unwrap();
    assert_eq!(cost.jobs, 3, "propose, evaluate, confirm: {cost:?}");
}
