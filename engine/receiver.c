/* The receiving side of a transfer: every stream the sender opens is one entry. Its path is judged
 * before any syscall uses it, its bytes go to a temporary file beneath the destination, and only a
 * complete stream whose XXH3-64 matches is renamed into place. The answer goes back on the same stream
 * (an ack), and a refusal is also reported on the control channel and on stderr. Directory modes and
 * times are applied last, deepest first, so writing into them cannot disturb them. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/engine_int.h"
#include "io/io.h"

struct rcv_job {
	struct receiver *r;
	struct rcv_lane *l;
	struct rcv_big *big; /* a range of this large file (its file, not wf, is written) */
	uint64_t base;       /* file offset of the stream's first content byte */
	int64_t sid;
	struct net_stream_dec dec;
	struct io_wfile wf;
	bool wf_open;
	bool meta_seen;
	bool end_seen; /* trailer read and hash good: committed when FIN shows nothing follows */
	bool finished; /* committed, or failed: nothing more to do with incoming bytes */
	bool failed;
	XXH3_state_t *hash;
	char link[NET_STREAM_MAX_PATH + 1];
	size_t link_len;
	uint8_t ack[1 + NET_STREAM_MAX_ACK]; /* what goes back: [verdict] [ack] */
	size_t ack_len, ack_off;
	bool ack_ready; /* something to send */
	bool ack_final; /* the ack is in: our side ends when it is out */
	bool ask;       /* an ASK entry: the verdict comes first */
	bool verdict_done;
	bool single_claim;                  /* this stream took the single-file destination's one entry */
	char path[NET_STREAM_MAX_PATH + 1]; /* the path we act on (after single-file renaming) */
	/* Content is gathered here and written in large pieces: QUIC hands it over a packet at a time,
	 * and a pwrite per ~1.2 KB cost more than the network (ext4's per-write journal work). A full
	 * buffer goes to the lane's ring and the stream goes on into a fresh one. */
	struct rcv_wbuf *wb;
	size_t wlen;
	uint64_t woff;       /* stream offset of wb's first byte */
	unsigned writes;     /* on the ring, not yet done: the file stays open and the job alive until 0 */
	int werr;            /* the first failed write */
	bool commit_waiting; /* the stream is complete; its commit waits for its writes */
	bool dead;           /* the stream has ended; the job goes when its writes are done */
	struct rcv_batch *batch; /* a batch of questions (NET_STREAM_F_BATCH), not an entry */
	/* --fsync on the lane's ring: the file's fsync, then (once it is in place) its directory's, each
	 * on an io-wq worker while the lane goes on; many files flushing at once share the file system's
	 * journal commits, where one after the other on the lane each would wait for its own. */
	struct io_ring_op flush_op;
	uint8_t flushing; /* FLUSH_FILE or FLUSH_DIR while flush_op is on the ring (counted in writes) */
	struct rcv_job *bundle;    /* an entry of this bundle (NULL: a stream's own, or the bundle went) */
	struct rcv_job *wait_next; /* the next entry waiting in its bundle's answer queue */
	struct rcv_job *dir_next;  /* the next file waiting on the same directory flush */
	int dir_res;               /* that flush's result, as its files go on */
};

enum { FLUSH_NONE, FLUSH_FILE, FLUSH_DIR };

/* A batch of questions: every entry is answered in order, into out (sent from j->ack_off on). Its size
 * is bounded by the entries a batch may hold, each answer at most a verdict and an ack. */
struct rcv_batch {
	bool bundle;                        /* a bundle of whole entries: each answer is an entry's ack */
	struct rcv_job *cur;                /* (bundle) the entry being received, a job of its own */
	struct net_stream_dec dec;          /* (batch) the entry being read */
	char link[NET_STREAM_MAX_PATH + 1]; /* a symlink entry's target, as it arrives */
	uint32_t n;                         /* entries read */
	uint8_t *out;
	size_t out_len, out_cap;
	/* (bundle) entries read whose answers wait, in entry order, for the first of them to be done
	 * flushing (--fsync); answers go in the order the entries came */
	struct rcv_job *wait_head, *wait_tail;
	bool ended; /* nothing more is read: the end goes out once the queue is empty */
};

/* A write buffer: a stream's own, or a write in flight on the lane's ring (then j is its job). */
struct rcv_wbuf {
	struct io_ring_op op;
	struct rcv_job *j;
	size_t cap;
	uint8_t data[];
};

static void commit_now(struct rcv_job *j);
static void job_destroy(struct rcv_job *j);
static void flush_begin(struct rcv_job *j, const struct io_meta *im);
static void big_committed(struct rcv_job *j, int rc, const char *msg);

static const char *status_code_name(uint8_t st)
{
	switch (st) {
	case NET_STREAM_EBADPATH:
		return "UNSAFE_PATH";
	case NET_STREAM_EHASH:
		return "HASH_MISMATCH";
	case NET_STREAM_ETRUNC:
		return "TRUNCATED";
	case NET_STREAM_EPROTO:
		return "PROTOCOL";
	case NET_STREAM_EIO:
		return "IO_ERROR";
	default:
		return "OK";
	}
}

/* The ack, and before it, on an ASK entry still waiting for its verdict, HAVE: whatever the outcome,
 * the sender is not to send the data (a failure says why in the ack). */
static void queue_ack(struct rcv_job *j, uint8_t status, const char *msg)
{
	size_t at = j->ack_len;
	if (j->ask && !j->verdict_done) {
		j->ack[at++] = NET_STREAM_VERDICT_HAVE;
		j->verdict_done = true;
	}
	ssize_t n = net_stream_ack_encode(status, msg, j->ack + at, sizeof(j->ack) - at);
	j->ack_len = at + (n > 0 ? (size_t)n : 0);
	j->ack_final = true;
	j->ack_ready = true;
	if (!j->dead) /* (a large file's last range put in place after its stream went: see rcv_closed) */
		net_dp_stream_resume(&j->l->dp, j->sid);
}

/* An ASK entry's data is wanted: SEND goes back now, the ack later. */
static void queue_send_verdict(struct rcv_job *j)
{
	j->ack[j->ack_len++] = NET_STREAM_VERDICT_SEND;
	j->verdict_done = true;
	j->ack_ready = true;
	net_dp_stream_resume(&j->l->dp, j->sid);
}

/* Write buffers: a file that fits gets one of its own size (one write in all); larger ones share
 * RCV_WBUF_BIG-sized buffers from a free list, within RCV_WBUF_BUDGET bytes for all streams together.
 * A stream that finds the budget spent writes straight through. */
static void wbuf_take(struct rcv_job *j, uint64_t size)
{
	struct rcv_lane *r = j->l;
	size_t want = size < RCV_WBUF_BIG ? (size_t)size : RCV_WBUF_BIG;
	j->wb = NULL;
	j->wlen = 0;
	if (want == 0 || r->wbuf_bytes + want > j->r->wbuf_budget)
		return;
	struct rcv_wbuf *b;
	if (want == RCV_WBUF_BIG && r->n_wfree > 0) {
		b = r->wfree[--r->n_wfree];
	} else {
		b = malloc(sizeof(*b) + want);
		if (!b)
			return;
		b->cap = want;
	}
	j->wb = b;
	r->wbuf_bytes += want;
}

static void wbuf_release(struct rcv_lane *r, struct rcv_wbuf *b)
{
	r->wbuf_bytes -= b->cap;
	if (b->cap == RCV_WBUF_BIG && r->n_wfree < RCV_WBUF_FREE_MAX)
		r->wfree[r->n_wfree++] = b;
	else
		free(b);
}

static void wbuf_give_back(struct rcv_job *j)
{
	if (!j->wb)
		return;
	wbuf_release(j->l, j->wb);
	j->wb = NULL;
	j->wlen = 0;
}

/* What is left to do once the job's writes are done: its commit, or its end. */
static void job_continue(struct rcv_job *j)
{
	if (j->writes > 0)
		return;
	if (j->dead) {
		job_destroy(j);
	} else if (j->commit_waiting) {
		j->commit_waiting = false;
		commit_now(j);
	}
}

/* A write on the ring is done (on the lane's thread, from io_ring_reap). */
static void write_done(struct io_ring_op *op, int res)
{
	struct rcv_wbuf *b = (struct rcv_wbuf *)op;
	struct rcv_job *j = b->j;
	wbuf_release(j->l, b);
	j->writes--;
	if (res < 0 && j->werr == 0)
		j->werr = res;
	job_continue(j);
}

/* Where the stream's content goes: its own file, or the large file its range belongs to. */
static struct io_wfile *out_file(struct rcv_job *j)
{
	return j->big ? &j->big->wf : &j->wf;
}

/* Writes what the buffer holds: on the ring when the lane has one and the file is large (the stream
 * goes on into a fresh buffer meanwhile), else at once. A small file's one write costs less done here
 * than handed to an io-wq worker, woken through the eventfd and committed a turn later. */
static int wbuf_flush(struct rcv_job *j)
{
	struct rcv_wbuf *b = j->wb;
	if (!b || j->wlen == 0)
		return 0;
	struct io_wfile *f = out_file(j);
	uint64_t off = j->base + j->woff;
	size_t n = j->wlen;
	if (j->l->ring && f->fd >= 0 && (j->big || j->dec.meta.size >= RCV_RING_MIN)) {
		b->j = j;
		b->op.done = write_done;
		if (io_ring_write(j->l->ring, &b->op, f->fd, b->data, n, off) == 0) {
			j->writes++;
			j->woff += n;
			uint64_t left = j->dec.meta.size > j->woff ? j->dec.meta.size - j->woff : 0;
			wbuf_take(j, left);
			return 0;
		}
	}
	int rc = io_wfile_pwrite(f, b->data, n, off);
	j->woff += n;
	j->wlen = 0;
	return rc;
}

/* Positioned write through the buffer. Data arrives in order, so only a full buffer is written. */
static int buffered_write(struct rcv_job *j, const uint8_t *p, size_t len, uint64_t off)
{
	if (!j->wb) /* none to be had last time: perhaps the writes in flight are done now */
		wbuf_take(j, j->dec.meta.size > off ? j->dec.meta.size - off : 0);
	if (!j->wb)
		return io_wfile_pwrite(out_file(j), p, len, j->base + off);
	if (j->wlen > 0 && off != j->woff + j->wlen) {
		int rc = wbuf_flush(j);
		if (rc < 0)
			return rc;
		if (!j->wb)
			return io_wfile_pwrite(out_file(j), p, len, j->base + off);
	}
	if (j->wlen == 0)
		j->woff = off;
	while (len > 0) {
		size_t k = j->wb->cap - j->wlen;
		if (k > len)
			k = len;
		memcpy(j->wb->data + j->wlen, p, k);
		j->wlen += k;
		p += k;
		len -= k;
		off += k;
		if (j->wlen == j->wb->cap) {
			int rc = wbuf_flush(j);
			if (rc < 0)
				return rc;
			if (!j->wb) /* no buffer to go on with: the rest straight to the file */
				return len ? io_wfile_pwrite(out_file(j), p, len, j->base + off) : 0;
		}
	}
	return 0;
}

static void job_fail(struct rcv_job *j, uint8_t status, const char *msg);
static const char *qp(const char *p, char *buf);

/* ---- large files in ranges ---- */

static bool bit(const uint8_t *b, uint32_t i)
{
	return b[i / 8] & (1u << (i % 8));
}

static void bit_set(uint8_t *b, uint32_t i, bool on)
{
	if (on)
		b[i / 8] |= (uint8_t)(1u << (i % 8));
	else
		b[i / 8] &= (uint8_t) ~(1u << (i % 8));
}

static void big_free(struct rcv_big *b)
{
	if (b->open && !b->committed)
		io_wfile_abort(&b->wf); /* unnamed: it vanishes; never under the final name */
	free(b->started);
	free(b->finished);
	free(b);
}

/* Drops b from r's registry and frees it. Caller holds r->lock; nobody refers to b any more. */
static void big_remove(struct receiver *r, struct rcv_big *b)
{
	for (struct rcv_big **pp = &r->bigs; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			r->n_bigs--;
			break;
		}
	big_free(b);
}

/* A range stream lets go of its file. A committed file stays in the registry (the oldest finished one
 * goes when room is needed), so that a range sent again, its ack lost with a data path that died, is
 * answered as done (big_begin) instead of starting the file over; a failed one loses its data but
 * stays, so that its other ranges are refused; one still waiting for ranges (some cut off with a data
 * path that died) stays as it is. Caller holds r->lock. */
static void big_put(struct receiver *r, struct rcv_big *b)
{
	if (b->refs > 0)
		b->refs--;
	if (b->refs > 0)
		return;
	if (b->failed && b->open) {
		io_wfile_abort(&b->wf);
		b->open = false;
	}
}

/* Marks j's file failed. Returns true when this is the first failure of the file (to be counted and
 * reported), false when it had failed already. */
static bool big_fail(struct rcv_job *j)
{
	struct receiver *r = j->r;
	struct rcv_big *b = j->big;
	pthread_mutex_lock(&r->lock);
	bool first = !b->reported;
	b->failed = b->reported = true;
	bit_set(b->started, j->dec.meta.range_idx, false);
	pthread_mutex_unlock(&r->lock);
	return first;
}

/* The first bytes of a range: its file found or made, the range claimed. Returns 0 (its data is wanted),
 * 1 for a range answered at once (an ASK range of a file the destination has: HAVE; a range that has
 * arrived whole before: done), or fails j (and returns -1) for a range that contradicts its file, comes
 * twice at the same time, or belongs to a failed file. */
static int big_begin(struct rcv_job *j, const struct io_meta *im)
{
	struct receiver *r = j->r;
	const struct net_stream_meta *m = &j->dec.meta;
	struct qs_err e = {0};
	const char *why = NULL;
	char msg[NET_STREAM_MAX_ACK_MSG];
	struct rcv_big *b;

	pthread_mutex_lock(&r->lock);
	for (b = r->bigs; b; b = b->next)
		if (b->file_id == m->file_id)
			break;
	if (!b) {
		if (r->n_bigs >= RCV_MAX_BIGS) {
			/* make room: the oldest failed, finished or unchanged file no stream holds any
			 * more (the sender does not send every range of an unchanged one); the list is
			 * newest first */
			struct rcv_big *old = NULL;
			for (struct rcv_big *x = r->bigs; x; x = x->next)
				if ((x->failed || x->committed || x->have) && x->refs == 0)
					old = x;
			if (old)
				big_remove(r, old);
		}
		size_t nb = ((size_t)m->range_count + 7) / 8;
		b = r->n_bigs < RCV_MAX_BIGS ? calloc(1, sizeof(*b)) : NULL;
		if (b) {
			b->started = calloc(1, nb);
			b->finished = calloc(1, nb);
		}
		if (!b || !b->started || !b->finished) {
			if (b) {
				free(b->started);
				free(b->finished);
				free(b);
			}
			pthread_mutex_unlock(&r->lock);
			job_fail(j, NET_STREAM_EIO, "too many large files arriving at once");
			return -1;
		}
		b->file_id = m->file_id;
		snprintf(b->path, sizeof(b->path), "%s", j->path);
		b->file_size = m->file_size;
		b->count = m->range_count;
		b->mode = m->mode;
		b->uid = m->uid;
		b->gid = m->gid;
		b->mtime_ns = m->mtime_ns;
		b->ask = j->ask;
		int have = 0;
		uint8_t st = NET_STREAM_EBADPATH;
		if (j->ask) {
			/* the quick check, once for the whole file: its ranges cannot disagree */
			struct io_meta fix = *im;
			fix.set_mode = r->perms; /* (as ask_have) */
			have = io_unchanged_dc(j->l->dc, j->path, m->file_size, m->mtime_ns, &fix, &e);
		}
		if (have == 0 && io_wfile_open(r->rootfd, j->path, im->mode, 0, &b->wf, &e) < 0) {
			have = -1;
			st = NET_STREAM_EIO;
		}
		if (have < 0) {
			big_free(b);
			pthread_mutex_unlock(&r->lock);
			snprintf(msg, sizeof(msg), "%s", e.msg);
			job_fail(j, st, msg);
			return -1;
		}
		b->have = have == 1;
		b->open = !b->have;
		if (b->have) {
			atomic_fetch_add_explicit(&r->ok, 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&r->unchanged, 1, memory_order_relaxed);
		}
		b->next = r->bigs;
		r->bigs = b;
		r->n_bigs++;
	} else if (strcmp(b->path, j->path) != 0 || b->file_size != m->file_size ||
	           b->count != m->range_count || b->mode != m->mode || b->uid != m->uid || b->gid != m->gid ||
	           b->mtime_ns != m->mtime_ns || b->ask != j->ask) {
		why = "ranges of one file disagree about it";
	} else if (b->failed) {
		why = "another range of this file failed";
	} else if (b->have || b->committed || bit(b->finished, m->range_idx)) {
		/* answered below */
	} else if (bit(b->started, m->range_idx)) {
		why = "range sent twice"; /* (at the same time: no sender does that) */
	}
	if (why) {
		pthread_mutex_unlock(&r->lock);
		job_fail(j, NET_STREAM_EPROTO, why); /* j->big is not set: the file itself is not failed */
		return -1;
	}
	bool have = b->have;
	if (have || b->committed || bit(b->finished, m->range_idx)) {
		/* Answered at once, nothing written. Unchanged: every range is answered HAVE (again, for
		 * one sent twice: a resend after the data path changed); the entry goes once each range
		 * has asked. Or the range arrived whole with a good hash before (the file may be in place
		 * already): a resend whose first ack was lost with the data path it went on; done, as it
		 * was, and what it carries again (the same bytes, by its metadata) is dropped. Such an ASK
		 * range gets SEND, not HAVE: HAVE would tell the sender the destination had the whole
		 * file before, and it would take the ranges it has not sent yet for done. */
		if (have && !bit(b->finished, m->range_idx)) {
			bit_set(b->finished, m->range_idx, true);
			b->done++;
		}
		if (have && b->done == b->count)
			big_remove(r, b);
		pthread_mutex_unlock(&r->lock);
		if (!have && j->ask)
			queue_send_verdict(j);
		j->finished = true;
		queue_ack(j, NET_STREAM_OK, NULL); /* (with HAVE before it, for an ASK stream) */
		return 1;
	}
	bit_set(b->started, m->range_idx, true);
	b->refs++;
	j->big = b;
	j->base = m->range_off;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* A range arrived whole with a good hash: recorded; the last one puts the file in place. */
static void big_end(struct rcv_job *j, struct io_meta *im)
{
	struct receiver *r = j->r;
	struct rcv_big *b = j->big;
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	struct qs_err e = {0};
	int rc = wbuf_flush(j);
	wbuf_give_back(j);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "write to \"%s\" failed: %s", qp(j->path, qb), strerror(-rc));
		job_fail(j, NET_STREAM_EIO, msg);
		return;
	}
	pthread_mutex_lock(&r->lock);
	uint32_t idx = j->dec.meta.range_idx;
	bit_set(b->started, idx, false);
	bit_set(b->finished, idx, true);
	b->done++;
	bool last = b->done == b->count && !b->failed;
	if (last) {
		b->placing = true;
		atomic_fetch_add_explicit(&r->placing, 1, memory_order_acq_rel);
	}
	pthread_mutex_unlock(&r->lock);
	if (!last) {
		j->finished = true;
		queue_ack(j, NET_STREAM_OK, NULL);
		return;
	}
	/* Every range is in, each with its own good hash, and by the layout they tile the file. The file
	 * is this job's alone from here on (a range sent again is answered from the bits; the job holds
	 * the file), so it is put in place outside the lock: a flush there would hold up every lane. */
	im->keep_mode = !r->perms;
	if (r->do_fsync) {
		flush_begin(j, im); /* (big_committed when its flushes are done) */
		return;
	}
	rc = io_wfile_commit(&b->wf, im, false, &e);
	if (rc < 0)
		snprintf(msg, sizeof(msg), "cannot finish \"%s\": %s", qp(j->path, qb), e.msg);
	big_committed(j, rc, msg);
}

/* The large file of j's last range is in place (rc 0), or not (msg says why; b->wf is closed). */
static void big_committed(struct rcv_job *j, int rc, const char *msg)
{
	struct receiver *r = j->r;
	struct rcv_big *b = j->big;
	char qb[IO_QUOTE_MAX];
	pthread_mutex_lock(&r->lock);
	b->committed = rc == 0;
	b->open = false;
	b->placing = false;
	if (rc < 0)
		b->failed = true; /* (so no range sent again is taken for done from here on; job_fail
		                     below counts and reports it) */
	pthread_mutex_unlock(&r->lock);
	if (rc < 0) {
		job_fail(j, NET_STREAM_EIO, msg);
		atomic_fetch_sub_explicit(&r->placing, 1, memory_order_acq_rel); /* (counted first) */
		return;
	}
	j->finished = true;
	atomic_fetch_add_explicit(&r->ok, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&r->bytes, b->file_size, memory_order_relaxed);
	atomic_fetch_sub_explicit(&r->placing, 1, memory_order_acq_rel);
	if (r->verbose > 1)
		fprintf(stderr, "qsync: receiver: %s\n", qp(j->path, qb));
	queue_ack(j, NET_STREAM_OK, NULL);
}

/* The ack status for what the decoder refused: a path it could not take, or framing. */
static uint8_t dec_status(ssize_t rc)
{
	return rc == -ENAMETOOLONG || rc == -EINVAL ? NET_STREAM_EBADPATH : NET_STREAM_EPROTO;
}

/* Counts a failed entry and tells the client (control channel) and the log (stderr). */
static void report(struct receiver *r, const char *file, int64_t sid, uint8_t status, const char *msg)
{
	atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
	fprintf(stderr, "qsync: receiver: %s\n", msg);
	pthread_mutex_lock(&r->lock);
	if (r->n_reports < RCV_MAX_REPORTS) {
		struct rcv_report *rep = &r->reports[r->n_reports];
		rep->file = strdup(file);
		rep->msg = strdup(msg);
		rep->sid = sid;
		rep->code = status_code_name(status);
		if (rep->file && rep->msg) {
			r->n_reports++;
		} else {
			free(rep->file);
			free(rep->msg);
			r->reports_dropped++;
		}
	} else {
		r->reports_dropped++;
	}
	pthread_mutex_unlock(&r->lock);
}

/* Marks the entry failed: tells the sender (ack), the client and the log (report). */
static void job_fail(struct rcv_job *j, uint8_t status, const char *msg)
{
	if (j->finished)
		return;
	j->finished = true;
	j->failed = true;
	if (j->wf_open && j->writes == 0) { /* (with writes in flight, the file goes with the job) */
		io_wfile_abort(&j->wf);
		j->wf_open = false;
	}
	wbuf_give_back(j);
	if (j->big && !big_fail(j)) {
		queue_ack(j, status, msg); /* the file had failed already: reported then */
		return;
	}
	report(j->r, j->meta_seen ? j->dec.meta.path : "", j->sid, status, msg);
	queue_ack(j, status, msg);
}

/* What to apply to a new entry. Like rsync: with -p the sender's permission bits; without, the sender's
 * bits less setuid/setgid/sticky, masked by our umask (and an entry that already exists keeps its own:
 * see commit()). Owner and group only as root, each only when asked for. */
static struct io_meta meta_for(const struct receiver *r, uint32_t mode, int64_t mtime_ns, uint32_t uid,
                               uint32_t gid)
{
	struct io_meta im = {0};
	im.set_mode = true;
	im.mode = r->perms ? mode & 07777 : mode & 0777 & ~r->umask;
	im.set_mtime = r->times;
	im.mtime_ns = mtime_ns;
	im.set_owner = (r->owner || r->group) && r->root;
	im.uid = r->owner ? uid : (uint32_t)-1; /* -1: fchown leaves it */
	im.gid = r->group ? gid : (uint32_t)-1;
	return im;
}

/* A name safe to print: the sender chose it, control bytes and all. */
static const char *qp(const char *p, char *buf)
{
	return io_path_quote(p, strlen(p), buf, IO_QUOTE_MAX);
}

static int remember_dir(struct receiver *r, const char *rel, const struct net_stream_meta *m, bool created)
{
	size_t cost = sizeof(struct rcv_dirfix) + strlen(rel) + 1;
	if (r->dir_bytes + cost > RCV_MAX_DIR_BYTES)
		return -ENOSPC; /* a sender making us remember more than any real tree needs */
	if (r->n_dirs == r->cap_dirs) {
		size_t ncap = r->cap_dirs ? r->cap_dirs * 2 : 64;
		struct rcv_dirfix *nd = realloc(r->dirs, ncap * sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		r->dirs = nd;
		r->cap_dirs = ncap;
	}
	struct rcv_dirfix *d = &r->dirs[r->n_dirs];
	d->rel = strdup(rel);
	if (!d->rel)
		return -ENOMEM;
	d->set_mode = r->perms || created;
	d->mode = m->mode;
	d->mtime_ns = m->mtime_ns;
	d->uid = m->uid;
	d->gid = m->gid;
	r->n_dirs++;
	r->dir_bytes += cost;
	return 0;
}

/* An ASK entry (not a range: big_begin decides those once per file): true when it is settled here (the
 * destination has the file already, so HAVE and the ack are on their way, or the look failed and the
 * entry with it), false when its data is wanted (the caller opens the file and sends SEND). */
/* The quick check of a regular file the sender asks about: 1 when the destination has it at path (its
 * attributes then put right as the options say), 0 when it is to be sent, or a negative errno. */
static int look_unchanged(struct rcv_lane *l, const char *path, const struct net_stream_meta *m,
                          struct qs_err *e)
{
	const struct receiver *r = l->r;
	struct io_meta fix = meta_for(r, m->mode, m->mtime_ns, m->uid, m->gid);
	fix.set_mode = r->perms; /* without -p an unchanged file keeps its bits, as with rsync */
	return io_unchanged_dc(l->dc, path, m->size, m->mtime_ns, &fix, e);
}

static bool ask_have(struct rcv_job *j)
{
	struct receiver *r = j->r;
	char msg[NET_STREAM_MAX_ACK_MSG];
	struct qs_err e = {0};

	int rc = look_unchanged(j->l, j->path, &j->dec.meta, &e);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "%s", e.msg);
		job_fail(j, NET_STREAM_EBADPATH, msg);
		return true;
	}
	if (rc == 0)
		return false;
	j->finished = true;
	atomic_fetch_add_explicit(&r->ok, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&r->unchanged, 1, memory_order_relaxed);
	queue_ack(j, NET_STREAM_OK, NULL);
	return true;
}

static void on_meta(struct rcv_job *j)
{
	struct receiver *r = j->r;
	const struct net_stream_meta *m = &j->dec.meta;
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	struct qs_err e = {0};

	j->meta_seen = true;
	j->ask = m->flags & NET_STREAM_F_ASK; /* from here on, whatever the answer, a verdict comes first */
	if (r->single_file) {
		/* One file, written under the destination's own name: nothing else may touch that
		 * directory (it is the user's, not the transfer's). */
		pthread_mutex_lock(&r->lock);
		bool refuse = (m->flags & (NET_STREAM_F_DIR | NET_STREAM_F_ROOT)) || r->single_used;
		/* the ranges of that one file are that one file too */
		if (refuse && (m->flags & NET_STREAM_F_RANGE) && r->single_big == m->file_id + 1u)
			refuse = false;
		/* and the file sent again, its ack lost with the data path it went on */
		if (refuse && !(m->flags & (NET_STREAM_F_RANGE | NET_STREAM_F_DIR | NET_STREAM_F_ROOT)) &&
		    r->single_done == m->file_id + 1u)
			refuse = false;
		if (!r->single_used && (m->flags & NET_STREAM_F_RANGE))
			r->single_big = m->file_id + 1u;
		if (!r->single_used && !(m->flags & NET_STREAM_F_RANGE))
			j->single_claim = true;
		r->single_used = true;
		pthread_mutex_unlock(&r->lock);
		if (refuse) {
			job_fail(j, NET_STREAM_EPROTO,
			         "only one file may be sent to a single-file destination");
			return;
		}
	}
	if (m->flags & NET_STREAM_F_ROOT) {
		pthread_mutex_lock(&r->lock);
		bool refuse = !(m->flags & NET_STREAM_F_DIR) || r->root_seen;
		if (!refuse)
			r->root_seen = true;
		pthread_mutex_unlock(&r->lock);
		if (refuse) {
			job_fail(j, NET_STREAM_EPROTO, "a root entry must be a directory, sent once");
			return;
		}
		j->path[0] = '\0';
	} else if (io_path_check(m->path, m->path_len, &e) < 0) {
		snprintf(msg, sizeof(msg), "%s", e.msg);
		job_fail(j, NET_STREAM_EBADPATH, msg);
		return;
	} else if (r->single_file) {
		snprintf(j->path, sizeof(j->path), "%s", r->single_name);
	} else {
		memcpy(j->path, m->path, m->path_len + 1);
	}

	if (m->flags & NET_STREAM_F_DIR) {
		bool created = false;
		int rc = 0;
		if (j->path[0]) {
			int fd = io_open_beneath(r->rootfd, j->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
			if (fd >= 0)
				close(fd);
			else
				created = true;
			rc = io_mkdir_beneath(r->rootfd, j->path, &e);
		}
		if (rc == 0) {
			pthread_mutex_lock(&r->lock);
			rc = remember_dir(r, j->path, m, created);
			pthread_mutex_unlock(&r->lock);
		}
		if (rc < 0) {
			snprintf(msg, sizeof(msg), "cannot create directory \"%s\": %s", qp(j->path, qb),
			         e.msg[0]        ? e.msg
			         : rc == -ENOSPC ? "too many directories"
			                         : "out of memory");
			job_fail(j, NET_STREAM_EIO, msg);
		}
		return;
	}
	if (m->flags & NET_STREAM_F_SYMLINK) {
		if (m->size == 0 || m->size > NET_STREAM_MAX_PATH)
			job_fail(j, NET_STREAM_EPROTO, "symlink target of impossible length");
		return;
	}
	struct io_meta im = meta_for(r, m->mode, m->mtime_ns, m->uid, m->gid);
	if (j->ask && !(m->flags & NET_STREAM_F_RANGE) && ask_have(j))
		return;
	if (m->flags & NET_STREAM_F_RANGE) {
		if (big_begin(j, &im) == 0) {
			wbuf_take(j, m->size);
			if (j->ask)
				queue_send_verdict(j);
		}
		return;
	}
	if (io_wfile_open_dc(j->l->dc, j->path, im.mode, 0, &j->wf, &e) < 0) {
		snprintf(msg, sizeof(msg), "%s", e.msg);
		job_fail(j, NET_STREAM_EIO, msg);
		return;
	}
	j->wf_open = true;
	wbuf_take(j, m->size);
	if (j->ask)
		queue_send_verdict(j);
}

static void on_data(struct rcv_job *j, const struct net_stream_ev *ev)
{
	char msg[NET_STREAM_MAX_ACK_MSG];
	XXH3_64bits_update(j->hash, ev->data, ev->len);
	if (j->dec.meta.flags & NET_STREAM_F_SYMLINK) {
		if (ev->offset + ev->len > NET_STREAM_MAX_PATH) {
			job_fail(j, NET_STREAM_EPROTO, "symlink target too long");
			return;
		}
		memcpy(j->link + ev->offset, ev->data, ev->len);
		j->link_len = (size_t)(ev->offset + ev->len);
		return;
	}
	int rc = buffered_write(j, ev->data, ev->len, ev->offset);
	if (rc < 0) {
		char qb[IO_QUOTE_MAX];
		snprintf(msg, sizeof(msg), "write to \"%s\" failed: %s", qp(j->path, qb), strerror(-rc));
		job_fail(j, NET_STREAM_EIO, msg);
	}
}

static void on_end(struct rcv_job *j, const struct net_stream_ev *ev)
{
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	if (XXH3_64bits_digest(j->hash) != ev->hash) {
		snprintf(msg, sizeof(msg),
		         "hash mismatch for \"%s\": content damaged in transit, not written",
		         qp(j->path[0] ? j->path : ".", qb));
		job_fail(j, NET_STREAM_EHASH, msg);
		return;
	}
	j->end_seen = true;
}

/* The stream ended right after a good trailer: put the entry in place. */
static void commit(struct rcv_job *j)
{
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	int rc = wbuf_flush(j);
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "write to \"%s\" failed: %s", qp(j->path, qb), strerror(-rc));
		job_fail(j, NET_STREAM_EIO, msg);
		return;
	}
	wbuf_give_back(j);
	j->commit_waiting = true;
	job_continue(j); /* at once, or when the last write on the ring is done */
}

/* The entry is in place: counted, and its ack goes back. */
static void commit_done(struct rcv_job *j)
{
	struct receiver *r = j->r;
	char qb[IO_QUOTE_MAX];
	j->finished = true;
	atomic_fetch_add_explicit(&r->ok, 1, memory_order_relaxed);
	if (j->single_claim) {
		pthread_mutex_lock(&r->lock);
		r->single_done = j->dec.meta.file_id + 1u;
		pthread_mutex_unlock(&r->lock);
	}
	if (r->verbose > 1)
		fprintf(stderr, "qsync: receiver: %s\n", qp(j->path[0] ? j->path : ".", qb));
	queue_ack(j, NET_STREAM_OK, NULL);
}

static void flush_done(struct io_ring_op *op, int res);
static void flushed(struct rcv_job *j, uint8_t stage, int res);
static void bundle_drain(struct rcv_job *j);

/* One directory's flush on the lane's ring. It covers every file linked into the directory before it
 * was submitted (fsync of a directory makes what was done to it so far durable); a file linked while it
 * runs waits for the next one, which starts when this one is done. So a directory that takes many files
 * at once is flushed a few times, not once a file. The directory is known by the descriptor its files
 * hold: the covered ones keep it open until the flush is done, so no other directory can have it. */
struct rcv_dirflush {
	struct io_ring_op op;
	struct rcv_lane *l;
	int fd;
	struct rcv_job *covered; /* linked before op was submitted (by dir_next) */
	struct rcv_job *next;    /* linked since: the next flush's */
	struct rcv_dirflush *link;
};

static void dirflush_done(struct io_ring_op *op, int res);

/* j's file is in place in fd: it joins that directory's flush under way, or one starts. */
static int dirflush_join(struct rcv_job *j, int fd)
{
	struct rcv_lane *l = j->l;
	struct rcv_dirflush *g;
	for (g = l->dirflush; g; g = g->link)
		if (g->fd == fd) {
			j->dir_next = g->next;
			g->next = j;
			return 0;
		}
	if (!(g = calloc(1, sizeof(*g))))
		return -ENOMEM;
	*g = (struct rcv_dirflush){.op.done = dirflush_done, .l = l, .fd = fd, .covered = j};
	j->dir_next = NULL;
	if (io_ring_fsync(l->ring, &g->op, fd) < 0) {
		free(g);
		return -EBUSY;
	}
	g->link = l->dirflush;
	l->dirflush = g;
	return 0;
}

/* fd's fsync, for stage: on the lane's ring (flush_done, or dirflush_done, goes on from there), or,
 * without a ring or with the ring full, at once on this thread. */
static void flush(struct rcv_job *j, int fd, uint8_t stage)
{
	struct rcv_lane *l = j->l;
	if (l->ring && !l->flush_workers) { /* (on the lane's thread: the limit is the submitter's) */
		(void)io_ring_workers(l->ring, RCV_FLUSH_WORKERS);
		l->flush_workers = true;
	}
	j->flush_op.done = flush_done;
	if (l->ring && l->flushing < j->r->flush_max &&
	    (stage == FLUSH_DIR ? dirflush_join(j, fd) : io_ring_fsync(l->ring, &j->flush_op, fd)) == 0) {
		l->flushing++;
		j->flushing = stage;
		j->writes++;
		return;
	}
	flushed(j, stage, fsync(fd) < 0 ? -errno : 0);
}

/* The flushes of the entry's file (its own, or the large file of its last range) are done. */
static void flush_ok(struct rcv_job *j)
{
	if (j->big) {
		big_committed(j, 0, NULL);
		return;
	}
	atomic_fetch_add_explicit(&j->r->bytes, j->dec.meta.size, memory_order_relaxed);
	commit_done(j);
}

static void flush_failed(struct rcv_job *j, const char *msg)
{
	if (j->big) {
		big_committed(j, -EIO, msg);
		return;
	}
	j->wf_open = false;
	job_fail(j, NET_STREAM_EIO, msg);
}

static void flushed_dir(struct rcv_job *j, int res)
{
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	io_wfile_abort(out_file(j)); /* (the file is in place: this lets go of its directory) */
	if (!j->big)
		j->wf_open = false;
	if (res < 0) {
		snprintf(msg, sizeof(msg), "cannot finish \"%s\": cannot fsync its directory: %s",
		         qp(j->path, qb), strerror(-res));
		flush_failed(j, msg);
		return;
	}
	flush_ok(j);
}

/* The file's content is on the disk: it gets its name, and then its directory is flushed. */
static void flushed_file(struct rcv_job *j, int res)
{
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	struct qs_err e = {0};
	struct io_wfile *w = out_file(j);
	if (res < 0) {
		io_wfile_abort(w);
		snprintf(msg, sizeof(msg), "cannot finish \"%s\": cannot fsync it: %s", qp(j->path, qb),
		         strerror(-res));
		flush_failed(j, msg);
		return;
	}
	if (io_wfile_place(w, &e) < 0) {
		snprintf(msg, sizeof(msg), "cannot finish \"%s\": %s", qp(j->path, qb), e.msg);
		flush_failed(j, msg);
		return;
	}
	flush(j, w->dirfd, FLUSH_DIR);
}

static void flushed(struct rcv_job *j, uint8_t stage, int res)
{
	if (stage == FLUSH_FILE)
		flushed_file(j, res);
	else
		flushed_dir(j, res);
}

/* --fsync: the file's metadata now, then its flush; it is put in place when that is done (flushed_file),
 * acked when its directory's is (flush_ok). */
static void flush_begin(struct rcv_job *j, const struct io_meta *im)
{
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	struct qs_err e = {0};
	struct io_wfile *w = out_file(j);
	if (io_wfile_prepare(w, im, &e) < 0) {
		snprintf(msg, sizeof(msg), "cannot finish \"%s\": %s", qp(j->path, qb), e.msg);
		flush_failed(j, msg);
		return;
	}
	flush(j, w->fd, FLUSH_FILE);
}

/* An fsync on the ring is done (on the lane's thread). A job given up on meanwhile (the stream reset,
 * the connection gone) only goes: its file, unnamed or already in place, is left as it is now (the
 * last range of a large file is not given up on: see rcv_closed). */
static void job_flushed(struct rcv_job *j, int res)
{
	uint8_t stage = j->flushing;
	j->flushing = FLUSH_NONE;
	j->writes--;
	j->l->flushing--;
	if (!j->finished)
		flushed(j, stage, res);
	if (j->bundle && !j->flushing) {
		bundle_drain(j->bundle); /* (may answer it, and it goes) */
		return;
	}
	job_continue(j);
}

static void flush_done(struct io_ring_op *op, int res)
{
	struct rcv_job *j = (struct rcv_job *)((char *)op - offsetof(struct rcv_job, flush_op));
	if (res == -ECANCELED) /* (not run: flushed here instead) */
		res = fsync(out_file(j)->fd) < 0 ? -errno : 0;
	job_flushed(j, res);
}

/* A directory's flush is done: its covered files go on, and those linked since get the next flush
 * (submitted first: the covered files let go of the directory as they go on). */
static void dirflush_done(struct io_ring_op *op, int res)
{
	struct rcv_dirflush *g = (struct rcv_dirflush *)op;
	struct rcv_lane *l = g->l;
	struct rcv_job *done = NULL;
	for (;;) {
		if (res == -ECANCELED)
			res = fsync(g->fd) < 0 ? -errno : 0;
		for (struct rcv_job *c = g->covered, *n; c; c = n) { /* (done, in any order) */
			n = c->dir_next;
			c->dir_next = done;
			c->dir_res = res;
			done = c;
		}
		g->covered = g->next;
		g->next = NULL;
		if (!g->covered || io_ring_fsync(l->ring, &g->op, g->fd) == 0)
			break;
		res = fsync(g->fd) < 0 ? -errno : 0; /* (the ring is full: at once) */
	}
	if (!g->covered) {
		struct rcv_dirflush **p = &l->dirflush;
		while (*p != g)
			p = &(*p)->link;
		*p = g->link;
		free(g);
	}
	for (struct rcv_job *c = done, *n; c; c = n) {
		n = c->dir_next;
		c->dir_next = NULL;
		job_flushed(c, c->dir_res);
	}
}

/* Every byte of the stream is on the disk (or was refused): put the entry in place. */
static void commit_now(struct rcv_job *j)
{
	struct receiver *r = j->r;
	const struct net_stream_meta *m = &j->dec.meta;
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	struct qs_err e = {0};
	struct io_meta im = meta_for(r, m->mode, m->mtime_ns, m->uid, m->gid);
	if (j->werr < 0) {
		snprintf(msg, sizeof(msg), "write to \"%s\" failed: %s", qp(j->path, qb), strerror(-j->werr));
		job_fail(j, NET_STREAM_EIO, msg);
		return;
	}
	if (m->flags & NET_STREAM_F_SYMLINK) {
		j->link[j->link_len] = '\0';
		if (strlen(j->link) != j->link_len) {
			job_fail(j, NET_STREAM_EPROTO, "symlink target contains a NUL byte");
			return;
		}
		if (io_symlink_beneath(r->rootfd, j->path, j->link, &im, &e) < 0) {
			snprintf(msg, sizeof(msg), "cannot create symlink \"%s\": %s", qp(j->path, qb),
			         e.msg);
			job_fail(j, NET_STREAM_EIO, msg);
			return;
		}
	} else if (j->big) {
		big_end(j, &im);
		return;
	} else if (!(m->flags & NET_STREAM_F_DIR)) {
		/* without -p, a file that is replaced keeps the permissions it had (rsync does the same) */
		im.keep_mode = !r->perms;
		int rc = wbuf_flush(j);
		wbuf_give_back(j);
		if (rc < 0) {
			snprintf(msg, sizeof(msg), "write to \"%s\" failed: %s", qp(j->path, qb),
			         strerror(-rc));
			job_fail(j, NET_STREAM_EIO, msg);
			return;
		}
		if (r->do_fsync) {
			flush_begin(j, &im); /* (commit_done when its flushes are done) */
			return;
		}
		rc = io_wfile_commit(&j->wf, &im, false, &e);
		j->wf_open = false;
		if (rc < 0) {
			snprintf(msg, sizeof(msg), "cannot finish \"%s\": %s", qp(j->path, qb), e.msg);
			job_fail(j, NET_STREAM_EIO, msg);
			return;
		}
		atomic_fetch_add_explicit(&r->bytes, m->size, memory_order_relaxed);
	}
	commit_done(j);
}

/* ---- batches of questions ---- */

static void batch_end(struct rcv_job *j);

/* One answer: a verdict, and for HAVE the ack. False when there is no room for it (out of memory: the
 * batch ends here, and the sender fails what is left unanswered). */
static bool batch_room(struct rcv_job *j, size_t need)
{
	struct rcv_batch *b = j->batch;
	if (b->out_cap - b->out_len < need) {
		size_t ncap = b->out_cap ? b->out_cap * 2 : 4096;
		while (ncap - b->out_len < need)
			ncap *= 2;
		if (ncap > RCV_BATCH_OUT_MAX)
			ncap = RCV_BATCH_OUT_MAX; /* (what 257 answers can need at most) */
		uint8_t *no = ncap - b->out_len >= need ? realloc(b->out, ncap) : NULL;
		if (!no) {
			batch_end(j);
			return false;
		}
		b->out = no;
		b->out_cap = ncap;
	}
	return true;
}

static bool batch_put(struct rcv_job *j, uint8_t verdict, uint8_t status, const char *msg)
{
	struct rcv_batch *b = j->batch;
	if (!batch_room(j, 1 + NET_STREAM_MAX_ACK))
		return false;
	b->out[b->out_len++] = verdict;
	if (verdict == NET_STREAM_VERDICT_HAVE) {
		ssize_t n = net_stream_ack_encode(status, msg, b->out + b->out_len, b->out_cap - b->out_len);
		b->out_len += n > 0 ? (size_t)n : 0;
	}
	j->ack_ready = true;
	net_dp_stream_resume(&j->l->dp, j->sid);
	return true;
}

/* The entry at hand fails: HAVE with the error (its data is not to come), and it is reported. */
static void batch_refuse(struct rcv_job *j, uint8_t status, const char *msg)
{
	report(j->r, j->batch->dec.meta.path, j->sid, status, msg);
	batch_put(j, NET_STREAM_VERDICT_HAVE, status, msg);
}

/* No more answers: our side ends once they are out. */
static void batch_end(struct rcv_job *j)
{
	j->finished = true;
	j->ack_final = true;
	j->ack_ready = true;
	net_dp_stream_resume(&j->l->dp, j->sid);
}

/* The entry that just ended (a regular file's metadata, or a symlink's and its target): answered. */
static void batch_entry(struct rcv_job *j)
{
	struct receiver *r = j->r;
	struct rcv_batch *b = j->batch;
	const struct net_stream_meta *m = &b->dec.meta;
	char msg[NET_STREAM_MAX_ACK_MSG];
	struct qs_err e = {0};

	uint8_t status = NET_STREAM_EBADPATH; /* (if it fails) */
	int rc = io_path_check(m->path, m->path_len, &e);
	if (rc == 0 && (m->flags & NET_STREAM_F_SYMLINK)) {
		if (memchr(b->link, '\0', m->size)) {
			rc = qs_err_set(&e, -EINVAL, "symlink target contains a NUL byte");
			status = NET_STREAM_EPROTO;
		} else {
			struct io_meta want = meta_for(r, m->mode, m->mtime_ns, m->uid, m->gid);
			b->link[m->size] = '\0';
			rc = io_link_unchanged_dc(j->l->dc, m->path, b->link, m->size, &want, &e);
		}
	} else if (rc == 0) {
		rc = look_unchanged(j->l, m->path, m, &e);
	}
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "%s", e.msg);
		batch_refuse(j, status, msg);
	} else if (rc == 0) {
		batch_put(j, NET_STREAM_VERDICT_SEND, 0, NULL);
	} else if (batch_put(j, NET_STREAM_VERDICT_HAVE, NET_STREAM_OK, NULL)) {
		atomic_fetch_add_explicit(&r->ok, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&r->unchanged, 1, memory_order_relaxed);
	}
	net_stream_dec_init_batch_entry(&b->dec); /* the next entry */
}

/* Bytes of a batch: entries are read and answered one by one; the batch ends at its FIN, which must
 * come where an entry ends. Anything it cannot read on fails the entry at hand and ends it. */
static void batch_feed(struct rcv_job *j, const uint8_t *data, size_t len, int fin)
{
	struct rcv_batch *b = j->batch;
	char msg[NET_STREAM_MAX_ACK_MSG];
	while (len > 0 && !j->finished) {
		struct net_stream_ev ev;
		struct qs_err e = {0};
		ssize_t used = net_stream_dec_feed(&b->dec, data, len, &ev, &e);
		if (used < 0) {
			uint8_t st = dec_status(used);
			snprintf(msg, sizeof(msg), "bad stream from sender: %s", e.msg);
			batch_refuse(j, st, msg);
			batch_end(j);
			return;
		}
		data += used;
		len -= (size_t)used;
		const struct net_stream_meta *m = &b->dec.meta;
		if (ev.kind == NET_STREAM_EV_META && ++b->n > NET_STREAM_BATCH_MAX) {
			snprintf(msg, sizeof(msg),
			         "bad stream from sender: more than %d entries in one batch",
			         NET_STREAM_BATCH_MAX);
			batch_refuse(j, NET_STREAM_EPROTO, msg);
			batch_end(j);
			return;
		}
		if (ev.kind == NET_STREAM_EV_META && !(m->flags & NET_STREAM_F_SYMLINK)) {
			batch_entry(j);
		} else if (ev.kind == NET_STREAM_EV_DATA) { /* (the decoder keeps it within size) */
			memcpy(b->link + ev.offset, ev.data, ev.len);
			if (ev.offset + ev.len == m->size)
				batch_entry(j);
		}
	}
	if (fin && !j->finished) {
		if (!net_stream_dec_idle(&b->dec))
			batch_refuse(j, NET_STREAM_ETRUNC,
			             "truncated stream from sender: a batch ended inside an entry");
		else if (b->n == 0)
			batch_refuse(j, NET_STREAM_EPROTO, "bad stream from sender: an empty batch");
		batch_end(j);
	}
}

/* ---- bundles of whole entries ---- */

_Static_assert(NET_STREAM_BUNDLE_FILE_MAX < RCV_RING_MIN,
               "a bundle's files are written at once, not on the ring");

static struct rcv_job *job_new(struct rcv_lane *l, int64_t sid);

/* Entry c is done (put in place, or failed): its ack is the bundle's next answer, and c goes. */
static void bundle_answer(struct rcv_job *j, struct rcv_job *c)
{
	struct rcv_batch *b = j->batch;
	if (c->ack_len && !j->finished && batch_room(j, c->ack_len)) {
		memcpy(b->out + b->out_len, c->ack, c->ack_len);
		b->out_len += c->ack_len;
		j->ack_ready = true;
		net_dp_stream_resume(&j->l->dp, j->sid);
	} else if (c->ack_len) { /* (out of memory, now or for an earlier answer: the sender fails it,
		                  * unacked; so do we) */
		report(j->r, c->dec.meta.path, j->sid, NET_STREAM_EIO, "out of memory for a bundle's ack");
	}
	c->bundle = NULL;
	c->dead = true;
	job_continue(c); /* (gone at once: a bundle's files are small and written at once) */
}

/* Answers the entries at the head of the queue that are done; once the bundle has ended and the queue
 * is empty, our side ends. */
static void bundle_drain(struct rcv_job *j)
{
	struct rcv_batch *b = j->batch;
	while (b->wait_head && !b->wait_head->flushing) {
		struct rcv_job *c = b->wait_head;
		b->wait_head = c->wait_next;
		if (!b->wait_head)
			b->wait_tail = NULL;
		bundle_answer(j, c);
	}
	if (b->ended && !b->wait_head && !j->finished)
		batch_end(j);
}

/* The entry at hand is read to its end: answered now, or queued behind its flush (or an earlier
 * entry's). */
static void bundle_next(struct rcv_job *j)
{
	struct rcv_batch *b = j->batch;
	struct rcv_job *c = b->cur;
	b->cur = NULL;
	if (!c->flushing && !b->wait_head) {
		bundle_answer(j, c);
		return;
	}
	c->bundle = j;
	c->wait_next = NULL;
	if (b->wait_tail)
		b->wait_tail->wait_next = c;
	else
		b->wait_head = c;
	b->wait_tail = c;
}

/* Nothing more of the bundle is read; its end goes out after the answers still waiting. */
static void bundle_end(struct rcv_job *j)
{
	j->batch->ended = true;
	bundle_drain(j);
}

/* Bytes of a bundle: each entry goes to a job of its own, as if on a stream of its own, and is put in
 * place when its trailer has come; then the next. FIN must come where an entry ends. */
static void bundle_feed(struct rcv_job *j, const uint8_t *data, size_t len, int fin)
{
	struct rcv_batch *b = j->batch;
	char msg[NET_STREAM_MAX_ACK_MSG], qb[IO_QUOTE_MAX];
	while (len > 0 && !b->ended && !j->finished) {
		if (!b->cur) {
			if (++b->n > NET_STREAM_BUNDLE_MAX) {
				snprintf(msg, sizeof(msg),
				         "bad stream from sender: more than %d entries in one bundle",
				         NET_STREAM_BUNDLE_MAX);
				report(j->r, "", j->sid, NET_STREAM_EPROTO, msg);
				bundle_end(j); /* (the sender fails what is left unanswered) */
				return;
			}
			b->cur = job_new(j->l, j->sid);
			if (!b->cur) {
				report(j->r, "", j->sid, NET_STREAM_EIO,
				       "out of memory for a bundle's entry");
				bundle_end(j);
				return;
			}
			net_stream_dec_init_bundle_entry(&b->cur->dec);
		}
		struct rcv_job *c = b->cur;
		struct net_stream_ev ev;
		struct qs_err e = {0};
		ssize_t used = net_stream_dec_feed(&c->dec, data, len, &ev, &e);
		if (used < 0) {
			uint8_t st = dec_status(used);
			snprintf(msg, sizeof(msg), "bad stream from sender: %s", e.msg);
			if (!c->finished)
				job_fail(c, st, msg);
			bundle_next(j);
			bundle_end(j); /* framing it cannot read: nothing after it can be trusted */
			return;
		}
		data += used;
		len -= (size_t)used;
		if (!c->finished) { /* (after a failure its bytes are read to its end, and dropped) */
			if (ev.kind == NET_STREAM_EV_META)
				on_meta(c);
			else if (ev.kind == NET_STREAM_EV_DATA)
				on_data(c, &ev);
			else if (ev.kind == NET_STREAM_EV_END)
				on_end(c, &ev);
		}
		if (ev.kind == NET_STREAM_EV_END) {
			if (c->end_seen && !c->finished)
				commit(
				    c); /* (a file this small is written at once: done here, or flushing) */
			if (!c->finished && !c->flushing)
				job_fail(c, NET_STREAM_EIO,
				         "internal: a bundle's entry not finished at its end");
			bundle_next(j);
		}
	}
	if (fin && !b->ended && !j->finished) {
		if (b->cur) {
			struct rcv_job *c = b->cur;
			snprintf(msg, sizeof(msg),
			         "truncated stream for \"%s\": a bundle ended inside the entry",
			         c->meta_seen ? qp(c->dec.meta.path, qb) : "(no metadata yet)");
			if (!c->finished)
				job_fail(c, NET_STREAM_ETRUNC, msg);
			bundle_next(j);
		} else if (b->n == 0) {
			report(j->r, "", j->sid, NET_STREAM_EPROTO,
			       "bad stream from sender: an empty bundle");
		}
		bundle_end(j);
	}
}

/* A batch or bundle header came: the rest of the stream is its entries. */
static void batch_begin(struct rcv_job *j, bool bundle, const uint8_t *data, size_t len, int fin)
{
	j->batch = calloc(1, sizeof(*j->batch));
	if (!j->batch) {
		j->ask = !bundle; /* (a batch's first answer, HAVE, goes before the error ack) */
		job_fail(j, NET_STREAM_EIO, "out of memory for a batch");
		return;
	}
	j->batch->bundle = bundle;
	net_stream_dec_init_batch_entry(&j->batch->dec);
	if (j->r->single_file) {
		const char *m = bundle ? "bad stream from sender: a single-file destination takes one file, "
		                         "not a bundle"
		                       : "bad stream from sender: a single-file destination takes one file, "
		                         "not a batch";
		if (bundle) {
			report(j->r, "", j->sid, NET_STREAM_EPROTO, m);
			uint8_t a[NET_STREAM_MAX_ACK];
			ssize_t n = net_stream_ack_encode(NET_STREAM_EPROTO, m, a, sizeof(a));
			if (n > 0 && batch_room(j, (size_t)n)) {
				memcpy(j->batch->out, a, (size_t)n);
				j->batch->out_len = (size_t)n;
			}
		} else {
			batch_refuse(j, NET_STREAM_EPROTO, m);
		}
		batch_end(j);
		return;
	}
	if (bundle)
		bundle_feed(j, data, len, fin);
	else
		batch_feed(j, data, len, fin);
}

static struct rcv_job *job_new(struct rcv_lane *l, int64_t sid)
{
	struct rcv_job *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->r = l->r;
	j->l = l;
	j->sid = sid;
	j->hash = XXH3_createState();
	if (!j->hash) {
		free(j);
		return NULL;
	}
	XXH3_64bits_reset(j->hash);
	net_stream_dec_init(&j->dec);
	return j;
}

static int rcv_recv(void *ctx, int64_t sid, void **user, const uint8_t *data, size_t len, int fin)
{
	struct rcv_lane *l = ctx;
	struct rcv_job *j = *user;
	char msg[NET_STREAM_MAX_ACK_MSG];

	if (!j) {
		j = job_new(l, sid);
		if (!j)
			return -ENOMEM;
		*user = j;
	}
	if (j->batch && j->batch->bundle) {
		bundle_feed(j, data, len, fin);
		return 0;
	}
	if (j->batch) {
		batch_feed(j, data, len, fin);
		return 0;
	}
	while (len > 0 && !j->finished) {
		struct net_stream_ev ev;
		struct qs_err e = {0};
		ssize_t used = net_stream_dec_feed(&j->dec, data, len, &ev, &e);
		if (used < 0) {
			uint8_t st = dec_status(used);
			snprintf(msg, sizeof(msg), "bad stream from sender: %s", e.msg);
			job_fail(j, st, msg);
			break;
		}
		data += used;
		len -= (size_t)used;
		switch (ev.kind) {
		case NET_STREAM_EV_META:
			on_meta(j);
			break;
		case NET_STREAM_EV_DATA:
			on_data(j, &ev);
			break;
		case NET_STREAM_EV_END:
			on_end(j, &ev);
			break;
		case NET_STREAM_EV_BATCH:
		case NET_STREAM_EV_BUNDLE:
			batch_begin(j, ev.kind == NET_STREAM_EV_BUNDLE, data, len, fin);
			return 0;
		case NET_STREAM_EV_NONE:
			break;
		}
	}
	/* Bytes after a failure are dropped; bytes after the trailer fail the entry (the decoder says so).
	 * Only FIN right after a good trailer puts the entry in place. */
	if (fin && !j->finished) {
		struct qs_err e = {0};
		if (j->end_seen) {
			commit(j);
		} else if (net_stream_dec_finish(&j->dec, &e) < 0) {
			char qb[IO_QUOTE_MAX];
			snprintf(msg, sizeof(msg), "truncated stream for \"%s\": %s",
			         j->meta_seen ? qp(j->dec.meta.path, qb) : "(no metadata yet)", e.msg);
			job_fail(j, NET_STREAM_ETRUNC, msg);
		}
	}
	return 0;
}

static ssize_t rcv_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin)
{
	struct rcv_job *j = user;
	*fin = 0;
	if (!j || !j->ack_ready)
		return 0;
	const uint8_t *src = j->batch ? j->batch->out : j->ack;
	size_t len = j->batch ? j->batch->out_len : j->ack_len;
	size_t k = len - j->ack_off;
	if (k > cap)
		k = cap;
	if (k)
		memcpy(buf, src + j->ack_off, k);
	j->ack_off += k;
	if (j->ack_off == len) {
		j->ack_ready = false; /* (until the ack, after a SEND verdict; a batch's next answer) */
		*fin = j->ack_final;
		if (j->batch)
			j->batch->out_len = j->ack_off = 0; /* all out: its buffer starts over */
	}
	return (ssize_t)k;
}

static void rcv_closed(void *ctx, int64_t sid, void *user, uint64_t app_error)
{
	struct rcv_lane *l = ctx;
	struct receiver *r = l->r;
	struct rcv_job *j = user;
	atomic_fetch_add_explicit(&l->closed, 1, memory_order_relaxed);
	if (!j)
		return;
	if ((j->big && j->flushing) || j->flushing == FLUSH_DIR) {
		/* The last range of a large file, every range in: the file is put in place all the same.
		 * Its ranges are marked arrived, so one sent again is answered done from the bits, and
		 * nothing else would ever put the file in place. Or a file already under its name,
		 * its directory flushing: that finishes too, and it counts as written. Their acks have
		 * nowhere to go. */
		j->dead = true;
		return; /* (flush_done finishes it, then it goes) */
	}
	if (!j->finished) {
		/* The sender gave up on it (reset), or the connection died: nothing reaches the final name.
		 * A stream cut off with its data path (NET_DP_GONE) is not a failure of its own: the sender
		 * sends it again on the next data path, or the session fails as a whole. A range cut off so
		 * may come again: its file waits for it. (The file itself goes with the job.) */
		wbuf_give_back(j);
		bool count = app_error != NET_DP_GONE;
		if (j->single_claim && app_error == NET_DP_GONE) {
			/* it comes again on the next data path: the one entry is still to be had */
			pthread_mutex_lock(&r->lock);
			r->single_used = false;
			pthread_mutex_unlock(&r->lock);
		}
		if (j->big && app_error == NET_DP_GONE) {
			pthread_mutex_lock(&r->lock);
			bit_set(j->big->started, j->dec.meta.range_idx, false);
			pthread_mutex_unlock(&r->lock);
		} else if (j->big) {
			count = big_fail(j);
		}
		if (count)
			atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
		if (r->verbose)
			fprintf(stderr, "qsync: receiver: \"%s\" abandoned by the sender (code %llu)\n",
			        j->meta_seen ? j->dec.meta.path : "?", (unsigned long long)app_error);
	}
	j->finished = true;
	j->commit_waiting = false;
	j->dead = true;
	job_continue(j); /* now, or once its writes on the ring are done */
}

static void job_destroy(struct rcv_job *j)
{
	struct receiver *r = j->r;
	if (j->wf_open) /* never completed: the unnamed file vanishes, the final name untouched */
		io_wfile_abort(&j->wf);
	wbuf_give_back(j);
	if (j->big) {
		pthread_mutex_lock(&r->lock);
		big_put(r, j->big);
		pthread_mutex_unlock(&r->lock);
	}
	if (j->batch) {
		if (j->batch->cur) { /* cut off inside an entry: it goes as any unfinished entry does */
			j->batch->cur->dead = true;
			job_continue(j->batch->cur);
		}
		while (j->batch->wait_head) {
			/* their answers have nowhere to go: the sender sends them again or fails them, so
			 * what still flushes its content is not put in place (what is in place already
			 * finishes flushing its directory); each goes when its flush is done */
			struct rcv_job *c = j->batch->wait_head;
			j->batch->wait_head = c->wait_next;
			c->bundle = NULL;
			if (c->flushing != FLUSH_DIR)
				c->finished = true;
			c->dead = true;
			job_continue(c);
		}
		free(j->batch->out);
		free(j->batch);
	}
	XXH3_freeState(j->hash);
	free(j);
}

const struct net_dp_cb receiver_dp_cb_template = {
    .recv = rcv_recv,
    .fill = rcv_fill,
    .closed = rcv_closed,
};

int receiver_open(struct receiver *r, const struct net_ctl_sync_start *ss, struct qs_err *err)
{
	const char *dest = ss->destination;
	size_t len = strlen(dest);
	char root[NET_CTL_MAX_STR + 1];

	mode_t um = umask(0);
	umask(um);
	r->umask = um;
	pthread_mutex_init(&r->lock, NULL);
	atomic_init(&r->ok, 0);
	atomic_init(&r->unchanged, 0);
	atomic_init(&r->failed, 0);
	atomic_init(&r->bytes, 0);
	if (!r->wbuf_budget)
		r->wbuf_budget = RCV_WBUF_BUDGET;
	if (!r->flush_max)
		r->flush_max = RCV_FLUSH_MAX;
	r->perms = ss->preserve_permissions;
	r->times = ss->preserve_timestamps;
	r->owner = ss->preserve_owner;
	r->group = ss->preserve_group;
	r->do_fsync = ss->fsync;
	r->rootfd = -1;
	if (len == 0)
		return qs_err_set(err, -EINVAL, "empty destination path");
	snprintf(root, sizeof(root), "%s", dest);

	struct stat st;
	r->existed = stat(dest, &st) == 0;
	bool dest_is_dir = r->existed && S_ISDIR(st.st_mode);
	if (ss->single_file && !dest_is_dir && dest[len - 1] != '/') {
		/* "qsync file host:path/name": the one file is written as name inside path. */
		char *slash = strrchr(root, '/');
		const char *base = slash ? slash + 1 : root;
		if (strlen(base) > IO_NAME_MAX || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
			return qs_err_set(err, -EINVAL, "bad destination file name \"%s\"", dest);
		snprintf(r->single_name, sizeof(r->single_name), "%s", base);
		r->single_file = true;
		if (slash == root)
			root[1] = '\0';
		else if (slash)
			*slash = '\0';
		else
			snprintf(root, sizeof(root), ".");
	} else if (!dest_is_dir) {
		/* Like rsync, create the last level of the destination, not the whole chain. */
		if (mkdir(dest, 0777) == 0)
			r->made_root = true;
		else if (errno != EEXIST)
			return qs_err_set(err, -errno, "cannot create destination directory \"%s\": %s", dest,
			                  strerror(errno));
	}
	r->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->rootfd < 0)
		return qs_err_set(err, -errno, "cannot open destination \"%s\": %s", root, strerror(errno));
	r->root = geteuid() == 0;
	return 0;
}

/* Depth of a path, the root ("") shallowest of all, so deepest-first puts it last. */
static long depth(const char *rel)
{
	long d = rel[0] ? 1 : 0;
	for (; *rel; rel++)
		d += *rel == '/';
	return d;
}

static int depth_cmp(const void *a, const void *b)
{
	const char *x = ((const struct rcv_dirfix *)a)->rel, *y = ((const struct rcv_dirfix *)b)->rel;
	long dx = depth(x), dy = depth(y);
	return dx < dy ? 1 : dx > dy ? -1 : strcmp(x, y); /* (the same directory twice: side by side) */
}

bool receiver_placing(struct receiver *r)
{
	return atomic_load_explicit(&r->placing, memory_order_acquire) > 0;
}

/* The sender waits for ack_complete with a timeout of its own (--timeout) while the run finishes here
 * (directory attributes, flushes, which a large tree on slow storage can make long): a progress
 * message as it starts and then every ENGINE_FINISH_WORD_NS tells it the receiver is still at work. */
struct rcv_finish {
	struct net_ctl_msg *m; /* (NULL: out of memory, no word sent) */
	uint64_t last;
};

static void finishing(struct receiver *r, struct rcv_finish *f)
{
	uint64_t now = engine_now_ns();
	if (!f->m || !r->ctl || now - f->last < ENGINE_FINISH_WORD_NS)
		return;
	f->last = now;
	memset(f->m, 0, sizeof(*f->m));
	f->m->type = NET_CTL_PROGRESS;
	f->m->u.progress.completed_files = atomic_load_explicit(&r->ok, memory_order_relaxed);
	f->m->u.progress.bytes_transferred = atomic_load_explicit(&r->bytes, memory_order_relaxed);
	(void)net_ctl_send(r->ctl, f->m, NULL);
}

/* One directory's flush at the end of the run (flush_dirs). */
struct rcv_dirsync {
	struct io_ring_op op;
	const char *rel;
	int fd;  /* or -errno: it could not be opened */
	int res; /* 0 or -errno once done; 1 while on the ring */
};

#define RCV_DIRSYNC_SLOTS 256 /* directory flushes on the ring at once */

static void dirsync_done(struct io_ring_op *op, int res)
{
	((struct rcv_dirsync *)op)->res = res;
}

/* d, for the i-th of what flush_dirs flushes: the tree's directories (sorted: one sent twice, after a
 * data path died, is flushed once), then the root, then its parent if this run made it. Opens it;
 * false when there is nothing to flush at i. */
static bool dirsync_open(struct receiver *r, size_t i, struct rcv_dirsync *d)
{
	*d = (struct rcv_dirsync){.op.done = dirsync_done, .fd = -1};
	if (i < r->n_dirs) {
		if (!r->dirs[i].rel[0] || (i > 0 && strcmp(r->dirs[i].rel, r->dirs[i - 1].rel) == 0))
			return false; /* (the root comes next) */
		d->rel = r->dirs[i].rel;
		d->fd = io_open_beneath(r->rootfd, d->rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
		return true;
	}
	if (i == r->n_dirs) {
		d->rel = ".";
		d->fd = fcntl(r->rootfd, F_DUPFD_CLOEXEC, 0);
	} else {
		if (!r->made_root)
			return false;
		d->rel = "..";
		d->fd = openat(r->rootfd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (d->fd < 0)
		d->fd = -errno;
	return true;
}

/* d's flush is over (d->res): 0, or -1 when it failed (reported). A directory this process may not
 * read (its mode is the sender's now, or it is a parent we only write to) cannot be opened to flush
 * it: *whole is set, and the whole file system is flushed instead. */
static int dirsync_end(struct rcv_dirsync *d, bool *whole)
{
	if (d->fd >= 0)
		close(d->fd);
	else if (d->res == -EACCES)
		*whole = true;
	if (d->res == 0 || d->res == -EACCES)
		return 0;
	char qb[IO_QUOTE_MAX];
	fprintf(stderr, "qsync: receiver: cannot fsync directory \"%s\": %s\n", qp(d->rel, qb),
	        strerror(-d->res));
	return -1;
}

/* With --fsync, the tree's directories themselves, once their attributes are set: a file's flush makes
 * its own name durable, not the names of the directories made for it, nor their attributes. Every
 * directory of the tree, the root, and the root's parent when this run made the root, flushed on a ring
 * of this thread's, up to RCV_DIRSYNC_SLOTS at once (they share the journal's commits), or, without
 * io_uring or with the ring full, at once. Each that fails is reported; returns how many. */
static uint64_t flush_dirs(struct receiver *r, struct rcv_finish *f)
{
	struct rcv_dirsync slot[RCV_DIRSYNC_SLOTS] = {0};
	unsigned freel[RCV_DIRSYNC_SLOTS], nfree = RCV_DIRSYNC_SLOTS;
	for (unsigned k = 0; k < RCV_DIRSYNC_SLOTS; k++)
		freel[k] = k;
	struct io_ring *ring = NULL;
	if (!r->no_ring && io_ring_new(RCV_DIRSYNC_SLOTS, true, &ring) == 0)
		(void)io_ring_workers(ring, RCV_FLUSH_WORKERS);
	uint64_t failed = 0;
	bool whole = false;
	size_t total = r->n_dirs + 2, next = 0;
	while (next < total || (ring && io_ring_inflight(ring) > 0)) {
		while (next < total && nfree > 0) {
			struct rcv_dirsync *d = &slot[freel[nfree - 1]];
			finishing(r, f); /* (an open can wait too: behind a flush, on FUSE or NFS) */
			if (!dirsync_open(r, next++, d))
				continue;
			if (d->fd >= 0 && ring && io_ring_fsync(ring, &d->op, d->fd) == 0) {
				d->res = 1;
				nfree--;
				continue;
			}
			d->res = d->fd < 0 ? d->fd : fsync(d->fd) < 0 ? -errno : 0;
			failed += dirsync_end(d, &whole) < 0;
			d->rel = NULL; /* (still free) */
		}
		if (!ring)
			continue;           /* (all done at once) */
		(void)io_ring_submit(ring); /* (what it could not take, io_ring_reap tries again) */
		if (io_ring_inflight(ring) == 0)
			continue;
		struct pollfd p = {.fd = io_ring_fd(ring), .events = POLLIN};
		(void)poll(&p, 1, 100); /* (a completion, or a look anyway) */
		io_ring_reap(ring);
		finishing(r, f);
		/* a slot is reused only once its own completion has come */
		for (unsigned k = 0; k < RCV_DIRSYNC_SLOTS; k++) {
			struct rcv_dirsync *d = &slot[k];
			if (d->res == 1 || d->rel == NULL)
				continue;
			failed += dirsync_end(d, &whole) < 0;
			d->rel = NULL;
			freel[nfree++] = k;
		}
	}
	io_ring_free(ring);
	if (whole && syncfs(r->rootfd) < 0) {
		fprintf(stderr, "qsync: receiver: cannot flush the destination's file system: %s\n",
		        strerror(errno));
		failed++;
	}
	return failed;
}

int receiver_finish(struct receiver *r, struct qs_err *err)
{
	int first = 0;
	struct rcv_finish f = {.m = malloc(sizeof(struct net_ctl_msg))}; /* (a word at once, then) */
	/* a large file some of whose ranges never came: it fails (the final name is left as it was) */
	pthread_mutex_lock(&r->lock);
	for (struct rcv_big *b = r->bigs; b; b = b->next) {
		if (b->committed || b->failed || b->have || b->placing)
			continue; /* (an unchanged file is fine whichever of its ranges asked; one being put
			           * in place has all its ranges, and its outcome is its own) */
		char qb[IO_QUOTE_MAX];
		fprintf(stderr, "qsync: receiver: \"%s\": only %u of its %u ranges arrived; not written\n",
		        qp(b->path, qb), b->done, b->count);
		b->failed = b->reported = true;
		atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
	}
	/* (held to the end: after a deadline, lanes still running may add to r->dirs) */
	if (r->n_dirs > 1)
		qsort(r->dirs, r->n_dirs, sizeof(*r->dirs), depth_cmp);
	for (size_t i = 0; i < r->n_dirs; i++) {
		const struct rcv_dirfix *d = &r->dirs[i];
		struct io_meta im = meta_for(r, d->mode, d->mtime_ns, d->uid, d->gid);
		im.set_mode = d->set_mode;
		struct qs_err e = {0};
		finishing(r, &f);
		int rc = io_meta_apply_beneath(r->rootfd, d->rel, &im, &e);
		if (rc < 0 && first == 0) {
			char qb[IO_QUOTE_MAX];
			first = rc;
			qs_err_set(err, rc, "cannot set attributes of \"%s\": %s", qp(d->rel, qb), e.msg);
		}
	}
	if (r->do_fsync) {
		uint64_t n = flush_dirs(r, &f);
		atomic_fetch_add_explicit(&r->failed, n, memory_order_relaxed);
		r->failed_late += n;
	}
	pthread_mutex_unlock(&r->lock);
	free(f.m);
	return first;
}

void receiver_flush_reports(struct receiver *r)
{
	/* Taken out under the lock, sent without it: a slow control channel must not hold up the lanes. */
	static struct rcv_report batch[RCV_MAX_REPORTS]; /* the control thread's alone */
	size_t n, dropped;
	pthread_mutex_lock(&r->lock);
	n = r->n_reports;
	dropped = r->reports_dropped;
	memcpy(batch, r->reports, n * sizeof(batch[0]));
	r->n_reports = 0;
	r->reports_dropped = 0;
	pthread_mutex_unlock(&r->lock);
	if (n == 0 && dropped == 0)
		return;
	struct net_ctl_msg *m = malloc(sizeof(*m));
	for (size_t i = 0; i < n; i++) {
		struct rcv_report *rep = &batch[i];
		if (m && r->ctl) {
			memset(m, 0, sizeof(*m));
			m->type = NET_CTL_ERROR;
			snprintf(m->u.error.file, sizeof(m->u.error.file), "%s", rep->file);
			m->u.error.quic_stream_id = rep->sid;
			snprintf(m->u.error.error_code, sizeof(m->u.error.error_code), "%s", rep->code);
			snprintf(m->u.error.message, sizeof(m->u.error.message), "%s", rep->msg);
			net_ctl_send(r->ctl, m, NULL);
		}
		free(rep->file);
		free(rep->msg);
	}
	if (dropped && m && r->ctl) {
		memset(m, 0, sizeof(*m));
		m->type = NET_CTL_ERROR;
		m->u.error.quic_stream_id = -1;
		snprintf(m->u.error.file, sizeof(m->u.error.file), "*");
		snprintf(m->u.error.error_code, sizeof(m->u.error.error_code), "MORE_ERRORS");
		snprintf(m->u.error.message, sizeof(m->u.error.message),
		         "%zu more refused entries not itemised", dropped);
		net_ctl_send(r->ctl, m, NULL);
	}
	free(m);
}

int receiver_lane_init(struct rcv_lane *l, struct receiver *r)
{
	l->r = r;
	return io_dircache_new(r->rootfd, &l->dc);
}

void receiver_lane_ring(struct rcv_lane *l)
{
	if (!l->ring && io_ring_new(RCV_RING_DEPTH, true, &l->ring) < 0)
		l->ring = NULL; /* no io_uring here: writes happen at once, on the lane's thread */
}

void receiver_lane_drain(struct rcv_lane *l)
{
	if (l->ring)
		io_ring_drain(l->ring);
}

void receiver_lane_free(struct rcv_lane *l)
{
	io_ring_free(l->ring); /* drains first: the last jobs go */
	l->ring = NULL;
	while (l->n_wfree > 0)
		free(l->wfree[--l->n_wfree]);
	io_dircache_free(l->dc);
	l->dc = NULL;
}

void receiver_free(struct receiver *r)
{
	for (size_t i = 0; i < r->n_dirs; i++)
		free(r->dirs[i].rel);
	free(r->dirs);
	r->dirs = NULL;
	for (size_t i = 0; i < r->n_reports; i++) {
		free(r->reports[i].file);
		free(r->reports[i].msg);
	}
	r->n_reports = 0;
	r->n_dirs = r->cap_dirs = 0;
	while (r->bigs) { /* never completed: dropped, the final names untouched */
		struct rcv_big *b = r->bigs;
		r->bigs = b->next;
		big_free(b);
	}
	r->n_bigs = 0;
	if (r->rootfd >= 0) {
		close(r->rootfd);
		pthread_mutex_destroy(&r->lock);
	}
	r->rootfd = -1;
}
