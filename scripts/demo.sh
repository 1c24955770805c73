#!/usr/bin/env bash
# `make run`: start a choreo server on a copy of the bundled fabric fixture (two Starlark
# reconcilers over network devices) and drive it with the CLI, end to end. Leaves nothing behind.
set -euo pipefail
bin=$(realpath "${1:-target/release/choreo}")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

cp -r "$root/fixtures/fabric" "$work/fabric"
sock="$work/choreo.sock"
step() { printf '\n\033[1m$ choreo %s\033[0m\n' "$*"; "$bin" --socket "$sock" "$@"; }

"$bin" server start "$work/fabric" --socket "$sock" 2>"$work/server.log" &
server=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done

step server get
step api-resources
step get devices
step run once
step get devices leaf1 -o yaml
step get deviceconfigs
step get deviceconfigs leaf1 -o yaml
step run deps

printf '\n# edit in/devices.yaml: spine1 gets a new AS number\n'
sed -i 's/asn: 64601/asn: 64602/' "$work/fabric/in/devices.yaml"
step run once -o resource
step run diff -a

printf 'apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: leaf2\nspec:\n  asn: 0\n' > "$work/bad.yaml"
step apply -f "$work/bad.yaml" || echo "(rejected as expected: nothing was written)"
step run list
step server stop
