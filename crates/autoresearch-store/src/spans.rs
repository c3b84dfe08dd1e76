//! Reads of one component with its values left in place: a stored record
//! or snapshot decoded once into a shared body, each kept value a span of
//! it ([`SpanRecord`], [`SpanSnapshot`]). The changes and entities are
//! visited as postcard reads them, without building the record's own
//! shape first.

use crate::encoding::{self, ChangeRef, DecodeError};
use autoresearch_core::{
    ChangeKind, ComponentChange, EntityId, Span, SpanRecord, SpanSnapshot, Tick,
};
use serde::Deserialize;
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
        changes: changes.into(),
    })
}

/// A delta of a value as stored in a record (`encoding::delta`),
/// borrowed: of the value `entity`'s component had as tick `base` set
/// it, keep `prefix` leading and `suffix` trailing bytes and put `middle`
/// between them.
#[derive(Deserialize)]
pub(crate) struct DeltaRef<'a> {
    pub(crate) base: u64,
    pub(crate) prefix: u32,
    pub(crate) suffix: u32,
    pub(crate) middle: &'a [u8],
}

/// A change of a record that holds deltas (value version 3), borrowed
/// from its decoded body: the stored `ChangeV2`'s wire shape (the same
/// variants in the same order), without copying its text or value.
#[derive(Deserialize)]
enum ChangeRefV2<'a> {
    Spawn(u64),
    Set(u64, &'a str, &'a [u8]),
    Remove(u64, &'a str),
    Despawn(u64),
    SetDelta(u64, &'a str, #[serde(borrow)] DeltaRef<'a>),
}

/// The stored `RecordV2` borrowed.
#[derive(Deserialize)]
struct RecordRefV2<'a> {
    #[expect(
        dead_code,
        reason = "on the wire before the changes; projections do not need it"
    )]
    at_ms: i64,
    #[serde(borrow)]
    changes: Vec<ChangeRefV2<'a>>,
}

/// A stored record that holds deltas (value version 3) projected on
/// `component`, as [`decode_span_record`] projects a whole one, without
/// rewriting it whole first: only `component`'s values are put in the
/// body (copied, or, for a delta, written by `resolve(entity, delta,
/// body)`, which appends the value the delta stands for); the deltas of
/// other components are not resolved (their base records not read).
/// Errors with `map`'s error on a damaged record, with `resolve`'s on a
/// delta that does not resolve.
pub(crate) fn decode_span_delta_record<E>(
    tick: Tick,
    bytes: &[u8],
    component: &str,
    mut resolve: impl FnMut(u64, &DeltaRef<'_>, &mut Vec<u8>) -> Result<(), E>,
    map: impl Fn(DecodeError) -> E,
) -> Result<SpanRecord, E> {
    let decoded = encoding::body(bytes).map_err(&map)?;
    let r: RecordRefV2<'_> = encoding::take_whole(&decoded).map_err(&map)?;
    // The body's length is known before any base is read: a delta's
    // value is its prefix, middle and suffix.
    let len: usize = r
        .changes
        .iter()
        .map(|c| match c {
            ChangeRefV2::Set(_, c, v) if *c == component => v.len(),
            ChangeRefV2::SetDelta(_, c, d) if *c == component => {
                (d.prefix as usize + d.suffix as usize).saturating_add(d.middle.len())
            }
            _ => 0,
        })
        .fold(0usize, usize::saturating_add);
    // (A damaged length is refused when its delta is resolved; the body
    // never grows past what the base values hold.)
    let mut body = Vec::with_capacity(len.min(bytes.len().saturating_mul(64).max(1 << 16)));
    let mut changes = Vec::with_capacity(r.changes.len());
    let span = |body: &Vec<u8>, start: usize| {
        let start = u32::try_from(start).ok()?;
        let len = u32::try_from(body.len()).ok()?.checked_sub(start)?;
        Some(Span { start, len })
    };
    let too_long = || map(DecodeError::Corrupt("a record of more than 4 GiB".into()));
    for c in r.changes {
        changes.push(match c {
            ChangeRefV2::Spawn(e) => ComponentChange::Spawn(EntityId(e)),
            ChangeRefV2::Set(e, c, v) if c == component => {
                let start = body.len();
                body.extend_from_slice(v);
                ComponentChange::Set(EntityId(e), span(&body, start).ok_or_else(too_long)?)
            }
            ChangeRefV2::SetDelta(e, c, d) if c == component => {
                let start = body.len();
                resolve(e, &d, &mut body)?;
                ComponentChange::Set(EntityId(e), span(&body, start).ok_or_else(too_long)?)
            }
            ChangeRefV2::Set(e, ..) | ChangeRefV2::SetDelta(e, ..) => {
                ComponentChange::Other(EntityId(e), ChangeKind::Set)
            }
            ChangeRefV2::Remove(e, c) if c == component => ComponentChange::Remove(EntityId(e)),
            ChangeRefV2::Remove(e, _) => ComponentChange::Other(EntityId(e), ChangeKind::Remove),
            ChangeRefV2::Despawn(e) => ComponentChange::Despawn(EntityId(e)),
        });
    }
    Ok(SpanRecord {
        tick,
        body: Arc::new(body),
        changes: changes.into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{encode_record_with_deltas, resolve_record};
    use autoresearch_core::Change;
    use std::collections::HashMap;

    /// A record with deltas of two components, projected on one: the same
    /// changes and values as the record rewritten whole and then
    /// projected; the other component's deltas are never resolved.
    #[test]
    fn a_record_with_deltas_projects_as_the_whole_record_does() {
        let set = |e: u64, c: &str, v: &[u8]| Change::Set {
            entity: EntityId(e),
            component: c.to_string(),
            value: v.to_vec(),
        };
        let old_a = b"aaaa-running-aaaa".to_vec();
        let old_b = b"bbbbbbbb-1-bbbbbbbb".to_vec();
        let bases: HashMap<(u64, &str), (u64, Vec<u8>)> = [
            ((1, "A"), (3, old_a.clone())),
            ((2, "B"), (4, old_b.clone())),
        ]
        .into();
        let changes = vec![
            Change::Spawn {
                entity: EntityId(9),
            },
            set(1, "A", b"aaaa-stopped-aaaa"),
            set(2, "B", b"bbbbbbbb-2-bbbbbbbb"),
            set(9, "A", b"new"),
            Change::Remove {
                entity: EntityId(2),
                component: "A".into(),
            },
            Change::Despawn {
                entity: EntityId(5),
            },
        ];
        let deltas = [None, Some((3, 5, 5)), Some((4, 9, 9)), None, None, None];
        let bytes = encode_record_with_deltas(7, &changes, &deltas).unwrap();
        assert!(encoding::has_deltas(&bytes));
        let whole = resolve_record(
            &bytes,
            |e, c, base| {
                let (t, v) = &bases[&(e, c)];
                assert_eq!(*t, base);
                Ok::<_, DecodeError>(v.clone())
            },
            |e| e,
        )
        .unwrap();
        let want = decode_span_record(Tick(8), &whole, "A").unwrap();
        let mut resolved = Vec::new();
        let got = decode_span_delta_record(
            Tick(8),
            &bytes,
            "A",
            |e, d, body: &mut Vec<u8>| {
                resolved.push((e, d.base));
                let old = &bases[&(e, "A")].1;
                let v = encoding::delta::apply(old, d.prefix, d.suffix, d.middle)?;
                body.extend_from_slice(&v);
                Ok(())
            },
            |e| e,
        )
        .unwrap();
        assert_eq!(resolved, [(1, 3)]);
        assert_eq!(got.tick, want.tick);
        assert_eq!(got.changes.len(), want.changes.len());
        let value = |r: &SpanRecord, c: &ComponentChange<Span>| match c {
            ComponentChange::Set(e, s) => {
                let s = s.start as usize..(s.start + s.len) as usize;
                ComponentChange::Set(*e, r.body[s].to_vec())
            }
            ComponentChange::Spawn(e) => ComponentChange::Spawn(*e),
            ComponentChange::Remove(e) => ComponentChange::Remove(*e),
            ComponentChange::Despawn(e) => ComponentChange::Despawn(*e),
            ComponentChange::Other(e, k) => ComponentChange::Other(*e, *k),
        };
        let values = |r: &SpanRecord| r.changes.iter().map(|c| value(r, c)).collect::<Vec<_>>();
        assert_eq!(values(&got), values(&want));
        assert_eq!(
            values(&got)[1..4],
            [
                ComponentChange::Set(EntityId(1), b"aaaa-stopped-aaaa".to_vec()),
                ComponentChange::Other(EntityId(2), ChangeKind::Set),
                ComponentChange::Set(EntityId(9), b"new".to_vec()),
            ]
        );
        // A damaged record is the mapped error, not a panic.
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(
            decode_span_delta_record(Tick(8), cut, "A", |_, _, _| Ok(()), |e| e),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
