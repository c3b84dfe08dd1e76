//! Reads of one component with its values left in place: a stored record
//! or snapshot decoded once into a shared body, each kept value a span of
//! it ([`SpanRecord`], [`SpanSnapshot`]). The changes and entities are
//! visited as postcard reads them, without building the record's own
//! shape first.

use crate::encoding::{self, ChangeRef, DecodeError};
use autoresearch_core::{
    ChangeKind, ComponentChange, EntityId, Span, SpanRecord, SpanSnapshot, Tick,
};
use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};
use std::sync::Arc;

/// The postcard body of a stored value, owned: decompressed, or copied
/// out of the page it was read from.
fn owned_body(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    Ok(match encoding::body(bytes)? {
        std::borrow::Cow::Owned(v) => v,
        std::borrow::Cow::Borrowed(b) => b.to_vec(),
    })
}

/// Runs `seed` over all of `body`; errors on bytes left after it.
fn read_all<'de, S: DeserializeSeed<'de>>(
    body: &'de [u8],
    seed: S,
) -> Result<S::Value, DecodeError> {
    let mut de = postcard::Deserializer::from_bytes(body);
    let value = seed
        .deserialize(&mut de)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let rest = de
        .finalize()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    encoding::nothing_left(rest)?;
    Ok(value)
}

/// A stored record projected on `component`, its values spans of the
/// decoded body. A record that sets no value of the component keeps no
/// body.
pub(crate) fn decode_span_record(
    tick: Tick,
    bytes: &[u8],
    component: &str,
) -> Result<SpanRecord, DecodeError> {
    let body = owned_body(bytes)?;
    let (changes, kept) = read_all(
        &body,
        RecordSeed {
            component,
            body: &body,
        },
    )?;
    Ok(SpanRecord {
        tick,
        body: Arc::new(if kept { body } else { Vec::new() }),
        changes,
    })
}

/// A stored snapshot projected on `component`, its values spans of the
/// decoded body.
pub(crate) fn decode_span_snapshot(
    tick: Tick,
    bytes: &[u8],
    component: &str,
) -> Result<SpanSnapshot, DecodeError> {
    let body = owned_body(bytes)?;
    let entities = read_all(
        &body,
        SnapshotSeed {
            component,
            body: &body,
        },
    )?;
    Ok(SpanSnapshot {
        tick,
        body: Arc::new(body),
        entities,
    })
}

fn span_in<E: serde::de::Error>(body: &[u8], value: &[u8]) -> Result<Span, E> {
    Span::within(body, value).ok_or_else(|| E::custom("a value lies outside its body"))
}

/// The record's wire shape: `(at_ms, [change])`.
struct RecordSeed<'de, 'c> {
    component: &'c str,
    body: &'de [u8],
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'de, '_> {
    type Value = (Vec<ComponentChange<Span>>, bool);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(2, self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'de, '_> {
    type Value = (Vec<ComponentChange<Span>>, bool);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tick record")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let _at_ms: i64 = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        seq.next_element_seed(Changes {
            component: self.component,
            body: self.body,
        })?
        .ok_or_else(|| A::Error::invalid_length(1, &"a tick record"))
    }
}

/// A record's changes, each projected as it is read.
struct Changes<'de, 'c> {
    component: &'c str,
    body: &'de [u8],
}

impl<'de> DeserializeSeed<'de> for Changes<'de, '_> {
    type Value = (Vec<ComponentChange<Span>>, bool);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Changes<'de, '_> {
    type Value = (Vec<ComponentChange<Span>>, bool);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of changes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // A claimed length is not trusted beyond what the body could hold.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.body.len()));
        let mut kept = false;
        while let Some(change) = seq.next_element::<ChangeRef<'de>>()? {
            out.push(match change {
                ChangeRef::Spawn(e) => ComponentChange::Spawn(EntityId(e)),
                ChangeRef::Set(e, c, v) if c == self.component => {
                    kept = true;
                    ComponentChange::Set(EntityId(e), span_in(self.body, v)?)
                }
                ChangeRef::Set(e, ..) => ComponentChange::Other(EntityId(e), ChangeKind::Set),
                ChangeRef::Remove(e, c) if c == self.component => {
                    ComponentChange::Remove(EntityId(e))
                }
                ChangeRef::Remove(e, _) => ComponentChange::Other(EntityId(e), ChangeKind::Remove),
                ChangeRef::Despawn(e) => ComponentChange::Despawn(EntityId(e)),
            });
        }
        Ok((out, kept))
    }
}

/// The snapshot's wire shape: `(next_entity, [(entity, [(name, value)])])`.
struct SnapshotSeed<'de, 'c> {
    component: &'c str,
    body: &'de [u8],
}

type SpanEntities = Vec<(EntityId, Option<Span>)>;

impl<'de> DeserializeSeed<'de> for SnapshotSeed<'de, '_> {
    type Value = SpanEntities;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(2, self)
    }
}

impl<'de> Visitor<'de> for SnapshotSeed<'de, '_> {
    type Value = SpanEntities;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a snapshot")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let _next_entity: u64 = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        seq.next_element_seed(Entities {
            component: self.component,
            body: self.body,
        })?
        .ok_or_else(|| A::Error::invalid_length(1, &"a snapshot"))
    }
}

/// A snapshot's entities, each projected as it is read.
struct Entities<'de, 'c> {
    component: &'c str,
    body: &'de [u8],
}

impl<'de> DeserializeSeed<'de> for Entities<'de, '_> {
    type Value = SpanEntities;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Entities<'de, '_> {
    type Value = SpanEntities;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of entities")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.body.len()));
        while let Some(entity) = seq.next_element_seed(Entity {
            component: self.component,
            body: self.body,
        })? {
            out.push(entity);
        }
        Ok(out)
    }
}

/// One entity of a snapshot: `(id, [(name, value)])`.
struct Entity<'de, 'c> {
    component: &'c str,
    body: &'de [u8],
}

impl<'de> DeserializeSeed<'de> for Entity<'de, '_> {
    type Value = (EntityId, Option<Span>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(2, self)
    }
}

impl<'de> Visitor<'de> for Entity<'de, '_> {
    type Value = (EntityId, Option<Span>);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an entity and its components")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let id: u64 = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let value = seq
            .next_element_seed(Components {
                component: self.component,
                body: self.body,
            })?
            .ok_or_else(|| A::Error::invalid_length(1, &"an entity and its components"))?;
        Ok((EntityId(id), value))
    }
}

/// An entity's components; the span of `component`'s value, if any.
struct Components<'de, 'c> {
    component: &'c str,
    body: &'de [u8],
}

impl<'de> DeserializeSeed<'de> for Components<'de, '_> {
    type Value = Option<Span>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Components<'de, '_> {
    type Value = Option<Span>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of components")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some((name, value)) = seq.next_element::<(&'de str, &'de [u8])>()? {
            if name == self.component {
                found = Some(span_in(self.body, value)?);
            }
        }
        Ok(found)
    }
}
