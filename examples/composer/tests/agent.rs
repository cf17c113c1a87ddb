//! The JBOD agent's allow-lists follow ControllerPublish, Unpublish and
//! Delete: a real NBD server (raid-engine's) exporting sparse drive files,
//! real NBD clients connecting from each server's own loopback address.

use std::sync::Arc;

use composer::ComposerDriver;
use composer::agent::{CONTEXT_AGENT, JbodAgent, connect_member, server_address};
use composer_core::{Inventory, MemStore, Store};
use csi_types::{controller::*, ids::*, prelude::*, redact::*, types::*};
use raid_engine::BlockDevice;

/// The demo's inventory with a second server, in the other rack.
fn inventory() -> Inventory {
    let text = format!(
        "{}\n[[server]]\nid = \"r2-n1\"\nrack = \"r2\"\n",
        composer::demo::DEMO_INVENTORY
    );
    Inventory::from_toml(&text).unwrap()
}

fn publish_req(id: &VolumeId, node: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: id.clone(),
        node_id: NodeId::new(node).unwrap(),
        volume_capability: VolumeCapability::block(AccessMode::SingleNodeWriter),
        readonly: false,
        secrets: Secrets::default(),
        volume_context: Default::default(),
    }
}

fn unpublish_req(id: &VolumeId, node: &str) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: id.clone(),
        node_id: Some(NodeId::new(node).unwrap()),
        secrets: Secrets::default(),
    }
}

fn address(inv: &Inventory, server: &str) -> std::net::IpAddr {
    server_address(inv.server_index(server).unwrap()).unwrap()
}

/// An agent over a temporary directory and a driver using it.
fn setup(store: Arc<dyn Store>) -> (tempfile::TempDir, Arc<JbodAgent>, ComposerDriver) {
    let dir = tempfile::tempdir().unwrap();
    let (agent, driver) = start(dir.path(), store).unwrap();
    (dir, agent, driver)
}

/// An agent with its drive files under `dir/drives` and a driver over
/// `store` using it (a controller started, or restarted, on the records).
fn start(
    dir: &std::path::Path,
    store: Arc<dyn Store>,
) -> Result<(Arc<JbodAgent>, ComposerDriver), CsiError> {
    let inv = inventory();
    let agent = Arc::new(JbodAgent::start(
        Arc::new(inv.clone()),
        &dir.join("drives"),
        "127.0.0.1:0",
    )?);
    let driver = ComposerDriver::open(inv, store, None)
        .unwrap()
        .with_agent(agent.clone())?;
    Ok((agent, driver))
}

/// Creates a volume with `params` (100 MiB).
async fn create(plugin: &Plugin, name: &str, params: &[(&str, &str)]) -> Volume {
    let req = composer::create_request(name, params, 100 << 20).unwrap();
    Csi::create_volume(plugin, req).await.unwrap().volume
}

const NBD_MIRROR: &[(&str, &str)] = &[("redundancy", "true"), ("networkTransportsAllowed", "nbd")];

/// A mirrored `nbd` volume created and controller-published to r1-n1.
async fn published_mirror(driver: &ComposerDriver) -> composer_core::store::VolumeRecord {
    let plugin = driver.plugin().unwrap();
    let vol = create(&plugin, "mirror", NBD_MIRROR).await;
    Csi::controller_publish_volume(&plugin, publish_req(&vol.volume_id, "r1-n1"))
        .await
        .unwrap();
    driver
        .composer()
        .get(vol.volume_id.as_str())
        .unwrap()
        .record
}

/// The servers allowed on each of `rec`'s drives, in member order.
fn grants(
    agent: &JbodAgent,
    rec: &composer_core::store::VolumeRecord,
) -> Vec<std::collections::BTreeSet<std::net::IpAddr>> {
    rec.members
        .iter()
        .map(|m| agent.allowed(&m.drive))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_servers_a_drive_is_published_to_can_open_it() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let (dir, agent, driver) = setup(store.clone());
    let inv = driver.composer().inventory().clone();
    let plugin = driver.plugin().unwrap();
    let vol = create(&plugin, "mirror", NBD_MIRROR).await;
    let rec = driver
        .composer()
        .get(vol.volume_id.as_str())
        .unwrap()
        .record;
    assert_eq!(rec.transport.name(), "nbd");
    let drives: Vec<String> = rec.members.iter().map(|m| m.drive.clone()).collect();
    let (n1, n2) = (address(&inv, "r1-n1"), address(&inv, "r2-n1"));
    assert_ne!(n1, n2);

    // Before any publish nobody may open a member.
    let addr = agent.addr().to_string();
    assert!(connect_member(&addr, &drives[0], n1).is_err());

    let ctx = Csi::controller_publish_volume(&plugin, publish_req(&vol.volume_id, "r1-n1"))
        .await
        .unwrap()
        .publish_context;
    assert_eq!(
        ctx.get(CONTEXT_AGENT).map(String::as_str),
        Some(addr.as_str())
    );
    for d in &drives {
        // The published server reads and writes its members ...
        let dev = connect_member(&addr, d, n1).unwrap();
        assert_eq!(dev.size(), 256 << 20);
        let data = vec![0xa5u8; 4096];
        dev.write_at(&data, 1 << 20).unwrap();
        let mut back = vec![0u8; 4096];
        dev.read_at(&mut back, 1 << 20).unwrap();
        assert_eq!(back, data);
        // ... and the other server is refused by the allow-list.
        let e = connect_member(&addr, d, n2).unwrap_err().to_string();
        assert!(e.contains("POLICY"), "{e}");
    }

    // Moved to the other server: the first is refused, the second connects.
    Csi::controller_unpublish_volume(&plugin, unpublish_req(&vol.volume_id, "r1-n1"))
        .await
        .unwrap();
    assert!(connect_member(&addr, &drives[0], n1).is_err());
    Csi::controller_publish_volume(&plugin, publish_req(&vol.volume_id, "r2-n1"))
        .await
        .unwrap();
    for d in &drives {
        connect_member(&addr, d, n2).unwrap();
        assert!(connect_member(&addr, d, n1).is_err());
    }

    // A controller restarted on the same records grants the same (the
    // first agent has stopped: its claims on the drive files went with it).
    agent.shutdown();
    let (agent2, again) = start(dir.path(), store.clone()).unwrap();
    for d in &drives {
        assert_eq!(agent2.allowed(d).into_iter().collect::<Vec<_>>(), vec![n2]);
    }
    let (agent, plugin) = (agent2, again.plugin().unwrap());
    let addr = agent.addr().to_string();
    connect_member(&addr, &drives[0], n2).unwrap();

    // Unpublished everywhere and deleted: nobody.
    Csi::controller_unpublish_volume(&plugin, unpublish_req(&vol.volume_id, "r2-n1"))
        .await
        .unwrap();
    assert!(connect_member(&addr, &drives[0], n2).is_err());
    Csi::delete_volume(
        &plugin,
        DeleteVolumeRequest {
            volume_id: vol.volume_id.clone(),
            secrets: Secrets::default(),
        },
    )
    .await
    .unwrap();
    for d in &drives {
        assert!(agent.allowed(d).is_empty());
    }
    agent.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_over_other_transports_grant_nothing() {
    let (_dir, agent, driver) = setup(Arc::new(MemStore::default()));
    let plugin = driver.plugin().unwrap();
    let vol = create(&plugin, "fast", &[("networkTransportsAllowed", "iscsi")]).await;
    let ctx = Csi::controller_publish_volume(&plugin, publish_req(&vol.volume_id, "r1-n1"))
        .await
        .unwrap()
        .publish_context;
    assert!(!ctx.contains_key(CONTEXT_AGENT));
    let rec = driver
        .composer()
        .get(vol.volume_id.as_str())
        .unwrap()
        .record;
    assert!(agent.allowed(&rec.members[0].drive).is_empty());
    agent.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_on_the_admin_socket_grants_the_replacement() {
    use composer::admin::{AfterRepair, Request, handle_with};
    let (_dir, agent, driver) = setup(Arc::new(MemStore::default()));
    let inv = driver.composer().inventory().clone();
    let plugin = driver.plugin().unwrap();
    let vol = create(&plugin, "mirror", NBD_MIRROR).await;
    Csi::controller_publish_volume(&plugin, publish_req(&vol.volume_id, "r1-n1"))
        .await
        .unwrap();
    let c = driver.composer();
    let before = c.get(vol.volume_id.as_str()).unwrap().record;
    let failed = before.members[1].drive.clone();
    c.mark(&failed, composer_core::Health::Failed).unwrap();
    let d = driver.clone();
    let hook: AfterRepair = Arc::new(move |c, v| d.after_repair(c, v));
    let answer = handle_with(
        c,
        None,
        Request::RepairApply {
            target: failed.clone(),
        },
        &|_| {},
        Some(&hook),
    );
    assert!(answer.get("ok").is_some(), "{answer}");
    let after = c.get(vol.volume_id.as_str()).unwrap().record;
    let new = after.members[1].drive.clone();
    assert_ne!(new, failed);
    let n1 = address(&inv, "r1-n1");
    assert!(agent.allowed(&new).contains(&n1));
    assert!(agent.allowed(&failed).is_empty());
    connect_member(&agent.addr().to_string(), &new, n1).unwrap();
    agent.shutdown();
}

/// The agent holds an exported volume's bytes of its drive files: a volume
/// whose members overlap them is refused with FAILED_PRECONDITION naming the
/// drive file, the range and the rule, and changes no grant; the first keeps
/// being served; once it is unpublished the second exports. Before, the
/// agent claimed nothing and exported both over the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_volume_holds_its_bytes_of_the_drives() {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let (dir, agent, driver) = setup(store.clone());
    let inv = driver.composer().inventory().clone();
    let rec = published_mirror(&driver).await;
    // Volume b over the second half of each of a's members, published to
    // the other server.
    let mut b = rec.clone();
    b.id = "vol-b".into();
    for m in &mut b.members {
        m.offset += m.len / 2;
        m.len /= 2;
    }
    b.published = [("r2-n1".to_string(), Default::default())]
        .into_iter()
        .collect();
    let (n1, n2) = (address(&inv, "r1-n1"), address(&inv, "r2-n1"));
    let m = &b.members[0];
    let err = agent.sync_volume("vol-b", Some(&b)).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = err.to_string();
    let file = dir.path().join("drives").join(format!("{}.img", m.drive));
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("{}..", m.offset)),
        "no range in: {err}"
    );
    assert!(
        err.contains("a byte of a drive belongs to one volume"),
        "{err}"
    );
    // Nothing of b was granted; a is served as before.
    let addr = agent.addr().to_string();
    for m in &b.members {
        assert_eq!(
            agent.allowed(&m.drive).into_iter().collect::<Vec<_>>(),
            vec![n1]
        );
        assert!(connect_member(&addr, &m.drive, n2).is_err());
        connect_member(&addr, &m.drive, n1).unwrap();
    }

    let plugin = driver.plugin().unwrap();
    let id = VolumeId::new(&rec.id).unwrap();
    Csi::controller_unpublish_volume(&plugin, unpublish_req(&id, "r1-n1"))
        .await
        .unwrap();
    agent.sync_volume("vol-b", Some(&b)).unwrap();
    connect_member(&addr, &b.members[0].drive, n2).unwrap();
    agent.shutdown();
}

/// An agent restarted while another holder has one volume's bytes of a
/// drive file still exports every other volume, and says which it could
/// not: start-up does not stop at the first refusal. The refused volume is
/// granted at its next ControllerPublish once the holder lets go. Before,
/// the first refusal ended the start-up and every later volume stayed
/// ungranted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_grants_every_volume_it_can() {
    use raid_engine::{CacheMode, ClaimHolder, FileDevice};
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let (dir, agent, driver) = setup(store.clone());
    let inv = driver.composer().inventory().clone();
    let plugin = driver.plugin().unwrap();
    for name in ["one", "two", "three"] {
        let vol = create(&plugin, name, NBD_MIRROR).await;
        Csi::controller_publish_volume(&plugin, publish_req(&vol.volume_id, "r1-n1"))
            .await
            .unwrap();
    }
    agent.shutdown();
    // The first volume the start-up meets: another holder has its first
    // member's bytes.
    let records = driver.composer().records();
    let held = &records[0];
    let m = &held.members[0];
    let file = dir.path().join("drives").join(format!("{}.img", m.drive));
    let other = FileDevice::open(&file, CacheMode::Buffered).unwrap();
    let claim = other
        .claim_range(&ClaimHolder::new("another exporter"), m.offset, m.len)
        .unwrap();

    let (agent2, again) =
        start(dir.path(), store.clone()).expect("the agent starts with what it can grant");
    let refused = agent2.sync_all(again.composer()).unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, held.id);
    assert_eq!(refused[0].1.code(), Code::FailedPrecondition);
    assert!(
        refused[0].1.to_string().contains("another exporter"),
        "{}",
        refused[0].1
    );
    // Every other volume is served to its server.
    let n1 = address(&inv, "r1-n1");
    let addr = agent2.addr().to_string();
    for r in &records[1..] {
        for m in &r.members {
            assert!(agent2.allowed(&m.drive).contains(&n1), "{}", r.id);
            connect_member(&addr, &m.drive, n1).unwrap();
        }
    }
    // A publish meanwhile answers the refusal as it is (was INTERNAL).
    let plugin = again.plugin().unwrap();
    let id = VolumeId::new(&held.id).unwrap();
    let err = Csi::controller_publish_volume(&plugin, publish_req(&id, "r1-n1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("another exporter"), "{err}");
    // The holder lets go: the CO's retry of the publish grants it.
    drop(claim);
    Csi::controller_publish_volume(&plugin, publish_req(&id, "r1-n1"))
        .await
        .unwrap();
    for m in &held.members {
        assert!(agent2.allowed(&m.drive).contains(&n1));
    }
    assert!(agent2.sync_all(again.composer()).unwrap().is_empty());
    agent2.shutdown();
}

/// A volume whose member lies past the end of its drive file (the
/// inventory gives the drive fewer bytes than the record uses) is refused
/// with FAILED_PRECONDITION naming the drive, its size and the range, and
/// changes no grant. Before, it was INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_past_the_end_of_its_drive_is_a_failed_precondition() {
    let (_dir, agent, driver) = setup(Arc::new(MemStore::default()));
    let rec = published_mirror(&driver).await;
    let mut past = rec.clone();
    past.id = "vol-past".into();
    let size = 256u64 << 20;
    past.members[0].offset = size - 4096;
    let before = grants(&agent, &rec);
    let err = agent.sync_volume("vol-past", Some(&past)).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = err.to_string();
    let m = &past.members[0];
    assert!(err.contains(&format!("drive {}", m.drive)), "{err}");
    assert!(err.contains(&format!("{size} bytes")), "no size: {err}");
    assert!(
        err.contains(&format!("{}..{}", m.offset, m.offset + m.len)),
        "no range: {err}"
    );
    let after = grants(&agent, &rec);
    assert_eq!(before, after);
    agent.shutdown();
}

/// A record that names a drive or a node the inventory does not have (the
/// inventory edited under the volumes) is FAILED_PRECONDITION naming it,
/// and changes no grant. Before, both were INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_or_node_missing_from_the_inventory_is_a_failed_precondition() {
    let (_dir, agent, driver) = setup(Arc::new(MemStore::default()));
    let rec = published_mirror(&driver).await;
    let granted = grants(&agent, &rec);
    let mut gone_drive = rec.clone();
    gone_drive.members[1].drive = "r9-gone".into();
    let err = agent.sync_volume(&rec.id, Some(&gone_drive)).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("drive r9-gone"), "{err}");
    let mut gone_node = rec.clone();
    gone_node.published = [("r9-n1".to_string(), Default::default())]
        .into_iter()
        .collect();
    let err = agent.sync_volume(&rec.id, Some(&gone_node)).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("node r9-n1"), "{err}");
    let after = grants(&agent, &rec);
    assert_eq!(granted, after);
    agent.shutdown();
}

/// The drives of `rec` open to `ip`.
fn granted_to(
    agent: &JbodAgent,
    rec: &composer_core::store::VolumeRecord,
    ip: std::net::IpAddr,
) -> Vec<String> {
    rec.members
        .iter()
        .filter(|m| agent.allowed(&m.drive).contains(&ip))
        .map(|m| m.drive.clone())
        .collect()
}

/// A ControllerPublish of `rec` to r1-n1 once nothing refuses it: recorded,
/// and every drive of it granted to r1-n1; then the agent stops.
async fn publish_again_grants(
    driver: &ComposerDriver,
    agent: &JbodAgent,
    rec: &composer_core::store::VolumeRecord,
) {
    let id = VolumeId::new(&rec.id).unwrap();
    Csi::controller_publish_volume(&driver.plugin().unwrap(), publish_req(&id, "r1-n1"))
        .await
        .unwrap();
    let after = driver.composer().get(&rec.id).unwrap();
    assert_eq!(after.published.keys().collect::<Vec<_>>(), ["r1-n1"]);
    let n1 = address(driver.composer().inventory(), "r1-n1");
    assert_eq!(granted_to(agent, rec, n1).len(), rec.members.len());
    agent.shutdown();
}

/// "another exporter" holds `rec`'s bytes of its first member's drive file
/// (under `dir/drives`, the agent's), until the returned claim is dropped.
fn hold_first_member(
    dir: &std::path::Path,
    rec: &composer_core::store::VolumeRecord,
) -> (raid_engine::FileDevice, raid_engine::Claim) {
    use raid_engine::{CacheMode, ClaimHolder, FileDevice};
    let m = &rec.members[0];
    let drives = dir.join("drives");
    std::fs::create_dir_all(&drives).unwrap();
    let file = drives.join(format!("{}.img", m.drive));
    std::fs::File::create(&file)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let other = FileDevice::open(&file, CacheMode::Buffered).unwrap();
    let claim = other
        .claim_range(&ClaimHolder::new("another exporter"), m.offset, m.len)
        .unwrap();
    (other, claim)
}

/// A ControllerPublish the agent refuses (another holder has the volume's
/// bytes of a drive file) changes no record: the volume stays unpublished,
/// so the refused call left nothing behind, and the retry once the holder
/// lets go publishes and grants it. Before, the refused publish stayed
/// recorded as published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_agent_refuses_records_nothing() {
    let (dir, agent, driver) = setup(Arc::new(MemStore::default()));
    let inv = driver.composer().inventory().clone();
    let plugin = driver.plugin().unwrap();
    let vol = create(&plugin, "held", NBD_MIRROR).await;
    let rec = driver
        .composer()
        .get(vol.volume_id.as_str())
        .unwrap()
        .record;
    let claim = hold_first_member(dir.path(), &rec);

    let err = Csi::controller_publish_volume(&plugin, publish_req(&vol.volume_id, "r1-n1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("another exporter"), "{err}");
    let after = driver.composer().get(vol.volume_id.as_str()).unwrap();
    assert!(after.published.is_empty(), "{:?}", after.published);
    let n1 = address(&inv, "r1-n1");
    assert!(granted_to(&agent, &rec, n1).is_empty());

    drop(claim);
    publish_again_grants(&driver, &agent, &rec).await;
}

/// A store that takes `left` more commits and then refuses every one, as a
/// store whose disk went read-only does, until `left` is `None` again.
#[derive(Default)]
struct RefusingStore {
    inner: MemStore,
    left: std::sync::Mutex<Option<usize>>,
}

impl Store for RefusingStore {
    fn load(&self) -> Result<composer_core::StoredState, composer_core::Error> {
        self.inner.load()
    }

    fn commit(&self, batch: composer_core::Batch) -> Result<u64, composer_core::Error> {
        {
            let mut left = self.left.lock().unwrap();
            match *left {
                Some(0) => {
                    return Err(composer_core::Error::Unavailable(
                        "the store refuses writes: its disk is read-only".into(),
                    ));
                }
                Some(n) => *left = Some(n - 1),
                None => {}
            }
        }
        self.inner.commit(batch)
    }
}

/// A ControllerPublish the agent refuses, whose undo of the publication the
/// store then refuses too, answers the agent's refusal (the cause the CO can
/// act on), not the store's error; the agent grants nothing, and the retry
/// once the store and the drive are free publishes and grants. Before, the
/// CO was told UNAVAILABLE from the store and never saw why the agent
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_whose_undo_fails_answers_the_agents_refusal() {
    let store = Arc::new(RefusingStore::default());
    let (dir, agent, driver) = setup(store.clone());
    let inv = driver.composer().inventory().clone();
    let plugin = driver.plugin().unwrap();
    let vol = create(&plugin, "held", NBD_MIRROR).await;
    let rec = driver
        .composer()
        .get(vol.volume_id.as_str())
        .unwrap()
        .record;
    let claim = hold_first_member(dir.path(), &rec);

    // The publication is recorded; its undo is refused.
    *store.left.lock().unwrap() = Some(1);
    let err = Csi::controller_publish_volume(&plugin, publish_req(&vol.volume_id, "r1-n1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("another exporter"), "{err}");
    let n1 = address(&inv, "r1-n1");
    assert!(granted_to(&agent, &rec, n1).is_empty());

    *store.left.lock().unwrap() = None;
    drop(claim);
    publish_again_grants(&driver, &agent, &rec).await;
}
