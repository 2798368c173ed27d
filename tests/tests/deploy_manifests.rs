//! deploy/k8s, as `kubectl apply -k deploy/k8s` would send it, checked against the binaries it
//! runs: what a schema cannot know.
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

/// The kustomization `kubectl apply -k` is documented with.
const KUSTOMIZATION: &str = "deploy/k8s";

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
// The checks.

/// (a) Each probe is a gRPC health check on a plaintext port that serves the health service:
/// the serving port when it is plaintext, else the `--health-listen` port, which must be set
/// (the kubelet's gRPC probe speaks no TLS and presents no client certificate).
#[test]
fn probes_check_health_on_a_plaintext_health_port() {
    let Some(objects) = rendered() else { return };
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
    assert_no_problems(problems);
}

/// (b) The kubelet waits long enough for the preStop sleep and then the whole drain.
#[test]
fn termination_grace_covers_pre_stop_and_drain() {
    let Some(objects) = rendered() else { return };
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

        let termination = container.pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(DEFAULT_TERMINATION_GRACE);
        let needed = sleep + grace + GRACE_MARGIN;
        if Duration::from_secs(termination) < needed {
            problems.push(format!(
                "{where_}: terminationGracePeriodSeconds {termination} < preStop {}s + drain \
                 {grace_text} ({source}) + margin {}s = {}s",
                sleep.as_secs(),
                GRACE_MARGIN.as_secs(),
                needed.as_secs_f64()
            ));
        }
    }
    assert_no_problems(problems);
}

/// (c) Every env var a container sets is one its binary reads.
#[test]
fn env_names_are_ones_the_binaries_read() {
    let Some(objects) = rendered() else { return };
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
        for name in container.env().keys() {
            checked += 1;
            if !known.contains(name.as_str()) {
                problems.push(format!(
                    "{where_}: env {name} is not read by {} (its --help lists {})",
                    binary.display(),
                    known.iter().copied().collect::<Vec<_>>().join(" ")
                ));
            }
        }
    }
    assert!(
        checked > 0,
        "no container sets any env var: nothing checked"
    );
    assert_no_problems(problems);
}

/// (d) Every container runs locked down; pods mount no API token.
#[test]
fn containers_run_locked_down() {
    let Some(objects) = rendered() else { return };
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
    assert_no_problems(problems);
}

/// Images are pinned, labels are complete and consistent, resources bounded, drains possible.
#[test]
fn images_labels_and_resources_are_pinned() {
    let Some(objects) = rendered() else { return };
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
    assert_no_problems(problems);
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

/// The objects `kubectl kustomize deploy/k8s` renders, once per test binary; `None` (after
/// printing why) when kubectl is missing outside CI.
fn rendered() -> Option<&'static [Value]> {
    static RENDERED: OnceLock<Result<Vec<Value>, Unrendered>> = OnceLock::new();
    match RENDERED.get_or_init(render) {
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

fn render() -> Result<Vec<Value>, Unrendered> {
    let root = workspace_root();
    let kubectl = match std::env::var_os(KUBECTL_ENV) {
        Some(path) => PathBuf::from(path),
        None => root.join(KUBECTL),
    };
    if !kubectl.is_file() {
        return Err(Unrendered::NoTool(format!(
            "no kubectl at {} to render {KUSTOMIZATION}: run `bash .ci/deploy-check.sh` (it \
             installs one there), or set {KUBECTL_ENV} to a kubectl",
            kubectl.display()
        )));
    }
    let output = Command::new(&kubectl)
        .args(["kustomize", KUSTOMIZATION])
        .current_dir(root)
        .output()
        .map_err(|error| Unrendered::Failed(format!("running {}: {error}", kubectl.display())))?;
    if !output.status.success() {
        return Err(Unrendered::Failed(format!(
            "`kubectl kustomize {KUSTOMIZATION}` failed ({}):\n{}",
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
            "{KUSTOMIZATION} rendered no object"
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
fn assert_no_problems(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s) in {KUSTOMIZATION}:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
