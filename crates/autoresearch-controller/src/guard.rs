//! What a candidate may not change or add: protected paths, matched as
//! normalised patterns, and limits on what it adds (file size, gitlinks).
//!
//! A protected pattern is written relative to the config file's folder,
//! like the commands: a leading `./` or `/` and a trailing `/` are
//! ignored, a pattern names a file or a whole directory, globs take `*`,
//! `?`, `[...]` and `**` (across directories), and a pattern without a `/`
//! matches at any depth, as in `.gitignore`. Patterns are matched against
//! every path a change touches, of every kind (edit, addition, deletion,
//! both sides of a rename, mode, symlink, submodule): so the files the
//! evaluation runs with under a protected path are always the incumbent's.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

/// Paths a candidate may not change.
#[derive(Clone, Debug)]
pub struct Protection {
    set: GlobSet,
    /// The pattern each glob of `set` came from, as the user wrote it.
    origin: Vec<String>,
}

/// A protect pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("protected path pattern {pattern:?}: {source}")]
pub struct PatternError {
    /// The pattern as the user wrote it.
    pub pattern: String,
    /// Why globset refused it.
    #[source]
    pub source: globset::Error,
}

impl Protection {
    /// The patterns, relative to the folder `prefix` of the repository
    /// (empty: its root).
    pub fn new(patterns: &[String], prefix: &str) -> Result<Protection, PatternError> {
        let mut b = GlobSetBuilder::new();
        let mut origin = Vec::new();
        for p in patterns {
            for glob in globs_of(p, prefix) {
                let g = GlobBuilder::new(&glob)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|source| PatternError {
                        pattern: p.clone(),
                        source,
                    })?;
                b.add(g);
                origin.push(p.clone());
            }
        }
        let set = b.build().map_err(|source| PatternError {
            pattern: patterns.join(", "),
            source,
        })?;
        Ok(Protection { set, origin })
    }

    /// The pattern protecting `path` (relative to the repository's root),
    /// if one does.
    pub fn matching(&self, path: &str) -> Option<&str> {
        self.set
            .matches(path)
            .first()
            .map(|i| self.origin[*i].as_str())
    }
}

/// The globs a pattern stands for, anchored at `prefix`.
fn globs_of(pattern: &str, prefix: &str) -> Vec<String> {
    let mut p = pattern.trim();
    loop {
        let before = p;
        p = p.trim_start_matches("./").trim_start_matches('/');
        if p == before {
            break;
        }
    }
    let p = p.trim_end_matches('/');
    let mut parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        parts.push("**");
    }
    let body = parts.join("/");
    let anywhere = !p.contains('/') && body != "**";
    let prefix = prefix.trim_matches('/');
    let at = |s: &str| {
        if prefix.is_empty() {
            s.to_string()
        } else {
            format!("{prefix}/{s}")
        }
    };
    let mut out = vec![at(&body), at(&format!("{body}/**"))];
    if anywhere {
        out.push(at(&format!("**/{body}")));
        out.push(at(&format!("**/{body}/**")));
    }
    out
}

/// The scripts the evaluate command runs that exist in `dir` (the config
/// file's folder): a command's first word (`./eval.sh`), or the script an
/// interpreter is given (`python3 score.py`, `bash run.sh`, `uv run
/// train.py`), in every part of a pipeline or list, quoted parts included.
/// Protected by default, so that a candidate cannot rewrite what measures
/// it; files the command only reads (`cat score.txt`) are not.
pub fn files_named_by(command: &str, dir: &Path) -> Vec<String> {
    const INTERPRETERS: &[&str] = &[
        "sh", "bash", "zsh", "dash", "python", "python3", "node", "ruby", "perl", "Rscript",
        "julia", "bun", "deno", "lua", "php", "exec", "time", "nice", "env",
    ];
    const RUNNERS: &[&str] = &["uv", "poetry", "pipenv", "pixi", "hatch", "pdm", "conda"];
    let mut out: Vec<String> = Vec::new();
    let parts = command.split(|c: char| "\n;|&()`'\"".contains(c));
    for part in parts {
        let mut words = part
            .split_whitespace()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'))
            .peekable();
        while let Some(w) = words.next() {
            let base = w.rsplit('/').next().unwrap_or(w);
            if RUNNERS.contains(&base) && words.peek() == Some(&"run") {
                words.next();
                continue;
            }
            if INTERPRETERS.contains(&base) {
                // Options of the interpreter come before its script.
                while words.peek().is_some_and(|n| n.starts_with('-')) {
                    words.next();
                }
                continue;
            }
            let w = w.trim_start_matches("./");
            let plain = !w.is_empty()
                && !w.starts_with('/')
                && !w.contains(['$', '*', '?'])
                && !w.split('/').any(|c| c == "..");
            if plain && dir.join(w).is_file() && !out.iter().any(|o| o == w) {
                out.push(w.to_string());
            }
            break;
        }
    }
    out
}

/// The patterns protected in `cfg`: its own, the config file and the files
/// the evaluate command names (relative to `cfg.repo`), less `editable`.
pub fn protected_patterns(cfg: &crate::LoopConfig) -> Vec<String> {
    let norm = |p: &str| p.trim().trim_start_matches("./").to_string();
    let mut out: Vec<String> = cfg.protect.clone();
    if let Some(f) = &cfg.config_file {
        let rel = f
            .strip_prefix(&cfg.repo)
            .ok()
            .or(f.file_name().map(Path::new));
        if let Some(rel) = rel {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    let editable: Vec<String> = cfg.editable.iter().map(|e| norm(e)).collect();
    for named in files_named_by(&cfg.evaluate_command, &cfg.repo) {
        if !editable.contains(&norm(&named)) {
            out.push(named);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(patterns: &[&str], prefix: &str, cases: &[(&str, bool)]) {
        let pats: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let p = Protection::new(&pats, prefix).unwrap();
        for (path, protected) in cases {
            assert_eq!(
                p.matching(path).is_some(),
                *protected,
                "{patterns:?} under {prefix:?} on {path}"
            );
        }
    }

    #[test]
    fn patterns_are_normalised_and_match_files_directories_and_globs() {
        check(
            &["./eval.sh"],
            "",
            &[
                ("eval.sh", true),
                ("sub/eval.sh", true),
                ("eval.sh.bak", false),
            ],
        );
        check(
            &["*.sh"],
            "",
            &[("a.sh", true), ("d/b.sh", true), ("a.py", false)],
        );
        check(
            &["data/"],
            "",
            &[("data", true), ("data/x/y.csv", true), ("database", false)],
        );
        check(
            &["/tools/*.py"],
            "",
            &[
                ("tools/a.py", true),
                ("tools/d/a.py", false),
                ("a.py", false),
            ],
        );
        check(
            &["src/**/*.rs"],
            "",
            &[("src/a/b/c.rs", true), ("src/c.rs", true)],
        );
        check(
            &["eval.sh"],
            "sub",
            &[
                ("sub/eval.sh", true),
                ("eval.sh", false),
                ("sub/x/eval.sh", true),
            ],
        );
        check(&["."], "sub", &[("sub/a", true), ("b", false)]);
    }

    #[test]
    fn the_files_a_command_names() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("eval.sh"), "").unwrap();
        std::fs::write(tmp.path().join("score.py"), "").unwrap();
        std::fs::write(tmp.path().join("data.txt"), "").unwrap();
        let cases: &[(&str, &[&str])] = &[
            (
                "./eval.sh --fast && python3 -u score.py > out.txt",
                &["eval.sh", "score.py"],
            ),
            ("sh -c 'bash eval.sh'", &["eval.sh"]),
            ("X=1 uv run score.py", &["score.py"]),
            ("echo \"score: $(cat data.txt)\"", &[]),
            ("python3 -m pytest data.txt", &[]),
        ];
        for (command, expected) in cases {
            assert_eq!(files_named_by(command, tmp.path()), *expected, "{command}");
        }
    }
}
