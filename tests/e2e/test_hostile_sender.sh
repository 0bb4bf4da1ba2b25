#!/usr/bin/env bash
# A hostile sender against the real receiver (`qsync --server` behind a real sshd): unsafe paths, wrong
# hashes, truncated streams, lying sizes and trailing junk are each refused with a message naming the
# path, nothing is created outside the destination, no good file is lost or left half-written, and the
# receiver exits non-zero.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }

sshd_start
work=$(mktemp -d /tmp/qs-e2e-hostile.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
me=$(id -un)
mkdir -p "$work/dst" "$work/outside"
printf 'precious\n' >"$work/dst/good.txt"
ln -s "$work/outside" "$work/dst/link"

"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/dst" \
	"ok:fine.txt" "ok:../escape" "ok:/etc/qsync-evil" "ok:a/../../up" "ok:link/x" "ok:./dot" \
	"hash:good.txt" "trunc:good.txt" "lie:good.txt" "extra:extra.txt" >"$work/probe.out" 2>"$work/probe.err" || true
cat "$work/probe.out"
sed 's/^/stderr: /' "$work/probe.err" | head -40

st() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {sub("status=","",$4); print $4}' "$work/probe.out"; }
check test "$(st ok fine.txt)" = 0
for p in ../escape /etc/qsync-evil a/../../up ./dot; do
	check test "$(st ok "$p")" = 1       # NET_STREAM_EBADPATH
done
check test "$(st ok link/x)" = 5        # EIO: refused at open, a symlink on the way
check test "$(st hash good.txt)" = 2     # EHASH
check test "$(st trunc good.txt)" = 3    # ETRUNC
check test "$(st lie good.txt)" = 3      # stream ends before the promised size
check test "$(st extra extra.txt)" = 4   # EPROTO: bytes after the trailer
# the receiver names the bad path in its message, on the stream and on the control channel
check grep -q 'case ok ../escape status=1 .*\.\./escape' "$work/probe.out"
check grep -q 'ctl-error code=UNSAFE_PATH file=../escape' "$work/probe.out"
check grep -q '/etc/qsync-evil' "$work/probe.err"
# nothing outside the destination, the good file intact, no temporaries, the one good file written
check test ! -e "$work/escape"
check test ! -e /etc/qsync-evil
check test ! -e "$work/up"
check test -z "$(ls -A "$work/outside")"
check test "$(cat "$work/dst/good.txt")" = precious
check test -f "$work/dst/fine.txt"
check test ! -e "$work/dst/extra.txt"
check test -z "$(find "$work/dst" -name '.*.qs.*' -print -quit)"
# the receiver's exit status says the transfer was partial (23)
check grep -q 'ack_complete ok=1 failed=9' "$work/probe.out"
check grep -q 'exit-status 23' "$work/probe.out"

# A single-file destination: the one file lands under the destination's name; directory and root
# entries, and any second entry, are refused, and the parent directory (the user's) is left alone.
mkdir -p "$work/single/parent"
chmod 0700 "$work/single/parent"
touch -d "2020-01-01 00:00:00" "$work/single/parent"
before=$(stat -c '%a %u %g' "$work/single/parent")
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send1 "$work/single/parent/newname" \
	"ok:a" "dir:evil/nested" "root:" "ok:b" >"$work/single.out" 2>/dev/null || true
cat "$work/single.out"
st1() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {sub("status=","",$4); print $4}' "$work/single.out"; }
# streams arrive in any order: exactly one of the two files is taken, the other refused
check test "$(st1 ok a)$(st1 ok b)" = 04 -o "$(st1 ok a)$(st1 ok b)" = 40
check test "$(st1 dir evil/nested)" = 4
check grep -q '^case root  status=4' "$work/single.out"
check test -f "$work/single/parent/newname"
check test ! -e "$work/single/parent/evil"
check test ! -e "$work/single/parent/a"
check test "$(stat -c '%a %u %g' "$work/single/parent")" = "$before"   # (its mtime moves: a file was added)

# Directory entries in an ordinary destination: a root entry sent twice is refused the second time.
mkdir -p "$work/dirs"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/dirs" "root:" "root:" "dir:d" >"$work/dirs.out" 2>/dev/null || true
check test "$(grep -c '^case root  status=0' "$work/dirs.out")" = 1
check test "$(grep -c '^case root  status=4' "$work/dirs.out")" = 1
check test -d "$work/dirs/d"

exit $fail
