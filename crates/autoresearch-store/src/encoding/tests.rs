//! Round trips and wire shapes of the stored encodings (`encoding/mod.rs`).

use super::*;

#[test]
fn blob_has_the_wire_shape_of_a_byte_vector() {
    let v: Vec<u8> = (0..=255).collect();
    let a = postcard::to_stdvec(&v).unwrap();
    let b = postcard::to_stdvec(&Blob(v.clone())).unwrap();
    assert_eq!(a, b);
    let back: Blob = postcard::from_bytes(&a).unwrap();
    assert_eq!(back.0, v);
}

#[test]
fn record_round_trips_and_checks_its_version_byte() {
    let rec = TickRecord {
        tick: Tick(7),
        at_ms: 123,
        changes: vec![
            Change::Spawn {
                entity: EntityId(1),
            },
            Change::Set {
                entity: EntityId(1),
                component: "Run".into(),
                value: vec![1, 2, 3],
            },
            Change::Remove {
                entity: EntityId(1),
                component: "Run".into(),
            },
            Change::Despawn {
                entity: EntityId(1),
            },
        ],
    };
    let mut bytes = encode_record(rec.clone()).unwrap();
    assert_eq!(bytes[0], PACKED_VERSION);
    assert_eq!(decode_record(Tick(7), &bytes).unwrap(), rec);
    bytes[0] = VALUE_VERSION + 1;
    assert!(matches!(
        decode_record(Tick(7), &bytes),
        Err(DecodeError::Newer(v)) if v == VALUE_VERSION + 1
    ));
    bytes[0] = PACKED_VERSION;
    bytes.truncate(bytes.len() - 2);
    assert!(matches!(
        decode_record(Tick(7), &bytes),
        Err(DecodeError::Corrupt(_))
    ));
    assert!(matches!(
        decode_record(Tick(7), &[]),
        Err(DecodeError::Corrupt(_))
    ));
}

/// The borrowed encodings give the owned shapes' bytes: a whole
/// record (version 2) and one with deltas (version 3), over every kind
/// of change, values short and long (compressed).
#[test]
fn borrowed_encodings_give_the_owned_bytes() {
    for len in [3usize, 2_000] {
        let value: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
        let changes = vec![
            Change::Spawn {
                entity: EntityId(1),
            },
            Change::Set {
                entity: EntityId(1),
                component: "Run".into(),
                value: value.clone(),
            },
            Change::Set {
                entity: EntityId(2),
                component: "Run".into(),
                value: value.clone(),
            },
            Change::Remove {
                entity: EntityId(1),
                component: "Run".into(),
            },
            Change::Despawn {
                entity: EntityId(1),
            },
        ];
        let record = TickRecord {
            tick: Tick(4),
            at_ms: -9,
            changes: changes.clone(),
        };
        assert_eq!(
            encode_rows_borrowed(-9, &changes).unwrap(),
            encode_record_rows(record).unwrap()
        );
        let deltas = [None, None, Some((3, 1, 1)), None, None];
        let owned = RecordV2 {
            at_ms: -9,
            changes: vec![
                ChangeV2::Spawn(1),
                ChangeV2::Set(1, "Run".into(), Blob(value.clone())),
                ChangeV2::SetDelta(
                    2,
                    "Run".into(),
                    DeltaV1 {
                        base: 3,
                        prefix: 1,
                        suffix: 1,
                        middle: Blob(value[1..len - 1].to_vec()),
                    },
                ),
                ChangeV2::Remove(1, "Run".into()),
                ChangeV2::Despawn(1),
            ],
        };
        assert_eq!(
            encode_record_with_deltas(-9, &changes, &deltas).unwrap(),
            encode_versioned(DELTA_VERSION, 0, &owned).unwrap()
        );
    }
}

proptest::proptest! {
    /// A record with deltas, resolved against its bases, is the
    /// record: every value whole again, every other change as it was.
    #[test]
    fn a_record_with_deltas_resolves_to_the_whole_record(
        values in proptest::collection::vec(
            (proptest::collection::vec(0u8..3, 0..120), 0usize..120, proptest::collection::vec(0u8..3, 0..6)),
            1..30,
        ),
    ) {
        let mut changes = Vec::new();
        let mut deltas = Vec::new();
        let mut bases = std::collections::HashMap::new();
        for (i, (old, at, insert)) in values.iter().enumerate() {
            let e = i as u64;
            let at = (*at).min(old.len());
            let mut new = old[..at].to_vec();
            new.extend_from_slice(insert);
            new.extend_from_slice(&old[at..]);
            bases.insert(e, old.clone());
            changes.push(Change::Spawn { entity: EntityId(e + 1000) });
            deltas.push(None);
            deltas.push(delta::diff(old, &new).map(|(p, s, _)| (7 + e % 3, p, s)));
            changes.push(Change::Set {
                entity: EntityId(e),
                component: "Run".into(),
                value: new,
            });
        }
        let bytes = encode_record_with_deltas(5, &changes, &deltas).unwrap();
        proptest::prop_assert!(has_deltas(&bytes));
        let whole = resolve_record(
            &bytes,
            |e, c, base| {
                assert_eq!((c, base), ("Run", 7 + e % 3));
                Ok::<_, DecodeError>(bases[&e].clone())
            },
            |e| e,
        )
        .unwrap();
        let record = TickRecord { tick: Tick(9), at_ms: 5, changes };
        proptest::prop_assert_eq!(decode_record(Tick(9), &whole).unwrap(), record);
    }
}

/// A snapshot goes through the thread's scratch buffer: the same bytes
/// as the plain path, for every codec (raw, zstd, the large-value zstd,
/// LZ4 for a body zstd shrinks too far), whatever the buffer held before
/// (a large value, then a small one), and it decodes back.
#[test]
fn snapshot_through_the_scratch_buffer_is_encoded_as_without_it() {
    let snapshot = |runs: u64, value: &dyn Fn(u64) -> Vec<u8>| Snapshot {
        tick: Tick(9),
        next_entity: runs,
        entities: (0..runs)
            .map(|e| (EntityId(e), vec![("Run".to_string(), value(e))]))
            .collect(),
    };
    let varied = |e: u64| format!("run-{e:06}-{}", e * 7919 % 1000).into_bytes();
    let cases = [
        snapshot(0, &varied),
        snapshot(3, &varied),
        snapshot(2_000, &varied),
        snapshot(40_000, &varied),
        snapshot(1_000, &|_| vec![0u8; 4_000]),
        snapshot(5, &varied),
    ];
    let mut codecs = std::collections::BTreeSet::new();
    for s in cases {
        let plain = encode_packed_sized(
            0,
            &SnapshotV1 {
                next_entity: s.next_entity,
                entities: s
                    .entities
                    .iter()
                    .map(|(e, comps)| {
                        let comps = comps.iter().map(|(n, v)| (n.clone(), Blob(v.clone())));
                        (e.0, comps.collect())
                    })
                    .collect(),
            },
        )
        .unwrap();
        let scratch = encode_snapshot(s.clone()).unwrap();
        assert_eq!(scratch, plain, "{} entities", s.entities.len());
        codecs.insert(scratch[1]);
        assert_eq!(decode_snapshot(Tick(9), &scratch).unwrap(), s);
    }
    assert_eq!(codecs.len(), 3, "raw, zstd and LZ4 all met: {codecs:?}");
}
