//! The scalar comparator, case by case.

use autoresearch_compare::from_spec;
use autoresearch_core::compare::Verdict;
use autoresearch_test_support::evidence::evidence;
use serde_json::{Value, json};

type Case<'a> = (&'a str, Vec<Value>, Vec<Value>, Verdict, &'a str);

/// Compares `incumbent` and `candidate` outputs under `spec` and expects the
/// verdict and a fragment of the reason.
async fn check(
    spec: &str,
    incumbent: &[Value],
    candidate: &[Value],
    verdict: Verdict,
    reason: &str,
) {
    let cmp = from_spec(spec).unwrap();
    let d = cmp
        .compare(&evidence("inc", incumbent), &evidence("cand", candidate))
        .await
        .unwrap();
    assert_eq!(
        d.verdict, verdict,
        "{spec} {incumbent:?} vs {candidate:?}: {}",
        d.reason
    );
    assert!(
        d.reason.contains(reason),
        "{spec}: reason {:?} lacks {reason:?}",
        d.reason
    );
    assert_eq!(d.descriptor["comparator"], json!(cmp.spec()));
}

#[tokio::test]
async fn scalar_cases() {
    use Verdict::{Discard, Keep};
    let v = |x: f64| vec![json!({"val_bpb": x, "memory_gb": 40.0})];
    let s = |x: f64| vec![json!({"score": x})];
    let cases: Vec<Case> = vec![
        (
            "scalar:val_bpb:min",
            v(1.0),
            v(0.99),
            Keep,
            "val_bpb improved 1 -> 0.99",
        ),
        (
            "scalar:val_bpb:min",
            v(1.0),
            v(1.0),
            Discard,
            "did not improve",
        ),
        (
            "scalar:val_bpb:min",
            v(1.0),
            v(1.01),
            Discard,
            "did not improve: 1 -> 1.01",
        ),
        ("scalar:score:max", s(0.5), s(0.6), Keep, "improved"),
        (
            "scalar:score:max",
            s(0.5),
            s(0.4),
            Discard,
            "did not improve",
        ),
        (
            "scalar:score:max:delta=0.01",
            s(0.5),
            s(0.505),
            Discard,
            "not more than min_delta 0.01",
        ),
        (
            "scalar:score:max:delta=0.01",
            s(0.5),
            s(0.52),
            Keep,
            "improved",
        ),
        (
            "scalar:val_bpb:min:delta=0.01",
            v(1.0),
            v(0.995),
            Discard,
            "not more than min_delta",
        ),
        (
            "scalar:val_bpb:min",
            v(1.0),
            vec![json!({"memory_gb": 3})],
            Discard,
            "candidate has no val_bpb",
        ),
        (
            "scalar:val_bpb:min",
            vec![json!({"memory_gb": 3})],
            v(0.9),
            Discard,
            "incumbent has no val_bpb",
        ),
        (
            "scalar:val_bpb:min",
            v(1.0),
            vec![],
            Discard,
            "candidate has no val_bpb",
        ),
        (
            "scalar:val_bpb:min",
            v(1.0),
            vec![json!({"val_bpb": "0.5"})],
            Discard,
            "candidate has no val_bpb",
        ),
        // Several samples: their means are compared.
        (
            "scalar:val_bpb:min",
            vec![json!({"val_bpb": 1.0}), json!({"val_bpb": 1.2})],
            vec![json!({"val_bpb": 1.05}), json!({"val_bpb": 1.1})],
            Keep,
            "1.1 -> 1.075",
        ),
    ];
    for (spec, inc, cand, verdict, reason) in cases {
        check(spec, &inc, &cand, verdict, reason).await;
    }
}

#[tokio::test]
async fn scalar_descriptor_holds_both_values_and_the_delta() {
    let cmp = from_spec("scalar:val_bpb:min").unwrap();
    let d = cmp
        .compare(
            &evidence("a", &[json!({"val_bpb": 1.0})]),
            &evidence("b", &[json!({"val_bpb": 0.75})]),
        )
        .await
        .unwrap();
    assert_eq!(d.descriptor["incumbent"], json!(1.0));
    assert_eq!(d.descriptor["candidate"], json!(0.75));
    assert_eq!(d.descriptor["delta"], json!(-0.25));
    assert_eq!(d.descriptor["improvement"], json!(0.25));
    assert_eq!(d.descriptor["direction"], json!("minimize"));
}
