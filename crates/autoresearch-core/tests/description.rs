//! The description rule every executor applies: the `description:` output
//! line, the cleaning of a written description, and the diff-stat summary
//! used when a proposer says nothing.

use autoresearch_core::description::{
    DESCRIPTION_MAX, FileChange, change_summary, clean_description, description_line,
};

#[test]
fn the_last_description_line_wins_and_empty_ones_are_skipped() {
    let check = |output: &str, expected: Option<&str>| {
        assert_eq!(description_line(output).as_deref(), expected, "{output:?}");
    };
    check("", None);
    check("score: 3\n", None);
    check("description: first\ndescription: second\n", Some("second"));
    check("description: kept\ndescription:   \n", Some("kept"));
    check("  DESCRIPTION:\tuse a heap \r\n", Some("use a heap"));
    check("the description: is not at the start\n", None);
    check("descriptio", None);
    check(
        "description: caf\u{e9} \u{1b}[1mbold\u{1b}[0m\n",
        Some("caf\u{e9} [1mbold[0m"),
    );
}

#[test]
fn a_written_description_is_trimmed_bounded_and_never_empty() {
    assert_eq!(clean_description(" \n\t "), None);
    assert_eq!(
        clean_description("subject\n\nbody\u{7}\n").as_deref(),
        Some("subject\n\nbody")
    );
    let long = "\u{e9}".repeat(DESCRIPTION_MAX);
    let cut = clean_description(&long).unwrap();
    assert!(cut.len() <= DESCRIPTION_MAX, "{}", cut.len());
    assert!(
        cut.chars().all(|c| c == '\u{e9}'),
        "cut at a character boundary"
    );
}

#[test]
fn a_silent_change_is_summarised_from_its_diff_stat() {
    let file = |path: &str, lines: Option<(u64, u64)>| FileChange {
        path: path.into(),
        lines,
    };
    assert_eq!(change_summary(&[]), "no change");
    assert_eq!(
        change_summary(&[file("tsp.py", Some((12, 3)))]),
        "edit tsp.py (+12 -3)"
    );
    assert_eq!(
        change_summary(&[file("a.py", Some((1, 0))), file("logo.png", None)]),
        "edit 2 files: a.py, logo.png (+1 -0)"
    );
    let many: Vec<FileChange> = (0..5)
        .map(|i| file(&format!("f{i}"), Some((2, 1))))
        .collect();
    assert_eq!(
        change_summary(&many),
        "edit 5 files: f0, f1, f2 and 2 more (+10 -5)"
    );
}
