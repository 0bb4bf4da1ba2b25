/* The control line channel: frames newline-terminated JSON messages over any byte transport
 * (struct net_ctl_ops), with one input buffer and one output buffer allocated when the channel is made.
 * In framed mode (the SSH-only data path) the same buffers carry kind/sid/len frames instead: control
 * messages still come out of net_ctl_recv, stream frames go to the sink (net/mux.c).
 * Also the simplest transport, a pair of fds (helper mode: stdin/stdout, local mode: pipes).
 *
 * Not thread-safe: one thread (the control thread) owns a channel. If net_ctl_chan_new fails, the caller
 * still owns impl. A fatal receive error (-EMSGSIZE, -EBADMSG, -EPROTO, a transport error, the peer's
 * EOF) is sticky: later receives return it again; sending stays possible (to report the error). */
#include "net/control.h"
#include "net/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHAN_READ_SLACK 4096                                     /* bytes read beyond one full line */
#define CHAN_IN_CAP     (NET_CTL_MAX_LINE + 2 + CHAN_READ_SLACK) /* line + "\r\n" + slack */
#define CHAN_OUT_CAP    (NET_CTL_MAX_LINE + 2)                   /* line + "\n" + NUL */
_Static_assert(CHAN_IN_CAP >= NET_CTL_FRAME_HDR_MAX + NET_CTL_MAX_FRAME, "a whole frame fits the buffer");
_Static_assert(CHAN_IN_CAP >= NET_CTL_FRAME_HDR_MAX + NET_CTL_MAX_LINE, "a whole control frame fits");
#define CHAN_POLL_STEP_MS    10    /* sleep step when there is no fd */
#define FDS_WRITE_TIMEOUT_MS 30000 /* a peer that stops reading */

struct net_ctl_chan {
	const struct net_ctl_ops *ops;
	void *impl;
	char *in;       /* CHAN_IN_CAP bytes */
	size_t in_len;  /* bytes buffered */
	size_t in_scan; /* in[0..in_scan) holds no '\n' */
	char *out;      /* CHAN_OUT_CAP bytes, NET_CTL_FRAME_HDR_MAX of headroom before them */
	char *outbuf;   /* the allocation out points into */
	bool eof;       /* the transport reported end of stream */
	bool framed;    /* frames, not lines */
	size_t in_off;  /* framed: in[in_off..in_len) is unread */
	struct net_ctl_sink sink;
	int dead; /* sticky fatal error, 0 while usable */
	char dead_msg[QS_ERR_MSG_MAX];
};

int net_ctl_chan_new(const struct net_ctl_ops *ops, void *impl, struct net_ctl_chan **out)
{
	struct net_ctl_chan *c = calloc(1, sizeof(*c));
	if (!c)
		goto fail;
	c->in = malloc(CHAN_IN_CAP);
	c->outbuf = malloc(NET_CTL_FRAME_HDR_MAX + CHAN_OUT_CAP);
	if (!c->in || !c->outbuf)
		goto fail;
	c->out = c->outbuf + NET_CTL_FRAME_HDR_MAX;
	c->ops = ops;
	c->impl = impl;
	*out = c;
	return 0;
fail:
	if (c) {
		free(c->in);
		free(c->outbuf);
		free(c);
	}
	*out = NULL;
	return -ENOMEM;
}

int net_ctl_chan_finish(struct net_ctl_chan *c, int *exit_status)
{
	int rc = 0;
	if (exit_status)
		*exit_status = -1;
	if (!c)
		return 0;
	if (c->ops->finish)
		rc = c->ops->finish(c->impl, exit_status);
	explicit_bzero(c->in, CHAN_IN_CAP);
	free(c->in);
	free(c->outbuf);
	free(c);
	return rc;
}

static bool frame_ready(struct net_ctl_chan *c);

int net_ctl_poll_fd(struct net_ctl_chan *c)
{
	return c->ops->poll_fd ? c->ops->poll_fd(c->impl) : -1;
}

int net_ctl_pending(struct net_ctl_chan *c)
{
	/* an ended or broken channel "has data": a receive returns at once, so nobody should wait on it */
	if (c->dead || c->eof)
		return 1;
	if (c->framed && frame_ready(c))
		return 1;
	if (!c->framed && c->in_len > c->in_scan && memchr(c->in + c->in_scan, '\n', c->in_len - c->in_scan))
		return 1;
	if (c->ops->pending && c->ops->pending(c->impl) > 0)
		return 1;
	return 0;
}

/* Builds the frame header in the NET_CTL_FRAME_HDR_MAX bytes before p; returns where the frame starts. */
static uint8_t *frame_header(unsigned kind, uint64_t sid, uint8_t *p, size_t n)
{
	uint8_t h[NET_CTL_FRAME_HDR_MAX];
	size_t hl = 0;
	h[hl++] = (uint8_t)kind;
	hl += (size_t)net_varint_encode(sid, h + hl, sizeof(h) - hl);
	hl += (size_t)net_varint_encode(n, h + hl, sizeof(h) - hl);
	memcpy(p - hl, h, hl);
	return p - hl;
}

int net_ctl_send(struct net_ctl_chan *c, const struct net_ctl_msg *m, struct qs_err *err)
{
	ssize_t n = net_ctl_emit(m, c->out, CHAN_OUT_CAP);
	int rc;
	if (n == -ENOSPC)
		return qs_err_set(err, -EMSGSIZE, "%s message is over the %d-byte line limit",
		                  net_ctl_type_name(m->type), NET_CTL_MAX_LINE);
	if (n < 0)
		return qs_err_set(err, (int)n, "cannot encode a %s message", net_ctl_type_name(m->type));
	const char *start = c->out;
	size_t len = (size_t)n;
	if (c->framed) {
		/* the same JSON without its newline, as a control frame */
		len--;
		uint8_t *f = frame_header(NET_CTL_FR_CTL, 0, (uint8_t *)c->out, len);
		len += (size_t)((uint8_t *)c->out - f);
		start = (const char *)f;
	}
	ssize_t w = c->ops->write(c->impl, start, len);
	rc = w < 0 ? (int)w : 0;
	/* the line may carry the session secret (quic_init) */
	explicit_bzero(c->out, (size_t)n);
	if (rc < 0)
		return qs_err_set(err, rc, "sending %s on the control channel: %s",
		                  net_ctl_type_name(m->type), strerror(-rc));
	return 0;
}

static int die(struct net_ctl_chan *c, struct qs_err *err, int code, const char *msg)
{
	c->dead = code;
	snprintf(c->dead_msg, sizeof(c->dead_msg), "%s", msg);
	return qs_err_set(err, code, "%s", c->dead_msg);
}

/* Takes one complete line out of the buffer if there is one. Returns 1 (line parsed into *m), 0 (no
 * full line), or a negative errno. */
static int take_line(struct net_ctl_chan *c, struct net_ctl_msg *m, struct qs_err *err)
{
	char *nl = c->in_len > c->in_scan ? memchr(c->in + c->in_scan, '\n', c->in_len - c->in_scan) : NULL;
	if (!nl) {
		c->in_scan = c->in_len;
		return 0;
	}
	size_t used = (size_t)(nl - c->in) + 1;
	size_t len = used - 1;
	if (len > 0 && c->in[len - 1] == '\r')
		len--;
	if (len > NET_CTL_MAX_LINE) {
		char msg[QS_ERR_MSG_MAX];
		snprintf(msg, sizeof(msg), "control line of %zu bytes is over the %d-byte limit", len,
		         NET_CTL_MAX_LINE);
		return die(c, err, -EMSGSIZE, msg);
	}
	struct qs_err perr = {0};
	int rc = net_ctl_parse(c->in, len, m, &perr);
	/* quic_init lines hold the session secret: do not leave it in the buffer */
	explicit_bzero(c->in, used);
	memmove(c->in, c->in + used, c->in_len - used);
	c->in_len -= used;
	explicit_bzero(c->in + c->in_len, used); /* the moved bytes' old copy may hold a later secret */
	c->in_scan = 0;
	if (rc == -ENOMSG)
		return qs_err_set(err, rc, "%s", perr.msg);
	if (rc < 0)
		return die(c, err, rc, perr.msg);
	return 1;
}

/* ---- framed mode ---- */

int net_ctl_chan_framed(struct net_ctl_chan *c, const struct net_ctl_sink *sink)
{
	if (c->framed)
		return -EALREADY;
	c->framed = true;
	c->sink = *sink;
	c->in_off = 0;
	c->in_scan = 0;
	return 0;
}

bool net_ctl_chan_is_framed(const struct net_ctl_chan *c)
{
	return c->framed;
}

int net_ctl_send_frame(struct net_ctl_chan *c, unsigned kind, uint64_t sid, uint8_t *p, size_t n,
                       struct qs_err *err)
{
	if (!c->framed || kind == NET_CTL_FR_CTL || kind > NET_CTL_FR_MAX || n > NET_CTL_MAX_FRAME)
		return qs_err_set(err, -EINVAL, "bad frame for the SSH data path");
	uint8_t *f = frame_header(kind, sid, p, n);
	ssize_t w = c->ops->write(c->impl, f, n + (size_t)(p - f));
	if (w < 0)
		return qs_err_set(err, (int)w, "sending data on the SSH connection: %s", strerror((int)-w));
	return 0;
}

struct frame {
	unsigned kind;
	uint64_t sid;
	const uint8_t *p;
	size_t n;
	size_t total; /* header + payload */
};

/* Decodes the frame at in[in_off..). 1 when it is all there, 0 when more bytes are needed, or a fatal
 * negative errno for a frame no peer of ours would send. */
static int frame_peek(struct net_ctl_chan *c, struct frame *f, struct qs_err *err)
{
	const uint8_t *p = (const uint8_t *)c->in + c->in_off;
	size_t n = c->in_len - c->in_off;
	uint64_t len;
	char msg[QS_ERR_MSG_MAX];
	if (n < 1)
		return 0;
	f->kind = p[0];
	if (f->kind > NET_CTL_FR_MAX) {
		snprintf(msg, sizeof(msg), "unknown frame kind %u on the SSH data path", f->kind);
		return die(c, err, -EPROTO, msg);
	}
	ssize_t a = net_varint_decode(p + 1, n - 1, &f->sid);
	if (a == 0)
		return 0;
	ssize_t b = net_varint_decode(p + 1 + a, n - 1 - (size_t)a, &len);
	if (b == 0)
		return 0;
	uint64_t limit = f->kind == NET_CTL_FR_CTL     ? NET_CTL_MAX_LINE
	                 : f->kind == NET_CTL_FR_RESET ? 8
	                                               : NET_CTL_MAX_FRAME;
	if (len > limit) {
		snprintf(msg, sizeof(msg), "frame of %llu bytes is over the %llu-byte limit",
		         (unsigned long long)len, (unsigned long long)limit);
		return die(c, err, -EMSGSIZE, msg);
	}
	if (f->kind == NET_CTL_FR_CTL && f->sid != 0)
		return die(c, err, -EPROTO, "control frame with a stream id");
	size_t hl = 1 + (size_t)a + (size_t)b;
	if (n - hl < len)
		return 0;
	f->p = p + hl;
	f->n = (size_t)len;
	f->total = hl + (size_t)len;
	return 1;
}

static bool frame_ready(struct net_ctl_chan *c)
{
	struct frame f;
	struct qs_err e = {0};
	return !c->dead && frame_peek(c, &f, &e) == 1;
}

static void frame_consume(struct net_ctl_chan *c, const struct frame *f)
{
	c->in_off += f->total;
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
}

/* Reads more input in framed mode. 1 when bytes arrived, 0 when none are there now, negative errno
 * (fatal; the end of stream in the middle of a frame or at a frame boundary is -EPIPE). */
static int frame_fill(struct net_ctl_chan *c, struct qs_err *err)
{
	if (c->eof)
		return die(c, err, -EPIPE,
		           c->in_len > c->in_off
		               ? "the peer closed the SSH connection in the middle of a frame"
		               : "peer closed the control channel");
	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	ssize_t r = c->ops->read(c->impl, c->in + c->in_len, CHAN_IN_CAP - c->in_len);
	if (r == 0)
		return 0;
	if (r == -EPIPE) {
		c->eof = true;
		return 1; /* the next peek decides: a whole frame may still be buffered */
	}
	if (r < 0) {
		char msg[QS_ERR_MSG_MAX];
		snprintf(msg, sizeof(msg), "reading the control channel: %s", strerror((int)-r));
		return die(c, err, (int)r, msg);
	}
	c->in_len += (size_t)r;
	return 1;
}

/* Hands stream frames to the sink until a control frame is at the front (1), nothing complete is
 * buffered and nothing more can be read now (0), or something is fatal (negative). */
static int frames_until_ctl(struct net_ctl_chan *c, struct frame *f, struct qs_err *err)
{
	for (;;) {
		int rc = frame_peek(c, f, err);
		if (rc < 0)
			return rc;
		if (rc == 0) {
			rc = frame_fill(c, err);
			if (rc <= 0)
				return rc;
			continue;
		}
		if (f->kind == NET_CTL_FR_CTL)
			return 1;
		struct qs_err se = {0};
		rc = c->sink.frame(c->sink.ctx, f->kind, f->sid, f->p, f->n, &se);
		frame_consume(c, f);
		if (rc < 0)
			return die(c, err, rc, se.msg[0] ? se.msg : "bad stream frame on the SSH data path");
	}
}

int net_ctl_pump(struct net_ctl_chan *c, struct qs_err *err)
{
	struct frame f;
	if (c->dead)
		return qs_err_set(err, c->dead, "%s", c->dead_msg);
	if (!c->framed)
		return 0;
	return frames_until_ctl(c, &f, err);
}

static int recv_framed(struct net_ctl_chan *c, struct net_ctl_msg *m, struct qs_err *err)
{
	struct frame f;
	int rc = frames_until_ctl(c, &f, err);
	if (rc <= 0)
		return rc;
	struct qs_err perr = {0};
	rc = net_ctl_parse((const char *)f.p, f.n, m, &perr);
	frame_consume(c, &f);
	if (rc == -ENOMSG)
		return qs_err_set(err, rc, "%s", perr.msg);
	if (rc < 0)
		return die(c, err, rc, perr.msg);
	return 1;
}

int net_ctl_recv(struct net_ctl_chan *c, struct net_ctl_msg *m, struct qs_err *err)
{
	if (c->dead)
		return qs_err_set(err, c->dead, "%s", c->dead_msg);
	if (c->framed)
		return recv_framed(c, m, err);
	for (;;) {
		int rc = take_line(c, m, err);
		if (rc != 0)
			return rc;
		if (c->eof)
			return die(c, err, -EPIPE,
			           c->in_len
			               ? "the peer closed the control channel in the middle of a message"
			               : "peer closed the control channel");
		/* no '\n' within a full line's worth (plus "\r\n"): it can only be too long */
		if (c->in_len >= NET_CTL_MAX_LINE + 2) {
			char msg[QS_ERR_MSG_MAX];
			snprintf(msg, sizeof(msg), "control line longer than the %d-byte limit",
			         NET_CTL_MAX_LINE);
			return die(c, err, -EMSGSIZE, msg);
		}
		ssize_t r = c->ops->read(c->impl, c->in + c->in_len, CHAN_IN_CAP - c->in_len);
		if (r == 0)
			return 0;
		if (r == -EPIPE) {
			c->eof = true;
			continue;
		}
		if (r < 0) {
			char msg[QS_ERR_MSG_MAX];
			snprintf(msg, sizeof(msg), "reading the control channel: %s", strerror((int)-r));
			return die(c, err, (int)r, msg);
		}
		c->in_len += (size_t)r;
	}
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int net_ctl_recv_wait(struct net_ctl_chan *c, struct net_ctl_msg *m, int timeout_ms, struct qs_err *err)
{
	int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
	for (;;) {
		int rc = net_ctl_recv(c, m, err);
		if (rc != 0)
			return rc;
		int wait = -1;
		if (timeout_ms >= 0) {
			int64_t left = deadline - now_ms();
			if (left <= 0)
				return qs_err_set(err, -ETIMEDOUT,
				                  "no control message from the peer within %d ms",
				                  timeout_ms);
			wait = left > INT32_MAX ? INT32_MAX : (int)left;
		}
		if (c->ops->pending && c->ops->pending(c->impl) > 0)
			continue;
		int fd = net_ctl_poll_fd(c);
		if (fd < 0) {
			int step = (wait < 0 || wait > CHAN_POLL_STEP_MS) ? CHAN_POLL_STEP_MS : wait;
			struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
			nanosleep(&ts, NULL);
			continue;
		}
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, wait) < 0 && errno != EINTR)
			return qs_err_set(err, -errno, "poll on the control channel: %s", strerror(errno));
	}
}

/* ---- the fd transport ------------------------------------------------------------------------- */

struct fds_impl {
	int rfd;
	int wfd;
	int rfd_flags; /* to put back on finish: O_NONBLOCK is shared with whoever else holds the file */
};

static ssize_t fds_read(void *impl, void *buf, size_t cap)
{
	struct fds_impl *f = impl;
	for (;;) {
		ssize_t r = read(f->rfd, buf, cap);
		if (r > 0)
			return r;
		if (r == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -errno;
	}
}

/* One write that cannot raise SIGPIPE: MSG_NOSIGNAL on sockets; on pipes SIGPIPE is blocked for the
 * call and a SIGPIPE it raised is consumed before unblocking. */
static ssize_t write_nosig(int fd, const void *buf, size_t len)
{
	ssize_t r = send(fd, buf, len, MSG_NOSIGNAL);
	if (r >= 0 || errno != ENOTSOCK)
		return r;
	sigset_t pipe_set, old, pending;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigpending(&pending);
	bool was_pending = sigismember(&pending, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	r = write(fd, buf, len);
	int e = errno;
	if (r < 0 && e == EPIPE && !was_pending) {
		struct timespec zero = {0, 0};
		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return r;
}

static ssize_t fds_write(void *impl, const void *buf, size_t len)
{
	struct fds_impl *f = impl;
	const char *p = buf;
	size_t left = len;
	while (left > 0) {
		ssize_t w = write_nosig(f->wfd, p, left);
		if (w > 0) {
			p += w;
			left -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pf = {.fd = f->wfd, .events = POLLOUT};
			int pr = poll(&pf, 1, FDS_WRITE_TIMEOUT_MS);
			if (pr == 0)
				return -ETIMEDOUT;
			if (pr < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		return w < 0 ? -errno : -EIO;
	}
	return (ssize_t)len;
}

static int fds_poll_fd(void *impl)
{
	return ((struct fds_impl *)impl)->rfd;
}

static int fds_finish(void *impl, int *exit_status)
{
	struct fds_impl *f = impl;
	if (exit_status)
		*exit_status = -1;
	if (f->rfd_flags >= 0)
		(void)fcntl(f->rfd, F_SETFL, f->rfd_flags);
	free(f);
	return 0;
}

static const struct net_ctl_ops fds_ops = {
    .read = fds_read,
    .write = fds_write,
    .poll_fd = fds_poll_fd,
    .pending = NULL,
    .finish = fds_finish,
};

int net_ctl_chan_fds(int rfd, int wfd, struct net_ctl_chan **out)
{
	*out = NULL;
	if (rfd < 0 || wfd < 0)
		return -EBADF;
	struct fds_impl *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	int rc;
	f->rfd = rfd;
	f->wfd = wfd;
	f->rfd_flags = fcntl(rfd, F_GETFL);
	if (f->rfd_flags < 0 || fcntl(rfd, F_SETFL, f->rfd_flags | O_NONBLOCK) < 0) {
		rc = -errno;
		goto fail;
	}
	if ((rc = net_ctl_chan_new(&fds_ops, f, out)) < 0) {
		(void)fcntl(rfd, F_SETFL, f->rfd_flags);
		goto fail;
	}
	return 0;
fail:
	free(f);
	return rc;
}
