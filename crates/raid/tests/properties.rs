//! Property tests: mapping invariants, parity round trips, SIMD equals
//! scalar, failure analysis against brute force, layout choice.
//!
//! Case counts are kept small for debug builds; set `RAID_PROPTEST_CASES`
//! (or proptest's own `PROPTEST_CASES`, read when the first is not set) to
//! run more.

use std::collections::{BTreeSet, HashSet};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use raid::{
    Backend, FailureModel, Geometry, Layout, LayoutRequest, Level, MemberContent, ParityAlgorithm,
    ParityEngine, Raid0Layout, Raid10Layout, choose_layout,
};

fn cases(default: u32) -> ProptestConfig {
    let n = storage_units::cases::case_count("RAID_PROPTEST_CASES", default)
        .unwrap_or_else(|e| panic!("{e}"));
    config_for(n)
}

/// `n` cases, and room for the strategies' filters to reject in proportion: the geometry
/// strategies throw away about one draw per two cases (invalid geometries, wrong copy
/// counts), so proptest's fixed default of 65,536 local rejects aborted
/// `raid10_loss_matches_brute_force` at `RAID_PROPTEST_CASES=150000` ("Too many local
/// rejects") without a failing case.
fn config_for(n: u32) -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(n);
    config.max_local_rejects = config.max_local_rejects.max(n.saturating_mul(4));
    config
}

#[test]
fn long_runs_have_room_for_rejects() {
    assert_eq!(config_for(96).max_local_rejects, 65_536);
    assert_eq!(config_for(150_000).max_local_rejects, 600_000);
    assert_eq!(config_for(u32::MAX).max_local_rejects, u32::MAX);
}

const ALGS: [ParityAlgorithm; 14] = [
    ParityAlgorithm::LeftAsymmetric,
    ParityAlgorithm::RightAsymmetric,
    ParityAlgorithm::LeftSymmetric,
    ParityAlgorithm::RightSymmetric,
    ParityAlgorithm::ParityFirst,
    ParityAlgorithm::ParityLast,
    ParityAlgorithm::DdfZeroRestart,
    ParityAlgorithm::DdfNRestart,
    ParityAlgorithm::DdfNContinue,
    ParityAlgorithm::LeftAsymmetric6,
    ParityAlgorithm::RightAsymmetric6,
    ParityAlgorithm::LeftSymmetric6,
    ParityAlgorithm::RightSymmetric6,
    ParityAlgorithm::ParityFirst6,
];

/// Any layout md accepts, with a member count that suits it.
fn layout_and_members() -> impl Strategy<Value = (Layout, usize)> {
    prop_oneof![
        (any::<bool>(), 1usize..7).prop_map(|(alt, n)| (
            Layout::Raid0(if alt {
                Raid0Layout::Alternate
            } else {
                Raid0Layout::Original
            }),
            n
        )),
        (1usize..5).prop_map(|n| (Layout::Raid1, n)),
        (2usize..8).prop_map(|n| (Layout::Raid4, n)),
        (0usize..6, 2usize..9).prop_map(|(a, n)| (Layout::Raid5(ALGS[a]), n)),
        (0usize..14, 4usize..10).prop_map(|(a, n)| (Layout::Raid6(ALGS[a]), n)),
        raid10_layout_and_members(),
    ]
}

/// A small geometry: chunk 8 or 16 sectors (24 for some RAID0), members
/// of a few chunks each, unequal sizes allowed.
fn small_geometry() -> impl Strategy<Value = Geometry> {
    geometry_from(layout_and_members())
}

fn raid10_layout_and_members() -> impl Strategy<Value = (Layout, usize)> {
    (1u8..4, 1u8..4, any::<bool>(), 0usize..4).prop_filter_map("copies", |(nc, fc, o, extra)| {
        let r = Raid10Layout::new(nc, fc, o && fc > 1).ok()?;
        Some((Layout::Raid10(r), r.copies() + extra))
    })
}

fn geometry_from(
    layouts: impl Strategy<Value = (Layout, usize)>,
) -> impl Strategy<Value = Geometry> {
    (layouts, 0usize..3, prop::collection::vec(2u64..12, 16)).prop_filter_map(
        "valid geometry",
        |((layout, n), c, sizes)| {
            let chunk = match (layout, c) {
                (Layout::Raid0(_), 2) => 24,
                (_, 1) => 16,
                _ => 8,
            };
            let members: Vec<u64> = sizes[..n].iter().map(|s| s * chunk + (s % 3)).collect();
            Geometry::new(layout, chunk, &members).ok()
        },
    )
}

proptest! {
    #![proptest_config(cases(96))]

    /// Every logical sector maps to distinct members for its copies, the
    /// reverse map is the inverse, and no two logical sectors (or a sector
    /// and a parity block) share a member sector.
    #[test]
    fn mapping_is_a_bijection(g in small_geometry()) {
        let mut used: HashSet<(usize, u64)> = HashSet::new();
        for l in 0..g.array_sectors() {
            let m = g.map(l).unwrap();
            prop_assert_eq!(m.copies.len(), g.copies());
            let members: BTreeSet<usize> = m.copies.iter().map(|c| c.member).collect();
            prop_assert_eq!(members.len(), m.copies.len(), "copies of {} share a member", l);
            for (i, c) in m.copies.iter().enumerate() {
                prop_assert!(c.sector < g.used_sectors()[c.member]);
                prop_assert!(used.insert((c.member, c.sector)), "member sector {:?} used twice", c);
                prop_assert_eq!(g.unmap(c.member, c.sector).unwrap(), MemberContent::Data { logical: l, copy: i });
            }
            if let Some(p) = m.parity {
                let d = m.copies[0];
                prop_assert!(p.p != d.member && p.q != Some(d.member) && p.q != Some(p.p));
                prop_assert_eq!(g.unmap(p.p, d.sector).unwrap(), MemberContent::P { stripe: p.stripe });
                if let Some(q) = p.q {
                    prop_assert_eq!(g.unmap(q, d.sector).unwrap(), MemberContent::Q { stripe: p.stripe });
                }
                let sl = g.stripe_layout(p.stripe).unwrap();
                prop_assert_eq!(sl.data[p.data_index], d.member);
            }
        }
        // Every member sector is either data of exactly the sector found
        // above, parity, or unused.
        for m in 0..g.members() {
            for s in 0..g.member_sectors()[m] {
                match g.unmap(m, s).unwrap() {
                    MemberContent::Data { .. } => prop_assert!(used.contains(&(m, s))),
                    _ => prop_assert!(!used.contains(&(m, s))),
                }
            }
        }
        prop_assert_eq!(used.len() as u64, g.array_sectors() * g.copies() as u64);
    }

    /// Range mapping covers the range once per copy and agrees with `map`.
    #[test]
    fn range_mapping_agrees(g in small_geometry(), a in 0u64..10_000, b in 0u64..10_000) {
        let n = g.array_sectors();
        let (start, end) = ((a % n).min(b % n), (a % n).max(b % n) + 1);
        let ext = g.map_range(start, end - start).unwrap();
        for copy in 0..g.copies() {
            let total: u64 = ext.iter().filter(|e| e.copy == copy).map(|e| e.sectors).sum();
            prop_assert_eq!(total, end - start);
        }
        for e in &ext {
            for k in [0, e.sectors - 1] {
                let m = g.map(e.logical + k).unwrap();
                prop_assert_eq!(m.copies[e.copy].member, e.member);
                prop_assert_eq!(m.copies[e.copy].sector, e.member_sector + k);
            }
        }
    }

    /// A RAID10 failure set loses data exactly when every copy of some
    /// chunk is on it (brute force over all chunks).
    #[test]
    fn raid10_loss_matches_brute_force(g in geometry_from(raid10_layout_and_members()), mask in any::<u16>()) {
        let fm = FailureModel::new(&g);
        let failed: Vec<usize> = (0..g.members()).filter(|m| mask & (1 << m) != 0).collect();
        let chunk = g.chunk_sectors();
        let brute = (0..g.array_sectors() / chunk).any(|c| {
            g.map(c * chunk).unwrap().copies.iter().all(|l| failed.contains(&l.member))
        });
        prop_assert_eq!(fm.loses_data(&failed).unwrap(), brute);
        let (sets, _) = fm.minimal_fatal_sets(3, 1000);
        for s in sets {
            prop_assert!(fm.loses_data(&s).unwrap());
            for i in 0..s.len() {
                let mut sub = s.clone();
                sub.remove(i);
                prop_assert!(!fm.loses_data(&sub).unwrap());
            }
        }
    }
}

fn random_stripe(
    layout: Layout,
    members: usize,
    len: usize,
    stripe: u64,
    seed: &[u8],
) -> (raid::StripeLayout, Vec<Bytes>) {
    let g = Geometry::new(layout, 8, &vec![8 * (stripe + 1); members]).unwrap();
    let sl = g.stripe_layout(stripe).unwrap();
    let mut bufs: Vec<BytesMut> = (0..members)
        .map(|m| {
            BytesMut::from(
                &(0..len)
                    .map(|i| {
                        seed[(i * 7 + m * 13) % seed.len()].wrapping_mul(m as u8 + 1) ^ (i as u8)
                    })
                    .collect::<Vec<u8>>()[..],
            )
        })
        .collect();
    ParityEngine::with_backend(Backend::Reference)
        .unwrap()
        .encode_stripe(&sl, &mut bufs)
        .unwrap();
    (sl, bufs.into_iter().map(BytesMut::freeze).collect())
}

proptest! {
    #![proptest_config(cases(48))]

    /// Generate, drop any one (RAID5) or any two (RAID6) members,
    /// reconstruct: the result equals the original, on every backend.
    #[test]
    fn parity_round_trip(
        raid6 in any::<bool>(),
        alg in 0usize..14,
        members in 3usize..=32,
        len in 1usize..700,
        stripe in 0u64..40,
        seed in prop::collection::vec(any::<u8>(), 1..64),
        drop_a in any::<usize>(),
        drop_b in any::<usize>(),
    ) {
        let members = if raid6 { members.max(4) } else { members };
        let layout = if raid6 { Layout::Raid6(ALGS[alg]) } else { Layout::Raid5(ALGS[alg % 6]) };
        let (sl, original) = random_stripe(layout, members, len, stripe, &seed);
        let a = drop_a % members;
        let b = if raid6 { drop_b % members } else { a };
        for backend in Backend::all_available() {
            let engine = ParityEngine::with_backend(backend).unwrap();
            let mut damaged: Vec<Option<Bytes>> = original.iter().cloned().map(Some).collect();
            damaged[a] = None;
            damaged[b] = None;
            let rebuilt = engine.reconstruct_stripe(&sl, &damaged).unwrap();
            prop_assert_eq!(&rebuilt, &original, "backend {:?} dropped {} {}", backend, a, b);
            // In place, over garbage in the lost buffers.
            let mut bufs: Vec<BytesMut> = original.iter().map(|x| BytesMut::from(&x[..])).collect();
            bufs[a].fill(0xa5);
            bufs[b].fill(0x5a);
            engine.reconstruct_in_place(&sl, &mut bufs, &[a, b]).unwrap();
            for (m, buf) in bufs.iter().enumerate() {
                prop_assert_eq!(&buf[..], &original[m][..], "in place, backend {:?}, member {}", backend, m);
            }
            // Re-encoding with this backend gives the reference parity.
            let mut bufs: Vec<BytesMut> = original.iter().map(|b| BytesMut::from(&b[..])).collect();
            bufs[sl.p].fill(0);
            engine.encode_stripe(&sl, &mut bufs).unwrap();
            prop_assert_eq!(&bufs[sl.p][..], &original[sl.p][..]);
            if let Some(q) = sl.q {
                prop_assert_eq!(&bufs[q][..], &original[q][..]);
            }
        }
    }

    /// SIMD kernels equal the reference on random sparse syndromes and
    /// two-block recovery, including unaligned lengths.
    #[test]
    fn simd_equals_reference(
        blocks in prop::collection::vec(prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 300)), 1..40),
        len in 0usize..300,
        a in any::<usize>(),
        b in any::<usize>(),
    ) {
        let slots: Vec<Option<&[u8]>> = blocks.iter().map(|b| b.as_deref().map(|v| &v[..len])).collect();
        let reference = ParityEngine::with_backend(Backend::Reference).unwrap();
        let (mut p0, mut q0) = (vec![0u8; len], vec![0u8; len]);
        reference.gen_syndrome(&slots, &mut p0, &mut q0).unwrap();
        for backend in Backend::all_available() {
            let e = ParityEngine::with_backend(backend).unwrap();
            let (mut p, mut q) = (vec![1u8; len], vec![2u8; len]);
            e.gen_syndrome(&slots, &mut p, &mut q).unwrap();
            prop_assert_eq!(&p, &p0, "P {:?}", backend);
            prop_assert_eq!(&q, &q0, "Q {:?}", backend);
            // P alone (its own portable path) and read-modify-write deltas.
            let present: Vec<&[u8]> = slots.iter().flatten().copied().collect();
            let mut p1 = vec![3u8; len];
            e.gen_p(&present, &mut p1).unwrap();
            prop_assert_eq!(&p1, &p0, "P only {:?}", backend);
            if let Some(new) = slots.iter().flatten().next() {
                let old = slots.iter().flatten().last().unwrap_or(new);
                for c in [1u8, 2, 0x8e, a as u8] {
                    let (mut want, mut got) = (q0.clone(), q0.clone());
                    for i in 0..len {
                        want[i] ^= raid::parity::gf_mul(c, old[i] ^ new[i]);
                    }
                    raid::parity::reference::delta(c, old, new, &mut got);
                    prop_assert_eq!(&got, &want, "reference delta");
                    let mut got = q0.clone();
                    raid::parity::portable::delta(c, old, new, &mut got);
                    prop_assert_eq!(&got, &want, "portable delta");
                }
                // The backend's own kernels through apply_delta, for every
                // data member of a RAID6 stripe (coefficients g^0 .. g^5).
                let g = Geometry::new(Layout::Raid6(ParityAlgorithm::LeftSymmetric), 8, &[8; 8]).unwrap();
                let sl = g.stripe_layout(0).unwrap();
                for &m in &sl.data {
                    let c = raid::parity::gf_exp(usize::from(sl.q_exponent[m].unwrap()));
                    let (mut wp, mut wq) = (p0.clone(), q0.clone());
                    for i in 0..len {
                        wp[i] ^= old[i] ^ new[i];
                        wq[i] ^= raid::parity::gf_mul(c, old[i] ^ new[i]);
                    }
                    let (mut gp, mut gq) = (p0.clone(), q0.clone());
                    e.apply_delta(&sl, m, old, new, Some(&mut gp), Some(&mut gq)).unwrap();
                    prop_assert_eq!((&gp, &gq), (&wp, &wq), "apply_delta {:?} member {}", backend, m);
                }
            }
            if slots.len() >= 2 {
                let (x, y) = (a % slots.len(), b % slots.len());
                if x != y {
                    let (dx, dy) = e.recover_two_data(&slots, x, y, &p0, &q0).unwrap();
                    let zero = vec![0u8; len];
                    prop_assert_eq!(&dx[..], slots[x].unwrap_or(&zero[..]));
                    prop_assert_eq!(&dy[..], slots[y].unwrap_or(&zero[..]));
                }
                let dx = e.recover_data_from_q(&slots, a % slots.len(), &q0).unwrap();
                let zero = vec![0u8; len];
                prop_assert_eq!(&dx[..], slots[a % slots.len()].unwrap_or(&zero[..]));
            }
        }
    }

    /// Layout choice: the answer holds the request, respects the limits and
    /// the redundancy requirement; an error happens only when no option fits.
    #[test]
    fn layout_choice_is_sound(
        drives in prop::collection::vec(1u64..64, 1..20),
        size in 1u64..400,
        redundancy in any::<bool>(),
        striping in any::<bool>(),
        max_drives in 1usize..17,
    ) {
        const GIB: u64 = 1 << 30;
        let mut req = LayoutRequest::new(size * GIB / 4, drives.iter().map(|d| d * GIB).collect());
        req.redundancy = redundancy;
        req.striping = striping;
        req.max_drives = max_drives;
        match choose_layout(&req) {
            Ok(c) => {
                prop_assert!(c.usable_bytes >= req.size_bytes);
                prop_assert!(c.drives.len() <= max_drives);
                let distinct: BTreeSet<_> = c.drives.iter().collect();
                prop_assert_eq!(distinct.len(), c.drives.len());
                if let Some(g) = &c.geometry {
                    prop_assert_eq!(g.array_bytes(), c.usable_bytes);
                    let fm = FailureModel::new(g);
                    if redundancy {
                        for m in 0..g.members() {
                            prop_assert!(!fm.loses_data(&[m]).unwrap());
                        }
                    }
                    let paths: Vec<String> = c.drives.iter().map(|d| format!("/dev/d{d}")).collect();
                    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                    let args = c.mdadm_create_args("/dev/md/v", &refs).unwrap().unwrap();
                    let want = format!("--raid-devices={}", g.members());
                    prop_assert!(args.contains(&want));
                } else {
                    prop_assert!(!redundancy && c.drives.len() == 1);
                }
                if !striping {
                    prop_assert!(c.drives.len() <= 2);
                }
            }
            Err(e) => {
                // Nothing fits: no single drive (or pair) holds the request
                // without striping; with striping even the largest allowed
                // set is too small.
                let largest = drives.iter().max().unwrap() * GIB;
                if !redundancy {
                    prop_assert!(largest < req.size_bytes, "{}", e);
                }
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn mttdl_matches_closed_forms() {
    let p = raid::ReliabilityParams {
        mttf_hours: 1.0e6,
        mttr_hours: 24.0,
    };
    let n = 8.0;
    let g5 = Geometry::new(Layout::Raid5(ParityAlgorithm::LeftSymmetric), 8, &[64; 8]).unwrap();
    let m5 = FailureModel::new(&g5).mttdl(p).unwrap().hours;
    let approx5 = p.mttf_hours.powi(2) / (n * (n - 1.0) * p.mttr_hours);
    assert!((m5 / approx5 - 1.0).abs() < 0.01, "raid5 {m5} vs {approx5}");
    let g6 = Geometry::new(Layout::Raid6(ParityAlgorithm::LeftSymmetric), 8, &[64; 8]).unwrap();
    let m6 = FailureModel::new(&g6).mttdl(p).unwrap().hours;
    let approx6 = p.mttf_hours.powi(3) / (n * (n - 1.0) * (n - 2.0) * p.mttr_hours.powi(2));
    assert!((m6 / approx6 - 1.0).abs() < 0.01, "raid6 {m6} vs {approx6}");
    // RAID10 n2 on 4 members: after one failure, 1 of 3 survivors is fatal.
    let g10 = Geometry::new(
        Layout::Raid10(Raid10Layout::new(2, 1, false).unwrap()),
        8,
        &[64; 4],
    )
    .unwrap();
    let e10 = FailureModel::new(&g10).mttdl(p).unwrap();
    assert!((e10.fatal_fraction[1] - 1.0 / 3.0).abs() < 1e-12);
    let approx10 = p.mttf_hours.powi(2) / (4.0 * 1.0 * p.mttr_hours);
    assert!(
        (e10.hours / approx10 - 1.0).abs() < 0.01,
        "raid10 {} vs {approx10}",
        e10.hours
    );
    let g0 = Geometry::new(Layout::Raid0(Raid0Layout::Original), 8, &[64; 4]).unwrap();
    let m0 = FailureModel::new(&g0).mttdl(p).unwrap().hours;
    assert!((m0 - p.mttf_hours / 4.0).abs() < 1e-6);
}

proptest! {
    #![proptest_config(cases(256))]

    /// Parsers of untrusted input (StorageClass parameters, CLI arguments)
    /// return errors, never panic, whatever the text.
    #[test]
    fn parsers_never_panic(text in ".{0,24}", digits in "[nfo0-9]{0,8}") {
        let _ = text.parse::<raid::Level>();
        for level in [raid::Level::Raid0, raid::Level::Raid1, raid::Level::Raid4, raid::Level::Raid5, raid::Level::Raid6, raid::Level::Raid10] {
            for t in [&text, &digits] {
                if let Ok(l) = Layout::parse(level, t) {
                    prop_assert_eq!(l.level(), level);
                }
            }
        }
    }

    /// Any numbers given to the geometry constructor and the mapping
    /// functions produce a value or an error, never a panic.
    #[test]
    fn geometry_never_panics(
        (layout, n) in layout_and_members(),
        extra in 0usize..3,
        chunk in prop_oneof![Just(0u64), 1u64..70, Just(u64::MAX)],
        sizes in prop::collection::vec(prop_oneof![0u64..200, Just(u64::MAX / 2)], 12),
        probes in prop::collection::vec(any::<u64>(), 4),
    ) {
        let members = &sizes[..(n + extra).min(12)];
        if let Ok(g) = Geometry::new(layout, chunk, members) {
            for &x in &probes {
                let _ = g.map(x % (g.array_sectors() + 2));
                let _ = g.unmap(x as usize % (g.members() + 1), x % 300);
                let _ = g.map_range(x % 300, x % 50);
                let _ = g.stripe_layout(x % 40);
            }
        }
    }
}

#[cfg(feature = "proptest")]
proptest! {
    #![proptest_config(cases(32))]

    /// The exported strategies yield valid geometries of every level.
    #[test]
    fn exported_strategies_yield_valid_geometries(g in raid::strategies::geometry(8, 6), l in any::<Layout>(), c in any::<raid::ChunkSize>(), s in any::<raid::Sectors>()) {
        prop_assert_eq!(raid::ChunkSize::new(c.sectors()), Ok(c));
        prop_assert!(s.checked_bytes().is_some());
        prop_assert_eq!(s.to_byte_size().map(raid::Sectors::from_byte_size), Some(Ok(s)));
        prop_assert!(g.array_sectors() > 0);
        prop_assert!(g.map(g.array_sectors() - 1).is_ok());
        prop_assert!(Layout::parse(l.level(), &l.mdadm_name().unwrap_or_default()).is_ok());
    }
}

/// Member images of `g` holding `logical` (array_sectors × 512 bytes) as md
/// lays it out, with consistent parity.
fn member_images(g: &Geometry, logical: &[u8], engine: &ParityEngine) -> Vec<Vec<u8>> {
    let mut members: Vec<Vec<u8>> = g
        .member_sectors()
        .iter()
        .map(|&s| vec![0u8; s as usize * 512])
        .collect();
    for e in g.map_range(0, g.array_sectors()).unwrap() {
        let (m, l, n) = (
            e.member_sector as usize * 512,
            e.logical as usize * 512,
            e.sectors as usize * 512,
        );
        members[e.member][m..m + n].copy_from_slice(&logical[l..l + n]);
    }
    if g.layout().level() as u8 >= Level::Raid4 as u8 && g.layout().level() != Level::Raid10 {
        let c = g.chunk_sectors() as usize * 512;
        for s in 0..g.stripes() {
            let sl = g.stripe_layout(s).unwrap();
            let at = s as usize * c;
            let mut views: Vec<&mut [u8]> =
                members.iter_mut().map(|b| &mut b[at..at + c]).collect();
            engine.encode_stripe_slices(&sl, &mut views).unwrap();
        }
    }
    members
}

/// Apply `plan` to in-memory members: per step, read, fill the parity,
/// write. Panics if the plan touches a failed member.
fn apply_plan(plan: &raid::WritePlan, members: &mut [Vec<u8>], new: &[u8], engine: &ParityEngine) {
    let range = |io: &raid::MemberIo| {
        assert!(
            !plan.failed.contains(&io.member),
            "plan touches failed member {}: {io:?}",
            io.member
        );
        io.member_sector as usize * 512..(io.member_sector + io.sectors) as usize * 512
    };
    for step in &plan.steps {
        let old: Vec<Vec<u8>> = step
            .reads
            .iter()
            .map(|io| members[io.member][range(io)].to_vec())
            .collect();
        let reads: Vec<&[u8]> = old.iter().map(|b| &b[..]).collect();
        let mut bufs: Vec<Vec<u8>> = step
            .writes
            .iter()
            .map(|io| match io.role {
                raid::IoRole::Data { logical, .. } => {
                    let at = (logical - plan.logical) as usize * 512;
                    new[at..at + io.sectors as usize * 512].to_vec()
                }
                _ => vec![0x5a; io.sectors as usize * 512],
            })
            .collect();
        let lost: Vec<&[u8]> = step
            .lost_data
            .iter()
            .map(|io| match io.role {
                raid::IoRole::Data { logical, .. } => {
                    let at = (logical - plan.logical) as usize * 512;
                    &new[at..at + io.sectors as usize * 512]
                }
                _ => panic!("lost data of a parity role: {io:?}"),
            })
            .collect();
        let mut writes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        engine
            .fill_parity(step, &reads, &lost, &mut writes)
            .unwrap();
        for (io, buf) in step.writes.iter().zip(&bufs) {
            members[io.member][range(io)].copy_from_slice(buf);
        }
    }
}

/// Check that `members` hold `logical` as `g` lays it out: for parity
/// levels after rebuilding the `failed` members stripe by stripe, with
/// consistent P and Q; for the others on every surviving copy.
fn check_images(
    g: &Geometry,
    members: &[Vec<u8>],
    logical: &[u8],
    failed: &[usize],
    engine: &ParityEngine,
) {
    if matches!(
        g.layout(),
        Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_)
    ) {
        let c = g.chunk_sectors() as usize * 512;
        for s in 0..g.stripes() {
            let sl = g.stripe_layout(s).unwrap();
            let at = s as usize * c;
            let mut stripe: Vec<Vec<u8>> = members.iter().map(|b| b[at..at + c].to_vec()).collect();
            let mut views: Vec<&mut [u8]> = stripe.iter_mut().map(|b| &mut b[..]).collect();
            engine.reconstruct_slices(&sl, &mut views, failed).unwrap();
            for (i, &m) in sl.data.iter().enumerate() {
                let l = (s as usize * sl.data.len() + i) * c;
                assert!(
                    stripe[m] == logical[l..l + c],
                    "stripe {s} data {i} (member {m})"
                );
            }
            let before = stripe.clone();
            let mut views: Vec<&mut [u8]> = stripe.iter_mut().map(|b| &mut b[..]).collect();
            engine.encode_stripe_slices(&sl, &mut views).unwrap();
            assert!(stripe == before, "stripe {s} parity inconsistent");
        }
    } else {
        for l in 0..g.array_sectors() {
            let want = &logical[l as usize * 512..(l + 1) as usize * 512];
            for c in g
                .map(l)
                .unwrap()
                .copies
                .iter()
                .filter(|c| !failed.contains(&c.member))
            {
                let at = c.sector as usize * 512;
                assert!(
                    &members[c.member][at..at + 512] == want,
                    "logical {l} copy on member {}",
                    c.member
                );
            }
        }
    }
}

/// Every strategy on an 8-member RAID6 (6 data, 16-sector chunks), applied
/// to member images and checked.
#[test]
fn write_plan_strategies_by_case() {
    use raid::WriteStrategy::*;
    use rand::{RngCore, SeedableRng};
    let g = Geometry::new(
        Layout::Raid6(ParityAlgorithm::LeftSymmetric),
        16,
        &[16 * 4; 8],
    )
    .unwrap();
    let engine = ParityEngine::detect();
    let sl = g.stripe_layout(0).unwrap();
    let (p, q) = (sl.p, sl.q.unwrap());
    // (name, start, sectors, failed members, strategy of each step, reads)
    type Case = (
        &'static str,
        u64,
        u64,
        Vec<usize>,
        Vec<raid::WriteStrategy>,
        usize,
    );
    #[rustfmt::skip]
    let cases: [Case; 9] = [
        ("one sector: rmw reads data, P, Q", 3, 1, vec![], vec![ReadModifyWrite], 3),
        ("two chunks: a tie goes to rcw", 0, 32, vec![], vec![ReconstructWrite], 4),
        ("full stripe reads nothing", 0, 96, vec![], vec![ReconstructWrite], 0),
        ("three column ranges", 4, 24, vec![], vec![ReadModifyWrite, ReconstructWrite, ReadModifyWrite], 3 + 4 + 3),
        ("written member failed: rcw, its data only in parity", 3, 1, vec![sl.data[0]], vec![ReconstructWrite], 5),
        ("unwritten member failed: rmw", 3, 1, vec![sl.data[1]], vec![ReadModifyWrite], 3),
        ("written and unwritten failed: rebuild, then write", 3, 1, vec![sl.data[0], sl.data[1]], vec![DegradedReconstructWrite], 6),
        ("P and Q failed: data only", 3, 1, vec![p, q], vec![DataOnly], 0),
        ("P and an unwritten member failed: rmw on Q", 3, 1, vec![p, sl.data[2]], vec![ReadModifyWrite], 2),
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for (name, start, sectors, failed, strategies, reads) in cases {
        let mut logical = vec![0u8; g.array_sectors() as usize * 512];
        rng.fill_bytes(&mut logical);
        let mut members = member_images(&g, &logical, &engine);
        let plan = g.write_plan(start, sectors, &failed).unwrap();
        let got: Vec<_> = plan.steps.iter().map(|s| s.strategy).collect();
        assert_eq!(got, strategies, "{name}");
        assert_eq!(plan.read_ios(), reads, "{name}");
        if failed.contains(&sl.data[0]) {
            assert_eq!(plan.steps[0].lost_data.len(), 1, "{name}");
        }
        let mut new = vec![0u8; sectors as usize * 512];
        rng.fill_bytes(&mut new);
        for &m in &failed {
            members[m].fill(0xee);
        }
        apply_plan(&plan, &mut members, &new, &engine);
        logical[start as usize * 512..(start + sectors) as usize * 512].copy_from_slice(&new);
        check_images(&g, &members, &logical, &failed, &engine);
    }
    // Three failures: the array is lost.
    assert!(matches!(
        g.write_plan(0, 1, &[0, 1, 2]),
        Err(raid::RaidError::DataLost { .. })
    ));
}

proptest! {
    #![proptest_config(cases(96))]

    /// Applying a write plan to in-memory members, with up to one member
    /// more failed than the level tolerates, leaves every logical sector
    /// readable with the new data (degraded reads rebuild lost members) and
    /// every stripe's parity consistent; healthy plans read the fewest
    /// member ranges of read-modify-write and reconstruct-write.
    #[test]
    fn write_plans_keep_data_and_parity(
        g in small_geometry(),
        a in any::<u64>(),
        b in any::<u64>(),
        fail_mask in any::<u16>(),
        fail_count in 0usize..4,
        backend in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        use rand::{RngCore, SeedableRng};
        let backends = Backend::all_available();
        let engine = ParityEngine::with_backend(*backend.get(&backends)).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = g.array_sectors();
        let (start, end) = ((a % n).min(b % n), (a % n).max(b % n) + 1);
        let failed: Vec<usize> = (0..g.members()).filter(|m| fail_mask & (1 << m) != 0).take(fail_count).collect();

        let mut logical = vec![0u8; n as usize * 512];
        rng.fill_bytes(&mut logical);
        let mut members = member_images(&g, &logical, &engine);
        let mut new = vec![0u8; (end - start) as usize * 512];
        rng.fill_bytes(&mut new);

        let parity_level = matches!(g.layout(), Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_));
        let lost_sector = (start..end).find(|&l| g.map(l).unwrap().copies.iter().all(|c| failed.contains(&c.member)));
        let plan = match g.write_plan(start, end - start, &failed) {
            Ok(plan) => plan,
            Err(raid::RaidError::DataLost { .. }) => {
                if parity_level {
                    prop_assert!(failed.len() > g.guaranteed_tolerance());
                } else {
                    prop_assert!(lost_sector.is_some());
                }
                return Ok(());
            }
            Err(e) => panic!("{e}"),
        };
        let survivable = if parity_level { failed.len() <= g.guaranteed_tolerance() } else { lost_sector.is_none() };
        prop_assert!(survivable, "a plan for a lost array");
        // Failed members hold garbage: the plan must not depend on them.
        for &m in &failed {
            members[m].fill(0xee);
        }
        apply_plan(&plan, &mut members, &new, &engine);
        logical[start as usize * 512..end as usize * 512].copy_from_slice(&new);

        check_images(&g, &members, &logical, &failed, &engine);
        if parity_level && failed.is_empty() {
            for step in &plan.steps {
                let sl = step.layout.as_ref().unwrap();
                let written = step.writes.len() - 1 - usize::from(sl.q.is_some());
                let rcw = sl.data.len() - written;
                let rmw = step.writes.len();
                prop_assert_eq!(step.reads.len(), rcw.min(rmw), "{:?}", step.strategy);
                prop_assert_eq!(step.strategy == raid::WriteStrategy::ReadModifyWrite, rmw < rcw);
            }
        }
        let written: u64 = plan.steps.iter().flat_map(|s| &s.writes)
            .filter(|w| matches!(w.role, raid::IoRole::Data { .. })).map(|w| w.sectors).sum();
        let alive_copies: u64 = (start..end).map(|l| g.map(l).unwrap().copies.iter().filter(|c| !failed.contains(&c.member)).count() as u64).sum();
        prop_assert_eq!(written, alive_copies, "every surviving copy of every sector written once");
    }
}

/// What mdadm 4.x does with `--create` arguments on devices of the given
/// sizes (sectors): the data offset from `--data-offset` (mdadm's default is
/// deliberately not modelled: the arguments must not rely on it), each
/// member's data area `--size` (RAID1/4/5/6/10, which must fit after the
/// offset) or the rest of the device (RAID0, rounded to the chunk by md).
fn mdadm_creates(args: &[String], devices: &[(&str, u64)]) -> Result<Geometry, String> {
    let kib = |v: &str| -> Result<u64, String> {
        v.strip_suffix('K')
            .and_then(|n| n.parse::<u64>().ok())
            .map(|k| k * 2)
            .ok_or(format!("bad size {v}"))
    };
    let opt = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")[..]))
    };
    if args.first().map(String::as_str) != Some("--create") {
        return Err("not a create".into());
    }
    let level: Level = opt("level")
        .ok_or("no --level")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let layout = Layout::parse(level, opt("layout").unwrap_or("")).map_err(|e| format!("{e}"))?;
    let chunk = match (level, opt("chunk")) {
        (Level::Raid1, _) => 0,
        (_, Some(c)) => kib(c)?,
        (_, None) => 1024,
    };
    let offset = kib(opt("data-offset").ok_or("no --data-offset: mdadm would pick its own")?)?;
    let size = opt("size").map(kib).transpose()?;
    let n: usize = opt("raid-devices")
        .ok_or("no --raid-devices")?
        .parse()
        .map_err(|_| "bad --raid-devices")?;
    let paths = &args[args.len() - n..];
    let mut comps = Vec::new();
    for p in paths {
        let dev = devices
            .iter()
            .find(|d| d.0 == p)
            .ok_or(format!("unknown device {p}"))?
            .1;
        let avail = dev
            .checked_sub(offset)
            .ok_or(format!("{p} is smaller than the data offset"))?;
        comps.push(match size {
            Some(s) if s > avail => {
                return Err(format!(
                    "--size {s} does not fit on {p} ({avail} after the offset)"
                ));
            }
            Some(s) => s,
            None => avail,
        });
    }
    Geometry::new(layout, chunk, &comps)
        .and_then(|g| g.with_data_offset(raid::Sectors::new(offset)))
        .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(cases(256))]

    /// The geometry mdadm builds from `create_args` is the geometry the
    /// crate computed: same layout, chunk, data offset, used member sectors
    /// and capacity; with the default offset and with an explicit one.
    #[test]
    fn create_args_reproduce_the_geometry(
        (layout, n) in layout_and_members(),
        chunk_pow in 3u32..11,
        base in 1u64 << 21..1u64 << 33,
        extra in prop::collection::vec(0u64..1 << 22, 16),
        offset in prop::option::of((1u64..5000).prop_map(|k| k * 2)),
    ) {
        let chunk = 1u64 << chunk_pow;
        let devs: Vec<u64> = extra[..n].iter().map(|e| base + e).collect();
        let Ok(g) = raid::mdadm::geometry_for_devices(layout, chunk, &devs, offset) else {
            return Ok(());
        };
        let names: Vec<String> = (0..n).map(|i| format!("/dev/d{i}")).collect();
        let paths: Vec<&str> = names.iter().map(String::as_str).collect();
        let args = raid::mdadm::create_args("/dev/md/t", &g, &paths).unwrap();
        let devices: Vec<(&str, u64)> = paths.iter().copied().zip(devs.iter().copied()).collect();
        let made = mdadm_creates(&args, &devices).map_err(|e| TestCaseError::fail(format!("{e}: {args:?}")))?;
        prop_assert_eq!(made.layout(), g.layout());
        prop_assert_eq!(made.chunk_sectors(), g.chunk_sectors());
        prop_assert_eq!(made.data_offset(), g.data_offset());
        prop_assert_eq!(made.used_sectors(), g.used_sectors());
        prop_assert_eq!(made.array_sectors(), g.array_sectors());
        if let Some(o) = offset {
            prop_assert_eq!(g.data_offset(), Some(raid::Sectors::new(o)));
        }
    }
}

proptest! {
    #![proptest_config(cases(96))]

    /// For every level, the rebuild ranges cover the target's used
    /// sectors, never read a failed member, rebuild the target's bytes from
    /// what they read, and read `rebuild_range_bytes` in total.
    #[test]
    fn rebuild_ranges_rebuild_the_target(g in small_geometry(), t in any::<usize>(), other in any::<usize>(), two in any::<bool>(), seed in any::<u64>()) {
        use rand::{RngCore, SeedableRng};
        let target = t % g.members();
        let mut failed = vec![target];
        if two {
            failed.push(other % g.members());
        }
        let fm = FailureModel::new(&g);
        let Ok(plan) = fm.rebuild_plan(&failed, target) else {
            prop_assert!(fm.loses_data(&failed).unwrap());
            return Ok(());
        };
        let engine = ParityEngine::detect();
        let mut logical = vec![0u8; g.array_sectors() as usize * 512];
        rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut logical);
        let members = member_images(&g, &logical, &engine);
        let bytes = |m: usize, start: u64, n: u64| &members[m][start as usize * 512..(start + n) as usize * 512];
        let mut covered = 0u64;
        let mut read = 0u64;
        let mut next = 0u64;
        for r in fm.rebuild_ranges(&plan) {
            prop_assert!(r.target_sector >= next, "ranges overlap or go backwards");
            next = r.target_sector + r.sectors;
            covered += r.sectors;
            prop_assert!(r.reads.iter().all(|x| !plan.failed.contains(&x.member) && x.sectors == r.sectors));
            read += r.reads.iter().map(|x| x.sectors * 512).sum::<u64>();
            let want = bytes(target, r.target_sector, r.sectors);
            match g.layout() {
                Layout::Raid4 | Layout::Raid5(_) | Layout::Raid6(_) => {
                    let sl = g.stripe_layout(r.target_sector / g.chunk_sectors()).unwrap();
                    let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; want.len()]; g.members()];
                    for x in &r.reads {
                        bufs[x.member] = bytes(x.member, x.start, x.sectors).to_vec();
                    }
                    let missing: Vec<usize> = (0..g.members()).filter(|m| !r.reads.iter().any(|x| x.member == *m)).collect();
                    let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
                    engine.reconstruct_slices(&sl, &mut views, &missing).unwrap();
                    prop_assert!(bufs[target] == want, "stripe at {} of member {}", r.target_sector, target);
                }
                _ => {
                    prop_assert_eq!(r.reads.len(), 1);
                    let x = r.reads[0];
                    prop_assert!(bytes(x.member, x.start, x.sectors) == want, "copy at {}", r.target_sector);
                }
            }
        }
        let data_sectors = (0..g.used_sectors()[target]).filter(|&s| g.unmap(target, s).unwrap() != MemberContent::Unused).count() as u64;
        prop_assert_eq!(covered, data_sectors);
        prop_assert_eq!(read, fm.rebuild_range_bytes(&plan));
    }
}

/// Every backend equals the reference over long stripes (many SIMD and
/// portable blocks, a tail that is not a whole block), with missing slots.
#[test]
fn long_stripes_with_missing_slots_equal_the_reference() {
    let reference = ParityEngine::with_backend(Backend::Reference).unwrap();
    for len in [4096, 4096 * 3, 4096 * 2 + 128 + 5, 20_000] {
        let blocks: Vec<Option<Vec<u8>>> = (0..10u8)
            .map(|k| {
                (k % 4 != 2).then(|| {
                    (0..len)
                        .map(|i| (i as u8).wrapping_mul(31) ^ k.wrapping_mul(97))
                        .collect()
                })
            })
            .collect();
        let slots: Vec<Option<&[u8]>> = blocks.iter().map(|b| b.as_deref()).collect();
        let (mut p0, mut q0) = (vec![0u8; len], vec![0u8; len]);
        reference.gen_syndrome(&slots, &mut p0, &mut q0).unwrap();
        for backend in Backend::all_available() {
            let e = ParityEngine::with_backend(backend).unwrap();
            let (mut p, mut q) = (vec![1u8; len], vec![2u8; len]);
            e.gen_syndrome(&slots, &mut p, &mut q).unwrap();
            assert_eq!(p, p0, "P of {len} bytes, {backend:?}");
            assert_eq!(q, q0, "Q of {len} bytes, {backend:?}");
        }
    }
}
