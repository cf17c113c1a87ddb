//! Resident memory per placed volume: builds a 100,000-drive inventory (100 racks × 10 JBODs ×
//! 100 drives), places `PLACEMENT_MEMORY_VOLUMES` volumes (default 1,500,000; a mix of RAID1
//! with rack separation and 4×2 RAID10 with JBOD separation, four distinct requests) and prints
//! the resident set size read from `/proc/self/statm` (Linux) before and after, and the
//! difference per volume, and the inline sizes of a request and a volume record.
//!
//! ```text
//! cargo run --release -p placement --example memory
//! ```

use placement::*;

const TB: u64 = 1_000_000_000_000;
const GB: u64 = 1_000_000_000;

/// Resident set size in bytes, from `/proc/self/statm` (second field, in pages of 4 KiB).
fn rss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn inventory() -> Result<Inventory, Box<dyn std::error::Error>> {
    let mut spec = InventorySpec::default();
    for r in 0..100 {
        let rack = format!("r{r:03}");
        spec.domains.push(DomainSpec {
            id: DomainId::new(rack.clone())?,
            level: "rack".into(),
            parent: None,
        });
        for j in 0..10 {
            let jbod = format!("{rack}-j{j}");
            spec.domains.push(DomainSpec {
                id: DomainId::new(jbod.clone())?,
                level: "jbod".into(),
                parent: Some(DomainId::new(rack.clone())?),
            });
            for d in 0..100 {
                spec.drives.push(DriveSpec {
                    id: DriveId::new(format!("{jbod}-d{d:03}"))?,
                    kind: DriveKind::Hdd,
                    capacity: Bytes(20 * TB),
                    free: Bytes(20 * TB),
                    rpm: 7200,
                    tags: vec![],
                    transports: Transports::all(),
                    health: Health::Healthy,
                    domain: Some(DomainId::new(jbod.clone())?),
                    group: None,
                    bandwidth_domains: vec![],
                    attributes: Default::default(),
                });
            }
        }
    }
    Ok(Inventory::from_spec(spec)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::var("PLACEMENT_MEMORY_VOLUMES") {
        Ok(v) => v.parse()?,
        Err(_) => 1_500_000,
    };
    let requests = [
        Request::new(Shape::Mirror { legs: 2 }, 100 * GB).separate("rack", Mode::Hard),
        Request::new(Shape::Mirror { legs: 2 }, 200 * GB).separate("rack", Mode::Hard),
        Request::new(
            Shape::Raid10 {
                stripes: 4,
                mirrors: 2,
            },
            50 * GB,
        )
        .separate("jbod", Mode::Hard)
        .separate("rack", Mode::Soft),
        Request::new(
            Shape::Raid10 {
                stripes: 4,
                mirrors: 2,
            },
            25 * GB,
        )
        .separate("jbod", Mode::Hard),
    ];
    let mut engine = Engine::new(inventory()?, 1)?;
    let before = rss().ok_or("cannot read /proc/self/statm")?;
    let start = std::time::Instant::now();
    for i in 0..n {
        let id = VolumeId::new(format!("pvc-{i:08}"))?;
        engine.place(id, &requests[i % requests.len()])?;
    }
    let elapsed = start.elapsed();
    let after = rss().ok_or("cannot read /proc/self/statm")?;
    let per = after.saturating_sub(before) as f64 / n.max(1) as f64;
    println!(
        "volumes {n}  placed in {:.1} s  rss before {:.1} MiB  after {:.1} MiB  per volume {per:.0} bytes",
        elapsed.as_secs_f64(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!(
        "inline sizes: Request {} bytes, VolumeSpec {} bytes, DriveId {} bytes",
        std::mem::size_of::<Request>(),
        std::mem::size_of::<VolumeSpec>(),
        std::mem::size_of::<DriveId>()
    );
    Ok(())
}
