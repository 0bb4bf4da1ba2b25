/* Unit tests for net/quic.c: both ends of a QUIC connection in one process on 127.0.0.1, driven by one
 * poll loop. PSK handshake (right secret, wrong secret, wrong identity), a 3000-stream transfer with
 * stream credit replenished, a 64 MiB stream (throughput printed), stream reset, idle timeout, close. */
#include "net/quic.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                                          \
	do {                                                                                                 \
		checks++;                                                                                    \
		if (!(cond)) {                                                                               \
			failures++;                                                                          \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);             \
		}                                                                                            \
	} while (0)

#define CHECK_EQ(a, b)                                                                                       \
	do {                                                                                                 \
		long long a_ = (long long)(a), b_ = (long long)(b);                                          \
		checks++;                                                                                    \
		if (a_ != b_) {                                                                              \
			failures++;                                                                          \
			fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a,  \
			        a_, #b, b_);                                                                 \
		}                                                                                            \
	} while (0)

#define ID       "conn-7f3a"
#define NSMALL   3000u
#define SMALLMAX (200u * 1024u)
#define BIGLEN   (64ull << 20)
#define SEED     UINT64_C(0x9e3779b97f4a7c15)
#define REPLY(i) ((uint8_t)(((i)&0xff) ^ 0x5a))

static const uint8_t key_good[NET_QUIC_PSK_LEN] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                                   12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                                   23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static uint8_t key_bad[NET_QUIC_PSK_LEN];

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t mix(uint64_t x)
{
	/* splitmix64 */
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static uint64_t payload_len(uint32_t idx)
{
	return idx == NSMALL ? BIGLEN : mix(SEED ^ idx) % (SMALLMAX + 1);
}

/* byte off.. of stream idx's payload */
static void gen(uint32_t idx, uint64_t off, uint8_t *buf, size_t n)
{
	uint64_t base = SEED ^ ((uint64_t)idx << 40);
	size_t i = 0;

	while (i < n && ((off + i) & 7)) {
		buf[i] = (uint8_t)(mix(base ^ ((off + i) >> 3)) >> (((off + i) & 7) * 8));
		i++;
	}
	for (; i + 8 <= n; i += 8) {
		uint64_t w = mix(base ^ ((off + i) >> 3));
		memcpy(&buf[i], &w, 8); /* little-endian here; both ends agree since they run this code */
	}
	for (; i < n; i++)
		buf[i] = (uint8_t)(mix(base ^ ((off + i) >> 3)) >> (((off + i) & 7) * 8));
}

/* ---- the loop that drives both ends ---- */

struct end {
	struct net_quic *q;
	int rc; /* first error net_quic_process returned */
	struct qs_err err;
	int paused; /* not processed (simulates a peer that stopped) */
};

/* Runs both ends until done(arg) or deadline; tick(arg) runs every round. Returns 1 if done. */
static int run(struct end *a, struct end *b, int (*done)(void *), void (*tick)(void *), void *arg,
               unsigned limit_ms)
{
	uint64_t deadline = now_ms() + limit_ms;
	struct end *e[2] = {a, b};

	for (;;) {
		struct pollfd pfd[2];
		int n = 0, t = 50, i;

		if (tick)
			tick(arg);
		if (done && done(arg))
			return 1;
		if (now_ms() > deadline)
			return 0;
		for (i = 0; i < 2; i++) {
			int to;
			if (!e[i] || !e[i]->q || e[i]->rc || e[i]->paused)
				continue;
			pfd[n].fd = net_quic_fd(e[i]->q);
			pfd[n].events = POLLIN;
			n++;
			to = net_quic_timeout_ms(e[i]->q);
			if (to >= 0 && to < t)
				t = to;
		}
		if (n == 0 && !done)
			return 1;
		(void)poll(pfd, (nfds_t)n, t);
		for (i = 0; i < 2; i++) {
			if (!e[i] || !e[i]->q || e[i]->rc || e[i]->paused)
				continue;
			e[i]->rc = net_quic_process(e[i]->q, &e[i]->err);
		}
	}
}

/* ---- callbacks that do nothing much (handshake tests) ---- */

struct plain {
	int closed;
	uint64_t last_app_error;
	int recv_calls;
	int reset_on_recv; /* errno returned by recv */
	size_t fill_left;  /* bytes fill() produces before sleeping (or fin, with fin_at_end) */
	int fin_at_end;
	size_t recv_bytes;
	int recv_fin;
	struct net_quic **qp;
};

static int plain_recv(void *ctx, int64_t sid, void **user, const uint8_t *data, size_t len, int fin)
{
	struct plain *p = ctx;
	(void)sid;
	(void)user;
	(void)data;
	(void)len;
	(void)fin;
	p->recv_calls++;
	p->recv_bytes += len;
	p->recv_fin |= fin;
	return p->reset_on_recv ? -p->reset_on_recv : 0;
}

static ssize_t plain_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin)
{
	struct plain *p = ctx;
	size_t n = cap < p->fill_left ? cap : p->fill_left;
	(void)sid;
	(void)user;
	memset(buf, 'x', n);
	p->fill_left -= n;
	*fin = p->fin_at_end && p->fill_left == 0;
	return (ssize_t)n;
}

static void plain_closed(void *ctx, int64_t sid, void *user, uint64_t app_error)
{
	struct plain *p = ctx;
	(void)sid;
	(void)user;
	p->closed++;
	p->last_app_error = app_error;
}

static struct net_quic_cb plain_cb(struct plain *p)
{
	struct net_quic_cb cb = {p, plain_recv, plain_fill, plain_closed};
	return cb;
}

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return a;
}

static int both_up(void *arg)
{
	struct end **e = arg;
	return net_quic_handshake_done(e[0]->q) && net_quic_handshake_done(e[1]->q);
}

static int client_failed(void *arg)
{
	struct end **e = arg;
	return e[1]->rc != 0;
}

static int server_failed(void *arg)
{
	struct end **e = arg;
	return e[0]->rc != 0;
}

static int client_new(struct end *c, uint16_t port, const char *id, const uint8_t *key,
                      const struct net_quic_cfg *cfg, struct net_quic_cb *cb)
{
	struct sockaddr_in a = loopback(port);
	memset(c, 0, sizeof(*c));
	return net_quic_client_new((struct sockaddr *)&a, sizeof(a), id, key, cfg, cb, &c->q, &c->err);
}

static int e_done(void *arg)
{
	struct plain **p = arg;
	return p[0]->closed && p[1]->closed;
}

/* (a) the right secret; a clean close is seen by the peer */
static void test_handshake_ok(void)
{
	struct plain ps = {0}, pc = {0};
	struct net_quic_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	uint16_t port = 0;
	double t0;

	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	CHECK(port != 0);
	t0 = now_s();
	CHECK_EQ(client_new(&c, port, ID, key_good, NULL, &ccb), 0);
	CHECK(run(&s, &c, both_up, NULL, e, 5000));
	printf("handshake: %.2f ms\n", (now_s() - t0) * 1e3);
	CHECK(net_quic_handshake_done(s.q));
	CHECK(net_quic_handshake_done(c.q));
	CHECK_EQ(net_quic_rejected(s.q), 0);
	CHECK_EQ(s.rc, 0);
	CHECK_EQ(c.rc, 0);

	/* the server opens a stream too: 300 KB and fin; the client answers with fin alone */
	{
		struct plain *pp[2] = {&ps, &pc};
		int64_t sid;
		ps.fill_left = 300000;
		ps.fin_at_end = 1;
		pc.fin_at_end = 1;
		CHECK_EQ(net_quic_stream_open(s.q, &ps, &sid), 0);
		CHECK_EQ(sid & 3, 1); /* server-initiated bidirectional */
		CHECK(run(&s, &c, e_done, NULL, pp, 5000));
		CHECK_EQ(pc.recv_bytes, 300000);
		CHECK(pc.recv_fin);
		CHECK(ps.recv_fin);
		CHECK_EQ(ps.closed, 1);
		CHECK_EQ(ps.last_app_error, 0);
		CHECK_EQ(pc.closed, 1);
		CHECK_EQ(pc.last_app_error, 0);
	}

	CHECK_EQ(net_quic_close(c.q), 0);
	c.paused = 1;
	CHECK(run(&s, &c, server_failed, NULL, e, 3000));
	CHECK_EQ(s.rc, -ECONNABORTED);
	CHECK(strstr(s.err.msg, "peer closed the QUIC connection") != NULL);
	printf("server after client close: %s\n", s.err.msg);
	net_quic_free(c.q);
	net_quic_free(s.q);
}

/* (b) a wrong secret is refused and counted; the same port then accepts the right one */
static void test_wrong_secret_then_right(void)
{
	double t0;
	struct plain ps = {0}, pc = {0};
	struct net_quic_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	uint16_t port = 0;

	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	CHECK_EQ(client_new(&c, port, ID, key_bad, NULL, &ccb), 0);
	CHECK(run(&s, &c, client_failed, NULL, e, 5000));
	CHECK_EQ(c.rc, -ECONNREFUSED);
	CHECK(strstr(c.err.msg, "QUIC handshake refused") != NULL);
	printf("wrong secret: %s\n", c.err.msg);
	CHECK(!net_quic_handshake_done(c.q));
	CHECK(!net_quic_handshake_done(s.q));
	CHECK_EQ(net_quic_rejected(s.q), 1);
	CHECK_EQ(s.rc, 0);
	net_quic_free(c.q);

	t0 = now_s();
	CHECK_EQ(client_new(&c, port, ID, key_good, NULL, &ccb), 0);
	CHECK(run(&s, &c, both_up, NULL, e, 5000));
	printf("right secret on the same port: handshake %.2f ms\n", (now_s() - t0) * 1e3);
	CHECK(net_quic_handshake_done(c.q));
	CHECK(net_quic_handshake_done(s.q));
	CHECK_EQ(net_quic_rejected(s.q), 1);
	net_quic_free(c.q);
	net_quic_free(s.q);
}

/* (c) the right key under another identity is refused */
static void test_wrong_id(void)
{
	struct plain ps = {0}, pc = {0};
	struct net_quic_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	uint16_t port = 0;

	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	CHECK_EQ(client_new(&c, port, "conn-other", key_good, NULL, &ccb), 0);
	CHECK(run(&s, &c, client_failed, NULL, e, 5000));
	CHECK_EQ(c.rc, -ECONNREFUSED);
	printf("wrong id: %s\n", c.err.msg);
	CHECK_EQ(net_quic_rejected(s.q), 1);
	CHECK(!net_quic_handshake_done(s.q));
	net_quic_free(c.q);
	net_quic_free(s.q);
}

/* ---- (d) the transfer ---- */

struct creq {
	uint32_t idx;
	int64_t sid;
	uint64_t len, off;
	int reply, reply_fin, closed;
};

struct sreq {
	uint32_t idx;
	uint64_t len, off;
	int fin, replied, bad;
};

struct xfer {
	struct net_quic *cq, *sq;
	struct creq req[NSMALL + 1];
	unsigned s_verified; /* streams whose every byte matched the generator, length included */
	uint32_t next;       /* next stream to open */
	uint32_t limit;      /* open up to here */
	unsigned c_closed, c_bad_close, s_closed, s_bad_close, s_bad_data, c_bad_reply, s_done;
	uint8_t scratch[64 * 1024];
	struct end *s, *c;
};

static ssize_t c_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin)
{
	struct creq *r = user;
	uint64_t left = r->len - r->off;
	size_t n = left < cap ? (size_t)left : cap;
	(void)ctx;
	(void)sid;
	gen(r->idx, r->off, buf, n);
	r->off += n;
	*fin = r->off == r->len;
	return (ssize_t)n;
}

static int c_recv(void *ctx, int64_t sid, void **user, const uint8_t *data, size_t len, int fin)
{
	struct xfer *x = ctx;
	struct creq *r = *user;
	(void)sid;
	if (!r || len > 1 || (len == 1 && (r->reply || data[0] != REPLY(r->idx)))) {
		x->c_bad_reply++;
		return 0;
	}
	r->reply += (int)len;
	if (fin)
		r->reply_fin = 1;
	return 0;
}

static void c_closed(void *ctx, int64_t sid, void *user, uint64_t app_error)
{
	struct xfer *x = ctx;
	struct creq *r = user;
	(void)sid;
	x->c_closed++;
	if (app_error != 0 || !r || r->off != r->len || r->reply != 1 || !r->reply_fin) {
		x->c_bad_close++;
		if (x->c_bad_close < 5)
			fprintf(stderr, "client stream %" PRId64 " closed badly: app_error %" PRIu64 "\n",
			        sid, app_error);
	}
	if (r)
		r->closed = 1;
}

static int s_recv(void *ctx, int64_t sid, void **user, const uint8_t *data, size_t len, int fin)
{
	struct xfer *x = ctx;
	struct sreq *r = *user;

	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return -ENOMEM;
		r->idx = (uint32_t)(sid >> 2); /* the client opens its streams in index order */
		r->len = r->idx <= NSMALL ? payload_len(r->idx) : 0;
		*user = r;
	}
	if (r->off + len > r->len) {
		r->bad = 1;
	} else {
		size_t done = 0;
		while (done < len) {
			size_t n = len - done < sizeof(x->scratch) ? len - done : sizeof(x->scratch);
			gen(r->idx, r->off + done, x->scratch, n);
			if (memcmp(x->scratch, data + done, n) != 0)
				r->bad = 1;
			done += n;
		}
	}
	r->off += len;
	if (fin) {
		r->fin = 1;
		if (r->off != r->len)
			r->bad = 1;
		if (!r->bad)
			x->s_verified++;
		net_quic_stream_resume(x->sq, sid);
	}
	return 0;
}

static ssize_t s_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin)
{
	struct sreq *r = user;
	(void)ctx;
	(void)sid;
	(void)cap;
	if (!r->fin || r->replied)
		return 0; /* sleep until the request is complete */
	buf[0] = REPLY(r->idx);
	r->replied = 1;
	*fin = 1;
	return 1;
}

static void s_closed(void *ctx, int64_t sid, void *user, uint64_t app_error)
{
	struct xfer *x = ctx;
	struct sreq *r = user;
	(void)sid;
	x->s_closed++;
	if (app_error != 0 || !r || !r->fin || !r->replied)
		x->s_bad_close++;
	if (r && r->bad)
		x->s_bad_data++;
	free(r);
}

static void x_tick(void *arg)
{
	struct xfer *x = arg;

	while (x->next < x->limit) {
		struct creq *r = &x->req[x->next];
		int rv = net_quic_stream_open(x->cq, r, &r->sid);
		if (rv == -EAGAIN)
			break;
		CHECK_EQ(rv, 0);
		if (rv != 0)
			break;
		CHECK_EQ(r->sid, (int64_t)x->next * 4);
		x->next++;
	}
}

static int x_done(void *arg)
{
	struct xfer *x = arg;
	if (x->s->rc || x->c->rc)
		return 1;
	return x->next == x->limit && x->c_closed == x->limit && x->s_closed == x->limit;
}

static void test_transfer(void)
{
	struct xfer *x = calloc(1, sizeof(*x));
	struct net_quic_cb scb = {x, s_recv, s_fill, s_closed}, ccb = {x, c_recv, c_fill, c_closed};
	struct net_quic_cfg cfg;
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	uint16_t port = 0;
	uint64_t total = 0;
	unsigned i;
	double t0, t1;

	if (!x) {
		CHECK(0);
		return;
	}
	x->s = &s;
	x->c = &c;
	net_quic_cfg_default(&cfg);
	cfg.max_streams = 100;
	for (i = 0; i <= NSMALL; i++) {
		x->req[i].idx = i;
		x->req[i].len = payload_len(i);
	}
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, &cfg, &scb, &s.q, &s.err), 0);
	CHECK_EQ(client_new(&c, port, ID, key_good, &cfg, &ccb), 0);
	x->sq = s.q;
	x->cq = c.q;
	CHECK(run(&s, &c, both_up, NULL, e, 5000));

	/* 3000 streams with at most 100 open at once */
	x->limit = NSMALL;
	t0 = now_s();
	CHECK(run(&s, &c, x_done, x_tick, x, 40000));
	t1 = now_s();
	for (i = 0; i < NSMALL; i++)
		total += x->req[i].len;
	CHECK_EQ(s.rc, 0);
	CHECK_EQ(c.rc, 0);
	if (s.rc || c.rc)
		fprintf(stderr, "server: %s / client: %s\n", s.err.msg, c.err.msg);
	CHECK_EQ(x->c_closed, NSMALL);
	CHECK_EQ(x->s_closed, NSMALL);
	CHECK_EQ(x->c_bad_close, 0);
	CHECK_EQ(x->s_bad_close, 0);
	CHECK_EQ(x->s_bad_data, 0);
	CHECK_EQ(x->c_bad_reply, 0);
	CHECK_EQ(x->s_verified, NSMALL);
	printf("%u streams, %.1f MB: %.2f s, %.0f MB/s\n", NSMALL, (double)total / 1e6, t1 - t0,
	       (double)total / 1e6 / (t1 - t0));
	CHECK_EQ(net_quic_streams_open(c.q), 0);
	CHECK_EQ(net_quic_streams_open(s.q), 0);

	/* one 64 MiB stream alone */
	x->limit = NSMALL + 1;
	t0 = now_s();
	CHECK(run(&s, &c, x_done, x_tick, x, 40000));
	t1 = now_s();
	CHECK_EQ(s.rc, 0);
	CHECK_EQ(c.rc, 0);
	CHECK(x->req[NSMALL].closed);
	CHECK_EQ(x->c_bad_close, 0);
	CHECK_EQ(x->s_bad_close, 0);
	CHECK_EQ(x->s_bad_data, 0);
	CHECK_EQ(x->s_verified, NSMALL + 1);
	printf("64 MiB stream: %.3f s, %.0f MB/s (one thread doing both ends, loopback)\n", t1 - t0,
	       (double)BIGLEN / 1e6 / (t1 - t0));
	CHECK(net_quic_bytes_sent(c.q) >= total + BIGLEN);

	net_quic_close(c.q);
	net_quic_free(c.q);
	net_quic_free(s.q);
	free(x);
}

/* (e) the server refuses a stream: the client sees a non-zero app_error, the connection lives on */
static void test_reset(void)
{
	struct plain ps = {0}, pc = {0};
	struct plain *pp[2] = {&ps, &pc};
	struct net_quic_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	uint16_t port = 0;
	int64_t sid;

	ps.reset_on_recv = EPERM;
	pc.fill_left = 1 << 20;
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	CHECK_EQ(client_new(&c, port, ID, key_good, NULL, &ccb), 0);
	CHECK_EQ(net_quic_stream_open(c.q, NULL, &sid), -ENOTCONN);
	CHECK(run(&s, &c, both_up, NULL, e, 5000));
	CHECK_EQ(net_quic_stream_open(c.q, &pc, &sid), 0);
	CHECK(run(&s, &c, e_done, NULL, pp, 5000));
	CHECK_EQ(pc.closed, 1);
	CHECK_EQ(pc.last_app_error, EPERM);
	CHECK_EQ(ps.closed, 1);
	CHECK(ps.last_app_error != 0);
	CHECK_EQ(s.rc, 0);
	CHECK_EQ(c.rc, 0);
	CHECK_EQ(net_quic_streams_open(c.q), 0);

	/* a local reset: both ends see it */
	ps.reset_on_recv = 0;
	ps.closed = pc.closed = 0;
	pc.fill_left = 0; /* the stream sleeps: nothing to send */
	CHECK_EQ(net_quic_stream_open(c.q, &pc, &sid), 0);
	CHECK_EQ(net_quic_stream_resume(c.q, sid), 0);
	CHECK_EQ(net_quic_stream_reset(c.q, sid, 77), 0);
	CHECK_EQ(net_quic_stream_reset(c.q, sid + 4000, 77), -ENOENT);
	CHECK(run(&s, &c, e_done, NULL, pp, 5000) || pc.closed);
	CHECK_EQ(pc.closed, 1);
	CHECK_EQ(pc.last_app_error, 77);
	net_quic_free(c.q);
	net_quic_free(s.q);
}

/* (f) a peer that stops answering: the idle timeout ends the connection and every open stream */
static void test_idle(void)
{
	struct plain ps = {0}, pc = {0};
	struct net_quic_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct net_quic_cfg cfg;
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	uint16_t port = 0;
	int64_t sid;
	uint64_t t0;

	net_quic_cfg_default(&cfg);
	cfg.idle_timeout_ms = 300;
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, &cfg, &scb, &s.q, &s.err), 0);
	CHECK_EQ(client_new(&c, port, ID, key_good, &cfg, &ccb), 0);
	CHECK(run(&s, &c, both_up, NULL, e, 5000));
	CHECK_EQ(net_quic_stream_open(c.q, &pc, &sid), 0); /* sleeps: fill_left is 0 */
	CHECK(run(&s, &c, NULL, NULL, NULL, 50) || 1);
	s.paused = 1;
	t0 = now_ms();
	CHECK(run(&s, &c, client_failed, NULL, e, 5000));
	CHECK(c.rc == -ECONNABORTED || c.rc == -ETIMEDOUT);
	printf("idle: after %" PRIu64 " ms: %s\n", now_ms() - t0, c.err.msg);
	CHECK(now_ms() - t0 >= 200);
	CHECK_EQ(pc.closed, 1);
	CHECK(pc.last_app_error != 0);
	CHECK_EQ(net_quic_timeout_ms(c.q), -1);
	CHECK_EQ(net_quic_stream_open(c.q, &pc, &sid), c.rc);
	/* the server, processed again, finds its own idle timer expired */
	s.paused = 0;
	CHECK(run(&s, &c, server_failed, NULL, e, 5000));
	CHECK(s.rc == -ECONNABORTED || s.rc == -ETIMEDOUT);
	net_quic_free(c.q);
	net_quic_free(s.q);
}

/* a client with nobody listening gives up after its handshake timeout */
static void test_handshake_timeout(void)
{
	struct plain pc = {0};
	struct net_quic_cb ccb = plain_cb(&pc);
	struct net_quic_cfg cfg;
	struct end c = {0};
	struct end *e[2] = {NULL, &c};
	struct plain ps = {0};
	struct net_quic_cb scb = plain_cb(&ps);
	struct net_quic *hold = NULL;
	uint16_t port = 0;
	uint64_t t0;

	/* a bound socket nobody processes: datagrams vanish, no ICMP */
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &hold, NULL), 0);
	net_quic_cfg_default(&cfg);
	cfg.handshake_timeout_ms = 400;
	t0 = now_ms();
	CHECK_EQ(client_new(&c, port, ID, key_good, &cfg, &ccb), 0);
	CHECK(run(NULL, &c, client_failed, NULL, e, 5000));
	CHECK_EQ(c.rc, -ETIMEDOUT);
	printf("handshake timeout: after %" PRIu64 " ms: %s\n", now_ms() - t0, c.err.msg);
	net_quic_free(c.q);
	net_quic_free(hold);
}

int main(void)
{
	memcpy(key_bad, key_good, sizeof(key_bad));
	key_bad[31] ^= 1;
	setvbuf(stdout, NULL, _IONBF, 0);

	test_handshake_ok();
	test_wrong_secret_then_right();
	test_wrong_id();
	test_reset();
	test_idle();
	test_handshake_timeout();
	test_transfer();

	printf("%d checks, %d failures\n", checks, failures);
	return failures ? 1 : 0;
}
