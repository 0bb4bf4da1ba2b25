/* Unit tests for net/quic.c: both ends of a QUIC connection in one process on 127.0.0.1, driven by one
 * poll loop. PSK handshake (right secret, wrong secret, wrong identity), handshake hijack attempts
 * (replayed Initials, a stalled wrong-secret client, a flood, the source filter), the secret wiped after
 * the handshake, a 3000-stream transfer with stream credit replenished, a 64 MiB stream (throughput
 * printed), stream reset, idle timeout, close.
 * This file compiles net/quic.c itself with QS_TESTING so that it can check the secret is gone (the
 * library's copy of quic.o is then not linked: nothing references it). */
#define QS_TESTING 1
#include "net/quic.c"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

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

static struct net_dp_cb plain_cb(struct plain *p)
{
	struct net_dp_cb cb = {p, plain_recv, plain_fill, plain_closed};
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
                      const struct net_quic_cfg *cfg, struct net_dp_cb *cb)
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
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
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
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
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
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
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
	struct net_dp_cb scb = {x, s_recv, s_fill, s_closed}, ccb = {x, c_recv, c_fill, c_closed};
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
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
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
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
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
	struct net_dp_cb ccb = plain_cb(&pc);
	struct net_quic_cfg cfg;
	struct end c = {0};
	struct end *e[2] = {NULL, &c};
	struct plain ps = {0};
	struct net_dp_cb scb = plain_cb(&ps);
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

/* ---- third parties during the handshake ---- */

static struct sockaddr_in addr4(const char *ip, uint16_t port)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	(void)inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

/* A plain UDP socket bound to ip (ephemeral port): a third party, or a relay. -1 on failure. */
static int udp_on(const char *ip)
{
	struct sockaddr_in a = addr4(ip, 0);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* Captures the first datagram of a real client with key (its Initial, the whole ClientHello) by pointing
 * the client at sock; the client is then dropped and never answers anything. Returns the length, 0 if
 * nothing came. */
static size_t capture_initial(int sock, const uint8_t *key, uint8_t *buf, size_t cap)
{
	struct plain p = {0};
	struct net_dp_cb cb = plain_cb(&p);
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	struct net_quic *q = NULL;
	struct pollfd pfd = {.fd = sock, .events = POLLIN};
	ssize_t n = 0;

	if (getsockname(sock, (struct sockaddr *)&a, &alen) != 0 ||
	    net_quic_client_new((struct sockaddr *)&a, alen, ID, key, NULL, &cb, &q, NULL) != 0)
		return 0;
	if (poll(&pfd, 1, 1000) == 1)
		n = recv(sock, buf, cap, 0);
	net_quic_free(q);
	return n > 0 ? (size_t)n : 0;
}

static void send_to_server(int sock, const uint8_t *pkt, size_t len, uint16_t port)
{
	struct sockaddr_in a = loopback(port);
	CHECK_EQ(sendto(sock, pkt, len, 0, (struct sockaddr *)&a, sizeof(a)), (long long)len);
}

/* Drives the server alone for ms; returns how many datagrams arrived at sock meanwhile. */
static int pump(struct end *s, int sock, unsigned ms)
{
	uint64_t end = now_ms() + ms;
	uint8_t buf[2048];
	int got = 0;

	while (now_ms() < end) {
		struct pollfd p[2] = {{.fd = net_quic_fd(s->q), .events = POLLIN},
		                      {.fd = sock, .events = POLLIN}};
		int t = net_quic_timeout_ms(s->q);
		if (t < 0 || t > 10)
			t = 10;
		(void)poll(p, 2, t);
		if (!s->rc)
			s->rc = net_quic_process(s->q, &s->err);
		while (recv(sock, buf, sizeof(buf), MSG_DONTWAIT) > 0)
			got++;
	}
	return got;
}

/* (g) a replayed Initial (valid ClientHello, nobody behind it) and a wrong-secret client that sends its
 * first flight and stops both reach the server first; the right client still gets in at once. */
static void test_hijack(void)
{
	struct plain ps = {0}, pc = {0}, pb = {0};
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc), bcb = plain_cb(&pb);
	struct end s = {0}, c = {0}, bad = {0};
	struct end *e[2] = {&s, &c}, *eb[2] = {NULL, &bad};
	uint8_t pkt[2048];
	uint16_t port = 0;
	size_t n;
	double t0;
	int r = udp_on("127.0.0.1");

	CHECK(r >= 0);
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	n = capture_initial(r, key_good, pkt, sizeof(pkt));
	CHECK(n >= 1200);
	send_to_server(r, pkt, n, port);
	CHECK(pump(&s, r, 100) > 0); /* the server answers it: a handshake attempt is under way */
	CHECK_EQ(client_new(&bad, port, ID, key_bad, NULL, &bcb), 0);
	(void)pump(&s, r, 50);
	CHECK_EQ(net_quic_rejected(s.q), 1); /* the wrong secret is refused at once */

	t0 = now_s();
	CHECK_EQ(client_new(&c, port, ID, key_good, NULL, &ccb), 0);
	CHECK(run(&s, &c, both_up, NULL, e, 3000)); /* well under the 10 s handshake timeout */
	printf("hijack: right client in after %.2f ms despite two attempts ahead of it\n",
	       (now_s() - t0) * 1e3);
	CHECK_EQ(s.rc, 0);
	CHECK_EQ(c.rc, 0);
	/* the replayed attempt was dropped without a count when the right one won */
	CHECK_EQ(net_quic_rejected(s.q), 1);
	/* from now on the replayer is not answered at all */
	send_to_server(r, pkt, n, port);
	CHECK_EQ(pump(&s, r, 100), 0);
	CHECK(net_quic_handshake_done(s.q));
	/* the stalled wrong-secret client, driven again, finds it was refused */
	CHECK(run(NULL, &bad, client_failed, NULL, eb, 2000));
	CHECK_EQ(bad.rc, -ECONNREFUSED);
	net_quic_free(bad.q);
	net_quic_free(c.q);
	net_quic_free(s.q);
	close(r);
}

/* A UDP relay between one client and the server (tick of run()). */
struct relay {
	int fd;
	uint16_t server_port;
	struct sockaddr_storage client;
	socklen_t clientlen;
};

static void relay_tick(void *arg)
{
	struct relay *r = arg;
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	struct sockaddr_in srv = loopback(r->server_port);
	uint8_t buf[2048];
	ssize_t n;

	while ((n = recvfrom(r->fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen)) >
	       0) {
		if (((struct sockaddr_in *)&from)->sin_port == srv.sin_port)
			(void)sendto(r->fd, buf, (size_t)n, 0, (struct sockaddr *)&r->client, r->clientlen);
		else
			(void)sendto(r->fd, buf, (size_t)n, 0, (struct sockaddr *)&srv, sizeof(srv));
		fromlen = sizeof(from);
	}
}

struct relay_run {
	struct end *e[2];
	struct relay *r;
};

static int relay_up(void *arg)
{
	struct relay_run *rr = arg;
	return both_up(rr->e);
}

static void relay_run_tick(void *arg)
{
	relay_tick(((struct relay_run *)arg)->r);
}

/* (g) someone who sees the client's Initial replays it from elsewhere before the client's own copy
 * arrives: the same DCID from another address is another attempt, and the client still gets in */
static void test_replay_race(void)
{
	struct plain ps = {0}, pc = {0};
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct end s = {0}, c = {0};
	struct relay r = {0};
	struct relay_run rr = {{&s, &c}, &r};
	struct sockaddr_in ra;
	socklen_t ralen = sizeof(ra);
	struct pollfd pfd;
	uint8_t pkt[2048];
	ssize_t n = 0;
	int attacker = udp_on("127.0.0.1");

	r.fd = udp_on("127.0.0.1");
	CHECK(attacker >= 0);
	CHECK(r.fd >= 0);
	CHECK_EQ(net_quic_server_new("127.0.0.1", &r.server_port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	CHECK_EQ(getsockname(r.fd, (struct sockaddr *)&ra, &ralen), 0);
	CHECK_EQ(net_quic_client_new((struct sockaddr *)&ra, ralen, ID, key_good, NULL, &ccb, &c.q, &c.err),
	         0);
	pfd.fd = r.fd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 1000) == 1) {
		r.clientlen = sizeof(r.client);
		n = recvfrom(r.fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&r.client, &r.clientlen);
	}
	CHECK(n >= 1200);
	if (n <= 0)
		n = 1;
	send_to_server(attacker, pkt, (size_t)n, r.server_port); /* the copy arrives first */
	CHECK(pump(&s, attacker, 50) > 0);
	send_to_server(r.fd, pkt, (size_t)n, r.server_port); /* then the client's own */
	CHECK(run(&s, &c, relay_up, relay_run_tick, &rr, 3000));
	CHECK_EQ(s.rc, 0);
	CHECK_EQ(c.rc, 0);
	CHECK_EQ(net_quic_rejected(s.q), 0);
	net_quic_free(c.q);
	net_quic_free(s.q);
	close(r.fd);
	close(attacker);
}

/* (g) a flood of replayed Initials (distinct DCIDs) evicts the oldest attempts; the right client, arriving
 * after the flood, still gets in. An attempt that nobody finishes times out on its own. */
static void test_flood_and_attempt_timeout(void)
{
	struct plain ps = {0}, pc = {0};
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct net_quic_cfg cfg;
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	static uint8_t pkt[NET_QUIC_MAX_PENDING + 3][2048];
	size_t len[NET_QUIC_MAX_PENDING + 3], i;
	uint16_t port = 0;
	int r = udp_on("127.0.0.1");

	CHECK(r >= 0);
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	for (i = 0; i < NET_QUIC_MAX_PENDING + 3; i++) {
		len[i] = capture_initial(r, key_good, pkt[i], sizeof(pkt[i]));
		CHECK(len[i] >= 1200);
	}
	for (i = 0; i < NET_QUIC_MAX_PENDING + 3; i++)
		send_to_server(r, pkt[i], len[i], port);
	CHECK(pump(&s, r, 100) > 0);
	CHECK_EQ(net_quic_rejected(s.q), 3); /* three evicted to make room */
	CHECK_EQ(client_new(&c, port, ID, key_good, NULL, &ccb), 0);
	CHECK(run(&s, &c, both_up, NULL, e, 3000));
	CHECK_EQ(net_quic_rejected(s.q), 4); /* the right client's Initial evicted one more */
	net_quic_free(c.q);
	net_quic_free(s.q);

	/* an attempt nobody finishes is dropped at its own deadline and counted once */
	net_quic_cfg_default(&cfg);
	cfg.handshake_timeout_ms = 300;
	port = 0;
	memset(&s, 0, sizeof(s));
	memset(&c, 0, sizeof(c));
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, &cfg, &scb, &s.q, &s.err), 0);
	len[0] = capture_initial(r, key_good, pkt[0], sizeof(pkt[0]));
	send_to_server(r, pkt[0], len[0], port);
	CHECK(pump(&s, r, 100) > 0);
	CHECK_EQ(net_quic_rejected(s.q), 0);
	(void)pump(&s, r, 400);
	CHECK_EQ(net_quic_rejected(s.q), 1);
	CHECK_EQ(s.rc, 0);
	/* its retransmitted Initial does not open (or count) a second attempt */
	send_to_server(r, pkt[0], len[0], port);
	CHECK_EQ(pump(&s, r, 100), 0);
	CHECK_EQ(net_quic_rejected(s.q), 1);
	CHECK_EQ(client_new(&c, port, ID, key_good, NULL, &ccb), 0);
	CHECK(run(&s, &c, both_up, NULL, e, 3000));
	net_quic_free(c.q);
	net_quic_free(s.q);
	close(r);
}

/* (h) net_quic_server_allow: a source IP other than the allowed one gets no answer at all */
static void test_allow(void)
{
	struct plain ps = {0}, pc = {0};
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	struct sockaddr_in lo = addr4("127.0.0.1", 9); /* the port is not compared */
	struct sockaddr_in6 mapped;
	struct sockaddr_un unix_addr = {.sun_family = AF_UNIX, .sun_path = "x"};
	uint8_t pkt[2048];
	uint16_t port = 0;
	size_t n;
	int r1 = udp_on("127.0.0.1"), r2 = udp_on("127.0.0.2");

	CHECK(r1 >= 0);
	CHECK(r2 >= 0);
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	CHECK_EQ(net_quic_server_allow(s.q, (struct sockaddr *)&unix_addr, sizeof(unix_addr)), -EINVAL);
	CHECK_EQ(net_quic_server_allow(s.q, (struct sockaddr *)&lo, sizeof(lo) - 1), -EINVAL);
	CHECK_EQ(net_quic_server_allow(NULL, (struct sockaddr *)&lo, sizeof(lo)), -EINVAL);
	CHECK_EQ(net_quic_server_allow(s.q, (struct sockaddr *)&lo, sizeof(lo)), 0);

	/* a real Initial from 127.0.0.2: not a single packet back, nothing counted */
	n = capture_initial(r2, key_good, pkt, sizeof(pkt));
	CHECK(n >= 1200);
	send_to_server(r2, pkt, n, port);
	CHECK_EQ(pump(&s, r2, 300), 0);
	CHECK_EQ(net_quic_rejected(s.q), 0);
	/* the same datagram from 127.0.0.1 is answered: the filter, not the replay, kept r2 out */
	send_to_server(r1, pkt, n, port);
	CHECK(pump(&s, r1, 100) > 0);
	/* a client from 127.0.0.1 gets in (the replayed attempt goes silently) */
	CHECK_EQ(client_new(&c, port, ID, key_good, NULL, &ccb), 0);
	CHECK(run(&s, &c, both_up, NULL, e, 3000));
	CHECK_EQ(net_quic_rejected(s.q), 0);
	CHECK_EQ(net_quic_server_allow(s.q, (struct sockaddr *)&lo, sizeof(lo)), -EISCONN);
	CHECK_EQ(net_quic_server_allow(c.q, (struct sockaddr *)&lo, sizeof(lo)), -EINVAL);
	net_quic_free(c.q);
	net_quic_free(s.q);

	/* IPv4-mapped IPv6 names the same IP: ::ffff:127.0.0.2 lets r2 in and keeps r1 out */
	memset(&s, 0, sizeof(s));
	port = 0;
	memset(&mapped, 0, sizeof(mapped));
	mapped.sin6_family = AF_INET6;
	CHECK_EQ(inet_pton(AF_INET6, "::ffff:127.0.0.2", &mapped.sin6_addr), 1);
	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	CHECK_EQ(net_quic_server_allow(s.q, (struct sockaddr *)&mapped, sizeof(mapped)), 0);
	send_to_server(r1, pkt, n, port);
	CHECK_EQ(pump(&s, r1, 200), 0);
	send_to_server(r2, pkt, n, port);
	CHECK(pump(&s, r2, 100) > 0);
	net_quic_free(s.q);
	close(r1);
	close(r2);
}

/* (i) once the handshake is complete neither end holds the secret, and the connection still works */
static void test_secret_wiped(void)
{
	struct plain ps = {0}, pc = {0};
	struct plain *pp[2] = {&ps, &pc};
	struct net_dp_cb scb = plain_cb(&ps), ccb = plain_cb(&pc);
	struct end s = {0}, c = {0};
	struct end *e[2] = {&s, &c};
	uint16_t port = 0;
	int64_t sid;

	CHECK_EQ(net_quic_server_new("127.0.0.1", &port, ID, key_good, NULL, &scb, &s.q, &s.err), 0);
	CHECK_EQ(client_new(&c, port, ID, key_good, NULL, &ccb), 0);
	CHECK(!quic_test_secret_gone(s.q));
	CHECK(!quic_test_secret_gone(c.q));
	CHECK(run(&s, &c, both_up, NULL, e, 5000));
	CHECK(quic_test_secret_gone(s.q));
	CHECK(quic_test_secret_gone(c.q));

	/* streams and a key update still work without credentials */
	pc.fill_left = 200000;
	pc.fin_at_end = 1;
	ps.fin_at_end = 1;
	CHECK_EQ(net_quic_stream_open(c.q, &pc, &sid), 0);
	CHECK(run(&s, &c, e_done, NULL, pp, 5000));
	CHECK_EQ(ps.recv_bytes, 200000);
	CHECK_EQ(ngtcp2_conn_initiate_key_update(c.q->conn, now_ns()), 0);
	ps.closed = pc.closed = 0;
	pc.fill_left = 200000;
	CHECK_EQ(net_quic_stream_open(c.q, &pc, &sid), 0);
	CHECK(run(&s, &c, e_done, NULL, pp, 5000));
	CHECK_EQ(ps.recv_bytes, 400000);
	CHECK_EQ(pc.last_app_error, 0);
	CHECK_EQ(s.rc, 0);
	CHECK_EQ(c.rc, 0);
	net_quic_free(c.q);
	net_quic_free(s.q);
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
	test_hijack();
	test_replay_race();
	test_flood_and_attempt_timeout();
	test_allow();
	test_secret_wiped();
	test_transfer();

	printf("%d checks, %d failures\n", checks, failures);
	return failures ? 1 : 0;
}
