//! The idea travels with the attempt: what a proposer says it tried (its
//! commit message, the file `$AUTORESEARCH_DESCRIPTION` names, a
//! `description:` line on its output, else a summary of its diff) becomes
//! the candidate's commit message on the user's branch, the description
//! column of `log` and of the proposer's results file, and the chart's
//! label, while the comparator's reason keeps a column of its own. The
//! real binary, a real git repository, real shell proposers.

use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::LoopRepo;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// Proposal `n` (from 1) says what it tried in the `n`th way; the fifth
/// changes nothing and says why. Every change lowers the score, so every
/// changed candidate is kept.
fn config(ctl: &Path) -> String {
    let c = ctl.display();
    format!(
        r#"name = "exp"
branch = "main"

[propose]
command = '''
n=$(cat {c}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}/n
cp "$AUTORESEARCH_RESULTS" {c}/results_$n.tsv
case $n in
1) echo $((100-n)) > score.txt; git add -A; git -c user.name=a -c user.email=a@a commit -qm "lower the score in a commit" ;;
2) echo $((100-n)) > score.txt; printf 'halve the step size\n\nsmaller steps converge\n' > "$AUTORESEARCH_DESCRIPTION" ;;
3) echo $((100-n)) > score.txt; echo "thinking"; echo "Description: unroll the inner loop"; echo done ;;
4) echo $((100-n)) > score.txt ;;
*) echo "description: nothing worth changing" ;;
esac
'''
timeout = "60s"

[evaluate]
command = 'echo "score: $(cat score.txt)"'
timeout = "60s"
protect = ["autoresearch.toml"]

[compare]
kind = "scalar"
metric = "score"
direction = "min"

[run]
sandbox_writable = ["{c}"]
"#
    )
}

fn autoresearch(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("AUTORESEARCH_LEDGER")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = autoresearch(dir, args);
    assert!(
        out.status.success(),
        "autoresearch {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_way_of_describing_a_change_reaches_the_branch_the_log_and_the_results_file() {
    let LoopRepo {
        tmp: _tmp,
        dir,
        ctl,
    } = LoopRepo::new(config);
    ok(&dir, &["run", "--iterations", "5"]);

    // The kept candidates' messages on the user's branch, oldest first.
    let subjects = git(&dir, &["log", "--reverse", "--format=%s", "main"]);
    let subjects: Vec<&str> = subjects.lines().collect();
    assert_eq!(
        subjects,
        [
            "start",
            "lower the score in a commit",
            "halve the step size",
            "unroll the inner loop",
            "edit score.txt (+1 -1)",
        ]
    );
    let body = git(&dir, &["log", "-1", "--format=%B", "main~1"]);
    assert_eq!(body, "unroll the inner loop");
    let written = git(&dir, &["log", "-1", "--format=%B", "main~2"]);
    assert_eq!(written, "halve the step size\n\nsmaller steps converge");

    // log: the idea in DESCRIPTION, the comparator's reason in its own column.
    let tsv = ok(&dir, &["log", "--experiment", "exp", "--format", "tsv"]);
    let rows: Vec<Vec<&str>> = tsv.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        rows[0],
        ["commit", "score", "status", "description", "reason"]
    );
    let described: Vec<(&str, &str)> = rows[1..].iter().map(|r| (r[2], r[3])).collect();
    assert_eq!(
        described,
        [
            ("keep", "baseline"),
            ("keep", "lower the score in a commit"),
            ("keep", "halve the step size"),
            ("keep", "unroll the inner loop"),
            ("keep", "edit score.txt (+1 -1)"),
            ("discard", "nothing worth changing"),
        ],
        "{tsv}"
    );
    for r in &rows[2..] {
        assert!(!r[4].is_empty(), "every decision has a reason: {tsv}");
        assert_ne!(r[3], r[4], "the reason is not the description: {tsv}");
    }
    // The exported file imports back: the reasons are the decisions'
    // reasons (REASON column), not a column of values, and it exports
    // back byte for byte.
    std::fs::write(dir.join("exported.tsv"), &tsv).unwrap();
    ok(
        &dir,
        &["ingest", "tsv", "exported.tsv", "--experiment", "again"],
    );
    // (The row of a run that made no commit has no commit to import.)
    let with_commits: String = tsv
        .lines()
        .filter(|l| !l.starts_with('\t'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        ok(&dir, &["log", "--experiment", "again", "--format", "tsv"]),
        with_commits
    );
    let table = ok(&dir, &["log", "--experiment", "again"]);
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["RUN_ID", "COMMIT", "score", "STATUS", "IDEA", "REASON"],
        "{table}"
    );
    assert!(table.contains(rows[2][4]), "the reason of row 2: {table}");
    let json: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &["log", "--experiment", "exp", "--format", "json"],
    ))
    .unwrap();
    let rows_json = json["rows"].as_array().or(json.as_array()).unwrap();
    let third = &rows_json[3];
    assert_eq!(third["description"], "unroll the inner loop", "{json}");
    assert!(third["reason"].as_str().is_some_and(|r| !r.is_empty()));

    // The last proposer read every earlier idea from its results file.
    let seen = std::fs::read_to_string(ctl.join("results_5.tsv")).unwrap();
    let header = seen.lines().next().unwrap();
    assert_eq!(header, "commit\tscore\tstatus\tdescription\treason");
    for idea in [
        "lower the score in a commit",
        "halve the step size",
        "unroll the inner loop",
        "edit score.txt (+1 -1)",
    ] {
        assert!(
            seen.lines().any(|l| l.split('\t').nth(3) == Some(idea)),
            "{idea:?} in {seen}"
        );
    }

    // The chart labels points with the idea, not the proposer's command.
    let svg = dir.join("progress.svg");
    ok(&dir, &["plot", "--out", &svg.display().to_string()]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("halve the step size"), "labels: {text:.300}");
    assert!(!text.contains("AUTORESEARCH_RESULTS"), "no command line");

    // The repository moved away: the table's IDEA column still has the
    // ideas, from the descriptions stored with the runs.
    let moved = dir.with_file_name("moved");
    std::fs::rename(&dir, &moved).unwrap();
    let ledger = moved.join(".autoresearch/ledger.redb");
    let table = ok(
        _tmp.path(),
        &[
            "--ledger",
            ledger.to_str().unwrap(),
            "log",
            "--experiment",
            "exp",
        ],
    );
    for idea in ["halve the step size", "unroll the inner loop"] {
        assert!(
            table.contains(idea),
            "{idea:?} without the repository: {table}"
        );
    }
}
