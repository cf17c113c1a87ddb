//! The Kubernetes manifests in `deploy/`.
//!
//! Every YAML document of `deploy/*.yaml` is parsed into its typed Kubernetes
//! object (`k8s-openapi`, API 1.34) and serialised back: a field the typed
//! object does not have (a misspelt or misplaced key, which Kubernetes would
//! ignore or refuse) is reported, and so is a kind the test does not know.
//! Then the names must tie together:
//!
//! * the service account of every workload exists, every binding names an
//!   existing account and role, and each sidecar's account is granted what
//!   that sidecar needs (leases when it elects a leader, nodes and CSINodes
//!   with topology);
//! * every sidecar's `--csi-address` is the socket the composer container
//!   serves (the same file of the same pod volume);
//! * the node-driver-registrar's `--kubelet-registration-path` is that socket
//!   on the host, in the plugin directory named after the driver;
//! * the CSIDriver's name and every StorageClass's provisioner are
//!   [`composer::DRIVER_NAME`], the name `GetPluginInfo` reports;
//! * every StorageClass's parameters pass composer-core's parser, its
//!   `csi.storage.k8s.io/fstype` agrees with `fsType`, its secret references
//!   are well formed, an encrypted class names the node-stage secret, and a
//!   volume of the class is planned on the ConfigMap's inventory;
//! * the inventory the composer containers read is a ConfigMap key that
//!   composer-core's inventory parser accepts;
//! * a controller of several replicas keeps its state in etcd
//!   (`--store=etcd://…`) at a Service of the manifests, its provisioner
//!   runs with topology and every controller sidecar elects a leader.
//!
//! The unit tests at the end break one name at a time and check that the
//! break is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use composer_core::{Composer, Inventory, LayoutKind, MemStore, Parameters};
use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where a document came from: `file#index`.
type Origin = String;

/// Every object of the manifests, by kind.
#[derive(Default, Clone)]
struct Manifests {
    namespaces: Vec<(Origin, Namespace)>,
    service_accounts: Vec<(Origin, ServiceAccount)>,
    cluster_roles: Vec<(Origin, ClusterRole)>,
    cluster_role_bindings: Vec<(Origin, ClusterRoleBinding)>,
    roles: Vec<(Origin, Role)>,
    role_bindings: Vec<(Origin, RoleBinding)>,
    config_maps: Vec<(Origin, ConfigMap)>,
    secrets: Vec<(Origin, Secret)>,
    services: Vec<(Origin, Service)>,
    csi_drivers: Vec<(Origin, CSIDriver)>,
    storage_classes: Vec<(Origin, StorageClass)>,
    deployments: Vec<(Origin, Deployment)>,
    daemon_sets: Vec<(Origin, DaemonSet)>,
    stateful_sets: Vec<(Origin, StatefulSet)>,
}

/// Parses `value` as `T` and reports a field lost on the way back.
fn typed<T: DeserializeOwned + Serialize>(
    origin: &str,
    value: &serde_json::Value,
    problems: &mut Vec<String>,
) -> Option<T> {
    let t: T = match serde_json::from_value(value.clone()) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{origin}: not a valid {}: {e}", T::type_name()));
            return None;
        }
    };
    let back = match serde_json::to_value(&t) {
        Ok(b) => b,
        Err(e) => {
            problems.push(format!("{origin}: does not serialise back: {e}"));
            return None;
        }
    };
    if let Some(d) = first_difference(value, &back, "") {
        problems.push(format!(
            "{origin}: {d} (a misspelt or misplaced field: Kubernetes would ignore or refuse it)"
        ));
    }
    Some(t)
}

/// A helper so `typed` can name the type in its messages.
trait TypeName {
    fn type_name() -> String;
}
impl<T> TypeName for T {
    fn type_name() -> String {
        std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// The first place where `b` (the typed object serialised) differs from `a`
/// (the document).
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value::{Array, Object};
    match (a, b) {
        (Object(x), Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(_), None) => return Some(format!("field {p} is not part of the object")),
                    // An embedded typed object (a StatefulSet's claim
                    // template) always writes its apiVersion and kind.
                    (None, Some(_)) if k == "apiVersion" || k == "kind" => {}
                    (None, Some(v)) => return Some(format!("field {p} appeared as {v}")),
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(u, v, &p) {
                            return Some(d);
                        }
                    }
                    (None, None) => {}
                }
            }
            None
        }
        (Array(x), Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} reads back as {b}")),
    }
}

impl Manifests {
    /// Adds the documents of one YAML file; problems are appended.
    fn add_file(&mut self, file: &str, text: &str, problems: &mut Vec<String>) {
        for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            let origin = format!("{file}#{i}");
            match serde_json::Value::deserialize(doc) {
                Ok(serde_json::Value::Null) => {}
                Ok(v) => self.add(origin, &v, problems),
                Err(e) => problems.push(format!("{origin}: not YAML: {e}")),
            }
        }
    }

    fn add(&mut self, origin: Origin, v: &serde_json::Value, problems: &mut Vec<String>) {
        let api = v["apiVersion"].as_str().unwrap_or_default();
        let kind = v["kind"].as_str().unwrap_or_default();
        macro_rules! kinds {
            ($($field:ident: $ty:ty),* $(,)?) => {
                $(
                    if api == <$ty as Resource>::API_VERSION && kind == <$ty as Resource>::KIND {
                        if let Some(o) = typed::<$ty>(&origin, v, problems) {
                            self.$field.push((origin, o));
                        }
                        return;
                    }
                )*
                let known: Vec<String> = vec![$(format!("{}/{}", <$ty as Resource>::API_VERSION, <$ty as Resource>::KIND)),*];
                problems.push(format!(
                    "{origin}: unknown kind {kind:?} of apiVersion {api:?} (known: {})",
                    known.join(", ")
                ));
            };
        }
        kinds!(
            namespaces: Namespace,
            service_accounts: ServiceAccount,
            cluster_roles: ClusterRole,
            cluster_role_bindings: ClusterRoleBinding,
            roles: Role,
            role_bindings: RoleBinding,
            config_maps: ConfigMap,
            secrets: Secret,
            services: Service,
            csi_drivers: CSIDriver,
            storage_classes: StorageClass,
            deployments: Deployment,
            daemon_sets: DaemonSet,
            stateful_sets: StatefulSet,
        );
    }

    /// The pod templates: (origin, namespace, workload name, replicas, pod).
    fn workloads(&self) -> Vec<Workload<'_>> {
        let mut out = Vec::new();
        for (o, d) in &self.deployments {
            if let Some(s) = &d.spec {
                out.push(Workload::new(
                    o,
                    &d.metadata,
                    s.replicas.unwrap_or(1),
                    &s.template.spec,
                ));
            }
        }
        for (o, d) in &self.daemon_sets {
            if let Some(s) = &d.spec {
                // A DaemonSet runs one pod per node: more than one at once.
                out.push(Workload::new(o, &d.metadata, 2, &s.template.spec));
            }
        }
        for (o, d) in &self.stateful_sets {
            if let Some(s) = &d.spec {
                out.push(Workload::new(
                    o,
                    &d.metadata,
                    s.replicas.unwrap_or(1),
                    &s.template.spec,
                ));
            }
        }
        out
    }
}

/// One pod template of a Deployment, DaemonSet or StatefulSet.
struct Workload<'a> {
    origin: String,
    namespace: String,
    replicas: i32,
    pod: Option<&'a PodSpec>,
}

impl<'a> Workload<'a> {
    fn new(
        origin: &str,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        replicas: i32,
        pod: &'a Option<PodSpec>,
    ) -> Self {
        Workload {
            origin: format!("{origin} ({})", meta.name.as_deref().unwrap_or("?")),
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            replicas,
            pod: pod.as_ref(),
        }
    }
}

/// The value of `--flag=value` or `--flag value` in a container's args.
fn arg<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    let args = c.args.as_deref().unwrap_or_default();
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&eq) {
            Some(v)
        } else if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

/// Whether a boolean flag is on (`--flag` or `--flag=true`).
fn flag_on(c: &Container, flag: &str) -> bool {
    c.args
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|a| a == flag || *a == format!("{flag}=true"))
}

/// The sidecar's name (`csi-provisioner`, …) if the image is a sig-storage one.
fn sidecar(c: &Container) -> Option<&str> {
    let image = c.image.as_deref()?;
    let rest = image.split("/sig-storage/").nth(1)?;
    Some(rest.split([':', '@']).next().unwrap_or(rest))
}

/// Whether the container runs the composer (`composer serve`).
fn is_composer(c: &Container) -> bool {
    c.args
        .as_deref()
        .unwrap_or_default()
        .first()
        .map(String::as_str)
        == Some("serve")
}

/// The unix socket path the composer container serves CSI on: `--endpoint`,
/// else `CSI_ENDPOINT`, else the CLI's default.
fn composer_socket(c: &Container) -> Result<String, String> {
    let env = c
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == "CSI_ENDPOINT")
        .and_then(|e| e.value.clone());
    let endpoint = arg(c, "--endpoint")
        .map(str::to_string)
        .or(env)
        .unwrap_or_else(|| "unix:///run/composer/csi.sock".to_string());
    endpoint
        .strip_prefix("unix://")
        .map(str::to_string)
        .ok_or_else(|| {
            format!("--endpoint {endpoint:?} is not a unix:// socket the sidecars can share")
        })
}

/// The pod volume and the path inside it where `path` is in container `c`.
fn resolve(c: &Container, path: &str) -> Option<(String, String)> {
    c.volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let mp = m.mount_path.trim_end_matches('/');
            let rest = path.strip_prefix(mp)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| {
                (
                    mp.len(),
                    m.name.clone(),
                    rest.trim_start_matches('/').to_string(),
                )
            })
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, v, r)| (v, r))
}

fn pod_volume<'a>(pod: &'a PodSpec, name: &str) -> Option<&'a k8s_openapi::api::core::v1::Volume> {
    pod.volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|v| v.name == name)
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Everything wrong with the manifests.
fn check(m: &Manifests) -> Vec<String> {
    let mut p = Vec::new();
    check_namespaces(m, &mut p);
    check_rbac(m, &mut p);
    check_sockets(m, &mut p);
    check_driver(m, &mut p);
    check_state(m, &mut p);
    check_storage_classes(m, &mut p);
    p
}

/// Every namespaced object's namespace is created by the manifests.
fn check_namespaces(m: &Manifests, p: &mut Vec<String>) {
    let known: BTreeSet<&str> = m
        .namespaces
        .iter()
        .map(|(_, n)| name(&n.metadata))
        .collect();
    let mut metas: Vec<(
        &Origin,
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    )> = Vec::new();
    metas.extend(m.service_accounts.iter().map(|(o, x)| (o, &x.metadata)));
    metas.extend(m.roles.iter().map(|(o, x)| (o, &x.metadata)));
    metas.extend(m.role_bindings.iter().map(|(o, x)| (o, &x.metadata)));
    metas.extend(m.config_maps.iter().map(|(o, x)| (o, &x.metadata)));
    metas.extend(m.secrets.iter().map(|(o, x)| (o, &x.metadata)));
    metas.extend(m.services.iter().map(|(o, x)| (o, &x.metadata)));
    metas.extend(m.deployments.iter().map(|(o, x)| (o, &x.metadata)));
    metas.extend(m.daemon_sets.iter().map(|(o, x)| (o, &x.metadata)));
    metas.extend(m.stateful_sets.iter().map(|(o, x)| (o, &x.metadata)));
    for (o, meta) in metas {
        match meta.namespace.as_deref() {
            None => p.push(format!(
                "{o}: a namespaced object without metadata.namespace"
            )),
            Some(ns) if !known.contains(ns) => p.push(format!(
                "{o}: namespace {ns:?} is not created by the manifests"
            )),
            Some(_) => {}
        }
    }
}

/// What each controller sidecar needs: (API group, resource, verbs).
fn sidecar_needs(c: &Container) -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    let mut needs: Vec<(&str, &str, &[&str])> = match sidecar(c) {
        Some("csi-provisioner") => vec![
            (
                "",
                "persistentvolumes",
                &["get", "list", "watch", "create", "delete"],
            ),
            (
                "",
                "persistentvolumeclaims",
                &["get", "list", "watch", "update"],
            ),
            (
                "storage.k8s.io",
                "storageclasses",
                &["get", "list", "watch"],
            ),
            ("", "events", &["create", "patch"]),
        ],
        Some("csi-attacher") => vec![
            ("", "persistentvolumes", &["get", "list", "watch", "patch"]),
            (
                "storage.k8s.io",
                "volumeattachments",
                &["get", "list", "watch", "patch"],
            ),
            ("storage.k8s.io", "volumeattachments/status", &["patch"]),
            ("storage.k8s.io", "csinodes", &["get", "list", "watch"]),
        ],
        Some("csi-resizer") => vec![
            ("", "persistentvolumes", &["get", "list", "watch", "patch"]),
            ("", "persistentvolumeclaims", &["get", "list", "watch"]),
            ("", "persistentvolumeclaims/status", &["patch"]),
            ("", "pods", &["get", "list", "watch"]),
            ("", "events", &["create", "patch"]),
        ],
        _ => return Vec::new(),
    };
    if sidecar(c) == Some("csi-provisioner")
        && arg(c, "--feature-gates").is_some_and(|g| g.split(',').any(|f| f == "Topology=true"))
    {
        needs.push(("", "nodes", &["get", "list", "watch"]));
        needs.push(("storage.k8s.io", "csinodes", &["get", "list", "watch"]));
    }
    if flag_on(c, "--leader-election") {
        needs.push((
            "coordination.k8s.io",
            "leases",
            &["get", "list", "watch", "create", "update"],
        ));
    }
    needs
}

fn rule_allows(r: &PolicyRule, group: &str, resource: &str, verb: &str) -> bool {
    let has = |list: &Option<Vec<String>>, x: &str| {
        list.as_deref()
            .unwrap_or_default()
            .iter()
            .any(|v| v == x || v == "*")
    };
    has(&r.api_groups, group)
        && has(&r.resources, resource)
        && r.verbs.iter().any(|v| v == verb || v == "*")
        && r.resource_names.as_deref().unwrap_or_default().is_empty()
}

/// The rules granted to service account `ns/sa` in namespace `ns`.
fn granted<'a>(m: &'a Manifests, ns: &str, sa: &str) -> Vec<&'a PolicyRule> {
    let is_subject = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.as_deref().unwrap_or_default().iter().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa && s.namespace.as_deref() == Some(ns)
        })
    };
    let cluster_role = |n: String| {
        m.cluster_roles
            .iter()
            .filter(move |(_, r)| name(&r.metadata) == n)
            .flat_map(|(_, r)| r.rules.as_deref().unwrap_or_default())
    };
    let mut rules = Vec::new();
    for (_, b) in &m.cluster_role_bindings {
        if is_subject(&b.subjects) && b.role_ref.kind == "ClusterRole" {
            rules.extend(cluster_role(b.role_ref.name.clone()));
        }
    }
    for (_, b) in &m.role_bindings {
        if namespace(&b.metadata) != ns || !is_subject(&b.subjects) {
            continue;
        }
        match b.role_ref.kind.as_str() {
            "ClusterRole" => rules.extend(cluster_role(b.role_ref.name.clone())),
            _ => rules.extend(
                m.roles
                    .iter()
                    .filter(|(_, r)| {
                        name(&r.metadata) == b.role_ref.name && namespace(&r.metadata) == ns
                    })
                    .flat_map(|(_, r)| r.rules.as_deref().unwrap_or_default()),
            ),
        }
    }
    rules
}

/// Service accounts exist, bindings name what exists, sidecars have their rights.
fn check_rbac(m: &Manifests, p: &mut Vec<String>) {
    let accounts: BTreeSet<(&str, &str)> = m
        .service_accounts
        .iter()
        .map(|(_, a)| (namespace(&a.metadata), name(&a.metadata)))
        .collect();
    let cluster_roles: BTreeSet<&str> = m
        .cluster_roles
        .iter()
        .map(|(_, r)| name(&r.metadata))
        .collect();
    let roles: BTreeSet<(&str, &str)> = m
        .roles
        .iter()
        .map(|(_, r)| (namespace(&r.metadata), name(&r.metadata)))
        .collect();
    let subjects = |o: &str,
                    subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>,
                    p: &mut Vec<String>| {
        for s in subjects.as_deref().unwrap_or_default() {
            if s.kind != "ServiceAccount" {
                continue;
            }
            let ns = s.namespace.as_deref().unwrap_or_default();
            if !accounts.contains(&(ns, s.name.as_str())) {
                p.push(format!(
                    "{o}: binds service account {ns}/{} which the manifests do not create",
                    s.name
                ));
            }
        }
    };
    for (o, b) in &m.cluster_role_bindings {
        subjects(o, &b.subjects, p);
        if b.role_ref.kind != "ClusterRole" || !cluster_roles.contains(b.role_ref.name.as_str()) {
            p.push(format!(
                "{o}: roleRef {} {:?} is not a ClusterRole of the manifests",
                b.role_ref.kind, b.role_ref.name
            ));
        }
    }
    for (o, b) in &m.role_bindings {
        subjects(o, &b.subjects, p);
        let ok = match b.role_ref.kind.as_str() {
            "ClusterRole" => cluster_roles.contains(b.role_ref.name.as_str()),
            "Role" => roles.contains(&(namespace(&b.metadata), b.role_ref.name.as_str())),
            _ => false,
        };
        if !ok {
            p.push(format!(
                "{o}: roleRef {} {:?} is not a role of the manifests in namespace {}",
                b.role_ref.kind,
                b.role_ref.name,
                namespace(&b.metadata)
            ));
        }
    }
    for w in m.workloads() {
        let Some(pod) = w.pod else {
            p.push(format!("{}: no pod spec", w.origin));
            continue;
        };
        let sa = pod.service_account_name.as_deref().unwrap_or("default");
        // Kubernetes creates the "default" account of every namespace.
        if sa != "default" && !accounts.contains(&(w.namespace.as_str(), sa)) {
            p.push(format!(
                "{}: serviceAccountName {sa:?} is not a service account of namespace {}",
                w.origin, w.namespace
            ));
        }
        let rules = granted(m, &w.namespace, sa);
        for c in &pod.containers {
            for (group, resource, verbs) in sidecar_needs(c) {
                for verb in verbs {
                    if !rules.iter().any(|r| rule_allows(r, group, resource, verb)) {
                        p.push(format!(
                            "{}: container {} (service account {sa}) may not {verb} {resource} (API group {group:?})",
                            w.origin, c.name
                        ));
                    }
                }
            }
            if w.replicas > 1
                && matches!(
                    sidecar(c),
                    Some("csi-provisioner" | "csi-attacher" | "csi-resizer")
                )
                && !flag_on(c, "--leader-election")
            {
                p.push(format!(
                    "{}: {} replicas but container {} runs without --leader-election",
                    w.origin, w.replicas, c.name
                ));
            }
        }
    }
}

/// Sidecars dial the composer's socket; the registrar registers it with the
/// kubelet at its host path; the node plugin has what it needs on the host.
fn check_sockets(m: &Manifests, p: &mut Vec<String>) {
    for w in m.workloads() {
        let Some(pod) = w.pod else { continue };
        let composers: Vec<&Container> = pod.containers.iter().filter(|c| is_composer(c)).collect();
        let sidecars: Vec<&Container> = pod
            .containers
            .iter()
            .filter(|c| sidecar(c).is_some())
            .collect();
        if composers.is_empty() {
            if !sidecars.is_empty() {
                p.push(format!(
                    "{}: CSI sidecars without a composer container",
                    w.origin
                ));
            }
            continue;
        }
        if composers.len() > 1 {
            p.push(format!(
                "{}: {} composer containers in one pod",
                w.origin,
                composers.len()
            ));
        }
        let composer = composers[0];
        let socket = match composer_socket(composer) {
            Ok(s) => s,
            Err(e) => {
                p.push(format!("{}: container {}: {e}", w.origin, composer.name));
                continue;
            }
        };
        let Some(served) = resolve(composer, &socket) else {
            p.push(format!(
                "{}: the composer's socket {socket} is on no volume, so no sidecar can reach it",
                w.origin
            ));
            continue;
        };
        for c in &sidecars {
            // The composer reports VOLUME_ACCESSIBILITY_CONSTRAINTS: the
            // provisioner must pass the pod's node as topology.
            if sidecar(c) == Some("csi-provisioner")
                && !arg(c, "--feature-gates")
                    .is_some_and(|g| g.split(',').any(|f| f == "Topology=true"))
            {
                p.push(format!(
                    "{}: container {} runs without --feature-gates=Topology=true",
                    w.origin, c.name
                ));
            }
            match arg(c, "--csi-address") {
                None => p.push(format!(
                    "{}: container {} has no --csi-address",
                    w.origin, c.name
                )),
                Some(addr) => {
                    let addr = addr.strip_prefix("unix://").unwrap_or(addr);
                    if resolve(c, addr).as_ref() != Some(&served) {
                        p.push(format!(
                            "{}: container {} dials --csi-address={addr}, not the socket the composer serves ({socket}: {} in volume {})",
                            w.origin, c.name, served.1, served.0
                        ));
                    }
                }
            }
        }
        if !composers.iter().any(|c| arg(c, "--inventory").is_some()) {
            p.push(format!(
                "{}: the composer runs on its built-in inventory, not the ConfigMap's",
                w.origin
            ));
        }
        for c in &composers {
            if let Some(inv) = arg(c, "--inventory") {
                check_inventory_mount(m, &w, pod, c, inv, p);
            }
        }
        for c in &pod.containers {
            let bidirectional = c
                .volume_mounts
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|v| v.mount_propagation.as_deref() == Some("Bidirectional"));
            let privileged = c.security_context.as_ref().and_then(|s| s.privileged) == Some(true);
            if bidirectional && !privileged {
                p.push(format!(
                    "{}: container {} has a Bidirectional mount but is not privileged (Kubernetes refuses that)",
                    w.origin, c.name
                ));
            }
        }
        let registrars: Vec<&&Container> = sidecars
            .iter()
            .filter(|c| sidecar(c) == Some("csi-node-driver-registrar"))
            .collect();
        for r in registrars {
            check_registration(&w, pod, composer, &served, r, p);
        }
    }
}

/// The node-driver-registrar: registration path = the socket on the host,
/// in the plugin directory named after the driver; the registration
/// directory mounted; the composer with a node id and the host's kubelet
/// directory (Bidirectional) and /dev.
fn check_registration(
    w: &Workload<'_>,
    pod: &PodSpec,
    composer: &Container,
    served: &(String, String),
    r: &Container,
    p: &mut Vec<String>,
) {
    let host_path = |vol: &str| {
        pod_volume(pod, vol)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.trim_end_matches('/').to_string())
    };
    let Some(reg) = arg(r, "--kubelet-registration-path") else {
        p.push(format!(
            "{}: container {} has no --kubelet-registration-path",
            w.origin, r.name
        ));
        return;
    };
    match host_path(&served.0) {
        None => p.push(format!(
            "{}: the composer's socket is in volume {}, which is not a hostPath: the kubelet cannot reach it",
            w.origin, served.0
        )),
        Some(h) => {
            let on_host = format!("{h}/{}", served.1);
            if reg != on_host {
                p.push(format!(
                    "{}: --kubelet-registration-path={reg} but the composer's socket is {on_host} on the host",
                    w.origin
                ));
            }
        }
    }
    let dir = Path::new(reg)
        .parent()
        .and_then(Path::file_name)
        .and_then(|d| d.to_str());
    if dir != Some(composer::DRIVER_NAME) {
        p.push(format!(
            "{}: --kubelet-registration-path={reg} is not in the plugin directory named after the driver ({})",
            w.origin,
            composer::DRIVER_NAME
        ));
    }
    let registration =
        resolve(r, "/registration").and_then(|(v, rest)| host_path(&v).map(|h| (h, rest)));
    if registration
        != Some((
            "/var/lib/kubelet/plugins_registry".to_string(),
            String::new(),
        ))
    {
        p.push(format!(
            "{}: container {} does not mount the host's /var/lib/kubelet/plugins_registry at /registration",
            w.origin, r.name
        ));
    }
    if arg(composer, "--node-id").is_none() {
        p.push(format!(
            "{}: the node plugin's composer has no --node-id",
            w.origin
        ));
    }
    let mounts = composer.volume_mounts.as_deref().unwrap_or_default();
    let mounted = |host: &str, propagation: Option<&str>| {
        mounts.iter().any(|v| {
            host_path(&v.name).as_deref() == Some(host)
                && v.mount_path.trim_end_matches('/') == host
                && (propagation.is_none() || v.mount_propagation.as_deref() == propagation)
        })
    };
    if !mounted("/var/lib/kubelet", Some("Bidirectional")) {
        p.push(format!(
            "{}: the node plugin does not mount the host's /var/lib/kubelet with Bidirectional propagation",
            w.origin
        ));
    }
    if !mounted("/dev", None) {
        p.push(format!(
            "{}: the node plugin does not mount the host's /dev",
            w.origin
        ));
    }
}

/// The composer's `--inventory` is a key of a ConfigMap that parses.
fn check_inventory_mount(
    m: &Manifests,
    w: &Workload<'_>,
    pod: &PodSpec,
    c: &Container,
    inv: &str,
    p: &mut Vec<String>,
) {
    let Some((vol, key)) = resolve(c, inv) else {
        p.push(format!(
            "{}: --inventory={inv} is on no volume of container {}",
            w.origin, c.name
        ));
        return;
    };
    let Some(cm) = pod_volume(pod, &vol).and_then(|v| v.config_map.as_ref()) else {
        p.push(format!(
            "{}: --inventory={inv} is in volume {vol}, which is not a ConfigMap",
            w.origin
        ));
        return;
    };
    let Some((o, map)) = m
        .config_maps
        .iter()
        .find(|(_, x)| name(&x.metadata) == cm.name && namespace(&x.metadata) == w.namespace)
    else {
        p.push(format!(
            "{}: ConfigMap {:?} is not in the manifests",
            w.origin, cm.name
        ));
        return;
    };
    match map.data.as_ref().and_then(|d| d.get(&key)) {
        None => p.push(format!(
            "{o}: no key {key:?}, which --inventory={inv} reads"
        )),
        Some(text) => {
            if let Err(e) = Inventory::from_toml(text) {
                p.push(format!("{o}: data[{key:?}]: {e}"));
            }
        }
    }
}

/// A controller of several replicas keeps its state in etcd
/// (`--store=etcd://HOST:PORT,…`), at a Service of the manifests when the
/// host is a cluster name (`NAME`, `NAME.NAMESPACE` or `NAME.NAMESPACE.svc…`).
fn check_state(m: &Manifests, p: &mut Vec<String>) {
    for w in m.workloads() {
        let Some(pod) = w.pod else { continue };
        let controllers = pod
            .containers
            .iter()
            .filter(|c| is_composer(c) && arg(c, "--node-id").is_none());
        for c in controllers {
            let Some(url) = arg(c, "--store") else {
                if w.replicas > 1 {
                    p.push(format!(
                        "{}: {} controller replicas without --store=etcd://…: each would keep its own state",
                        w.origin, w.replicas
                    ));
                }
                continue;
            };
            let Some(hosts) = url.strip_prefix("etcd://") else {
                p.push(format!(
                    "{}: --store={url} is not etcd://HOST:PORT,…",
                    w.origin
                ));
                continue;
            };
            for h in hosts.split(',') {
                let Some((host, port)) = h.rsplit_once(':') else {
                    p.push(format!("{}: --store: {h:?} has no port", w.origin));
                    continue;
                };
                let parts: Vec<&str> = host.split('.').collect();
                let (svc, ns) = match parts.as_slice() {
                    [n] => (*n, w.namespace.as_str()),
                    [n, ns] => (*n, *ns),
                    [n, ns, "svc", ..] => (*n, *ns),
                    _ => continue, // a name outside the cluster
                };
                let served = m.services.iter().any(|(_, s)| {
                    name(&s.metadata) == svc
                        && namespace(&s.metadata) == ns
                        && s.spec
                            .iter()
                            .flat_map(|x| x.ports.iter().flatten())
                            .any(|sp| sp.port.to_string() == port)
                });
                if !served {
                    p.push(format!(
                        "{}: --store={url}: no Service {ns}/{svc} with port {port} in the manifests",
                        w.origin
                    ));
                }
            }
        }
    }
}

/// One CSIDriver named as the composer reports itself, attach required.
fn check_driver(m: &Manifests, p: &mut Vec<String>) {
    if m.csi_drivers.len() != 1 {
        p.push(format!(
            "{} CSIDriver objects, expected one",
            m.csi_drivers.len()
        ));
    }
    for (o, d) in &m.csi_drivers {
        if name(&d.metadata) != composer::DRIVER_NAME {
            p.push(format!(
                "{o}: CSIDriver {:?} is not the name the composer reports ({})",
                name(&d.metadata),
                composer::DRIVER_NAME
            ));
        }
        if d.spec.attach_required != Some(true) {
            p.push(format!(
                "{o}: attachRequired must be true: ControllerPublishVolume maps the drives"
            ));
        }
        if !d
            .spec
            .volume_lifecycle_modes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|x| x == "Persistent")
        {
            p.push(format!("{o}: volumeLifecycleModes lacks Persistent"));
        }
    }
    for (o, s) in &m.storage_classes {
        if s.provisioner != composer::DRIVER_NAME {
            p.push(format!(
                "{o}: StorageClass {} has provisioner {:?}, not the name the composer reports ({})",
                name(&s.metadata),
                s.provisioner,
                composer::DRIVER_NAME
            ));
        }
    }
}

/// The layout each example StorageClass is meant to give a 1 GiB claim.
const EXPECTED_LAYOUT: &[(&str, LayoutKind)] = &[
    ("composer-hdd", LayoutKind::Single),
    ("composer-ssd-slice", LayoutKind::Slice),
    ("composer-raid1", LayoutKind::Raid1),
    ("composer-raid10", LayoutKind::Raid10),
    ("composer-encrypted", LayoutKind::SliceMirror),
];

/// Parameters parse, fstype agrees, secrets are well formed, encryption has
/// its key, and a volume of the class is planned on the ConfigMap's inventory.
fn check_storage_classes(m: &Manifests, p: &mut Vec<String>) {
    let inventory = m
        .config_maps
        .iter()
        .find_map(|(_, c)| c.data.as_ref()?.get("inventory.toml"))
        .and_then(|t| Inventory::from_toml(t).ok());
    for (o, s) in &m.storage_classes {
        let class = name(&s.metadata);
        let params = s.parameters.clone().unwrap_or_default();
        let parsed = match Parameters::parse(&params) {
            Ok(x) => x,
            Err(e) => {
                p.push(format!("{o}: StorageClass {class}: {e}"));
                continue;
            }
        };
        if let Some(fs) = params.get("csi.storage.k8s.io/fstype")
            && fs != parsed.fs_type.name()
        {
            p.push(format!(
                "{o}: StorageClass {class}: csi.storage.k8s.io/fstype={fs} but fsType is {}",
                parsed.fs_type.name()
            ));
        }
        for e in secret_problems(&params) {
            p.push(format!("{o}: StorageClass {class}: {e}"));
        }
        if parsed.encrypt && !params.contains_key("csi.storage.k8s.io/node-stage-secret-name") {
            p.push(format!(
                "{o}: StorageClass {class}: encrypt=true without a node-stage secret, the node has no key"
            ));
        }
        let Some(inv) = &inventory else {
            p.push(format!(
                "{o}: StorageClass {class}: no inventory.toml ConfigMap to plan a volume on"
            ));
            continue;
        };
        let c = Composer::open(inv.clone(), Arc::new(MemStore::default()))
            .expect("an empty store opens");
        let range =
            csi_types::types::CapacityRange::new(Some(1 << 30), None).expect("a valid range");
        match c.create("pvc-deploy-check", &params, range, false, true, None) {
            Err(e) => p.push(format!(
                "{o}: StorageClass {class}: a 1 GiB volume cannot be made on the inventory: {e}"
            )),
            Ok(v) => {
                if let Some((_, want)) = EXPECTED_LAYOUT.iter().find(|(n, _)| *n == class)
                    && v.layout.kind != *want
                {
                    p.push(format!(
                        "{o}: StorageClass {class} gives a {} volume, not {}",
                        v.layout.kind.name(),
                        want.name()
                    ));
                }
            }
        }
    }
}

/// The secrets a StorageClass may name (Kubernetes CSI documentation,
/// "Secrets and Credentials"), and the templates each may use in its name
/// and namespace.
const SECRET_KINDS: &[&str] = &[
    "provisioner",
    "controller-publish",
    "node-stage",
    "node-publish",
    "controller-expand",
    "node-expand",
];

fn secret_problems(params: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for key in params.keys() {
        let Some(rest) = key.strip_prefix("csi.storage.k8s.io/") else {
            continue;
        };
        let Some((kind, field)) = rest.split_once("-secret-") else {
            continue;
        };
        if !SECRET_KINDS.contains(&kind) || !matches!(field, "name" | "namespace") {
            out.push(format!("{key}: not a secret parameter Kubernetes knows"));
        }
    }
    for kind in SECRET_KINDS {
        let n_key = format!("csi.storage.k8s.io/{kind}-secret-name");
        let ns_key = format!("csi.storage.k8s.io/{kind}-secret-namespace");
        match (params.get(&n_key), params.get(&ns_key)) {
            (None, None) => {}
            (Some(_), None) => out.push(format!("{n_key} without {ns_key}")),
            (None, Some(_)) => out.push(format!("{ns_key} without {n_key}")),
            (Some(n), Some(ns)) => {
                let annotations = *kind != "provisioner";
                if let Err(e) = secret_value(n, true, annotations) {
                    out.push(format!("{n_key}={n:?}: {e}"));
                }
                if let Err(e) = secret_value(ns, false, false) {
                    out.push(format!("{ns_key}={ns:?}: {e}"));
                }
            }
        }
    }
    out
}

/// A secret name (DNS-1123 subdomain) or namespace (DNS-1123 label), with
/// `${…}` templates from the allowed set substituted.
fn secret_value(v: &str, is_name: bool, annotations: bool) -> Result<(), String> {
    let mut allowed = vec!["pv.name", "pvc.namespace"];
    if is_name {
        allowed.push("pvc.name");
    }
    let mut literal = String::new();
    let mut rest = v;
    while let Some(i) = rest.find("${") {
        literal.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err("an unterminated ${".into());
        };
        let t = &rest[i + 2..i + end];
        let annotation = t.starts_with("pvc.annotations['") && t.ends_with("']");
        if !(allowed.contains(&t) || (annotations && is_name && annotation)) {
            return Err(format!(
                "template ${{{t}}} is not allowed here (allowed: {})",
                allowed.join(", ")
            ));
        }
        literal.push('x');
        rest = &rest[i + end + 1..];
    }
    literal.push_str(rest);
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let ok = if is_name {
        literal.len() <= 253 && literal.split('.').all(label)
    } else {
        label(&literal)
    };
    if ok {
        Ok(())
    } else if is_name {
        Err("not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')".into())
    } else {
        Err("not a DNS-1123 label (lower-case letters, digits and '-', at most 63)".into())
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Reads every `deploy/*.yaml`.
fn load() -> (Manifests, Vec<String>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no YAML files in {}",
        deploy_dir().display()
    );
    let mut m = Manifests::default();
    let mut problems = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        let file = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        m.add_file(&file, &text, &mut problems);
    }
    (m, problems)
}

#[test]
fn manifests_parse_and_tie_together() {
    let (m, mut problems) = load();
    problems.extend(check(&m));
    assert!(
        problems.is_empty(),
        "deploy/ has problems:\n  {}",
        problems.join("\n  ")
    );
    // What the deployment consists of: nothing silently dropped.
    assert_eq!(m.csi_drivers.len(), 1);
    assert_eq!(m.deployments.len(), 1);
    assert_eq!(m.daemon_sets.len(), 1);
    assert_eq!(m.storage_classes.len(), EXPECTED_LAYOUT.len());
}

#[test]
fn the_shipped_inventory_is_the_built_in_one() {
    let (m, _) = load();
    let text = m
        .config_maps
        .iter()
        .find(|(_, c)| name(&c.metadata) == "composer-inventory")
        .and_then(|(_, c)| c.data.as_ref()?.get("inventory.toml").cloned())
        .expect("the composer-inventory ConfigMap with inventory.toml");
    assert_eq!(
        text,
        composer_core::DEFAULT_INVENTORY,
        "deploy/30-inventory.yaml should carry crates/composer/default-inventory.toml as is"
    );
}

/// Loads the manifests, changes them with `f`, and returns the problems.
fn problems_after(f: impl FnOnce(&mut Manifests)) -> Vec<String> {
    let (mut m, parse) = load();
    assert!(parse.is_empty(), "{parse:?}");
    f(&mut m);
    check(&m)
}

/// Changes the manifests with `f` and checks that a problem contains `needle`.
fn reports(f: impl FnOnce(&mut Manifests), needle: &str) {
    assert_reported(&problems_after(f), needle);
}

fn assert_reported(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem containing {needle:?}, got {problems:#?}"
    );
}

/// The container `name` of a pod template.
fn named<'a>(pod: Option<&'a mut PodSpec>, name: &str) -> &'a mut Container {
    pod.and_then(|p| p.containers.iter_mut().find(|c| c.name == name))
        .expect("the container")
}

/// The container `name` of the first Deployment.
fn container<'a>(d: &'a mut [(Origin, Deployment)], name: &str) -> &'a mut Container {
    named(
        d[0].1.spec.as_mut().and_then(|s| s.template.spec.as_mut()),
        name,
    )
}

/// The container `name` of the first DaemonSet.
fn node_container<'a>(d: &'a mut [(Origin, DaemonSet)], name: &str) -> &'a mut Container {
    named(
        d[0].1.spec.as_mut().and_then(|s| s.template.spec.as_mut()),
        name,
    )
}

/// Sets a parameter of the first StorageClass.
fn set_param(m: &mut Manifests, key: &str, value: &str) {
    let params = m.storage_classes[0]
        .1
        .parameters
        .get_or_insert_with(BTreeMap::new);
    params.insert(key.into(), value.into());
}

fn set_arg(c: &mut Container, flag: &str, value: &str) {
    let args = c.args.get_or_insert_with(Vec::new);
    args.retain(|a| !a.starts_with(&format!("{flag}=")));
    args.push(format!("{flag}={value}"));
}

#[test]
fn a_storage_class_with_another_provisioner_is_reported() {
    reports(
        |m| m.storage_classes[0].1.provisioner = "other.csi.example.com".into(),
        "provisioner \"other.csi.example.com\"",
    );
}

#[test]
fn a_csidriver_with_another_name_is_reported() {
    let p =
        problems_after(|m| m.csi_drivers[0].1.metadata.name = Some("composer.example.com".into()));
    assert_reported(&p, "is not the name the composer reports");
}

#[test]
fn a_sidecar_on_another_socket_is_reported() {
    reports(
        |m| {
            set_arg(
                container(&mut m.deployments, "csi-attacher"),
                "--csi-address",
                "/csi/other.sock",
            )
        },
        "container csi-attacher dials --csi-address=/csi/other.sock",
    );
    reports(
        |m| {
            set_arg(
                container(&mut m.deployments, "composer"),
                "--endpoint",
                "unix:///tmp/csi.sock",
            )
        },
        "is on no volume",
    );
}

#[test]
fn a_wrong_registration_path_is_reported() {
    let p = problems_after(|m| {
        set_arg(
            node_container(&mut m.daemon_sets, "node-driver-registrar"),
            "--kubelet-registration-path",
            "/var/lib/kubelet/plugins/other.csi/csi.sock",
        )
    });
    assert_reported(&p, "but the composer's socket is");
    assert_reported(&p, "not in the plugin directory named after the driver");
}

#[test]
fn a_node_plugin_without_bidirectional_kubelet_dir_is_reported() {
    reports(
        |m| {
            for v in node_container(&mut m.daemon_sets, "composer")
                .volume_mounts
                .iter_mut()
                .flatten()
            {
                v.mount_propagation = None;
            }
        },
        "/var/lib/kubelet with Bidirectional propagation",
    );
    let p =
        problems_after(|m| node_container(&mut m.daemon_sets, "composer").security_context = None);
    assert_reported(&p, "is not privileged");
}

#[test]
fn missing_rbac_is_reported() {
    reports(
        |m| {
            m.cluster_role_bindings
                .retain(|(_, b)| name(&b.metadata) != "composer-external-attacher")
        },
        "container csi-attacher (service account composer-controller) may not patch volumeattachments",
    );
    // Every lease Role is bound to the same account: with no RoleBinding
    // at all, no sidecar may take its lease.
    reports(
        |m| m.role_bindings.clear(),
        "container csi-resizer (service account composer-controller) may not create leases",
    );
    reports(
        |m| {
            m.service_accounts
                .retain(|(_, a)| name(&a.metadata) != "composer-node")
        },
        "serviceAccountName \"composer-node\" is not a service account",
    );
    reports(
        |m| {
            m.cluster_roles
                .retain(|(_, r)| name(&r.metadata) != "composer-external-resizer")
        },
        "is not a ClusterRole of the manifests",
    );
}

#[test]
fn a_controller_without_shared_state_is_reported() {
    reports(
        |m| {
            container(&mut m.deployments, "composer")
                .args
                .iter_mut()
                .for_each(|a| a.retain(|x| !x.starts_with("--store")))
        },
        "2 controller replicas without --store=etcd://",
    );
    reports(
        |m| {
            set_arg(
                container(&mut m.deployments, "composer"),
                "--store",
                "etcd://etcd.composer-system.svc:2379",
            )
        },
        "no Service composer-system/etcd with port 2379",
    );
}

#[test]
fn replicas_without_leader_election_are_reported() {
    reports(
        |m| {
            let c = container(&mut m.deployments, "csi-provisioner");
            c.args.iter_mut().flatten().for_each(|a| {
                if a == "--leader-election" {
                    *a = "--v=3".into();
                }
            })
        },
        "runs without --leader-election",
    );
    reports(
        |m| {
            set_arg(
                container(&mut m.deployments, "csi-provisioner"),
                "--feature-gates",
                "Topology=false",
            )
        },
        "runs without --feature-gates=Topology=true",
    );
}

#[test]
fn a_bad_inventory_or_storage_class_is_reported() {
    reports(
        |m| {
            let data = m.config_maps[0].1.data.get_or_insert_with(BTreeMap::new);
            data.insert("inventory.toml".into(), "[[site]]\nid = \"a b\"\n".into());
        },
        "inventory: site 'a b'",
    );
    reports(|m| set_param(m, "tpye", "hdd"), "tpye");
    reports(
        |m| set_param(m, "csi.storage.k8s.io/fstype", "btrfs"),
        "csi.storage.k8s.io/fstype=btrfs but fsType is",
    );
    reports(
        |m| {
            for (_, s) in &mut m.storage_classes {
                if let Some(params) = s.parameters.as_mut() {
                    params.retain(|k, _| !k.contains("secret"));
                }
            }
        },
        "encrypt=true without a node-stage secret",
    );
}

#[test]
fn malformed_secret_references_are_reported() {
    let refs = |pairs: &[(&str, &str)]| {
        secret_problems(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let ok = refs(&[
        (
            "csi.storage.k8s.io/node-stage-secret-name",
            "${pvc.name}-key",
        ),
        (
            "csi.storage.k8s.io/node-stage-secret-namespace",
            "${pvc.namespace}",
        ),
        (
            "csi.storage.k8s.io/node-publish-secret-name",
            "${pvc.annotations['example.com/key']}",
        ),
        ("csi.storage.k8s.io/node-publish-secret-namespace", "keys"),
    ]);
    assert!(ok.is_empty(), "{ok:?}");
    let bad = refs(&[("csi.storage.k8s.io/node-stage-secret-name", "key")]);
    assert_reported(
        &bad,
        "without csi.storage.k8s.io/node-stage-secret-namespace",
    );
    let bad = refs(&[
        ("csi.storage.k8s.io/node-stage-secret-name", "key"),
        (
            "csi.storage.k8s.io/node-stage-secret-namespace",
            "${pvc.name}",
        ),
    ]);
    assert_reported(&bad, "template ${pvc.name} is not allowed here");
    let bad = refs(&[
        (
            "csi.storage.k8s.io/provisioner-secret-name",
            "${pvc.annotations['k']}",
        ),
        ("csi.storage.k8s.io/provisioner-secret-namespace", "default"),
    ]);
    assert_reported(&bad, "is not allowed here");
    let bad = refs(&[
        ("csi.storage.k8s.io/node-stage-secret-name", "Key_1"),
        (
            "csi.storage.k8s.io/node-stage-secret-namespace",
            "${pvc.namespace",
        ),
    ]);
    assert_reported(&bad, "not a DNS-1123 subdomain");
    assert_reported(&bad, "unterminated");
    let bad = refs(&[("csi.storage.k8s.io/node-stag-secret-name", "k")]);
    assert_reported(&bad, "not a secret parameter Kubernetes knows");
}

#[test]
fn unknown_kinds_and_misspelt_fields_are_reported() {
    let mut m = Manifests::default();
    let mut p = Vec::new();
    m.add_file(
        "t.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n---\n\
         apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata:\n  name: d\nspec:\n  attachRequried: true\n---\n\
         apiVersion: storage.k8s.io/v1beta1\nkind: CSIDriver\nmetadata:\n  name: d\nspec: {}\n",
        &mut p,
    );
    assert_reported(&p, "t.yaml#0: unknown kind \"Pod\"");
    assert_reported(
        &p,
        "t.yaml#1: field .spec.attachRequried is not part of the object",
    );
    assert_reported(
        &p,
        "t.yaml#2: unknown kind \"CSIDriver\" of apiVersion \"storage.k8s.io/v1beta1\"",
    );
}
