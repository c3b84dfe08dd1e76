//! Pareto, human vote, gates and the tournament, case by case.

use autoresearch_compare::from_spec;
use autoresearch_core::compare::{Decision, Evidence, Verdict, Vote};
use autoresearch_test_support::evidence::{evidence, samples, vote};
use serde_json::{Value, json};

type Case<'a> = (&'a str, Vec<Value>, Vec<Value>, Verdict, &'a str);

async fn decide(spec: &str, inc: &Evidence, cand: &Evidence) -> Decision {
    from_spec(spec).unwrap().compare(inc, cand).await.unwrap()
}

fn assert_decision(what: &str, d: &Decision, verdict: &Verdict, reason: &str) {
    assert_eq!(&d.verdict, verdict, "{what}: {}", d.reason);
    assert!(
        d.reason.contains(reason),
        "{what}: reason {:?} lacks {reason:?}",
        d.reason
    );
}

#[tokio::test]
async fn pareto_cases() {
    use Verdict::{Discard, Keep};
    let p = |bpb: f64, mem: f64| vec![json!({"val_bpb": bpb, "memory_gb": mem})];
    let spec = "pareto:val_bpb:min,memory_gb:min";
    let eps = "pareto:val_bpb:min:eps=0.01,memory_gb:min:eps=1";
    let cases: Vec<Case> = vec![
        (
            spec,
            p(1.0, 40.0),
            p(0.9, 40.0),
            Keep,
            "dominates: better on val_bpb 1 -> 0.9",
        ),
        (
            spec,
            p(1.0, 40.0),
            p(0.9, 30.0),
            Keep,
            "better on val_bpb 1 -> 0.9, memory_gb 40 -> 30",
        ),
        (
            spec,
            p(1.0, 40.0),
            p(0.9, 41.0),
            Discard,
            "worse on memory_gb 40 -> 41",
        ),
        (
            spec,
            p(1.0, 40.0),
            p(1.0, 40.0),
            Discard,
            "no objective improves",
        ),
        (
            spec,
            p(1.0, 40.0),
            p(1.1, 50.0),
            Discard,
            "worse on val_bpb 1 -> 1.1, memory_gb 40 -> 50",
        ),
        // Within epsilon is a tie, both ways.
        (
            eps,
            p(1.0, 40.0),
            p(0.995, 40.5),
            Discard,
            "no objective improves beyond its epsilon",
        ),
        (eps, p(1.0, 40.0), p(0.98, 40.5), Keep, "better on val_bpb"),
        (
            eps,
            p(1.0, 40.0),
            p(0.98, 41.5),
            Discard,
            "worse on memory_gb",
        ),
        (
            "pareto:acc:max,latency:min",
            vec![json!({"acc": 0.8, "latency": 10})],
            vec![json!({"acc": 0.85, "latency": 9})],
            Keep,
            "better on acc",
        ),
        (
            spec,
            p(1.0, 40.0),
            vec![json!({"val_bpb": 0.5})],
            Discard,
            "candidate has no memory_gb",
        ),
        (
            spec,
            vec![json!({"memory_gb": 1})],
            p(0.5, 1.0),
            Discard,
            "incumbent has no val_bpb",
        ),
    ];
    for (spec, inc, cand, verdict, reason) in cases {
        let d = decide(spec, &evidence("inc", &inc), &evidence("cand", &cand)).await;
        assert_decision(spec, &d, &verdict, reason);
    }
}

#[tokio::test]
async fn pareto_descriptor_holds_both_vectors() {
    let d = decide(
        "pareto:val_bpb:min,memory_gb:min",
        &evidence("a", &[json!({"val_bpb": 1.0, "memory_gb": 40.0})]),
        &evidence("b", &[json!({"val_bpb": 0.9, "memory_gb": 39.0})]),
    )
    .await;
    assert_eq!(d.descriptor["incumbent"], json!([1.0, 40.0]));
    assert_eq!(d.descriptor["candidate"], json!([0.9, 39.0]));
    assert_eq!(d.descriptor["objectives"][1]["metric"], json!("memory_gb"));
}

#[tokio::test]
async fn vote_cases() {
    use Verdict::{Discard, Keep, Pending};
    let cases: Vec<(&str, Vec<Vote>, Verdict, &str)> = vec![
        ("vote", vec![], Pending, "waiting for votes: 0 of 1"),
        (
            "vote",
            vec![vote("cand", "ann", "keep", 1)],
            Keep,
            "voted 1 keep, 0 discard",
        ),
        (
            "vote",
            vec![vote("cand", "ann", "discard", 1)],
            Discard,
            "voted 0 keep, 1 discard",
        ),
        (
            "vote:quorum=2",
            vec![vote("cand", "ann", "keep", 1)],
            Pending,
            "1 of 2",
        ),
        (
            "vote:quorum=2",
            vec![
                vote("cand", "ann", "keep", 1),
                vote("cand", "bob", "keep", 2),
            ],
            Keep,
            "2 keep",
        ),
        // A tie never promotes.
        (
            "vote:quorum=2",
            vec![
                vote("cand", "ann", "keep", 1),
                vote("cand", "bob", "discard", 2),
            ],
            Discard,
            "1 keep, 1 discard",
        ),
        // A voter counts once, with their latest vote.
        (
            "vote:quorum=2",
            vec![
                vote("cand", "ann", "keep", 1),
                vote("cand", "ann", "keep", 2),
            ],
            Pending,
            "1 of 2",
        ),
        (
            "vote",
            vec![
                vote("cand", "ann", "keep", 1),
                vote("cand", "ann", "discard", 5),
            ],
            Discard,
            "0 keep, 1 discard",
        ),
        // Anonymous votes each count.
        (
            "vote:quorum=2",
            vec![vote("cand", "", "keep", 1), vote("cand", "", "keep", 2)],
            Keep,
            "2 keep",
        ),
        // Votes for other runs, and unknown verdicts, are ignored.
        (
            "vote",
            vec![vote("other", "ann", "keep", 1)],
            Pending,
            "0 of 1",
        ),
        (
            "vote",
            vec![vote("cand", "ann", "maybe", 1)],
            Pending,
            "0 of 1",
        ),
        (
            "vote:quorum=3",
            vec![
                vote("cand", "a", "keep", 1),
                vote("cand", "b", "keep", 2),
                vote("cand", "c", "discard", 3),
            ],
            Keep,
            "2 keep, 1 discard",
        ),
    ];
    let inc = samples("inc", "val_bpb", &[1.0]);
    for (spec, votes, verdict, reason) in cases {
        let mut cand = samples("cand", "val_bpb", &[2.0]);
        cand.votes = votes;
        let d = decide(spec, &inc, &cand).await;
        assert_decision(spec, &d, &verdict, reason);
        assert!(d.descriptor["quorum"].as_u64().unwrap() >= 1);
    }
}

#[tokio::test]
async fn gate_cases() {
    use Verdict::{Discard, Keep, NeedMore, Pending};
    let o = |bpb: f64, tests: f64| json!({"val_bpb": bpb, "tests_passed": tests});
    let gate = "all:metric(tests_passed)==1;scalar:val_bpb:min";
    let cases: Vec<Case> = vec![
        (
            gate,
            vec![o(1.0, 1.0)],
            vec![o(0.9, 1.0)],
            Keep,
            "gate metric(tests_passed)==1 passed; val_bpb improved",
        ),
        (
            gate,
            vec![o(1.0, 1.0)],
            vec![o(0.9, 0.0)],
            Discard,
            "gate metric(tests_passed)==1 failed: tests_passed = 0",
        ),
        (
            gate,
            vec![o(1.0, 1.0)],
            vec![o(1.1, 1.0)],
            Discard,
            "val_bpb did not improve",
        ),
        (
            gate,
            vec![o(1.0, 1.0)],
            vec![json!({"val_bpb": 0.5})],
            Discard,
            "candidate has no tests_passed",
        ),
        // Every sample must pass.
        (
            gate,
            vec![o(1.0, 1.0)],
            vec![o(0.9, 1.0), o(0.9, 0.0)],
            Discard,
            "failed",
        ),
        (
            "all:metric(memory_gb)<=40;metric(memory_gb)>0",
            vec![],
            vec![json!({"memory_gb": 40})],
            Keep,
            "passed",
        ),
        (
            "all:metric(memory_gb)<40",
            vec![],
            vec![json!({"memory_gb": 40})],
            Discard,
            "memory_gb = 40",
        ),
        (
            "all:metric(x)!=0",
            vec![],
            vec![json!({"x": 0})],
            Discard,
            "x = 0",
        ),
        (
            "all:metric(x)>=-1;metric(x)<1",
            vec![],
            vec![json!({"x": -1})],
            Keep,
            "passed",
        ),
        // A member that waits makes the whole wait.
        (
            "all:metric(tests_passed)==1;stat:val_bpb:min",
            vec![o(1.0, 1.0)],
            vec![o(0.9, 1.0)],
            NeedMore {
                incumbent: 2,
                candidate: 2,
            },
            "first test needs 3",
        ),
        (
            "all:metric(tests_passed)==1;vote",
            vec![o(1.0, 1.0)],
            vec![o(0.9, 1.0)],
            Pending,
            "waiting for votes",
        ),
        // The failing gate stops before the vote is asked.
        (
            "all:metric(tests_passed)==1;vote",
            vec![o(1.0, 1.0)],
            vec![o(0.9, 0.0)],
            Discard,
            "gate",
        ),
    ];
    for (spec, inc, cand, verdict, reason) in cases {
        let d = decide(spec, &evidence("inc", &inc), &evidence("cand", &cand)).await;
        assert_decision(spec, &d, &verdict, reason);
        assert_eq!(d.descriptor["comparator"], json!(spec));
        assert!(
            d.descriptor["members"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

/// Runs a round under `spec` and expects one (verdict, reason fragment) per
/// candidate, in order.
async fn check_round(spec: &str, inc: f64, cands: &[f64], expected: &[(Verdict, &str)]) {
    let cmp = from_spec(spec).unwrap();
    let inc = samples("inc", "val_bpb", &[inc]);
    let cands: Vec<Evidence> = cands
        .iter()
        .enumerate()
        .map(|(i, v)| samples(&format!("r{i}"), "val_bpb", &[*v]))
        .collect();
    let ds = cmp.compare_round(&inc, &cands).await.unwrap();
    assert_eq!(
        ds.len(),
        expected.len(),
        "{spec}: one decision per candidate"
    );
    for (i, (d, (verdict, reason))) in ds.iter().zip(expected).enumerate() {
        assert_decision(&format!("{spec} candidate {i}"), d, verdict, reason);
    }
}

#[tokio::test]
async fn tournament_cases() {
    use Verdict::{Discard, Keep};
    let t = "tournament:scalar:val_bpb:min";
    check_round(t, 1.0, &[0.9], &[(Keep, "val_bpb improved")]).await;
    check_round(
        t,
        1.0,
        &[0.95, 0.9, 0.97],
        &[
            (Discard, "lost the tournament to r1 (1 wins vs 2)"),
            (
                Keep,
                "won the tournament (2 wins); val_bpb improved 1 -> 0.9",
            ),
            (Discard, "lost the tournament to r1 (0 wins vs 2)"),
        ],
    )
    .await;
    // The winner still has to beat the incumbent.
    check_round(
        t,
        0.8,
        &[0.95, 0.9],
        &[
            (Discard, "lost the tournament to r1"),
            (
                Discard,
                "won the tournament (1 wins); val_bpb did not improve",
            ),
        ],
    )
    .await;
    // Draws: equal candidates, the earliest wins.
    check_round(
        t,
        1.0,
        &[0.9, 0.9],
        &[
            (Keep, "won the tournament (0 wins)"),
            (Discard, "lost the tournament to r0"),
        ],
    )
    .await;
    // Without a tournament every candidate is judged alone: both keep.
    check_round(
        "scalar:val_bpb:min",
        1.0,
        &[0.95, 0.9],
        &[(Keep, "improved"), (Keep, "improved")],
    )
    .await;
}

#[tokio::test]
async fn tournament_descriptor_holds_the_table() {
    let cmp = from_spec("tournament:scalar:val_bpb:min").unwrap();
    let inc = samples("inc", "val_bpb", &[1.0]);
    let cands = vec![
        samples("a", "val_bpb", &[0.95]),
        samples("b", "val_bpb", &[0.9]),
        samples("c", "val_bpb", &[0.99]),
    ];
    let ds = cmp.compare_round(&inc, &cands).await.unwrap();
    let table = &ds[1].descriptor["tournament"];
    assert_eq!(table["candidates"], json!(["a", "b", "c"]));
    assert_eq!(table["wins"], json!([1, 2, 0]));
    assert_eq!(table["winner"], json!("b"));
    assert_eq!(table["matches"].as_array().unwrap().len(), 3);
    assert_eq!(table["matches"][0]["winner"], json!("b"));
    assert_eq!(ds[1].descriptor["final"]["candidate"], json!(0.9));
    assert_eq!(ds[0].descriptor["tournament"], *table);
}
