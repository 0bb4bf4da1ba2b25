"""RESULTS.md and the ratio chart from results.json (perf/bench.py). Also runnable on its own:

    python3 perf/report.py perf/results/<date>      # rewrites RESULTS.md and ratios.png
"""

import json
import os
import shutil
import subprocess
import sys

LABELS = {
    "qsync": "qsync (QUIC)",
    "qsync-ssh": "qsync (SSH-only)",
    "rsync": "rsync -a (OpenSSH)",
    "scp": "scp -r",
    "tar-ssh": "tar c | ssh tar x",
    "cp": "cp -a (local ceiling)",
    "iperf3-tcp": "iperf3 TCP (link ceiling)",
    "iperf3-udp": "iperf3 UDP (link ceiling)",
}


def f(v, fmt="%.2f"):
    return "–" if v is None else fmt % v


def md(text):
    """Text for a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def mib(v):
    return "–" if v is None else "%.0f" % (v / 2**20)


def size(n):
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return "%.1f %s" % (n / div, unit)
    return "%d B" % n


def write_markdown(out, res):
    m = res["machine"]
    v = res["versions"]
    L = []
    w = L.append
    w("# qsync benchmark results")
    w("")
    if res.get("parts"):
        w("Merged by `perf/merge.py` from %d runs, %s → %s; %d round(s) per scenario, timeout %g s per run." % (
            len(res["parts"]), res["started"], res.get("finished", "?"), res["repeat"], res["timeout_s"]))
    else:
        w("Run %s → %s%s; `perf/run %s`; %d round(s) per scenario, timeout %g s per run." % (
            res["started"], res.get("finished", "?"), " (**interrupted**: %s)" % res["interrupted"]
            if res.get("interrupted") else "", " ".join(res["args"]), res["repeat"], res["timeout_s"]))
    w("")
    for p in res.get("parts", []):
        # merged by perf/merge.py: which run each scenario comes from
        w("- from `%s` (%s → %s%s; `perf/run %s`; qsync built from %s): %s" % (
            p["dir"], p["started"], p["finished"], ", interrupted: %s" % p["interrupted"] if p.get("interrupted")
            else "", " ".join(p["args"]), p["versions"].get("qsync_source", "not recorded"),
            ", ".join(p["scenarios"]) or "nothing (every scenario it ran was run again later)"))
    if res.get("parts"):
        w("")
    w("## Machine")
    w("")
    w("- CPU: %s, %s cores; memory %s GiB; kernel %s%s" % (
        m.get("cpu", "?"), m.get("cores", "?"), m.get("memory_gib", "?"), m.get("kernel", "?"),
        "; virtualization: %s" % m["virtualization"] if m.get("virtualization") else ""))
    d = m.get("disk", {})
    w("- Disk (source data): %s, %s, %s GB%s%s" % (
        d.get("device", "?"), d.get("fs", "?"), d.get("size_gb", "?"),
        ", rotational flag %s" % d["rotational_flag"] if "rotational_flag" in d else "",
        "; %s" % d["note"] if d.get("note") else ""))
    dfs = m.get("destination_fs")
    if isinstance(dfs, dict):
        w("- Destinations: a fresh %s of %s GB made for the run (the source data disk's ext4 has no "
          "journal, and there its inode allocator slows every file creation right after a tree is deleted: "
          "see ScratchFs in perf/bench.py)." % (dfs.get("fs", "?"), dfs.get("size_gb", "?")))
    elif dfs:
        w("- Destinations: %s." % dfs)
    w("- Every link is emulated on this one machine, so both sides share its %s cores." % m.get("cores", "?"))
    w("- Versions: %s" % "; ".join("%s: %s" % (k, v[k]) for k in v))
    w("")
    w("## Links")
    w("")
    for name, cfg in res["links"].items():
        w("- `%s`: %s" % (name, cfg["desc"]))
    w("")
    w("## Method")
    w("")
    w("- Every tool runs on the same data and link, interleaved: in each round every tool runs once, in "
      "an order shuffled per round (seeded), so drift of the machine hits all tools alike. Median, min and "
      "max are over the rounds that succeeded.")
    if res.get("fsync"):
        flush = ("Every file is flushed to the disk before it is in place (`--fsync`: `qsync --fsync` "
                 "beside `rsync --fsync`; tools that cannot flush are left out), so times include "
                 "write-back to the destination's disk.")
    else:
        flush = ("Destinations are written to the page cache and not flushed by any tool (none fsyncs), so "
                 "times exclude write-back to disk.")
    if res.get("cold"):
        w("- Page cache, the same for every run: before each run the previous destination is deleted, "
          "`sync` is run and the page cache, dentries and inodes are dropped (`--cold`), so every tool "
          "reads its source from the disk. " + flush + " The re-sync row runs the same command again "
          "onto the completed destination, after dropping the caches once more.")
    else:
        w("- Page cache, the same for every run: before each run the whole source tree is read (warm), "
          "the previous destination is deleted and `sync` is run. " + flush + " The re-sync row runs "
          "the same command again at once onto the completed destination (source and destination both "
          "cached).")
    w("- Data is incompressible (Python `random.Random(seed).randbytes`), reproducible from the seed, and "
      "cached under perf/data/. SSH uses OpenSSH's default cipher and no compression for every tool.")
    w("- Every run is checked: file count, directory count and total bytes of the destination against the "
      "source, and in the first round every byte. A failed, timed-out or incorrect run is shown as such, "
      "never dropped.")
    w("- Time is the wall time of the client command, from start to exit (SSH connection set-up included).")
    w("- CPU per side: the client command tree runs in one cgroup, the whole sshd (started into its own "
      "cgroup, so each session, its crypto and the remote tool are in it) in another; CPU is the "
      "difference of cpuacct.usage (v1) or cpu.stat usage_usec (v2) over the run, divided by the GB moved "
      "(10^9 bytes). The remote side of the `loopback` link shares the machine, so both columns compete "
      "for the same %s cores." % m.get("cores", "?"))
    w("- Peak memory per side: the peak of the cgroup's *anonymous* memory (%s), sampled every 20 ms. "
      "Not memory.max_usage_in_bytes: a memory cgroup is charged for the page cache its processes "
      "write, so that figure grows with the size of the data for every tool (it is kept in results.json "
      "as peak_incl_cache_*). Anonymous memory is what the tools allocate (buffers, windows, file lists); "
      "it excludes mapped binaries and libraries." % (res.get("memory_metric") or "not measured"))
    w("- Speed vs rsync = rsync's median time / the tool's median time in the same scenario and run "
      "(> 1: faster than `rsync -a`). Re-sync rows compare with rsync's re-sync row.")
    w("- iperf3 rows are the link's raw capacity over the same path (client in A, server in B), one TCP "
      "stream and UDP at the link's rate cap (10 Gbit/s when uncapped), received throughput, %s each; "
      "their 'seconds' is the time the data set's bytes would take at that rate." % (
          "1 s" if res.get("quick") else "3 s (5 s on wan links)"))
    w("- `cp -a` is the local ceiling (same source and destination filesystems, no network), measured on "
      "loopback only.")
    w("- Re-sync: rsync skips files whose size and mtime match; qsync does the same since its quick "
      "check (commit adf3866); a qsync built before it sends every file again. scp and tar always do.")
    w("")
    notes = os.path.join(out, "notes.md")
    if os.path.exists(notes):
        w("## Notes on this run")
        w("")
        w(open(notes).read().strip())
        w("")
    w("## Results")
    w("")
    for sc in res["scenarios"]:
        rows = [r for r in res["summary"] if r["scenario"] == sc["name"]]
        w("### %s" % sc["name"])
        w("")
        w("%s: %s, %s files, %s directories; link: %s." % (
            sc["data_desc"], size(sc["bytes"]), "{:,}".format(sc["files"]), "{:,}".format(sc["dirs"]),
            sc["link_desc"]))
        w("")
        w("| tool | ok/runs | median s | min s | max s | MB/s | files/s | CPU s/GB client | CPU s/GB server "
          "| peak RSS client MiB | peak RSS server MiB | speed vs rsync |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            if r.get("median_s") is None:
                w("| %s | %d/%d | %s: %s | | | | | | | | | |" % (
                    md(r["label"]), r["ok"], r["runs"], r["status"], r.get("reason", "").replace("|", "/")
                    .replace("\n", " ")[:160]))
                continue
            w("| %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                md(r["label"]), r["ok"], r["runs"], f(r["median_s"], "%.3f"), f(r["min_s"], "%.3f"),
                f(r["max_s"], "%.3f"), f(r["mb_per_s"], "%.1f"), f(r.get("files_per_s"), "%.0f" if (r.get("files_per_s") or 0) >= 100 else "%.3g"),
                f(r.get("cpu_client_s_per_gb")), f(r.get("cpu_server_s_per_gb")),
                mib(r.get("peak_anon_client_bytes")), mib(r.get("peak_anon_server_bytes")),
                f(r.get("speed_vs_rsync"), "%.2f×")))
        probs = [p for r in rows for p in r.get("problems", []) if r.get("median_s") is not None]
        if probs:
            w("")
            w("Runs that did not succeed: " + "; ".join(p.replace("\n", " ")[:200] for p in probs))
        w("")
    w("## qsync against rsync")
    w("")
    w("| scenario | qsync s | rsync s | qsync speed vs rsync | re-sync: qsync s | rsync s | ratio |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for sc in res["scenarios"]:
        def get(tool, mode):
            return next((r for r in res["summary"] if r["scenario"] == sc["name"] and r["tool"] == tool
                         and r["mode"] == mode), {})
        q, rs, qr, rr = get("qsync", "fresh"), get("rsync", "fresh"), get("qsync", "resync"), get("rsync", "resync")
        w("| %s | %s | %s | %s | %s | %s | %s |" % (
            sc["name"], f(q.get("median_s"), "%.3f") if q.get("median_s") else q.get("status", "–"),
            f(rs.get("median_s"), "%.3f") if rs.get("median_s") else rs.get("status", "–"),
            f(q.get("speed_vs_rsync"), "%.2f×"),
            f(qr.get("median_s"), "%.3f") if qr.get("median_s") else qr.get("status", "–"),
            f(rr.get("median_s"), "%.3f") if rr.get("median_s") else rr.get("status", "–"),
            f(qr.get("speed_vs_rsync"), "%.2f×")))
    w("")
    w("![speed relative to rsync -a](ratios.png)")
    w("")
    with open(os.path.join(out, "RESULTS.md"), "w") as fh:
        fh.write("\n".join(L))


def write_chart(out, res, log=print):
    """ratios.png: per scenario, every tool's speed relative to rsync -a (fresh copies), log scale."""
    tools = [t for t in LABELS if any(r["tool"] == t and r["mode"] == "fresh" for r in res["summary"])]
    scen = [s["name"] for s in res["scenarios"]]
    dat = os.path.join(out, "ratios.dat")
    with open(dat, "w") as fh:
        fh.write("scenario\t" + "\t".join('"%s"' % LABELS[t] for t in tools) + "\n")
        for s in scen:
            vals = []
            for t in tools:
                r = next((r for r in res["summary"] if r["scenario"] == s and r["tool"] == t
                          and r["mode"] == "fresh"), None)
                v = r.get("speed_vs_rsync") if r else None
                vals.append("%.4f" % v if v else "NaN")
            fh.write('"%s"\t%s\n' % (s, "\t".join(vals)))
    valid = 0
    with open(dat) as fh:
        valid = sum(1 for line in fh.readlines()[1:] for v in line.split("\t")[1:] if v.strip() != "NaN")
    png = os.path.join(out, "ratios.png")
    gp = os.path.join(out, "ratios.gp")
    width = max(900, 120 + len(scen) * 35 * max(1, len(tools)))
    with open(gp, "w") as fh:
        fh.write("""set terminal pngcairo size %d,600 noenhanced font ",10"
set output "%s"
set title "Speed relative to rsync -a over OpenSSH (higher is faster; log scale)"
set datafile missing "NaN"
set datafile separator "\\t"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [0.01:*]
set grid ytics
set ylabel "rsync time / tool time"
set xtics rotate by -30 nomirror
set key outside right top vertical
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "black"
plot for [i=2:%d] "%s" using i:xtic(1) title columnheader(i)
""" % (width, png, len(tools) + 1, dat) if valid else """set terminal pngcairo size 900,300 noenhanced
set output "%s"
unset border
unset tics
set xrange [0:1]
set yrange [0:1]
set label "no ratio to plot: rsync -a has no successful run in these results" at 0.5,0.5 center
plot 2 notitle
""" % png)
    if not shutil.which("gnuplot"):
        log("chart: gnuplot not found (install gnuplot-nox)")
        return
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        log("chart: gnuplot failed: %s" % r.stderr.strip()[-500:])


if __name__ == "__main__":
    d = sys.argv[1]
    with open(os.path.join(d, "results.json")) as fh:
        results = json.load(fh)
    write_markdown(d, results)
    write_chart(d, results)
