//! What a read command reads: one way to choose it, the same for every
//! command (`status`, `show`, `log`, `best`, `runs`, `history`, `plot`,
//! `diff`, `checkout`, `replay`, `fork`, `vote`).
//!
//! - `--world NAME` names the world (a fork, an ingested world); a bare
//!   experiment name is accepted as well and means `autoresearch:NAME`
//!   when no world of that exact name exists;
//! - `--experiment NAME` names the experiment (its world is
//!   `autoresearch:NAME` unless `--world` says otherwise);
//! - with neither, inside a configured repository the config's experiment
//!   is the default, else the only experiment of the ledger.
//!
//! A missing config file is not an error (an imported experiment has
//! none); a config file that exists and does not parse is.

use crate::ledger;
use anyhow::{Context, bail};
use autoresearch_controller::Config;
use autoresearch_controller::config::CONFIG_FILE;
use autoresearch_core::{
    Experiment, Storage, Tick, World, WorldInfo, experiment_of_world, experiment_world_name,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The options every read command accepts to choose what it reads.
#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    /// The experiment [default: the one in autoresearch.toml, else the only one in the ledger].
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
    /// The world to read: a fork, a replay, an ingested world [default: autoresearch:{experiment}].
    #[arg(long, value_name = "NAME")]
    pub world: Option<String>,
    /// The config file naming the default experiment (a missing file is fine).
    #[arg(long, value_name = "PATH", default_value = CONFIG_FILE)]
    pub config: PathBuf,
}

/// A fork's parent and the last tick it shares with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkOf {
    /// The parent world's name.
    pub parent: String,
    /// The fork tick.
    pub tick: u64,
}

/// What a read command reads, resolved.
pub struct Target {
    /// The world's name.
    pub world: String,
    /// The world's catalogue entry.
    pub info: WorldInfo,
    /// The experiment in that world; `None` for a world holding none (an
    /// ingested runner fleet) or several, when none was named.
    pub experiment: Option<String>,
    /// The config file, when it exists and names this experiment.
    pub config: Option<Config>,
    /// Where the world was forked from, for a fork.
    pub fork_of: Option<ForkOf>,
    /// The ledger read.
    pub storage: Arc<dyn Storage>,
}

impl TargetArgs {
    /// The config file, when it exists: `Ok(None)` when it does not, an
    /// error when it exists and does not read.
    fn load_config(&self) -> anyhow::Result<Option<Config>> {
        if !self.config.exists() {
            return Ok(None);
        }
        Ok(Some(Config::load(&self.config)?))
    }

    /// Resolves what to read in the ledger at `ledger_path`, opened
    /// read-only (never created).
    pub async fn resolve(&self, ledger_path: &Path) -> anyhow::Result<Target> {
        // A bad config is reported before a missing ledger.
        self.load_config()?;
        let storage = ledger::open_read_only(ledger_path)?;
        self.resolve_in(storage).await
    }

    /// [`TargetArgs::resolve`] for commands that read a world whatever it
    /// holds (`runs`, `history`): a fork's experiment is not looked up, so
    /// that the world is not materialized twice.
    pub async fn resolve_world(&self, ledger_path: &Path) -> anyhow::Result<Target> {
        self.load_config()?;
        let storage = ledger::open_read_only(ledger_path)?;
        self.resolve_with(storage, false).await
    }

    /// [`TargetArgs::resolve`] in an open ledger.
    pub async fn resolve_in(&self, storage: Arc<dyn Storage>) -> anyhow::Result<Target> {
        self.resolve_with(storage, true).await
    }

    async fn resolve_with(
        &self,
        storage: Arc<dyn Storage>,
        find_experiment: bool,
    ) -> anyhow::Result<Target> {
        let config = self.load_config()?;
        let location = storage.location();
        let worlds = storage
            .list_worlds()
            .await
            .with_context(|| format!("listing the worlds of {location}"))?;
        let find = |name: &str| worlds.iter().find(|w| w.name == name).cloned();
        let world = match (&self.world, &self.experiment, &config) {
            (Some(w), _, _) => match find(w) {
                Some(info) => info,
                None => match find(&experiment_world_name(w)) {
                    Some(info) => info,
                    None => bail!(
                        "no world named {w:?} in {location} (`autoresearch worlds` lists them)"
                    ),
                },
            },
            (None, Some(e), _) => find(&experiment_world_name(e)).with_context(|| {
                format!(
                    "no experiment {e:?}: no world named {:?} in {location} (`autoresearch worlds` lists them)",
                    experiment_world_name(e)
                )
            })?,
            (None, None, Some(c)) => find(&experiment_world_name(&c.name)).with_context(|| {
                format!(
                    "experiment {:?} of {} has no world in {location} yet (`autoresearch run` starts it)",
                    c.name,
                    c.path.display()
                )
            })?,
            (None, None, None) => only_experiment(&worlds, &location)?,
        };
        let fork_of = world.parent.map(|p| ForkOf {
            parent: worlds
                .iter()
                .find(|w| w.id == p.parent)
                .map_or_else(|| p.parent.to_string(), |w| w.name.clone()),
            tick: p.tick.0,
        });
        let experiment = match &self.experiment {
            Some(e) => Some(e.clone()),
            None => match experiment_of_world(&world.name) {
                Some(e) => Some(e.to_string()),
                None if !find_experiment => None,
                // A fork or a replay holds its parent's experiment.
                None => {
                    let w =
                        World::open_at(storage.clone(), ledger::registry(), world.id, world.head)
                            .await
                            .with_context(|| {
                                format!("opening world {:?} in {location}", world.name)
                            })?;
                    let mut names = w.find_all::<Experiment>(|_| true).into_iter();
                    match (names.next(), names.next()) {
                        (Some((_, e)), None) => Some(e.name),
                        _ => None,
                    }
                }
            },
        };
        let config = config.filter(|c| Some(&c.name) == experiment.as_ref());
        Ok(Target {
            world: world.name.clone(),
            info: world,
            experiment,
            config,
            fork_of,
            storage,
        })
    }
}

/// The one experiment world of a ledger (root worlds named
/// `autoresearch:{name}`), for commands run outside a configured repository.
fn only_experiment(worlds: &[WorldInfo], location: &str) -> anyhow::Result<WorldInfo> {
    let found: Vec<&WorldInfo> = worlds
        .iter()
        .filter(|w| w.parent.is_none() && experiment_of_world(&w.name).is_some())
        .collect();
    match found.as_slice() {
        [only] => Ok((*only).clone()),
        [] => bail!(
            "no {CONFIG_FILE} here and ledger {location} holds no experiment; pass --experiment NAME or --world NAME"
        ),
        many => bail!(
            "no {CONFIG_FILE} here and ledger {location} holds several experiments ({}); choose one with --experiment",
            many.iter()
                .filter_map(|w| experiment_of_world(&w.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl Target {
    /// The experiment, or an error saying that this world holds none.
    pub fn experiment(&self) -> anyhow::Result<&str> {
        self.experiment.as_deref().with_context(|| {
            format!(
                "world {:?} holds no single experiment; name one with --experiment",
                self.world
            )
        })
    }

    /// The world at its head, or at tick `at` (time travel).
    pub async fn open(&self, at: Option<u64>) -> anyhow::Result<World> {
        let tick = match at {
            Some(t) if t > self.info.head.0 => bail!(
                "world {:?}: tick {t} is beyond its head {}",
                self.world,
                self.info.head
            ),
            Some(t) => Tick(t),
            None => self.info.head,
        };
        World::open_at(self.storage.clone(), ledger::registry(), self.info.id, tick)
            .await
            .with_context(|| {
                format!(
                    "reading world {:?} at tick {tick} in {}",
                    self.world,
                    self.storage.location()
                )
            })
    }

    /// The experiment's repository: the config's, else the one the
    /// Experiment recorded when it is a local directory.
    pub fn repo(&self, world: &World) -> Option<PathBuf> {
        let exp = self
            .experiment
            .as_deref()
            .and_then(|name| world.experiment(name))
            .map(|(_, e)| e);
        self.repo_of(exp.as_ref())
    }

    /// [`Target::repo`] given the experiment's record (read without a
    /// world, [`crate::current_read`]).
    pub fn repo_of(&self, exp: Option<&Experiment>) -> Option<PathBuf> {
        if let Some(c) = &self.config {
            return Some(c.repo.clone());
        }
        let path = PathBuf::from(&exp?.repo_url);
        path.is_dir().then_some(path)
    }

    /// [`Target::repo`], or an error saying why there is none.
    pub fn require_repo(&self, world: &World) -> anyhow::Result<PathBuf> {
        self.repo(world).with_context(|| {
            format!(
                "no local repository is known for world {:?} (run this inside the experiment's repository, beside {CONFIG_FILE})",
                self.world
            )
        })
    }

    /// The git branch this world's loop advances: the config's for the
    /// experiment's own world, `autoresearch/{fork}` for a fork (where
    /// `autoresearch run --world FORK` works), the recorded one otherwise.
    pub fn branch(&self, world: &World) -> Option<String> {
        let exp = self
            .experiment
            .as_deref()
            .and_then(|name| world.experiment(name))
            .map(|(_, e)| e);
        self.branch_of(exp.as_ref())
    }

    /// [`Target::branch`] given the experiment's record.
    pub fn branch_of(&self, exp: Option<&Experiment>) -> Option<String> {
        if self.fork_of.is_some() {
            return Some(autoresearch_controller::fork_branch_name(&self.world));
        }
        if let Some(c) = &self.config {
            return Some(c.branch.clone());
        }
        self.experiment.as_ref()?;
        exp.map(|e| e.branch.clone()).filter(|b| !b.is_empty())
    }
}
