#!/usr/bin/env bash
# The SSH-only data path, through a real OpenSSH sshd:
#  1. --no-quic on loopback: the whole sample tree arrives identical, and --json says "ssh" and why;
#  2. UDP blocked from the start (two network namespaces made here, nftables dropping UDP in the
#     server's): the QUIC handshake cannot finish, the transfer carries on over SSH, trees identical,
#     and the summary names the SSH path and the reason;
#  3. UDP dropped in the middle of a transfer (the nft rule inserted while a large file moves, the link
#     held to 100 Mbit/s by tbf so there is time): the transfer completes over SSH, trees identical, and
#     the files QUIC had already confirmed were not sent again (counted from --json), with --fsync;
#  4. a re-sync whose batches of questions are cut off with QUIC: asked again over SSH.
# Namespaces and rules are removed at exit, also on failure. Cases 2 to 4 need root.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"
source "$QS_FIXTURES/tree.sh"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }
work=$(mktemp -d /tmp/qs-e2e-sshpath.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
me=$(id -un)

# field NAME FILE: a field of the last summary event in a --json output
field() { python3 -c 'import json,sys
ev=[json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
s=[e for e in ev if e.get("event")=="summary"][-1]
print(s[sys.argv[1]])' "$1" "$2"; }

# ---- 1. --no-quic on loopback
sshd_start
make_sample_tree "$work/src" 1000 20
"$QSYNC_BIN" -a --no-quic --json -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" "$me@127.0.0.1:$work/dst1/" \
	>"$work/1.json"
check tree_compare "$work/src" "$work/dst1"
check test "$(field data_path "$work/1.json")" = ssh
check test "$(field data_path_reason "$work/1.json")" = --no-quic
check test "$(field files_failed "$work/1.json")" = 0
check test -z "$(find "$work/dst1" -name '.*.qs.*' -print -quit)"
sshd_stop

if [ "$(id -u)" != 0 ] || ! command -v nft >/dev/null; then
	echo "SKIP: cases 2 and 3 need root and nft"
	exit $fail
fi
source "$here/../../perf/netns.sh"
# every UDP datagram into namespace B is dropped (the table goes with the namespace)
block_udp() {
	qs_in_b nft -f - <<'NFT'
table inet qs_block {
	chain input {
		type filter hook input priority 0; policy accept;
		meta l4proto udp drop
	}
}
NFT
}

# ---- 2. UDP blocked from the start
qs_net_up lan
SSHD_NETNS=$QS_NS_B SSHD_LISTEN_ADDR=$QS_IP_B sshd_start
block_udp
set +e
qs_in_a "$QSYNC_BIN" -a --json --quic-timeout 1.5 -e "$QS_RSH" --remote-path "$QSYNC_BIN" \
	"$work/src/" "$me@$QS_IP_B:$work/dst2/" >"$work/2.json" 2>"$work/2.err"
rc=$?
set -e
cat "$work/2.err"
check test "$rc" = 0
check tree_compare "$work/src" "$work/dst2"
check test "$(field data_path "$work/2.json")" = ssh
check grep -q 'handshake' <<<"$(field data_path_reason "$work/2.json")"
check test "$(field files_done_quic "$work/2.json")" = 0
sshd_stop
qs_net_down

# ---- 3. UDP dropped mid-transfer: 300 small files and a 96 MiB file (six ranges)
mkdir -p "$work/mid/a"
python3 - "$work/mid/a" <<'PY'
import os, sys, random
r = random.Random(7)
for i in range(300):
    with open(os.path.join(sys.argv[1], "f%03d" % i), "wb") as f:
        f.write(r.randbytes(r.randint(100, 20000)))
PY
head -c $((96 * 1024 * 1024)) /dev/urandom >"$work/mid/z.big"
qs_net_up lan
va=$(qs_in_a ip -o link show | awk -F': ' '/qsva/ {print $2}' | cut -d@ -f1)
vb=$(qs_in_b ip -o link show | awk -F': ' '/qsvb/ {print $2}' | cut -d@ -f1)
qs_in_a tc qdisc add dev "$va" root tbf rate 100mbit burst 64kb latency 100ms
qs_in_b tc qdisc add dev "$vb" root tbf rate 100mbit burst 64kb latency 100ms
SSHD_NETNS=$QS_NS_B SSHD_LISTEN_ADDR=$QS_IP_B sshd_start
# (with --fsync: what QUIC had in flight, flushing or not, must not be lost or confirmed twice)
qs_in_a "$QSYNC_BIN" -a --json --progress --fsync --quic-idle 1.5 -e "$QS_RSH" --remote-path "$QSYNC_BIN" \
	"$work/mid/" "$me@$QS_IP_B:$work/dst3/" >"$work/3.json" 2>"$work/3.err" &
client=$!
# once QUIC has moved a good part (40 MB of about 100 at 100 Mbit/s: some 5 s are left), UDP stops
blocked=0
for _ in $(seq 1 300); do
	if grep -q '"bytes_sent":[4-9][0-9]\{7\}' "$work/3.json" 2>/dev/null; then
		block_udp
		blocked=1
		break
	fi
	sleep 0.05
done
set +e
wait "$client"
rc=$?
set -e
tail -n 3 "$work/3.err"
check test "$blocked" = 1
check test "$rc" = 0
check tree_compare "$work/mid" "$work/dst3"
check test "$(field data_path "$work/3.json")" = ssh
check grep -q 'mid-transfer' <<<"$(field data_path_reason "$work/3.json")"
# the switch is an event of its own, and it came after QUIC had confirmed files
check grep -q '"event":"data_path","path":"ssh".*"files_done":[1-9]' "$work/3.json"
# entries: the small files (in bundles), one per 16 MiB range of the big one
quic=$(field files_done_quic "$work/3.json")
ssh=$(field files_done_ssh "$work/3.json")
found=$(field files_discovered "$work/3.json")
echo "entries $found, confirmed over QUIC $quic, over SSH $ssh, sent again $(field files_resent "$work/3.json")"
check test "$quic" -ge 1
check test "$ssh" -ge 1
# nothing QUIC confirmed went again (it would be confirmed twice): SSH carried exactly what QUIC had not
check test $((quic + ssh)) = "$found"
check test "$(field files_done "$work/3.json")" = "$found"
# what the dead lanes held went back to be sent again, and was let go of there
check test "$(field files_in_flight "$work/3.json")" = 0
check test -z "$(find "$work/dst3" -name '.*.qs.*' -print -quit)"
sshd_stop
qs_net_down

# ---- 4. A re-sync whose questions are cut off: UDP into B stops after its first 48 KB (the handshake
#         and some of the batches of questions get through), so batches wait unanswered when QUIC goes
#         silent; they are asked again over SSH, and the unchanged tree stays as it is
mkdir -p "$work/many"
for d in $(seq 1 20); do
	mkdir "$work/many/d$d"
	for f in $(seq 1 150); do echo "$d.$f" >"$work/many/d$d/f$f"; done
done
qs_net_up lan
SSHD_NETNS=$QS_NS_B SSHD_LISTEN_ADDR=$QS_IP_B sshd_start
qs_in_a "$QSYNC_BIN" -a -q -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/many/" "$me@$QS_IP_B:$work/dst4/"
qs_in_b nft -f - <<'NFT'
table inet qs_quota {
	chain input {
		type filter hook input priority 0; policy accept;
		meta l4proto udp quota over 48 kbytes drop
	}
}
NFT
set +e
qs_in_a "$QSYNC_BIN" -a --json --quic-idle 1.5 -e "$QS_RSH" --remote-path "$QSYNC_BIN" \
	"$work/many/" "$me@$QS_IP_B:$work/dst4/" >"$work/4.json" 2>"$work/4.err"
rc=$?
set -e
tail -n 3 "$work/4.err"
check test "$rc" = 0
check test "$(field data_path "$work/4.json")" = ssh
check test "$(field files_unchanged "$work/4.json")" = 3000
check test "$(field files_failed "$work/4.json")" = 0
resent=$(field files_resent "$work/4.json")
echo "asked again over SSH: $resent"
check test "$resent" -ge 1
check test "$(field files_in_flight "$work/4.json")" = 0
check tree_compare "$work/many" "$work/dst4"
sshd_stop
qs_net_down
exit $fail
