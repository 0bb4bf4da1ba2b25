#!/usr/bin/env bash
# One benchmark link, held up for perf/bench.py: loopback, or two network namespaces (lan: veth; wan:
# perf/netns.sh with qs_linkem), a private OpenSSH sshd on the "remote" side (namespace B) and an
# iperf3 server beside it. Both are started into the server-side cgroups so that every SSH session, the
# remote tool it runs and the crypto are accounted to the remote side.
#
#   perf/link.sh OUT_JSON loopback|lan|wan [DELAY_MS LOSS_PCT RATE_MBIT JITTER_MS]
#
# Environment: QSYNC_BIN (its directory goes first on the remote PATH), PERF_SERVER_PROCS (cgroup.procs
# files for sshd and iperf3), QS_LINKEM (for wan), PERF_LINKEM_STATS_OUT (copy of the emulator's
# counters at the end).
# When the link is up it writes OUT_JSON (addresses, port, key, known_hosts, PIDs) and waits until its
# stdin closes (or INT/TERM); then everything it made is removed: sshd, iperf3, emulator, namespaces.
set -uo pipefail

out=$1
kind=$2
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/fixtures/sshd.sh
. "$here/../tests/fixtures/sshd.sh"

die() {
	echo "perf/link.sh: $*" >&2
	exit 1
}

IPERF_PID=
iperf_stop() {
	if [ -n "$IPERF_PID" ]; then
		kill "$IPERF_PID" 2>/dev/null || true
		wait "$IPERF_PID" 2>/dev/null || true
		IPERF_PID=
	fi
}

case $kind in
loopback)
	addr=127.0.0.1
	ns_a= ns_b=
	;;
lan | wan)
	[ -r "$here/netns.sh" ] || die "lan/wan: perf/netns.sh missing"
	# shellcheck source=netns.sh
	. "$here/netns.sh"
	qs_net_up "$kind" "$@" || die "qs_net_up $kind $* failed"
	addr=$QS_IP_B
	ns_a=$QS_NS_A ns_b=$QS_NS_B
	export SSHD_NETNS=$ns_b
	;;
*) die "unknown link kind '$kind'" ;;
esac

export SSHD_LISTEN_ADDR=$addr
export SSHD_CGROUP_PROCS=${PERF_SERVER_PROCS:-}
# scp (OpenSSH 9) speaks SFTP: give sshd the subsystem a stock Debian sshd has
for f in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/libexec/sftp-server; do
	[ -x "$f" ] && export SSHD_SFTP_SERVER=$f && break
done
sshd_start || die "sshd_start failed"

# iperf3 server on the remote side, in the server cgroups too
iperf_port=$(
	python3 - "$addr" <<'EOF'
import random, socket, sys
for _ in range(200):
    p = random.randint(20000, 60000)
    s = socket.socket()
    try:
        s.bind((sys.argv[1], p)) if sys.argv[1] == "127.0.0.1" else None
        print(p)
        break
    except OSError:
        pass
EOF
)
qs_cleanup_add iperf_stop
(
	for f in ${PERF_SERVER_PROCS:-}; do echo "$BASHPID" >"$f" || exit 1; done
	if [ -n "$ns_b" ]; then
		exec ip netns exec "$ns_b" iperf3 -s -B "$addr" -p "$iperf_port"
	fi
	exec iperf3 -s -B "$addr" -p "$iperf_port"
) >"$SSHD_DIR/iperf3.log" 2>&1 &
IPERF_PID=$!
for ((i = 0; i < 100; i++)); do
	if [ -n "$ns_b" ]; then
		ip netns exec "$ns_b" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$addr" "$iperf_port" 2>/dev/null && break
	else
		(exec 3<>"/dev/tcp/$addr/$iperf_port") 2>/dev/null && break
	fi
	kill -0 "$IPERF_PID" 2>/dev/null || die "iperf3 server did not start: $(cat "$SSHD_DIR/iperf3.log")"
	sleep 0.05
done

python3 - "$out" <<EOF
import json, os, sys
env = {
    "kind": "$kind", "host": "$addr", "port": int("$SSHD_PORT"), "user": "$(id -un)",
    "key": "$SSHD_USER_KEY", "known_hosts": "$SSHD_KNOWN_HOSTS", "rsh": os.environ["QS_RSH"],
    "ns_a": "$ns_a", "ns_b": "$ns_b", "sshd_pid": int("$SSHD_PID"), "iperf_port": int("$iperf_port"),
    "iperf_pid": int("$IPERF_PID"), "linkem_pid": "${QS_LINKEM_PID:-}", "sshd_dir": "$SSHD_DIR",
}
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump(env, f)
os.rename(tmp, sys.argv[1])
EOF

# hold the link until bench.py closes our stdin
read -r _ || true
if [ "$kind" = wan ]; then
	qs_net_down
	if [ -n "${PERF_LINKEM_STATS_OUT:-}" ] && [ -r "${QS_LINKEM_STATS:-}" ]; then
		cp "$QS_LINKEM_STATS" "$PERF_LINKEM_STATS_OUT" 2>/dev/null || true
	fi
fi
exit 0
