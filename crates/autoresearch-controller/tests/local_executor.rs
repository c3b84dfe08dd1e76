//! The local executor on its own, on real git repositories in temp dirs:
//! the changed paths it reports must be exactly what `git diff` says, and
//! the candidate is always a single child of the job's commit.

use autoresearch_controller::LocalExecutor;
use autoresearch_controller::git::Git;
use autoresearch_core::exec::{Executor, Job, Limits};
use autoresearch_test_support::git::{commit_all, git};
use std::path::Path;
use std::time::Duration;

/// A repository with a few files, one in a directory, committed.
fn repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("d")).unwrap();
    std::fs::write(dir.join("a.txt"), "a\n").unwrap();
    std::fs::write(dir.join("b.txt"), "b\n").unwrap();
    std::fs::write(dir.join("d/c.txt"), "c\n").unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    commit_all(dir, "start");
    git(dir, &["rev-parse", "HEAD"])
}

fn job(repo: &Path, commit: &str, run_id: &str, command: &str) -> Job {
    Job {
        run_id: run_id.into(),
        step: "propose".into(),
        repo: repo.display().to_string(),
        commit: commit.into(),
        workdir: String::new(),
        command: command.into(),
        env: Default::default(),
        limits: Limits {
            timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(1),
            output_limit: 4096,
        },
        output: Default::default(),
        commit_changes: true,
        metrics: None,
        held_out: false,
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn changed_paths_are_exactly_the_diff_and_the_candidate_a_child_of_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let base = repo(&repo_dir);
    let exec = LocalExecutor::new(tmp.path().join("state"));
    let commit_cmd = "git -c user.name=p -c user.email=p@p commit -qam mine";
    let cases: &[&str] = &[
        // Left uncommitted: modified, removed, new (odd names too), mode.
        "echo x >> a.txt; rm d/c.txt; echo n > \"n é'q.txt\"",
        "chmod +x b.txt",
        "mkdir -p e/f && echo deep > e/f/g.txt",
        // Rewritten with the same content: no change at all.
        "cp a.txt t && mv t a.txt",
        // Staged by the proposer.
        "echo y >> a.txt; git add a.txt; echo z >> b.txt",
        // Committed by the proposer, with something left over as well.
        &format!("echo y >> a.txt; {commit_cmd}; echo z > new.txt"),
        // A name with a line break.
        "echo w > \"$(printf 'two\\nlines')\"",
    ];
    for (i, cmd) in cases.iter().enumerate() {
        let run_id = format!("run-{i}");
        let report = exec.run(job(&repo_dir, &base, &run_id, cmd)).await.unwrap();
        assert!(report.status.success(), "{cmd}: {:?}", report.status);
        let truth = Git::new(&repo_dir)
            .changed_paths(&base, &report.commit)
            .unwrap();
        assert_eq!(
            report.changed_paths.clone().map(sorted),
            Some(sorted(truth.clone())),
            "{cmd}"
        );
        if !truth.is_empty() {
            let parents = git(&repo_dir, &["rev-list", "--parents", "-n1", &report.commit]);
            assert_eq!(parents, format!("{} {base}", report.commit), "{cmd}");
        }
        exec.release(&run_id).await.unwrap();
    }
    exec.close().await.unwrap();
}

#[test]
fn create_ref_writes_a_ref_git_reads_and_refuses_bad_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let base = repo(&dir);
    let g = Git::new(&dir);
    g.create_ref("refs/autoresearch/exp/run-1", &base).unwrap();
    assert_eq!(
        git(&dir, &["rev-parse", "refs/autoresearch/exp/run-1"]),
        base
    );
    assert!(!dir.join(".git/refs/autoresearch/exp/run-1.lock").exists());
    // A name git would refuse is not written by hand either: git's error.
    let err = g.create_ref("refs/autoresearch/a..b", &base).unwrap_err();
    assert!(err.to_string().contains("update-ref"), "{err}");
    // The unquoted path of a non-ASCII name, as a protected path is written.
    std::fs::write(dir.join("é.txt"), "x").unwrap();
    commit_all(&dir, "e");
    assert_eq!(
        g.changed_paths(&base, "HEAD").unwrap(),
        vec!["é.txt".to_string()]
    );
}

/// Metrics are read from the whole output, however long, while the report
/// keeps only `output_limit` bytes of it: stdout with 200 KB of log after
/// the metric, and a JSON metrics file over 64 KiB.
#[tokio::test]
async fn metrics_are_read_from_the_whole_output_beyond_the_kept_tail() {
    use autoresearch_core::exec::OutputSource;
    use autoresearch_core::metrics::{MetricSpec, MetricSyntax};
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let base = repo(&repo_dir);
    let exec = LocalExecutor::new(tmp.path().join("state"));
    let long_log = "printf '\\033[1;32mscore: 10\\033[0m\\n'; i=0; while [ $i -lt 4000 ]; do echo \"step $i: training, loss went down a little more\"; i=$((i+1)); done";
    let big_file = "python3 -c \"import json; json.dump({f'm{i}': i + 0.5 for i in range(6000)}, open('m.json', 'w'), indent=2)\"";
    let cases: [(&str, MetricSyntax, OutputSource, &str, f64); 2] = [
        (
            long_log,
            MetricSyntax::Lines,
            OutputSource::Stdout,
            "score",
            10.0,
        ),
        (
            big_file,
            MetricSyntax::JsonFile,
            OutputSource::File("m.json".into()),
            "m5999",
            5999.5,
        ),
    ];
    for (i, (cmd, syntax, output, name, want)) in cases.into_iter().enumerate() {
        let mut j = job(&repo_dir, &base, &format!("eval-{i}"), cmd);
        j.commit_changes = false;
        j.output = output;
        j.metrics = Some(MetricSpec {
            syntax,
            required: vec![name.to_string()],
        });
        let report = exec.run(j).await.unwrap();
        assert!(report.status.success(), "{cmd}: {:?}", report.status);
        assert!(report.output.len() <= 4096, "only the limit is kept");
        let reading = report.metrics.expect("the executor read the metrics");
        assert_eq!(reading.check(&[name.to_string()]), Ok(()));
        assert_eq!(reading.values[name].as_f64(), Some(want), "{cmd}");
        exec.release(&format!("eval-{i}")).await.unwrap();
    }
}

/// A job's CPU time is its process tree's: a busy loop in a background
/// subshell the job waits for is counted, within the job's wall-clock time
/// (one thread at a time); a sleeping job uses next to none.
#[tokio::test]
async fn a_jobs_cpu_time_counts_its_process_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let base = repo(&repo_dir);
    let exec = LocalExecutor::new(tmp.path().join("state"));
    let busy = "(i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done) & wait";
    let mut j = job(&repo_dir, &base, "busy", busy);
    j.commit_changes = false;
    let report = exec.run(j).await.unwrap();
    assert!(report.status.success());
    let cpu = report.cpu_time.expect("measured");
    assert!(cpu >= Duration::from_millis(20), "{cpu:?}");
    assert!(
        cpu <= report.duration + Duration::from_millis(20),
        "{cpu:?} {:?}",
        report.duration
    );
    let mut j = job(&repo_dir, &base, "idle", "sleep 0.3");
    j.commit_changes = false;
    let report = exec.run(j).await.unwrap();
    let cpu = report.cpu_time.expect("measured");
    assert!(cpu < Duration::from_millis(100), "{cpu:?}");
    assert!(report.duration >= Duration::from_millis(300));
    exec.close().await.unwrap();
}
