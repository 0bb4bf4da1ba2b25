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

# The one file of a single-file destination sent again (the same entry: its ack lost with a data path
# that died) is taken again, not refused as a second file; another file still is.
mkdir -p "$work/single2"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send1 "$work/single2/one" \
	"re:a" "wait:" "re:a" "wait:" "ok:b" >"$work/single2.out" 2>/dev/null || true
cat "$work/single2.out"
check test "$(grep -c '^case re a status=0' "$work/single2.out")" = 2
check grep -q '^case ok b status=4' "$work/single2.out"
check test "$(cat "$work/single2/one")" = 0123456789
check test ! -e "$work/single2/a" -a ! -e "$work/single2/b"

# Directory entries in an ordinary destination: a root entry sent twice is refused the second time.
mkdir -p "$work/dirs"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/dirs" "root:" "root:" "dir:d" >"$work/dirs.out" 2>/dev/null || true
check test "$(grep -c '^case root  status=0' "$work/dirs.out")" = 1
check test "$(grep -c '^case root  status=4' "$work/dirs.out")" = 1
check test -d "$work/dirs/d"

# Large files in ranges (a 30-byte file in 3 ranges of 10): complete ones land whole; a wrong hash in
# one range, ranges that disagree about their file, or a range that never comes leave nothing under the
# final name, and an existing file under it stays as it was.
mkdir -p "$work/ranges"
printf 'old content\n' >"$work/ranges/part.bin"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/ranges" \
	"r2:whole.bin" "r0:whole.bin" "r1:whole.bin" \
	"r0:bad.bin" "rh1:bad.bin" "r2:bad.bin" \
	"r0:odd.bin" "rm1:odd.bin" "r2:odd.bin" \
	"r0:part.bin" "r1:part.bin" >"$work/ranges.out" 2>"$work/ranges.err" || true
cat "$work/ranges.out"
str() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {sub("status=","",$4); print $4}' "$work/ranges.out"; }
check test "$(cat "$work/ranges/whole.bin")" = 012345678901234567890123456789
check test "$(str rh1 bad.bin)" = 2                       # EHASH
check test ! -e "$work/ranges/bad.bin"
check test "$(str rm1 odd.bin)" = 4                       # disagrees with the others about its mode
check test ! -e "$work/ranges/odd.bin"
check test "$(cat "$work/ranges/part.bin")" = "old content" # range 2 never came: the old file stays
check grep -q '"part.bin": only 2 of its 3 ranges arrived' "$work/ranges.err"
check grep -q 'ack_complete ok=1 failed=5' "$work/ranges.out" # odd.bin and part.bin count at the end
check test -z "$(find "$work/ranges" -name '.*.qs.*' -print -quit)"
check grep -q 'exit-status 23' "$work/ranges.out"

# A range sent again after it arrived whole, as the sender does when the data path dies before the
# ack reaches it: answered done, not refused, both while the file waits for its other ranges and after
# it is in place; the file lands once, and the run ends without a failure.
mkdir -p "$work/resend"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/resend" \
	"r0:re.bin" "wait:" "r0:re.bin" "r1:re.bin" "r2:re.bin" "wait:" "r1:re.bin" \
	>"$work/resend.out" 2>"$work/resend.err" || true
cat "$work/resend.out"
check test "$(grep -c '^case r[012] re.bin status=0' "$work/resend.out")" = 5
check test "$(cat "$work/resend/re.bin")" = 012345678901234567890123456789
check grep -q 'ack_complete ok=1 failed=0' "$work/resend.out"
check grep -q 'exit-status 0' "$work/resend.out"
check test -z "$(find "$work/resend" -name '.*.qs.*' -print -quit)"
# the same with ranges that ask: the resent one is answered SEND (its bytes are dropped), never HAVE,
# which would tell the sender the destination had the whole file and its other ranges were not needed
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/resend" \
	"ar0:ask.bin" "wait:" "ar0:ask.bin" "ar1:ask.bin" "ar2:ask.bin" \
	>"$work/resend-ask.out" 2>"$work/resend-ask.err" || true
cat "$work/resend-ask.out"
check test "$(grep -c '^case ar[012] ask.bin status=0 app_error=0 verdict=S' "$work/resend-ask.out")" = 4
check test "$(cat "$work/resend/ask.bin")" = 012345678901234567890123456789
check grep -q 'exit-status 0' "$work/resend-ask.out"

# A large file whose every range arrives but which cannot be put in place (a directory holds its name):
# the last range's ack says why, the file counts as failed and the run exits 23; the directory stays.
mkdir -p "$work/isdir/x.bin/keep"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/isdir" "r0:x.bin" "r1:x.bin" "r2:x.bin" \
	>"$work/isdir.out" 2>"$work/isdir.err" || true
cat "$work/isdir.out"
check test "$(grep -c '^case r[012] x.bin status=5 .*it is a directory' "$work/isdir.out")" = 1
check grep -q 'ack_complete ok=0 failed=1' "$work/isdir.out"
check grep -q 'exit-status 23' "$work/isdir.out"
check test -d "$work/isdir/x.bin/keep"
check test -z "$(find "$work/isdir" -name '.*.qs.*' -print -quit)"

# Many large files at once: the first range of each of 100 files comes before any second one, so all 100
# are open on the receiver together (more than the 64 it once allowed); every one lands whole.
mkdir -p "$work/wide"
wide=()
for r in 0 1 2; do
	for i in $(seq 1 100); do wide+=("r$r:w$i.bin"); done
done
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/wide" "${wide[@]}" \
	>"$work/wide.out" 2>"$work/wide.err" || true
tail -n 3 "$work/wide.out"; sed "s/^/stderr: /" "$work/wide.err" | head -20
check test "$(grep -c '^case r[012] w[0-9]*\.bin status=0' "$work/wide.out")" = 300
check test "$(cat "$work/wide/w1.bin")" = 012345678901234567890123456789
check test "$(cat "$work/wide/w100.bin")" = 012345678901234567890123456789
check test "$(find "$work/wide" -name 'w*.bin' -size 30c | wc -l)" = 100
check grep -q 'ack_complete ok=100 failed=0' "$work/wide.out"
check grep -q 'exit-status 0' "$work/wide.out"

# ASK entries from an impatient sender (the data follows at once, without waiting for the verdict).
# The destination's unchanged files get HAVE and are not touched, even by the bytes that came anyway (the
# files below hold other bytes under the same size and mtime, so a write would show); a changed one gets
# SEND and is written; the ranges of one file share one verdict, and a range that does not ASK when its
# file's others did disagrees with them.
mkdir -p "$work/ask"
printf 'abcdefghij' >"$work/ask/same.txt"
printf 'abc' >"$work/ask/other.txt"
printf 'abcdefghijabcdefghijabcdefghij' >"$work/ask/have.bin"
printf 'abcdefghijabcdefghijabcdefghij' >"$work/ask/mix.bin"
chmod 0644 "$work/ask/"*
touch -d @1600000000 "$work/ask/same.txt" "$work/ask/other.txt" "$work/ask/have.bin" "$work/ask/mix.bin"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/ask" \
	"aok:same.txt" "aok:other.txt" "aok:new.txt" "ar0:have.bin" "ar1:have.bin" "ar2:have.bin" \
	"ar0:mix.bin" "r1:mix.bin" "ahash:other2.txt" "aok:../escape" >"$work/ask.out" 2>"$work/ask.err" || true
cat "$work/ask.out"
ast() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {sub("status=","",$4); print $4}' "$work/ask.out"; }
vrd() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {for (i=4;i<=NF;i++) if ($i ~ /^verdict=/) {sub("verdict=","",$i); print $i}}' "$work/ask.out"; }
check test "$(ast aok same.txt)" = 0
check test "$(vrd aok same.txt)" = H
check test "$(cat "$work/ask/same.txt")" = abcdefghij    # HAVE: the bytes that came anyway were dropped
check test "$(vrd aok other.txt)" = S
check test "$(cat "$work/ask/other.txt")" = 0123456789   # changed (size): sent and written
check test "$(vrd aok new.txt)" = S
check test "$(cat "$work/ask/new.txt")" = 0123456789
for i in 0 1 2; do
	check test "$(ast ar$i have.bin)" = 0
	check test "$(vrd ar$i have.bin)" = H
done
check test "$(cat "$work/ask/have.bin")" = abcdefghijabcdefghijabcdefghij
check test "$(ast r1 mix.bin)" = 4                        # no ASK among ASK ranges: refused
check test "$(cat "$work/ask/mix.bin")" = abcdefghijabcdefghijabcdefghij
check test "$(ast ahash other2.txt)" = 2                   # SEND, then a wrong hash: nothing written
check test ! -e "$work/ask/other2.txt"
check test "$(ast aok ../escape)" = 1                      # unsafe path: HAVE (send nothing) and why
check test "$(vrd aok ../escape)" = H
check test ! -e "$work/escape"
check test -z "$(find "$work/ask" -name '.*.qs.*' -print -quit)"


# Batches of questions (many small files asking on one stream). An unchanged file is HAVE and untouched,
# a changed or missing one SEND (it is then to come on a stream of its own: nothing is written here); an
# unsafe path, an entry that does not ask, more entries than a batch may hold, a batch inside a batch, an
# empty batch and one cut off inside an entry are refused with why, and the receiver exits 23. A
# single-file destination takes no batch.
mkdir -p "$work/batch/d"
ln -s "$work/outside" "$work/batch/link"
ln -s tgt "$work/batch/lk"
ln -s other "$work/batch/lk2"
touch -h -d @1600000000 "$work/batch/lk" "$work/batch/lk2"
printf 'abcdefghij' >"$work/batch/same.txt"
printf 'abc' >"$work/batch/other.txt"
chmod 0644 "$work/batch/"*.txt
touch -d @1600000000 "$work/batch/same.txt" "$work/batch/other.txt"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send "$work/batch" \
	"bok:same.txt" "bok:other.txt" "bok:d/new.txt" "bok:../escape" "bok:link/x" "bplain:p.txt" \
	"bmany:m" "bnest:n.txt" "bempty:" "btrunc:t.txt" "bsym:lk" "bsym:lk2" "bsym:same.txt" "bsym:nolk" \
	"bsym:../up" "bsymnul:z" >"$work/batch.out" 2>"$work/batch.err" || true
cat "$work/batch.out"
bans() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {for (i=4;i<=NF;i++) if ($i ~ /^answers=/) {sub("answers=","",$i); print $i}}' "$work/batch.out"; }
bst() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {sub("status=","",$4); print $4}' "$work/batch.out"; }
check test "$(bans bok same.txt)" = S0,H1,E0
check test "$(cat "$work/batch/same.txt")" = abcdefghij
check test "$(bans bok other.txt)" = S1,H0,E0
check test "$(cat "$work/batch/other.txt")" = abc         # SEND: the data comes later, not here
check test "$(bans bok d/new.txt)" = S1,H0,E0
check test ! -e "$work/batch/d/new.txt"
check test "$(bans bok ../escape)" = S0,H0,E1
check test "$(bst bok ../escape)" = 1
check test "$(bans bok link/x)" = S0,H0,E1                # not through a symlink
check test "$(bans bplain p.txt)" = S0,H0,E1
check test "$(bst bplain p.txt)" = 4
check test "$(bans bmany m)" = S256,H0,E1                 # the 257th entry ends the batch
check grep -q '^case bmany m status=4 .*more than 256 entries' "$work/batch.out"
check test "$(bans bnest n.txt)" = S1,H0,E1
check grep -q '^case bnest n.txt status=4 .*a batch inside a batch' "$work/batch.out"
check grep -q '^case bempty  status=4 .*an empty batch' "$work/batch.out"
check test "$(bans btrunc t.txt)" = S0,H0,E1
check test "$(bst btrunc t.txt)" = 3
check test "$(bans bsym lk)" = S0,H1,E0                  # the same target (and mtime): unchanged
check test "$(bans bsym lk2)" = S1,H0,E0                 # another target
check test "$(readlink "$work/batch/lk2")" = other        # (SEND: nothing is changed here)
check test "$(bans bsym same.txt)" = S1,H0,E0            # a regular file where the link belongs
check test "$(bans bsym nolk)" = S1,H0,E0
check test "$(bans bsym ../up)" = S0,H0,E1
check test "$(bst bsym ../up)" = 1
check test "$(bans bsymnul z)" = S0,H0,E1
check grep -q '^case bsymnul z status=4 .*NUL' "$work/batch.out"
check grep -q 'exit-status 23' "$work/batch.out"
check test ! -e "$work/escape"
check test ! -e "$work/up"
check test "$(find "$work/batch" -type f | wc -l)" = 2     # nothing written by a batch
check test -z "$(ls -A "$work/outside")"
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send1 "$work/batch/same.txt" "bok:same.txt" \
	>"$work/batch1.out" 2>&1 || true
cat "$work/batch1.out"
check grep -q '^case bok same.txt status=4 .*single-file destination takes one file, not a batch' "$work/batch1.out"
check grep -q 'exit-status 23' "$work/batch1.out"
check test "$(cat "$work/batch/same.txt")" = abcdefghij


# Bundles of whole small files. Each file is put in place when its trailer has come and acked in order:
# a wrong hash or an unsafe path fails that file alone and the bundle goes on; a directory in a bundle,
# a file over 256 KiB, a 257th file and FIN inside a file end the bundle there (what was acked stays,
# nothing half-written is left); an empty bundle and any bundle to a single-file destination are
# refused. The receiver exits 23.
# The same with --fsync asked for (sendf): entries flush on the receiver's ring, and the acks still
# come in entry order behind a flush that has not finished, the bundle's end after the last of them.
for mode in send sendf; do
	bd=bundle
	[ "$mode" = sendf ] && bd=bundle-fsync
	mkdir -p "$work/$bd"
	"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" "$mode" "$work/$bd" \
		"uok:a" "uhash:h" "upath:p" "udir:d" "ubig:g" "utrunc:t" "uempty:" "umany:m" \
		>"$work/$bd.out" 2>"$work/$bd.err" || true
	cat "$work/$bd.out"
	sed 's/^/stderr: /' "$work/$bd.err" | head -40
	uacks() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {for (i=4;i<=NF;i++) if ($i ~ /^acks=/) {sub("acks=","",$i); print $i}}' "$work/$bd.out"; }
	ust() { awk -v k="$1" -v p="$2" '$1=="case" && $2==k && $3==p {sub("status=","",$4); print $4}' "$work/$bd.out"; }
	check test "$(uacks uok a)" = OK3,E0
	for i in 0 1 2; do check test "$(cat "$work/$bd/a.$i")" = 0123456789; done
	check test "$(uacks uhash h)" = OK2,E1
	check test "$(ust uhash h)" = 2
	check test ! -e "$work/$bd/h.1"
	check test -f "$work/$bd/h.2"
	check test "$(uacks upath p)" = OK2,E1
	check test "$(ust upath p)" = 1
	check test ! -e "$work/p"
	check test -f "$work/$bd/p.2"
	check test "$(uacks udir d)" = OK1,E1                     # the bundle ends at the directory
	check test "$(ust udir d)" = 4
	check test ! -e "$work/$bd/d.1"
	check test ! -e "$work/$bd/d.2"
	check test "$(uacks ubig g)" = OK1,E1
	check grep -q '^case ubig g status=4 .*larger than 256 KiB' "$work/$bd.out"
	check test ! -e "$work/$bd/g.1"
	check test "$(uacks utrunc t)" = OK1,E1
	check test "$(ust utrunc t)" = 3
	check test ! -e "$work/$bd/t.1"
	check grep -q '^case uempty  status=-1 .*acks=OK0,E0' "$work/$bd.out" # refused: on the control channel
	check grep -q '^ctl-error code=PROTOCOL .*an empty bundle' "$work/$bd.out"
	check grep -q '^ctl-error code=PROTOCOL .*more than 256 entries in one bundle' "$work/$bd.out"
	check test "$(uacks umany m)" = OK256,E0                   # the 257th ends it, unacked
	check test ! -e "$work/$bd/m.256"
	check grep -q 'exit-status 23' "$work/$bd.out"
	check test -z "$(find "$work/$bd" -name '.*.qs.*' -print -quit)"
done
"$QS_PROBE" -e "$QS_RSH" "$me@127.0.0.1" "$QSYNC_BIN" send1 "$work/bundle/one" "uok:one" \
	>"$work/bundle1.out" 2>&1 || true
cat "$work/bundle1.out"
check grep -q '^case uok one status=4 .*single-file destination takes one file, not a bundle' "$work/bundle1.out"
check grep -q 'exit-status 23' "$work/bundle1.out"
check test ! -e "$work/bundle/one"

exit $fail
