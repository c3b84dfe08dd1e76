//! The column layout's round trips, damage and sizes.

use super::*;
use crate::encoding::{ChangeV1, RecordV1};
use autoresearch_core::{EntityId, Run};
use proptest::prelude::*;

/// The postcard body value version 2 stores for these changes.
fn row_wise(at_ms: i64, changes: &[Change]) -> Vec<u8> {
    postcard::to_stdvec(&RecordV1 {
        at_ms,
        changes: changes.iter().cloned().map(ChangeV1::from).collect(),
    })
    .unwrap()
}

/// Runs shaped as `bench parity`'s ingest makes them.
fn runs(n: usize) -> Vec<Change> {
    let statuses = ["booting", "running", "stopped", "crashed"];
    let exps = ["kernel-tune", "sat-solver", "docs-fix"];
    let mut out = Vec::new();
    for i in 0..n {
        let exp = exps[i % 3];
        let id = format!(
            "{:016x}-{i:07}",
            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        );
        let run = Run {
            run_id: id.clone(),
            experiment_name: exp.into(),
            vm_name: format!("vm-{exp}-{i:07}"),
            status: statuses[i % 4].into(),
            harness: "opencode".into(),
            repo_url: format!("https://github.com/example/{exp}.git"),
            branch: format!("auto/{exp}/{}", i % 97),
            task: ["fix the loop", "add tests to the module", "port it"][i % 3].into(),
            started_at_ms: 1_767_225_600_000 + 37_000 * i as i64 + (i as i64 * 7919) % 1000,
            finished_at_ms: if i % 2 == 0 {
                0
            } else {
                1_767_225_600_000 + 37_000 * i as i64 + 60_000
            },
            agent_name: format!("{exp}-opencode"),
            workspace_path: format!("/var/lib/workspaces/{id}"),
            commit_hash: String::new(),
        };
        out.push(Change::Spawn {
            entity: EntityId(i as u64 + 1),
        });
        out.push(Change::Set {
            entity: EntityId(i as u64 + 1),
            component: "Run".into(),
            value: postcard::to_stdvec(&run).unwrap(),
        });
    }
    out
}

fn stored(at_ms: i64, changes: &[Change]) -> Vec<u8> {
    let bytes = encode_record(at_ms, changes).expect("laid out by column");
    assert_eq!(bytes[..2], [COLUMNS_VERSION, CODEC_COLUMNS]);
    bytes
}

#[test]
fn an_ingest_of_runs_round_trips_and_is_smaller_than_row_wise_zstd() {
    let changes = runs(3000);
    let bytes = stored(1_767_225_600_123, &changes);
    let body = row_wise(1_767_225_600_123, &changes);
    assert_eq!(decode_record(&bytes[2..]).unwrap(), body);
    let zstd = crate::encoding::value::zstd_compress(&body, ZSTD_LEVEL).unwrap();
    assert!(
        bytes.len() * 2 < zstd.len(),
        "{} bytes by column against {} row-wise",
        bytes.len(),
        zstd.len()
    );
}

#[test]
fn a_run_parses_as_the_run_shape() {
    // The shape is core's Run field for field: a change there shows
    // here (its values would still round-trip, stored whole).
    let Change::Set { value, .. } = &runs(1)[1] else {
        unreachable!()
    };
    let mut fields = Vec::new();
    assert!(parse(&RUN_SHAPE, value, &mut fields));
    assert_eq!(fields.len(), RUN_SHAPE.len());
}

#[test]
fn few_changes_stay_row_wise() {
    assert!(encode_record(1, &runs(COLUMNS_FROM / 2 - 1)).is_none());
}

#[test]
fn damaged_blocks_are_errors() {
    let changes = runs(COLUMNS_FROM);
    let bytes = stored(5, &changes);
    let payload = &bytes[2..];
    for cut in [0, 3, 7, payload.len() / 2, payload.len() - 1] {
        assert!(matches!(
            decode_record(&payload[..cut]),
            Err(DecodeError::Corrupt(_))
        ));
    }
    let mut claims = payload.to_vec();
    claims[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode_record(&claims), Err(DecodeError::Corrupt(r)) if r.contains("claims")));
}

/// A change of a small random record.
fn change() -> impl Strategy<Value = Change> {
    let text = proptest::collection::vec(
        prop_oneof![Just(b' '), Just(b'a'), Just(b'-'), any::<u8>()],
        0..12,
    );
    let run = (
        proptest::collection::vec(text.clone(), 11),
        any::<i64>(),
        prop_oneof![Just(0i64), any::<i64>()],
    )
        .prop_map(|(t, a, b)| {
            let mut v = Vec::new();
            for (i, s) in t.iter().enumerate() {
                if i == 8 {
                    put(&mut v, zigzag(a));
                    put(&mut v, zigzag(b));
                }
                put(&mut v, s.len() as u64);
                v.extend_from_slice(s);
            }
            v
        });
    let value = prop_oneof![run, proptest::collection::vec(any::<u8>(), 0..40)];
    let name = prop_oneof![Just("Run".to_string()), Just("Result".to_string())];
    let entity = prop_oneof![0u64..40, any::<u64>()].prop_map(EntityId);
    prop_oneof![
        entity.clone().prop_map(|entity| Change::Spawn { entity }),
        (entity.clone(), name.clone(), value).prop_map(|(entity, component, value)| {
            Change::Set {
                entity,
                component,
                value,
            }
        }),
        (entity.clone(), name).prop_map(|(entity, component)| Change::Remove { entity, component }),
        entity.prop_map(|entity| Change::Despawn { entity }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any record of enough changes rebuilds to its row-wise body.
    #[test]
    fn records_round_trip(
        at_ms in any::<i64>(),
        changes in proptest::collection::vec(change(), COLUMNS_FROM..COLUMNS_FROM + 200),
    ) {
        let bytes = stored(at_ms, &changes);
        prop_assert_eq!(decode_record(&bytes[2..]).unwrap(), row_wise(at_ms, &changes));
    }

    /// One component's `Set`s read without rebuilding the others are
    /// those of the whole record, in order; a component it does not
    /// hold has none.
    #[test]
    fn one_components_sets_equal_the_whole_records(
        changes in proptest::collection::vec(change(), COLUMNS_FROM..COLUMNS_FROM + 200),
    ) {
        let bytes = stored(7, &changes);
        let components = ["Run", "Result", "Outcome"];
        let mut each = Vec::new();
        sets_of_each(&bytes[2..], &components, |i, e, v| each.push((i, e, v.to_vec())))
            .unwrap();
        let mut one_by_one = Vec::new();
        for (i, component) in components.into_iter().enumerate() {
            let mut want = Vec::new();
            crate::encoding::record_sets(&bytes, |e, c, v| {
                if c == component {
                    want.push((e.0, v.to_vec()));
                }
            })
            .unwrap();
            let mut got = Vec::new();
            sets_of(&bytes[2..], component, |e, v| got.push((e, v.to_vec()))).unwrap();
            prop_assert_eq!(&got, &want);
            let expected = changes.iter().filter_map(|c| match c {
                Change::Set { entity, component: n, value } if n == component => {
                    Some((entity.0, value.clone()))
                }
                _ => None,
            });
            prop_assert_eq!(&got, &expected.collect::<Vec<_>>());
            one_by_one.extend(got.into_iter().map(|(e, v)| (i, e, v)));
        }
        // Several components from one decompressed block: the same.
        prop_assert_eq!(each, one_by_one);
    }

    /// Damaged blocks (recompressed, so that the streams themselves
    /// are damaged) give an error or some body, never a panic.
    #[test]
    fn damaged_streams_are_errors_not_panics(
        seed in 0usize..10_000,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let changes: Vec<Change> = runs(COLUMNS_FROM)
            .into_iter()
            .chain((0..seed % 7).map(|i| Change::Despawn { entity: EntityId(i as u64) }))
            .collect();
        let bytes = stored(seed as i64, &changes);
        let raw_len = u32::from_le_bytes(bytes[2..6].try_into().unwrap()) as usize;
        let mut block = Vec::new();
        let mut rest = &bytes[10..];
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let frame_len = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
            let column = &rest[8..8 + frame_len];
            block.extend(crate::encoding::value::zstd_decompress(column, len).unwrap());
            rest = &rest[8 + frame_len..];
        }
        for (at, to) in flips {
            let at = at % block.len();
            block[at] = to;
        }
        if let Some(c) = cut {
            block.truncate(c % block.len());
        }
        let frame = crate::encoding::value::zstd_compress(&block, 1).unwrap();
        let mut payload = Vec::new();
        payload.extend_from_slice(&(raw_len as u32).to_le_bytes());
        payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
        payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
        payload.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        payload.extend_from_slice(&frame);
        if let Ok(body) = decode_record(&payload) {
            prop_assert_eq!(body.len(), raw_len);
        }
        let mut longest = 0usize;
        if sets_of(&payload, "Run", |_, v| longest = longest.max(v.len())).is_ok() {
            prop_assert!(longest <= raw_len);
        }
    }

    /// Arbitrary bytes after the codec byte are an error or a body,
    /// never a panic.
    #[test]
    fn arbitrary_payloads_do_not_panic(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_record(&payload);
        let _ = sets_of(&payload, "Run", |_, _| {});
    }
}

/// [`write::encode_values`] as it was before values were parsed straight
/// into columns: rows parsed, then transposed. The reference the new
/// layout's bytes are checked against.
fn encode_values_by_rows(block: &mut Vec<u8>, name: &str, vals: &[&[u8]], cuts: &mut Vec<usize>) {
    let id = shape_for(name);
    let Some(shape) = shape(id) else {
        return write::encode_values(block, name, vals, cuts);
    };
    let w = shape.len();
    let mut rows: Vec<Field<'_>> = Vec::with_capacity(vals.len() * w);
    let mut kinds = Vec::with_capacity(vals.len());
    let mut others = Vec::new();
    for v in vals {
        if parse(shape, v, &mut rows) {
            kinds.push(1u8);
        } else {
            kinds.push(0);
            others.push(*v);
        }
    }
    block.push(id);
    section(block, &kinds);
    write::opaque(block, others.into_iter());
    cuts.push(block.len());
    let n = rows.len() / w;
    let mut cols = vec![Field::Int(0); rows.len()];
    for (i, f) in rows.iter().enumerate() {
        cols[(i % w) * n + i / w] = *f;
    }
    write::columns(block, &cols, shape, n, cuts);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Values parsed straight into columns give the bytes the rows
    /// transposed gave, whichever values do not parse and wherever.
    #[test]
    fn columns_parsed_in_place_equal_rows_transposed(
        picks in proptest::collection::vec((0usize..3_000, 0u8..4), 0..400),
    ) {
        let runs = runs(3_000);
        let good: Vec<&[u8]> = runs
            .iter()
            .filter_map(|c| match c {
                Change::Set { value, .. } => Some(value.as_slice()),
                _ => None,
            })
            .collect();
        let mut owned: Vec<Vec<u8>> = Vec::new();
        for (i, kind) in &picks {
            let mut v = good[*i].to_vec();
            match kind {
                // Not the Run shape: cut short, one byte more, empty.
                0 => v.truncate(v.len() / 2),
                1 => v.push(0),
                2 => v.clear(),
                _ => {}
            }
            owned.push(v);
        }
        let vals: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut ca, mut cb) = (Vec::new(), Vec::new());
        write::encode_values(&mut a, "Run", &vals, &mut ca);
        encode_values_by_rows(&mut b, "Run", &vals, &mut cb);
        prop_assert_eq!(a, b);
        prop_assert_eq!(ca, cb);
    }
}
