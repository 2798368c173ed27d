#!/usr/bin/env bash
# Installs what the client suites in other languages need (tests/clients/, run by
# tests/tests/clients_python.rs and clients_node.rs): a Python virtualenv with the pinned
# packages of tests/clients/python/requirements.txt, Python stubs generated from proto/ with
# grpcio-tools, and the Node packages of tests/clients/node/package-lock.json (`npm ci`).
# Everything lands in ignored directories (.cache/clients, tests/clients/node/node_modules).
# Idempotent and quiet: each step keeps a stamp of what it was built from (the pins, the
# .proto files, the lock file, the interpreter) and is skipped while that has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=.cache/clients
venv=$cache/venv
gen=$cache/python-gen
node_dir=tests/clients/node
mkdir -p "$cache"

# One hash of the given files' names and contents.
fingerprint() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }
# True when stamp file $1 holds exactly $2.
stamped() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# Python: the virtualenv, rebuilt from scratch when the pins or the interpreter change.
want="$(fingerprint tests/clients/python/requirements.txt) $(python3 --version 2>&1)"
if ! stamped "$venv/.stamp" "$want"; then
  echo "installing the Python client packages into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --no-input -r tests/clients/python/requirements.txt >/dev/null
  echo "$want" >"$venv/.stamp"
fi

# Python: the stubs, generated again when a .proto file or the generator changes. Built in a
# temporary directory and moved into place, so a failed run leaves no half-generated package.
mapfile -t protos < <(cd proto && find session store -name '*.proto' | LC_ALL=C sort)
want="$(cd proto && fingerprint "${protos[@]}") $(cat "$venv/.stamp")"
if ! stamped "$gen/.stamp" "$want"; then
  echo "generating the Python stubs from proto/ into $gen"
  rm -rf "$gen.tmp"
  mkdir -p "$gen.tmp"
  "$venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$gen.tmp" \
    --pyi_out="$gen.tmp" --grpc_python_out="$gen.tmp" "${protos[@]/#/proto/}"
  echo "$want" >"$gen.tmp/.stamp"
  rm -rf "$gen"
  mv "$gen.tmp" "$gen"
else
  touch "$gen/.stamp" # checked now: the Rust side compares its time with the .proto files'
fi

# Node: npm ci (which empties node_modules first) when the lock file or Node changes.
want="$(fingerprint "$node_dir/package-lock.json") $(node --version)"
if ! stamped "$node_dir/node_modules/.clients-stamp" "$want"; then
  echo "installing the Node client packages into $node_dir/node_modules (npm ci)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --silent)
  echo "$want" >"$node_dir/node_modules/.clients-stamp"
fi
