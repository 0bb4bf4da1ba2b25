/* A data plane: bidirectional streams between the sender and the receiver, whatever carries them —
 * QUIC (net/quic.h) or streams multiplexed on the SSH control channel (net/mux.h). The engine drives
 * either through struct net_dp and the same three callbacks, so the sender and the receiver are written
 * once. An implementation is driven by one thread; nothing here locks. */
#ifndef QS_NET_DP_H
#define QS_NET_DP_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

/* The app_error closed() reports for the streams still open when the data plane itself goes away (the
 * connection died, was closed, or was freed): they did not fail, they were cut off. */
#define NET_DP_GONE ECONNABORTED

/* What a data plane calls back into its owner, always from inside one of its own calls (process(),
 * or for the mux, the control channel's receive). */
struct net_dp_cb {
	void *ctx;
	/* Bytes arrived on stream sid, in order. *user is NULL on the first call for a stream the peer
	 * opened; the callee may set it, and it is passed back on later calls. fin=1 with the last bytes
	 * (len may be 0). Return 0, or a negative errno to reset the stream (the peer sees it as an error).
	 */
	int (*recv)(void *ctx, int64_t sid, void **user, const uint8_t *data, size_t len, int fin);
	/* The stream may send: write up to cap bytes of its payload into buf and return how many; set *fin
	 * to 1 when these are the last. Return 0 with *fin 0 when there is nothing to send right now: the
	 * stream then sleeps until stream_resume(). Negative errno resets the stream. */
	ssize_t (*fill)(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin);
	/* The stream is finished in both directions (app_error 0), or was reset by either side (app_error
	 * non-zero). sid is gone after this returns; user is the owner's to free. */
	void (*closed)(void *ctx, int64_t sid, void *user, uint64_t app_error);
};

struct net_dp_ops {
	/* A descriptor to poll for POLLIN (-1: none of its own), and ms until process() is due (-1: no
	 * timer; 0: now). */
	int (*fd)(const void *impl);
	int (*timeout_ms)(const void *impl);
	/* Reads what has arrived, runs timers, sends what can be sent. Returns 0, or a negative errno when
	 * the data plane is dead (err says why). */
	int (*process)(void *impl, struct qs_err *err);
	/* 1 once streams may be opened (QUIC: the handshake is complete). */
	int (*ready)(const void *impl);
	/* Opens a bidirectional stream owned by user. -EAGAIN when the stream limit is reached now. */
	int (*stream_open)(void *impl, void *user, int64_t *sid);
	/* Wakes a stream whose fill() returned 0 without fin. */
	int (*stream_resume)(void *impl, int64_t sid);
	/* Resets a stream in both directions with app_error (non-zero); closed() follows. */
	int (*stream_reset)(void *impl, int64_t sid, uint64_t app_error);
};

/* A data plane as the engine holds it; impl stays owned (and freed) by whoever made it. */
struct net_dp {
	const struct net_dp_ops *ops;
	void *impl;
	const char *name; /* "quic" or "ssh": what the summary says */
};

static inline int net_dp_fd(const struct net_dp *d)
{
	return d->ops->fd(d->impl);
}
static inline int net_dp_timeout_ms(const struct net_dp *d)
{
	return d->ops->timeout_ms(d->impl);
}
static inline int net_dp_process(const struct net_dp *d, struct qs_err *err)
{
	return d->ops->process(d->impl, err);
}
static inline int net_dp_ready(const struct net_dp *d)
{
	return d->ops->ready(d->impl);
}
static inline int net_dp_stream_open(const struct net_dp *d, void *user, int64_t *sid)
{
	return d->ops->stream_open(d->impl, user, sid);
}
static inline int net_dp_stream_resume(const struct net_dp *d, int64_t sid)
{
	return d->ops->stream_resume(d->impl, sid);
}
static inline int net_dp_stream_reset(const struct net_dp *d, int64_t sid, uint64_t app_error)
{
	return d->ops->stream_reset(d->impl, sid, app_error);
}

#endif
