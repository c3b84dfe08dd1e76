//! Git in temp repositories: the one helper every test that touches a
//! repository calls, and the identity its commits are made under.

use std::path::Path;
use std::process::Command;

/// Runs git in `dir`; its trimmed stdout. Panics (the test fails) when git does.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits everything in `dir` under a test identity.
pub fn commit_all(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(
        dir,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            message,
        ],
    );
}

/// Makes `dir` (which must exist) a repository on branch `main` whose own
/// config holds the test identity, so that later commits by any process work.
pub fn init_main(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["config", "user.name", "t"]);
    git(dir, &["config", "user.email", "t@t"]);
}

/// What a loop may never change in the user's repository besides its branch
/// and its own refs: hooks, branches other than `branch`, config, info
/// files, what `git status` shows (untracked files included), where HEAD
/// points. Compare two snapshots with `assert_eq!`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRepoState {
    /// The file names in `.git/hooks`, sorted.
    pub hooks: Vec<String>,
    /// `refname objectname` of every branch but the loop's, one a line.
    pub other_branches: String,
    /// `.git/config` as text.
    pub config: String,
    /// `.git/HEAD` as text (which branch is checked out, or a detached commit).
    pub head: String,
    /// `git status --porcelain --untracked-files=all`.
    pub status: String,
    /// Refs outside `refs/heads/` and the loop's `refs/autoresearch/`.
    pub stray_refs: String,
}

impl UserRepoState {
    /// The state of the repository at `dir` (its `.git` a directory),
    /// ignoring `branch`'s tip and the loop's `refs/autoresearch/`.
    pub fn of(dir: &Path, branch: &str) -> UserRepoState {
        let dot = dir.join(".git");
        let mut hooks: Vec<String> = std::fs::read_dir(dot.join("hooks"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        hooks.sort();
        let branches = git(
            dir,
            &[
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                "refs/heads",
            ],
        );
        let mine = format!("refs/heads/{branch} ");
        let other_branches = branches
            .lines()
            .filter(|l| !l.starts_with(&mine))
            .collect::<Vec<_>>()
            .join("\n");
        let refs = git(dir, &["for-each-ref", "--format=%(refname)"]);
        let stray_refs = refs
            .lines()
            .filter(|r| !r.starts_with("refs/heads/") && !r.starts_with("refs/autoresearch/"))
            .collect::<Vec<_>>()
            .join("\n");
        UserRepoState {
            hooks,
            other_branches,
            config: std::fs::read_to_string(dot.join("config")).unwrap_or_default(),
            head: std::fs::read_to_string(dot.join("HEAD")).unwrap_or_default(),
            status: git(dir, &["status", "--porcelain", "--untracked-files=all"]),
            stray_refs,
        }
    }
}
