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
# --version names the commit the binary was built from (every build remakes that line)
src_commit=$(git -C "$QS_FIXTURES/../.." describe --always --dirty --abbrev=12 2>/dev/null || echo "unknown commit")
check grep -qx "qsync [0-9.]* ($src_commit, protocol [0-9.]*)" <<<"$("$QSYNC_BIN" --version)"
check test "$(rc_of "$QSYNC_BIN" /nonexistent/src "$work/x")" = 23

make_sample_tree "$work/src" 300 8
"$QSYNC_BIN" -a -q "$work/src/" "$work/dst"
check tree_compare "$work/src" "$work/dst"
# -r without -p -t: content arrives, times are not copied
"$QSYNC_BIN" -r -q "$work/src/" "$work/dst-r"
check diff -r "$work/src" "$work/dst-r" --exclude=link-to-space
check test ! -e "$work/dst-r/a/link-to-space"
check test "$(stat -c %Y "$work/src/with space.txt")" != "$(stat -c %Y "$work/dst-r/with space.txt")"

# Without -p, like rsync: new entries get the source's bits less setuid/setgid/sticky, masked by the
# umask; existing files and directories (the destination root included) keep their own permissions.
umask 022
mkdir -p "$work/pm/src/sub" "$work/pm/dst"
printf x >"$work/pm/src/private"
printf y >"$work/pm/src/suid"
printf z >"$work/pm/src/existing"
chmod 0600 "$work/pm/src/private"
chmod 04755 "$work/pm/src/suid"
chmod 0644 "$work/pm/src/existing"
chmod 0700 "$work/pm/src/sub" "$work/pm/dst"
printf old >"$work/pm/dst/existing"
chmod 0640 "$work/pm/dst/existing"
"$QSYNC_BIN" -r -q "$work/pm/src/" "$work/pm/dst"
check test "$(stat -c %a "$work/pm/dst/private")" = 600
check test "$(stat -c %a "$work/pm/dst/suid")" = 755
check test "$(stat -c %a "$work/pm/dst/sub")" = 700
check test "$(stat -c %a "$work/pm/dst/existing")" = 640
check test "$(cat "$work/pm/dst/existing")" = z
check test "$(stat -c %a "$work/pm/dst")" = 700
# with -p the source's bits, setuid included (as root), and the root takes the source's mode
"$QSYNC_BIN" -rp -q "$work/pm/src/" "$work/pm/dst-p"
check test "$(stat -c %a "$work/pm/dst-p/suid")" = "$([ "$(id -u)" = 0 ] && echo 4755 || echo 755)"
check test "$(stat -c %a "$work/pm/dst-p/existing")" = 644

# Owner and group, each only when asked for (and only as root).
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$work/own/src"
	printf o >"$work/own/src/f"
	chown 1234:5678 "$work/own/src/f"
	"$QSYNC_BIN" -r -g -q "$work/own/src/" "$work/own/g"
	"$QSYNC_BIN" -r -o -q "$work/own/src/" "$work/own/o"
	"$QSYNC_BIN" -a -q "$work/own/src/" "$work/own/a"
	check test "$(stat -c %u:%g "$work/own/g/f")" = 0:5678
	check test "$(stat -c %u:%g "$work/own/o/f")" = 1234:0
	check test "$(stat -c %u:%g "$work/own/a/f")" = 1234:5678
fi

exit $fail
