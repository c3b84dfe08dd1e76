//! autoresearch-plot: the progress chart of one experiment, the picture
//! karpathy/autoresearch's analysis notebook draws: every attempt's metric in
//! order, kept ones highlighted, discarded ones faint, crashes marked, the
//! running best (the head) as a step line and short labels on kept changes.
//!
//! [`Progress`] reads the data from `autoresearch_core::lifecycle::attempts`;
//! [`render`] draws it as SVG or PNG. [`Progress::plan_series`] builds
//! the same chart from a chart series a backend keeps
//! (`autoresearch_core::series`), reading only the attempts it draws. Text is laid out with an embedded
//! DejaVu Sans through `ab_glyph`, so neither building nor running needs a
//! system font library. Depends on `autoresearch-core` only.
//!
//! ```
//! use autoresearch_core::{ComponentRegistry, EvalResult, MemoryStorage, Outcome, Run, World};
//! use autoresearch_plot::{ChartOptions, Format, Progress, render};
//! use serde_json::json;
//! use std::sync::Arc;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let storage = Arc::new(MemoryStorage::default());
//! let registry = Arc::new(ComponentRegistry::standard());
//! let mut world = World::create(storage, registry, "autoresearch:demo").await?;
//! for (i, (status, loss)) in [("baseline", 1.0), ("keep", 0.9), ("discard", 0.95)].iter().enumerate() {
//!     let run_id = format!("r{i}");
//!     let run = world.spawn_with(&Run::new(&run_id, "demo"))?;
//!     world.spawn_with(&EvalResult::new(&run_id, "eval", &json!({ "loss": loss }), 0))?;
//!     let comparator = "scalar:loss:min".to_string();
//!     world.insert(run, &Outcome { run_id, status: (*status).into(), comparator, ..Outcome::default() })?;
//! }
//! world.commit().await?;
//!
//! // The comparators' crate reads their specs: `scalar:loss:min` names `loss`.
//! let specs = |spec: &str| {
//!     autoresearch_compare::CompareSpec::parse(spec).map(|s| s.objectives()).unwrap_or_default()
//! };
//! let progress = Progress::read(&world, "demo", None, &specs)?;
//! assert_eq!(progress.best(), Some(0.9));
//! let svg = render(&progress, Format::Svg, &ChartOptions::default())?;
//! assert!(String::from_utf8(svg)?.contains("loss (lower is better)"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod progress;
mod render;
mod series;

pub use progress::{
    Direction, Downsampled, LABEL_CHARS, Mark, Point, Progress, SpecReader, shorten,
};
pub use render::{ChartOptions, render};
pub use series::{SeriesDraw, SeriesPlan, Totals};

use std::path::{Path, PathBuf};

/// The image formats the chart is drawn in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Scalable vector graphics, text.
    Svg,
    /// A bitmap, PNG-encoded.
    Png,
}

impl Format {
    /// PNG when the path ends in `.png` (any case), SVG otherwise.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("png") => Format::Png,
            _ => Format::Svg,
        }
    }

    /// The format of a chart written to `path`: PNG for `.png`, SVG for
    /// `.svg` or no extension (`/dev/stdout`). Errors: any other extension
    /// ([`PlotError::UnknownFormat`]), rather than SVG bytes in a `.jpg`.
    pub fn for_path(path: &Path) -> Result<Format, PlotError> {
        match path.extension().map(|e| e.to_string_lossy()) {
            None => Ok(Format::Svg),
            Some(ext) if ext.eq_ignore_ascii_case("svg") => Ok(Format::Svg),
            Some(ext) if ext.eq_ignore_ascii_case("png") => Ok(Format::Png),
            Some(ext) => Err(PlotError::UnknownFormat {
                path: path.to_path_buf(),
                ext: ext.into_owned(),
            }),
        }
    }
}

/// Why a chart could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The experiment has no runs yet.
    #[error("experiment {experiment:?} has no attempts to chart yet")]
    NoAttempts {
        /// The experiment asked for.
        experiment: String,
    },
    /// No metric was named, the comparators name none that the Results
    /// have, and the Results do not have exactly one numeric output.
    #[error(
        "cannot tell which metric to chart for experiment {experiment:?}: its results have {} (name one with --metric)",
        if available.is_empty() { "no numeric outputs".to_string() } else { format!("numeric outputs {}", available.join(", ")) }
    )]
    NoMetric {
        /// The experiment asked for.
        experiment: String,
        /// The numeric outputs its Results have, sorted; one of them can be named.
        available: Vec<String>,
    },
    /// The chart's file name asks for a format other than SVG or PNG.
    #[error("cannot write a chart to {path}: .{ext} is not a chart format (use .svg or .png)")]
    UnknownFormat {
        /// The file asked for.
        path: PathBuf,
        /// Its extension.
        ext: String,
    },
    /// The values to draw span more than an axis can be computed over in
    /// `f64` (the tick layout would not end).
    #[error(
        "cannot chart {metric}: its values run from {lo} to {hi}, a range too wide for an axis (chart another --metric)"
    )]
    Unscalable {
        /// The metric charted.
        metric: String,
        /// The lowest value on the axis.
        lo: f64,
        /// The highest value on the axis.
        hi: f64,
    },
    /// The embedded font could not be registered with plotters.
    #[error("registering the embedded chart font: {0}")]
    Font(&'static str),
    /// plotters failed to draw; holds its message.
    #[error("drawing the chart: {0}")]
    Draw(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The bitmap could not be encoded as PNG.
    #[error("encoding the chart as PNG: {0}")]
    Encode(#[from] png::EncodingError),
    /// The chart file (or a parent directory) could not be written.
    #[error("writing the chart to {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Renders `progress` in the format `path` asks for ([`Format::from_path`])
/// and writes it there, creating missing parent directories. Returns the
/// format written.
///
/// Errors: an extension other than `.svg` or `.png`
/// ([`Format::for_path`]), drawing or encoding failures, and I/O errors
/// naming the path. A failed write leaves no partial file under `path`:
/// the image goes to a sibling temporary file that is renamed into place.
/// A symbolic link is followed (its target gets the chart, the link
/// stays), and an existing path that is no regular file (`/dev/stdout`, a
/// FIFO) is written to as it is, never replaced.
pub fn write_chart(
    progress: &Progress,
    path: &Path,
    options: &ChartOptions,
) -> Result<Format, PlotError> {
    let format = Format::for_path(path)?;
    let bytes = render(progress, format, options)?;
    let io = |source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    };
    let resolved;
    let path = match std::fs::canonicalize(path) {
        Ok(target) => {
            resolved = target;
            resolved.as_path()
        }
        Err(_) => path,
    };
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(io)?;
        return Ok(format);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    Ok(format)
}
