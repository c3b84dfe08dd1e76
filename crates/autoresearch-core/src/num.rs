//! Numbers as text, without losing any: the one formatter every crate uses to
//! show or write a metric, and the one parser for numbers as Rust and Python
//! print them.
//!
//! Every formatter here is lossless: its output parses back (with
//! [`parse_f64`] or Rust's `str::parse`) to the very same `f64`.

/// The shortest text that reads back as exactly `x`.
///
/// The digits are Rust's own shortest round-trip digits (`{}` / `{:e}`);
/// plain notation for magnitudes in `[1e-5, 1e16)` (and zero), scientific
/// outside it, as Python's `repr` chooses (`3.2e-8`, `1e16`). Whole numbers
/// have no decimal point (`2`), and non-finite values print as `inf`, `-inf`
/// and `nan`.
pub fn fmt_f64(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let a = x.abs();
    if a == 0.0 || (1e-5..1e16).contains(&a) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// `x` rounded to 15 significant digits, then as [`fmt_f64`]: for values
/// a program computed, such as a mean of samples, whose last digits are
/// the float arithmetic's noise (`0.9144365000000001` prints `0.9144365`).
/// Any number written with at most 15 significant digits (every metric an
/// evaluator prints in practice) reads into an `f64` that prints back the
/// same, so a measured value is never changed; only the noise goes. Not
/// lossless: stored and exported values use [`fmt_f64`].
pub fn fmt_f64_shown(x: f64) -> String {
    if !x.is_finite() {
        return fmt_f64(x);
    }
    fmt_f64(format!("{x:.14e}").parse().unwrap_or(x))
}

/// `x` with `places` decimals when that text reads back as exactly `x`
/// (`0.997900` for 0.9979 with 6 places), else [`fmt_f64`]: a fixed layout
/// where it loses nothing, never a rounded value.
pub fn fmt_f64_places(x: f64, places: usize) -> String {
    if x.is_finite() && x.abs() < 1e16 {
        let fixed = format!("{x:.places$}");
        if fixed.parse::<f64>().ok() == Some(x) {
            return fixed;
        }
    }
    fmt_f64(x)
}

/// A JSON value as a table cell or TSV field: numbers through [`fmt_f64`],
/// strings as they are, `null` and absent as the empty string.
pub fn fmt_json(v: Option<&serde_json::Value>) -> String {
    match v {
        // Integers as they are (no float rounding of large ones).
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(x) if n.is_f64() => fmt_f64(x),
            _ => n.to_string(),
        },
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Parses a number as Rust (`{}`, `{:?}`, `{:e}`) or Python (`repr`, `str`,
/// `%g`, `%f`) prints it: `3.2e-08`, `1E+3`, `.5`, `5.`, `+1`, `-0.0`,
/// `inf`, `-Infinity`, `nan`. Correctly rounded (the same `f64` that was
/// printed, whenever it was printed with enough digits). Surrounding
/// whitespace is not accepted; `None` for anything else.
pub fn parse_f64(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    // `str::parse` also takes `infinity` and `nan` in any case, which is
    // what Python, JavaScript and Rust print; it rejects `_` and `,`.
    if b.is_empty() || b[0].is_ascii_whitespace() || b[b.len() - 1].is_ascii_whitespace() {
        return None;
    }
    text.parse::<f64>().ok()
}

/// A number written with thousands separators (`1,234`, `12,345,678.5`):
/// only groups of exactly three digits after the first group of one to
/// three, so that a decimal comma (`1,5`) is never misread. `None` when
/// `text` has no comma or is not of that shape.
pub fn parse_grouped(text: &str) -> Option<f64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' | b'+' => text.split_at(1),
        _ => ("", text),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    let mut groups = int.split(',');
    let first = groups.next()?;
    if first.is_empty() || first.len() > 3 || !first.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut plain = String::with_capacity(text.len());
    plain.push_str(sign);
    plain.push_str(first);
    let mut n = 0;
    for g in groups {
        if g.len() != 3 || !g.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        plain.push_str(g);
        n += 1;
    }
    if n == 0 {
        return None;
    }
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        plain.push('.');
        plain.push_str(f);
    }
    plain.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_numbers_drop_the_noise_of_arithmetic_and_keep_measured_values() {
        let mean = (0.912 + 0.916873) / 2.0;
        assert_eq!(fmt_f64(mean), "0.9144365000000001");
        assert_eq!(fmt_f64_shown(mean), "0.9144365");
        assert_eq!(fmt_f64_shown(0.1 + 0.2), "0.3");
        assert_eq!(fmt_f64_shown((0.1 + 0.7) / 2.0), "0.4");
        for text in [
            "0.9979",
            "3.2e-8",
            "123456789012345",
            "0.000015",
            "-2.5",
            "1e16",
            "0",
            "inf",
            "nan",
            "0.123456789012345",
        ] {
            let x: f64 = text.parse().unwrap();
            assert_eq!(fmt_f64_shown(x), fmt_f64(x), "{text}");
        }
    }

    #[test]
    fn formats() {
        for (x, want) in [
            (0.0, "0"),
            (2.0, "2"),
            (0.9979, "0.9979"),
            (3.2e-8, "3.2e-8"),
            (3e-4, "0.0003"),
            (1.5e-5, "0.000015"),
            (1e16, "1e16"),
            (123456.789, "123456.789"),
            (-0.1, "-0.1"),
            (f64::INFINITY, "inf"),
            (f64::NAN, "nan"),
        ] {
            assert_eq!(fmt_f64(x), want, "{x:?}");
        }
        assert_eq!(fmt_f64_places(0.9979, 6), "0.997900");
        assert_eq!(fmt_f64_places(3.2e-8, 6), "3.2e-8");
        assert_eq!(fmt_f64_places(44.0, 1), "44.0");
        assert_eq!(fmt_f64_places(1.0 / 3.0, 6), "0.3333333333333333");
    }

    #[test]
    fn grouped() {
        assert_eq!(parse_grouped("1,234"), Some(1234.0));
        assert_eq!(parse_grouped("-12,345,678.5"), Some(-12345678.5));
        for bad in [
            "1,5",
            "1234",
            "1,2345",
            ",123",
            "1,,234",
            "1,234.",
            "12345,678",
        ] {
            assert_eq!(parse_grouped(bad), None, "{bad}");
        }
    }
}
