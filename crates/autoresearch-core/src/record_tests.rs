//! Tests of `record.rs`: the liveness check of a batch against a model.

use super::*;

/// The check of a batch against a plain model (a tree of each
/// entity's liveness, recomputed tick by tick): the same net changes
/// per tick, and the same first refusal, on random batches that spawn,
/// change and despawn entities alive or not at the head.
#[test]
fn the_liveness_check_equals_a_model_of_the_batch() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let kinds = [
        ChangeKind::Spawn,
        ChangeKind::Set,
        ChangeKind::Remove,
        ChangeKind::Despawn,
    ];
    for case in 0..300 {
        let head = |e: EntityId| -> Result<bool, StorageError> { Ok(e.0.is_multiple_of(3)) };
        let mut model: BTreeMap<EntityId, bool> = BTreeMap::new();
        let mut check = LivenessCheck::new(WorldId(1));
        for t in 1..=4u64 {
            // Mostly changes that apply (planned on a copy of the
            // model), now and then any.
            let mut plan = model.clone();
            let changes: Vec<(ChangeKind, EntityId)> = (0..next(40))
                .map(|_| {
                    let e = EntityId(next(12));
                    let alive = *plan.entry(e).or_insert_with(|| head(e).unwrap());
                    let kind = match (next(40), alive) {
                        (0, _) => kinds[next(4) as usize],
                        (_, false) => ChangeKind::Spawn,
                        (_, true) => kinds[1 + next(3) as usize],
                    };
                    if let Ok(after) = kind.apply_to(alive) {
                        plan.insert(e, after);
                    }
                    (kind, e)
                })
                .collect();
            // The model: the old tree of each entity's state before the tick.
            let mut before: BTreeMap<EntityId, bool> = BTreeMap::new();
            let mut refused = None;
            for (kind, e) in &changes {
                let alive = *model.entry(*e).or_insert_with(|| head(*e).unwrap());
                before.entry(*e).or_insert(alive);
                match kind.apply_to(alive) {
                    Ok(after) => {
                        model.insert(*e, after);
                    }
                    Err(_) => {
                        refused = Some((*e, *kind));
                        break;
                    }
                }
            }
            let got = check.check(Tick(t), changes.iter().copied(), head);
            match refused {
                Some((entity, change)) => {
                    match got {
                        Err(StorageError::NotApplicable {
                            attempted,
                            entity: e,
                            change: c,
                            ..
                        }) => assert_eq!((attempted, e, c), (Tick(t), entity, change)),
                        other => panic!("case {case} tick {t}: {other:?}"),
                    }
                    break;
                }
                None => {
                    let want: Vec<(EntityId, bool)> = before
                        .into_iter()
                        .filter(|(e, was)| model[e] != *was)
                        .map(|(e, _)| (e, model[&e]))
                        .collect();
                    assert_eq!(got.unwrap(), want, "case {case} tick {t}");
                }
            }
        }
    }
}

#[test]
fn spans_point_into_their_body_and_nowhere_else() {
    let mut body = Vec::new();
    let a = Span::push(&mut body, b"abc").unwrap();
    let b = Span::push(&mut body, b"").unwrap();
    let c = Span::push(&mut body, b"defg").unwrap();
    assert_eq!(
        (a.get(&body), b.get(&body), c.get(&body)),
        (Some(&b"abc"[..]), Some(&b""[..]), Some(&b"defg"[..]))
    );
    assert_eq!(Span::within(&body, &body[3..7]), Some(c));
    // A slice of another buffer, or a span past the end, is refused.
    let other = body.clone();
    assert_eq!(Span::within(&body, &other[3..7]), None);
    assert_eq!(Span::within(&body, &other[3..3]).map(|s| s.len), Some(0));
    assert_eq!(Span { start: 5, len: 3 }.get(&body), None);
    assert_eq!(
        Span {
            start: u32::MAX,
            len: u32::MAX
        }
        .get(&body),
        None
    );
}

#[test]
fn gathered_records_and_snapshots_give_back_what_they_were_made_of() {
    let record = ComponentRecord {
        tick: Tick(4),
        changes: vec![
            ComponentChange::Spawn(EntityId(1)),
            ComponentChange::Set(EntityId(1), vec![1, 2, 3]),
            ComponentChange::Other(EntityId(1), ChangeKind::Set),
            ComponentChange::Set(EntityId(2), vec![]),
            ComponentChange::Remove(EntityId(2)),
            ComponentChange::Despawn(EntityId(3)),
        ],
    };
    let spans = SpanRecord::gather(record.clone()).unwrap();
    assert_eq!(spans.body.as_slice(), &[1, 2, 3]);
    assert_eq!(spans.to_component_record(), Some(record));
    let snapshot = ComponentSnapshot {
        tick: Tick(9),
        entities: vec![(EntityId(1), Some(vec![7; 5])), (EntityId(4), None)],
    };
    let spans = SpanSnapshot::gather(snapshot.clone()).unwrap();
    assert_eq!(spans.to_component_snapshot(), Some(snapshot));
    let mut cut = spans.clone();
    cut.body = std::sync::Arc::new(vec![7; 4]);
    assert_eq!(cut.to_component_snapshot(), None);
}
