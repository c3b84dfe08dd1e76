//! The file's format version and tables: checked on every open, created
//! or upgraded by a read-write open.

use crate::encoding::{
    self, ENTITY_TICKS, FORMAT_KEY, FORMAT_VERSION, LIVENESS, META, RECORDS, SNAPSHOTS, SPAWNS,
    TABLE_NAMES, WORLD_NAMES, WORLDS,
};
use crate::{ErrorSink, Failure};
use autoresearch_core::{StorageError, Tick, WorldId};
use redb::{Database, ReadableDatabase, ReadableTable, TableHandle};

/// Checks the file's format version: newer files are refused.
/// Returns the version, `None` for a file without one (no `meta` table).
pub(crate) fn check_version(
    db: &impl ReadableDatabase,
    sink: &ErrorSink,
) -> Result<Option<u8>, StorageError> {
    let path = sink.path.display().to_string();
    let context = || format!("reading the format version of ledger {path}");
    let txn = db
        .begin_read()
        .map_err(|e| sink.error(Failure::from(e), context))?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(sink.error(e.into(), context)),
    };
    let Some(v) = meta
        .get(FORMAT_KEY)
        .map_err(|e| sink.error(e.into(), context))?
    else {
        return Ok(None);
    };
    let found =
        encoding::decode_file_version(v.value()).map_err(|reason| StorageError::Backend {
            context: context(),
            source: reason.into(),
        })?;
    if found > FORMAT_VERSION {
        return Err(StorageError::NewerFormat {
            what: format!("ledger {path}"),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(Some(found))
}

/// Creates missing tables and checks (or records) the file's format
/// version; upgrades a format 1 file (fills `liveness` from the records)
/// and a format 3 one (drops its current-state tables, kept from then on
/// in format 4's shape for worlds created after).
pub(crate) fn ensure_schema(db: &Database, sink: &ErrorSink) -> Result<(), StorageError> {
    let path = sink.path.display().to_string();
    let context = || format!("preparing ledger {path}");
    // A read first, so that an up-to-date file is not written on every open.
    let version = check_version(db, sink)?;
    if version == Some(FORMAT_VERSION) {
        let names = (|| -> Result<Vec<String>, Failure> {
            let txn = db.begin_read()?;
            Ok(txn.list_tables()?.map(|t| t.name().to_string()).collect())
        })()
        .map_err(|e| sink.error(e, context))?;
        // Version 2 of the chart series had a table of its own for run
        // ids; a file that has it is rewritten once to drop it.
        let old_series = names.iter().any(|n| n == crate::series::OLD_RUN_IDS.name());
        if TABLE_NAMES.iter().all(|t| names.iter().any(|n| n == t)) && !old_series {
            return Ok(());
        }
    }
    (|| -> Result<(), Failure> {
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let existing = meta.get(FORMAT_KEY)?.map(|v| v.value().to_vec());
            let found = match existing {
                Some(v) => {
                    encoding::decode_file_version(&v).map_err(|reason| StorageError::Backend {
                        context: context(),
                        source: reason.into(),
                    })?
                }
                None => FORMAT_VERSION,
            };
            if found > FORMAT_VERSION {
                return Err(StorageError::NewerFormat {
                    what: format!("ledger {path}"),
                    found,
                    supported: FORMAT_VERSION,
                }
                .into());
            }
            txn.open_table(WORLDS)?;
            txn.open_table(WORLD_NAMES)?;
            let records = txn.open_table(RECORDS)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(ENTITY_TICKS)?;
            txn.open_table(SPAWNS)?;
            txn.open_table(encoding::RECORD_PARTS)?;
            txn.open_table(encoding::SNAPSHOT_PARTS)?;
            if found < 4 {
                // Format 3's current state held every value a second
                // time; format 4 keeps pointers. Without its tables, the
                // worlds of the file keep none (their reads materialize).
                txn.delete_table(crate::current::OLD_VALUES)?;
                txn.delete_table(crate::current::OLD_KEYS)?;
                txn.delete_table(crate::current::TALLY)?;
                txn.delete_table(crate::current::OLD_AT)?;
            }
            txn.delete_table(crate::series::OLD_RUN_IDS)?;
            let had_liveness = txn.list_tables()?.any(|t| t.name() == LIVENESS.name());
            let mut liveness = txn.open_table(LIVENESS)?;
            if found < 2 || !had_liveness {
                // Format 1 had no liveness table: derive it from the log
                // (checked inside the write transaction, so two processes
                // upgrading at once do it once).
                for entry in records.iter()? {
                    let (k, v) = entry?;
                    let (w, tick) = k.value();
                    let changes = encoding::record_liveness(Tick(tick), v.value())
                        .map_err(|e| e.at(WorldId(w), Tick(tick), "tick record"))?;
                    for (e, alive) in changes {
                        liveness.insert((w, e.0, tick), alive)?;
                    }
                }
            }
            meta.insert(FORMAT_KEY, encoding::encode_file_version().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    })()
    .map_err(|e| sink.error(e, context))
}
