//! Failures met on a ledger file, made into errors that name the file and
//! keep their cause: redb's errors, the first I/O error (redb answers every
//! later operation with "Previous I/O error occurred"), and panics inside
//! redb, contained at the store boundary.

use super::*;

/// A failed step: either a storage-level refusal or a redb error.
pub(crate) enum Failure {
    Storage(StorageError),
    Db(redb::Error),
    /// A panic inside redb, caught at the store boundary.
    Panic(Box<dyn std::any::Any + Send>),
    /// A refusal met after a batch's first write (a record encoded on a
    /// thread of its own that failed): the whole transaction is dropped.
    Aborted(StorageError),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Self {
                Failure::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// Why an update of the derived tables (the current state, the chart
/// series) stopped.
pub(crate) enum Stop {
    /// The tables cannot be kept provably equal to the ledger (a lifecycle
    /// component or a pointer did not decode, or a history the series
    /// cannot follow): stop keeping them for this world.
    Unkept,
    /// redb failed: the whole transaction aborts.
    Db(Failure),
}

impl<E: Into<Failure>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Db(e.into())
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Failure::Storage(e)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns failures met on one ledger file into errors that name the file
/// and keep their cause, and remembers the first I/O error: redb answers
/// every later operation with "Previous I/O error occurred", which is
/// replaced by that first cause.
#[derive(Clone)]
pub(crate) struct ErrorSink {
    pub(crate) path: PathBuf,
    first_io: Arc<Mutex<Option<std::io::Error>>>,
}

/// redb's `PreviousIo`, with the I/O error that caused it.
#[derive(Debug, thiserror::Error)]
#[error("an earlier I/O error left the ledger unusable until it is reopened: {first}")]
struct EarlierIoError {
    #[source]
    first: redb::Error,
}

/// An equal copy of an I/O error (they are not `Clone`), so that every
/// operation of a failed batch gets its own, downcastable cause.
fn copy_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// The cause of a failed batch, which each of its operations gets a copy of.
pub(crate) enum SharedCause {
    Io(std::io::Error),
    EarlierIo(std::io::Error),
    Other(Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl SharedCause {
    fn to_box(&self) -> BoxError {
        match self {
            SharedCause::Io(io) => Box::new(redb::Error::Io(copy_io(io))),
            SharedCause::EarlierIo(io) => Box::new(EarlierIoError {
                first: redb::Error::Io(copy_io(io)),
            }),
            SharedCause::Other(e) => Box::new(e.clone()),
        }
    }
}

/// One batch failure, reported to every operation of the batch.
pub(crate) enum SharedError {
    Damaged(PathBuf, String, String),
    Backend(String, SharedCause),
}

impl SharedError {
    pub(crate) fn to_error(&self) -> StorageError {
        match self {
            SharedError::Damaged(path, context, reason) => StorageError::Damaged {
                path: path.clone(),
                context: context.clone(),
                reason: reason.clone(),
            },
            SharedError::Backend(context, cause) => StorageError::Backend {
                context: context.clone(),
                source: cause.to_box(),
            },
        }
    }
}

impl ErrorSink {
    pub(crate) fn new(path: &Path) -> ErrorSink {
        ErrorSink {
            path: path.to_path_buf(),
            first_io: Default::default(),
        }
    }

    /// The cause of a redb error, with `PreviousIo` replaced by the first
    /// I/O error seen on the file.
    fn shared_cause(&self, e: redb::Error) -> SharedCause {
        let mut first = self.first_io.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            redb::Error::PreviousIo => match first.as_ref() {
                Some(f) => SharedCause::EarlierIo(copy_io(f)),
                None => SharedCause::Other(Arc::new(redb::Error::PreviousIo)),
            },
            redb::Error::Io(io) => {
                first.get_or_insert_with(|| copy_io(&io));
                SharedCause::Io(io)
            }
            e => SharedCause::Other(Arc::new(e)),
        }
    }

    fn cause(&self, e: redb::Error) -> BoxError {
        match e {
            e @ (redb::Error::PreviousIo | redb::Error::Io(_)) => match self.shared_cause(e) {
                SharedCause::Io(io) => Box::new(redb::Error::Io(io)),
                cause => cause.to_box(),
            },
            e => Box::new(e),
        }
    }

    /// The error for `failure` while doing `context` (which should name
    /// the file; [`ErrorSink::in_file`] is applied to storage errors).
    pub(crate) fn error(&self, failure: Failure, context: impl FnOnce() -> String) -> StorageError {
        match failure {
            Failure::Storage(e) => self.in_file(e),
            Failure::Db(e) => StorageError::Backend {
                context: context(),
                source: self.cause(e),
            },
            Failure::Panic(panic) => self.damaged(&context(), panic.as_ref()),
            Failure::Aborted(e) => self.in_file(e),
        }
    }

    /// `failure` as an error every member of a failed batch can get.
    pub(crate) fn shared(&self, failure: Failure, context: &str) -> SharedError {
        match failure {
            Failure::Storage(StorageError::Damaged {
                path,
                context,
                reason,
            }) => SharedError::Damaged(path, context, reason),
            Failure::Storage(e) => {
                SharedError::Backend(context.to_string(), SharedCause::Other(Arc::new(e)))
            }
            Failure::Db(e) => SharedError::Backend(context.to_string(), self.shared_cause(e)),
            Failure::Aborted(e) => {
                SharedError::Backend(context.to_string(), SharedCause::Other(Arc::new(e)))
            }
            Failure::Panic(panic) => match self.damaged(context, panic.as_ref()) {
                StorageError::Damaged {
                    path,
                    context,
                    reason,
                } => SharedError::Damaged(path, context, reason),
                e => SharedError::Backend(context.to_string(), SharedCause::Other(Arc::new(e))),
            },
        }
    }

    /// Names the file in errors about stored values.
    pub(crate) fn in_file(&self, e: StorageError) -> StorageError {
        let file = self.path.display().to_string();
        match e {
            StorageError::Corrupt {
                world,
                tick,
                reason,
            } if !reason.contains(&file) => StorageError::Corrupt {
                world,
                tick,
                reason: format!("{reason} (ledger {file})"),
            },
            StorageError::NewerFormat {
                what,
                found,
                supported,
            } if !what.contains(&file) => StorageError::NewerFormat {
                what: format!("{what} in ledger {file}"),
                found,
                supported,
            },
            e => e,
        }
    }

    /// The error for a panic inside redb while doing `context`.
    pub(crate) fn damaged(
        &self,
        context: &str,
        panic: &(dyn std::any::Any + Send),
    ) -> StorageError {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        StorageError::Damaged {
            path: self.path.clone(),
            context: context.to_string(),
            reason: format!("the database engine panicked: {reason}"),
        }
    }

    /// Runs `f`, turning a panic inside it into [`StorageError::Damaged`].
    pub(crate) fn contain<T>(
        &self,
        context: &str,
        f: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        catch(f).unwrap_or_else(|panic| Err(self.damaged(context, panic.as_ref())))
    }
}

thread_local! {
    /// How many [`catch`] calls this thread is inside.
    static CATCHING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `catch_unwind` for the engine's calls, with the process's panic message
/// left out while it runs: the panic becomes an error the caller returns
/// (its message included), so a handled panic does not also print
/// "thread ... panicked" (and a backtrace) as if the program had crashed.
/// Other panics print as before (the hook installed once chains to the
/// one it replaced).
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(std::cell::Cell::get) == 0 {
                previous(info);
            }
        }));
    });
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result
}
