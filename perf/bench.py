#!/usr/bin/env python3
"""qsync benchmark harness: qsync against rsync, scp and tar-over-ssh on the same data and link.

Normally started by perf/run (which builds qsync first). See perf/README.md for the method.
Standard library only.
"""

import argparse
import datetime
import fnmatch
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(PERF_DIR)
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# ---------------------------------------------------------------------------------------------- data

# kind uniform: FILES files of SIZE bytes, PER_DIR to a leaf directory, leaves nested two levels deep.
# kind single: one file. kind mixed: a source-code-like tree (DIRS directories, FILES files of many sizes).
# kind tiny: like uniform, half the files empty, the rest 1..100 bytes.
DATA = {
    "small": dict(kind="uniform", files=10000, size=10 * KiB, per_dir=100,
                  desc="10,000 files of 10 KiB, nested (100 leaf dirs)"),
    "medium": dict(kind="uniform", files=1000, size=1 * MiB, per_dir=100,
                   desc="1,000 files of 1 MiB"),
    "large": dict(kind="single", size=1 * GiB, desc="one file of 1 GiB"),
    "mixed": dict(kind="mixed", files=20000, dirs=2500,
                  desc="source-code-like tree: 20,000 files of 0 B..4 MiB in 2,500 dirs"),
    "huge": dict(kind="single", size=10 * GiB, desc="one file of 10 GiB", flag="huge"),
    "million": dict(kind="tiny", files=1000000, per_dir=1000,
                    desc="1,000,000 empty or tiny files (metadata-bound)", flag="million"),
}
QUICK_DATA = {
    "small": dict(kind="uniform", files=1000, size=10 * KiB, per_dir=100,
                  desc="1,000 files of 10 KiB (quick)"),
    "medium": dict(kind="uniform", files=100, size=1 * MiB, per_dir=50, desc="100 files of 1 MiB (quick)"),
    "large": dict(kind="single", size=64 * MiB, desc="one file of 64 MiB (quick)"),
    "mixed": dict(kind="mixed", files=2000, dirs=250,
                  desc="source-code-like tree: 2,000 files in 250 dirs (quick)"),
}
DEFAULT_DATA = ["small", "medium", "large", "mixed"]

# one-way delay ms, loss %, rate Mbit/s (0 = uncapped); RTT = 2 x delay
LINKS = {
    "loopback": dict(kind="loopback", desc="127.0.0.1 on one host (no namespaces)"),
    "lan": dict(kind="lan", desc="two network namespaces joined by a veth pair, MTU 1500"),
    "wan50": dict(kind="wan", delay=25, loss=0, rate=1000, desc="qs_linkem: 50 ms RTT, no loss, 1 Gbit/s"),
    "wan50-loss0.1": dict(kind="wan", delay=25, loss=0.1, rate=1000,
                          desc="qs_linkem: 50 ms RTT, 0.1% loss each way, 1 Gbit/s"),
    "wan100-loss1": dict(kind="wan", delay=50, loss=1, rate=1000,
                         desc="qs_linkem: 100 ms RTT, 1% loss each way, 1 Gbit/s"),
    "wan50-uncapped": dict(kind="wan", delay=25, loss=0, rate=0, desc="qs_linkem: 50 ms RTT, no loss, no cap"),
}
DEFAULT_LINKS = list(LINKS)
SEED = 20240601


def data_spec(name, quick):
    spec = dict((QUICK_DATA if quick and name in QUICK_DATA else DATA)[name])
    spec.pop("flag", None)
    spec["seed"] = SEED
    return spec


def spec_key(name, spec):
    parts = [name] + ["%s=%s" % (k, spec[k]) for k in sorted(spec) if k not in ("desc",)]
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", "-".join(parts)).replace("kind=", "")


def gen_files(spec):
    """Yields (relative path, size) in a fixed order, and the directories to make."""
    rng = random.Random("layout:%d" % spec["seed"])
    kind = spec["kind"]
    if kind == "single":
        return [], [("file.bin", spec["size"])]
    if kind in ("uniform", "tiny"):
        per = spec["per_dir"]
        nleaf = (spec["files"] + per - 1) // per
        dirs, files = [], []
        for leaf in range(nleaf):
            top = "d%03d" % (leaf // 10)
            if leaf % 10 == 0:
                dirs.append(top)
            dirs.append("%s/d%02d" % (top, leaf % 10))
        for i in range(spec["files"]):
            leaf = i // per
            d = "d%03d/d%02d" % (leaf // 10, leaf % 10)
            if kind == "uniform":
                size = spec["size"]
            else:
                size = 0 if i % 2 == 0 else 1 + rng.randrange(100)
            files.append(("%s/f%07d.bin" % (d, i), size))
        return dirs, files
    if kind == "mixed":
        words = ["src", "lib", "include", "core", "net", "io", "util", "test", "docs", "drivers", "fs",
                 "mm", "kernel", "arch", "tools", "scripts", "crypto", "block", "sound", "firmware"]
        dirs = []
        for i in range(spec["dirs"]):
            # parents drawn from the newest dirs more often: deep and bushy like a source tree
            parent = "" if not dirs or rng.random() < 0.05 else dirs[int(len(dirs) * rng.random() ** 0.5)]
            name = "%s_%d" % (rng.choice(words), i)
            dirs.append(parent + "/" + name if parent else name)
        exts = [".c", ".h", ".py", ".md", ".txt", ".json", ".o", ".png"]
        files = []
        for i in range(spec["files"]):
            r = rng.random()
            if r < 0.03:
                size = 0
            elif r < 0.80:
                size = int(100 * (160 ** rng.random()))  # 100 B .. 16 KiB, log-uniform
            elif r < 0.98:
                size = int(16 * KiB * (8 ** rng.random()))  # 16 .. 128 KiB
            elif r < 0.999:
                size = int(128 * KiB * (8 ** rng.random()))  # 128 KiB .. 1 MiB
            else:
                size = int(1 * MiB * (4 ** rng.random()))  # 1 .. 4 MiB
            d = dirs[rng.randrange(len(dirs))]
            files.append(("%s/file_%d%s" % (d, i, rng.choice(exts)), size))
        return dirs, files
    raise ValueError(kind)


def prepare_data(name, spec, data_dir, log):
    """perf/data/<key>/tree, made once and reused while its manifest matches the spec."""
    key = spec_key(name, spec)
    base = os.path.join(data_dir, key)
    tree = os.path.join(base, "tree")
    manifest = os.path.join(base, "manifest.json")
    want = {"spec": spec, "version": 1}
    if os.path.exists(manifest):
        try:
            with open(manifest) as f:
                have = json.load(f)
            if have.get("spec") == spec and have.get("version") == 1:
                st = tree_stats(tree)
                if (st["files"], st["bytes"]) == (have["files"], have["bytes"]):
                    return tree, have
        except (OSError, ValueError, KeyError):
            pass
    log("data: generating %s (%s) in %s" % (name, spec["desc"], base))
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(tree)
    dirs, files = gen_files(spec)
    for d in dirs:
        os.makedirs(os.path.join(tree, d), exist_ok=True)
    content = random.Random("content:%d" % spec["seed"])
    total = 0
    for rel, size in files:
        path = os.path.join(tree, rel)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                n = min(left, 4 * MiB)
                f.write(content.randbytes(n))
                left -= n
        total += size
    st = tree_stats(tree)
    have = dict(want, files=st["files"], dirs=st["dirs"], bytes=st["bytes"])
    with open(manifest + ".tmp", "w") as f:
        json.dump(have, f, indent=1)
    os.rename(manifest + ".tmp", manifest)
    return tree, have


def tree_stats(root):
    files = dirs = nbytes = 0
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    dirs += 1
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    files += 1
                    nbytes += e.stat(follow_symlinks=False).st_size
    return {"files": files, "dirs": dirs, "bytes": nbytes}


def warm_tree(root):
    """Reads every file of the source so that every tool starts from the same, warm page cache."""
    buf = bytearray(1 * MiB)
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    with open(e.path, "rb", buffering=0) as f:
                        while f.readinto(buf):
                            pass


def content_diff(src, dst):
    """First difference in content between the regular files of src and dst, or None."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(src, rel)) as it:
            for e in it:
                r = os.path.join(rel, e.name)
                if e.is_dir(follow_symlinks=False):
                    stack.append(r)
                    continue
                if not e.is_file(follow_symlinks=False):
                    continue
                try:
                    with open(e.path, "rb") as a, open(os.path.join(dst, r), "rb") as b:
                        while True:
                            x = a.read(4 * MiB)
                            y = b.read(4 * MiB)
                            if x != y:
                                return "content of %s differs" % r
                            if not x:
                                break
                except OSError as err:
                    return "%s: %s" % (r, err.strerror)
    return None


def rmtree(path):
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            subprocess.run(["rm", "-rf", "--", path], check=False)


# --------------------------------------------------------------------------------- destination fs

class ScratchFs:
    """The filesystem every destination is written to: a fresh ext4 (with a journal, as mkfs.ext4 makes
    it) in a sparse image file, loop-mounted for the run and removed after it.

    Why not the data disk itself: on this machine's root filesystem (ext4 *without* a journal) the inode
    allocator skips inodes deleted in the last dirty_expire seconds (ext4's recently_deleted(), which only
    runs when there is no journal) and reads an inode-table buffer for every one it skips. Deleting the
    previous tool's destination therefore made the next tool's file creation quadratic: `cp -a` of 10,000
    files of 10 KiB took 3-7 s of kernel time right after a delete and 0.35 s on a fresh tree. A journalled
    ext4 of its own gives every tool the same, ordinary allocator."""

    def __init__(self, image_dir, size_bytes, inodes, log):
        self.mnt = None
        self.loop_image = None
        self.note = ""
        if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
            self.note = "destinations on the data disk (no root or no mkfs.ext4 for a scratch ext4)"
            return
        os.makedirs(image_dir, exist_ok=True)
        img = os.path.join(image_dir, "scratch-%d.img" % os.getpid())
        try:
            with open(img, "wb") as f:
                f.truncate(size_bytes)
            # everything initialised now, so no background ext4lazyinit writes during the runs
            subprocess.run(["mkfs.ext4", "-q", "-F", "-N", str(inodes), "-E",
                            "lazy_itable_init=0,lazy_journal_init=0", img],
                           check=True, capture_output=True, text=True)
            mnt = tempfile.mkdtemp(prefix="qsperf-fs.")
            r = subprocess.run(["mount", "-o", "loop,noatime", img, mnt], capture_output=True, text=True)
            if r.returncode != 0:
                os.rmdir(mnt)
                raise OSError(r.stderr.strip() or "mount failed")
            self.mnt, self.loop_image = mnt, img
            os.chmod(mnt, 0o755)
            log("destinations: a fresh ext4 (journal) of %.1f GiB, loop-mounted at %s" % (size_bytes / GiB, mnt))
        except (OSError, subprocess.CalledProcessError) as e:
            msg = getattr(e, "stderr", None) or str(e)
            self.note = "destinations on the data disk (scratch ext4 unavailable: %s)" % msg.strip()[:200]
            if os.path.exists(img):
                os.unlink(img)

    def describe(self):
        if not self.mnt:
            return None
        df = capture(["df", "-PT", self.mnt]).splitlines()
        return {"fs": "ext4 (journal), loop-mounted image file on the data disk", "mount": self.mnt,
                "size_gb": round(int(df[-1].split()[2]) / 1e6, 1) if len(df) >= 2 else None}

    def remove(self, log):
        if self.mnt:
            subprocess.run(["sync"], check=False)
            for _ in range(20):
                if subprocess.run(["umount", self.mnt], capture_output=True).returncode == 0:
                    break
                time.sleep(0.5)
            else:
                log("warning: cannot unmount %s" % self.mnt)
                return
            os.rmdir(self.mnt)
            self.mnt = None
        if self.loop_image and os.path.exists(self.loop_image):
            os.unlink(self.loop_image)
            self.loop_image = None


# ------------------------------------------------------------------------------------------- cgroups

class Cgroups:
    """Two groups, client and server, with CPU time and memory accounting (cgroup v1 or v2)."""

    def __init__(self, tag):
        self.mode = None
        self.dirs = {}  # side -> {"cpu": dir, "mem": dir}
        self.note = ""
        mounts = {}
        v2root = None
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, right = line.split(" - ", 1)
                fstype, _src, sopts = right.split()[:3]
                mnt = left.split()[4]
                if fstype == "cgroup":
                    for opt in sopts.split(","):
                        if opt in ("cpuacct", "memory"):
                            mounts[opt] = mnt
                elif fstype == "cgroup2" and v2root is None:
                    v2root = mnt
        own = {}
        with open("/proc/self/cgroup") as f:
            for line in f:
                _n, ctrls, path = line.rstrip("\n").split(":", 2)
                for c in ctrls.split(",") if ctrls else [""]:
                    own[c] = path
        if "cpuacct" in mounts and "memory" in mounts:
            self.mode = "v1"
            for side in ("client", "server"):
                d = {}
                for c, key in (("cpuacct", "cpu"), ("memory", "mem")):
                    d[key] = os.path.join(mounts[c] + own.get(c, "/"), "%s-%s" % (tag, side))
                    os.makedirs(d[key], exist_ok=True)
                self.dirs[side] = d
        elif v2root and os.path.exists(os.path.join(v2root, "cgroup.controllers")):
            self.mode = "v2"
            parent = v2root + own.get("", "/")
            # a group of ours with the controllers on, holding the two leaves (no process in it)
            top = os.path.join(parent, tag)
            os.makedirs(top, exist_ok=True)
            try:
                with open(os.path.join(top, "cgroup.subtree_control"), "w") as f:
                    f.write("+cpu +memory")
            except OSError as e:
                self.note = "cgroup v2: cannot enable cpu/memory controllers (%s): memory not measured" % e
            self.top = top
            for side in ("client", "server"):
                d = os.path.join(top, side)
                os.makedirs(d, exist_ok=True)
                self.dirs[side] = {"cpu": d, "mem": d}
        else:
            self.note = "no usable cgroup hierarchy: CPU and memory not measured per side"

    def procs_files(self, side):
        if not self.mode:
            return []
        return sorted({os.path.join(d, "cgroup.procs") for d in self.dirs[side].values()})

    def procs(self, side):
        pids = set()
        for p in self.procs_files(side):
            try:
                with open(p) as f:
                    pids.update(int(x) for x in f.read().split())
            except OSError:
                pass
        return pids

    def _read(self, path):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return None

    def cpu_ns(self, side):
        if self.mode == "v1":
            v = self._read(os.path.join(self.dirs[side]["cpu"], "cpuacct.usage"))
            return int(v) if v else None
        if self.mode == "v2":
            v = self._read(os.path.join(self.dirs[side]["cpu"], "cpu.stat"))
            m = re.search(r"^usage_usec (\d+)", v or "", re.M)
            return int(m.group(1)) * 1000 if m else None
        return None

    def anon_bytes(self, side):
        """Anonymous memory of the group now: v1 memory.stat rss, v2 memory.stat anon."""
        if not self.mode:
            return None
        d = self.dirs.get(side)  # gone once the groups are removed (an interrupted run)
        v = self._read(os.path.join(d["mem"], "memory.stat")) if d else None
        if not v:
            return None
        m = re.search(r"^%s (\d+)" % ("rss" if self.mode == "v1" else "anon"), v, re.M)
        return int(m.group(1)) if m else None

    def peak_incl_cache(self, side):
        # v2's memory.peak cannot be reset for other readers: only v1 gives a per-run figure
        v = self._read(os.path.join(self.dirs[side]["mem"], "memory.max_usage_in_bytes")) \
            if self.mode == "v1" else None
        return int(v) if v and v.strip().isdigit() else None

    def reset(self):
        """v1: cpuacct.usage and memory.max_usage_in_bytes to 0 (CPU is taken as a difference anyway, so
        v2, whose counters cannot be reset, gives the same figure)."""
        if self.mode != "v1":
            return
        for side in self.dirs:
            for key, name in (("cpu", "cpuacct.usage"), ("mem", "memory.max_usage_in_bytes")):
                try:
                    with open(os.path.join(self.dirs[side][key], name), "w") as f:
                        f.write("0")
                except OSError:
                    pass

    def remove(self, log):
        for side in list(self.dirs):
            for pid in self.procs(side):  # only processes our own sshd/tools started can be here
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.2)
        dirs = [d for s in self.dirs.values() for d in set(s.values())]
        if self.mode == "v2":
            dirs.append(self.top)
        for d in dirs:
            for _ in range(20):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                log("warning: cannot remove cgroup %s" % d)
        self.dirs = {}


class MemSampler(threading.Thread):
    """Peak anonymous memory per side, sampled every `period` seconds while a run goes on."""

    def __init__(self, cg, period=0.02):
        super().__init__(daemon=True)
        self.cg, self.period = cg, period
        self.peak = {"client": 0, "server": 0}
        self.halt = threading.Event()

    def sample(self):
        for side in self.peak:
            v = self.cg.anon_bytes(side)
            if v is not None and v > self.peak[side]:
                self.peak[side] = v

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.period)

    def stop(self):
        self.halt.set()
        self.join()
        self.sample()


# ------------------------------------------------------------------------------------------- links

class Link:
    """perf/link.sh held open: sshd + iperf3 server on the remote side of one link."""

    def __init__(self, name, cfg, ctx):
        self.name, self.cfg, self.ctx = name, cfg, ctx
        self.proc = None
        self.env = None

    def up(self):
        ctx = self.ctx
        kind = self.cfg["kind"]
        if kind != "loopback" and not os.path.exists(os.path.join(PERF_DIR, "netns.sh")):
            raise LinkError("lan/wan: perf/netns.sh missing")
        if kind != "loopback" and os.geteuid() != 0:
            raise LinkError("lan/wan: needs root (network namespaces)")
        out = os.path.join(ctx.tmp, "link-%s.json" % self.name)
        if os.path.exists(out):
            os.unlink(out)
        args = ["bash", os.path.join(PERF_DIR, "link.sh"), out, kind]
        if kind == "wan":
            args += [str(self.cfg["delay"]), str(self.cfg["loss"]), str(self.cfg["rate"]),
                     str(self.cfg.get("jitter", 0))]
        env = dict(os.environ, QSYNC_BIN=ctx.qsync,
                   PERF_SERVER_PROCS=" ".join(ctx.cg.procs_files("server")),
                   PERF_LINKEM_STATS_OUT=self.stats_path())
        if ctx.linkem:
            env["QS_LINKEM"] = ctx.linkem
        self.log = open(os.path.join(ctx.tmp, "link-%s.log" % self.name), "w")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.monotonic() + 60
        while not os.path.exists(out):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.down()
                with open(self.log.name) as f:
                    tail = f.read()[-2000:]
                m = re.search(r"perf/link.sh: (.*)", tail)
                raise LinkError(m.group(1) if m else "link %s did not come up: %s" % (self.name, tail))
            time.sleep(0.05)
        with open(out) as f:
            self.env = json.load(f)
        self.base_server_pids = ctx.cg.procs("server")
        return self.env

    def stats_path(self):
        return os.path.join(self.ctx.out, "linkem-%s.json" % self.name)

    def emulator_stats(self):
        """The emulator's counters (wan links), as link.sh copied them when the link went down."""
        try:
            with open(self.stats_path()) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def down(self):
        if not self.proc:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()

    def client_prefix(self):
        return ["ip", "netns", "exec", self.env["ns_a"]] if self.env.get("ns_a") else []


class LinkError(Exception):
    pass


# ------------------------------------------------------------------------------------------- tools

TOOLS = ["qsync", "qsync-ssh", "rsync", "scp", "tar-ssh", "cp", "iperf3-tcp", "iperf3-udp"]
TOOL_LABEL = {
    "qsync": "qsync (QUIC)",
    "qsync-ssh": "qsync (SSH-only)",
    "rsync": "rsync -a (OpenSSH)",
    "scp": "scp -r",
    "tar-ssh": "tar c | ssh tar x",
    "cp": "cp -a (local ceiling)",
    "iperf3-tcp": "iperf3 TCP (link ceiling)",
    "iperf3-udp": "iperf3 UDP (link ceiling)",
}
RESYNC_TOOLS = ["qsync", "qsync-ssh", "rsync", "scp", "tar-ssh", "cp"]


def tool_command(tool, link, src, dst, ctx):
    """argv for one transfer of the tree src (…/tree) to dst (…/<parent>/tree) on the remote side."""
    e = link.env
    host = "%s@%s" % (e["user"], e["host"])
    ssh_opts = ["-i", e["key"], "-o", "UserKnownHostsFile=" + e["known_hosts"],
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    if tool in ("qsync", "qsync-ssh"):
        argv = [ctx.qsync, "-a", "-q", "-e", e["rsh"], "--remote-path", ctx.qsync]
        if tool == "qsync-ssh":
            argv.append("--no-quic")
        return argv + (["--fsync"] if ctx.fsync else []) + ctx.qsync_args + [src + "/", "%s:%s/" % (host, dst)]
    if tool == "rsync":
        return ["rsync", "-a"] + (["--fsync"] if ctx.fsync else []) + ["-e", e["rsh"], src + "/",
                                                                        "%s:%s/" % (host, dst)]
    if tool == "scp":
        return ["scp", "-r", "-q", "-P", str(e["port"])] + ssh_opts + [src, "%s:%s/" % (host, os.path.dirname(dst))]
    if tool == "tar-ssh":
        ssh = ["ssh", "-p", str(e["port"])] + ssh_opts + [host, "mkdir -p %s && tar -C %s -xf -" % (
            shlex.quote(dst), shlex.quote(dst))]
        return ["sh", "-c", "tar -C %s -cf - . | %s" % (shlex.quote(src), " ".join(shlex.quote(a) for a in ssh))]
    if tool == "cp":
        return ["cp", "-a", src + "/.", dst]
    raise ValueError(tool)


def run_measured(argv, ctx, link, timeout, stdout_path=None):
    """Runs argv in the client namespace and cgroup; returns wall seconds, rc, CPU and memory per side."""
    cg = ctx.cg
    join = " ".join('echo $$ > %s;' % shlex.quote(p) for p in cg.procs_files("client"))
    full = ["sh", "-c", join + ' exec "$@"', "sh"] + link.client_prefix() + argv
    errf = open(os.path.join(ctx.tmp, "last-stderr.txt"), "w+")
    outf = open(stdout_path, "w") if stdout_path else subprocess.DEVNULL
    cg.reset()
    cpu0 = {s: cg.cpu_ns(s) for s in ("client", "server")}
    sampler = MemSampler(cg)
    sampler.start()
    res = {}
    t0 = time.monotonic()
    proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=outf, stderr=errf, start_new_session=True)
    ctx.current = proc
    done = {}

    def waiter():
        _pid, status, ru = os.wait4(proc.pid, 0)
        done["t"] = time.monotonic()
        done["status"] = status
        done["ru"] = ru

    w = threading.Thread(target=waiter, daemon=True)
    w.start()
    try:
        w.join(timeout)
    except BaseException:
        sampler.stop()  # an interrupt: the groups it reads are about to go
        raise
    timed_out = w.is_alive()
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        w.join()
    proc.returncode = os.waitstatus_to_exitcode(done["status"])  # so Popen does not wait again
    ctx.current = None
    # the remote side may still be closing its session: wait for it (and kill leftovers after a timeout)
    drain_server(ctx, link, kill=timed_out)
    sampler.stop()
    cpu1 = {s: cg.cpu_ns(s) for s in ("client", "server")}
    errf.seek(0)
    err = errf.read()[-1500:]
    errf.close()
    if stdout_path:
        outf.close()
    res["seconds"] = done["t"] - t0
    res["rc"] = proc.returncode
    res["timed_out"] = timed_out
    res["stderr_tail"] = err.strip()
    for s in ("client", "server"):
        res["cpu_%s_s" % s] = (cpu1[s] - cpu0[s]) / 1e9 if cpu0[s] is not None and cpu1[s] is not None else None
        res["peak_anon_%s_bytes" % s] = sampler.peak[s] if cg.mode else None
        res["peak_incl_cache_%s_bytes" % s] = cg.peak_incl_cache(s)
    res["client_max_process_rss_bytes"] = done["ru"].ru_maxrss * 1024
    return res


def drain_server(ctx, link, kill=False, wait=5.0):
    deadline = time.monotonic() + wait
    while True:
        extra = ctx.cg.procs("server") - link.base_server_pids
        if not extra:
            return
        if kill or time.monotonic() > deadline:
            for pid in extra:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            kill = False
            deadline = time.monotonic() + 2
        time.sleep(0.02)


def verify(src_stats, src, dst, full):
    """None when dst matches src (file and dir count, bytes; with full, every byte), else the reason."""
    if not os.path.isdir(dst):
        return "destination %s missing" % dst
    st = tree_stats(dst)
    for k in ("files", "dirs", "bytes"):
        if st[k] != src_stats[k]:
            return "%s: %d at destination, %d at source" % (k, st[k], src_stats[k])
    if full:
        return content_diff(src, dst)
    return None


def iperf_run(tool, link, ctx, timeout):
    e = link.env
    # long enough for TCP to leave slow start on the 50/100 ms links
    dur = ctx.iperf_seconds if ctx.iperf_seconds < 3 or link.cfg["kind"] != "wan" else 5
    argv = ["iperf3", "-c", e["host"], "-p", str(e["iperf_port"]), "-t", str(dur), "-J"]
    if tool == "iperf3-udp":
        rate = link.cfg.get("rate", 0)
        argv += ["-u", "-b", "%dM" % rate if rate else "10G"]
    out = os.path.join(ctx.tmp, "iperf.json")
    for attempt in range(3):  # the server can still be finishing the previous test ("server busy")
        res = run_measured(argv, ctx, link, timeout, stdout_path=out)
        try:
            with open(out) as f:
                j = json.load(f)
        except (OSError, ValueError):
            j = {}
        if res["rc"] == 0 and "error" not in j:
            break
        time.sleep(1)
    if res["rc"] != 0 or "error" in j:
        res["status"] = "failed"
        res["reason"] = j.get("error") or res["stderr_tail"][-300:] or "rc %s" % res["rc"]
        return res
    end = j["end"]
    if "sum_received" in end:
        bps = end["sum_received"]["bits_per_second"]
        nbytes = end["sum_received"]["bytes"]
    else:
        s = end["sum"]
        bps = s["bits_per_second"] * (1 - s.get("lost_percent", 0) / 100.0)
        nbytes = s["bytes"] * (1 - s.get("lost_percent", 0) / 100.0)
    res["throughput_bps"] = bps
    res["iperf_bytes"] = nbytes
    if tool == "iperf3-udp" and "sum" in end:
        res["udp_lost_percent"] = end["sum"].get("lost_percent")
    res["status"] = "ok"
    return res


# --------------------------------------------------------------------------------------------- main

class Ctx:
    pass


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="perf/run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="loopback, small data, 1 repeat (< 3 min)")
    ap.add_argument("--scenario", nargs="+", action="extend", default=[], metavar="NAME",
                    help="LINK/DATA names or globs (loopback/small, 'wan*/large', lan, mixed)")
    ap.add_argument("--repeat", type=int, help="rounds per scenario (default 3, quick 1)")
    ap.add_argument("--qsync", required=True, help="the qsync binary to benchmark")
    ap.add_argument("--qsync-args", default="", metavar="ARGS",
                    help="more options for both qsync rows, one string split as a shell would (\"--cc cubic\")")
    ap.add_argument("--out", help="results directory (default perf/results/<date>)")
    ap.add_argument("--data-dir", default=os.environ.get("QS_PERF_DATA", os.path.join(PERF_DIR, "data")))
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    ap.add_argument("--timeout", type=float, help="seconds per run (default 600, quick 60)")
    ap.add_argument("--huge", action="store_true", help="add the 10 GiB single-file data set")
    ap.add_argument("--million", action="store_true", help="add the 1,000,000 tiny files data set")
    ap.add_argument("--no-resync", action="store_true", help="skip the re-sync (nothing changed) rows")
    ap.add_argument("--fsync", action="store_true",
                    help="every file flushed to the disk before it is in place: qsync --fsync beside "
                         "rsync --fsync (tools that cannot flush are left out)")
    ap.add_argument("--cold", action="store_true",
                    help="empty the page cache before every run (sync; drop_caches), so each tool reads "
                         "its source from the disk, as a first copy of a tree not read lately does")
    ap.add_argument("--seed", type=int, default=1, help="seed of the per-round tool order")
    ap.add_argument("--dest-disk", action="store_true",
                    help="write destinations under <out>/tmp on the data disk, not on a scratch ext4")
    ap.add_argument("--keep-tmp", action="store_true", help="keep <out>/tmp (destinations, logs)")
    ap.add_argument("--list", action="store_true", help="list the scenarios that would run and exit")
    a = ap.parse_args(argv)
    if a.repeat is None:
        a.repeat = 1 if a.quick else 3
    if a.timeout is None:
        a.timeout = 60 if a.quick else 600
    return a


def select_scenarios(a):
    data = list(DEFAULT_DATA)
    if a.huge:
        data.append("huge")
    if a.million:
        data.append("million")
    links = ["loopback"] if a.quick else DEFAULT_LINKS
    # the flag-gated data sets (huge, million) are matched by a glob only when their flag is given;
    # naming one exactly ("wan50/huge") still selects it
    globbable = [d for d in DATA if "flag" not in DATA[d] or d in data]
    allnames = ["%s/%s" % (l, d) for l in LINKS for d in DATA]
    globnames = ["%s/%s" % (l, d) for l in LINKS for d in globbable]
    default = ["%s/%s" % (l, d) for l in links for d in data]
    if not a.scenario:
        return default
    chosen = []
    for pat in a.scenario:
        if "/" not in pat:
            hits = [n for n in (default if pat in LINKS or pat in DATA else globnames)
                    if pat in n.split("/") or fnmatch.fnmatch(n, pat)]
        elif pat in allnames:
            hits = [pat]
        else:
            hits = [n for n in globnames if fnmatch.fnmatch(n, pat)]
        if not hits:
            sys.exit("perf/run: no scenario matches '%s' (links: %s; data: %s)" % (
                pat, ", ".join(LINKS), ", ".join(DATA)))
        chosen += [h for h in hits if h not in chosen]
    return chosen


def capture(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unavailable (%s)" % e


def machine_info(data_dir):
    info = {"hostname": socket.gethostname(), "kernel": platform.release(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            info["cpu"] = m.group(1) if m else "?"
        with open("/proc/meminfo") as f:
            m = re.search(r"^MemTotal:\s*(\d+)", f.read(), re.M)
            info["memory_gib"] = round(int(m.group(1)) / 1024 / 1024, 1)
    except OSError:
        pass
    df = capture(["df", "-PT", data_dir]).splitlines()
    if len(df) >= 2:
        f = df[-1].split()
        info["disk"] = {"device": f[0], "fs": f[1], "size_gb": round(int(f[2]) / 1e6, 1)}
        dev = os.path.basename(f[0])
        rot = "/sys/block/%s/queue/rotational" % re.sub(r"p?\d+$", "", dev) if not os.path.exists(
            "/sys/block/%s" % dev) else "/sys/block/%s/queue/rotational" % dev
        try:
            with open(rot) as fh:
                info["disk"]["rotational_flag"] = fh.read().strip()
        except OSError:
            pass
        if dev.startswith("vd"):
            info["disk"]["note"] = "virtio block device (virtual machine): the host's storage is unknown"
    virt = capture(["systemd-detect-virt"])
    if virt and "unavailable" not in virt:
        info["virtualization"] = virt
    return info


def versions(qsync):
    return {
        "qsync": capture([qsync, "--version"]).splitlines()[0] if capture([qsync, "--version"]) else "?",
        "rsync": capture(["rsync", "--version"]).splitlines()[0],
        "openssh": capture(["ssh", "-V"]),
        "iperf3": capture(["iperf3", "--version"]).splitlines()[0],
        "tar": capture(["tar", "--version"]).splitlines()[0],
        "cp": capture(["cp", "--version"]).splitlines()[0],
        "python": platform.python_version(),
        # the commit perf/run built qsync from; a binary named with --qsync has no known source
        "qsync_source": os.environ.get("QS_PERF_SOURCE") or "unknown: --qsync %s" % qsync,
    }


def main(argv):
    a = parse_args(argv)
    scen = select_scenarios(a)
    if a.list:
        print("\n".join(scen))
        return 0
    tools = [t for t in a.tools.split(",") if t]
    for t in tools:
        if t not in TOOLS:
            sys.exit("perf/run: unknown tool %s (tools: %s)" % (t, ", ".join(TOOLS)))
    if a.fsync:  # only these can be asked to flush what they write; the rest would not be comparable
        dropped = [t for t in tools if t not in ("qsync", "qsync-ssh", "rsync")]
        tools = [t for t in tools if t not in dropped]
        if dropped:
            print("perf/run: --fsync: leaving out %s (no way to make them flush)" % ", ".join(dropped),
                  file=sys.stderr)
    qsync = os.path.abspath(a.qsync)
    if not os.access(qsync, os.X_OK):
        sys.exit("perf/run: %s is not an executable qsync" % qsync)
    started = datetime.datetime.now()
    out = os.path.abspath(a.out or os.path.join(PERF_DIR, "results", started.strftime("%Y-%m-%d-%H%M%S")))
    os.makedirs(out, exist_ok=True)
    ctx = Ctx()
    ctx.qsync = qsync
    ctx.qsync_args = shlex.split(a.qsync_args)
    ctx.fsync = a.fsync
    ctx.cold = a.cold
    ctx.out = out
    ctx.tmp = os.path.join(out, "tmp")
    os.makedirs(ctx.tmp, exist_ok=True)
    ctx.iperf_seconds = 1 if a.quick else 3
    ctx.current = None
    ctx.linkem = os.environ.get("QS_LINKEM") or next(
        (p for p in [os.path.join(REPO, b, "perf/linkem/qs_linkem") for b in ("build-perf", "build")]
         if os.access(p, os.X_OK)), None)
    logf = open(os.path.join(out, "run.log"), "a")

    def log(msg):
        line = "%s %s" % (time.strftime("%H:%M:%S"), msg)
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    def on_term(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    help_text = capture([qsync, "--help"])
    has_no_quic = "--no-quic" in help_text
    try:
        ctx.cg = Cgroups("qsperf-%d" % os.getpid())
    except OSError as e:  # not root, or a read-only hierarchy: run without per-side accounting
        ctx.cg = Cgroups.__new__(Cgroups)
        ctx.cg.mode, ctx.cg.dirs = None, {}
        ctx.cg.note = "cannot create cgroups (%s): CPU and memory not measured per side" % e
    if ctx.cg.note:
        log("note: " + ctx.cg.note)
    results = {
        "format": "qsync-perf/1",
        "started": started.isoformat(timespec="seconds"),
        "args": argv,
        "fsync": a.fsync,
        "cold": a.cold,
        "quick": a.quick,
        "repeat": a.repeat,
        "timeout_s": a.timeout,
        "machine": machine_info(a.data_dir),
        "versions": versions(qsync),
        "cgroup": ctx.cg.mode,
        "memory_metric": ("v1 memory.stat rss" if ctx.cg.mode == "v1" else "v2 memory.stat anon")
        if ctx.cg.mode else None,
        "links": {},
        "scenarios": [],
        "runs": [],
        "summary": [],
    }
    rng = random.Random(a.seed)
    interrupted = None
    link = None
    try:
        # data first (outside any timing), then one link at a time, its scenarios interleaved per round
        datasets = {}
        for s in scen:
            d = s.split("/")[1]
            if d not in datasets:
                spec = data_spec(d, a.quick)
                tree, man = prepare_data(d, spec, a.data_dir, log)
                datasets[d] = (spec, tree, man)
        if a.dest_disk:
            ctx.fs = ScratchFs.__new__(ScratchFs)
            ctx.fs.mnt, ctx.fs.loop_image, ctx.fs.note = None, None, "destinations on the data disk (--dest-disk)"
        else:
            biggest = max(m["bytes"] for _s, _t, m in datasets.values())
            most = max(m["files"] + m["dirs"] for _s, _t, m in datasets.values())
            ctx.fs = ScratchFs(a.data_dir, 2 * biggest + 2 * GiB, 2 * most + 65536, log)
        if ctx.fs.note:
            log("note: " + ctx.fs.note)
        results["machine"]["destination_fs"] = ctx.fs.describe() or ctx.fs.note
        ctx.dst_root = ctx.fs.mnt or ctx.tmp
        by_link = {}
        for s in scen:
            by_link.setdefault(s.split("/")[0], []).append(s)
        for lname, names in by_link.items():
            cfg = LINKS[lname]
            results["links"][lname] = dict(cfg)
            link = Link(lname, cfg, ctx)
            try:
                log("link %s: up (%s)" % (lname, cfg["desc"]))
                link.up()
            except LinkError as e:
                log("link %s: %s" % (lname, e))
                link = None
                for s in names:
                    spec, tree, man = datasets[s.split("/")[1]]
                    results["scenarios"].append(scenario_entry(s, spec, man, cfg))
                    for t in tools:
                        for mode in ("fresh", "resync") if t in RESYNC_TOOLS and not a.no_resync else ("fresh",):
                            results["runs"].append(dict(scenario=s, tool=t, mode=mode, round=0, status="n/a",
                                                        reason=str(e)))
                continue
            for s in names:
                spec, tree, man = datasets[s.split("/")[1]]
                results["scenarios"].append(scenario_entry(s, spec, man, cfg))
                src_stats = {"files": man["files"], "dirs": man["dirs"], "bytes": man["bytes"]}
                for rnd in range(1, a.repeat + 1):
                    order = list(tools)
                    rng.shuffle(order)
                    log("%s round %d/%d: %s" % (s, rnd, a.repeat, " ".join(order)))
                    for t in order:
                        for r in bench_tool(t, s, rnd, link, tree, src_stats, man, ctx, a, has_no_quic, log):
                            results["runs"].append(r)
                        write_json(out, results)
            link.down()
            stats = link.emulator_stats()
            if stats is not None:
                results["links"][lname]["emulator_stats"] = stats
            link = None
    except KeyboardInterrupt as e:
        interrupted = str(e) or "interrupted"
        log("interrupted: cleaning up")
    finally:
        if ctx.current is not None:
            try:
                os.killpg(ctx.current.pid, signal.SIGKILL)
            except OSError:
                pass
        if link is not None:
            link.down()
        ctx.cg.remove(log)
        if getattr(ctx, "fs", None):
            ctx.fs.remove(log)
        if not a.keep_tmp:
            rmtree(os.path.join(ctx.tmp))
    results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    if interrupted:
        results["interrupted"] = interrupted
    results["summary"] = summarize(results, tools, a)
    write_json(out, results)
    import report  # perf/report.py
    report.write_markdown(out, results)
    report.write_chart(out, results, log)
    log("results: %s" % out)
    return 130 if interrupted else 0


def scenario_entry(s, spec, man, cfg):
    return {"name": s, "link": s.split("/")[0], "data": s.split("/")[1], "data_desc": spec["desc"],
            "link_desc": cfg["desc"], "files": man["files"], "dirs": man["dirs"], "bytes": man["bytes"]}


def write_json(out, results):
    tmp = os.path.join(out, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.rename(tmp, os.path.join(out, "results.json"))


def drop_caches():
    """Empties the page cache, dentries and inodes (after sync, so nothing dirty stays), as after a
    reboot: a tool then reads its source, and stats its names, from the disk."""
    subprocess.run(["sync"], check=False)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def prepare_run(tree, dst_parent, cold=False):
    if not cold:
        warm_tree(tree)
    rmtree(dst_parent)
    os.makedirs(dst_parent)
    subprocess.run(["sync"], check=False)
    if cold:
        drop_caches()


def bench_tool(t, s, rnd, link, tree, src_stats, man, ctx, a, has_no_quic, log):
    base = dict(scenario=s, tool=t, round=rnd)
    modes = ["fresh"] + (["resync"] if t in RESYNC_TOOLS and not a.no_resync else [])
    if t == "qsync-ssh" and not has_no_quic:
        return [dict(base, mode=m, status="n/a", reason="not implemented yet (qsync --help has no --no-quic)")
                for m in modes]
    if t == "cp" and link.cfg["kind"] != "loopback":
        return [dict(base, mode=m, status="n/a", reason="local ceiling: measured on loopback only")
                for m in modes]
    dst_parent = os.path.join(ctx.dst_root, "dst")
    dst = os.path.join(dst_parent, "tree")
    if t.startswith("iperf3"):
        prepare_run(tree, dst_parent, ctx.cold)
        r = iperf_run(t, link, ctx, a.timeout)
        r.update(base, mode="fresh")
        if r["status"] == "ok":
            # the time the data set's bytes would take at the measured rate (no per-file cost)
            r["seconds_equiv"] = man["bytes"] * 8 / r["throughput_bps"] if r["throughput_bps"] else None
            log("  %-10s %8.1f MB/s" % (t, r["throughput_bps"] / 8e6))
        else:
            log("  %-10s %s: %s" % (t, r["status"], r["reason"]))
        return [r]
    out = []
    prepare_run(tree, dst_parent, ctx.cold)
    for mode in modes:
        if mode == "resync" and ctx.cold:
            drop_caches()
        elif mode == "resync":
            warm_tree(tree)
            subprocess.run(["sync"], check=False)
        argv = tool_command(t, link, tree, dst, ctx)
        r = run_measured(argv, ctx, link, a.timeout)
        r.update(base, mode=mode, argv=argv)
        if r["timed_out"]:
            r["status"], r["reason"] = "timeout", "killed after %g s" % a.timeout
        elif r["rc"] != 0:
            r["status"], r["reason"] = "failed", "exit %s: %s" % (r["rc"], r["stderr_tail"][-300:])
        else:
            bad = verify(src_stats, tree, dst, full=(rnd == 1))
            r["verified"] = "full" if rnd == 1 else "count+bytes"
            if bad:
                r["status"], r["reason"] = "incorrect", bad
            else:
                r["status"] = "ok"
        if r["status"] == "ok":
            log("  %-10s %-6s %8.2f s  cpu c/s %.2f/%.2f s" % (
                t, mode, r["seconds"], r["cpu_client_s"] or 0, r["cpu_server_s"] or 0))
        else:
            log("  %-10s %-6s %s: %s" % (t, mode, r["status"], r["reason"][:200]))
        out.append(r)
        if r["status"] != "ok" and mode == "fresh":
            out += [dict(base, mode=m, status="n/a", reason="the fresh run did not succeed") for m in modes[1:]]
            break
    rmtree(dst_parent)
    return out


def summarize(results, tools, a):
    rows = []
    for sc in results["scenarios"]:
        s = sc["name"]
        for t in tools:
            for mode in ("fresh", "resync"):
                runs = [r for r in results["runs"] if r["scenario"] == s and r["tool"] == t and r["mode"] == mode]
                if not runs:
                    continue
                ok = [r for r in runs if r["status"] == "ok"]
                row = {"scenario": s, "tool": t, "label": TOOL_LABEL[t] + (" re-sync" if mode == "resync" else ""),
                       "mode": mode, "runs": len(runs), "ok": len(ok)}
                bad = [r for r in runs if r["status"] != "ok"]
                if bad:
                    row["problems"] = sorted({"%s: %s" % (r["status"], r.get("reason", "")) for r in bad})
                if not ok:
                    row["status"] = bad[0]["status"]
                    row["reason"] = bad[0].get("reason", "")
                    row["median_s"] = None
                    rows.append(row)
                    continue
                row["status"] = "ok" if len(ok) == len(runs) else "partial"
                key = "seconds_equiv" if t.startswith("iperf3") else "seconds"
                secs = [r[key] for r in ok]
                row["median_s"] = statistics.median(secs)
                row["min_s"] = min(secs)
                row["max_s"] = max(secs)
                row["mb_per_s"] = sc["bytes"] / row["median_s"] / 1e6 if row["median_s"] else None
                if t.startswith("iperf3"):
                    row["files_per_s"] = None
                    gb = statistics.median([r["iperf_bytes"] for r in ok]) / 1e9
                else:
                    row["files_per_s"] = sc["files"] / row["median_s"] if row["median_s"] else None
                    gb = sc["bytes"] / 1e9
                for side in ("client", "server"):
                    cpu = [r["cpu_%s_s" % side] for r in ok if r.get("cpu_%s_s" % side) is not None]
                    row["cpu_%s_s" % side] = statistics.median(cpu) if cpu else None
                    row["cpu_%s_s_per_gb" % side] = statistics.median(cpu) / gb if cpu and gb > 0 else None
                    mem = [r["peak_anon_%s_bytes" % side] for r in ok if r.get("peak_anon_%s_bytes" % side) is not None]
                    row["peak_anon_%s_bytes" % side] = max(mem) if mem else None
                rows.append(row)
    # speed relative to rsync -a (same scenario; re-sync rows against rsync's re-sync, the rest against fresh)
    for row in rows:
        ref_mode = "resync" if row["mode"] == "resync" else "fresh"
        ref = next((r for r in rows if r["scenario"] == row["scenario"] and r["tool"] == "rsync"
                    and r["mode"] == ref_mode), None)
        if ref and ref.get("median_s") and row.get("median_s"):
            row["speed_vs_rsync"] = ref["median_s"] / row["median_s"]
        else:
            row["speed_vs_rsync"] = None
    return rows


if __name__ == "__main__":
    sys.path.insert(0, PERF_DIR)
    sys.exit(main(sys.argv[1:]))
