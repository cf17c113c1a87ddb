//! Property tests: completeness against exhaustive search on small inventories, hard
//! constraints never violated, and repair plans that touch only affected members.
//!
//! Case counts are kept small for debug builds; set `PLACEMENT_PROPTEST_CASES` (or
//! proptest's own `PROPTEST_CASES`, read when the first is not set) for more.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use placement::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(400)))]

    /// On inventories of at most 12 drives the engine finds a placement if and only if an
    /// exhaustive search does, and what it finds satisfies every hard constraint.
    #[test]
    fn engine_complete_on_small_inventories(seed in any::<u64>()) {
        let (mut g, spec, engine, _) =
            setup(seed, (1, 3), (1, 2), (1, 12), true);
        let oracle = Oracle::new(&spec);
        for _ in 0..4 {
            let req = g.request(&spec, 4, true);
            let exists = oracle.exists(&req);
            match engine.plan(&req) {
                Ok(p) => {
                    let members: Vec<&DriveSpec> = p.members.iter().map(|m| oracle.drive(m.drive.as_str())).collect();
                    let pinned: Vec<bool> = p.members.iter().map(|m| m.pinned).collect();
                    prop_assert!(exists, "engine placed {:?} but exhaustive search found nothing for {:?}", p, req);
                    if let Err(v) = oracle.check_hard(&req, &members, &pinned) {
                        prop_assert!(false, "hard constraint violated: {v}; request {req:?}; placement {p:?}");
                    }
                    prop_assert_eq!(p.soft_violations.is_empty(), oracle.soft_ok(&req, &members),
                        "soft violations misreported: {:?}", p.soft_violations);
                    // Each member's transport is the fastest the drive, the request and the
                    // attach server share; the attach server is among those reaching the volume.
                    let server = req.attach_server.as_ref().map(|s| spec.servers.iter().find(|x| x.id == *s).unwrap());
                    for (m, d) in p.members.iter().zip(&members) {
                        let common = d.transports
                            & req.transports.unwrap_or(Transports::all())
                            & server.and_then(|s| s.transports).unwrap_or(Transports::all());
                        let fastest = [Transports::ROCE, Transports::NVME_TCP, Transports::ISCSI, Transports::NBD]
                            .into_iter()
                            .find(|&t| common.contains(t));
                        prop_assert_eq!(m.transport, fastest);
                    }
                    // (`plan` does not check pinned drives, so only unpinned placements count.)
                    if let Some(s) = server.filter(|_| req.pinned.is_empty()) {
                        let reach = engine.servers_reaching(&p.drives(), req.transports).unwrap();
                        prop_assert!(reach.contains(&s.id), "{:?} does not reach {:?}", s.id, p);
                    }
                }
                Err(PlacementError::Unsatisfiable(e)) => {
                    prop_assert!(!exists, "engine said unsatisfiable ({e}) but a placement exists for {req:?}");
                }
                Err(other) => prop_assert!(false, "unexpected error {other} for {req:?}"),
            }
        }
    }

    /// Requests of several redundancy groups (where the search remembers failed states at
    /// group boundaries and cuts repeated ones) are placed if and only if an exhaustive
    /// search finds a placement, with a small budget and with the default one.
    #[test]
    fn multi_group_search_is_complete(seed in any::<u64>()) {
        let (mut g, spec, mut engine, _) =
            setup(seed, (2, 4), (1, 3), (4, 10), true);
        let oracle = Oracle::new(&spec);
        for round in 0..3 {
            let mut req = g.request(&spec, 6, true);
            req.shape = match g.rng_range(0, 2) {
                0 => Shape::Raid10 { stripes: g.rng_range(2, 3) as u32, mirrors: 2 },
                1 => Shape::Raid10 { stripes: 2, mirrors: 3 },
                _ => Shape::Parity { k: 1, m: 1, sets: g.rng_range(2, 3) as u32 },
            };
            req.pinned.retain(|p| p.member < req.shape.member_count());
            // A soft spreading over the (at most three) uplinks that 4–6 members can rarely
            // honour sends the request past the window to the complete search, where groups
            // are ordered and restarted.
            if g.rng_range(0, 1) == 1 {
                req.bandwidth_spread.push(Spread {
                    kind: "uplink".into(),
                    mode: Mode::Soft,
                    max_per_domain: 1,
                    per_group: false,
                });
            }
            if round == 2 {
                engine.set_search_budget(2_000);
            }
            let exists = oracle.exists(&req);
            match engine.plan(&req) {
                Ok(p) => {
                    prop_assert!(exists, "engine placed {:?} but exhaustive search found nothing for {:?}", p, req);
                }
                Err(PlacementError::Unsatisfiable(e)) => {
                    prop_assert!(!exists, "engine said unsatisfiable ({e}) but a placement exists for {req:?}");
                }
                Err(PlacementError::SearchExhausted { explanation, .. }) => {
                    prop_assert!(round == 2 && !explanation.proven(), "gave up although {explanation} for {req:?}");
                }
                Err(other) => prop_assert!(false, "unexpected error {other} for {req:?}"),
            }
        }
    }

    /// The bounds are sound and come before the search: with a one-step search budget, every
    /// "unsatisfiable" answer is right (no exhaustive placement exists), and "search gave up"
    /// is only answered when no bound proves the request impossible.
    #[test]
    fn refusals_by_bounds_are_sound(seed in any::<u64>()) {
        let (mut g, spec, mut engine, _) =
            setup(seed, (1, 3), (1, 2), (1, 12), true);
        engine.set_search_budget(1);
        let oracle = Oracle::new(&spec);
        for _ in 0..4 {
            let req = g.request(&spec, 6, true);
            match engine.plan(&req) {
                Ok(_) => {}
                Err(PlacementError::Unsatisfiable(e)) => {
                    prop_assert!(!oracle.exists(&req), "refused ({e}) but a placement exists for {req:?}");
                    prop_assert!(!e.blocked.is_empty());
                }
                Err(PlacementError::SearchExhausted { explanation, .. }) => {
                    prop_assert!(!explanation.proven(), "gave up although {explanation}");
                }
                Err(other) => prop_assert!(false, "unexpected error {other} for {req:?}"),
            }
        }
    }

    /// The scarce-domain bound is sound: on inventories where one uplink's headroom and one
    /// group's quota leave room for few members and requests separate by rack (and power
    /// supply), every refusal with a one-step search budget is confirmed by the exhaustive
    /// oracle. (`scarce_bound_fires_and_is_sound` checks that such proofs do occur.)
    #[test]
    fn scarce_refusals_are_sound(seed in any::<u64>()) {
        if let Err(e) = scarce_case(seed) {
            prop_assert!(false, "{}", e);
        }
    }

    /// `max_placeable` equals the largest size for which the exhaustive oracle finds a
    /// placement (found by bisection over sizes: fitting is monotone in the size), for the
    /// whole inventory and for one rack.
    #[test]
    fn max_placeable_matches_bisection_over_sizes(seed in any::<u64>()) {
        let (mut g, spec, engine, _) =
            setup(seed, (1, 3), (1, 2), (1, 10), true);
        let oracle = Oracle::new(&spec);
        let max_free = spec.drives.iter().map(|d| d.free.0).max().unwrap_or(0);
        for _ in 0..3 {
            // Without pins: `max_placeable` charges pinned members like `place` does, while the
            // oracle judges pins as `plan` does (unchecked).
            let mut req = g.request(&spec, 4, false);
            let segment = (req.requisite.is_empty() && g.rng_range(0, 1) == 1).then(|| {
                let mut s = Segment::new();
                s.insert("rack".to_string(), "r0".to_string());
                s
            });
            let got = engine.max_placeable(&req, segment.as_ref()).unwrap();
            if let Some(s) = &segment {
                req.requisite = vec![s.clone()];
            }
            let fits = |size: u64| {
                let mut r = req.clone();
                r.size = Bytes(size);
                oracle.exists(&r)
            };
            let want = if max_free == 0 || !fits(1) {
                None
            } else {
                let (mut lo, mut hi) = (1, max_free);
                while lo < hi {
                    let mid = lo + (hi - lo).div_ceil(2);
                    if fits(mid) { lo = mid } else { hi = mid - 1 }
                }
                Some(Bytes(lo))
            };
            prop_assert_eq!(got, want, "request {:?} segment {:?}", req, segment);
        }
    }

    /// Setting health on a live engine (a drive, a JBOD or a rack) returns exactly the volumes
    /// with a member there, and leaves an engine that plans like one rebuilt from its snapshot.
    #[test]
    fn health_changes_equal_a_rebuild(seed in any::<u64>()) {
        let (mut g, spec, mut engine, [racks, jbods, drives]) =
            setup(seed, (2, 4), (1, 3), (8, 40), false);
        for v in 0..10 {
            let req = g.request(&spec, 4, false);
            let _ = engine.place(vid(&format!("v{v}")), &req);
        }
        for _ in 0..3 {
            let target = match g.rng_range(0, 2) {
                0 => format!("d{}", g.rng_range(0, drives - 1)),
                1 => format!("r{}j{}", g.rng_range(0, racks - 1), g.rng_range(0, jbods - 1)),
                _ => format!("r{}", g.rng_range(0, racks - 1)),
            };
            let health = [Health::Healthy, Health::Degraded, Health::Draining, Health::Failed][g.rng_range(0, 3)];
            let in_target: HashSet<DriveId> = engine.inventory().drives_in(&target).unwrap().into_iter().collect();
            let mut want: Vec<VolumeId> = engine
                .volumes()
                .filter(|v| v.members.iter().any(|m| in_target.contains(m)))
                .map(|v| v.id.clone())
                .collect();
            want.sort();
            prop_assert_eq!(engine.set_drive_health(&target, health).unwrap(), want);
            for d in &in_target {
                prop_assert_eq!(engine.inventory().drive(d).unwrap().health, health);
            }
        }
        let rebuilt = Engine::new(engine.snapshot(), seed).unwrap();
        let (a, b) = (rebuilt.snapshot(), engine.snapshot());
        prop_assert_eq!(a.spec(), b.spec());
        for _ in 0..6 {
            let req = g.request(&spec, 4, true);
            prop_assert_eq!(engine.plan(&req), rebuilt.plan(&req));
        }
        prop_assert!(engine.set_drive_health("no-such-drive", Health::Failed).is_err());
    }

    /// Any sequence of live changes (drives, failure domains, bandwidth domains and storage
    /// groups added and removed, health set, volumes placed and removed) leaves an engine that
    /// saves, plans, explains, sizes and places exactly like one rebuilt from its snapshot; a
    /// refused change leaves the state and the version unchanged, and a removal is refused
    /// exactly when something still holds or names the target (when the snapshot without it
    /// would not build an engine). Drives carry a few attribute names and values and
    /// bandwidth domains of a few kinds, so that removals take and move first appearances
    /// (which number attributes and kinds); requests separate by those attributes and spread
    /// over those kinds, some that do not exist (whose errors list the names in that order).
    #[test]
    fn live_changes_equal_a_rebuild(seed in any::<u64>()) {
        let (mut g, _, mut engine, _) = setup(seed, (1, 3), (1, 3), (6, 24), true);
        let mut fresh = 0;
        for step in 0..24 {
            fresh += 1;
            let spec = engine.inventory().spec().clone();
            let before = engine.snapshot();
            let version = engine.version();
            // What the engine answers (placements or explained refusals) before the change.
            let probe = live_request(&mut g, &spec, true);
            let answer = (engine.plan(&probe), engine.max_placeable(&probe, None));
            let pick = |g: &mut Gen, n: usize| g.rng_range(0, n.max(1) - 1);
            // For a removal: the snapshot without the target (the last entry in its place).
            let mut without: Option<InventorySpec> = None;
            let result = match g.rng_range(0, 10) {
                0 | 1 => {
                    // Mostly JBODs, sometimes any domain (a rack, or one at a level added live).
                    let jbods: Vec<&DomainSpec> = spec.domains.iter().filter(|d| d.level == "jbod" || g.rng_range(0, 3) == 0).collect();
                    let capacity = g.rng_range(10, 100) as u64;
                    let drive = DriveSpec {
                        id: did(&format!("n{fresh}")),
                        kind: [DriveKind::Hdd, DriveKind::Ssd, DriveKind::Nvme][g.rng_range(0, 2)],
                        capacity: Bytes(capacity),
                        free: Bytes(capacity - g.rng_range(0, 5) as u64),
                        rpm: 7200,
                        tags: if g.rng_range(0, 1) == 0 { vec!["enc".into()] } else { vec![] },
                        transports: Transports::all(),
                        health: Health::Healthy,
                        domain: (!jbods.is_empty() && g.rng_range(0, 9) > 0)
                            .then(|| jbods[pick(&mut g, jbods.len())].id.clone()),
                        group: spec.storage_groups.get(g.rng_range(0, 3)).map(|x| x.id.clone()),
                        // At most one per kind; sometimes one of a kind added live.
                        bandwidth_domains: {
                            let mut v: Vec<&BwDomainSpec> = Vec::new();
                            for _ in 0..g.rng_range(0, 2) {
                                if let Some(b) = spec.bandwidth_domains.get(pick(&mut g, spec.bandwidth_domains.len()))
                                    && v.iter().all(|x| x.kind != b.kind)
                                {
                                    v.push(b);
                                }
                            }
                            v.into_iter().map(|b| b.id.clone()).collect()
                        },
                        // Values shared between names; `pdu` and `fan` only on drives added
                        // live, so removals often take or move their first appearances.
                        attributes: {
                            let mut m = std::collections::BTreeMap::new();
                            for a in ATTRS {
                                if g.rng_range(0, 2) == 0 {
                                    m.insert(a.to_string(), ["a", "b", "z"][g.rng_range(0, 2)].to_string());
                                }
                            }
                            m
                        },
                    };
                    engine.add_drive(drive).map(|_| ())
                }
                2 => match spec.drives.get(pick(&mut g, spec.drives.len())) {
                    Some(d) => {
                        let mut s = before.spec().clone();
                        s.drives.retain(|x| x.id != d.id);
                        without = Some(s);
                        let held = engine.volumes().any(|v| v.members.contains(&d.id));
                        let r = engine.remove_drive(&d.id);
                        if held {
                            prop_assert!(matches!(r, Err(PlacementError::InUse { .. })), "{:?}", r);
                        }
                        r.map(|_| ())
                    }
                    None => Ok(()),
                },
                3 => {
                    let racks: Vec<&DomainSpec> = spec.domains.iter().filter(|d| d.level == "rack").collect();
                    let (level, parent) = match g.rng_range(0, 3) {
                        _ if racks.is_empty() => ("rack", None),
                        0 => ("rack", None),
                        1 => ("jbod", Some(racks[pick(&mut g, racks.len())].id.clone())),
                        // A level the inventory may not have yet, under any domain.
                        _ => match spec.domains.get(pick(&mut g, spec.domains.len())) {
                            Some(p) if p.level != "shelf" => ("shelf", Some(p.id.clone())),
                            _ => ("zone", None),
                        },
                    };
                    engine.add_domain(DomainSpec { id: dom(&format!("x{fresh}")), level: level.into(), parent }).map(|_| ())
                }
                4 => match spec.domains.get(pick(&mut g, spec.domains.len())) {
                    Some(x) => {
                        let mut s = before.spec().clone();
                        s.domains.retain(|y| y.id != x.id);
                        without = Some(s);
                        let holds = engine.inventory().drives_in(x.id.as_str()).is_some_and(|d| !d.is_empty())
                            || spec.domains.iter().any(|c| c.parent.as_ref() == Some(&x.id));
                        let r = engine.remove_domain(&x.id);
                        if holds {
                            prop_assert!(matches!(r, Err(PlacementError::InUse { .. })), "{:?}", r);
                        }
                        r.map(|_| ())
                    }
                    None => Ok(()),
                },
                5 => engine
                    .add_bandwidth_domain(BwDomainSpec {
                        id: BwDomainId::new(format!("b{fresh}")).unwrap(),
                        kind: ["uplink", "port", "switch"][g.rng_range(0, 2)].into(),
                        capacity: Bytes(g.rng_range(100, 1000) as u64),
                        load: Bytes(0),
                    })
                    .map(|_| ()),
                // Often the newest, which no drive lists yet: its kind may go or move.
                6 => match spec.bandwidth_domains.get(match g.rng_range(0, 1) {
                    0 => spec.bandwidth_domains.len().saturating_sub(1),
                    _ => pick(&mut g, spec.bandwidth_domains.len()),
                }) {
                    Some(b) => {
                        let mut s = before.spec().clone();
                        s.bandwidth_domains.retain(|x| x.id != b.id);
                        without = Some(s);
                        engine.remove_bandwidth_domain(&b.id).map(|_| ())
                    }
                    None => Ok(()),
                },
                7 => {
                    if g.rng_range(0, 1) == 0 {
                        engine
                            .add_storage_group(GroupSpec { id: GroupId::new(format!("g{fresh}")).unwrap(), quota: Some(Bytes(50)), used: Bytes(0) })
                            .map(|_| ())
                    } else {
                        match spec.storage_groups.get(pick(&mut g, spec.storage_groups.len())) {
                            Some(x) => engine.remove_storage_group(&x.id).map(|_| ()),
                            None => Ok(()),
                        }
                    }
                }
                8 => {
                    let req = live_request(&mut g, &spec, false);
                    let _ = engine.place(vid(&format!("v{step}")), &req);
                    Ok(())
                }
                _ => {
                    let ids: Vec<VolumeId> = engine.volumes().map(|v| v.id.clone()).collect();
                    if let Some(v) = ids.get(pick(&mut g, ids.len())) {
                        engine.remove(v).unwrap();
                    }
                    Ok(())
                }
            };
            if let Some(s) = without {
                // (Which entry takes the removed one's place does not change whether it builds.)
                let builds = Inventory::from_spec(s).ok().and_then(|inv| Engine::new(inv, seed).ok()).is_some();
                prop_assert_eq!(builds, result.is_ok(), "removal refused or accepted wrongly: {:?}", result);
            }
            if result.is_err() {
                prop_assert_eq!(engine.snapshot().spec().clone(), before.spec().clone(), "a refused change changed the state: {:?}", result);
                prop_assert_eq!(engine.version(), version);
                prop_assert_eq!((engine.plan(&probe), engine.max_placeable(&probe, None)), answer, "a refused change changed an answer: {:?}", result);
            }
        }
        // The same names again are refused as duplicates, and change nothing.
        let before = engine.snapshot();
        if let Some(x) = before.spec().domains.first().cloned() {
            prop_assert!(matches!(engine.add_domain(x), Err(PlacementError::InvalidChange(_))));
        }
        prop_assert!(engine.remove_drive(&did("no-such-drive")).is_err());
        prop_assert_eq!(engine.snapshot().spec().clone(), before.spec().clone());
        let mut rebuilt = Engine::new(engine.snapshot(), seed).unwrap();
        prop_assert_eq!(rebuilt.snapshot().spec().clone(), engine.snapshot().spec().clone());
        let spec = engine.inventory().spec().clone();
        for i in 0..8 {
            let req = live_request(&mut g, &spec, true);
            prop_assert_eq!(engine.plan(&req), rebuilt.plan(&req));
            prop_assert_eq!(engine.max_placeable(&req, None), rebuilt.max_placeable(&req, None));
            let id = vid(&format!("after{i}"));
            prop_assert_eq!(engine.place(id.clone(), &req), rebuilt.place(id, &req));
        }
        prop_assert_eq!(rebuilt.snapshot().spec().clone(), engine.snapshot().spec().clone());
    }

    /// A placement planned by another controller is adopted exactly when the version matches
    /// (and leaves the state `place` would have left); with a stale version, or members that
    /// break a hard constraint, nothing changes; the adopted engine plans like one rebuilt from
    /// its snapshot.
    #[test]
    fn adopt_commits_exactly_or_changes_nothing(seed in any::<u64>()) {
        let (mut g, spec, mut engine, _) =
            setup(seed, (2, 4), (1, 3), (6, 30), true);
        for v in 0..8 {
            let req = g.request(&spec, 4, false);
            let version = engine.version();
            let mut other = engine.clone();
            let planned = other.place(vid(&format!("v{v}")), &req);
            let Ok(p) = planned else { continue };
            let volume = VolumeSpec { id: vid(&format!("v{v}")), request: req.clone().into(), members: p.drives() };
            // A stale version changes nothing.
            let before = engine.snapshot();
            let stale = matches!(engine.adopt(volume.clone(), version + 1), Err(PlacementError::StaleVersion { .. }));
            prop_assert!(stale, "a stale version was not refused");
            prop_assert_eq!(engine.snapshot().spec(), before.spec());
            // Members reversed across groups may break separation: either adopted exactly or
            // refused with nothing changed.
            let mut shuffled = volume.clone();
            shuffled.id = vid(&format!("w{v}"));
            shuffled.members.reverse();
            let mut trial = engine.clone();
            if trial.adopt(shuffled.clone(), version).is_err() {
                prop_assert_eq!(trial.snapshot().spec(), before.spec());
            }
            let next = engine.adopt(volume, version).unwrap();
            prop_assert_ne!(next, version);
            prop_assert_eq!(engine.snapshot().spec().clone(), other.snapshot().spec().clone());
        }
        let rebuilt = Engine::new(engine.snapshot(), seed).unwrap();
        for _ in 0..4 {
            let req = g.request(&spec, 4, true);
            prop_assert_eq!(engine.plan(&req), rebuilt.plan(&req));
        }
    }

    /// A rebalance plan moves each member at most once, off a drive onto a less utilized one,
    /// changes nothing until applied, and keeps every moved volume's hard constraints.
    #[test]
    fn rebalance_keeps_hard_constraints(seed in any::<u64>()) {
        let (mut g, spec, mut engine, _) =
            setup(seed, (2, 4), (1, 3), (8, 40), false);
        for v in 0..15 {
            let req = g.request(&spec, 4, false);
            let _ = engine.place(vid(&format!("v{v}")), &req);
        }
        let before = engine.snapshot();
        let plan = engine.plan_rebalance(g.rng_range(0, 6));
        let now = engine.snapshot();
        prop_assert_eq!(now.spec(), before.spec());
        let mut seen = HashSet::new();
        for m in &plan.moves {
            prop_assert!(seen.insert((m.volume.clone(), m.member)), "moved twice");
        }
        engine.apply_plan(&plan).unwrap();
        let after = engine.snapshot().spec();
        let oracle = Oracle::new(&after);
        for v in engine.volumes() {
            let moved: HashSet<usize> = plan.moves.iter().filter(|m| m.volume == v.id).map(|m| m.member).collect();
            if moved.is_empty() {
                continue;
            }
            let members: Vec<&DriveSpec> = v.members.iter().map(|d| oracle.drive(d.as_str())).collect();
            let pinned: Vec<bool> = (0..members.len()).map(|m| !moved.contains(&m)).collect();
            // Space, bandwidth and quota were charged move by move; judge the domain rules.
            let mut req = Request::clone(&v.request);
            req.size = Bytes(0);
            req.bandwidth = Bytes(0);
            let verdict = oracle.check_hard(&req, &members, &pinned);
            let verdict = match verdict {
                Err(e) if e.contains("quota") => Ok(()),
                other => other,
            };
            prop_assert!(verdict.is_ok(), "rebalanced volume {} breaks a hard constraint: {:?}", v.id, verdict);
        }
    }

    /// Over larger random inventories and sequences of committed placements, every placement
    /// honours the hard constraints against the state it was made in.
    #[test]
    fn hard_constraints_never_violated(seed in any::<u64>()) {
        let (mut g, _, mut engine, _) =
            setup(seed, (2, 6), (1, 4), (10, 120), true);
        for v in 0..12 {
            let before = engine.inventory().spec().clone();
            let oracle = Oracle::new(&before);
            let req = g.request(&before, 8, false);
            match engine.place(vid(&format!("v{v}")), &req) {
                Ok(p) => {
                    let members: Vec<&DriveSpec> = p.members.iter().map(|m| oracle.drive(m.drive.as_str())).collect();
                    let pinned = vec![false; members.len()];
                    if let Err(e) = oracle.check_hard(&req, &members, &pinned) {
                        prop_assert!(false, "hard constraint violated: {e}; request {req:?}");
                    }
                    prop_assert_eq!(p.soft_violations.is_empty(), oracle.soft_ok(&req, &members));
                    // Accounting: each member's drive lost exactly `size` bytes.
                    for m in &members {
                        let now = engine.inventory().drive(&m.id).unwrap();
                        prop_assert_eq!(now.free.0 + req.size.0, m.free.0);
                    }
                }
                Err(PlacementError::Unsatisfiable(_)) | Err(PlacementError::SearchExhausted { .. }) => {
                    // A failed call changes nothing.
                    prop_assert_eq!(&engine.inventory().spec(), &before);
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }

    /// Evacuating a drive, JBOD or rack moves exactly the members that were on it, each to a
    /// drive outside it, keeps every other member in place, honours the hard constraints, and
    /// leaves the engine unchanged until the plan is applied.
    #[test]
    fn repair_plans_touch_only_affected_members(seed in any::<u64>()) {
        let (mut g, _, mut engine, [racks, jbods, drives]) =
            setup(seed, (3, 5), (2, 3), (20, 60), false);
        for v in 0..15 {
            let snapshot = engine.inventory().spec().clone();
            let req = g.request(&snapshot, 6, false);
            let _ = engine.place(vid(&format!("v{v}")), &req);
        }
        let target = match g.rng_range(0, 2) {
            0 => format!("d{}", g.rng_range(0, drives - 1)),
            1 => format!("r{}j{}", g.rng_range(0, racks - 1), g.rng_range(0, jbods - 1)),
            _ => format!("r{}", g.rng_range(0, racks - 1)),
        };
        let before_state = engine.inventory().spec().clone();
        let before: HashMap<VolumeId, VolumeSpec> = engine.volumes().map(|v| (v.id.clone(), v.clone())).collect();
        let plan = if seed % 2 == 0 { engine.plan_evacuation(&target) } else { engine.plan_drain(&target) }.unwrap();
        prop_assert_eq!(&engine.inventory().spec(), &before_state, "planning changed the state");
        let in_target: HashSet<DriveId> = plan.drives.iter().cloned().collect();
        // Exactly the affected members appear, once each.
        let mut expected: HashSet<(VolumeId, usize)> = HashSet::new();
        for v in before.values() {
            for (m, d) in v.members.iter().enumerate() {
                if in_target.contains(d) {
                    expected.insert((v.id.clone(), m));
                }
            }
        }
        let mut seen: HashSet<(VolumeId, usize)> = HashSet::new();
        for mv in &plan.moves {
            prop_assert!(in_target.contains(&mv.from), "move from outside the target: {mv:?}");
            prop_assert!(!in_target.contains(&mv.to), "move into the target: {mv:?}");
            prop_assert_eq!(&before[&mv.volume].members[mv.member], &mv.from);
            prop_assert!(seen.insert((mv.volume.clone(), mv.member)), "member moved twice");
        }
        for u in &plan.unplaceable {
            for &m in &u.members {
                prop_assert!(seen.insert((u.volume.clone(), m)), "member listed twice");
            }
        }
        prop_assert_eq!(&seen, &expected);
        // Apply, then check every re-placed volume against its hard constraints with the
        // surviving members pinned.
        engine.apply_plan(&plan).unwrap();
        let mut state = before_state.clone();
        for d in &mut state.drives {
            if in_target.contains(&d.id) {
                d.health = Health::Failed;
            }
        }
        let oracle = Oracle::new(&state);
        let moved: HashSet<&VolumeId> = plan.moves.iter().map(|m| &m.volume).collect();
        for v in engine.volumes() {
            let old = &before[&v.id];
            let moved_members: HashSet<usize> = plan.moves.iter().filter(|m| m.volume == v.id).map(|m| m.member).collect();
            for (m, d) in v.members.iter().enumerate() {
                if !moved_members.contains(&m) {
                    prop_assert_eq!(d, &old.members[m], "an unaffected member moved");
                }
            }
            if moved.contains(&v.id) {
                let members: Vec<&DriveSpec> = v.members.iter().map(|d| oracle.drive(d.as_str())).collect();
                let pinned: Vec<bool> = (0..members.len()).map(|m| !moved_members.contains(&m)).collect();
                let mut req = Request::clone(&v.request);
                req.exclude_drives.extend(in_target.iter().cloned());
                // Capacity, bandwidth and quota were charged move by move during planning and
                // are checked by the engine's accounting; judge the domain rules here.
                req.size = Bytes(1);
                req.bandwidth = Bytes(0);
                let verdict = oracle.check_hard(&req, &members, &pinned);
                let verdict = match verdict {
                    Err(e) if e.contains("quota") => Ok(()),
                    other => other,
                };
                prop_assert!(verdict.is_ok(), "repaired volume {} breaks a hard constraint: {:?}", v.id, verdict);
            }
        }
    }
}

trait RangeExt {
    fn rng_range(&mut self, lo: usize, hi: usize) -> usize;
}

impl RangeExt for Gen {
    fn rng_range(&mut self, lo: usize, hi: usize) -> usize {
        use rand::Rng;
        self.rng.random_range(lo..=hi)
    }
}

/// A random inventory (racks, JBODs per rack and drives drawn from the inclusive ranges) and an
/// engine over it, seeded by `seed`: the generator to draw requests from, the spec, the engine
/// and the drawn `[racks, jbods, drives]`.
/// The attribute names drives added live carry (the generated inventory has `psu` only).
const ATTRS: [&str; 3] = ["psu", "pdu", "fan"];

/// A random request that may also separate by the attributes drives added live carry and
/// spread over the bandwidth kinds added live, or name ones that do not exist (then compiling
/// fails with an error that lists the attributes or kinds in their numbered order).
fn live_request(g: &mut Gen, spec: &InventorySpec, allow_pin: bool) -> Request {
    let mut req = g.request(spec, 4, allow_pin);
    if g.rng_range(0, 2) == 0 {
        let a = ["pdu", "fan", "psu", "no-such-attribute"][g.rng_range(0, 3)];
        let mode = [Mode::Hard, Mode::Soft][g.rng_range(0, 1)];
        req.separation.push(Separation::attribute(a, mode));
    }
    if g.rng_range(0, 3) == 0 {
        req.bandwidth_spread.push(Spread {
            kind: ["port", "switch", "uplink", "no-such-kind"][g.rng_range(0, 3)].into(),
            mode: [Mode::Hard, Mode::Soft][g.rng_range(0, 1)],
            max_per_domain: g.rng_range(1, 2) as u32,
            per_group: g.rng_range(0, 1) == 1,
        });
    }
    req
}

fn setup(
    seed: u64,
    racks: (usize, usize),
    jbods: (usize, usize),
    drives: (usize, usize),
    full_random: bool,
) -> (Gen, InventorySpec, Engine, [usize; 3]) {
    let mut g = Gen::new(seed);
    let racks = g.rng_range(racks.0, racks.1);
    let jbods = g.rng_range(jbods.0, jbods.1);
    let drives = g.rng_range(drives.0, drives.1);
    let spec = g.inventory(racks, jbods, drives, full_random);
    let engine = Engine::new(Inventory::from_spec(spec.clone()).unwrap(), seed).unwrap();
    (g, spec, engine, [racks, jbods, drives])
}

/// One case of the scarce-domain property: a small inventory whose uplinks and quota group have
/// room for 1–2 members of the request, and a mirror or parity request with hard rack (and
/// sometimes power-supply) separation, a bandwidth demand and a size; planned with a one-step
/// search budget. Returns whether the refusal was proven by [`Blocker::Scarce`], or a message
/// when a refusal is wrong.
fn scarce_case(seed: u64) -> Result<bool, String> {
    use rand::Rng;
    let mut g = Gen::new(seed);
    let racks = g.rng_range(4, 6);
    let drives = g.rng_range(7, 12);
    let mut spec = g.inventory(racks, 1, drives, false);
    let size = g.rng.random_range(1..=10u64);
    let demand = g.rng.random_range(10..=100u64);
    for b in &mut spec.bandwidth_domains {
        b.capacity =
            Bytes(b.load.0 + demand * g.rng.random_range(1..=2u64) + g.rng.random_range(0..demand));
    }
    // One uplink and the quota group hold most drives, so that both are scarce together.
    let up0 = spec.bandwidth_domains[0].id.clone();
    let g1_id = spec.storage_groups[0].id.clone();
    for d in &mut spec.drives {
        d.bandwidth_domains = if g.rng.random_bool(0.6) {
            vec![up0.clone()]
        } else {
            vec![]
        };
        if g.rng.random_bool(0.5) {
            d.group = Some(g1_id.clone());
        }
    }
    let g1 = &mut spec.storage_groups[0];
    g1.quota = Some(Bytes(g1.used.0 + size * g.rng.random_range(1..=2u64)));
    let mut engine = Engine::new(Inventory::from_spec(spec.clone()).unwrap(), seed).unwrap();
    engine.set_search_budget(1);
    let oracle = Oracle::new(&spec);
    let mut req = Request::new(
        if g.rng.random_bool(0.7) {
            Shape::Mirror {
                legs: g.rng.random_range(3..=4),
            }
        } else {
            Shape::Parity {
                k: g.rng.random_range(2..=3),
                m: 1,
                sets: 1,
            }
        },
        size,
    )
    .separate("rack", Mode::Hard);
    if g.rng.random_bool(0.4) {
        req = req.separate_by_attribute("psu", Mode::Hard);
    }
    req.bandwidth = Bytes(demand);
    match engine.plan(&req) {
        Ok(_) => Ok(false),
        Err(PlacementError::Unsatisfiable(e)) => {
            if oracle.exists(&req) {
                return Err(format!(
                    "refused ({e}) but a placement exists for {req:?} (seed {seed})"
                ));
            }
            Ok(e.blocked
                .iter()
                .any(|b| matches!(b, Blocker::Scarce { room, needed, .. } if room < needed)))
        }
        Err(PlacementError::SearchExhausted { explanation, .. }) if !explanation.proven() => {
            Ok(false)
        }
        Err(other) => Err(format!(
            "unexpected error {other} for {req:?} (seed {seed})"
        )),
    }
}

/// The scarce-domain bound proves refusals on those inventories (so the property above tests
/// it), and each is sound: seeds are tried in order until it has fired three times.
#[test]
fn scarce_bound_fires_and_is_sound() {
    let mut fired = 0;
    let mut seed = 0u64;
    while fired < 3 && seed < 50_000 {
        fired += scarce_case(seed).unwrap() as usize;
        seed += 1;
    }
    assert!(
        fired == 3,
        "the scarce-domain bound proved {fired} refusals in {seed} cases"
    );
}
