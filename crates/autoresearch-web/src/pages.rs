//! The templates, script and style, compiled into the binary (no CDN: the
//! dashboard works offline).

use crate::error::WebError;
use minijinja::Environment;

/// The dashboard's script.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The dashboard's style sheet.
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Every template, by name. Names end in `.html`, so minijinja escapes
/// every value it prints unless marked safe (only the server-drawn chart is).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("worlds.html", include_str!("../templates/worlds.html")),
    (
        "experiment.html",
        include_str!("../templates/experiment.html"),
    ),
    ("live.html", include_str!("../templates/live.html")),
    ("run.html", include_str!("../templates/run.html")),
    ("replay.html", include_str!("../templates/replay.html")),
];

/// The template environment. Errors when a template does not parse (a
/// build defect, caught by the handler tests that render every page).
pub fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    // minijinja's HTML escaping also escapes `/`, which makes every URL in
    // the pages `&#x2f;`-noisy; `& < > " '` are the characters that matter
    // in text and quoted attributes, and the only ones escaped here.
    env.set_formatter(|out, state, value| match value.as_str() {
        Some(s) if state.auto_escape() == minijinja::AutoEscape::Html && !value.is_safe() => out
            .write_str(&escape_html(s))
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())),
        _ => minijinja::escape_formatter(out, state, value),
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// Renders template `name` with `ctx`.
pub fn render(
    env: &Environment<'static>,
    name: &str,
    ctx: minijinja::Value,
) -> Result<String, WebError> {
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| WebError::Internal(format!("rendering {name}: {e:#}")))
}

/// `s` with `& < > " '` replaced by their character references.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
