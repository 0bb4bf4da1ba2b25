#!/usr/bin/env bash
# A broken or hostile peer on the control plane, reached through a real sshd (--remote-path names a
# fake "qsync --server"): garbage, an oversized line, missing fields, an unknown message type, an old
# protocol version, a peer without QUIC (the client falls back to SSH, then the fake hangs up),
# silence, and an early close. Each must end in a clear message
# and a non-zero exit, never a crash or a hang, and the client must never write anything.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }

sshd_start
work=$(mktemp -d /tmp/qs-e2e-peer.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
mkdir -p "$work/src/sub" "$work/fake"
printf 'data\n' >"$work/src/sub/f"

# fake peers: each reads the client's hello line, then misbehaves
fake() { # NAME BODY
	printf '#!/bin/sh\nread -r hello\n%s\n' "$2" >"$work/fake/$1"
	chmod +x "$work/fake/$1"
}
fake garbage 'echo "this is not json"; sleep 1'
fake huge 'head -c 70000 /dev/zero | tr "\\0" a; echo; sleep 1'
fake missing '"echo" "{\"type\":\"hello-ack\",\"version\":\"1.0\"}"; sleep 1'
fake oldver 'echo "{\"type\":\"hello-ack\",\"version\":\"0.9\",\"capabilities\":[\"quic-v1\"],\"quic_available\":true}"; sleep 1'
fake noquic 'echo "{\"type\":\"hello-ack\",\"version\":\"1.0\",\"capabilities\":[],\"quic_available\":false}"; read -r start; case "$start" in *sync_start*data_path*ssh*) : >"'"$work"'/noquic.asked-ssh";; esac; exit 0'
fake unknown 'echo "{\"type\":\"frobnicate\"}"; echo "{\"type\":\"hello-ack\",\"version\":\"1.0\",\"capabilities\":[\"quic-v1\"],\"quic_available\":true}"; read -r init; echo "{\"type\":\"quic_ready\",\"connection_id\":\"00\",\"udp_endpoint\":{\"ip\":\"127.0.0.1\",\"port\":9},\"max_streams\":1}"; sleep 1'
fake silent 'sleep 8'
fake early 'exit 0'

run() { # NAME -> prints "rc<TAB>stderr" into files
	local name=$1
	set +e
	timeout 25 "$QSYNC_BIN" -a -q --timeout 3 -e "$QS_RSH" --remote-path "$work/fake/$name" \
		"$work/src/" "$(id -un)@127.0.0.1:$work/dst-$name/" >"$work/$name.out" 2>"$work/$name.err"
	echo $? >"$work/$name.rc"
	set -e
	echo "-- $name: exit $(cat "$work/$name.rc"): $(tr '\n' ' ' <"$work/$name.err" | cut -c1-300)"
}
for n in garbage huge missing oldver noquic unknown silent early; do run $n; done

rc() { cat "$work/$1.rc"; }
check test "$(rc garbage)" = 5
check grep -qi 'json\|malformed' "$work/garbage.err"
check test "$(rc huge)" = 5
check grep -qi 'limit\|too long\|65536\|64 KiB' "$work/huge.err"
check test "$(rc missing)" = 5
check grep -q 'capabilities' "$work/missing.err"
check test "$(rc oldver)" = 2
check grep -q '0.9' "$work/oldver.err"
# a peer without QUIC: the client asks for the data over SSH (no quic_init), then the peer hangs up
check test -e "$work/noquic.asked-ssh"
check test "$(rc noquic)" = 12
check grep -qi 'closed' "$work/noquic.err"
check test "$(rc unknown)" = 2     # unknown type skipped; then the connection id does not match
check grep -q 'quic_ready names another connection' "$work/unknown.err"
check test "$(rc silent)" = 30
check grep -qi 'timed out' "$work/silent.err"
check test "$(rc early)" = 5
check grep -qi 'closed' "$work/early.err"
for n in garbage huge missing oldver noquic unknown silent early; do
	check test ! -e "$work/dst-$n"
done
exit $fail
