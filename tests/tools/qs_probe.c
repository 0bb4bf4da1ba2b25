/* qs_probe: a client that speaks qsync's real protocol to a real `qsync --server` over a real SSH
 * server, but misbehaves on purpose, so end-to-end tests can check what the receiver does with hostile
 * input. Usage:
 *   qs_probe -e RSH [user@]host REMOTE_QSYNC wrong-psk DEST
 *       handshake with a wrong secret (must be refused), then with the right one (must succeed)
 *   qs_probe -e RSH [user@]host REMOTE_QSYNC send DEST CASE...
 *       CASE is KIND:PATH, KIND one of ok (a good file), hash (wrong trailer), trunc (FIN inside the
 *       data), extra (bytes after the trailer), lie (size says 1 MiB, stream carries 10 bytes),
 *       re (a good file whose file_id comes from its path: sent again, it is the same entry),
 *       dir (a directory entry, mode 07777, owner 1234:1234), root (the root entry; PATH empty);
 *       ranges of a 30-byte file PATH in 3 ranges of 10 bytes (all ranges of one PATH share a file_id):
 *       r0 r1 r2 (a good range), rh0.. (a wrong hash), rm0.. (another mode than the other ranges);
 *       a prefix "a" (aok, ar0, arh1, ...) sets ASK but sends the data at once, not waiting for the
 *       verdict (an impatient sender); the verdict is printed as verdict=S|H (- when none came)
 *       a batch of questions (NET_STREAM_F_BATCH, each entry a 10-byte file that asks): bok (one entry,
 *       PATH), bplain (its entry does not ask), bmany (257 entries PATH.0 ..), bnest (a batch header
 *       after the entry), bempty (no entry), btrunc (FIN inside the entry), bsym (PATH a symlink to
 *       "tgt", mtime 1600000000), bsymnul (its target "t\0g"); printed with the answers
 *       counted (answers=S<n>,H<n>,E<n>: SEND, HAVE with OK, HAVE with an error) and the last error;
 *       a bundle of whole 10-byte files (NET_STREAM_F_BUNDLE): uok (PATH.0, PATH.1, PATH.2), uhash (the
 *       second with a wrong hash), upath (the second named ../PATH), udir (the second a directory),
 *       ubig (the second of 300 KiB), utrunc (FIN inside the second), uempty, umany (257 files);
 *       printed with the acks counted (acks=OK<n>,E<n>) and the last error
 *   qs_probe ... send1 DEST CASE...    the same, with sync_start asking for a single-file destination
 *   qs_probe ... sendf DEST CASE...    the same as send, with sync_start asking for fsync (the
 *                                       receiver flushes each file on its ring before it answers)
 * Prints one line per case: "case KIND PATH status=N msg=..." and, at the end, "ack_complete ok=N
 * failed=N" and "exit-status N" (the server's). Exit 0 when the conversation ran to its end. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <xxhash.h>

#include "net/control.h"
#include "net/quic.h"
#include "net/ssh.h"
#include "net/stream.h"

#define PROBE_MAX_CASES 512

struct pcase {
	const char *kind;
	const char *path;
	uint8_t *out;
	size_t out_len, out_off;
	bool batch;   /* the kind began with 'b' (or 'u', a bundle): its answers are gathered in ans */
	bool bundle;  /* the kind began with 'u' */
	uint8_t *ans; /* (PROBE_MAX_ANS bytes) */
	size_t ans_len;
	uint8_t ack[NET_STREAM_MAX_ACK];
	size_t ack_len;
	int status; /* -1 until the ack arrives */
	char msg[NET_STREAM_MAX_ACK_MSG + 1];
	bool closed;
	uint64_t app_error;
	bool ask;        /* the kind began with 'a': ASK */
	uint8_t verdict; /* the first byte back, for an ASK case */
};

#define PROBE_MAX_ANS   (300 * (1 + NET_STREAM_MAX_ACK))
#define PROBE_BATCH_MAX 257
#define PROBE_OUT_CAP   (NET_STREAM_MAX_META + 64) /* a case that is not a batch */

static struct pcase cases[PROBE_MAX_CASES];
static int n_cases;

static ssize_t p_fill(void *ctx, int64_t sid, void *user, uint8_t *buf, size_t cap, int *fin)
{
	struct pcase *c = user;
	size_t k = c->out_len - c->out_off;
	if (k > cap)
		k = cap;
	memcpy(buf, c->out + c->out_off, k);
	c->out_off += k;
	*fin = c->out_off == c->out_len;
	return (ssize_t)k;
}

static int p_recv(void *ctx, int64_t sid, void **user, const uint8_t *data, size_t len, int fin)
{
	struct pcase *c = *user;
	if (c && c->batch) {
		if (len > PROBE_MAX_ANS - c->ans_len)
			return -EPROTO;
		if (len)
			memcpy(c->ans + c->ans_len, data, len);
		c->ans_len += len;
		return 0;
	}
	if (c && c->ask && !c->verdict && len > 0) {
		c->verdict = data[0];
		data++;
		len--;
	}
	if (!c || len > sizeof(c->ack) - c->ack_len)
		return -EPROTO;
	memcpy(c->ack + c->ack_len, data, len);
	c->ack_len += len;
	uint8_t st;
	if (net_stream_ack_decode(c->ack, c->ack_len, &st, c->msg, sizeof(c->msg)) == 0)
		c->status = st;
	return 0;
}

static void p_closed(void *ctx, int64_t sid, void *user, uint64_t app_error)
{
	struct pcase *c = user;
	if (c) {
		c->closed = true;
		c->app_error = app_error;
	}
}

static bool m_is_dir(const struct pcase *c)
{
	return strcmp(c->kind, "dir") == 0 || strcmp(c->kind, "root") == 0;
}

/* Builds the bytes of one hostile (or good) stream. */
/* "r1", "rh2", "rm0": a range case; *idx its index, *bad_hash and *bad_mode what is wrong with it. */
static bool range_kind(const char *k, uint32_t *idx, bool *bad_hash, bool *bad_mode)
{
	if (k[0] != 'r' || strcmp(k, "root") == 0)
		return false;
	k++;
	*bad_hash = *k == 'h';
	*bad_mode = *k == 'm';
	if (*bad_hash || *bad_mode)
		k++;
	if (k[0] < '0' || k[0] > '2' || k[1])
		return false;
	*idx = (uint32_t)(k[0] - '0');
	return true;
}

/* A batch case: the header and its entries (see the usage above). */
static int build_batch(struct pcase *c, uint32_t id)
{
	size_t cap = PROBE_BATCH_MAX * (NET_STREAM_HDR_LEN + 8 + 64 + 40) + 2 * NET_STREAM_MAX_META;
	struct net_stream_meta *m = calloc(1, sizeof(*m));
	c->out = malloc(cap);
	c->ans = malloc(PROBE_MAX_ANS);
	if (!m || !c->out || !c->ans) {
		free(m);
		return -ENOMEM;
	}
	net_stream_batch_encode(c->out);
	c->out_len = NET_STREAM_HDR_LEN;
	int entries = strcmp(c->kind, "bmany") == 0    ? PROBE_BATCH_MAX
	              : strcmp(c->kind, "bempty") == 0 ? 0
	                                               : 1;
	for (int i = 0; i < entries; i++) {
		memset(m, 0, sizeof(*m));
		m->file_id = id * 1000u + (uint32_t)i;
		bool sym = strncmp(c->kind, "bsym", 4) == 0;
		m->flags = strcmp(c->kind, "bplain") == 0 ? 0 : NET_STREAM_F_ASK;
		if (sym)
			m->flags |= NET_STREAM_F_SYMLINK;
		if (entries > 1)
			snprintf(m->path, sizeof(m->path), "%.60s.%d", c->path, i);
		else
			snprintf(m->path, sizeof(m->path), "%s", c->path);
		m->path_len = (uint32_t)strlen(m->path);
		m->size = sym ? 3 : 10;
		m->mode = sym ? 0120777 : 0100644;
		m->mtime_ns = 1000000000LL * 1600000000;
		ssize_t n = sym ? net_stream_batch_entry_encode(m, c->out + c->out_len, cap - c->out_len)
		                : net_stream_meta_encode(m, c->out + c->out_len, cap - c->out_len);
		if (n < 0) {
			free(m);
			return (int)n;
		}
		if (strcmp(c->kind, "btrunc") == 0)
			n /= 2;
		c->out_len += (size_t)n;
		if (sym) {
			memcpy(c->out + c->out_len, strcmp(c->kind, "bsymnul") == 0 ? "t\0g" : "tgt", 3);
			c->out_len += 3;
		}
	}
	free(m);
	if (strcmp(c->kind, "bnest") == 0) {
		net_stream_batch_encode(c->out + c->out_len);
		c->out_len += NET_STREAM_HDR_LEN;
	}
	return 0;
}

/* A bundle case: the header and its whole entries (see the usage above). */
static int build_bundle(struct pcase *c, uint32_t id)
{
	static const char content[] = "0123456789";
	bool big = strcmp(c->kind, "ubig") == 0;
	size_t cap = PROBE_BATCH_MAX * (NET_STREAM_HDR_LEN + 8 + 64 + 40 + 20) + 2 * NET_STREAM_MAX_META +
	             (big ? 300u << 10 : 0);
	struct net_stream_meta *m = calloc(1, sizeof(*m));
	uint8_t *bigdata = big ? calloc(1, 300u << 10) : NULL;
	c->out = malloc(cap);
	c->ans = malloc(PROBE_MAX_ANS);
	if (!m || !c->out || !c->ans || (big && !bigdata)) {
		free(m);
		free(bigdata);
		return -ENOMEM;
	}
	net_stream_bundle_encode(c->out);
	c->out_len = NET_STREAM_HDR_LEN;
	int entries = strcmp(c->kind, "umany") == 0    ? PROBE_BATCH_MAX
	              : strcmp(c->kind, "uempty") == 0 ? 0
	                                               : 3;
	for (int i = 0; i < entries; i++) {
		bool odd = i == 1; /* the one that is wrong, if any */
		memset(m, 0, sizeof(*m));
		m->file_id = id * 1000u + (uint32_t)i;
		if (odd && strcmp(c->kind, "upath") == 0)
			snprintf(m->path, sizeof(m->path), "../%.60s", c->path);
		else
			snprintf(m->path, sizeof(m->path), "%.60s.%d", c->path, i);
		m->path_len = (uint32_t)strlen(m->path);
		m->size = odd && big ? 300u << 10 : 10;
		m->mode = 0100644;
		m->mtime_ns = 1000000000LL * 1600000000;
		if (odd && strcmp(c->kind, "udir") == 0) {
			m->flags = NET_STREAM_F_DIR;
			m->size = 0;
			m->mode = 040755;
		}
		ssize_t n = net_stream_meta_encode(m, c->out + c->out_len, cap - c->out_len);
		if (n < 0) {
			free(m);
			free(bigdata);
			return (int)n;
		}
		c->out_len += (size_t)n;
		const uint8_t *d = odd && big ? bigdata : (const uint8_t *)content;
		size_t dl = (size_t)m->size;
		if (odd && strcmp(c->kind, "utrunc") == 0) {
			memcpy(c->out + c->out_len, d, 4);
			c->out_len += 4;
			break; /* and FIN */
		}
		memcpy(c->out + c->out_len, d, dl);
		c->out_len += dl;
		uint64_t h = XXH3_64bits(d, dl);
		if (odd && strcmp(c->kind, "uhash") == 0)
			h ^= 1;
		net_stream_trailer_encode(h, c->out + c->out_len);
		c->out_len += NET_STREAM_TRAILER_LEN;
	}
	free(m);
	free(bigdata);
	return 0;
}

/* The acks of a bundle case, counted; the last error's status and message into c. */
static void bundle_acks(struct pcase *c, int *oks, int *errors)
{
	size_t at = 0;
	*oks = *errors = 0;
	while (at < c->ans_len) {
		ssize_t n = net_stream_ack_len(c->ans + at, c->ans_len - at);
		uint8_t st;
		char msg[NET_STREAM_MAX_ACK_MSG + 1];
		if (n <= 0 || net_stream_ack_decode(c->ans + at, (size_t)n, &st, msg, sizeof(msg)) < 0) {
			snprintf(c->msg, sizeof(c->msg), "unparsable ack at byte %zu", at);
			c->status = 99;
			return;
		}
		if (st == NET_STREAM_OK) {
			(*oks)++;
		} else {
			(*errors)++;
			c->status = st;
			snprintf(c->msg, sizeof(c->msg), "%s", msg);
		}
		at += (size_t)n;
	}
}

/* The answers of a batch case, counted; the last error's status and message into c. */
static void batch_answers(struct pcase *c, int *sends, int *haves, int *errors)
{
	size_t at = 0;
	*sends = *haves = *errors = 0;
	while (at < c->ans_len) {
		if (c->ans[at] == NET_STREAM_VERDICT_SEND) {
			(*sends)++;
			at++;
			continue;
		}
		ssize_t n = c->ans[at] == NET_STREAM_VERDICT_HAVE
		                ? net_stream_ack_len(c->ans + at + 1, c->ans_len - at - 1)
		                : -EPROTO;
		uint8_t st;
		char msg[NET_STREAM_MAX_ACK_MSG + 1];
		if (n <= 0 || net_stream_ack_decode(c->ans + at + 1, (size_t)n, &st, msg, sizeof(msg)) < 0) {
			snprintf(c->msg, sizeof(c->msg), "unparsable answer at byte %zu", at);
			c->status = 99;
			return;
		}
		if (st == NET_STREAM_OK) {
			(*haves)++;
		} else {
			(*errors)++;
			c->status = st;
			snprintf(c->msg, sizeof(c->msg), "%s", msg);
		}
		at += 1 + (size_t)n;
	}
}

static int build_case(struct pcase *c, uint32_t id)
{
	free(c->out); /* (built again when the peer's stream limit made it wait) */
	free(c->ans);
	c->out = c->ans = NULL;
	if (c->bundle)
		return build_bundle(c, id);
	if (c->batch)
		return build_batch(c, id);
	c->out = malloc(PROBE_OUT_CAP);
	if (!c->out)
		return -ENOMEM;
	static const char content[] = "0123456789";
	struct net_stream_meta *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->file_id = id;
	if (c->ask)
		m->flags |= NET_STREAM_F_ASK;
	uint32_t ridx = 0;
	bool rhash = false, rmode = false;
	bool range = range_kind(c->kind, &ridx, &rhash, &rmode);
	uint32_t ph = 2166136261u; /* the same file_id for every range of one path, and every re: */
	for (const char *p = c->path; *p; p++)
		ph = (ph ^ (uint8_t)*p) * 16777619u;
	if (strcmp(c->kind, "re") == 0)
		m->file_id = ph & 0x3fffffffu;
	if (range) {
		m->file_id = 0x40000000u | (ph & 0x3fffffffu);
		m->flags |= NET_STREAM_F_RANGE;
		m->file_size = 30;
		m->range_count = 3;
		m->range_idx = ridx;
		m->range_off = 10u * ridx;
	}
	m->path_len = (uint32_t)strlen(c->path);
	if (m->path_len > NET_STREAM_MAX_PATH) {
		free(m);
		return -ENAMETOOLONG;
	}
	memcpy(m->path, c->path, m->path_len + 1);
	m->size = strcmp(c->kind, "lie") == 0 ? 1u << 20 : 10;
	m->mode = range && rmode ? 0100600 : 0100644;
	if (strcmp(c->kind, "dir") == 0 || strcmp(c->kind, "root") == 0) {
		m->flags = NET_STREAM_F_DIR | (c->kind[0] == 'r' ? NET_STREAM_F_ROOT : 0);
		m->size = 0;
		m->mode = 040000 | 07777;
		m->uid = m->gid = 1234;
	}
	m->mtime_ns = 1000000000LL * 1600000000;
	ssize_t n = net_stream_meta_encode(m, c->out, PROBE_OUT_CAP);
	free(m);
	if (n < 0)
		return (int)n;
	c->out_len = (size_t)n;
	if (m_is_dir(c)) {
		net_stream_trailer_encode(XXH3_64bits(NULL, 0), c->out + c->out_len);
		c->out_len += NET_STREAM_TRAILER_LEN;
		return 0;
	}
	size_t data_len = strcmp(c->kind, "trunc") == 0 ? 4 : 10;
	memcpy(c->out + c->out_len, content, data_len);
	c->out_len += data_len;
	if (strcmp(c->kind, "trunc") == 0)
		return 0;
	uint64_t h = XXH3_64bits(content, 10);
	if (strcmp(c->kind, "hash") == 0 || (range && rhash))
		h ^= 1;
	net_stream_trailer_encode(h, c->out + c->out_len);
	c->out_len += NET_STREAM_TRAILER_LEN;
	if (strcmp(c->kind, "extra") == 0) {
		memcpy(c->out + c->out_len, "JUNK", 4);
		c->out_len += 4;
	}
	return 0;
}

static int drive(struct net_ctl_chan *ctl, struct net_quic *q, int ms, bool (*done)(struct net_quic *))
{
	struct qs_err e = {0};
	int waited = 0;
	while (waited < ms) {
		if (done && done(q))
			return 0;
		struct pollfd p = {.fd = net_quic_fd(q), .events = POLLIN};
		int t = net_quic_timeout_ms(q);
		if (t < 0 || t > 50)
			t = 50;
		poll(&p, 1, t);
		waited += t ? t : 1;
		int rc = net_quic_process(q, &e);
		if (rc < 0) {
			fprintf(stderr, "quic: %s\n", e.msg);
			return rc;
		}
		struct net_ctl_msg *m = malloc(sizeof(*m));
		while (m && net_ctl_recv(ctl, m, &e) == 1) {
			if (m->type == NET_CTL_ERROR)
				printf("ctl-error code=%s file=%s msg=%s\n", m->u.error.error_code,
				       m->u.error.file, m->u.error.message);
		}
		free(m);
	}
	return done && done(q) ? 0 : -ETIMEDOUT;
}

static bool hs_done(struct net_quic *q)
{
	return net_quic_handshake_done(q);
}

static int n_before; /* the cases a wait: waits for */

static bool before_closed(struct net_quic *q)
{
	for (int i = 0; i < n_before; i++)
		if (!cases[i].closed)
			return false;
	return true;
}

static bool all_closed(struct net_quic *q)
{
	n_before = n_cases;
	return before_closed(q);
}

static bool is_wait(const struct pcase *c)
{
	return strcmp(c->kind, "wait") == 0;
}

int main(int argc, char **argv)
{
	struct net_ssh_opts so = {0};
	struct qs_err e = {0};
	const char *rsh = NULL;
	int ai = 1;

	if (argc > 2 && strcmp(argv[1], "-e") == 0) {
		rsh = argv[2];
		ai = 3;
	}
	if (argc - ai < 4) {
		fprintf(
		    stderr,
		    "usage: qs_probe -e RSH [user@]host REMOTE_QSYNC wrong-psk|send DEST [KIND:PATH...]\n");
		return 2;
	}
	if (rsh && net_ssh_parse_rsh(rsh, &so, &e) < 0) {
		fprintf(stderr, "qs_probe: -e: %s\n", e.msg);
		return 2;
	}
	const char *target = argv[ai], *remote = argv[ai + 1], *mode = argv[ai + 2], *dest = argv[ai + 3];
	const char *at = strchr(target, '@');
	if (at) {
		snprintf(so.user, sizeof(so.user), "%.*s", (int)(at - target), target);
		target = at + 1;
	}
	snprintf(so.host, sizeof(so.host), "%s", target);
	for (int i = ai + 4; i < argc && n_cases < PROBE_MAX_CASES; i++) {
		char *colon = strchr(argv[i], ':');
		if (!colon) {
			fprintf(stderr, "qs_probe: case %s is not KIND:PATH\n", argv[i]);
			return 2;
		}
		*colon = '\0';
		cases[n_cases].ask = argv[i][0] == 'a';
		cases[n_cases].batch = argv[i][0] == 'b' || argv[i][0] == 'u';
		cases[n_cases].bundle = argv[i][0] == 'u';
		cases[n_cases].kind = argv[i] + (argv[i][0] == 'a');
		cases[n_cases].path = colon + 1;
		cases[n_cases].status = -1;
		n_cases++;
	}

	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "%s --server", remote);
	struct net_ctl_chan *ctl;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	if (net_ssh_connect(&so, cmd, &ctl, &peer, &peerlen, &e) < 0) {
		fprintf(stderr, "qs_probe: %s\n", e.msg);
		return 255;
	}
	struct net_ctl_msg *m = calloc(1, sizeof(*m));
	uint8_t psk[NET_QUIC_PSK_LEN];
	const char *id = "0123456789abcdef";
	if (!m || getrandom(psk, sizeof(psk), 0) != (ssize_t)sizeof(psk))
		return 1;

	m->type = NET_CTL_HELLO;
	snprintf(m->u.hello.version, sizeof(m->u.hello.version), "%s", NET_CTL_PROTO_VERSION);
	m->u.hello.caps = NET_CAP_QUIC_V1;
	if (net_ctl_send(ctl, m, &e) < 0 || net_ctl_recv_wait(ctl, m, 10000, &e) != 1 ||
	    m->type != NET_CTL_HELLO_ACK) {
		fprintf(stderr, "qs_probe: hello failed: %s\n", e.msg);
		return 1;
	}
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_QUIC_INIT;
	snprintf(m->u.quic_init.connection_id, sizeof(m->u.quic_init.connection_id), "%s", id);
	memcpy(m->u.quic_init.psk, psk, sizeof(psk));
	m->u.quic_init.max_streams = 100;
	if (net_ctl_send(ctl, m, &e) < 0 || net_ctl_recv_wait(ctl, m, 10000, &e) != 1 ||
	    m->type != NET_CTL_QUIC_READY) {
		fprintf(stderr, "qs_probe: quic_init failed: %s\n", e.msg);
		return 1;
	}
	uint16_t port = m->u.quic_ready.port;
	if (peer.ss_family == AF_INET)
		((struct sockaddr_in *)&peer)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&peer)->sin6_port = htons(port);
	printf("quic_ready port=%u\n", port);

	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_SYNC_START;
	snprintf(m->u.sync_start.destination, sizeof(m->u.sync_start.destination), "%s", dest);
	m->u.sync_start.recursive = true;
	m->u.sync_start.preserve_permissions = true;
	m->u.sync_start.preserve_timestamps = true;
	m->u.sync_start.preserve_owner = true;
	m->u.sync_start.preserve_group = true;
	m->u.sync_start.single_file = strcmp(mode, "send1") == 0;
	m->u.sync_start.fsync = strcmp(mode, "sendf") == 0;
	net_ctl_send(ctl, m, &e);

	struct net_quic_cfg qc;
	net_quic_cfg_default(&qc);
	qc.handshake_timeout_ms = 3000;
	struct net_dp_cb cb = {.ctx = NULL, .recv = p_recv, .fill = p_fill, .closed = p_closed};
	struct net_quic *q = NULL;
	int rc;

	if (strcmp(mode, "wrong-psk") == 0) {
		uint8_t bad[NET_QUIC_PSK_LEN];
		memcpy(bad, psk, sizeof(bad));
		bad[0] ^= 0xff;
		rc = net_quic_client_new((struct sockaddr *)&peer, peerlen, id, bad, &qc, &cb, &q, &e);
		if (rc == 0)
			rc = drive(ctl, q, 5000, hs_done);
		printf("wrong-psk handshake: %s (%d) %s\n", rc == 0 ? "accepted" : "refused", rc, e.msg);
		net_quic_free(q);
		q = NULL;
		memset(&e, 0, sizeof(e));
	}
	rc = net_quic_client_new((struct sockaddr *)&peer, peerlen, id, psk, &qc, &cb, &q, &e);
	if (rc == 0)
		rc = drive(ctl, q, 5000, hs_done);
	printf("right-psk handshake: %s (%d) %s\n", rc == 0 ? "accepted" : "refused", rc, e.msg);
	explicit_bzero(psk, sizeof(psk));
	if (rc < 0)
		return 1;

	/* in order, each as soon as the peer lets another stream open (more cases than max_streams wait) */
	int n_waits = 0;
	for (int i = 0, waited = 0; i < n_cases;) {
		int64_t sid;
		if (is_wait(&cases[i])) {
			n_before = i;
			if (drive(ctl, q, 10000, before_closed) < 0) {
				fprintf(stderr, "qs_probe: the cases before case %d did not close\n", i);
				return 1;
			}
			cases[i].closed = true;
			n_waits++;
			i++;
			continue;
		}
		if (build_case(&cases[i], (uint32_t)i) < 0) {
			fprintf(stderr, "qs_probe: cannot build case %d\n", i);
			return 1;
		}
		rc = net_quic_stream_open(q, &cases[i], &sid);
		if (rc == 0) {
			i++;
			continue;
		}
		if (rc == -EAGAIN && waited < 10000) {
			int d = drive(ctl, q, 50, NULL); /* runs 50 ms: ETIMEDOUT is its normal end here */
			if (d == 0 || d == -ETIMEDOUT) {
				waited += 50;
				continue;
			}
			rc = d;
		}
		fprintf(stderr, "qs_probe: cannot start case %d (%d)\n", i, rc);
		return 1;
	}
	drive(ctl, q, 10000, all_closed);
	for (int i = 0; i < n_cases; i++) {
		if (!cases[i].bundle)
			continue;
		int oks, errors;
		bundle_acks(&cases[i], &oks, &errors);
		printf("case %s %s status=%d app_error=%llu acks=OK%d,E%d msg=%s\n", cases[i].kind,
		       cases[i].path, cases[i].status, (unsigned long long)cases[i].app_error, oks, errors,
		       cases[i].msg);
	}
	for (int i = 0; i < n_cases; i++) {
		if (!cases[i].batch || cases[i].bundle)
			continue;
		int sends, haves, errors;
		batch_answers(&cases[i], &sends, &haves, &errors);
		printf("case %s %s status=%d app_error=%llu answers=S%d,H%d,E%d msg=%s\n", cases[i].kind,
		       cases[i].path, cases[i].status, (unsigned long long)cases[i].app_error, sends, haves,
		       errors, cases[i].msg);
	}
	for (int i = 0; i < n_cases; i++)
		if (!is_wait(&cases[i]) && !cases[i].batch)
			printf("case %s%s %s status=%d app_error=%llu verdict=%c msg=%s\n",
			       cases[i].ask ? "a" : "", cases[i].kind, cases[i].path, cases[i].status,
			       (unsigned long long)cases[i].app_error,
			       cases[i].verdict ? cases[i].verdict : '-', cases[i].msg);

	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_SYNC_COMPLETE;
	m->u.sync_complete.files_transferred = (uint64_t)(n_cases - n_waits);
	net_ctl_send(ctl, m, &e);
	for (int waited = 0; waited < 10000; waited += 50) {
		rc = net_ctl_recv(ctl, m, &e);
		if (rc == 1 && m->type == NET_CTL_ACK_COMPLETE) {
			printf("ack_complete ok=%llu failed=%llu\n",
			       (unsigned long long)m->u.ack_complete.files_ok,
			       (unsigned long long)m->u.ack_complete.files_failed);
			break;
		}
		if (rc == 1 && m->type == NET_CTL_ERROR)
			printf("ctl-error code=%s file=%s msg=%s\n", m->u.error.error_code, m->u.error.file,
			       m->u.error.message);
		if (rc < 0 && rc != -ENOMSG)
			break;
		if (rc != 1) {
			struct pollfd p = {.fd = net_quic_fd(q), .events = POLLIN};
			poll(&p, 1, 50);
			net_quic_process(q, &e);
		}
	}
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_BYE;
	net_ctl_send(ctl, m, &e);
	net_quic_close(q);
	net_quic_free(q);
	int status = -1;
	net_ctl_chan_finish(ctl, &status);
	printf("exit-status %d\n", status);
	free(m);
	return 0;
}
