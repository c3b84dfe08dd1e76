//! autoresearch-web: the live dashboard `autoresearch serve` shows, as an
//! [axum] router over a ledger.
//!
//! - Pages and their JSON twins: every world and its experiment (head,
//!   counts, in-flight runs, last activity), an experiment (progress chart
//!   drawn as SVG on the server, a paged attempts table filtered and sorted
//!   on the server, runs in flight, pending votes, forks, a tick slider for
//!   time travel), a run (results, decision, votes, its ticks, log tails).
//! - Live updates over server-sent events: one task polls the ledger's
//!   catalogue (each world's head tick) while anyone listens, and a page
//!   fetches its changed part when its world's head moves.
//! - A replay view: two worlds' attempts side by side (a world and a fork
//!   or replay of it), the decisions that differ marked, and both kept
//!   step lines on one chart; and the action that starts a replay (through
//!   core's [`autoresearch_core::Replayer`], which the CLI wires).
//! - Actions (vote, fork, replay) need the token given in [`Access::Token`] and are
//!   done by the [`Actions`] the server was given; a read-only dashboard has
//!   none.
//!
//! It reads through core's [`Storage`] trait only (the CLI opens the ledger
//! read-only: the dashboard never takes a loop's lease nor writes), keeps
//! its reads in [`index`] (a typed, paged view of each world, brought up to
//! date by applying only new ticks), and ships its templates, script and
//! style in the binary. It depends on `autoresearch-core` only.

pub mod actions;
mod chart;
mod compare;
pub mod error;
pub mod index;
mod pages;
mod routes;
mod view;

pub use actions::{ActionError, ActionReceipt, Actions, Diffs, ForkRequest, Params, VoteRequest};
pub use error::WebError;
pub use index::{LedgerView, MetricPicker};

use autoresearch_core::{ComponentRegistry, Storage};
use std::sync::Arc;
use std::time::Duration;

/// Who may act through the dashboard.
#[derive(Clone)]
pub enum Access {
    /// No actions: every action route answers 403.
    ReadOnly,
    /// Actions for requests carrying `token` (`Authorization: Bearer
    /// TOKEN`), done by `actions`.
    Token {
        /// The secret a request must carry.
        token: String,
        /// What does the votes and forks.
        actions: Arc<dyn Actions>,
    },
}

/// How a dashboard is served.
#[derive(Clone)]
pub struct DashboardConfig {
    /// Who may act.
    pub access: Access,
    /// Which metric a world's chart and table show.
    pub metric: MetricPicker,
    /// How often the live-update task reads the ledger's catalogue while a
    /// page listens (default 500 ms).
    pub poll_interval: Duration,
    /// What the dashboard shows as its title (the ledger's path).
    pub title: String,
    /// Where run pages get a candidate's diff from; `None` shows none.
    pub diffs: Option<Arc<dyn Diffs>>,
    /// What starts replays for the "start a replay" action (with the
    /// token); `None` refuses it.
    pub replayer: Option<Arc<dyn autoresearch_core::Replayer>>,
    /// Where the attempts table's parameter columns come from; `None`
    /// offers metric columns only.
    pub params: Option<Arc<dyn Params>>,
}

impl DashboardConfig {
    /// A read-only dashboard titled `title`, showing the first numeric
    /// output of each world's Results.
    pub fn read_only(title: impl Into<String>) -> DashboardConfig {
        DashboardConfig {
            access: Access::ReadOnly,
            metric: Arc::new(|_| None),
            poll_interval: Duration::from_millis(500),
            title: title.into(),
            diffs: None,
            replayer: None,
            params: None,
        }
    }
}

/// The dashboard's router over `storage`, decoding components with
/// `registry`. Must be called inside a tokio runtime: it starts indexing
/// every world there (a task that ends when done), and live updates spawn
/// a task while a page listens.
pub fn router(
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    config: DashboardConfig,
) -> axum::Router {
    routes::router(Arc::new(routes::AppState::new(
        LedgerView::new(storage, registry),
        config,
    )))
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// Errors: the I/O error of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
