#!/usr/bin/env bash
# The peer's QUIC port refuses a client that does not hold the session secret handed over on SSH,
# and still accepts the client that does.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }

sshd_start
work=$(mktemp -d /tmp/qs-e2e-psk.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
mkdir "$work/dst"
"$QS_PROBE" -e "$QS_RSH" "$(id -un)@127.0.0.1" "$QSYNC_BIN" wrong-psk "$work/dst" >"$work/out" 2>&1 || true
cat "$work/out"
check grep -q '^wrong-psk handshake: refused' "$work/out"
check grep -q '^right-psk handshake: accepted' "$work/out"
exit $fail
