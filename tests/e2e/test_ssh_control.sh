#!/usr/bin/env bash
# The SSH control client (net/ssh.h) against a real OpenSSH sshd on a loopback port, driven by
# qs_sshcat: messages through a remote cat, exit status, remote stderr, every host-key outcome
# (unknown, accept-new, changed), a refused user key, and an ssh_config file given with -F.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh"

SSHCAT=${QS_SSHCAT:?QS_SSHCAT must name the qs_sshcat tool}
fail=0
pass() { echo "PASS: $*"; }
bad() {
	echo "FAIL: $*"
	fail=1
}

sshd_start
unset SSH_AUTH_SOCK # the agent of whoever runs the tests must not change the outcome
work=$SSHD_DIR/work
mkdir -p "$work"
out=$work/out
errf=$work/err
host_fp=$(ssh-keygen -lf "$SSHD_HOST_KEY_PUB" | awk '{print $2}')
hello='{"type":"hello","version":"1.0","capabilities":["quic-v1"]}'

# run RSH STDIN ARGS...: runs qs_sshcat with a bound; sets rc, output in $out and $errf
run() {
	local rsh=$1 input=$2
	shift 2
	set +e
	printf '%s' "$input" | timeout 60 "$SSHCAT" -e "$rsh" "$@" >"$out" 2>"$errf"
	rc=$?
	set -e
}
show() {
	echo "  exit code $rc; stdout:"
	sed 's/^/    /' "$out"
	echo "  stderr:"
	sed 's/^/    /' "$errf"
}

# (1) a message through a remote cat comes back unchanged; cat exits 0 on our EOF
run "$QS_RSH" "$hello"$'\n' 127.0.0.1 cat
if [ $rc = 0 ] && [ "$(head -n 1 "$out")" = "$hello" ] && [ "$(tail -n 1 "$out")" = "exit-status 0" ] &&
	[ "$(wc -l <"$out")" = 2 ]; then
	pass "hello through remote cat, exit-status 0"
else
	bad "hello through remote cat"
	show
fi

# (2) the remote exit status is reported
run "$QS_RSH" "" 127.0.0.1 'exit 3'
if [ $rc = 0 ] && [ "$(cat "$out")" = "exit-status 3" ]; then
	pass "remote exit 3 gives exit-status 3"
else
	bad "remote exit status"
	show
fi

# (3) remote stderr reaches ours
run "$QS_RSH" "" 127.0.0.1 "sh -c 'echo oops >&2; exit 0'"
if [ $rc = 0 ] && grep -qx oops "$errf" && [ "$(cat "$out")" = "exit-status 0" ]; then
	pass "remote stderr forwarded"
else
	bad "remote stderr forwarded"
	show
fi

# (4) unknown host key with StrictHostKeyChecking=yes: refused, the fingerprint named
: >"$work/kh_empty"
rsh_base="ssh -p $SSHD_PORT -i $SSHD_USER_KEY"
run "$rsh_base -o UserKnownHostsFile=$work/kh_empty -o StrictHostKeyChecking=yes" "" 127.0.0.1 true
if [ $rc = 255 ] && grep -qF "$host_fp" "$errf" && grep -q "accept-new" "$errf" && [ ! -s "$work/kh_empty" ]; then
	pass "unknown host key refused, fingerprint $host_fp named"
else
	bad "unknown host key refused"
	show
fi
# the default (no StrictHostKeyChecking given) refuses too: we cannot ask
run "$rsh_base -o UserKnownHostsFile=$work/kh_empty" "" 127.0.0.1 true
if [ $rc = 255 ] && grep -qF "$host_fp" "$errf"; then
	pass "unknown host key refused by default"
else
	bad "unknown host key refused by default"
	show
fi
# a known_hosts file that does not exist yet is the same as an empty one
run "$rsh_base -o UserKnownHostsFile=$work/kh_missing -o StrictHostKeyChecking=yes" "" 127.0.0.1 true
if [ $rc = 255 ] && grep -qF "$host_fp" "$errf" && [ ! -e "$work/kh_missing" ]; then
	pass "missing known_hosts: refused"
else
	bad "missing known_hosts: refused"
	show
fi

# (5) accept-new adds the key and goes on; the file then works with StrictHostKeyChecking=yes
: >"$work/kh_new"
host_blob=$(awk '{print $2}' "$SSHD_HOST_KEY_PUB")
run "$rsh_base -o UserKnownHostsFile=$work/kh_new -o StrictHostKeyChecking=accept-new" "$hello"$'\n' 127.0.0.1 cat
if [ $rc = 0 ] && [ "$(head -n 1 "$out")" = "$hello" ] && grep -qF "$host_blob" "$work/kh_new" &&
	grep -q "Permanently added" "$errf"; then
	pass "accept-new adds the host key and connects"
else
	bad "accept-new"
	show
	cat "$work/kh_new"
fi
run "$rsh_base -o UserKnownHostsFile=$work/kh_new -o StrictHostKeyChecking=yes" "" 127.0.0.1 'exit 0'
if [ $rc = 0 ] && [ "$(cat "$out")" = "exit-status 0" ] && ! grep -q "Permanently added" "$errf"; then
	pass "the key accept-new wrote is known afterwards"
else
	bad "key written by accept-new not known afterwards"
	show
fi

# (6) a different key for [127.0.0.1]:PORT: refused even with StrictHostKeyChecking=no
ssh-keygen -q -t ed25519 -N '' -f "$work/other_host"
echo "[127.0.0.1]:$SSHD_PORT $(awk '{print $1, $2}' "$work/other_host.pub")" >"$work/kh_changed"
cp "$work/kh_changed" "$work/kh_changed.orig"
run "$rsh_base -o UserKnownHostsFile=$work/kh_changed -o StrictHostKeyChecking=no" "" 127.0.0.1 true
if [ $rc = 255 ] && grep -q "CHANGED" "$errf" && grep -qF "$work/kh_changed" "$errf" &&
	cmp -s "$work/kh_changed" "$work/kh_changed.orig"; then
	pass "changed host key refused with StrictHostKeyChecking=no"
else
	bad "changed host key"
	show
fi
# a known key of another type is refused the same way
ssh-keygen -q -t ecdsa -N '' -f "$work/other_ecdsa"
echo "[127.0.0.1]:$SSHD_PORT $(awk '{print $1, $2}' "$work/other_ecdsa.pub")" >"$work/kh_other"
run "$rsh_base -o UserKnownHostsFile=$work/kh_other -o StrictHostKeyChecking=accept-new" "" 127.0.0.1 true
if [ $rc = 255 ] && grep -q "CHANGED" "$errf"; then
	pass "host key of another type refused with accept-new"
else
	bad "host key of another type"
	show
fi

# (7) a user key the server does not know: permission denied
ssh-keygen -q -t ed25519 -N '' -f "$work/stranger"
run "ssh -p $SSHD_PORT -i $work/stranger -o UserKnownHostsFile=$SSHD_KNOWN_HOSTS -o StrictHostKeyChecking=yes" "" \
	127.0.0.1 true
if [ $rc = 255 ] && grep -qi "permission denied" "$errf"; then
	pass "unknown user key: permission denied"
else
	bad "unknown user key"
	show
fi
# a key with a passphrase is reported, never prompted for (stdin is not a terminal, but be sure)
ssh-keygen -q -t ed25519 -N 'secret words' -f "$work/locked"
run "ssh -p $SSHD_PORT -i $work/locked -o UserKnownHostsFile=$SSHD_KNOWN_HOSTS" "" 127.0.0.1 true
if [ $rc = 255 ] && grep -q "passphrase" "$errf"; then
	pass "passphrase-protected key reported, not prompted"
else
	bad "passphrase-protected key"
	show
fi

# (8) an ssh_config file with -F: Host alias -> HostName, Port, User, IdentityFile, UserKnownHostsFile
cat >"$work/ssh_config" <<EOF
Host qs-alias
  HostName 127.0.0.1
  Port $SSHD_PORT
  User $(id -un)
  IdentityFile $SSHD_USER_KEY
  UserKnownHostsFile $SSHD_KNOWN_HOSTS
EOF
run "ssh -F $work/ssh_config" "$hello"$'\n' qs-alias cat
if [ $rc = 0 ] && [ "$(head -n 1 "$out")" = "$hello" ] && [ "$(tail -n 1 "$out")" = "exit-status 0" ]; then
	pass "-F config: Host alias with HostName, Port, IdentityFile, UserKnownHostsFile"
else
	bad "-F config"
	show
fi
# the command line wins over the config (as with OpenSSH): a wrong port in the config, -p corrects it
sed "s/Port $SSHD_PORT/Port 1/" "$work/ssh_config" >"$work/ssh_config_badport"
run "ssh -F $work/ssh_config_badport -p $SSHD_PORT" "" qs-alias 'exit 4'
if [ $rc = 0 ] && [ "$(cat "$out")" = "exit-status 4" ]; then
	pass "-p overrides the config's Port"
else
	bad "-p over config"
	show
fi
# ... and the config's wrong port alone is a clear connection failure
run "ssh -F $work/ssh_config_badport -o ConnectTimeout=5" "" qs-alias true
if [ $rc = 255 ] && grep -qi "refused" "$errf"; then
	pass "connection refused reported"
else
	bad "connection refused"
	show
fi
run "ssh -F $work/no_such_config" "" qs-alias true
if [ $rc = 255 ] && grep -qF "$work/no_such_config" "$errf"; then
	pass "missing -F file reported"
else
	bad "missing -F file"
	show
fi

if [ $fail != 0 ]; then
	sshd_log
fi
exit $fail
