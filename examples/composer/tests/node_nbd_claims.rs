//! A volume whose members are reached over NBD (the JBOD agent) holds its
//! ranges of the drives in the node process, as a local volume holds its
//! ranges of the drive files: a second assembly of the same ranges (a second
//! node side in the process, a stale record, an overlapping record) is
//! refused with FAILED_PRECONDITION naming the drive, the range and the
//! rule, while the first volume keeps working; once it is released the
//! ranges assemble again. Before, an NBD member claimed nothing on the node
//! and both assemblies wrote the same bytes. A member past the end of its
//! drive is FAILED_PRECONDITION naming the drive, its size and the range
//! (was INTERNAL). Through the engine alone (`assemble_unexposed`): no root,
//! FUSE or loop device needed.

use composer::node::NodeSide;
use composer_core::store::VolumeRecord;
use csi_types::Code;

mod common;

/// Releases what each node side assembled when dropped, so that a failing
/// assertion leaves no claim or connection behind.
struct Release<'a>(Vec<&'a NodeSide>);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        for s in &self.0 {
            s.release_all();
        }
    }
}

/// A mirrored `nbd` volume created and controller-published to r1-n1 (the
/// agent grants its drives to r1-n1), with the agent's address.
async fn published_mirror(s: &common::InProcess) -> (VolumeRecord, String) {
    let params = [("redundancy", "true"), ("networkTransportsAllowed", "nbd")];
    let (id, ctx) = common::create_published(&s.plugin, "mirror", &params, 64 << 20).await;
    let agent = ctx.get(composer::agent::CONTEXT_AGENT).unwrap().clone();
    (s.driver.composer().get(&id).unwrap().record, agent)
}

/// r1-n1's own address, which the agent allows.
fn source(s: &common::InProcess) -> std::net::IpAddr {
    let inv = s.driver.composer().inventory();
    composer::agent::server_address(inv.server_index("r1-n1").unwrap()).unwrap()
}

/// An address nobody listens on (a port bound, then let go).
fn gone_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_over_nbd_holds_its_ranges_of_the_drives_in_the_node() {
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap();
    let (rec, agent) = published_mirror(&s).await;
    let src = source(&s);
    let other = NodeSide::new(side.config().clone());
    let _release = Release(vec![side, &other]);

    side.set_remote(&rec.id, &agent, src).unwrap();
    let v = side.assemble_unexposed(&rec).unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    v.write_at(&data, 0).unwrap();

    // A second node side of this process assembling the same volume.
    other.set_remote(&rec.id, &agent, src).unwrap();
    let err = other.assemble_unexposed(&rec).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = err.to_string();
    let m = &rec.members[0];
    assert!(err.contains(&format!("drive {}", m.drive)), "{err}");
    assert!(
        err.contains(&format!("bytes {}..", m.offset)),
        "no range in: {err}"
    );
    assert!(
        err.contains("is in use by") && err.contains("a byte of a drive belongs to one volume"),
        "{err}"
    );

    // A record over the second half of each member and the first half of
    // the space after it: refused in the same node side too.
    let mut half = rec.clone();
    half.id = "vol-half".into();
    for m in &mut half.members {
        m.offset += m.len / 2;
    }
    side.set_remote(&half.id, &agent, src).unwrap();
    let err = side.assemble_unexposed(&half).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains(&rec.id), "names the holder: {err}");

    // The first volume is untouched and keeps working.
    let mut got = vec![0u8; 65536];
    v.read_at(&mut got, 0).unwrap();
    assert!(got == data);
    drop(v);

    // Released, the ranges assemble again (the refusals held nothing).
    side.release_all();
    let again = other.assemble_unexposed(&rec).unwrap();
    again.read_at(&mut got, 0).unwrap();
    assert!(got == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_past_the_end_of_its_drive_over_nbd_is_a_failed_precondition() {
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap();
    let _release = Release(vec![side]);
    let (rec, agent) = published_mirror(&s).await;
    let mut past = rec.clone();
    past.id = "vol-past".into();
    let capacity = s.driver.composer().inventory().drives()[s
        .driver
        .composer()
        .inventory()
        .drive_index(&past.members[1].drive)
        .unwrap() as usize]
        .capacity;
    past.members[1].offset = capacity - 4096;
    side.set_remote(&past.id, &agent, source(&s)).unwrap();
    let err = side.assemble_unexposed(&past).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = err.to_string();
    let m = &past.members[1];
    assert!(err.contains(&format!("drive {}", m.drive)), "{err}");
    assert!(err.contains(&format!("{capacity} bytes")), "no size: {err}");
    assert!(
        err.contains(&format!("{}..{}", m.offset, m.offset + m.len)),
        "no range: {err}"
    );
    // Nothing of it stayed claimed: the real volume assembles.
    side.set_remote(&rec.id, &agent, source(&s)).unwrap();
    side.assemble_unexposed(&rec).unwrap();
}

/// A member the agent does not export to this server (the volume is not
/// granted here) is FAILED_PRECONDITION saying so, and an agent that cannot
/// be reached is UNAVAILABLE, for the CO to retry; each names the volume,
/// the drive and the agent. Before, both were INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_refuses_or_is_gone_is_a_clear_error() {
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap();
    let _release = Release(vec![side]);
    let (rec, agent) = published_mirror(&s).await;
    // Unpublished: the agent exports the drives to nobody.
    csi_types::prelude::Csi::controller_unpublish_volume(
        &s.plugin,
        csi_types::controller::ControllerUnpublishVolumeRequest {
            volume_id: csi_types::ids::VolumeId::new(&rec.id).unwrap(),
            node_id: None,
            secrets: Default::default(),
        },
    )
    .await
    .unwrap();
    side.set_remote(&rec.id, &agent, source(&s)).unwrap();
    let err = side.assemble_unexposed(&rec).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("drive {}", rec.members[0].drive)),
        "{msg}"
    );
    assert!(
        msg.contains(&agent) && msg.contains("does not export"),
        "{msg}"
    );

    // An agent address nobody listens on (the agent's, once it stopped).
    common::controller_publish(&s.plugin, &rec.id).await;
    let gone = gone_address();
    side.set_remote(&rec.id, &gone, source(&s)).unwrap();
    let err = side.assemble_unexposed(&rec).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains(&gone), "{err}");
    // The agent back: it assembles.
    side.set_remote(&rec.id, &agent, source(&s)).unwrap();
    side.assemble_unexposed(&rec).unwrap();
}

/// A publish context whose agent is not `host:port`, or names a host that
/// does not resolve, is INVALID_ARGUMENT naming the key at NodeStageVolume.
/// Before, the stage tried to connect and answered INTERNAL, for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_agent_in_the_publish_context_is_an_invalid_argument() {
    let s = common::InProcess::with_agent();
    let (rec, _) = published_mirror(&s).await;
    for bad in [
        "no-port",
        "127.0.0.1:",
        "127.0.0.1:0",
        ":10809",
        "host:99999",
        "no-such-agent.invalid:10809",
    ] {
        let v = common::Vol {
            id: rec.id.clone(),
            staging: s.dir.path().join("staging").join("mirror"),
            target: s.dir.path().join("target").join("mirror"),
        };
        let ctx = [(composer::agent::CONTEXT_AGENT.to_string(), bad.to_string())]
            .into_iter()
            .collect();
        let err = common::stage_with(&s.plugin, &v, &ctx).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err}");
        let msg = err.to_string();
        assert!(msg.contains("nbdAgent") && msg.contains(bad), "{msg}");
        assert!(!s.driver.node_side().unwrap().is_staged(&rec.id));
    }
}

/// One agent spelled by name and by address is one agent: a volume
/// assembled from `127.0.0.1:PORT` holds its ranges against a second
/// assembly from `localhost:PORT`. Before, the claims were keyed by the
/// spelling, and both assemblies wrote the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_spelled_by_name_and_by_address_is_one_agent() {
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap();
    let (rec, agent) = published_mirror(&s).await;
    let src = source(&s);
    let other = NodeSide::new(side.config().clone());
    let _release = Release(vec![side, &other]);
    let port = agent
        .strip_prefix("127.0.0.1:")
        .expect("the agent listens on 127.0.0.1");
    let by_name = format!("localhost:{port}");
    // The test's premise: this host resolves localhost to the agent's address.
    let resolved: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&by_name[..])
        .unwrap()
        .map(|a| a.to_string())
        .collect();
    assert!(
        resolved.contains(&agent),
        "{by_name} resolves to {resolved:?}"
    );

    side.set_remote(&rec.id, &agent, src).unwrap();
    let _v = side.assemble_unexposed(&rec).unwrap();
    other.set_remote(&rec.id, &by_name, src).unwrap();
    let err = other.assemble_unexposed(&rec).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let err = err.to_string();
    assert!(err.contains("is in use by"), "{err}");
    assert!(err.contains(&agent), "names the resolved agent: {err}");
}

/// A NodeStageVolume refused after it read the publish context's agent
/// (a capability's fs_type the composer does not make, a staging path that
/// is a file) leaves the agent the node reaches the volume's members from
/// as it was: the next assembly still reaches the agent it had. Before, the
/// refused stage recorded its agent first, and the volume was then reached
/// at an address that was never staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stage_over_nbd_leaves_the_agent_the_node_had() {
    use csi_types::prelude::Csi;
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap();
    let _release = Release(vec![side]);
    let (rec, agent) = published_mirror(&s).await;
    // The address a refused stage names.
    let gone = gone_address();
    let ctx: csi_types::types::Map = [(composer::agent::CONTEXT_AGENT.to_string(), gone.clone())]
        .into_iter()
        .collect();
    let file = s.dir.path().join("staging-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let refusals = [
        (
            s.dir.path().join("staging").join("mirror"),
            "btrfs",
            Code::InvalidArgument,
        ),
        (file, "ext4", Code::FailedPrecondition),
    ];
    for (staging, fs, code) in refusals {
        // Recorded for each round: the unstage below forgets it.
        side.set_remote(&rec.id, &agent, source(&s)).unwrap();
        let err = Csi::node_stage_volume(
            &s.plugin,
            csi_types::node::NodeStageVolumeRequest {
                volume_id: csi_types::ids::VolumeId::new(&rec.id).unwrap(),
                publish_context: ctx.clone(),
                staging_target_path: common::np(&staging),
                volume_capability: csi_types::types::VolumeCapability::mount(
                    csi_types::types::AccessMode::SingleNodeWriter,
                )
                .with_fs_type(fs),
                secrets: Default::default(),
                volume_context: Default::default(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), code, "{fs} at {}: {err}", staging.display());
        assert!(!side.is_staged(&rec.id));
        // Still reached from the agent it had, not from `gone`.
        assert_eq!(side.agent_of(&rec.id), Some((agent.clone(), source(&s))));
        let v = side
            .assemble_unexposed(&rec)
            .unwrap_or_else(|e| panic!("after the refusal ({fs}): {e}"));
        drop(v);
        side.release_all();
    }
}

/// An unstage forgets the agent the node reached the volume's members from:
/// the node side's record of agents does not grow with every volume ever
/// staged, and a volume id created again is reached from the agent its next
/// stage names, never from an old one. Before, the entry stayed for the
/// node's life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstage_forgets_the_agent_of_the_volume() {
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap();
    let _release = Release(vec![side]);
    let (rec, agent) = published_mirror(&s).await;
    let src = source(&s);
    side.set_remote(&rec.id, &agent, src).unwrap();
    let v = side.assemble_unexposed(&rec).unwrap();
    drop(v);
    assert_eq!(side.agent_of(&rec.id), Some((agent.clone(), src)));
    // An unstage at another path unstages nothing and keeps it.
    side.unstage(&rec.id, std::path::Path::new("/elsewhere"))
        .unwrap();
    assert!(side.is_staged(&rec.id));
    assert_eq!(side.agent_of(&rec.id), Some((agent.clone(), src)));
    side.unstage(&rec.id, std::path::Path::new("")).unwrap();
    assert!(!side.is_staged(&rec.id));
    assert_eq!(side.agent_of(&rec.id), None, "forgotten at the unstage");
    // Not recorded, the members are not reached over NBD: recorded again,
    // the volume assembles from the agent as before.
    side.set_remote(&rec.id, &agent, src).unwrap();
    side.assemble_unexposed(&rec).unwrap();
}

/// The volumes a "waits for the call in progress" event of the node side
/// named, sent as they are logged (this test binary's global subscriber).
static WAITS: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>> =
    std::sync::Mutex::new(None);

struct Waits;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Waits {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            volume: Option<String>,
            message: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                if f.name() == "volume" {
                    self.volume = Some(v.to_string());
                }
            }
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.message = format!("{v:?}");
                }
            }
        }
        let mut fields = Fields::default();
        e.record(&mut fields);
        if let Some(v) = fields.volume
            && fields.message.contains("waits for the call")
            && let Some(tx) = WAITS.lock().unwrap().as_ref()
        {
            let _ = tx.send(v);
        }
    }
}

/// Two NodeStageVolume-like calls of one `nbd` volume do not cross: while a
/// stage that is refused in the end is in progress (it recorded its agent
/// and hangs connecting to it), a second record of the volume's agent waits
/// for it, and afterwards the volume is reached from the agent the second
/// one committed. Before, the second committed at once and the refused
/// stage's undo then put back what it had seen (no agent) over it. Observed
/// through an agent address the test holds the connection of, and the node
/// side's log of a call that waits: no timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stage_does_not_undo_what_a_concurrent_call_committed() {
    use csi_types::prelude::Csi;
    use tracing_subscriber::layer::SubscriberExt;
    let (waits_tx, mut waits) = tokio::sync::mpsc::unbounded_channel();
    *WAITS.lock().unwrap() = Some(waits_tx);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Waits)).unwrap();
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap().clone();
    let _release = Release(vec![&*side]);
    let (rec, agent) = published_mirror(&s).await;
    let src = source(&s);
    // An "agent" that accepts and never answers, until the test lets go.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap().to_string();
    let ctx: csi_types::types::Map = [(composer::agent::CONTEXT_AGENT.to_string(), hung_addr)]
        .into_iter()
        .collect();
    let plugin = s.plugin.clone();
    let staging = s.dir.path().join("staging").join("mirror");
    let id = rec.id.clone();
    let first = tokio::spawn(async move {
        Csi::node_stage_volume(
            &plugin,
            csi_types::node::NodeStageVolumeRequest {
                volume_id: csi_types::ids::VolumeId::new(&id).unwrap(),
                publish_context: ctx,
                staging_target_path: common::np(&staging),
                volume_capability: common::cap(),
                secrets: Default::default(),
                volume_context: Default::default(),
            },
        )
        .await
    });
    // The first stage recorded its agent and is connecting to it.
    let (conn, _) = hung.accept().await.unwrap();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let (side2, id, agent2) = (side.clone(), rec.id.clone(), agent.clone());
    let second = std::thread::spawn(move || {
        let r = side2.set_remote(&id, &agent2, src);
        let _ = done_tx.send(());
        r
    });
    tokio::select! {
        _ = done => {}
        v = waits.recv() => assert_eq!(v.as_deref(), Some(rec.id.as_str())),
    }
    // The first stage's agent hangs up: that stage is refused.
    drop(conn);
    let err = first.await.unwrap().unwrap_err();
    assert!(!side.is_staged(&rec.id), "{err}");
    second.join().unwrap().unwrap();
    assert_eq!(
        side.agent_of(&rec.id),
        Some((agent.clone(), src)),
        "the committed agent stays (the refused stage failed with: {err})"
    );
    side.assemble_unexposed(&rec).unwrap();
}

/// A NodeStageVolume of a volume this node serves already (the CO's retry)
/// answers for the volume as it is: the agent its members are reached from
/// stays the one it was staged from, even when the retry's publish context
/// names another. Before, the retry recorded the other agent while the
/// volume's connections stayed on the first, and a later assembly (a
/// rebuild's new member) went to an agent the volume was never staged
/// from. Needs root, FUSE and loop devices (fails under `CI=true` without).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_stage_keeps_the_agent_the_volume_was_staged_from() {
    use csi_types::prelude::Csi;
    if !common::can_mount() {
        return;
    }
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap();
    let _release = Release(vec![side]);
    let (rec, agent) = published_mirror(&s).await;
    let v = common::Vol {
        id: rec.id.clone(),
        staging: s.dir.path().join("staging").join("mirror"),
        target: s.dir.path().join("target").join("mirror"),
    };
    let ctx = |a: &str| -> csi_types::types::Map {
        [(composer::agent::CONTEXT_AGENT.to_string(), a.to_string())]
            .into_iter()
            .collect()
    };
    common::stage_with(&s.plugin, &v, &ctx(&agent))
        .await
        .unwrap();
    assert_eq!(side.agent_of(&rec.id), Some((agent.clone(), source(&s))));
    // Retried with another agent in the context: staged as it was.
    common::stage_with(&s.plugin, &v, &ctx(&gone_address()))
        .await
        .unwrap();
    assert_eq!(
        side.agent_of(&rec.id),
        Some((agent.clone(), source(&s))),
        "the agent the volume was staged from"
    );
    Csi::node_unstage_volume(
        &s.plugin,
        csi_types::node::NodeUnstageVolumeRequest {
            volume_id: csi_types::ids::VolumeId::new(&rec.id).unwrap(),
            staging_target_path: common::np(&v.staging),
        },
    )
    .await
    .unwrap();
    assert_eq!(side.agent_of(&rec.id), None);
}

/// An `nbd` volume whose agent is not recorded on the node (never staged
/// here, or unstaged: a rebuild that outlives the unstage) is refused with
/// FAILED_PRECONDITION naming the volume, and the node's own drive files
/// are not touched in its stead. Before, its members were taken from (and
/// created as) the node's own drive files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nbd_volume_without_its_agent_never_falls_back_to_local_files() {
    let s = common::InProcess::with_agent();
    let side = s.driver.node_side().unwrap();
    let _release = Release(vec![side]);
    let (rec, _) = published_mirror(&s).await;
    assert_eq!(side.agent_of(&rec.id), None);
    let err = side.assemble_unexposed(&rec).unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&rec.id) && msg.contains("no JBOD agent"),
        "{msg}"
    );
    assert!(!side.is_staged(&rec.id));
    for m in &rec.members {
        let local = s.dir.path().join("drives").join(format!("{}.img", m.drive));
        assert!(!local.exists(), "{} was created", local.display());
    }
}
