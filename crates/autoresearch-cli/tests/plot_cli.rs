//! `autoresearch plot` end to end: a results.tsv imported into a real redb
//! ledger by the binary, then charted as SVG and PNG.

use std::path::Path;
use std::process::{Command, Output};

const RESULTS_TSV: &str = "commit\tval_bpb\tmemory_gb\tstatus\tdescription
a1b2c3d\t0.997900\t44.0\tkeep\tbaseline
b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04
c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation
d4e5f6a\t0.000000\t0.0\tcrash\tdouble model width (OOM)
e5f6a7b\t0.989100\t44.5\tkeep\tmuon momentum warmup
f6a7b8c\t0.990500\t44.1\tdiscard\tweight decay 0.2
";

fn autoresearch(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoresearch"))
        .current_dir(dir)
        .arg("--ledger")
        .arg(dir.join("ledger.redb"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn plots_an_imported_results_tsv_as_svg_and_png() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("results.tsv"), RESULTS_TSV).unwrap();
    ok(autoresearch(
        dir,
        &["ingest", "tsv", "results.tsv", "--experiment", "nano"],
    ));

    // Defaults: the only experiment, the metric it was imported with, an
    // SVG beside the ledger.
    let text = ok(autoresearch(dir, &["plot"]));
    assert!(text.contains("6 attempts, 3 kept"), "{text}");
    let svg = std::fs::read_to_string(dir.join("nano-progress.svg")).unwrap();
    assert!(svg.contains("val_bpb"), "metric on the axis");
    assert!(svg.contains("muon momentum warmup"), "kept change labelled");
    assert!(svg.contains("nano: 6 attempts, 3 kept, 1 crashed"), "title");

    let json = ok(autoresearch(
        dir,
        &[
            "plot",
            "--out",
            "chart.png",
            "--metric",
            "memory_gb",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format"], "png");
    assert_eq!(v["metric"], "memory_gb");
    assert_eq!(v["points"].as_array().unwrap().len(), 6);
    let png = std::fs::read(dir.join("chart.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // Errors say what was being done and to what, with a non-zero exit.
    let out = autoresearch(dir, &["plot", "--experiment", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("autoresearch:nope"), "{err}");
    let out = autoresearch(dir, &["plot", "--at", "999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("tick 999"));
    let out = autoresearch(dir, &["plot", "--size", "10x10"]);
    assert!(!out.status.success());
}
