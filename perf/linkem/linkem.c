/* qs_linkem: a userspace link emulator. It forwards IP packets between two tun devices, each in its own
 * network namespace, and applies per direction a one-way delay, jitter, loss, duplication, corruption,
 * netem-style reordering and a rate limit behind a bounded tail-drop queue. This kernel has no netem
 * qdisc, so perf/netns.sh and the end-to-end tests use this instead; perf/LINKEM.md has the details.
 *
 * One thread per direction, each owning a preallocated packet pool and two time-ordered rings (the delay
 * line and the "express" line of reordered packets); the main thread only waits for signals. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LK_READ_BATCH        64     /* packets read per wakeup before releasing due ones */
#define LK_MIN_QUEUE_BYTES   262144 /* floor of the default bottleneck queue */
#define LK_DEFAULT_POOL_PKTS 65536  /* packet slots per direction (memory is touched lazily) */
#define LK_MAX_POOL_PKTS     (1u << 22)
#define LK_DEFAULT_MTU       1500
#define LK_MIN_MTU           576
#define LK_MAX_MTU           9000
#define LK_MAX_DELAY_MS      60000.0
#define LK_MAX_RATE_MBIT     1000000.0
#define NS_PER_MS            1000000ULL
#define NS_PER_S             1000000000ULL

enum lk_jitter_dist { LK_JITTER_UNIFORM, LK_JITTER_NORMAL };

/* What one direction does to its packets; rate_mbit 0 means uncapped, queue_bytes 0 the default. */
struct lk_params {
	double delay_ms;
	double jitter_ms;
	double loss_pct;
	double dup_pct;
	double corrupt_pct;
	double reorder_pct;
	double rate_mbit;
	double queue_bytes;
};

/* Counters: written only by the direction's thread, read by the main thread for --stats-file and on
 * SIGUSR1. Relaxed atomics: each counter is one independent number, nothing is ordered by them. */
struct lk_stats {
	_Atomic uint64_t pkts_in, bytes_in, pkts_out, bytes_out;
	_Atomic uint64_t drop_loss, drop_queue, drop_pool, write_errors;
	_Atomic uint64_t duplicated, corrupted, reordered;
};

/* A packet waiting for its release time; the bytes live in the direction's pool slot. */
struct lk_entry {
	uint64_t release_ns;
	uint32_t slot;
	uint32_t len;
};

/* A FIFO whose entries are pushed in non-decreasing release order, so its head is always the next due. */
struct lk_ring {
	struct lk_entry *e;
	uint32_t cap, head, count;
};

struct lk_dir {
	const char *name; /* "a2b" or "b2a" */
	int in_fd, out_fd, stop_fd;
	struct lk_params p;
	enum lk_jitter_dist jitter_dist;
	uint64_t rng;

	uint8_t *slots; /* pool_pkts slots of slot_size bytes, one mmap */
	size_t slots_len;
	uint32_t slot_size, pool_pkts;
	uint32_t *free_slots; /* stack of free slot indices */
	uint32_t nfree;
	struct lk_ring delayq, expressq;
	uint8_t *scratch; /* where packets go when the pool is empty */

	double ns_per_byte; /* 0 when uncapped */
	uint64_t delay_ns, jitter_ns, queue_bytes;
	uint64_t loss_thr, dup_thr, corrupt_thr, reorder_thr;
	uint64_t last_departure_ns; /* when the bottleneck finishes sending what it holds */
	uint64_t last_release_ns;   /* keeps the delay line in order under jitter */

	struct lk_stats st;
	int err; /* negative errno if the thread stopped on its own */
};

struct lk_config {
	const char *ns[2], *tun[2];
	const char *stats_file, *pidfile;
	uint64_t seed;
	unsigned mtu;
	uint32_t pool_pkts;
	enum lk_jitter_dist jitter_dist;
	struct lk_params p[2];
};

#define STAT_ADD(d, field, n)                                                                                \
	atomic_store_explicit(&(d)->st.field,                                                                \
	                      atomic_load_explicit(&(d)->st.field, memory_order_relaxed) + (n),              \
	                      memory_order_relaxed)
#define STAT_GET(d, field) atomic_load_explicit(&(d)->st.field, memory_order_relaxed)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* splitmix64: small, fast, and good enough to decide which packets a link mistreats. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Probability threshold for percent p against a uniform 64-bit draw; 0 draws nothing. */
static uint64_t pct_threshold(double pct)
{
	if (pct <= 0)
		return 0;
	if (pct >= 100)
		return UINT64_MAX;
	return (uint64_t)(pct / 100.0 * 18446744073709551616.0);
}

static int chance(struct lk_dir *d, uint64_t thr)
{
	return thr != 0 && rng_next(&d->rng) < thr;
}

/* The jitter to add to one packet, in ns, signed. Normal is approximated by the sum of 12 uniforms
 * (Irwin-Hall: mean 0, sd 1, bounded at +-6 sd), which needs no libm. */
static int64_t jitter_sample(struct lk_dir *d)
{
	double x = 0;
	int i;

	if (d->jitter_ns == 0)
		return 0;
	if (d->jitter_dist == LK_JITTER_UNIFORM) {
		x = rng_unit(&d->rng) * 2.0 - 1.0;
	} else {
		for (i = 0; i < 12; i++)
			x += rng_unit(&d->rng);
		x -= 6.0;
	}
	return (int64_t)(x * (double)d->jitter_ns);
}

static int ring_init(struct lk_ring *r, uint32_t cap)
{
	r->e = calloc(cap, sizeof(*r->e));
	r->cap = cap;
	r->head = 0;
	r->count = 0;
	return r->e ? 0 : -ENOMEM;
}

static void ring_push(struct lk_ring *r, uint64_t release_ns, uint32_t slot, uint32_t len)
{
	struct lk_entry *e = &r->e[(r->head + r->count) % r->cap];

	/* never full: the ring has one entry per pool slot and every entry holds a slot */
	e->release_ns = release_ns;
	e->slot = slot;
	e->len = len;
	r->count++;
}

static struct lk_entry *ring_head(struct lk_ring *r)
{
	return r->count ? &r->e[r->head] : NULL;
}

static void ring_pop(struct lk_ring *r)
{
	r->head = (r->head + 1) % r->cap;
	r->count--;
}

static uint8_t *slot_ptr(struct lk_dir *d, uint32_t slot)
{
	return d->slots + (size_t)slot * d->slot_size;
}

static void slot_free(struct lk_dir *d, uint32_t slot)
{
	d->free_slots[d->nfree++] = slot;
}

/* Flips one random bit past the IP header (the kernel then drops UDP/TCP packets on their checksum,
 * as a real corrupted packet would be). Returns 1 if it flipped one. */
static int corrupt_packet(struct lk_dir *d, uint8_t *pkt, uint32_t len)
{
	uint32_t hl = 0, pos;

	if (len >= 20 && (pkt[0] >> 4) == 4)
		hl = (uint32_t)(pkt[0] & 0x0f) * 4;
	else if (len >= 40 && (pkt[0] >> 4) == 6)
		hl = 40;
	if (hl < 20 || len <= hl)
		return 0;
	pos = hl + (uint32_t)(rng_next(&d->rng) % (len - hl));
	pkt[pos] ^= (uint8_t)(1u << (rng_next(&d->rng) % 8));
	return 1;
}

/* Puts one copy of a packet through the bottleneck queue and onto the delay (or express) line. */
static void schedule(struct lk_dir *d, uint32_t slot, uint32_t len, uint64_t now)
{
	uint64_t departure = now, release;
	int64_t rel;

	if (d->ns_per_byte > 0) {
		uint64_t backlog = 0, start;

		if (d->last_departure_ns > now)
			backlog = (uint64_t)((double)(d->last_departure_ns - now) / d->ns_per_byte);
		if (backlog + len > d->queue_bytes) {
			STAT_ADD(d, drop_queue, 1);
			slot_free(d, slot);
			return;
		}
		start = d->last_departure_ns > now ? d->last_departure_ns : now;
		departure = start + (uint64_t)((double)len * d->ns_per_byte);
		d->last_departure_ns = departure;
	}
	if (chance(d, d->reorder_thr)) {
		/* netem's reorder: this packet skips the delay line and leaves as soon as it is serialized */
		STAT_ADD(d, reordered, 1);
		ring_push(&d->expressq, departure, slot, len);
		return;
	}
	rel = (int64_t)(departure + d->delay_ns) + jitter_sample(d);
	release = rel < (int64_t)departure ? departure : (uint64_t)rel;
	if (release < d->last_release_ns)
		release = d->last_release_ns; /* jitter never reorders by itself */
	d->last_release_ns = release;
	ring_push(&d->delayq, release, slot, len);
}

/* Decides the fate of a packet just read into slot. */
static void handle_packet(struct lk_dir *d, uint32_t slot, uint32_t len, uint64_t now)
{
	uint32_t copy;

	STAT_ADD(d, pkts_in, 1);
	STAT_ADD(d, bytes_in, len);
	if (chance(d, d->loss_thr)) {
		STAT_ADD(d, drop_loss, 1);
		slot_free(d, slot);
		return;
	}
	if (chance(d, d->dup_thr)) {
		if (d->nfree) {
			copy = d->free_slots[--d->nfree];
			memcpy(slot_ptr(d, copy), slot_ptr(d, slot), len);
			STAT_ADD(d, duplicated, 1);
			schedule(d, copy, len, now);
		} else {
			STAT_ADD(d, drop_pool, 1);
		}
	}
	if (chance(d, d->corrupt_thr) && corrupt_packet(d, slot_ptr(d, slot), len))
		STAT_ADD(d, corrupted, 1);
	schedule(d, slot, len, now);
}

/* Writes out every packet whose time has come, earliest first across both lines. */
static void release_due(struct lk_dir *d, uint64_t now)
{
	for (;;) {
		struct lk_entry *a = ring_head(&d->delayq), *b = ring_head(&d->expressq), *e;
		struct lk_ring *r;
		ssize_t n;

		if (a && (!b || a->release_ns <= b->release_ns)) {
			e = a;
			r = &d->delayq;
		} else {
			e = b;
			r = &d->expressq;
		}
		if (!e || e->release_ns > now)
			return;
		n = write(d->out_fd, slot_ptr(d, e->slot), e->len);
		if (n == (ssize_t)e->len) {
			STAT_ADD(d, pkts_out, 1);
			STAT_ADD(d, bytes_out, e->len);
		} else {
			/* the far interface is down or out of memory: the packet is lost, as on a wire */
			STAT_ADD(d, write_errors, 1);
		}
		slot_free(d, e->slot);
		ring_pop(r);
	}
}

/* Reads up to LK_READ_BATCH packets. Returns 0, or a negative errno if the tun device failed. */
static int read_batch(struct lk_dir *d)
{
	int i;

	for (i = 0; i < LK_READ_BATCH; i++) {
		uint32_t slot = UINT32_MAX;
		uint8_t *buf = d->scratch;
		ssize_t n;

		if (d->nfree) {
			slot = d->free_slots[--d->nfree];
			buf = slot_ptr(d, slot);
		}
		n = read(d->in_fd, buf, d->slot_size);
		if (n <= 0) {
			int e = n == 0 ? EIO : errno;

			if (slot != UINT32_MAX)
				slot_free(d, slot);
			if (e == EAGAIN || e == EINTR)
				return 0;
			return -e;
		}
		if (slot == UINT32_MAX) {
			STAT_ADD(d, pkts_in, 1);
			STAT_ADD(d, bytes_in, (uint64_t)n);
			STAT_ADD(d, drop_pool, 1);
			continue;
		}
		handle_packet(d, slot, (uint32_t)n, now_ns());
	}
	return 0;
}

static uint64_t next_release(struct lk_dir *d)
{
	struct lk_entry *a = ring_head(&d->delayq), *b = ring_head(&d->expressq);
	uint64_t t = UINT64_MAX;

	if (a)
		t = a->release_ns;
	if (b && b->release_ns < t)
		t = b->release_ns;
	return t;
}

static void *dir_thread(void *arg)
{
	struct lk_dir *d = arg;
	struct pollfd pfd[2] = {{.fd = d->in_fd, .events = POLLIN}, {.fd = d->stop_fd, .events = POLLIN}};

	/* ppoll wakes on time to within a few microseconds instead of the default 50 us slack */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	for (;;) {
		uint64_t now = now_ns(), next;
		struct timespec ts, *tsp = NULL;
		int rc;

		release_due(d, now);
		next = next_release(d);
		if (next != UINT64_MAX) {
			uint64_t wait = next > now ? next - now : 0;

			ts.tv_sec = (time_t)(wait / NS_PER_S);
			ts.tv_nsec = (long)(wait % NS_PER_S);
			tsp = &ts;
		}
		rc = ppoll(pfd, 2, tsp, NULL);
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			d->err = -errno;
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			d->err = -EIO;
			break;
		}
		if (pfd[0].revents & POLLIN) {
			rc = read_batch(d);
			if (rc < 0) {
				d->err = rc;
				break;
			}
		}
	}
	if (d->err) {
		fprintf(stderr, "qs_linkem: %s: stopping: %s\n", d->name, strerror(-d->err));
		/* tell the main thread, which waits for signals */
		kill(getpid(), SIGUSR2);
	}
	return NULL;
}

static int dir_init(struct lk_dir *d, const char *name, const struct lk_config *c, int idx, double rtt_ms)
{
	uint32_t i;
	double rate_Bps;

	d->name = name;
	d->p = c->p[idx];
	d->jitter_dist = c->jitter_dist;
	d->rng = c->seed ^ (idx ? 0xb2ab2ab2ab2ab2aULL : 0xa2ba2ba2ba2ba2bULL);
	d->slot_size = (c->mtu + 63u) & ~63u;
	d->pool_pkts = c->pool_pkts;
	d->slots_len = (size_t)d->slot_size * d->pool_pkts;
	d->slots = mmap(NULL, d->slots_len, PROT_READ | PROT_WRITE,
	                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (d->slots == MAP_FAILED) {
		d->slots = NULL;
		return -ENOMEM;
	}
	d->free_slots = calloc(d->pool_pkts, sizeof(*d->free_slots));
	d->scratch = malloc(d->slot_size);
	if (!d->free_slots || !d->scratch)
		return -ENOMEM;
	for (i = 0; i < d->pool_pkts; i++)
		d->free_slots[i] = d->pool_pkts - 1 - i;
	d->nfree = d->pool_pkts;
	if (ring_init(&d->delayq, d->pool_pkts) || ring_init(&d->expressq, d->pool_pkts))
		return -ENOMEM;

	rate_Bps = d->p.rate_mbit * 1e6 / 8.0;
	d->ns_per_byte = d->p.rate_mbit > 0 ? 1e9 / rate_Bps : 0;
	d->delay_ns = (uint64_t)(d->p.delay_ms * (double)NS_PER_MS);
	d->jitter_ns = (uint64_t)(d->p.jitter_ms * (double)NS_PER_MS);
	if (d->p.queue_bytes > 0) {
		d->queue_bytes = (uint64_t)d->p.queue_bytes;
	} else {
		/* 1.5 bandwidth-delay products at the cap, over the round trip both directions make */
		double bdp = rate_Bps * rtt_ms / 1000.0 * 1.5;

		d->queue_bytes = bdp > LK_MIN_QUEUE_BYTES ? (uint64_t)bdp : LK_MIN_QUEUE_BYTES;
	}
	d->loss_thr = pct_threshold(d->p.loss_pct);
	d->dup_thr = pct_threshold(d->p.dup_pct);
	d->corrupt_thr = pct_threshold(d->p.corrupt_pct);
	d->reorder_thr = pct_threshold(d->p.reorder_pct);
	return 0;
}

static void dir_release(struct lk_dir *d)
{
	if (d->slots)
		munmap(d->slots, d->slots_len);
	free(d->free_slots);
	free(d->scratch);
	free(d->delayq.e);
	free(d->expressq.e);
}

/* Opens tun device `name` inside the network namespace /var/run/netns/<ns> (or the current one when ns
 * is NULL), sets its MTU, and comes back to the namespace it started in. Returns the fd or -errno. */
static int tun_open_in(const char *ns, const char *name, unsigned mtu)
{
	char path[PATH_MAX];
	struct ifreq ifr;
	int self = -1, nsfd = -1, fd = -1, sock = -1, rc, moved = 0;

	if (strlen(name) >= IFNAMSIZ) {
		fprintf(stderr, "qs_linkem: interface name too long: %s\n", name);
		return -ENAMETOOLONG;
	}
	if (ns) {
		if (strchr(ns, '/') ||
		    snprintf(path, sizeof(path), "/var/run/netns/%s", ns) >= (int)sizeof(path)) {
			fprintf(stderr, "qs_linkem: bad namespace name: %s\n", ns);
			return -EINVAL;
		}
		self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
		nsfd = open(path, O_RDONLY | O_CLOEXEC);
		if (self < 0 || nsfd < 0) {
			rc = -errno;
			fprintf(stderr, "qs_linkem: open %s: %s\n", self < 0 ? "/proc/self/ns/net" : path,
			        strerror(errno));
			goto out;
		}
		if (setns(nsfd, CLONE_NEWNET) < 0) {
			rc = -errno;
			fprintf(stderr, "qs_linkem: setns %s: %s\n", path, strerror(errno));
			goto out;
		}
		moved = 1;
	}
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		fprintf(stderr, "qs_linkem: open /dev/net/tun: %s\n", strerror(errno));
		goto out;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	memcpy(ifr.ifr_name, name, strlen(name) + 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		rc = -errno;
		fprintf(stderr, "qs_linkem: TUNSETIFF %s: %s\n", name, strerror(errno));
		goto out;
	}
	sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ifr.ifr_mtu = (int)mtu;
	if (sock < 0 || ioctl(sock, SIOCSIFMTU, &ifr) < 0) {
		rc = -errno;
		fprintf(stderr, "qs_linkem: set MTU of %s: %s\n", name, strerror(errno));
		goto out;
	}
	rc = fd;
	fd = -1;
out:
	if (moved && setns(self, CLONE_NEWNET) < 0) {
		/* staying in the wrong namespace would open the next device there: give up */
		fprintf(stderr, "qs_linkem: setns back: %s\n", strerror(errno));
		if (rc >= 0)
			close(rc);
		rc = -EIO;
	}
	if (sock >= 0)
		close(sock);
	if (fd >= 0)
		close(fd);
	if (nsfd >= 0)
		close(nsfd);
	if (self >= 0)
		close(self);
	return rc;
}

static void write_dir_json(FILE *f, struct lk_dir *d)
{
	fprintf(f,
	        "  \"%s\": {\"pkts_in\": %llu, \"bytes_in\": %llu, \"pkts_out\": %llu, \"bytes_out\": %llu, "
	        "\"drop_loss\": %llu, \"drop_queue\": %llu, \"drop_pool\": %llu, \"write_errors\": %llu, "
	        "\"duplicated\": %llu, \"corrupted\": %llu, \"reordered\": %llu,\n"
	        "    \"params\": {\"delay_ms\": %g, \"jitter_ms\": %g, \"loss_pct\": %g, \"dup_pct\": %g, "
	        "\"corrupt_pct\": %g, \"reorder_pct\": %g, \"rate_mbit\": %g, \"queue_bytes\": %llu}}",
	        d->name, (unsigned long long)STAT_GET(d, pkts_in), (unsigned long long)STAT_GET(d, bytes_in),
	        (unsigned long long)STAT_GET(d, pkts_out), (unsigned long long)STAT_GET(d, bytes_out),
	        (unsigned long long)STAT_GET(d, drop_loss), (unsigned long long)STAT_GET(d, drop_queue),
	        (unsigned long long)STAT_GET(d, drop_pool), (unsigned long long)STAT_GET(d, write_errors),
	        (unsigned long long)STAT_GET(d, duplicated), (unsigned long long)STAT_GET(d, corrupted),
	        (unsigned long long)STAT_GET(d, reordered), d->p.delay_ms, d->p.jitter_ms, d->p.loss_pct,
	        d->p.dup_pct, d->p.corrupt_pct, d->p.reorder_pct, d->p.rate_mbit,
	        (unsigned long long)d->queue_bytes);
}

/* Writes the counters as JSON to path, through a temporary file and rename so readers never see half. */
static int write_stats(const char *path, const struct lk_config *c, struct lk_dir *dirs, const char *state)
{
	char tmp[PATH_MAX];
	FILE *f;
	int rc = 0;

	if (!path)
		return 0;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "we");
	if (!f) {
		fprintf(stderr, "qs_linkem: %s: %s\n", tmp, strerror(errno));
		return -errno;
	}
	fprintf(f, "{\n  \"state\": \"%s\", \"seed\": %llu, \"mtu\": %u, \"jitter_dist\": \"%s\",\n", state,
	        (unsigned long long)c->seed, c->mtu,
	        c->jitter_dist == LK_JITTER_NORMAL ? "normal" : "uniform");
	write_dir_json(f, &dirs[0]);
	fputs(",\n", f);
	write_dir_json(f, &dirs[1]);
	fputs("\n}\n", f);
	if (fflush(f) != 0 || ferror(f))
		rc = -EIO;
	if (fclose(f) != 0 && rc == 0)
		rc = -EIO;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		fprintf(stderr, "qs_linkem: writing %s failed\n", path);
		unlink(tmp);
	}
	return rc;
}

static void usage(FILE *f)
{
	fputs("usage: qs_linkem --ns-a NS --tun-a NAME --ns-b NS --tun-b NAME [options]\n"
	      "Forwards IP packets between two tun devices and emulates a link on the way.\n"
	      "Per-direction options (both directions; prefix a2b- or b2a- for one, e.g. --a2b-loss 1):\n"
	      "  --delay-ms D      one-way delay in ms (default 0)\n"
	      "  --jitter-ms J     jitter in ms: uniform +-J, or normal with sd J (order is kept)\n"
	      "  --loss P          random loss, percent\n"
	      "  --dup P           duplication, percent\n"
	      "  --corrupt P       one random bit flipped past the IP header, percent\n"
	      "  --reorder P       percent of packets that skip the delay (netem-style reordering)\n"
	      "  --rate-mbit R     rate limit in Mbit/s (0 = uncapped)\n"
	      "  --queue-bytes N   bottleneck queue (default max(1.5 x rate x RTT, 256 KiB)), tail drop\n"
	      "Other options:\n"
	      "  --jitter-dist uniform|normal   (default uniform)\n"
	      "  --seed S          PRNG seed (default 1)\n"
	      "  --mtu N           MTU set on both tun devices (default 1500)\n"
	      "  --pool-pkts N     packet slots per direction (default 65536)\n"
	      "  --stats-file F    counters as JSON, written on exit and on SIGUSR1\n"
	      "  --pidfile F       written once both devices are open (a readiness signal)\n"
	      "Without --ns-a/--ns-b the device is made in the current namespace.\n",
	      f);
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi)) {
		fprintf(stderr, "qs_linkem: --%s: expected a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
		fprintf(stderr, "qs_linkem: --%s: expected an integer in [%llu, %llu], got '%s'\n", opt,
		        (unsigned long long)lo, (unsigned long long)hi, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* The per-direction options: name, offset in struct lk_params, range. */
static const struct {
	const char *name;
	size_t off;
	double lo, hi;
} dir_opts[] = {
    {"delay-ms", offsetof(struct lk_params, delay_ms), 0, LK_MAX_DELAY_MS},
    {"jitter-ms", offsetof(struct lk_params, jitter_ms), 0, LK_MAX_DELAY_MS},
    {"loss", offsetof(struct lk_params, loss_pct), 0, 100},
    {"dup", offsetof(struct lk_params, dup_pct), 0, 100},
    {"corrupt", offsetof(struct lk_params, corrupt_pct), 0, 100},
    {"reorder", offsetof(struct lk_params, reorder_pct), 0, 100},
    {"rate-mbit", offsetof(struct lk_params, rate_mbit), 0, LK_MAX_RATE_MBIT},
    {"queue-bytes", offsetof(struct lk_params, queue_bytes), 1, 1e12},
};

/* One option. pass 0 takes everything but a2b-/b2a- overrides, pass 1 only those, so an override wins
 * wherever it stands on the command line. Returns 0 or -EINVAL. */
static int apply_option(struct lk_config *c, const char *name, const char *val, int pass)
{
	int mask = 3;
	size_t i;
	uint64_t u;

	if (strncmp(name, "a2b-", 4) == 0 || strncmp(name, "b2a-", 4) == 0) {
		mask = name[0] == 'a' ? 1 : 2;
		name += 4;
	}
	for (i = 0; i < sizeof(dir_opts) / sizeof(dir_opts[0]); i++) {
		double v;
		int k;

		if (strcmp(name, dir_opts[i].name) != 0)
			continue;
		if ((mask == 3) != (pass == 0))
			return 0;
		if (parse_double(name, val, dir_opts[i].lo, dir_opts[i].hi, &v))
			return -EINVAL;
		for (k = 0; k < 2; k++)
			if (mask & (1 << k))
				*(double *)((char *)&c->p[k] + dir_opts[i].off) = v;
		return 0;
	}
	if (mask != 3) {
		fprintf(stderr, "qs_linkem: unknown option --%s%s\n", mask == 1 ? "a2b-" : "b2a-", name);
		return -EINVAL;
	}
	if (pass != 0)
		return 0;
	if (strcmp(name, "ns-a") == 0)
		c->ns[0] = val;
	else if (strcmp(name, "ns-b") == 0)
		c->ns[1] = val;
	else if (strcmp(name, "tun-a") == 0)
		c->tun[0] = val;
	else if (strcmp(name, "tun-b") == 0)
		c->tun[1] = val;
	else if (strcmp(name, "stats-file") == 0)
		c->stats_file = val;
	else if (strcmp(name, "pidfile") == 0)
		c->pidfile = val;
	else if (strcmp(name, "seed") == 0)
		return parse_u64(name, val, 0, UINT64_MAX, &c->seed);
	else if (strcmp(name, "mtu") == 0) {
		if (parse_u64(name, val, LK_MIN_MTU, LK_MAX_MTU, &u))
			return -EINVAL;
		c->mtu = (unsigned)u;
	} else if (strcmp(name, "pool-pkts") == 0) {
		if (parse_u64(name, val, 16, LK_MAX_POOL_PKTS, &u))
			return -EINVAL;
		c->pool_pkts = (uint32_t)u;
	} else if (strcmp(name, "jitter-dist") == 0) {
		if (strcmp(val, "uniform") == 0)
			c->jitter_dist = LK_JITTER_UNIFORM;
		else if (strcmp(val, "normal") == 0)
			c->jitter_dist = LK_JITTER_NORMAL;
		else {
			fprintf(stderr, "qs_linkem: --jitter-dist: uniform or normal, got '%s'\n", val);
			return -EINVAL;
		}
	} else {
		fprintf(stderr, "qs_linkem: unknown option --%s\n", name);
		return -EINVAL;
	}
	return 0;
}

/* Returns 0, 1 for --help, or -EINVAL. */
static int parse_args(int argc, char **argv, struct lk_config *c)
{
	int pass, i;

	for (pass = 0; pass < 2; pass++) {
		for (i = 1; i < argc; i++) {
			char name[64];
			const char *a = argv[i], *eq, *val;
			size_t n;

			if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
				return 1;
			if (strncmp(a, "--", 2) != 0) {
				fprintf(stderr, "qs_linkem: unexpected argument '%s'\n", a);
				return -EINVAL;
			}
			a += 2;
			eq = strchr(a, '=');
			n = eq ? (size_t)(eq - a) : strlen(a);
			if (n == 0 || n >= sizeof(name)) {
				fprintf(stderr, "qs_linkem: bad option '%s'\n", argv[i]);
				return -EINVAL;
			}
			memcpy(name, a, n);
			name[n] = '\0';
			if (eq) {
				val = eq + 1;
			} else if (i + 1 < argc) {
				val = argv[++i];
			} else {
				fprintf(stderr, "qs_linkem: --%s needs a value\n", name);
				return -EINVAL;
			}
			if (apply_option(c, name, val, pass))
				return -EINVAL;
		}
	}
	if (!c->tun[0] || !c->tun[1]) {
		fprintf(stderr, "qs_linkem: --tun-a and --tun-b are required\n");
		return -EINVAL;
	}
	return 0;
}

static int write_pidfile(const char *path)
{
	char tmp[PATH_MAX];
	FILE *f;
	int rc = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) != 0)
		rc = -EIO;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	return rc;
}

int main(int argc, char **argv)
{
	struct lk_config c = {.seed = 1, .mtu = LK_DEFAULT_MTU, .pool_pkts = LK_DEFAULT_POOL_PKTS};
	struct lk_dir dirs[2];
	pthread_t th[2];
	int started = 0, fds[2] = {-1, -1}, stop_fd = -1, rc, ret = 1, i, sig;
	sigset_t set;
	uint64_t one = 1;
	double rtt_ms;

	memset(dirs, 0, sizeof(dirs));
	rc = parse_args(argc, argv, &c);
	if (rc > 0) {
		usage(stdout);
		return 0;
	}
	if (rc < 0) {
		fprintf(stderr, "qs_linkem: try --help\n");
		return 2;
	}
	/* every thread inherits this mask; the main thread takes the signals with sigwait */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	rtt_ms = c.p[0].delay_ms + c.p[1].delay_ms;
	if (dir_init(&dirs[0], "a2b", &c, 0, rtt_ms) || dir_init(&dirs[1], "b2a", &c, 1, rtt_ms)) {
		fprintf(stderr, "qs_linkem: out of memory for %u packet slots\n", c.pool_pkts);
		goto out;
	}
	for (i = 0; i < 2; i++) {
		fds[i] = tun_open_in(c.ns[i], c.tun[i], c.mtu);
		if (fds[i] < 0)
			goto out;
	}
	stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (stop_fd < 0) {
		perror("qs_linkem: eventfd");
		goto out;
	}
	dirs[0].in_fd = fds[0];
	dirs[0].out_fd = fds[1];
	dirs[1].in_fd = fds[1];
	dirs[1].out_fd = fds[0];
	for (i = 0; i < 2; i++) {
		dirs[i].stop_fd = stop_fd;
		rc = pthread_create(&th[i], NULL, dir_thread, &dirs[i]);
		if (rc) {
			fprintf(stderr, "qs_linkem: pthread_create: %s\n", strerror(rc));
			goto stop;
		}
		started++;
	}
	if (c.pidfile && (rc = write_pidfile(c.pidfile)) < 0) {
		fprintf(stderr, "qs_linkem: pidfile %s: %s\n", c.pidfile, strerror(-rc));
		goto stop;
	}
	ret = 0;
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			write_stats(c.stats_file, &c, dirs, "running");
			continue;
		}
		if (sig == SIGUSR2)
			ret = 1; /* a direction failed */
		break;
	}
stop:
	if (stop_fd >= 0 && write(stop_fd, &one, sizeof(one)) != sizeof(one))
		perror("qs_linkem: eventfd write");
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (started < 2)
		ret = 1;
	if (write_stats(c.stats_file, &c, dirs, ret ? "failed" : "stopped") < 0)
		ret = 1;
	if (c.pidfile)
		unlink(c.pidfile);
out:
	if (stop_fd >= 0)
		close(stop_fd);
	for (i = 0; i < 2; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		dir_release(&dirs[i]);
	}
	return ret;
}
