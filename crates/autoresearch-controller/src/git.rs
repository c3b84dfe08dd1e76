//! The git operations the loop needs, through the real `git` CLI.
//!
//! Every function blocks: call them from `spawn_blocking` (see [`Git::run`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A git command that failed or could not start.
#[derive(Debug, Clone, thiserror::Error)]
#[error("git {args} in {dir}: {reason}")]
pub struct GitError {
    /// The repository or worktree the command ran in.
    pub dir: PathBuf,
    /// The git arguments, space-separated.
    pub args: String,
    /// Why it failed: git's standard error, or why it could not start.
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

/// See [`Git::index_stamp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexStamp([u64; 7]);

/// A repository (or a worktree of one) at `dir`.
#[derive(Clone, Debug)]
pub struct Git {
    /// The repository's (or worktree's) working directory; every command runs there.
    pub dir: PathBuf,
    /// The common git dir, looked up once.
    common: std::sync::Arc<std::sync::Mutex<Option<PathBuf>>>,
}

impl Git {
    /// A handle on the repository at `dir`. Runs nothing: a directory that is not a repository
    /// fails at the first command.
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
        if let Some(text) = self
            .git_dir()
            .and_then(|d| std::fs::read_to_string(d.join("HEAD")).ok())
        {
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

    /// Creates `refname` (which must not exist yet, e.g. a new run's
    /// candidate ref) pointing at `commit`.
    ///
    /// Writes the loose ref file itself, the way git does (a `.lock` file
    /// created exclusively, then renamed), which costs no process; falls
    /// back to `git update-ref` for a reftable repository or when the file
    /// cannot be written. Like git's own loose refs it is not fsynced.
    pub fn create_ref(&self, refname: &str, commit: &str) -> Result<(), GitError> {
        let valid = refname.starts_with("refs/")
            && refname
                .split('/')
                .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
            && !refname.contains(['\\', ' ', ':', '?', '*', '[', '~', '^'])
            && !refname.contains("..")
            && !refname.contains("@{");
        let is_hash = (commit.len() == 40 || commit.len() == 64)
            && commit.chars().all(|c| c.is_ascii_hexdigit());
        if let (true, true, Some(common)) = (valid, is_hash, self.common_dir_cached())
            && !common.join("reftable").exists()
        {
            let path = common.join(refname);
            let lock = common.join(format!("{refname}.lock"));
            let written = (|| -> std::io::Result<()> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&lock)?;
                std::io::Write::write_all(&mut f, format!("{commit}\n").as_bytes())?;
                drop(f);
                std::fs::rename(&lock, &path)
            })();
            if written.is_ok() {
                return Ok(());
            }
            let _ = std::fs::remove_file(&lock);
        }
        self.set_ref(refname, commit)
    }

    /// Paths changed between two commits (renames as a removal and an
    /// addition), unquoted.
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<Vec<String>, GitError> {
        let args = ["diff", "--name-only", "--no-renames", "-z", from, to];
        let out = self.output(&args, &[])?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.error(&args, stderr.trim().to_string()));
        }
        Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect())
    }

    /// `git add -A --verbose`: stages every change of this working tree and
    /// returns the paths it staged or removed, or `None` when git's report
    /// cannot be read back exactly (a path with a line break).
    pub fn add_all(&self) -> Result<Option<Vec<String>>, GitError> {
        let args = ["add", "-A", "--verbose"];
        let out = self.output(&args, &[])?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.error(&args, stderr.trim().to_string()));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut paths = Vec::new();
        for line in text.lines() {
            let path = line
                .strip_prefix("add '")
                .or_else(|| line.strip_prefix("remove '"))
                .and_then(|rest| rest.strip_suffix('\''));
            match path {
                Some(p) if !p.is_empty() => paths.push(p.to_string()),
                _ => return Ok(None),
            }
        }
        Ok(Some(paths))
    }

    /// Identifies the current state of this working tree's index file
    /// (device, inode, size, modification time): git rewrites the index by
    /// renaming a new file over it, so any change gives a different stamp.
    /// The change time is part of it, and no program can set that back.
    /// `None` when there is no index file to stat.
    pub fn index_stamp(&self) -> Option<IndexStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.git_dir()?.join("index")).ok()?;
        Some(IndexStamp([
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ]))
    }

    /// This working tree's own git dir (`.git`, or where a worktree's `.git`
    /// file points), read without a process.
    fn git_dir(&self) -> Option<PathBuf> {
        let dot_git = self.dir.join(".git");
        if dot_git.is_dir() {
            return Some(dot_git);
        }
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let p = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
        Some(if p.is_absolute() { p } else { self.dir.join(p) })
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
    /// Reads HEAD without a process when it can.
    pub fn checked_out_branch(&self) -> Result<Option<String>, GitError> {
        if let Some(text) = self
            .git_dir()
            .and_then(|d| std::fs::read_to_string(d.join("HEAD")).ok())
        {
            let head = text.trim();
            if let Some(target) = head.strip_prefix("ref:") {
                return Ok(target
                    .trim()
                    .strip_prefix("refs/heads/")
                    .map(str::to_string));
            }
            if head.len() >= 40 && head.chars().all(|c| c.is_ascii_hexdigit()) {
                return Ok(None);
            }
        }
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

    /// Whether this is a bare repository (a directory with a `.git` in it
    /// is a working tree: no process needed).
    pub fn is_bare(&self) -> Result<bool, GitError> {
        if self.dir.join(".git").exists() {
            return Ok(false);
        }
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
