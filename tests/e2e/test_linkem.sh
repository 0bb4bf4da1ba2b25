#!/usr/bin/env bash
# The link emulator and the namespace plumbing (perf/netns.sh, perf/linkem): a lan pair pings both ways;
# a wan link adds the delay, the loss and the rate cap it is asked for, within stated tolerances, and
# its counters agree with what ping saw; and qs_net_down leaves no namespace and no emulator behind.
# Needs root, ping (iputils-ping), iperf3 and python3. Runs in about 20 s.
set -euo pipefail
source "$QS_FIXTURES/sshd.sh" # for qs_cleanup_add: source it before perf/netns.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../../perf/netns.sh"
export QS_LINKEM=${QS_LINKEM:-$(dirname "$QSYNC_BIN")/../perf/linkem/qs_linkem}

if [ "$(id -u)" != 0 ]; then
	echo "SKIP: needs root for network namespaces"
	exit 0
fi
for tool in ping iperf3 python3; do
	if ! command -v "$tool" >/dev/null; then
		echo "FAIL: $tool is not installed (ci/deps.sh)"
		exit 1
	fi
done
if [ ! -x "$QS_LINKEM" ]; then
	echo "FAIL: $QS_LINKEM not built (target qs_linkem)"
	exit 1
fi

fail=0
pass() { echo "PASS: $*"; }
failed() { echo "FAIL: $*"; fail=1; }
check() { if "$@"; then pass "$*"; else failed "$*"; fi; }
work=$(mktemp -d /tmp/qs-e2e-linkem.XXXXXX)
qs_cleanup_add "rm -rf '$work'"

# Every namespace and emulator made so far, for the final check (e).
made_ns=()
made_pids=()
net_up() {
	qs_net_up "$@" || return 1
	made_ns+=("$QS_NS_A" "$QS_NS_B")
	[ -n "${QS_LINKEM_PID:-}" ] && made_pids+=("$QS_LINKEM_PID")
	return 0
}
# Stops the network; a wan emulator must have exited cleanly (under ASan: no leak, no error).
net_down() {
	local kind=$QS_NET_KIND
	qs_net_down
	if [ "$kind" = wan ]; then
		if [ "${QS_LINKEM_RC:-none}" = 0 ]; then pass "qs_linkem exited cleanly"; else
			failed "qs_linkem exit status ${QS_LINKEM_RC:-none}"; fi
	fi
}
# lk_stat DIR FIELD: one counter from the emulator's stats file.
lk_stat() {
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])' \
		"$QS_LINKEM_STATS" "$1" "$2"
}
# within_sd OBSERVED N P K: true when OBSERVED successes out of N are within K binomial sd of N*P.
within_sd() {
	python3 -c 'import sys, math
o, n, p, k = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sd = math.sqrt(n * p * (1 - p))
print("  observed %d of %d, expected %.1f, sd %.1f, tolerance +-%.1f" % (o, n, n * p, sd, k * sd))
sys.exit(0 if n > 0 and abs(o - n * p) <= k * sd else 1)' "$@"
}
# ping_counts FILE: "transmitted received" from ping's summary.
ping_counts() {
	sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1 \2/p' "$1"
}

# (a) lan: a veth pair, both directions; and the same over a plain wan link.
if net_up lan; then
	check qs_in_a ping -c 3 -i 0.1 -W 2 -q "$QS_IP_B"
	check qs_in_b ping -c 3 -i 0.1 -W 2 -q "$QS_IP_A"
	net_down
else
	failed "qs_net_up lan"
fi

# (b) wan, 25 ms each way: median RTT of 40 pings is 50 ms +-5 ms. The emulator wakes within tens of
# microseconds of a release time, so the slack is for scheduling on a loaded 2-core machine.
if net_up wan 25 0 0 0; then
	check qs_in_b ping -c 2 -i 0.1 -W 2 -q "$QS_IP_A"
	qs_in_a timeout 20 ping -c 40 -i 0.05 -W 2 "$QS_IP_B" >"$work/ping_delay.txt" || true
	median=$(sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' "$work/ping_delay.txt" | sort -n |
		awk '{v[NR] = $1} END {if (NR == 0) print "none"; else if (NR % 2) print v[(NR + 1) / 2];
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2}')
	echo "  median RTT over $(grep -c 'time=' "$work/ping_delay.txt") replies: $median ms"
	check awk -v m="$median" 'BEGIN {exit !(m != "none" && m >= 45 && m <= 55)}'
	net_down
else
	failed "qs_net_up wan 25"
fi

# (c) wan, 10 % loss each way: 1000 pings 5 ms apart lose 1 - 0.9^2 = 19 % round trip, within 4
# binomial sd (+-4.96 percentage points; a false alarm about once in 16,000 runs, and the fixed seed
# makes the run repeatable). The counters must agree: what ping lost is what the emulator dropped.
if net_up wan 0 10 0 0; then
	qs_in_a timeout 20 ping -c 1000 -i 0.005 -W 1 -q "$QS_IP_B" >"$work/ping_loss.txt" || true
	net_down
	read -r tx rx < <(ping_counts "$work/ping_loss.txt") || true
	tx=${tx:-0} rx=${rx:-0}
	echo "  ping: $tx sent, $rx received"
	check test "$tx" = 1000
	check within_sd $((tx - rx)) "$tx" 0.19 4
	in_ab=$(lk_stat a2b pkts_in) drop_ab=$(lk_stat a2b drop_loss)
	in_ba=$(lk_stat b2a pkts_in) drop_ba=$(lk_stat b2a drop_loss)
	echo "  emulator: a2b $drop_ab of $in_ab dropped, b2a $drop_ba of $in_ba dropped"
	check test "$in_ab" = "$tx"
	check test "$in_ba" = $((tx - drop_ab))
	check test $((drop_ab + drop_ba)) = $((tx - rx))
	check within_sd "$drop_ab" "$in_ab" 0.10 4
	check within_sd "$drop_ba" "$in_ba" 0.10 4
else
	failed "qs_net_up wan loss"
fi

# (d) wan capped at 50 Mbit/s (5 ms each way): 3 s of iperf3 TCP stays under the cap (at most 105 %).
# On an idle machine it reaches ~90-96 % (TCP/IP headers take 3.5 % of a 1500-byte packet, slow start
# some more).
if net_up wan 5 0 50 0; then
	ip netns exec "$QS_NS_B" iperf3 -s -1 -B "$QS_IP_B" -p 5201 >"$work/iperf_server.txt" 2>&1 &
	srv=$!
	qs_cleanup_add "kill $srv 2>/dev/null || true"
	for ((i = 0; i < 50; i++)); do
		[ -n "$(qs_in_b ss -Hltn "sport = :5201")" ] && break
		sleep 0.1
	done
	qs_in_a timeout 20 iperf3 -c "$QS_IP_B" -p 5201 -t 3 -J >"$work/iperf.json" 2>&1 || true
	kill "$srv" 2>/dev/null || true
	wait "$srv" 2>/dev/null || true
	net_down
	mbit=$(python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6))' \
		"$work/iperf.json" 2>/dev/null || echo 0)
	echo "  iperf3 TCP through a 50 Mbit/s cap: $mbit Mbit/s (queue drops: $(lk_stat a2b drop_queue))"
	# the cap holds (never more than 5 % over it) and traffic flows; how close TCP comes to the cap
	# depends on how busy the machine is (39.8 Mbit/s once, with the ASan suite running beside it), so
	# that is not asserted here: perf/ measures it
	check awk -v m="$mbit" 'BEGIN {exit !(m > 5 && m <= 52.5)}'
else
	failed "qs_net_up wan rate"
fi

# (f) duplication, corruption and reordering are applied at the rates asked (4 sd), and ping sees them:
# duplicates come back as DUP!, a corrupted echo request fails its ICMP checksum and gets no reply.
# Only requests are corrupted: ping reads a corrupted reply's timestamp and can lose its way.
if QS_LINKEM_ARGS="--dup 20 --a2b-corrupt 10 --reorder 20" net_up wan 2 0 0 0; then
	qs_in_a timeout 20 ping -c 300 -i 0.005 -W 1 -w 10 "$QS_IP_B" >"$work/ping_misc.txt" || true
	net_down
	in_ab=$(lk_stat a2b pkts_in) out_ab=$(lk_stat a2b pkts_out) corrupted=$(lk_stat a2b corrupted)
	check within_sd "$(lk_stat a2b duplicated)" "$in_ab" 0.20 4
	check within_sd "$corrupted" "$in_ab" 0.10 4
	check within_sd "$(lk_stat a2b reordered)" "$out_ab" 0.20 4
	check grep -q 'DUP!' "$work/ping_misc.txt"
	# every request the emulator delivered uncorrupted is answered (duplicates included)
	check test "$(lk_stat b2a pkts_in)" = $((out_ab - corrupted))
else
	failed "qs_net_up wan dup/corrupt/reorder"
fi

# (e) nothing is left: no namespace by any name we used, no emulator with any PID we recorded.
left=$(ip netns list | awk '{print $1}')
for ns in "${made_ns[@]}"; do
	if grep -qFx "$ns" <<<"$left"; then failed "namespace $ns left behind"; else pass "namespace $ns gone"; fi
done
for pid in "${made_pids[@]}"; do
	if [ -e "/proc/$pid" ]; then failed "qs_linkem $pid still running"; else pass "qs_linkem $pid gone"; fi
done
check test "${#made_pids[@]}" -ge 4
exit $fail
