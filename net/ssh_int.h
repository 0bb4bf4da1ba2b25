/* Internal to net/: the control-channel transport over a libssh session channel, shared by the SSH
 * client (ssh_client.c, over its exec channel) and the native server (ssh_server.c, over the channel
 * it accepted). Each side adds its own finish(); read, write, poll_fd and pending are the same. */
#ifndef QS_NET_SSH_INT_H
#define QS_NET_SSH_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <libssh/libssh.h>

#define NET_SSH_WRITE_TIMEOUT_MS 30000 /* a peer that stops reading (window stays shut) */
#define NET_SSH_POLL_STEP_MS     100

/* The common head of both sides' transports. A struct that embeds it as its first member can be the
 * impl of a net_ctl_ops table that uses the net_ssh_chan_* functions below. */
struct net_ssh_chan {
	ssh_session s;
	ssh_channel ch;
	bool forward_stderr; /* pass what arrives on the channel's stderr on to ours (the client) */
};

/* CLOCK_MONOTONIC in milliseconds. */
int64_t net_ssh_now_ms(void);

/* Waits until the session's socket is readable or min(rest_ms, NET_SSH_POLL_STEP_MS) has passed. */
void net_ssh_wait_input(ssh_session s, int64_t rest_ms);

/* With forward_stderr set, copies what the channel's stderr holds now to our stderr (bounded per call);
 * otherwise does nothing. */
void net_ssh_chan_forward_stderr(struct net_ssh_chan *l);

/* The net_ctl_ops members (net/control.h) over l->ch; impl is a struct net_ssh_chan * (or a struct
 * that starts with one). read is non-blocking: >0 bytes, 0 nothing yet, -EPIPE at the end of stream,
 * -EIO for a broken session. write writes all or fails: -EPIPE closed, -ETIMEDOUT when the window stays
 * shut for NET_SSH_WRITE_TIMEOUT_MS, -EIO. pending is 1 when read has something to say (data, end of
 * stream, error) without the socket being readable. */
ssize_t net_ssh_chan_read(void *impl, void *buf, size_t cap);
ssize_t net_ssh_chan_write(void *impl, const void *buf, size_t len);
int net_ssh_chan_poll_fd(void *impl);
int net_ssh_chan_pending(void *impl);

#endif
