#!/usr/bin/env bash
# PostgreSQL for the store-svc tests on the PostgreSQL backend (tests/src/postgres.rs starts a
# throwaway server from these binaries). Installs Debian's `postgresql` package when initdb or
# pg_ctl cannot be found; quiet and idempotent. Prints the directory holding the binaries.
set -euo pipefail

find_bin_dir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  # Debian keeps the server binaries off PATH, one directory per major version: newest wins.
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}

if ! bin_dir=$(find_bin_dir); then
  echo "installing PostgreSQL (apt-get install postgresql)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # The package starts a cluster of its own on port 5432; the tests never use it.
  bin_dir=$(find_bin_dir) || { echo "initdb/pg_ctl still missing after installing postgresql" >&2; exit 1; }
fi
echo "$bin_dir"
