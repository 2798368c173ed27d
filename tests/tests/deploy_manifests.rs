//! deploy/k8s and the deploy/cluster overlay, as `kubectl apply -k` would send them, checked
//! against the binaries they run: what a schema cannot know. Every check below runs on both
//! (tests `k8s::NAME` and `cluster::NAME`); the `cluster_*` tests only on the overlay.
//!
//! - Probes look at the port the binary really serves (its `--listen`, from the container's
//!   env or the binary's default), which the container declares: gRPC health checks where that
//!   port is plaintext; where it speaks TLS (store-svc with mutual TLS: the kubelet's gRPC
//!   probe can neither speak TLS nor present a client certificate) a TCP check of that port.
//! - `terminationGracePeriodSeconds` covers the preStop sleep plus the binary's drain budget
//!   (its `--grace-period`, from env or default) with a margin.
//! - Every env var a container sets is one its binary reads: the `[env: NAME]` entries of its
//!   `--help`. A misspelt or renamed variable would otherwise be ignored without a word.
//! - Every container is locked down (non-root, no privilege escalation, no capabilities,
//!   read-only root, RuntimeDefault seccomp), pods mount no service-account token, and a pod
//!   with a volume claim sets fsGroup.
//! - Images are pinned and agree with the `app.kubernetes.io/version` label; every object
//!   carries the `app.kubernetes.io` labels; no selector holds the version; resources are
//!   bounded; no PodDisruptionBudget blocks node drains.
//! - deploy/cluster: session-svc runs as several replicas that find each other through a
//!   headless Service (`SESSION_PEERS_DNS`) and advertise their pod IP, rolled out without
//!   Recreate, with a grace period that also covers the release of its shard leases; store-svc
//!   is a Deployment of several replicas on PostgreSQL, its URL from a Secret, behind the
//!   Service session-svc dials; each has a PodDisruptionBudget that lets one pod go at a time;
//!   the NetworkPolicies let the replicas reach each other and the store.
//!
//! The manifests are rendered by the kubectl that `.ci/deploy-check.sh` installs into
//! `.cache/deploy-tools` (`DEPLOY_KUBECTL` names another). Without it the tests print
//! `skipped: <reason>` and pass, except under CI (`CI` set), where they fail: `.ci/run` runs
//! the script first. The binaries come from `cargo build --workspace --bins`, as for every
//! end-to-end suite.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use kit::duration;
use serde::Deserialize;
use serde_norway::Value;
use tests::locate_binary;

/// Where `.ci/deploy-check.sh` installs kubectl, relative to the workspace root.
const KUBECTL: &str = ".cache/deploy-tools/bin/kubectl";

/// Names another kubectl (any with `kubectl kustomize`) instead of [`KUBECTL`].
const KUBECTL_ENV: &str = "DEPLOY_KUBECTL";

/// The kustomization `kubectl apply -k` is documented with: one replica of each service.
const BASE: &str = "deploy/k8s";

/// The overlay for several replicas: session-svc in cluster mode, store-svc on PostgreSQL.
const CLUSTER: &str = "deploy/cluster";

/// The Secret (and key) deploy/cluster's store-svc reads its PostgreSQL URL from.
const POSTGRES_SECRET: (&str, &str) = ("store-svc-postgres", "url");

/// PostgreSQL's port: what store-svc must be allowed to reach where egress is restricted.
const POSTGRES_PORT: u16 = 5432;

/// After its drain, a session-svc replica releases each shard lease it holds: this many at
/// once (`CONCURRENT_SHARDS` in session-svc/src/cluster/lease.rs)...
const LEASE_RELEASES_AT_ONCE: u64 = 16;

/// ... each one store `Commit` of at most this long (`CALL_BUDGET` there).
const LEASE_RELEASE_CALL: Duration = Duration::from_secs(2);

/// What `terminationGracePeriodSeconds` must leave beyond preStop + drain: the kubelet's own
/// latency, and the store's final flush on a slow disk.
const GRACE_MARGIN: Duration = Duration::from_secs(5);

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_TERMINATION_GRACE: u64 = 30;

/// The labels every object and pod template carries.
const LABELS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
];

const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// Kinds whose `spec.template` is a pod.
const WORKLOADS: [&str; 5] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
];

// ---------------------------------------------------------------------------------------------
// The checks of every kustomization.

/// Declares each check as a test of deploy/k8s (`k8s::NAME`) and of deploy/cluster
/// (`cluster::NAME`).
macro_rules! on_every_kustomization {
    ($($check:ident),* $(,)?) => {
        mod k8s {
            $(#[test]
            fn $check() {
                super::run(super::BASE, super::$check);
            })*
        }
        mod cluster {
            $(#[test]
            fn $check() {
                super::run(super::CLUSTER, super::$check);
            })*
        }
    };
}

on_every_kustomization!(
    probes_check_health_on_a_plaintext_health_port,
    termination_grace_covers_pre_stop_and_drain,
    env_names_are_ones_the_binaries_read,
    containers_run_locked_down,
    images_labels_and_resources_are_pinned,
);

/// Runs `check` on what `kustomization` renders; fails with every problem it found.
fn run(kustomization: &'static str, check: fn(&[Value]) -> Vec<String>) {
    let Some(objects) = rendered(kustomization) else {
        return;
    };
    assert_no_problems(kustomization, check(objects));
}

/// (a) Each probe is a gRPC health check on a plaintext port that serves the health service:
/// the serving port when it is plaintext, else the `--health-listen` port, which must be set
/// (the kubelet's gRPC probe speaks no TLS and presents no client certificate).
fn probes_check_health_on_a_plaintext_health_port(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for container in containers(objects) {
        let help = BinaryHelp::of(&container.binary());
        let serving = container.serving_port(&help);
        let where_ = container.label();
        if !container.declared_ports().values().any(|&p| p == serving) {
            problems.push(format!(
                "{where_}: serves on {serving} (its --listen) but declares no containerPort {serving}"
            ));
        }
        let health = container.health_port(&help);
        let port = match (container.speaks_tls(&help), health) {
            (_, Some(health)) => health,
            (false, None) => serving,
            (true, None) => {
                problems.push(format!(
                    "{where_}: its port speaks TLS, which the kubelet's gRPC probe cannot: set \
                     {} and probe that port",
                    help.flag("health-listen").env()
                ));
                continue;
            }
        };
        if !container.declared_ports().values().any(|&p| p == port) {
            problems.push(format!(
                "{where_}: serves health on {port} but declares no containerPort {port}"
            ));
        }
        for kind in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let Some(probe) = container.spec.get(kind) else {
                problems.push(format!("{where_}: no {kind}"));
                continue;
            };
            let handlers: Vec<&str> = ["grpc", "tcpSocket", "httpGet", "exec"]
                .into_iter()
                .filter(|handler| probe.get(*handler).is_some())
                .collect();
            if handlers != ["grpc"] {
                problems.push(format!(
                    "{where_}: {kind} uses {handlers:?}; it must be a `grpc` health check"
                ));
                continue;
            }
            let target = &probe["grpc"]["port"];
            match container.resolve_port(target) {
                Some(p) if p == port => {}
                Some(other) => problems.push(format!(
                    "{where_}: {kind} probes port {other}, not the health port {port}"
                )),
                None => problems.push(format!(
                    "{where_}: {kind} probes port {target:?}, which is no declared port"
                )),
            }
            // The empty service is the whole server, which a drain turns NOT_SERVING.
            let service = probe["grpc"].get("service").and_then(Value::as_str);
            if !matches!(service, None | Some("")) {
                problems.push(format!(
                    "{where_}: {kind} asks the health service about {service:?}; ask about \
                     the whole server (no `service`), the status a drain flips"
                ));
            }
        }
    }
    problems
}

/// (b) The kubelet waits long enough for the preStop sleep and then the whole drain, and, for
/// a session-svc replica in cluster mode, the release of its shard leases after it.
fn termination_grace_covers_pre_stop_and_drain(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for container in containers(objects) {
        let help = BinaryHelp::of(&container.binary());
        let where_ = container.label();
        let grace_flag = help.flag("grace-period");
        let (grace_text, source) = match container.env_value(grace_flag.env()) {
            Some(Some(value)) => (value.to_owned(), format!("{} in env", grace_flag.env())),
            Some(None) => {
                problems.push(format!(
                    "{where_}: {} comes from a reference; its value cannot be checked",
                    grace_flag.env()
                ));
                continue;
            }
            None => (
                grace_flag
                    .default
                    .clone()
                    .expect("--grace-period has a default"),
                "the binary's default".to_owned(),
            ),
        };
        let grace = duration::parse(&grace_text)
            .unwrap_or_else(|error| panic!("{where_}: {}: {error}", grace_flag.env()));

        let pre_stop = &container.spec["lifecycle"]["preStop"];
        let sleep = if pre_stop.is_null() {
            problems.push(format!(
                "{where_}: no lifecycle.preStop sleep: SIGTERM (and the listener's close) would \
                 race the pod's removal from the endpoints"
            ));
            Duration::ZERO
        } else if let Some(seconds) = pre_stop["sleep"]["seconds"].as_u64() {
            Duration::from_secs(seconds)
        } else {
            problems.push(format!(
                "{where_}: preStop is {pre_stop:?}; only `sleep` has a known length (and the \
                 distroless image has no shell for an exec)"
            ));
            continue;
        };

        let release = match container.lease_release(&help) {
            Ok(release) => release,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };

        let termination = container.pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(DEFAULT_TERMINATION_GRACE);
        let needed = sleep + grace + release + GRACE_MARGIN;
        if Duration::from_secs(termination) < needed {
            problems.push(format!(
                "{where_}: terminationGracePeriodSeconds {termination} < preStop {}s + drain \
                 {grace_text} ({source}) + release of shard leases {}s + margin {}s = {}s",
                sleep.as_secs(),
                release.as_secs_f64(),
                GRACE_MARGIN.as_secs(),
                needed.as_secs_f64()
            ));
        }
    }
    problems
}

/// (c) Every env var a container sets is one its binary reads, except a downward-API variable
/// that only feeds a later one's `$(NAME)` (the pod IP in `SESSION_ADVERTISE`). Every `$(NAME)`
/// names a variable listed before it: Kubernetes leaves any other reference as it is, `$(` and
/// all.
fn env_names_are_ones_the_binaries_read(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut checked = 0;
    for container in containers(objects) {
        let binary = container.binary();
        let help = BinaryHelp::of(&binary);
        let known = help.env_names();
        assert!(
            known.len() > 5,
            "{}: `--help` listed only {known:?}: did clap's format change?",
            binary.display()
        );
        let where_ = container.label();
        if container.spec.get("envFrom").is_some() {
            problems.push(format!(
                "{where_}: envFrom sets names no one can check; list each variable under env"
            ));
        }
        let vars = container.env_vars();
        let referenced: BTreeSet<&str> = vars
            .iter()
            .filter_map(|var| var["value"].as_str())
            .flat_map(references)
            .collect();
        for (index, var) in vars.iter().enumerate() {
            let name = var["name"].as_str().unwrap_or_default();
            checked += 1;
            for reference in var["value"].as_str().map(references).into_iter().flatten() {
                let earlier = vars[..index]
                    .iter()
                    .any(|var| var["name"].as_str() == Some(reference));
                if !earlier {
                    problems.push(format!(
                        "{where_}: env {name} refers to $({reference}), which is not listed \
                         before it: Kubernetes would pass `$({reference})` on as it is"
                    ));
                }
            }
            if known.contains(name) {
                continue;
            }
            let from_downward_api = !var["valueFrom"]["fieldRef"].is_null();
            if from_downward_api && referenced.contains(name) {
                continue; // only an ingredient of another variable's value
            }
            problems.push(format!(
                "{where_}: env {name} is not read by {} (its --help lists {})",
                binary.display(),
                known.iter().copied().collect::<Vec<_>>().join(" ")
            ));
        }
    }
    assert!(
        checked > 0,
        "no container sets any env var: nothing checked"
    );
    problems
}

/// The `$(NAME)` references Kubernetes expands in an env value (`$$(NAME)` is an escape).
fn references(value: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find("$(") {
        let escaped = rest[..at].ends_with('$');
        rest = &rest[at + 2..];
        if escaped {
            continue;
        }
        if let Some(end) = rest.find(')') {
            found.push(&rest[..end]);
        }
    }
    found
}

/// (d) Every container runs locked down; pods mount no API token.
fn containers_run_locked_down(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for container in containers(objects) {
        let where_ = container.label();
        let context = &container.spec["securityContext"];
        let mut want = |path: &str, ok: bool, what: &str| {
            if !ok {
                problems.push(format!("{where_}: securityContext.{path} must be {what}"));
            }
        };
        want(
            "runAsNonRoot",
            context["runAsNonRoot"].as_bool() == Some(true),
            "true",
        );
        want(
            "runAsUser",
            context["runAsUser"].as_u64().is_some_and(|id| id > 0),
            "a non-root uid",
        );
        want(
            "runAsGroup",
            context["runAsGroup"].as_u64().is_some_and(|id| id > 0),
            "a non-root gid",
        );
        want(
            "allowPrivilegeEscalation",
            context["allowPrivilegeEscalation"].as_bool() == Some(false),
            "false",
        );
        want(
            "readOnlyRootFilesystem",
            context["readOnlyRootFilesystem"].as_bool() == Some(true),
            "true",
        );
        want(
            "capabilities.drop",
            context["capabilities"]["drop"]
                .as_sequence()
                .is_some_and(|drop| drop.iter().any(|c| c.as_str() == Some("ALL"))),
            "[ALL]",
        );
        want(
            "seccompProfile.type",
            context["seccompProfile"]["type"].as_str() == Some("RuntimeDefault"),
            "RuntimeDefault",
        );
        if context["privileged"].as_bool() == Some(true) {
            problems.push(format!("{where_}: privileged"));
        }

        let pod = container.pod;
        if pod["automountServiceAccountToken"].as_bool() != Some(false) {
            problems.push(format!(
                "{where_}: the pod must set automountServiceAccountToken: false (it never \
                 calls the Kubernetes API)"
            ));
        }
        let claims_volume = !container.workload["spec"]["volumeClaimTemplates"].is_null()
            || pod["volumes"].as_sequence().is_some_and(|volumes| {
                volumes
                    .iter()
                    .any(|volume| !volume["persistentVolumeClaim"].is_null())
            });
        if claims_volume
            && pod["securityContext"]["fsGroup"]
                .as_u64()
                .is_none_or(|g| g == 0)
        {
            problems.push(format!(
                "{where_}: the pod has a volume claim but no non-root securityContext.fsGroup: \
                 the non-root user could not write its volume"
            ));
        }
    }
    problems
}

/// Images are pinned, labels are complete and consistent, resources bounded, drains possible.
fn images_labels_and_resources_are_pinned(objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for object in objects {
        let what = describe(object);
        let labels = &object["metadata"]["labels"];
        for label in LABELS {
            if labels[label].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{what}: no {label} label"));
            }
        }
        if object["kind"].as_str() == Some("PodDisruptionBudget") {
            let spec = &object["spec"];
            let blocks = spec["maxUnavailable"].as_u64() == Some(0)
                || spec["maxUnavailable"].as_str() == Some("0%")
                || spec["minAvailable"].as_str() == Some("100%");
            if blocks {
                problems.push(format!(
                    "{what}: lets no pod be evicted, so it blocks every node drain"
                ));
            }
            for workload in objects.iter().filter(|o| is_workload(o)) {
                if !selects(&spec["selector"], &workload["spec"]["template"]["metadata"]) {
                    continue;
                }
                let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1);
                if spec["minAvailable"]
                    .as_u64()
                    .is_some_and(|min| min >= replicas)
                {
                    problems.push(format!(
                        "{what}: minAvailable {} of {}'s {replicas} replicas lets no pod be \
                         evicted, so it blocks every node drain",
                        spec["minAvailable"].as_u64().unwrap_or_default(),
                        describe(workload)
                    ));
                }
            }
        }
        if !is_workload(object) {
            continue;
        }
        let template_labels = &object["spec"]["template"]["metadata"]["labels"];
        for label in LABELS {
            if template_labels[label] != labels[label] {
                problems.push(format!(
                    "{what}: the pod template's {label} is {:?}, the object's {:?}",
                    template_labels[label], labels[label]
                ));
            }
        }
        let selector = &object["spec"]["selector"]["matchLabels"];
        if !selector[VERSION_LABEL].is_null() {
            problems.push(format!(
                "{what}: the selector holds {VERSION_LABEL}; selectors are immutable, so the \
                 next version could not be applied"
            ));
        }
        for claim in object["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if !claim["metadata"]["labels"][VERSION_LABEL].is_null() {
                problems.push(format!(
                    "{what}: a volumeClaimTemplate holds {VERSION_LABEL}; the templates are \
                     immutable, so the next version could not be applied"
                ));
            }
        }
    }
    for container in containers(objects) {
        let where_ = container.label();
        let image = container.spec["image"].as_str().unwrap_or_default();
        let tag = image
            .split('@')
            .next()
            .and_then(|name| name.rsplit_once(':'))
            .map(|(_, tag)| tag)
            .filter(|tag| !tag.contains('/'));
        let version = container.workload["metadata"]["labels"][VERSION_LABEL]
            .as_str()
            .unwrap_or_default();
        match tag {
            None => problems.push(format!("{where_}: image {image:?} has no tag")),
            Some("latest") => problems.push(format!("{where_}: image {image:?} floats")),
            Some(tag) if tag != version => problems.push(format!(
                "{where_}: image tag {tag:?} but {VERSION_LABEL} {version:?}"
            )),
            Some(_) => {}
        }
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                if container.spec["resources"][bound][resource].is_null() {
                    problems.push(format!("{where_}: no resources.{bound}.{resource}"));
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The checks of deploy/cluster alone.

/// session-svc runs as several replicas of one cluster: they find each other through a
/// headless Service that lists every pod (`SESSION_PEERS_DNS`), each advertises its own pod IP
/// on the port it serves, its port stays plaintext (cluster mode refuses TLS there), a rollout
/// overlaps old and new replicas instead of stopping them all, and its store address names the
/// Service in front of store-svc.
#[test]
fn cluster_session_svc_replicas_form_one_membership() {
    let Some(objects) = rendered(CLUSTER) else {
        return;
    };
    let mut problems = Vec::new();
    let sessions = running(objects, "session-svc");
    assert!(!sessions.is_empty(), "{CLUSTER} runs no session-svc");
    for container in &sessions {
        let where_ = container.label();
        let help = BinaryHelp::of(&container.binary());
        let workload = container.workload;
        if workload["kind"].as_str() != Some("Deployment") {
            problems.push(format!(
                "{where_}: session-svc keeps no state: a Deployment"
            ));
        }
        let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1);
        if replicas < 2 {
            problems.push(format!(
                "{where_}: {replicas} replica(s); the overlay exists to run several"
            ));
        }
        let strategy = &workload["spec"]["strategy"];
        if strategy["type"].as_str() == Some("Recreate") {
            problems.push(format!(
                "{where_}: rolled out with Recreate, which stops every replica at once; cluster \
                 mode makes overlapping replicas safe (RollingUpdate)"
            ));
        }
        let max_unavailable = &strategy["rollingUpdate"]["maxUnavailable"];
        if max_unavailable.as_u64() != Some(0) && max_unavailable.as_str() != Some("0%") {
            problems.push(format!(
                "{where_}: rollingUpdate.maxUnavailable is {max_unavailable:?}, not 0: a rollout \
                 should take a replica away only once its successor serves"
            ));
        }
        if container.speaks_tls(&help) {
            problems.push(format!(
                "{where_}: sets {}, which cluster mode refuses (replicas forward to each other \
                 in plaintext)",
                help.flag("tls-cert").env()
            ));
        }
        let serving = container.serving_port(&help);

        let peers_dns = help.flag("peers-dns").env();
        match container.env_value(peers_dns) {
            None => problems.push(format!(
                "{where_}: no {peers_dns}: the replicas would not know each other"
            )),
            Some(None) => problems.push(format!(
                "{where_}: {peers_dns} comes from a reference; it cannot be checked"
            )),
            Some(Some(value)) => match host_port(value) {
                None => problems.push(format!("{where_}: {peers_dns}={value} is not name:port")),
                Some((host, port)) => match service_named(objects, host) {
                    None => problems.push(format!(
                        "{where_}: {peers_dns}={value} names no Service of {CLUSTER}"
                    )),
                    Some(service) => {
                        let what = describe(service);
                        if service["spec"]["clusterIP"].as_str() != Some("None") {
                            problems.push(format!(
                                "{where_}: {peers_dns} names {what}, which is not headless \
                                 (clusterIP: None): its name would resolve to one virtual IP, \
                                 not to the replicas"
                            ));
                        }
                        if service["spec"]["publishNotReadyAddresses"].as_bool() != Some(true) {
                            problems.push(format!(
                                "{what}: no publishNotReadyAddresses: true; the replicas' own \
                                 health checks decide the membership, and a starting replica \
                                 must find itself and the others before it is ready"
                            ));
                        }
                        problems.extend(service_reaches(service, port, container, serving));
                    }
                },
            },
        }

        let advertise = help.flag("advertise").env();
        match container.env_value(advertise) {
            Some(Some(value)) => problems.extend(advertises_pod_ip(container, value, serving)),
            Some(None) => problems.push(format!(
                "{where_}: {advertise} comes from a reference; it cannot be checked"
            )),
            None => problems.push(format!(
                "{where_}: no {advertise}: session-svc refuses to start in cluster mode without it"
            )),
        }

        let store_addr = help.flag("store-addr").env();
        let store = running(objects, "store-svc");
        match container.env_value(store_addr) {
            Some(Some(value)) => {
                let authority = value.split_once("://").map_or(value, |(_, rest)| rest);
                match host_port(authority.trim_end_matches('/')) {
                    None => problems.push(format!("{where_}: {store_addr}={value}: no host:port")),
                    Some((host, port)) => match service_named(objects, host) {
                        None => problems.push(format!(
                            "{where_}: {store_addr}={value} names no Service of {CLUSTER} (with \
                             several store-svc replicas, session-svc dials their Service)"
                        )),
                        Some(service) => {
                            let Some(store) = store.iter().find(|store| {
                                labels_match(&service["spec"]["selector"], store.pod_metadata())
                            }) else {
                                problems.push(format!(
                                    "{where_}: {store_addr} names {}, which selects no store-svc \
                                     pod",
                                    describe(service)
                                ));
                                continue;
                            };
                            let store_help = BinaryHelp::of(&store.binary());
                            let store_port = store.serving_port(&store_help);
                            problems.extend(service_reaches(service, port, store, store_port));
                        }
                    },
                }
            }
            _ => problems.push(format!(
                "{where_}: {store_addr} is not set to a literal address of the store's Service"
            )),
        }
    }
    assert_no_problems(CLUSTER, problems);
}

/// store-svc keeps no state: a Deployment of several replicas on PostgreSQL, its URL (with the
/// password) from a Secret, no data directory and no volume but its TLS Secret, and a Service
/// in front of it.
#[test]
fn cluster_store_svc_is_stateless_on_postgres() {
    let Some(objects) = rendered(CLUSTER) else {
        return;
    };
    let mut problems = Vec::new();
    let stores = running(objects, "store-svc");
    assert!(!stores.is_empty(), "{CLUSTER} runs no store-svc");
    for container in &stores {
        let where_ = container.label();
        let workload = container.workload;
        if workload["kind"].as_str() != Some("Deployment") {
            problems.push(format!(
                "{where_}: on PostgreSQL store-svc keeps no state: a Deployment, not a {}",
                workload["kind"].as_str().unwrap_or("?")
            ));
        }
        let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1);
        if replicas < 2 {
            problems.push(format!(
                "{where_}: {replicas} replica(s); on PostgreSQL it can run several"
            ));
        }
        if container.env_value("STORE_BACKEND") != Some(Some("postgres")) {
            problems.push(format!(
                "{where_}: STORE_BACKEND is {:?}, not postgres",
                container.env_value("STORE_BACKEND")
            ));
        }
        let (secret, key) = POSTGRES_SECRET;
        match container.env_var("STORE_POSTGRES_URL") {
            None => problems.push(format!(
                "{where_}: no STORE_POSTGRES_URL: store-svc refuses --backend postgres without it"
            )),
            Some(var) if !var["value"].is_null() => problems.push(format!(
                "{where_}: STORE_POSTGRES_URL is written in the manifest, password and all; read \
                 it from the Secret {secret} (secretKeyRef)"
            )),
            Some(var) => {
                let reference = &var["valueFrom"]["secretKeyRef"];
                if reference["name"].as_str() != Some(secret)
                    || reference["key"].as_str() != Some(key)
                    || reference["optional"].as_bool() == Some(true)
                {
                    problems.push(format!(
                        "{where_}: STORE_POSTGRES_URL comes from {:?}, not the required \
                         secretKeyRef {{name: {secret}, key: {key}}}",
                        var["valueFrom"]
                    ));
                }
            }
        }
        if container.env_value("STORE_DATA_DIR").is_some() {
            problems.push(format!(
                "{where_}: sets STORE_DATA_DIR, which PostgreSQL does not use"
            ));
        }
        if !workload["spec"]["volumeClaimTemplates"].is_null() {
            problems.push(format!("{where_}: claims volumes; it has nothing to keep"));
        }
        for volume in container.pod["volumes"].as_sequence().into_iter().flatten() {
            let read_only_source = ["secret", "configMap", "projected", "downwardAPI"]
                .into_iter()
                .any(|source| !volume[source].is_null());
            if !read_only_source {
                problems.push(format!(
                    "{where_}: volume {} holds data; on PostgreSQL store-svc writes no file",
                    volume["name"].as_str().unwrap_or("?")
                ));
            }
        }
        let fronted = objects.iter().any(|object| {
            object["kind"].as_str() == Some("Service")
                && labels_match(&object["spec"]["selector"], container.pod_metadata())
        });
        if !fronted {
            problems.push(format!("{where_}: no Service selects its pods"));
        }
    }
    assert_no_problems(CLUSTER, problems);
}

/// One PodDisruptionBudget per service, letting one pod go at a time and keeping one serving:
/// session-svc `maxUnavailable: 1`, store-svc `minAvailable: 1`.
#[test]
fn cluster_disruption_budgets_let_one_pod_go_at_a_time() {
    let Some(objects) = rendered(CLUSTER) else {
        return;
    };
    let mut problems = Vec::new();
    for (binary, field) in [
        ("session-svc", "maxUnavailable"),
        ("store-svc", "minAvailable"),
    ] {
        for container in running(objects, binary) {
            let where_ = describe(container.workload);
            let budgets: Vec<&Value> = objects
                .iter()
                .filter(|object| object["kind"].as_str() == Some("PodDisruptionBudget"))
                .filter(|budget| selects(&budget["spec"]["selector"], container.pod_metadata()))
                .collect();
            let [budget] = budgets[..] else {
                problems.push(format!(
                    "{where_}: {} PodDisruptionBudgets select its pods, not one",
                    budgets.len()
                ));
                continue;
            };
            let what = describe(budget);
            let spec = &budget["spec"];
            if spec[field].as_u64() != Some(1) {
                problems.push(format!("{what}: {field} is {:?}, not 1", spec[field]));
                continue;
            }
            let replicas = container.workload["spec"]["replicas"].as_u64().unwrap_or(1);
            let evictable = match field {
                "maxUnavailable" => 1,
                _ => replicas.saturating_sub(1),
            };
            if evictable == 0 || evictable >= replicas {
                problems.push(format!(
                    "{what}: {field} 1 at {replicas} replicas lets {evictable} go at once: it \
                     must let one go and keep one"
                ));
            }
        }
    }
    assert_no_problems(CLUSTER, problems);
}

/// The NetworkPolicies let session-svc replicas reach each other on their gRPC port, by a rule
/// that names them (so narrowing the public rule cannot cut them apart), and reach store-svc;
/// where a policy restricts egress, it still lets store-svc reach PostgreSQL and session-svc
/// its peers and the store.
#[test]
fn cluster_network_policies_let_the_replicas_talk() {
    let Some(objects) = rendered(CLUSTER) else {
        return;
    };
    let mut problems = Vec::new();
    let sessions = running(objects, "session-svc");
    let stores = running(objects, "store-svc");
    for session in &sessions {
        let session_port = session.serving_port(&BinaryHelp::of(&session.binary()));
        let where_ = describe(session.workload);
        if !ingress_allows(objects, session, session.pod_metadata(), session_port, true) {
            problems.push(format!(
                "{where_}: no NetworkPolicy rule names session-svc pods as the source of calls \
                 to their port {session_port}: the replicas forward calls and check each other's \
                 health there"
            ));
        }
        for store in &stores {
            let store_port = store.serving_port(&BinaryHelp::of(&store.binary()));
            if !ingress_allows(objects, store, session.pod_metadata(), store_port, false) {
                problems.push(format!(
                    "{where_}: the NetworkPolicies keep its pods from {}'s port {store_port}",
                    describe(store.workload)
                ));
            }
            if !egress_allows(objects, session.pod_metadata(), store_port) {
                problems.push(format!(
                    "{where_}: a NetworkPolicy restricts its egress without port {store_port} \
                     (store-svc)"
                ));
            }
        }
        if !egress_allows(objects, session.pod_metadata(), session_port) {
            problems.push(format!(
                "{where_}: a NetworkPolicy restricts its egress without port {session_port} (its \
                 peers)"
            ));
        }
    }
    for store in &stores {
        if !egress_allows(objects, store.pod_metadata(), POSTGRES_PORT) {
            problems.push(format!(
                "{}: a NetworkPolicy restricts its egress without port {POSTGRES_PORT} \
                 (PostgreSQL)",
                describe(store.workload)
            ));
        }
    }
    assert_no_problems(CLUSTER, problems);
}

// ---------------------------------------------------------------------------------------------
// Services, selectors and policies.

/// Every container that runs `binary`.
fn running<'a>(objects: &'a [Value], binary: &str) -> Vec<Container<'a>> {
    containers(objects)
        .into_iter()
        .filter(|container| container.command_name() == Some(binary))
        .collect()
}

/// `host:port` split, the port a number.
fn host_port(value: &str) -> Option<(&str, u16)> {
    let (host, port) = value.rsplit_once(':')?;
    Some((host, port.parse().ok()?)).filter(|(host, _)| !host.is_empty())
}

/// The Service a DNS name reaches: its first label (`name`, `name.namespace`,
/// `name.namespace.svc.cluster.local`).
fn service_named<'a>(objects: &'a [Value], host: &str) -> Option<&'a Value> {
    let name = host.split('.').next()?;
    objects.iter().find(|object| {
        object["kind"].as_str() == Some("Service")
            && object["metadata"]["name"].as_str() == Some(name)
    })
}

/// Problems with `service` carrying port `port` to `container`'s port `serving`.
fn service_reaches(service: &Value, port: u16, container: &Container, serving: u16) -> Vec<String> {
    let what = describe(service);
    if !labels_match(&service["spec"]["selector"], container.pod_metadata()) {
        return vec![format!(
            "{what} does not select the pods of {}",
            describe(container.workload)
        )];
    }
    let ports = service["spec"]["ports"].as_sequence().into_iter().flatten();
    let Some(entry) = ports
        .into_iter()
        .find(|entry| entry["port"].as_u64() == Some(port.into()))
    else {
        return vec![format!("{what} has no port {port}")];
    };
    let target = match &entry["targetPort"] {
        Value::Null => Some(port),
        other => container.resolve_port(other),
    };
    if target == Some(serving) {
        Vec::new()
    } else {
        vec![format!(
            "{what}: port {port} goes to {:?} of {}, which serves on {serving}",
            entry["targetPort"],
            container.label()
        )]
    }
}

/// Problems with `SESSION_ADVERTISE`-like `value`: it must be `$(VAR):PORT`, VAR the pod's IP
/// from the downward API (each replica its own, one of the headless Service's addresses), PORT
/// the port it serves on.
fn advertises_pod_ip(container: &Container, value: &str, serving: u16) -> Vec<String> {
    let where_ = container.label();
    let Some((host, port)) = host_port(value) else {
        return vec![format!("{where_}: advertises {value}, not host:port")];
    };
    let mut problems = Vec::new();
    if port != serving {
        problems.push(format!(
            "{where_}: advertises port {port} but serves on {serving}"
        ));
    }
    let pod_ip = host
        .strip_prefix("$(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|name| container.env_var(name))
        .is_some_and(|var| {
            var["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("status.podIP")
        });
    if !pod_ip {
        problems.push(format!(
            "{where_}: advertises {value}; the host must be $(VAR) with VAR from the downward \
             API's status.podIP, so that each replica names itself"
        ));
    }
    problems
}

/// Whether a Service's plain `selector` map selects a pod with `metadata`'s labels (an empty
/// or missing selector selects nothing: such a Service has no endpoints of its own).
fn labels_match(selector: &Value, metadata: &Value) -> bool {
    let Some(wanted) = selector.as_mapping().filter(|wanted| !wanted.is_empty()) else {
        return false;
    };
    wanted
        .iter()
        .all(|(key, value)| metadata["labels"].get(key) == Some(value))
}

/// Whether a LabelSelector (`matchLabels`; one with `matchExpressions` is not understood here
/// and selects nothing) selects `metadata`'s labels. An empty selector selects every pod.
fn selects(selector: &Value, metadata: &Value) -> bool {
    if !selector["matchExpressions"].is_null() {
        return false;
    }
    selector["matchLabels"]
        .as_mapping()
        .into_iter()
        .flatten()
        .all(|(key, value)| metadata["labels"].get(key) == Some(value))
}

/// The NetworkPolicies that select pods with `metadata` and restrict `direction` (`Ingress`,
/// `Egress`).
fn policies_restricting<'a>(
    objects: &'a [Value],
    metadata: &Value,
    direction: &str,
) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|object| object["kind"].as_str() == Some("NetworkPolicy"))
        .filter(|policy| selects(&policy["spec"]["podSelector"], metadata))
        .filter(|policy| match policy["spec"]["policyTypes"].as_sequence() {
            Some(types) => types.iter().any(|t| t.as_str() == Some(direction)),
            // Without policyTypes: Ingress always, Egress when there are egress rules.
            None => direction == "Ingress" || !policy["spec"]["egress"].is_null(),
        })
        .collect()
}

/// Whether a rule's `ports` let TCP `port` through (named ports by `container`'s names).
fn rule_ports_allow(rule: &Value, port: u16, name: Option<&str>) -> bool {
    let Some(ports) = rule["ports"]
        .as_sequence()
        .filter(|ports| !ports.is_empty())
    else {
        return true;
    };
    ports.iter().any(|entry| {
        let tcp = matches!(entry["protocol"].as_str(), None | Some("TCP"));
        let matches = match &entry["port"] {
            Value::Null => true,
            Value::Number(number) => number.as_u64() == Some(port.into()),
            Value::String(named) => Some(named.as_str()) == name,
            _ => false,
        };
        tcp && matches
    })
}

/// Whether pods with `from` may open TCP connections to `to`'s pods on `port` (same
/// namespace). With `named`, only rules that name the source by a podSelector count, not rules
/// open to every source.
fn ingress_allows(objects: &[Value], to: &Container, from: &Value, port: u16, named: bool) -> bool {
    let policies = policies_restricting(objects, to.pod_metadata(), "Ingress");
    if policies.is_empty() && !named {
        return true;
    }
    let name = to.port_name(port);
    policies
        .iter()
        .flat_map(|policy| {
            policy["spec"]["ingress"]
                .as_sequence()
                .into_iter()
                .flatten()
        })
        .filter(|rule| rule_ports_allow(rule, port, name.as_deref()))
        .any(
            |rule| match rule["from"].as_sequence().filter(|from| !from.is_empty()) {
                None => !named,
                Some(peers) => peers.iter().any(|peer| {
                    peer["namespaceSelector"].is_null()
                        && peer["ipBlock"].is_null()
                        && !peer["podSelector"].is_null()
                        && selects(&peer["podSelector"], from)
                }),
            },
        )
}

/// Whether pods with `from` may connect out to TCP `port`, by the ports of the egress rules
/// alone (where their destinations are, outside the cluster for PostgreSQL, is not judged).
fn egress_allows(objects: &[Value], from: &Value, port: u16) -> bool {
    let policies = policies_restricting(objects, from, "Egress");
    policies.is_empty()
        || policies
            .iter()
            .flat_map(|policy| policy["spec"]["egress"].as_sequence().into_iter().flatten())
            .any(|rule| rule_ports_allow(rule, port, None))
}

// ---------------------------------------------------------------------------------------------
// The rendered manifests.

/// The workspace root (this crate is one of its members).
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
}

/// Why the manifests could not be rendered.
enum Unrendered {
    /// kubectl is not installed: skip, or fail under CI.
    NoTool(String),
    /// kubectl ran and failed: always a failure.
    Failed(String),
}

/// The objects `kubectl kustomize KUSTOMIZATION` renders, once per test binary; `None` (after
/// printing why) when kubectl is missing outside CI.
fn rendered(kustomization: &'static str) -> Option<&'static [Value]> {
    static BASE_OBJECTS: OnceLock<Result<Vec<Value>, Unrendered>> = OnceLock::new();
    static CLUSTER_OBJECTS: OnceLock<Result<Vec<Value>, Unrendered>> = OnceLock::new();
    let cell = match kustomization {
        BASE => &BASE_OBJECTS,
        CLUSTER => &CLUSTER_OBJECTS,
        other => panic!("no kustomization {other} is checked here"),
    };
    match cell.get_or_init(|| render(kustomization)) {
        Ok(objects) => Some(objects),
        Err(Unrendered::Failed(message)) => panic!("{message}"),
        Err(Unrendered::NoTool(reason)) => {
            let under_ci = std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false");
            assert!(
                !under_ci,
                "{reason}; .ci/run runs .ci/deploy-check.sh before the tests, so under CI this \
                 is a failure"
            );
            println!("skipped: {reason}");
            None
        }
    }
}

fn render(kustomization: &str) -> Result<Vec<Value>, Unrendered> {
    let root = workspace_root();
    let kubectl = match std::env::var_os(KUBECTL_ENV) {
        Some(path) => PathBuf::from(path),
        None => root.join(KUBECTL),
    };
    if !kubectl.is_file() {
        return Err(Unrendered::NoTool(format!(
            "no kubectl at {} to render {kustomization}: run `bash .ci/deploy-check.sh` (it \
             installs one there), or set {KUBECTL_ENV} to a kubectl",
            kubectl.display()
        )));
    }
    let output = Command::new(&kubectl)
        .args(["kustomize", kustomization])
        .current_dir(root)
        .output()
        .map_err(|error| Unrendered::Failed(format!("running {}: {error}", kubectl.display())))?;
    if !output.status.success() {
        return Err(Unrendered::Failed(format!(
            "`kubectl kustomize {kustomization}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|error| Unrendered::Failed(format!("kubectl printed non-UTF-8: {error}")))?;
    let objects = serde_norway::Deserializer::from_str(&text)
        .map(Value::deserialize)
        .filter(|document| !matches!(document, Ok(Value::Null)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Unrendered::Failed(format!("the rendered YAML: {error}")))?;
    if objects.is_empty() {
        return Err(Unrendered::Failed(format!(
            "{kustomization} rendered no object"
        )));
    }
    Ok(objects)
}

fn describe(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn is_workload(object: &Value) -> bool {
    object["kind"]
        .as_str()
        .is_some_and(|kind| WORKLOADS.contains(&kind))
}

/// One container of one workload's pod template.
struct Container<'a> {
    workload: &'a Value,
    pod: &'a Value,
    spec: &'a Value,
}

/// Every container (init containers too) of every workload; fails if there is none.
fn containers(objects: &[Value]) -> Vec<Container<'_>> {
    let found: Vec<Container<'_>> = objects
        .iter()
        .filter(|object| is_workload(object))
        .flat_map(|workload| {
            let pod = &workload["spec"]["template"]["spec"];
            ["initContainers", "containers"]
                .into_iter()
                .filter_map(move |list| pod[list].as_sequence())
                .flatten()
                .map(move |spec| Container {
                    workload,
                    pod,
                    spec,
                })
        })
        .collect();
    assert!(!found.is_empty(), "no workload with containers rendered");
    found
}

impl Container<'_> {
    fn label(&self) -> String {
        format!(
            "{} container {}",
            describe(self.workload),
            self.spec["name"].as_str().unwrap_or("?")
        )
    }

    /// The binary this container runs: the file name of `command[0]`, built by this workspace.
    fn binary(&self) -> PathBuf {
        let command = self.spec["command"][0].as_str().unwrap_or_else(|| {
            panic!(
                "{}: no command: name the binary (the image holds several)",
                self.label()
            )
        });
        let name = Path::new(command)
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or(command);
        let override_var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
        locate_binary(name, &override_var)
            .unwrap_or_else(|error| panic!("{}: {error:#}", self.label()))
    }

    /// The file name of `command[0]`, if there is one.
    fn command_name(&self) -> Option<&str> {
        let command = self.spec["command"][0].as_str()?;
        Path::new(command).file_name()?.to_str()
    }

    /// The pod template's metadata (its labels are what selectors see).
    fn pod_metadata(&self) -> &Value {
        &self.workload["spec"]["template"]["metadata"]
    }

    /// The env list, in order.
    fn env_vars(&self) -> Vec<&Value> {
        self.spec["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .collect()
    }

    /// The env var `name` as listed, if it is.
    fn env_var(&self, name: &str) -> Option<&Value> {
        self.env_vars()
            .into_iter()
            .find(|var| var["name"].as_str() == Some(name))
    }

    /// How long a session-svc replica in cluster mode (`--peers` or `--peers-dns` set) may take
    /// after its drain to release its shard leases: every shard it may hold (all of them when
    /// the others are gone), [`LEASE_RELEASES_AT_ONCE`] at a time, each within
    /// [`LEASE_RELEASE_CALL`]. Zero for a binary without cluster mode, or not in it.
    fn lease_release(&self, help: &BinaryHelp) -> Result<Duration, String> {
        if !help.has("peers") || !help.has("peers-dns") {
            return Ok(Duration::ZERO);
        }
        let clustered = ["peers", "peers-dns"]
            .into_iter()
            .any(|long| self.env_value(help.flag(long).env()).is_some());
        if !clustered {
            return Ok(Duration::ZERO);
        }
        let flag = help.flag("shards");
        let text = match self.env_value(flag.env()) {
            Some(Some(value)) => value.to_owned(),
            Some(None) => {
                return Err(format!(
                    "{}: {} comes from a reference; its value cannot be checked",
                    self.label(),
                    flag.env()
                ));
            }
            None => flag.default.clone().expect("--shards has a default"),
        };
        let shards: u32 = text
            .parse()
            .map_err(|error| format!("{}: {}={text}: {error}", self.label(), flag.env()))?;
        let rounds = u64::from(shards).div_ceil(LEASE_RELEASES_AT_ONCE);
        Ok(LEASE_RELEASE_CALL * u32::try_from(rounds).unwrap_or(u32::MAX))
    }

    /// The name of the declared port `number`, if it has one.
    fn port_name(&self, number: u16) -> Option<String> {
        self.declared_ports()
            .into_iter()
            .find(|&(_, declared)| declared == number)
            .map(|(name, _)| name)
            .filter(|name| !name.is_empty())
    }

    /// Env var name → its literal value, or `None` when it comes from a reference.
    fn env(&self) -> BTreeMap<String, Option<&str>> {
        self.spec["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|var| {
                let name = var["name"].as_str().unwrap_or_default().to_owned();
                (name, var["value"].as_str())
            })
            .collect()
    }

    /// `None`: not set; `Some(None)`: set from a reference; `Some(Some(v))`: set to `v`.
    fn env_value(&self, name: &str) -> Option<Option<&str>> {
        self.env().get(name).copied()
    }

    /// The port the binary listens on: its `--listen`, from env or its default.
    fn serving_port(&self, help: &BinaryHelp) -> u16 {
        let flag = help.flag("listen");
        let value = match self.env_value(flag.env()) {
            Some(Some(value)) => value.to_owned(),
            Some(None) => panic!("{}: {} from a reference", self.label(), flag.env()),
            None => flag.default.clone().expect("--listen has a default"),
        };
        value
            .parse::<SocketAddr>()
            .unwrap_or_else(|error| panic!("{}: {}={value}: {error}", self.label(), flag.env()))
            .port()
    }

    /// The plaintext health port, when the binary's `--health-listen` is set.
    fn health_port(&self, help: &BinaryHelp) -> Option<u16> {
        let flag = help.flag("health-listen");
        let value = self.env_value(flag.env())??;
        Some(
            value
                .parse::<SocketAddr>()
                .unwrap_or_else(|error| panic!("{}: {}={value}: {error}", self.label(), flag.env()))
                .port(),
        )
    }

    /// Whether the serving port speaks TLS: the binary's `--tls-cert` is set.
    fn speaks_tls(&self, help: &BinaryHelp) -> bool {
        self.env_value(help.flag("tls-cert").env()).is_some()
    }

    /// Declared container port name → number.
    fn declared_ports(&self) -> BTreeMap<String, u16> {
        self.spec["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|port| {
                let number = u16::try_from(port["containerPort"].as_u64()?).ok()?;
                Some((port["name"].as_str().unwrap_or_default().to_owned(), number))
            })
            .collect()
    }

    /// A probe's port, a number or the name of a declared port.
    fn resolve_port(&self, port: &Value) -> Option<u16> {
        match port {
            Value::Number(number) => number.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(name) => self.declared_ports().get(name).copied(),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What a binary's `--help` says about its flags.

/// One flag of a `--help`: `--long`, its env var and its default.
struct Flag {
    long: String,
    env: Option<String>,
    default: Option<String>,
}

impl Flag {
    fn env(&self) -> &str {
        self.env
            .as_deref()
            .unwrap_or_else(|| panic!("--{} reads no env var", self.long))
    }
}

struct BinaryHelp {
    binary: PathBuf,
    flags: Vec<Flag>,
}

impl BinaryHelp {
    /// Runs `binary --help` with an empty environment (so clap shows no values of ours).
    fn of(binary: &Path) -> Self {
        let output = Command::new(binary)
            .arg("--help")
            .env_clear()
            .output()
            .unwrap_or_else(|error| panic!("running {} --help: {error}", binary.display()));
        assert!(
            output.status.success(),
            "{} --help failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let help = String::from_utf8(output.stdout).expect("--help prints UTF-8");
        Self {
            binary: binary.to_owned(),
            flags: parse_help(&help),
        }
    }

    /// Whether the binary has `--long`.
    fn has(&self, long: &str) -> bool {
        self.flags.iter().any(|flag| flag.long == long)
    }

    fn env_names(&self) -> BTreeSet<&str> {
        self.flags.iter().filter_map(|f| f.env.as_deref()).collect()
    }

    fn flag(&self, long: &str) -> &Flag {
        self.flags
            .iter()
            .find(|flag| flag.long == long)
            .unwrap_or_else(|| panic!("{} has no --{long}", self.binary.display()))
    }
}

/// Splits clap's help into one block per option (a line starting `-x, --long` or `--long`)
/// and reads each block's `[env: NAME=...]` and `[default: ...]`.
fn parse_help(help: &str) -> Vec<Flag> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let long = trimmed
            .strip_prefix("--")
            .or_else(|| {
                let rest = trimmed.strip_prefix('-')?;
                let mut chars = rest.chars();
                chars.next().filter(char::is_ascii_alphanumeric)?;
                chars.as_str().strip_prefix(", --")
            })
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect::<String>()
            })
            .filter(|long| !long.is_empty());
        match (long, blocks.last_mut()) {
            (Some(long), _) => blocks.push((long, trimmed.to_owned())),
            (None, Some((_, text))) => {
                text.push(' ');
                text.push_str(trimmed);
            }
            (None, None) => {}
        }
    }
    blocks
        .into_iter()
        .map(|(long, text)| {
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let env = text.split_once("[env: ").map(|(_, rest)| {
                rest.chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect::<String>()
            });
            let default = text
                .split_once("[default: ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(value, _)| value.to_owned());
            Flag { long, env, default }
        })
        .collect()
}

#[test]
fn parse_help_reads_short_and_long_formats() {
    let short = "Options:\n      --grace-period <GRACE_PERIOD>  How long [env: STORE_GRACE_PERIOD=] \
                 [default: 20s]\n  -h, --help  Print help\n";
    let flags = parse_help(short);
    assert_eq!(flags[0].long, "grace-period");
    assert_eq!(flags[0].env.as_deref(), Some("STORE_GRACE_PERIOD"));
    assert_eq!(flags[0].default.as_deref(), Some("20s"));
    assert_eq!(flags[1].long, "help");
    assert_eq!(flags[1].env, None);

    let long = "Options:\n      --admin-token <ADMIN_TOKEN>\n          Bearer token\n\n          \
                - unset: admin off\n\n          [env: SESSION_ADMIN_TOKEN]\n\n      --listen \
                <LISTEN>\n          gRPC address\n\n          [env: SESSION_LISTEN=]\n          \
                [default: 127.0.0.1:50051]\n";
    let flags = parse_help(long);
    assert_eq!(flags.len(), 2);
    assert_eq!(flags[0].env.as_deref(), Some("SESSION_ADMIN_TOKEN"));
    assert_eq!(flags[0].default, None);
    assert_eq!(flags[1].env.as_deref(), Some("SESSION_LISTEN"));
    assert_eq!(flags[1].default.as_deref(), Some("127.0.0.1:50051"));
}

/// Fails with every problem found, one per line.
fn assert_no_problems(kustomization: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s) in {kustomization}:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
