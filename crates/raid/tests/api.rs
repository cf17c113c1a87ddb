//! Behaviour tests: layout names, bad input errors, failure domains,
//! rebuild plans, estimates, layout choice and mdadm arguments.

use bytes::{Bytes, BytesMut};
use raid::failure::{RebuildRates, ReliabilityParams, ure_probability};
use raid::{
    ChoiceKind, FailureDomains, FailureModel, Geometry, Layout, LayoutRequest, Level,
    ParityAlgorithm, ParityEngine, Raid10Layout, RaidError, choose_layout, mdadm,
};

#[test]
fn layout_names_round_trip() {
    for (level, name) in [
        (Level::Raid0, "original"),
        (Level::Raid0, "alternate"),
        (Level::Raid5, "left-symmetric"),
        (Level::Raid5, "right-asymmetric"),
        (Level::Raid5, "parity-first"),
        (Level::Raid6, "ddf-N-restart"),
        (Level::Raid6, "right-symmetric-6"),
        (Level::Raid10, "n2"),
        (Level::Raid10, "f3"),
        (Level::Raid10, "o2"),
        (Level::Raid10, "n2f2"),
    ] {
        let l = Layout::parse(level, name).unwrap();
        assert_eq!(l.level(), level);
        assert_eq!(l.mdadm_name().unwrap(), name, "{level} {name}");
        assert_eq!(Layout::parse(level, &l.mdadm_name().unwrap()).unwrap(), l);
    }
    assert_eq!(
        Layout::parse(Level::Raid5, "ls").unwrap(),
        Layout::Raid5(ParityAlgorithm::LeftSymmetric)
    );
    assert_eq!(Layout::parse(Level::Raid6, "").unwrap().md_number(), 2);
    assert_eq!(
        Layout::parse(Level::Raid10, "o2").unwrap().md_number(),
        0x10201
    );
    assert_eq!(
        Layout::parse(Level::Raid10, "f2").unwrap().md_number(),
        0x201
    );
    assert_eq!(
        Layout::parse(Level::Raid10, "n2").unwrap().md_number(),
        0x102
    );
    assert_eq!(
        Layout::parse(Level::Raid6, "left-asymmetric-6")
            .unwrap()
            .md_number(),
        16
    );
    assert_eq!(
        Raid10Layout::from_md_number(0x10201).unwrap().mdadm_name(),
        "o2"
    );
    assert!("raid7".parse::<Level>().is_err());
    assert_eq!("RAID10".parse::<Level>().unwrap(), Level::Raid10);
}

#[test]
fn bad_layout_names_explain_the_rule() {
    let e = Layout::parse(Level::Raid5, "ddf-zero-restart").unwrap_err();
    assert!(e.to_string().contains("only for raid6"), "{e}");
    let e = Layout::parse(Level::Raid5, "left-sym").unwrap_err();
    assert!(
        e.to_string().contains("left-sym") && e.to_string().contains("left-symmetric"),
        "{e}"
    );
    for bad in ["n1", "x2", "n", "n2n2", "f0", "n256"] {
        let e = Layout::parse(Level::Raid10, bad).unwrap_err();
        assert!(matches!(e, RaidError::BadLayout { .. }), "{bad}: {e}");
    }
    assert!(Raid10Layout::from_md_number(1 << 17 | 0x102).is_err());
}

/// A bad level or layout name was echoed whole and raw between backticks: a 100,000-character
/// `--level` made a 100 kB error line, and a newline in it broke the line. Names are quoted
/// short and escaped, as every crate of the SDK quotes input (`storage_units::quote`).
#[test]
fn bad_level_and_layout_names_are_quoted_short() {
    let long = "x".repeat(100_000);
    let e = long.parse::<Level>().unwrap_err().to_string();
    assert!(e.len() < 300, "{} bytes", e.len());
    assert_eq!(
        e,
        format!(
            "level {:?}… (100000 bytes) is not one of raid0, raid1, raid4, raid5, raid6, raid10 (also 0/1/4/5/6/10)",
            &long[..64]
        )
    );
    let e = "raid\n7".parse::<Level>().unwrap_err().to_string();
    assert!(e.starts_with(r#"level "raid\n7" is not one of"#), "{e}");
    let e = Layout::parse(Level::Raid5, &long).unwrap_err().to_string();
    assert!(e.len() < 600, "{} bytes", e.len());
    assert!(
        e.starts_with(&format!(
            "layout {:?}… (100000 bytes) is not a valid md layout for raid5",
            &long[..64]
        )),
        "{e:.300}"
    );
}

#[test]
fn bad_geometry_names_the_field() {
    let ls = Layout::Raid5(ParityAlgorithm::LeftSymmetric);
    let cases: Vec<(Result<Geometry, RaidError>, &str)> = vec![
        (Geometry::new(ls, 8, &[64]), "members"),
        (Geometry::new(ls, 12, &[64, 64, 64]), "chunk_sectors"),
        (Geometry::new(ls, 8, &[64, 0, 64]), "member_sectors[1]"),
        (Geometry::new(ls, 16, &[64, 8, 64]), "member_sectors[1]"),
        (
            Geometry::new(Layout::Raid6(ParityAlgorithm::LeftSymmetric), 8, &[64; 3]),
            "members",
        ),
        (
            Geometry::new(Layout::Raid5(ParityAlgorithm::DdfNContinue), 8, &[64; 4]),
            "layout",
        ),
        (
            Geometry::new(
                Layout::Raid10(Raid10Layout::new(3, 1, false).unwrap()),
                8,
                &[64; 2],
            ),
            "members",
        ),
        (
            Geometry::new(
                Layout::Raid10(Raid10Layout::new(2, 2, true).unwrap()),
                8,
                &[64; 5],
            ),
            "members",
        ),
        (
            Geometry::new(Layout::Raid0(raid::Raid0Layout::Original), 4, &[64]),
            "chunk_sectors",
        ),
    ];
    for (r, field) in cases {
        match r {
            Err(RaidError::InvalidGeometry { field: f, rule }) => {
                assert_eq!(f, field, "{rule}");
                assert!(!rule.is_empty());
            }
            other => panic!("expected an error on {field}, got {other:?}"),
        }
    }
    let g = Geometry::new(ls, 8, &[64; 3]).unwrap();
    assert!(matches!(g.map(128), Err(RaidError::OutOfRange { .. })));
    assert!(matches!(g.unmap(3, 0), Err(RaidError::OutOfRange { .. })));
    assert!(matches!(g.unmap(0, 64), Err(RaidError::OutOfRange { .. })));
    assert!(matches!(
        g.map_range(120, 9),
        Err(RaidError::OutOfRange { .. })
    ));
    assert!(g.map_range(120, 8).is_ok());
    assert!(g.stripe_layout(8).is_err());
}

/// A raid10 whose members are too small for md's `calc_sectors()` to give any data was refused
/// with "the members are too small to hold any data in this layout" and no size to aim for.
/// The rule now names the smallest member that holds data, and that size is exactly the edge:
/// one chunk less is refused, that many chunks build.
#[test]
fn raid10_too_small_members_name_the_smallest_size() {
    let mut checked = 0;
    for near in 1..=4u8 {
        for far in 1..=4u8 {
            for offset in [false, true] {
                if near * far < 2 {
                    continue;
                }
                let Ok(l) = Raid10Layout::new(near, far, offset) else {
                    continue;
                };
                for disks in (near * far) as usize..=9 {
                    let layout = Layout::Raid10(l);
                    let fits = |chunks: u64| Geometry::new(layout, 8, &vec![8 * chunks; disks]);
                    let Some(need) = (1..=64).find(|&c| fits(c).is_ok()) else {
                        // A layout md refuses at this member count, whatever the size.
                        assert!(
                            matches!(fits(64), Err(RaidError::InvalidGeometry { ref field, .. }) if field == "members"),
                            "{layout} over {disks}: {:?}",
                            fits(64)
                        );
                        continue;
                    };
                    if need == 1 {
                        continue;
                    }
                    match fits(need - 1) {
                        Err(RaidError::InvalidGeometry { field, rule }) => {
                            assert_eq!(field, "member_sectors");
                            assert_eq!(
                                rule,
                                format!(
                                    "the members are too small to hold any data in this layout: \
                                     {layout} over {disks} members needs at least {} sectors \
                                     ({need} chunks) per member, got {}",
                                    8 * need,
                                    8 * (need - 1)
                                )
                            );
                            checked += 1;
                        }
                        other => panic!("{layout} over {disks}: {other:?}"),
                    }
                }
            }
        }
    }
    assert!(checked > 10, "{checked}");
}

#[test]
fn parity_bad_buffers_are_errors_and_change_nothing() {
    let g = Geometry::new(Layout::Raid6(ParityAlgorithm::LeftSymmetric), 8, &[64; 5]).unwrap();
    let sl = g.stripe_layout(0).unwrap();
    let e = ParityEngine::detect();
    let mut members: Vec<BytesMut> = (0..5).map(|i| BytesMut::from(&[i as u8; 64][..])).collect();
    members[2] = BytesMut::from(&[9u8; 63][..]);
    let before = members.clone();
    assert!(matches!(
        e.encode_stripe(&sl, &mut members),
        Err(RaidError::BadBuffers(_))
    ));
    assert_eq!(members, before);
    let full: Vec<Option<Bytes>> = (0..5).map(|_| Some(Bytes::from(vec![0u8; 64]))).collect();
    let mut three = full.clone();
    three[0] = None;
    three[1] = None;
    three[2] = None;
    match e.reconstruct_stripe(&sl, &three) {
        Err(RaidError::TooManyMissing {
            missing: 3,
            tolerated: 2,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let mut ok: Vec<BytesMut> = (0..5).map(|_| BytesMut::zeroed(64)).collect();
    let snapshot = ok.clone();
    assert!(e.reconstruct_in_place(&sl, &mut ok, &[0, 1, 2]).is_err());
    assert!(e.reconstruct_in_place(&sl, &mut ok, &[7]).is_err());
    assert_eq!(ok, snapshot, "buffers are put back after a failed call");
    let mut p = vec![0u8; 8];
    assert!(e.gen_p(&[&[1u8; 8][..], &[1u8; 7][..]], &mut p).is_err());
}

fn four_racks() -> FailureDomains {
    // 8 drives, 2 per JBOD, 2 JBODs per rack... except rack-b holds 4 drives
    // in two JBODs and rack-a holds jbod-1 and jbod-2.
    let paths = [
        ("d0", "j1", "rack-a"),
        ("d1", "j1", "rack-a"),
        ("d2", "j2", "rack-a"),
        ("d3", "j2", "rack-a"),
        ("d4", "j3", "rack-b"),
        ("d5", "j3", "rack-b"),
        ("d6", "j4", "rack-b"),
        ("d7", "j4", "rack-b"),
    ];
    FailureDomains::new(
        &["drive", "jbod", "rack"],
        paths
            .iter()
            .map(|(d, j, r)| vec![d.to_string(), j.to_string(), r.to_string()])
            .collect(),
    )
    .unwrap()
}

#[test]
fn failure_domains_and_survival() {
    let domains = four_racks();
    // RAID10 n2 over 8: mirror pairs (0,1), (2,3), … share a JBOD: fatal.
    let n2 = Geometry::new(
        Layout::Raid10(Raid10Layout::new(2, 1, false).unwrap()),
        8,
        &[64; 8],
    )
    .unwrap();
    let fm = FailureModel::new(&n2);
    assert!(fm.survives_any_one(&domains, "drive").unwrap().survives);
    let jbod = fm.survives_any_one(&domains, "jbod").unwrap();
    assert!(!jbod.survives);
    assert_eq!(jbod.fatal.len(), 4);
    assert!(
        jbod.fatal[0].reason.contains("all copies of some chunks"),
        "{}",
        jbod.fatal[0].reason
    );
    assert!(fm.loses_data(&[0, 1]).unwrap());
    assert!(!fm.loses_data(&[0, 2, 4, 6]).unwrap());
    assert!(fm.loses_data_domains(&domains, &[("jbod", "j1")]).unwrap());
    assert!(
        !fm.loses_data_domains(&domains, &[("drive", "d1"), ("drive", "d2")])
            .unwrap()
    );
    assert_eq!(n2.guaranteed_tolerance(), 1);
    let (sets, cut) = fm.minimal_fatal_sets(3, 100);
    assert!(!cut);
    assert_eq!(sets, vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]);
    let (rack_sets, _) = fm
        .minimal_fatal_domain_sets(&domains, "rack", 2, 10)
        .unwrap();
    assert_eq!(
        rack_sets,
        vec![vec!["rack-a".to_string()], vec!["rack-b".to_string()]]
    );

    // RAID6 over the same drives survives any JBOD (2 drives) but not a rack.
    let r6 = Geometry::new(Layout::Raid6(ParityAlgorithm::LeftSymmetric), 8, &[64; 8]).unwrap();
    let fm6 = FailureModel::new(&r6);
    assert_eq!(r6.guaranteed_tolerance(), 2);
    // Every set of `guaranteed_tolerance` members survives, and one more can kill.
    let (sets6, _) = fm6.minimal_fatal_sets(2, 100);
    assert!(sets6.is_empty());
    assert!(fm6.survives_any_one(&domains, "jbod").unwrap().survives);
    assert!(!fm6.survives_any_one(&domains, "rack").unwrap().survives);
    let (sets, cut) = fm6.minimal_fatal_sets(3, 10);
    assert!(cut, "C(8,3) = 56 fatal triples, cut at 10");
    assert_eq!(sets.len(), 10);
    assert!(sets.iter().all(|s| s.len() == 3));

    // Errors name the problem.
    assert!(fm.survives_any_one(&domains, "row").is_err());
    assert!(
        FailureDomains::new(
            &["drive", "rack"],
            vec![vec!["a".into(), "r1".into()], vec!["a".into(), "r2".into()]]
        )
        .is_err()
    );
    assert!(FailureDomains::new(&["drive"], vec![vec![]]).is_err());
    let small = FailureDomains::new(&["drive"], vec![vec!["x".into()]]).unwrap();
    assert!(matches!(
        fm.survives_any_one(&small, "drive"),
        Err(RaidError::BadDomains(_))
    ));
    assert!(fm.loses_data(&[8]).is_err());
}

#[test]
fn rebuild_plans_and_estimates() {
    let r5 = Geometry::new(
        Layout::Raid5(ParityAlgorithm::LeftSymmetric),
        1024,
        &[1 << 21; 4],
    )
    .unwrap();
    let fm = FailureModel::new(&r5);
    let plan = fm.rebuild_plan(&[2], 2).unwrap();
    assert_eq!(plan.sources.len(), 3);
    assert_eq!(plan.full_ranges.len(), 3);
    assert_eq!(plan.bytes_read(), 3 << 30);
    // 1 GiB per member at 100 MiB/s, below md's 200 000 KiB/s ceiling.
    let est = plan
        .estimate_time(&RebuildRates::uniform(4, 100.0 * 1048576.0))
        .unwrap();
    assert!((est.seconds - 10.24).abs() < 1e-9, "{}", est.seconds);
    // Fast members: md's speed limit binds.
    let est = plan.estimate_time(&RebuildRates::uniform(4, 1e12)).unwrap();
    assert_eq!(est.bottleneck, None);
    assert!((est.seconds - (1u64 << 30) as f64 / 204_800_000.0).abs() < 1e-9);
    assert!(matches!(
        fm.rebuild_plan(&[1, 2], 2),
        Err(RaidError::DataLost { .. })
    ));
    assert!(plan.estimate_time(&RebuildRates::uniform(2, 1.0)).is_err());
    let mut bad = RebuildRates::uniform(4, 1.0);
    bad.member_bytes_per_sec[3] = f64::NAN;
    assert!(plan.estimate_time(&bad).is_err());
    // A subnormal rate is positive and finite, but 1 GiB at it takes infinitely long: it gave
    // `seconds: inf`. Refused, naming the rate (a source's, the target's, md's limit).
    for (member, field) in [
        (1, "member_bytes_per_sec[1]"),
        (2, "member_bytes_per_sec[2]"),
    ] {
        let mut slow = RebuildRates::uniform(4, 1e8);
        slow.member_bytes_per_sec[member] = f64::from_bits(1); // 5e-324
        match plan.estimate_time(&slow) {
            Err(RaidError::BadEstimate { field: f, rule }) => {
                assert_eq!(f, field);
                assert!(rule.starts_with("5e-324 bytes/s is too slow: "), "{rule}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    let mut slow = RebuildRates::uniform(4, 1e8);
    slow.speed_limit_max_bytes_per_sec = Some(1e-310);
    assert!(matches!(
        plan.estimate_time(&slow),
        Err(RaidError::BadEstimate { field, .. }) if field == "speed_limit_max_bytes_per_sec"
    ));

    // RAID10 n2 on 3 members: member 0's chunks come from members 1 and 2.
    let g = Geometry::new(
        Layout::Raid10(Raid10Layout::new(2, 1, false).unwrap()),
        8,
        &[8 * 300; 3],
    )
    .unwrap();
    let fm = FailureModel::new(&g);
    let plan = fm.rebuild_plan(&[0], 0).unwrap();
    let members: Vec<usize> = plan.sources.iter().map(|s| s.member).collect();
    assert_eq!(members, vec![1, 2]);
    assert_eq!(plan.sources.iter().map(|s| s.sectors).sum::<u64>(), 8 * 300);
    for r in fm.raid10_rebuild_reads(&plan) {
        let l = match g.unmap(0, r.target_sector).unwrap() {
            raid::MemberContent::Data { logical, .. } => logical,
            other => panic!("{other:?}"),
        };
        assert!(
            g.map(l)
                .unwrap()
                .copies
                .iter()
                .any(|c| c.member == r.source && c.sector == r.source_sector)
        );
    }
    // RAID1 reads one survivor.
    let g1 = Geometry::new(Layout::Raid1, 0, &[1000, 1000, 1000]).unwrap();
    let plan = FailureModel::new(&g1).rebuild_plan(&[0, 1], 0).unwrap();
    assert_eq!(plan.sources.len(), 1);
    assert_eq!(plan.sources[0].member, 2);
}

#[test]
fn ure_and_mttdl_estimates() {
    // 12 TB read at 1e-14/bit: 1 − e^(−0.96) ≈ 0.617.
    let p = ure_probability(12_000_000_000_000, 1e-14).unwrap();
    assert!((p - (1.0 - (-0.96f64).exp())).abs() < 1e-6, "{p}");
    assert_eq!(ure_probability(0, 1e-14).unwrap(), 0.0);
    assert!(ure_probability(1, 1.5).is_err());
    let g = Geometry::new(Layout::Raid1, 0, &[100, 100]).unwrap();
    let fm = FailureModel::new(&g);
    assert!(
        fm.mttdl(ReliabilityParams {
            mttf_hours: 0.0,
            mttr_hours: 1.0
        })
        .is_err()
    );
    let e = fm
        .mttdl(ReliabilityParams {
            mttf_hours: 1e5,
            mttr_hours: 10.0,
        })
        .unwrap();
    // Two-way mirror: ≈ MTTF² / (2 · MTTR).
    assert!((e.hours / (1e10 / 20.0) - 1.0).abs() < 0.01, "{}", e.hours);
    assert!(!e.truncated);

    // A large RAID10 is cut where enumeration gets too costly, and says so.
    let big = Geometry::new(
        Layout::Raid10(Raid10Layout::new(2, 1, false).unwrap()),
        8,
        &[64; 40],
    )
    .unwrap();
    let e = FailureModel::new(&big)
        .mttdl(ReliabilityParams {
            mttf_hours: 1e6,
            mttr_hours: 24.0,
        })
        .unwrap();
    assert!(e.truncated);
    assert!(e.hours > 0.0 && e.hours.is_finite());
    // Conservative: no more than the single-partner estimate MTTF²/(n·MTTR).
    assert!(e.hours <= 1e12 / (40.0 * 24.0) * 1.01, "{}", e.hours);
}

#[test]
fn mdadm_sizes_and_arguments() {
    let dev = 2u64 << 31; // 1 TiB
    assert_eq!(mdadm::default_data_offset_v12(dev, 1024), 264_192);
    assert!(mdadm::component_sectors(Level::Raid5, 1000, 1024, None).is_err());
    let g = mdadm::geometry_for_devices(
        Layout::parse(Level::Raid10, "n2").unwrap(),
        1024,
        &[dev, dev, dev, dev + 5000],
        None,
    )
    .unwrap();
    assert_eq!(
        g.member_sectors()[3],
        g.member_sectors()[0],
        "all members use the smallest component"
    );
    let args = mdadm::create_args(
        "/dev/md/vol1",
        &g,
        &["/dev/a", "/dev/b", "/dev/c", "/dev/d"],
    )
    .unwrap();
    assert_eq!(
        args,
        vec![
            "--create",
            "/dev/md/vol1",
            "--run",
            "--metadata=1.2",
            "--level=raid10",
            "--layout=n2",
            "--chunk=512K",
            &format!("--size={}K", (dev - 264_192) / 2),
            "--data-offset=132096K",
            "--raid-devices=4",
            "/dev/a",
            "/dev/b",
            "/dev/c",
            "/dev/d",
        ]
    );
    // The issue's case: an explicit offset must reach mdadm.
    let g2 = mdadm::geometry_for_devices(Layout::Raid1, 0, &[dev, dev], Some(2048)).unwrap();
    let args = mdadm::create_args("/dev/md/x", &g2, &["/dev/a", "/dev/b"]).unwrap();
    assert!(
        args.contains(&"--data-offset=1024K".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&format!("--size={}K", (dev - 2048) / 2)),
        "{args:?}"
    );
    // Without a known offset mdadm would choose its own: refused.
    let bare = Geometry::new(Layout::Raid1, 0, &[1 << 20, 1 << 20]).unwrap();
    match mdadm::create_args("/dev/md/x", &bare, &["/dev/a", "/dev/b"]) {
        Err(RaidError::InvalidGeometry { field, .. }) => assert_eq!(field, "data_offset"),
        other => panic!("{other:?}"),
    }
    let odd = bare.with_data_offset(raid::Sectors::new(2049)).unwrap();
    match mdadm::create_args("/dev/md/x", &odd, &["/dev/a", "/dev/b"]) {
        Err(RaidError::InvalidGeometry { field, rule }) => {
            assert_eq!(field, "data_offset");
            assert!(rule.contains("KiB"), "{rule}");
        }
        other => panic!("{other:?}"),
    }
    match mdadm::create_args("/dev/md/x", &g, &["/dev/a"]) {
        Err(RaidError::InvalidGeometry { field, .. }) => assert_eq!(field, "devices"),
        other => panic!("{other:?}"),
    }
    match mdadm::geometry_for_devices(Layout::Raid1, 0, &[dev, 100], None) {
        Err(RaidError::InvalidGeometry { field, .. }) => assert_eq!(field, "dev_sectors[1]"),
        other => panic!("{other:?}"),
    }
    // A striped level without a chunk: the chunk is at fault, not a device.
    match mdadm::geometry_for_devices(
        Layout::Raid5(ParityAlgorithm::LeftSymmetric),
        0,
        &[dev, dev, dev],
        None,
    ) {
        Err(RaidError::InvalidGeometry { field, rule }) => {
            assert_eq!(field, "chunk_sectors", "{rule}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn layout_choice_rules() {
    const GIB: u64 = 1 << 30;
    // Fits on one drive: the smallest that holds it.
    let c = choose_layout(&LayoutRequest::new(
        100 * GIB,
        vec![500 * GIB, 200 * GIB, 1000 * GIB],
    ))
    .unwrap();
    assert_eq!((c.kind, c.drives.clone()), (ChoiceKind::Single, vec![1]));
    assert!(
        c.mdadm_create_args("/dev/md/x", &["/dev/b"])
            .unwrap()
            .is_none()
    );

    // Too big for one drive, no striping: explains.
    let e = choose_layout(&LayoutRequest::new(600 * GIB, vec![500 * GIB; 3])).unwrap_err();
    assert!(e.to_string().contains("striping is not allowed"), "{e}");

    // Striping: RAID0 over the fewest drives.
    let mut r = LayoutRequest::new(900 * GIB, vec![500 * GIB; 4]);
    r.striping = true;
    let c = choose_layout(&r).unwrap();
    assert_eq!((c.kind, c.drives.len()), (ChoiceKind::Raid0, 2));

    // Redundancy: RAID1 on the two smallest drives that each hold it.
    let mut r = LayoutRequest::new(300 * GIB, vec![1000 * GIB, 400 * GIB, 500 * GIB, 350 * GIB]);
    r.redundancy = true;
    let c = choose_layout(&r).unwrap();
    assert_eq!((c.kind, c.drives.clone()), (ChoiceKind::Raid1, vec![3, 1]));
    let args = c
        .mdadm_create_args("/dev/md/m", &["/dev/d", "/dev/b"])
        .unwrap()
        .unwrap();
    assert!(
        args.contains(&"--level=raid1".to_string())
            && !args.iter().any(|a| a.starts_with("--layout"))
    );

    // Redundancy + striping: RAID10 n2, odd counts allowed.
    let mut r = LayoutRequest::new(700 * GIB, vec![500 * GIB; 6]);
    r.redundancy = true;
    r.striping = true;
    let c = choose_layout(&r).unwrap();
    assert_eq!((c.kind, c.drives.len()), (ChoiceKind::Raid10, 3));
    assert!(c.usable_bytes >= 700 * GIB);

    // max_drives binds, and the message says so.
    r.size_bytes = 2000 * GIB;
    r.max_drives = 4;
    let e = choose_layout(&r).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("max_drives 4") && msg.contains("raid10"),
        "{msg}"
    );

    let mut r = LayoutRequest::new(GIB, vec![500 * GIB]);
    r.redundancy = true;
    assert!(
        choose_layout(&r)
            .unwrap_err()
            .to_string()
            .contains("only one")
    );
    assert!(choose_layout(&LayoutRequest::new(0, vec![GIB])).is_err());
    assert!(choose_layout(&LayoutRequest::new(1, vec![])).is_err());
}

#[test]
fn data_lost_speaks_the_level_s_language() {
    let lost = |layout: &str, level: Level, n: usize, failed: &[usize]| -> String {
        let g = Geometry::new(Layout::parse(level, layout).unwrap(), 8, &vec![64; n]).unwrap();
        match FailureModel::new(&g).rebuild_plan(failed, failed[0]) {
            Err(e @ RaidError::DataLost { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        }
    };
    let r5 = lost("", Level::Raid5, 4, &[0, 1]);
    assert!(
        r5.contains("one parity block (P)") && !r5.contains("cop"),
        "{r5}"
    );
    let r6 = lost("", Level::Raid6, 5, &[0, 1, 2]);
    assert!(
        r6.contains("P and Q") && r6.contains("3 are missing") && !r6.contains("cop"),
        "{r6}"
    );
    let r10 = lost("n2", Level::Raid10, 4, &[0, 1]);
    assert!(r10.contains("2 copies of every chunk"), "{r10}");
    let r1 = lost("", Level::Raid1, 2, &[0, 1]);
    assert!(r1.contains("raid1 keeps 2 copies"), "{r1}");
    // Write plans use the same words.
    let g = Geometry::new(Layout::parse(Level::Raid5, "").unwrap(), 8, &[64; 4]).unwrap();
    let e = g.write_plan(0, 8, &[0, 1]).unwrap_err().to_string();
    assert!(e.contains("raid5 keeps one parity block (P)"), "{e}");
}

#[test]
fn write_plan_bad_input_is_an_error_that_changes_nothing() {
    let g = Geometry::new(Layout::parse(Level::Raid6, "").unwrap(), 8, &[64; 6]).unwrap();
    match g.write_plan(g.array_sectors() - 4, 8, &[]) {
        Err(RaidError::OutOfRange { what, .. }) => assert_eq!(what, "end of logical range"),
        other => panic!("{other:?}"),
    }
    match g.write_plan(0, 8, &[6]) {
        Err(RaidError::OutOfRange { what, value, limit }) => {
            assert_eq!((what.as_str(), value, limit), ("failed member", 6, 6))
        }
        other => panic!("{other:?}"),
    }
    assert!(g.write_plan(5, 0, &[]).unwrap().steps.is_empty());

    let plan = g.write_plan(1, 2, &[]).unwrap();
    let step = &plan.steps[0];
    let engine = ParityEngine::detect();
    let old = vec![vec![1u8; 1024]; step.reads.len()];
    let reads: Vec<&[u8]> = old.iter().map(|b| &b[..]).collect();
    let mut bufs = vec![vec![9u8; 1024]; step.writes.len()];
    // One buffer too few.
    let mut writes: Vec<&mut [u8]> = bufs.iter_mut().skip(1).map(|b| &mut b[..]).collect();
    assert!(matches!(
        engine.fill_parity(step, &reads, &[], &mut writes),
        Err(RaidError::BadBuffers(_))
    ));
    // One buffer of the wrong length: named, and nothing written.
    bufs[0].truncate(512);
    let mut writes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    match engine.fill_parity(step, &reads, &[], &mut writes) {
        Err(RaidError::BadBuffers(m)) => assert!(m.contains("write buffer 0 has 512 bytes"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(bufs.iter().all(|b| b.iter().all(|&x| x == 9)));
}

/// The typed constructor builds what `Geometry::new` builds from the same
/// sizes, and refuses a missing or superfluous chunk naming the field.
#[test]
fn typed_sizes_build_the_same_geometry() {
    let chunk = raid::ChunkSize::from_kib(64).unwrap();
    let sizes = [raid::Sectors::from_kib(1 << 20).unwrap(); 4];
    for (level, name) in [
        (Level::Raid0, ""),
        (Level::Raid5, "left-symmetric"),
        (Level::Raid6, "right-asymmetric"),
        (Level::Raid10, "f2"),
    ] {
        let layout = Layout::parse(level, name).unwrap();
        let g = Geometry::from_sizes(layout, Some(chunk), &sizes).unwrap();
        let want = Geometry::new(layout, 128, &[2 << 20; 4]).unwrap();
        assert_eq!(g.chunk_size(), Some(chunk), "{layout}");
        assert_eq!(g.used_sectors(), want.used_sectors(), "{layout}");
        assert_eq!(g.array_sectors(), want.array_sectors(), "{layout}");
        let e = Geometry::from_sizes(layout, None, &sizes).unwrap_err();
        assert!(
            matches!(&e, RaidError::InvalidGeometry { field, .. } if field == "chunk"),
            "{e}"
        );
    }
    let g = Geometry::from_sizes(Layout::Raid1, None, &sizes[..2]).unwrap();
    assert_eq!(g.array_sectors(), 2 << 20);
    assert_eq!(g.chunk_size(), None);
    let e = Geometry::from_sizes(Layout::Raid1, Some(chunk), &sizes[..2]).unwrap_err();
    assert!(e.to_string().contains("raid1 has no chunk size"), "{e}");
}
