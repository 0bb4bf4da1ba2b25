#!/usr/bin/env bash
# Smoke test of the benchmark harness: `perf/run --quick` runs and writes well-formed output
# (results.json, RESULTS.md, the PNG chart). It checks form only, never a timing.
# Environment (from CTest): QSYNC_BIN, the qsync to use (perf/run does not rebuild it here).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
: "${QSYNC_BIN:?QSYNC_BIN must name the qsync binary}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/qs-perf-quick.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# what a benchmark running at the same time (or a killed one) owns is not ours to judge: compare the
# harness's cgroups and scratch mounts after this run with those that were there before it
harness_leftovers() {
	{ ls -d /sys/fs/cgroup/*/qsperf-* /sys/fs/cgroup/memory/*/*/qsperf-* 2>/dev/null || true; } | sort
	{ awk '$2 ~ /qsperf-fs\./ {print "mount " $2}' /proc/mounts || true; } | sort
}
harness_leftovers >"$tmp/before"
# fails the test if WHO left a cgroup or mount that was not there before
no_leftovers() {
	harness_leftovers >"$tmp/after"
	if new=$(comm -13 "$tmp/before" "$tmp/after") && [ -n "$new" ]; then
		echo "FAIL: $1 left behind:"
		echo "$new"
		exit 1
	fi
}

# the data is generated into the temp dir too, so the test leaves nothing in the source tree
"$repo/perf/run" --quick --qsync "$QSYNC_BIN" --out "$tmp/out" --data-dir "$tmp/data" >"$tmp/log" 2>&1 || {
	echo "FAIL: perf/run --quick exited $?"
	tail -n 40 "$tmp/log"
	exit 1
}

python3 - "$tmp/out" "$repo/perf" <<'PYEOF'
import json, os, sys
out, perf = sys.argv[1], sys.argv[2]
sys.path.insert(0, perf)
import bench
fail = []
with open(os.path.join(out, "results.json")) as f:
    res = json.load(f)  # must parse
scen = {s["name"] for s in res["scenarios"]}
want = {"loopback/" + d for d in bench.DEFAULT_DATA}
if scen != want:
    fail.append("scenarios %s, expected %s" % (sorted(scen), sorted(want)))
for s in sorted(want):
    for t in bench.TOOLS:
        modes = ["fresh"] + (["resync"] if t in bench.RESYNC_TOOLS else [])
        for m in modes:
            rows = [r for r in res["summary"] if r["scenario"] == s and r["tool"] == t and r["mode"] == m]
            if len(rows) != 1:
                fail.append("%s %s %s: %d summary rows" % (s, t, m, len(rows)))
                continue
            r = rows[0]
            med = r.get("median_s")
            if isinstance(med, (int, float)) and med > 0:
                continue
            if r.get("status") in ("n/a", "failed", "timeout", "incorrect") and r.get("reason"):
                print("note: %s %s %s: %s: %s" % (s, t, m, r["status"], r["reason"][:120]))
                continue
            fail.append("%s %s %s: neither a median nor a reason: %r" % (s, t, m, r))
    # the reference tool must have worked, or no ratio means anything
    ok = [r for r in res["summary"] if r["scenario"] == s and r["tool"] == "rsync" and r.get("median_s")]
    if not ok:
        fail.append("%s: rsync has no result" % s)
if os.geteuid() == 0 and not isinstance(res["machine"].get("destination_fs"), dict):
    fail.append("as root the destinations should be on a scratch ext4: %r" % res["machine"].get("destination_fs"))
if len(res["runs"]) == 0:
    fail.append("no runs recorded")
with open(os.path.join(out, "RESULTS.md")) as f:
    md = f.read()
if "| tool | ok/runs | median s | min s | max s | MB/s | files/s |" not in md:
    fail.append("RESULTS.md has no table header")
for s in want:
    if "### " + s not in md:
        fail.append("RESULTS.md has no section for " + s)
with open(os.path.join(out, "ratios.png"), "rb") as f:
    if f.read(8) != b"\x89PNG\r\n\x1a\n":
        fail.append("ratios.png is not a PNG")
if fail:
    print("FAIL:\n  " + "\n  ".join(fail))
    sys.exit(1)
print("ok: %d runs, %d summary rows" % (len(res["runs"]), len(res["summary"])))
PYEOF
# merging a run with itself (a rerun of every scenario) keeps each scenario once, from the later run
"$repo/perf/merge.py" "$tmp/merged" "$tmp/out" "$tmp/out" >/dev/null
python3 - "$tmp/out" "$tmp/merged" <<'PYEOF'
import json, sys
a, m = (json.load(open(d + "/results.json")) for d in sys.argv[1:3])
fail = []
if [s["name"] for s in m["scenarios"]] != [s["name"] for s in a["scenarios"]]:
    fail.append("merged scenarios differ")
if len(m["runs"]) != len(a["runs"]) or len(m["summary"]) != len(a["summary"]):
    fail.append("merged %d runs / %d rows, expected %d / %d" % (len(m["runs"]), len(m["summary"]),
                                                             len(a["runs"]), len(a["summary"])))
if [p["scenarios"] for p in m["parts"]] != [[], [s["name"] for s in a["scenarios"]]]:
    fail.append("parts: %r" % [p["scenarios"] for p in m["parts"]])
if "Merged by `perf/merge.py` from 2 runs" not in open(sys.argv[2] + "/RESULTS.md").read():
    fail.append("merged RESULTS.md does not say it was merged")
if fail:
    print("FAIL: merge:\n  " + "\n  ".join(fail))
    sys.exit(1)
print("ok: merge")
PYEOF

# nothing the harness made may outlive it
no_leftovers "the harness"
# --qsync-args reaches qsync itself: an option it does not know fails the qsync row with qsync's own
# usage error (and the run's command line in RESULTS.md shows it)
"$repo/perf/run" --quick --scenario loopback/small --tools qsync --no-resync --qsync "$QSYNC_BIN" \
	--qsync-args=--no-such-option --out "$tmp/args" --data-dir "$tmp/data" >"$tmp/args.log" 2>&1 || true
python3 - "$tmp/args" <<'PYEOF' || exit 1
import json, sys
d = sys.argv[1]
rows = [r for r in json.load(open(d + "/results.json"))["summary"] if r["tool"] == "qsync"]
fail = []
if len(rows) != 1 or rows[0].get("status") != "failed" or "--no-such-option" not in rows[0].get("reason", ""):
    fail.append("qsync row: %r" % rows)
if '--qsync-args=--no-such-option' not in open(d + "/RESULTS.md").read():
    fail.append("RESULTS.md does not show the options")
if fail:
    print("FAIL: --qsync-args:\n  " + "\n  ".join(fail))
    sys.exit(1)
print("ok: --qsync-args")
PYEOF

# interrupted in the middle of a wan scenario (namespaces, emulator, sshd up; a tool running): the
# harness stops with 130, says so in results.json and RESULTS.md, and takes everything down
"$repo/perf/run" --quick --scenario wan50/small --qsync "$QSYNC_BIN" --out "$tmp/int" --data-dir "$tmp/data" \
	>"$tmp/int.log" 2>&1 &
bench=$! # perf/run execs bench.py: this is its pid
linkpid=
for ((i = 0; i < 1200; i++)); do
	[ -z "$linkpid" ] && linkpid=$(pgrep -P "$bench" -f 'perf/link.sh' | head -n 1 || true)
	grep -q 'wan50/small round 1/1' "$tmp/int.log" 2>/dev/null && break # the link is up, tools start
	kill -0 "$bench" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$linkpid" ] || ! kill -0 "$bench" 2>/dev/null; then
	echo "FAIL: the wan run did not get going (link.sh pid '${linkpid}')"
	tail -n 20 "$tmp/int.log"
	exit 1
fi
sleep 2 # into the first tool's run
kill -TERM "$bench"
rc=0
wait "$bench" || rc=$?
if [ "$rc" != 130 ]; then
	echo "FAIL: interrupted perf/run exited $rc, expected 130"
	tail -n 20 "$tmp/int.log"
	exit 1
fi
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r.get("interrupted") else 1)' \
	"$tmp/int/results.json" || { echo "FAIL: results.json does not say it was interrupted"; exit 1; }
grep -q '\*\*interrupted\*\*' "$tmp/int/RESULTS.md" || { echo "FAIL: RESULTS.md does not say it was interrupted"; exit 1; }
if ip netns list | grep -Eq "^qs[ab]${linkpid}s"; then
	echo "FAIL: the interrupted run left its namespaces:"
	ip netns list | grep -E "^qs[ab]${linkpid}s"
	exit 1
fi
if kill -0 "$linkpid" 2>/dev/null; then
	echo "FAIL: link.sh ($linkpid) outlived the interrupted run"
	exit 1
fi
echo "ok: interrupted run cleaned up"

no_leftovers "the interrupted harness"
if ls "$tmp"/data/scratch-*.img >/dev/null 2>&1; then
	echo "FAIL: the scratch filesystem image was left behind"
	exit 1
fi
echo "PASS: perf/run --quick"
