//! The git operations the loop needs, through the real `git` CLI.
//!
//! Every function blocks: call them from `spawn_blocking` (see [`Git::run`]).
//!
//! Every command runs in a fixed environment: no `GIT_*` variable inherited
//! from the caller, no hooks (`core.hooksPath=/dev/null`, which holds
//! none), no fsmonitor daemon, no terminal prompt, the C locale. A [`Git`]
//! made with [`Git::bound`] acts on a working tree the controller does not
//! trust (a candidate's checkout) through the user's own git dir and a
//! private index: the checkout's `.git`, whatever a job did to it, is never
//! read.

use std::path::PathBuf;
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

/// One path changed between two commits (see [`Git::changes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The path, relative to the repository's root.
    pub path: String,
    /// Octal modes as git prints them (`000000` when absent, `160000` a
    /// gitlink, `120000` a symlink): before ...
    pub old_mode: String,
    /// ... and after.
    pub new_mode: String,
    /// The object on the new side (all zeros when deleted).
    pub new_blob: String,
    /// `A`dded, `D`eleted, `M`odified, `T`ype changed.
    pub status: char,
}

impl Change {
    /// Whether the new side is a gitlink (a submodule or nested repository).
    pub fn is_gitlink(&self) -> bool {
        self.new_mode == "160000"
    }
}

/// A repository (or a worktree of one) at `dir`.
#[derive(Clone, Debug)]
pub struct Git {
    /// The repository's (or worktree's) working directory; every command runs there.
    pub dir: PathBuf,
    /// The common git dir, looked up once.
    common: std::sync::Arc<std::sync::Mutex<Option<PathBuf>>>,
    /// Set by [`Git::bound`]: the git dir, work tree and index file every
    /// command is given explicitly.
    bound: Option<std::sync::Arc<Bound>>,
}

#[derive(Debug)]
struct Bound {
    git_dir: PathBuf,
    index: PathBuf,
    /// Where `.gitattributes` are read from (a trusted commit), if set.
    attr_source: Option<String>,
}

impl Git {
    /// A handle on the repository at `dir`. Runs nothing: a directory that is not a repository
    /// fails at the first command.
    pub fn new(dir: impl Into<PathBuf>) -> Git {
        Git {
            dir: dir.into(),
            common: Default::default(),
            bound: None,
        }
    }

    /// Git on the working tree `work_tree` through the repository `git_dir`
    /// (its objects, its config) and the index file `index`: what is staged
    /// and written goes into `git_dir`'s object store, and nothing in
    /// `work_tree/.git` is read. `attr_source` (a commit) replaces the
    /// working tree's `.gitattributes`. Only for commands that do not touch
    /// refs or HEAD (read-tree, add, write-tree, clean, ls-files, diff).
    pub fn bound(
        git_dir: impl Into<PathBuf>,
        work_tree: impl Into<PathBuf>,
        index: impl Into<PathBuf>,
        attr_source: Option<String>,
    ) -> Git {
        Git {
            dir: work_tree.into(),
            common: Default::default(),
            bound: Some(std::sync::Arc::new(Bound {
                git_dir: git_dir.into(),
                index: index.into(),
                attr_source,
            })),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        // A fixed environment: inherited from a hook, a parent git or the
        // user's shell, GIT_* variables would point elsewhere or change
        // what is read and written.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GIT_") {
                c.env_remove(k);
            }
        }
        c.env("GIT_TERMINAL_PROMPT", "0").env("LC_ALL", "C");
        c.arg("-C").arg(&self.dir);
        c.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ]);
        if let Some(b) = &self.bound {
            c.env("GIT_DIR", &b.git_dir)
                .env("GIT_WORK_TREE", &self.dir)
                .env("GIT_INDEX_FILE", &b.index)
                .args([
                    "-c",
                    "core.untrackedCache=false",
                    "-c",
                    "core.splitIndex=false",
                ]);
            if let Some(src) = &b.attr_source {
                c.env("GIT_ATTR_SOURCE", src);
            }
        }
        c.args(args);
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

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
        let args = ["merge-base", "--is-ancestor", ancestor, descendant];
        let out = self.output(&args, &[])?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.error(&args, String::from_utf8_lossy(&out.stderr).trim())),
        }
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

    /// Every change between two commits, of every kind (renames as a
    /// deletion and an addition), with modes and the new blob.
    pub fn changes(&self, from: &str, to: &str) -> Result<Vec<Change>, GitError> {
        let args = [
            "diff",
            "--raw",
            "-z",
            "--no-renames",
            "--no-abbrev",
            from,
            to,
        ];
        let out = self.output(&args, &[])?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(self.error(&args, stderr.trim().to_string()));
        }
        let mut fields = out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty());
        let mut changes = Vec::new();
        while let (Some(meta), Some(path)) = (fields.next(), fields.next()) {
            let meta = String::from_utf8_lossy(meta);
            let m: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
            if m.len() < 5 {
                return Err(self.error(&args, format!("unreadable line {meta:?}")));
            }
            changes.push(Change {
                path: String::from_utf8_lossy(path).into_owned(),
                old_mode: m[0].to_string(),
                new_mode: m[1].to_string(),
                new_blob: m[3].to_string(),
                status: m[4].chars().next().unwrap_or('M'),
            });
        }
        Ok(changes)
    }

    /// The sizes of objects, in bytes, in the order given (one process).
    pub fn object_sizes(&self, oids: &[String]) -> Result<Vec<u64>, GitError> {
        use std::io::Write;
        let args = ["cat-file", "--batch-check=%(objectsize)"];
        let mut c = self.command(&args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| self.error(&args, format!("cannot run git: {e}")))?;
        let input: String = oids.iter().map(|o| format!("{o}\n")).collect();
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| self.error(&args, e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| self.error(&args, e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .map(|l| l.trim().parse::<u64>().unwrap_or(0))
            .collect())
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
