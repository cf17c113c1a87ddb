//! Data-driven scenarios from `testdata/*.toml`: named cases with reference answers for device
//! choice, placement, growth, reservations, error messages, snapshot validation and the Ceph
//! fragmentation score.

use serde::Deserialize;
use slice_alloc::{
    Allocator, AllocatorConfig, Constraints, DeviceId, DevicePolicy, DeviceSpec, GIB, SliceId,
    Snapshot, ceph_fragmentation_score,
};

mod common;

#[derive(Deserialize)]
struct Scenarios {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    config: Option<AllocatorConfig>,
    devices: Vec<Dev>,
    step: Vec<Step>,
}

#[derive(Deserialize)]
struct Dev {
    id: u64,
    capacity_gib: u64,
    #[serde(default)]
    reserved_gib: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Step {
    op: String,
    size_gib: Option<u64>,
    size_bytes: Option<u64>,
    slice: Option<u64>,
    device: Option<u64>,
    offset_gib: Option<u64>,
    candidates: Option<Vec<u64>>,
    policy: Option<DevicePolicy>,
    multi_extent: Option<bool>,
    now: Option<u64>,
    ttl: Option<u64>,
    expect_slice: Option<u64>,
    expect_device: Option<u64>,
    /// `[[offset_gib, len_gib], ...]`
    expect_extents_gib: Option<Vec<[u64; 2]>>,
    expect_error: Option<String>,
    expect_largest_allocatable_gib: Option<u64>,
    expect_free_gib: Option<u64>,
    expect_expired: Option<Vec<u64>>,
}

fn run_case(c: &Case) -> Result<(), String> {
    let mut a = Allocator::new(c.config.clone().unwrap_or_default()).map_err(|e| e.to_string())?;
    for d in &c.devices {
        let spec = DeviceSpec::new(DeviceId::new(d.id), d.capacity_gib * GIB)
            .and_then(|s| s.with_reserved(d.reserved_gib * GIB))
            .map_err(|e| e.to_string())?;
        a.add_device(spec).map_err(|e| e.to_string())?;
    }
    for (i, s) in c.step.iter().enumerate() {
        let ctx = |m: String| format!("step {i} ({}): {m}", s.op);
        let size = s.size_bytes.or(s.size_gib.map(|g| g * GIB));
        let cands: Option<Vec<DeviceId>> = s
            .candidates
            .as_ref()
            .map(|v| v.iter().copied().map(DeviceId::new).collect());
        let cons = Constraints {
            candidates: cands.as_deref(),
            policy: s.policy,
            multi_extent: s.multi_extent,
        };
        let need = |o: Option<u64>, f: &str| o.ok_or_else(|| ctx(format!("missing {f}")));
        let before = a.snapshot(0);
        let result: Result<Option<slice_alloc::Slice>, slice_alloc::Error> = match s.op.as_str() {
            "allocate" => a.allocate(need(size, "size")?, &cons).map(Some),
            "free" => a.free(SliceId::new(need(s.slice, "slice")?)).map(Some),
            "grow" => a
                .grow(SliceId::new(need(s.slice, "slice")?), need(size, "size")?)
                .map(Some),
            "shrink" => a
                .shrink(SliceId::new(need(s.slice, "slice")?), need(size, "size")?)
                .map(Some),
            "allocate_at" => a
                .allocate_at(
                    DeviceId::new(need(s.device, "device")?),
                    need(s.offset_gib, "offset_gib")? * GIB,
                    need(size, "size")?,
                )
                .map(Some),
            "reserve" => a
                .reserve(
                    need(size, "size")?,
                    &cons,
                    need(s.now, "now")?,
                    need(s.ttl, "ttl")?,
                )
                .map(|r| Some(r.slice)),
            "commit" => a
                .commit(SliceId::new(need(s.slice, "slice")?), need(s.now, "now")?)
                .map(Some),
            "release" => a.release(SliceId::new(need(s.slice, "slice")?)).map(Some),
            "expire" => {
                let got: Vec<u64> = a
                    .expire(need(s.now, "now")?)
                    .into_iter()
                    .map(|x| x.get())
                    .collect();
                if let Some(want) = &s.expect_expired
                    && &got != want
                {
                    return Err(ctx(format!("expired {got:?}, expected {want:?}")));
                }
                Ok(None)
            }
            "check" => Ok(None),
            other => return Err(ctx(format!("unknown op {other}"))),
        };
        match (&result, &s.expect_error) {
            (Ok(_), Some(want)) => {
                return Err(ctx(format!(
                    "succeeded, expected an error containing {want:?}"
                )));
            }
            (Err(e), None) => return Err(ctx(format!("failed: {e}"))),
            (Err(e), Some(want)) => {
                if !e.to_string().contains(want.as_str()) {
                    return Err(ctx(format!(
                        "error {e:?} / \"{e}\" does not contain {want:?}"
                    )));
                }
                // Failed calls change nothing (snapshots hold reservations too).
                if a.snapshot(0) != before {
                    return Err(ctx("a failed call changed the committed state".into()));
                }
            }
            (Ok(_), None) => {}
        }
        if let Ok(Some(sl)) = &result {
            if let Some(want) = s.expect_slice
                && sl.id.get() != want
            {
                return Err(ctx(format!("slice id {}, expected {want}", sl.id.get())));
            }
            if let Some(want) = s.expect_device
                && sl.device.get() != want
            {
                return Err(ctx(format!(
                    "placed on {}, expected device {want}",
                    sl.device
                )));
            }
            if let Some(want) = &s.expect_extents_gib {
                let got: Vec<[u64; 2]> = sl
                    .extents
                    .iter()
                    .map(|e| [e.offset() / GIB, e.len() / GIB])
                    .collect();
                if &got != want {
                    return Err(ctx(format!("extents {got:?} GiB, expected {want:?}")));
                }
            }
        }
        if let Some(want) = s.expect_largest_allocatable_gib {
            let got = a.largest_allocatable().map_or(0, |x| x.1 / GIB);
            if got != want {
                return Err(ctx(format!(
                    "largest allocatable {got} GiB, expected {want}"
                )));
            }
        }
        if let Some(want) = s.expect_free_gib {
            let got = a.total_free() / GIB;
            if got != want {
                return Err(ctx(format!("total free {got} GiB, expected {want}")));
            }
        }
        common::check_invariants(&a).map_err(ctx)?;
    }
    Ok(())
}

fn load<T: for<'de> Deserialize<'de>>(file: &str) -> T {
    let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn allocator_scenarios() {
    let s: Scenarios = load("scenarios.toml");
    assert!(!s.case.is_empty());
    let failures: Vec<String> = s
        .case
        .iter()
        .filter_map(|c| run_case(c).err().map(|e| format!("[{}] {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[derive(Deserialize)]
struct SnapshotCases {
    case: Vec<SnapshotCase>,
}

#[derive(Deserialize)]
struct SnapshotCase {
    name: String,
    snapshot: Snapshot,
    expect_error: Option<String>,
}

#[test]
fn snapshot_validation() {
    let s: SnapshotCases = load("snapshots.toml");
    for c in &s.case {
        let r = Allocator::from_snapshot(&c.snapshot, AllocatorConfig::default());
        match (&r, &c.expect_error) {
            (Ok(a), None) => {
                assert_eq!(
                    a.snapshot(c.snapshot.last_seq).devices,
                    c.snapshot.devices,
                    "[{}] round trip",
                    c.name
                );
                common::check_invariants(a).unwrap_or_else(|e| panic!("[{}] {e}", c.name));
            }
            (Err(e), Some(want)) => {
                assert!(
                    e.to_string().contains(want.as_str()),
                    "[{}] error \"{e}\" lacks {want:?}",
                    c.name
                )
            }
            (Ok(_), Some(want)) => panic!(
                "[{}] accepted, expected an error containing {want:?}",
                c.name
            ),
            (Err(e), None) => panic!("[{}] refused: {e}", c.name),
        }
    }
}

#[derive(Deserialize)]
struct CephCases {
    case: Vec<CephCase>,
}

#[derive(Deserialize)]
struct CephCase {
    name: String,
    extents: Vec<u64>,
    expect: f64,
}

#[test]
fn ceph_fragmentation_reference_values() {
    let s: CephCases = load("ceph.toml");
    for c in &s.case {
        let got = ceph_fragmentation_score(c.extents.iter().copied());
        assert!(
            (got - c.expect).abs() < 1e-9,
            "[{}] score {got}, expected {}",
            c.name,
            c.expect
        );
    }
}

#[test]
fn huge_requests_are_refused_without_panicking() {
    let mut a = Allocator::new(AllocatorConfig {
        growth_headroom_percent: 100,
        ..AllocatorConfig::default()
    })
    .unwrap();
    a.add_device(DeviceSpec::from_parts(DeviceId::new(1), u64::MAX, 1, 0).unwrap())
        .unwrap();
    a.add_device(DeviceSpec::new(DeviceId::new(2), 100 * GIB).unwrap())
        .unwrap();
    let s = a.allocate(u64::MAX - 1, &Constraints::any()).unwrap();
    assert_eq!(s.device, DeviceId::new(1));
    let err = a.allocate(u64::MAX, &Constraints::any()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no device can hold 18446744073709551615 bytes"),
        "{err}"
    );
    let err = a.grow(s.id, u64::MAX).unwrap_err();
    assert!(
        err.to_string()
            .contains("by 1 bytes: 0 bytes are free directly after it"),
        "{err}"
    );
    let err = a.allocate_at(DeviceId::new(2), 0, u64::MAX).unwrap_err();
    assert!(
        err.to_string().contains("overflows when rounded up"),
        "{err}"
    );
    assert!(
        a.allocate(u64::MAX, &Constraints::any().with_multi_extent(true))
            .is_err()
    );
    common::check_invariants(&a).unwrap();
}
