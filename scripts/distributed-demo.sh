#!/usr/bin/env bash
# A distributed run on one machine (as root): epoll-server in one network
# namespace, three SSH agents (OpenSSH's sshd, keys made in a temporary
# directory, the system's ssh set-up untouched) in three others, each with
# a delaying relay (RTT 1 ms) in front of the server; then
# `iomodels run --agents` with all three at RATE req/s in all, and the same
# total rate from one agent, to compare the merged percentiles.
#
#   scripts/distributed-demo.sh [RATE] [DURATION]     (default 3000, 5s)
#   MAXLAG=50ms: the agents' saturation limit (loadgen --max-lag; 10ms)
#
# Needs a release build (cargo build --release --workspace) and
# openssh-server (scripts/install-peers.sh). Everything it makes is removed
# at the end, also on Ctrl-C.
set -euo pipefail
rate=${1:-3000}
dur=${2:-5s}
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release
tmp=$(mktemp -d)
p=$$
ns=(iomd$p-s iomd$p-a0 iomd$p-a1 iomd$p-a2)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
for n in "${ns[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ssh-keygen -q -t ed25519 -N '' -f "$tmp/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/id"
cp "$tmp/id.pub" "$tmp/authorized_keys"
cat >"$tmp/sshd_config" <<EOF
HostKey $tmp/host_key
AuthorizedKeysFile $tmp/authorized_keys
PidFile none
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel ERROR
EOF
mkdir -p /run/sshd
ip netns exec "${ns[0]}" "$bin/epoll-server" --listen 0.0.0.0:8080 --workers 1 >/dev/null &
pids+=($!)
agents=()
for k in 0 1 2; do
  a=${ns[k + 1]}
  ip link add "d$p-r$k" type veth peer name "d$p-a$k" netns "$a"
  ip addr add "10.216.$k.1/24" dev "d$p-r$k"; ip link set "d$p-r$k" up
  ip -n "$a" addr add "10.216.$k.2/24" dev "d$p-a$k"; ip -n "$a" link set "d$p-a$k" up
  ip link add "d$p-b$k" netns "$a" type veth peer name "d$p-s$k" netns "${ns[0]}"
  ip -n "$a" addr add "10.217.$k.2/24" dev "d$p-b$k"; ip -n "$a" link set "d$p-b$k" up
  ip -n "${ns[0]}" addr add "10.217.$k.1/24" dev "d$p-s$k"; ip -n "${ns[0]}" link set "d$p-s$k" up
  ip netns exec "$a" "$bin/iomodels" relay --listen 127.0.0.1:9000 --to "10.217.$k.1:8080" --delay 500us >/dev/null &
  pids+=($!)
  ip netns exec "$a" /usr/sbin/sshd -D -e -f "$tmp/sshd_config" -o "ListenAddress=10.216.$k.2:22" 2>/dev/null &
  pids+=($!)
  agents+=("ssh://10.216.$k.2")
done
sleep 1
run() {
  "$bin/iomodels" run --agents "$1" --target http://127.0.0.1:9000/hello --rate "$rate" -d "$dur" \
    --warmup 500ms --agent-connections 60 --agent-max-lag "${MAXLAG:-10ms}" --agent-loadgen "$bin/loadgen" --ssh-config none \
    --ssh-option "IdentityFile=$tmp/id" --ssh-option UserKnownHostsFile=/dev/null \
    --ssh-option StrictHostKeyChecking=no --ssh-option LogLevel=ERROR --out "${OUT:-results/distributed}"
}
echo "== three agents, $rate req/s in all"
run "$(IFS=,; echo "${agents[*]}")" || true
echo "== one agent, $rate req/s"
run "${agents[0]}" || true
