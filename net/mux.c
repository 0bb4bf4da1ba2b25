/* Streams over the SSH control channel (net/mux.h): each stream is a run of DATA frames ending in a
 * FIN frame, in each direction, or a RESET; stream ids are picked by the side that opens the stream
 * (client even, peer odd) and only go up, so a frame for a lower id that is not open is a late frame of
 * a stream already gone. The channel reads frames for us (net_ctl_pump or net_ctl_recv) and hands them
 * to on_frame(); process() writes what the ready streams have, first come first served. */
#include "net/mux.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/stream.h"

#define MUX_HTAB_MIN 64u
#define MUX_FILL_MAX (NET_CTL_MAX_FRAME - NET_CTL_FRAME_HDR_MAX)

struct mstream {
	int64_t sid;
	void *user;
	bool local;    /* we opened it */
	bool fin_sent; /* our direction is done */
	bool fin_recv; /* theirs is */
	bool sleeping; /* fill() had nothing: waits for stream_resume() */
	bool in_ready;
	struct mstream *hnext;         /* hash chain */
	struct mstream *rnext, *rprev; /* ready list */
};

struct net_mux {
	struct net_ctl_chan *c;
	struct net_dp_cb cb;
	int initiator;
	uint32_t max_remote, max_local;
	uint32_t n_remote, n_local;
	int64_t next_local;      /* id of the next stream we open */
	int64_t max_remote_seen; /* highest id the other side has opened (-1: none) */
	struct mstream **htab;
	size_t hcap, n;
	struct mstream *rhead, *rtail; /* streams with something to send, oldest first */
	uint8_t *buf;                  /* NET_CTL_FRAME_HDR_MAX headroom + NET_CTL_MAX_FRAME */
	uint64_t bytes_sent;
	int dead; /* sticky error once the channel failed */
	char dead_msg[QS_ERR_MSG_MAX];
};

static size_t hslot(const struct net_mux *m, int64_t sid)
{
	uint64_t x = (uint64_t)sid * 0x9E3779B97F4A7C15ull;
	return (size_t)(x >> 32) & (m->hcap - 1);
}

static struct mstream *find(const struct net_mux *m, int64_t sid)
{
	for (struct mstream *s = m->htab[hslot(m, sid)]; s; s = s->hnext)
		if (s->sid == sid)
			return s;
	return NULL;
}

static int grow(struct net_mux *m)
{
	if (m->n < m->hcap)
		return 0;
	size_t ncap = m->hcap * 2;
	struct mstream **nt = calloc(ncap, sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	size_t ocap = m->hcap;
	struct mstream **ot = m->htab;
	m->htab = nt;
	m->hcap = ncap;
	for (size_t i = 0; i < ocap; i++) {
		for (struct mstream *s = ot[i], *next; s; s = next) {
			next = s->hnext;
			size_t h = hslot(m, s->sid);
			s->hnext = nt[h];
			nt[h] = s;
		}
	}
	free(ot);
	return 0;
}

static void ready_add(struct net_mux *m, struct mstream *s)
{
	if (s->in_ready || s->fin_sent || s->sleeping)
		return;
	s->in_ready = true;
	s->rnext = NULL;
	s->rprev = m->rtail;
	if (m->rtail)
		m->rtail->rnext = s;
	else
		m->rhead = s;
	m->rtail = s;
}

static void ready_remove(struct net_mux *m, struct mstream *s)
{
	if (!s->in_ready)
		return;
	s->in_ready = false;
	if (s->rprev)
		s->rprev->rnext = s->rnext;
	else
		m->rhead = s->rnext;
	if (s->rnext)
		s->rnext->rprev = s->rprev;
	else
		m->rtail = s->rprev;
	s->rnext = s->rprev = NULL;
}

static struct mstream *stream_new(struct net_mux *m, int64_t sid, bool local)
{
	if (grow(m) < 0)
		return NULL;
	struct mstream *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->sid = sid;
	s->local = local;
	size_t h = hslot(m, sid);
	s->hnext = m->htab[h];
	m->htab[h] = s;
	m->n++;
	if (local)
		m->n_local++;
	else
		m->n_remote++;
	ready_add(m, s);
	return s;
}

/* Takes s out of every list and tells the owner it is gone. */
static void stream_end(struct net_mux *m, struct mstream *s, uint64_t app_error)
{
	struct mstream **pp = &m->htab[hslot(m, s->sid)];
	while (*pp != s)
		pp = &(*pp)->hnext;
	*pp = s->hnext;
	ready_remove(m, s);
	m->n--;
	if (s->local)
		m->n_local--;
	else
		m->n_remote--;
	m->cb.closed(m->cb.ctx, s->sid, s->user, app_error);
	free(s);
}

static void maybe_close(struct net_mux *m, struct mstream *s)
{
	if (s->fin_sent && s->fin_recv)
		stream_end(m, s, 0);
}

static int send_reset(struct net_mux *m, int64_t sid, uint64_t app_error, struct qs_err *err)
{
	uint8_t *p = m->buf + NET_CTL_FRAME_HDR_MAX;
	ssize_t n = net_varint_encode(app_error, p, 8);
	if (n < 0)
		n = net_varint_encode(EPROTO, p, 8);
	return net_ctl_send_frame(m->c, NET_CTL_FR_RESET, (uint64_t)sid, p, (size_t)n, err);
}

static void mark_dead(struct net_mux *m, int code, const char *msg)
{
	if (m->dead)
		return;
	m->dead = code;
	snprintf(m->dead_msg, sizeof(m->dead_msg), "%s", msg);
}

/* Resets s both ways: a RESET frame to the other side, closed() here. */
static void reset_stream(struct net_mux *m, struct mstream *s, uint64_t app_error)
{
	struct qs_err e = {0};
	if (!m->dead && send_reset(m, s->sid, app_error, &e) < 0)
		mark_dead(m, e.code ? e.code : -EIO, e.msg);
	stream_end(m, s, app_error ? app_error : EPROTO);
}

static bool remote_id(const struct net_mux *m, uint64_t sid)
{
	return (sid & 1) == (m->initiator ? 1u : 0u);
}

/* A frame read off the channel (the sink). Returns 0, or a fatal negative errno. */
static int on_frame(void *ctx, unsigned kind, uint64_t usid, const uint8_t *p, size_t n, struct qs_err *err)
{
	struct net_mux *m = ctx;
	if (usid > (uint64_t)INT64_MAX)
		return qs_err_set(err, -EPROTO, "stream id %llu out of range", (unsigned long long)usid);
	int64_t sid = (int64_t)usid;
	struct mstream *s = find(m, sid);
	if (!s) {
		if (!remote_id(m, usid)) {
			if (sid >= m->next_local)
				return qs_err_set(err, -EPROTO,
				                  "frame for stream %lld, which we never opened",
				                  (long long)sid);
			return 0; /* a late frame of one of ours that is gone */
		}
		if (sid <= m->max_remote_seen)
			return 0; /* late: that stream is closed here already */
		m->max_remote_seen = sid;
		if (kind == NET_CTL_FR_RESET) {
			/* opened and given up before we saw a byte of it: it still ends here, as a QUIC
			 * RESET_STREAM ends a stream it is the first word of (the receiver counts the
			 * streams that ended against those the sender says it opened) */
			uint64_t code = 0;
			if (net_varint_decode(p, n, &code) != (ssize_t)n || n == 0)
				return qs_err_set(err, -EPROTO, "malformed RESET frame for stream %lld",
				                  (long long)sid);
			m->cb.closed(m->cb.ctx, sid, NULL, code ? code : EPROTO);
			return 0;
		}
		if (m->n_remote >= m->max_remote)
			return qs_err_set(err, -EPROTO, "the peer opened more than %u streams at once",
			                  m->max_remote);
		s = stream_new(m, sid, false);
		if (!s)
			return qs_err_set(err, -ENOMEM, "out of memory for a stream");
	}
	if (kind == NET_CTL_FR_RESET) {
		uint64_t code = 0;
		if (net_varint_decode(p, n, &code) != (ssize_t)n || n == 0)
			return qs_err_set(err, -EPROTO, "malformed RESET frame for stream %lld",
			                  (long long)sid);
		stream_end(m, s, code ? code : EPROTO);
		return 0;
	}
	if (s->fin_recv) {
		reset_stream(m, s, EPROTO); /* bytes after the end: that stream is broken, the rest is fine */
		return 0;
	}
	int fin = kind == NET_CTL_FR_FIN;
	int rc = m->cb.recv(m->cb.ctx, sid, &s->user, p, n, fin);
	s = find(m, sid); /* the owner may have reset it from inside recv() */
	if (!s)
		return 0;
	if (rc < 0) {
		reset_stream(m, s, (uint64_t)-rc);
		return 0;
	}
	if (fin) {
		s->fin_recv = true;
		maybe_close(m, s);
	}
	return 0;
}

int net_mux_new(struct net_ctl_chan *chan, int initiator, uint32_t max_remote, uint32_t max_local,
                const struct net_dp_cb *cb, struct net_mux **out)
{
	*out = NULL;
	if (net_ctl_chan_is_framed(chan))
		return -EALREADY;
	struct net_mux *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->hcap = MUX_HTAB_MIN;
	m->htab = calloc(m->hcap, sizeof(*m->htab));
	m->buf = malloc(NET_CTL_FRAME_HDR_MAX + NET_CTL_MAX_FRAME);
	if (!m->htab || !m->buf) {
		free(m->htab);
		free(m->buf);
		free(m);
		return -ENOMEM;
	}
	m->c = chan;
	m->cb = *cb;
	m->initiator = initiator ? 1 : 0;
	m->max_remote = max_remote;
	m->max_local = max_local;
	m->next_local = initiator ? 0 : 1;
	m->max_remote_seen = -1;
	struct net_ctl_sink sink = {.ctx = m, .frame = on_frame};
	net_ctl_chan_framed(chan, &sink);
	*out = m;
	return 0;
}

void net_mux_free(struct net_mux *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->hcap; i++)
		while (m->htab[i])
			stream_end(m, m->htab[i], NET_DP_GONE);
	free(m->htab);
	free(m->buf);
	free(m);
}

size_t net_mux_streams_open(const struct net_mux *m)
{
	return m->n;
}

uint64_t net_mux_bytes_sent(const struct net_mux *m)
{
	return m->bytes_sent;
}

/* ---- as a data plane ---- */

static int mux_fd(const void *impl)
{
	const struct net_mux *m = impl;
	return net_ctl_poll_fd(m->c);
}

static int mux_timeout_ms(const void *impl)
{
	const struct net_mux *m = impl;
	if (m->dead || m->rhead || net_ctl_pending(m->c))
		return 0;
	return -1;
}

static int mux_process(void *impl, struct qs_err *err)
{
	struct net_mux *m = impl;
	if (m->dead)
		return qs_err_set(err, m->dead, "%s", m->dead_msg);
	struct qs_err e = {0};
	int rc = net_ctl_pump(m->c, &e);
	if (rc < 0) {
		mark_dead(m, rc, e.msg);
		return qs_err_set(err, rc, "%s", m->dead_msg);
	}
	uint8_t *payload = m->buf + NET_CTL_FRAME_HDR_MAX;
	size_t budget = NET_MUX_SEND_BUDGET;
	while (m->rhead && budget > 0 && !m->dead) {
		struct mstream *s = m->rhead;
		int64_t sid = s->sid;
		int fin = 0;
		/* header + payload within 64 KiB: two full SSH packets of 32 KiB, no runt third one */
		ssize_t n = m->cb.fill(m->cb.ctx, sid, s->user, payload, MUX_FILL_MAX, &fin);
		if (n < 0 || n > (ssize_t)NET_CTL_MAX_FRAME) {
			reset_stream(m, s, n < 0 ? (uint64_t)-n : (uint64_t)EOVERFLOW);
			continue;
		}
		if (n == 0 && !fin) {
			s->sleeping = true;
			ready_remove(m, s);
			continue;
		}
		rc = net_ctl_send_frame(m->c, fin ? NET_CTL_FR_FIN : NET_CTL_FR_DATA, (uint64_t)sid, payload,
		                        (size_t)n, &e);
		if (rc < 0) {
			mark_dead(m, rc, e.msg);
			break;
		}
		m->bytes_sent += (uint64_t)n;
		budget -= (size_t)n < budget ? (size_t)n + 1 : budget;
		if (fin) {
			s->fin_sent = true;
			ready_remove(m, s);
			maybe_close(m, s);
		}
	}
	if (m->dead)
		return qs_err_set(err, m->dead, "%s", m->dead_msg);
	return 0;
}

static int mux_ready(const void *impl)
{
	const struct net_mux *m = impl;
	return !m->dead;
}

static int mux_stream_open(void *impl, void *user, int64_t *sid)
{
	struct net_mux *m = impl;
	if (m->dead)
		return m->dead;
	if (m->n_local >= m->max_local)
		return -EAGAIN;
	struct mstream *s = stream_new(m, m->next_local, true);
	if (!s)
		return -ENOMEM;
	s->user = user;
	*sid = s->sid;
	m->next_local += 2;
	return 0;
}

static int mux_stream_resume(void *impl, int64_t sid)
{
	struct net_mux *m = impl;
	struct mstream *s = find(m, sid);
	if (!s)
		return -ENOENT;
	s->sleeping = false;
	ready_add(m, s);
	return 0;
}

static int mux_stream_reset(void *impl, int64_t sid, uint64_t app_error)
{
	struct net_mux *m = impl;
	struct mstream *s = find(m, sid);
	if (!s)
		return -ENOENT;
	reset_stream(m, s, app_error);
	return 0;
}

static const struct net_dp_ops mux_dp_ops = {
    .fd = mux_fd,
    .timeout_ms = mux_timeout_ms,
    .process = mux_process,
    .ready = mux_ready,
    .stream_open = mux_stream_open,
    .stream_resume = mux_stream_resume,
    .stream_reset = mux_stream_reset,
};

void net_mux_as_dp(struct net_mux *m, struct net_dp *out)
{
	out->ops = &mux_dp_ops;
	out->impl = m;
	out->name = "ssh";
}
