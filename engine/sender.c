/* The sending side of a transfer. The sources' tops are looked at first (rsync's trailing-slash rule);
 * below them the walk is done in pieces, a directory at a time, by whichever worker takes the listing
 * from the deques (its own first, then stealing: owners take the newest item, thieves the oldest, so the
 * files of a listing go out while other workers list its subdirectories), and an entry goes out on a
 * stream as soon as it is listed. An entry is its header and metadata, the content read straight from
 * the file into the data plane's buffer, and the XXH3-64 trailer: on a stream of its own, or for small
 * files and symlinks many to a stream (a bundle); a large file is cut into ranges, a stream each. The
 * receiver's ack decides whether the entry counts as done.
 * Against an existing destination small files first ask, many to a stream (a batch), whether they are
 * wanted; those that are go out as above.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/engine_int.h"
#include "io/io.h"
#include "sched/sched.h"

#define STEAL_TRIES 4 /* steal attempts per take before the lane goes back to its packets */

enum snd_phase { PH_HDR, PH_WAIT, PH_DATA, PH_TRAILER, PH_SENT };

/* What a stream carries: one entry (a job), a batch of questions, or a bundle of small entries. The
 * first member of each. */
enum snd_kind { SND_JOB = 1, SND_BATCH, SND_BUNDLE };

#define SND_BUNDLE_FILE_MAX (64u << 10) /* files this small travel in bundles */
#define SND_BUNDLE_BYTES    (1u << 20)  /* a bundle takes no more once its content is this much */
#define SND_BUNDLE_ENTRIES                                                                                   \
	64 /* ... or it has this many (a lane takes at most this many entries a                              \
	      stream: a tree of empty files is not all taken by one lane at once) */

struct snd_job {
	enum snd_kind kind; /* SND_JOB */
	struct snd_lane *l;
	struct snd_entry *e; /* NULL once handed to the resend queue */
	int64_t sid;
	int fd;
	enum snd_phase phase;
	uint8_t hdr[NET_STREAM_MAX_META];
	size_t hdr_len, hdr_off;
	uint64_t data_off;
	uint64_t owed; /* of its content, what is counted in l->unsent */
	uint8_t trailer[NET_STREAM_TRAILER_LEN];
	size_t trl_off;
	XXH3_state_t *hash;
	uint8_t ack[NET_STREAM_MAX_ACK];
	size_t ack_len;
	bool acked;
	uint8_t ack_status;
	char msg[NET_STREAM_MAX_ACK_MSG + 1]; /* why it failed: ours, or the receiver's */
	bool ask;                             /* ASK: the data waits for the receiver's verdict */
	uint8_t verdict;                      /* NET_STREAM_VERDICT_SEND or _HAVE once it came, else 0 */
	/* read ahead on the lane's ring (files of SND_RING_MIN and more) */
	struct snd_rbuf *rb; /* its buffer: rb->pos..rb->len not yet handed to the stream */
	bool reading;        /* a read into rb is on the ring: the job and its fd stay until it is done */
	int rerr;            /* the read failed (negative errno), or 1 when the file ended early */
	bool dead;           /* the stream has ended; the job goes when its read is done */
	struct snd_pre *pre; /* a bundled file read ahead on the ring (NULL: read at once) */
};

/* Small files asking on one stream (NET_STREAM_F_BATCH): answered in order, SEND puts the entry back
 * to be sent on a stream of its own, HAVE settles it. */
struct snd_batch {
	enum snd_kind kind; /* SND_BATCH */
	struct snd_lane *l;
	int64_t sid;
	uint32_t n, answered;
	struct snd_entry *e[NET_STREAM_BATCH_MAX]; /* e[answered..n) wait for their answers */
	uint8_t *out;                              /* the header and every entry's metadata */
	size_t out_len, out_cap, out_off;
	uint8_t ans[1 + NET_STREAM_MAX_ACK]; /* an answer being gathered */
	size_t ans_len;
	char msg[NET_STREAM_MAX_ACK_MSG + 1];  /* our reason for giving up on the stream */
	char last[NET_STREAM_MAX_ACK_MSG + 1]; /* the receiver's last refusal */
	bool ended;                            /* the receiver ended its side with questions unanswered */
};

/* A bundle's files read ahead on the lane's ring: opened beneath their source, checked (still the
 * inode the walk saw), read whole and closed, all of them in one submit, so that from the page cache a
 * bundle of 64 files costs a few io_uring_enter calls instead of four syscalls a file, and from a disk
 * their reads are in flight together instead of one after the other. The bundle's stream then copies
 * each file from memory. A file that could not be read ahead (refused, replaced, shorter than listed,
 * no room on the ring) takes the ordinary path, which opens it again and says why. */
enum snd_pre_state { PRE_NONE, PRE_OPEN, PRE_READ, PRE_READY, PRE_FAILED };

struct snd_prefetch;

struct snd_pre {
	struct io_ring_op op; /* the open, then the read */
	struct snd_prefetch *pf;
	enum snd_pre_state st;
	dev_t dev; /* what the walk saw */
	ino_t ino;
	uint64_t size;
	uint8_t *data; /* size bytes of pf->buf */
};

/* The read-ahead of one bundle. It outlives the bundle while ops are in flight (the kernel writes into
 * buf until they are done); the last completion frees it then. */
struct snd_prefetch {
	struct snd_lane *l;
	struct snd_bundle *b; /* NULL once the bundle has let go of it */
	unsigned inflight;    /* opens and reads on the ring */
	bool waiting;         /* the bundle's stream sleeps until its next file is read */
	uint8_t *buf;
	size_t cap;  /* buf's size: SND_PBUF_SIZE (kept for the lane's next bundle) or the content's */
	char *paths; /* the opens' paths, for as long as the kernel may read them (the entries' own
	                may go with the bundle before an open it could not take at once is taken) */
	struct snd_pre pre[SND_BUNDLE_ENTRIES];
};

/* Small entries sent whole, one after the other, on one stream (NET_STREAM_F_BUNDLE), acked in
 * order. The entry being sent has a job (its reading and hashing); the others are entries only, so a
 * bundle costs little memory however many files it holds. */
struct snd_bundle {
	enum snd_kind kind; /* SND_BUNDLE */
	struct snd_lane *l;
	int64_t sid;
	uint32_t n, sent, acked; /* e[0..sent) handed to the stream whole, e[0..acked) acked (and gone) */
	uint64_t bytes;          /* their content */
	uint64_t owed;           /* of it, counted in l->unsent and not yet with cur */
	struct snd_entry *e[SND_BUNDLE_ENTRIES];
	struct snd_job *cur; /* e[sent]'s job, while it is being sent */
	uint8_t hdr[NET_STREAM_HDR_LEN];
	size_t hdr_off;
	uint8_t ans[NET_STREAM_MAX_ACK]; /* an ack being gathered */
	size_t ans_len;
	char msg[NET_STREAM_MAX_ACK_MSG + 1]; /* our reason for giving up on the stream */
	bool ended;                           /* the receiver ended its side with entries unacked */
	bool read_failed;                     /* j[sent] could not be read: the stream was given up */
	struct snd_prefetch *pf;              /* its files read ahead on the ring (NULL: none) */
};

static void job_free(struct snd_job *j);
static void confirm(struct snd_lane *l, const struct snd_entry *e, bool have);
static uint64_t entry_size(const struct snd_entry *e);

/* j's content is wanted: counted in l->unsent until it is handed to the stream (settle). */
static void owe(struct snd_job *j)
{
	j->owed = entry_size(j->e);
	j->l->unsent += j->owed;
}

/* k bytes of j's content are out of l->unsent: handed to the stream, or not to be sent at all. */
static void settle(struct snd_job *j, uint64_t k)
{
	if (k > j->owed)
		k = j->owed;
	j->owed -= k;
	j->l->unsent -= k;
}

/* A read on the ring is done (on the lane's thread). */
static void read_done(struct io_ring_op *op, int res)
{
	struct snd_rbuf *b = (struct snd_rbuf *)op;
	struct snd_job *j = b->j;
	j->reading = false;
	if (res < 0)
		j->rerr = res;
	else if (res == 0)
		j->rerr = 1; /* the file is shorter than the walk saw */
	b->len = res > 0 ? (size_t)res : 0;
	b->pos = 0;
	if (j->dead)
		job_free(j);
	else
		net_dp_stream_resume(&j->l->dp, j->sid);
}

/* Up to k bytes for the stream from its read-ahead buffer (left: bytes of the stream still to read).
 * Returns the bytes copied, 0 when a read is under way (or just started), a negative errno on failure. */
static ssize_t ring_take(struct snd_job *j, uint8_t *out, size_t k, uint64_t left)
{
	struct snd_lane *l = j->l;
	struct snd_rbuf *b = j->rb;
	if (j->reading)
		return 0;
	if (j->rerr < 0) {
		snprintf(j->msg, sizeof(j->msg), "read failed: %s", strerror(-j->rerr));
		return j->rerr;
	}
	if (b && b->pos < b->len) {
		size_t have = b->len - b->pos;
		if (k > have)
			k = have;
		memcpy(out, b->data + b->pos, k);
		b->pos += k;
		if (b->pos == b->len && left > k)
			goto next; /* read the next piece while this one goes out */
		return (ssize_t)k;
	}
	if (j->rerr > 0) {
		snprintf(j->msg, sizeof(j->msg), "file shrank while being sent (%llu bytes sent)",
		         (unsigned long long)j->data_off);
		return -EIO;
	}
	k = 0;
next:
	if (!b) {
		if (l->n_rfree == 0)
			return -EAGAIN; /* (the caller reads at once instead) */
		b = j->rb = l->rfree[--l->n_rfree];
		b->j = j;
		b->op.done = read_done;
	}
	{
		uint64_t after = left - k; /* what follows the bytes just copied */
		size_t want = after < SND_RBUF_SIZE ? (size_t)after : SND_RBUF_SIZE;
		uint64_t at = j->e->range_off + j->data_off + k;
		if (want > 0 && io_ring_read(l->ring, &b->op, j->fd, b->data, want, at, b->index) == 0)
			j->reading = true;
		else if (want > 0)
			return k ? (ssize_t)k : -EAGAIN;
	}
	return (ssize_t)k;
}

static void add(atomic_uint_fast64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed); /* a statistic: no ordering */
}

static uint64_t get(const atomic_uint_fast64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- entries ---- */

static struct snd_entry *entry_new(const char *rel, size_t rel_len)
{
	struct snd_entry *e = calloc(1, sizeof(*e) + rel_len + 1);
	if (!e)
		return NULL;
	memcpy(e->buf, rel, rel_len);
	e->buf[rel_len] = '\0';
	e->rel = e->buf;
	return e;
}

static void entry_free(struct snd_entry *e)
{
	if (!e)
		return;
	/* the last range of a large file lets go of what the ranges share */
	if (e->big && atomic_fetch_sub_explicit(&e->big->refs, 1, memory_order_acq_rel) == 1)
		free(e->big);
	free(e->link);
	free(e);
}

/* Content bytes an entry's stream carries. */
static uint64_t entry_size(const struct snd_entry *e)
{
	if (e->flags & NET_STREAM_F_DIR)
		return 0;
	return e->big ? e->range_len : (uint64_t)e->st.st_size;
}

static int vec_push(struct snd_entry ***v, size_t *n, size_t *cap, struct snd_entry *e)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 256;
		struct snd_entry **nv = realloc(*v, ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = ncap;
	}
	(*v)[(*n)++] = e;
	return 0;
}

/* Keeps e to be sent again: cut off with its data path (it will count as resent). */
static bool requeue(struct sender *s, struct snd_entry *e, bool cut)
{
	(void)cut;
	pthread_mutex_lock(&s->lock);
	bool ok = vec_push(&s->resend, &s->n_resend, &s->cap_resend, e) == 0;
	atomic_store_explicit(&s->pending_resend, s->n_resend, memory_order_relaxed);
	pthread_mutex_unlock(&s->lock);
	return ok;
}

/* Hands an item to whoever takes work: l's worker's deque, or s->local for the control thread. */
static int give(struct snd_lane *l, struct snd_entry *e)
{
	struct sender *s = l ? l->s : NULL;
	if (l && l->w)
		return sched_worker_push(l->w, e);
	pthread_mutex_lock(&s->lock);
	int rc = vec_push(&s->local, &s->n_local, &s->cap_local, e);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

static void release(struct snd_lane *l, struct snd_entry *e);

/* e, held by l, goes back: to the resend queue (again: cut off with its data path) or to be taken
 * afresh. Returns false when it could not (out of memory: still l's). */
static bool put_back(struct snd_lane *l, struct snd_entry *e, bool again)
{
	release(l, e);
	return again ? requeue(l->s, e, true) : give(l, e) == 0;
}

/* The next item for l: one waiting to be resent (again = true), else from l's worker's deque or by
 * stealing, else (control thread) from s->local. */
static struct snd_entry *take(struct snd_lane *l, bool *again)
{
	struct sender *s = l->s;
	void *item = NULL;
	*again = false;
	if (atomic_load_explicit(&s->pending_resend, memory_order_relaxed) > 0) {
		pthread_mutex_lock(&s->lock);
		if (s->n_resend > 0) {
			item = s->resend[--s->n_resend];
			atomic_store_explicit(&s->pending_resend, s->n_resend, memory_order_relaxed);
		}
		pthread_mutex_unlock(&s->lock);
		if (item) {
			*again = true;
			return item;
		}
	}
	if (l->w) {
		if (sched_worker_pop(l->w, &item) == 0)
			return item;
		for (int i = 0; i < STEAL_TRIES; i++) {
			int rc = sched_worker_steal(l->w, &item);
			if (rc == 0)
				return item;
			if (rc == -ENOENT)
				break;
		}
		return NULL;
	}
	pthread_mutex_lock(&s->lock);
	if (s->n_local > 0)
		item = s->local[--s->n_local];
	pthread_mutex_unlock(&s->lock);
	return item;
}

/* An entry found by the walk: counted, and split into ranges if it is a large file. Returns the
 * number of items handed over (1, or the ranges), or a negative errno. */
static int offer(struct snd_lane *l, struct sender *s, struct snd_entry *e,
                 int (*hand)(struct snd_lane *, struct sender *, struct snd_entry *))
{
	atomic_fetch_add_explicit(&s->files_discovered, 1, memory_order_relaxed);
	if (!(e->flags & NET_STREAM_F_DIR))
		add(&s->bytes_total, (uint64_t)e->st.st_size);
	uint64_t size = (uint64_t)e->st.st_size;
	if (!S_ISREG(e->st.st_mode) || size <= ENGINE_RANGE_MIN) {
		e->id = atomic_fetch_add_explicit(&s->next_id, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&s->remaining, 1, memory_order_relaxed);
		add(&s->entries, 1);
		int rc = hand(l, s, e);
		if (rc < 0) {
			atomic_fetch_sub_explicit(&s->remaining, 1, memory_order_relaxed);
			entry_free(e);
			return rc;
		}
		return 1;
	}
	uint64_t count = (size + ENGINE_RANGE_BYTES - 1) / ENGINE_RANGE_BYTES;
	uint64_t unit = (size + count - 1) / count; /* the protocol's layout (net/stream.h) */
	size_t rlen = strlen(e->rel);
	struct snd_big *b = count <= NET_STREAM_MAX_RANGES ? calloc(1, sizeof(*b) + rlen + 1) : NULL;
	if (!b) {
		entry_free(e);
		return -ENOMEM;
	}
	memcpy(b->rel, e->rel, rlen + 1);
	atomic_init(&b->left, (unsigned)count);
	atomic_init(&b->failed, false);
	atomic_init(&b->refs, (unsigned)count);
	atomic_init(&b->held, 0u);
	b->id = atomic_fetch_add_explicit(&s->next_id, 1, memory_order_relaxed);
	b->count = (uint32_t)count;
	uint64_t made = 0;
	int rc = 0;
	for (uint64_t i = 0; i < count; i++) {
		struct snd_entry *r = calloc(1, sizeof(*r));
		if (!r) {
			rc = -ENOMEM;
			break;
		}
		*r = *e;
		r->rel = b->rel;
		r->link = NULL;
		r->big = b;
		r->id = b->id;
		r->range_idx = (uint32_t)i;
		r->range_off = i * unit;
		r->range_len = size - r->range_off < unit ? size - r->range_off : unit;
		atomic_fetch_add_explicit(&s->remaining, 1, memory_order_relaxed);
		add(&s->entries, 1);
		if ((rc = hand(l, s, r)) < 0) {
			atomic_fetch_sub_explicit(&s->remaining, 1, memory_order_relaxed);
			entry_free(r);
			break;
		}
		made++;
	}
	/* ranges never made let go of the shared part too */
	for (uint64_t i = made + (rc < 0 ? 1 : 0); i < count; i++)
		if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
			free(b);
	free(e);
	return rc < 0 ? rc : (int)made;
}

static int hand_give(struct snd_lane *l, struct sender *s, struct snd_entry *e)
{
	return l ? give(l, e) : vec_push(&s->local, &s->n_local, &s->cap_local, e);
}

/* ---- the walk ---- */

struct list_ctx {
	struct snd_lane *l; /* NULL while planning on the control thread */
	struct sender *s;
	const struct snd_entry *dir;
	struct snd_entry **dirs; /* subdirectories' listings: handed over last, so they are stolen first */
	size_t n_dirs, cap_dirs;
	int rc;
};

/* The lane that lists: items go to its deque, or, without a lane, to s->local. */
static int list_cb(void *ctx, const char *name, const struct stat *st, int dfd)
{
	struct list_ctx *c = ctx;
	struct sender *s = c->s;
	const struct engine_opts *o = s->o;
	const struct snd_entry *d = c->dir;
	size_t dl = strlen(d->rel), nl = strlen(name);
	size_t rl = dl + (dl ? 1 : 0) + nl;
	char qb[IO_QUOTE_MAX];
	uint32_t flags = 0;
	mode_t m = st->st_mode;

	if (rl > NET_STREAM_MAX_PATH || d->depth + 1 > IO_PATH_MAX_DEPTH) {
		char path[IO_QUOTE_MAX + 8];
		snprintf(path, sizeof(path), "%s/%s", d->rel[0] ? d->rel : ".",
		         io_path_quote(name, nl, qb, sizeof(qb)));
		engine_emit(o, ENGINE_EV_FILE_ERROR, path, "path too long (or too deep) to send", NULL);
		atomic_fetch_add_explicit(&s->walk_errors, 1, memory_order_relaxed);
		return 0;
	}
	char rel[NET_STREAM_MAX_PATH + 1];
	memcpy(rel, d->rel, dl);
	if (dl)
		rel[dl++] = '/';
	memcpy(rel + dl, name, nl + 1);

	if (S_ISDIR(m)) {
		flags = NET_STREAM_F_DIR;
	} else if (S_ISLNK(m)) {
		if (!o->links) {
			engine_emit(o, ENGINE_EV_INFO, rel,
			            "skipping non-regular file (symlink; use -l or -a)", NULL);
			return 0;
		}
		flags = NET_STREAM_F_SYMLINK;
	} else if (!S_ISREG(m)) {
		engine_emit(o, ENGINE_EV_INFO, rel, "skipping non-regular file", NULL);
		return 0;
	}
	struct snd_entry *e = entry_new(rel, rl);
	if (!e)
		return -ENOMEM;
	e->flags = flags;
	e->src = d->src;
	e->tail = s->roots[d->src].tail_off;
	e->depth = d->depth + 1;
	e->st = *st;
	if (flags & NET_STREAM_F_SYMLINK) {
		char buf[NET_STREAM_MAX_PATH + 1];
		ssize_t n = readlinkat(dfd, name, buf, sizeof(buf) - 1);
		if (n <= 0 || n > (ssize_t)NET_STREAM_MAX_PATH) {
			engine_emit(o, ENGINE_EV_FILE_ERROR, rel,
			            n < 0 ? strerror(errno) : "symlink target too long to send", NULL);
			atomic_fetch_add_explicit(&s->walk_errors, 1, memory_order_relaxed);
			entry_free(e);
			return 0;
		}
		buf[n] = '\0';
		e->link = strdup(buf);
		if (!e->link) {
			entry_free(e);
			return -ENOMEM;
		}
		e->st.st_size = n;
	}
	if (flags & NET_STREAM_F_DIR) {
		/* its listing, handed over after the files of this one */
		struct snd_entry *w = entry_new(rel, rl);
		if (!w) {
			entry_free(e);
			return -ENOMEM;
		}
		*w = *e;
		w->rel = w->buf;
		memcpy(w->buf, rel, rl + 1);
		w->walk = true;
		if (vec_push(&c->dirs, &c->n_dirs, &c->cap_dirs, w) < 0) {
			free(w);
			entry_free(e);
			return -ENOMEM;
		}
	}
	int rc = offer(c->l, s, e, hand_give);
	return rc < 0 ? rc : 0;
}

/* Lists directory d and hands over what is in it. Unreadable directories are reported and skipped. */
static int list_dir(struct snd_lane *l, struct sender *s, struct snd_entry *d)
{
	const struct snd_root *root = &s->roots[d->src];
	const char *below = strlen(d->rel) > d->tail ? d->rel + d->tail : "";
	int fd = below[0] ? io_open_beneath(root->fd, below, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
	                  : fcntl(root->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0 && !below[0])
		fd = -errno;
	struct list_ctx c = {.l = l, .s = s, .dir = d};
	struct qs_err e = {0};
	int rc = 0;
	if (fd < 0) {
		snprintf(e.msg, sizeof(e.msg), "cannot open directory: %s",
		         fd == -ELOOP || fd == -EXDEV ? "a symlink is now in its path" : strerror(-fd));
		rc = fd;
	} else {
		rc = io_dir_read(fd, list_cb, &c, &e);
	}
	if (rc == -ENOMEM)
		goto out;
	if (rc < 0) {
		engine_emit(s->o, ENGINE_EV_FILE_ERROR, d->rel[0] ? d->rel : ".", e.msg, NULL);
		atomic_fetch_add_explicit(&s->walk_errors, 1, memory_order_relaxed);
		rc = 0;
	}
out:
	/* subdirectories last: the owner takes the files first, thieves the listings */
	for (size_t i = 0; i < c.n_dirs; i++) {
		atomic_fetch_add_explicit(&s->remaining, 1, memory_order_relaxed);
		int r2 = hand_give(l, s, c.dirs[i]);
		if (r2 < 0) {
			atomic_fetch_sub_explicit(&s->remaining, 1, memory_order_relaxed);
			free(c.dirs[i]);
			rc = r2;
		}
	}
	free(c.dirs);
	return rc;
}

/* ---- the sources ---- */

/* Holds a source's top directory open (files are opened beneath it later), or records a file source. */
static int add_root(struct sender *s, const char *path, const struct stat *top, size_t prefix_len,
                    struct qs_err *err)
{
	struct snd_root *nr = realloc(s->roots, (s->n_roots + 1) * sizeof(*nr));
	if (!nr)
		return qs_err_set(err, -ENOMEM, "out of memory");
	s->roots = nr;
	struct snd_root *r = &s->roots[s->n_roots];
	r->fd = -1;
	r->tail_off = (uint32_t)(prefix_len ? prefix_len + 1 : 0);
	r->top = strdup(path);
	if (!r->top)
		return qs_err_set(err, -ENOMEM, "out of memory");
	s->n_roots++;
	if (S_ISDIR(top->st_mode)) {
		struct stat now;
		r->fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (r->fd >= 0 &&
		    (fstat(r->fd, &now) < 0 || now.st_dev != top->st_dev || now.st_ino != top->st_ino)) {
			close(r->fd);
			r->fd = -1;
		}
	}
	return 0;
}

/* e's path beneath its source's held directory (*rootfd), or NULL when e is the source's top itself. */
static const char *beneath(const struct sender *s, const struct snd_entry *e, int *rootfd)
{
	const struct snd_root *r = &s->roots[e->src];
	const char *tail = strlen(e->rel) > e->tail ? e->rel + e->tail : "";
	*rootfd = r->fd;
	return r->fd >= 0 && tail[0] != '\0' ? tail : NULL;
}

/* Whether the file open as fd is still the regular file the walk saw. Files are opened O_NONBLOCK, so
 * that a FIFO put where one was listed cannot hang the open; a regular file is made blocking again. */
static bool still_listed(int fd, dev_t dev, ino_t ino)
{
	struct stat now;
	return fstat(fd, &now) == 0 && now.st_dev == dev && now.st_ino == ino && S_ISREG(now.st_mode) &&
	       fcntl(fd, F_SETFL, 0) == 0;
}

/* Opens an entry for reading: beneath its source's top without following any symlink, or the top file
 * itself without following it; and only if it is still the regular file the walk saw. */
static int open_entry(const struct sender *s, const struct snd_entry *e, char *why, size_t whycap)
{
	int rootfd, fd;
	const char *tail = beneath(s, e, &rootfd);
	if (tail) {
		fd = io_open_beneath(rootfd, tail, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
	} else {
		fd = open(s->roots[e->src].top, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
		if (fd < 0)
			fd = -errno;
	}
	if (fd == -ELOOP || fd == -EXDEV) {
		snprintf(why, whycap,
		         "changed since it was scanned (a symlink is now in its path); not sent");
		return fd;
	}
	if (fd < 0) {
		snprintf(why, whycap, "cannot open: %s", strerror(-fd));
		return fd;
	}
	if (!still_listed(fd, e->st.st_dev, e->st.st_ino)) {
		snprintf(why, whycap,
		         "changed since it was scanned (replaced, or a symlink put in its path); not sent");
		close(fd);
		return -ESTALE;
	}
	return fd;
}

int sender_plan(struct sender *s, const struct engine_opts *o, struct qs_err *err)
{
	s->o = o;
	pthread_mutex_init(&s->lock, NULL);
	atomic_init(&s->pending_resend, 0);
	atomic_init(&s->remaining, 0);
	atomic_init(&s->next_id, 0);
	atomic_init(&s->files_discovered, 0);
	atomic_init(&s->bytes_total, 0);
	atomic_init(&s->entries, 0);
	atomic_init(&s->walk_errors, 0);

	for (int i = 0; i < o->n_sources; i++) {
		const char *src = o->sources[i];
		size_t len = strlen(src);
		char path[PATH_MAX];
		if (len == 0 || len >= sizeof(path)) {
			engine_emit(o, ENGINE_EV_FILE_ERROR, src, "bad source path", NULL);
			atomic_fetch_add_explicit(&s->walk_errors, 1, memory_order_relaxed);
			continue;
		}
		bool slash = src[len - 1] == '/';
		memcpy(path, src, len + 1);
		while (len > 1 && path[len - 1] == '/')
			path[--len] = '\0';

		struct stat top;
		char *resolved = NULL;
		if (slash && lstat(path, &top) == 0 && S_ISLNK(top.st_mode) && stat(path, &top) == 0 &&
		    S_ISDIR(top.st_mode)) {
			/* "link/" names the directory the link points to, as in rsync */
			resolved = realpath(path, NULL);
			if (resolved && strlen(resolved) < sizeof(path))
				memcpy(path, resolved, strlen(resolved) + 1);
			free(resolved);
		}
		if (lstat(path, &top) < 0) {
			char m[300];
			snprintf(m, sizeof(m), "cannot read source: %s", strerror(errno));
			engine_emit(o, ENGINE_EV_FILE_ERROR, src, m, NULL);
			atomic_fetch_add_explicit(&s->walk_errors, 1, memory_order_relaxed);
			continue;
		}
		/* "dir/" sends the contents of dir; "dir" sends dir itself, named by its last component. */
		const char *prefix;
		if (slash && S_ISDIR(top.st_mode)) {
			prefix = "";
		} else {
			const char *b = strrchr(path, '/');
			prefix = b ? b + 1 : path;
			if (strcmp(path, "/") == 0 || prefix[0] == '\0' || strcmp(prefix, ".") == 0 ||
			    strcmp(prefix, "..") == 0)
				prefix = "";
		}
		if (o->n_sources == 1 && !S_ISDIR(top.st_mode) && !slash)
			s->single_file = true;
		size_t plen = strlen(prefix);
		if (plen > NET_STREAM_MAX_PATH) {
			engine_emit(o, ENGINE_EV_FILE_ERROR, src, "path too long to send", NULL);
			atomic_fetch_add_explicit(&s->walk_errors, 1, memory_order_relaxed);
			continue;
		}
		if (S_ISDIR(top.st_mode) && !o->recursive) {
			engine_emit(o, ENGINE_EV_INFO, prefix[0] ? prefix : ".", "skipping directory", NULL);
			continue;
		}
		uint32_t flags = 0;
		if (S_ISDIR(top.st_mode)) {
			flags = NET_STREAM_F_DIR | (prefix[0] ? 0 : NET_STREAM_F_ROOT);
		} else if (S_ISLNK(top.st_mode)) {
			if (!o->links) {
				engine_emit(o, ENGINE_EV_INFO, prefix,
				            "skipping non-regular file (symlink; use -l or -a)", NULL);
				continue;
			}
			flags = NET_STREAM_F_SYMLINK;
		} else if (!S_ISREG(top.st_mode)) {
			engine_emit(o, ENGINE_EV_INFO, prefix, "skipping non-regular file", NULL);
			continue;
		}
		int rc = add_root(s, path, &top, plen, err);
		if (rc < 0)
			return rc;
		if (s->roots[s->n_roots - 1].fd < 0 && S_ISDIR(top.st_mode)) {
			engine_emit(o, ENGINE_EV_FILE_ERROR, src, "cannot open source directory", NULL);
			atomic_fetch_add_explicit(&s->walk_errors, 1, memory_order_relaxed);
			continue;
		}
		struct snd_entry *e = entry_new(prefix, plen);
		if (!e)
			return qs_err_set(err, -ENOMEM, "out of memory");
		e->flags = flags;
		e->src = (uint32_t)(s->n_roots - 1);
		e->tail = (uint32_t)plen; /* the top itself: nothing below it */
		e->depth = plen ? 1 : 0;
		e->st = top;
		if (flags & NET_STREAM_F_SYMLINK) {
			char buf[NET_STREAM_MAX_PATH + 1];
			ssize_t n = readlink(path, buf, sizeof(buf) - 1);
			if (n <= 0 || n > (ssize_t)NET_STREAM_MAX_PATH) {
				engine_emit(o, ENGINE_EV_FILE_ERROR, src, "cannot read the symlink", NULL);
				atomic_fetch_add_explicit(&s->walk_errors, 1, memory_order_relaxed);
				entry_free(e);
				continue;
			}
			buf[n] = '\0';
			e->link = strdup(buf);
			if (!e->link) {
				entry_free(e);
				return qs_err_set(err, -ENOMEM, "out of memory");
			}
			e->st.st_size = n;
		}
		struct snd_entry *w = NULL;
		if (S_ISDIR(top.st_mode)) {
			w = entry_new(prefix, plen);
			if (!w) {
				entry_free(e);
				return qs_err_set(err, -ENOMEM, "out of memory");
			}
			char *keep = w->buf;
			*w = *e;
			w->rel = keep;
			w->walk = true;
		}
		if (offer(NULL, s, e, hand_give) < 0) {
			free(w);
			return qs_err_set(err, -ENOMEM, "out of memory");
		}
		if (w) {
			atomic_fetch_add_explicit(&s->remaining, 1, memory_order_relaxed);
			if (vec_push(&s->local, &s->n_local, &s->cap_local, w) < 0) {
				free(w);
				return qs_err_set(err, -ENOMEM, "out of memory");
			}
		}
	}

	/* Each stream in flight may hold an open file. */
	s->max_in_flight = engine_fd_budget();
	return 0;
}

bool sender_nothing(struct sender *s)
{
	return atomic_load_explicit(&s->remaining, memory_order_acquire) == 0;
}

int sender_seed(struct sender *s, struct sched_worker *w0)
{
	pthread_mutex_lock(&s->lock);
	int rc = 0;
	/* oldest first: the top entries, then the listings (taken last by worker 0, stolen first) */
	for (size_t i = 0; i < s->n_local && rc == 0; i++)
		rc = sched_worker_push(w0, s->local[i]);
	s->n_local = 0;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void sender_drain(struct sender *s, struct sched_worker *const *workers, size_t n)
{
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < n; i++) {
		void *item;
		while (sched_worker_pop(workers[i], &item) == 0)
			if (vec_push(&s->local, &s->n_local, &s->cap_local, item) < 0)
				entry_free(
				    item); /* (out of memory: it stays unfinished, the transfer fails) */
	}
	pthread_mutex_unlock(&s->lock);
}

static void job_free(struct snd_job *j)
{
	if (!j)
		return;
	if (j->reading) {
		j->dead = true; /* its fd and buffer are the kernel's until the read is done */
		return;
	}
	if (j->rb)
		j->l->rfree[j->l->n_rfree++] = j->rb;
	if (j->fd >= 0)
		close(j->fd);
	if (j->hash)
		XXH3_freeState(j->hash);
	entry_free(j->e);
	free(j);
}

/* e's header and metadata as the wire has them (ask: with the ASK flag; batch: as an entry of a
 * batch). Returns the length or a negative errno. */
static ssize_t encode_meta(const struct snd_entry *e, bool ask, bool batch, uint8_t *buf, size_t cap)
{
	struct net_stream_meta *m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	memset(m, 0, sizeof(*m));
	m->file_id = e->id;
	m->flags = e->flags;
	m->path_len = (uint32_t)strlen(e->rel);
	memcpy(m->path, e->rel, m->path_len + 1);
	m->size = entry_size(e);
	if (e->big) {
		m->flags |= NET_STREAM_F_RANGE;
		m->range_off = e->range_off;
		m->file_size = (uint64_t)e->st.st_size;
		m->range_idx = e->range_idx;
		m->range_count = e->big->count;
	}
	if (ask)
		m->flags |= NET_STREAM_F_ASK;
	m->mtime_ns = (int64_t)e->st.st_mtim.tv_sec * 1000000000LL + e->st.st_mtim.tv_nsec;
	m->mode = e->st.st_mode;
	m->uid = e->st.st_uid;
	m->gid = e->st.st_gid;
	ssize_t n = batch ? net_stream_batch_entry_encode(m, buf, cap) : net_stream_meta_encode(m, buf, cap);
	free(m);
	return n;
}

static int job_new(struct snd_lane *l, struct snd_entry *e, struct snd_job **out, struct qs_err *err)
{
	struct snd_job *j = calloc(1, sizeof(*j));
	if (!j)
		return qs_err_set(err, -ENOMEM, "out of memory");
	j->l = l;
	j->fd = -1;
	j->sid = -1;
	j->hash = XXH3_createState();
	if (!j->hash) {
		free(j);
		return qs_err_set(err, -ENOMEM, "out of memory");
	}
	XXH3_64bits_reset(j->hash);
	j->ask = l->s->ask && !(e->flags & (NET_STREAM_F_DIR | NET_STREAM_F_SYMLINK)) && !e->asked;
	ssize_t n = encode_meta(e, j->ask, false, j->hdr, sizeof(j->hdr));
	if (n < 0) {
		XXH3_freeState(j->hash);
		free(j);
		return qs_err_set(err, (int)n, "cannot frame %s: %s", e->rel, strerror((int)-n));
	}
	j->kind = SND_JOB;
	j->hdr_len = (size_t)n;
	j->e = e;
	*out = j;
	return 0;
}

static bool on_ssh(const struct snd_lane *l)
{
	return l->dp.name && strcmp(l->dp.name, "ssh") == 0;
}

void sender_lane_init(struct snd_lane *l, struct sender *s, const struct net_dp *dp, size_t max_in_flight)
{
	memset(l, 0, sizeof(*l));
	l->s = s;
	l->dp = *dp;
	l->max_in_flight = max_in_flight ? max_in_flight : 1;
}

int sender_lane_ring(struct snd_lane *l)
{
	if (io_ring_new(SND_RBUFS * 2, false, &l->ring) < 0) {
		l->ring = NULL;
		return 0; /* no io_uring here: files are read at once */
	}
	struct iovec iov[SND_RBUFS];
	l->rbufs = aligned_alloc(4096, (size_t)SND_RBUFS * SND_RBUF_SIZE);
	if (!l->rbufs) {
		io_ring_free(l->ring);
		l->ring = NULL;
		return -ENOMEM;
	}
	memset(l->rbufs, 0, (size_t)SND_RBUFS * SND_RBUF_SIZE); /* first touch: on this thread's node */
	for (int i = 0; i < SND_RBUFS; i++) {
		struct snd_rbuf *b = &l->rb[i];
		memset(b, 0, sizeof(*b));
		b->data = l->rbufs + (size_t)i * SND_RBUF_SIZE;
		b->index = i;
		iov[i].iov_base = b->data;
		iov[i].iov_len = SND_RBUF_SIZE;
		l->rfree[l->n_rfree++] = b;
	}
	if (io_ring_register(l->ring, iov, SND_RBUFS) < 0)
		for (int i = 0; i < SND_RBUFS; i++)
			l->rb[i].index = -1; /* plain reads then */
	return 0;
}

void sender_lane_ring_free(struct snd_lane *l)
{
	io_ring_free(l->ring); /* waits for the reads in flight: their jobs go, bundles' buffers come back */
	l->ring = NULL;
	while (l->n_pfree)
		free(l->pfree[--l->n_pfree]);
	free(l->rbufs);
	l->rbufs = NULL;
	l->n_rfree = 0;
}

/* A stream was opened on l (an entry's, a batch's or a bundle's). */
static void opened(struct snd_lane *l)
{
	l->in_flight++;
	add(&l->streams_opened, 1);
	add(&l->c.in_flight, 1);
	if (on_ssh(l))
		add(&l->c.streams_sent_ssh, 1);
}

/* e is l's now, taken out of a queue, until it is finished or back in one: the entries in flight. A
 * large file counts once, while any of its ranges is held (the last release may be another lane's,
 * so one lane's count alone can go below zero). Each call only on the thread of the lane holding e. */
static void hold(struct snd_lane *l, struct snd_entry *e)
{
	if (e->held)
		return;
	e->held = true;
	if (!e->big || atomic_fetch_add_explicit(&e->big->held, 1, memory_order_relaxed) == 0)
		add(&l->c.held, 1);
}

/* (before e goes back to a queue: another lane may have it at once) */
static void release(struct snd_lane *l, struct snd_entry *e)
{
	if (!e->held)
		return;
	e->held = false;
	if (!e->big || atomic_fetch_sub_explicit(&e->big->held, 1, memory_order_relaxed) == 1)
		atomic_fetch_sub_explicit(&l->c.held, 1, memory_order_relaxed);
}

/* e is finished with (confirmed or failed, its counters updated): it goes. */
static void done_with(struct snd_lane *l, struct snd_entry *e)
{
	release(l, e);
	entry_free(e);
	atomic_fetch_sub_explicit(&l->s->remaining, 1, memory_order_release);
}

/* e failed for good: reported, counted, and it goes. */
static void give_up(struct snd_lane *l, struct snd_entry *e, const char *why)
{
	add(&l->c.files_failed, 1);
	engine_emit(l->s->o, ENGINE_EV_FILE_ERROR, e->rel[0] ? e->rel : ".", why, NULL);
	done_with(l, e);
}

/* Moves what fits of data[0..*len) into buf (holding *have of cap bytes); returns how much it took. */
static size_t gather(uint8_t *buf, size_t cap, size_t *have, const uint8_t *data, size_t len)
{
	size_t k = cap - *have;
	if (k > len)
		k = len;
	memcpy(buf + *have, data, k);
	*have += k;
	return k;
}

/* A batch's or bundle's stream ended (what its entries needed is done): the lane's counts. all: every
 * entry was answered; msg: the receiver broke the protocol after that, which what names. */
static void group_closed(struct snd_lane *l, bool all, const char *msg, const char *what)
{
	if (all && msg[0]) { /* no file to blame, but the run must not look clean */
		add(&l->c.files_failed, 1);
		engine_emit(l->s->o, ENGINE_EV_FILE_ERROR, what, msg, NULL);
	} else if (all && !on_ssh(l)) {
		add(&l->c.streams_done_quic, 1);
	}
	l->in_flight--;
	atomic_fetch_sub_explicit(&l->c.in_flight, 1, memory_order_relaxed);
}

/* ---- batches of questions ---- */

/* A small regular file that would ask on a stream of its own asks in a batch instead, and so does a
 * symlink (with its target: the receiver compares it). Ranges ask one by one (a HAVE for one settles
 * the file), a single-file destination takes no batch. */
static bool batchable(const struct snd_lane *l, const struct snd_entry *e)
{
	const struct sender *s = l->s;
	if (!s->ask || !s->ask_batch || s->single_file || e->big || e->asked)
		return false;
	return (e->flags == 0 && S_ISREG(e->st.st_mode)) || (e->flags == NET_STREAM_F_SYMLINK && e->link);
}

static void batch_free(struct snd_batch *b)
{
	free(b->out);
	free(b);
}

/* Adds e to l's batch (made if there is none). Returns 1 when the batch is full, 0, or -ENOMEM. */
static int batch_add(struct snd_lane *l, struct snd_entry *e)
{
	struct snd_batch *b = l->batch;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return -ENOMEM;
		b->kind = SND_BATCH;
		b->l = l;
		b->sid = -1;
		l->batch = b;
	}
	size_t need = (b->out_len ? 0 : NET_STREAM_HDR_LEN) + NET_STREAM_MAX_META + NET_STREAM_MAX_PATH;
	if (b->out_cap - b->out_len < need) {
		size_t ncap = b->out_cap ? b->out_cap * 2 : 16384;
		while (ncap - b->out_len < need)
			ncap *= 2;
		uint8_t *no = realloc(b->out, ncap);
		if (!no)
			return -ENOMEM;
		b->out = no;
		b->out_cap = ncap;
	}
	if (b->out_len == 0) {
		net_stream_batch_encode(b->out);
		b->out_len = NET_STREAM_HDR_LEN;
	}
	ssize_t n = encode_meta(e, true, true, b->out + b->out_len, b->out_cap - b->out_len);
	if (n < 0)
		return (int)n;
	b->out_len += (size_t)n;
	if (e->flags & NET_STREAM_F_SYMLINK) { /* its target, to be compared */
		memcpy(b->out + b->out_len, e->link, entry_size(e));
		b->out_len += entry_size(e);
	}
	b->e[b->n++] = e;
	return b->n == NET_STREAM_BATCH_MAX;
}

/* Opens the stream of l's batch, if it has one. Returns 0, 1 when the peer's limit (-EAGAIN) put its
 * entries back (the lane is to stop taking work until a stream closes), or a negative errno. */
static int batch_flush(struct snd_lane *l, struct qs_err *err)
{
	struct snd_batch *b = l->batch;
	if (!b)
		return 0;
	l->batch = NULL;
	if (b->n == 0) { /* (its first entry could not be added) */
		batch_free(b);
		return 0;
	}
	int rc = net_dp_stream_open(&l->dp, b, &b->sid);
	if (rc < 0) {
		int lost = 0;
		for (uint32_t i = b->n; i-- > 0;)
			if (!put_back(l, b->e[i], false)) {
				entry_free(b->e[i]); /* (out of memory: the transfer fails) */
				lost = -ENOMEM;
			}
		batch_free(b);
		if (lost)
			return qs_err_set(err, lost, "out of memory");
		if (rc == -EAGAIN)
			return 1;
		return qs_err_set(err, rc, "cannot open a stream: %s", strerror(-rc));
	}
	opened(l);
	return 0;
}

/* ---- bundles of small entries ---- */

_Static_assert(SND_BUNDLE_FILE_MAX < SND_RING_MIN, "a bundle's files are read at once, not on the ring");
_Static_assert(SND_BUNDLE_FILE_MAX <= NET_STREAM_BUNDLE_FILE_MAX &&
                   SND_BUNDLE_ENTRIES <= NET_STREAM_BUNDLE_MAX,
               "the receiver takes them");

/* A small file (or a symlink) that goes without asking travels in a bundle, unless a bundle failed
 * under it (solo). */
static bool bundlable(const struct snd_lane *l, const struct snd_entry *e)
{
	const struct sender *s = l->s;
	if (!s->bundle || s->single_file || e->big || e->solo)
		return false;
	if (e->flags == NET_STREAM_F_SYMLINK) /* (it asks only in a batch) */
		return e->link != NULL && !(s->ask && s->ask_batch && !e->asked);
	return e->flags == 0 && S_ISREG(e->st.st_mode) && (uint64_t)e->st.st_size <= SND_BUNDLE_FILE_MAX &&
	       !(s->ask && !e->asked); /* (one that asks goes in a batch, or alone, first) */
}

/* e of bundle b goes back (not acked): what it had counted as sent and as owed is taken back. Returns
 * e, to be handed over again. */
static struct snd_entry *bundle_unsend(struct snd_bundle *b, uint32_t i)
{
	struct snd_lane *l = b->l;
	struct snd_entry *e = b->e[i];
	b->e[i] = NULL;
	l->bundled--;
	if (i < b->sent) {
		atomic_fetch_sub_explicit(&l->c.bytes_sent, entry_size(e), memory_order_relaxed);
	} else if (i == b->sent && b->cur) {
		struct snd_job *j = b->cur;
		b->cur = NULL;
		settle(j, j->owed);
		atomic_fetch_sub_explicit(&l->c.bytes_sent, j->data_off, memory_order_relaxed);
		j->e = NULL;
		job_free(j);
	} else {
		b->owed -= entry_size(e);
		l->unsent -= entry_size(e);
	}
	return e;
}

/* Adds e to l's bundle (made if there is none). Returns 1 when the bundle is full, 0, or -ENOMEM. */
static int bundle_add(struct snd_lane *l, struct snd_entry *e)
{
	struct snd_bundle *b = l->bundle;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return -ENOMEM;
		b->kind = SND_BUNDLE;
		b->l = l;
		b->sid = -1;
		net_stream_bundle_encode(b->hdr);
		l->bundle = b;
	}
	uint64_t size = entry_size(e);
	b->e[b->n++] = e;
	l->bundled++;
	b->bytes += size;
	b->owed += size;
	l->unsent += size;
	return b->n == SND_BUNDLE_ENTRIES || b->bytes >= SND_BUNDLE_BYTES;
}

/* The most content a bundle holds: it takes no more once it has SND_BUNDLE_BYTES, and no file of it is
 * larger than SND_BUNDLE_FILE_MAX. */
#define SND_PBUF_SIZE (SND_BUNDLE_BYTES + SND_BUNDLE_FILE_MAX)

/* pf goes once its bundle has let go of it and nothing of it is on the ring; its buffer is kept for
 * the lane's next bundle if there is room. */
static void prefetch_maybe_free(struct snd_prefetch *pf)
{
	if (pf->b || pf->inflight)
		return;
	struct snd_lane *l = pf->l;
	if (pf->cap == SND_PBUF_SIZE && l->n_pfree < SND_PBUFS)
		l->pfree[l->n_pfree++] = pf->buf;
	else
		free(pf->buf);
	free(pf->paths);
	free(pf);
}

/* b lets go of its read-ahead (b is going, or every file of it is out). */
static void prefetch_release(struct snd_bundle *b)
{
	struct snd_prefetch *pf = b->pf;
	if (!pf)
		return;
	b->pf = NULL;
	pf->b = NULL;
	prefetch_maybe_free(pf);
}

/* A file of pf is read (or will not be): its stream, if asleep on it, goes on. */
static void prefetch_wake(struct snd_prefetch *pf)
{
	if (pf->b && pf->waiting) {
		pf->waiting = false;
		net_dp_stream_resume(&pf->l->dp, pf->b->sid);
	}
}

static void pre_read_done(struct io_ring_op *op, int res)
{
	struct snd_pre *p = (struct snd_pre *)op;
	struct snd_prefetch *pf = p->pf;
	pf->inflight--;
	p->st = res >= 0 && (uint64_t)res == p->size ? PRE_READY : PRE_FAILED; /* (the ring closed it) */
	prefetch_wake(pf);
	prefetch_maybe_free(pf);
}

static void pre_open_done(struct io_ring_op *op, int res)
{
	struct snd_pre *p = (struct snd_pre *)op;
	struct snd_prefetch *pf = p->pf;
	pf->inflight--;
	p->st = PRE_FAILED;
	if (res >= 0) {
		if (pf->b && still_listed(res, p->dev, p->ino)) {
			p->op.done = pre_read_done;
			if (io_ring_read_close(pf->l->ring, &p->op, res, p->data, p->size) == 0) {
				p->st = PRE_READ;
				pf->inflight++;
				return; /* (io_ring_reap submits it) */
			}
		}
		close(res);
	}
	prefetch_wake(pf);
	prefetch_maybe_free(pf);
}

/* e's path beneath its source's held directory (*rootfd) if it is a file to read ahead, else NULL: a
 * regular file with content, not the source's top itself. */
static const char *pre_tail(const struct snd_lane *l, const struct snd_entry *e, int *rootfd)
{
	return !e->link && e->st.st_size > 0 ? beneath(l->s, e, rootfd) : NULL;
}

/* Reads b's files ahead on l's ring, if l has one: every regular file beneath a held source directory
 * is opened in one submit, and each open's completion sends its read. Without memory or room on the
 * ring, the files left are read at once as before. */
static void prefetch_start(struct snd_lane *l, struct snd_bundle *b)
{
	if (!l->ring)
		return;
	uint64_t total = 0;
	size_t names = 0;
	int rootfd;
	const char *tail;
	for (uint32_t i = 0; i < b->n; i++) {
		if ((tail = pre_tail(l, b->e[i], &rootfd))) {
			total += (uint64_t)b->e[i]->st.st_size;
			names += strlen(tail) + 1;
		}
	}
	if (total == 0 || total > SND_PBUF_SIZE)
		return;
	struct snd_prefetch *pf = calloc(1, sizeof(*pf));
	if (!pf)
		return;
	/* a kept buffer, or one the size of this bundle's content (a small one is not kept: it could not
	 * serve a full bundle) */
	if (l->n_pfree) {
		pf->buf = l->pfree[--l->n_pfree];
		pf->cap = SND_PBUF_SIZE;
	} else {
		pf->cap = total > SND_BUNDLE_BYTES / 2 ? SND_PBUF_SIZE : (size_t)total;
		pf->buf = malloc(pf->cap);
	}
	pf->paths = malloc(names);
	if (!pf->buf || !pf->paths) {
		free(pf->buf);
		free(pf->paths);
		free(pf);
		return;
	}
	pf->l = l;
	pf->b = b;
	uint64_t off = 0;
	char *path = pf->paths;
	for (uint32_t i = 0; i < b->n; i++) {
		const struct snd_entry *e = b->e[i];
		if (!(tail = pre_tail(l, e, &rootfd)))
			continue;
		struct snd_pre *p = &pf->pre[i];
		p->pf = pf;
		p->dev = e->st.st_dev;
		p->ino = e->st.st_ino;
		p->size = (uint64_t)e->st.st_size;
		p->data = pf->buf + off;
		off += p->size;
		size_t len = strlen(tail) + 1;
		memcpy(path, tail, len);
		p->op.done = pre_open_done;
		if (io_ring_open_beneath(l->ring, &p->op, rootfd, path) < 0)
			break; /* the ring is full: the rest are read at once */
		path += len;
		p->st = PRE_OPEN;
		pf->inflight++;
	}
	b->pf = pf;
	/* From the caches the opens are done by the time the submit returns, and the reads their
	 * completions queue are done by the time the next submit does: take both now, so the stream
	 * finds its files read and does not wait two turns of the lane's loop for them. */
	(void)io_ring_submit(l->ring); /* (what it could not take, io_ring_reap tries again) */
	(void)io_ring_reap(l->ring);   /* opens done: their reads go to the kernel at its end */
	(void)io_ring_reap(l->ring);   /* reads done */
}

/* Opens the stream of l's bundle, if it has one: 0, 1 at the peer's limit (its entries are back), or a
 * negative errno. */
static int bundle_flush(struct snd_lane *l, struct qs_err *err)
{
	struct snd_bundle *b = l->bundle;
	if (!b)
		return 0;
	l->bundle = NULL;
	int rc = b->n ? net_dp_stream_open(&l->dp, b, &b->sid) : -EAGAIN;
	if (rc < 0) {
		int lost = 0;
		for (uint32_t i = b->n; i-- > 0;) {
			struct snd_entry *e = bundle_unsend(b, i);
			if (!put_back(l, e, false)) {
				entry_free(e); /* (out of memory: the transfer fails) */
				lost = -ENOMEM;
			}
		}
		bool none = b->n == 0;
		free(b);
		if (lost)
			return qs_err_set(err, lost, "out of memory");
		if (rc == -EAGAIN)
			return none ? 0 : 1;
		return qs_err_set(err, rc, "cannot open a stream: %s", strerror(-rc));
	}
	opened(l);
	/* (after the open: opening a stream only marks it ready, its first bytes are asked for later) */
	prefetch_start(l, b);
	return 0;
}

int sender_pump(struct snd_lane *l, struct qs_err *err)
{
	struct sender *s = l->s;
	int rc = 0;
	/* An open batch or bundle holds a slot of its own, and every entry in a bundle counts as a stream
	 * would: a lane has no more entries in flight than streams it may open, so the others stay in the
	 * deque for idle lanes to steal. */
	while (l->in_flight + l->bundled + (l->batch ? 1u : 0u) + (l->bundle ? 1u : 0u) < l->max_in_flight &&
	       (!l->unsent_max || l->unsent < l->unsent_max)) {
		bool again;
		struct snd_entry *e = take(l, &again);
		if (!e)
			break;
		if (e->walk) {
			rc = list_dir(l, s, e);
			free(e);
			atomic_fetch_sub_explicit(&s->remaining, 1, memory_order_release);
			if (rc < 0) {
				rc = qs_err_set(err, rc, "cannot list a directory: %s", strerror(-rc));
				break;
			}
			continue;
		}
		hold(l, e);
		if (e->big && atomic_load_explicit(&e->big->have, memory_order_acquire)) {
			/* another range of this file was answered HAVE: the receiver has it whole, and
			 * does not wait for this range to ask (one round trip for a file of any size) */
			confirm(l, e, true);
			done_with(l, e);
			continue;
		}
		if (batchable(l, e)) {
			rc = batch_add(l, e);
			if (rc < 0) {
				rc = qs_err_set(err, rc, "cannot ask about %s: %s", e->rel, strerror(-rc));
				if (!put_back(l, e, again))
					entry_free(e); /* (out of memory: the transfer fails) */
				break;
			}
			if (again)
				add(&l->c.files_resent, 1);
			if (rc == 1 && (rc = batch_flush(l, err)) != 0) {
				rc = rc < 0 ? rc : 0; /* (1: at the peer's limit, the entries are back) */
				break;
			}
			continue;
		}
		if (bundlable(l, e)) {
			rc = bundle_add(l, e);
			if (rc < 0) {
				rc = qs_err_set(err, rc, "out of memory");
				if (!put_back(l, e, again))
					entry_free(e); /* (out of memory: the transfer fails) */
				break;
			}
			if (again)
				add(&l->c.files_resent, 1);
			if (rc == 1 && (rc = bundle_flush(l, err)) != 0) {
				rc = rc < 0 ? rc : 0;
				break;
			}
			continue;
		}
		struct snd_job *j = NULL;
		rc = job_new(l, e, &j, err);
		if (rc < 0) {
			put_back(l, e, again);
			break;
		}
		rc = net_dp_stream_open(&l->dp, j, &j->sid);
		if (rc < 0) {
			j->e = NULL;
			job_free(j);
			if (!put_back(l, e, again)) {
				rc = qs_err_set(err, -ENOMEM, "out of memory");
				break;
			}
			if (rc == -EAGAIN) {
				rc = 0; /* the peer's limit for now: another try after a stream closes */
				break;
			}
			rc = qs_err_set(err, rc, "cannot open a stream: %s", strerror(-rc));
			break;
		}
		if (again)
			add(&l->c.files_resent, 1);
		/* An entry that asks first owes nothing until its answer is SEND (snd_recv): asking costs
		 * no window, and an unchanged tree is checked with every stream at once. A range owes from
		 * the start, so a large file's ranges stay stealable (and its first answer settles all). */
		if (!j->ask || e->big)
			owe(j);
		opened(l);
	}
	/* what has gathered goes now: nothing more to go with it for the moment */
	struct qs_err ferr = {0};
	int frc = batch_flush(l, rc < 0 ? &ferr : err); /* (the first error is the one to tell) */
	int grc = bundle_flush(l, rc < 0 || frc < 0 ? &ferr : err);
	return rc < 0 ? rc : frc < 0 ? frc : grc < 0 ? grc : 0;
}

void sender_stats(struct snd_lane *const *lanes, size_t n, struct sender *s, struct engine_stats *st)
{
	st->files_discovered = get(&s->files_discovered);
	st->bytes_total = get(&s->bytes_total);
	st->streams_total = get(&s->entries);
	st->files_done = st->files_failed = st->bytes_done = st->bytes_sent = st->wire_bytes = 0;
	st->files_resent = st->files_done_quic = st->files_done_ssh = st->files_unchanged = 0;
	st->bytes_unchanged = st->files_read_ahead = 0;
	st->streams_done_quic = st->streams_sent_ssh = 0;
	st->files_in_flight = st->streams_in_flight = 0;
	uint64_t held = 0;
	for (size_t i = 0; i < n; i++) {
		const struct snd_counters *c = &lanes[i]->c;
		st->files_done += get(&c->files_done);
		st->files_failed += get(&c->files_failed);
		st->bytes_done += get(&c->bytes_done);
		st->bytes_sent += get(&c->bytes_sent);
		st->wire_bytes += get(&c->wire_bytes);
		st->files_resent += get(&c->files_resent);
		st->files_done_quic += get(&c->files_done_quic);
		st->files_done_ssh += get(&c->files_done_ssh);
		st->files_unchanged += get(&c->files_unchanged);
		st->bytes_unchanged += get(&c->bytes_unchanged);
		st->files_read_ahead += get(&c->files_read_ahead);
		st->streams_done_quic += get(&c->streams_done_quic);
		st->streams_sent_ssh += get(&c->streams_sent_ssh);
		st->streams_in_flight += get(&c->in_flight);
		held += get(&c->held); /* (wraps as the lanes' counts do) */
	}
	st->files_in_flight = (int64_t)held > 0 ? held : 0; /* (read lane by lane: a moment's skew) */
}

void sender_free(struct sender *s)
{
	for (size_t i = 0; i < s->n_local; i++)
		entry_free(s->local[i]);
	free(s->local);
	s->local = NULL;
	s->n_local = s->cap_local = 0;
	for (size_t i = 0; i < s->n_resend; i++)
		entry_free(s->resend[i]);
	free(s->resend);
	s->resend = NULL;
	s->n_resend = s->cap_resend = 0;
	for (size_t i = 0; i < s->n_roots; i++) {
		if (s->roots[i].fd >= 0)
			close(s->roots[i].fd);
		free(s->roots[i].top);
	}
	free(s->roots);
	s->roots = NULL;
	s->n_roots = 0;
	if (s->o)
		pthread_mutex_destroy(&s->lock);
	s->o = NULL;
}

/* ---- data plane callbacks ---- */

static ssize_t fail_job(struct snd_job *j, int code, const char *what)
{
	snprintf(j->msg, sizeof(j->msg), "%s: %s", what, strerror(code));
	return -code;
}

static ssize_t batch_fill(struct snd_batch *b, uint8_t *buf, size_t cap, int *fin)
{
	size_t k = b->out_len - b->out_off;
	if (k > cap)
		k = cap;
	memcpy(buf, b->out + b->out_off, k);
	b->out_off += k;
	*fin = b->out_off == b->out_len;
	add(&b->l->c.wire_bytes, k);
	return (ssize_t)k;
}

/* The answers, in the order of the questions: SEND puts the entry back to be sent (without asking
 * again), HAVE and an OK ack settles it as unchanged, HAVE and an error fails it. */
static int batch_recv(struct snd_batch *b, const uint8_t *data, size_t len, int fin)
{
	struct snd_lane *l = b->l;
	while (len > 0) {
		size_t k = gather(b->ans, sizeof(b->ans), &b->ans_len, data, len);
		data += k;
		len -= k;
		size_t at = 0;
		while (at < b->ans_len) {
			if (b->answered == b->n) {
				snprintf(b->msg, sizeof(b->msg),
				         "more answers than questions from the receiver");
				return -EPROTO;
			}
			struct snd_entry *e = b->e[b->answered];
			uint8_t v = b->ans[at];
			if (v == NET_STREAM_VERDICT_SEND) {
				b->e[b->answered++] = NULL;
				e->asked = true;
				if (!put_back(l, e, false))
					give_up(l, e, "out of memory");
				at++;
				continue;
			}
			if (v != NET_STREAM_VERDICT_HAVE) {
				snprintf(b->msg, sizeof(b->msg), "malformed verdict from the receiver");
				return -EPROTO;
			}
			ssize_t n = net_stream_ack_len(b->ans + at + 1, b->ans_len - at - 1);
			if (n < 0) {
				snprintf(b->msg, sizeof(b->msg),
				         "malformed acknowledgement from the receiver");
				return -EPROTO;
			}
			if (n == 0)
				break; /* the rest of this answer is still to come */
			uint8_t status;
			char msg[NET_STREAM_MAX_ACK_MSG + 1];
			if (net_stream_ack_decode(b->ans + at + 1, (size_t)n, &status, msg, sizeof(msg)) <
			    0) {
				snprintf(b->msg, sizeof(b->msg),
				         "malformed acknowledgement from the receiver");
				return -EPROTO;
			}
			b->e[b->answered++] = NULL;
			if (status == NET_STREAM_OK) {
				confirm(l, e, true);
				done_with(l, e);
			} else {
				snprintf(b->last, sizeof(b->last), "%s", msg);
				give_up(l, e, msg);
			}
			at += 1 + (size_t)n;
		}
		memmove(b->ans, b->ans + at, b->ans_len - at);
		b->ans_len -= at;
	}
	if (fin && b->answered < b->n)
		b->ended = true;
	return 0;
}

/* The stream ended: questions left unanswered go again on the next data path if this one died under
 * them, and fail otherwise. */
static void batch_closed(struct snd_batch *b, uint64_t app_error)
{
	struct snd_lane *l = b->l;
	for (uint32_t i = b->answered; i < b->n; i++) {
		struct snd_entry *e = b->e[i];
		if (app_error == NET_DP_GONE && !b->msg[0] && !b->ended && put_back(l, e, true))
			continue; /* (still to be done: remaining keeps it) */
		char m[NET_STREAM_MAX_ACK_MSG + 64];
		if (b->msg[0])
			snprintf(m, sizeof(m), "%s", b->msg);
		else if (b->ended && b->last[0])
			snprintf(m, sizeof(m), "not answered: the receiver ended the batch (%s)", b->last);
		else if (b->ended)
			snprintf(m, sizeof(m), "not answered: the receiver ended the batch");
		else
			snprintf(m, sizeof(m), "stream closed before the receiver answered (code %llu)",
			         (unsigned long long)app_error);
		give_up(l, e, m);
	}
	group_closed(l, b->answered == b->n, b->msg, "(a batch of questions)");
	batch_free(b);
}

static ssize_t snd_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin);

static ssize_t bundle_fill(struct snd_bundle *b, uint8_t *buf, size_t cap, int *fin)
{
	size_t n = 0;
	*fin = 0;
	if (b->hdr_off < NET_STREAM_HDR_LEN) {
		n = NET_STREAM_HDR_LEN - b->hdr_off;
		if (n > cap)
			n = cap;
		memcpy(buf, b->hdr + b->hdr_off, n);
		b->hdr_off += n;
		add(&b->l->c.wire_bytes, n);
	}
	if (b->read_failed)
		return -EIO; /* (given up already) */
	if (b->ended)
		return -ECANCELED; /* the receiver ended the bundle: the rest would only fail */
	while (n < cap && b->sent < b->n) {
		if (!b->cur) { /* the next entry's turn: a job for it, which takes over what it owes */
			struct qs_err e = {0};
			if (job_new(b->l, b->e[b->sent], &b->cur, &e) < 0) {
				b->read_failed = true;
				return -ENOMEM;
			}
			b->cur->sid = b->sid;
			if (b->pf && b->pf->pre[b->sent].st != PRE_NONE)
				b->cur->pre = &b->pf->pre[b->sent];
			uint64_t size = entry_size(b->e[b->sent]);
			b->cur->owed = size;
			b->owed -= size;
		}
		int done = 0;
		ssize_t k = snd_fill(NULL, b->sid, b->cur, buf + n, cap - n, &done);
		if (k < 0) { /* (the job says why) */
			b->read_failed = true;
			return k;
		}
		n += (size_t)k;
		if (!done)
			break;
		settle(b->cur, b->cur->owed);
		b->cur->e = NULL; /* (the entry stays the bundle's until its ack) */
		job_free(b->cur);
		b->cur = NULL;
		b->sent++;
	}
	if (b->sent == b->n)
		prefetch_release(b); /* every file is out: its memory goes */
	*fin = b->hdr_off == NET_STREAM_HDR_LEN && b->sent == b->n;
	return (ssize_t)n;
}

/* The acks, one per entry in order. */
static int bundle_recv(struct snd_bundle *b, const uint8_t *data, size_t len, int fin)
{
	struct snd_lane *l = b->l;
	while (len > 0) {
		size_t k = gather(b->ans, sizeof(b->ans), &b->ans_len, data, len);
		data += k;
		len -= k;
		size_t at = 0;
		while (at < b->ans_len) {
			ssize_t n = net_stream_ack_len(b->ans + at, b->ans_len - at);
			uint8_t status;
			char msg[NET_STREAM_MAX_ACK_MSG + 1];
			if (n < 0 || (n > 0 && net_stream_ack_decode(b->ans + at, (size_t)n, &status, msg,
			                                             sizeof(msg)) < 0)) {
				snprintf(b->msg, sizeof(b->msg),
				         "malformed acknowledgement from the receiver");
				return -EPROTO;
			}
			if (n == 0)
				break; /* the rest of this ack is still to come */
			if (b->acked >= b->sent) {
				snprintf(
				    b->msg, sizeof(b->msg), "%s",
				    b->acked == b->n
				        ? "more acknowledgements than entries from the receiver"
				        : "an acknowledgement from the receiver for an entry not sent yet");
				return -EPROTO;
			}
			struct snd_entry *e = b->e[b->acked];
			b->e[b->acked++] = NULL;
			l->bundled--;
			if (status == NET_STREAM_OK) {
				confirm(l, e, false);
				done_with(l, e);
			} else {
				give_up(l, e, msg);
			}
			at += (size_t)n;
		}
		memmove(b->ans, b->ans + at, b->ans_len - at);
		b->ans_len -= at;
	}
	if (fin && b->ans_len) {
		snprintf(b->msg, sizeof(b->msg), "malformed acknowledgement from the receiver (cut short)");
		return -EPROTO;
	}
	if (fin && b->acked < b->n)
		b->ended = true;
	return 0;
}

/* The stream ended: entries not acked go again, on the next data path if this one died under them or
 * each on a stream of its own if one of them could not be read, and fail otherwise. */
static void bundle_closed(struct snd_bundle *b, uint64_t app_error)
{
	struct snd_lane *l = b->l;
	char why[NET_STREAM_MAX_ACK_MSG + 1] = "";
	if (b->read_failed && b->cur)
		snprintf(why, sizeof(why), "%s", b->cur->msg[0] ? b->cur->msg : "cannot be read");
	for (uint32_t i = b->acked; i < b->n; i++) {
		bool own = b->read_failed && i == b->sent; /* the one that could not be read */
		struct snd_entry *e = bundle_unsend(b, i);
		char m[NET_STREAM_MAX_ACK_MSG + 64];
		if (!own && !b->msg[0] && !b->ended && (app_error == NET_DP_GONE || b->read_failed)) {
			if (app_error != NET_DP_GONE)
				e->solo = true;
			bool ok = put_back(l, e, app_error == NET_DP_GONE);
			if (ok)
				continue; /* (still to be done: remaining keeps it) */
			snprintf(m, sizeof(m), "out of memory");
		} else if (own) {
			snprintf(m, sizeof(m), "%s", why[0] ? why : "cannot be read");
		} else if (b->msg[0]) {
			snprintf(m, sizeof(m), "%s", b->msg);
		} else if (b->ended) {
			snprintf(m, sizeof(m), "not acknowledged: the receiver ended the bundle");
		} else {
			snprintf(m, sizeof(m), "stream closed before the receiver confirmed it (code %llu)",
			         (unsigned long long)app_error);
		}
		give_up(l, e, m);
	}
	group_closed(l, b->acked == b->n, b->msg, "(a bundle)");
	prefetch_release(b);
	free(b);
}

static bool is_batch(const void *user)
{
	return user && *(const enum snd_kind *)user == SND_BATCH;
}

static bool is_bundle(const void *user)
{
	return user && *(const enum snd_kind *)user == SND_BUNDLE;
}

static ssize_t snd_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin)
{
	if (is_batch(user))
		return batch_fill(user, buf, cap, fin);
	if (is_bundle(user))
		return bundle_fill(user, buf, cap, fin);
	struct snd_job *j = user;
	const struct snd_entry *e = j->e;
	uint64_t size = entry_size(e);
	size_t n = 0;

	*fin = 0;
	if (j->acked && j->ack_status != NET_STREAM_OK)
		return -ECANCELED; /* the receiver refused this entry: stop sending it */

	while (n < cap) {
		switch (j->phase) {
		case PH_HDR: {
			size_t k = j->hdr_len - j->hdr_off;
			if (k > cap - n)
				k = cap - n;
			memcpy(buf + n, j->hdr + j->hdr_off, k);
			j->hdr_off += k;
			n += k;
			if (j->hdr_off == j->hdr_len)
				j->phase = j->ask ? PH_WAIT : PH_DATA;
			break;
		}
		case PH_WAIT:
			if (j->verdict == NET_STREAM_VERDICT_SEND) {
				j->phase = PH_DATA;
				break;
			}
			if (j->verdict == NET_STREAM_VERDICT_HAVE) {
				/* the destination has it: our side ends right after the metadata */
				j->phase = PH_SENT;
				*fin = 1;
				add(&j->l->c.wire_bytes, n);
				return (ssize_t)n;
			}
			add(&j->l->c.wire_bytes, n);
			return (ssize_t)n; /* the header is out; the data waits for the verdict (0: sleep) */
		case PH_DATA: {
			uint64_t left = size - j->data_off;
			if (left == 0) {
				if (j->rb && !j->reading) {
					/* all read: the buffer serves another stream while this one waits for
					 * its ack */
					j->l->rfree[j->l->n_rfree++] = j->rb;
					j->rb = NULL;
				}
				if (j->fd >= 0) {
					close(j->fd);
					j->fd = -1;
				}
				net_stream_trailer_encode(XXH3_64bits_digest(j->hash), j->trailer);
				j->phase = PH_TRAILER;
				break;
			}
			size_t k = cap - n;
			if (k > left)
				k = (size_t)left;
			if (e->link) {
				memcpy(buf + n, e->link + j->data_off, k);
			} else {
				if (j->pre && (j->pre->st == PRE_OPEN || j->pre->st == PRE_READ)) {
					j->pre->pf->waiting = true;
					add(&j->l->c.wire_bytes, n);
					return (ssize_t)n; /* (0: the stream sleeps until it is read) */
				}
				if (j->pre && j->pre->st == PRE_READY) {
					if (j->data_off == 0)
						add(&j->l->c.files_read_ahead, 1);
					memcpy(buf + n, j->pre->data + j->data_off, k);
					goto have;
				}
				j->pre = NULL; /* not read ahead: read at once, and say why if that fails */
				if (j->fd < 0) {
					int fd = open_entry(j->l->s, e, j->msg, sizeof(j->msg));
					if (fd < 0)
						return fd;
					j->fd = fd;
					if (size > (1u << 20)) /* small files: one read, no advice needed */
						posix_fadvise(j->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
				}
				if (j->l->ring && size >= SND_RING_MIN) {
					/* from the read ahead on the ring: what it has, or wait for it */
					ssize_t got = ring_take(j, buf + n, k, left);
					if (got > 0) {
						k = (size_t)got;
						goto have;
					}
					if (got == 0)
						return (ssize_t)
						    n; /* (0: the stream sleeps until the read is done) */
					if (got != -EAGAIN)
						return got;
					/* no buffer or no room on the ring: read at once */
				}
				ssize_t r = pread(j->fd, buf + n, k, (off_t)(e->range_off + j->data_off));
				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0)
					return fail_job(j, errno, "read failed");
				if (r == 0) {
					snprintf(j->msg, sizeof(j->msg),
					         "file shrank while being sent (%llu of %llu bytes)",
					         (unsigned long long)j->data_off, (unsigned long long)size);
					return -EIO;
				}
				k = (size_t)r;
			}
		have:
			XXH3_64bits_update(j->hash, buf + n, k);
			j->data_off += k;
			settle(j, k);
			add(&j->l->c.bytes_sent, k);
			n += k;
			break;
		}
		case PH_TRAILER: {
			size_t k = NET_STREAM_TRAILER_LEN - j->trl_off;
			if (k > cap - n)
				k = cap - n;
			memcpy(buf + n, j->trailer + j->trl_off, k);
			j->trl_off += k;
			n += k;
			if (j->trl_off == NET_STREAM_TRAILER_LEN) {
				j->phase = PH_SENT;
				*fin = 1;
				add(&j->l->c.wire_bytes, n);
				return (ssize_t)n;
			}
			break;
		}
		case PH_SENT:
			*fin = 1;
			return (ssize_t)n;
		}
	}
	add(&j->l->c.wire_bytes, n);
	return (ssize_t)n;
}

static int snd_recv(void *ctx, int64_t sid, void **user, const uint8_t *data, size_t len, int fin)
{
	if (is_batch(*user))
		return batch_recv(*user, data, len, fin);
	if (is_bundle(*user))
		return bundle_recv(*user, data, len, fin);
	struct snd_job *j = *user;
	if (!j)
		return -EPROTO; /* the receiver never opens streams toward the sender */
	if (j->ask && !j->verdict && len > 0) {
		if (data[0] != NET_STREAM_VERDICT_SEND && data[0] != NET_STREAM_VERDICT_HAVE) {
			snprintf(j->msg, sizeof(j->msg), "malformed verdict from the receiver");
			return -EPROTO;
		}
		j->verdict = data[0];
		if (j->verdict == NET_STREAM_VERDICT_HAVE) {
			settle(j, j->owed); /* nothing of it goes */
		} else if (!j->e->big) {
			owe(j); /* wanted after all (see sender_pump) */
		}
		data++;
		len--;
		net_dp_stream_resume(&j->l->dp, j->sid);
	}
	if (len > sizeof(j->ack) - j->ack_len)
		return -EPROTO;
	memcpy(j->ack + j->ack_len, data, len);
	j->ack_len += len;
	uint8_t status;
	int rc = net_stream_ack_decode(j->ack, j->ack_len, &status, j->msg, sizeof(j->msg));
	if (rc == 0) {
		j->acked = true;
		j->ack_status = status;
		if (status == NET_STREAM_OK)
			j->msg[0] = '\0';
		/* HAVE with an OK ack: the destination has the file, and the receiver checks a file once
		 * for all its ranges (HAVE with an error is only a refusal) */
		if (status == NET_STREAM_OK && j->verdict == NET_STREAM_VERDICT_HAVE && j->e->big)
			atomic_store_explicit(&j->e->big->have, true, memory_order_release);
	} else if (rc != -EAGAIN || fin) {
		snprintf(j->msg, sizeof(j->msg), "malformed acknowledgement from the receiver");
		return -EPROTO;
	}
	return 0;
}

/* e is done: sent and confirmed, or (have) found unchanged by the receiver. */
static void confirm(struct snd_lane *l, const struct snd_entry *e, bool have)
{
	add(have ? &l->c.bytes_unchanged : &l->c.bytes_done, entry_size(e));
	/* a range counts the file once, when it is the last range confirmed of a file not failed */
	bool whole = !e->big || (atomic_fetch_sub_explicit(&e->big->left, 1, memory_order_acq_rel) == 1 &&
	                         !atomic_load_explicit(&e->big->failed, memory_order_acquire));
	if (whole && have) {
		add(&l->c.files_done, 1);
		add(&l->c.files_unchanged, 1); /* (not listed with -v, as rsync does not) */
	} else if (whole) {
		add(&l->c.files_done, 1);
		add(on_ssh(l) ? &l->c.files_done_ssh : &l->c.files_done_quic, 1);
		engine_emit(l->s->o, ENGINE_EV_FILE_DONE, e->rel[0] ? e->rel : ".", NULL, NULL);
	}
}

static void snd_closed(void *ctx, int64_t sid, void *user, uint64_t app_error)
{
	struct snd_lane *l = ctx;
	struct sender *s = l->s;
	if (is_batch(user)) {
		batch_closed(user, app_error);
		return;
	}
	if (is_bundle(user)) {
		bundle_closed(user, app_error);
		return;
	}
	struct snd_job *j = user;
	if (!j)
		return;
	struct snd_entry *e = j->e;
	const char *name = e->rel[0] ? e->rel : ".";
	/* The receiver acks OK only once the entry is in place, so an OK ack is enough even if the stream
	 * then ends with an error (the data path going away before the last close). */
	bool confirmed = j->acked && j->ack_status == NET_STREAM_OK &&
	                 (j->phase == PH_SENT || j->verdict == NET_STREAM_VERDICT_HAVE);
	bool requeued = false;
	if (!confirmed && app_error == NET_DP_GONE && !j->acked && j->msg[0] == '\0' &&
	    put_back(l, e, true)) {
		j->e = NULL; /* the resend queue has it now */
		requeued = true;
		/* the data path died under it: it goes again on the next one (the receiver has dropped
		 * whatever part of it had arrived) */
		atomic_fetch_sub_explicit(&l->c.bytes_sent, j->data_off, memory_order_relaxed);
	} else if (confirmed) {
		if (!on_ssh(l))
			add(&l->c.streams_done_quic, 1);
		confirm(l, e, j->verdict == NET_STREAM_VERDICT_HAVE);
	} else if (e->big && atomic_exchange_explicit(&e->big->failed, true, memory_order_acq_rel)) {
		/* another range of this file failed first: the file is reported once */
	} else {
		char m[NET_STREAM_MAX_ACK_MSG + 64];
		if (j->msg[0])
			snprintf(m, sizeof(m), "%s", j->msg);
		else
			snprintf(m, sizeof(m), "stream closed before the receiver confirmed it (code %llu)",
			         (unsigned long long)app_error);
		add(&l->c.files_failed, 1);
		engine_emit(s->o, ENGINE_EV_FILE_ERROR, name, m, NULL);
	}
	if (!requeued)
		release(l, e);
	settle(j, j->owed); /* what a stream that ended early never sent */
	l->in_flight--;
	atomic_fetch_sub_explicit(&l->c.in_flight, 1, memory_order_relaxed);
	if (!requeued)
		atomic_fetch_sub_explicit(&s->remaining, 1, memory_order_release);
	job_free(j);
}

const struct net_dp_cb sender_dp_cb_template = {
    .recv = snd_recv,
    .fill = snd_fill,
    .closed = snd_closed,
};
