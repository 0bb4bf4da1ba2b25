#!/usr/bin/env python3
"""perf/merge.py OUT IN... — one report from several perf/run results directories.

For a run that was cut short (the machine restarted, a timeout): run the missing scenarios again with
`perf/run --scenario ...` into another directory, then merge. The first IN is the base; a scenario found
in a later IN replaces the same scenario of the earlier ones whole (its runs too), so a scenario that was
half done when the first run stopped is taken from the rerun only. OUT gets results.json, RESULTS.md and
ratios.png, and RESULTS.md says which run each scenario came from.
"""
import json
import os
import sys

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, PERF_DIR)
import bench  # noqa: E402  (perf/bench.py: summarize, write_json)
import report  # noqa: E402


def load(d):
    with open(os.path.join(d, "results.json")) as fh:
        return json.load(fh)


def merge(dirs):
    parts = [(d, load(d)) for d in dirs]
    base = dict(parts[0][1])
    by_name = {}  # scenario name -> (part index, scenario)
    for i, (_, res) in enumerate(parts):
        for sc in res["scenarios"]:
            by_name[sc["name"]] = (i, sc)
    names = []
    for _, res in parts:
        names += [sc["name"] for sc in res["scenarios"] if sc["name"] not in names]
    base["scenarios"] = [by_name[n][1] for n in names]
    base["runs"] = [r for n in names for r in parts[by_name[n][0]][1]["runs"] if r["scenario"] == n]
    base["links"] = {}
    for _, res in parts:
        base["links"].update(res.get("links", {}))
    base["started"] = min(res["started"] for _, res in parts)
    fins = [res.get("finished") for _, res in parts]
    base["finished"] = max(f for f in fins if f) if any(fins) else "?"
    base.pop("interrupted", None)
    base["parts"] = [{
        "dir": os.path.relpath(os.path.abspath(d), os.path.dirname(PERF_DIR)),
        "started": res["started"], "finished": res.get("finished", "?  (cut off: no end recorded)"),
        "interrupted": res.get("interrupted"), "args": res["args"], "versions": res["versions"],
        "scenarios": [n for n in names if by_name[n][0] == i],
    } for i, (d, res) in enumerate(parts)]
    tools = [t for t in bench.TOOLS if any(r["tool"] == t for r in base["runs"])]
    base["summary"] = bench.summarize(base, tools, None)
    return base


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 2
    out, dirs = argv[1], argv[2:]
    res = merge(dirs)
    os.makedirs(out, exist_ok=True)
    bench.write_json(out, res)
    report.write_markdown(out, res)
    report.write_chart(out, res)
    print("merged %d runs of %d scenarios into %s" % (len(res["runs"]), len(res["scenarios"]), out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
