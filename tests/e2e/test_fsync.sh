#!/usr/bin/env bash
# --fsync through a real OpenSSH sshd: the receiving qsync flushes every file it puts in place, on the
# QUIC path and on the SSH-only path, for files sent alone, in bundles and in ranges. What is counted is
# the kernel's own ext4 fsync tracepoint in the receiving process (perf stat follows its threads and the
# io_uring workers it starts), so the count holds whichever way the flush is issued. Without --fsync the
# receiver flushes nothing; a peer that does not offer "fsync" is refused, not trusted to do it.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"
source "$QS_FIXTURES/failfs.sh"
source "$QS_FIXTURES/tree.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }
work=$(mktemp -d /tmp/qs-e2e-fsync.XXXXXX)
[ -n "${QS_KEEP:-}" ] || qs_cleanup_add "rm -rf '$work'"
me=$(id -un)
field() { python3 -c 'import json,sys
ev=[json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
print([e for e in ev if e.get("event")=="summary"][-1][sys.argv[1]])' "$1" "$2"; }

# The fsyncs must land on ext4 for the tracepoint to count them.
check test "$(stat -f -c %T "$work")" = ext2/ext3
perf stat -x, -e ext4:ext4_sync_file_enter -o "$work/probe.perf" -- true
check grep -q 'ext4:ext4_sync_file_enter' "$work/probe.perf"

# The remote qsync, counted: the wrapper is what --remote-path runs (sshd gives it no environment of
# ours, so the count goes to one fixed file, moved aside after each run).
printf '#!/bin/sh\nexec perf stat -x, -e ext4:ext4_sync_file_enter,syscalls:sys_enter_fsync -o %q -- %q "$@"\n' \
	"$work/remote.perf" "$QSYNC_BIN" >"$work/counted"
chmod +x "$work/counted"
fsyncs() { awk -F, '/ext4_sync_file_enter/ {print $1}' "$1"; }
calls() { awk -F, '/sys_enter_fsync/ {print $1}' "$1"; } # fsync(2) itself, not the ring's

sshd_start
make_sample_tree "$work/src" 300 40 # small files in bundles, edge sizes alone, 40 MiB in ranges
files=$(find "$work/src" -type f | wc -l)
echo "regular files: $files"

run() { # NAME ARGS...: push src to dst-NAME with the counted receiver
	local name=$1
	shift
	"$QSYNC_BIN" -a --json "$@" -e "$QS_RSH" --remote-path "$work/counted" \
		"$work/src/" "$me@127.0.0.1:$work/dst-$name/" >"$work/$name.json" 2>"$work/$name.err"
}
for path in quic ssh; do
	extra=()
	[ "$path" = ssh ] && extra=(--no-quic)
	rm -f "$work/remote.perf"
	check run "plain-$path" "${extra[@]}"
	mv "$work/remote.perf" "$work/plain-$path.perf"
	rm -f "$work/remote.perf"
	check run "fsync-$path" --fsync "${extra[@]}"
	mv "$work/remote.perf" "$work/fsync-$path.perf"
	check tree_compare "$work/src" "$work/dst-plain-$path"
	check tree_compare "$work/src" "$work/dst-fsync-$path"
	check test "$(field files_failed "$work/fsync-$path.json")" = 0
	echo "-- $path: $(fsyncs "$work/plain-$path.perf") fsyncs without --fsync," \
		"$(fsyncs "$work/fsync-$path.perf") with it, for $files files"
	check test "$(fsyncs "$work/plain-$path.perf")" -eq 0
	check test "$(fsyncs "$work/fsync-$path.perf")" -ge "$files"
	# one flush of a directory answers for the files put in it before it began, so there are fewer
	# directory flushes than files (one each would make it exactly twice the files)
	check test "$(fsyncs "$work/fsync-$path.perf")" -lt "$((2 * files))"
	# The receiver flushes on io_uring (io-wq workers, not fsync(2)): files on their lanes' rings,
	# the large file (the last of its ranges) too, and the directories at the end on a ring of the
	# control thread's, over QUIC and over SSH alike
	echo "-- $path: $(calls "$work/fsync-$path.perf") of them by fsync(2)"
	check test "$(calls "$work/fsync-$path.perf")" = 0
done

# Answers stay in entry order when entries flush at once: three small files (each in a bundle with
# others) meet a directory under their name, which is found only when they are put in place, after
# their flush. Exactly those three are reported failed (the sender matches a bundle's answers to its
# entries in order, so an answer out of turn would name another file), and everything else arrives.
for f in d05/f00005.bin d06/f00046.bin d07/f00287.bin; do
	mkdir -p "$work/dst-order/many/$f/keep"
done
set +e
"$QSYNC_BIN" -a --json --fsync -e "$QS_RSH" --remote-path "$work/counted" "$work/src/" \
	"$me@127.0.0.1:$work/dst-order/" >"$work/order.json" 2>"$work/order.err"
rc=$?
set -e
mv "$work/remote.perf" "$work/order.perf"
echo "-- in the way: exit $rc; $(grep -c 'is a directory' "$work/order.err") 'is a directory' lines;" \
	"$(calls "$work/order.perf") of $(fsyncs "$work/order.perf") flushes by fsync(2)"
check test "$rc" = 23
check test "$(field files_failed "$work/order.json")" = 3
for f in d05/f00005.bin d06/f00046.bin d07/f00287.bin; do
	check grep -q "many/$f.*is a directory" "$work/order.err"
	check test -d "$work/dst-order/many/$f/keep"
done
check test "$(grep -c 'is a directory' "$work/order.err")" = 3
# each failure the sender reports is the entry the receiver's answer was about (the path is the
# sender's entry, the message the receiver's own words about its file)
matched() { python3 -c 'import json,sys
ev=[json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bad=[e for e in ev if e.get("event")=="file_error" and "\"%s\"" % e["path"] not in e["message"]]
print("\n".join("mismatch: %s <- %s" % (e["path"], e["message"]) for e in bad))
sys.exit(1 if bad or not any(e.get("event")=="file_error" for e in ev) else 0)' "$1"; }
check matched "$work/order.json"
check test "$(calls "$work/order.perf")" = 0
rm -r "$work/dst-order/many/d05/f00005.bin" "$work/dst-order/many/d06/f00046.bin" \
	"$work/dst-order/many/d07/f00287.bin"
check tree_compare "$work/src/edges" "$work/dst-order/edges"
check test "$(find "$work/dst-order/many" -type f | wc -l)" = "$(($(find "$work/src/many" -type f | wc -l) - 3))"

# push NAME PATH SRC DEST [OPTION...]: qsync -a --json --fsync over PATH (quic, or ssh alone) from SRC
# into DEST through the sshd, the receiver being $remote; NAME.json and NAME.err, the exit status in rc
remote=$QSYNC_BIN
push() {
	local name=$1 path=$2 src=$3 dst=$4 extra=()
	shift 4
	[ "$path" = ssh ] && extra=(--no-quic)
	set +e
	"$QSYNC_BIN" -a --json --fsync "${extra[@]}" "$@" -e "$QS_RSH" --remote-path "$remote" "$src" \
		"$me@127.0.0.1:$dst" >"$work/$name.json" 2>"$work/$name.err"
	rc=$?
	set -e
}

# A flush that fails loses nothing. qs_failfs (FUSE over a directory of ours) fails fsync with EIO for
# files with "failsync" in their names: small files (in bundles), a 2 MiB one (alone, written on the
# ring) and a 40 MiB one (in ranges). Each is reported failed and never appears under its name; one
# that was there already keeps its old content; everything else arrives; no temporary is left. It
# fails the flush of a directory with "faildir" in its name: every file put in it is reported failed
# (one directory flush answers for many files, so a failed one must reach each of them). Over QUIC
# and over SSH (each lane flushes on a ring of its own).
mkdir -p "$work/ff-back" "$work/ff" "$work/ffsrc/sub" "$work/ffsrc/x-faildir"
failfs_mount "$work/ff-back" "$work/ff" "$work/failfs.log"
check mountpoint -q "$work/ff"
for i in $(seq 1 40); do head -c $((i * 100)) /dev/urandom >"$work/ffsrc/sub/good$i"; done
for i in 1 2 3; do head -c 5000 /dev/urandom >"$work/ffsrc/sub/small-failsync$i"; done
head -c $((2 << 20)) /dev/urandom >"$work/ffsrc/mid-failsync.bin"
head -c $((40 << 20)) /dev/urandom >"$work/ffsrc/big-failsync.bin"
head -c 3000 /dev/urandom >"$work/ffsrc/old-failsync.txt"
for i in $(seq 1 30); do head -c $((i * 150)) /dev/urandom >"$work/ffsrc/x-faildir/f$i"; done
head -c $((2 << 20)) /dev/urandom >"$work/ffsrc/x-faildir/mid.bin"
ndirfail=31
nfail=$((6 + ndirfail + 1)) # (and x-faildir itself, flushed at the end)
for path in quic ssh; do
	mkdir -p "$work/ff/$path"
	printf 'the good old content\n' >"$work/ff/$path/old-failsync.txt"
	push "ff-$path" "$path" "$work/ffsrc/" "$work/ff/$path/"
	echo "-- failing flushes, $path: exit $rc, $(field files_failed "$work/ff-$path.json") failed"
	sed 's/^/   /' "$work/ff-$path.err" | head -10
	check test "$rc" = 23
	check test "$(field files_failed "$work/ff-$path.json")" = "$nfail"
	check test "$(cat "$work/ff/$path/old-failsync.txt")" = "the good old content"
	for f in sub/small-failsync1 sub/small-failsync2 sub/small-failsync3 mid-failsync.bin big-failsync.bin; do
		check test ! -e "$work/ff/$path/$f"
	done
	check grep -q 'big-failsync.bin.*fsync' "$work/ff-$path.err"
	check test "$(grep -c 'x-faildir/.*cannot fsync its directory' "$work/ff-$path.err")" = "$ndirfail"
	for i in $(seq 1 40); do
		cmp -s "$work/ffsrc/sub/good$i" "$work/ff/$path/sub/good$i" || echo "differs: sub/good$i"
	done >"$work/ff-$path.cmp"
	check test ! -s "$work/ff-$path.cmp"
	check test -z "$(find "$work/ff-back/$path" -name '.*.qs.*' -print -quit)"
done

# With --fsync the directories themselves are flushed at the end, once their attributes are set (a
# file's flush makes its own name durable, not the directories made for it): one that gets no file,
# and the parent of a destination the run creates. A failure there is reported and fails the run; the
# files all arrive.
mkdir -p "$work/ffd-src/a/empty-faildir" "$work/ff/p-faildir"
printf 'kept\n' >"$work/ffd-src/a/good.txt"
for path in quic ssh; do
	push "ffd-$path" "$path" "$work/ffd-src/" "$work/ff/p-faildir/new-$path/"
	echo "-- failing directory flushes, $path: exit $rc, $(field files_failed "$work/ffd-$path.json") failed"
	sed 's/^/   /' "$work/ffd-$path.err" | head -5
	check test "$rc" = 23
	check test "$(field files_failed "$work/ffd-$path.json")" = 2
	check grep -q 'cannot fsync directory "a/empty-faildir"' "$work/ffd-$path.err"
	check grep -q 'cannot fsync directory "\.\."' "$work/ffd-$path.err"
	check test -d "$work/ff/p-faildir/new-$path/a/empty-faildir"
	check cmp "$work/ffd-src/a/good.txt" "$work/ff/p-faildir/new-$path/a/good.txt"
done

# A failure only the sender knows of (a file it cannot read: qs_failfs as the source fails the read)
# and one only the receiver finds, at the end (a directory whose flush fails), are two failures: the
# summary counts both (the receiver says which of its failures came late, files_failed_late). Taking
# the larger of the two sides' counts, as the client did, said 1.
mkdir -p "$work/ff/lsrc/late-faildir"
printf 'kept\n' >"$work/ff/lsrc/good.txt"
head -c 3000 /dev/urandom >"$work/ff/lsrc/n-readfail"
for path in quic ssh; do
	push "late-$path" "$path" "$work/ff/lsrc/" "$work/ff/late-$path/"
	echo "-- a read failure and a late one, $path: exit $rc, $(field files_failed "$work/late-$path.json") failed"
	check test "$rc" = 23
	check test "$(field files_failed "$work/late-$path.json")" = 2
	check grep -q '"event":"file_error","path":"n-readfail","message":"read failed: Input/output error"' \
		"$work/late-$path.json"
	check grep -q 'cannot fsync directory "late-faildir"' "$work/late-$path.err"
	check cmp "$work/ff/lsrc/good.txt" "$work/ff/late-$path/good.txt"
	check test ! -e "$work/ff/late-$path/n-readfail"
done

# A receiver still finishing (setting directory attributes, flushing) tells the sender it is there,
# so a long finish does not run into the sender's --timeout: ten directories whose flushes take
# 0.6 s each, one after the other (qs_failfs is one thread), 6 s against a timeout of 3 s (the word
# comes twice a second: the margin is for a loaded machine).
mkdir -p "$work/slow-src"
for i in $(seq 1 10); do mkdir "$work/slow-src/d$i-slowdir"; done
printf 'one\n' >"$work/slow-src/one"
for path in quic ssh; do
	push "slow-$path" "$path" "$work/slow-src/" "$work/ff/slow-$path/" --timeout 3
	echo "-- a slow finish, $path: exit $rc"
	sed 's/^/   /' "$work/slow-$path.err" | head -3
	check test "$rc" = 0
	check test -d "$work/ff/slow-$path/d10-slowdir"
done

# A receiver that is not root may not be able to open every directory it flushes: the parent of a new
# destination that it may write to but not read (mode 1733, as a drop box), a directory whose mode
# from the sender has no read bit (0311, set before the flush). Those are flushed with the whole file
# system (syncfs) instead, and the run succeeds. The receiving qsync runs as nobody (setpriv).
pub=$(mktemp -d /tmp/qs-e2e-fsync-nobody.XXXXXX)
qs_cleanup_add "chmod -R u+rwx '$pub' 2>/dev/null; rm -rf '$pub'"
chmod 755 "$pub"
cp "$QSYNC_BIN" "$pub/qsync"
printf '#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups %q "$@"\n' "$pub/qsync" >"$pub/as-nobody"
chmod 755 "$pub/as-nobody"
mkdir "$pub/drop"
chmod 1733 "$pub/drop"
mkdir -p "$work/nr-src/locked/inner"
printf 'inner\n' >"$work/nr-src/locked/inner/f"
printf 'beside\n' >"$work/nr-src/locked/g"
chmod 0311 "$work/nr-src/locked"
remote=$pub/as-nobody
push nr quic "$work/nr-src/" "$pub/drop/new/"
remote=$QSYNC_BIN
echo "-- receiver as nobody: exit $rc, $(field files_failed "$work/nr.json") failed"
sed 's/^/   /' "$work/nr.err" | head -5
check test "$rc" = 0
check test "$(stat -c %U "$pub/drop/new")" = nobody
check test "$(stat -c %a "$pub/drop/new/locked")" = 311
check cmp "$work/nr-src/locked/inner/f" "$pub/drop/new/locked/inner/f"
check cmp "$work/nr-src/locked/g" "$pub/drop/new/locked/g"

# a sanitizer report from the receiving side (its stderr comes back over SSH) fails the case
for f in "$work"/*.err; do
	check eval "! grep -q 'AddressSanitizer\|ThreadSanitizer\|runtime error' '$f'"
done

# A peer without the "fsync" capability (the stand-in below offers the quick check only) is refused
# before anything is sent, with a message that says why.
here=$(cd "$(dirname "$0")" && pwd)
printf '#!/bin/sh\nexec python3 %q badverdict %q\n' "$here/fake_receiver.py" "$work/fake.log" >"$work/fake"
chmod +x "$work/fake"
set +e
timeout 60 "$QSYNC_BIN" -a --fsync --timeout 5 -e "$QS_RSH" --remote-path "$work/fake" "$work/src/" \
	"$me@127.0.0.1:$work/dst-fake/" >"$work/fake.out" 2>"$work/fake.err"
rc=$?
set -e
echo "-- old peer: exit $rc: $(cat "$work/fake.err")"
check test "$rc" -ne 0
check test "$rc" -ne 124
check grep -q 'cannot fsync' "$work/fake.err"
check test ! -e "$work/dst-fake"
exit $fail
