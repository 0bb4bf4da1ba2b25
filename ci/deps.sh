#!/usr/bin/env bash
# Installs every Debian 12 package qsync needs to build, test, demo and benchmark.
# Idempotent: packages already present are skipped, so re-running costs a dpkg query.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libssh-dev libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev
  liburing-dev libjsmn-dev libhwloc-dev libxxhash-dev libfuse3-dev fuse3
  openssh-server openssh-client rsync xxhash
  python3 iproute2 iputils-ping nftables
  hyperfine iperf3 gnuplot-nox time linux-perf
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "ci/deps.sh: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
