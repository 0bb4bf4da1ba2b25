/* Engine internals shared by transfer.c (what both roles share), client.c and server.c (the two
 * conversations), sender.c and receiver.c (the two ends of a lane). Not included outside engine/.
 *
 * A lane is one data plane (a QUIC connection, or the streams on the SSH channel) with the streams it
 * carries, driven by one thread: QUIC lanes each by a worker of the sched/ pool, the SSH lane by the
 * control thread. What all lanes of one side share (the entries to send; the destination and its
 * bookkeeping) sits in struct sender / struct receiver, behind a mutex or in atomics. */
#ifndef QS_ENGINE_INT_H
#define QS_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "engine/engine.h"
#include "io/io.h"
#include "net/control.h"
#include "net/dp.h"
#include "net/quic.h"
#include "net/stream.h"

#define ENGINE_CTL_TIMEOUT_MS   30000 /* a control reply must come within this */
#define ENGINE_DRAIN_TIMEOUT_MS 30000 /* after sync_complete, the receiver's last closes */
#define ENGINE_PROGRESS_NS      250000000ull
#define ENGINE_FINISH_WORD_NS   500000000ull /* a finishing receiver's word to the sender, at least */

uint64_t engine_now_ns(void);

/* transfer.c: shared by the client (client.c) and the peer (server.c) */

/* Waits for a message of the wanted type; an error message from the peer ends the wait with its words;
 * progress and unknown types are skipped. */
int engine_expect(struct net_ctl_chan *c, enum net_ctl_type want, struct net_ctl_msg *m, int timeout_ms,
                  struct qs_err *err);

/* Sends an error message (no file) on the control channel. */
int engine_send_error(struct net_ctl_chan *c, const char *code, const char *msg);

/* Polls the control channel, the data plane and a ring (any may be NULL) once, at most max_ms, reaps
 * the ring, and runs the data plane's process(). */
int engine_poll_once(struct net_ctl_chan *c, const struct net_dp *dp, struct io_ring *ring, int max_ms,
                     struct qs_err *err);

/* Whether n lane workers are pinned to cores: only when they fill the machine (one per core or more).
 * Fewer are left to the kernel's scheduler: two processes on one host (the local mode, a test, a
 * benchmark on loopback) would otherwise both pin their first worker to the first core. */
struct sched_topo;
bool engine_pin(const struct sched_topo *t, unsigned n);

/* Fills buf from the kernel's CSPRNG. */
int engine_random(void *buf, size_t n);

/* Raises the soft descriptor limit to the hard one and returns how many descriptors streams may hold
 * (each stream in flight may keep a file open on either side). */
size_t engine_fd_budget(void);

/* A lane's wait, the same on both sides: until its data path or its io_uring (ring may be NULL) has
 * something, or the data path's timer or max_ms comes, then the ring's completions are reaped.
 * Returns -1 when poll failed (the caller tries again), else 0. */
int engine_lane_wait(struct net_dp *dp, struct io_ring *ring, int max_ms);
void engine_emit(const struct engine_opts *o, enum engine_event_kind k, const char *path, const char *msg,
                 const struct engine_stats *st);

/* ---- sender ---- */

/* A file large enough to travel as several ranges (about ENGINE_RANGE_BYTES each) on parallel streams:
 * what its range entries share. The file is done when every range is confirmed, failed when one fails.
 */
struct snd_big {
	atomic_uint left;   /* ranges not yet confirmed; the last decrement decides */
	atomic_bool failed; /* one range failed: the file is reported once */
	atomic_uint refs;   /* range entries alive; the last one frees this */
	atomic_bool have;   /* a range was answered HAVE: the receiver has the file, every range is done */
	atomic_uint held;   /* ranges a lane holds now: the file is in flight while any is (hold) */
	uint32_t id;        /* the file_id every range carries */
	uint32_t count;
	char rel[]; /* the path, shared by the ranges */
};

#define ENGINE_RANGE_BYTES (16ull << 20)            /* a range of a large file, about */
#define ENGINE_RANGE_MIN   (2 * ENGINE_RANGE_BYTES) /* files larger than this travel in ranges */

/* Something to do for the sender: an entry to send on a stream of its own (a file, a directory's
 * metadata, a symlink, one range of a large file), or a directory to list (walk). Made by whoever lists
 * its parent, taken by whichever lane has room for it (a worker's own deque first, then stealing from
 * the others), freed when its stream ends or its listing is done. */
struct snd_entry {
	bool walk;           /* a directory to list, not a stream */
	uint32_t flags;      /* DIR, SYMLINK, ROOT as on the wire (RANGE comes from big) */
	uint32_t src;        /* index into sender.roots */
	uint32_t tail;       /* offset in rel of the path below the source's top ("" for the top itself) */
	uint32_t id;         /* file_id on the wire */
	uint32_t depth;      /* components in rel */
	struct stat st;      /* as the walk saw it; the file opened later must be this one (dev, ino) */
	char *link;          /* symlink target, or NULL */
	struct snd_big *big; /* one range of this large file: rel is big->rel */
	uint64_t range_off, range_len;
	uint32_t range_idx;
	bool asked;      /* a batch's answer was SEND: it goes without asking again */
	bool solo;       /* goes on a stream of its own (a bundle it was in failed under it) */
	bool held;       /* a lane has it, out of every queue, not finished (files_in_flight) */
	const char *rel; /* path on the wire ("" for the root) */
	char buf[];      /* rel, when the entry holds it itself */
};

/* One source as given on the command line: its directory held open so that files are opened beneath
 * it (no symlink followed below the top), or -1 for a source that is a single file. */
struct snd_root {
	int fd;
	char *top;         /* the path given (for messages and a single file's open) */
	uint32_t tail_off; /* where, in the rel of an entry below the top, the part below the top starts */
};

/* What the client's lanes share: the roots, the counters, the items no worker's deque holds. */
struct sender {
	const struct engine_opts *o;
	pthread_mutex_t lock; /* local, resend */
	/* Items outside the workers' deques: those to start with (until the pool takes them), those the
	 * control thread works through itself (the SSH lane), and those left in the deques when the workers
	 * stopped. Under lock. */
	struct snd_entry **local;
	size_t n_local, cap_local;
	/* Entries whose stream was cut off with its data path (NET_DP_GONE), to be sent again on the next
	 * one (failover). Under lock; pending_resend is its size, readable without it. */
	struct snd_entry **resend;
	size_t n_resend, cap_resend;
	atomic_size_t pending_resend;
	/* Items not finished yet: listings not done, entries neither confirmed nor failed for good.
	 * Incremented before an item is handed over, decremented (release) when it is finished, after the
	 * lane's counters are updated; the control thread's acquire of 0 then sees every count. */
	atomic_size_t remaining;
	atomic_uint next_id;                                         /* file_ids */
	atomic_uint_fast64_t files_discovered, bytes_total, entries; /* relaxed: statistics */
	atomic_size_t walk_errors; /* sources or directories that could not be read */
	struct snd_root *roots;
	size_t n_roots;
	bool single_file;     /* exactly one source and it is not a directory */
	size_t max_in_flight; /* streams in flight over all lanes (descriptors, the peer's limit) */
	bool ask;             /* quick check against a destination that was there: regular files ASK */
	bool ask_batch;       /* ... and the peer reads batches: small files ask many to a stream */
	bool bundle;          /* the peer reads bundles: small files go many to a stream */
};

/* Counters of one lane: written by the lane's thread only (relaxed atomics), summed by the control
 * thread into the engine_stats it publishes. */
struct snd_counters {
	atomic_uint_fast64_t files_done, files_failed, bytes_done, bytes_sent, wire_bytes, files_resent;
	atomic_uint_fast64_t files_done_quic, files_done_ssh, streams_done_quic, streams_sent_ssh, in_flight;
	atomic_uint_fast64_t held; /* entries held (hold/release); wraps: only the lanes' sum means a count */
	atomic_uint_fast64_t files_unchanged, bytes_unchanged;
	atomic_uint_fast64_t files_read_ahead; /* bundled files sent from their read-ahead on the ring */
};

struct sched_worker;
struct snd_job;
struct snd_batch;
struct snd_bundle;

#define SND_RING_MIN  (1u << 20)   /* files this large are read ahead on the lane's ring */
#define SND_RBUF_SIZE (256u << 10) /* a read-ahead buffer */
#define SND_RBUFS     16           /* read-ahead buffers of a lane */
#define SND_PBUFS     8            /* a bundle's read-ahead buffers a lane keeps for the next bundles */

/* A read-ahead buffer of a lane (registered with its ring). */
struct snd_rbuf {
	struct io_ring_op op;
	struct snd_job *j;
	int index; /* registered buffer index */
	size_t len, pos;
	uint8_t *data;
};

/* One data plane of the client and the streams it carries; driven by one thread. */
struct snd_lane {
	struct sender *s;
	struct sched_worker *w; /* the worker driving it and holding its deque (NULL: the control thread) */
	struct net_dp dp;
	struct net_quic *q;   /* the QUIC lane's connection (NULL for the SSH lane) */
	size_t max_in_flight; /* streams of this lane at once */
	size_t in_flight;
	/* Content of this lane's open streams not yet handed to them, and the most it takes on before it
	 * stops taking work (0: no bound). About one connection window: enough to keep the connection
	 * busy, and the ranges of a large file beyond it stay in the deque for idle lanes to steal
	 * instead of queueing behind this one. */
	uint64_t unsent, unsent_max;
	/* Small files that ask (the quick check, with a peer that reads batches), gathered to ask on one
	 * stream together: a slot of max_in_flight is kept for it while it fills. */
	struct snd_batch *batch;
	struct snd_bundle *bundle; /* small entries gathered to go on one stream, whole (likewise) */
	size_t bundled;            /* entries in this lane's bundles, not yet acked */
	atomic_uint_fast64_t streams_opened; /* sync_complete sums them over the data path's lanes (relaxed:
	                                        written by the lane, read by the control thread) */
	struct snd_counters c;
	atomic_int dead; /* the data plane failed: its rc (negative) */
	char dead_msg[QS_ERR_MSG_MAX];
	/* the QUIC lanes' io_uring: files read ahead into registered buffers while others go out */
	struct io_ring *ring;
	uint8_t *rbufs;
	struct snd_rbuf rb[SND_RBUFS];
	struct snd_rbuf *rfree[SND_RBUFS];
	size_t n_rfree;
	/* bundles' read-ahead buffers kept for reuse (a fresh one would be mapped and faulted in anew) */
	uint8_t *pfree[SND_PBUFS];
	size_t n_pfree;
};

/* Gives l an io_uring and its read-ahead buffers (without io_uring here, l reads at once). Called on
 * the lane's own thread, before it sends: the buffers are touched there first, so that they (and the
 * ring) sit on the worker's NUMA node. Returns 0 or -ENOMEM. */
int sender_lane_ring(struct snd_lane *l);

/* Waits for l's reads in flight (its data plane must be gone: every stream closed) and frees the ring. */
void sender_lane_ring_free(struct snd_lane *l);

/* Looks at every source (rsync's trailing-slash rule) and makes the items to start with: each source's
 * top entry and, for a directory, its listing (s->local). Unreadable sources are reported as file
 * errors and counted in walk_errors; returns 0, or a negative errno for a fatal problem. */
int sender_plan(struct sender *s, const struct engine_opts *o, struct qs_err *err);

/* A lane over dp for s, taking at most max_in_flight streams at once. */
void sender_lane_init(struct snd_lane *l, struct sender *s, const struct net_dp *dp, size_t max_in_flight);

/* Hands the items in s->local to worker 0's deque (before the pool starts: stealing spreads them). */
int sender_seed(struct sender *s, struct sched_worker *w0);

/* Takes back what the workers' deques still hold (after the pool has stopped and been joined). */
void sender_drain(struct sender *s, struct sched_worker *const *workers, size_t n);

/* True when nothing is left to do: every listing done, every entry confirmed or failed for good. */
bool sender_nothing(struct sender *s);

/* Works on l: lists directories and opens streams for entries while l has room (resend first, then its
 * worker's deque and stealing, or, on the control thread, s->local). Returns 0 or a negative errno
 * (fatal: out of memory, or a stream the data plane refused). */
int sender_pump(struct snd_lane *l, struct qs_err *err);

/* Sums the lanes' counters into st (st's own fields for them are overwritten). */
void sender_stats(struct snd_lane *const *lanes, size_t n, struct sender *s, struct engine_stats *st);

void sender_free(struct sender *s);

extern const struct net_dp_cb sender_dp_cb_template;

/* ---- receiver ---- */

struct rcv_dirfix {
	char *rel;
	bool set_mode; /* with -p, or a directory this transfer created */
	uint32_t mode;
	int64_t mtime_ns;
	uint32_t uid, gid;
};

/* A refusal waiting to be reported on the control channel: written from the main loop, never from
 * inside a data-plane callback (a slow control channel must not stall QUIC). */
struct rcv_report {
	char *file;
	int64_t sid;
	const char *code;
	char *msg;
};

#define RCV_MAX_DIR_BYTES (256u << 20) /* directory bookkeeping a sender may make us hold */
#define RCV_MAX_REPORTS   1024         /* queued error reports; more are counted, not queued */
#define RCV_WBUF_BIG      (256u << 10) /* write buffer of a file larger than this */
#define RCV_WBUF_BUDGET   (64u << 20)  /* all write buffers together */
#define RCV_WBUF_FREE_MAX 64           /* idle big buffers kept for reuse */
#define RCV_BATCH_OUT_MAX ((NET_STREAM_BATCH_MAX + 1) * (1 + NET_STREAM_MAX_ACK)) /* a batch's answers */

/* A large file arriving as ranges on parallel streams (maybe on several lanes): one file being written,
 * shared by its range streams. In r->bigs under r->lock. */
struct rcv_big {
	struct rcv_big *next;
	uint32_t file_id;
	char path[NET_STREAM_MAX_PATH + 1];
	uint64_t file_size;
	uint32_t count, done; /* ranges in all, and written with a good hash */
	uint8_t *started;     /* bitmap: a stream for the range is being received */
	uint8_t *finished;    /* bitmap: the range is written and its hash checked */
	struct io_wfile wf;   /* the file: positioned writes from any lane; committed by the last range */
	bool open, failed, committed;
	bool placing;  /* every range is in; its last range's job is putting it in place (flushing) */
	bool reported; /* its failure is counted and reported (once, by whichever range found it) */
	bool ask;      /* its ranges ask (the quick check): the first one decided for all */
	bool have;     /* ... that the destination has it: every range is answered HAVE, nothing is opened */
	unsigned refs; /* range streams holding it */
	uint32_t mode, uid, gid; /* as the first range said: every range must say the same */
	int64_t mtime_ns;
};

/* Large files arriving at once (a failed one stays, to refuse its ranges; a finished or unchanged one
 * stays until the room is needed, the oldest first, to answer a range sent again): as many as the
 * streams in flight can start, and then some. */
#define RCV_MAX_BIGS   2048
#define RCV_RING_DEPTH 64         /* writes in flight on one lane's io_uring */
#define RCV_RING_MIN   (1u << 20) /* files this large are written on the ring; smaller ones at once */
/* io-wq workers a lane's ring may use once it flushes (--fsync): 10,000 files of 10 KiB on loopback
 * took 2.2-3.0 s with the kernel's 8 (2 cores), 1.3-1.4 s with 32, 1.1-1.3 s with 64, 1.1-1.2 s with 128 */
#define RCV_FLUSH_WORKERS 64
/* fsyncs a lane keeps on its ring at once, at most; past that a file is flushed at once, on the lane's
 * thread. Each holds the file's descriptor (and perhaps its directory's) until done, beyond the one
 * per stream that max_streams allows for (bundles hold up to 64 files a stream), so the descriptors
 * left over set the limit (r->flush_max). A cap of 256 made 10,000 files of 10 KiB 30-60 % slower. */
#define RCV_FLUSH_MAX 1024

struct rcv_wbuf;

/* What the peer's lanes share: the destination, the options, directory bookkeeping, reports. */
struct receiver {
	int rootfd;
	bool root; /* running as root: owner and group can be given away */
	bool single_file;
	bool existed;   /* the destination was there before (sync_ready: the quick check is worth asking) */
	bool made_root; /* this run created the destination directory (--fsync flushes its parent too) */
	bool no_ring;   /* QSYNC_NO_URING: no io_uring here either (flush_dirs) */
	char single_name[256];
	bool perms, times, owner, group, do_fsync;
	mode_t umask;
	struct net_ctl_chan *ctl; /* the control thread's: reports are sent from there */
	pthread_mutex_t lock;     /* single_used, root_seen, dirs, reports */
	bool single_used;
	uint64_t single_done; /* file_id + 1 of the single-file destination's entry once it is in place */
	bool root_seen;
	struct rcv_dirfix *dirs;
	size_t n_dirs, cap_dirs, dir_bytes;
	struct rcv_report reports[RCV_MAX_REPORTS];
	size_t n_reports, reports_dropped;
	struct rcv_big *bigs; /* large files being received in ranges */
	size_t n_bigs;
	uint32_t single_big; /* single-file destination received in ranges: its file_id + 1 */
	atomic_uint_fast64_t ok, failed, bytes,
	    unchanged;        /* relaxed: counted by the lanes, read at the end */
	uint64_t failed_late; /* of failed, found at the end (receiver_finish), after every entry was
	                         answered: the sender never heard of them (the control thread's alone) */
	atomic_uint placing;  /* large files being put in place (b->placing); acquire/release */
	size_t wbuf_budget;   /* write buffers of one lane */
	unsigned flush_max; /* fsyncs one lane keeps on its ring (receiver_open: RCV_FLUSH_MAX unless set) */
	int verbose;
};

/* One data plane of the peer and the streams arriving on it; driven by one thread. */
struct rcv_lane {
	struct receiver *r;
	struct net_dp dp;
	struct net_quic *q;            /* the QUIC lane's server (NULL for the SSH lane) */
	struct io_dircache *dc;        /* parents of the files being written, beneath rootfd */
	struct io_ring *ring;          /* the lane's io_uring for content writes (NULL: written at once) */
	bool flush_workers;            /* the ring's io-wq limit is raised for flushing (RCV_FLUSH_WORKERS) */
	unsigned flushing;             /* files flushing on the ring now (at most r->flush_max) */
	struct rcv_dirflush *dirflush; /* directories flushing on the ring now (receiver.c) */
	size_t wbuf_bytes;             /* held by streams and writes in flight now */
	struct rcv_wbuf *wfree[RCV_WBUF_FREE_MAX];
	size_t n_wfree;
	atomic_uint_fast64_t closed; /* streams ended here; relaxed: the control thread only compares */
	atomic_int dead;             /* the data plane failed: its rc (negative) */
	char dead_msg[QS_ERR_MSG_MAX];
};

/* Whether a large file is still being put in place (its flushes on a ring): ack_complete waits. */
bool receiver_placing(struct receiver *r);

/* Opens (creating the last level if needed) the destination described by sync_start. */
int receiver_open(struct receiver *r, const struct net_ctl_sync_start *ss, struct qs_err *err);

/* Readies l (zeroed by the caller, its data plane set or to be set) for r, once r is open: its
 * directory cache. Returns 0 or -ENOMEM. */
int receiver_lane_init(struct rcv_lane *l, struct receiver *r);

/* Gives l an io_uring for its content writes (where io_uring is not to be had, the lane writes at
 * once). Called on the lane's own thread, before its first stream: the ring, like the write buffers
 * that thread allocates and touches first, then sits on the NUMA node the worker is pinned to. */
void receiver_lane_ring(struct rcv_lane *l);

/* Waits for l's writes in flight (the jobs whose streams have ended go with them). Its data plane
 * must be gone already (every stream closed). */
void receiver_lane_drain(struct rcv_lane *l);
void receiver_lane_free(struct rcv_lane *l);

/* Sends the queued error reports on the control channel. Called from the control thread. */
void receiver_flush_reports(struct receiver *r);

/* Applies directory modes and times, deepest first (after all contents are written); with --fsync,
 * flushes every directory then (each one that fails is reported and counted failed). */
int receiver_finish(struct receiver *r, struct qs_err *err);

void receiver_free(struct receiver *r);

extern const struct net_dp_cb receiver_dp_cb_template;

#endif
