//! Several composer replicas on one real etcd (Debian's `etcd-server`),
//! hammered concurrently, then an independent check over etcd's keys.
//!
//! The test installs etcd when it is missing (as root), starts it on free
//! ports of 127.0.0.1 with its data in a temp dir and stops it by PID. When
//! etcd cannot be started it says so and skips, except under `CI=true`,
//! where it fails.
#![cfg(feature = "etcd")]

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use composer_core::{Composer, Error, EtcdConfig, EtcdStore, Inventory, LocalEtcd};

fn config(url: &str) -> EtcdConfig {
    let mut c = EtcdConfig::parse(url).expect("url");
    c.prefix = "/test".into();
    c
}

fn replica(url: &str) -> Arc<Composer> {
    let store = Arc::new(EtcdStore::connect(config(url)).expect("connect"));
    Arc::new(Composer::open(Inventory::default_inventory(), store).expect("open"))
}

fn params(kind: &str) -> BTreeMap<String, String> {
    [("type".to_string(), kind.to_string())].into()
}

/// A composer on `cfg` creates the slice volume `name`; the independent
/// check over etcd's keys finds it, and no problem.
fn create_and_audit(cfg: &EtcdConfig, name: &str) {
    let store = Arc::new(EtcdStore::connect(cfg.clone()).expect("connecting"));
    let c = Composer::open(Inventory::default_inventory(), store).unwrap();
    let range = csi_types::types::CapacityRange::new(Some(10 << 30), None).unwrap();
    let v = c
        .create(name, &params("slice"), range, true, true, None)
        .unwrap();
    let a = composer_core::store_etcd::audit(cfg).unwrap();
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert_eq!(a.volumes.get(&v.id).map(String::as_str), Some(name));
}

/// The independent check over etcd's keys, plus the clients' ledger.
fn check_etcd(url: &str, live: &HashSet<String>, deleted: &HashSet<String>) {
    let a = composer_core::store_etcd::audit(&config(url)).expect("audit");
    assert!(
        a.problems.is_empty(),
        "etcd is inconsistent:\n{}",
        a.problems.join("\n")
    );
    for id in live {
        assert!(
            a.volumes.contains_key(id),
            "acknowledged volume {id} is missing"
        );
    }
    for id in deleted {
        assert!(
            !a.volumes.contains_key(id),
            "deleted volume {id} is still there"
        );
    }
}

fn hammer(replicas: usize) {
    let test = format!("replicas_{replicas}");
    let Some(etcd) = LocalEtcd::start_or_skip(&test) else {
        return;
    };
    let rs: Vec<Arc<Composer>> = (0..replicas).map(|_| replica(&etcd.url())).collect();
    let live = Arc::new(Mutex::new(HashSet::new()));
    let deleted = Arc::new(Mutex::new(HashSet::new()));
    let mut threads = Vec::new();
    for (r, c) in rs.iter().enumerate() {
        for t in 0..4 {
            let (c, live, deleted) = (c.clone(), live.clone(), deleted.clone());
            threads.push(std::thread::spawn(move || {
                let mut mine: Vec<String> = Vec::new();
                for i in 0..40u64 {
                    let kind = if i % 5 == 0 { "hdd" } else { "slice" };
                    let size = if kind == "hdd" {
                        1 << 40
                    } else {
                        ((i % 7) + 1) * (50 << 30)
                    };
                    let range = csi_types::types::CapacityRange::new(Some(size), None).unwrap();
                    let name = format!("pvc-{r}-{t}-{i}");
                    match c.create(&name, &params(kind), range, true, true, None) {
                        Ok(v) => {
                            live.lock().unwrap().insert(v.id.clone());
                            mine.push(v.id.clone());
                        }
                        Err(Error::Exhausted(_)) | Err(Error::Conflict(_)) => {}
                        Err(e) => panic!("create {name}: {e}"),
                    }
                    if i % 3 == 1
                        && let Some(id) = mine.last().cloned()
                    {
                        let range =
                            csi_types::types::CapacityRange::new(Some(size + (20 << 30)), None)
                                .unwrap();
                        match c.expand(&id, range) {
                            Ok(_) | Err(Error::OutOfRange(_)) | Err(Error::Conflict(_)) => {}
                            Err(e) => panic!("expand {id}: {e}"),
                        }
                    }
                    if i % 2 == 0 && mine.len() > 2 {
                        let id = mine.remove(0);
                        match c.delete(&id) {
                            Ok(()) => {
                                live.lock().unwrap().remove(&id);
                                deleted.lock().unwrap().insert(id);
                            }
                            Err(Error::Conflict(_)) => {}
                            Err(e) => panic!("delete {id}: {e}"),
                        }
                    }
                }
            }));
        }
    }
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    let live = live.lock().unwrap().clone();
    let deleted = deleted.lock().unwrap().clone();
    assert!(!live.is_empty());
    check_etcd(&etcd.url(), &live, &deleted);
}

#[test]
fn two_replicas_never_allocate_twice() {
    hammer(2);
}

#[test]
fn three_replicas_never_allocate_twice() {
    hammer(3);
}

/// Leadership by lease, and its fence: once the leader's lease is gone
/// (revoked here, as its expiry would) and another replica leads, a write
/// of the old term is refused by etcd, changes nothing, and the old leader
/// steps down; the new leader's fenced writes go through.
#[test]
fn a_leader_whose_lease_is_gone_is_fenced() {
    use composer_core::store::{Batch, Op, Store};
    let Some(etcd) = LocalEtcd::start_or_skip("a_leader_whose_lease_is_gone_is_fenced") else {
        return;
    };
    let url = etcd.url();
    let a = Arc::new(EtcdStore::connect(config(&url)).unwrap());
    let b = Arc::new(EtcdStore::connect(config(&url)).unwrap());
    a.load().unwrap();
    b.load().unwrap();
    let ttl = std::time::Duration::from_secs(6);
    let la = a.campaign("a", ttl);
    let mut polls = 0;
    while !la.is_leader() {
        polls += 1;
        assert!(polls < 600, "a never became the leader");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let lb = b.campaign("b", ttl);
    let old = la.term().expect("a leads");
    assert!(!lb.is_leader(), "two leaders at once");
    assert_eq!(
        composer_core::store_etcd::leader(&config(&url))
            .unwrap()
            .as_deref(),
        Some("a")
    );
    // a's own fenced write goes through while it leads.
    let mark = |t: &str| {
        Batch::of(vec![Op::PutMark {
            target: t.into(),
            health: composer_core::Health::Draining,
        }])
    };
    la.fenced(|| a.commit(mark("jbod-a1")))
        .expect("the leader writes");

    // a's lease goes (as if a had been paused past it); b takes over.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([url.replace("etcd://", "http://")], None)
            .await
            .unwrap();
        c.lease_revoke(old.lease).await.unwrap();
    });
    polls = 0;
    while !lb.is_leader() {
        polls += 1;
        assert!(polls < 600, "b never took over");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The old term's write is refused by etcd and changes nothing.
    let e = la
        .fenced_as(old, || a.commit(mark("jbod-a2")))
        .expect_err("a write of a term that is over");
    assert!(
        matches!(&e, Error::Unavailable(m) if m.contains("fenced")),
        "{e}"
    );
    assert!(!la.is_leader(), "the old leader stepped down");
    assert!(la.fenced(|| a.commit(mark("jbod-a2"))).is_err());
    lb.fenced(|| b.commit(mark("jbod-b1")))
        .expect("the new leader writes");
    let fresh = EtcdStore::connect(config(&url)).unwrap().load().unwrap();
    assert!(fresh.marks.contains_key("jbod-a1"));
    assert!(fresh.marks.contains_key("jbod-b1"));
    assert!(
        !fresh.marks.contains_key("jbod-a2"),
        "a fenced write landed"
    );
    assert_eq!(
        composer_core::store_etcd::leader(&config(&url))
            .unwrap()
            .as_deref(),
        Some("b")
    );
}

/// A replica whose watch broke (etcd stopped) and whose next revision was
/// compacted away before it could reconnect lists the prefix afresh: a
/// volume deleted meanwhile by another writer is gone from its state, the
/// other is still there, and it serves again.
#[test]
fn a_watch_behind_a_compaction_lists_afresh() {
    let Some(mut etcd) = LocalEtcd::start_or_skip("a_watch_behind_a_compaction_lists_afresh")
    else {
        return;
    };
    let url = etcd.url();
    let a = replica(&url);
    let range = || csi_types::types::CapacityRange::new(Some(1 << 30), None).unwrap();
    let keep = a
        .create("keep", &params("slice"), range(), true, true, None)
        .unwrap();
    let gone = a
        .create("gone", &params("slice"), range(), true, true, None)
        .unwrap();
    // etcd comes back where the replica cannot reach it; meanwhile another
    // writer deletes `gone` (its keys, as a replica's delete would) and
    // etcd compacts; then etcd is back where the replica looks.
    etcd.restart_aside().expect("etcd restarts aside");
    let aside = etcd.aside_url().replace("etcd://", "http://");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use etcd_client::{CompactionOptions, DeleteOptions, Txn, TxnOp};
        let mut c = etcd_client::Client::connect([aside], None).await.unwrap();
        let id = &gone.id;
        let r = c
            .txn(Txn::new().and_then(vec![
                TxnOp::delete(format!("/test/volumes/{id}"), None),
                TxnOp::delete("/test/names/gone", None),
                TxnOp::delete(
                    format!("/test/alloc/{id}/"),
                    Some(DeleteOptions::new().with_prefix()),
                ),
            ]))
            .await
            .unwrap();
        let rev = r.header().unwrap().revision();
        c.compact(rev, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
    });
    etcd.restart().expect("etcd restarts");
    let mut polls = 0;
    loop {
        let last = match a.get(&gone.id) {
            Err(Error::NotFound(_)) => break,
            Ok(v) => format!("the replica still has {} ({})", v.record.id, v.record.name),
            Err(Error::Unavailable(m)) => format!("unavailable: {m}"),
            Err(e) => panic!("get {}: {e}", gone.id),
        };
        polls += 1;
        assert!(
            polls < 600,
            "the deletion never reached the replica; last answer: {last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(a.get(&keep.id).unwrap().id, keep.id);
    a.create("after", &params("slice"), range(), true, true, None)
        .expect("serves after the re-list");
    check_etcd(&url, &[keep.id.clone()].into(), &[gone.id.clone()].into());
}

/// The regression of a replica stuck after it held back another replica's
/// change: replica A plans `held` and pauses in its commit; replica B
/// creates `held` meanwhile; A hears of B's volume while its own plan holds
/// the name, so it holds the change back. Once A's plan fails its
/// compare-and-swap and A has applied the held-back change, A's state must
/// be as recent as everything etcd reported — with no further write by
/// anyone. (It used to stay just below B's change, so every later create
/// on A conflicted on the sequence key until it answered ABORTED.)
#[test]
fn a_replica_that_held_back_a_change_is_current_once_it_applies_it() {
    let Some(etcd) =
        LocalEtcd::start_or_skip("a_replica_that_held_back_a_change_is_current_once_it_applies_it")
    else {
        return;
    };
    let url = etcd.url();
    let gated = Hooked::new(&url);
    let a = Arc::new(Composer::open(Inventory::default_inventory(), gated.clone()).unwrap());
    let b = replica(&url);
    let range = csi_types::types::CapacityRange::new(Some(50 << 30), None).unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    *gated.hook.lock().unwrap() = Some(Hook::HoldCommit("held".into(), entered_tx, go_rx));
    let a2 = a.clone();
    let paused =
        std::thread::spawn(move || a2.create("held", &params("slice"), range, true, true, None));
    entered.recv().unwrap();
    let theirs = b
        .create("held", &params("slice"), range, true, true, None)
        .unwrap();
    let mut polls = 0;
    while !gated.reported.lock().unwrap().contains(&theirs.id) {
        // Any call that syncs A with the store.
        assert!(matches!(a.get("vol-none"), Err(Error::NotFound(_))));
        polls += 1;
        assert!(polls < 3000, "A never heard of B's volume");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    go.send(()).unwrap();
    let ours = paused.join().unwrap().expect("A's create of held");
    assert_eq!(ours.id, theirs.id, "A answers with B's volume of that name");
    // Nobody writes any more: A must plan on current state by itself.
    let after = a
        .create("after", &params("slice"), range, true, true, None)
        .expect("a create on A after it applied the held-back change");
    let after_b = b
        .create("after-b", &params("slice"), range, true, true, None)
        .unwrap();
    let live: HashSet<String> = [theirs.id.clone(), after.id.clone(), after_b.id.clone()].into();
    check_etcd(&url, &live, &HashSet::new());
}

/// GetCapacity plans on a copy of the pool that replays the changes the
/// replica applies, other replicas' included: after B creates, deletes and
/// marks while A has its copy, A answers as a replica opened afresh on etcd
/// (a copy that missed another replica's change answers otherwise).
#[test]
fn get_capacity_follows_the_changes_of_other_replicas() {
    let Some(etcd) = LocalEtcd::start_or_skip("get_capacity_follows_the_changes_of_other_replicas")
    else {
        return;
    };
    let url = etcd.url();
    let (a, b) = (replica(&url), replica(&url));
    for kind in ["slice", "hdd", "ssd"] {
        a.capacity(&params(kind), None).unwrap();
    }
    let drive = b.inventory().drives()[0].id.clone();
    let caught_up = |a: &Composer, b: &Composer| {
        let mut polls = 0;
        while a.records() != b.records() || a.mark_of(&drive) != b.mark_of(&drive) {
            polls += 1;
            assert!(polls < 3000, "A never heard of B's changes");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    let mut made = Vec::new();
    for i in 0..6 {
        let kind = ["slice", "hdd", "ssd"][i % 3];
        made.push(
            b.create(
                &format!("b-{i}"),
                &params(kind),
                gib(20 + i as u64),
                true,
                true,
                None,
            )
            .unwrap(),
        );
    }
    b.mark(&drive, composer_core::Health::Draining).unwrap();
    caught_up(&a, &b);
    audit_replica(&a, &url);
    // Deletes (a release the copy could not replay would make it copy the
    // pool anew, and hide a change it missed: hence the audit above).
    b.delete(&made[1].id).unwrap();
    b.delete(&made[3].id).unwrap();
    b.mark(&drive, composer_core::Health::Healthy).unwrap();
    caught_up(&a, &b);
    audit_replica(&a, &url);
}

/// Many clients on one replica at once: 64 threads each create 8 volumes
/// through one composer and its one etcd connection. Every create must
/// answer (none may wait forever on an etcd transaction; before the fix
/// they conflicted with each other until their retries ran out), each name
/// with its own volume, and etcd must hold exactly those.
#[test]
fn sixty_four_concurrent_creates_on_one_replica_all_answer() {
    let Some(etcd) =
        LocalEtcd::start_or_skip("sixty_four_concurrent_creates_on_one_replica_all_answer")
    else {
        return;
    };
    let c = replica(&etcd.url());
    let threads: Vec<_> = (0..64)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                let range = csi_types::types::CapacityRange::new(Some(10 << 30), None).unwrap();
                (0..8)
                    .map(|i| {
                        let name = format!("many-{t}-{i}");
                        // As a CO does: a create that answered UNAVAILABLE
                        // (its wait for etcd reached the request timeout,
                        // as on a machine busy with other work) is retried
                        // by name; it never waits longer than the timeout.
                        let mut tries = 0;
                        loop {
                            match c.create(&name, &params("slice"), range, true, true, None) {
                                Ok(v) => break v.id.clone(),
                                Err(Error::Unavailable(_)) if tries < 100 => tries += 1,
                                Err(e) => panic!("create {name} (after {tries} retries): {e}"),
                            }
                        }
                    })
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    let mut live = HashSet::new();
    for t in threads {
        for id in t.join().unwrap() {
            assert!(live.insert(id.clone()), "volume {id} was handed out twice");
        }
    }
    assert_eq!(live.len(), 64 * 8);
    check_etcd(&etcd.url(), &live, &HashSet::new());
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// etcd paused with SIGSTOP (its connections stay open, nothing answers):
/// 16 concurrent creates on one replica each answer `Unavailable` (the
/// request timeout fires wherever a request waits) instead of hanging;
/// resumed with SIGCONT, creates succeed again and etcd is consistent.
#[test]
fn calls_to_a_paused_etcd_answer_unavailable() {
    let Some(etcd) = LocalEtcd::start_or_skip("calls_to_a_paused_etcd_answer_unavailable") else {
        return;
    };
    let mut cfg = config(&etcd.url());
    cfg.timeout = std::time::Duration::from_secs(2);
    let store = Arc::new(EtcdStore::connect(cfg).unwrap());
    let c = Arc::new(Composer::open(Inventory::default_inventory(), store).unwrap());
    let range = csi_types::types::CapacityRange::new(Some(10 << 30), None).unwrap();
    let before = c
        .create("before", &params("slice"), range, true, true, None)
        .unwrap();
    let pid = etcd.pid().unwrap();
    signal(pid, "STOP");
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                c.create(
                    &format!("paused-{t}"),
                    &params("slice"),
                    range,
                    true,
                    true,
                    None,
                )
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    signal(pid, "CONT");
    for (t, a) in answers.iter().enumerate() {
        assert!(
            matches!(a, Err(Error::Unavailable(_))),
            "paused-{t} while etcd was paused: {a:?}"
        );
    }
    let mut polls = 0;
    let after = loop {
        match c.create("after", &params("slice"), range, true, true, None) {
            Ok(v) => break v,
            Err(Error::Unavailable(_)) if polls < 300 => {
                polls += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("create after etcd resumed: {e}"),
        }
    };
    // A transaction sent just before the pause may still have landed: its
    // create answered UNAVAILABLE and a retry by name finds it.
    let live: HashSet<String> = [before.id.clone(), after.id.clone()].into();
    check_etcd(&etcd.url(), &live, &HashSet::new());
}

/// TLS to etcd with client certificates: etcd serves https only and
/// authenticates clients by certificate (`--client-cert-auth`); a replica
/// with the right CA and its certificate creates volumes; one with a CA
/// that did not sign etcd's certificate is refused at connect time, with an
/// error that names TLS, the CA file and the certificate problem; one
/// without a client certificate is refused as well.
#[test]
fn tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let Some((etcd, tls)) =
        LocalEtcd::start_tls_or_skip("tls_with_client_certificates", certs.path())
    else {
        return;
    };
    let mut cfg = etcd.config();
    cfg.prefix = "/tls".into();
    create_and_audit(&cfg, "over-tls");

    let mut wrong = cfg.clone();
    wrong.tls.as_mut().unwrap().ca = tls.other_ca.clone();
    let e = EtcdStore::connect(wrong)
        .err()
        .expect("a wrong CA is refused");
    let m = e.to_string();
    eprintln!("a wrong CA: {m}");
    assert!(matches!(e, Error::Unavailable(_)), "{m}");
    assert!(
        m.contains("over TLS") && m.contains("other-ca.pem"),
        "the error names TLS and the CA: {m}"
    );
    assert!(
        m.to_lowercase().contains("certificate") || m.contains("UnknownIssuer"),
        "the error says what is wrong with the certificate: {m}"
    );

    let mut anonymous = cfg.clone();
    anonymous.tls.as_mut().unwrap().identity = None;
    assert!(
        EtcdStore::connect(anonymous).is_err(),
        "etcd asks every client for a certificate"
    );
    let mut plain = cfg;
    plain.tls = None;
    assert!(EtcdStore::connect(plain).is_err(), "etcd serves https only");
}

/// With etcd's authentication on, the store logs in with `EtcdConfig::user`
/// (`--etcd-user` and `--etcd-password-file`); a wrong password and no user
/// are refused.
#[test]
fn user_and_password_authentication() {
    let Some(etcd) = LocalEtcd::start_or_skip("user_and_password_authentication") else {
        return;
    };
    let endpoint = etcd.url().replace("etcd://", "http://");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut c = etcd_client::Client::connect([endpoint], None)
                .await
                .unwrap();
            c.user_add("root", "s3cret pass", None).await.unwrap();
            c.user_grant_role("root", "root").await.unwrap();
            c.auth_enable().await.unwrap();
        });
    let mut cfg = etcd.config();
    cfg.prefix = "/auth".into();
    cfg.user = Some(("root".into(), "s3cret pass".into()));
    create_and_audit(&cfg, "with-auth");

    let mut wrong = cfg.clone();
    wrong.user = Some(("root".into(), "not it".into()));
    let e = EtcdStore::connect(wrong)
        .err()
        .expect("a wrong password is refused");
    eprintln!("a wrong password: {e}");
    let mut anonymous = cfg.clone();
    anonymous.user = None;
    let refused = match EtcdStore::connect(anonymous) {
        Err(_) => true,
        Ok(s) => Composer::open(Inventory::default_inventory(), Arc::new(s)).is_err(),
    };
    assert!(
        refused,
        "etcd with authentication on refuses a client without a user"
    );
}

// ---------------------------------------------------------------------------
// Commits whose answer is lost, and own commits the watch brings early.
// ---------------------------------------------------------------------------

/// A TCP proxy between a replica and etcd that can lose etcd's answers:
/// while it swallows, it forwards what the replica sends but drops what etcd
/// sends back (the transaction reaches etcd and lands; its answer and the
/// watch's events never reach the replica); [`Proxy::cut`] then breaks every
/// connection, as a network fault between the transaction and its answer
/// would.
struct Proxy {
    port: u16,
    shared: Arc<ProxyShared>,
}

#[derive(Default)]
struct ProxyShared {
    swallow: std::sync::atomic::AtomicBool,
    /// While set, what the replica sends is dropped: a marker, and whether
    /// a dropped request carried it.
    drop_requests: Mutex<Option<(Vec<u8>, bool)>>,
    refuse: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    conns: Mutex<Vec<std::net::TcpStream>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a proxy port");
        let port = l.local_addr().unwrap().port();
        let shared = Arc::new(ProxyShared::default());
        let sh = shared.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                if sh.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                if sh.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let Ok(u) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (Ok(c2), Ok(u2)) = (c.try_clone(), u.try_clone()) else {
                    continue;
                };
                sh.conns.lock().unwrap().extend([c2, u2]);
                Proxy::pump(c.try_clone().unwrap(), u.try_clone().unwrap(), &sh, true);
                Proxy::pump(u, c, &sh, false);
            }
        });
        Proxy { port, shared }
    }

    /// Copies `from` to `to` until either ends, dropping what the proxy
    /// drops in that direction (`to_etcd`: the replica's requests).
    fn pump(
        mut from: std::net::TcpStream,
        mut to: std::net::TcpStream,
        sh: &Arc<ProxyShared>,
        to_etcd: bool,
    ) {
        use std::io::{Read, Write};
        let sh = sh.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if to_etcd {
                    if let Some((marker, seen)) = &mut *sh.drop_requests.lock().unwrap() {
                        // One request's protobuf carries its keys as they are.
                        *seen |= buf[..n].windows(marker.len()).any(|w| w == &marker[..]);
                        continue;
                    }
                } else if sh.swallow.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    }

    fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.port)
    }

    /// From now on etcd's answers are dropped.
    fn swallow(&self) {
        self.shared
            .swallow
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on the replica's requests are dropped on their way to etcd.
    fn drop_requests(&self, marker: &str) {
        *self.shared.drop_requests.lock().unwrap() = Some((marker.as_bytes().to_vec(), false));
    }

    /// Whether a dropped request carried the marker of
    /// [`Proxy::drop_requests`].
    fn dropped(&self) -> bool {
        self.shared
            .drop_requests
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|d| d.1)
    }

    /// Breaks every connection; new ones pass (or, with `refuse`, are
    /// closed at once until [`Proxy::allow`]).
    fn cut(&self, refuse: bool) {
        self.shared
            .refuse
            .store(refuse, std::sync::atomic::Ordering::SeqCst);
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        self.shared
            .swallow
            .store(false, std::sync::atomic::Ordering::SeqCst);
        *self.shared.drop_requests.lock().unwrap() = None;
    }

    fn allow(&self) {
        self.shared
            .refuse
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut(true);
        // Wakes the accept loop, which then ends.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Reads `key` with a client of its own until it is there (`Some(value)`)
/// or gone (`None`), as `present` asks; the bound only stops a hang.
fn wait_for_key(url: &str, key: &str, present: bool) -> Option<String> {
    let endpoint = url.replace("etcd://", "http://");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        for _ in 0..3000 {
            let r = c.get(key, None).await.unwrap();
            let v = r
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            if v.is_some() == present {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "{key} never became {}",
            if present { "present" } else { "absent" }
        );
    })
}

/// `f` again while it answers `Unavailable` (as a CO retries); the bound
/// only stops a hang.
fn until_available<T>(what: &str, mut f: impl FnMut() -> Result<T, Error>) -> T {
    for _ in 0..600 {
        match f() {
            Ok(v) => return v,
            Err(Error::Unavailable(_)) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: still unavailable")
}

/// Audits a replica's in-memory state against etcd: a replica opened
/// afresh on etcd (its state rebuilt from the keys alone) must hold the same
/// records, the same bytes on every drive and the same free capacity (its
/// allocator's view) as `c`, which lived through the faults. A plan kept
/// for a volume that did not land is capacity leaked; a landed volume whose
/// plan was given back, or applied twice, is counted wrong.
fn audit_replica(c: &Composer, url: &str) {
    let fresh = replica(url);
    assert_eq!(c.records(), fresh.records(), "records differ from etcd's");
    let used = |c: &Composer| -> Vec<(String, u64, Vec<String>)> {
        c.drive_report()
            .into_iter()
            .map(|d| (d.id, d.used, d.volumes))
            .collect()
    };
    assert!(
        used(c) == used(&fresh),
        "the bytes in use per drive differ from etcd's"
    );
    for kind in ["slice", "hdd", "ssd"] {
        assert_eq!(
            c.capacity(&params(kind), None).unwrap(),
            fresh.capacity(&params(kind), None).unwrap(),
            "the {kind} capacity differs from etcd's"
        );
    }
}

fn gib(n: u64) -> csi_types::types::CapacityRange {
    csi_types::types::CapacityRange::new(Some(n << 30), None).unwrap()
}

/// etcd, a [`Proxy`] to it, and a replica through the proxy that created
/// the volume `before`.
struct Lossy {
    etcd: LocalEtcd,
    proxy: Proxy,
    c: Arc<Composer>,
    before: composer_core::composer::VolumeView,
}

/// A [`Lossy`] whose replica has the request timeout `timeout`, or `None`
/// after saying that `test` skipped.
fn lossy(test: &str, timeout: std::time::Duration) -> Option<Lossy> {
    let etcd = LocalEtcd::start_or_skip(test)?;
    let proxy = Proxy::start(port_of(&etcd.url()));
    let mut cfg = config(&proxy.url());
    cfg.timeout = timeout;
    let store = Arc::new(EtcdStore::connect(cfg).expect("connect through the proxy"));
    let c = Arc::new(Composer::open(Inventory::default_inventory(), store).expect("open"));
    let before = c
        .create("before", &params("slice"), gib(10), true, true, None)
        .unwrap();
    Some(Lossy {
        etcd,
        proxy,
        c,
        before,
    })
}

impl Lossy {
    fn create_lost(
        &self,
    ) -> std::thread::JoinHandle<Result<composer_core::composer::VolumeView, Error>> {
        let c = self.c.clone();
        std::thread::spawn(move || c.create("lost", &params("slice"), gib(10), true, true, None))
    }

    /// Creates `lost` while etcd's answers are swallowed; once its record
    /// is in etcd, breaks the connection (`refuse`: and refuses new ones
    /// until [`Proxy::allow`]). The create's answer, and the id that landed.
    fn create_with_answer_lost(
        &self,
        refuse: bool,
    ) -> (Result<composer_core::composer::VolumeView, Error>, String) {
        self.proxy.swallow();
        let lost = self.create_lost();
        let id = wait_for_key(&self.etcd.url(), "/test/names/lost", true).unwrap();
        self.proxy.cut(refuse);
        (lost.join().unwrap(), id)
    }

    /// The CO's retry of `lost` (again while the replica is unavailable).
    fn retry_lost(&self) -> composer_core::composer::VolumeView {
        until_available("the retry of lost", || {
            self.c
                .create("lost", &params("slice"), gib(10), true, true, None)
        })
    }

    /// etcd holds exactly the volumes `live`, consistently
    /// ([`check_etcd`]), and the replica's state matches it
    /// ([`audit_replica`]).
    fn audit(&self, live: &[&str]) {
        let url = self.etcd.url();
        let live: HashSet<String> = live.iter().map(|s| s.to_string()).collect();
        check_etcd(&url, &live, &HashSet::new());
        let a = composer_core::store_etcd::audit(&config(&url)).unwrap();
        assert_eq!(
            a.volumes.len(),
            live.len(),
            "exactly {live:?}: {:?}",
            a.volumes
        );
        audit_replica(&self.c, &url);
    }
}

/// A create whose transaction lands in etcd but whose answer is lost (the
/// connection breaks after etcd applied it, before the answer reaches the
/// replica) is answered as done, with the volume that landed; the CO's
/// retry by name gets the same volume; the replica's allocator holds that
/// volume's space once (audited against a replica rebuilt from etcd), and
/// later creates never get a range of it.
#[test]
fn a_create_whose_answer_is_lost_is_answered_with_the_volume_that_landed() {
    // A long request timeout: the broken connection, not the timeout, ends
    // the commit, however slow the machine.
    let Some(l) = lossy(
        "a_create_whose_answer_is_lost_is_answered_with_the_volume_that_landed",
        std::time::Duration::from_secs(60),
    ) else {
        return;
    };
    let (answer, id) = l.create_with_answer_lost(false);
    let v = answer.expect("a create that landed, whose answer was lost, is answered as done");
    assert_eq!(v.id, id, "answered with the volume that landed");
    assert_eq!(v.name, "lost");
    assert_eq!(
        l.retry_lost().record,
        v.record,
        "the retry gets the same volume"
    );
    l.audit(&[&l.before.id, &id]);
    // Later creates on this replica: no byte of `lost` is handed out again.
    let later: Vec<String> = (0..4)
        .map(|i| {
            let name = format!("later-{i}");
            until_available(&name, || {
                l.c.create(&name, &params("slice"), gib(10), true, true, None)
            })
            .record
            .id
        })
        .collect();
    let mut live: Vec<&str> = vec![&l.before.id, &id];
    live.extend(later.iter().map(String::as_str));
    l.audit(&live);
}

/// A create whose transaction never reaches etcd (the connection breaks
/// with the request lost on its way) is not answered as done: it answers
/// `Unavailable`, nothing of it is in etcd, its plan is given back (the
/// replica's allocator matches etcd's keys), and the CO's retry creates the
/// volume.
#[test]
fn a_create_whose_request_is_lost_is_not_answered_as_done() {
    let Some(l) = lossy(
        "a_create_whose_request_is_lost_is_not_answered_as_done",
        std::time::Duration::from_secs(60),
    ) else {
        return;
    };
    l.proxy.drop_requests("/test/names/lost");
    let lost = l.create_lost();
    let mut polls = 0;
    while !l.proxy.dropped() {
        polls += 1;
        assert!(polls < 3000, "the create's transaction never went out");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    l.proxy.cut(false);
    let answer = lost.join().unwrap();
    assert!(
        matches!(&answer, Err(Error::Unavailable(_))),
        "a create that did not land: {answer:?}"
    );
    l.audit(&[&l.before.id]);
    let v = l.retry_lost();
    l.audit(&[&l.before.id, &v.id]);
}

/// A create and a delete whose answers are lost while etcd stays
/// unreachable (new connections refused): the replica cannot tell whether
/// they landed and answers `Unavailable`; once etcd is reachable again, the
/// CO's retry by name finds the volume that landed (no second volume for
/// the name), the retried delete succeeds and the volume is gone; after
/// each, the replica's allocator matches etcd's keys.
#[test]
fn answers_lost_while_etcd_is_unreachable_are_found_by_the_retries() {
    let Some(l) = lossy(
        "answers_lost_while_etcd_is_unreachable_are_found_by_the_retries",
        std::time::Duration::from_secs(5),
    ) else {
        return;
    };
    let (answer, id) = l.create_with_answer_lost(true);
    assert!(
        matches!(&answer, Err(Error::Unavailable(_))),
        "a replica that cannot reach etcd cannot tell: {answer:?}"
    );
    l.proxy.allow();
    let v = l.retry_lost();
    assert_eq!(v.id, id, "the retry finds the volume that landed");
    l.audit(&[&l.before.id, &id]);

    l.proxy.swallow();
    let (c, gone_id) = (l.c.clone(), id.clone());
    let gone = std::thread::spawn(move || c.delete(&gone_id));
    wait_for_key(&l.etcd.url(), &format!("/test/volumes/{id}"), false);
    l.proxy.cut(true);
    let answer = gone.join().unwrap();
    assert!(
        matches!(&answer, Err(Error::Unavailable(_))),
        "a replica that cannot reach etcd cannot tell: {answer:?}"
    );
    l.proxy.allow();
    until_available("the retry of the delete", || l.c.delete(&id));
    assert!(matches!(l.c.get(&id), Err(Error::NotFound(_))));
    l.audit(&[&l.before.id]);
}

/// What [`Hooked`] does to the commit of one volume (by name, or by id for
/// a delete).
enum Hook {
    /// Commits, waits until the watch has brought the commit, then answers
    /// `Unavailable` as if the answer had been lost.
    LoseAnswer(String),
    /// Commits, says so with the volume id, and answers only when told.
    HoldAnswer(String, Sender<String>, Receiver<()>),
    /// Says that the commit is about to be sent, with the volume id, and
    /// sends it only when told: a plan held in flight.
    HoldCommit(String, Sender<String>, Receiver<()>),
}

impl Hook {
    fn volume(&self) -> &str {
        match self {
            Hook::LoseAnswer(n) | Hook::HoldAnswer(n, ..) | Hook::HoldCommit(n, ..) => n,
        }
    }
}

/// A store that passes everything to the real etcd store, except that it
/// does what its [`Hook`] says with the commit of one volume; it remembers which volumes
/// [`Store::changes`] reported, and keeps the changes it read itself for
/// the next call of its caller.
struct Hooked {
    inner: EtcdStore,
    hook: Mutex<Option<Hook>>,
    kept: Mutex<Option<composer_core::store::Changes>>,
    reported: Mutex<HashSet<String>>,
}

impl Hooked {
    fn new(url: &str) -> Arc<Hooked> {
        Arc::new(Hooked {
            inner: EtcdStore::connect(config(url)).unwrap(),
            hook: Mutex::new(None),
            kept: Mutex::new(None),
            reported: Mutex::new(HashSet::new()),
        })
    }

    fn keep(&self, ch: composer_core::store::Changes) {
        let mut k = self.kept.lock().unwrap();
        let all = k.get_or_insert_with(Default::default);
        all.revision = all.revision.max(ch.revision);
        all.volumes.extend(ch.volumes);
        all.marks.extend(ch.marks);
        all.next_seq = all.next_seq.max(ch.next_seq);
    }
}

impl composer_core::store::Store for Hooked {
    fn load(&self) -> Result<composer_core::store::StoredState, Error> {
        self.inner.load()
    }

    fn commit(&self, batch: composer_core::store::Batch) -> Result<u64, Error> {
        use composer_core::store::Op;
        let target = batch.ops.iter().find_map(|op| match op {
            Op::PutVolume(r) => Some((r.name.clone(), r.id.clone())),
            Op::DeleteVolume(id) => Some((id.clone(), id.clone())),
            _ => None,
        });
        let hook = {
            let mut h = self.hook.lock().unwrap();
            let hit = h
                .as_ref()
                .zip(target.as_ref())
                .is_some_and(|(h, t)| h.volume() == t.0);
            if hit { h.take() } else { None }
        };
        let id = target.map(|t| t.1).unwrap_or_default();
        let hook = match hook {
            Some(Hook::HoldCommit(_, entered, go)) => {
                entered.send(id.clone()).unwrap();
                go.recv().unwrap();
                None
            }
            h => h,
        };
        let rev = self.inner.commit(batch)?;
        let Some(hook) = hook else {
            return Ok(rev);
        };
        match hook {
            Hook::LoseAnswer(_) => {
                // The watch brings the commit; the caller has not looked.
                for _ in 0..3000 {
                    if let Some(ch) = self.inner.changes()? {
                        self.keep(ch);
                    }
                    let brought =
                        self.kept.lock().unwrap().as_ref().is_some_and(|k| {
                            k.volumes.iter().any(|(v, r, _)| v == &id && *r == rev)
                        });
                    if brought {
                        return Err(Error::Unavailable(format!(
                            "the answer to the commit of {id} was lost"
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                panic!("the watch never brought the commit of {id}");
            }
            Hook::HoldCommit(..) => unreachable!("held before its commit"),
            Hook::HoldAnswer(_, landed, go) => {
                landed.send(id).unwrap();
                go.recv().unwrap();
                Ok(rev)
            }
        }
    }

    fn changes(&self) -> Result<Option<composer_core::store::Changes>, Error> {
        if let Some(ch) = self.inner.changes()? {
            self.keep(ch);
        }
        let ch = self.kept.lock().unwrap().take();
        if let Some(ch) = &ch {
            let mut r = self.reported.lock().unwrap();
            r.extend(ch.volumes.iter().map(|v| v.0.clone()));
        }
        Ok(ch)
    }

    fn catch_up(&self) -> Result<(), Error> {
        self.inner.catch_up()
    }

    fn ready(&self) -> Result<(), Error> {
        self.inner.ready()
    }
}

/// A create and a delete whose transactions landed and whose answers were
/// lost, where the watch brought the commit before the failure was
/// answered (and no other call looked at the watch meanwhile): each is
/// answered as done, and the replica's state matches etcd's keys.
#[test]
fn a_commit_the_watch_shows_landed_is_answered_as_done() {
    let Some(etcd) =
        LocalEtcd::start_or_skip("a_commit_the_watch_shows_landed_is_answered_as_done")
    else {
        return;
    };
    let url = etcd.url();
    let hooked = Hooked::new(&url);
    let c = Composer::open(Inventory::default_inventory(), hooked.clone()).unwrap();
    let before = c
        .create("before", &params("slice"), gib(10), true, true, None)
        .unwrap();
    *hooked.hook.lock().unwrap() = Some(Hook::LoseAnswer("lost".into()));
    let v = c
        .create("lost", &params("slice"), gib(10), true, true, None)
        .expect("a create the watch shows landed is answered as done");
    assert!(hooked.hook.lock().unwrap().is_none(), "the hook ran");
    let id = wait_for_key(&url, "/test/names/lost", true).unwrap();
    assert_eq!(v.id, id);
    let again = c
        .create("lost", &params("slice"), gib(10), true, true, None)
        .unwrap();
    assert_eq!(again.record, v.record);
    check_etcd(
        &url,
        &[before.id.clone(), id.clone()].into(),
        &HashSet::new(),
    );
    audit_replica(&c, &url);

    *hooked.hook.lock().unwrap() = Some(Hook::LoseAnswer(id.clone()));
    c.delete(&id)
        .expect("a delete the watch shows landed is answered as done");
    assert!(hooked.hook.lock().unwrap().is_none(), "the hook ran");
    assert!(matches!(c.get(&id), Err(Error::NotFound(_))));
    check_etcd(&url, &[before.id.clone()].into(), &[id].into());
    audit_replica(&c, &url);
}

/// The replica's own commit, brought by the watch and applied by another
/// call while the commit's answer is still on its way, is applied exactly
/// once (by its own call): meanwhile the replica plans on a state that
/// includes it (a create on the same replica, after another replica's
/// create, answers at once instead of conflicting until `ABORTED`), and
/// afterwards its allocator matches etcd's keys.
#[test]
fn an_own_commit_the_watch_brings_early_is_applied_once() {
    let Some(etcd) =
        LocalEtcd::start_or_skip("an_own_commit_the_watch_brings_early_is_applied_once")
    else {
        return;
    };
    let url = etcd.url();
    let hooked = Hooked::new(&url);
    let a = Arc::new(Composer::open(Inventory::default_inventory(), hooked.clone()).unwrap());
    let b = replica(&url);
    let (landed_tx, landed) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    *hooked.hook.lock().unwrap() = Some(Hook::HoldAnswer("early".into(), landed_tx, go_rx));
    let a2 = a.clone();
    let early =
        std::thread::spawn(move || a2.create("early", &params("slice"), gib(10), true, true, None));
    let id = landed.recv().unwrap();
    // Another replica writes after it (the sequence among its keys).
    let theirs = b
        .create("from-b", &params("slice"), gib(10), true, true, None)
        .unwrap();
    let mut polls = 0;
    loop {
        // Any call that syncs A with the store.
        assert!(matches!(a.get("vol-none"), Err(Error::NotFound(_))));
        let r = hooked.reported.lock().unwrap();
        if r.contains(&id) && r.contains(&theirs.id) {
            break;
        }
        drop(r);
        polls += 1;
        assert!(polls < 3000, "A's watch never brought both commits");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let other = a
        .create("other", &params("slice"), gib(10), true, true, None)
        .expect("a create on A while its own earlier commit is still answering");
    go.send(()).unwrap();
    let v = early.join().unwrap().expect("the held create");
    assert_eq!(v.id, id);
    let records = a.records();
    assert_eq!(
        records.iter().filter(|r| r.name == "early").count(),
        1,
        "early once"
    );
    let live: HashSet<String> = [id, theirs.id.clone(), other.id.clone()].into();
    check_etcd(&url, &live, &HashSet::new());
    audit_replica(&a, &url);
}
