#!/usr/bin/env bash
# `make run`: start a choreo server on a copy of the bundled network fixture and drive it with
# the CLI, end to end. Leaves nothing behind.
set -euo pipefail
bin=$(realpath "${1:-target/release/choreo}")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT

cp -r "$root/fixtures/network" "$work/network"
sock="$work/choreo.sock"
step() { printf '\n\033[1m$ choreo %s\033[0m\n' "$*"; "$bin" --socket "$sock" "$@"; }

"$bin" server start "$work/network" --socket "$sock" 2>"$work/server.log" &
server=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done

step server get
step api-resources
step get devices
step get devices leaf1 -o yaml
printf 'apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: leaf2\nspec:\n  role: leaf\n  asn: 65102\n  hostname: leaf2\n' > "$work/leaf2.yaml"
step apply -f "$work/leaf2.yaml"
echo "in/ now holds: $(ls "$work/network/in" | tr '\n' ' ')"
step get devices
printf 'apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: spine2\nspec:\n  role: spine\n  asn: 65200\n' > "$work/bad.yaml"
step apply -f "$work/bad.yaml" || echo "(rejected as expected: nothing was written)"
step delete devices leaf2
step server stop
