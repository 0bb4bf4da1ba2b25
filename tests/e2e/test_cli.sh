#!/usr/bin/env bash
# The command line as an rsync user meets it: usage errors with rsync's exit codes, and the local mode
# (SRC DEST, no host), which runs the same engine against a local peer over loopback QUIC.
set -euo pipefail
source "$QS_FIXTURES/tree.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }
rc_of() { set +e; "$@" >/dev/null 2>&1; echo $?; set -e; }

work=$(mktemp -d /tmp/qs-e2e-cli.XXXXXX)
trap 'rm -rf "$work"' EXIT

check test "$(rc_of "$QSYNC_BIN")" = 1
check test "$(rc_of "$QSYNC_BIN" onlyone)" = 1
check test "$(rc_of "$QSYNC_BIN" --bogus a b)" = 1
check test "$(rc_of "$QSYNC_BIN" --streams 0 a b)" = 1
check test "$(rc_of "$QSYNC_BIN" host:src dst)" = 1
check test "$(rc_of "$QSYNC_BIN" -e 'ssh -Z' a host:b)" = 1
check test "$(rc_of "$QSYNC_BIN" --help)" = 0
check test "$(rc_of "$QSYNC_BIN" /nonexistent/src "$work/x")" = 23

make_sample_tree "$work/src" 300 8
"$QSYNC_BIN" -a -q "$work/src/" "$work/dst"
check tree_compare "$work/src" "$work/dst"
# -r without -p -t: content arrives, times are not copied
"$QSYNC_BIN" -r -q "$work/src/" "$work/dst-r"
check diff -r "$work/src" "$work/dst-r" --exclude=link-to-space
check test ! -e "$work/dst-r/a/link-to-space"
check test "$(stat -c %Y "$work/src/with space.txt")" != "$(stat -c %Y "$work/dst-r/with space.txt")"
exit $fail
