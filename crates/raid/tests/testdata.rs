//! Runs the hand-derived reference cases in `testdata/*.toml`.

use std::path::Path;

use bytes::BytesMut;
use raid::{Geometry, Layout, Level, MemberContent, ParityEngine, mdadm};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    case: Vec<Case>,
    #[serde(default)]
    offset: Vec<OffsetCase>,
    #[serde(default)]
    component: Vec<ComponentCase>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    level: String,
    layout: String,
    chunk_sectors: u64,
    member_sectors: Vec<u64>,
    array_sectors: u64,
    #[allow(dead_code)] // documentation for readers of the file
    derivation: String,
    #[serde(default)]
    map: Vec<MapCase>,
    #[serde(default)]
    stripe: Vec<StripeCase>,
    #[serde(default)]
    unused: Vec<UnusedCase>,
    #[serde(default)]
    parity: Vec<ParityCase>,
}

#[derive(Deserialize)]
struct MapCase {
    logical: u64,
    copies: Vec<[u64; 2]>,
    p: Option<usize>,
    q: Option<usize>,
}

#[derive(Deserialize)]
struct StripeCase {
    stripe: u64,
    p: usize,
    q: Option<usize>,
    data: Vec<usize>,
    #[serde(default)]
    q_exponent: Vec<[usize; 2]>,
}

#[derive(Deserialize)]
struct UnusedCase {
    member: usize,
    sector: u64,
}

#[derive(Deserialize)]
struct ParityCase {
    stripe: u64,
    members: Vec<String>,
    p: String,
    q: Option<String>,
}

#[derive(Deserialize)]
struct OffsetCase {
    name: String,
    dev_sectors: u64,
    chunk_sectors: u64,
    data_offset: u64,
}

#[derive(Deserialize)]
struct ComponentCase {
    name: String,
    level: String,
    dev_sectors: u64,
    chunk_sectors: u64,
    data_offset: Option<u64>,
    component_sectors: u64,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex byte"))
        .collect()
}

fn load() -> Vec<(String, File)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read testdata");
            let f: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), f)
        })
        .collect()
}

fn run_case(c: &Case) {
    let level: Level = c.level.parse().unwrap();
    let layout = Layout::parse(level, &c.layout).unwrap();
    let g = Geometry::new(layout, c.chunk_sectors, &c.member_sectors).unwrap();
    assert_eq!(g.array_sectors(), c.array_sectors, "{}: array size", c.name);
    for m in &c.map {
        let got = g.map(m.logical).unwrap();
        let copies: Vec<[u64; 2]> = got
            .copies
            .iter()
            .map(|l| [l.member as u64, l.sector])
            .collect();
        assert_eq!(copies, m.copies, "{}: copies of {}", c.name, m.logical);
        if m.p.is_some() {
            let par = got.parity.expect("parity");
            assert_eq!(Some(par.p), m.p, "{}: P of {}", c.name, m.logical);
            assert_eq!(par.q, m.q, "{}: Q of {}", c.name, m.logical);
        }
        for (i, l) in got.copies.iter().enumerate() {
            assert_eq!(
                g.unmap(l.member, l.sector).unwrap(),
                MemberContent::Data {
                    logical: m.logical,
                    copy: i
                },
                "{}: unmap of copy {i} of {}",
                c.name,
                m.logical
            );
        }
    }
    for s in &c.stripe {
        let sl = g.stripe_layout(s.stripe).unwrap();
        assert_eq!(sl.p, s.p, "{}: stripe {} P", c.name, s.stripe);
        assert_eq!(sl.q, s.q, "{}: stripe {} Q", c.name, s.stripe);
        assert_eq!(sl.data, s.data, "{}: stripe {} data", c.name, s.stripe);
        for &[member, exp] in &s.q_exponent {
            assert_eq!(
                sl.q_exponent[member],
                Some(exp as u8),
                "{}: stripe {} Q slot of member {member}",
                c.name,
                s.stripe
            );
        }
    }
    for u in &c.unused {
        assert_eq!(
            g.unmap(u.member, u.sector).unwrap(),
            MemberContent::Unused,
            "{}: member {} sector {} should be unused",
            c.name,
            u.member,
            u.sector
        );
    }
    for p in &c.parity {
        let sl = g.stripe_layout(p.stripe).unwrap();
        let len = hex(&p.p).len();
        let mut members: Vec<BytesMut> = p
            .members
            .iter()
            .map(|h| {
                let b = hex(h);
                BytesMut::from(&if b.is_empty() { vec![0; len] } else { b }[..])
            })
            .collect();
        for backend in raid::Backend::all_available() {
            let engine = ParityEngine::with_backend(backend).unwrap();
            engine.encode_stripe(&sl, &mut members).unwrap();
            assert_eq!(
                members[sl.p].to_vec(),
                hex(&p.p),
                "{}: P ({backend:?})",
                c.name
            );
            if let (Some(q), Some(qd)) = (&p.q, sl.q) {
                assert_eq!(members[qd].to_vec(), hex(q), "{}: Q ({backend:?})", c.name);
            }
        }
    }
}

#[test]
fn reference_cases() {
    let files = load();
    let mut cases = 0;
    let mut layouts = std::collections::BTreeSet::new();
    for (path, f) in &files {
        for c in &f.case {
            run_case(c);
            cases += 1;
            layouts.insert(format!("{}/{}", c.level, c.layout.to_ascii_lowercase()));
        }
        for o in &f.offset {
            assert_eq!(
                mdadm::default_data_offset_v12(o.dev_sectors, o.chunk_sectors),
                o.data_offset,
                "{path}: {}",
                o.name
            );
            cases += 1;
        }
        for c in &f.component {
            let level: Level = c.level.parse().unwrap();
            assert_eq!(
                mdadm::component_sectors(level, c.dev_sectors, c.chunk_sectors, c.data_offset)
                    .unwrap(),
                c.component_sectors,
                "{path}: {}",
                c.name
            );
            cases += 1;
        }
    }
    assert!(cases >= 40, "only {cases} reference cases found");
    // Every md layout has at least one case.
    for l in [
        "raid0/original",
        "raid0/alternate",
        "raid1/",
        "raid4/parity-last",
        "raid5/left-symmetric",
        "raid5/la",
        "raid5/right-asymmetric",
        "raid5/rs",
        "raid5/parity-first",
        "raid5/parity-last",
        "raid6/left-symmetric",
        "raid6/left-asymmetric",
        "raid6/ra",
        "raid6/right-symmetric",
        "raid6/parity-first",
        "raid6/parity-last",
        "raid6/ddf-zero-restart",
        "raid6/ddf-n-restart",
        "raid6/ddf-n-continue",
        "raid6/left-asymmetric-6",
        "raid6/right-asymmetric-6",
        "raid6/left-symmetric-6",
        "raid6/right-symmetric-6",
        "raid6/parity-first-6",
        "raid10/n2",
        "raid10/n3",
        "raid10/f2",
        "raid10/f3",
        "raid10/o2",
        "raid10/o3",
    ] {
        assert!(layouts.contains(l), "no reference case for {l}");
    }
}
