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
    named_by(command, dir).into_iter().map(|(f, _)| f).collect()
}

/// Shells whose scripts [`files_run_by`] reads.
const SHELLS: &[&str] = &["sh", "bash", "zsh", "dash"];

/// [`files_named_by`], each with whether a shell named before it runs it
/// (`sh ./measure`).
fn named_by(command: &str, dir: &Path) -> Vec<(String, bool)> {
    const INTERPRETERS: &[&str] = &[
        "sh", "bash", "zsh", "dash", "python", "python3", "node", "ruby", "perl", "Rscript",
        "julia", "bun", "deno", "lua", "php", "exec", "time", "nice", "env",
    ];
    const RUNNERS: &[&str] = &["uv", "poetry", "pipenv", "pixi", "hatch", "pdm", "conda"];
    let mut out: Vec<(String, bool)> = Vec::new();
    let parts = command.split(|c: char| "\n;|&()`'\"".contains(c));
    for part in parts {
        let mut words = part
            .split_whitespace()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'))
            .peekable();
        let mut by_shell = false;
        while let Some(w) = words.next() {
            let base = w.rsplit('/').next().unwrap_or(w);
            if RUNNERS.contains(&base) && words.peek() == Some(&"run") {
                words.next();
                continue;
            }
            if INTERPRETERS.contains(&base) {
                by_shell = SHELLS.contains(&base);
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
            if plain && dir.join(w).is_file() && !out.iter().any(|(o, _)| o == w) {
                out.push((w.to_string(), by_shell));
            }
            break;
        }
    }
    out
}

/// The files the evaluate command runs that exist in `dir`: those it
/// names ([`files_named_by`]), then, for each of them that is a shell
/// script (given to `sh`, `bash`, `zsh` or `dash`, named `.sh`/`.bash`,
/// or with a `#!` line naming one of them), the files its lines name in
/// the same way, and so on (`eval.sh`
/// running `python3 score.py` protects both). Names in a script are read
/// against `dir`, where the command runs. Lines starting with `#` are
/// skipped; a script over 1 MiB, or past 256 files, is not read further.
/// Modules a script imports and data it reads are not found: list them in
/// `protect`.
pub fn files_run_by(command: &str, dir: &Path) -> Vec<String> {
    const MAX_SCRIPT: u64 = 1 << 20;
    const MAX_FILES: usize = 256;
    let mut out = named_by(command, dir);
    let mut next = 0;
    while next < out.len() && out.len() < MAX_FILES {
        let (path, by_shell) = (dir.join(&out[next].0), out[next].1);
        next += 1;
        let Some(text) = std::fs::metadata(&path)
            .ok()
            .filter(|m| m.len() <= MAX_SCRIPT)
            .and_then(|_| std::fs::read(&path).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
        else {
            continue;
        };
        if !by_shell && !is_shell_script(&path, &text) {
            continue;
        }
        let lines: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for (named, shell) in named_by(&lines, dir) {
            if !out.iter().any(|(o, _)| *o == named) && out.len() < MAX_FILES {
                out.push((named, shell));
            }
        }
    }
    out.into_iter().map(|(f, _)| f).collect()
}

/// Whether the shell runs `text` (the file at `path`): a `.sh` or `.bash`
/// name, or a `#!` line naming a Bourne-style shell.
fn is_shell_script(path: &Path, text: &str) -> bool {
    let by_name = path.extension().is_some_and(|e| e == "sh" || e == "bash");
    let by_shebang = text.lines().next().is_some_and(|first| {
        first.starts_with("#!")
            && first
                .split(|c: char| c == '/' || c.is_whitespace())
                .any(|w| SHELLS.contains(&w))
    });
    by_name || by_shebang
}

/// The patterns protected in `cfg`: its own, the config file and the files
/// the evaluate command runs ([`files_run_by`], relative to `cfg.repo`),
/// less `editable`.
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
    for named in files_run_by(&cfg.evaluate_command, &cfg.repo) {
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
    fn the_scripts_a_shell_script_runs_are_found_too() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = tmp.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "eval.sh",
            "set -e\npython3 score.py --quick\n# python3 old.py\n./lib/run\n",
        );
        write(
            "lib/run",
            "#!/usr/bin/env bash\nperl tool.pl | tee log.txt\n",
        );
        write(
            "score.py",
            "import subprocess\nsubprocess.run(['sh', 'hidden.sh'])\n",
        );
        for name in ["old.py", "tool.pl", "hidden.sh", "log.txt"] {
            write(name, "");
        }
        assert_eq!(
            files_run_by("./eval.sh", tmp.path()),
            ["eval.sh", "score.py", "lib/run", "tool.pl"],
            "a shell script's commands are followed; a Python script's are not, nor comments"
        );
        // A script that runs itself is read once.
        write("loop.sh", "sh loop.sh\n");
        assert_eq!(files_run_by("bash loop.sh", tmp.path()), ["loop.sh"]);
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
