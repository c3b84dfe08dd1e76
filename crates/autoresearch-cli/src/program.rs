//! What `init` writes beside the config: the agent's brief,
//! `program.md` (modelled on karpathy/autoresearch's: the goal, what to
//! change, what not to touch, how results are read, how to describe a
//! change), and the check that the folder is in a git repository.

use anyhow::{Context, bail};
use autoresearch_controller::git::Git;
use std::path::Path;

/// The file `init` writes beside the config.
pub const PROGRAM_FILE: &str = "program.md";

const PROGRAM_MD: &str = include_str!("templates/program.md");

/// Refuses a folder outside a git repository: the loop advances a branch.
pub fn require_git_repository(dir: &Path) -> anyhow::Result<()> {
    if Git::new(dir).run(&["rev-parse", "--git-dir"]).is_err() {
        bail!(
            "{} is not inside a git repository: autoresearch advances a branch of one \
             (run `git init` and commit your project, then `autoresearch init` again)",
            dir.display()
        );
    }
    Ok(())
}

/// Writes `program.md` in `dir` unless one is there (never overwritten: it
/// is the user's brief, `init --force` included); whether it was written.
pub fn write_program(dir: &Path) -> anyhow::Result<bool> {
    let path = dir.join(PROGRAM_FILE);
    if path.exists() {
        return Ok(false);
    }
    std::fs::write(&path, PROGRAM_MD).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}
