/* The control line channel's transport over a libssh session channel (net/ssh_int.h): non-blocking
 * reads, writes bounded by the peer's window and a timeout, pending data libssh already buffered.
 * The same on both ends of SSH: the client's exec channel and the native server's accepted channel. */
#include "net/ssh_int.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define STDERR_CHUNK_LIMIT 16 /* 4 KiB reads of remote stderr forwarded per call */

int64_t net_ssh_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void net_ssh_wait_input(ssh_session s, int64_t rest_ms)
{
	struct pollfd pf = {.fd = ssh_get_fd(s), .events = POLLIN};
	if (rest_ms <= 0)
		return;
	(void)poll(&pf, 1, rest_ms < NET_SSH_POLL_STEP_MS ? (int)rest_ms : NET_SSH_POLL_STEP_MS);
}

static void write_all_fd(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* our stderr is gone: nothing better to do with the remote's */
		p += w;
		n -= (size_t)w;
	}
}

/* Remote stderr is the peer's voice when things go wrong: pass it on to ours as it arrives. */
void net_ssh_chan_forward_stderr(struct net_ssh_chan *l)
{
	char buf[4096];
	if (!l->forward_stderr)
		return;
	for (int i = 0; i < STDERR_CHUNK_LIMIT; i++) {
		int n = ssh_channel_read_nonblocking(l->ch, buf, sizeof(buf), 1);
		if (n <= 0)
			return;
		write_all_fd(STDERR_FILENO, buf, (size_t)n);
	}
}

ssize_t net_ssh_chan_read(void *impl, void *buf, size_t cap)
{
	struct net_ssh_chan *l = impl;
	uint32_t want = cap > INT32_MAX ? INT32_MAX : (uint32_t)cap;

	net_ssh_chan_forward_stderr(l);
	int r = ssh_channel_read_nonblocking(l->ch, buf, want, 0);
	if (r > 0)
		return r;
	if (r == SSH_EOF || (r == 0 && ssh_channel_is_eof(l->ch))) {
		net_ssh_chan_forward_stderr(l);
		return -EPIPE;
	}
	if (r == 0)
		return 0;
	/* a channel the remote closed is an end of stream, a broken session is not */
	if (ssh_channel_is_closed(l->ch) && ssh_is_connected(l->s) && ssh_get_error_code(l->s) != SSH_FATAL)
		return -EPIPE;
	return -EIO;
}

ssize_t net_ssh_chan_write(void *impl, const void *buf, size_t len)
{
	struct net_ssh_chan *l = impl;
	const char *p = buf;
	size_t left = len;
	int64_t deadline = net_ssh_now_ms() + NET_SSH_WRITE_TIMEOUT_MS;

	/* non-blocking so a shut window cannot hold us forever: libssh writes what the window allows */
	while (left > 0) {
		uint32_t chunk = left > INT32_MAX ? INT32_MAX : (uint32_t)left;
		ssh_set_blocking(l->s, 0);
		int w = ssh_channel_write(l->ch, p, chunk);
		ssh_set_blocking(l->s, 1);
		if (w == SSH_ERROR || w < 0)
			return ssh_channel_is_closed(l->ch) ? -EPIPE : -EIO;
		if (w > 0) {
			p += w;
			left -= (size_t)w;
			continue;
		}
		int64_t rest = deadline - net_ssh_now_ms();
		if (rest <= 0)
			return -ETIMEDOUT;
		/* the window adjust we wait for arrives as input */
		net_ssh_wait_input(l->s, rest);
	}
	int64_t rest = deadline - net_ssh_now_ms();
	int rc = ssh_blocking_flush(l->s, rest > 0 ? (int)rest : 1);
	if (rc == SSH_AGAIN)
		return -ETIMEDOUT;
	if (rc != SSH_OK)
		return -EIO;
	return (ssize_t)len;
}

int net_ssh_chan_poll_fd(void *impl)
{
	struct net_ssh_chan *l = impl;
	return ssh_get_fd(l->s);
}

int net_ssh_chan_pending(void *impl)
{
	struct net_ssh_chan *l = impl;
	net_ssh_chan_forward_stderr(l);
	/* data, the end of stream and an error all mean "read now": read tells which */
	return ssh_channel_poll(l->ch, 0) != 0 ? 1 : 0;
}
