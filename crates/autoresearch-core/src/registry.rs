//! The component registry: which Rust types may live in a world, and under
//! which stable name they are stored.
//!
//! Storage deals only in `(name, bytes)`; the registry turns those into typed
//! hecs components and back. Values are encoded with postcard: compact and
//! fast, but not self-describing, so a registered type's serde shape is part
//! of the ledger format. Change it by registering a new name (e.g. `RunV2`),
//! not by editing the struct under the old one.

use crate::ids::WorldId;
use crate::{BranchHead, EvalResult, Experiment, Run};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::TypeId;
use std::collections::HashMap;

/// Anything that can be a component: serializable, shareable, owned. It is
/// implemented for every such type; register one under a stable name and it
/// is stored, time-travelled, forked and queried like the built-in four.
///
/// ```
/// use autoresearch_core::{ComponentRegistry, MemoryStorage, Storage, World};
/// use serde::{Deserialize, Serialize};
/// use std::sync::Arc;
///
/// /// A user component: which GPU a run used.
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// struct Gpu { model: String, memory_gb: u32 }
///
/// let mut registry = ComponentRegistry::standard();
/// registry.register::<Gpu>("Gpu").unwrap();
/// let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut world = World::create(storage, Arc::new(registry), "fleet").await.unwrap();
/// let e = world.spawn_with(&Gpu { model: "H100".into(), memory_gb: 80 }).unwrap();
/// world.commit().await.unwrap();
/// assert_eq!(world.get::<Gpu>(e).unwrap().memory_gb, 80);
/// # });
/// ```
pub trait ComponentValue: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> ComponentValue for T {}

/// Errors from encoding or decoding a component.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A Rust type was read or written before it was registered.
    #[error("component type {type_name} is not registered; call ComponentRegistry::register first")]
    UnregisteredType {
        /// The type's Rust name (`std::any::type_name`).
        type_name: &'static str,
    },
    /// A world holds a component name that this process did not register
    /// (written by a newer or different build).
    #[error("component {component:?} met in {world} is not registered in this process")]
    UnknownComponent {
        /// The world the component was met in.
        world: WorldId,
        /// The stored component name.
        component: String,
    },
    /// A second type was registered under a name already in use.
    #[error("component name {name:?} is already registered for another type")]
    NameTaken {
        /// The contested component name.
        name: String,
    },
    /// Stored bytes did not decode as the registered type.
    #[error("decoding component {component:?} of {world}: {source}")]
    Decode {
        /// The world the bytes were read from.
        world: WorldId,
        /// The component's registered name.
        component: String,
        /// The decoder's error.
        #[source]
        source: postcard::Error,
    },
    /// Stored bytes could not be shown as JSON (they do not decode as the
    /// registered type).
    #[error("decoding component {component:?} of {world}: {reason}")]
    Corrupt {
        /// The world the bytes were read from.
        world: WorldId,
        /// The component's registered name.
        component: String,
        /// The decoder's message.
        reason: String,
    },
    /// A value could not be encoded (a type whose `Serialize` fails).
    #[error("encoding component {component:?}: {source}")]
    Encode {
        /// The component's registered name.
        component: String,
        /// The encoder's error.
        #[source]
        source: postcard::Error,
    },
}

#[derive(Clone)]
pub(crate) struct VTable {
    pub name: String,
    pub insert: fn(&mut hecs::World, hecs::Entity, &[u8]) -> Result<(), postcard::Error>,
    pub remove: fn(&mut hecs::World, hecs::Entity),
    pub encode: fn(hecs::EntityRef<'_>) -> Option<Result<Vec<u8>, postcard::Error>>,
    pub to_json: fn(&[u8]) -> Result<serde_json::Value, String>,
    /// Decodes a value into a builder (an entity spawned with all its
    /// components at once, not moved between archetypes per component).
    pub build: fn(&mut hecs::EntityBuilder, &[u8]) -> Result<(), postcard::Error>,
    /// Copies the entity's value, if it has one, into a builder (encoded
    /// and decoded back: a component need not be `Clone`).
    pub copy: fn(hecs::EntityRef<'_>, &mut hecs::EntityBuilder) -> Result<(), postcard::Error>,
    /// Encodes every value of the type in an archetype, in its row order;
    /// `None` when the archetype has no such column (a snapshot walks
    /// hecs's columns in memory order instead of looking each entity up).
    pub encode_column: fn(&hecs::Archetype) -> Option<Result<Column, postcard::Error>>,
}

/// The encoded values of one column of an archetype, in row order.
pub(crate) type Column = Vec<Vec<u8>>;

fn build_impl<T: ComponentValue>(
    builder: &mut hecs::EntityBuilder,
    bytes: &[u8],
) -> Result<(), postcard::Error> {
    builder.add(postcard::from_bytes::<T>(bytes)?);
    Ok(())
}

fn copy_impl<T: ComponentValue>(
    entity: hecs::EntityRef<'_>,
    builder: &mut hecs::EntityBuilder,
) -> Result<(), postcard::Error> {
    let Some(bytes) = encode_impl::<T>(entity) else {
        return Ok(());
    };
    build_impl::<T>(builder, &bytes?)
}

fn to_json_impl<T: ComponentValue>(bytes: &[u8]) -> Result<serde_json::Value, String> {
    let value: T = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    serde_json::to_value(&value).map_err(|e| e.to_string())
}

/// Puts a value decoded from `bytes` on `entity`, replacing its value of
/// that type (a [`World::modify`](crate::World::modify) undo uses it too).
pub(crate) fn insert_impl<T: ComponentValue>(
    world: &mut hecs::World,
    entity: hecs::Entity,
    bytes: &[u8],
) -> Result<(), postcard::Error> {
    let value: T = postcard::from_bytes(bytes)?;
    // The entity exists: the caller resolved it from the id map.
    let _ = world.insert_one(entity, value);
    Ok(())
}

fn remove_impl<T: ComponentValue>(world: &mut hecs::World, entity: hecs::Entity) {
    let _ = world.remove_one::<T>(entity);
}

/// The largest scratch buffer [`encode_exact`] keeps between calls.
const MAX_SCRATCH: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `postcard::to_stdvec`, without growing the result: encodes into a
/// per-thread scratch buffer and copies it out at its exact size.
pub(crate) fn encode_exact<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    SCRATCH.with(|scratch| {
        let mut buf = scratch.take();
        buf.clear();
        let buf = postcard::to_extend(value, buf)?;
        let out = buf.clone();
        if buf.capacity() <= MAX_SCRATCH {
            scratch.replace(buf);
        }
        Ok(out)
    })
}

fn encode_impl<T: ComponentValue>(
    entity: hecs::EntityRef<'_>,
) -> Option<Result<Vec<u8>, postcard::Error>> {
    entity.get::<&T>().map(|v| encode_exact(&*v))
}

fn encode_column_impl<T: ComponentValue>(
    archetype: &hecs::Archetype,
) -> Option<Result<Column, postcard::Error>> {
    let column = archetype.get::<&T>()?;
    // Sized once: growing a large vector costs more than encoding into it.
    let mut out = Vec::with_capacity(column.len());
    for value in column.iter() {
        match encode_exact(value) {
            Ok(bytes) => out.push(bytes),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(out))
}

/// The registry's maps: a handful of keys looked up for every change
/// (foldhash with a fixed seed, not SipHash: the keys are the program's
/// own type ids and component names).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Maps stable component names to Rust types.
///
/// The names are a compatibility promise: they are written into every record,
/// so renaming one orphans the history stored under the old name.
#[derive(Clone, Default)]
pub struct ComponentRegistry {
    by_name: FastMap<String, VTable>,
    by_type: FastMap<TypeId, String>,
}

impl ComponentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the four lifecycle components under the names the
    /// Python engine uses: `Experiment`, `Run`, `Result`, `BranchHead`.
    pub fn with_lifecycle() -> Self {
        let mut r = Self::new();
        r.register::<Experiment>("Experiment")
            .expect("fresh registry");
        r.register::<Run>("Run").expect("fresh registry");
        r.register::<EvalResult>("Result").expect("fresh registry");
        r.register::<BranchHead>("BranchHead")
            .expect("fresh registry");
        r
    }

    /// [`ComponentRegistry::with_lifecycle`] plus the loop's own components:
    /// `Outcome`, `Vote`, `Lease`, `Confirmation`, `RunCost`, `NoiseModel`,
    /// `ExecutorJob` and `Description`. Every crate in this workspace reads
    /// and writes experiment worlds with (a superset of) this registry.
    pub fn standard() -> Self {
        let mut r = Self::with_lifecycle();
        r.register::<crate::components::Outcome>("Outcome")
            .expect("fresh name");
        r.register::<crate::components::Vote>("Vote")
            .expect("fresh name");
        r.register::<crate::components::Lease>("Lease")
            .expect("fresh name");
        r.register::<crate::confirm::Confirmation>("Confirmation")
            .expect("fresh name");
        r.register::<crate::cost::RunCost>("RunCost")
            .expect("fresh name");
        r.register::<crate::noise::NoiseModel>("NoiseModel")
            .expect("fresh name");
        r.register::<crate::jobs::ExecutorJob>("ExecutorJob")
            .expect("fresh name");
        r.register::<crate::description::Description>("Description")
            .expect("fresh name");
        r
    }

    /// Registers `T` under `name`. Registering the same type under the same
    /// name again is a no-op; a name already used by another type is an error.
    pub fn register<T: ComponentValue>(&mut self, name: &str) -> Result<(), RegistryError> {
        let tid = TypeId::of::<T>();
        if let Some(existing) = self.by_type.get(&tid)
            && existing == name
        {
            return Ok(());
        }
        if self.by_name.contains_key(name) {
            return Err(RegistryError::NameTaken {
                name: name.to_string(),
            });
        }
        self.by_type.insert(tid, name.to_string());
        self.by_name.insert(
            name.to_string(),
            VTable {
                name: name.to_string(),
                insert: insert_impl::<T>,
                remove: remove_impl::<T>,
                encode: encode_impl::<T>,
                to_json: to_json_impl::<T>,
                build: build_impl::<T>,
                copy: copy_impl::<T>,
                encode_column: encode_column_impl::<T>,
            },
        );
        Ok(())
    }

    /// The stable name of `T`, if registered.
    pub fn name_of<T: 'static>(&self) -> Result<&str, RegistryError> {
        self.by_type
            .get(&TypeId::of::<T>())
            .map(String::as_str)
            .ok_or(RegistryError::UnregisteredType {
                type_name: std::any::type_name::<T>(),
            })
    }

    /// Whether a component name is known.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn vtable(&self, world: WorldId, name: &str) -> Result<&VTable, RegistryError> {
        self.by_name
            .get(name)
            .ok_or_else(|| RegistryError::UnknownComponent {
                world,
                component: name.to_string(),
            })
    }

    pub(crate) fn vtables(&self) -> impl Iterator<Item = &VTable> {
        self.by_name.values()
    }

    /// Encodes a value of a registered type. Returns its name and bytes.
    /// Cost: one allocation of exactly the encoded size (the value is
    /// written into a reused per-thread buffer first, not a growing Vec).
    pub fn encode<T: ComponentValue>(&self, value: &T) -> Result<(String, Vec<u8>), RegistryError> {
        let name = self.name_of::<T>()?.to_string();
        let bytes = encode_exact(value).map_err(|source| RegistryError::Encode {
            component: name.clone(),
            source,
        })?;
        Ok((name, bytes))
    }

    /// Decodes stored bytes of component `name` into JSON, for display and
    /// export. Errors name the component and the world.
    pub fn to_json(
        &self,
        world: WorldId,
        name: &str,
        bytes: &[u8],
    ) -> Result<serde_json::Value, RegistryError> {
        let vt = self.vtable(world, name)?;
        (vt.to_json)(bytes).map_err(|reason| RegistryError::Corrupt {
            world,
            component: name.to_string(),
            reason,
        })
    }

    /// Decodes stored bytes of a registered type.
    pub fn decode<T: ComponentValue>(
        &self,
        world: WorldId,
        bytes: &[u8],
    ) -> Result<T, RegistryError> {
        let name = self.name_of::<T>()?;
        postcard::from_bytes(bytes).map_err(|source| RegistryError::Decode {
            world,
            component: name.to_string(),
            source,
        })
    }
}

impl std::fmt::Debug for ComponentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentRegistry")
            .field("names", &self.names())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_is_postcard_exactly_sized_after_larger_values() {
        let mut reg = ComponentRegistry::with_lifecycle();
        reg.register::<Vec<String>>("Strings").unwrap();
        let big = vec!["x".repeat(5000), "y".to_string()];
        let small = vec!["z".to_string()];
        for value in [&big, &small, &Vec::new(), &big] {
            let (name, bytes) = reg.encode(value).unwrap();
            assert_eq!(name, "Strings");
            assert_eq!(bytes, postcard::to_stdvec(value).unwrap());
            assert_eq!(bytes.capacity(), bytes.len());
            assert_eq!(
                reg.decode::<Vec<String>>(WorldId(1), &bytes).unwrap(),
                *value
            );
        }
    }
}
