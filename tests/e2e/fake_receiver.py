#!/usr/bin/env python3
"""A hostile receiver on the SSH data path, started by sshd as the client's "qsync --server"
(--remote-path): it offers the quick check and no QUIC, says the destination exists, then answers the
first ASK stream badly. MODE (argv[1]):
  badverdict  a verdict byte that is neither SEND nor HAVE
  noverdict   an ack straight away, as if the entry had not asked
  sendtwice   SEND, then SEND again where the ack belongs, and the end of the stream
  batch-badverdict, batch-extra, batch-badack: it reads batches of questions too ("ask-batch") and
              answers the first batch with a byte that is no verdict, with more answers than the
              batch has questions (257 HAVE + OK), or with HAVE and an ack of an unknown status
  bundle-early, bundle-badack: it reads bundles ("bundle"), says the destination is new (nothing
              asks), and answers the first bundle with 300 OK acks at once (before its entries can
              all have been sent), or with an ack of an unknown status
Everything the client sends is logged to argv[2] (one line per control message or frame header)."""
import json
import sys
import time

mode, log = sys.argv[1], open(sys.argv[2], "w")
rd, wr = sys.stdin.buffer, sys.stdout.buffer


def note(s):
    log.write(s + "\n")
    log.flush()


def varint(b):
    first = b(1)[0]
    n = 1 << (first >> 6)
    v = first & 0x3F
    for _ in range(n - 1):
        v = (v << 8) | b(1)[0]
    return v


def enc_varint(v):
    if v < 64:
        return bytes([v])
    if v < 16384:
        return (v | 0x4000).to_bytes(2, "big")
    return (v | 0x80000000).to_bytes(4, "big")


def readn(n):
    d = rd.read(n)
    if len(d) < n:
        note("eof")
        sys.exit(0)
    return d


def frame(kind, sid, payload):
    wr.write(bytes([kind]) + enc_varint(sid) + enc_varint(len(payload)) + payload)
    wr.flush()


def line(obj):
    wr.write(json.dumps(obj).encode() + b"\n")
    wr.flush()


note("hello " + rd.readline().decode().strip())
caps = ["quick-check"] + (["ask-batch"] if mode.startswith("batch-") else []) + \
    (["bundle"] if mode.startswith("bundle-") else [])
line({"type": "hello-ack", "version": "1.0", "capabilities": caps, "quic_available": False,
      "max_streams": 4})
start = rd.readline().decode().strip()
note("start " + start)
if '"quick_check":true' not in start.replace(" ", ""):
    note("no quick_check asked for")
frame(0, 0, json.dumps({"type": "sync_ready", "existing": not mode.startswith("bundle-")}).encode())

# (frame kind, payload) for a batch's or bundle's sid: kind 2 ends the stream
GROUP_ANSWERS = {
    "batch-badverdict": lambda sid: (1, sid, b"X"),
    "batch-extra": lambda sid: (2, sid, b"H\x00\x00" * 257),
    "batch-badack": lambda sid: (2, sid, b"H\x09\x00"),
    "bundle-early": lambda sid: (2, sid, b"\x00\x00" * 300),
    "bundle-badack": lambda sid: (2, sid, b"\x09\x00"),
}
answered = set()
while True:
    kind = readn(1)[0]
    sid = varint(readn)
    n = varint(readn)
    data = readn(n)
    note("frame kind=%d sid=%d len=%d" % (kind, sid, n))
    if kind == 0:
        note("ctl " + data.decode(errors="replace"))
        continue
    # the first batch (flags 0x20) or bundle (0x40) header, file_id 0, gets the mode's hostile answer
    header = {"batch-": b"\0\0\0\0\0\0\0\x20", "bundle-": b"\0\0\0\0\0\0\0\x40"}
    group = next((g for g in header if mode.startswith(g)), None)
    if kind in (1, 2) and sid not in answered and group and data[:8] == header[group]:
        answered.add(sid)
        frame(*GROUP_ANSWERS[mode](sid))
        time.sleep(2)
        note("hanging up")
        sys.exit(0)
    if kind in (1, 2) and sid not in answered and not mode.startswith(("batch-", "bundle-")):
        answered.add(sid)
        if mode == "badverdict":
            frame(1, sid, b"X")
        elif mode == "noverdict":
            frame(2, sid, b"\x00\x00")  # status OK, empty message, FIN
        elif mode == "sendtwice":
            frame(1, sid, b"S")
            frame(2, sid, b"S")  # where the ack (status, varint length, message) belongs, and FIN
        time.sleep(2)  # then hang up: the client must say what was wrong, not just that we left
        note("hanging up")
        sys.exit(0)
