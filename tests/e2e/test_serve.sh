#!/usr/bin/env bash
# The native daemon `qsync serve` on a loopback port, no OpenSSH server involved: pushes with an
# authorized key (alone and two at once), a key it does not list, other commands, shells, subsystems and
# forwarding (refused, nothing runs), host-key start-up errors and creation, --max-sessions, the login
# grace time, and SIGTERM in the middle of a transfer. Sanitizer reports of any daemon process fail it.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh" # qs_cleanup_add and _sshd_alive only: no sshd is started here
source "$QS_FIXTURES/tree.sh"

fail=0
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; fail=1; fi; }
unset SSH_AUTH_SOCK # the agent of whoever runs the tests must not change the outcome

work=$(mktemp -d /tmp/qs-e2e-serve.XXXXXX)
qs_cleanup_add "rm -rf '$work'"
me=$(id -un)

ssh-keygen -q -t ed25519 -N '' -C qs-serve-host -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -C qs-user1 -f "$work/key1"
ssh-keygen -q -t ed25519 -N '' -C qs-user2 -f "$work/key2"
cp "$work/key1.pub" "$work/authorized_keys"
chmod 600 "$work/authorized_keys"

# Daemons this script started and has not yet waited for: only these are ever signalled.
SERVE_PIDS=()
serve_forget() {
	local p keep=()
	for p in "${SERVE_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	SERVE_PIDS=("${keep[@]}")
}
serve_stop_all() {
	local p
	for p in "${SERVE_PIDS[@]}"; do
		serve_stop "$p"
	done
}
qs_cleanup_add serve_stop_all

# serve_stop PID: SIGTERM, up to 20 s to end, then SIGKILL; only a PID we started and still own.
serve_stop() {
	local pid=$1 i
	case " ${SERVE_PIDS[*]} " in
	*" $pid "*) ;;
	*) return 0 ;;
	esac
	serve_forget "$pid"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 200; i++)); do
		_sshd_alive "$pid" || break
		sleep 0.1
	done
	if _sshd_alive "$pid"; then
		echo "serve_stop: $pid did not stop on SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# serve_start LOG ARGS...: qsync serve on a free loopback port (port 0: the kernel picks, the daemon
# names it); sets SERVE_PID and SERVE_PORT once it listens.
serve_start() {
	local log=$1 i
	shift
	: >"$log" # exists before the background job's own redirection opens it
	"$QSYNC_BIN" serve --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
	SERVE_PID=$!
	SERVE_PIDS+=("$SERVE_PID")
	SERVE_PORT=
	for ((i = 0; i < 200; i++)); do
		SERVE_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\);.*/\1/p' "$log" 2>/dev/null || true)
		[ -n "$SERVE_PORT" ] && return 0
		_sshd_alive "$SERVE_PID" || break
		sleep 0.05
	done
	echo "serve_start: the daemon did not come up:"
	cat "$log"
	return 1
}

# ---- (e) start-up: a missing host key is an error naming the file, unless asked to create it ----
set +e
timeout 20 "$QSYNC_BIN" serve --listen 127.0.0.1:0 --host-key "$work/no_such_key" \
	--authorized-keys "$work/authorized_keys" >"$work/nokey.out" 2>&1
rc=$?
set -e
check test "$rc" = 5
check grep -qF "$work/no_such_key" "$work/nokey.out"
check grep -q -- "--host-key-create" "$work/nokey.out"
check test ! -e "$work/no_such_key"
# a host key others can read is refused too
cp "$work/host_key" "$work/open_key"
chmod 644 "$work/open_key"
set +e
timeout 20 "$QSYNC_BIN" serve --listen 127.0.0.1:0 --host-key "$work/open_key" >"$work/openkey.out" 2>&1
rc=$?
set -e
check test "$rc" = 5
check grep -q "chmod 600" "$work/openkey.out"
# bad options are usage errors
set +e
"$QSYNC_BIN" serve --listen localhost:22 >/dev/null 2>&1
rc_name=$?
"$QSYNC_BIN" serve --max-sessions 0 >/dev/null 2>&1
rc_max=$?
"$QSYNC_BIN" serve stray >/dev/null 2>&1
rc_arg=$?
set -e
check test "$rc_name" = 1
check test "$rc_max" = 1
check test "$rc_arg" = 1
# --host-key-create makes an ed25519 key (mode 0600) and its .pub, names its fingerprint, and serves
serve_start "$work/create.log" --host-key "$work/made/dir/host_key" --host-key-create \
	--authorized-keys "$work/authorized_keys"
check test "$(stat -c %a "$work/made/dir/host_key")" = 600
made_fp=$(ssh-keygen -lf "$work/made/dir/host_key.pub" | awk '{print $2}')
check grep -q "created host key $work/made/dir/host_key (ssh-ed25519 $made_fp)" "$work/create.log"
check grep -q "ED25519" <(ssh-keygen -lf "$work/made/dir/host_key")
create_pid=$SERVE_PID
serve_forget "$create_pid"
kill -TERM "$create_pid"
set +e
wait "$create_pid"
rc=$?
set -e
check test "$rc" = 0 # a clean stop on SIGTERM

# ---- the daemon the rest of the test uses ----
serve_start "$work/serve.log" --host-key "$work/host_key" --authorized-keys "$work/authorized_keys" -v
port=$SERVE_PORT
main_pid=$SERVE_PID
echo "[127.0.0.1]:$port $(awk '{print $1, $2}' "$work/host_key.pub")" >"$work/known_hosts"
rsh1="ssh -p $port -i $work/key1 -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes"
rsh2="ssh -p $port -i $work/key2 -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes"
ossh=(ssh -F /dev/null -p "$port" -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes
	-o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10)

# ---- (a) a push with the authorized key: the trees are identical ----
make_sample_tree "$work/src" 300 20
"$QSYNC_BIN" -a -q -e "$rsh1" --remote-path "$QSYNC_BIN" "$work/src/" "$me@127.0.0.1:$work/dst/"
check tree_compare "$work/src" "$work/dst"
check test -z "$(find "$work/dst" -name '.*.qs.*' -print -quit)"
check grep -q "accepted publickey for $me from 127.0.0.1 port" "$work/serve.log"
check grep -q "session for $me from 127.0.0.1 port [0-9]* ended: exit 0" "$work/serve.log"
# without --remote-path the client asks for "qsync --server": the daemon runs its own session
"$QSYNC_BIN" -a -q -e "$rsh1" "$work/src/a/" "$me@127.0.0.1:$work/dst-default/"
check tree_compare "$work/src/a" "$work/dst-default"

# ---- (b) a key authorized_keys does not list: refused (255), nothing written, logged with the address ----
key2_fp=$(ssh-keygen -lf "$work/key2.pub" | awk '{print $2}')
set +e
"$QSYNC_BIN" -a -q -e "$rsh2" --remote-path "$QSYNC_BIN" "$work/src/" "$me@127.0.0.1:$work/dst-key2/" \
	2>"$work/key2.err"
rc=$?
set -e
check test "$rc" = 255
check grep -qi "permission denied" "$work/key2.err"
check test ! -e "$work/dst-key2"
check grep -q "refused publickey for $me from 127.0.0.1 port [0-9]*: ssh-ed25519 $key2_fp (not in authorized_keys)" \
	"$work/serve.log"
# ... and a listed key for another user name is refused as well
set +e
"${ossh[@]}" -i "$work/key1" -l "nobody-$me" 127.0.0.1 "$QSYNC_BIN --server" </dev/null 2>"$work/user.err"
rc=$?
set -e
check test "$rc" = 255
check grep -q "refused publickey for nobody-$me .*not the user this server runs as" "$work/serve.log"

# ... and the only method offered is publickey: a client set on passwords has nothing to try
printf '#!/bin/sh\ntouch "%s/askpass.used"\necho not-a-password\n' "$work" >"$work/askpass"
chmod 700 "$work/askpass"
set +e
SSH_ASKPASS="$work/askpass" SSH_ASKPASS_REQUIRE=force DISPLAY=none setsid -w ssh -F /dev/null -p "$port" \
	-o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes -o PubkeyAuthentication=no \
	-o PreferredAuthentications=password,keyboard-interactive -o NumberOfPasswordPrompts=1 \
	-o ConnectTimeout=10 127.0.0.1 "$QSYNC_BIN --server" </dev/null >/dev/null 2>"$work/pw.err"
rc=$?
set -e
check test "$rc" = 255
check grep -q "Permission denied (publickey)" "$work/pw.err"
check test ! -e "$work/askpass.used" # no password was ever asked for

# ---- (c) two clients at once, into two destinations ----
set +e
"$QSYNC_BIN" -a -q -e "$rsh1" --remote-path "$QSYNC_BIN" "$work/src/" "$me@127.0.0.1:$work/dst-c1/" &
c1=$!
"$QSYNC_BIN" -a -q -e "$rsh1" --remote-path "$QSYNC_BIN" "$work/src/" "$me@127.0.0.1:$work/dst-c2/" &
c2=$!
wait "$c1"
rc1=$?
wait "$c2"
rc2=$?
set -e
check test "$rc1" = 0
check test "$rc2" = 0
check tree_compare "$work/src" "$work/dst-c1"
check tree_compare "$work/src" "$work/dst-c2"

# ---- (d) another command, a shell, a subsystem, forwarding: refused, and nothing runs ----
set +e
"${ossh[@]}" -i "$work/key1" 127.0.0.1 "touch $work/marker" </dev/null 2>"$work/exec.err"
rc_exec=$?
"${ossh[@]}" -i "$work/key1" 127.0.0.1 "$QSYNC_BIN --server; touch $work/marker" </dev/null 2>"$work/exec2.err"
rc_exec2=$?
"${ossh[@]}" -i "$work/key1" -tt 127.0.0.1 </dev/null >"$work/tt.out" 2>&1
rc_tt=$?
"${ossh[@]}" -i "$work/key1" -T 127.0.0.1 </dev/null 2>"$work/shell.err"
rc_shell=$?
"${ossh[@]}" -i "$work/key1" -s 127.0.0.1 sftp </dev/null 2>"$work/sftp.err"
rc_sftp=$?
"${ossh[@]}" -i "$work/key1" -W "127.0.0.1:$port" 127.0.0.1 </dev/null 2>"$work/fwd.err"
rc_fwd=$?
"${ossh[@]}" -i "$work/key1" -o ExitOnForwardFailure=yes -R "127.0.0.1:0:127.0.0.1:$port" -N 127.0.0.1 \
	</dev/null 2>"$work/rfwd.err"
rc_rfwd=$?
# the qsync client asked to run something else by its --remote-path
"$QSYNC_BIN" -a -q -e "$rsh1" --remote-path "touch $work/marker;" "$work/src/" "$me@127.0.0.1:$work/dst-rp/" \
	2>"$work/rp.err"
rc_rp=$?
set -e
check test "$rc_exec" = 1
check grep -q "refused command 'touch $work/marker'" "$work/exec.err"
check test "$rc_exec2" = 1
check test "$rc_tt" -ne 0
check test "$rc_shell" = 1
check grep -q "refused a shell" "$work/shell.err"
check test "$rc_sftp" -ne 0
check test "$rc_fwd" -ne 0
check test "$rc_rfwd" -ne 0
check test "$rc_rp" -ne 0
check grep -q "refused command" "$work/rp.err"
check test ! -e "$work/dst-rp"
check test ! -e "$work/marker"
check grep -q "refused a pty request" "$work/serve.log"
check grep -q "refused subsystem 'sftp'" "$work/serve.log"
check grep -q "refused port forwarding to 127.0.0.1 port $port" "$work/serve.log"
check grep -q "refused remote port forwarding" "$work/serve.log"

# ---- --max-sessions and the login grace time, on a second daemon ----
serve_start "$work/limit.log" --host-key "$work/host_key" --authorized-keys "$work/authorized_keys" \
	--max-sessions 1 --login-grace 5
lport=$SERVE_PORT
limit_pid=$SERVE_PID
echo "[127.0.0.1]:$lport $(awk '{print $1, $2}' "$work/host_key.pub")" >>"$work/known_hosts"
exec 3<>"/dev/tcp/127.0.0.1/$lport" # holds the only slot, saying nothing
sleep 0.5
set +e
"$QSYNC_BIN" -a -q -e "ssh -p $lport -i $work/key1 -o UserKnownHostsFile=$work/known_hosts" \
	--remote-path "$QSYNC_BIN" "$work/src/a/" "$me@127.0.0.1:$work/dst-limit/" 2>/dev/null
rc_full=$?
set -e
check test "$rc_full" = 255
check grep -q "refused connection from 127.0.0.1 port [0-9]*: 1 sessions already running" "$work/limit.log"
for _ in $(seq 1 150); do # the silent connection is dropped when its 5 s grace is over
	grep -q "login grace time (5 s) is over" "$work/limit.log" && break
	sleep 0.1
done
check grep -q "login grace time (5 s) is over" "$work/limit.log"
exec 3<&-
sleep 0.3
"$QSYNC_BIN" -a -q -e "ssh -p $lport -i $work/key1 -o UserKnownHostsFile=$work/known_hosts" \
	--remote-path "$QSYNC_BIN" "$work/src/a/" "$me@127.0.0.1:$work/dst-limit/"
check tree_compare "$work/src/a" "$work/dst-limit"
serve_stop "$limit_pid"

# ---- SIGTERM to the daemon in the middle of a transfer: it stops, the session cleans up after itself ----
mkdir -p "$work/sig/src"
truncate -s 2G "$work/sig/src/big" # sparse: 2 GiB to send, nothing on disk
set +e
"$QSYNC_BIN" -a --json --streams 4 -e "$rsh1" --remote-path "$QSYNC_BIN" "$work/sig/src/" \
	"$me@127.0.0.1:$work/sig/dst/" >"$work/sig/out.json" 2>"$work/sig/err" &
client=$!
for _ in $(seq 1 400); do # until a good part of the file is on its way (at most 20 s)
	grep -q '"bytes_sent":[0-9]\{9,\}' "$work/sig/out.json" 2>/dev/null && break
	sleep 0.05
done
check test ! -e "$work/sig/dst/big" # still under way
t0=$(date +%s)
serve_forget "$main_pid"
kill -TERM "$main_pid"
wait "$main_pid"
rc_daemon=$?
t1=$(date +%s)
wait "$client"
rc_client=$?
set -e
check test "$rc_daemon" = 0
check test $((t1 - t0)) -le 15
check test "$rc_client" -ne 0
check test -z "$(find "$work/sig/dst" -name '.*.qs.*' -print -quit)"
check test ! -e "$work/sig/dst/big"
check grep -q "stopping on signal 15" "$work/serve.log"

# ---- no sanitizer report from any daemon process (the connection processes log there too) ----
check test -z "$(grep -l 'AddressSanitizer\|LeakSanitizer\|runtime error' "$work"/*.log 2>/dev/null)"

if [ "$fail" != 0 ]; then
	for f in "$work"/*.log; do
		echo "---- $f ----"
		cat "$f"
	done
fi
exit $fail
