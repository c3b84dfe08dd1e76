//! The git operations the loop needs, through the real `git` CLI.
//!
//! Every function blocks: call them from `spawn_blocking` (see [`Git::run`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A git command that failed or could not start.
#[derive(Debug, Clone, thiserror::Error)]
#[error("git {args} in {dir}: {reason}")]
pub struct GitError {
    pub dir: PathBuf,
    pub args: String,
    pub reason: String,
}

/// Identity of commits the controller makes itself (uncommitted leftovers,
/// rebased candidates), so that they work without a configured user.
pub const IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "autoresearch"),
    ("GIT_AUTHOR_EMAIL", "autoresearch@localhost"),
    ("GIT_COMMITTER_NAME", "autoresearch"),
    ("GIT_COMMITTER_EMAIL", "autoresearch@localhost"),
];

/// A repository (or a worktree of one) at `dir`.
#[derive(Clone, Debug)]
pub struct Git {
    pub dir: PathBuf,
    /// The common git dir, looked up once.
    common: std::sync::Arc<std::sync::Mutex<Option<PathBuf>>>,
}

impl Git {
    pub fn new(dir: impl Into<PathBuf>) -> Git {
        Git {
            dir: dir.into(),
            common: Default::default(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.arg("-C").arg(&self.dir).args(args);
        // Inherited from a hook or a parent git, these would point elsewhere.
        for v in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"] {
            c.env_remove(v);
        }
        c.stdin(Stdio::null());
        c
    }

    fn error(&self, args: &[&str], reason: impl Into<String>) -> GitError {
        GitError {
            dir: self.dir.clone(),
            args: args.join(" "),
            reason: reason.into(),
        }
    }

    /// Runs git with `args`, returning its raw output (success or not).
    pub fn output(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output, GitError> {
        let mut c = self.command(args);
        c.envs(env.iter().copied());
        c.output()
            .map_err(|e| self.error(args, format!("cannot run git: {e}")))
    }

    /// Runs git with `args`; its trimmed stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String, GitError> {
        self.run_env(args, &[])
    }

    /// [`Git::run`] with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String, GitError> {
        let out = self.output(args, env)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.error(args, stderr.trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The commit `rev` names, or `None` if it names none.
    pub fn resolve(&self, rev: &str) -> Result<Option<String>, GitError> {
        let spec = format!("{rev}^{{commit}}");
        let args = ["rev-parse", "--verify", "--quiet", &spec];
        let out = self.output(&args, &[])?;
        if out.status.success() {
            Ok(Some(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ))
        } else if out.status.code() == Some(1) {
            Ok(None)
        } else {
            Err(self.error(&args, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// The tip of `refs/heads/{branch}`, or `None` if there is no such branch.
    ///
    /// Reads the loose ref file when there is one (it takes precedence over
    /// packed refs, and costs no process); asks git otherwise.
    pub fn branch_tip(&self, branch: &str) -> Result<Option<String>, GitError> {
        let refname = format!("refs/heads/{branch}");
        if let Some(hash) = self.loose_ref(&refname) {
            return Ok(Some(hash));
        }
        self.resolve(&refname)
    }

    /// The hash in a loose ref file under the common git dir, if it holds one.
    fn loose_ref(&self, refname: &str) -> Option<String> {
        let common = self.common_dir_cached()?;
        let text = std::fs::read_to_string(common.join(refname)).ok()?;
        let hash = text.trim();
        let hex = hash.chars().all(|c| c.is_ascii_hexdigit());
        (hex && (hash.len() == 40 || hash.len() == 64)).then(|| hash.to_string())
    }

    fn common_dir_cached(&self) -> Option<PathBuf> {
        let mut cache = self.common.lock().ok()?;
        if cache.is_none() {
            *cache = self.common_dir().ok();
        }
        cache.clone()
    }

    /// The commit a worktree's detached HEAD points at, read from its HEAD
    /// file (no process); asks git when HEAD is a symbolic ref.
    pub fn head_commit(&self) -> Result<String, GitError> {
        let dot_git = self.dir.join(".git");
        let gitdir = match std::fs::read_to_string(&dot_git) {
            Ok(t) => t
                .trim()
                .strip_prefix("gitdir:")
                .map(|p| PathBuf::from(p.trim())),
            Err(_) => Some(dot_git),
        };
        if let Some(text) = gitdir.and_then(|d| std::fs::read_to_string(d.join("HEAD")).ok()) {
            let hash = text.trim();
            if (hash.len() == 40 || hash.len() == 64) && hash.chars().all(|c| c.is_ascii_hexdigit())
            {
                return Ok(hash.to_string());
            }
        }
        self.run(&["rev-parse", "HEAD"])
    }

    /// Sets `refname` to `new` if it currently is `old` (`None`: must not
    /// exist). Returns false when the ref held something else.
    pub fn compare_and_swap(
        &self,
        refname: &str,
        new: &str,
        old: Option<&str>,
        message: &str,
    ) -> Result<bool, GitError> {
        let zero = "0000000000000000000000000000000000000000";
        let old = old.unwrap_or(zero);
        let args = ["update-ref", "-m", message, refname, new, old];
        let out = self.output(&args, &[])?;
        if out.status.success() {
            return Ok(true);
        }
        // Distinguish "someone else moved it" from a real failure.
        let current = self.resolve(refname)?;
        if current.as_deref() != Some(old) && !(old == zero && current.is_none()) {
            return Ok(false);
        }
        Err(self.error(&args, String::from_utf8_lossy(&out.stderr).trim()))
    }

    /// Points `refname` at `commit` unconditionally.
    pub fn set_ref(&self, refname: &str, commit: &str) -> Result<(), GitError> {
        self.run(&["update-ref", refname, commit]).map(drop)
    }

    /// Paths changed between two commits.
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<Vec<String>, GitError> {
        let out = self.run(&["diff", "--name-only", "--no-renames", from, to])?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// `git diff --stat from to`.
    pub fn diff_stat(&self, from: &str, to: &str) -> Result<String, GitError> {
        self.run(&["diff", "--stat", from, to])
    }

    /// The full diff between two commits.
    pub fn diff(&self, from: &str, to: &str) -> Result<String, GitError> {
        self.run(&["diff", from, to])
    }

    /// The first line of a commit's message.
    pub fn subject(&self, commit: &str) -> Result<String, GitError> {
        self.run(&["log", "-1", "--format=%s", commit])
    }

    /// The branch checked out in this working tree (`None`: detached or bare).
    pub fn checked_out_branch(&self) -> Result<Option<String>, GitError> {
        let args = ["symbolic-ref", "-q", "HEAD"];
        let out = self.output(&args, &[])?;
        if !out.status.success() {
            return Ok(None);
        }
        let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(full.strip_prefix("refs/heads/").map(str::to_string))
    }

    /// Whether tracked files differ from the index or HEAD (untracked files
    /// do not count).
    pub fn is_dirty(&self) -> Result<bool, GitError> {
        let out = self.run(&["status", "--porcelain", "--untracked-files=no"])?;
        Ok(!out.is_empty())
    }

    /// Moves this working tree's index and files from `old` to `new`, refusing
    /// (with an error) where local changes would be overwritten.
    pub fn advance_checkout(&self, old: &str, new: &str) -> Result<(), GitError> {
        self.run(&["read-tree", "-m", "-u", old, new]).map(drop)
    }

    /// Whether this is a bare repository.
    pub fn is_bare(&self) -> Result<bool, GitError> {
        Ok(self.run(&["rev-parse", "--is-bare-repository"])? == "true")
    }

    /// The directory shared by all worktrees (`.git` of the main one).
    pub fn common_dir(&self) -> Result<PathBuf, GitError> {
        let p = PathBuf::from(self.run(&["rev-parse", "--git-common-dir"])?);
        Ok(if p.is_absolute() { p } else { self.dir.join(p) })
    }

    /// Adds `/{dir}/` to `info/exclude`, so the controller's files never show
    /// as untracked nor get committed. Idempotent.
    pub fn exclude(&self, dir: &str) -> Result<(), GitError> {
        let info = self.common_dir()?.join("info");
        let file = info.join("exclude");
        let line = format!("/{dir}/");
        let io =
            |e: std::io::Error| self.error(&["(info/exclude)"], format!("{}: {e}", file.display()));
        let existing = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        if existing.lines().any(|l| l.trim() == line) {
            return Ok(());
        }
        std::fs::create_dir_all(&info).map_err(io)?;
        let sep = if existing.is_empty() || existing.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        std::fs::write(
            &file,
            format!("{existing}{sep}# autoresearch's own files\n{line}\n"),
        )
        .map_err(io)
    }

    /// Creates a worktree at `path` detached at `commit`.
    pub fn worktree_add(&self, path: &Path, commit: &str) -> Result<(), GitError> {
        let p = path.to_string_lossy();
        self.run(&["worktree", "add", "--detach", "--quiet", "-f", &p, commit])
            .map(drop)
    }

    /// Removes the worktree at `path` (forcefully: it is ours), then prunes.
    /// A missing worktree is not an error.
    pub fn worktree_remove(&self, path: &Path) -> Result<(), GitError> {
        let p = path.to_string_lossy();
        if path.exists()
            && self
                .run(&["worktree", "remove", "--force", "--force", &p])
                .is_err()
        {
            let _ = std::fs::remove_dir_all(path);
        }
        self.run(&["worktree", "prune"]).map(drop)
    }

    /// Replays `candidate`'s change (relative to `base`) onto `onto` without
    /// a checkout. `Ok(None)` when the change conflicts.
    pub fn rebase_commit(
        &self,
        base: &str,
        candidate: &str,
        onto: &str,
    ) -> Result<Option<String>, GitError> {
        let mb = format!("--merge-base={base}");
        let args = [
            "merge-tree",
            "--write-tree",
            "--no-messages",
            &mb,
            onto,
            candidate,
        ];
        let out = self.output(&args, &[])?;
        match out.status.code() {
            Some(0) => {}
            Some(1) => return Ok(None),
            _ => return Err(self.error(&args, String::from_utf8_lossy(&out.stderr).trim())),
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let tree = stdout.lines().next().unwrap_or("").trim().to_string();
        if tree.is_empty() {
            return Err(self.error(&args, "merge-tree printed no tree"));
        }
        let message = self.run(&["log", "-1", "--format=%B", candidate])?;
        let message = if message.is_empty() {
            "rebased candidate".to_string()
        } else {
            message
        };
        let commit = self.run_env(
            &["commit-tree", &tree, "-p", onto, "-m", &message],
            &IDENTITY,
        )?;
        Ok(Some(commit))
    }
}
