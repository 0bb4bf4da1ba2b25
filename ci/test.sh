#!/usr/bin/env bash
# Installs what the build needs, builds qsync twice (release, and ASan+UBSan) and runs the whole suite
# on both: unit tests and end-to-end tests against a real OpenSSH sshd on loopback; a third,
# ThreadSanitizer build runs the sched/ tests and the multi-worker transfer (label "sched") alone.
# Ends with CTest's summary.
# Usage: ci/test.sh [--fast]   (--fast: skip the sanitizer builds)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ci/deps.sh

jobs=2
run_suite() {
	local dir=$1
	shift
	cmake -S "$root" -B "$dir" "$@" >/dev/null
	cmake --build "$dir" -j"$jobs" 2>&1 | grep -E 'error|warning|Error' || true
	cmake --build "$dir" -j"$jobs" >/dev/null
	(cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 600)
}

# ThreadSanitizer: the whole tree must configure; the sched tests and the multi-worker end-to-end test
# (label sched) are built and run.
run_tsan() {
	local dir=$1
	shift
	local targets=(test_sched_deque test_sched_topo test_sched_pool qsync)
	cmake -S "$root" -B "$dir" "$@" >/dev/null || return 1
	cmake --build "$dir" -j"$jobs" --target "${targets[@]}" 2>&1 | grep -E 'error|warning|Error' || true
	cmake --build "$dir" -j"$jobs" --target "${targets[@]}" >/dev/null || return 1
	(cd "$dir" && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp \
		ctest --output-on-failure -L sched --timeout 600)
}

start=$(date +%s)
status=0
if [ "${1:-}" != "--fast" ]; then
	echo "== ASan + UBSan build"
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DQSYNC_SANITIZE='address;undefined' || status=1
	echo "== ThreadSanitizer build (sched tests)"
	run_tsan build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSYNC_SANITIZE=thread || status=1
fi
echo "== Release build"
run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo || status=1
echo "ci/test.sh: suite took $(($(date +%s) - start)) s"
exit $status
