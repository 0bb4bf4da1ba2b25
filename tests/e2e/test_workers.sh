#!/usr/bin/env bash
# The multi-connection engine through a real OpenSSH sshd: --workers 1 and --workers 2 each move the
# sample tree identically over that many QUIC connections (the peer grants at most one per core of its
# own); a tree far wider than --streams still completes; more workers than the peer has cores is
# granted down, not refused; --fsync on two lanes. Also run under ThreadSanitizer (label sched), where
# any data race between the lanes fails it.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"
source "$QS_FIXTURES/tree.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }
work=$(mktemp -d /tmp/qs-e2e-workers.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
me=$(id -un)
cores=$(nproc)
field() { python3 -c 'import json,sys
ev=[json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
print([e for e in ev if e.get("event")=="summary"][-1][sys.argv[1]])' "$1" "$2"; }
# a sanitizer report from either side fails the case
clean() { ! grep -q 'ThreadSanitizer\|AddressSanitizer\|runtime error' "$1"; }

sshd_start
make_sample_tree "$work/src" 600 24

for w in 1 2; do
	"$QSYNC_BIN" -a --json --workers "$w" -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" \
		"$me@127.0.0.1:$work/dst$w/" >"$work/w$w.json" 2>"$work/w$w.err"
	check tree_compare "$work/src" "$work/dst$w"
	want=$((w < cores ? w : cores))
	check test "$(field connections "$work/w$w.json")" = "$want"
	check test "$(field files_failed "$work/w$w.json")" = 0
	# every entry a lane took was let go of, on whichever lane finished it (test_progress: mid-run)
	check test "$(field files_in_flight "$work/w$w.json")/$(field streams_in_flight "$work/w$w.json")" = 0/0
	check clean "$work/w$w.err"
done

# congestion control: BBR (v1) unless --cc says otherwise; the summary names the one the data went with
check test "$(field cc "$work/w1.json")" = bbr
for cc in bbr2 cubic; do
	"$QSYNC_BIN" -a --json --cc "$cc" -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" \
		"$me@127.0.0.1:$work/cc-$cc/" >"$work/cc-$cc.json" 2>"$work/cc-$cc.err"
	check tree_compare "$work/src" "$work/cc-$cc"
	check test "$(field cc "$work/cc-$cc.json")" = "$cc"
	check clean "$work/cc-$cc.err"
done

# --fsync on two lanes at once (under ThreadSanitizer too): flushes on each lane's ring, bundles' answer
# queues, the receiver's counters and its lock from both lanes
"$QSYNC_BIN" -a --json --fsync --workers 2 -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" \
	"$me@127.0.0.1:$work/fsync/" >"$work/fsync.json" 2>"$work/fsync.err"
check tree_compare "$work/src" "$work/fsync"
check test "$(field files_failed "$work/fsync.json")" = 0
check clean "$work/fsync.err"

# work stealing: every listing starts on worker 0's deque; with two workers the second gets its work by
# stealing, and both connections carry streams (none sits idle while the other has a backlog)
"$QSYNC_BIN" -a --json --workers 2 -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" \
	"$me@127.0.0.1:$work/steal/" >"$work/steal.json" 2>"$work/steal.err"
check tree_compare "$work/src" "$work/steal"
if [ "$cores" -ge 2 ]; then
	check test "$(field steals "$work/steal.json")" -ge 1
	check python3 -c 'import json,sys
s=[json.loads(l) for l in open(sys.argv[1]) if "summary" in l][-1]
lanes=s["lane_streams"]
# (small files go many to a stream, in bundles: fewer streams than entries)
assert len(lanes) == 2 and min(lanes) > 0 and sum(lanes) < s["streams_total"], lanes' "$work/steal.json"
fi

# far more entries than streams: each lane waits for its streams to close before it opens more
"$QSYNC_BIN" -a --json --workers 2 --streams 4 -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" \
	"$me@127.0.0.1:$work/narrow/" >"$work/narrow.json" 2>"$work/narrow.err"
check tree_compare "$work/src" "$work/narrow"
check test "$(field streams_max "$work/narrow.json")" -le 4
check test "$(field files_in_flight "$work/narrow.json")" = 0
check clean "$work/narrow.err"

# more workers than the peer has cores: it grants what it can drive
"$QSYNC_BIN" -a --json --workers $((cores + 3)) -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" \
	"$me@127.0.0.1:$work/many/" >"$work/many.json" 2>"$work/many.err"
check tree_compare "$work/src" "$work/many"
check test "$(field connections "$work/many.json")" = "$cores"
check clean "$work/many.err"
# a file of several ranges (70 MiB: 5 ranges of 14 MiB) with others around it, over two connections,
# over the SSH path (all ranges on one lane), and as a single file under a new name
mkdir -p "$work/big/sub"
head -c $((70 * 1024 * 1024)) /dev/urandom >"$work/big/sub/r.bin"
printf 'small\n' >"$work/big/small"
"$QSYNC_BIN" -a --json --workers 2 -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/big/" \
	"$me@127.0.0.1:$work/big2/" >"$work/big2.json" 2>"$work/big2.err"
check tree_compare "$work/big" "$work/big2"
check test "$(field streams_total "$work/big2.json")" = 8 # 2 dirs, 1 small file, 5 ranges
check test "$(field files_done "$work/big2.json")" = 4
check test "$(field files_in_flight "$work/big2.json")" = 0
check clean "$work/big2.err"
"$QSYNC_BIN" -a --json --no-quic -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/big/" \
	"$me@127.0.0.1:$work/bigssh/" >"$work/bigssh.json" 2>"$work/bigssh.err"
check tree_compare "$work/big" "$work/bigssh"
check clean "$work/bigssh.err"
"$QSYNC_BIN" -a -q --workers 2 -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/big/sub/r.bin" \
	"$me@127.0.0.1:$work/renamed.bin"
check cmp "$work/big/sub/r.bin" "$work/renamed.bin"
check test "$(stat -c %y "$work/big/sub/r.bin")" = "$(stat -c %y "$work/renamed.bin")"
# one large file alone is shared out too: a lane takes on about one connection window of content at
# a time (8 MiB with --memory 32M over two connections: one 14 MiB range), so the other ranges wait in
# its deque and the second lane steals them instead of both connections' work queueing on the first
if [ "$cores" -ge 2 ]; then
	"$QSYNC_BIN" -a --json --workers 2 --memory 32M -e "$QS_RSH" --remote-path "$QSYNC_BIN" \
		"$work/big/sub/" "$me@127.0.0.1:$work/alone/" >"$work/alone.json" 2>"$work/alone.err"
	check cmp "$work/big/sub/r.bin" "$work/alone/r.bin"
	check python3 -c 'import json,sys
s=[json.loads(l) for l in open(sys.argv[1]) if "summary" in l][-1]
lanes=s["lane_streams"]
assert s["streams_total"] == 6 and len(lanes) == 2 and min(lanes) >= 2, lanes' "$work/alone.json"
	check clean "$work/alone.err"
fi
# the same without io_uring (the sync write and read paths), in local mode so the peer gets the setting
QSYNC_NO_URING=1 "$QSYNC_BIN" -a -q --workers 2 "$work/big/" "$work/big-sync/" 2>"$work/bigsync.err"
check tree_compare "$work/big" "$work/big-sync"
"$QSYNC_BIN" -a -q --workers 2 "$work/big/" "$work/big-ring/" 2>"$work/bigring.err"
check tree_compare "$work/big" "$work/big-ring"
check clean "$work/bigsync.err"
check clean "$work/bigring.err"
check test -z "$(find "$work" -name '.*.qs.*' -print -quit)"
exit $fail
