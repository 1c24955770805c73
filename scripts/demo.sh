#!/usr/bin/env bash
# `make run`: start a choreo server on a copy of the bundled fabric fixture (two Starlark
# reconcilers over network devices) and drive it with the CLI, end to end; then serve the same
# project from a local git repository in dynamic mode (apply v2, roll back to v1); then a fabric
# whose reconcilers claim identifiers from the backends of `-r`; then device configs checked
# against YANG with `-s`, including a rejected change. Leaves nothing behind.
set -euo pipefail
bin=$(realpath "${1:-target/release/choreo}")
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

cp -r "$root/fixtures/fabric" "$work/fabric"
sock="$work/choreo.sock"
step() { printf '\n\033[1m$ choreo %s\033[0m\n' "$*"; "$bin" --socket "$sock" "$@"; }
# serve FIXTURE FLAGS...: a copy of fixtures/FIXTURE served in the background on its own socket.
serve() {
    local fixture=$1
    shift
    cp -r "$root/fixtures/$fixture" "$work/$fixture"
    sock="$work/$fixture.sock"
    "$bin" server start "$work/$fixture" "$@" --socket "$sock" 2>"$work/$fixture.log" &
    server=$!
    for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
}

"$bin" server start "$work/fabric" --socket "$sock" 2>"$work/server.log" &
server=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done

step server get
step api-resources
step get devices
step plan
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

printf '\n# dynamic mode: the server manages a clone of a git repository itself\n'
repo="$work/intent"
export HOME="$work/home" GIT_CONFIG_NOSYSTEM=1
unset GIT_CONFIG_GLOBAL
mkdir -p "$HOME"
printf '[user]\n\tname = demo\n\temail = demo@example.com\n[init]\n\tdefaultBranch = main\n' > "$HOME/.gitconfig"
git init -q "$repo"
cp -r "$root/fixtures/fabric" "$repo/fabric"
git -C "$repo" add -A && git -C "$repo" commit -qm "fabric" && git -C "$repo" tag v1
sed -i 's/asn: 64601/asn: 64611/' "$repo/fabric/in/devices.yaml"
git -C "$repo" commit -qam "spine1: new AS" && git -C "$repo" tag v2
git clone -q --bare "$repo" "$work/intent.git"
sock="$work/dynamic.sock"
"$bin" server start --work-dir "$work/state" --socket "$sock" 2>"$work/dynamic.log" &
server=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
step server get
step server apply "file://$work/intent.git" fabric v2
step server get
for _ in $(seq 1 100); do "$bin" --socket "$sock" get deviceconfigs spine1 >/dev/null 2>&1 && break; sleep 0.1; done
step get deviceconfigs
printf '\n# roll back to v1\n'
step server apply "file://$work/intent.git" fabric v1
for _ in $(seq 1 100); do
    "$bin" --socket "$sock" get devices spine1 -o json 2>/dev/null | grep -q '"asn": 64601' && break; sleep 0.1
done
step get devices spine1 -o yaml
step run commit "not in production" || echo "(refused as expected: production serves the pinned ref)"
step server stop

printf '\n# -r: identifier backends. A fabric whose reconcilers claim loopbacks, /31s, VLANs and AS numbers\n'
serve idfabric -r
step run once
step get ipclaims
step get nodeconfigs spine1 -o yaml
step ids usage
step ids free fabric --prefix-length 31 --count 2 -l purpose=p2p
step ids free fabric --backend vlan --count 3
printf '\n# templates: each NodeConfig rendered as an SR Linux-style tree (Go template) and as CLI text (Jinja2)\n'
step get deviceconfigs
step get deviceconfigs leaf1.srl -o yaml
step get deviceconfigs spine1.cli -o yaml
step server stop

printf '\n# -s: device configs merged onto running configs and validated against YANG (IETF interfaces)\n'
serve devices -s
step run once
step get configs
step get configs leaf1 -o yaml
step run diff -c -a
step config blame leaf2 '/interfaces/interface[name=eth0]'
printf '\n# a new port on leaf1 that the device does not have: its snippet lacks the mandatory type\n'
cat >"$work/eth9.yaml" <<'YAML'
apiVersion: network.example.org/v1alpha1
kind: Interface
metadata:
  name: leaf1-eth9
  namespace: default
spec:
  node: leaf1
  name: eth9
  description: not cabled yet
YAML
step apply -f "$work/eth9.yaml"
step run once || echo "(rejected as expected: no snapshot, no final config for leaf1)"
step run list
step delete -f "$work/eth9.yaml"
step run once
step server stop
