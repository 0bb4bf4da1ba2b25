/* The SSH-only data plane: bidirectional streams multiplexed as frames on the control channel
 * (net/control.h, framed mode), for when UDP is blocked, the peer has no QUIC, or the user says
 * --no-quic. Same contract as QUIC streams (net/dp.h): the sender opens a stream per entry, the bytes
 * of each arrive in order, a stream is closed once both sides sent their FIN, and a reset from either
 * side ends it at once. There is no flow control per stream: the receiver consumes every frame as it is
 * read, and the SSH channel's own window holds the sender back. */
#ifndef QS_NET_MUX_H
#define QS_NET_MUX_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "net/control.h"
#include "net/dp.h"

#define NET_MUX_SEND_BUDGET (4u << 20) /* bytes written per process() call, so input is read too */

struct net_mux;

/* Switches chan to framed mode and makes a mux over it. initiator: 1 on the client (its streams get
 * even ids), 0 on the peer (odd ids), so the two sides never pick the same id. max_remote: streams the
 * other side may have open toward us at once (more is a protocol error that kills the channel);
 * max_local: streams we open at once (stream_open says -EAGAIN beyond it). cb is copied. The mux does not
 * own chan. Returns 0, -ENOMEM, or -EALREADY when chan is framed already. */
int net_mux_new(struct net_ctl_chan *chan, int initiator, uint32_t max_remote, uint32_t max_local,
                const struct net_dp_cb *cb, struct net_mux **out);

/* m as a data plane (net/dp.h), named "ssh". Its process() reads what the channel has (stream frames
 * go to the callbacks; control messages stay for net_ctl_recv) and writes up to NET_MUX_SEND_BUDGET
 * bytes of stream data; a write may block while the SSH window is shut (bounded by the transport). */
void net_mux_as_dp(struct net_mux *m, struct net_dp *out);

/* Streams open now (either direction). */
size_t net_mux_streams_open(const struct net_mux *m);

/* Payload bytes written so far. */
uint64_t net_mux_bytes_sent(const struct net_mux *m);

/* Ends every open stream with closed(app_error NET_DP_GONE) and frees m. m may be NULL. */
void net_mux_free(struct net_mux *m);

#endif
