/* The data plane: one QUIC connection (ngtcp2 0.12 + GnuTLS) authenticated by a per-session 256-bit
 * secret carried over SSH. The handshake is TLS 1.3 with an external PSK in psk_dhe_ke mode (ECDHE-PSK),
 * no certificates: a peer without the secret cannot complete it. After the handshake both roles are
 * alike: either side opens bidirectional streams and sends on them; the bytes of each stream are pulled
 * from the owner through fill() and kept by this module until the peer acknowledges them.
 * One connection is driven by one thread: nothing here locks. */
#ifndef QS_NET_QUIC_H
#define QS_NET_QUIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "common/err.h"
#include "net/dp.h"

#define NET_QUIC_PSK_LEN     32
#define NET_QUIC_ALPN        "qsync/1"
#define NET_QUIC_MAX_PENDING 8 /* server: handshakes in progress side by side */

/* Congestion control of what this side sends. BBR (v1) is the default: with ngtcp2 0.12 on this
 * machine's emulated links it was faster than BBRv2 on every link measured (1 GiB at 50 ms RTT: 11.1 s
 * against 13.6-14.0 s; at 100 ms with 1 % loss 15.3 s against 20.3-23.8 s; perf/results/2026-12-02-ccab-*),
 * and CUBIC far slower than either wherever there is loss (316.7 s against BBRv2's 14.3-15.1 s for 1 GiB
 * at 50 ms with 0.1 % loss: perf/results/2026-12-02-cc-cubic). */
enum net_quic_cc {
	NET_QUIC_CC_BBR = 0,
	NET_QUIC_CC_BBR2,
	NET_QUIC_CC_CUBIC,
};

struct net_quic_cfg {
	uint32_t max_streams;     /* bidi streams the peer may have open toward us at once */
	uint64_t max_data;        /* connection receive window, bytes */
	uint64_t max_stream_data; /* per-stream receive window, bytes */
	uint32_t idle_timeout_ms; /* the connection dies after this long without packets */
	uint32_t handshake_timeout_ms;
	enum net_quic_cc cc;
};

/* Fills in the defaults (1000 streams, windows sized for 10 Gbit/s x 100 ms within a memory budget,
 * BBR). */
void net_quic_cfg_default(struct net_quic_cfg *c);

/* Sizes the windows of one connection for a memory budget of bytes on each side: the connection
 * window is half of it (at least 4 MiB, at most 1 GiB), a stream's window at most 16 MiB of that. */
void net_quic_cfg_budget(struct net_quic_cfg *c, uint64_t bytes);

struct net_quic;

/* Peer role (QUIC server): binds a UDP socket on bind_ip (port *port, 0 = ephemeral; the bound port is
 * written back) and accepts the first connection whose handshake proves psk with identity id
 * (connection_id from quic_init). Up to NET_QUIC_MAX_PENDING handshakes run side by side, each with its
 * own handshake timeout; when all are busy a new Initial evicts the oldest. The first to complete becomes
 * the connection and the others are dropped without a word; from then on only its address is answered.
 * Handshakes that fail are dropped and counted (net_quic_rejected). psk is copied; the copy and the
 * GnuTLS credentials are wiped and freed as soon as the connection is accepted (or on free). */
int net_quic_server_new(const char *bind_ip, uint16_t *port, const char *id,
                        const uint8_t psk[NET_QUIC_PSK_LEN], const struct net_quic_cfg *cfg,
                        const struct net_dp_cb *cb, struct net_quic **out, struct qs_err *err);

/* Server only: from now on datagrams (Initials included) whose source IP differs from addr's IP are
 * ignored without an answer; the port is not compared (the client's port is unknown). An IPv4 address
 * and its IPv4-mapped IPv6 form (::ffff:a.b.c.d) are the same IP; an IPv6 scope id is not compared.
 * Call it right after net_quic_server_new; handshakes already in progress from other IPs are dropped.
 * Without it any source may try (the handshake still requires the secret). addr is copied.
 * Returns 0; -EINVAL for a client object or an address that is not AF_INET/AF_INET6 of adequate len;
 * -EISCONN once a connection has been accepted. */
int net_quic_server_allow(struct net_quic *q, const struct sockaddr *addr, socklen_t len);

/* Client role: a UDP socket connected to peer, and a connection whose handshake uses psk/id. psk is
 * copied; the copy is wiped (and the GnuTLS credentials freed) once the handshake completes, or on free. */
int net_quic_client_new(const struct sockaddr *peer, socklen_t peerlen, const char *id,
                        const uint8_t psk[NET_QUIC_PSK_LEN], const struct net_quic_cfg *cfg,
                        const struct net_dp_cb *cb, struct net_quic **out, struct qs_err *err);

/* The UDP socket to poll for POLLIN, and ms until the next timer (0 = now, -1 none). */
int net_quic_fd(const struct net_quic *q);
int net_quic_timeout_ms(const struct net_quic *q);

/* Reads every datagram waiting, runs expired timers, and sends what can be sent (calling fill()).
 * Never blocks. Returns 0; -ECONNABORTED when the connection is closed (by the peer, or by an idle
 * timeout: err says which); -ECONNREFUSED (client) when the handshake failed, e.g. a wrong secret. */
int net_quic_process(struct net_quic *q, struct qs_err *err);

/* 1 once the handshake is complete. */
int net_quic_handshake_done(const struct net_quic *q);

/* Handshake attempts the server dropped without accepting them: wrong secret or identity, garbage,
 * their own handshake timeout, or evicted for a newer Initial while all NET_QUIC_MAX_PENDING slots were
 * busy. Each attempt counts once; attempts dropped because another one completed first do not count. */
unsigned net_quic_rejected(const struct net_quic *q);

/* Opens a bidirectional stream owned by user. -EAGAIN when the peer's stream limit is reached now
 * (try again after a stream closes); -ENOTCONN before the handshake completes. */
int net_quic_stream_open(struct net_quic *q, void *user, int64_t *sid);

/* Wakes a stream whose fill() returned 0 without fin. */
int net_quic_stream_resume(struct net_quic *q, int64_t sid);

/* Resets a stream in both directions with app_error (non-zero). closed() follows. */
int net_quic_stream_reset(struct net_quic *q, int64_t sid, uint64_t app_error);

/* Streams currently open (both directions counted once). */
size_t net_quic_streams_open(const struct net_quic *q);

/* Bytes in flight / acknowledged totals, for stats. */
uint64_t net_quic_bytes_sent(const struct net_quic *q);

/* Sends CONNECTION_CLOSE (no error) and flushes it. The connection is unusable after. */
int net_quic_close(struct net_quic *q);

/* Frees everything; wipes the secret if it is still held. q may be NULL. */
void net_quic_free(struct net_quic *q);

/* q as a data plane (net/dp.h), named "quic"; q still belongs to the caller. */
void net_quic_as_dp(struct net_quic *q, struct net_dp *out);

#endif
