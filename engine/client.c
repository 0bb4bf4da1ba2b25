/* The client's side of a transfer (a push: the client sends). It reaches the peer (an SSH exec channel,
 * or a local `qsync --server` child on pipes), says hello, picks the data path — QUIC with a fresh
 * 256-bit secret handed over in quic_init, or streams on the SSH channel itself when the user says
 * --no-quic, the peer has no QUIC, or the QUIC handshake does not finish in time — sends every entry,
 * carries on over SSH if QUIC goes silent in the middle, and ends with sync_complete / ack_complete /
 * bye. One thread drives the control channel and the data plane. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/engine_int.h"
#include "net/mux.h"
#include "net/ssh.h"

struct client {
	const struct engine_opts *o;
	struct engine_stats *st;
	pid_t child;
	struct net_ctl_chan *ctl;
	struct sockaddr_storage peer; /* where SSH went: QUIC is dialled there, never where the peer says */
	socklen_t peerlen;
	struct net_ctl_msg *m;
	struct sender snd;
	struct net_quic *q;
	struct net_mux *mux;
	struct net_dp dp; /* the one in use: over q or over mux */
	bool peer_quic;
	uint32_t peer_max_streams;
	char conn_id[17];
	uint64_t t0, last_progress;
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

static void stats_publish(struct client *cl, bool force)
{
	uint64_t now = engine_now_ns();
	if (!force && now - cl->last_progress < ENGINE_PROGRESS_NS)
		return;
	cl->last_progress = now;
	cl->st->seconds = (double)(now - cl->t0) / 1e9;
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
	m->u.hello.caps = NET_CAP_QUIC_V1;
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
	return ENGINE_EXIT_OK;
}

/* quic_init / quic_ready, and a QUIC client toward the port the peer opened. The handshake is driven by
 * quic_handshake(). */
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
	rc = net_ctl_send(cl->ctl, m, err);
	explicit_bzero(m, sizeof(*m));
	if (rc < 0 || (rc = engine_expect(cl->ctl, NET_CTL_QUIC_READY, m, (int)o->ctl_timeout_ms, err)) < 0) {
		code = rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_START;
		goto out;
	}
	if (strcmp(m->u.quic_ready.connection_id, cl->conn_id) != 0) {
		qs_err_set(err, -EPROTO, "quic_ready names another connection (%s)",
		           m->u.quic_ready.connection_id);
		code = ENGINE_EXIT_PROTOCOL;
		goto out;
	}
	cl->st->quic_port = m->u.quic_ready.port;
	cl->st->streams_max = m->u.quic_ready.max_streams;
	if (cl->st->streams_max && cl->st->streams_max < cl->snd.max_in_flight)
		cl->snd.max_in_flight = cl->st->streams_max;
	if (cl->peer.ss_family == AF_INET)
		((struct sockaddr_in *)&cl->peer)->sin_port = htons(m->u.quic_ready.port);
	else
		((struct sockaddr_in6 *)&cl->peer)->sin6_port = htons(m->u.quic_ready.port);

	struct net_quic_cfg qc;
	net_quic_cfg_default(&qc);
	qc.max_streams = cl->st->streams_max ? cl->st->streams_max : qc.max_streams;
	qc.handshake_timeout_ms = o->quic_timeout_ms ? o->quic_timeout_ms : ENGINE_QUIC_TIMEOUT_MS;
	qc.idle_timeout_ms = o->quic_idle_ms ? o->quic_idle_ms : ENGINE_QUIC_IDLE_MS;
	qc.cc = o->cc == ENGINE_CC_CUBIC ? NET_QUIC_CC_CUBIC
	        : o->cc == ENGINE_CC_BBR ? NET_QUIC_CC_BBR
	                                 : NET_QUIC_CC_BBR2;
	struct net_dp_cb cb = sender_dp_cb_template;
	cb.ctx = &cl->snd;
	rc = net_quic_client_new((struct sockaddr *)&cl->peer, cl->peerlen, cl->conn_id, psk, &qc, &cb,
	                         &cl->q, err);
	if (rc < 0) {
		code = ENGINE_EXIT_NET;
		goto out;
	}
	net_quic_as_dp(cl->q, &cl->dp);
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
	return net_ctl_send(cl->ctl, m, err);
}

/* Streams on the SSH channel from here on (the channel is framed both ways once this returns). */
static int use_ssh(struct client *cl, struct qs_err *err)
{
	struct net_dp_cb cb = sender_dp_cb_template;
	cb.ctx = &cl->snd;
	uint32_t streams =
	    (uint32_t)(cl->snd.max_in_flight < UINT32_MAX ? cl->snd.max_in_flight : UINT32_MAX);
	int rc = net_mux_new(cl->ctl, 1, 0, streams, &cb, &cl->mux);
	if (rc < 0)
		return qs_err_set(err, rc, "cannot carry the data over SSH: %s", strerror(-rc));
	net_mux_as_dp(cl->mux, &cl->dp);
	sender_switch(&cl->snd, &cl->dp);
	cl->st->data_path = "ssh";
	cl->st->quic_port = 0;
	cl->st->streams_max = streams;
	return 0;
}

/* Gives up QUIC (its unconfirmed entries wait to be sent again), asks the peer to switch, and waits for
 * its data_path_ack: the last line before frames. */
static int switch_to_ssh(struct client *cl, const char *reason, struct qs_err *err)
{
	struct net_ctl_msg *m = cl->m;
	int rc;
	net_quic_free(cl->q);
	cl->q = NULL;
	snprintf(cl->st->data_path_reason, sizeof(cl->st->data_path_reason), "%s", reason);
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

/* Drives the QUIC handshake until it completes (0), fails or runs out of time (negative, err says
 * why). The control channel is watched meanwhile: the peer may report a fatal error. */
static int quic_handshake(struct client *cl, struct qs_err *err)
{
	uint32_t limit = cl->o->quic_timeout_ms ? cl->o->quic_timeout_ms : ENGINE_QUIC_TIMEOUT_MS;
	uint64_t deadline = engine_now_ns() + (uint64_t)limit * 1000000ull;
	while (!net_dp_ready(&cl->dp)) {
		int rc = engine_poll_once(cl->ctl, &cl->dp, 50, err);
		if (rc < 0)
			return rc;
		if (engine_now_ns() > deadline)
			return qs_err_set(err, -ETIMEDOUT, "the QUIC handshake did not finish in %u ms",
			                  limit);
		if ((rc = client_ctl(cl, err)) < 0)
			return rc;
	}
	return 0;
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
		if (sync_start(cl, NET_CTL_PATH_SSH, err) < 0)
			return ENGINE_EXIT_START;
		return use_ssh(cl, err) < 0 ? ENGINE_EXIT_START : ENGINE_EXIT_OK;
	}
	if ((code = quic_setup(cl, err)) != ENGINE_EXIT_OK)
		return code;
	if (sync_start(cl, NET_CTL_PATH_QUIC, err) < 0)
		return ENGINE_EXIT_START;
	struct qs_err he = {0};
	int rc = quic_handshake(cl, &he);
	if (rc == 0) {
		cl->st->data_path = "quic";
		sender_switch(&cl->snd, &cl->dp);
		return ENGINE_EXIT_OK;
	}
	if (net_ctl_chan_is_framed(cl->ctl) || rc == -EPROTO || rc == -EPIPE) {
		qs_err_set(err, rc, "%s", he.msg);
		return rc == -EPROTO ? ENGINE_EXIT_STREAM : ENGINE_EXIT_START;
	}
	char reason[QS_ERR_MSG_MAX + 40];
	snprintf(reason, sizeof(reason), "%s (UDP blocked?): using the SSH connection", he.msg);
	if (switch_to_ssh(cl, reason, err) < 0)
		return ENGINE_EXIT_START;
	return ENGINE_EXIT_OK;
}

/* QUIC died under the transfer: carry on over SSH from where it was. Returns 0 or a negative errno. */
static int failover(struct client *cl, const char *what, struct qs_err *err)
{
	char reason[QS_ERR_MSG_MAX + 80];
	snprintf(reason, sizeof(reason), "QUIC lost mid-transfer (%s): the rest goes over the SSH connection",
	         what);
	return switch_to_ssh(cl, reason, err);
}

/* Sends every entry. Returns an engine_exit code. */
static int transfer(struct client *cl, struct qs_err *err)
{
	struct sender *snd = &cl->snd;
	struct engine_stats *st = cl->st;
	uint64_t moved_at = engine_now_ns(), moved_mark = 0;
	int rc;
	while (!sender_done(snd)) {
		/* A peer that keeps the data path alive but never finishes a stream must not hold us. */
		uint64_t mark = st->bytes_sent + st->files_done + st->files_failed, now = engine_now_ns();
		if (mark != moved_mark) {
			moved_mark = mark;
			moved_at = now;
		} else if (now - moved_at > (uint64_t)cl->o->ctl_timeout_ms * 1000000ull) {
			qs_err_set(err, -ETIMEDOUT,
			           "no progress for %u s (the receiver stopped confirming files)",
			           cl->o->ctl_timeout_ms / 1000);
			return ENGINE_EXIT_TIMEOUT;
		}
		struct qs_err de = {0};
		rc = engine_poll_once(cl->ctl, &cl->dp, 100, &de);
		if (rc == 0) {
			if ((rc = sender_pump(snd, err)) < 0)
				return ENGINE_EXIT_FILEIO;
			rc = net_dp_process(&cl->dp, &de);
		}
		if (rc < 0 && cl->q && !net_ctl_chan_is_framed(cl->ctl)) {
			/* the QUIC connection is gone (idle: UDP stopped; or the peer closed it) */
			if ((rc = failover(cl, de.msg, err)) < 0)
				return ENGINE_EXIT_NET;
			moved_at = engine_now_ns();
			continue;
		}
		if (rc < 0) {
			qs_err_set(err, rc, "%s", de.msg);
			if (rc == -ETIMEDOUT)
				return ENGINE_EXIT_TIMEOUT;
			return net_ctl_chan_is_framed(cl->ctl) ? ENGINE_EXIT_STREAM : ENGINE_EXIT_NET;
		}
		if ((rc = client_ctl(cl, err)) < 0)
			return ENGINE_EXIT_STREAM;
		stats_publish(cl, false);
	}
	return ENGINE_EXIT_OK;
}

/* sync_complete -> ack_complete, keeping the data plane serviced meanwhile. Returns an engine_exit code. */
static int finish(struct client *cl, struct qs_err *err)
{
	struct engine_stats *st = cl->st;
	struct net_ctl_msg *m = cl->m;
	int rc;
	st->seconds = (double)(engine_now_ns() - cl->t0) / 1e9;
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_SYNC_COMPLETE;
	m->u.sync_complete.files_transferred = cl->snd.streams_opened;
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
		if (rc == 0 && (rc = engine_poll_once(cl->ctl, &cl->dp, 100, err)) < 0 && rc != -ECONNABORTED)
			return ENGINE_EXIT_NET;
	}
	if (m->u.ack_complete.files_failed > 0 && st->files_failed == 0)
		st->files_failed = m->u.ack_complete.files_failed;
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_BYE;
	net_ctl_send(cl->ctl, m, NULL);
	if (cl->q)
		net_quic_close(cl->q);
	if (st->files_failed || cl->snd.walk_errors) {
		qs_err_set(err, -EIO, "some files could not be transferred (%llu failed)",
		           (unsigned long long)st->files_failed + cl->snd.walk_errors);
		return ENGINE_EXIT_PARTIAL;
	}
	return ENGINE_EXIT_OK;
}

int engine_client_run(const struct engine_opts *o, struct engine_stats *st, struct qs_err *err)
{
	struct client cl = {.o = o, .st = st, .child = -1};
	int code;
	memset(st, 0, sizeof(*st));
	cl.t0 = engine_now_ns();
	cl.m = calloc(1, sizeof(*cl.m));
	if (!cl.m)
		return qs_err_set(err, -ENOMEM, "out of memory"), ENGINE_EXIT_START;

	if (sender_plan(&cl.snd, o, st, err) < 0) {
		code = ENGINE_EXIT_FILESEL;
		goto out;
	}
	if (cl.snd.n == 0) {
		qs_err_set(err, -ENOENT, "nothing to send");
		code = cl.snd.walk_errors ? ENGINE_EXIT_PARTIAL : ENGINE_EXIT_OK;
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
	if ((code = transfer(&cl, err)) != ENGINE_EXIT_OK)
		goto out;
	code = finish(&cl, err);

out:
	st->seconds = (double)(engine_now_ns() - cl.t0) / 1e9;
	net_quic_free(cl.q);
	cl.q = NULL;
	net_mux_free(cl.mux);
	cl.mux = NULL;
	if (cl.ctl) {
		int status = -1;
		net_ctl_chan_finish(cl.ctl, &status);
		if (cl.child > 0) {
			int ws;
			if (code != ENGINE_EXIT_OK)
				kill(cl.child, SIGTERM);
			if (waitpid(cl.child, &ws, 0) == cl.child && WIFEXITED(ws))
				status = WEXITSTATUS(ws);
		}
		if (code == ENGINE_EXIT_OK && status > 0) {
			qs_err_set(err, -EIO, "the peer exited with status %d", status);
			code = status == ENGINE_EXIT_PARTIAL ? ENGINE_EXIT_PARTIAL : ENGINE_EXIT_STREAM;
		}
	}
	sender_free(&cl.snd);
	explicit_bzero(cl.m, sizeof(*cl.m)); /* it may have carried the secret */
	free(cl.m);
	if (!st->data_path)
		st->data_path = "none";
	engine_emit(o, ENGINE_EV_SUMMARY, NULL, NULL, st);
	return code;
}
