#!/usr/bin/env bash
# The demo: installs what it needs, builds qsync, starts the native daemon `qsync serve` on a loopback
# port (its own SSH server: no OpenSSH server is involved) with a fresh host key and a user key made for
# the demo, pushes a sample tree over SSH control + QUIC data with live progress, shows the summary, the
# machine-readable summary, the same push over the SSH-only data path, and proves each copy identical
# (content, modes, nanosecond mtimes). Everything it starts it stops (by PID); everything it makes it
# removes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ci/deps.sh
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j2 --target qsync >/dev/null
QSYNC="$root/build/cli/qsync"

source "$root/tests/fixtures/sshd.sh" # qs_cleanup_add only: no sshd is started
source "$root/tests/fixtures/tree.sh"
work=$(mktemp -d /tmp/qsync-demo.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
unset SSH_AUTH_SOCK # the demo logs in with its own key only

echo "== keys: a host key for the daemon, a user key it will accept"
ssh-keygen -q -t ed25519 -N '' -C qsync-demo-user -f "$work/user_key"
cp "$work/user_key.pub" "$work/authorized_keys"
chmod 600 "$work/authorized_keys"

echo "== qsync serve --listen 127.0.0.1:0 --host-key $work/host_key --host-key-create --authorized-keys ..."
: >"$work/serve.log"
"$QSYNC" serve --listen 127.0.0.1:0 --host-key "$work/host_key" --host-key-create \
	--authorized-keys "$work/authorized_keys" >"$work/serve.log" 2>&1 &
serve_pid=$!
qs_cleanup_add "kill -TERM $serve_pid 2>/dev/null; wait $serve_pid 2>/dev/null"
port=
for _ in $(seq 1 200); do
	port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\);.*/\1/p' "$work/serve.log")
	[ -n "$port" ] && break
	kill -0 "$serve_pid" 2>/dev/null || break
	sleep 0.05
done
if [ -z "$port" ]; then
	echo "the daemon did not start:"
	cat "$work/serve.log"
	exit 1
fi
sed 's/^/   /' "$work/serve.log"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_key.pub")" >"$work/known_hosts"
rsh="ssh -p $port -i $work/user_key -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes"
me=$(id -un)
echo

echo "== sample tree: 2,000 small files, nested and oddly named entries, one 200 MiB file"
make_sample_tree "$work/src" 2000 200
du -sh "$work/src" | sed 's/^/   /'
echo
echo "== qsync -a --progress -e '$rsh' $work/src/ $me@127.0.0.1:$work/dst/"
"$QSYNC" -a --progress -e "$rsh" "$work/src/" "$me@127.0.0.1:$work/dst/"
echo
echo "== the same transfer's machine-readable summary (--json, into a second destination)"
"$QSYNC" -a --json -e "$rsh" "$work/src/" "$me@127.0.0.1:$work/dst-json/" | grep '"event":"summary"'
echo
echo "== the SSH-only data path (--no-quic: what qsync falls back to when UDP is blocked)"
"$QSYNC" -a --no-quic -e "$rsh" "$work/src/" "$me@127.0.0.1:$work/dst-ssh/"
echo
echo "== again, nothing changed: the quick check (size and mtime, like rsync) sends nothing"
"$QSYNC" -a -e "$rsh" "$work/src/" "$me@127.0.0.1:$work/dst/"
echo
echo "== check: content, type, mode, size and mtime (ns) of every entry"
ok=1
for d in dst dst-json dst-ssh; do
	if tree_compare "$work/src" "$work/$d"; then
		echo "   $d: identical, $(find "$work/$d" | wc -l) entries"
	else
		echo "   $d: DIFFERENT"
		ok=0
	fi
done
echo
echo "== the daemon's log of these sessions"
sed 's/^/   /' "$work/serve.log"
[ "$ok" = 1 ]
