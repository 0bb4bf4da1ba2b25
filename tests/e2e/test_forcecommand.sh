#!/usr/bin/env bash
# Helper mode as a forced command: a stock OpenSSH sshd whose authorized_keys line for the user key is
# `command="<qsync> --server"`. A push works (with or without --remote-path: the forced command decides
# the binary); any other command, qsync with other arguments, and an interactive shell are refused by
# qsync --server's SSH_ORIGINAL_COMMAND check with exit 1, and nothing else runs.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"
source "$QS_FIXTURES/tree.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }
unset SSH_AUTH_SOCK SSH_ORIGINAL_COMMAND

qsync_abs=$(cd "$(dirname "$QSYNC_BIN")" && pwd)/$(basename "$QSYNC_BIN")
work=$(mktemp -d /tmp/qs-e2e-force.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
me=$(id -un)

# ---- the check alone, without sshd ----
set +e
SSH_ORIGINAL_COMMAND="touch $work/marker" "$QSYNC_BIN" --server </dev/null >/dev/null 2>"$work/alone.err"
rc_bad=$?
SSH_ORIGINAL_COMMAND="" "$QSYNC_BIN" --server </dev/null >/dev/null 2>/dev/null
rc_empty=$?
SSH_ORIGINAL_COMMAND="qsync --server" timeout 60 "$QSYNC_BIN" --server </dev/null >/dev/null 2>/dev/null
rc_good=$?
set -e
check test "$rc_bad" = 1
check grep -q "refused command 'touch $work/marker'" "$work/alone.err"
check test "$rc_empty" = 1
check test "$rc_good" = 5 # accepted: it ran the session, which found no client on stdin

# ---- through sshd: the user key may only run qsync --server ----
SSHD_AUTHORIZED_KEY_OPTIONS="command=\"$qsync_abs --server\"" sshd_start
check grep -qF "command=\"$qsync_abs --server\" ssh-ed25519 " "$SSHD_DIR/authorized_keys"
ossh=(ssh -F /dev/null -p "$SSHD_PORT" -i "$SSHD_USER_KEY" -o UserKnownHostsFile="$SSHD_KNOWN_HOSTS"
	-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10)

make_sample_tree "$work/src" 300 20
"$QSYNC_BIN" -a -q -e "$QS_RSH" --remote-path "$qsync_abs" "$work/src/" "$me@127.0.0.1:$work/dst/"
check tree_compare "$work/src" "$work/dst"
# the default remote path ("qsync --server") is accepted too; the forced command names the binary
"$QSYNC_BIN" -a -q -e "$QS_RSH" "$work/src/a/" "$me@127.0.0.1:$work/dst-default/"
check tree_compare "$work/src/a" "$work/dst-default"

set +e
"${ossh[@]}" 127.0.0.1 "touch $work/marker" </dev/null >"$work/exec.out" 2>"$work/exec.err"
rc_exec=$?
"${ossh[@]}" 127.0.0.1 "$qsync_abs --server; touch $work/marker" </dev/null 2>"$work/exec2.err"
rc_exec2=$?
"${ossh[@]}" 127.0.0.1 "$qsync_abs --server -v" </dev/null 2>"$work/exec3.err"
rc_exec3=$?
"${ossh[@]}" 127.0.0.1 "$qsync_abs" </dev/null 2>/dev/null
rc_exec4=$?
"${ossh[@]}" -tt 127.0.0.1 </dev/null >"$work/tt.out" 2>&1
rc_tt=$?
"$QSYNC_BIN" -a -q -e "$QS_RSH" --remote-path "touch $work/marker;" "$work/src/" "$me@127.0.0.1:$work/dst-rp/" \
	2>"$work/rp.err"
rc_rp=$?
set -e
check test "$rc_exec" = 1
check grep -q "qsync --server: refused command 'touch $work/marker'" "$work/exec.err"
check test ! -s "$work/exec.out"
check test "$rc_exec2" = 1
check test "$rc_exec3" = 1
check test "$rc_exec4" = 1
check test "$rc_tt" = 1
check grep -q "refusing to run on a terminal" "$work/tt.out"
check test "$rc_rp" -ne 0
check grep -q "refused command" "$work/rp.err"
check test ! -e "$work/dst-rp"
check test ! -e "$work/marker"

if [ "$fail" != 0 ]; then
	sshd_log
fi
exit $fail
