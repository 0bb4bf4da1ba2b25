/* The peer's side of a transfer (qsync --server under sshd, or a session of the native server): answers
 * hello, opens QUIC ports for the client's secret when asked (quic_init: one connection per worker the
 * client asked for, up to this machine's cores, each driven by a pinned worker of the sched/ pool),
 * takes sync_start, and receives into the destination over whichever data path the client chose —
 * QUIC, or streams on the SSH channel, driven by the control thread — switching to the latter when the
 * client says so (data_path), also in the middle of a transfer, in which case whatever was
 * half-received over QUIC is dropped and comes again. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine_int.h"
#include "net/mux.h"
#include "sched/sched.h"

#define LANE_POLL_MS 100 /* a worker looks at the stop flag at least this often */

struct peer {
	struct net_ctl_chan *c;
	const struct engine_addrs *addrs;
	struct net_ctl_msg *m;
	struct receiver r;
	struct rcv_lane quic[NET_CTL_MAX_CONNS]; /* one per QUIC connection */
	unsigned n_quic;
	struct rcv_lane ssh; /* once the data comes over SSH */
	struct net_mux *mux;
	bool on_ssh;
	struct sched_topo *topo;
	struct sched_pool *pool;
	atomic_bool stop; /* the workers' end; release/acquire: joined after */
	bool no_ring;     /* QSYNC_NO_URING: content written at once on the lane's thread */
	bool quic_dead;   /* every QUIC lane ended; the client should switch to SSH or finish */
	uint64_t dead_at; /* when */
	uint32_t max_streams;
};

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

/* SIGTERM, SIGINT, SIGHUP end the receive loop cleanly: open temporaries are removed on the way out. */
static void catch_stop_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

/* The numeric address of a, without the port ("" when it is not IP). */
static void addr_string(const struct sockaddr_storage *a, char *out, size_t cap)
{
	out[0] = '\0';
	if (a->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, out, (socklen_t)cap);
	else if (a->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, out, (socklen_t)cap);
}

/* From SSH_CONNECTION ("cip cport sip sport"): the local address sshd accepted us on, so the QUIC port
 * listens where SSH does and nowhere else, and the client's address, the only one allowed to dial it.
 * Without it (local mode) loopback for both. */
static void ssh_connection_addrs(struct engine_addrs *a)
{
	const char *sc = getenv("SSH_CONNECTION");
	char ca[64], cp[64], sa[64], sp[64];
	memset(a, 0, sizeof(*a));
	if (sc && sscanf(sc, "%63s %63s %63s %63s", ca, cp, sa, sp) == 4 &&
	    engine_addr_parse(sa, &a->local, &a->local_len) == 0) {
		if (engine_addr_parse(ca, &a->peer, &a->peer_len) < 0)
			a->peer_len = 0;
		return;
	}
	engine_addr_parse("127.0.0.1", &a->local, &a->local_len);
	engine_addr_parse("127.0.0.1", &a->peer, &a->peer_len);
}

int engine_addr_parse(const char *ip, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		*len = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		*len = sizeof(*v6);
		return 0;
	}
	*len = 0;
	return -EINVAL;
}

int engine_server_run(int in_fd, int out_fd, int verbose, struct qs_err *err)
{
	struct net_ctl_chan *c = NULL;
	struct engine_addrs a;
	if (net_ctl_chan_fds(in_fd, out_fd, &c) < 0) {
		qs_err_set(err, -ENOMEM, "cannot set up the control channel");
		return ENGINE_EXIT_START;
	}
	ssh_connection_addrs(&a);
	int code = engine_server_session(c, &a, verbose, err);
	int ignored_status;
	net_ctl_chan_finish(c, &ignored_status);
	return code;
}

/* Waits for the next message that is one of two types (progress and unknown types are skipped). */
static int expect_either(struct peer *p, enum net_ctl_type a, enum net_ctl_type b, struct qs_err *err)
{
	struct qs_err e = {0};
	int rc = engine_expect(p->c, a, p->m, ENGINE_CTL_TIMEOUT_MS, &e);
	if (rc == -EPROTO && p->m->type == b)
		return 0;
	if (rc < 0)
		*err = e;
	return rc;
}

/* quic_init -> one QUIC server per connection, each on its own port of the address SSH came in on, all
 * for this client's secret -> quic_ready with the ports. */
static int quic_setup(struct peer *p, struct qs_err *err)
{
	struct net_ctl_msg *m = p->m;
	uint8_t psk[NET_QUIC_PSK_LEN];
	char conn_id[33], ip[64];
	uint16_t ports[NET_CTL_MAX_CONNS];
	int rc, code = ENGINE_EXIT_NET;

	memcpy(psk, m->u.quic_init.psk, sizeof(psk));
	snprintf(conn_id, sizeof(conn_id), "%s", m->u.quic_init.connection_id);
	uint32_t want = m->u.quic_init.max_streams;
	unsigned n = m->u.quic_init.connections ? m->u.quic_init.connections : 1;
	explicit_bzero(m, sizeof(*m));
	if (want && want < p->max_streams)
		p->max_streams = want;
	/* no more connections than this machine has cores to drive them */
	unsigned cores = p->topo ? sched_topo_ncores(p->topo) : 1;
	if (n > cores)
		n = cores ? cores : 1;
	if (n > NET_CTL_MAX_CONNS)
		n = NET_CTL_MAX_CONNS;

	struct net_quic_cfg qc;
	net_quic_cfg_default(&qc);
	qc.max_streams = p->max_streams / n ? p->max_streams / n : 1;
	net_quic_cfg_budget(&qc, ENGINE_MEMORY_DEFAULT / n);
	addr_string(&p->addrs->local, ip, sizeof(ip));
	for (unsigned i = 0; i < n; i++) {
		struct rcv_lane *l = &p->quic[i];
		struct net_dp_cb cb = receiver_dp_cb_template;
		cb.ctx = l;
		ports[i] = 0;
		rc = net_quic_server_new(ip, &ports[i], conn_id, psk, &qc, &cb, &l->q, err);
		if (rc < 0) {
			engine_send_error(p->c, "QUIC_UNAVAILABLE", err->msg);
			goto out;
		}
		/* Only the host that reached us over SSH may start the QUIC handshake. */
		if (p->addrs->peer_len > 0)
			net_quic_server_allow(l->q, (const struct sockaddr *)&p->addrs->peer,
			                      p->addrs->peer_len);
		net_quic_as_dp(l->q, &l->dp);
		p->n_quic = i + 1;
	}
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_QUIC_READY;
	snprintf(m->u.quic_ready.connection_id, sizeof(m->u.quic_ready.connection_id), "%s", conn_id);
	snprintf(m->u.quic_ready.ip, sizeof(m->u.quic_ready.ip), "%s", ip);
	m->u.quic_ready.port = ports[0];
	m->u.quic_ready.max_streams = qc.max_streams * n;
	m->u.quic_ready.initial_max_data = qc.max_data;
	memcpy(m->u.quic_ready.ports, ports, n * sizeof(ports[0]));
	m->u.quic_ready.n_ports = n;
	code = net_ctl_send(p->c, m, err) < 0 ? ENGINE_EXIT_START : ENGINE_EXIT_OK;
out:
	explicit_bzero(psk, sizeof(psk));
	return code;
}

/* A worker: drives its lane's QUIC server (packets, timers, acks) until told to stop. */
static void lane_run(struct sched_worker *w, void *ctx)
{
	struct peer *p = ctx;
	struct rcv_lane *l = &p->quic[sched_worker_index(w)];
	if (!p->no_ring)
		receiver_lane_ring(l);
	while (!atomic_load_explicit(&p->stop, memory_order_acquire)) {
		struct qs_err e = {0};
		/* reaps finished writes: buffers back, commits that waited for them */
		if (engine_lane_wait(&l->dp, l->ring, LANE_POLL_MS) < 0)
			continue;
		int rc = net_dp_process(&l->dp, &e);
		if (rc < 0) {
			/* what is on the ring finishes here (an io-wq op of a thread that has gone is
			 * cancelled), before the control thread takes the lane for dead */
			receiver_lane_drain(l);
			snprintf(l->dead_msg, sizeof(l->dead_msg), "%s", e.msg);
			/* release: dead_msg is written before the control thread reads it */
			atomic_store_explicit(&l->dead, rc, memory_order_release);
			return;
		}
	}
}

/* Stops the workers and frees the QUIC servers: what they still had open ends with NET_DP_GONE (its
 * temporaries dropped, no failure counted: it comes again, or the session fails as a whole). */
static void quic_teardown(struct peer *p, bool close_first)
{
	atomic_store_explicit(&p->stop, true, memory_order_release);
	if (p->pool) {
		sched_pool_stop(p->pool);
		sched_pool_join(p->pool);
		sched_pool_destroy(p->pool);
		p->pool = NULL;
	}
	for (unsigned i = 0; i < p->n_quic; i++) {
		if (close_first && p->quic[i].q)
			net_quic_close(p->quic[i].q);
		net_quic_free(p->quic[i].q);
		p->quic[i].q = NULL;
		/* the writes its streams left on the ring finish before anything else touches their files */
		receiver_lane_drain(&p->quic[i]);
	}
}

/* From here on the entries arrive as streams on the SSH channel. */
static int use_ssh(struct peer *p, struct qs_err *err)
{
	quic_teardown(p, false);
	p->quic_dead = false;
	struct net_dp_cb cb = receiver_dp_cb_template;
	cb.ctx = &p->ssh;
	int rc = net_mux_new(p->c, 0, p->max_streams, 0, &cb, &p->mux);
	if (rc < 0)
		return qs_err_set(err, rc, "cannot take the data over SSH: %s", strerror(-rc));
	net_mux_as_dp(p->mux, &p->ssh.dp);
	/* With --fsync the SSH lane (driven by this thread) gets a ring too: its files flush many at a
	 * time there, as on the QUIC lanes, instead of one after the other. */
	if (p->r.do_fsync && !p->no_ring)
		receiver_lane_ring(&p->ssh);
	p->on_ssh = true;
	return 0;
}

/* sync_ready (the client asked for the quick check): whether the destination was there before. */
static int send_ready(struct peer *p, struct qs_err *err)
{
	struct net_ctl_msg *m = p->m;
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_SYNC_READY;
	m->u.sync_ready.existing = p->r.existed;
	return net_ctl_send(p->c, m, err);
}

/* Streams ended on the data path in use. */
static uint64_t closed_now(struct peer *p)
{
	if (p->on_ssh)
		return atomic_load_explicit(&p->ssh.closed, memory_order_relaxed);
	uint64_t n = 0;
	for (unsigned i = 0; i < p->n_quic; i++)
		n += atomic_load_explicit(&p->quic[i].closed, memory_order_relaxed);
	return n;
}

/* Receives until the sender says it is done (sync_complete names how many streams it opened on this
 * data path) and that many have closed here; answers ack_complete; then waits for bye. */
static int receive(struct peer *p, struct qs_err *err)
{
	struct receiver *r = &p->r;
	struct net_ctl_msg *m = p->m;
	uint64_t expected = 0, deadline = 0;
	bool completing = false, answered = false, bye = false;
	int rc;
	while (!bye) {
		if (stop_signal) {
			qs_err_set(err, -EINTR, "stopped by signal %d; unfinished files removed",
			           (int)stop_signal);
			return ENGINE_EXIT_SIGNAL;
		}
		struct qs_err de = {0};
		rc = engine_poll_once(p->c, p->on_ssh ? &p->ssh.dp : NULL, p->on_ssh ? p->ssh.ring : NULL,
		                      200, &de);
		receiver_flush_reports(r);
		if (rc < 0) {
			qs_err_set(err, rc, "%s", de.msg);
			return rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_STREAM;
		}
		if (!p->on_ssh && !p->quic_dead && p->n_quic > 0) {
			unsigned dead = 0;
			for (unsigned i = 0; i < p->n_quic; i++)
				if (atomic_load_explicit(&p->quic[i].dead, memory_order_acquire))
					dead++;
			/* QUIC is gone (the path went silent, or the client closed it): the client either
			 * switches to SSH or finishes; both come on the control channel. */
			if (dead == p->n_quic) {
				p->quic_dead = true;
				p->dead_at = engine_now_ns();
				if (r->verbose)
					fprintf(stderr, "qsync: receiver: %s\n", p->quic[0].dead_msg);
			}
		}
		while (!bye) {
			struct qs_err e = {0};
			int r2 = net_ctl_recv(p->c, m, &e);
			if (r2 == 0)
				break;
			if (r2 == -EPIPE && answered) {
				bye =
				    true; /* ack_complete was the last word that mattered; bye may be lost */
				break;
			}
			if (r2 == -ENOMSG) {
				engine_send_error(p->c, "UNKNOWN_TYPE", e.msg);
				continue;
			}
			if (r2 < 0) {
				qs_err_set(err, r2, "control channel: %s", e.msg);
				return r2 == -EPIPE ? ENGINE_EXIT_START : ENGINE_EXIT_STREAM;
			}
			if (m->type == NET_CTL_SYNC_COMPLETE && !completing) {
				completing = true;
				expected = m->u.sync_complete.files_transferred;
				deadline = engine_now_ns() + (uint64_t)ENGINE_DRAIN_TIMEOUT_MS * 1000000ull;
			} else if (m->type == NET_CTL_BYE) {
				bye = true;
			} else if (m->type == NET_CTL_DATA_PATH && !completing) {
				if (p->on_ssh || m->u.data_path.path != NET_CTL_PATH_SSH) {
					qs_err_set(err, -EPROTO, "data_path: already on that path");
					engine_send_error(p->c, "PROTOCOL", err->msg);
					return ENGINE_EXIT_PROTOCOL;
				}
				if (r->verbose)
					fprintf(stderr, "qsync: receiver: data over SSH from now on: %s\n",
					        m->u.data_path.reason);
				memset(m, 0, sizeof(*m));
				m->type = NET_CTL_DATA_PATH_ACK;
				m->u.data_path.path = NET_CTL_PATH_SSH;
				if ((rc = net_ctl_send(p->c, m, err)) < 0)
					return ENGINE_EXIT_STREAM;
				if ((rc = use_ssh(p, err)) < 0)
					return ENGINE_EXIT_START;
			}
		}
		if (p->quic_dead && !completing &&
		    engine_now_ns() - p->dead_at > (uint64_t)ENGINE_CTL_TIMEOUT_MS * 1000000ull) {
			qs_err_set(err, -ECONNABORTED,
			           "the QUIC connection was lost and the client did not carry on");
			return ENGINE_EXIT_NET;
		}
		uint64_t closed = closed_now(p);
		/* (a large file still being put in place is waited for: its outcome goes in the answer) */
		if (completing && !answered &&
		    ((closed >= expected && !receiver_placing(r)) || engine_now_ns() > deadline)) {
			if (closed < expected)
				atomic_fetch_add_explicit(&r->failed, expected - closed,
				                          memory_order_relaxed);
			struct qs_err e = {0};
			if (receiver_finish(r, &e) < 0) {
				fprintf(stderr, "qsync: receiver: %s\n", e.msg);
				atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
				r->failed_late++;
			}
			memset(m, 0, sizeof(*m));
			m->type = NET_CTL_ACK_COMPLETE;
			m->u.ack_complete.files_ok = atomic_load(&r->ok);
			m->u.ack_complete.files_failed = atomic_load(&r->failed);
			m->u.ack_complete.bytes = atomic_load(&r->bytes);
			m->u.ack_complete.files_failed_late = r->failed_late;
			m->u.ack_complete.has_failed_late = true;
			if ((rc = net_ctl_send(p->c, m, err)) < 0)
				return ENGINE_EXIT_STREAM;
			answered = true;
		}
	}
	uint64_t failed = atomic_load(&r->failed);
	if (failed) {
		qs_err_set(err, -EIO, "%llu entries were not written", (unsigned long long)failed);
		return ENGINE_EXIT_PARTIAL;
	}
	return ENGINE_EXIT_OK;
}

int engine_server_session(struct net_ctl_chan *c, const struct engine_addrs *addrs, int verbose,
                          struct qs_err *err)
{
	struct peer *p = calloc(1, sizeof(*p));
	int code = ENGINE_EXIT_START;
	struct net_ctl_msg *m;

	if (!p)
		return qs_err_set(err, -ENOMEM, "out of memory"), ENGINE_EXIT_START;
	p->c = c;
	p->addrs = addrs;
	p->r.rootfd = -1;
	p->r.verbose = verbose;
	p->no_ring = getenv("QSYNC_NO_URING") != NULL;
	p->r.no_ring = p->no_ring;
	atomic_init(&p->stop, false);
	signal(SIGPIPE, SIG_IGN);
	catch_stop_signals();
	m = p->m = calloc(1, sizeof(*m));
	if (!m) {
		qs_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	{
		struct qs_err te = {0};
		if (sched_topo_load(&p->topo, NULL, &te) < 0)
			p->topo = NULL;
	}
	/* each incoming stream may hold a file open */
	size_t budget = engine_fd_budget();
	p->max_streams = budget < 1000 ? (uint32_t)budget : 1000;
	size_t spare = budget > p->max_streams ? budget - p->max_streams : 0;

	if (engine_expect(c, NET_CTL_HELLO, m, ENGINE_CTL_TIMEOUT_MS, err) < 0)
		goto out;
	if (strncmp(m->u.hello.version, "1.", 2) != 0) {
		qs_err_set(err, -EPROTO, "client speaks protocol version %s, this qsync speaks %s",
		           m->u.hello.version, NET_CTL_PROTO_VERSION);
		engine_send_error(c, "VERSION", err->msg);
		code = ENGINE_EXIT_PROTOCOL;
		goto out;
	}
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_HELLO_ACK;
	snprintf(m->u.hello.version, sizeof(m->u.hello.version), "%s", NET_CTL_PROTO_VERSION);
	m->u.hello.caps =
	    NET_CAP_QUIC_V1 | NET_CAP_QUICK_CHECK | NET_CAP_ASK_BATCH | NET_CAP_BUNDLE | NET_CAP_FSYNC;
	m->u.hello.quic_available = true;
	m->u.hello.max_streams = p->max_streams;
	if (net_ctl_send(c, m, err) < 0)
		goto out;

	/* quic_init first when the data goes over QUIC; straight to sync_start when it goes over SSH */
	if (expect_either(p, NET_CTL_QUIC_INIT, NET_CTL_SYNC_START, err) < 0)
		goto out;
	if (m->type == NET_CTL_QUIC_INIT) {
		if ((code = quic_setup(p, err)) != ENGINE_EXIT_OK)
			goto out;
		code = ENGINE_EXIT_START;
		if (engine_expect(c, NET_CTL_SYNC_START, m, ENGINE_CTL_TIMEOUT_MS, err) < 0)
			goto out;
	}
	p->r.wbuf_budget = RCV_WBUF_BUDGET / (p->n_quic ? p->n_quic : 1);
	if (receiver_open(&p->r, &m->u.sync_start, err) < 0) {
		engine_send_error(c, "DESTINATION", err->msg);
		code = ENGINE_EXIT_FILESEL;
		goto out;
	}
	p->r.ctl = c;
	/* the descriptors the streams leave over, two for each flush (its file, its directory) */
	size_t per_lane = spare / 2 / (p->n_quic ? p->n_quic : 1);
	p->r.flush_max = per_lane < 16 ? 16 : per_lane > RCV_FLUSH_MAX ? RCV_FLUSH_MAX : (unsigned)per_lane;
	for (unsigned i = 0; i < p->n_quic; i++)
		if (receiver_lane_init(&p->quic[i], &p->r) < 0) {
			qs_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
	p->r.wbuf_budget = RCV_WBUF_BUDGET; /* the SSH lane, if it comes to that, has it all */
	if (receiver_lane_init(&p->ssh, &p->r) < 0) {
		qs_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	p->r.wbuf_budget = RCV_WBUF_BUDGET / (p->n_quic ? p->n_quic : 1);
	bool ready = m->u.sync_start.quick_check;
	if (m->u.sync_start.data_path == NET_CTL_PATH_SSH) {
		p->r.wbuf_budget = RCV_WBUF_BUDGET;
		if (use_ssh(p, err) < 0 || (ready && send_ready(p, err) < 0))
			goto out;
	} else if (p->n_quic == 0) {
		qs_err_set(err, -EPROTO, "sync_start asks for QUIC, but no quic_init came before it");
		engine_send_error(c, "PROTOCOL", err->msg);
		code = ENGINE_EXIT_PROTOCOL;
		goto out;
	} else {
		if (ready && send_ready(p, err) < 0)
			goto out;
		struct sched_pool_opts po = {.nworkers = p->n_quic, .run = lane_run, .ctx = p};
		if (!engine_pin(p->topo, p->n_quic))
			po.flags |= SCHED_POOL_NO_PIN;
		if (sched_pool_create(&p->pool, p->topo, &po, err) < 0 || sched_pool_start(p->pool, err) < 0)
			goto out;
	}
	code = receive(p, err);

out:
	quic_teardown(p, true);
	receiver_lane_drain(&p->ssh); /* (before the channel its acks would go on) */
	net_mux_free(p->mux);
	for (unsigned i = 0; i < p->n_quic; i++)
		receiver_lane_free(&p->quic[i]);
	receiver_lane_free(&p->ssh);
	receiver_free(&p->r);
	sched_topo_free(p->topo);
	if (m)
		explicit_bzero(m, sizeof(*m)); /* it may have carried the secret */
	free(m);
	free(p);
	return code;
}
