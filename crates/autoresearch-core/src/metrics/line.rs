//! One line of an evaluator's output: is it a metric (`name: value`,
//! `name=value`, `METRIC name=value`), a near miss and why, or neither.

use crate::num;

pub(super) enum LineKind<'a> {
    /// A metric; the value, or the text of a non-finite one.
    Metric {
        name: &'a str,
        value: Result<f64, &'a str>,
        unit: Option<&'a str>,
    },
    Miss {
        name: &'a str,
        why: Why<'a>,
    },
    Json,
    Other,
}

/// Why a line that looked like a metric is not one; formatted only when
/// recorded (most log lines are never explained).
pub(super) enum Why<'a> {
    PiForm,
    Space(&'a str),
    /// A control character (NUL, ...) or invalid UTF-8 (read as U+FFFD).
    BadChar(&'a str),
    Trailing(&'a str, &'a str),
    NotNumber(&'a str),
}

impl std::fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::PiForm => f.write_str("a METRIC line is `METRIC name=value`"),
            Why::Space(name) => write!(f, "the name `{name}` has a space in it"),
            Why::BadChar(name) => write!(
                f,
                "the name {name:?} holds a control character or bytes that are not UTF-8"
            ),
            Why::Trailing(n, u) => write!(
                f,
                "the value `{n}` is followed by `{u}`, which is not a unit"
            ),
            Why::NotNumber(text) => f.write_str(&not_a_number(text)),
        }
    }
}

/// One trimmed, non-empty line.
pub(super) fn parse_metric_line(t: &str) -> LineKind<'_> {
    if t.starts_with('{') {
        return LineKind::Json;
    }
    let (body, pi) = match t.strip_prefix("METRIC ") {
        Some(rest) => (rest.trim_start(), true),
        None => (t, false),
    };
    // ASCII separators: the index is a char boundary.
    let Some(sep) = memchr::memchr2(b':', b'=', body.as_bytes()) else {
        return LineKind::Other;
    };
    if pi && body.as_bytes()[sep] != b'=' {
        return LineKind::Miss {
            name: body[..sep].trim(),
            why: Why::PiForm,
        };
    }
    let name = body[..sep].trim();
    let rest = body[sep + 1..].trim();
    if name.is_empty() || rest.is_empty() {
        return LineKind::Other;
    }
    // `a == b`, `x := y`, URLs (`http://`): not metric lines.
    if rest.starts_with(['=', '/']) {
        return LineKind::Other;
    }
    if name.contains(char::is_whitespace) {
        // Log chatter (`Epoch 1: starting`, `step 5 | loss: 3.1 | lr ...`)
        // unless the whole rest reads as a value (`final score: 9`).
        let plausible = rest.split_ascii_whitespace().nth(2).is_none()
            && rest
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit() || b"+-.iInN".contains(&b));
        return match plausible && parse_value(rest).is_ok() {
            true => LineKind::Miss {
                name: name.rsplit(char::is_whitespace).next().unwrap_or(name),
                why: Why::Space(name),
            },
            false => LineKind::Other,
        };
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == char::REPLACEMENT_CHARACTER)
    {
        return LineKind::Miss {
            name,
            why: Why::BadChar(name),
        };
    }
    match parse_value(rest) {
        Ok((x, unit)) => LineKind::Metric {
            name,
            value: if x.is_finite() {
                Ok(x)
            } else {
                Err(rest.split_whitespace().next().unwrap_or(rest))
            },
            unit,
        },
        Err(why) => LineKind::Miss { name, why },
    }
}

/// A value with an optional unit: `0.25`, `9 ms`, `9%`, `1,234`, `12GB`.
fn parse_value(v: &str) -> Result<(f64, Option<&str>), Why<'_>> {
    let (num_text, unit) = match v.split_once(char::is_whitespace) {
        Some((n, u)) => {
            let u = u.trim();
            if !is_unit(u) {
                return match number(n) {
                    Some(_) => Err(Why::Trailing(n, u)),
                    None => Err(Why::NotNumber(v)),
                };
            }
            (n, Some(u))
        }
        None => (v, None),
    };
    if let Some(x) = number(num_text) {
        return Ok((x, unit));
    }
    if unit.is_none() {
        // A unit written against the number: `9ms`, `9%`, `12.5GB`.
        let split = num_text
            .char_indices()
            .filter(|(_, c)| !(c.is_ascii_digit() || matches!(c, '.' | ',' | '+' | '-')))
            .map(|(i, _)| i)
            .find(|&i| i > 0 && number(&num_text[..i]).is_some() && is_unit(&num_text[i..]));
        if let Some(i) = split
            && let Some(x) = number(&num_text[..i])
        {
            return Ok((x, Some(&num_text[i..])));
        }
    }
    Err(Why::NotNumber(num_text))
}

fn not_a_number(text: &str) -> String {
    if text.contains(',') && text.bytes().any(|b| b.is_ascii_digit()) {
        format!(
            "`{text}` has a comma that is not a thousands separator (groups of three digits): ambiguous"
        )
    } else {
        format!("`{text}` is not a number")
    }
}

fn number(text: &str) -> Option<f64> {
    num::parse_f64(text).or_else(|| num::parse_grouped(text))
}

/// A unit: one short token starting with a letter or `%`, `°`, a currency
/// sign, of letters, digits and `/ ^ · * _ - .` (`ms`, `%`, `GB`, `tok/s`, `°C`, `m/s²`).
fn is_unit(u: &str) -> bool {
    u.chars().count() <= 16
        && u.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || matches!(c, '%' | '°' | '$' | '€' | '£'))
        && u.chars()
            .all(|c| c.is_alphanumeric() || "%°$€£/^·*_-.²³".contains(c))
}
