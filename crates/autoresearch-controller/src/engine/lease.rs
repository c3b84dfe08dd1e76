//! One loop per world: `run` holds an exclusive lease on the world it
//! writes, so that two loops never interleave their ticks, recover each
//! other's live runs or take each other's keeps for moves made outside.
//!
//! The lease has two parts. An OS file lock ([`LoopConfig::lease_lock`],
//! next to the ledger) makes a second `run` on the same host refuse at once,
//! and is dropped by the OS when its holder dies, `kill -9` included. A
//! [`Lease`] record in the world itself names the holder (host, pid, start)
//! for the refusal message and carries a heartbeat, renewed every quarter
//! of [`LoopConfig::lease_timeout`], for holders on other hosts sharing the
//! ledger. A record whose holder is gone (no lock held and the pid dead on
//! this host, or a heartbeat older than the timeout elsewhere) is taken
//! over, and only then are its runs in flight recovered.

use super::*;
use autoresearch_core::Lease;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};

/// The lease this process holds while its loop runs.
pub(super) struct HeldLease {
    /// The OS lock, released when dropped (or when the process dies).
    _lock: Option<File>,
    entity: EntityId,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Set by the heartbeat when another process took the lease over.
    lost: Arc<AtomicBool>,
}

impl Controller {
    /// Takes the lease on this controller's world, or says who holds it.
    pub(super) async fn acquire_lease(self: &Arc<Self>) -> Result<HeldLease, LoopError> {
        let lock = match &self.cfg.lease_lock {
            Some(path) => Some(self.os_lock(path).await?),
            None => None,
        };
        let me = self.lease_record();
        let stale_ms = self.cfg.lease_timeout.as_millis() as i64;
        let has_lock = lock.is_some();
        let mut refused: Option<Lease> = None;
        let (world, mine) = (self.cfg.world.clone(), me.clone());
        let entity = self
            .ledger
            .tick("taking the lease", |w| {
                refused = None;
                let current = w.find::<Lease>(|l| l.world == world);
                if let Some((_, held)) = &current
                    && holder_alive(held, &mine, has_lock, stale_ms)
                {
                    refused = Some(held.clone());
                    return Ok(None);
                }
                match current {
                    Some((e, _)) => w.insert(e, &mine).map(|_| Some(e)),
                    None => w.spawn_with(&mine).map(Some),
                }
            })
            .await?;
        let Some(entity) = entity else {
            let holder = refused.unwrap_or_default();
            return Err(LoopError::LeaseHeld {
                world: self.cfg.world.clone(),
                holder: describe(&holder),
            });
        };
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(self.clone().heartbeat(entity, me, lost.clone()));
        Ok(HeldLease {
            _lock: lock,
            entity,
            heartbeat,
            lost,
        })
    }

    /// Gives the lease back (when still ours). Errors only when the lease
    /// was lost to another process meanwhile.
    pub(super) async fn release_lease(&self, held: HeldLease) -> Result<(), LoopError> {
        held.heartbeat.abort();
        if held.lost.load(Ordering::Acquire) {
            return Err(LoopError::LeaseLost {
                world: self.cfg.world.clone(),
            });
        }
        let (entity, me) = (held.entity, self.lease_record());
        let released = self
            .ledger
            .tick("giving the lease back", |w| {
                if let Some(mut l) = w.get::<Lease>(entity)
                    && l.host == me.host
                    && l.pid == me.pid
                {
                    l.released_at_ms = now_ms();
                    w.insert(entity, &l)?;
                }
                Ok(())
            })
            .await;
        // The OS lock goes with `held`, whatever the record says.
        drop(held._lock);
        released
    }

    /// Renews the heartbeat until aborted; notices a takeover, then stops
    /// the loop (kill level: its jobs are recorded as interrupted).
    async fn heartbeat(self: Arc<Self>, entity: EntityId, me: Lease, lost: Arc<AtomicBool>) {
        let every = (self.cfg.lease_timeout / 4).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(every).await;
            let mut ours = true;
            let renewed = self
                .ledger
                .tick("renewing the lease", |w| {
                    match w.get::<Lease>(entity) {
                        Some(mut l) if l.host == me.host && l.pid == me.pid => {
                            l.heartbeat_at_ms = now_ms();
                            w.insert(entity, &l)?;
                        }
                        _ => ours = false,
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = renewed {
                tracing::warn!("renewing the lease of {}: {e}", self.cfg.world);
            }
            if !ours {
                lost.store(true, Ordering::Release);
                let why = format!(
                    "the lease on world {} was taken over by another process: stopping",
                    self.cfg.world
                );
                self.warn(why);
                while self.shutdown.escalate() < Shutdown::KILL {}
                return;
            }
        }
    }

    /// This process as a lease holder, now.
    fn lease_record(&self) -> Lease {
        let now = now_ms();
        Lease {
            world: self.cfg.world.clone(),
            host: host_name(),
            pid: std::process::id(),
            started_at_ms: now,
            heartbeat_at_ms: now,
            released_at_ms: 0,
        }
    }

    /// Takes the OS lock at `path` without waiting; when another process
    /// holds it, says who (from the world's lease record).
    async fn os_lock(&self, path: &std::path::Path) -> Result<File, LoopError> {
        let p = path.to_path_buf();
        let opened = blocking(move || -> std::io::Result<Result<File, Option<u32>>> {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p)?;
            match file.try_lock() {
                Ok(()) => {
                    // The holder's pid in the lock file: a loop refused
                    // before this one has recorded its lease in the
                    // ledger names the process that holds the lock, not
                    // an earlier holder's record.
                    use std::io::Write;
                    file.set_len(0)?;
                    (&file).write_all(format!("{}\n", std::process::id()).as_bytes())?;
                    Ok(Ok(file))
                }
                Err(std::fs::TryLockError::WouldBlock) => Ok(Err(lock_file_pid(&p))),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            }
        })
        .await?
        .map_err(|source| LoopError::LeaseLock {
            path: path.to_path_buf(),
            source,
        })?;
        match opened {
            Ok(file) => Ok(file),
            Err(lock_pid) => {
                let world = self.cfg.world.clone();
                self.ledger.refresh().await?;
                let holder = self
                    .ledger
                    .read(|w| w.find::<Lease>(|l| l.world == world).map(|(_, l)| l))
                    .await;
                // The ledger's record describes the holder only when it is
                // the lock's (a loop that just won the lock may not have
                // written its own yet).
                let holder = match (holder, lock_pid) {
                    (Some(l), Some(pid)) if l.pid == pid && l.host == host_name() => describe(&l),
                    (_, Some(pid)) => format!(
                        "pid {pid} on {} (starting; it holds {})",
                        host_name(),
                        path.display()
                    ),
                    (Some(l), None) => describe(&l),
                    (None, None) => format!("another process (it holds {})", path.display()),
                };
                Err(LoopError::LeaseHeld {
                    world: self.cfg.world.clone(),
                    holder,
                })
            }
        }
    }
}

/// Whether `held` still belongs to a live holder other than `me`. Our own
/// record (same host and pid) is ours to renew. On our host, a holder that
/// used the OS lock is gone when we got the lock; otherwise its pid tells.
/// On another host, only the heartbeat can tell.
fn holder_alive(held: &Lease, me: &Lease, have_lock: bool, stale_ms: i64) -> bool {
    if held.is_released() || (held.host == me.host && held.pid == me.pid) {
        return false;
    }
    if held.host == me.host {
        return !have_lock && pid_alive(held.pid);
    }
    held.heartbeat_age_ms(now_ms()) < stale_ms
}

/// What this host can tell of a lease's holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HolderState {
    /// Given back.
    Released,
    /// A process of this host that exists.
    Alive,
    /// A process of this host that no longer exists: the next `run` takes
    /// the lease over.
    Dead,
    /// A process of another host: only its heartbeat's age (ms) tells.
    Remote {
        /// Milliseconds since its last heartbeat.
        heartbeat_age_ms: i64,
    },
}

/// What this host can tell of `lease`'s holder (`doctor`, `status`).
pub fn holder_state(lease: &Lease) -> HolderState {
    if lease.is_released() {
        HolderState::Released
    } else if lease.host == host_name() {
        if pid_alive(lease.pid) {
            HolderState::Alive
        } else {
            HolderState::Dead
        }
    } else {
        HolderState::Remote {
            heartbeat_age_ms: lease.heartbeat_age_ms(now_ms()),
        }
    }
}

/// The holder, for people.
fn describe(l: &Lease) -> String {
    let age = l.heartbeat_age_ms(now_ms()).max(0) / 1000;
    let since = (now_ms() - l.started_at_ms).max(0) / 1000;
    format!("{l}, running for {since} s (last heartbeat {age} s ago)")
}

/// The pid the holder of the lease lock at `path` wrote into it (see
/// `Controller::os_lock`), if any.
fn lock_file_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|pid| *pid > 0)
}

/// The live process of this host that holds (or last held) the lease lock
/// at `path`, by the pid its holder wrote there; `None` when none is
/// alive. Read only: the lock is never taken (a loop starting at that
/// moment would be refused).
pub fn lock_holder(path: &std::path::Path) -> Option<u32> {
    lock_file_pid(path).filter(|pid| pid_alive(*pid))
}

/// Whether a process with this id exists on this host.
fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for existence and permission only.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This host's name (`localhost` when it cannot be read).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
