//! The metric reader through its public surface: a table of evaluator
//! outputs and what must be read from them (metrics, units, or the error's
//! words), the same outputs fed in every chunking, and round trips of every
//! finite f64 as Rust and Python print it.

use autoresearch_core::metrics::{MetricReader, MetricSpec, MetricSyntax, read_text};
use autoresearch_core::num::{fmt_f64, fmt_f64_places, parse_f64};
use proptest::prelude::*;
use serde_json::{Value, json};

enum Want {
    /// The outputs a Result gets (metrics, and `_units` when any).
    Ok(Value),
    /// Words the error must contain, in order.
    Err(&'static [&'static str]),
}

fn spec(syntax: MetricSyntax, required: &[&str]) -> MetricSpec {
    MetricSpec {
        syntax,
        required: required.iter().map(|s| s.to_string()).collect(),
    }
}

fn read(syntax: MetricSyntax, text: &str, required: &[&str]) -> Result<Value, String> {
    let spec = spec(syntax, required);
    let reading = read_text(&spec, text);
    // Every chunking gives the same reading: split at every byte offset
    // for short texts, in chunks of 7 bytes for long ones.
    if text.len() < 400 {
        for cut in 0..=text.len() {
            let mut r = MetricReader::new(spec.clone());
            r.feed(&text.as_bytes()[..cut]);
            r.feed(&text.as_bytes()[cut..]);
            assert_eq!(r.finish(), reading, "cut at {cut} of {text:?}");
        }
    }
    reading
        .check(&spec.required)
        .map(|_| Value::Object(reading.clone().into_outputs()))
        .map_err(|e| e.to_string())
}

fn check(syntax: MetricSyntax, text: &str, required: &[&str], want: Want) {
    let got = read(syntax, text, required);
    match (got, want) {
        (Ok(v), Want::Ok(e)) => assert_eq!(v, e, "input {text:?}"),
        (Err(err), Want::Err(words)) => {
            let mut rest = err.as_str();
            for w in words {
                match rest.find(w) {
                    Some(i) => rest = &rest[i + w.len()..],
                    None => panic!("input {text:?}: error {err:?} should say {words:?} in order"),
                }
            }
        }
        (got, _) => panic!("input {text:?}: got {got:?}"),
    }
}

#[test]
fn lines() {
    use MetricSyntax::Lines;
    use Want::*;
    let ok = |text: &str, v: Value| check(Lines, text, &[], Ok(v));
    // karpathy's summary, and the plain forms.
    ok(
        "step 100 loss 3.2\n---\nval_bpb:          0.997900\ntraining_seconds: 300.1\npeak_vram_mb:     45060.2\n",
        json!({"val_bpb": 0.9979, "training_seconds": 300.1, "peak_vram_mb": 45060.2}),
    );
    ok("score: 10\n", json!({"score": 10.0}));
    ok("score=10\n", json!({"score": 10.0}));
    ok("score = 10\n", json!({"score": 10.0}));
    ok("  score:10", json!({"score": 10.0}));
    ok("METRIC score=9\n", json!({"score": 9.0}));
    ok("METRIC total_µs=15200\n", json!({"total_µs": 15200.0}));
    // Colours, progress bars redrawn with \r, Windows line ends.
    ok("\x1b[1;32mscore: 10\x1b[0m\n", json!({"score": 10.0}));
    ok(
        "\x1b[1mscore\x1b[0m: \x1b[33m10\x1b[0m\n",
        json!({"score": 10.0}),
    );
    ok(
        "\x1b]0;title\x07score: 3\n\x1b[2K\x1b[1Gscore: 4\n",
        json!({"score": 4.0}),
    );
    ok(
        "step 1/3\rstep 2/3\rstep 3/3\rscore: 10\n",
        json!({"score": 10.0}),
    );
    ok(
        "score: 10\r\nloss: 2\r\n",
        json!({"score": 10.0, "loss": 2.0}),
    );
    ok("50%|█████     | 5/10\rscore: 1\r", json!({"score": 1.0}));
    // Other escape forms: OSC ended by ESC \, two-byte escapes, a DCS
    // string (the full parser's case), 256-colour and RGB codes.
    ok(
        "\x1b]8;;http://x\x1b\\score\x1b]8;;\x1b\\: 5\n",
        json!({"score": 5.0}),
    );
    ok("\x1b7score: 6\x1b8\n", json!({"score": 6.0}));
    ok("\x1bPq#0;2;0;0;0\x1b\\score: 7\n", json!({"score": 7.0}));
    ok(
        "\x1b[38;5;82mscore\x1b[0m: \x1b[38;2;1;2;3m8\x1b[m\n",
        json!({"score": 8.0}),
    );
    // Every float syntax Rust and Python print.
    for (text, x) in [
        ("3.2e-08", 3.2e-8),
        ("3.2e-8", 3.2e-8),
        ("1E+3", 1000.0),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("+1", 1.0),
        ("-0.25", -0.25),
        ("1e+16", 1e16),
        ("0.1000000000000000055511151231257827", 0.1),
        ("123456789012345678901234567890", 1.2345678901234568e29),
    ] {
        ok(&format!("x: {text}\n"), json!({ "x": x }));
    }
    // Units and percentages, recorded beside the number.
    ok(
        "score: 9 ms\n",
        json!({"score": 9.0, "_units": {"score": "ms"}}),
    );
    ok(
        "score: 9%\n",
        json!({"score": 9.0, "_units": {"score": "%"}}),
    );
    ok(
        "score: 9 %\n",
        json!({"score": 9.0, "_units": {"score": "%"}}),
    );
    ok(
        "mem: 12.5GB\n",
        json!({"mem": 12.5, "_units": {"mem": "GB"}}),
    );
    ok(
        "speed: 1.2e3 tok/s\n",
        json!({"speed": 1200.0, "_units": {"speed": "tok/s"}}),
    );
    ok("t: 9 ms\nt: 8\n", json!({"t": 8.0}));
    // Thousands separators where unambiguous.
    ok("score: 1,234\n", json!({"score": 1234.0}));
    ok("params: 12,345,678.5\n", json!({"params": 12345678.5}));
    // The last occurrence wins; other lines are chatter.
    ok("a: 1\na: 2\n", json!({"a": 2.0}));
    ok(
        "loss: 3.1\nloss: 2.9\nEpoch 1: done\nurl: http://x\nloss: 2.5\n",
        json!({"loss": 2.5}),
    );
    // Non-finite values are read and refused by name.
    for v in ["nan", "NaN", "inf", "-inf", "Infinity"] {
        check(
            Lines,
            &format!("val_bpb: {v}\n"),
            &[],
            Err(&["val_bpb", "not a finite", "on line 1"]),
        );
    }
    check(
        Lines,
        "val_bpb: nan\nval_bpb: 1\n",
        &[],
        Ok(json!({"val_bpb": 1.0})),
    );
    // Nothing found: the error says how much was read and quotes the
    // nearest line.
    check(
        Lines,
        "nothing here\n",
        &[],
        Err(&["no metric", "1 lines read"]),
    );
    check(
        Lines,
        "score: 1,5\n",
        &[],
        Err(&["no metric", "line 1 `score: 1,5`", "comma", "ambiguous"]),
    );
    check(
        Lines,
        "score: 9 ms extra\n",
        &[],
        Err(&["no metric", "`9` is followed by `ms extra`"]),
    );
    check(
        Lines,
        "score: fast\n",
        &[],
        Err(&["no metric", "`fast` is not a number"]),
    );
    check(
        Lines,
        "{\"score\": 1}\n",
        &[],
        Err(&["no metric", "JSON object", "metrics = \"json\""]),
    );
    check(
        Lines,
        "METRIC score: 9\n",
        &[],
        Err(&["no metric", "`METRIC name=value`"]),
    );
    check(
        Lines,
        "final score: 9\n",
        &[],
        Err(&["no metric", "line 1", "`final score` has a space"]),
    );
    // A required metric missing: the line that mentions it, however far back.
    check(
        Lines,
        "loss: 1\n",
        &["val_bpb"],
        Err(&["val_bpb is missing"]),
    );
    check(
        Lines,
        "val_bpb 0.99\nloss: 1\nother: 2\n",
        &["val_bpb"],
        Err(&[
            "val_bpb is missing",
            "line 1 `val_bpb 0.99`",
            "not `val_bpb: VALUE`",
        ]),
    );
    check(
        Lines,
        "Score: 10\n",
        &["score"],
        Err(&["score is missing", "case-sensitive", "`Score`"]),
    );
    check(
        Lines,
        "score: 1,5\nloss: 1\n",
        &["score"],
        Err(&["score is missing", "line 1", "ambiguous"]),
    );
    // A name holding NUL or bytes that are not UTF-8 is no metric name.
    check(
        Lines,
        "score\0: 7\n",
        &[],
        Err(&["no metric", "control character"]),
    );
    check(Lines, "score\0: 7\nok: 1\n", &[], Ok(json!({"ok": 1.0})));
    // A misspelt name beside the metric that was printed: named, with its
    // line.
    check(
        Lines,
        "step 1\nval_bpb: 0.9025\nmemory_gb: 12\n",
        &["val_bp"],
        Err(&["val_bp is missing", "line 2", "`val_bpb`", "misspelling"]),
    );
    check(
        Lines,
        "val_bpb: 0.9025\n",
        &["val-bpb"],
        Err(&["val-bpb is missing", "`val_bpb`"]),
    );
    // Nothing near enough: no guess.
    check(
        Lines,
        "val_bpb: 0.9025\n",
        &["accuracy"],
        Err(&["accuracy is missing from the output"]),
    );
}

#[test]
fn json() {
    use MetricSyntax::{Json, JsonFile};
    use Want::*;
    check(
        Json,
        "log\n{\"a\": 1}\n{\"b\": 2}\nbye\n",
        &[],
        Ok(json!({"b": 2})),
    );
    check(
        Json,
        "starting\n{\n  \"score\": 3.2e-08,\n  \"name\": \"x}{\"\n}\ndone\n",
        &[],
        Ok(json!({"score": 3.2e-8, "name": "x}{"})),
    );
    check(
        Json,
        "\x1b[32m{\"a\": 1}\x1b[0m\n",
        &[],
        Ok(json!({"a": 1})),
    );
    check(Json, "{\"a\": \"NaN\"}\n", &[], Err(&["not a finite"]));
    check(Json, "[1]\n", &[], Err(&["no metric"]));
    check(
        Json,
        "{\"a\": 1,}\n",
        &[],
        Err(&["no metric", "line 1", "does not parse"]),
    );
    check(
        Json,
        "{\"loss\": 1}\n",
        &["score"],
        Err(&["score is missing"]),
    );
    check(JsonFile, "{\"a\": 0.5}", &["a"], Ok(json!({"a": 0.5})));
    check(
        JsonFile,
        "\u{feff}{\"a\": 0.5}\n",
        &[],
        Ok(json!({"a": 0.5})),
    );
    check(JsonFile, "{oops", &[], Err(&["not a JSON object"]));
    check(JsonFile, "[]", &[], Err(&["not a JSON object"]));
    check(
        JsonFile,
        "",
        &[],
        Err(&["not a JSON object", "no JSON object"]),
    );
    check(JsonFile, "{\"a\": \"x\"}", &["a"], Err(&["not a finite"]));
}

#[test]
fn long_outputs_are_read_whole() {
    use MetricSyntax::*;
    // The metric first, then about 200 KB of log.
    let mut text = String::from("score: 10\n");
    for i in 0..4000 {
        text.push_str(&format!(
            "step {i}: training, loss went down a little more\n"
        ));
    }
    check(Lines, &text, &["score"], Want::Ok(json!({"score": 10.0})));
    // A JSON file over 64 KiB, on one line and pretty-printed.
    let fields: Vec<String> = (0..5000).map(|i| format!("\"m{i}\": {i}.5")).collect();
    let one_line = format!("{{{}}}", fields.join(", "));
    let pretty = format!("{{\n  {}\n}}\n", fields.join(",\n  "));
    for text in [one_line, pretty] {
        assert!(text.len() > 65536);
        let got = read(JsonFile, &text, &["m4999"]).expect("read");
        assert_eq!(got["m4999"], json!(4999.5));
    }
    // A line longer than any metric line is skipped, not held.
    let mut text = "x".repeat(1 << 20);
    text.push_str("\nscore: 2\n");
    check(Lines, &text, &[], Want::Ok(json!({"score": 2.0})));
}

/// A deterministic spread of f64 bit patterns (every exponent, random
/// mantissas), finite only.
fn sample_f64s(n: usize) -> Vec<f64> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = vec![
        0.1,
        1.0 / 3.0,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        3.2e-8,
        1e16,
        -0.0,
    ];
    while out.len() < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let x = f64::from_bits(s);
        if x.is_finite() {
            out.push(x);
        }
    }
    out
}

#[test]
fn python_repr_reads_back_exactly() {
    let xs = sample_f64s(3000);
    let input: String = xs.iter().map(|x| format!("{}\n", x.to_bits())).collect();
    let script = "import sys, struct\nfor l in sys.stdin:\n    x = struct.unpack('<d', struct.pack('<Q', int(l)))[0]\n    print(repr(x)); print(str(x)); print('%.17g' % x)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is installed");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 ran");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let printed: Vec<&str> = text.lines().collect();
    assert_eq!(printed.len(), xs.len() * 3);
    for (x, p) in xs.iter().zip(printed.chunks(3)) {
        for form in p {
            assert_eq!(
                parse_f64(form).map(f64::to_bits),
                Some(x.to_bits()),
                "{form}"
            );
            let r = read_text(&MetricSpec::default(), &format!("x: {form}\n"));
            let got = r.values["x"].as_f64().expect("a number");
            assert!(got == *x, "{form} read as {got:?}, printed from {x:?}");
        }
    }
}

proptest! {
    #[test]
    fn rust_prints_read_back_exactly(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        prop_assume!(x.is_finite());
        for form in [format!("{x}"), format!("{x:?}"), format!("{x:e}"), fmt_f64(x), fmt_f64_places(x, 6)] {
            prop_assert_eq!(parse_f64(&form).map(f64::to_bits), Some(x.to_bits()), "{}", form);
            let r = read_text(&MetricSpec::default(), &format!("\x1b[1mx\x1b[0m: {form}\r\n"));
            prop_assert!(r.values["x"].as_f64() == Some(x), "{} read as {:?}", form, r.values["x"]);
            let j = read_text(
                &MetricSpec { syntax: MetricSyntax::Json, required: vec![] },
                &format!("{{\"x\": {}}}\n", serde_json::to_string(&x).unwrap_or_default()),
            );
            prop_assert!(j.values["x"].as_f64() == Some(x));
        }
    }
}

#[test]
fn a_name_of_bytes_that_are_not_utf8_is_no_metric() {
    let mut r = MetricReader::new(spec(MetricSyntax::Lines, &[]));
    r.feed(b"\xffscore: 9\nok: 1\n");
    let reading = r.finish();
    assert_eq!(Value::Object(reading.values), json!({"ok": 1.0}));
}
