//! `autoresearch serve`: the live dashboard (`autoresearch-web`) over the
//! ledger, opened read-only as the read commands open it; votes, forks and
//! replays open it for writing only while they are done, as `vote`, `fork`
//! and `replay` do.

use crate::ledger;
use anyhow::Context;
use autoresearch_compare::replay::{ForkRequest, ReplayError, cast_vote, fork_promoting};
use autoresearch_compare::{CompareSpec, Direction};
use autoresearch_core::World;
use autoresearch_web::{
    Access, ActionError, ActionReceipt, Actions, DashboardConfig, Diffs, ForkRequest as WebFork,
    Params, VoteRequest,
};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `autoresearch serve`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch serve                       # http://127.0.0.1:8750, a fresh token printed\n  autoresearch serve --read-only --bind 0.0.0.0 --port 9000\n  AUTORESEARCH_TOKEN=s3cret autoresearch serve"
)]
pub struct ServeArgs {
    /// The address to listen on (loopback by default: only this machine).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// The port (0 picks a free one).
    #[arg(long, default_value_t = 8750)]
    pub port: u16,
    /// The token actions (vote, fork, replay) need [default: a random one, printed].
    #[arg(long, env = "AUTORESEARCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// No actions at all: a dashboard to look at only.
    #[arg(long, conflicts_with = "token")]
    pub read_only: bool,
    /// How often live pages check the ledger for new ticks, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub poll_ms: u64,
}

/// Votes and forks through a read-write open of the ledger, made for each
/// action and closed after it (the dashboard itself keeps only its
/// read-only open). No loop lease is taken, as `autoresearch vote` takes none.
struct LedgerActions {
    path: PathBuf,
}

fn refused_or_failed(e: ReplayError) -> ActionError {
    match e {
        ReplayError::Ledger { .. } => ActionError::Failed(e.to_string()),
        other => ActionError::Refused(other.to_string()),
    }
}

#[async_trait::async_trait]
impl Actions for LedgerActions {
    async fn vote(&self, r: VoteRequest) -> Result<ActionReceipt, ActionError> {
        let storage =
            ledger::open(&self.path).map_err(|e| ActionError::Failed(format!("{e:#}")))?;
        let mut world = World::open(storage, ledger::registry(), &r.world)
            .await
            .map_err(|e| ActionError::Failed(format!("opening world {:?}: {e}", r.world)))?;
        let receipt = cast_vote(
            &mut world,
            &r.experiment,
            &r.run_id,
            r.verdict.as_str(),
            &r.voter,
            &r.reason,
        )
        .await
        .map_err(refused_or_failed)?;
        Ok(ActionReceipt {
            message: format!(
                "{} voted {} on run {} ({} vote(s) on it now)",
                r.voter, r.verdict, r.run_id, receipt.votes_on_run
            ),
            world: r.world,
            detail: serde_json::to_value(&receipt).unwrap_or_default(),
        })
    }

    async fn fork(&self, r: WebFork) -> Result<ActionReceipt, ActionError> {
        let storage =
            ledger::open(&self.path).map_err(|e| ActionError::Failed(format!("{e:#}")))?;
        let fork_name = match r.name {
            Some(n) => crate::compare_cmds::checked_fork_name(n)
                .map_err(|e| ActionError::Failed(format!("{e:#}")))?,
            None => crate::compare_cmds::free_name(
                &storage,
                &crate::compare_cmds::fork_name_base(&r.experiment, &r.run_id),
            )
            .await
            .map_err(|e| ActionError::Failed(format!("{e:#}")))?,
        };
        let req = ForkRequest {
            experiment: r.experiment,
            source_world: r.world,
            at: r.at,
            promote: r.run_id.clone(),
            fork_name,
        };
        let report = fork_promoting(storage, ledger::registry(), &req)
            .await
            .map_err(refused_or_failed)?;
        Ok(ActionReceipt {
            message: format!(
                "forked {} at tick {} into {} with run {} as head (continue it: autoresearch run --world {})",
                report.source_world, report.at_tick, report.fork_world, r.run_id, report.fork_world
            ),
            world: report.fork_world.clone(),
            detail: serde_json::to_value(&report).unwrap_or_default(),
        })
    }
}

/// Candidate diffs from the experiment's repository: `git diff --stat -p
/// BASE COMMIT`, hooks and pagers off, at most 5 s and 256 KiB. Commits must
/// be hex object names (a ledger value never reaches git as an option).
struct GitDiffs;

/// The most of a diff a run page shows.
const DIFF_BYTES: usize = 256 << 10;

#[async_trait::async_trait]
impl Diffs for GitDiffs {
    async fn diff(&self, repo: &str, base: &str, commit: &str) -> Option<String> {
        let hex = |c: &str| (4..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(base) || !hex(commit) || !Path::new(repo).is_dir() {
            return None;
        }
        let child = tokio::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "--no-pager",
                "diff",
                "--no-ext-diff",
                "--no-color",
                "--stat",
                "-p",
            ])
            .arg(base)
            .arg(commit)
            .arg("--")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(5), child)
            .await
            .ok()?
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.len() > DIFF_BYTES {
            let mut cut = DIFF_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n[diff cut at 256 KiB]\n");
        }
        Some(text)
    }
}

/// A candidate's parameters as `autoresearch log` reads them without a
/// params file: the `NAME = LITERAL` lines its diff against its base adds.
#[async_trait::async_trait]
impl Params for GitDiffs {
    async fn params(
        &self,
        repo: &str,
        base: &str,
        commit: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let diff = self.diff(repo, base, commit).await?;
        Some(crate::log::changed_params(&diff))
    }
}

/// The metric a comparator spec decides on, and whether lower is better.
fn spec_metric(spec: &str) -> Option<(String, bool)> {
    let spec = CompareSpec::parse(spec).ok()?;
    let (metric, direction) = spec.objectives().into_iter().next()?;
    Some((metric, direction == Direction::Minimize))
}

/// A token of 128 random bits, in hex, from the OS.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the dashboard's token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Serves the dashboard until Ctrl-C (or SIGTERM).
pub async fn run(ledger_path: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let storage = ledger::open_read_only(ledger_path)?;
    let access = if args.read_only {
        Access::ReadOnly
    } else {
        let token = match args.token.filter(|t| !t.trim().is_empty()) {
            Some(t) => t,
            None => random_token()?,
        };
        Access::Token {
            token,
            actions: Arc::new(LedgerActions {
                path: ledger_path.to_path_buf(),
            }),
        }
    };
    let token = match &access {
        Access::Token { token, .. } => Some(token.clone()),
        Access::ReadOnly => None,
    };
    let replayer: Option<Arc<dyn autoresearch_core::Replayer>> = match &access {
        Access::ReadOnly => None,
        Access::Token { .. } => {
            let path = ledger_path.to_path_buf();
            Some(Arc::new(autoresearch_compare::LedgerReplayer::new(
                Arc::new(move || ledger::open(&path).map_err(|e| format!("{e:#}"))),
                ledger::registry(),
            )))
        }
    };
    let config = DashboardConfig {
        replayer,
        access,
        metric: Arc::new(spec_metric),
        poll_interval: Duration::from_millis(args.poll_ms),
        title: ledger_path.display().to_string(),
        diffs: Some(Arc::new(GitDiffs)),
        params: Some(Arc::new(GitDiffs)),
    };
    let router = autoresearch_web::router(storage, ledger::registry(), config);
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} (choose another with --port)"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("reading the address bound for {addr}"))?;
    // Written without panicking: a closed stdout (`serve | head -1`) must
    // not stop the server.
    let banner = match token {
        Some(t) => format!(
            "dashboard of {} on http://{local}/#token={t}\nactions (vote, fork, replay) need the token: open the link above, or send `Authorization: Bearer {t}`\n",
            ledger_path.display()
        ),
        None => format!(
            "dashboard of {} on http://{local}/ (read-only)\n",
            ledger_path.display()
        ),
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = ctrl_c => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    };
    autoresearch_web::serve(listener, router, shutdown)
        .await
        .with_context(|| format!("serving the dashboard on {local}"))?;
    Ok(ExitCode::SUCCESS)
}
