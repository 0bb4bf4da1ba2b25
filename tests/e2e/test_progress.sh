#!/usr/bin/env bash
# Progress through a real OpenSSH sshd: what --json's progress events count while a transfer runs.
# files_in_flight is entries (files, directories, links) a connection has taken and not yet finished,
# streams_in_flight the streams open: small files travel many to a stream (bundles), so mid-transfer
# there are more files than streams in flight; a large file travels in ranges on several streams at
# once and is one file in flight. The receiver writes through qs_failfs (FUSE, one thread) so that the
# transfer lasts long enough for progress events (one every 250 ms) to see it under way.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"
source "$QS_FIXTURES/failfs.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }
work=$(mktemp -d /tmp/qs-e2e-progress.XXXXXX)
[ -n "${QS_KEEP:-}" ] || qs_cleanup_add "rm -rf '$work'"
me=$(id -un)

mkdir -p "$work/back" "$work/mnt"
failfs_mount "$work/back" "$work/mnt" "$work/failfs.log"
check mountpoint -q "$work/mnt"

python3 - "$work/small" <<'EOF'
import os, sys
for d in range(16):
    os.makedirs(f"{sys.argv[1]}/d{d:02}")
    for f in range(250):
        with open(f"{sys.argv[1]}/d{d:02}/f{f:03}", "wb") as out:
            out.write(os.urandom(2000 + 37 * f))
EOF
mkdir -p "$work/large"
head -c $((200 << 20)) /dev/urandom >"$work/large/one.bin" # 14 ranges

sshd_start

# the events: "progress" and "summary" lines, as (files_in_flight, streams_in_flight, discovered, done)
events() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if l.startswith("{"):
        e = json.loads(l)
        if e["event"] in ("progress", "summary"):
            print(e["event"], e["files_in_flight"], e["streams_in_flight"], e["files_discovered"], e["files_done"])' "$1"; }

for set in small large; do
	"$QSYNC_BIN" -a --json --workers 2 -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/$set/" \
		"$me@127.0.0.1:$work/mnt/$set/" >"$work/$set.json" 2>"$work/$set.err"
	check diff -r "$work/$set" "$work/mnt/$set"
	events "$work/$set.json" >"$work/$set.ev"
	echo "-- $set: event files_in_flight streams_in_flight discovered done"
	sed 's/^/   /' "$work/$set.ev"
	check test "$(grep -c '^progress' "$work/$set.ev")" -ge 2
	# nothing is left counted at the end, and no count ever goes below zero (a wrapped counter would
	# show as more entries in flight than were ever found)
	n=$(awk '/^summary/ {print $4}' "$work/$set.ev")
	check test "$(grep '^summary' "$work/$set.ev")" = "summary 0 0 $n $n"
	check awk '$2 > $4 { bad = 1 } END { exit bad }' "$work/$set.ev"
done
# many small files to a stream: some moment with more files than streams in flight
check awk '$1 == "progress" && $2 > $3 { seen = 1 } END { exit !seen }' "$work/small.ev"
# one large file on several streams: one file in flight, more than one stream
check awk '$1 == "progress" && $2 == 1 && $3 > 1 { seen = 1 } END { exit !seen }' "$work/large.ev"
for f in "$work"/*.err; do
	check eval "! grep -q 'AddressSanitizer\|ThreadSanitizer\|runtime error' '$f'"
done
exit $fail
