/* The sending side of a transfer: walks the sources into a list of entries (rsync's trailing-slash
 * rule), then gives each entry its own QUIC stream: header and metadata, the content read straight from
 * the file into the data plane's buffer, and the XXH3-64 trailer. The receiver's ack on the same stream
 * decides whether the entry counts as done. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/engine_int.h"
#include "io/io.h"

enum snd_phase { PH_HDR, PH_DATA, PH_TRAILER, PH_SENT };

struct snd_job {
	struct snd_lane *l;
	size_t idx;
	int64_t sid;
	int fd;
	enum snd_phase phase;
	uint8_t hdr[NET_STREAM_MAX_META];
	size_t hdr_len, hdr_off;
	uint64_t data_off;
	uint8_t trailer[NET_STREAM_TRAILER_LEN];
	size_t trl_off;
	XXH3_state_t *hash;
	uint8_t ack[NET_STREAM_MAX_ACK];
	size_t ack_len;
	bool acked;
	uint8_t ack_status;
	char msg[NET_STREAM_MAX_ACK_MSG + 1]; /* why it failed: ours, or the receiver's */
};

/* The entry just added is a large file: it becomes range 0, and its other ranges follow it. */
static int split_ranges(struct sender *s)
{
	size_t first = s->n - 1;
	uint64_t size = (uint64_t)s->ents[first].st.st_size;
	uint64_t count = (size + ENGINE_RANGE_BYTES - 1) / ENGINE_RANGE_BYTES;
	uint64_t unit = (size + count - 1) / count; /* the protocol's layout (net/stream.h) */
	if (count > NET_STREAM_MAX_RANGES || first > UINT32_MAX)
		return 0; /* (a file over 16 TiB) whole, on one stream */
	struct snd_big *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	if (s->n + count - 1 > s->cap) {
		struct snd_entry *ne = realloc(s->ents, (s->n + count - 1) * sizeof(*ne));
		if (!ne) {
			free(b);
			return -ENOMEM;
		}
		s->ents = ne;
		s->cap = s->n + count - 1;
	}
	atomic_init(&b->left, (unsigned)count);
	atomic_init(&b->failed, false);
	b->first = (uint32_t)first;
	b->count = (uint32_t)count;
	for (uint64_t i = 0; i < count; i++) {
		struct snd_entry *e = &s->ents[first + i];
		if (i > 0)
			*e = s->ents[first]; /* the same file: its strings stay range 0's */
		e->big = b;
		e->range_idx = (uint32_t)i;
		e->range_off = i * unit;
		e->range_len = size - e->range_off < unit ? size - e->range_off : unit;
	}
	s->n += count - 1;
	return 0;
}

static int add_entry(struct sender *s, const char *rel, size_t tail, const char *abs, const struct stat *st,
                     uint32_t flags)
{
	if (s->n == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 256;
		struct snd_entry *ne = realloc(s->ents, ncap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		s->ents = ne;
		s->cap = ncap;
	}
	struct snd_entry *e = &s->ents[s->n];
	memset(e, 0, sizeof(*e));
	e->rel = strdup(rel);
	e->abs = strdup(abs);
	if (!e->rel || !e->abs) {
		free(e->rel);
		free(e->abs);
		return -ENOMEM;
	}
	e->st = *st;
	e->flags = flags;
	e->src = (uint32_t)(s->n_roots - 1);
	e->tail = (uint32_t)tail;
	if (S_ISLNK(st->st_mode)) {
		char buf[NET_STREAM_MAX_PATH + 1];
		ssize_t n = readlink(abs, buf, sizeof(buf) - 1);
		if (n < 0 || n == 0 || n > (ssize_t)NET_STREAM_MAX_PATH) {
			free(e->rel);
			free(e->abs);
			return n < 0 ? -errno : -ENAMETOOLONG;
		}
		buf[n] = '\0';
		e->link = strdup(buf);
		if (!e->link) {
			free(e->rel);
			free(e->abs);
			return -ENOMEM;
		}
		e->st.st_size = n;
	}
	s->n++;
	if (S_ISREG(st->st_mode) && (uint64_t)st->st_size > ENGINE_RANGE_MIN)
		return split_ranges(s);
	return 0;
}

struct walk_ctx {
	struct sender *s;
	size_t prefix_len; /* rel = prefix "/" tail */
};

static int walk_cb(void *ctx, const struct io_walk_ent *e)
{
	struct walk_ctx *w = ctx;
	struct sender *s = w->s;
	const struct engine_opts *o = s->o;
	uint32_t flags = 0;
	mode_t m = e->st.st_mode;

	if (S_ISDIR(m)) {
		if (!o->recursive) {
			engine_emit(o, ENGINE_EV_INFO, e->rel[0] ? e->rel : ".", "skipping directory", NULL);
			return 0;
		}
		flags = NET_STREAM_F_DIR;
		if (e->rel[0] == '\0')
			flags |= NET_STREAM_F_ROOT;
	} else if (S_ISLNK(m)) {
		if (!o->links) {
			engine_emit(o, ENGINE_EV_INFO, e->rel,
			            "skipping non-regular file (symlink; use -l or -a)", NULL);
			return 0;
		}
		flags = NET_STREAM_F_SYMLINK;
	} else if (!S_ISREG(m)) {
		engine_emit(o, ENGINE_EV_INFO, e->rel, "skipping non-regular file", NULL);
		return 0;
	}
	if (strlen(e->rel) > NET_STREAM_MAX_PATH) {
		engine_emit(o, ENGINE_EV_FILE_ERROR, e->rel, "path too long to send", NULL);
		s->walk_errors++;
		return 0;
	}
	size_t tail = w->prefix_len;
	if (tail && e->rel[tail] == '/')
		tail++;
	int rc = add_entry(s, e->rel, tail, e->abs, &e->st, flags);
	if (rc == -ENOMEM)
		return rc;
	if (rc < 0) {
		engine_emit(o, ENGINE_EV_FILE_ERROR, e->rel, strerror(-rc), NULL);
		s->walk_errors++;
		return 0;
	}
	s->files_discovered++;
	if (!(flags & NET_STREAM_F_DIR))
		s->bytes_total += (uint64_t)s->ents[s->n - 1].st.st_size;
	return 0;
}

/* Holds a source's top directory open (files are opened beneath it later), or records a file source. */
static int add_root(struct sender *s, const char *path, const struct stat *top, struct qs_err *err)
{
	struct snd_root *nr = realloc(s->roots, (s->n_roots + 1) * sizeof(*nr));
	if (!nr)
		return qs_err_set(err, -ENOMEM, "out of memory");
	s->roots = nr;
	struct snd_root *r = &s->roots[s->n_roots];
	r->fd = -1;
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

/* Opens an entry for reading: beneath its source's top without following any symlink, or the top file
 * itself without following it; and only if it is still the regular file the walk saw. */
static int open_entry(const struct sender *s, const struct snd_entry *e, char *why, size_t whycap)
{
	const struct snd_root *r = &s->roots[e->src];
	const char *tail = e->rel + e->tail;
	int fd;
	if (r->fd >= 0 && tail[0] != '\0') {
		fd = io_open_beneath(r->fd, tail, O_RDONLY | O_CLOEXEC, 0);
	} else {
		fd = open(r->top, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
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
	struct stat now;
	if (fstat(fd, &now) < 0 || now.st_dev != e->st.st_dev || now.st_ino != e->st.st_ino ||
	    !S_ISREG(now.st_mode)) {
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
	atomic_init(&s->next, 0);
	atomic_init(&s->pending_resend, 0);

	for (int i = 0; i < o->n_sources; i++) {
		const char *src = o->sources[i];
		size_t len = strlen(src);
		char path[PATH_MAX];
		if (len == 0 || len >= sizeof(path)) {
			engine_emit(o, ENGINE_EV_FILE_ERROR, src, "bad source path", NULL);
			s->walk_errors++;
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
			s->walk_errors++;
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

		int rc = add_root(s, path, &top, err);
		if (rc < 0)
			return rc;
		if (s->roots[s->n_roots - 1].fd < 0 && S_ISDIR(top.st_mode)) {
			engine_emit(o, ENGINE_EV_FILE_ERROR, src, "cannot open source directory", NULL);
			s->walk_errors++;
			continue;
		}
		struct walk_ctx w = {.s = s, .prefix_len = strlen(prefix)};
		struct qs_err werr = {0};
		rc = io_walk(path, prefix, o->recursive, walk_cb, &w, &werr);
		if (rc == -ENOMEM)
			return qs_err_set(err, rc, "out of memory walking %s", src);
		if (rc < 0) {
			engine_emit(o, ENGINE_EV_FILE_ERROR, src, werr.msg, NULL);
			s->walk_errors++;
		}
	}

	/* Each stream in flight may hold an open file. */
	s->max_in_flight = engine_fd_budget();
	atomic_store_explicit(&s->remaining, s->n, memory_order_relaxed);
	return 0;
}

/* Content bytes an entry's stream carries. */
static uint64_t entry_size(const struct snd_entry *e)
{
	if (e->flags & NET_STREAM_F_DIR)
		return 0;
	return e->big ? e->range_len : (uint64_t)e->st.st_size;
}

static void job_free(struct snd_job *j)
{
	if (!j)
		return;
	if (j->fd >= 0)
		close(j->fd);
	if (j->hash)
		XXH3_freeState(j->hash);
	free(j);
}

static int job_new(struct snd_lane *l, size_t idx, struct snd_job **out, struct qs_err *err)
{
	const struct snd_entry *e = &l->s->ents[idx];
	struct snd_job *j = calloc(1, sizeof(*j));
	if (!j)
		return qs_err_set(err, -ENOMEM, "out of memory");
	j->l = l;
	j->idx = idx;
	j->fd = -1;
	j->sid = -1;
	j->hash = XXH3_createState();
	if (!j->hash) {
		free(j);
		return qs_err_set(err, -ENOMEM, "out of memory");
	}
	XXH3_64bits_reset(j->hash);

	struct net_stream_meta *m = malloc(sizeof(*m));
	if (!m) {
		job_free(j);
		return qs_err_set(err, -ENOMEM, "out of memory");
	}
	memset(m, 0, sizeof(*m));
	m->file_id = (uint32_t)idx;
	m->flags = e->flags;
	m->path_len = (uint32_t)strlen(e->rel);
	memcpy(m->path, e->rel, m->path_len + 1);
	m->size = entry_size(e);
	if (e->big) {
		m->file_id = e->big->first;
		m->flags |= NET_STREAM_F_RANGE;
		m->range_off = e->range_off;
		m->file_size = (uint64_t)e->st.st_size;
		m->range_idx = e->range_idx;
		m->range_count = e->big->count;
	}
	m->mtime_ns = (int64_t)e->st.st_mtim.tv_sec * 1000000000LL + e->st.st_mtim.tv_nsec;
	m->mode = e->st.st_mode;
	m->uid = e->st.st_uid;
	m->gid = e->st.st_gid;
	ssize_t n = net_stream_meta_encode(m, j->hdr, sizeof(j->hdr));
	free(m);
	if (n < 0) {
		job_free(j);
		return qs_err_set(err, (int)n, "cannot frame %s: %s", e->rel, strerror((int)-n));
	}
	j->hdr_len = (size_t)n;
	*out = j;
	return 0;
}

static bool on_ssh(const struct snd_lane *l)
{
	return l->dp.name && strcmp(l->dp.name, "ssh") == 0;
}

static void add(atomic_uint_fast64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed); /* a statistic: no ordering */
}

#define RESEND_CUT ((size_t)1 << (sizeof(size_t) * 8 - 1)) /* in resend: its stream was cut off */

/* Keeps idx for later: cut (its stream died with its data path: it will count as resent) or not (no
 * stream could be opened for it just now). Returns false when there is no memory. */
static bool requeue(struct sender *s, size_t idx, bool cut)
{
	if (cut)
		idx |= RESEND_CUT;
	bool ok = true;
	pthread_mutex_lock(&s->lock);
	if (s->n_resend == s->cap_resend) {
		size_t ncap = s->cap_resend ? s->cap_resend * 2 : 256;
		size_t *nr = realloc(s->resend, ncap * sizeof(*nr));
		if (nr) {
			s->resend = nr;
			s->cap_resend = ncap;
		}
	}
	if (s->n_resend < s->cap_resend) {
		s->resend[s->n_resend++] = idx;
		atomic_store_explicit(&s->pending_resend, s->n_resend, memory_order_relaxed);
	} else {
		ok = false;
	}
	pthread_mutex_unlock(&s->lock);
	return ok;
}

/* The next entry nobody has: one waiting to be sent again first, else the next unclaimed one. */
static bool claim(struct sender *s, size_t *idx, bool *again)
{
	if (atomic_load_explicit(&s->pending_resend, memory_order_relaxed) > 0) {
		pthread_mutex_lock(&s->lock);
		bool got = s->n_resend > 0;
		if (got) {
			size_t v = s->resend[--s->n_resend];
			*idx = v & ~RESEND_CUT;
			*again = (v & RESEND_CUT) != 0;
			atomic_store_explicit(&s->pending_resend, s->n_resend, memory_order_relaxed);
		}
		pthread_mutex_unlock(&s->lock);
		if (got)
			return true;
	}
	if (atomic_load_explicit(&s->next, memory_order_relaxed) >= s->n)
		return false;
	/* relaxed: the index is all that is shared; the entries were written before the lanes started */
	size_t i = atomic_fetch_add_explicit(&s->next, 1, memory_order_relaxed);
	if (i >= s->n)
		return false;
	*idx = i;
	*again = false;
	return true;
}

void sender_lane_init(struct snd_lane *l, struct sender *s, const struct net_dp *dp, size_t max_in_flight)
{
	memset(l, 0, sizeof(*l));
	l->s = s;
	l->dp = *dp;
	l->max_in_flight = max_in_flight ? max_in_flight : 1;
}

int sender_pump(struct snd_lane *l, struct qs_err *err)
{
	struct sender *s = l->s;
	while (l->in_flight < l->max_in_flight) {
		size_t idx;
		bool again;
		if (!claim(s, &idx, &again))
			return 0;
		struct snd_job *j = NULL;
		int rc = job_new(l, idx, &j, err);
		if (rc < 0) {
			requeue(s, idx, again);
			return rc;
		}
		rc = net_dp_stream_open(&l->dp, j, &j->sid);
		if (rc < 0) {
			job_free(j);
			if (!requeue(s, idx, again))
				return qs_err_set(err, -ENOMEM, "out of memory");
			if (rc == -EAGAIN)
				return 0; /* the peer's limit for now: another try after a stream closes */
			return qs_err_set(err, rc, "cannot open a stream: %s", strerror(-rc));
		}
		if (again)
			add(&l->c.files_resent, 1);
		l->in_flight++;
		l->streams_opened++;
		add(&l->c.in_flight, 1);
		if (on_ssh(l))
			add(&l->c.streams_sent_ssh, 1);
	}
	return 0;
}

bool sender_exhausted(struct sender *s)
{
	return atomic_load_explicit(&s->next, memory_order_relaxed) >= s->n &&
	       atomic_load_explicit(&s->pending_resend, memory_order_relaxed) == 0;
}

static uint64_t get(const atomic_uint_fast64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

void sender_stats(struct snd_lane *const *lanes, size_t n, const struct sender *s, struct engine_stats *st)
{
	st->files_discovered = s->files_discovered;
	st->bytes_total = s->bytes_total;
	st->files_done = st->files_failed = st->bytes_done = st->bytes_sent = st->wire_bytes = 0;
	st->files_resent = st->files_done_quic = st->files_done_ssh = 0;
	st->streams_total = s->n;
	st->streams_done_quic = st->streams_sent_ssh = 0;
	st->files_in_flight = 0;
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
		st->streams_done_quic += get(&c->streams_done_quic);
		st->streams_sent_ssh += get(&c->streams_sent_ssh);
		st->files_in_flight += get(&c->in_flight);
	}
}

void sender_free(struct sender *s)
{
	for (size_t i = 0; i < s->n; i++) {
		struct snd_entry *e = &s->ents[i];
		if (e->big && e->range_idx > 0)
			continue; /* range 0 owns the strings and the snd_big */
		free(e->rel);
		free(e->abs);
		free(e->link);
		free(e->big);
	}
	free(s->ents);
	s->ents = NULL;
	for (size_t i = 0; i < s->n_roots; i++) {
		if (s->roots[i].fd >= 0)
			close(s->roots[i].fd);
		free(s->roots[i].top);
	}
	free(s->roots);
	s->roots = NULL;
	s->n_roots = 0;
	free(s->resend);
	s->resend = NULL;
	s->n_resend = s->cap_resend = 0;
	if (s->o)
		pthread_mutex_destroy(&s->lock);
	s->o = NULL;
	s->n = s->cap = 0;
}

/* ---- data plane callbacks ---- */

static ssize_t fail_job(struct snd_job *j, int code, const char *what)
{
	snprintf(j->msg, sizeof(j->msg), "%s: %s", what, strerror(code));
	return -code;
}

static ssize_t snd_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin)
{
	struct snd_job *j = user;
	const struct snd_entry *e = &j->l->s->ents[j->idx];
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
				j->phase = PH_DATA;
			break;
		}
		case PH_DATA: {
			uint64_t left = size - j->data_off;
			if (left == 0) {
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
				if (j->fd < 0) {
					int fd = open_entry(j->l->s, e, j->msg, sizeof(j->msg));
					if (fd < 0)
						return fd;
					j->fd = fd;
					if (size > (1u << 20)) /* small files: one read, no advice needed */
						posix_fadvise(j->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
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
			XXH3_64bits_update(j->hash, buf + n, k);
			j->data_off += k;
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
	struct snd_job *j = *user;
	if (!j)
		return -EPROTO; /* the receiver never opens streams toward the sender */
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
	} else if (rc != -EAGAIN || fin) {
		snprintf(j->msg, sizeof(j->msg), "malformed acknowledgement from the receiver");
		return -EPROTO;
	}
	return 0;
}

static void snd_closed(void *ctx, int64_t sid, void *user, uint64_t app_error)
{
	struct snd_lane *l = ctx;
	struct sender *s = l->s;
	struct snd_job *j = user;
	if (!j)
		return;
	const struct snd_entry *e = &s->ents[j->idx];
	const char *name = e->rel[0] ? e->rel : ".";
	/* The receiver acks OK only once the entry is in place, so an OK ack is enough even if the stream
	 * then ends with an error (the data path going away before the last close). */
	bool confirmed = j->acked && j->ack_status == NET_STREAM_OK && j->phase == PH_SENT;
	bool requeued = false;
	if (!confirmed && app_error == NET_DP_GONE && !j->acked && j->msg[0] == '\0' &&
	    requeue(s, j->idx, true)) {
		requeued = true;
		/* the data path died under it: it goes again on the next one (the receiver has dropped
		 * whatever part of it had arrived) */
		atomic_fetch_sub_explicit(&l->c.bytes_sent, j->data_off, memory_order_relaxed);
	} else if (confirmed) {
		add(&l->c.bytes_done, entry_size(e));
		if (!on_ssh(l))
			add(&l->c.streams_done_quic, 1);
		/* a range counts the file once, when it is the last range confirmed of a file not failed */
		bool whole =
		    !e->big || (atomic_fetch_sub_explicit(&e->big->left, 1, memory_order_acq_rel) == 1 &&
		                !atomic_load_explicit(&e->big->failed, memory_order_acquire));
		if (whole) {
			add(&l->c.files_done, 1);
			add(on_ssh(l) ? &l->c.files_done_ssh : &l->c.files_done_quic, 1);
			engine_emit(s->o, ENGINE_EV_FILE_DONE, name, NULL, NULL);
		}
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
