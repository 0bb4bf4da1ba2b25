/* Unit tests for the SSH-only data plane (net/mux.c over net/chan.c's framed mode): streams both ways
 * with their FINs and closes, control messages between data frames, resets from either side, the
 * stream limit crossed by one, and hostile frames written straight into the socket (unknown kind,
 * oversized length, a control frame with a stream id, a frame for a stream never opened, bytes after a
 * FIN, a malformed RESET, a frame cut off by the end of the connection). Both ends run in this one
 * thread over a socketpair whose buffers hold everything a step writes. */
#include "net/mux.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/control.h"
#include "net/stream.h"

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

#define MAXS 64

/* One side: what it sends on each stream, what it got, how each ended. */
struct side {
	const char *name;
	struct net_mux *mux;
	struct net_dp dp;
	/* local streams: payload to send */
	size_t send_len[MAXS];
	size_t send_off[MAXS];
	uint8_t seed[MAXS];
	/* every stream (by sid/2): bytes received, checksum, fin seen, close code */
	size_t got[MAXS];
	uint64_t sum[MAXS];
	int fin[MAXS];
	int closed[MAXS];
	uint64_t code[MAXS];
	int reply; /* as receiver: answer each stream with "ok" + FIN once its FIN came */
	int reply_ready[MAXS];
	int fail_at; /* as receiver: recv() fails once a stream has this many bytes (0: never) */
};

static size_t idx(int64_t sid)
{
	return (size_t)(sid / 2) % MAXS;
}

static uint8_t byte_at(uint8_t seed, size_t i)
{
	return (uint8_t)(seed * 31u + i * 7u + (i >> 9));
}

static int s_recv(void *ctx, int64_t sid, void **user, const uint8_t *data, size_t len, int fin)
{
	struct side *s = ctx;
	size_t k = idx(sid);
	for (size_t i = 0; i < len; i++)
		s->sum[k] = s->sum[k] * 131 + data[i];
	s->got[k] += len;
	if (s->fail_at && s->got[k] >= (size_t)s->fail_at)
		return -EIO;
	if (fin) {
		s->fin[k] = 1;
		if (s->reply) {
			s->reply_ready[k] = 1;
			net_dp_stream_resume(&s->dp, sid);
		}
	}
	*user = s;
	return 0;
}

static ssize_t s_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin)
{
	struct side *s = ctx;
	size_t k = idx(sid);
	*fin = 0;
	if (s->reply) {
		if (!s->reply_ready[k])
			return 0;
		s->reply_ready[k] = 0;
		memcpy(buf, "ok", 2);
		*fin = 1;
		return 2;
	}
	size_t n = s->send_len[k] - s->send_off[k];
	if (n > cap)
		n = cap;
	for (size_t i = 0; i < n; i++)
		buf[i] = byte_at(s->seed[k], s->send_off[k] + i);
	s->send_off[k] += n;
	if (s->send_off[k] == s->send_len[k])
		*fin = 1;
	return (ssize_t)n;
}

static void s_closed(void *ctx, int64_t sid, void *user, uint64_t app_error)
{
	struct side *s = ctx;
	size_t k = idx(sid);
	s->closed[k]++;
	s->code[k] = app_error;
}

static uint64_t expect_sum(uint8_t seed, size_t len)
{
	uint64_t h = 0;
	for (size_t i = 0; i < len; i++)
		h = h * 131 + byte_at(seed, i);
	return h;
}

struct pair {
	int fd[2];
	struct net_ctl_chan *cc, *sc;
	struct side c, s;
};

static void big_buffers(int fd)
{
	int sz = 16 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

/* Two channels over a socketpair; with_mux: both framed, client mux (initiator) and server mux. */
static void pair_open(struct pair *p, uint32_t max_streams, int with_mux)
{
	memset(p, 0, sizeof(*p));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, p->fd) < 0) {
		perror("socketpair");
		exit(2);
	}
	big_buffers(p->fd[0]);
	big_buffers(p->fd[1]);
	CHECK_EQ(net_ctl_chan_fds(p->fd[0], p->fd[0], &p->cc), 0);
	CHECK_EQ(net_ctl_chan_fds(p->fd[1], p->fd[1], &p->sc), 0);
	p->c.name = "client";
	p->s.name = "server";
	p->s.reply = 1;
	if (!with_mux)
		return;
	struct net_dp_cb ccb = {&p->c, s_recv, s_fill, s_closed}, scb = {&p->s, s_recv, s_fill, s_closed};
	CHECK_EQ(net_mux_new(p->cc, 1, max_streams, max_streams, &ccb, &p->c.mux), 0);
	CHECK_EQ(net_mux_new(p->sc, 0, max_streams, max_streams, &scb, &p->s.mux), 0);
	net_mux_as_dp(p->c.mux, &p->c.dp);
	net_mux_as_dp(p->s.mux, &p->s.dp);
}

static void pair_close(struct pair *p)
{
	int st;
	net_mux_free(p->c.mux);
	net_mux_free(p->s.mux);
	net_ctl_chan_finish(p->cc, &st);
	net_ctl_chan_finish(p->sc, &st);
	if (p->fd[0] >= 0)
		close(p->fd[0]);
	if (p->fd[1] >= 0)
		close(p->fd[1]);
}

/* Runs both sides until nothing changes for a few rounds; returns the server's last process() code. */
static int run(struct pair *p, int rounds)
{
	int rc = 0;
	for (int i = 0; i < rounds; i++) {
		struct qs_err e = {0};
		if (p->c.mux)
			(void)net_dp_process(&p->c.dp, &e);
		if (p->s.mux)
			rc = net_dp_process(&p->s.dp, &e);
	}
	return rc;
}

static void test_streams_both_ways(void)
{
	struct pair p;
	pair_open(&p, 16, 1);
	static const size_t sizes[] = {0, 1, 65535, 65536, 65537, 300000};
	int64_t sid[6];
	for (int i = 0; i < 6; i++) {
		size_t k = (size_t)i;
		p.c.send_len[k] = sizes[i];
		p.c.seed[k] = (uint8_t)(i + 1);
		CHECK_EQ(net_dp_stream_open(&p.c.dp, &p.c, &sid[i]), 0);
		CHECK_EQ(sid[i], 2 * i); /* the client's ids are even and go up */
	}
	CHECK_EQ(net_mux_streams_open(p.c.mux), 6);
	run(&p, 50);
	for (int i = 0; i < 6; i++) {
		size_t k = (size_t)i;
		CHECK_EQ(p.s.got[k], sizes[i]);
		CHECK(p.s.sum[k] == expect_sum((uint8_t)(i + 1), sizes[i]));
		CHECK_EQ(p.s.fin[k], 1);
		CHECK_EQ(p.c.got[k], 2); /* the "ok" */
		CHECK_EQ(p.c.closed[k], 1);
		CHECK_EQ(p.c.code[k], 0);
		CHECK_EQ(p.s.closed[k], 1);
		CHECK_EQ(p.s.code[k], 0);
	}
	CHECK_EQ(net_mux_streams_open(p.c.mux), 0);
	CHECK_EQ(net_mux_streams_open(p.s.mux), 0);
	CHECK(net_mux_bytes_sent(p.c.mux) == 65535 + 65536 + 65537 + 300000 + 1);
	pair_close(&p);
}

static void test_control_between_frames(void)
{
	struct pair p;
	pair_open(&p, 16, 1);
	int64_t sid;
	p.c.send_len[0] = 1000;
	CHECK_EQ(net_dp_stream_open(&p.c.dp, &p.c, &sid), 0);
	struct qs_err e = {0};
	CHECK_EQ(net_dp_process(&p.c.dp, &e), 0); /* data frames first ... */
	struct net_ctl_msg m;
	memset(&m, 0, sizeof(m));
	m.type = NET_CTL_BYE;
	CHECK_EQ(net_ctl_send(p.cc, &m, &e), 0); /* ... then a control message */
	struct net_ctl_msg got;
	CHECK_EQ(net_ctl_recv(p.sc, &got, &e), 1);
	CHECK_EQ(got.type, NET_CTL_BYE);
	CHECK_EQ(p.s.got[0], 1000); /* the frames ahead of it were delivered on the way */
	CHECK_EQ(net_ctl_recv(p.sc, &got, &e), 0);
	/* a control message from the server, read by the client through net_ctl_recv as well */
	m.type = NET_CTL_SYNC_COMPLETE;
	m.u.sync_complete.files_transferred = 7;
	CHECK_EQ(net_ctl_send(p.sc, &m, &e), 0);
	CHECK_EQ(net_ctl_recv_wait(p.cc, &got, 1000, &e), 1);
	CHECK_EQ(got.type, NET_CTL_SYNC_COMPLETE);
	CHECK_EQ(got.u.sync_complete.files_transferred, 7);
	run(&p, 20);
	CHECK_EQ(p.c.closed[0], 1);
	CHECK_EQ(p.c.code[0], 0);
	pair_close(&p);
}

static void test_resets(void)
{
	struct pair p;
	pair_open(&p, 16, 1);
	int64_t a, b;
	p.s.fail_at = 5000; /* the receiver refuses stream a part way */
	p.c.send_len[0] = 100000;
	p.c.send_len[1] = 10;
	CHECK_EQ(net_dp_stream_open(&p.c.dp, &p.c, &a), 0);
	CHECK_EQ(net_dp_stream_open(&p.c.dp, &p.c, &b), 0);
	run(&p, 30);
	CHECK_EQ(p.c.closed[0], 1);
	CHECK_EQ(p.c.code[0], EIO); /* the receiver's reason reaches the sender */
	CHECK_EQ(p.s.closed[0], 1);
	/* b is unharmed: its bytes were all there before a's failure mattered */
	CHECK_EQ(p.c.closed[1], 1);
	CHECK_EQ(p.c.code[1], 0);
	/* a sender-side reset of a stream in flight */
	int64_t c;
	p.s.fail_at = 0;
	p.c.send_len[2] = 10;
	CHECK_EQ(net_dp_stream_open(&p.c.dp, &p.c, &c), 0);
	CHECK_EQ(net_dp_stream_reset(&p.c.dp, c, 77), 0);
	CHECK_EQ(p.c.closed[2], 1);
	CHECK_EQ(p.c.code[2], 77);
	run(&p, 10);
	/* opened and reset before any byte: the receiver never saw it open, and sees it end (its stream
	 * count must match the sender's, as over QUIC) */
	CHECK_EQ(p.s.closed[2], 1);
	CHECK_EQ(p.s.code[2], 77);
	CHECK_EQ(net_dp_stream_reset(&p.c.dp, c, 1), -ENOENT);
	CHECK_EQ(net_mux_streams_open(p.s.mux), 0);
	pair_close(&p);
}

static void test_stream_limit(void)
{
	struct pair p;
	pair_open(&p, 3, 1);
	int64_t sid;
	for (int i = 0; i < 3; i++)
		CHECK_EQ(net_dp_stream_open(&p.c.dp, &p.c, &sid), 0);
	CHECK_EQ(net_dp_stream_open(&p.c.dp, &p.c, &sid), -EAGAIN);
	/* the server enforces it too: a client mux that allows itself 4 */
	struct pair q;
	pair_open(&q, 3, 0);
	struct net_dp_cb ccb = {&q.c, s_recv, s_fill, s_closed}, scb = {&q.s, s_recv, s_fill, s_closed};
	CHECK_EQ(net_mux_new(q.cc, 1, 4, 4, &ccb, &q.c.mux), 0);
	CHECK_EQ(net_mux_new(q.sc, 0, 3, 3, &scb, &q.s.mux), 0);
	net_mux_as_dp(q.c.mux, &q.c.dp);
	net_mux_as_dp(q.s.mux, &q.s.dp);
	q.s.reply = 0; /* never answers: all stay open */
	for (int i = 0; i < 4; i++) {
		q.c.send_len[i] = 1;
		CHECK_EQ(net_dp_stream_open(&q.c.dp, &q.c, &sid), 0);
	}
	int rc = run(&q, 5);
	CHECK_EQ(rc, -EPROTO);
	pair_close(&q);
	pair_close(&p);
}

/* Writes raw bytes into the client end; the server's process() must fail with want (0: not fail). */
static int raw(struct pair *p, const uint8_t *b, size_t n)
{
	if (write(p->fd[0], b, n) != (ssize_t)n)
		return -1;
	struct qs_err e = {0};
	int rc = 0;
	for (int i = 0; i < 5 && rc == 0; i++)
		rc = net_dp_process(&p->s.dp, &e);
	return rc;
}

static void hostile(const uint8_t *b, size_t n, int want, const char *what)
{
	struct pair p;
	pair_open(&p, 4, 1);
	int rc = raw(&p, b, n);
	if (rc != want)
		fprintf(stderr, "hostile frame \"%s\": got %d, want %d\n", what, rc, want);
	CHECK_EQ(rc, want);
	pair_close(&p);
}

static void test_hostile_frames(void)
{
	/* kind 9 */
	hostile((const uint8_t[]){9, 0, 0}, 3, -EPROTO, "unknown kind");
	/* DATA of 64 KiB + 1: len varint 0x80 0x01 0x00 0x01 */
	hostile((const uint8_t[]){1, 0, 0x80, 0x01, 0x00, 0x01}, 6, -EMSGSIZE, "oversized data");
	/* CTL with sid 4 */
	hostile((const uint8_t[]){0, 4, 2, '{', '}'}, 5, -EPROTO, "control frame with sid");
	/* DATA on an odd (server-opened) stream the server never opened */
	hostile((const uint8_t[]){1, 1, 1, 'x'}, 4, -EPROTO, "never-opened local stream");
	/* RESET whose payload is not one varint */
	hostile((const uint8_t[]){1, 0, 1, 'x', 3, 0, 2, 1, 1}, 9, -EPROTO, "malformed reset");
	/* a control frame that is not JSON */
	{
		struct pair p;
		pair_open(&p, 4, 1);
		const uint8_t b[] = {0, 0, 3, 'a', 'b', 'c'};
		CHECK_EQ(write(p.fd[0], b, sizeof(b)), (ssize_t)sizeof(b));
		struct net_ctl_msg m;
		struct qs_err e = {0};
		CHECK_EQ(net_ctl_recv(p.sc, &m, &e), -EBADMSG);
		pair_close(&p);
	}
	/* a frame cut off by the end of the connection */
	{
		struct pair p;
		pair_open(&p, 4, 1);
		const uint8_t b[] = {1, 0, 1, 'a', 1, 0, 10, 'b', 'c'};
		CHECK_EQ(write(p.fd[0], b, sizeof(b)), (ssize_t)sizeof(b));
		shutdown(p.fd[0], SHUT_WR);
		struct qs_err e = {0};
		int rc = 0;
		for (int i = 0; i < 5 && rc == 0; i++)
			rc = net_dp_process(&p.s.dp, &e);
		CHECK_EQ(rc, -EPIPE);
		CHECK(strstr(e.msg, "middle of a frame") != NULL);
		CHECK_EQ(p.s.got[0], 1); /* the whole frame before the cut was delivered, the cut one not */
		/* the stream that had begun is ended for its owner when the mux goes */
		net_mux_free(p.s.mux);
		p.s.mux = NULL;
		CHECK_EQ(p.s.closed[0], 1);
		CHECK_EQ(p.s.code[0], ECONNABORTED);
		pair_close(&p);
	}
	/* bytes after a FIN reset that stream only; a late frame after it is ignored */
	{
		struct pair p;
		pair_open(&p, 4, 1);
		p.s.reply = 0;
		const uint8_t b[] = {2, 0, 1, 'a', 1, 0, 1, 'b', 1, 0, 1, 'c', 2, 2, 1, 'd'};
		CHECK_EQ(raw(&p, b, sizeof(b)), 0);
		CHECK_EQ(p.s.closed[0], 1);
		CHECK_EQ(p.s.code[0], EPROTO);
		CHECK_EQ(p.s.got[0], 1);
		CHECK_EQ(p.s.got[1], 1); /* stream 2 is fine */
		CHECK_EQ(p.s.fin[1], 1);
		pair_close(&p);
	}
}

int main(void)
{
	test_streams_both_ways();
	test_control_between_frames();
	test_resets();
	test_stream_limit();
	test_hostile_frames();
	if (failures) {
		fprintf(stderr, "test_net_mux: %d of %d checks failed\n", failures, checks);
		return 1;
	}
	printf("test_net_mux: all %d checks passed\n", checks);
	return 0;
}
