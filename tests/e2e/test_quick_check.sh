#!/usr/bin/env bash
# The quick check (rsync's default): a file the destination already has with the same size and mtime is
# not sent again; -I sends everything. Over a real sshd to `qsync --server`, over QUIC and over SSH;
# then hostile receivers that answer an ASK entry with something other than a verdict.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"
source "$QS_FIXTURES/tree.sh"

fail=0
not_same() { ! cmp -s "$1" "$2"; }
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }

sshd_start
work=$(mktemp -d /tmp/qs-e2e-quick.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
me=$(id -un)
make_sample_tree "$work/src" 300 40
head -c 50000000 /dev/urandom >"$work/src/large.bin" # sent in ranges, each asking for itself
nfiles=$(find "$work/src" -type f | wc -l)
# symlinks ask too (in batches, with their target: the receiver compares it, and the mtime with -t)
nlinks=$(find "$work/src" -type l | wc -l)
nunch=$((nfiles + nlinks))

# KEY of the summary line of a --json run
sum() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d.get("event") == "summary": print(d[sys.argv[2]])' "$1" "$2"; }
push() { # OUT [OPTIONS...]: src/ -> dst/ with --json into OUT
	local out=$1
	shift
	"$QSYNC_BIN" -a --json -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$@" "$work/src/" \
		"$me@127.0.0.1:$work/dst/" >"$out"
}

# 1. A fresh copy sends everything; the same again sends nothing and leaves the copy identical.
push "$work/1.json"
check tree_compare "$work/src" "$work/dst"
check test "$(sum "$work/1.json" files_unchanged)" = 0
push "$work/2.json"
check test "$(sum "$work/2.json" files_unchanged)" = "$nunch"
check test "$(sum "$work/2.json" bytes_done)" = 0
check test "$(sum "$work/2.json" files_failed)" = 0
check tree_compare "$work/src" "$work/dst"
# An unchanged large file costs one answer: once one of its ranges is answered HAVE, the sender
# completes the others without opening their streams. (--memory 32M and one worker: the lane takes one
# 16 MiB range at a time, so the first answer comes back before the other two are opened.)
push "$work/2b.json" --workers 1 --memory 32M
check test "$(sum "$work/2b.json" files_unchanged)" = "$nunch"
check test "$(sum "$work/2b.json" files_failed)" = 0
# Small files and symlinks ask in batches (up to 256 to a stream); directories go one to a stream as
# always, and the large file's first range settles it: streams = dirs + 1 + batches.
plain=$(($(find "$work/src" -type d | wc -l) + 1))
nsmall=$((nfiles - 1 + nlinks))
streams_ok() { # JSON: the batches are at least ceil(nsmall/256) and hold 16 files each or more
	python3 -c 'import json,sys
s=[json.loads(l) for l in open(sys.argv[1]) if "summary" in l][-1]
plain, nsmall = int(sys.argv[2]), int(sys.argv[3])
batches = sum(s["lane_streams"]) - plain
print("streams", s["lane_streams"], "plain", plain, "batches", batches, "small files", nsmall)
assert -(-nsmall // 256) <= batches <= nsmall // 16, batches' "$1" "$plain" "$nsmall"
}
check streams_ok "$work/2b.json"
check streams_ok "$work/2.json"
check tree_compare "$work/src" "$work/dst"

# A full batch that meets the peer's stream limit (its credit not back yet) goes back to the deque and
# waits for a stream to close (it was taken and put back in a loop before, and the run never ended).
mkdir -p "$work/wsrc/d"
for i in $(seq 600); do echo "$i" >"$work/wsrc/d/f$i"; done
wpush() { # OUT [OPTIONS...]
	local out=$1
	shift
	timeout 120 "$QSYNC_BIN" -a --json -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$@" "$work/wsrc/" \
		"$me@127.0.0.1:$work/wdst/" >"$out"
}
wpush "$work/w1.json"
for s in 1 2 3; do
	check wpush "$work/w2-$s.json" --workers 1 --streams "$s"
	check test "$(sum "$work/w2-$s.json" files_unchanged)" = 600
done

# 2. One file changed (new content and mtime): only it travels.
printf 'a change\n' >"$work/src/a/run.sh"
touch -d "2025-06-06 06:06:06.123456789" "$work/src/a/run.sh"
push "$work/3.json"
check test "$(sum "$work/3.json" files_unchanged)" = $((nunch - 1))
check test "$(sum "$work/3.json" bytes_done)" = "$(stat -c %s "$work/src/a/run.sh")"
check tree_compare "$work/src" "$work/dst"

# 3. Same size and mtime but other bytes: the quick check cannot see it (as with rsync); -I can.
f=$(find "$work/dst" -type f -size +1k -print -quit)
rel=${f#"$work/dst/"}
# (byte 10 flipped, not set: a random file may hold the byte we would write)
python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(10); b = f.read(1); f.seek(10); f.write(bytes([b[0] ^ 0xff]))' "$f"
touch -r "$work/src/$rel" "$f"
push "$work/4.json"
check test "$(sum "$work/4.json" files_unchanged)" = "$nunch"
check not_same "$work/src/$rel" "$f"
push "$work/5.json" -I
check test "$(sum "$work/5.json" files_unchanged)" = 0
check cmp "$work/src/$rel" "$f"

# 4. With -p an unchanged file still gets its permissions; without -p it keeps its own (rsync's rule).
chmod 0604 "$work/src/a/run.sh"
push "$work/6.json"
check test "$(stat -c %a "$work/dst/a/run.sh")" = 604
check test "$(sum "$work/6.json" files_unchanged)" = "$nunch"
chmod 0640 "$work/dst/a/run.sh"
"$QSYNC_BIN" -rt -q -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" "$me@127.0.0.1:$work/dst/"
check test "$(stat -c %a "$work/dst/a/run.sh")" = 640
chmod 0604 "$work/dst/a/run.sh"

# 5. A symlink (to a file outside) with the file's size and mtime is not the file: it is replaced, and
#    what it pointed at is untouched.
printf 'outside\n' >"$work/outside"
target=$(find "$work/src" -type f -size -2k -size +0 -print -quit)
trel=${target#"$work/src/"}
rm "$work/dst/$trel"
ln -s "$work/outside" "$work/dst/$trel"
touch -h -r "$target" "$work/dst/$trel"
push "$work/7.json"
check test ! -L "$work/dst/$trel"
check cmp "$target" "$work/dst/$trel"
check test "$(cat "$work/outside")" = outside
check tree_compare "$work/src" "$work/dst"

# 5b. Symlinks: one whose target changed is replaced; one with the same target but another mtime is
#     sent again with -t (its mtime then matches) and left alone without it (rsync compares the
#     target); a regular file where the symlink belongs is replaced by the symlink.
l=$work/src/a/link-to-space
ln -sfn "../changed target" "$l"
push "$work/7b.json"
check test "$(readlink "$work/dst/a/link-to-space")" = "../changed target"
check test "$(sum "$work/7b.json" files_unchanged)" = $((nunch - 1))
check test "$(sum "$work/7b.json" bytes_done)" = "$(readlink "$l" | tr -d '\n' | wc -c)"
touch -h -d "2024-04-04 04:04:04" "$l"
"$QSYNC_BIN" -rl -q -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" "$me@127.0.0.1:$work/dst/"
check test "$(stat -c %Y "$work/dst/a/link-to-space")" != "$(stat -c %Y "$l")"
push "$work/7c.json"
check test "$(stat -c %Y "$work/dst/a/link-to-space")" = "$(stat -c %Y "$l")"
check test "$(sum "$work/7c.json" files_unchanged)" = $((nunch - 1))
rm "$work/dst/a/link-to-space"
printf 'not a link\n' >"$work/dst/a/link-to-space"
push "$work/7d.json"
check test -L "$work/dst/a/link-to-space"
check test "$(readlink "$work/dst/a/link-to-space")" = "../changed target"
check test "$(sum "$work/7d.json" files_unchanged)" = $((nunch - 1))
check tree_compare "$work/src" "$work/dst"

# 6. Over the SSH connection (--no-quic): the same verdicts.
push "$work/8.json" --no-quic
check test "$(sum "$work/8.json" files_unchanged)" = "$nunch"
check test "$(sum "$work/8.json" data_path)" = ssh
touch -d "2025-07-07 07:07:07" "$work/src/large.bin"
push "$work/9.json" --no-quic
check test "$(sum "$work/9.json" files_unchanged)" = $((nunch - 1))
check test "$(sum "$work/9.json" bytes_done)" = 50000000
check tree_compare "$work/src" "$work/dst"

# 7. Into a destination that did not exist, nothing asks (the peer says so in sync_ready).
push "$work/10.json" --no-quic
"$QSYNC_BIN" -a --json -e "$QS_RSH" --remote-path "$QSYNC_BIN" "$work/src/" "$me@127.0.0.1:$work/fresh/" \
	>"$work/11.json"
check test "$(sum "$work/11.json" files_unchanged)" = 0
check tree_compare "$work/src" "$work/fresh"

# 8. Hostile receivers: a verdict that is neither SEND nor HAVE, none at all, or SEND where the ack goes;
#    and for a batch of questions, no verdict, more answers than questions, or an unreadable ack.
#    Each is a clear error and a non-zero exit; the source is never touched.
before=$(tree_listing "$work/src" | md5sum)
here=$(cd "$(dirname "$0")" && pwd)
for mode in badverdict noverdict sendtwice batch-badverdict batch-extra batch-badack bundle-early \
	bundle-badack; do
	printf '#!/bin/sh\nexec python3 %q %s %q\n' "$here/fake_receiver.py" "$mode" \
		"$work/fake-$mode.log" >"$work/fake-$mode"
	chmod +x "$work/fake-$mode"
	set +e
	timeout 60 "$QSYNC_BIN" -a -q --timeout 5 -e "$QS_RSH" --remote-path "$work/fake-$mode" \
		"$work/src/a/" "$me@127.0.0.1:$work/dst-$mode/" >"$work/$mode.out" 2>"$work/$mode.err"
	rc=$?
	set -e
	echo "-- $mode: exit $rc: $(tr '\n' ' ' <"$work/$mode.err" | cut -c1-300)"
	check test "$rc" -ne 0
	check test "$rc" -ne 124
	check grep -q 'quick_check' "$work/fake-$mode.log"
	case $mode in bundle-*) check grep -q 'frame kind=[12] sid=[0-9]* len=' "$work/fake-$mode.log" ;; esac
done
check grep -qi 'verdict' "$work/badverdict.err"
check grep -qi 'verdict\|ack' "$work/noverdict.err"
check grep -qi 'ack\|status' "$work/sendtwice.err"
check grep -q 'malformed verdict' "$work/batch-badverdict.err"
check grep -q 'more answers than questions' "$work/batch-extra.err"
check grep -q 'malformed acknowledgement' "$work/batch-badack.err"
check grep -q 'more acknowledgements than entries\|for an entry not sent yet' "$work/bundle-early.err"
check grep -q 'malformed acknowledgement' "$work/bundle-badack.err"
check test "$(tree_listing "$work/src" | md5sum)" = "$before"
exit $fail
