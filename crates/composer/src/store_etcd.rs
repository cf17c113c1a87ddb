//! [`EtcdStore`]: the state store on an etcd v3 cluster, shared by several
//! controller replicas (feature `etcd`).
//!
//! Key layout under a prefix (default `/composer`), documented in the crate
//! README:
//!
//! | key | value |
//! |---|---|
//! | `P/volumes/<id>` | the [`VolumeRecord`] as JSON |
//! | `P/names/<name>` | the volume id (idempotency by name) |
//! | `P/alloc/<id>/<member, 3 digits>` | `<drive> <offset> <len>`: one member's bytes on its drive |
//! | `P/drives/<drive>` | the id of the volume that last took space on the drive (a guard) |
//! | `P/marks/<target>` | the operator's [`Health`] mark as JSON |
//! | `P/seq` | the next volume sequence number, 20 digits |
//!
//! Every [`Batch`] is one etcd transaction. A batch planned on the state as
//! of revision `R` ([`Batch::read_revision`]) carries, for every key whose
//! state the plan relied on (the volume, its name, the guard of every drive
//! it takes space on, the sequence), the compare `mod_revision < R' + 1`,
//! where `R'` is `R` or the revision of this store's own last write to that
//! key, whichever is later. Two replicas that planned on the same space
//! cannot both commit: the second fails, gets `Conflict`, catches up with
//! [`Store::catch_up`] and plans again on fresh state. Nothing is read,
//! modified and written outside a transaction.
//!
//! A watch on the prefix feeds [`Store::changes`]: each replica applies what
//! the others committed to its in-memory placement and allocator state, with
//! no reload per request. Calls that cannot reach etcd fail with
//! [`Error::Unavailable`]. A transaction can land while its answer is lost
//! (the connection breaks after etcd applied it): when time is left, a
//! commit whose request failed reads back the records it put, and answers
//! as committed when every one is there as written; otherwise its effect is
//! known once the watch brings it (or not).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Txn, TxnOp,
    WatchOptions,
};

use crate::error::Error;
use crate::inventory::Health;
use crate::store::{Batch, Changes, Op, Store, StoredState, VolumeRecord};

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://127.0.0.1:2379`); `etcd://HOST:PORT` is accepted.
    pub endpoints: Vec<String>,
    /// Key prefix (no trailing `/`).
    pub prefix: String,
    /// User name and password for etcd's authentication.
    pub user: Option<(String, String)>,
    /// TLS to etcd (`https`), with a client certificate when etcd asks for
    /// one (`--client-cert-auth`); `None`: plain HTTP/2.
    pub tls: Option<EtcdTls>,
    /// Timeout of one request.
    pub timeout: Duration,
}

impl EtcdConfig {
    /// Parses `etcd://HOST:PORT[,HOST:PORT…]` into endpoints with the default
    /// prefix `/composer` and a 5 s request timeout.
    ///
    /// ```
    /// let c = composer_core::EtcdConfig::parse("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap();
    /// assert_eq!(c.endpoints, ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
    /// assert!(composer_core::EtcdConfig::parse("redis://x:1").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<EtcdConfig, Error> {
        let rest = url.strip_prefix("etcd://").ok_or_else(|| Error::Invalid {
            field: "--store".into(),
            rule: format!("{url:?} must be etcd://HOST:PORT[,HOST:PORT…]"),
        })?;
        let mut endpoints = Vec::new();
        for hp in rest.split(',') {
            let ok = hp
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(Error::Invalid {
                    field: "--store".into(),
                    rule: format!("{hp:?} must be HOST:PORT"),
                });
            }
            endpoints.push(format!("http://{hp}"));
        }
        Ok(EtcdConfig {
            endpoints,
            prefix: "/composer".into(),
            user: None,
            tls: None,
            timeout: Duration::from_secs(5),
        })
    }
}

/// PEM files for TLS to etcd (rustls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificate (`--etcd-ca`).
    pub ca: std::path::PathBuf,
    /// This client's certificate and key (`--etcd-cert`, `--etcd-key`), for
    /// an etcd that authenticates clients by certificate.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl EtcdTls {
    fn options(&self) -> Result<etcd_client::TlsOptions, Error> {
        let read = |field: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| Error::Invalid {
                field: field.into(),
                rule: format!("{} must be a readable PEM file: {e}", path.display()),
            })
        };
        let mut o = etcd_client::TlsOptions::new().ca_certificate(
            etcd_client::Certificate::from_pem(read("--etcd-ca", &self.ca)?),
        );
        if let Some((cert, key)) = &self.identity {
            o = o.identity(etcd_client::Identity::from_pem(
                read("--etcd-cert", cert)?,
                read("--etcd-key", key)?,
            ));
        }
        Ok(o)
    }
}

/// An etcd client error with its causes (tonic's transport error says only
/// "transport error" at the top; the reason, such as an unknown certificate
/// issuer, is in its sources).
fn describe(e: &etcd_client::Error) -> String {
    let mut out = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        let m = c.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = c.source();
    }
    out
}

/// The pause between reads of [`EtcdStore::landed`].
const LANDED_RETRY: Duration = Duration::from_millis(50);

/// How long [`EtcdStore::landed`] reads again (within the request
/// timeout): long enough for the channel to reconnect after a broken
/// connection, short enough that a call to an etcd that is down still
/// answers soon (reading until the request timeout, each create to a
/// stopped etcd took the whole timeout to answer `UNAVAILABLE`).
const LANDED_BUDGET: Duration = Duration::from_secs(1);

/// Interval of the HTTP/2 pings to etcd (see [`EtcdStore::connect`]).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Feed {
    /// Every event under the prefix up to this revision has been received
    /// (advanced only by events and by full listings, never by a response
    /// header alone: etcd 3.4 may send a header revision ahead of events
    /// still queued for the watcher).
    revision: u64,
    pending: Changes,
    /// Volume ids and mark targets as far as the feed has reported them, so
    /// that a full re-list after a compaction can report deletions.
    volumes: HashSet<String>,
    marks: HashSet<String>,
    /// Why the watch is not live, while it reconnects.
    down: Option<String>,
}

struct Shared {
    feed: Mutex<Feed>,
    moved: Condvar,
}

impl Shared {
    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_down(&self, why: Option<String>) {
        let mut f = self.feed();
        f.down = why;
        self.moved.notify_all();
    }
}

/// The composer's state on etcd.
pub struct EtcdStore {
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    cfg: EtcdConfig,
    shared: Arc<Shared>,
    /// Revision of this store's own last write per key, kept while a guarded
    /// commit waiting here read an older revision (see [`Pending`]).
    own: Mutex<HashMap<String, u64>>,
    /// The read revisions of the guarded commits waiting or in flight here.
    pending: Pending,
    /// Volume id → name, for deletes (kept from load, own commits and changes).
    names: Mutex<HashMap<String, String>>,
    /// The revision of the change that made the last transaction fail.
    conflict_at: Mutex<u64>,
    /// Whether the watch was started (by [`Store::load`]).
    watching: std::sync::atomic::AtomicBool,
    /// Whose turn it is to send a guarded commit.
    turn: CommitTurn,
}

/// The read revisions of the guarded commits that wait for their turn or
/// are in flight, as a multiset. A commit's compare on a key is
/// `mod_revision < max(read, own write) + 1`; an own write may be forgotten
/// only once no waiting commit read a revision below it. Forgotten when the
/// watch had brought it (the earlier rule), a commit that planned at an
/// older revision and waited behind dozens of others for its turn failed on
/// a key this replica had written itself (64 concurrent creates on one
/// replica answered `ABORTED`).
#[derive(Default)]
struct Pending(Mutex<std::collections::BTreeMap<u64, usize>>);

/// One registered read revision, removed on drop.
struct PendingRead<'a>(&'a Pending, u64);

impl Pending {
    fn register(&self, read: u64) -> PendingRead<'_> {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(read)
            .or_default() += 1;
        PendingRead(self, read)
    }

    /// The oldest read revision of a commit waiting or in flight.
    fn oldest(&self) -> Option<u64> {
        let reads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        reads.keys().next().copied()
    }
}

impl Drop for PendingRead<'_> {
    fn drop(&mut self) {
        let mut reads = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = reads.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                reads.remove(&self.1);
            }
        }
    }
}

/// One guarded commit of a store in flight at a time. Plans made on one
/// replica never overlap (its pool holds the space of every plan in
/// flight), but the compares of a transaction cannot tell this replica's
/// own writes still in flight from another replica's: two commits of one
/// replica that touched one key (the sequence, a drive's guard) failed each
/// other, and with dozens of clients on one replica the retries of a
/// create ran out (`ABORTED`) while the others kept winning. Sent one after
/// the other, each transaction compares against the revision of the last
/// own write. The wait for the turn counts towards the request timeout.
#[derive(Default)]
struct CommitTurn {
    busy: Mutex<bool>,
    freed: Condvar,
}

struct Turn<'a>(&'a CommitTurn);

impl CommitTurn {
    fn take(&self, deadline: std::time::Instant, timeout: Duration) -> Result<Turn<'_>, Error> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy {
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable(format!(
                    "etcd: committing: this replica's earlier commits took longer than {timeout:?}"
                )));
            }
            busy = self
                .freed
                .wait_timeout(busy, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *busy = true;
        Ok(Turn(self))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.freed.notify_one();
    }
}

fn unavailable(what: &str) -> impl Fn(etcd_client::Error) -> Error + '_ {
    move |e| Error::Unavailable(format!("etcd: {what}: {}", describe(&e)))
}

/// The keys and values the reads of a transaction's answer found.
fn read_kvs(resp: etcd_client::TxnResponse) -> Vec<etcd_client::KeyValue> {
    resp.op_responses()
        .into_iter()
        .filter_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => Some(g.kvs().to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn seq_value(n: u64) -> String {
    format!("{n:020}")
}

impl EtcdStore {
    /// Connects (the cluster must answer within the timeout).
    pub fn connect(cfg: EtcdConfig) -> Result<EtcdStore, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-store")
            .enable_all()
            .build()
            .map_err(|e| Error::Store(format!("starting the etcd runtime: {e}")))?;
        let mut opts = ConnectOptions::new()
            .with_timeout(cfg.timeout)
            .with_connect_timeout(cfg.timeout)
            // HTTP/2 pings find a dead connection under the watch. etcd
            // answers a client that pings more often than
            // `--grpc-keepalive-min-time` (default 5 s), or pings with no
            // stream open, with GOAWAY "too many pings": pinging every 2 s
            // broke every stream of the connection (the watch, the lease
            // keep-alive) about every 10 s. Every 10 s, and only while a
            // stream is open, stays within etcd's default policy.
            .with_keep_alive(KEEP_ALIVE, cfg.timeout)
            .with_keep_alive_while_idle(false);
        if let Some((u, p)) = &cfg.user {
            opts = opts.with_user(u.clone(), p.clone());
        }
        let mut endpoints = cfg.endpoints.clone();
        if let Some(tls) = &cfg.tls {
            opts = opts.with_tls(tls.options()?);
            for e in &mut endpoints {
                if let Some(rest) = e.strip_prefix("http://") {
                    *e = format!("https://{rest}");
                }
            }
        }
        let what = match &cfg.tls {
            Some(t) => format!(
                "connecting to {} over TLS (CA {})",
                endpoints.join(","),
                t.ca.display()
            ),
            None => format!("connecting to {}", endpoints.join(",")),
        };
        // Not `block_on`: the caller may be on another runtime's thread.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(Client::connect(endpoints, Some(opts)).await);
        });
        let client = rx
            .recv()
            .map_err(|_| Error::Store("the etcd runtime stopped".into()))?
            .map_err(unavailable(&what))?;
        let store = EtcdStore {
            rt: Some(rt),
            client,
            cfg,
            shared: Arc::new(Shared {
                feed: Mutex::new(Feed::default()),
                moved: Condvar::new(),
            }),
            own: Mutex::new(HashMap::new()),
            pending: Pending::default(),
            names: Mutex::new(HashMap::new()),
            conflict_at: Mutex::new(0),
            watching: std::sync::atomic::AtomicBool::new(false),
            turn: CommitTurn::default(),
        };
        // The channel connects lazily: one round trip now, so that a wrong
        // address, CA or certificate is reported here, naming what failed.
        store.ping().map_err(|e| match e {
            Error::Unavailable(m) => Error::Unavailable(format!(
                "{what}: {}",
                m.trim_start_matches("etcd: status: ")
            )),
            e => e,
        })?;
        Ok(store)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime lives until drop")
    }

    /// Asks etcd for its status (one round trip).
    pub fn ping(&self) -> Result<(), Error> {
        let mut client = self.client.clone();
        self.run("status", async move { client.status().await })
            .map(|_| ())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.cfg.prefix)
    }

    /// Runs one etcd request on the store's runtime and waits for it, at
    /// most the request timeout: a request that etcd (or a connection to a
    /// stopped etcd) never answers fails with `Unavailable` instead of
    /// holding its caller, wherever it is stuck (tonic's own timeout covers
    /// only the time on the wire, not the wait for a ready connection).
    fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, Error> {
        self.run_until(what, std::time::Instant::now() + self.cfg.timeout, fut)
    }

    fn run_until<T: Send + 'static>(
        &self,
        what: &'static str,
        deadline: std::time::Instant,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.cfg.timeout;
        self.rt().spawn(async move {
            let r = match tokio::time::timeout_at(deadline.into(), fut).await {
                Ok(r) => {
                    r.map_err(|e| Error::Unavailable(format!("etcd: {what}: {}", describe(&e))))
                }
                Err(_) => Err(Error::Unavailable(format!(
                    "etcd: {what}: no answer within {timeout:?}"
                ))),
            };
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "etcd: {what}: the runtime stopped"
            )))
        })
    }

    fn bound(&self, own: &HashMap<String, u64>, read: u64, key: &str) -> i64 {
        own.get(key).copied().unwrap_or(0).max(read) as i64 + 1
    }

    /// Books a commit that landed at `revision`: its puts among the volumes
    /// the feed holds, the keys it wrote among this store's own writes, the
    /// names it changed among the known ones.
    fn committed(
        &self,
        revision: u64,
        touched: Vec<String>,
        name_changes: Vec<(String, Option<String>)>,
    ) {
        {
            // The watch may not have brought these puts yet when its stream
            // breaks: a relist must still count them among the volumes this
            // replica holds, or it never reports their deletion (a volume
            // deleted meanwhile stayed on this replica for good).
            let mut f = self.shared.feed();
            for (id, name) in &name_changes {
                if name.is_some() {
                    f.volumes.insert(id.clone());
                }
            }
        }
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        // Own writes at or below every waiting commit's read need no
        // exception (an unguarded commit leaves them to the next guarded one).
        if let Some(floor) = self.pending.oldest() {
            own.retain(|_, r| *r > floor);
        }
        for k in touched {
            own.insert(k, revision);
        }
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for (id, name) in name_changes {
            match name {
                Some(n) => names.insert(id, n),
                None => names.remove(&id),
            };
        }
    }

    /// After a commit whose answer was lost: whether every record it put
    /// (`written`: volume key and value) is in etcd exactly as written, and
    /// then the revision it landed at (one transaction's writes share their
    /// mod revision). `Ok(None)`: not there as written. Read again after a
    /// failed read (the channel reconnects after a broken connection), for
    /// [`LANDED_BUDGET`] at most and until `deadline`.
    fn landed(
        &self,
        written: Vec<(String, Vec<u8>)>,
        deadline: std::time::Instant,
    ) -> Result<Option<u64>, Error> {
        let deadline = deadline.min(std::time::Instant::now() + LANDED_BUDGET);
        let resp = loop {
            let mut client = self.client.clone();
            let gets: Vec<TxnOp> = written
                .iter()
                .map(|w| TxnOp::get(w.0.clone(), None))
                .collect();
            let read = self.run_until(
                "reading back a commit whose answer was lost",
                deadline,
                async move { client.txn(Txn::new().and_then(gets)).await },
            );
            match read {
                Ok(resp) => break resp,
                Err(e) if std::time::Instant::now() + LANDED_RETRY >= deadline => return Err(e),
                Err(_) => std::thread::sleep(LANDED_RETRY),
            }
        };
        let got: HashMap<Vec<u8>, (Vec<u8>, i64)> = read_kvs(resp)
            .into_iter()
            .map(|kv| (kv.key().to_vec(), (kv.value().to_vec(), kv.mod_revision())))
            .collect();
        let mut at = None;
        for (key, value) in &written {
            match got.get(key.as_bytes()) {
                Some((v, r)) if v == value && at.is_none_or(|a| a == *r) => at = Some(*r),
                _ => return Ok(None),
            }
        }
        Ok(at.map(|r| r as u64))
    }

    /// Starts the task that feeds [`Store::changes`] from `revision + 1`:
    /// it watches the prefix and, after a broken stream (reconnecting with
    /// backoff, 100 ms doubling to 2 s) or when etcd compacted the revision
    /// it needs, lists the prefix afresh and watches on from the listing's
    /// revision. While it is not live, [`Store::ready`] and [`Store::changes`]
    /// answer `Unavailable`.
    fn start_watch(&self, revision: u64) {
        if self
            .watching
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let shared = self.shared.clone();
        let client = self.client.clone();
        let prefix = format!("{}/", self.cfg.prefix);
        self.rt()
            .spawn(feed_task(client, prefix, shared, revision + 1));
    }
}

/// What ended one watch stream.
enum Ended {
    /// etcd compacted the revision the watch needs: list afresh.
    Compacted(i64),
    /// The stream broke or etcd cancelled the watch.
    Broken(String),
}

async fn feed_task(mut client: Client, prefix: String, shared: Arc<Shared>, mut next: u64) {
    const FIRST: Duration = Duration::from_millis(100);
    let mut backoff = FIRST;
    let mut relist = false;
    loop {
        if relist {
            match relist_feed(&mut client, &prefix, &shared).await {
                // Every stream after the first starts from a fresh listing.
                Ok(rev) => next = rev + 1,
                Err(e) => {
                    shared.set_down(Some(format!("listing the prefix afresh: {e}")));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next as i64);
        let ended = match client.watch(prefix.clone(), Some(opts)).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            break if resp.compact_revision() > 0 {
                                Ended::Compacted(resp.compact_revision())
                            } else {
                                Ended::Broken(format!(
                                    "etcd cancelled the watch: {}",
                                    resp.cancel_reason()
                                ))
                            };
                        }
                        if resp.created() {
                            backoff = FIRST;
                            shared.set_down(None);
                        }
                        if !resp.events().is_empty() {
                            next = next.max(apply_events(&shared, &prefix, resp.events()) + 1);
                        }
                    }
                    Ok(None) => break Ended::Broken("the watch stream ended".into()),
                    Err(e) => break Ended::Broken(e.to_string()),
                }
            },
            Err(e) => Ended::Broken(e.to_string()),
        };
        match ended {
            Ended::Compacted(at) => {
                tracing::warn!(
                    "etcd watch: revision {next} was compacted (at {at}); listing the prefix afresh"
                );
                relist = true;
            }
            Ended::Broken(why) => {
                // List afresh rather than resume: etcd compacted while the
                // stream was down at exactly `next` keeps no tombstone of a
                // deletion at `next` and does not cancel the watch either,
                // so a resumed watch never reports that deletion. (An etcd
                // that cannot serve the revision asked for need not say so
                // either: 3.4.23 was seen to drop such a stream without the
                // compaction answer.)
                relist = true;
                tracing::warn!("etcd watch from revision {next}: {why}; reconnecting");
                shared.set_down(Some(format!("the watch is reconnecting: {why}")));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Applies one watch response's events to the feed; returns the revision
/// now complete (the last event's: etcd never splits a revision's events).
fn apply_events(shared: &Shared, prefix: &str, events: &[etcd_client::Event]) -> u64 {
    let mut f = shared.feed();
    let mut upto = f.revision;
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let r = kv.mod_revision() as u64;
        upto = upto.max(r);
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let put = ev.event_type() == EventType::Put;
        if let Some(id) = rest.strip_prefix("volumes/") {
            let rec = if put {
                match serde_json::from_slice::<VolumeRecord>(kv.value()) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::error!("etcd: volume record {id} is not readable: {e}");
                        continue;
                    }
                }
            } else {
                None
            };
            if put {
                f.volumes.insert(id.to_string());
            } else {
                f.volumes.remove(id);
            }
            f.pending.volumes.push((id.to_string(), r, rec));
        } else if let Some(t) = rest.strip_prefix("marks/") {
            let h = if put {
                serde_json::from_slice::<Health>(kv.value()).ok()
            } else {
                None
            };
            if h.is_some() {
                f.marks.insert(t.to_string());
            } else {
                f.marks.remove(t);
            }
            f.pending.marks.push((t.to_string(), h));
        } else if rest == "seq"
            && put
            && let Ok(n) = std::str::from_utf8(kv.value()).unwrap_or("").parse::<u64>()
        {
            let cur = f.pending.next_seq.unwrap_or(0);
            f.pending.next_seq = Some(cur.max(n));
        }
    }
    f.revision = upto;
    f.pending.revision = upto;
    shared.moved.notify_all();
    upto
}

/// Lists the prefix at one revision and reports, as changes, everything
/// that differs from what the feed reported so far (deletions included).
async fn relist_feed(client: &mut Client, prefix: &str, shared: &Shared) -> Result<u64, Error> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(unavailable("listing"))?;
    let rev = resp.header().map(|h| h.revision() as u64).unwrap_or(0);
    let mut volumes = Vec::new();
    let mut marks = Vec::new();
    let mut seq = None;
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        if let Some(id) = rest.strip_prefix("volumes/") {
            let rec: VolumeRecord = serde_json::from_slice(kv.value()).map_err(|e| {
                Error::Store(format!("etcd: volume record {id} is not readable: {e}"))
            })?;
            volumes.push((id.to_string(), kv.mod_revision() as u64, Some(rec)));
        } else if let Some(t) = rest.strip_prefix("marks/") {
            marks.push((
                t.to_string(),
                serde_json::from_slice::<Health>(kv.value()).ok(),
            ));
        } else if rest == "seq" {
            seq = std::str::from_utf8(kv.value())
                .ok()
                .and_then(|s| s.parse().ok());
        }
    }
    let mut f = shared.feed();
    let listed: HashSet<String> = volumes.iter().map(|v| v.0.clone()).collect();
    let gone: Vec<String> = f.volumes.difference(&listed).cloned().collect();
    for id in gone {
        f.pending.volumes.push((id, rev, None));
    }
    let listed_marks: HashSet<String> = marks.iter().map(|m| m.0.clone()).collect();
    let gone: Vec<String> = f.marks.difference(&listed_marks).cloned().collect();
    for t in gone {
        f.pending.marks.push((t, None));
    }
    f.volumes = listed;
    f.marks = listed_marks;
    f.pending.volumes.extend(volumes);
    f.pending.marks.extend(marks);
    if let Some(n) = seq {
        f.pending.next_seq = Some(f.pending.next_seq.unwrap_or(0).max(n));
    }
    f.revision = f.revision.max(rev);
    f.pending.revision = f.revision;
    shared.moved.notify_all();
    Ok(rev)
}

impl Store for EtcdStore {
    fn load(&self) -> Result<StoredState, Error> {
        let mut client = self.client.clone();
        let prefix = format!("{}/", self.cfg.prefix);
        let seq_key = self.key("seq");
        let resp = self.run("loading", async move {
            // Create the sequence key once, then read everything at one revision.
            client
                .txn(
                    Txn::new()
                        .when(vec![Compare::version(seq_key.clone(), CompareOp::Equal, 0)])
                        .and_then(vec![TxnOp::put(seq_key, seq_value(0), None)]),
                )
                .await?;
            client
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
        });
        let resp = resp?;
        let revision = resp.header().map(|h| h.revision() as u64).unwrap_or(0);
        let mut st = StoredState {
            revision,
            ..StoredState::default()
        };
        let p = format!("{}/", self.cfg.prefix);
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let Some(rest) = key.strip_prefix(&p) else {
                continue;
            };
            if let Some(id) = rest.strip_prefix("volumes/") {
                let rec: VolumeRecord = serde_json::from_slice(kv.value()).map_err(|e| {
                    Error::Store(format!("etcd: volume record {id} is not readable: {e}"))
                })?;
                names.insert(rec.id.clone(), rec.name.clone());
                st.volumes.insert(rec.id.clone(), rec);
            } else if let Some(t) = rest.strip_prefix("marks/") {
                let h: Health = serde_json::from_slice(kv.value())
                    .map_err(|e| Error::Store(format!("etcd: mark {t} is not readable: {e}")))?;
                st.marks.insert(t.to_string(), h);
            } else if rest == "seq" {
                st.next_seq = std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::Store("etcd: the sequence is not a number".into()))?;
            }
        }
        drop(names);
        {
            let mut f = self.shared.feed();
            f.revision = revision;
            f.pending = Changes {
                revision,
                ..Changes::default()
            };
            f.volumes = st.volumes.keys().cloned().collect();
            f.marks = st.marks.keys().cloned().collect();
        }
        self.start_watch(revision);
        Ok(st)
    }

    fn commit(&self, batch: Batch) -> Result<u64, Error> {
        if batch.expect_revision.is_some() {
            return Err(Error::Invalid {
                field: "batch.expect_revision".into(),
                rule: "the etcd store guards each key by its revision; use read_revision".into(),
            });
        }
        let read = batch.read_revision.unwrap_or(u64::MAX / 2);
        let guarded = batch.read_revision.is_some();
        let deadline = std::time::Instant::now() + self.cfg.timeout;
        // This replica's guarded commits go to etcd one at a time, so that
        // each one's compares know the revision of the one before (see
        // `CommitTurn`).
        let _read = guarded.then(|| self.pending.register(read));
        let _turn = if guarded {
            Some(self.turn.take(deadline, self.cfg.timeout)?)
        } else {
            None
        };
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut touched = Vec::new();
        let mut on_conflict = Vec::new();
        let mut name_changes: Vec<(String, Option<String>)> = Vec::new();
        // What the transaction writes to each volume key, for telling after
        // a lost answer whether it landed; `None` when the batch does more
        // than put records and raise the sequence (its landing revision
        // cannot be read back then).
        let mut written: Option<Vec<(String, Vec<u8>)>> = Some(Vec::new());
        {
            let own = self.own.lock().unwrap_or_else(|e| e.into_inner());
            let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            let mut guard = |key: String, compares: &mut Vec<Compare>| {
                if guarded {
                    compares.push(Compare::mod_revision(
                        key.clone(),
                        CompareOp::Less,
                        self.bound(&own, read, &key),
                    ));
                    // On failure, the guarded keys' revisions say which
                    // change the watch must bring before planning again.
                    on_conflict.push(TxnOp::get(
                        key.clone(),
                        Some(GetOptions::new().with_keys_only()),
                    ));
                }
                touched.push(key);
            };
            for op in batch.ops {
                match op {
                    Op::PutVolume(rec) => {
                        let vk = self.key(&format!("volumes/{}", rec.id));
                        let nk = self.key(&format!("names/{}", rec.name));
                        guard(vk.clone(), &mut compares);
                        guard(nk.clone(), &mut compares);
                        let mut drives: Vec<&str> =
                            rec.members.iter().map(|m| m.drive.as_str()).collect();
                        drives.sort_unstable();
                        drives.dedup();
                        for d in drives {
                            let dk = self.key(&format!("drives/{d}"));
                            guard(dk.clone(), &mut compares);
                            ops.push(TxnOp::put(dk, rec.id.clone(), None));
                        }
                        for (i, m) in rec.members.iter().enumerate() {
                            ops.push(TxnOp::put(
                                self.key(&format!("alloc/{}/{i:03}", rec.id)),
                                format!("{} {} {}", m.drive, m.offset, m.len),
                                None,
                            ));
                        }
                        // Members beyond the record's count (none today) go.
                        ops.push(TxnOp::delete(
                            self.key(&format!("alloc/{}/{:03}", rec.id, rec.members.len())),
                            Some(
                                DeleteOptions::new()
                                    .with_range(self.key(&format!("alloc/{}/:", rec.id))),
                            ),
                        ));
                        let json = serde_json::to_vec(&*rec)
                            .map_err(|e| Error::Internal(format!("encoding a record: {e}")))?;
                        ops.push(TxnOp::put(nk, rec.id.clone(), None));
                        if let Some(w) = &mut written {
                            w.push((vk.clone(), json.clone()));
                        }
                        ops.push(TxnOp::put(vk, json, None));
                        name_changes.push((rec.id.clone(), Some(rec.name.clone())));
                    }
                    Op::DeleteVolume(id) => {
                        written = None;
                        let vk = self.key(&format!("volumes/{id}"));
                        guard(vk.clone(), &mut compares);
                        ops.push(TxnOp::delete(vk, None));
                        ops.push(TxnOp::delete(
                            self.key(&format!("alloc/{id}/")),
                            Some(DeleteOptions::new().with_prefix()),
                        ));
                        if let Some(name) = names.get(&id) {
                            let nk = self.key(&format!("names/{name}"));
                            guard(nk.clone(), &mut compares);
                            ops.push(TxnOp::delete(nk, None));
                        }
                        name_changes.push((id, None));
                    }
                    Op::PutMark { target, health } => {
                        written = None;
                        let json = serde_json::to_vec(&health)
                            .map_err(|e| Error::Internal(format!("encoding a mark: {e}")))?;
                        ops.push(TxnOp::put(self.key(&format!("marks/{target}")), json, None));
                    }
                    Op::DeleteMark(target) => {
                        written = None;
                        ops.push(TxnOp::delete(self.key(&format!("marks/{target}")), None));
                    }
                    Op::NextSeq(n) => {
                        let sk = self.key("seq");
                        guard(sk.clone(), &mut compares);
                        // Raise, never lower: a nested transaction on the value
                        // (20 digits, so bytes order as numbers).
                        ops.push(TxnOp::txn(
                            Txn::new()
                                .when(vec![Compare::value(
                                    sk.clone(),
                                    CompareOp::Less,
                                    seq_value(n),
                                )])
                                .and_then(vec![TxnOp::put(sk, seq_value(n), None)]),
                        ));
                    }
                }
            }
        }
        let fence = FENCE.with(|f| f.borrow().clone());
        let leader_key = self.key(LEADER);
        if let Some(fence) = &fence {
            // A leader's write: only while its term (the leader key it
            // created) is still the current one.
            compares.push(Compare::create_revision(
                leader_key.clone(),
                CompareOp::Equal,
                fence.term.revision,
            ));
            on_conflict.push(TxnOp::get(leader_key.clone(), None));
        }
        let mut client = self.client.clone();
        let txn = Txn::new().when(compares).and_then(ops).or_else(on_conflict);
        let resp = match self.run_until(
            "committing",
            deadline,
            async move { client.txn(txn).await },
        ) {
            Ok(resp) => resp,
            Err(e) => {
                // The answer may be lost with the transaction landed (the
                // connection broke after etcd applied it): read the records
                // back while time is left, and a batch whose every record is
                // there as written landed, at the revision of those writes.
                // Answered as a failure, its create would be reported failed
                // with its volume in etcd (and its plan given back here).
                let revision = match written.filter(|w| !w.is_empty()) {
                    Some(w) => self.landed(w, deadline).unwrap_or_else(|why| {
                        tracing::debug!("after a lost answer ({e}): {why}");
                        None
                    }),
                    None => None,
                };
                let Some(revision) = revision else {
                    return Err(e);
                };
                tracing::warn!(
                    "etcd: the answer to a commit was lost ({e}), but it landed at revision {revision}"
                );
                self.committed(revision, touched, name_changes);
                return Ok(revision);
            }
        };
        let revision = resp.header().map(|h| h.revision() as u64).unwrap_or(0);
        if !resp.succeeded() {
            let got = read_kvs(resp);
            if let Some(fence) = &fence {
                let current = got
                    .iter()
                    .find(|kv| kv.key() == leader_key.as_bytes())
                    .map(|kv| kv.create_revision());
                if current != Some(fence.term.revision) {
                    let why = format!(
                        "fenced: term {} is over (the leader key is {})",
                        fence.term.revision,
                        current.map_or("gone".into(), |r| format!("of term {r}"))
                    );
                    fence.state.step_down(fence.term, &why);
                    return Err(Error::Unavailable(format!("etcd: {why}")));
                }
            }
            let changed = got
                .iter()
                .filter(|kv| kv.key() != leader_key.as_bytes())
                .map(|kv| kv.mod_revision() as u64)
                .max()
                .unwrap_or(revision);
            *self.conflict_at.lock().unwrap_or_else(|e| e.into_inner()) = changed;
            return Err(Error::Conflict(format!(
                "another replica changed this state after revision {read} (etcd is at {revision})"
            )));
        }
        self.committed(revision, touched, name_changes);
        Ok(revision)
    }

    fn changes(&self) -> Result<Option<Changes>, Error> {
        let mut f = self.shared.feed();
        if let Some(why) = &f.down {
            return Err(Error::Unavailable(format!("etcd: {why}")));
        }
        if f.pending.volumes.is_empty()
            && f.pending.marks.is_empty()
            && f.pending.next_seq.is_none()
        {
            return Ok(None);
        }
        let revision = f.revision;
        let out = std::mem::replace(
            &mut f.pending,
            Changes {
                revision,
                ..Changes::default()
            },
        );
        drop(f);
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for (id, _, rec) in &out.volumes {
            match rec {
                Some(r) => names.insert(id.clone(), r.name.clone()),
                None => names.remove(id),
            };
        }
        drop(names);
        Ok(Some(out))
    }

    fn catch_up(&self) -> Result<(), Error> {
        let target = *self.conflict_at.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + self.cfg.timeout;
        let mut f = self.shared.feed();
        while f.revision < target {
            let now = std::time::Instant::now();
            if now >= deadline {
                let why = f.down.clone().unwrap_or_else(|| "it is slow".into());
                return Err(Error::Unavailable(format!(
                    "etcd: the watch did not reach revision {target} in {:?} ({why})",
                    self.cfg.timeout
                )));
            }
            f = self
                .shared
                .moved
                .wait_timeout(f, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    fn ready(&self) -> Result<(), Error> {
        match &self.shared.feed().down {
            Some(why) => Err(Error::Unavailable(format!("etcd: {why}"))),
            None => Ok(()),
        }
    }
}

/// `fut`, or an error when it takes longer than `t`.
async fn within<T>(
    t: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(t, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {t:?}")),
    }
}

/// The leader key under the prefix.
const LEADER: &str = "leader";

/// One term of leadership: the revision that created the leader key, and
/// the lease the key lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// The leader key's create revision (what fenced writes compare).
    pub revision: i64,
    /// The lease id.
    pub lease: i64,
}

#[derive(Debug, Default)]
struct LeaderInner {
    term: Option<Term>,
    /// The lease surely lives until then: the keep-alive (or grant) was sent
    /// before this instant minus the TTL, and etcd counts from receipt.
    valid_until: Option<std::time::Instant>,
}

#[derive(Debug, Default)]
struct LeaderState {
    inner: Mutex<LeaderInner>,
}

impl LeaderState {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaderInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn step_down(&self, term: Term, why: &str) {
        let mut g = self.lock();
        if g.term == Some(term) {
            g.term = None;
            g.valid_until = None;
            tracing::warn!("leader: stepped down from term {}: {why}", term.revision);
        }
    }
}

#[derive(Clone)]
struct Fence {
    term: Term,
    state: Arc<LeaderState>,
}

thread_local! {
    /// Set by [`Leadership::fenced`] while a leader's work runs on this thread.
    static FENCE: std::cell::RefCell<Option<Fence>> = const { std::cell::RefCell::new(None) };
}

/// Leadership among the replicas on one etcd prefix, by a lease
/// ([`EtcdStore::campaign`]): the leader key `P/leader` holds the leader's id
/// and lives on its lease. Background work runs through
/// [`Leadership::fenced`]: only while this replica's lease surely lives (by
/// its own clock, counted from before the last keep-alive it sent), and
/// every write it commits carries the compare "the leader key is still the
/// one this term created", so a leader paused past its lease cannot write
/// once another has taken over: it gets `Unavailable` and steps down.
pub struct Leadership {
    state: Arc<LeaderState>,
}

impl Leadership {
    /// This replica's current term, if it leads (and its lease surely lives).
    pub fn term(&self) -> Option<Term> {
        let mut g = self.state.lock();
        let term = g.term?;
        if g.valid_until.is_some_and(|t| std::time::Instant::now() < t) {
            return Some(term);
        }
        g.term = None;
        g.valid_until = None;
        tracing::warn!(
            "leader: stepped down from term {}: the lease may have expired",
            term.revision
        );
        None
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.term().is_some()
    }

    /// Runs `work` as the leader: every store commit it makes on this
    /// thread is fenced by the current term. `Unavailable` without running
    /// it when this replica does not lead.
    pub fn fenced<T>(&self, work: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        let term = self
            .term()
            .ok_or_else(|| Error::Unavailable("this replica is not the leader".into()))?;
        self.fenced_as(term, work)
    }

    /// [`Leadership::fenced`] with a given term, even one that is over
    /// (etcd refuses its writes): for tests of the fence.
    pub fn fenced_as<T>(
        &self,
        term: Term,
        work: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                FENCE.with(|f| f.borrow_mut().take());
            }
        }
        FENCE.with(|f| {
            *f.borrow_mut() = Some(Fence {
                term,
                state: self.state.clone(),
            })
        });
        let _reset = Reset;
        work()
    }
}

impl EtcdStore {
    /// Campaigns for leadership in the background as `id` with a lease of
    /// `ttl` (at least 1 s; whole seconds): a candidate tries to create the
    /// leader key every `ttl / 3`; the leader keeps its lease alive every
    /// `ttl / 3` and steps down when a keep-alive fails or finds the lease
    /// gone (and then stands aside for one `ttl`).
    pub fn campaign(&self, id: &str, ttl: Duration) -> Leadership {
        let state = Arc::new(LeaderState::default());
        let ttl_s = ttl.as_secs().max(1) as i64;
        let ttl = Duration::from_secs(ttl_s as u64);
        let every = ttl / 3;
        let key = self.key(LEADER);
        let mut client = self.client.clone();
        let id = id.to_string();
        let st = state.clone();
        self.rt().spawn(async move {
            loop {
                let sent = std::time::Instant::now();
                // Every request here is bounded by `every`: one that etcd
                // never answers must not hold the campaign (or a term) up.
                let lease = match within(every, client.lease_grant(ttl_s, None)).await {
                    Ok(l) => l.id(),
                    Err(e) => {
                        tracing::debug!("leader: granting a lease: {e}");
                        tokio::time::sleep(every).await;
                        continue;
                    }
                };
                let txn = Txn::new()
                    .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
                    .and_then(vec![TxnOp::put(
                        key.clone(),
                        id.clone(),
                        Some(etcd_client::PutOptions::new().with_lease(lease)),
                    )]);
                let won = match within(every, client.txn(txn)).await {
                    Ok(r) if r.succeeded() => r.header().map(|h| h.revision()),
                    _ => None,
                };
                let Some(revision) = won else {
                    let _ = within(every, client.lease_revoke(lease)).await;
                    tokio::time::sleep(every).await;
                    continue;
                };
                let term = Term { revision, lease };
                {
                    let mut g = st.lock();
                    g.term = Some(term);
                    g.valid_until = Some(sent + ttl);
                }
                tracing::warn!("leader: {id} took over (term {revision})");
                if let Ok((mut keeper, mut stream)) =
                    within(every, client.lease_keep_alive(lease)).await
                {
                    loop {
                        tokio::time::sleep(every).await;
                        if st.lock().term != Some(term) {
                            break;
                        }
                        let sent = std::time::Instant::now();
                        if within(every, keeper.keep_alive()).await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(every, stream.message()).await {
                            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                                let mut g = st.lock();
                                if g.term != Some(term) {
                                    break;
                                }
                                g.valid_until = Some(sent + Duration::from_secs(r.ttl() as u64));
                            }
                            _ => break,
                        }
                    }
                }
                st.step_down(term, "the lease could not be kept alive");
                let _ = within(every, client.lease_revoke(lease)).await;
                // Leave the others a full lease to take over.
                tokio::time::sleep(ttl).await;
            }
        });
        Leadership { state }
    }
}

/// The id in the leader key, read with a client of its own (for tests and
/// operators).
pub fn leader(cfg: &EtcdConfig) -> Result<Option<String>, Error> {
    let store = EtcdStore::connect(cfg.clone())?;
    let mut client = store.client.clone();
    let key = store.key(LEADER);
    let resp = store.run("reading the leader key", async move {
        client.get(key, None).await
    })?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// Ends the current leader's term at once, as the expiry of its lease
/// would: revokes the lease the leader key lives on (the key goes with it).
/// The old leader's next fenced write is refused by etcd and it steps down;
/// the replicas campaign again. Returns the id that led, or `None` when no
/// replica did. For operators (to move the background work off a replica)
/// and tests.
pub fn end_term(cfg: &EtcdConfig) -> Result<Option<String>, Error> {
    let store = EtcdStore::connect(cfg.clone())?;
    let mut client = store.client.clone();
    let key = store.key(LEADER);
    store.run("ending the leader's term", async move {
        let resp = client.get(key, None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(kv.value()).into_owned();
        client.lease_revoke(kv.lease()).await?;
        Ok(Some(id))
    })
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Stops the watch without waiting (the store may be dropped on an
        // async runtime's thread, where blocking is not allowed).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A one-member etcd on free ports of 127.0.0.1 with its data in a temp dir,
/// for tests, benchmarks and trying the composer out: Debian's `etcd-server`
/// (installed with apt-get when missing and running as root). Stopped by PID
/// when dropped.
pub struct LocalEtcd {
    child: Option<std::process::Child>,
    client_port: u16,
    /// A second client port, for [`LocalEtcd::restart_aside`].
    side_port: u16,
    peer_port: u16,
    /// Its member name, unique on this machine: readiness checks that the
    /// etcd answering on the port is this one.
    name: String,
    dir: tempfile::TempDir,
    tls: Option<LocalEtcdTls>,
}

/// TLS of a [`LocalEtcd`]: it serves its clients over https only and asks
/// each for a certificate signed by `client_ca` (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct LocalEtcdTls {
    /// The server's certificate (PEM), valid for 127.0.0.1.
    pub cert: std::path::PathBuf,
    /// Its key (PEM).
    pub key: std::path::PathBuf,
    /// The CA that client certificates must be signed by.
    pub client_ca: std::path::PathBuf,
    /// What clients of [`LocalEtcd::config`] use.
    pub client: EtcdTls,
    /// A CA that signed nothing here (for trying a wrong `--etcd-ca`).
    pub other_ca: std::path::PathBuf,
}

impl LocalEtcdTls {
    /// Makes a CA, a server certificate for 127.0.0.1 and a client
    /// certificate signed by it, and a second, unrelated CA, as PEM files in
    /// `dir`, with the `openssl` command (Debian's `openssl`, installed with
    /// apt-get when missing). EC P-256 keys, valid for a day.
    pub fn generate(dir: &std::path::Path) -> Result<LocalEtcdTls, String> {
        use std::process::{Command, Stdio};
        let have = || {
            Command::new("openssl")
                .arg("version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have() {
            apt_install("openssl");
            if !have() {
                return Err("the openssl command is missing and could not be installed".into());
            }
        }
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .map_err(|e| format!("openssl: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let key = format!("{ca}-key.pem");
            let pem = format!("{ca}.pem");
            let subj = format!("/CN=composer test {ca}");
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &pem, "-days", "1", "-subj", &subj]);
            run(&a)?;
        }
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let key = format!("{name}-key.pem");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let extfile = format!("{name}.ext");
            std::fs::write(dir.join(&extfile), ext).map_err(|e| format!("{extfile}: {e}"))?;
            let subj = format!("/CN=composer test {name}");
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&a)?;
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &extfile,
            ])?;
        }
        Ok(LocalEtcdTls {
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            client_ca: dir.join("ca.pem"),
            client: EtcdTls {
                ca: dir.join("ca.pem"),
                identity: Some((dir.join("client.pem"), dir.join("client-key.pem"))),
            },
            other_ca: dir.join("other-ca.pem"),
        })
    }
}

/// Says that `test` skipped because etcd could not start; panics instead
/// under `CI=true`, so that CI never passes without running the test.
fn skip(test: &str, why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: etcd is needed under CI=true and could not be started: {why}");
    }
    eprintln!("SKIPPED {test}: etcd could not be started: {why}");
}

/// A port of 127.0.0.1 that was free a moment ago and that no other
/// [`LocalEtcd`] of this process was given: tests start several in parallel,
/// and the kernel may hand a port just closed out again. (Another process
/// can still take it before etcd binds it: etcd then exits on the busy
/// port, or readiness finds another member name and says so.)
fn free_port() -> Result<u16, String> {
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("finding a free port: {e}"))?;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return Ok(port);
        }
    }
    Err("finding a free port: the kernel kept handing out ports already given".into())
}

/// Installs a Debian package with apt-get (after `apt-get update` when the
/// first try fails); whether it succeeded.
fn apt_install(pkg: &str) -> bool {
    use std::process::{Command, Stdio};
    let install = || {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "install", "-y", pkg])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return true;
    }
    let _ = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300", "update"])
        .stdout(Stdio::null())
        .status();
    install()
}

fn etcd_installed() -> bool {
    std::process::Command::new("etcd")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl LocalEtcd {
    /// Installs etcd if needed, starts it and waits until it answers (at most
    /// 30 s), or says why it could not.
    pub fn start() -> Result<LocalEtcd, String> {
        LocalEtcd::start_with(None)
    }

    /// [`LocalEtcd::start`] serving over TLS with client certificates.
    pub fn start_tls(tls: LocalEtcdTls) -> Result<LocalEtcd, String> {
        LocalEtcd::start_with(Some(tls))
    }

    fn start_with(tls: Option<LocalEtcdTls>) -> Result<LocalEtcd, String> {
        use std::process::Command;
        if !etcd_installed() {
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
            if !root {
                return Err("etcd is not installed and this is not root".into());
            }
            apt_install("etcd-server");
            if !etcd_installed() {
                return Err("installing Debian's etcd-server failed".into());
            }
        }
        let mut e = LocalEtcd {
            child: None,
            client_port: free_port()?,
            side_port: free_port()?,
            peer_port: free_port()?,
            name: {
                static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("local-{}-{n}", std::process::id())
            },
            dir: tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?,
            tls,
        };
        e.restart()?;
        Ok(e)
    }

    /// For tests: [`LocalEtcd::start`], or `None` after printing that `test`
    /// skipped and why; under `CI=true` a failure to start panics instead,
    /// so that CI never passes without running the test.
    pub fn start_or_skip(test: &str) -> Option<LocalEtcd> {
        LocalEtcd::start().map_err(|why| skip(test, &why)).ok()
    }

    /// For tests: certificates made in `certs` ([`LocalEtcdTls::generate`])
    /// and [`LocalEtcd::start_tls`] with them, or `None` after printing that
    /// `test` skipped and why (a panic under `CI=true`, as in
    /// [`LocalEtcd::start_or_skip`]).
    pub fn start_tls_or_skip(
        test: &str,
        certs: &std::path::Path,
    ) -> Option<(LocalEtcd, LocalEtcdTls)> {
        LocalEtcdTls::generate(certs)
            .and_then(|t| Ok((LocalEtcd::start_tls(t.clone())?, t)))
            .map_err(|why| skip(test, &why))
            .ok()
    }

    /// `etcd://127.0.0.1:PORT`, for [`EtcdConfig::parse`] and `--store`.
    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// How to reach it: [`LocalEtcd::url`], with the client side of its TLS.
    pub fn config(&self) -> EtcdConfig {
        self.config_on(self.client_port)
    }

    fn config_on(&self, port: u16) -> EtcdConfig {
        let mut c =
            EtcdConfig::parse(&format!("etcd://127.0.0.1:{port}")).expect("a valid etcd url");
        c.tls = self.tls.as_ref().map(|t| t.client.clone());
        c
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the server with SIGKILL (by PID); its data stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same ports and data and waits until
    /// it answers.
    pub fn restart(&mut self) -> Result<(), String> {
        self.start_on(self.client_port)
    }

    /// Restarts the server on its data but on a second port only
    /// ([`LocalEtcd::aside_url`]): clients of [`LocalEtcd::url`] still cannot
    /// reach it, so a test can change things behind their back.
    pub fn restart_aside(&mut self) -> Result<(), String> {
        self.start_on(self.side_port)
    }

    /// `etcd://127.0.0.1:PORT` of [`LocalEtcd::restart_aside`].
    pub fn aside_url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.side_port)
    }

    fn start_on(&mut self, port: u16) -> Result<(), String> {
        self.kill();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .map_err(|e| format!("the etcd log: {e}"))?;
        let mut cmd = std::process::Command::new("etcd");
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&t.client_ca);
        }
        let child = cmd
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{}={peer}", self.name)])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        self.child = Some(child);
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                match self.member_on(port) {
                    Some(name) if name == self.name => return Ok(()),
                    Some(other) => {
                        self.kill();
                        return Err(format!(
                            "another etcd ({other}) answers on 127.0.0.1:{port}, which was free \
                             a moment ago"
                        ));
                    }
                    None => {}
                }
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "etcd exited with {st}; its log is {}",
                    self.dir.path().join("etcd.log").display()
                ));
            }
            if std::time::Instant::now() > until {
                return Err("etcd did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl LocalEtcd {
    /// The name of the member that answers on `port`; `None` while nothing
    /// answers (or not yet with its name).
    fn member_on(&self, port: u16) -> Option<String> {
        let store = EtcdStore::connect(self.config_on(port)).ok()?;
        let mut client = store.client.clone();
        let members = store
            .run("listing members", async move { client.member_list().await })
            .ok()?;
        // A member that has not published its name yet lists it empty.
        members
            .members()
            .first()
            .map(|m| m.name().to_string())
            .filter(|n| !n.is_empty())
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What [`audit`] found in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Volume ids and names recorded.
    pub volumes: std::collections::BTreeMap<String, String>,
    /// Every inconsistency, one line each (empty when consistent).
    pub problems: Vec<String>,
}

/// Reads every key under the prefix with a client of its own (not through a
/// replica's state) and checks them against each other: names and volume
/// records one to one, the allocation keys exactly the records' members
/// (nothing leaked), and no byte of any drive allocated twice. For tests and
/// for operators (`composer admin` does not need a running replica for it).
pub fn audit(cfg: &EtcdConfig) -> Result<Audit, Error> {
    let store = EtcdStore::connect(cfg.clone())?;
    let mut client = store.client.clone();
    let prefix = format!("{}/", cfg.prefix);
    let p = prefix.clone();
    let resp = store.run("reading for the audit", async move {
        client.get(p, Some(GetOptions::new().with_prefix())).await
    })?;
    let mut a = Audit::default();
    let mut records: HashMap<String, VolumeRecord> = HashMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut alloc: HashMap<String, Vec<(String, u64, u64)>> = HashMap::new();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let val = String::from_utf8_lossy(kv.value()).into_owned();
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(id) = rest.strip_prefix("volumes/") {
            match serde_json::from_slice::<VolumeRecord>(kv.value()) {
                Ok(r) if r.id == id => {
                    records.insert(id.to_string(), r);
                }
                Ok(r) => a.problems.push(format!("{key} holds volume {}", r.id)),
                Err(e) => a.problems.push(format!("{key} is not a record: {e}")),
            }
        } else if let Some(n) = rest.strip_prefix("names/") {
            names.insert(n.to_string(), val);
        } else if let Some(m) = rest.strip_prefix("alloc/") {
            let id = m.rsplit_once('/').map_or(m, |x| x.0).to_string();
            let f: Vec<&str> = val.split(' ').collect();
            match (
                f.first(),
                f.get(1).and_then(|x| x.parse().ok()),
                f.get(2).and_then(|x| x.parse().ok()),
            ) {
                (Some(d), Some(o), Some(l)) if f.len() == 3 => {
                    alloc.entry(id).or_default().push((d.to_string(), o, l))
                }
                _ => a
                    .problems
                    .push(format!("{key} is not `drive offset len`: {val:?}")),
            }
        }
    }
    for (n, id) in &names {
        match records.get(id) {
            Some(r) if &r.name == n => {}
            Some(r) => a.problems.push(format!(
                "name {n} points at {id}, which is named {}",
                r.name
            )),
            None => a
                .problems
                .push(format!("name {n} points at missing volume {id}")),
        }
    }
    let mut per_drive: HashMap<String, Vec<(u64, u64, String)>> = HashMap::new();
    for (id, r) in &records {
        if names.get(&r.name) != Some(id) {
            a.problems
                .push(format!("volume {id} ({}) has no name key", r.name));
        }
        let want: Vec<(String, u64, u64)> = r
            .members
            .iter()
            .map(|m| (m.drive.clone(), m.offset, m.len))
            .collect();
        if alloc.get(id) != Some(&want) {
            a.problems.push(format!(
                "volume {id}: allocations {:?} differ from its members {want:?}",
                alloc.get(id)
            ));
        }
        for (d, o, l) in want {
            per_drive.entry(d).or_default().push((o, l, id.clone()));
        }
        a.volumes.insert(id.clone(), r.name.clone());
    }
    for id in alloc.keys() {
        if !records.contains_key(id) {
            a.problems
                .push(format!("allocations of {id}, which has no record (leaked)"));
        }
    }
    for (d, mut xs) in per_drive {
        xs.sort();
        for w in xs.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                a.problems.push(format!(
                    "drive {d}: {} at [{}, +{}) overlaps {} at {}",
                    w[0].2, w[0].0, w[0].1, w[1].2, w[1].0
                ));
            }
        }
    }
    a.problems.sort();
    Ok(a)
}
