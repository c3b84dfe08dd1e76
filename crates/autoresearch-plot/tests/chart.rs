//! The chart drawn from a real world (core's World over MemoryStorage),
//! written as SVG and PNG and read back.

use autoresearch_core::lifecycle::attempts;
use autoresearch_core::{
    BranchHead, ComponentRegistry, EvalResult, Experiment, MemoryStorage, Outcome, Run, RunStatus,
    Storage, World, experiment_world_name,
};
use autoresearch_plot::{ChartOptions, Direction, Format, Mark, PlotError, Progress, write_chart};
use serde_json::json;
use std::sync::Arc;

/// Comparator specs read as the CLI reads them.
fn specs(spec: &str) -> Vec<(String, Direction)> {
    autoresearch_compare::CompareSpec::parse(spec)
        .map(|s| s.objectives())
        .unwrap_or_default()
}

/// One attempt to record: status, task (the label), metric samples.
struct Step {
    status: &'static str,
    task: &'static str,
    samples: &'static [f64],
}

const fn step(status: &'static str, task: &'static str, samples: &'static [f64]) -> Step {
    Step {
        status,
        task,
        samples,
    }
}

/// A TSP experiment: tour length falls as changes are kept, with noise.
const STEPS: &[Step] = &[
    step("baseline", "", &[1012.4, 1009.8, 1015.1]),
    step("keep", "nearest-neighbour start", &[941.2, 944.0, 939.5]),
    step("discard", "random restarts x2", &[948.3, 951.0, 945.9]),
    step("keep", "2-opt pass", &[872.9, 870.1, 875.3]),
    step("crash", "numba jit", &[]),
    step("discard", "shuffle cities", &[1103.0, 1099.2, 1107.7]),
    step("discard", "greedy edge", &[880.4, 877.9, 879.0]),
    step("keep", "2-opt until no gain", &[851.7, 853.2, 850.1]),
    step("crash", "", &[0.0]),
    step("discard", "or-opt segment 3", &[852.0, 855.5, 849.8]),
    step(
        "keep",
        "or-opt segments 1..3 with a long description that gets cut",
        &[838.2, 836.0, 839.9],
    ),
    step(
        "discard",
        "simulated annealing t=10",
        &[845.0, 848.8, 842.1],
    ),
    step("discard", "edit prepare.py", &[]),
    step(
        "keep",
        "annealing, geometric cooling",
        &[829.4, 831.0, 827.7],
    ),
    step("discard", "annealing t=100", &[833.0, 836.1, 830.2]),
    step("crash", "timeout: 3-opt", &[]),
    step("keep", "don't-look bits", &[824.1, 825.3, 823.0]),
    step("pending", "or-3opt hybrid", &[822.5, 826.0, 823.9]),
];

async fn build_world(steps: &[Step]) -> (Arc<dyn Storage>, World) {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(None));
    let registry = Arc::new(ComponentRegistry::standard());
    let mut world = World::create(storage.clone(), registry, &experiment_world_name("tsp"))
        .await
        .unwrap();
    world
        .spawn_with(&Experiment::new("tsp", "/tmp/tsp", "main", 1, &json!({})))
        .unwrap();
    let head = world
        .spawn_with(&BranchHead::new("tsp", "c0", "", &json!({}), 1))
        .unwrap();
    world.commit().await.unwrap();
    for (i, s) in steps.iter().enumerate() {
        let run_id = format!("run-{i:03}");
        let mut run = Run::new(&run_id, "tsp");
        run.task = s.task.to_string();
        run.commit_hash = format!("{:07x}", 0xabc000 + i);
        run.set_status(if s.status == "crash" {
            RunStatus::Crashed
        } else {
            RunStatus::Stopped
        });
        let e = world.spawn_with(&run).unwrap();
        for (k, v) in s.samples.iter().enumerate() {
            world
                .spawn_with(&EvalResult::new(
                    &run_id,
                    "evaluate",
                    &json!({"tour_length": v, "exit_code": 0, "sample": k}),
                    2,
                ))
                .unwrap();
        }
        let comparator = match s.status {
            "keep" | "discard" => "stat:tour_length:min:alpha=0.05",
            _ => "",
        };
        world
            .insert(
                e,
                &Outcome {
                    run_id: run_id.clone(),
                    status: s.status.into(),
                    reason: String::new(),
                    descriptor_json: "{}".into(),
                    base_commit: "c0".into(),
                    comparator: comparator.into(),
                    decided_at_ms: 3,
                },
            )
            .unwrap();
        if s.status == "keep" {
            world
                .insert(
                    head,
                    &BranchHead::new("tsp", &run.commit_hash, &run_id, &json!({}), 3),
                )
                .unwrap();
        }
        world.commit().await.unwrap();
    }
    (storage, world)
}

#[tokio::test]
async fn progress_reads_marks_values_and_head_from_the_world() {
    let (_, world) = build_world(STEPS).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    assert_eq!(p.metric, "tour_length");
    assert_eq!(p.direction, Some(Direction::Minimize));
    assert_eq!(p.points.len(), STEPS.len());
    assert_eq!(p.count(Mark::Keep), 6);
    assert_eq!(p.count(Mark::Crash), 3);
    assert_eq!(p.count(Mark::Baseline), 1);
    assert_eq!(p.count(Mark::Pending), 1);
    // A crash that logged 0.0 (results.tsv style) is not charted as a value.
    assert_eq!(p.points[8].value, None);
    assert_eq!(p.points[8].samples, vec![0.0]);
    let steps = p.head_steps();
    assert_eq!(steps.first().map(|s| s.0), Some(1));
    assert_eq!(steps.len(), 7);
    assert!((p.best().unwrap() - 824.133_333).abs() < 1e-3);
    assert!(steps.windows(2).all(|w| w[1].1 < w[0].1));
    assert_eq!(p.points[0].label, "baseline");
    assert_eq!(
        p.points[10].label.chars().count(),
        autoresearch_plot::LABEL_CHARS
    );
    assert!(p.points[10].label.ends_with('…'));
    // A crash with neither task nor metric is labelled by its commit.
    assert_eq!(p.points[8].label, "0abc008");
}

#[tokio::test]
async fn explicit_metric_and_missing_metric() {
    let (_, world) = build_world(STEPS).await;
    let a = attempts(&world, "tsp");
    let p = Progress::from_attempts("tsp", &a, Some("sample"), &specs).unwrap();
    assert_eq!(p.metric, "sample");
    assert_eq!(p.direction, None);
    assert_eq!(p.points[1].value, Some(1.0));

    // Without a comparator spec, two numeric outputs are ambiguous.
    let (_, world) = build_world(&[step("baseline", "", &[1.0])]).await;
    let err = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap_err();
    match &err {
        PlotError::NoMetric { available, .. } => {
            assert_eq!(available, &["exit_code", "sample", "tour_length"])
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("--metric"), "{err}");

    let err = Progress::from_attempts("tsp", &[], None, &specs).unwrap_err();
    assert!(matches!(err, PlotError::NoAttempts { .. }), "{err}");
}

#[tokio::test]
async fn writes_svg_and_png_that_read_back() {
    let (_, world) = build_world(STEPS).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("AUTORESEARCH_PLOT_SAMPLES").map(std::path::PathBuf::from);
    let out = keep.as_deref().unwrap_or(dir.path());

    let svg_path = out.join("nested/progress.svg");
    let f = write_chart(&p, &svg_path, &ChartOptions::default()).unwrap();
    assert_eq!(f, Format::Svg);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
    assert!(svg.contains("tsp: 18 attempts, 6 kept, 3 crashed"));
    assert!(svg.contains("tour_length (lower is better)"));
    assert!(svg.contains("2-opt until no gain"));
    assert!(svg.contains("Running best (head)"));
    assert!(!out.join("nested/progress.svg.tmp").exists());

    let png_path = out.join("progress.PNG");
    let f = write_chart(&p, &png_path, &ChartOptions::default()).unwrap();
    assert_eq!(f, Format::Png);
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1400, 700));
    let pixels = &buf[..info.buffer_size()];
    let rgb = |r: u8, g: u8, b: u8| pixels.chunks(3).filter(|px| px == &[r, g, b]).count();
    // Kept markers are filled with the keep green; text and crosses exist.
    assert!(rgb(46, 204, 113) > 200, "kept markers drawn");
    assert!(rgb(214, 48, 49) > 20, "crash crosses drawn");
    let dark = pixels
        .chunks(3)
        .filter(|px| px.iter().all(|c| *c < 80))
        .count();
    assert!(dark > 2000, "text and axes drawn: {dark} dark pixels");
}

#[tokio::test]
async fn unwritable_path_is_a_clear_error() {
    let (_, world) = build_world(STEPS).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = write_chart(&p, &file.join("chart.svg"), &ChartOptions::default()).unwrap_err();
    assert!(matches!(err, PlotError::Write { .. }));
    assert!(err.to_string().contains("chart.svg"), "{err}");
}

#[tokio::test]
async fn a_far_off_baseline_stays_on_scale_and_only_far_worse_attempts_are_cut() {
    // The first keep was the big gain: the chart must show it as such.
    let steps = [
        step("baseline", "", &[30640.0, 30655.0]),
        step("keep", "nearest neighbour", &[7460.0, 7470.0]),
        step("discard", "shuffle", &[31100.0]),
        step("keep", "2-opt", &[6850.0]),
        step("keep", "or-opt", &[6325.0]),
    ];
    let (_, world) = build_world(&steps).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    let svg = autoresearch_plot::render(&p, Format::Svg, &ChartOptions::default()).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(!svg.contains("off scale"), "the baseline is never cut");
    // The y axis reaches the baseline: a tick label at 30000 or above.
    let top_label = texts(&svg)
        .iter()
        .filter_map(|t| t.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(top_label >= 30000.0, "axis spans the baseline: {top_label}");

    // A diverged attempt far worse than every head is pinned, with its value.
    let steps = [
        step("baseline", "", &[100.0]),
        step("keep", "a", &[90.0]),
        step("discard", "diverged", &[1e9]),
        step("keep", "b", &[85.0]),
    ];
    let (_, world) = build_world(&steps).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    let svg = autoresearch_plot::render(&p, Format::Svg, &ChartOptions::default()).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("off scale ↑"), "cut drawn");
    assert!(
        svg.contains("↑ 1000000000"),
        "off-scale value written in full"
    );
    assert!(
        svg.contains("Off scale: far worse than any head"),
        "in the legend"
    );

    // Without a far-off attempt there is no cut.
    let (_, world) = build_world(STEPS).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    let svg = autoresearch_plot::render(&p, Format::Svg, &ChartOptions::default()).unwrap();
    assert!(!String::from_utf8(svg).unwrap().contains("off scale"));
}

#[tokio::test]
async fn every_kind_of_attempt_is_drawn_and_in_the_legend() {
    let (_, world) = build_world(STEPS).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    let svg = autoresearch_plot::render(&p, Format::Svg, &ChartOptions::default()).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    let legend = texts(&svg).join(" ");
    for entry in [
        "Baseline",
        "Kept",
        "Running best (head)",
        "Discarded",
        "Pending / undecided",
        "Crashed (no value)",
        // "edit prepare.py" was refused before any evaluation.
        "Not evaluated (no change, protected path)",
        "Whisker: min to max of repeated samples",
        "p: chance that noise alone shows this gain",
    ] {
        assert!(legend.contains(entry), "legend lacks {entry:?}: {legend}");
    }
    // The legend is a panel right of the plot: every point lies left of it.
    let legend_x = 1400 - (1400 / 4).clamp(220, 320);
    let xs: Vec<f64> = svg
        .split("<circle cx=\"")
        .skip(1)
        .filter_map(|c| c.split('"').next()?.parse().ok())
        .collect();
    assert!(!xs.is_empty());
    let (points, legend): (Vec<f64>, Vec<f64>) = xs.iter().partition(|x| **x < legend_x as f64);
    assert!(points.len() >= 14, "{xs:?}");
    assert!(
        legend.iter().all(|x| *x > legend_x as f64 + 5.0),
        "{legend:?}"
    );
}

#[tokio::test]
async fn a_replay_keeps_attempt_numbers_and_marks_changed_decisions() {
    let (_, world) = build_world(STEPS).await;
    let original = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    // The replay: the same runs, the third kept instead of discarded, and
    // only the later half recorded (as a fork from a tick would).
    let mut replay = original.clone();
    replay.points.drain(..6);
    for (i, p) in replay.points.iter_mut().enumerate() {
        p.attempt = i + 1;
    }
    replay.points[0].mark = Mark::Keep;
    replay.align_to(&original, "autoresearch:tsp");
    assert_eq!(replay.points[0].attempt, 7, "original numbering kept");
    assert_eq!(replay.points[0].changed_from, Some(Mark::Discard));
    assert_eq!(replay.changed(), 1);
    let svg = autoresearch_plot::render(&replay, Format::Svg, &ChartOptions::default()).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(
        svg.contains("fork of autoresearch:tsp: 1 decided otherwise"),
        "title"
    );
    assert!(
        texts(&svg)
            .join(" ")
            .contains("Decided otherwise than the original"),
        "legend"
    );
}

#[tokio::test]
async fn read_uses_experiment_hints_final_commit_samples_and_relabels() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(None));
    let registry = Arc::new(ComponentRegistry::standard());
    let mut w = World::create(storage, registry, &experiment_world_name("nano"))
        .await
        .unwrap();
    // As the results.tsv importer records it: metric and direction on the
    // Experiment, outcomes without a comparator spec, a description output.
    w.spawn_with(&Experiment::new(
        "nano",
        "/nowhere",
        "main",
        1,
        &json!({"metric": "val_bpb", "direction": "minimize"}),
    ))
    .unwrap();
    let rows = [
        ("a", "aaaaaaa1", "keep", Some("baseline run")),
        ("b", "bbbbbbb2", "keep", None),
        ("c", "ccccccc3", "discard", Some("swap to GeLU")),
    ];
    for (id, commit, status, description) in rows {
        let mut run = Run::new(id, "nano");
        run.commit_hash = commit.into();
        run.task = "claude -p program.md".into();
        let e = w.spawn_with(&run).unwrap();
        let mut out = json!({"val_bpb": 1.0, "memory_gb": 40.0, "_meta": {"commit": commit}});
        if let Some(d) = description {
            out["description"] = json!(d);
        }
        w.spawn_with(&EvalResult::new(id, "train", &out, 1))
            .unwrap();
        w.insert(
            e,
            &Outcome {
                run_id: id.into(),
                status: status.into(),
                ..Outcome::default()
            },
        )
        .unwrap();
    }
    // A sample of b's candidate before it was rebased: not a sample of b.
    w.spawn_with(&EvalResult::new(
        "b",
        "train",
        &json!({"val_bpb": 9.0, "_meta": {"commit": "0ld0ld0"}}),
        1,
    ))
    .unwrap();
    w.commit().await.unwrap();

    let mut p = Progress::read(&w, "nano", None, &specs).unwrap();
    assert_eq!(p.metric, "val_bpb");
    assert_eq!(p.direction, Some(Direction::Minimize));
    assert_eq!(p.points[1].samples, vec![1.0]);
    let labels: Vec<&str> = p.points.iter().map(|x| x.label.as_str()).collect();
    // The shared task (the proposer's command) is no label; b has only its commit.
    assert_eq!(labels, ["baseline run", "bbbbbbb", "swap to GeLU"]);
    assert!(Progress::label_is_commit(&p.points[1]));
    assert!(!Progress::label_is_commit(&p.points[0]));
    p.relabel(|x| (x.run_id == "b").then(|| "muon optimizer\nbody".to_string()));
    assert_eq!(p.points[1].label, "muon optimizer");
}

/// The text of every `<text>` element of an SVG, trimmed.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = t.split_once('>')?.1;
            Some(body.split("</text>").next()?.trim().to_string())
        })
        .collect()
}

#[tokio::test]
async fn values_spanning_past_f64_are_an_error_not_an_endless_axis() {
    let steps = [
        step("baseline", "", &[0.0]),
        step("keep", "huge", &[f64::MAX]),
    ];
    let (_, world) = build_world(&steps).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    for format in [Format::Svg, Format::Png] {
        let err = autoresearch_plot::render(&p, format, &ChartOptions::default()).unwrap_err();
        assert!(matches!(err, PlotError::Unscalable { .. }), "{err}");
        assert!(err.to_string().contains("too wide for an axis"), "{err}");
    }
    // Wide but within f64: drawn.
    let steps = [
        step("baseline", "", &[-1e300]),
        step("keep", "wide", &[1e300]),
    ];
    let (_, world) = build_world(&steps).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    assert!(autoresearch_plot::render(&p, Format::Svg, &ChartOptions::default()).is_ok());
}

#[tokio::test]
async fn a_chart_path_is_followed_through_links_and_never_replaces_what_is_no_file() {
    let (_, world) = build_world(STEPS).await;
    let p = Progress::from_attempts("tsp", &attempts(&world, "tsp"), None, &specs).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = ChartOptions::default();
    // An unknown extension: refused, nothing written.
    let jpg = dir.path().join("chart.jpg");
    let err = write_chart(&p, &jpg, &o).unwrap_err();
    assert!(matches!(err, PlotError::UnknownFormat { .. }), "{err}");
    assert!(!jpg.exists());
    // A symbolic link: its target gets the chart, the link stays a link.
    let target = dir.path().join("target.svg");
    std::fs::write(&target, "old").unwrap();
    let link = dir.path().join("link.svg");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    write_chart(&p, &link, &o).unwrap();
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&target)
            .unwrap()
            .starts_with("<svg")
    );
    // A FIFO is written to, not replaced by a file.
    let fifo = dir.path().join("pipe.svg");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    write_chart(&p, &fifo, &o).unwrap();
    assert!(reader.join().unwrap().starts_with("<svg"));
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}
