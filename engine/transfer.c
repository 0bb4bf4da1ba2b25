/* What both roles of a transfer share: clocks, the descriptor budget, events, defaults, waiting for a
 * control message, and one turn of the event loop over the control channel and the data plane. The
 * client's conversation is in client.c, the peer's in server.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine_int.h"
#include "net/ssh.h"
#include "sched/sched.h"

uint64_t engine_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int engine_lane_wait(struct net_dp *dp, struct io_ring *ring, int max_ms)
{
	struct pollfd p[2] = {{.fd = net_dp_fd(dp), .events = POLLIN},
	                      {.fd = ring ? io_ring_fd(ring) : -1, .events = POLLIN}};
	int tmo = net_dp_timeout_ms(dp);
	if (tmo < 0 || tmo > max_ms)
		tmo = max_ms;
	if (poll(p, 2, tmo) < 0 && errno != EINTR)
		return -1;
	if (ring)
		io_ring_reap(ring);
	return 0;
}

size_t engine_fd_budget(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 512;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY)
		return SIZE_MAX;
	return rl.rlim_cur > 128 ? (size_t)rl.rlim_cur - 64 : 64;
}

void engine_emit(const struct engine_opts *o, enum engine_event_kind k, const char *path, const char *msg,
                 const struct engine_stats *st)
{
	/* lanes emit from their own threads: one event at a time reaches the sink */
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	if (!o || !o->on_event)
		return;
	struct engine_event ev = {.kind = k, .path = path, .msg = msg, .stats = st};
	pthread_mutex_lock(&lock);
	o->on_event(o->event_ctx, &ev);
	pthread_mutex_unlock(&lock);
}

void engine_opts_default(struct engine_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->remote_path = "qsync";
	o->max_streams = 1000;
	o->quic_timeout_ms = ENGINE_QUIC_TIMEOUT_MS;
	o->quic_idle_ms = ENGINE_QUIC_IDLE_MS;
	o->ctl_timeout_ms = ENGINE_CTL_TIMEOUT_MS;
}

bool engine_pin(const struct sched_topo *t, unsigned n)
{
	return t && n >= sched_topo_ncores(t);
}

int engine_random(void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int engine_expect(struct net_ctl_chan *c, enum net_ctl_type want, struct net_ctl_msg *m, int timeout_ms,
                  struct qs_err *err)
{
	for (;;) {
		int rc = net_ctl_recv_wait(c, m, timeout_ms, err);
		if (rc == -ENOMSG)
			continue; /* an unknown message type from a newer peer: ignore */
		if (rc == -ETIMEDOUT)
			return qs_err_set(err, rc, "timed out waiting for %s from the peer",
			                  net_ctl_type_name(want));
		if (rc < 0)
			return rc;
		if (m->type == want)
			return 0;
		if (m->type == NET_CTL_ERROR)
			return qs_err_set(err, -EPROTO, "peer: %s%s%s", m->u.error.message,
			                  m->u.error.file[0] ? " — " : "", m->u.error.file);
		if (m->type == NET_CTL_PROGRESS)
			continue;
		return qs_err_set(err, -EPROTO, "expected %s from the peer, got %s", net_ctl_type_name(want),
		                  net_ctl_type_name(m->type));
	}
}

int engine_send_error(struct net_ctl_chan *c, const char *code, const char *msg)
{
	struct net_ctl_msg *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->type = NET_CTL_ERROR;
	m->u.error.quic_stream_id = -1;
	snprintf(m->u.error.error_code, sizeof(m->u.error.error_code), "%s", code);
	snprintf(m->u.error.message, sizeof(m->u.error.message), "%s", msg);
	int rc = net_ctl_send(c, m, NULL);
	free(m);
	return rc;
}

int engine_poll_once(struct net_ctl_chan *c, const struct net_dp *dp, struct io_ring *ring, int max_ms,
                     struct qs_err *err)
{
	struct pollfd p[3];
	int n = 0;
	int tmo = max_ms;
	if (dp) {
		int t = net_dp_timeout_ms(dp);
		if (t >= 0 && t < tmo)
			tmo = t;
		if (net_dp_fd(dp) >= 0) {
			p[n].fd = net_dp_fd(dp);
			p[n].events = POLLIN;
			n++;
		}
	}
	if (c && net_ctl_pending(c))
		tmo = 0;
	if (c && net_ctl_poll_fd(c) >= 0) {
		p[n].fd = net_ctl_poll_fd(c);
		p[n].events = POLLIN;
		n++;
	}
	if (ring) {
		p[n].fd = io_ring_fd(ring);
		p[n].events = POLLIN;
		n++;
	}
	if (poll(p, (nfds_t)n, tmo) < 0 && errno != EINTR)
		return qs_err_set(err, -errno, "poll: %s", strerror(errno));
	if (ring)
		io_ring_reap(ring); /* flushes and writes done: their files go on */
	if (dp)
		return net_dp_process(dp, err);
	return 0;
}
