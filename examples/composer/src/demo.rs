//! `composer demo`: the whole story on one machine with real mounts. A
//! controller and a node in this process over a small built-in inventory on
//! a temporary directory, with a JBOD agent exporting the drives over NBD
//! to the servers they are published to; volumes from several StorageClasses
//! (one of them over NBD through the agent) staged and
//! published through raid-engine + FUSE + loop + ext4; a data set written
//! through the mounted filesystems; a drive failed under the mirrored and
//! the striped volume; every byte verified; the repair plan applied and the
//! replacement rebuilt with a progress bar; verified again; torn down.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use composer_core::{Health, Inventory, MemStore};
use csi_types::prelude::*;
use csi_types::{
    controller::ControllerPublishVolumeRequest,
    ids::{NodeId, NodePath, VolumeId},
    node::{
        NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
        NodeUnstageVolumeRequest,
    },
    redact::Secrets,
    types::{AccessMode, CapacityRange, VolumeCapability},
};

use crate::ComposerDriver;
use crate::node::{Backend, ENCRYPTION_SECRET, NodeConfig};

/// The demo's inventory: two racks in two storage groups, one JBOD of ten
/// 256 MiB HDDs and one eBOD of four 1 GiB SSDs per rack, one server.
pub const DEMO_INVENTORY: &str = r#"
[[site]]
id = "dc1"

[[storage_group]]
id = "sg-a"
site = "dc1"

[[storage_group]]
id = "sg-b"
site = "dc1"

[[switch]]
id = "r1-tor"
site = "dc1"
bandwidth = "400 GB/s"

[[switch]]
id = "r2-tor"
site = "dc1"
bandwidth = "400 GB/s"

[[rack]]
id = "r1"
site = "dc1"
storage_group = "sg-a"
switch = "r1-tor"

[[rack]]
id = "r2"
site = "dc1"
storage_group = "sg-b"
switch = "r2-tor"

[[jbod]]
id = "r1-j1"
rack = "r1"

[[jbod.drive]]
count = 10
kind = "hdd"
capacity = "256 MiB"
rpm = 7200

[[jbod]]
id = "r1-e1"
rack = "r1"
kind = "ebod"

[[jbod.drive]]
count = 4
kind = "ssd"
capacity = "1 GiB"

[[jbod]]
id = "r2-j1"
rack = "r2"

[[jbod.drive]]
count = 10
kind = "hdd"
capacity = "256 MiB"
rpm = 7200

[[jbod]]
id = "r2-e1"
rack = "r2"
kind = "ebod"

[[jbod.drive]]
count = 4
kind = "ssd"
capacity = "1 GiB"

[[server]]
id = "r1-n1"
rack = "r1"
"#;

const NODE: &str = "r1-n1";

/// For tests that mount: whether this host can (root, `/dev/fuse`, loop
/// devices). When it cannot, prints why and answers false (the test then
/// passes), except under `CI=true`, where it panics: CI must not skip them.
#[doc(hidden)]
pub fn can_mount_in_tests() -> bool {
    let Some(why) = missing_prerequisite() else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but this host cannot mount: {why}"
    );
    eprintln!("SKIPPED: the node side needs root, FUSE and loop devices: {why}");
    false
}

/// What the demo needs that this host lacks (root, FUSE, loop), if anything.
pub fn missing_prerequisite() -> Option<String> {
    if !csi_node::is_root() {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if let Err(e) = csi_node::LoopDevice::check_available() {
        return Some(format!("no loop devices: {e}"));
    }
    None
}

/// A demo StorageClass: volume name, parameters, bytes.
type StorageClass = (&'static str, &'static [(&'static str, &'static str)], u64);

struct Vol {
    name: &'static str,
    id: String,
    staging: PathBuf,
    target: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
}

/// Runs the demo in `dir` (which it leaves empty of mounts), printing one
/// line per step to `out`. Returns the first failure.
pub async fn run(dir: &Path, out: &mut dyn Write) -> Result<(), String> {
    if let Some(why) = missing_prerequisite() {
        let _ = writeln!(
            out,
            "no kernel mounts here ({why}): the same story through the engine, without FUSE, \
             loop or a filesystem"
        );
        return run_engine_only(dir, out).await;
    }
    let inv = Inventory::from_toml(DEMO_INVENTORY).map_err(|e| e.to_string())?;
    let agent =
        crate::agent::JbodAgent::start(Arc::new(inv.clone()), &dir.join("drives"), "127.0.0.1:0")
            .map(Arc::new)
            .map_err(e)?;
    let driver = ComposerDriver::open(inv, Arc::new(MemStore::default()), Some(NODE))
        .map_err(|e| e.to_string())?
        .with_node_side(NodeConfig {
            data_dir: dir.join("drives"),
            run_dir: dir.join("run"),
            backend: Backend::Userspace,
        })
        .with_agent(agent.clone())
        .map_err(e)?;
    let _ = writeln!(out, "JBOD agent (NBD, allow-listed) on {}", agent.addr());
    let r = story(&driver, dir, out).await;
    agent.shutdown();
    csi_node::release_under(&dir.join("target"));
    csi_node::release_under(&dir.join("staging"));
    if let Some(s) = driver.node_side() {
        s.release_all();
    }
    csi_node::release_under(dir);
    r
}

/// The story without the kernel: the RAID1 and RAID10 volumes assembled by
/// the engine in this process, a data set written and read through the
/// engine, a drive failed under each, verified, rebuilt, verified.
pub async fn run_engine_only(dir: &Path, out: &mut dyn Write) -> Result<(), String> {
    let inv = Inventory::from_toml(DEMO_INVENTORY).map_err(e)?;
    let driver = ComposerDriver::open(inv, Arc::new(MemStore::default()), Some(NODE))
        .map_err(e)?
        .with_node_side(NodeConfig {
            data_dir: dir.join("drives"),
            run_dir: dir.join("run"),
            backend: Backend::Userspace,
        });
    let r = engine_story(&driver, out);
    if let Some(s) = driver.node_side() {
        s.release_all();
    }
    r
}

fn engine_story(d: &ComposerDriver, out: &mut dyn Write) -> Result<(), String> {
    let c = d.composer();
    let side = d.node_side().ok_or("no node side")?;
    for (i, (name, bytes)) in [("raid1", 200u64 << 20), ("raid10", 400 << 20)]
        .into_iter()
        .enumerate()
    {
        let t = Instant::now();
        let params: BTreeMap<String, String> = [("type", "hdd"), ("redundancy", "true")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = CapacityRange::new(Some(bytes), None)
            .map_err(e)
            .and_then(|range| c.create(name, &params, range, true, true, None).map_err(e))
            .and_then(|v| {
                side.assemble_unexposed(&v.record)
                    .map_err(e)
                    .map(|vol| (v, vol))
            });
        let (v, vol) = step(
            out,
            &format!("provision and assemble {name} (engine only)"),
            t,
            r,
        )?;
        let _ = writeln!(
            out,
            "                  {name}: {} on {}",
            v.layout.kind.name(),
            v.members
                .iter()
                .map(|m| m.drive.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // A data set: 32 MiB of a seeded xorshift stream in 1 MiB writes.
        let mut x = (i as u64 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let data: Vec<u8> = (0..(32 << 20) / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        let t = Instant::now();
        let r = data
            .chunks(1 << 20)
            .enumerate()
            .try_for_each(|(k, ch)| vol.write_at(ch, (k as u64) << 20))
            .and_then(|()| vol.flush())
            .map_err(e);
        step(out, &format!("write {} bytes to {name}", data.len()), t, r)?;
        let check = |what: &str, out: &mut dyn Write| {
            let t = Instant::now();
            let mut buf = vec![0u8; data.len()];
            let r = vol.read_at(&mut buf, 0).map_err(e).and_then(|()| {
                if buf == data {
                    Ok(())
                } else {
                    Err("data differs from what was written".into())
                }
            });
            step(out, &format!("verify every byte of {name} ({what})"), t, r)
        };
        let drive = v.members[v.members.len() - 1].drive.clone();
        let t = Instant::now();
        let r = c
            .mark(&drive, Health::Failed)
            .map_err(e)
            .and_then(|()| side.fail_drive(&drive).map(|_| ()).map_err(e));
        step(out, &format!("fail drive {drive} under {name}"), t, r)?;
        check("degraded", out)?;
        let t = Instant::now();
        let r = c
            .apply_repair(&drive)
            .map_err(e)
            .and_then(|_| c.get(&v.id).map_err(e));
        let rec = step(out, &format!("repair plan for {drive}"), t, r)?;
        let t = Instant::now();
        let r = side.rebuild_to(&rec, None, &|_, _| {}).map_err(e);
        step(out, &format!("rebuild {name}"), t, r)?;
        check("rebuilt", out)?;
    }
    Ok(())
}

fn step<T>(out: &mut dyn Write, what: &str, t: Instant, r: Result<T, String>) -> Result<T, String> {
    let secs = t.elapsed().as_secs_f64();
    let _ = match &r {
        Ok(_) => writeln!(out, "ok    {secs:7.2} s  {what}"),
        Err(e) => writeln!(out, "FAIL  {secs:7.2} s  {what}: {e}"),
    };
    r
}

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

fn secrets(encrypted: bool) -> Result<Secrets, String> {
    let mut m = BTreeMap::new();
    if encrypted {
        let mut key = [0u8; 32];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(e)?,
            &mut key,
        )
        .map_err(e)?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        m.insert(ENCRYPTION_SECRET.to_string(), hex);
    }
    Secrets::new(m).map_err(e)
}

async fn story(d: &ComposerDriver, dir: &Path, out: &mut dyn Write) -> Result<(), String> {
    let plugin = d.plugin().map_err(e)?;
    let classes: [StorageClass; 6] = [
        ("hdd-single", &[("type", "hdd")], 200 << 20),
        ("ssd-slice", &[("type", "slice")], 128 << 20),
        (
            "raid1",
            &[("type", "hdd"), ("redundancy", "true")],
            200 << 20,
        ),
        (
            "raid10",
            &[("type", "hdd"), ("redundancy", "true")],
            400 << 20,
        ),
        (
            "raid1-encrypted",
            &[("type", "hdd"), ("redundancy", "true"), ("encrypt", "true")],
            200 << 20,
        ),
        (
            "raid1-nbd",
            &[
                ("type", "hdd"),
                ("redundancy", "true"),
                ("networkTransportsAllowed", "nbd"),
            ],
            200 << 20,
        ),
    ];
    let cap = VolumeCapability::mount(AccessMode::SingleNodeWriter);
    let mut vols = Vec::new();
    let mut targets = Vec::new();
    for (name, params, bytes) in classes {
        let t = Instant::now();
        let r = async {
            let mut req = crate::create_request(name, params, bytes).map_err(e)?;
            req.volume_capabilities = vec![cap.clone()];
            let v = Csi::create_volume(&plugin, req).await.map_err(e)?.volume;
            let ctx = Csi::controller_publish_volume(
                &plugin,
                ControllerPublishVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    node_id: NodeId::new(NODE).map_err(e)?,
                    volume_capability: cap.clone(),
                    readonly: false,
                    secrets: Secrets::default(),
                    volume_context: v.volume_context.clone(),
                },
            )
            .await
            .map_err(e)?
            .publish_context;
            let staging = dir.join("staging").join(name);
            let target = dir.join("target").join(name);
            let path = |p: &Path| NodePath::new(p.to_string_lossy().as_ref()).map_err(e);
            Csi::node_stage_volume(
                &plugin,
                NodeStageVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    publish_context: ctx.clone(),
                    staging_target_path: path(&staging)?,
                    volume_capability: cap.clone(),
                    secrets: secrets(name.contains("encrypted"))?,
                    volume_context: v.volume_context.clone(),
                },
            )
            .await
            .map_err(e)?;
            Csi::node_publish_volume(
                &plugin,
                NodePublishVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    publish_context: ctx.clone(),
                    staging_target_path: Some(path(&staging)?),
                    target_path: path(&target)?,
                    volume_capability: cap.clone(),
                    readonly: false,
                    secrets: Secrets::default(),
                    volume_context: v.volume_context.clone(),
                },
            )
            .await
            .map_err(e)?;
            let rec = d.composer().get(v.volume_id.as_str()).map_err(e)?;
            let members: Vec<&str> = rec.members.iter().map(|m| m.drive.as_str()).collect();
            Ok::<_, String>((
                Vol {
                    name,
                    id: v.volume_id.as_str().to_string(),
                    staging,
                    target,
                    files: BTreeMap::new(),
                },
                format!("{} on {}", rec.layout.kind.name(), members.join(", ")),
            ))
        }
        .await;
        let (v, how) = step(out, &format!("provision, stage, publish {name}"), t, r)?;
        let _ = writeln!(out, "                  {name}: {how}");
        vols.push(v);
    }
    for (i, v) in vols.iter_mut().enumerate() {
        let t = Instant::now();
        let files = write_data(&v.target, i as u64 + 1);
        let what = match &files {
            Ok(f) => format!(
                "write {} files, {} bytes to {}",
                f.len(),
                f.values().map(Vec::len).sum::<usize>(),
                v.name
            ),
            Err(_) => format!("write the data set to {}", v.name),
        };
        v.files = step(out, &what, t, files)?;
    }
    for name in ["raid1", "raid10"] {
        let v = vols
            .iter()
            .find(|v| v.name == name)
            .ok_or("missing volume")?;
        let side = d.node_side().ok_or("no node side")?;
        let c = d.composer();
        let t = Instant::now();
        let rec = c.get(&v.id).map_err(e)?;
        let drive = rec.members[rec.members.len() - 1].drive.clone();
        let r = c
            .mark(&drive, Health::Failed)
            .map_err(e)
            .and_then(|()| side.fail_drive(&drive).map(|_| ()).map_err(e));
        step(out, &format!("fail drive {drive} under {name}"), t, r)?;
        let cond = side.condition(&v.id).map(|c| c.message).unwrap_or_default();
        let _ = writeln!(out, "                  condition: {cond}");
        let t = Instant::now();
        step(
            out,
            &format!("verify every byte of {name} (degraded)"),
            t,
            verify(v),
        )?;
        let t = Instant::now();
        let r = c
            .apply_repair(&drive)
            .map_err(e)
            .and_then(|_| c.get(&v.id).map_err(e));
        let rec = step(out, &format!("repair plan for {drive}"), t, r)?;
        let t = Instant::now();
        let progress = crate::admin::ProgressBar::new();
        let bar = |_: usize, p: raid_engine::Progress| progress.update(p.done_bytes, p.total_bytes);
        let r = side.rebuild_to(&rec, None, &bar).map(|roles| {
            progress.finish();
            roles
                .iter()
                .map(|r| rec.members[*r].drive.clone())
                .collect::<Vec<_>>()
                .join(", ")
        });
        let r = r.map_err(e);
        let onto = step(out, &format!("rebuild {name}"), t, r)?;
        targets.extend(onto.split(", ").map(str::to_string));
        let cond = side.condition(&v.id).map(|c| c.message).unwrap_or_default();
        let _ = writeln!(
            out,
            "                  rebuilt onto {onto}; condition: {cond}"
        );
        let t = Instant::now();
        step(
            out,
            &format!("verify every byte of {name} (rebuilt)"),
            t,
            verify(v),
        )?;
    }
    let t = Instant::now();
    let svg = std::env::temp_dir().join("composer-demo-inventory.svg");
    let r = std::fs::write(&svg, inventory_svg(d.composer(), &targets))
        .map_err(|er| format!("{}: {er}", storage_units::quote_path(&svg)));
    step(
        out,
        &format!("inventory picture written to {}", openable_path(&svg)),
        t,
        r,
    )?;
    let t = Instant::now();
    let r = async {
        for v in &vols {
            let path = |p: &Path| NodePath::new(p.to_string_lossy().as_ref()).map_err(e);
            Csi::node_unpublish_volume(
                &plugin,
                NodeUnpublishVolumeRequest {
                    volume_id: VolumeId::new(v.id.clone()).map_err(e)?,
                    target_path: path(&v.target)?,
                },
            )
            .await
            .map_err(e)?;
            Csi::node_unstage_volume(
                &plugin,
                NodeUnstageVolumeRequest {
                    volume_id: VolumeId::new(v.id.clone()).map_err(e)?,
                    staging_target_path: path(&v.staging)?,
                },
            )
            .await
            .map_err(e)?;
        }
        Ok(())
    }
    .await;
    step(out, "unpublish and unstage everything", t, r)
}

fn write_data(target: &Path, seed: u64) -> Result<BTreeMap<String, Vec<u8>>, String> {
    // A deterministic data set: 16 files of 64 KiB … 2 MiB from a xorshift stream.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut files = BTreeMap::new();
    for i in 0..16 {
        let len = (64 << 10) + (next() % (2 << 20)) as usize;
        let data: Vec<u8> = (0..len.div_ceil(8))
            .flat_map(|_| next().to_le_bytes())
            .take(len)
            .collect();
        let name = format!("file-{i:02}");
        let p = target.join(&name);
        std::fs::write(&p, &data)
            .map_err(|er| format!("{}: {er}", storage_units::quote_path(&p)))?;
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|er| format!("{}: {er}", storage_units::quote_path(&p)))?;
        files.insert(name, data);
    }
    Ok(files)
}

fn verify(v: &Vol) -> Result<(), String> {
    // Read through the volume, not the page cache.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    for (name, data) in &v.files {
        let p = v.target.join(name);
        let got =
            std::fs::read(&p).map_err(|er| format!("{}: {er}", storage_units::quote_path(&p)))?;
        if got != *data {
            return Err(format!(
                "{} differs from what was written",
                storage_units::quote_path(&p)
            ));
        }
    }
    Ok(())
}

/// An SVG picture of the inventory: one column per rack, one box per JBOD,
/// one cell per drive coloured by utilisation (grey empty, deeper blue
/// fuller), failed drives red with a cross, rebuild targets with a thick
/// green border; each drive's tooltip and the legend name the volumes on it.
pub fn inventory_svg(c: &composer_core::Composer, rebuilt: &[String]) -> String {
    use std::fmt::Write as _;
    let drives = c.drive_report();
    let file = c.inventory().file();
    let (cell, gap, per_row) = (26u32, 4u32, 8u32);
    let box_w = per_row * (cell + gap) + gap;
    let col_w = box_w + 30;
    let mut body = String::new();
    let mut height = 0u32;
    for (ri, rack) in file.racks.iter().enumerate() {
        let x0 = 20 + ri as u32 * col_w;
        let mut y = 50u32;
        let _ = write!(
            body,
            r#"<text x="{x0}" y="40" font-size="16" font-weight="bold">rack {}</text>"#,
            rack.id
        );
        for j in file.jbods.iter().filter(|j| j.rack == rack.id) {
            let ds: Vec<_> = drives.iter().filter(|d| d.jbod == j.id).collect();
            let rows = (ds.len() as u32).div_ceil(per_row).max(1);
            let h = 24 + rows * (cell + gap) + gap;
            let _ = write!(
                body,
                r##"<rect x="{x0}" y="{y}" width="{box_w}" height="{h}" rx="6" fill="#f8fafc" stroke="#475569"/><text x="{}" y="{}" font-size="12">{}</text>"##,
                x0 + 6,
                y + 16,
                j.id
            );
            for (k, d) in ds.iter().enumerate() {
                let cx = x0 + gap + (k as u32 % per_row) * (cell + gap);
                let cy = y + 24 + (k as u32 / per_row) * (cell + gap);
                let u = if d.capacity == 0 {
                    0.0
                } else {
                    d.used as f64 / d.capacity as f64
                };
                let failed = d.health == composer_core::Health::Failed;
                let fill = if failed {
                    "#dc2626".to_string()
                } else if d.used == 0 {
                    "#e5e7eb".to_string()
                } else {
                    let l = 80.0 - 45.0 * u.min(1.0);
                    format!("hsl(214,80%,{l:.0}%)")
                };
                let target = rebuilt.contains(&d.id);
                let (stroke, sw) = if target {
                    ("#16a34a", 3)
                } else {
                    ("#334155", 1)
                };
                let _ = write!(
                    body,
                    r#"<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" fill="{fill}" stroke="{stroke}" stroke-width="{sw}"><title>{} {:.0}% used{}{}{}</title></rect>"#,
                    d.id,
                    u * 100.0,
                    if d.volumes.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", d.volumes.join(", "))
                    },
                    if failed { " FAILED" } else { "" },
                    if target { " (rebuild target)" } else { "" },
                );
                if failed {
                    let _ = write!(
                        body,
                        r##"<path d="M{} {} L{} {} M{} {} L{} {}" stroke="#fff" stroke-width="2"/>"##,
                        cx + 5,
                        cy + 5,
                        cx + cell - 5,
                        cy + cell - 5,
                        cx + cell - 5,
                        cy + 5,
                        cx + 5,
                        cy + cell - 5
                    );
                }
            }
            y += h + 12;
        }
        height = height.max(y);
    }
    let mut lines = vec![
        "grey: empty · blue: in use (darker = fuller) · red with a cross: failed · green border: rebuild target"
            .to_string(),
    ];
    for v in c.records() {
        let members: Vec<&str> = v.members.iter().map(|m| m.drive.as_str()).collect();
        lines.push(format!(
            "{} ({}, {}): {}",
            v.name,
            v.id,
            v.layout.kind.name(),
            members.join(", ")
        ));
    }
    let mut legend = String::new();
    let mut ly = height + 4;
    for line in &lines {
        ly += 16;
        let _ = write!(
            legend,
            r#"<text x="20" y="{ly}" font-size="12">{line}</text>"#
        );
    }
    // Wide enough for the racks and for the longest legend line (about 7 px
    // per character at 12 px sans-serif), so no text is cut at the edge.
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let width = (40 + file.racks.len() as u32 * col_w).max(40 + 7 * longest);
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" font-family="sans-serif"><text x="20" y="20" font-size="14">composer demo: inventory after the failures and rebuilds</text>{body}{legend}</svg>
"#,
        ly + 20
    )
}

/// A path the user is told to open (the demo's picture): always whole, never
/// cut as [`storage_units::quote_path`] cuts a long path in a message (the
/// user copies it); bare by `quote_path`'s rule (not empty, no white space
/// at either end, nothing `{:?}` escapes), else quoted and escaped whole
/// (`{:?}`), so that a line break or a control character in it (`TMPDIR` is
/// the user's) cannot break the line or the terminal.
fn openable_path(path: &Path) -> String {
    match path.to_str() {
        // `{:?}` adds exactly the two quotes when it escapes nothing.
        Some(s) if !s.is_empty() && s.trim() == s && format!("{s:?}").len() == s.len() + 2 => {
            s.to_string()
        }
        _ => format!("{path:?}"),
    }
}

#[cfg(test)]
mod path_tests {
    use std::path::Path;

    /// The picture's path is printed whole however long, bare when plain,
    /// quoted and escaped when not. Before, it was printed raw (a line
    /// break in it broke the line).
    #[test]
    fn the_picture_path_is_whole_and_one_line() {
        let plain = "/tmp/composer-demo-inventory.svg";
        assert_eq!(super::openable_path(Path::new(plain)), plain);
        let deep = format!("/tmp/{}composer-demo-inventory.svg", "d/".repeat(200));
        assert_eq!(super::openable_path(Path::new(&deep)), deep);
        let odd = Path::new("/tmp/a b\nc/composer-demo-inventory.svg");
        let shown = super::openable_path(odd);
        assert_eq!(shown, r#""/tmp/a b\nc/composer-demo-inventory.svg""#);
        assert!(!shown.contains('\n'));
    }
}
