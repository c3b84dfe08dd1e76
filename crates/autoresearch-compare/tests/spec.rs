//! Spec strings and `[compare]` tables: what parses, what it canonicalizes
//! to, and which errors name what.

use autoresearch_compare::{CompareSpec, SpecError, from_config, from_spec};

/// Parses `input` and expects its canonical form (`Ok`) or an error message
/// containing the given text (`Err`).
fn check(input: &str, expected: Result<&str, &str>) {
    match (CompareSpec::parse(input), expected) {
        (Ok(spec), Ok(canon)) => {
            assert_eq!(spec.to_string(), canon, "canonical form of {input:?}");
            let again = CompareSpec::parse(canon).expect("canonical form parses");
            assert_eq!(again, spec, "round trip of {input:?}");
            let built = from_spec(input).expect("builds");
            assert_eq!(built.spec(), canon, "Comparator::spec of {input:?}");
        }
        (Err(e), Err(fragment)) => {
            let msg = e.to_string();
            assert!(
                msg.contains(fragment),
                "error for {input:?} was {msg:?}, expected it to contain {fragment:?}"
            );
            assert!(
                msg.contains(input.trim()),
                "error for {input:?} quotes the spec: {msg:?}"
            );
        }
        (got, want) => panic!("{input:?}: got {got:?}, expected {want:?}"),
    }
}

#[test]
fn spec_strings() {
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("scalar:val_bpb:min", Ok("scalar:val_bpb:min")),
        ("scalar:val_bpb:minimize", Ok("scalar:val_bpb:min")),
        (" scalar : val_bpb : max ", Ok("scalar:val_bpb:max")),
        (
            "scalar:score:max:delta=0.01",
            Ok("scalar:score:max:delta=0.01"),
        ),
        (
            "scalar:score:max:min_delta=0.5",
            Ok("scalar:score:max:delta=0.5"),
        ),
        ("scalar:score:max:delta=0", Ok("scalar:score:max")),
        ("stat:val_bpb:min", Ok("stat:val_bpb:min")),
        ("stat:val_bpb:min:alpha=0.05", Ok("stat:val_bpb:min")),
        (
            "stat:val_bpb:min:alpha=0.01:max_n=40:batch=4",
            Ok("stat:val_bpb:min:alpha=0.01:max_n=40:batch=4"),
        ),
        (
            "stat:loss:max:min_n=5:delta=0.001:max_age=3600:futility=0.9",
            Ok("stat:loss:max:delta=0.001:min_n=5:max_age=3600:futility=0.9"),
        ),
        (
            "pareto:val_bpb:min,memory_gb:min",
            Ok("pareto:val_bpb:min,memory_gb:min"),
        ),
        (
            "pareto:val_bpb:min:eps=0.001, memory_gb:min:eps=0.5",
            Ok("pareto:val_bpb:min:eps=0.001,memory_gb:min:eps=0.5"),
        ),
        ("pareto:acc:max", Ok("pareto:acc:max")),
        ("judge:./judge.sh --strict", Ok("judge:./judge.sh --strict")),
        (
            "judge:timeout=30:claude -p 'compare: a vs b'",
            Ok("judge:timeout=30:claude -p 'compare: a vs b'"),
        ),
        ("judge:timeout=300:x", Ok("judge:x")),
        (
            "tournament:scalar:val_bpb:min",
            Ok("tournament:scalar:val_bpb:min"),
        ),
        (
            "tournament:stat:val_bpb:min:alpha=0.1",
            Ok("tournament:stat:val_bpb:min:alpha=0.1"),
        ),
        ("vote", Ok("vote")),
        ("vote:quorum=2", Ok("vote:quorum=2")),
        (
            "all:metric(tests_passed)==1;stat:val_bpb:min",
            Ok("all:metric(tests_passed)==1;stat:val_bpb:min"),
        ),
        (
            "all: metric(mem) <= 40 ; metric(tests_failed)==0; scalar:val_bpb:min",
            Ok("all:metric(mem)<=40;metric(tests_failed)==0;scalar:val_bpb:min"),
        ),
        (
            "all:metric(x)!=0;metric(y)>1.5;metric(z)<2;metric(w)>=-1",
            Ok("all:metric(x)!=0;metric(y)>1.5;metric(z)<2;metric(w)>=-1"),
        ),
        (
            "all:metric(ok)==1;judge:a; b",
            Ok("all:metric(ok)==1;judge:a; b"),
        ),
        ("all:vote:quorum=3", Ok("all:vote:quorum=3")),
        // Errors, each naming what is wrong.
        ("", Err("empty comparator spec")),
        ("scalar", Err("scalar needs METRIC:min")),
        ("scalar:val_bpb", Err("needs a direction")),
        (
            "scalar:val_bpb:up",
            Err("direction \"up\" of \"val_bpb\" is not min or max"),
        ),
        ("scalar:val bpb:min", Err("is not a metric name")),
        (
            "scalar:val_bpb:min:delta=abc",
            Err("delta=\"abc\" is not a finite number"),
        ),
        (
            "scalar:val_bpb:min:delta=-1",
            Err("must be a finite number >= 0"),
        ),
        (
            "scalar:val_bpb:min:alpha=0.1",
            Err("unknown option \"alpha\" for scalar"),
        ),
        ("scalar:val_bpb:min:delta", Err("is not KEY=VALUE")),
        (
            "stat:val_bpb:min:alpha=1.5",
            Err("alpha=1.5 must be between 0 and 1"),
        ),
        (
            "stat:val_bpb:min:min_n=1",
            Err("min_n=1 must be at least 2"),
        ),
        (
            "stat:val_bpb:min:min_n=10:max_n=5",
            Err("max_n=5 is below min_n=10"),
        ),
        ("stat:val_bpb:min:batch=0", Err("batch must be at least 1")),
        (
            "stat:val_bpb:min:max_n=-3",
            Err("max_n=\"-3\" is not a whole number"),
        ),
        (
            "stat:val_bpb:min:futility=0",
            Err("futility=0 must be in (0, 1]"),
        ),
        (
            "stat:val_bpb:min:seed=3",
            Err("unknown option \"seed\" for stat"),
        ),
        ("pareto:", Err("pareto needs")),
        ("pareto:a:min,b", Err("metric \"b\" needs a direction")),
        (
            "pareto:a:min:tol=1",
            Err("unknown option \"tol\" for a pareto objective"),
        ),
        ("judge:", Err("judge needs COMMAND")),
        (
            "judge:timeout=0:x",
            Err("judge timeout must be at least 1 second"),
        ),
        ("judge:timeout=5", Err("must be followed by :COMMAND")),
        ("tournament:", Err("tournament needs")),
        (
            "tournament:tournament:scalar:a:min",
            Err("tournament of tournaments"),
        ),
        ("vote:quorum=0", Err("quorum must be at least 1")),
        ("vote:n=2", Err("unknown option \"n\" for vote")),
        ("all:", Err("all needs")),
        ("all:all:scalar:a:min", Err("cannot be nested")),
        (
            "all:metric(tests_passed)=1",
            Err("expected one of == != <= >= < >"),
        ),
        ("all:metric(tests_passed==1", Err("metric( without )")),
        ("all:metric(t)==yes", Err("is not a finite number")),
        ("best:val_bpb", Err("unknown comparator kind \"best\"")),
    ];
    for (input, expected) in cases {
        check(input, *expected);
    }
}

type ConfigCase<'a> = (&'a str, Result<&'a str, (&'a str, &'a str)>);

/// Reads `toml_text` (the body of a `[compare]` table) and expects the
/// canonical spec (`Ok`) or an error naming a key (`Err((key, fragment))`).
fn check_config(toml_text: &str, expected: Result<&str, (&str, &str)>) {
    let doc: toml::Value =
        toml::from_str(&format!("[compare]\n{toml_text}")).expect("test TOML parses");
    let table = &doc["compare"];
    match (CompareSpec::from_toml(table), expected) {
        (Ok(spec), Ok(canon)) => {
            assert_eq!(spec.to_string(), canon, "config {toml_text:?}");
            assert_eq!(from_config(table).expect("builds").spec(), canon);
        }
        (Err(SpecError::Config { key, reason }), Err((want_key, fragment))) => {
            assert_eq!(key, want_key, "key named for {toml_text:?} ({reason})");
            assert!(
                reason.contains(fragment),
                "reason for {toml_text:?} was {reason:?}, expected {fragment:?}"
            );
        }
        (got, want) => panic!("{toml_text:?}: got {got:?}, expected {want:?}"),
    }
}

#[test]
fn compare_tables() {
    let cases: &[ConfigCase] = &[
        (
            "kind = \"scalar\"\nmetric = \"val_bpb\"\ndirection = \"minimize\"",
            Ok("scalar:val_bpb:min"),
        ),
        (
            "kind = \"scalar\"\nmetric = \"score\"\ndirection = \"maximize\"\nmin_delta = 0.01",
            Ok("scalar:score:max:delta=0.01"),
        ),
        (
            "kind = \"scalar\"\nmetric = \"score\"\ndirection = \"max\"\nmin_delta = 1",
            Ok("scalar:score:max:delta=1"),
        ),
        (
            "spec = \"stat:val_bpb:min:alpha=0.01\"",
            Ok("stat:val_bpb:min:alpha=0.01"),
        ),
        (
            "kind = \"stat\"\nmetric = \"val_bpb\"\ndirection = \"minimize\"\nalpha = 0.01\nmin_samples = 4\nmax_samples = 30\nbatch = 3\nmax_age_secs = 600\nfutility = 0.8",
            Ok("stat:val_bpb:min:alpha=0.01:min_n=4:max_n=30:batch=3:max_age=600:futility=0.8"),
        ),
        (
            "kind = \"pareto\"\nobjectives = [{metric = \"val_bpb\", direction = \"minimize\", epsilon = 0.001}, {metric = \"memory_gb\", direction = \"minimize\"}]",
            Ok("pareto:val_bpb:min:eps=0.001,memory_gb:min"),
        ),
        (
            "kind = \"judge\"\ncommand = \"./judge.sh\"\ntimeout_secs = 60",
            Ok("judge:timeout=60:./judge.sh"),
        ),
        (
            "kind = \"tournament\"\ninner = \"scalar:val_bpb:min\"",
            Ok("tournament:scalar:val_bpb:min"),
        ),
        (
            "kind = \"tournament\"\ninner = {kind = \"scalar\", metric = \"val_bpb\", direction = \"minimize\"}",
            Ok("tournament:scalar:val_bpb:min"),
        ),
        ("kind = \"vote\"\nquorum = 2", Ok("vote:quorum=2")),
        ("kind = \"vote\"", Ok("vote")),
        (
            "kind = \"all\"\nmembers = [\"metric(tests_passed)==1\", {kind = \"condition\", metric = \"memory_gb\", op = \"<=\", value = 40}, {kind = \"stat\", metric = \"val_bpb\", direction = \"minimize\"}]",
            Ok("all:metric(tests_passed)==1;metric(memory_gb)<=40;stat:val_bpb:min"),
        ),
        // Errors name the key.
        (
            "metric = \"val_bpb\"",
            Err(("compare.kind", "missing (required)")),
        ),
        (
            "kind = \"scalar\"\ndirection = \"minimize\"",
            Err(("compare.metric", "missing (required)")),
        ),
        (
            "kind = \"scalar\"\nmetric = \"val_bpb\"\ndirection = \"down\"",
            Err(("compare.direction", "\"down\" is not minimize or maximize")),
        ),
        (
            "kind = \"scalar\"\nmetric = \"val_bpb\"\ndirection = \"minimize\"\nmin_delta = \"small\"",
            Err(("compare.min_delta", "expected a finite number")),
        ),
        (
            "kind = \"scalar\"\nmetric = \"val_bpb\"\ndirection = \"minimize\"\nmindelta = 0.1",
            Err(("compare.mindelta", "unknown key")),
        ),
        (
            "kind = \"scalar\"\nmetric = 3\ndirection = \"minimize\"",
            Err(("compare.metric", "expected a string, found integer")),
        ),
        (
            "kind = \"scalar\"\nmetric = \"val_bpb\"\ndirection = \"minimize\"\nmin_delta = -0.5",
            Err(("compare", "must be a finite number >= 0")),
        ),
        (
            "kind = \"stat\"\nmetric = \"val_bpb\"\ndirection = \"minimize\"\nmax_samples = -1",
            Err(("compare.max_samples", "out of range")),
        ),
        (
            "kind = \"stat\"\nmetric = \"val_bpb\"\ndirection = \"minimize\"\nalpha = 2.0",
            Err(("compare", "alpha=2 must be between 0 and 1")),
        ),
        (
            "kind = \"pareto\"",
            Err(("compare.objectives", "missing (required)")),
        ),
        (
            "kind = \"pareto\"\nobjectives = [{metric = \"a\"}]",
            Err(("compare.objectives[0].direction", "missing (required)")),
        ),
        (
            "kind = \"pareto\"\nobjectives = [{metric = \"a\", direction = \"min\", eps = 1}]",
            Err(("compare.objectives[0].eps", "unknown key")),
        ),
        (
            "kind = \"judge\"",
            Err(("compare.command", "missing (required)")),
        ),
        (
            "kind = \"tournament\"\ninner = {kind = \"scalar\", metric = \"a\"}",
            Err(("compare.inner.direction", "missing (required)")),
        ),
        (
            "kind = \"tournament\"\ninner = \"scalar:a\"",
            Err(("compare.inner", "needs a direction")),
        ),
        (
            "kind = \"vote\"\nquorum = \"two\"",
            Err(("compare.quorum", "expected a whole number")),
        ),
        (
            "kind = \"all\"\nmembers = [{kind = \"condition\", metric = \"t\", op = \"=\", value = 1}]",
            Err(("compare.members[0].op", "is not one of")),
        ),
        (
            "kind = \"all\"\nmembers = [\"metric(t)=1\"]",
            Err(("compare.members[0]", "expected one of")),
        ),
        (
            "kind = \"all\"\nmembers = [{kind = \"all\", members = []}]",
            Err(("compare.members[0].kind", "cannot be nested")),
        ),
        (
            "spec = \"scalar:a:min\"\nkind = \"scalar\"",
            Err(("compare.kind", "unknown key")),
        ),
        (
            "spec = \"scalar:a\"",
            Err(("compare.spec", "needs a direction")),
        ),
        (
            "kind = \"best\"",
            Err(("compare.kind", "unknown comparator kind \"best\"")),
        ),
    ];
    for (text, expected) in cases {
        check_config(text, *expected);
    }
}

#[test]
fn a_compare_value_that_is_not_a_table_is_an_error() {
    let err = CompareSpec::from_toml(&toml::Value::String("scalar".into())).unwrap_err();
    assert_eq!(
        err,
        SpecError::Config {
            key: "compare".into(),
            reason: "expected a table, found string".into()
        }
    );
}

mod round_trip {
    use autoresearch_compare::spec::{
        CompareSpec, Condition, Direction, JudgeSpec, Member, Objective, Op, ScalarSpec, StatSpec,
    };
    use proptest::prelude::*;

    fn metric() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_.]{0,8}"
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::Minimize), Just(Direction::Maximize)]
    }

    fn amount() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            (1u32..100_000).prop_map(|x| f64::from(x) / 10_000.0)
        ]
    }

    fn leaf() -> impl Strategy<Value = CompareSpec> {
        prop_oneof![
            (metric(), direction(), amount()).prop_map(|(metric, direction, min_delta)| {
                CompareSpec::Scalar(ScalarSpec {
                    metric,
                    direction,
                    min_delta,
                })
            }),
            (
                metric(),
                direction(),
                1u32..50,
                amount(),
                2u32..6,
                0u32..30,
                1u32..5,
                proptest::option::of(1u64..10_000),
                1u32..=10
            )
                .prop_map(|(m, d, a, delta, min, extra, batch, age, fut)| {
                    CompareSpec::Stat(StatSpec {
                        alpha: f64::from(a) / 100.0,
                        min_delta: delta,
                        min_samples: min,
                        max_samples: min + extra,
                        batch,
                        max_age_secs: age,
                        futility: f64::from(fut) / 10.0,
                        ..StatSpec::new(m, d)
                    })
                }),
            proptest::collection::vec((metric(), direction(), amount()), 1..4).prop_map(|objs| {
                CompareSpec::Pareto(
                    objs.into_iter()
                        .map(|(metric, direction, epsilon)| Objective {
                            metric,
                            direction,
                            epsilon,
                        })
                        .collect(),
                )
            }),
            ("[a-z./ ;:'-]{1,20}", 1u64..1000).prop_filter_map(
                "a command",
                |(cmd, timeout_secs)| {
                    let command = cmd.trim().to_string();
                    (!command.is_empty() && !command.starts_with("timeout=")).then_some(
                        CompareSpec::Judge(JudgeSpec {
                            command,
                            timeout_secs,
                        }),
                    )
                }
            ),
            (1u32..5).prop_map(|quorum| CompareSpec::Vote { quorum }),
        ]
    }

    fn condition() -> impl Strategy<Value = Member> {
        let ops = prop_oneof![
            Just(Op::Eq),
            Just(Op::Ne),
            Just(Op::Le),
            Just(Op::Ge),
            Just(Op::Lt),
            Just(Op::Gt)
        ];
        (metric(), ops, -1000i32..1000).prop_map(|(metric, op, v)| {
            Member::Condition(Condition {
                metric,
                op,
                value: f64::from(v) / 4.0,
            })
        })
    }

    fn spec() -> impl Strategy<Value = CompareSpec> {
        prop_oneof![
            leaf(),
            leaf().prop_map(|s| CompareSpec::Tournament(Box::new(s))),
            (
                proptest::collection::vec(condition(), 0..3),
                proptest::collection::vec(
                    leaf().prop_filter("judge last only", |s| !matches!(s, CompareSpec::Judge(_))),
                    0..2
                ),
                proptest::option::of(leaf()),
            )
                .prop_filter_map("a non-empty all", |(conds, specs, last)| {
                    let mut members = conds;
                    members.extend(specs.into_iter().map(Member::Compare));
                    members.extend(last.map(Member::Compare));
                    (!members.is_empty()).then_some(CompareSpec::All(members))
                }),
        ]
    }

    proptest! {
        /// Every spec prints as a string that parses back to it.
        #[test]
        fn canonical_strings_parse_back(s in spec()) {
            let text = s.to_string();
            let parsed = CompareSpec::parse(&text);
            prop_assert_eq!(parsed.as_ref(), Ok(&s), "{}", text);
        }
    }
}

#[test]
fn objectives_name_the_metrics_decided_on_first_one_first() {
    use autoresearch_compare::{CompareSpec, Direction};
    let check = |spec: &str, want: &[(&str, Direction)]| {
        let got = CompareSpec::parse(spec).unwrap().objectives();
        let want: Vec<(String, Direction)> =
            want.iter().map(|(m, d)| (m.to_string(), *d)).collect();
        assert_eq!(got, want, "{spec}");
    };
    check("scalar:val_bpb:min", &[("val_bpb", Direction::Minimize)]);
    check(
        "stat:score:max:alpha=0.01",
        &[("score", Direction::Maximize)],
    );
    check(
        "pareto:val_bpb:min,memory_gb:min",
        &[
            ("val_bpb", Direction::Minimize),
            ("memory_gb", Direction::Minimize),
        ],
    );
    check("tournament:scalar:x:max", &[("x", Direction::Maximize)]);
    check("vote:quorum=2", &[]);
}
