//! The world catalogue read from any view of its tables: a world by id,
//! a world by name (checked against the name index).

use crate::{Failure, encoding};
use autoresearch_core::{StorageError, Tick, WorldId, WorldInfo};
use redb::ReadableTable;

/// The catalogue entry of `id`, from any view of the `worlds` table.
pub(crate) fn load_world<T: ReadableTable<u64, &'static [u8]>>(
    worlds: &T,
    id: WorldId,
) -> Result<WorldInfo, Failure> {
    let guard = worlds.get(id.0)?.ok_or(StorageError::NoSuchWorld(id))?;
    encoding::decode_world(id, guard.value())
        .map_err(|e| e.at(id, Tick::ZERO, "catalogue entry").into())
}

/// The world named `name`, from any view of the catalogue and its name
/// index, checked against each other: `Ok(None)` only when both agree that
/// no world has that name. A name entry pointing at a world of another
/// name, a world missing from the index, an index and a catalogue of
/// different sizes, or a catalogue entry that does not decode is
/// `Corrupt`: never "no such world", which would let a caller create a
/// second world of that name. Cost: one point read when the name exists,
/// a scan of the catalogue (one entry per world) when it does not.
pub(crate) fn find_name<W, N>(
    worlds: &W,
    names: &N,
    name: &str,
) -> Result<Option<WorldInfo>, Failure>
where
    W: ReadableTable<u64, &'static [u8]>,
    N: ReadableTable<&'static str, u64>,
{
    let corrupt = |world: WorldId, reason: String| {
        Failure::Storage(StorageError::Corrupt {
            world,
            tick: Tick::ZERO,
            reason: format!("world catalogue: {reason}"),
        })
    };
    if let Some(id) = names.get(name)? {
        let id = WorldId(id.value());
        let info = match load_world(worlds, id) {
            Err(Failure::Storage(StorageError::NoSuchWorld(_))) => {
                return Err(corrupt(
                    id,
                    format!("the name {name:?} points at a missing world"),
                ));
            }
            other => other?,
        };
        if info.name != name {
            return Err(corrupt(
                id,
                format!("the name {name:?} points at a world named {:?}", info.name),
            ));
        }
        return Ok(Some(info));
    }
    for entry in worlds.iter()? {
        let (k, v) = entry?;
        let id = WorldId(k.value());
        let info = encoding::decode_world(id, v.value())
            .map_err(|e| Failure::from(e.at(id, Tick::ZERO, "catalogue entry")))?;
        if info.name == name {
            return Err(corrupt(id, format!("the name index lacks {name:?}")));
        }
    }
    let (w, n) = (worlds.len()?, names.len()?);
    if w != n {
        return Err(corrupt(
            WorldId(0),
            format!("{w} worlds but {n} names in the name index"),
        ));
    }
    Ok(None)
}
