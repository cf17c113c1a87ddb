//! Structured explanations and refusals proven by bounds: what blocked, with the numbers, the
//! relaxations as data, the messages derived from them, and impossible requests refused as
//! unsatisfiable even when the search may take only one step.

use placement::*;

mod common;
use common::grid;

fn explanation(r: Result<Placement, PlacementError>) -> Explanation {
    match r {
        Err(PlacementError::Unsatisfiable(e)) => *e,
        other => panic!("expected unsatisfiable, got {other:?}"),
    }
}

#[test]
fn separation_blocker_carries_the_numbers_and_the_relaxation() {
    let e = Engine::new(grid(3, 2), 0).unwrap();
    let req = Request::new(Shape::Mirror { legs: 4 }, 1000).separate("rack", Mode::Hard);
    let x = explanation(e.plan(&req));
    assert_eq!(
        x.blocked,
        vec![Blocker::Separation {
            scope: Scope::Level("rack".into()),
            domains: 3,
            room: 3,
            needed: 4,
            group: Some(0),
            per_domain: 1,
        }]
    );
    assert_eq!(
        x.relaxations,
        vec![Relaxation::SoftSeparation {
            scope: Scope::Level("rack".into())
        }]
    );
    assert!(x.proven());
    // The message is derived from the data and keeps the wording operators know.
    let text = x.to_string();
    assert!(
        text.contains("hard separation at level 'rack' cannot be met: eligible drives span 3 'rack' domain(s), room for 3 of the 4 members of group 0 (at most 1 per domain)"),
        "{text}"
    );
    assert!(
        text.contains("satisfiable if rack separation were soft"),
        "{text}"
    );
    // Applying the relaxation gives a placeable request.
    assert!(e.plan(&x.relaxations[0].apply(&req)).is_ok());
}

#[test]
fn groups_that_fit_alone_but_not_together_are_proven_impossible() {
    // Four single-drive racks cannot hold three 2-leg stripes: too few drives.
    let e = Engine::new(grid(4, 1), 0).unwrap();
    let req = Request::new(
        Shape::Raid10 {
            stripes: 3,
            mirrors: 2,
        },
        1000,
    )
    .separate("rack", Mode::Hard);
    let x = explanation(e.plan(&req));
    assert_eq!(
        x.blocked,
        vec![Blocker::Filters {
            eligible: 4,
            needed: 6
        }]
    );
    // Racks of 4, 1 and 1 drives: each 2-leg stripe fits alone (3 racks), but the two small
    // racks give 2 slots in all and the big one one per stripe: 5 slots for 6 members.
    let mut t = String::new();
    for (r, n) in [(0, 4), (1, 1), (2, 1)] {
        t += &format!("[[domain]]\nid = \"r{r}\"\nlevel = \"rack\"\n");
        for d in 0..n {
            t += &format!(
                "[[drive]]\nid = \"r{r}d{d}\"\nkind = \"hdd\"\ncapacity = \"1 TB\"\ndomain = \"r{r}\"\n"
            );
        }
    }
    let e = Engine::new(Inventory::from_toml(&t).unwrap(), 0).unwrap();
    let x = explanation(e.plan(&req));
    assert_eq!(
        x.blocked,
        vec![Blocker::Separation {
            scope: Scope::Level("rack".into()),
            domains: 3,
            room: 5,
            needed: 6,
            group: None,
            per_domain: 1,
        }]
    );
    assert!(
        x.to_string()
            .contains("room for 5 of the 6 members of all groups together")
    );
}

#[test]
fn bandwidth_headroom_and_quota_are_named() {
    let inv = Inventory::from_toml(
        r#"
        [[bandwidth_domain]]
        id = "up0"
        kind = "uplink"
        capacity = "1 GB/s"
        [[storage_group]]
        id = "gold"
        quota = "3 TB"
        [[drive]]
        id = "a"
        kind = "hdd"
        capacity = "4 TB"
        bandwidth_domains = ["up0"]
        group = "gold"
        [[drive]]
        id = "b"
        kind = "hdd"
        capacity = "4 TB"
        bandwidth_domains = ["up0"]
        group = "gold"
        [[drive]]
        id = "c"
        kind = "hdd"
        capacity = "4 TB"
        bandwidth_domains = ["up0"]
        group = "gold"
        "#,
    )
    .unwrap();
    let e = Engine::new(inv, 0).unwrap();
    let mut req = Request::new(Shape::Mirror { legs: 3 }, 1_000_000_000_000);
    req.bandwidth = Bytes(400_000_000);
    let x = explanation(e.plan(&req));
    assert_eq!(
        x.blocked[0],
        Blocker::Bandwidth {
            kind: "uplink".into(),
            domains: 1,
            room: 2,
            needed: 3,
            demand: 400_000_000,
        }
    );
    assert_eq!(x.relaxations, vec![Relaxation::WithoutBandwidthDemand]);
    let req = Request::new(Shape::Mirror { legs: 3 }, 1_500_000_000_000);
    let x = explanation(e.plan(&req));
    assert_eq!(
        x.blocked,
        vec![Blocker::Quota {
            groups: 1,
            room: 2,
            needed: 3,
            size: 1_500_000_000_000,
        }]
    );
    // Serialized for machines: the constraint is a tag, the numbers are fields.
    let json = serde_json::to_value(&x).unwrap();
    assert_eq!(json["blocked"][0]["constraint"], "quota");
    assert_eq!(json["blocked"][0]["room"], 2);
}

#[test]
fn provably_impossible_requests_are_unsatisfiable_even_with_a_one_step_search() {
    // The issue's case: "room for 8 of 9 members" used to end as "search gave up".
    let mut e = Engine::new(grid(8, 3), 0).unwrap();
    e.set_search_budget(1);
    let req = Request::new(Shape::Mirror { legs: 9 }, 1000).separate("rack", Mode::Hard);
    let x = explanation(e.plan(&req));
    assert!(matches!(
        x.blocked[0],
        Blocker::Separation {
            room: 8,
            needed: 9,
            ..
        }
    ));
}

#[test]
fn filters_serialize_by_name() {
    let e = Engine::new(grid(2, 1), 0).unwrap();
    let mut req = Request::new(Shape::Single, 1000);
    req.kinds = vec![DriveKind::Ssd];
    let x = explanation(e.plan(&req));
    assert_eq!(
        x.removed,
        vec![FilterCount {
            filter: Filter::Kind,
            removed: 2
        }]
    );
    assert_eq!(
        x.relaxations,
        vec![Relaxation::WithoutFilter {
            filter: Filter::Kind
        }]
    );
    assert_eq!(
        serde_json::to_string(&x.removed).unwrap(),
        r#"[{"filter":"kind","removed":2}]"#
    );
    assert!(
        x.to_string()
            .contains("satisfiable without the drive-kind filter")
    );
}

#[test]
fn scarce_uplink_and_quota_with_rack_separation_are_proven_together() {
    // Five racks for a 5-leg mirror. Racks r0, r1 and r4 offer only drives behind uplink
    // 'up0' (headroom for one member) or in group 'g1' (quota for one member); r2 and r3 offer
    // three drives in neither. Every two of the three limits leave room for 5 members; all
    // three together leave room for 2 + 2 = 4.
    let mut t = String::from(
        "[[bandwidth_domain]]\nid = \"up0\"\nkind = \"uplink\"\ncapacity = 100\n\
         [[storage_group]]\nid = \"g1\"\nquota = \"1 TB\"\n",
    );
    for r in 0..5 {
        t += &format!("[[domain]]\nid = \"r{r}\"\nlevel = \"rack\"\n");
    }
    for (id, rack, extra) in [
        ("a0", 0, "bandwidth_domains = [\"up0\"]"),
        ("a1", 0, "group = \"g1\""),
        ("b0", 1, "bandwidth_domains = [\"up0\"]"),
        ("b1", 1, "group = \"g1\""),
        ("f0", 4, "bandwidth_domains = [\"up0\"]"),
        ("f1", 4, "group = \"g1\""),
        ("c0", 2, ""),
        ("c1", 2, ""),
        ("e0", 3, ""),
    ] {
        t += &format!(
            "[[drive]]\nid = \"{id}\"\nkind = \"hdd\"\ncapacity = \"2 TB\"\ndomain = \"r{rack}\"\n{extra}\n"
        );
    }
    let mut e = Engine::new(Inventory::from_toml(&t).unwrap(), 0).unwrap();
    e.set_search_budget(1);
    let mut req =
        Request::new(Shape::Mirror { legs: 5 }, 1_000_000_000_000).separate("rack", Mode::Hard);
    req.bandwidth = Bytes(100);
    let x = explanation(e.plan(&req));
    assert_eq!(
        x.blocked,
        vec![Blocker::Scarce {
            scarce: vec![
                ScarceDomain {
                    constraint: "uplink bandwidth headroom".into(),
                    domain: "up0".into(),
                    room: 1,
                },
                ScarceDomain {
                    constraint: "storage-group quotas".into(),
                    domain: "g1".into(),
                    room: 1,
                },
            ],
            outside: 3,
            elsewhere: 2,
            limits: vec!["rack separation".into()],
            room: 4,
            needed: 5,
        }]
    );
    let text = x.to_string();
    assert!(
        text.contains("'up0' (uplink bandwidth headroom) has room for 1, 'g1' (storage-group quotas) has room for 1 member(s), and the 3 eligible drive(s) outside them fit 2 under rack separation: room for 4 of 5 members"),
        "{text}"
    );
    // One leg fewer fits.
    e.set_search_budget(DEFAULT_SEARCH_BUDGET);
    req.shape = Shape::Mirror { legs: 4 };
    assert!(e.plan(&req).is_ok());
}
