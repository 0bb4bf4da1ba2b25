/* The QUIC data plane: one ngtcp2 0.12 connection on a non-blocking UDP socket, authenticated by a TLS 1.3
 * external PSK (GnuTLS, ECDHE-PSK, no certificates). Stream payload is pulled from the owner through fill()
 * into 64 KiB chunks that stay here until the peer acknowledges them (ngtcp2 0.12 does not copy stream
 * data). docs/QUIC_NOTES.md describes the handshake, credit, buffering and timers. */
#include "net/quic.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#define CHUNK_SIZE     (64u * 1024u) /* unit of send buffering */
#define UNSENT_LOW     CHUNK_SIZE    /* refill a stream when at most this much is unsent: <= 2 chunks */
#define CHUNK_FREE_MAX 256u          /* idle chunks kept for reuse (16 MiB) */
#define RX_BATCH       16u           /* receive buffers per recvmmsg */
#define RX_SLOT        65536u        /* one buffer holds a GRO train of datagrams */
#define RX_PAYLOAD_MAX 2048u         /* largest datagram we accept (advertised as max_udp_payload_size) */
#define RX_ROUNDS      16u           /* recvmmsg rounds per process call, so sending is not starved */
#define TX_BATCH       64u           /* packets per sendmmsg */
#define TX_SLOT        1500u         /* >= TX_PAYLOAD_MAX and >= NGTCP2_MAX_UDP_PAYLOAD_SIZE */
#define TX_PAYLOAD_MAX 1452u         /* 1500 - IPv6 - UDP */
#define TX_PER_PROCESS 1024u         /* packets written per process call */
#define GSO_SEGS_MAX   44u           /* packets per UDP GSO send ... */
#define GSO_BYTES_MAX  65000u        /* ... within one 64 KiB datagram */
#define SCID_LEN       18u
#define ID_MAX         128u /* longest PSK identity */
#define SOCK_BUF       (8 << 20)
#define HTAB_MIN       256u
#define CLOSE_WAIT_MS  200 /* how long net_quic_close waits for room to send CONNECTION_CLOSE */
#define REJ_MEMORY     16  /* refused attempts whose retransmitted Initials are still recognised */

_Static_assert(TX_SLOT >= TX_PAYLOAD_MAX && TX_SLOT >= NGTCP2_MAX_UDP_PAYLOAD_SIZE, "tx slot too small");

static const char priority[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
                               "+CHACHA20-POLY1305:-KX-ALL:+ECDHE-PSK:+DHE-PSK:%DISABLE_TLS13_COMPAT_MODE";

/* ST_LISTEN: server without a connection (handshake attempts may be in progress); ST_HANDSHAKE: client
 * before completion; ST_OPEN: the connection is up; ST_DEAD: over. */
enum { ST_LISTEN, ST_HANDSHAKE, ST_OPEN, ST_DEAD };

struct chunk {
	struct chunk *next;
	uint64_t off; /* stream offset of data[0] */
	size_t len;
	uint8_t data[CHUNK_SIZE];
};

struct qstream {
	int64_t sid;
	void *user;
	struct qstream *hnext;            /* hash chain */
	struct qstream *prev, *next;      /* every live stream; next also links the graveyard */
	struct qstream *rprev, *rnext;    /* send ring, while in_ring */
	struct chunk *head, *tail, *send; /* retained bytes; send is the first chunk with unsent bytes */
	uint64_t acked;                   /* offsets: acknowledged <= sent <= filled */
	uint64_t sent;
	uint64_t filled;
	uint64_t reset_code; /* deferred reset (pending_reset) */
	unsigned in_ring : 1, started : 1, fin_filled : 1, fin_sent : 1, sleeping : 1, blocked : 1, shut : 1,
	    closed : 1, pending_reset : 1;
};

/* One ngtcp2 connection with its TLS session and peer: the client's connection, or one of the server's
 * handshake attempts (the one that completes first becomes the server's connection). */
struct qconn {
	struct net_quic *q;
	ngtcp2_conn *conn;
	gnutls_session_t tls;
	ngtcp2_crypto_conn_ref ref; /* the TLS session's pointer: ngtcp2's crypto helper and psk_server_cb */
	struct sockaddr_storage peer;
	socklen_t peerlen;
	ngtcp2_cid odcid;  /* server: DCID of the client's first Initial */
	ngtcp2_cid scid;   /* server: our SCID, the client's DCID once it has heard from us */
	uint64_t seq;      /* server: order of opening (eviction takes the oldest) */
	uint64_t deadline; /* server: dropped then unless its handshake completed */
	int used;
	int hs_done;
	int alpn_bad;
};

struct net_quic {
	int fd;
	int server;
	int gso; /* UDP GSO usable (cleared on the first refusal) */
	int st;
	int hs_done;                   /* the connection's handshake is complete */
	int dead;                      /* negative errno once the connection is over */
	char dead_msg[QS_ERR_MSG_MAX]; /* words for dead */
	struct qconn *c;               /* the connection: client's, or the accepted attempt; else NULL */
	ngtcp2_conn *conn;             /* c->conn (owned by c), NULL while the server has no connection */
	struct qconn *txto;            /* server: the peer tx[] is for */
	struct qconn att[NET_QUIC_MAX_PENDING]; /* server: handshake attempts; client: att[0] */
	gnutls_psk_client_credentials_t ccred;
	gnutls_psk_server_credentials_t scred;
	struct net_quic_cfg cfg;
	struct net_dp_cb cb;
	char id[ID_MAX + 1];
	size_t idlen;
	uint8_t psk[NET_QUIC_PSK_LEN];
	int secret_gone; /* psk wiped and credentials freed: no handshake can use the secret any more */
	struct sockaddr_storage local;
	socklen_t locallen;
	int allow_set; /* net_quic_server_allow: only this source IP (IPv4 as ::ffff:a.b.c.d) */
	struct in6_addr allow;
	unsigned rejected;
	uint64_t nopened; /* attempts opened so far: the next seq */
	struct {
		ngtcp2_cid
		    dcid; /* original DCID and address of a refused attempt: its retransmits are not new */
		struct sockaddr_storage addr;
	} rej[REJ_MEMORY];
	unsigned rejnext;
	/* streams */
	struct qstream **htab;
	size_t hcap, nstreams;
	struct qstream *all, *ring, *grave;
	size_t nring;
	struct chunk *freechunks;
	size_t nfree;
	int in_ng; /* inside an ngtcp2 call (read, expiry, packet assembly): resets wait */
	size_t npending;
	uint64_t bytes_sent;
	/* packets written and not yet handed to the kernel: tx[txdone..ntx) */
	size_t ntx, txdone;
	size_t txlen[TX_BATCH];
	uint8_t tx[TX_BATCH][TX_SLOT];
	uint8_t rx[RX_BATCH][RX_SLOT];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NGTCP2_SECONDS + (uint64_t)ts.tv_nsec;
}

void net_quic_cfg_default(struct net_quic_cfg *c)
{
	/* 10 Gbit/s x 100 ms is 125 MB in flight: the connection window covers it, a stream gets 16 MiB. */
	c->max_streams = 1000;
	c->max_data = 128u << 20;
	c->max_stream_data = 16u << 20;
	c->idle_timeout_ms = 30000;
	c->handshake_timeout_ms = 10000;
	c->cc = NET_QUIC_CC_BBR;
}

void net_quic_cfg_budget(struct net_quic_cfg *c, uint64_t bytes)
{
	/* half for what may be in flight (the window), the rest for buffers around it */
	uint64_t w = bytes / 2;
	if (w < (4u << 20))
		w = 4u << 20;
	if (w > (1ull << 30))
		w = 1ull << 30;
	c->max_data = w;
	c->max_stream_data = w < (16u << 20) ? w : (16u << 20);
}

/* ---- chunks ---- */

static struct chunk *chunk_get(struct net_quic *q)
{
	struct chunk *c = q->freechunks;

	if (c) {
		q->freechunks = c->next;
		q->nfree--;
	} else {
		c = malloc(sizeof(*c));
		if (!c)
			return NULL;
	}
	c->next = NULL;
	c->len = 0;
	return c;
}

static void chunk_put(struct net_quic *q, struct chunk *c)
{
	if (q->nfree >= CHUNK_FREE_MAX) {
		free(c);
		return;
	}
	c->next = q->freechunks;
	q->freechunks = c;
	q->nfree++;
}

/* ---- stream table, list and send ring ---- */

static size_t hslot(const struct net_quic *q, int64_t sid)
{
	/* the two low bits are the stream type; the rest counts up */
	return ((uint64_t)sid >> 2) & (q->hcap - 1);
}

static struct qstream *stream_find(const struct net_quic *q, int64_t sid)
{
	struct qstream *s;

	if (!q->htab)
		return NULL;
	for (s = q->htab[hslot(q, sid)]; s; s = s->hnext)
		if (s->sid == sid)
			return s;
	return NULL;
}

/* Makes room for one more stream so that inserting cannot fail later. */
static int htab_reserve(struct net_quic *q)
{
	struct qstream **nt;
	size_t ncap, i;

	if (q->htab && (q->nstreams + 1) * 2 <= q->hcap)
		return 0;
	ncap = q->hcap ? q->hcap * 2 : HTAB_MIN;
	nt = calloc(ncap, sizeof(*nt));
	if (!nt)
		return q->htab && q->nstreams < q->hcap * 4 ? 0 : -ENOMEM; /* chains just get longer */
	for (i = 0; i < q->hcap; i++) {
		struct qstream *s = q->htab[i], *n;
		for (; s; s = n) {
			size_t j = ((uint64_t)s->sid >> 2) & (ncap - 1);
			n = s->hnext;
			s->hnext = nt[j];
			nt[j] = s;
		}
	}
	free(q->htab);
	q->htab = nt;
	q->hcap = ncap;
	return 0;
}

static void ring_add(struct net_quic *q, struct qstream *s)
{
	if (s->in_ring)
		return;
	s->in_ring = 1;
	if (!q->ring) {
		s->rnext = s->rprev = s;
		q->ring = s;
	} else {
		/* behind the current head: it gets its turn after everyone already waiting */
		s->rnext = q->ring;
		s->rprev = q->ring->rprev;
		s->rprev->rnext = s;
		q->ring->rprev = s;
	}
	q->nring++;
}

static void ring_remove(struct net_quic *q, struct qstream *s)
{
	if (!s->in_ring)
		return;
	s->in_ring = 0;
	if (s->rnext == s) {
		q->ring = NULL;
	} else {
		s->rprev->rnext = s->rnext;
		s->rnext->rprev = s->rprev;
		if (q->ring == s)
			q->ring = s->rnext;
	}
	s->rnext = s->rprev = NULL;
	q->nring--;
}

static void stream_wake(struct net_quic *q, struct qstream *s)
{
	if (s->started && !s->sleeping && !s->blocked && !s->shut && !s->closed && !s->fin_sent)
		ring_add(q, s);
}

/* Caller has called htab_reserve. */
static struct qstream *stream_new(struct net_quic *q, int64_t sid)
{
	struct qstream *s = calloc(1, sizeof(*s));
	size_t h;

	if (!s)
		return NULL;
	s->sid = sid;
	h = hslot(q, sid);
	s->hnext = q->htab[h];
	q->htab[h] = s;
	s->next = q->all;
	if (q->all)
		q->all->prev = s;
	q->all = s;
	q->nstreams++;
	return s;
}

static void stream_release_chunks(struct net_quic *q, struct qstream *s)
{
	struct chunk *c, *n;

	for (c = s->head; c; c = n) {
		n = c->next;
		chunk_put(q, c);
	}
	s->head = s->tail = s->send = NULL;
}

/* Unlinks s, tells the owner, and parks the struct until no pointer to it can be on the stack. */
static void stream_finish(struct net_quic *q, struct qstream *s, uint64_t app_error)
{
	struct qstream **pp;

	if (s->closed)
		return;
	s->closed = 1;
	ring_remove(q, s);
	for (pp = &q->htab[hslot(q, s->sid)]; *pp; pp = &(*pp)->hnext)
		if (*pp == s) {
			*pp = s->hnext;
			break;
		}
	if (s->prev)
		s->prev->next = s->next;
	else
		q->all = s->next;
	if (s->next)
		s->next->prev = s->prev;
	q->nstreams--;
	stream_release_chunks(q, s);
	if (q->conn && q->st != ST_DEAD)
		ngtcp2_conn_set_stream_user_data(q->conn, s->sid, NULL);
	if (q->cb.closed)
		q->cb.closed(q->cb.ctx, s->sid, s->user, app_error);
	s->prev = NULL;
	s->next = q->grave;
	q->grave = s;
}

static void grave_empty(struct net_quic *q)
{
	struct qstream *s, *n;

	for (s = q->grave; s; s = n) {
		n = s->next;
		free(s);
	}
	q->grave = NULL;
}

static void drop_all_streams(struct net_quic *q)
{
	while (q->all)
		stream_finish(q, q->all, NET_DP_GONE);
}

/* Resets both directions. Write side first: ngtcp2 0.12 prepends control frames, so STOP_SENDING then
 * leads the packet and creates the stream at a peer that has never seen it; a RESET_STREAM arriving
 * first would be consumed without a stream and the peer would never reset its own side toward us. */
static void shutdown_both(struct net_quic *q, struct qstream *s, uint64_t code)
{
	s->shut = 1;
	(void)ngtcp2_conn_shutdown_stream_write(q->conn, s->sid, code);
	(void)ngtcp2_conn_shutdown_stream_read(q->conn, s->sid, code);
}

/* A reset asked for from inside an ngtcp2 call (a callback, fill() during packet assembly) waits until
 * ngtcp2 may be called again; the stream stops sending and receiving at once. */
static void stream_request_reset(struct net_quic *q, struct qstream *s, uint64_t code)
{
	ring_remove(q, s);
	if (s->shut || s->closed)
		return;
	if (q->in_ng) {
		if (!s->pending_reset) {
			s->pending_reset = 1;
			s->reset_code = code;
			q->npending++;
		}
		return;
	}
	shutdown_both(q, s, code);
}

static void apply_pending_resets(struct net_quic *q)
{
	struct qstream *s;

	if (!q->npending)
		return;
	for (s = q->all; s && q->npending; s = s->next) {
		if (!s->pending_reset)
			continue;
		s->pending_reset = 0;
		q->npending--;
		if (!s->shut)
			shutdown_both(q, s, s->reset_code);
	}
	q->npending = 0;
}

/* ---- pulling payload from the owner ---- */

/* Returns 1 when s has bytes or a fin to write, 0 when it has nothing now, -ENOMEM. */
static int stream_refill(struct net_quic *q, struct qstream *s)
{
	while (!s->fin_filled && !s->sleeping && !s->shut && s->filled - s->sent <= UNSENT_LOW) {
		struct chunk *c = s->tail;
		int fresh = 0, fin = 0;
		size_t cap;
		ssize_t n;

		if (!c || c->len == CHUNK_SIZE) {
			c = chunk_get(q);
			if (!c)
				return s->filled > s->sent ? 1 : -ENOMEM;
			c->off = s->filled;
			fresh = 1;
		}
		cap = CHUNK_SIZE - c->len;
		n = q->cb.fill(q->cb.ctx, s->sid, s->user, c->data + c->len, cap, &fin);
		if (n < 0 || (size_t)n > cap) {
			if (fresh)
				chunk_put(q, c);
			stream_request_reset(q, s, n < 0 ? (uint64_t)-n : (uint64_t)EOVERFLOW);
			return 0;
		}
		if (fresh) {
			if (n == 0) {
				chunk_put(q, c); /* a sleeping stream holds no empty chunk */
			} else {
				if (s->tail)
					s->tail->next = c;
				else
					s->head = c;
				s->tail = c;
				if (!s->send)
					s->send = c;
			}
		}
		c->len += (size_t)n;
		s->filled += (uint64_t)n;
		if (fin)
			s->fin_filled = 1;
		else if (n == 0)
			s->sleeping = 1;
		if ((size_t)n < cap)
			break; /* the owner gave what it had; ask again on the next turn */
	}
	if (s->shut)
		return 0;
	return s->filled > s->sent || (s->fin_filled && !s->fin_sent);
}

static size_t stream_vecs(struct qstream *s, ngtcp2_vec *v, size_t max)
{
	struct chunk *c = s->send;
	uint64_t pos = s->sent;
	size_t n = 0;

	while (c && c->off + c->len <= pos && c->next)
		c = c->next;
	s->send = c;
	for (; c && n < max; c = c->next) {
		size_t skip;
		if (c->off + c->len <= pos)
			continue;
		skip = (size_t)(pos - c->off);
		v[n].base = c->data + skip;
		v[n].len = c->len - skip;
		pos += v[n].len;
		n++;
	}
	return n;
}

/* ---- ngtcp2 callbacks ---- */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
	return ((struct qconn *)ref->user_data)->conn;
}

/* The attempt (or the client's connection) conn belongs to. */
static struct qconn *qconn_of(struct net_quic *q, const ngtcp2_conn *conn)
{
	size_t i;

	for (i = 0; i < NET_QUIC_MAX_PENDING; i++)
		if (q->att[i].used && q->att[i].conn == conn)
			return &q->att[i];
	return NULL;
}

static void rand_cb(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
	(void)ctx;
	(void)gnutls_rnd(GNUTLS_RND_NONCE, dest, len);
}

static int new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *ud)
{
	(void)conn;
	(void)ud;
	if (gnutls_rnd(GNUTLS_RND_NONCE, cid->data, cidlen) != 0 ||
	    gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
		return NGTCP2_ERR_CALLBACK_FAILURE;
	cid->datalen = cidlen;
	return 0;
}

/* The handshake proved the secret. On the server this attempt becomes the connection here, inside
 * ngtcp2_conn_read_pkt, so that stream frames coalesced behind the client's Finished find it; the other
 * attempts are dropped and the secret forgotten once the call returns (conn_read). */
static int handshake_completed_cb(ngtcp2_conn *conn, void *ud)
{
	struct net_quic *q = ud;
	struct qconn *a = qconn_of(q, conn);
	gnutls_datum_t alpn;

	if (!a || (q->c && q->c != a))
		return NGTCP2_ERR_CALLBACK_FAILURE; /* never: one connection per server object */
	if (gnutls_alpn_get_selected_protocol(a->tls, &alpn) != 0 || alpn.size != strlen(NET_QUIC_ALPN) ||
	    memcmp(alpn.data, NET_QUIC_ALPN, alpn.size) != 0) {
		a->alpn_bad = 1;
		return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	a->hs_done = 1;
	q->c = a;
	q->conn = conn;
	q->hs_done = 1;
	return 0;
}

static struct qstream *remote_stream(struct net_quic *q, int64_t sid)
{
	struct qstream *s = stream_find(q, sid);

	if (s)
		return s;
	if (htab_reserve(q) < 0 || !(s = stream_new(q, sid)))
		return NULL;
	ngtcp2_conn_set_stream_user_data(q->conn, sid, s);
	return s;
}

static int stream_open_cb(ngtcp2_conn *conn, int64_t sid, void *ud)
{
	(void)conn;
	if (!ngtcp2_is_bidi_stream(sid))
		return 0; /* we allow no unidirectional streams, ngtcp2 refuses them */
	return remote_stream(ud, sid) ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static int recv_stream_data_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t offset,
                               const uint8_t *data, size_t len, void *ud, void *sud)
{
	struct net_quic *q = ud;
	struct qstream *s = sud;
	int rv;

	(void)offset;
	if (!s) {
		s = remote_stream(q, sid);
		if (!s)
			return NGTCP2_ERR_CALLBACK_FAILURE;
	}
	/* the connection window is ours to credit whatever the stream does with the bytes */
	ngtcp2_conn_extend_max_offset(conn, len);
	if (s->shut || s->closed || s->pending_reset)
		return 0;
	rv = q->cb.recv(q->cb.ctx, sid, &s->user, data, len, (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
	if (rv < 0) {
		stream_request_reset(q, s, (uint64_t)-rv);
		return 0;
	}
	ngtcp2_conn_extend_max_stream_offset(conn, sid, len);
	if (!s->started) {
		/* a peer-opened stream may answer once its owner has seen it */
		s->started = 1;
		stream_wake(q, s);
	}
	return 0;
}

static int acked_cb(ngtcp2_conn *conn, int64_t sid, uint64_t offset, uint64_t len, void *ud, void *sud)
{
	struct net_quic *q = ud;
	struct qstream *s = sud;
	struct chunk *c;

	(void)conn;
	(void)sid;
	if (!s)
		return 0;
	s->acked = offset + len;
	while ((c = s->head) && c->off + c->len <= s->acked && (c != s->tail || c->len == CHUNK_SIZE)) {
		s->head = c->next;
		if (s->send == c)
			s->send = c->next;
		if (s->tail == c)
			s->tail = NULL;
		chunk_put(q, c);
	}
	return 0;
}

static int stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t app_error, void *ud,
                           void *sud)
{
	struct net_quic *q = ud;

	if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
		app_error = 0;
	else if (app_error == 0)
		app_error = ECONNRESET; /* a reset is never reported as success */
	/* ngtcp2 0.12 leaves stream credit to us: every remote stream that ends frees one slot */
	if (ngtcp2_is_bidi_stream(sid) && !ngtcp2_conn_is_local_stream(conn, sid))
		ngtcp2_conn_extend_max_streams_bidi(conn, 1);
	if (sud)
		stream_finish(q, sud, app_error);
	return 0;
}

static int stream_reset_cb(ngtcp2_conn *conn, int64_t sid, uint64_t final_size, uint64_t app_error, void *ud,
                           void *sud)
{
	(void)conn;
	(void)sid;
	(void)final_size;
	/* a reset ends the stream in both directions: stop sending too */
	if (sud)
		stream_request_reset(ud, sud, app_error ? app_error : ECONNRESET);
	return 0;
}

static int extend_max_stream_data_cb(ngtcp2_conn *conn, int64_t sid, uint64_t max_data, void *ud, void *sud)
{
	struct qstream *s = sud;

	(void)conn;
	(void)sid;
	(void)max_data;
	if (s && s->blocked) {
		s->blocked = 0;
		stream_wake(ud, s);
	}
	return 0;
}

static void fill_callbacks(ngtcp2_callbacks *cb, int server)
{
	memset(cb, 0, sizeof(*cb));
	if (server) {
		cb->recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
	} else {
		cb->client_initial = ngtcp2_crypto_client_initial_cb;
		cb->recv_retry = ngtcp2_crypto_recv_retry_cb;
	}
	cb->recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
	cb->handshake_completed = handshake_completed_cb;
	cb->encrypt = ngtcp2_crypto_encrypt_cb;
	cb->decrypt = ngtcp2_crypto_decrypt_cb;
	cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
	cb->recv_stream_data = recv_stream_data_cb;
	cb->acked_stream_data_offset = acked_cb;
	cb->stream_open = stream_open_cb;
	cb->stream_close = stream_close_cb;
	cb->stream_reset = stream_reset_cb;
	cb->extend_max_stream_data = extend_max_stream_data_cb;
	cb->rand = rand_cb;
	cb->get_new_connection_id = new_cid_cb;
	cb->update_key = ngtcp2_crypto_update_key_cb;
	cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
	cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
	cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
	cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
}

static void fill_settings(const struct net_quic *q, ngtcp2_settings *st, uint64_t ts)
{
	ngtcp2_settings_default(st);
	st->initial_ts = ts;
	st->cc_algo = q->cfg.cc == NET_QUIC_CC_CUBIC  ? NGTCP2_CC_ALGO_CUBIC
	              : q->cfg.cc == NET_QUIC_CC_BBR2 ? NGTCP2_CC_ALGO_BBR2
	                                              : NGTCP2_CC_ALGO_BBR;
	st->max_tx_udp_payload_size = TX_PAYLOAD_MAX;
	st->handshake_timeout = (uint64_t)q->cfg.handshake_timeout_ms * NGTCP2_MILLISECONDS;
}

static void fill_params(const struct net_quic *q, ngtcp2_transport_params *p)
{
	ngtcp2_transport_params_default(p);
	p->initial_max_streams_bidi = q->cfg.max_streams;
	p->initial_max_streams_uni = 0;
	p->initial_max_stream_data_bidi_local = q->cfg.max_stream_data;
	p->initial_max_stream_data_bidi_remote = q->cfg.max_stream_data;
	p->initial_max_stream_data_uni = 0;
	p->initial_max_data = q->cfg.max_data;
	p->max_idle_timeout = (uint64_t)q->cfg.idle_timeout_ms * NGTCP2_MILLISECONDS;
	p->max_udp_payload_size = RX_PAYLOAD_MAX;
}

/* ---- TLS ---- */

static int psk_server_cb(gnutls_session_t session, const gnutls_datum_t *username, gnutls_datum_t *key)
{
	ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
	struct net_quic *q = ((struct qconn *)ref->user_data)->q;

	/* once a connection is accepted the secret is gone and nobody gets a key */
	if (q->secret_gone)
		return -1;
	/* the identity is not secret; the key is, and only the right identity gets it */
	if (username->size != q->idlen || memcmp(username->data, q->id, q->idlen) != 0)
		return -1;
	key->data = gnutls_malloc(NET_QUIC_PSK_LEN);
	if (!key->data)
		return -1;
	memcpy(key->data, q->psk, NET_QUIC_PSK_LEN);
	key->size = NET_QUIC_PSK_LEN;
	return 0;
}

/* The client hands GnuTLS a copy per handshake instead of storing the key in the credentials: GnuTLS
 * 3.7 frees credentials without wiping them, while this copy ends in the session's binder state, which
 * it wipes when the handshake ends. */
static int psk_client_cb(gnutls_session_t session, gnutls_datum_t *username, gnutls_datum_t *key)
{
	ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(session);
	struct net_quic *q = ((struct qconn *)ref->user_data)->q;

	if (q->secret_gone)
		return -1;
	username->data = gnutls_malloc(q->idlen + 1);
	key->data = gnutls_malloc(NET_QUIC_PSK_LEN);
	if (!username->data || !key->data) {
		gnutls_free(username->data);
		gnutls_free(key->data);
		username->data = key->data = NULL;
		return -1;
	}
	memcpy(username->data, q->id, q->idlen + 1);
	username->size = (unsigned)q->idlen;
	memcpy(key->data, q->psk, NET_QUIC_PSK_LEN);
	key->size = NET_QUIC_PSK_LEN;
	return 0;
}

static int alpn_check_hook(gnutls_session_t session, unsigned htype, unsigned when, unsigned incoming,
                           const gnutls_datum_t *msg)
{
	gnutls_datum_t alpn;

	(void)htype;
	(void)when;
	(void)incoming;
	(void)msg;
	if (gnutls_alpn_get_selected_protocol(session, &alpn) != 0 || alpn.size != strlen(NET_QUIC_ALPN) ||
	    memcmp(alpn.data, NET_QUIC_ALPN, alpn.size) != 0)
		return GNUTLS_E_NO_APPLICATION_PROTOCOL;
	return 0;
}

/* A TLS session for a (caller frees a->tls on failure). */
static int tls_session_new(struct net_quic *q, struct qconn *a, struct qs_err *err)
{
	const gnutls_datum_t alpn = {(unsigned char *)NET_QUIC_ALPN, (unsigned)strlen(NET_QUIC_ALPN)};
	unsigned flags = (q->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_TICKETS;
	int rv;

	a->q = q;
	a->ref.get_conn = get_conn;
	a->ref.user_data = a;
	rv = gnutls_init(&a->tls, flags);
	if (rv < 0) {
		a->tls = NULL;
		return qs_err_set(err, -ENOMEM, "gnutls_init: %s", gnutls_strerror(rv));
	}
	rv = q->server ? ngtcp2_crypto_gnutls_configure_server_session(a->tls)
	               : ngtcp2_crypto_gnutls_configure_client_session(a->tls);
	if (rv != 0)
		return qs_err_set(err, -EPROTO, "ngtcp2_crypto_gnutls_configure_session failed");
	rv = gnutls_priority_set_direct(a->tls, priority, NULL);
	if (rv < 0)
		return qs_err_set(err, -EPROTO, "gnutls_priority_set_direct: %s", gnutls_strerror(rv));
	rv = gnutls_credentials_set(a->tls, GNUTLS_CRD_PSK, q->server ? (void *)q->scred : (void *)q->ccred);
	if (rv < 0)
		return qs_err_set(err, -EPROTO, "gnutls_credentials_set: %s", gnutls_strerror(rv));
	rv = gnutls_alpn_set_protocols(a->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY);
	if (rv < 0)
		return qs_err_set(err, -EPROTO, "gnutls_alpn_set_protocols: %s", gnutls_strerror(rv));
	if (q->server)
		gnutls_handshake_set_hook_function(a->tls, GNUTLS_HANDSHAKE_CLIENT_HELLO, GNUTLS_HOOK_POST,
		                                   alpn_check_hook);
	gnutls_session_set_ptr(a->tls, &a->ref);
	return 0;
}

/* ---- socket ---- */

static void sock_tune(int fd)
{
	int v = SOCK_BUF;

	/* FORCE passes rmem_max when we are root; otherwise the plain call gets what the sysctl allows */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) != 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) != 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	v = IP_PMTUDISC_DO;
	(void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof(v));
	v = 1; /* take trains of datagrams in one buffer; the kernel says the segment size */
	(void)setsockopt(fd, SOL_UDP, UDP_GRO, &v, sizeof(v));
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
	}
	return false;
}

/* The IP of sa as IPv6 (IPv4 as ::ffff:a.b.c.d). False for other families or a short len. */
static bool ip_of(const struct sockaddr *sa, socklen_t len, struct in6_addr *ip)
{
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *a4 = (const void *)sa;
		memset(ip, 0, sizeof(*ip));
		ip->s6_addr[10] = 0xff;
		ip->s6_addr[11] = 0xff;
		memcpy(&ip->s6_addr[12], &a4->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		*ip = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		return true;
	}
	return false;
}

/* net_quic_server_allow's filter: may a datagram from src be looked at? */
static bool src_allowed(const struct net_quic *q, const struct sockaddr_storage *src, socklen_t srclen)
{
	struct in6_addr ip;

	if (!q->allow_set)
		return true;
	return ip_of((const struct sockaddr *)src, srclen, &ip) && !memcmp(&ip, &q->allow, sizeof(ip));
}

static void make_path(struct net_quic *q, ngtcp2_path *path, struct sockaddr_storage *remote, socklen_t rlen)
{
	memset(path, 0, sizeof(*path));
	path->local.addr = (ngtcp2_sockaddr *)&q->local;
	path->local.addrlen = q->locallen;
	path->remote.addr = (ngtcp2_sockaddr *)remote;
	path->remote.addrlen = rlen;
}

/* Hands tx[txdone..ntx) to the kernel. Runs of equal-sized packets (the last may be shorter) leave as one
 * UDP GSO send when the kernel allows it. -EAGAIN when the socket is full (the rest waits). */
static int tx_flush(struct net_quic *q)
{
	struct mmsghdr msg[TX_BATCH];
	struct iovec iov[TX_BATCH];
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t))];
		struct cmsghdr align;
	} cm[TX_BATCH];
	size_t end[TX_BATCH];

	while (q->txdone < q->ntx) {
		size_t i = q->txdone, nmsg = 0;
		int r;

		while (i < q->ntx) {
			size_t first = i, seg = q->txlen[i], total = 0;
			struct msghdr *h = &msg[nmsg].msg_hdr;

			do {
				iov[i - q->txdone].iov_base = q->tx[i];
				iov[i - q->txdone].iov_len = q->txlen[i];
				total += q->txlen[i];
				i++;
			} while (q->gso && i < q->ntx && q->txlen[i - 1] == seg && q->txlen[i] <= seg &&
			         i - first < GSO_SEGS_MAX && total + q->txlen[i] <= GSO_BYTES_MAX);
			memset(&msg[nmsg], 0, sizeof(msg[nmsg]));
			h->msg_iov = &iov[first - q->txdone];
			h->msg_iovlen = i - first;
			if (q->server) {
				h->msg_name = &q->txto->peer;
				h->msg_namelen = q->txto->peerlen;
			}
			if (i - first > 1) {
				struct cmsghdr *c;
				uint16_t gso = (uint16_t)seg;
				h->msg_control = cm[nmsg].buf;
				h->msg_controllen = sizeof(cm[nmsg].buf);
				c = CMSG_FIRSTHDR(h);
				c->cmsg_level = SOL_UDP;
				c->cmsg_type = UDP_SEGMENT;
				c->cmsg_len = CMSG_LEN(sizeof(gso));
				memcpy(CMSG_DATA(c), &gso, sizeof(gso));
			}
			end[nmsg++] = i;
		}
		r = sendmmsg(q->fd, msg, (unsigned)nmsg, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
				return -EAGAIN;
			if (q->gso && (errno == EIO || errno == EINVAL || errno == EOPNOTSUPP) &&
			    msg[0].msg_hdr.msg_controllen) {
				q->gso = 0; /* no GSO on this path: one datagram per packet from now on */
				continue;
			}
			/* ICMP errors, EMSGSIZE: these packets are lost; QUIC recovers lost packets */
			r = 1;
		}
		q->txdone = end[r - 1];
	}
	q->ntx = q->txdone = 0;
	return 0;
}

/* Server: what tx[] holds goes to a. Packets still queued for another peer are dropped (QUIC resends
 * lost packets; this happens only between handshake attempts, whose flights are small). */
static void tx_to(struct net_quic *q, struct qconn *a)
{
	if (q->txto != a) {
		q->ntx = q->txdone = 0;
		q->txto = a;
	}
}

/* ---- connection failure ---- */

static void describe_close(const ngtcp2_connection_close_error *ce, char *buf, size_t len)
{
	if (ce->type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT &&
	    ce->error_code >= NGTCP2_CRYPTO_ERROR && ce->error_code <= NGTCP2_CRYPTO_ERROR + 0xff) {
		const char *a = gnutls_alert_get_strname((gnutls_alert_description_t)(ce->error_code & 0xff));
		snprintf(buf, len, "TLS alert %s", a ? a : "unknown");
	} else if (ce->type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION) {
		snprintf(buf, len, "application error 0x%" PRIx64, ce->error_code);
	} else {
		snprintf(buf, len, "transport error 0x%" PRIx64, ce->error_code);
	}
}

/* Writes CONNECTION_CLOSE on a for the local error liberr (best effort, never blocks). */
static void send_close(struct net_quic *q, struct qconn *a, int liberr, uint64_t ts)
{
	ngtcp2_connection_close_error ce;
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	ngtcp2_ssize n;

	if (!a || !a->conn || ngtcp2_conn_is_in_closing_period(a->conn) ||
	    ngtcp2_conn_is_in_draining_period(a->conn))
		return;
	ngtcp2_connection_close_error_default(&ce);
	if (liberr == NGTCP2_ERR_CRYPTO)
		ngtcp2_connection_close_error_set_transport_error_tls_alert(
		    &ce, ngtcp2_conn_get_tls_alert(a->conn), NULL, 0);
	else if (liberr)
		ngtcp2_connection_close_error_set_transport_error_liberr(&ce, liberr, NULL, 0);
	if (q->server)
		tx_to(q, a);
	if (q->ntx == TX_BATCH && tx_flush(q) < 0)
		q->ntx = q->txdone = 0; /* the close matters more than what could not leave */
	ngtcp2_path_storage_zero(&ps);
	n = ngtcp2_conn_write_connection_close(a->conn, &ps.path, &pi, q->tx[q->ntx], TX_SLOT, &ce, ts);
	if (n > 0) {
		q->txlen[q->ntx++] = (size_t)n;
		(void)tx_flush(q);
	}
}

/* The connection is over: record why, tell every stream owner. Returns code. */
static int conn_dead(struct net_quic *q, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int conn_dead(struct net_quic *q, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q->dead_msg, sizeof(q->dead_msg), fmt, ap);
	va_end(ap);
	q->dead = code;
	q->st = ST_DEAD;
	drop_all_streams(q);
	return code;
}

/* Maps an ngtcp2 error on the live (or client) connection to the end of the connection. */
static int conn_fail(struct net_quic *q, int liberr, uint64_t ts)
{
	ngtcp2_connection_close_error ce;
	char why[96];
	bool refused = !q->server && !q->hs_done;

	switch (liberr) {
	case NGTCP2_ERR_DRAINING:
	case NGTCP2_ERR_CLOSING:
		ngtcp2_conn_get_connection_close_error(q->conn, &ce);
		describe_close(&ce, why, sizeof(why));
		if (refused)
			return conn_dead(q, -ECONNREFUSED,
			                 "QUIC handshake refused: the server closed it (%s)", why);
		if (ce.error_code == 0)
			return conn_dead(q, -ECONNABORTED, "peer closed the QUIC connection");
		return conn_dead(q, -ECONNABORTED, "peer closed the QUIC connection (%s)", why);
	case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
		return conn_dead(q, -ETIMEDOUT, "QUIC handshake did not complete within %u ms",
		                 q->cfg.handshake_timeout_ms);
	case NGTCP2_ERR_IDLE_CLOSE:
		if (!q->hs_done)
			return conn_dead(q, -ETIMEDOUT, "QUIC handshake timed out: no answer from the peer");
		return conn_dead(q, -ECONNABORTED,
		                 "QUIC connection idle timeout: nothing from the peer for %u ms",
		                 q->cfg.idle_timeout_ms);
	case NGTCP2_ERR_CRYPTO: {
		uint8_t alert = ngtcp2_conn_get_tls_alert(q->conn);
		const char *a = gnutls_alert_get_strname((gnutls_alert_description_t)alert);
		send_close(q, q->c, liberr, ts);
		if (refused)
			return conn_dead(q, -ECONNREFUSED, "QUIC handshake refused: TLS failure (alert %s)",
			                 a ? a : "unknown");
		return conn_dead(q, -EPROTO, "QUIC TLS failure (alert %s)", a ? a : "unknown");
	}
	case NGTCP2_ERR_NOMEM:
		send_close(q, q->c, liberr, ts);
		return conn_dead(q, -ENOMEM, "QUIC: out of memory");
	default:
		send_close(q, q->c, liberr, ts);
		if (q->c && q->c->alpn_bad)
			return conn_dead(q, -ECONNREFUSED,
			                 "QUIC handshake refused: the server did not select ALPN %s",
			                 NET_QUIC_ALPN);
		if (refused)
			return conn_dead(q, -ECONNREFUSED, "QUIC handshake refused: %s",
			                 ngtcp2_strerror(liberr));
		return conn_dead(q, -EPROTO, "QUIC connection error: %s", ngtcp2_strerror(liberr));
	}
}

/* ---- server: handshake attempts side by side ---- */

/* Forgets a (no CONNECTION_CLOSE). */
static void attempt_free(struct net_quic *q, struct qconn *a)
{
	if (a->conn)
		ngtcp2_conn_del(a->conn);
	if (a->tls)
		gnutls_deinit(a->tls);
	if (q->txto == a) {
		q->ntx = q->txdone = 0;
		q->txto = NULL;
	}
	memset(a, 0, sizeof(*a));
}

static bool cid_is(const ngtcp2_cid *cid, const uint8_t *data, size_t len)
{
	return cid->datalen == len && len > 0 && !memcmp(cid->data, data, len);
}

/* Keyed by address too: anyone can build an Initial for a DCID they have seen (Initial keys derive from
 * it), and a forged one refused from elsewhere must not shut out the client that owns the DCID. */
static bool refused_before(const struct net_quic *q, const ngtcp2_cid *dcid,
                           const struct sockaddr_storage *src)
{
	size_t i;

	for (i = 0; i < REJ_MEMORY; i++)
		if (cid_is(&q->rej[i].dcid, dcid->data, dcid->datalen) && same_addr(&q->rej[i].addr, src))
			return true;
	return false;
}

/* A handshake that failed (wrong secret, garbage, its own timeout): tell the client when it can use the
 * news (so it fails fast), remember its original DCID so retransmits do not count again, drop it. */
static void attempt_reject(struct net_quic *q, struct qconn *a, int liberr, uint64_t ts)
{
	if (liberr != NGTCP2_ERR_DROP_CONN && liberr != NGTCP2_ERR_DRAINING && liberr != NGTCP2_ERR_RETRY &&
	    liberr != NGTCP2_ERR_HANDSHAKE_TIMEOUT && liberr != NGTCP2_ERR_IDLE_CLOSE)
		send_close(q, a, liberr, ts);
	q->rej[q->rejnext].dcid = a->odcid;
	q->rej[q->rejnext].addr = a->peer;
	q->rejnext = (q->rejnext + 1) % REJ_MEMORY;
	attempt_free(q, a);
	q->rejected++;
}

/* Opens an attempt for a valid client Initial. When every slot is busy the oldest attempt is evicted
 * (counted, not remembered: a client evicted early may come back with a retransmitted Initial), so a
 * stream of Initials from others cannot keep the right client out for longer than it keeps up. */
static struct qconn *attempt_open(struct net_quic *q, const uint8_t *pkt, size_t len,
                                  const struct sockaddr_storage *src, socklen_t srclen, uint64_t ts)
{
	ngtcp2_callbacks cbs;
	ngtcp2_settings st;
	ngtcp2_transport_params params;
	ngtcp2_pkt_hd hd;
	ngtcp2_path path;
	struct qconn *a = NULL;
	size_t i;
	int rv;

	if (ngtcp2_accept(&hd, pkt, len) != 0 || hd.type != NGTCP2_PKT_INITIAL)
		return NULL;
	if (refused_before(q, &hd.dcid, src))
		return NULL; /* a retransmission of an attempt we refused */
	for (i = 0; i < NET_QUIC_MAX_PENDING; i++) {
		struct qconn *b = &q->att[i];
		if (!b->used) {
			a = b;
			break;
		}
		if (!a || b->seq < a->seq)
			a = b;
	}
	if (a->used) {
		attempt_free(q, a);
		q->rejected++;
	}
	a->used = 1;
	memcpy(&a->peer, src, srclen);
	a->peerlen = srclen;
	a->odcid = hd.dcid;
	a->seq = q->nopened++;
	a->deadline = ts + (uint64_t)q->cfg.handshake_timeout_ms * NGTCP2_MILLISECONDS;
	if (tls_session_new(q, a, NULL) < 0)
		goto fail;
	a->scid.datalen = SCID_LEN;
	if (gnutls_rnd(GNUTLS_RND_NONCE, a->scid.data, SCID_LEN) != 0)
		goto fail;
	fill_callbacks(&cbs, 1);
	fill_settings(q, &st, ts);
	fill_params(q, &params);
	params.original_dcid = hd.dcid;
	params.stateless_reset_token_present = 1;
	if (gnutls_rnd(GNUTLS_RND_RANDOM, params.stateless_reset_token,
	               sizeof(params.stateless_reset_token)) != 0)
		goto fail;
	make_path(q, &path, &a->peer, a->peerlen);
	rv = ngtcp2_conn_server_new(&a->conn, &hd.scid, &a->scid, &path, hd.version, &cbs, &st, &params, NULL,
	                            q);
	if (rv != 0) {
		a->conn = NULL;
		goto fail;
	}
	ngtcp2_conn_set_tls_native_handle(a->conn, a->tls);
	return a;
fail:
	attempt_free(q, a);
	return NULL;
}

/* Sends what every attempt has to send; an attempt whose packet assembly fails is refused. */
static void attempts_send(struct net_quic *q, uint64_t ts)
{
	size_t i;

	for (i = 0; i < NET_QUIC_MAX_PENDING; i++) {
		struct qconn *a = &q->att[i];
		ngtcp2_path_storage ps;
		ngtcp2_pkt_info pi;
		unsigned npkt;

		if (!a->used || ngtcp2_conn_is_in_closing_period(a->conn) ||
		    ngtcp2_conn_is_in_draining_period(a->conn))
			continue;
		tx_to(q, a);
		ngtcp2_path_storage_zero(&ps);
		for (npkt = 0; npkt < TX_BATCH; npkt++) {
			ngtcp2_ssize n =
			    ngtcp2_conn_writev_stream(a->conn, &ps.path, &pi, q->tx[q->ntx], TX_SLOT, NULL,
			                              NGTCP2_WRITE_STREAM_FLAG_NONE, -1, NULL, 0, ts);
			if (n < 0) {
				attempt_reject(q, a, (int)n, ts);
				break;
			}
			if (n == 0)
				break;
			q->txlen[q->ntx++] = (size_t)n;
			if (q->ntx == TX_BATCH && tx_flush(q) < 0)
				break;
		}
		if (a->used)
			(void)tx_flush(q);
		q->ntx = q->txdone = 0; /* what did not leave is lost: QUIC resends it */
	}
}

/* Runs the attempts' timers: each has its own deadline (the handshake timeout from its first Initial). */
static void attempts_expire(struct net_quic *q, uint64_t ts)
{
	size_t i;

	for (i = 0; i < NET_QUIC_MAX_PENDING; i++) {
		struct qconn *a = &q->att[i];
		int rv;

		if (!a->used)
			continue;
		if (ts >= a->deadline) {
			attempt_reject(q, a, NGTCP2_ERR_HANDSHAKE_TIMEOUT, ts);
			continue;
		}
		if (ngtcp2_conn_get_expiry(a->conn) > ts)
			continue;
		rv = ngtcp2_conn_handle_expiry(a->conn, ts);
		if (rv != 0)
			attempt_reject(q, a, rv, ts);
	}
}

/* The connection's handshake is complete: on the server every other attempt goes (silently, uncounted)
 * and no handshake will be accepted any more; on both sides the secret is wiped and the PSK credentials
 * freed. Nothing refers to the credentials after the handshake (no tickets, no post-handshake
 * authentication); the session's pointer to them is cleared first all the same, so a late lookup finds
 * none instead of freed memory. */
static void conn_established(struct net_quic *q)
{
	size_t i;

	for (i = 0; i < NET_QUIC_MAX_PENDING; i++)
		if (q->att[i].used && &q->att[i] != q->c)
			attempt_free(q, &q->att[i]);
	if (q->c->tls)
		gnutls_credentials_clear(q->c->tls);
	if (q->scred) {
		gnutls_psk_free_server_credentials(q->scred);
		q->scred = NULL;
	}
	if (q->ccred) {
		gnutls_psk_free_client_credentials(q->ccred);
		q->ccred = NULL;
	}
	gnutls_memset(q->psk, 0, sizeof(q->psk));
	q->secret_gone = 1;
	if (q->st != ST_DEAD)
		q->st = ST_OPEN;
	/* a PING when nothing has moved for a third of the idle timeout, so a quiet but healthy path (a
	 * slow disk, a long walk) is not taken for a dead one */
	if (q->c && q->c->conn)
		ngtcp2_conn_set_keep_alive_timeout(q->c->conn, (uint64_t)q->cfg.idle_timeout_ms *
		                                                   NGTCP2_MILLISECONDS / 3);
}

/* ---- receiving ---- */

/* Feeds one datagram to a: the connection, or a server's attempt. */
static int conn_read(struct net_quic *q, struct qconn *a, const uint8_t *pkt, size_t len, uint64_t ts)
{
	ngtcp2_path path;
	ngtcp2_pkt_info pi = {0};
	int rv;

	make_path(q, &path, &a->peer, a->peerlen);
	q->in_ng = 1;
	rv = ngtcp2_conn_read_pkt(a->conn, &path, &pi, pkt, len, ts);
	q->in_ng = 0;
	if (q->c != a) {
		/* still an attempt: its failure is not the server's */
		if (rv != 0)
			attempt_reject(q, a, rv, ts);
		return 0;
	}
	if (q->hs_done && !q->secret_gone)
		conn_established(q);
	if (rv == 0) {
		apply_pending_resets(q);
		return 0;
	}
	return conn_fail(q, rv, ts);
}

/* Server without a connection: the datagram goes to the attempt with its address and DCID (the client's
 * first or ours), or opens a new attempt if it is a client Initial. The address is part of the key, so an
 * Initial replayed (or forged: Initial keys derive from the DCID) from elsewhere gets an attempt of its
 * own and cannot take over or shut out the client's. */
static int attempts_read(struct net_quic *q, const uint8_t *pkt, size_t len,
                         const struct sockaddr_storage *src, socklen_t srclen, uint64_t ts)
{
	ngtcp2_version_cid vc;
	struct qconn *a;
	size_t i;

	if (ngtcp2_pkt_decode_version_cid(&vc, pkt, len, SCID_LEN) != 0 || vc.dcidlen > NGTCP2_MAX_CIDLEN)
		return 0;
	for (i = 0; i < NET_QUIC_MAX_PENDING; i++) {
		a = &q->att[i];
		if (a->used && same_addr(src, &a->peer) &&
		    (cid_is(&a->odcid, vc.dcid, vc.dcidlen) || cid_is(&a->scid, vc.dcid, vc.dcidlen)))
			return conn_read(q, a, pkt, len, ts);
	}
	a = attempt_open(q, pkt, len, src, srclen, ts);
	return a ? conn_read(q, a, pkt, len, ts) : 0;
}

static int on_datagram(struct net_quic *q, const uint8_t *pkt, size_t len, struct sockaddr_storage *src,
                       socklen_t srclen, uint64_t ts)
{
	if (q->server) {
		if (!src_allowed(q, src, srclen))
			return 0; /* not the address SSH named: no answer at all */
		if (!q->c)
			return attempts_read(q, pkt, len, src, srclen, ts);
		if (!same_addr(src, &q->c->peer))
			return 0; /* one client per server object; others are not answered */
	}
	return conn_read(q, q->c, pkt, len, ts);
}

/* The size of the datagrams a GRO buffer holds, or len when it holds one. */
static size_t gro_segment(struct msghdr *h, size_t len)
{
	struct cmsghdr *c;

	for (c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
		if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
			int seg;
			memcpy(&seg, CMSG_DATA(c), sizeof(seg));
			return seg > 0 ? (size_t)seg : len;
		}
	}
	return len;
}

static int rx_drain(struct net_quic *q, uint64_t ts)
{
	struct mmsghdr msg[RX_BATCH];
	struct iovec iov[RX_BATCH];
	struct sockaddr_storage src[RX_BATCH];
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cm[RX_BATCH];
	unsigned round, i;

	for (round = 0; round < RX_ROUNDS; round++) {
		int n;
		for (i = 0; i < RX_BATCH; i++) {
			iov[i].iov_base = q->rx[i];
			iov[i].iov_len = RX_SLOT;
			memset(&msg[i], 0, sizeof(msg[i]));
			msg[i].msg_hdr.msg_iov = &iov[i];
			msg[i].msg_hdr.msg_iovlen = 1;
			msg[i].msg_hdr.msg_name = &src[i];
			msg[i].msg_hdr.msg_namelen = sizeof(src[i]);
			msg[i].msg_hdr.msg_control = cm[i].buf;
			msg[i].msg_hdr.msg_controllen = sizeof(cm[i].buf);
		}
		n = recvmmsg(q->fd, msg, RX_BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == ECONNREFUSED)
				continue; /* ICMP for an earlier datagram */
			return conn_dead(q, -errno, "QUIC recvmmsg: %s", strerror(errno));
		}
		for (i = 0; i < (unsigned)n; i++) {
			size_t len = msg[i].msg_len, seg, off;
			if (msg[i].msg_hdr.msg_flags & MSG_TRUNC)
				continue;
			seg = gro_segment(&msg[i].msg_hdr, len);
			for (off = 0; off < len; off += seg) {
				size_t dlen = len - off < seg ? len - off : seg;
				int rv = on_datagram(q, q->rx[i] + off, dlen, &src[i],
				                     msg[i].msg_hdr.msg_namelen, ts);
				if (rv < 0)
					return rv;
				if (q->st == ST_DEAD)
					return q->dead;
			}
		}
		if ((unsigned)n < RX_BATCH)
			return 0;
	}
	return 0;
}

/* ---- sending ---- */

static struct qstream *pick_stream(struct net_quic *q, int *err)
{
	size_t tries = q->nring;

	while (q->ring && tries--) {
		struct qstream *s = q->ring;
		int r = stream_refill(q, s);
		if (r > 0)
			return s;
		if (r < 0) {
			*err = r;
			return NULL;
		}
		ring_remove(q, s); /* asleep, finished or reset: it returns through stream_wake */
	}
	return NULL;
}

/* Writes packets until ngtcp2 has nothing more, the socket is full, or the per-call budget is spent. */
static int tx_write(struct net_quic *q, uint64_t ts)
{
	ngtcp2_path_storage ps;
	ngtcp2_pkt_info pi;
	unsigned npkt = 0;
	int rv = 0;

	if (q->st == ST_DEAD)
		return 0;
	if (!q->conn) {
		if (q->server)
			attempts_send(q, ts);
		return 0;
	}
	if (ngtcp2_conn_is_in_closing_period(q->conn) || ngtcp2_conn_is_in_draining_period(q->conn))
		return 0;
	if (q->server)
		tx_to(q, q->c);
	if (tx_flush(q) < 0)
		return 0;
	ngtcp2_path_storage_zero(&ps);
	q->in_ng = 1;
	while (npkt < TX_PER_PROCESS) {
		uint8_t *buf = q->tx[q->ntx];
		unsigned stall = 0;
		ngtcp2_ssize n;

		for (;;) {
			ngtcp2_vec v[4];
			size_t nv = 0;
			ngtcp2_ssize ndata = -1;
			uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
			struct qstream *s = NULL;
			int perr = 0;

			if (q->hs_done && stall <= q->nring && ngtcp2_conn_get_max_data_left(q->conn) > 0) {
				s = pick_stream(q, &perr);
				if (perr < 0) {
					rv = conn_dead(q, perr, "QUIC: out of memory for send buffers");
					goto out;
				}
			}
			if (s) {
				nv = stream_vecs(s, v, 4);
				if (s->fin_filled) {
					uint64_t total = 0;
					size_t i;
					for (i = 0; i < nv; i++)
						total += v[i].len;
					if (s->sent + total == s->filled)
						flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
				}
			}
			n = ngtcp2_conn_writev_stream(q->conn, &ps.path, &pi, buf, TX_SLOT, &ndata, flags,
			                              s ? s->sid : -1, nv ? v : NULL, nv, ts);
			if (s && ndata >= 0) {
				s->sent += (uint64_t)ndata;
				q->bytes_sent += (uint64_t)ndata;
				if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && s->sent == s->filled) {
					s->fin_sent = 1;
					ring_remove(q, s);
				}
			}
			if (n == NGTCP2_ERR_WRITE_MORE) {
				/* The packet has room: the same stream goes on filling it while it has bytes
				 * (first come, first served); one that made no progress lets the next one
				 * try. */
				if (ndata <= 0) {
					stall++;
					if (s && s->in_ring && q->ring == s)
						q->ring = s->rnext;
				}
				continue;
			}
			if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED && s) {
				s->blocked = 1;
				ring_remove(q, s);
				continue;
			}
			if ((n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) && s) {
				s->shut = 1;
				ring_remove(q, s);
				continue;
			}
			if (n < 0) {
				q->in_ng = 0;
				rv = conn_fail(q, (int)n, ts);
				goto out;
			}
			break;
		}
		if (n == 0)
			break; /* nothing more now: congestion, pacing, or idle */
		q->txlen[q->ntx++] = (size_t)n;
		npkt++;
		if (q->ntx == TX_BATCH && tx_flush(q) < 0)
			break;
	}
	(void)tx_flush(q);
out:
	q->in_ng = 0;
	if (q->st != ST_DEAD) {
		/* No pacing during the handshake: with the 333 ms initial RTT the interval after the first
		 * Initial is ~27 ms, which would hold back the client's Finished. The bytes still count
		 * toward the first interval once the RTT has been measured. */
		if (q->hs_done)
			ngtcp2_conn_update_pkt_tx_time(q->conn, ts);
		apply_pending_resets(q);
	}
	return rv;
}

/* ---- public ---- */

static int check_args(const char *id, const uint8_t *psk, const struct net_dp_cb *cb, struct net_quic **out,
                      struct qs_err *err)
{
	size_t n;

	if (!id || !psk || !cb || !out || !cb->recv || !cb->fill || !cb->closed)
		return qs_err_set(err, -EINVAL, "net_quic: missing argument");
	n = strlen(id);
	if (n == 0 || n > ID_MAX)
		return qs_err_set(err, -EINVAL, "net_quic: PSK identity must be 1..%u bytes", ID_MAX);
	return 0;
}

static struct net_quic *quic_alloc(const char *id, const uint8_t *psk, const struct net_quic_cfg *cfg,
                                   const struct net_dp_cb *cb, int server)
{
	struct net_quic *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->fd = -1;
	q->server = server;
	q->gso = 1;
	if (cfg)
		q->cfg = *cfg;
	else
		net_quic_cfg_default(&q->cfg);
	if (!q->cfg.handshake_timeout_ms)
		q->cfg.handshake_timeout_ms = 10000;
	if (!q->cfg.idle_timeout_ms)
		q->cfg.idle_timeout_ms = 30000;
	q->cb = *cb;
	q->idlen = strlen(id);
	memcpy(q->id, id, q->idlen);
	memcpy(q->psk, psk, NET_QUIC_PSK_LEN);
	return q;
}

int net_quic_server_new(const char *bind_ip, uint16_t *port, const char *id,
                        const uint8_t psk[NET_QUIC_PSK_LEN], const struct net_quic_cfg *cfg,
                        const struct net_dp_cb *cb, struct net_quic **out, struct qs_err *err)
{
	struct net_quic *q = NULL;
	int rv;

	rv = check_args(id, psk, cb, out, err);
	if (rv < 0)
		return rv;
	if (!bind_ip || !port)
		return qs_err_set(err, -EINVAL, "net_quic: missing bind address");
	*out = NULL;
	q = quic_alloc(id, psk, cfg, cb, 1);
	if (!q)
		return qs_err_set(err, -ENOMEM, "net_quic: out of memory");
	memset(&q->local, 0, sizeof(q->local));
	{
		struct sockaddr_in *a4 = (struct sockaddr_in *)&q->local;
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&q->local;
		if (inet_pton(AF_INET, bind_ip, &a4->sin_addr) == 1) {
			a4->sin_family = AF_INET;
			a4->sin_port = htons(*port);
			q->locallen = sizeof(*a4);
		} else if (inet_pton(AF_INET6, bind_ip, &a6->sin6_addr) == 1) {
			a6->sin6_family = AF_INET6;
			a6->sin6_port = htons(*port);
			q->locallen = sizeof(*a6);
		} else {
			rv = qs_err_set(err, -EINVAL, "net_quic: bad bind address %s", bind_ip);
			goto out;
		}
	}
	q->fd = socket(q->local.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (q->fd < 0) {
		rv = qs_err_set(err, -errno, "net_quic: socket: %s", strerror(errno));
		goto out;
	}
	sock_tune(q->fd);
	if (bind(q->fd, (struct sockaddr *)&q->local, q->locallen) != 0) {
		rv = qs_err_set(err, -errno, "net_quic: bind %s:%u: %s", bind_ip, *port, strerror(errno));
		goto out;
	}
	q->locallen = sizeof(q->local);
	if (getsockname(q->fd, (struct sockaddr *)&q->local, &q->locallen) != 0) {
		rv = qs_err_set(err, -errno, "net_quic: getsockname: %s", strerror(errno));
		goto out;
	}
	*port = ntohs(q->local.ss_family == AF_INET ? ((struct sockaddr_in *)&q->local)->sin_port
	                                            : ((struct sockaddr_in6 *)&q->local)->sin6_port);
	rv = gnutls_psk_allocate_server_credentials(&q->scred);
	if (rv < 0) {
		q->scred = NULL;
		rv = qs_err_set(err, -ENOMEM, "gnutls_psk_allocate_server_credentials: %s",
		                gnutls_strerror(rv));
		goto out;
	}
	gnutls_psk_set_server_credentials_function2(q->scred, psk_server_cb);
	q->st = ST_LISTEN;
	*out = q;
	q = NULL;
	rv = 0;
out:
	net_quic_free(q);
	return rv;
}

int net_quic_server_allow(struct net_quic *q, const struct sockaddr *addr, socklen_t len)
{
	struct in6_addr ip;
	size_t i;

	if (!q || !q->server || !addr || !ip_of(addr, len, &ip))
		return -EINVAL;
	if (q->c)
		return -EISCONN;
	q->allow = ip;
	q->allow_set = 1;
	for (i = 0; i < NET_QUIC_MAX_PENDING; i++)
		if (q->att[i].used && !src_allowed(q, &q->att[i].peer, q->att[i].peerlen))
			attempt_free(q, &q->att[i]); /* not a failed handshake: not counted */
	return 0;
}

int net_quic_client_new(const struct sockaddr *peer, socklen_t peerlen, const char *id,
                        const uint8_t psk[NET_QUIC_PSK_LEN], const struct net_quic_cfg *cfg,
                        const struct net_dp_cb *cb, struct net_quic **out, struct qs_err *err)
{
	struct net_quic *q = NULL;
	ngtcp2_callbacks cbs;
	ngtcp2_settings st;
	ngtcp2_transport_params params;
	ngtcp2_cid dcid, scid;
	ngtcp2_path path;
	uint64_t ts = now_ns();
	int rv;

	rv = check_args(id, psk, cb, out, err);
	if (rv < 0)
		return rv;
	if (!peer || peerlen == 0 || peerlen > sizeof(struct sockaddr_storage) ||
	    (peer->sa_family != AF_INET && peer->sa_family != AF_INET6))
		return qs_err_set(err, -EINVAL, "net_quic: bad peer address");
	*out = NULL;
	q = quic_alloc(id, psk, cfg, cb, 0);
	if (!q)
		return qs_err_set(err, -ENOMEM, "net_quic: out of memory");
	q->c = &q->att[0];
	q->c->used = 1;
	memcpy(&q->c->peer, peer, peerlen);
	q->c->peerlen = peerlen;
	q->fd = socket(peer->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (q->fd < 0) {
		rv = qs_err_set(err, -errno, "net_quic: socket: %s", strerror(errno));
		goto out;
	}
	sock_tune(q->fd);
	if (connect(q->fd, peer, peerlen) != 0) {
		rv = qs_err_set(err, -errno, "net_quic: connect: %s", strerror(errno));
		goto out;
	}
	q->locallen = sizeof(q->local);
	if (getsockname(q->fd, (struct sockaddr *)&q->local, &q->locallen) != 0) {
		rv = qs_err_set(err, -errno, "net_quic: getsockname: %s", strerror(errno));
		goto out;
	}
	rv = gnutls_psk_allocate_client_credentials(&q->ccred);
	if (rv < 0) {
		q->ccred = NULL;
		rv = qs_err_set(err, -ENOMEM, "gnutls_psk_allocate_client_credentials: %s",
		                gnutls_strerror(rv));
		goto out;
	}
	gnutls_psk_set_client_credentials_function2(q->ccred, psk_client_cb);
	rv = tls_session_new(q, q->c, err);
	if (rv < 0)
		goto out;
	dcid.datalen = SCID_LEN;
	scid.datalen = SCID_LEN;
	if (gnutls_rnd(GNUTLS_RND_NONCE, dcid.data, SCID_LEN) != 0 ||
	    gnutls_rnd(GNUTLS_RND_NONCE, scid.data, SCID_LEN) != 0) {
		rv = qs_err_set(err, -EIO, "gnutls_rnd failed");
		goto out;
	}
	fill_callbacks(&cbs, 0);
	fill_settings(q, &st, ts);
	fill_params(q, &params);
	make_path(q, &path, &q->c->peer, q->c->peerlen);
	rv = ngtcp2_conn_client_new(&q->c->conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cbs, &st, &params,
	                            NULL, q);
	if (rv != 0) {
		q->c->conn = NULL;
		rv = qs_err_set(err, -ENOMEM, "ngtcp2_conn_client_new: %s", ngtcp2_strerror(rv));
		goto out;
	}
	q->conn = q->c->conn;
	ngtcp2_conn_set_tls_native_handle(q->conn, q->c->tls);
	q->st = ST_HANDSHAKE;
	/* the first flight (ClientHello) leaves now */
	rv = tx_write(q, ts);
	if (rv < 0) {
		rv = qs_err_set(err, rv, "%s", q->dead_msg);
		goto out;
	}
	*out = q;
	q = NULL;
	rv = 0;
out:
	net_quic_free(q);
	return rv;
}

int net_quic_fd(const struct net_quic *q)
{
	return q ? q->fd : -1;
}

int net_quic_timeout_ms(const struct net_quic *q)
{
	uint64_t exp, now;

	if (!q || q->st == ST_DEAD)
		return -1;
	if (q->ntx > q->txdone)
		return 1; /* the socket was full: try again soon */
	if (q->conn) {
		exp = ngtcp2_conn_get_expiry(q->conn);
	} else {
		size_t i;
		exp = UINT64_MAX;
		for (i = 0; i < NET_QUIC_MAX_PENDING; i++) {
			const struct qconn *a = &q->att[i];
			uint64_t e;
			if (!a->used)
				continue;
			e = ngtcp2_conn_get_expiry(a->conn);
			if (a->deadline < e)
				e = a->deadline;
			if (e < exp)
				exp = e;
		}
	}
	if (exp == UINT64_MAX)
		return -1;
	now = now_ns();
	if (exp <= now)
		return 0;
	exp = (exp - now + NGTCP2_MILLISECONDS - 1) / NGTCP2_MILLISECONDS;
	return exp > INT_MAX ? INT_MAX : (int)exp;
}

int net_quic_process(struct net_quic *q, struct qs_err *err)
{
	uint64_t ts;
	int rv;

	if (!q)
		return qs_err_set(err, -EINVAL, "net_quic: no connection");
	if (q->st == ST_DEAD)
		return qs_err_set(err, q->dead, "%s", q->dead_msg);
	ts = now_ns();
	rv = rx_drain(q, ts);
	if (rv < 0)
		goto out;
	ts = now_ns();
	if (q->conn) {
		if (ngtcp2_conn_get_expiry(q->conn) <= ts) {
			q->in_ng = 1;
			rv = ngtcp2_conn_handle_expiry(q->conn, ts);
			q->in_ng = 0;
			if (rv != 0) {
				rv = conn_fail(q, rv, ts);
				goto out;
			}
			apply_pending_resets(q);
		}
	} else if (q->server) {
		attempts_expire(q, ts);
	}
	rv = tx_write(q, ts);
out:
	grave_empty(q);
	if (rv < 0)
		return qs_err_set(err, rv, "%s", q->dead_msg);
	return 0;
}

int net_quic_handshake_done(const struct net_quic *q)
{
	return q && q->hs_done;
}

unsigned net_quic_rejected(const struct net_quic *q)
{
	return q ? q->rejected : 0;
}

int net_quic_stream_open(struct net_quic *q, void *user, int64_t *sid)
{
	struct qstream *s;
	int64_t id;
	int rv;

	if (!q || !sid)
		return -EINVAL;
	if (q->st == ST_DEAD)
		return q->dead;
	if (!q->hs_done || !q->conn)
		return -ENOTCONN;
	if (htab_reserve(q) < 0)
		return -ENOMEM;
	rv = ngtcp2_conn_open_bidi_stream(q->conn, &id, NULL);
	if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED)
		return -EAGAIN;
	if (rv != 0)
		return rv == NGTCP2_ERR_NOMEM ? -ENOMEM : -EPROTO;
	s = stream_new(q, id);
	if (!s) {
		ngtcp2_conn_shutdown_stream(q->conn, id, ENOMEM);
		return -ENOMEM;
	}
	ngtcp2_conn_set_stream_user_data(q->conn, id, s);
	s->user = user;
	s->started = 1;
	stream_wake(q, s);
	*sid = id;
	return 0;
}

int net_quic_stream_resume(struct net_quic *q, int64_t sid)
{
	struct qstream *s;

	if (!q)
		return -EINVAL;
	s = stream_find(q, sid);
	if (!s)
		return -ENOENT;
	s->sleeping = 0;
	s->started = 1;
	stream_wake(q, s);
	return 0;
}

int net_quic_stream_reset(struct net_quic *q, int64_t sid, uint64_t app_error)
{
	struct qstream *s;

	if (!q || app_error == 0)
		return -EINVAL;
	if (q->st == ST_DEAD)
		return q->dead;
	s = stream_find(q, sid);
	if (!s)
		return -ENOENT;
	stream_request_reset(q, s, app_error);
	return 0;
}

size_t net_quic_streams_open(const struct net_quic *q)
{
	return q ? q->nstreams : 0;
}

uint64_t net_quic_bytes_sent(const struct net_quic *q)
{
	return q ? q->bytes_sent : 0;
}

int net_quic_close(struct net_quic *q)
{
	uint64_t ts;
	int waited = 0;

	if (!q)
		return -EINVAL;
	if (q->st == ST_DEAD)
		return 0;
	ts = now_ns();
	if (q->conn) {
		if (tx_flush(q) < 0)
			q->ntx = q->txdone = 0;
		send_close(q, q->c, 0, ts);
		/* the close is the last word: give a full socket a moment to take it */
		while (q->ntx > q->txdone && waited < CLOSE_WAIT_MS) {
			struct pollfd p = {.fd = q->fd, .events = POLLOUT};
			(void)poll(&p, 1, 10);
			waited += 10;
			(void)tx_flush(q);
		}
	}
	conn_dead(q, -ECONNABORTED, "the QUIC connection was closed locally");
	grave_empty(q);
	return 0;
}

void net_quic_free(struct net_quic *q)
{
	struct chunk *c, *n;
	size_t i;

	if (!q)
		return;
	q->st = ST_DEAD;
	drop_all_streams(q);
	grave_empty(q);
	for (i = 0; i < NET_QUIC_MAX_PENDING; i++)
		if (q->att[i].used)
			attempt_free(q, &q->att[i]);
	q->c = NULL;
	q->conn = NULL;
	if (q->ccred)
		gnutls_psk_free_client_credentials(q->ccred);
	if (q->scred)
		gnutls_psk_free_server_credentials(q->scred);
	if (q->fd >= 0)
		close(q->fd);
	for (c = q->freechunks; c; c = n) {
		n = c->next;
		free(c);
	}
	free(q->htab);
	gnutls_memset(q->psk, 0, sizeof(q->psk));
	free(q);
}

/* ---- as a data plane (net/dp.h) ---- */

static int dp_fd(const void *impl)
{
	return net_quic_fd(impl);
}

static int dp_timeout_ms(const void *impl)
{
	return net_quic_timeout_ms(impl);
}

static int dp_process(void *impl, struct qs_err *err)
{
	return net_quic_process(impl, err);
}

static int dp_ready(const void *impl)
{
	return net_quic_handshake_done(impl);
}

static int dp_stream_open(void *impl, void *user, int64_t *sid)
{
	return net_quic_stream_open(impl, user, sid);
}

static int dp_stream_resume(void *impl, int64_t sid)
{
	return net_quic_stream_resume(impl, sid);
}

static int dp_stream_reset(void *impl, int64_t sid, uint64_t app_error)
{
	return net_quic_stream_reset(impl, sid, app_error);
}

static const struct net_dp_ops quic_dp_ops = {
    .fd = dp_fd,
    .timeout_ms = dp_timeout_ms,
    .process = dp_process,
    .ready = dp_ready,
    .stream_open = dp_stream_open,
    .stream_resume = dp_stream_resume,
    .stream_reset = dp_stream_reset,
};

void net_quic_as_dp(struct net_quic *q, struct net_dp *out)
{
	out->ops = &quic_dp_ops;
	out->impl = q;
	out->name = "quic";
}

#ifdef QS_TESTING
/* Test-only: tests/unit/test_net_quic.c compiles this file with QS_TESTING to look inside. 1 when q holds
 * no secret any more: the psk copy is zero, the PSK credentials are gone, and the credentials callback
 * of q's role refuses even the right identity. */
static int quic_test_secret_gone(struct net_quic *q)
{
	static const uint8_t zero[NET_QUIC_PSK_LEN];
	gnutls_datum_t user = {(unsigned char *)q->id, (unsigned)q->idlen}, key = {NULL, 0}, name = {NULL, 0};
	int rv;

	if (!q->secret_gone || q->scred || q->ccred || memcmp(q->psk, zero, sizeof(zero)) != 0)
		return 0;
	if (!q->c || !q->c->tls)
		return 1;
	rv = q->server ? psk_server_cb(q->c->tls, &user, &key) : psk_client_cb(q->c->tls, &name, &key);
	gnutls_free(key.data);
	gnutls_free(name.data);
	return rv != 0;
}
#endif
