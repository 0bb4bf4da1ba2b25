/* The client's side of a transfer (a push: the client sends). It reaches the peer (an SSH exec channel,
 * or a local `qsync --server` child on pipes), says hello, and picks the data path: QUIC — one
 * connection per worker (--workers), each driven by its own pinned thread of the sched/ pool, all
 * proven by one fresh 256-bit secret handed over in quic_init — or streams on the SSH channel itself,
 * driven by this (the control) thread, when the user says --no-quic, the peer has no QUIC, or no QUIC
 * handshake finishes in time. If QUIC goes silent in the middle, the workers stop and the rest goes over
 * SSH. It ends with sync_complete / ack_complete / bye. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/engine_int.h"
#include "net/mux.h"
#include "net/ssh.h"
#include "sched/sched.h"

#define LANE_POLL_MS 20 /* a worker looks for new work (and the stop flag) at least this often */

struct client {
	const struct engine_opts *o;
	struct engine_stats *st;
	pid_t child;
	struct net_ctl_chan *ctl;
	struct sockaddr_storage peer; /* where SSH went: QUIC is dialled there, never where the peer says */
	socklen_t peerlen;
	struct net_ctl_msg *m;
	struct sender snd;
	struct snd_lane quic[NET_CTL_MAX_CONNS]; /* one per QUIC connection */
	unsigned n_quic;
	struct snd_lane *up[NET_CTL_MAX_CONNS]; /* those whose handshake completed: worker i drives up[i] */
	unsigned n_up;
	struct snd_lane ssh; /* the SSH lane, once the data goes there */
	struct net_mux *mux;
	bool on_ssh;
	struct snd_lane *all[NET_CTL_MAX_CONNS + 1]; /* every lane used, for the statistics */
	size_t n_all;
	struct sched_topo *topo;
	struct sched_pool *pool;
	int evfd;         /* a worker whose lane failed wakes the control thread */
	atomic_bool stop; /* the workers' end; release/acquire: the control thread joins them after */
	bool peer_quic;
	bool quick_check; /* asked for in sync_start: the peer answers sync_ready */
	uint32_t peer_max_streams;
	char conn_id[17];
	uint64_t t0, last_progress;
	uint64_t peer_failed;      /* ack_complete's files_failed: what the receiver could not write */
	uint64_t peer_failed_late; /* ... of which found at the end, never told on a stream */
	bool peer_late_known;      /* the peer said which were late (files_failed_late) */
	bool no_ring;              /* QSYNC_NO_URING: files read at once on the lane's thread */
};

/* SRC DEST with no host: the peer is this same binary as a child, on pipes, reached over loopback UDP. */
static int spawn_local(struct client *cl, struct qs_err *err)
{
	int to_child[2], from_child[2];
	if (pipe2(to_child, O_CLOEXEC) < 0)
		return qs_err_set(err, -errno, "pipe: %s", strerror(errno));
	if (pipe2(from_child, O_CLOEXEC) < 0) {
		close(to_child[0]);
		close(to_child[1]);
		return qs_err_set(err, -errno, "pipe: %s", strerror(errno));
	}
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(to_child[0]);
		close(to_child[1]);
		close(from_child[0]);
		close(from_child[1]);
		return qs_err_set(err, -e, "fork: %s", strerror(e));
	}
	if (pid == 0) {
		dup2(to_child[0], 0);
		dup2(from_child[1], 1);
		execl("/proc/self/exe", "qsync", "--server", (char *)NULL);
		fprintf(stderr, "qsync: cannot start the local peer: %s\n", strerror(errno));
		_exit(127);
	}
	close(to_child[0]);
	close(from_child[1]);
	cl->child = pid;
	int rc = net_ctl_chan_fds(from_child[0], to_child[1], &cl->ctl);
	if (rc < 0) {
		close(from_child[0]);
		close(to_child[1]);
		return qs_err_set(err, rc, "cannot set up the control channel");
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)&cl->peer;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cl->peerlen = sizeof(*sin);
	return 0;
}

static void stats_update(struct client *cl)
{
	sender_stats(cl->all, cl->n_all, &cl->snd, cl->st);
	/* the receiver knows of failures the sender never hears of (a directory it could not flush or
	 * give its attributes at the end), and the sender of some it never sees (files it could not
	 * read). Those it found at the end (files_failed_late, from a peer that says) are none of the
	 * sender's, so they add; of the rest, each side may know of some the other does not, and the
	 * larger count is the best known. */
	if (cl->peer_late_known)
		cl->st->files_failed += cl->peer_failed_late;
	if (cl->peer_failed > cl->st->files_failed)
		cl->st->files_failed = cl->peer_failed;
	for (unsigned i = 0; i < cl->n_up && i < ENGINE_MAX_LANES; i++)
		cl->st->lane_streams[i] =
		    atomic_load_explicit(&cl->up[i]->streams_opened, memory_order_relaxed);
	cl->st->seconds = (double)(engine_now_ns() - cl->t0) / 1e9;
}

static void stats_publish(struct client *cl, bool force)
{
	uint64_t now = engine_now_ns();
	if (!force && now - cl->last_progress < ENGINE_PROGRESS_NS)
		return;
	cl->last_progress = now;
	stats_update(cl);
	engine_emit(cl->o, ENGINE_EV_PROGRESS, NULL, NULL, cl->st);
}

/* Handles what the receiver says during the transfer. Returns 0, or a negative errno when it is fatal. */
static int client_ctl(struct client *cl, struct qs_err *err)
{
	for (;;) {
		struct qs_err e = {0};
		int r = net_ctl_recv(cl->ctl, cl->m, &e);
		if (r == 0)
			return 0;
		if (r == -ENOMSG)
			continue;
		if (r < 0)
			return qs_err_set(err, r, "control channel: %s", e.msg);
		if (cl->m->type == NET_CTL_ERROR && cl->m->u.error.file[0] == '\0')
			return qs_err_set(err, -EPROTO, "peer: %s", cl->m->u.error.message);
		/* Per-file errors arrive in the stream's ack too, which is what the sender counts. */
	}
}

static int hello(struct client *cl, struct qs_err *err)
{
	struct net_ctl_msg *m = cl->m;
	int rc;
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_HELLO;
	snprintf(m->u.hello.version, sizeof(m->u.hello.version), "%s", NET_CTL_PROTO_VERSION);
	m->u.hello.caps = NET_CAP_QUIC_V1 | NET_CAP_QUICK_CHECK;
	if ((rc = net_ctl_send(cl->ctl, m, err)) < 0 ||
	    (rc = engine_expect(cl->ctl, NET_CTL_HELLO_ACK, m, (int)cl->o->ctl_timeout_ms, err)) < 0) {
		if (rc == -EPIPE)
			qs_err_set(
			    err, rc,
			    "the peer closed the connection before answering hello: is qsync installed "
			    "there (see --remote-path)?");
		return rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_START;
	}
	if (strncmp(m->u.hello.version, "1.", 2) != 0) {
		qs_err_set(err, -EPROTO, "peer speaks protocol version %s, this qsync speaks %s",
		           m->u.hello.version, NET_CTL_PROTO_VERSION);
		return ENGINE_EXIT_PROTOCOL;
	}
	cl->peer_quic = (m->u.hello.caps & NET_CAP_QUIC_V1) && m->u.hello.quic_available;
	cl->peer_max_streams = m->u.hello.max_streams;
	cl->quick_check = (m->u.hello.caps & NET_CAP_QUICK_CHECK) && !cl->o->ignore_times;
	cl->snd.ask_batch = cl->quick_check && (m->u.hello.caps & NET_CAP_ASK_BATCH);
	cl->snd.bundle = m->u.hello.caps & NET_CAP_BUNDLE;
	if (cl->o->do_fsync && !(m->u.hello.caps & NET_CAP_FSYNC)) {
		/* an older peer would take the option and ignore it: refuse rather than promise */
		qs_err_set(err, -ENOTSUP,
		           "the peer's qsync cannot fsync what it receives (--fsync): "
		           "update qsync there, or leave --fsync out");
		return ENGINE_EXIT_START;
	}
	return ENGINE_EXIT_OK;
}

/* How many workers (QUIC connections) to ask for: --workers, else one per core of this machine. */
static unsigned workers_wanted(struct client *cl)
{
	unsigned n = cl->o->workers;
	if (n == 0)
		n = cl->topo ? sched_topo_ncores(cl->topo) : 1;
	if (n < 1)
		n = 1;
	return n > NET_CTL_MAX_CONNS ? NET_CTL_MAX_CONNS : n;
}

/* quic_init / quic_ready, and one QUIC client per port the peer opened. The handshakes are driven by
 * quic_handshakes(). */
static int quic_setup(struct client *cl, struct qs_err *err)
{
	const struct engine_opts *o = cl->o;
	struct net_ctl_msg *m = cl->m;
	uint8_t psk[NET_QUIC_PSK_LEN], idb[8];
	int code = ENGINE_EXIT_START, rc;

	if (engine_random(psk, sizeof(psk)) < 0 || engine_random(idb, sizeof(idb)) < 0) {
		qs_err_set(err, -EIO, "no randomness for the session secret");
		goto out;
	}
	for (size_t i = 0; i < sizeof(idb); i++)
		snprintf(cl->conn_id + 2 * i, 3, "%02x", idb[i]);
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_QUIC_INIT;
	snprintf(m->u.quic_init.connection_id, sizeof(m->u.quic_init.connection_id), "%s", cl->conn_id);
	memcpy(m->u.quic_init.psk, psk, sizeof(psk));
	snprintf(m->u.quic_init.cipher_suite, sizeof(m->u.quic_init.cipher_suite), "TLS_AES_128_GCM_SHA256");
	m->u.quic_init.max_streams = o->max_streams ? o->max_streams : 1000;
	m->u.quic_init.connections = workers_wanted(cl);
	rc = net_ctl_send(cl->ctl, m, err);
	explicit_bzero(m, sizeof(*m));
	if (rc < 0 || (rc = engine_expect(cl->ctl, NET_CTL_QUIC_READY, m, (int)o->ctl_timeout_ms, err)) < 0) {
		code = rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_START;
		goto out;
	}
	const struct net_ctl_quic_ready *qr = &m->u.quic_ready;
	if (strcmp(qr->connection_id, cl->conn_id) != 0) {
		qs_err_set(err, -EPROTO, "quic_ready names another connection (%s)", qr->connection_id);
		code = ENGINE_EXIT_PROTOCOL;
		goto out;
	}
	uint16_t ports[NET_CTL_MAX_CONNS];
	unsigned n = qr->n_ports ? qr->n_ports : 1;
	if (n > workers_wanted(cl))
		n = workers_wanted(cl); /* more than we asked for is the peer's mistake: use what we wanted */
	for (unsigned i = 0; i < n; i++)
		ports[i] = qr->n_ports ? qr->ports[i] : qr->port;
	cl->st->quic_port = ports[0];
	cl->st->streams_max = qr->max_streams;
	if (cl->st->streams_max && cl->st->streams_max < cl->snd.max_in_flight)
		cl->snd.max_in_flight = cl->st->streams_max;

	struct net_quic_cfg qc;
	net_quic_cfg_default(&qc);
	/* the streams, the windows and the memory are shared out over the connections */
	size_t per_lane = cl->snd.max_in_flight / n ? cl->snd.max_in_flight / n : 1;
	qc.max_streams = (uint32_t)per_lane;
	if (o->memory_bytes)
		net_quic_cfg_budget(&qc, o->memory_bytes / n);
	qc.handshake_timeout_ms = o->quic_timeout_ms ? o->quic_timeout_ms : ENGINE_QUIC_TIMEOUT_MS;
	qc.idle_timeout_ms = o->quic_idle_ms ? o->quic_idle_ms : ENGINE_QUIC_IDLE_MS;
	static const struct {
		enum net_quic_cc cc;
		const char *name;
	} ccs[] = {[ENGINE_CC_BBR] = {NET_QUIC_CC_BBR, "bbr"},
	           [ENGINE_CC_BBR2] = {NET_QUIC_CC_BBR2, "bbr2"},
	           [ENGINE_CC_CUBIC] = {NET_QUIC_CC_CUBIC, "cubic"}};
	unsigned k = (unsigned)o->cc < sizeof(ccs) / sizeof(ccs[0]) ? (unsigned)o->cc : ENGINE_CC_BBR;
	qc.cc = ccs[k].cc;
	cl->st->cc = ccs[k].name;
	for (unsigned i = 0; i < n; i++) {
		struct snd_lane *l = &cl->quic[i];
		struct sockaddr_storage to = cl->peer;
		if (to.ss_family == AF_INET)
			((struct sockaddr_in *)&to)->sin_port = htons(ports[i]);
		else
			((struct sockaddr_in6 *)&to)->sin6_port = htons(ports[i]);
		struct net_dp none = {0};
		sender_lane_init(l, &cl->snd, &none, per_lane);
		/* about one connection window: the one the peer gives (what may be in flight), or ours
		 * (--memory) if smaller; at least 1 MiB, whatever the peer says */
		l->unsent_max = qc.max_data;
		if (qr->initial_max_data && qr->initial_max_data < l->unsent_max)
			l->unsent_max = qr->initial_max_data;
		if (l->unsent_max < (1u << 20))
			l->unsent_max = 1u << 20;
		struct net_dp_cb cb = sender_dp_cb_template;
		cb.ctx = l;
		rc = net_quic_client_new((struct sockaddr *)&to, cl->peerlen, cl->conn_id, psk, &qc, &cb,
		                         &l->q, err);
		if (rc < 0) {
			code = ENGINE_EXIT_NET;
			goto out;
		}
		net_quic_as_dp(l->q, &l->dp);
		cl->n_quic = i + 1;
	}
	code = ENGINE_EXIT_OK;
out:
	explicit_bzero(psk, sizeof(psk));
	return code;
}

static int sync_start(struct client *cl, enum net_ctl_path path, struct qs_err *err)
{
	const struct engine_opts *o = cl->o;
	struct net_ctl_msg *m = cl->m;
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_SYNC_START;
	snprintf(m->u.sync_start.source, sizeof(m->u.sync_start.source), "%s", o->sources[0]);
	snprintf(m->u.sync_start.destination, sizeof(m->u.sync_start.destination), "%s", o->dest);
	m->u.sync_start.preserve_permissions = o->perms;
	m->u.sync_start.preserve_timestamps = o->times;
	m->u.sync_start.preserve_owner = o->owner;
	m->u.sync_start.preserve_group = o->group;
	m->u.sync_start.recursive = o->recursive;
	m->u.sync_start.single_file = cl->snd.single_file;
	m->u.sync_start.data_path = path;
	m->u.sync_start.quick_check = cl->quick_check;
	m->u.sync_start.fsync = o->do_fsync;
	return net_ctl_send(cl->ctl, m, err);
}

/* With the quick check, the peer says whether the destination was there already: only then do files
 * ask before they send (a fresh destination has nothing to compare with, and asking costs a round
 * trip). */
static int sync_ready(struct client *cl, struct qs_err *err)
{
	if (!cl->quick_check)
		return 0;
	int rc = engine_expect(cl->ctl, NET_CTL_SYNC_READY, cl->m, (int)cl->o->ctl_timeout_ms, err);
	if (rc < 0)
		return rc;
	cl->snd.ask = cl->m->u.sync_ready.existing;
	return 0;
}

/* Streams on the SSH channel from here on (the channel is framed both ways once this returns). */
static int use_ssh(struct client *cl, struct qs_err *err)
{
	struct net_dp_cb cb = sender_dp_cb_template;
	cb.ctx = &cl->ssh;
	uint32_t streams =
	    (uint32_t)(cl->snd.max_in_flight < UINT32_MAX ? cl->snd.max_in_flight : UINT32_MAX);
	int rc = net_mux_new(cl->ctl, 1, 0, streams, &cb, &cl->mux);
	if (rc < 0)
		return qs_err_set(err, rc, "cannot carry the data over SSH: %s", strerror(-rc));
	struct net_dp dp;
	net_mux_as_dp(cl->mux, &dp);
	sender_lane_init(&cl->ssh, &cl->snd, &dp, streams);
	cl->all[cl->n_all++] = &cl->ssh;
	cl->on_ssh = true;
	cl->st->data_path = "ssh";
	cl->st->quic_port = 0;
	cl->st->connections = 0;
	cl->st->cc = NULL;
	cl->st->streams_max = streams;
	return 0;
}

/* Stops the QUIC workers and frees every connection: what they still had in flight waits to be sent
 * again (closed with NET_DP_GONE). */
static void quic_teardown(struct client *cl)
{
	atomic_store_explicit(&cl->stop, true, memory_order_release);
	if (cl->pool) {
		sched_pool_stop(cl->pool);
		sched_pool_join(cl->pool);
		/* what the workers had not taken yet goes on from the control thread */
		struct sched_worker *ws[NET_CTL_MAX_CONNS];
		unsigned nw = sched_pool_nworkers(cl->pool);
		for (unsigned i = 0; i < nw; i++) {
			struct sched_worker_stats ss;
			ws[i] = sched_pool_worker(cl->pool, i);
			sched_worker_stats(ws[i], &ss);
			cl->st->steals += ss.steals_local + ss.steals_remote;
		}
		sender_drain(&cl->snd, ws, nw);
		sched_pool_destroy(cl->pool);
		cl->pool = NULL;
	}
	for (unsigned i = 0; i < cl->n_quic; i++) {
		cl->quic[i].w = NULL;
		net_quic_free(cl->quic[i].q);
		cl->quic[i].q = NULL;
		sender_lane_ring_free(&cl->quic[i]); /* after the streams: their reads finish first */
	}
}

/* Gives up QUIC, asks the peer to switch, and waits for its data_path_ack: the last line before
 * frames. */
static int switch_to_ssh(struct client *cl, const char *reason, struct qs_err *err)
{
	struct net_ctl_msg *m = cl->m;
	int rc;
	quic_teardown(cl);
	snprintf(cl->st->data_path_reason, sizeof(cl->st->data_path_reason), "%s", reason);
	stats_update(cl);
	engine_emit(cl->o, ENGINE_EV_DATA_PATH, "ssh", reason, cl->st);
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_DATA_PATH;
	m->u.data_path.path = NET_CTL_PATH_SSH;
	snprintf(m->u.data_path.reason, sizeof(m->u.data_path.reason), "%s", reason);
	if ((rc = net_ctl_send(cl->ctl, m, err)) < 0 ||
	    (rc = engine_expect(cl->ctl, NET_CTL_DATA_PATH_ACK, m, (int)cl->o->ctl_timeout_ms, err)) < 0)
		return rc;
	return use_ssh(cl, err);
}

/* Drives every QUIC handshake from this thread until all complete or time runs out. Lanes whose
 * handshake did not complete are dropped; returns 0 if at least one completed, else a negative errno
 * (err says why). */
static int quic_handshakes(struct client *cl, struct qs_err *err)
{
	uint32_t limit = cl->o->quic_timeout_ms ? cl->o->quic_timeout_ms : ENGINE_QUIC_TIMEOUT_MS;
	uint64_t deadline = engine_now_ns() + (uint64_t)limit * 1000000ull;
	int last = -ETIMEDOUT;
	char why[QS_ERR_MSG_MAX];
	snprintf(why, sizeof(why), "the QUIC handshake did not finish in %u ms", limit);
	for (;;) {
		unsigned ready = 0, alive = 0;
		struct pollfd p[NET_CTL_MAX_CONNS + 1];
		int tmo = 50;
		nfds_t np = 0;
		for (unsigned i = 0; i < cl->n_quic; i++) {
			struct snd_lane *l = &cl->quic[i];
			if (!l->q)
				continue;
			alive++;
			if (net_dp_ready(&l->dp)) {
				ready++;
				continue;
			}
			int t = net_dp_timeout_ms(&l->dp);
			if (t >= 0 && t < tmo)
				tmo = t;
			p[np].fd = net_dp_fd(&l->dp);
			p[np++].events = POLLIN;
		}
		if (ready == alive && ready > 0)
			break;
		if (alive == 0 || engine_now_ns() > deadline)
			break;
		if (net_ctl_poll_fd(cl->ctl) >= 0) {
			p[np].fd = net_ctl_poll_fd(cl->ctl);
			p[np++].events = POLLIN;
		}
		if (poll(p, np, tmo) < 0 && errno != EINTR)
			return qs_err_set(err, -errno, "poll: %s", strerror(errno));
		for (unsigned i = 0; i < cl->n_quic; i++) {
			struct snd_lane *l = &cl->quic[i];
			struct qs_err e = {0};
			if (!l->q || net_dp_ready(&l->dp))
				continue;
			int rc = net_dp_process(&l->dp, &e);
			if (rc < 0) {
				last = rc;
				snprintf(why, sizeof(why), "%s", e.msg);
				net_quic_free(l->q);
				l->q = NULL;
			}
		}
		int rc = client_ctl(cl, err);
		if (rc < 0)
			return rc;
	}
	/* the lanes that are up get a worker each; the others are dropped */
	cl->n_up = 0;
	for (unsigned i = 0; i < cl->n_quic; i++) {
		struct snd_lane *l = &cl->quic[i];
		if (l->q && net_dp_ready(&l->dp)) {
			cl->up[cl->n_up++] = l;
		} else if (l->q) {
			net_quic_free(l->q);
			l->q = NULL;
		}
	}
	if (cl->n_up == 0)
		return qs_err_set(err, last, "%s", why);
	return 0;
}

/* A worker: drives its lane's QUIC connection (packets, timers, new streams) until told to stop. */
static void lane_run(struct sched_worker *w, void *ctx)
{
	struct client *cl = ctx;
	struct snd_lane *l = cl->up[sched_worker_index(w)];
	l->w = w; /* its items come from (and go to) this worker's deque */
	if (!cl->no_ring)
		(void)sender_lane_ring(l); /* (without its buffers, the lane reads at once) */
	while (!atomic_load_explicit(&cl->stop, memory_order_acquire)) {
		struct qs_err e = {0};
		if (engine_lane_wait(&l->dp, l->ring, LANE_POLL_MS) < 0) /* reaps reads done: streams wake */
			continue;
		int rc = net_dp_process(&l->dp, &e);
		if (rc == 0 && (rc = sender_pump(l, &e)) == 0)
			rc = net_dp_process(&l->dp, &e);
		if (rc < 0) {
			snprintf(l->dead_msg, sizeof(l->dead_msg), "%s", e.msg);
			/* release: dead_msg is written before the control thread reads it */
			atomic_store_explicit(&l->dead, rc, memory_order_release);
			uint64_t one = 1;
			if (write(cl->evfd, &one, sizeof(one)) < 0) {
				/* the control thread also polls by time */
			}
			return;
		}
	}
}

/* Chooses the data path and sets it up; sync_start is sent on the way. Returns an engine_exit code. */
static int choose_path(struct client *cl, struct qs_err *err)
{
	const struct engine_opts *o = cl->o;
	const char *why = NULL;
	int code;
	if (o->no_quic)
		why = "--no-quic";
	else if (!cl->peer_quic)
		why = "the peer offers no QUIC data plane";
	else if (cl->peerlen == 0 || (cl->peer.ss_family != AF_INET && cl->peer.ss_family != AF_INET6))
		why = "the SSH connection has no IP peer address (a ProxyCommand?) to dial QUIC at";
	if (why) {
		snprintf(cl->st->data_path_reason, sizeof(cl->st->data_path_reason), "%s", why);
		if (sync_start(cl, NET_CTL_PATH_SSH, err) < 0 || use_ssh(cl, err) < 0)
			return ENGINE_EXIT_START;
		int rc = sync_ready(cl, err);
		return rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : rc < 0 ? ENGINE_EXIT_START : ENGINE_EXIT_OK;
	}
	if ((code = quic_setup(cl, err)) != ENGINE_EXIT_OK)
		return code;
	if (sync_start(cl, NET_CTL_PATH_QUIC, err) < 0)
		return ENGINE_EXIT_START;
	/* (the peer answers as soon as the destination is open, before it serves the handshakes) */
	int rc = sync_ready(cl, err);
	if (rc < 0)
		return rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_START;
	struct qs_err he = {0};
	rc = quic_handshakes(cl, &he);
	if (rc == 0) {
		cl->st->data_path = "quic";
		cl->st->connections = cl->n_up;
		for (unsigned i = 0; i < cl->n_up; i++)
			cl->all[cl->n_all++] = cl->up[i];
		struct sched_pool_opts po = {.nworkers = cl->n_up, .run = lane_run, .ctx = cl};
		if (!engine_pin(cl->topo, cl->n_up))
			po.flags |= SCHED_POOL_NO_PIN;
		if (sched_pool_create(&cl->pool, cl->topo, &po, err) < 0)
			return ENGINE_EXIT_START;
		if (sender_seed(&cl->snd, sched_pool_worker(cl->pool, 0)) < 0) {
			qs_err_set(err, -ENOMEM, "out of memory");
			return ENGINE_EXIT_START;
		}
		if (sched_pool_start(cl->pool, err) < 0)
			return ENGINE_EXIT_START;
		return ENGINE_EXIT_OK;
	}
	if (rc == -EPROTO || rc == -EPIPE) {
		qs_err_set(err, rc, "%s", he.msg);
		return rc == -EPROTO ? ENGINE_EXIT_STREAM : ENGINE_EXIT_START;
	}
	char reason[QS_ERR_MSG_MAX + 40];
	snprintf(reason, sizeof(reason), "%s (UDP blocked?): using the SSH connection", he.msg);
	if (switch_to_ssh(cl, reason, err) < 0)
		return ENGINE_EXIT_START;
	return ENGINE_EXIT_OK;
}

/* True when every entry has been confirmed or has failed for good. */
static bool all_done(struct client *cl)
{
	return sender_nothing(&cl->snd);
}

/* Fails the transfer when nothing has moved for the control timeout. */
static int watch_progress(struct client *cl, uint64_t *mark, uint64_t *at, struct qs_err *err)
{
	stats_update(cl);
	const struct engine_stats *st = cl->st;
	uint64_t m = st->bytes_sent + st->files_done + st->files_failed + st->files_discovered,
	         now = engine_now_ns();
	if (m != *mark) {
		*mark = m;
		*at = now;
		return 0;
	}
	if (now - *at > (uint64_t)cl->o->ctl_timeout_ms * 1000000ull)
		return qs_err_set(err, -ETIMEDOUT,
		                  "no progress for %u s (the receiver stopped confirming files)",
		                  cl->o->ctl_timeout_ms / 1000);
	return 0;
}

/* QUIC phase: the workers send; this thread watches the control channel, the lanes and the clock. */
static int transfer_quic(struct client *cl, struct qs_err *err)
{
	uint64_t mark = 0, at = engine_now_ns();
	while (!all_done(cl)) {
		struct pollfd p[2] = {{.fd = cl->evfd, .events = POLLIN}, {.fd = -1, .events = POLLIN}};
		p[1].fd = net_ctl_poll_fd(cl->ctl);
		if (poll(p, 2, net_ctl_pending(cl->ctl) ? 0 : 100) < 0 && errno != EINTR)
			return qs_err_set(err, -errno, "poll: %s", strerror(errno)), ENGINE_EXIT_NET;
		uint64_t sink;
		if (p[0].revents & POLLIN)
			(void)!read(cl->evfd, &sink, sizeof(sink));
		if (client_ctl(cl, err) < 0)
			return ENGINE_EXIT_STREAM;
		for (unsigned i = 0; i < cl->n_up; i++) {
			struct snd_lane *l = cl->up[i];
			int rc = atomic_load_explicit(&l->dead, memory_order_acquire);
			if (rc == 0)
				continue;
			/* the connection is gone (idle: UDP stopped; or the peer closed it), or the lane
			 * could not go on: the rest goes over SSH */
			char reason[QS_ERR_MSG_MAX + 80];
			snprintf(reason, sizeof(reason),
			         "QUIC lost mid-transfer (%s): the rest goes over the SSH connection",
			         l->dead_msg);
			if (switch_to_ssh(cl, reason, err) < 0)
				return ENGINE_EXIT_NET;
			return ENGINE_EXIT_OK; /* the SSH phase carries on */
		}
		if (watch_progress(cl, &mark, &at, err) < 0)
			return ENGINE_EXIT_TIMEOUT;
		stats_publish(cl, false);
	}
	return ENGINE_EXIT_OK;
}

/* SSH phase: this thread drives the SSH lane. */
static int transfer_ssh(struct client *cl, struct qs_err *err)
{
	struct snd_lane *l = &cl->ssh;
	uint64_t mark = 0, at = engine_now_ns();
	int rc;
	while (!all_done(cl)) {
		if (watch_progress(cl, &mark, &at, err) < 0)
			return ENGINE_EXIT_TIMEOUT;
		struct qs_err de = {0};
		rc = engine_poll_once(cl->ctl, &l->dp, NULL, 100, &de);
		if (rc == 0) {
			if ((rc = sender_pump(l, err)) < 0)
				return ENGINE_EXIT_FILEIO;
			rc = net_dp_process(&l->dp, &de);
		}
		if (rc < 0) {
			qs_err_set(err, rc, "%s", de.msg);
			return rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_STREAM;
		}
		if ((rc = client_ctl(cl, err)) < 0)
			return ENGINE_EXIT_STREAM;
		stats_publish(cl, false);
	}
	return ENGINE_EXIT_OK;
}

/* sync_complete -> ack_complete, the data planes serviced meanwhile. Returns an engine_exit code. */
static int finish(struct client *cl, struct qs_err *err)
{
	struct engine_stats *st = cl->st;
	struct net_ctl_msg *m = cl->m;
	int rc;
	stats_update(cl);
	uint64_t streams = 0;
	if (cl->on_ssh)
		streams = atomic_load(&cl->ssh.streams_opened);
	else
		for (unsigned i = 0; i < cl->n_up; i++)
			streams += atomic_load(&cl->up[i]->streams_opened);
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_SYNC_COMPLETE;
	m->u.sync_complete.files_transferred = streams;
	m->u.sync_complete.bytes_transferred = st->bytes_done;
	m->u.sync_complete.duration_seconds = st->seconds;
	m->u.sync_complete.average_throughput_mbps =
	    st->seconds > 0 ? (uint64_t)((double)st->bytes_done * 8 / 1e6 / st->seconds) : 0;
	if ((rc = net_ctl_send(cl->ctl, m, err)) < 0)
		return ENGINE_EXIT_STREAM;
	uint64_t deadline = engine_now_ns() + (uint64_t)cl->o->ctl_timeout_ms * 1000000ull;
	for (;;) {
		struct qs_err e = {0};
		rc = net_ctl_recv(cl->ctl, m, &e);
		if (rc == 1 && m->type == NET_CTL_ACK_COMPLETE)
			break;
		if (rc == 1 && m->type == NET_CTL_PROGRESS) /* the receiver still finishing: it is there */
			deadline = engine_now_ns() + (uint64_t)cl->o->ctl_timeout_ms * 1000000ull;
		if (rc == 1 && m->type == NET_CTL_ERROR && m->u.error.file[0] == '\0') {
			qs_err_set(err, -EPROTO, "peer: %s", m->u.error.message);
			return ENGINE_EXIT_STREAM;
		}
		if (rc < 0 && rc != -ENOMSG) {
			qs_err_set(err, rc, "waiting for ack_complete: %s", e.msg);
			return ENGINE_EXIT_STREAM;
		}
		if (engine_now_ns() > deadline) {
			qs_err_set(err, -ETIMEDOUT,
			           "timed out waiting for the receiver to confirm completion");
			return ENGINE_EXIT_TIMEOUT;
		}
		/* the QUIC lanes' workers go on acking the receiver's last packets by themselves */
		if (rc == 0 &&
		    (rc = engine_poll_once(cl->ctl, cl->on_ssh ? &cl->ssh.dp : NULL, NULL, 100, err)) < 0 &&
		    rc != -ECONNABORTED)
			return ENGINE_EXIT_NET;
	}
	cl->peer_failed = m->u.ack_complete.files_failed;
	cl->peer_failed_late = m->u.ack_complete.files_failed_late;
	cl->peer_late_known = m->u.ack_complete.has_failed_late;
	stats_update(cl);
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_BYE;
	net_ctl_send(cl->ctl, m, NULL);
	if (!cl->on_ssh) {
		atomic_store_explicit(&cl->stop, true, memory_order_release);
		if (cl->pool) {
			sched_pool_stop(cl->pool);
			sched_pool_join(cl->pool);
		}
		for (unsigned i = 0; i < cl->n_up; i++)
			net_quic_close(cl->up[i]->q);
	}
	size_t walk_errors = atomic_load(&cl->snd.walk_errors);
	if (st->files_failed || walk_errors) {
		qs_err_set(err, -EIO, "some files could not be transferred (%llu failed)",
		           (unsigned long long)st->files_failed + walk_errors);
		return ENGINE_EXIT_PARTIAL;
	}
	return ENGINE_EXIT_OK;
}

int engine_client_run(const struct engine_opts *o, struct engine_stats *st, struct qs_err *err)
{
	struct client cl = {.o = o, .st = st, .child = -1, .evfd = -1};
	int code;
	memset(st, 0, sizeof(*st));
	atomic_init(&cl.stop, false);
	cl.t0 = engine_now_ns();
	cl.no_ring = getenv("QSYNC_NO_URING") != NULL;
	cl.m = calloc(1, sizeof(*cl.m));
	if (!cl.m)
		return qs_err_set(err, -ENOMEM, "out of memory"), ENGINE_EXIT_START;
	cl.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	{
		struct qs_err te = {0};
		if (sched_topo_load(&cl.topo, NULL, &te) < 0)
			cl.topo = NULL; /* no topology: unpinned workers, one per lane all the same */
	}

	if (sender_plan(&cl.snd, o, err) < 0) {
		code = ENGINE_EXIT_FILESEL;
		goto out;
	}
	stats_update(&cl);
	if (sender_nothing(&cl.snd)) {
		qs_err_set(err, -ENOENT, "nothing to send");
		code = atomic_load(&cl.snd.walk_errors) ? ENGINE_EXIT_PARTIAL : ENGINE_EXIT_OK;
		goto out;
	}
	if (o->max_streams && o->max_streams < cl.snd.max_in_flight)
		cl.snd.max_in_flight = o->max_streams;

	if (o->remote) {
		char cmd[4200];
		snprintf(cmd, sizeof(cmd), "%s --server", o->remote_path);
		if (net_ssh_connect(&o->ssh, cmd, &cl.ctl, &cl.peer, &cl.peerlen, err) < 0) {
			code = ENGINE_EXIT_SSH;
			goto out;
		}
	} else if (spawn_local(&cl, err) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}
	if ((code = hello(&cl, err)) != ENGINE_EXIT_OK)
		goto out;
	if (cl.peer_max_streams && cl.peer_max_streams < cl.snd.max_in_flight)
		cl.snd.max_in_flight = cl.peer_max_streams;
	if ((code = choose_path(&cl, err)) != ENGINE_EXIT_OK)
		goto out;
	cl.t0 = engine_now_ns();
	if (!cl.on_ssh && (code = transfer_quic(&cl, err)) != ENGINE_EXIT_OK)
		goto out;
	if (cl.on_ssh && (code = transfer_ssh(&cl, err)) != ENGINE_EXIT_OK)
		goto out;
	code = finish(&cl, err);

out:
	quic_teardown(&cl);
	stats_update(&cl);
	net_mux_free(cl.mux);
	cl.mux = NULL;
	if (cl.ctl) {
		int status = -1;
		net_ctl_chan_finish(cl.ctl, &status);
		if (cl.child > 0) {
			int ws;
			pid_t got = 0;
			/* a partial transfer ran to its end (bye is sent): the peer is on its way out, and
			 * stopping it would only have it say it was stopped */
			for (int i = 0; code == ENGINE_EXIT_PARTIAL && got == 0 && i < 200; i++) {
				got = waitpid(cl.child, &ws, WNOHANG);
				if (got == 0)
					usleep(10000);
			}
			if (got == 0 && code != ENGINE_EXIT_OK)
				kill(cl.child, SIGTERM);
			if (got == 0)
				got = waitpid(cl.child, &ws, 0);
			if (got == cl.child && WIFEXITED(ws))
				status = WEXITSTATUS(ws);
		}
		if (code == ENGINE_EXIT_OK && status > 0) {
			qs_err_set(err, -EIO, "the peer exited with status %d", status);
			code = status == ENGINE_EXIT_PARTIAL ? ENGINE_EXIT_PARTIAL : ENGINE_EXIT_STREAM;
		}
	}
	sender_free(&cl.snd);
	sched_topo_free(cl.topo);
	if (cl.evfd >= 0)
		close(cl.evfd);
	explicit_bzero(cl.m, sizeof(*cl.m)); /* it may have carried the secret */
	free(cl.m);
	if (!st->data_path)
		st->data_path = "none";
	engine_emit(o, ENGINE_EV_SUMMARY, NULL, NULL, st);
	return code;
}
