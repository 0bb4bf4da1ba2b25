# Two network namespaces joined by a link, for benchmarks and reliability tests. Source it (bash).
# `lan` joins them by a veth pair; `wan` gives each a tun device and joins those through qs_linkem
# (perf/linkem), which adds delay, jitter, loss and a rate cap. Must run as root. See perf/LINKEM.md.
#
#   qs_net_up KIND [DELAY_MS LOSS_PCT RATE_MBIT JITTER_MS]
#                 KIND lan or wan; the numbers apply to each direction (RTT = 2 x DELAY_MS), rate 0 =
#                 uncapped; extra qs_linkem options may be given in QS_LINKEM_ARGS (e.g. "--reorder 1").
#                 Exports QS_NS_A QS_NS_B QS_IP_A (10.201.N.1) QS_IP_B (10.201.N.2) QS_NET_KIND and,
#                 for wan, QS_LINKEM_STATS (counters as JSON, written when the emulator stops and on
#                 SIGUSR1 to QS_LINKEM_PID) and QS_LINKEM_PID. One network at a time per shell.
#   qs_net_down   stops qs_linkem (its PID only) and deletes both namespaces; safe to call twice.
#                 QS_LINKEM_STATS stays readable until the shell exits; QS_LINKEM_RC is the
#                 emulator's exit status (0 = clean; its stderr is printed otherwise).
#   qs_in_a CMD…  run CMD inside namespace A (ip netns exec); qs_in_b likewise for B.
#
# Cleanup is registered with qs_cleanup_add (tests/fixtures/sshd.sh) so it runs on EXIT, INT and TERM,
# also after a failure. If that function is not defined when this file is sourced, an equivalent one is
# defined here. A script using both should source sshd.sh first: sourcing it resets the cleanup list.
# Call qs_net_up in the main shell, not inside $( ) or a pipeline, or the trap and the state are lost.
# qs_linkem is $QS_LINKEM, else ../build/perf/linkem/qs_linkem beside this file, else ../build*/….

_QS_NET_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! declare -F qs_cleanup_add >/dev/null; then
	# the same mechanism as tests/fixtures/sshd.sh: one list, run last-added first from one trap
	QS_CLEANUP=()
	QS_CLEANUP_TRAP=0
	qs_cleanup_run() {
		local i
		for ((i = ${#QS_CLEANUP[@]} - 1; i >= 0; i--)); do
			eval "${QS_CLEANUP[i]}" || true
		done
		QS_CLEANUP=()
	}
	qs_cleanup_add() {
		local cmd=$1
		if [ "$QS_CLEANUP_TRAP" = 0 ]; then
			local prev
			prev=$(trap -p EXIT)
			if [ -n "$prev" ]; then
				eval "set -- $prev"
				QS_CLEANUP+=("$3")
			fi
			# shellcheck disable=SC2154 # rc is set inside the trap
			trap 'rc=$?; qs_cleanup_run; exit $rc' EXIT
			trap 'qs_cleanup_run; trap - EXIT; exit 130' INT
			trap 'qs_cleanup_run; trap - EXIT; exit 143' TERM
			QS_CLEANUP_TRAP=1
		fi
		QS_CLEANUP+=("$cmd")
	}
fi

_QS_NET_SEQ=0
_QS_NET_UP=0
_QS_NET_TMP=
_QS_NET_CLEANUP_ADDED=0

qs_in_a() { ip netns exec "$QS_NS_A" "$@"; }
qs_in_b() { ip netns exec "$QS_NS_B" "$@"; }

_qs_net_find_linkem() {
	local c
	if [ -n "${QS_LINKEM:-}" ]; then
		[ -x "$QS_LINKEM" ] && { echo "$QS_LINKEM"; return 0; }
		echo "qs_net_up: QS_LINKEM=$QS_LINKEM is not executable" >&2
		return 1
	fi
	c=$_QS_NET_DIR/../build/perf/linkem/qs_linkem
	[ -x "$c" ] && { echo "$c"; return 0; }
	# newest of any other build directory
	# shellcheck disable=SC2012 # build directory names are ours and plain
	c=$(ls -t "$_QS_NET_DIR"/../build*/perf/linkem/qs_linkem 2>/dev/null | head -n1)
	[ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
	echo "qs_net_up: qs_linkem not found: build target qs_linkem or set QS_LINKEM" >&2
	return 1
}

# True while PID runs and is not a zombie.
_qs_net_alive() {
	local st
	[ -r "/proc/$1/stat" ] || return 1
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

_qs_net_num() {
	[[ $2 =~ ^[0-9]+([.][0-9]+)?$ ]] && return 0
	echo "qs_net_up: $1 must be a non-negative number, got '$2'" >&2
	return 1
}

qs_net_up() {
	local kind=${1:-} delay=${2:-0} loss=${3:-0} rate=${4:-0} jitter=${5:-0}
	local n a b ta tb pidfile i ns
	case $kind in
	lan | wan) ;;
	*)
		echo "usage: qs_net_up lan|wan [DELAY_MS LOSS_PCT RATE_MBIT JITTER_MS]" >&2
		return 2
		;;
	esac
	if [ "$_QS_NET_UP" = 1 ]; then
		echo "qs_net_up: a network is already up ($QS_NS_A, $QS_NS_B): qs_net_down first" >&2
		return 1
	fi
	_qs_net_num DELAY_MS "$delay" && _qs_net_num LOSS_PCT "$loss" && _qs_net_num RATE_MBIT "$rate" &&
		_qs_net_num JITTER_MS "$jitter" || return 2
	if [ "$(id -u)" != 0 ]; then
		echo "qs_net_up: needs root (network namespaces)" >&2
		return 1
	fi
	if [ "$_QS_NET_CLEANUP_ADDED" = 0 ]; then
		qs_cleanup_add "qs_net_down; _qs_net_rmtmp"
		_QS_NET_CLEANUP_ADDED=1
	fi
	if [ -z "$_QS_NET_TMP" ] || [ ! -d "$_QS_NET_TMP" ]; then
		_QS_NET_TMP=$(mktemp -d "${TMPDIR:-/tmp}/qs-net.$$.XXXXXX") || return 1
	fi
	_QS_NET_SEQ=$((_QS_NET_SEQ + 1))
	# names unique per shell and per call; "qsva" + 7-digit pid + "s" + seq stays within 15 characters
	a=qsa$$s$_QS_NET_SEQ
	b=qsb$$s$_QS_NET_SEQ
	n=$(($$ % 250 + 1))
	QS_NS_A=$a
	QS_NS_B=$b
	QS_IP_A=10.201.$n.1
	QS_IP_B=10.201.$n.2
	QS_NET_KIND=$kind
	QS_LINKEM_STATS=
	QS_LINKEM_PID=
	QS_LINKEM_RC=
	_QS_NET_UP=1
	export QS_NS_A QS_NS_B QS_IP_A QS_IP_B QS_NET_KIND QS_LINKEM_STATS QS_LINKEM_PID

	if ! ip netns add "$a" || ! ip netns add "$b"; then
		echo "qs_net_up: cannot create namespaces $a $b" >&2
		qs_net_down
		return 1
	fi
	for ns in "$a" "$b"; do
		if ! ip -n "$ns" link set lo up ||
			! ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
				net.ipv6.conf.default.disable_ipv6=1 >/dev/null; then
			qs_net_down
			return 1
		fi
	done

	if [ "$kind" = lan ]; then
		ta=qsva$$s$_QS_NET_SEQ
		tb=qsvb$$s$_QS_NET_SEQ
		if ! ip link add "$ta" netns "$a" mtu 1500 type veth peer name "$tb" netns "$b" mtu 1500; then
			echo "qs_net_up: cannot create veth pair" >&2
			qs_net_down
			return 1
		fi
	else
		local linkem
		linkem=$(_qs_net_find_linkem) || {
			qs_net_down
			return 1
		}
		ta=qsta$$s$_QS_NET_SEQ
		tb=qstb$$s$_QS_NET_SEQ
		pidfile=$_QS_NET_TMP/linkem$_QS_NET_SEQ.pid
		QS_LINKEM_STATS=$_QS_NET_TMP/linkem$_QS_NET_SEQ.stats.json
		rm -f "$pidfile" "$QS_LINKEM_STATS"
		# shellcheck disable=SC2086 # QS_LINKEM_ARGS is a list of words on purpose
		"$linkem" --ns-a "$a" --tun-a "$ta" --ns-b "$b" --tun-b "$tb" --mtu 1500 \
			--delay-ms "$delay" --loss "$loss" --rate-mbit "$rate" --jitter-ms "$jitter" \
			--seed "${QS_LINKEM_SEED:-1}" ${QS_LINKEM_ARGS:-} \
			--stats-file "$QS_LINKEM_STATS" --pidfile "$pidfile" \
			</dev/null 2>>"$_QS_NET_TMP/linkem.log" &
		QS_LINKEM_PID=$!
		# the pidfile appears once both tun devices are open
		for ((i = 0; i < 100; i++)); do
			[ -s "$pidfile" ] && break
			_qs_net_alive "$QS_LINKEM_PID" || break
			sleep 0.05
		done
		if [ ! -s "$pidfile" ]; then
			echo "qs_net_up: qs_linkem did not start:" >&2
			cat "$_QS_NET_TMP/linkem.log" >&2
			qs_net_down
			return 1
		fi
	fi
	if ! ip -n "$a" addr add "$QS_IP_A/24" dev "$ta" || ! ip -n "$b" addr add "$QS_IP_B/24" dev "$tb" ||
		! ip -n "$a" link set "$ta" up || ! ip -n "$b" link set "$tb" up; then
		echo "qs_net_up: cannot configure $ta/$tb" >&2
		qs_net_down
		return 1
	fi
	# a tun device is ready now; a veth pair needs a moment for its carrier: wait until A reaches B
	# (not on wan: the probe would show in the emulator's counters and could be lost)
	[ "$kind" = wan ] && return 0
	for ((i = 0; i < 50; i++)); do
		ip netns exec "$a" ping -c1 -W1 -q "$QS_IP_B" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "qs_net_up: $QS_IP_B does not answer from $a" >&2
	qs_net_down
	return 1
}

qs_net_down() {
	local pid=${QS_LINKEM_PID:-} i ns
	if [ -n "$pid" ]; then
		if _qs_net_alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			for ((i = 0; i < 100; i++)); do
				_qs_net_alive "$pid" || break
				sleep 0.05
			done
			if _qs_net_alive "$pid"; then
				echo "qs_net_down: qs_linkem $pid ignores SIGTERM; killing it" >&2
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
		# its exit status: 0 after a clean SIGTERM; anything else (a sanitizer report, a dead
		# direction) is worth seeing
		QS_LINKEM_RC=0
		wait "$pid" 2>/dev/null || QS_LINKEM_RC=$?
		export QS_LINKEM_RC
		if [ "$QS_LINKEM_RC" != 0 ]; then
			echo "qs_net_down: qs_linkem $pid exited with status $QS_LINKEM_RC; its log:" >&2
			tail -n 40 "$_QS_NET_TMP/linkem.log" >&2 2>/dev/null || true
		fi
		QS_LINKEM_PID=
	fi
	if [ "$_QS_NET_UP" = 1 ]; then
		for ns in "${QS_NS_A:-}" "${QS_NS_B:-}"; do
			if [ -n "$ns" ] && [ -e "/var/run/netns/$ns" ]; then
				ip netns del "$ns" 2>/dev/null || echo "qs_net_down: cannot delete namespace $ns" >&2
			fi
		done
		_QS_NET_UP=0
	fi
	return 0
}

_qs_net_rmtmp() {
	if [ -n "$_QS_NET_TMP" ] && [ -d "$_QS_NET_TMP" ]; then
		rm -rf "$_QS_NET_TMP"
	fi
	_QS_NET_TMP=
}
