//! A slot: the private repository a job runs in.
//!
//! A slot is a directory under `{state}/slots/` holding a checkout whose
//! `.git` is a repository of its own (made with `git init`, sharing the
//! user's objects through `objects/info/alternates`, no remote, no refs, no
//! hooks, HEAD detached at the job's commit). Whatever a job does to that
//! `.git` (hooks, config, filters, branches, resets, deleting it) stays in
//! the slot: it is thrown away and made again before every job, and the
//! controller never reads it. The controller reads and writes the
//! checkout only through [`Git::bound`]: the user's git dir, a private
//! index beside the slot (`slot-N.index`), hooks off.
//!
//! Before every job the checkout is made exactly the job's commit
//! (untracked and ignored files removed, nested repositories too) and the
//! slot's processes are killed ([`reaper`](crate::reaper)). After a
//! proposer, the candidate is the checkout's tree (ignored files left
//! out, and listed) committed as the single child of the base, with the
//! proposer's description as its message (its own commit messages, else
//! the file it wrote at [`description_path`], else its `description:`
//! output line, else a summary of the change: core's
//! [`description`](autoresearch_core::description) module).

use crate::git::{Git, GitError, IDENTITY};
use crate::reaper;
use autoresearch_core::description::{
    DESCRIPTION_MAX, FileChange, change_summary, clean_description, description_line,
};
use std::path::{Path, PathBuf};

/// Where a proposer in `checkout` may write its description (the value of
/// `AUTORESEARCH_DESCRIPTION`): inside the slot's own `.git`, which is
/// writable under the sandbox, never part of the candidate's tree and made
/// afresh before every job.
pub fn description_path(checkout: &Path) -> PathBuf {
    checkout.join(".git").join("autoresearch-description")
}

/// The user's repository as slots see it.
#[derive(Clone, Debug)]
pub struct RepoDirs {
    /// `--absolute-git-dir` of the user's repository.
    pub git_dir: PathBuf,
    /// Its object store (the common dir's `objects`).
    pub objects: PathBuf,
}

impl RepoDirs {
    /// Looks the directories of `repo` up (one git process).
    pub fn of(repo: &Path) -> Result<RepoDirs, GitError> {
        let out = Git::new(repo).run(&["rev-parse", "--absolute-git-dir", "--git-common-dir"])?;
        let mut lines = out.lines();
        let git_dir = PathBuf::from(lines.next().unwrap_or_default());
        let common = PathBuf::from(lines.next().unwrap_or_default());
        let common = if common.is_absolute() {
            common
        } else {
            repo.join(common)
        };
        Ok(RepoDirs {
            git_dir,
            objects: common.join("objects"),
        })
    }
}

/// What a proposer produced in a slot.
#[derive(Clone, Debug, Default)]
pub struct Produced {
    /// The candidate commit (the base itself when nothing changed).
    pub commit: String,
    /// Paths changed from the base (exact).
    pub changed: Vec<String>,
    /// Ignored files left in the checkout, not part of the candidate.
    pub left_out: Vec<String>,
}

/// Most left-out paths listed.
const LEFT_OUT_MAX: usize = 200;

/// The index file of `slot` (beside it, out of the job's reach by path).
fn index_of(slot: &Path) -> PathBuf {
    let mut name = slot.file_name().unwrap_or_default().to_os_string();
    name.push(".index");
    slot.with_file_name(name)
}

/// Git on the checkout of `slot` through the user's repository.
pub fn bound(repo: &RepoDirs, slot: &Path, attr_source: Option<&str>) -> Git {
    Git::bound(
        &repo.git_dir,
        slot,
        index_of(slot),
        attr_source.map(str::to_string),
    )
}

/// Makes `slot` a clean checkout of `commit` with a fresh private `.git`,
/// after killing whatever still runs there. Blocking.
pub fn prepare(repo: &RepoDirs, slot: &Path, commit: &str) -> Result<(), String> {
    reaper::kill_slot_processes(slot);
    // A job may have replaced its slot by a link (to `~`, to `/`): the
    // checkout and `clean` below must never act on where it points.
    if std::fs::symlink_metadata(slot).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(slot).map_err(|e| format!("removing {}: {e}", slot.display()))?;
    }
    std::fs::create_dir_all(slot).map_err(|e| format!("creating {}: {e}", slot.display()))?;
    fresh_git_dir(repo, slot, commit)?;
    let g = bound(repo, slot, None);
    g.run(&["read-tree", "--reset", "-u", commit])
        .and_then(|_| g.run(&["clean", "-ffdxq"]))
        .map_err(|e| e.to_string())?;
    // The slot's own git sees a clean checkout without hashing it again.
    std::fs::copy(index_of(slot), slot.join(".git/index"))
        .map_err(|e| format!("copying the index into {}: {e}", slot.display()))?;
    init_submodules(repo, slot, commit)
}

/// Checks out, at the commits `commit` records, the submodules the user
/// has initialised (those with a repository under the user's
/// `.git/modules/`), each a private clone sharing that repository's
/// objects; the others stay empty directories, as in a fresh clone.
/// Nested submodules are not recursed into.
fn init_submodules(repo: &RepoDirs, slot: &Path, commit: &str) -> Result<(), String> {
    // Checked out from `commit` just before: no file, no submodule.
    if !slot.join(".gitmodules").exists() {
        return Ok(());
    }
    let g = bound(repo, slot, None);
    let staged = g.run(&["ls-files", "--stage"]).map_err(|e| e.to_string())?;
    let links: Vec<(&str, &str)> = staged
        .lines()
        .filter_map(|l| {
            let (meta, path) = l.split_once('\t')?;
            let mut m = meta.split(' ');
            (m.next()? == "160000").then_some((m.next()?, path))
        })
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    let blob = format!("{commit}:.gitmodules");
    let names = g
        .run(&[
            "config",
            "--blob",
            &blob,
            "--get-regexp",
            r"^submodule\..*\.path$",
        ])
        .unwrap_or_default();
    let modules = repo
        .objects
        .parent()
        .unwrap_or(&repo.objects)
        .join("modules");
    for (sha, path) in links {
        let name = names.lines().find_map(|l| {
            let (key, p) = l.split_once(' ')?;
            (p == path).then(|| key.strip_prefix("submodule.")?.strip_suffix(".path"))?
        });
        let Some(source) = name.map(|n| modules.join(n)).filter(|d| d.is_dir()) else {
            continue;
        };
        let dest = slot.join(path);
        let _ = std::fs::remove_dir_all(&dest);
        let e = |e: GitError| format!("submodule {path}: {e}");
        Git::new(slot)
            .run(&[
                "clone",
                "--quiet",
                "--shared",
                "--no-checkout",
                "--template=",
                &source.display().to_string(),
                path,
            ])
            .map_err(e)?;
        let sub = Git::new(&dest);
        sub.run(&["remote", "remove", "origin"]).map_err(e)?;
        sub.run(&["checkout", "--quiet", "--detach", sha])
            .map_err(e)?;
    }
    Ok(())
}

/// Replaces `slot/.git` (a directory, a file or a link, whatever the last
/// job left) with a new repository sharing `repo`'s objects, HEAD detached
/// at `commit`.
fn fresh_git_dir(repo: &RepoDirs, slot: &Path, commit: &str) -> Result<(), String> {
    let dot = slot.join(".git");
    let removed = match std::fs::symlink_metadata(&dot) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dot),
        Ok(_) => std::fs::remove_file(&dot),
        Err(_) => Ok(()),
    };
    removed.map_err(|e| format!("removing {}: {e}", dot.display()))?;
    // What `git init --template=` writes, without a process.
    let io = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", dot.display());
    for d in ["objects/info", "objects/pack", "refs/heads", "refs/tags"] {
        std::fs::create_dir_all(dot.join(d)).map_err(|e| io(d, e))?;
    }
    let config = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n[gc]\n\tauto = 0\n";
    std::fs::write(dot.join("config"), config).map_err(|e| io("config", e))?;
    let objects = repo.objects.canonicalize().unwrap_or(repo.objects.clone());
    std::fs::write(
        dot.join("objects/info/alternates"),
        format!("{}\n", objects.display()),
    )
    .map_err(|e| io("alternates", e))?;
    std::fs::write(dot.join("HEAD"), format!("{commit}\n")).map_err(|e| io("HEAD", e))
}

/// The candidate a proposer left in `slot` on `base`: the checkout's tree
/// (what `git add -A` takes, with `.gitattributes` read from the base) as
/// a single child of `base`, its message the proposer's description
/// (`stdout` is the tail of its standard output). Blocking.
pub fn produce(
    repo: &RepoDirs,
    slot: &Path,
    base: &str,
    run_id: &str,
    stdout: &str,
) -> Result<Produced, String> {
    if !std::fs::symlink_metadata(slot).is_ok_and(|m| m.is_dir()) {
        return Err(format!(
            "the job replaced its checkout {} (it is no longer a directory)",
            slot.display()
        ));
    }
    let g = bound(repo, slot, Some(base));
    let e = |e: GitError| e.to_string();
    // Nested repositories become gitlinks: the candidate's checks refuse them.
    g.run(&["add", "-A"]).map_err(e)?;
    let tree = g.run(&["write-tree"]).map_err(e)?;
    let base_tree = g
        .run(&["rev-parse", &format!("{base}^{{tree}}")])
        .map_err(e)?;
    let left_out = left_out(&g).map_err(e)?;
    if tree == base_tree {
        return Ok(Produced {
            commit: base.to_string(),
            changed: Vec::new(),
            left_out,
        });
    }
    let message = match proposer_message(repo, slot, base, run_id) {
        Some(m) => m,
        None => match written_description(slot).or_else(|| description_line(stdout)) {
            Some(d) => d,
            None => change_summary(&numstat(&g, &base_tree, &tree).map_err(e)?),
        },
    };
    let commit = g
        .run_env(
            &["commit-tree", &tree, "-p", base, "-m", &message],
            &IDENTITY,
        )
        .map_err(e)?;
    let changed = g.changed_paths(base, &commit).map_err(e)?;
    Ok(Produced {
        commit,
        changed,
        left_out,
    })
}

fn left_out(g: &Git) -> Result<Vec<String>, GitError> {
    let args = [
        "ls-files",
        "-z",
        "--others",
        "--ignored",
        "--exclude-standard",
        "--directory",
    ];
    let out = g.output(&args, &[])?;
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .take(LEFT_OUT_MAX)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

/// The description the proposer wrote at [`description_path`], cleaned;
/// at most [`DESCRIPTION_MAX`] bytes of it are read.
fn written_description(slot: &Path) -> Option<String> {
    use std::io::Read;
    let path = description_path(slot);
    // Only a regular file: a link or a fifo left by the job is not read.
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(&path)
        .ok()?
        .take(DESCRIPTION_MAX as u64 * 2)
        .read_to_string(&mut text)
        .ok()?;
    clean_description(&text)
}

/// The files changed between two trees, with lines added and removed.
fn numstat(g: &Git, from: &str, to: &str) -> Result<Vec<FileChange>, GitError> {
    let out = g.run(&["diff-tree", "-r", "--numstat", "--no-renames", from, to])?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (added, removed, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some(FileChange {
                path: path.to_string(),
                lines: added.parse().ok().zip(removed.parse().ok()),
            })
        })
        .collect())
}

/// The messages of the commits the proposer made in the slot, oldest
/// first; `None` when it made none. They are fetched
/// into a scratch repository beside the slots (sharing the user's objects):
/// `git upload-pack`, the only git that reads the slot's `.git`, is safe on
/// an untrusted repository, and the user's repository gets no ref, no
/// `FETCH_HEAD` and none of the proposer's abandoned history.
fn proposer_message(repo: &RepoDirs, slot: &Path, base: &str, run_id: &str) -> Option<String> {
    // The usual case costs no process: HEAD still detached at the base (the
    // file is only compared, never trusted).
    let head = std::fs::read_to_string(slot.join(".git/HEAD")).unwrap_or_default();
    if head.trim() == base {
        return None;
    }
    let g = slot.parent().and_then(|d| scratch(repo, d).ok())?;
    let tmp = format!("refs/proposed/{run_id}");
    let source = slot.display().to_string();
    let spec = format!("+HEAD:{tmp}");
    let fetched = g.run(&[
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        &source,
        &spec,
    ]);
    if fetched.is_err() {
        return None;
    }
    let range = format!("{base}..{tmp}");
    let log = g.run(&["log", "--reverse", "-n", "50", "--format=%B%x00", &range]);
    let _ = g.run(&["update-ref", "-d", &tmp]);
    let messages: Vec<&str> = match &log {
        Ok(text) => text
            .split('\0')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect(),
        Err(_) => Vec::new(),
    };
    clean_description(&messages.join("\n\n"))
}

/// The scratch repository in `slots` (bare, sharing the user's objects),
/// made on first use.
fn scratch(repo: &RepoDirs, slots: &Path) -> Result<Git, String> {
    let dir = slots.join("proposed.git");
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    if !dir.join("HEAD").exists() {
        for d in ["objects/info", "objects/pack", "refs/heads", "refs/tags"] {
            std::fs::create_dir_all(dir.join(d)).map_err(io)?;
        }
        let config = "[core]\n\trepositoryformatversion = 0\n\tbare = true\n[gc]\n\tauto = 0\n";
        std::fs::write(dir.join("config"), config).map_err(io)?;
        let objects = repo.objects.canonicalize().unwrap_or(repo.objects.clone());
        std::fs::write(
            dir.join("objects/info/alternates"),
            format!("{}\n", objects.display()),
        )
        .map_err(io)?;
        std::fs::write(dir.join("HEAD"), "ref: refs/heads/main\n").map_err(io)?;
    }
    Ok(Git::new(dir))
}
