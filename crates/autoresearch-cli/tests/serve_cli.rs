//! `autoresearch serve` as a user starts it: the binary on a real ledger,
//! read over HTTP while another process writes, votes and forks through
//! its token (done by `autoresearch-compare`'s functions), replays into a
//! fork shown in the replay view, refused without it, and none at all with
//! `--read-only`; parameter columns read from a real repository's diffs.

#![cfg(feature = "web")]

use autoresearch_core::{
    BranchHead, ComponentRegistry, EvalResult, Experiment, Outcome, OutcomeStatus, Run, RunStatus,
    Storage, Vote, World,
};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// A running `autoresearch serve`, stopped (SIGTERM, then killed) on drop.
struct Served {
    child: Child,
    port: u16,
    first_line: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: signals only our own child, by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(ledger: &Path, extra: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .arg("--ledger")
        .arg(ledger)
        .args(["serve", "--port", "0", "--poll-ms", "50"])
        .args(extra)
        .env_remove("AUTORESEARCH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let first_line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve prints its address within 30 s");
    let port = first_line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first_line:?}"));
    Served {
        child,
        port,
        first_line,
    }
}

/// One HTTP request; returns the status and the body.
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn registry() -> Arc<ComponentRegistry> {
    Arc::new(ComponentRegistry::standard())
}

/// A ledger with experiment `web`: a baseline and a run waiting for votes.
async fn ledger(path: &Path) -> Arc<dyn Storage> {
    let storage: Arc<dyn Storage> =
        Arc::new(RedbStorage::open(path, RedbConfig::default()).unwrap());
    let mut w = World::create(storage.clone(), registry(), "autoresearch:web")
        .await
        .unwrap();
    w.spawn_with(&Experiment::new("web", "/repo", "main", 1, &json!({})))
        .unwrap();
    for (id, score, status) in [
        ("base", 2.0, OutcomeStatus::Baseline),
        ("cand", 1.5, OutcomeStatus::Pending),
    ] {
        let mut run = Run::new(id, "web");
        run.commit_hash = format!("{:040}", if id == "base" { 1 } else { 2 });
        run.set_status(RunStatus::Stopped);
        let e = w.spawn_with(&run).unwrap();
        w.spawn_with(&EvalResult::new(id, "eval", &json!({"score": score}), 1))
            .unwrap();
        w.insert(
            e,
            &Outcome {
                run_id: id.into(),
                status,
                reason: "test".into(),
                comparator: "scalar:score:min".into(),
                ..Outcome::default()
            },
        )
        .unwrap();
    }
    w.spawn_with(&BranchHead::new(
        "web",
        format!("{:040}", 1),
        "base",
        &json!({}),
        1,
    ))
    .unwrap();
    w.commit().await.unwrap();
    storage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_beside_a_writer_and_acts_only_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let storage = ledger(&path).await;
    let served = serve(&path, &["--token", "s3cret"]);
    assert!(
        served.first_line.contains("#token=s3cret"),
        "{}",
        served.first_line
    );
    let port = served.port;
    let get =
        move |p: &'static str| tokio::task::spawn_blocking(move || http(port, "GET", p, None, ""));

    let (status, body) = get("/api/worlds").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["worlds"][0]["counts"]["pending"], 1);
    assert_eq!(
        j["worlds"][0]["metric"], "score",
        "the comparator's metric, through compare's spec parser"
    );
    let (status, body) = get("/worlds/autoresearch%3Aweb").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<svg class=\"chart\""));

    // The dashboard holds no write lock: this process writes beside it.
    let mut w = World::open(storage.clone(), registry(), "autoresearch:web")
        .await
        .unwrap();
    let mut run = Run::new("later", "web");
    run.set_status(RunStatus::Running);
    w.spawn_with(&run).unwrap();
    w.commit().await.unwrap();
    let (_, body) = get("/api/worlds/autoresearch%3Aweb").await.unwrap();
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["counts"]["in_flight"], 1, "{body}");

    let vote = "/api/worlds/autoresearch%3Aweb/runs/cand/vote";
    let post = move |path: &'static str, token: Option<&'static str>, body: &'static str| {
        tokio::task::spawn_blocking(move || http(port, "POST", path, token, body))
    };
    let (status, _) = post(vote, None, r#"{"verdict":"keep"}"#).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = post(vote, Some("nope"), r#"{"verdict":"keep"}"#)
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, body) = post(vote, Some("s3cret"), r#"{"verdict":"keep","voter":"ana"}"#)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ana voted keep on run cand"), "{body}");
    w.refresh().await.unwrap();
    let votes = w.find_all::<Vote>(|v| v.run_id == "cand");
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].1.voter, "ana");

    let (status, body) = post(
        "/api/worlds/autoresearch%3Aweb/runs/cand/fork",
        Some("s3cret"),
        r#"{"name":"if-cand-won"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let fork = World::open(storage.clone(), registry(), "if-cand-won")
        .await
        .unwrap();
    assert_eq!(fork.branch_head("web").unwrap().1.run_id, "cand");

    // A replay under another comparator, through compare's replayer the
    // CLI wires in: a bad spec is a 400; a good one writes the fork and
    // points at its replay view, which the dashboard then shows.
    let replays = "/api/worlds/autoresearch%3Aweb/replays";
    let (status, body) = post(replays, Some("s3cret"), r#"{"comparator":"scalar"}"#)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("scalar"), "{body}");
    let (status, body) = post(replays, None, r#"{"comparator":"scalar:score:max"}"#)
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(
        replays,
        Some("s3cret"),
        r#"{"comparator":"scalar:score:max","name":"maxed"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let receipt: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(receipt["world"], "maxed");
    assert_eq!(
        receipt["url"],
        "/worlds/maxed/replay?with=autoresearch%3Aweb"
    );
    World::open(storage.clone(), registry(), "maxed")
        .await
        .expect("the replay's fork is in the ledger");
    let (status, body) = get("/api/worlds/maxed/replay?with=autoresearch%3Aweb")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["view"]["b"]["comparator"], "scalar:score:max", "{body}");
    assert_eq!(
        j["view"]["changed"], receipt["detail"]["changed"],
        "the view and the replay count the same changes: {body}"
    );
    drop(served);

    let ro = serve(&path, &["--read-only"]);
    assert!(ro.first_line.contains("read-only"), "{}", ro.first_line);
    let port = ro.port;
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(port, "POST", vote, Some("s3cret"), r#"{"verdict":"keep"}"#)
    })
    .await
    .unwrap();
    assert_eq!(status, 403, "{body}");
}

#[test]
fn serve_refuses_a_missing_ledger_and_a_taken_port() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--ledger")
        .arg(dir.path().join("none.redb"))
        .args(["serve", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        !dir.path().join("none.redb").exists(),
        "serve never creates a ledger"
    );

    let path = dir.path().join("ledger.redb");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ledger(&path));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(BIN)
        .arg("--ledger")
        .arg(&path)
        .args(["serve", "--port", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("listening on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_page_shows_the_candidate_diff_from_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("train.py"), "lr = 0.1\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "base"]);
    let base = git(&["rev-parse", "HEAD"]);
    std::fs::write(repo.join("train.py"), "lr = 0.05\n").unwrap();
    git(&["commit", "-qam", "halve the learning rate"]);
    let cand = git(&["rev-parse", "HEAD"]);

    let path = dir.path().join("ledger.redb");
    let storage: Arc<dyn Storage> =
        Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    let mut w = World::create(storage.clone(), registry(), "autoresearch:d")
        .await
        .unwrap();
    w.spawn_with(&Experiment::new(
        "d",
        repo.display().to_string(),
        "main",
        1,
        &json!({}),
    ))
    .unwrap();
    let mut run = Run::new("c1", "d");
    run.commit_hash = cand.clone();
    run.set_status(RunStatus::Stopped);
    let e = w.spawn_with(&run).unwrap();
    w.insert(
        e,
        &Outcome {
            run_id: "c1".into(),
            status: OutcomeStatus::Keep,
            base_commit: base,
            ..Outcome::default()
        },
    )
    .unwrap();
    w.commit().await.unwrap();
    drop(w);
    drop(storage);

    let served = serve(&path, &["--read-only"]);
    let port = served.port;
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(port, "GET", "/worlds/autoresearch%3Ad/runs/c1", None, "")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"<span class="del">-lr = 0.1</span>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<span class="add">+lr = 0.05</span>"#),
        "{body}"
    );
    assert!(body.contains("train.py | 2"), "the stat: {body}");

    // The attempts table's parameter columns: the assignments the diff adds.
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(port, "GET", "/worlds/autoresearch%3Ad?params=1", None, "")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"class="col-choice" value="param:lr""#),
        "the chooser offers the parameter: {body}"
    );
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(
            port,
            "GET",
            "/worlds/autoresearch%3Ad?cols=param:lr",
            None,
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#"<th class="num extra">param:lr</th>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<td class="num extra">0.05</td>"#),
        "{body}"
    );
}
