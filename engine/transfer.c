/* One transfer, both roles. The client reaches the peer (SSH exec channel, or a local `qsync --server`
 * child on pipes), says hello, hands over a fresh 256-bit secret in quic_init, dials the QUIC port the
 * peer answers with, sends every entry, then closes with sync_complete / ack_complete / bye.
 * The server side answers the same conversation on stdin/stdout and receives.
 * For now each side runs one event loop thread that polls the control channel and the UDP socket. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine_int.h"
#include "net/ssh.h"

uint64_t engine_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

size_t engine_fd_budget(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 512;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY)
		return SIZE_MAX;
	return rl.rlim_cur > 128 ? (size_t)rl.rlim_cur - 64 : 64;
}

void engine_emit(const struct engine_opts *o, enum engine_event_kind k, const char *path, const char *msg,
                 const struct engine_stats *st)
{
	if (!o || !o->on_event)
		return;
	struct engine_event ev = {.kind = k, .path = path, .msg = msg, .stats = st};
	o->on_event(o->event_ctx, &ev);
}

void engine_opts_default(struct engine_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->remote_path = "qsync";
	o->max_streams = 1000;
	o->quic_timeout_ms = 10000;
	o->ctl_timeout_ms = ENGINE_CTL_TIMEOUT_MS;
}

/* Fills a buffer from the kernel's CSPRNG. */
static int random_bytes(void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Waits for a message of the wanted type; an error message from the peer ends the wait with its words. */
static int expect(struct net_ctl_chan *c, enum net_ctl_type want, struct net_ctl_msg *m, int timeout_ms,
                  struct qs_err *err)
{
	for (;;) {
		int rc = net_ctl_recv_wait(c, m, timeout_ms, err);
		if (rc == -ENOMSG)
			continue; /* an unknown message type from a newer peer: ignore */
		if (rc == -ETIMEDOUT)
			return qs_err_set(err, rc, "timed out waiting for %s from the peer",
			                  net_ctl_type_name(want));
		if (rc < 0)
			return rc;
		if (m->type == want)
			return 0;
		if (m->type == NET_CTL_ERROR)
			return qs_err_set(err, -EPROTO, "peer: %s%s%s", m->u.error.message,
			                  m->u.error.file[0] ? " — " : "", m->u.error.file);
		if (m->type == NET_CTL_PROGRESS)
			continue;
		return qs_err_set(err, -EPROTO, "expected %s from the peer, got %s", net_ctl_type_name(want),
		                  net_ctl_type_name(m->type));
	}
}

static int send_error(struct net_ctl_chan *c, const char *code, const char *msg)
{
	struct net_ctl_msg *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->type = NET_CTL_ERROR;
	m->u.error.quic_stream_id = -1;
	snprintf(m->u.error.error_code, sizeof(m->u.error.error_code), "%s", code);
	snprintf(m->u.error.message, sizeof(m->u.error.message), "%s", msg);
	int rc = net_ctl_send(c, m, NULL);
	free(m);
	return rc;
}

/* Polls the control channel and the data plane once, processes the data plane, and returns. */
static int poll_once(struct net_ctl_chan *c, const struct net_dp *dp, int max_ms, struct qs_err *err)
{
	struct pollfd p[2];
	int n = 0;
	int tmo = max_ms;
	if (dp) {
		int t = net_dp_timeout_ms(dp);
		if (t >= 0 && t < tmo)
			tmo = t;
		if (net_dp_fd(dp) >= 0) {
			p[n].fd = net_dp_fd(dp);
			p[n].events = POLLIN;
			n++;
		}
	}
	if (c && net_ctl_pending(c))
		tmo = 0;
	if (c && net_ctl_poll_fd(c) >= 0) {
		p[n].fd = net_ctl_poll_fd(c);
		p[n].events = POLLIN;
		n++;
	}
	if (poll(p, (nfds_t)n, tmo) < 0 && errno != EINTR)
		return qs_err_set(err, -errno, "poll: %s", strerror(errno));
	if (dp)
		return net_dp_process(dp, err);
	return 0;
}

/* ---- client ---- */

struct client {
	pid_t child;
	struct net_ctl_chan *ctl;
	struct sockaddr_storage peer;
	socklen_t peerlen;
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

static void stats_publish(const struct engine_opts *o, struct engine_stats *st, uint64_t t0, uint64_t *last,
                          bool force)
{
	uint64_t now = engine_now_ns();
	if (!force && now - *last < ENGINE_PROGRESS_NS)
		return;
	*last = now;
	st->seconds = (double)(now - t0) / 1e9;
	engine_emit(o, ENGINE_EV_PROGRESS, NULL, NULL, st);
}

/* Handles what the receiver says during the transfer. Returns 0, or a negative errno when it is fatal. */
static int client_ctl(struct client *cl, const struct engine_opts *o, struct qs_err *err)
{
	struct net_ctl_msg *m = malloc(sizeof(*m));
	if (!m)
		return qs_err_set(err, -ENOMEM, "out of memory");
	int rc = 0;
	for (;;) {
		struct qs_err e = {0};
		int r = net_ctl_recv(cl->ctl, m, &e);
		if (r == 0)
			break;
		if (r == -ENOMSG)
			continue;
		if (r < 0) {
			rc = qs_err_set(err, r, "control channel: %s", e.msg);
			break;
		}
		if (m->type == NET_CTL_ERROR && m->u.error.file[0] == '\0') {
			rc = qs_err_set(err, -EPROTO, "peer: %s", m->u.error.message);
			break;
		}
		/* Per-file errors arrive in the stream's ack too, which is what the sender counts. */
	}
	free(m);
	return rc;
}

int engine_client_run(const struct engine_opts *o, struct engine_stats *st, struct qs_err *err)
{
	struct client cl = {.child = -1};
	struct sender snd = {0};
	struct net_quic *q = NULL;
	struct net_ctl_msg *m = calloc(1, sizeof(*m));
	int code = ENGINE_EXIT_OK;
	int rc;
	uint8_t psk[NET_QUIC_PSK_LEN];
	char conn_id[17];
	uint64_t t0 = engine_now_ns(), last = 0;

	memset(st, 0, sizeof(*st));
	st->data_path = "quic";
	if (!m)
		return qs_err_set(err, -ENOMEM, "out of memory"), ENGINE_EXIT_START;

	rc = sender_plan(&snd, o, st, err);
	if (rc < 0) {
		code = ENGINE_EXIT_FILESEL;
		goto out;
	}
	if (snd.n == 0) {
		qs_err_set(err, -ENOENT, "nothing to send");
		code = snd.walk_errors ? ENGINE_EXIT_PARTIAL : ENGINE_EXIT_OK;
		goto out;
	}

	if (o->remote) {
		char cmd[4200];
		snprintf(cmd, sizeof(cmd), "%s --server", o->remote_path);
		rc = net_ssh_connect(&o->ssh, cmd, &cl.ctl, &cl.peer, &cl.peerlen, err);
		if (rc < 0) {
			code = ENGINE_EXIT_SSH;
			goto out;
		}
	} else if (spawn_local(&cl, err) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}

	/* hello */
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_HELLO;
	snprintf(m->u.hello.version, sizeof(m->u.hello.version), "%s", NET_CTL_PROTO_VERSION);
	m->u.hello.caps = NET_CAP_QUIC_V1;
	if ((rc = net_ctl_send(cl.ctl, m, err)) < 0 ||
	    (rc = expect(cl.ctl, NET_CTL_HELLO_ACK, m, (int)o->ctl_timeout_ms, err)) < 0) {
		if (rc == -EPIPE)
			qs_err_set(
			    err, rc,
			    "the peer closed the connection before answering hello: is qsync installed "
			    "there (see --remote-path)?");
		code = rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_START;
		goto out;
	}
	if (strncmp(m->u.hello.version, "1.", 2) != 0) {
		qs_err_set(err, -EPROTO, "peer speaks protocol version %s, this qsync speaks %s",
		           m->u.hello.version, NET_CTL_PROTO_VERSION);
		code = ENGINE_EXIT_PROTOCOL;
		goto out;
	}
	if (!(m->u.hello.caps & NET_CAP_QUIC_V1) || !m->u.hello.quic_available) {
		qs_err_set(err, -EPROTONOSUPPORT,
		           "the peer offers no QUIC data plane, and the SSH-only data path is not "
		           "implemented yet");
		code = ENGINE_EXIT_PROTOCOL;
		goto out;
	}

	/* quic_init: a fresh secret for this session only */
	uint8_t idb[8];
	if (random_bytes(psk, sizeof(psk)) < 0 || random_bytes(idb, sizeof(idb)) < 0) {
		qs_err_set(err, -EIO, "no randomness for the session secret");
		code = ENGINE_EXIT_START;
		goto out;
	}
	for (size_t i = 0; i < sizeof(idb); i++)
		snprintf(conn_id + 2 * i, 3, "%02x", idb[i]);
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_QUIC_INIT;
	snprintf(m->u.quic_init.connection_id, sizeof(m->u.quic_init.connection_id), "%s", conn_id);
	memcpy(m->u.quic_init.psk, psk, sizeof(psk));
	snprintf(m->u.quic_init.cipher_suite, sizeof(m->u.quic_init.cipher_suite), "TLS_AES_128_GCM_SHA256");
	m->u.quic_init.max_streams = o->max_streams ? o->max_streams : 1000;
	rc = net_ctl_send(cl.ctl, m, err);
	explicit_bzero(m, sizeof(*m));
	if (rc < 0 || (rc = expect(cl.ctl, NET_CTL_QUIC_READY, m, (int)o->ctl_timeout_ms, err)) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}
	if (strcmp(m->u.quic_ready.connection_id, conn_id) != 0) {
		qs_err_set(err, -EPROTO, "quic_ready names another connection (%s)",
		           m->u.quic_ready.connection_id);
		code = ENGINE_EXIT_PROTOCOL;
		goto out;
	}
	st->quic_port = m->u.quic_ready.port;
	st->streams_max = m->u.quic_ready.max_streams;
	if (st->streams_max && st->streams_max < snd.max_in_flight)
		snd.max_in_flight = st->streams_max;
	/* The data plane goes where SSH went: the port comes from the peer, the address never does. */
	if (cl.peerlen == 0 || (cl.peer.ss_family != AF_INET && cl.peer.ss_family != AF_INET6)) {
		qs_err_set(
		    err, -EDESTADDRREQ,
		    "the SSH connection has no IP peer address (a ProxyCommand?), so there is no address "
		    "to dial QUIC at; the SSH-only data path is not implemented yet");
		code = ENGINE_EXIT_START;
		goto out;
	}
	if (cl.peer.ss_family == AF_INET)
		((struct sockaddr_in *)&cl.peer)->sin_port = htons(m->u.quic_ready.port);
	else
		((struct sockaddr_in6 *)&cl.peer)->sin6_port = htons(m->u.quic_ready.port);

	/* sync_start */
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_SYNC_START;
	snprintf(m->u.sync_start.source, sizeof(m->u.sync_start.source), "%s", o->sources[0]);
	snprintf(m->u.sync_start.destination, sizeof(m->u.sync_start.destination), "%s", o->dest);
	m->u.sync_start.preserve_permissions = o->perms;
	m->u.sync_start.preserve_timestamps = o->times;
	m->u.sync_start.preserve_owner = o->owner;
	m->u.sync_start.preserve_group = o->group;
	m->u.sync_start.recursive = o->recursive;
	m->u.sync_start.single_file = snd.single_file;
	if ((rc = net_ctl_send(cl.ctl, m, err)) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}

	struct net_quic_cfg qc;
	net_quic_cfg_default(&qc);
	qc.max_streams = st->streams_max ? st->streams_max : qc.max_streams;
	if (o->quic_timeout_ms)
		qc.handshake_timeout_ms = o->quic_timeout_ms;
	qc.cc = o->cc == ENGINE_CC_CUBIC ? NET_QUIC_CC_CUBIC
	        : o->cc == ENGINE_CC_BBR ? NET_QUIC_CC_BBR
	                                 : NET_QUIC_CC_BBR2;
	struct net_dp_cb cb = sender_dp_cb_template;
	cb.ctx = &snd;
	rc = net_quic_client_new((struct sockaddr *)&cl.peer, cl.peerlen, conn_id, psk, &qc, &cb, &q, err);
	explicit_bzero(psk, sizeof(psk));
	if (rc < 0) {
		code = ENGINE_EXIT_NET;
		goto out;
	}
	net_quic_as_dp(q, &snd.dp);

	/* the transfer */
	t0 = engine_now_ns();
	uint64_t moved_at = engine_now_ns(), moved_mark = 0;
	while (!sender_done(&snd)) {
		/* A peer that keeps QUIC alive but never finishes a stream must not hold us forever. */
		uint64_t mark = st->bytes_sent + st->files_done + st->files_failed, now = engine_now_ns();
		if (mark != moved_mark) {
			moved_mark = mark;
			moved_at = now;
		} else if (net_dp_ready(&snd.dp) &&
		           now - moved_at > (uint64_t)o->ctl_timeout_ms * 1000000ull) {
			qs_err_set(err, -ETIMEDOUT,
			           "no progress for %u s (the receiver stopped confirming files)",
			           o->ctl_timeout_ms / 1000);
			code = ENGINE_EXIT_TIMEOUT;
			goto out;
		}
		if ((rc = poll_once(cl.ctl, &snd.dp, 100, err)) < 0) {
			code = rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_NET;
			goto out;
		}
		if ((rc = client_ctl(&cl, o, err)) < 0) {
			code = ENGINE_EXIT_STREAM;
			goto out;
		}
		if (net_dp_ready(&snd.dp) && (rc = sender_pump(&snd, err)) < 0) {
			code = ENGINE_EXIT_NET;
			goto out;
		}
		if ((rc = net_dp_process(&snd.dp, err)) < 0) {
			code = ENGINE_EXIT_NET;
			goto out;
		}
		stats_publish(o, st, t0, &last, false);
	}

	/* sync_complete -> ack_complete, keeping the data plane serviced meanwhile */
	st->seconds = (double)(engine_now_ns() - t0) / 1e9;
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_SYNC_COMPLETE;
	m->u.sync_complete.files_transferred = snd.n;
	m->u.sync_complete.bytes_transferred = st->bytes_done;
	m->u.sync_complete.duration_seconds = st->seconds;
	m->u.sync_complete.average_throughput_mbps =
	    st->seconds > 0 ? (uint64_t)((double)st->bytes_done * 8 / 1e6 / st->seconds) : 0;
	if ((rc = net_ctl_send(cl.ctl, m, err)) < 0) {
		code = ENGINE_EXIT_STREAM;
		goto out;
	}
	uint64_t deadline = engine_now_ns() + (uint64_t)o->ctl_timeout_ms * 1000000ull;
	for (;;) {
		struct qs_err e = {0};
		rc = net_ctl_recv(cl.ctl, m, &e);
		if (rc == 1 && m->type == NET_CTL_ACK_COMPLETE)
			break;
		if (rc == 1 && m->type == NET_CTL_ERROR && m->u.error.file[0] == '\0') {
			qs_err_set(err, -EPROTO, "peer: %s", m->u.error.message);
			code = ENGINE_EXIT_STREAM;
			goto out;
		}
		if (rc < 0 && rc != -ENOMSG) {
			qs_err_set(err, rc, "waiting for ack_complete: %s", e.msg);
			code = ENGINE_EXIT_STREAM;
			goto out;
		}
		if (engine_now_ns() > deadline) {
			qs_err_set(err, -ETIMEDOUT,
			           "timed out waiting for the receiver to confirm completion");
			code = ENGINE_EXIT_TIMEOUT;
			goto out;
		}
		if (rc == 0 && (rc = poll_once(cl.ctl, &snd.dp, 100, err)) < 0 && rc != -ECONNABORTED) {
			code = ENGINE_EXIT_NET;
			goto out;
		}
	}
	if (m->u.ack_complete.files_failed > 0 && st->files_failed == 0)
		st->files_failed = m->u.ack_complete.files_failed;
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_BYE;
	net_ctl_send(cl.ctl, m, NULL);
	net_quic_close(q);
	if (st->files_failed || snd.walk_errors) {
		qs_err_set(err, -EIO, "some files could not be transferred (%llu failed)",
		           (unsigned long long)st->files_failed + snd.walk_errors);
		code = ENGINE_EXIT_PARTIAL;
	}

out:
	st->seconds = (double)(engine_now_ns() - t0) / 1e9;
	net_quic_free(q);
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
	explicit_bzero(psk, sizeof(psk));
	sender_free(&snd);
	if (m)
		explicit_bzero(m, sizeof(*m)); /* it may have carried the secret */
	free(m);
	engine_emit(o, ENGINE_EV_SUMMARY, NULL, NULL, st);
	return code;
}

/* ---- server (qsync --server) ---- */

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

/* The numeric address of a, without the port ("" when it is not IP). */
static void addr_string(const struct sockaddr_storage *a, char *out, size_t cap)
{
	out[0] = '\0';
	if (a->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, out, (socklen_t)cap);
	else if (a->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, out, (socklen_t)cap);
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

int engine_server_session(struct net_ctl_chan *c, const struct engine_addrs *addrs, int verbose,
                          struct qs_err *err)
{
	struct net_quic *q = NULL;
	struct receiver r = {.rootfd = -1, .verbose = verbose};
	struct net_ctl_msg *m = calloc(1, sizeof(*m));
	int code = ENGINE_EXIT_OK;
	int rc;
	char conn_id[33];
	uint8_t psk[NET_QUIC_PSK_LEN];

	signal(SIGPIPE, SIG_IGN);
	catch_stop_signals();
	if (!m)
		return qs_err_set(err, -ENOMEM, "out of memory"), ENGINE_EXIT_START;
	if ((rc = expect(c, NET_CTL_HELLO, m, ENGINE_CTL_TIMEOUT_MS, err)) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}
	if (strncmp(m->u.hello.version, "1.", 2) != 0) {
		qs_err_set(err, -EPROTO, "client speaks protocol version %s, this qsync speaks %s",
		           m->u.hello.version, NET_CTL_PROTO_VERSION);
		send_error(c, "VERSION", err->msg);
		code = ENGINE_EXIT_PROTOCOL;
		goto out;
	}
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_HELLO_ACK;
	snprintf(m->u.hello.version, sizeof(m->u.hello.version), "%s", NET_CTL_PROTO_VERSION);
	m->u.hello.caps = NET_CAP_QUIC_V1;
	m->u.hello.quic_available = true;
	if ((rc = net_ctl_send(c, m, err)) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}

	if ((rc = expect(c, NET_CTL_QUIC_INIT, m, ENGINE_CTL_TIMEOUT_MS, err)) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}
	memcpy(psk, m->u.quic_init.psk, sizeof(psk));
	snprintf(conn_id, sizeof(conn_id), "%s", m->u.quic_init.connection_id);
	uint32_t max_streams = m->u.quic_init.max_streams;
	explicit_bzero(m, sizeof(*m));
	if (max_streams == 0)
		max_streams = 1000;
	if (max_streams > engine_fd_budget()) /* each incoming stream may hold a temporary file open */
		max_streams = (uint32_t)engine_fd_budget();

	struct net_quic_cfg qc;
	net_quic_cfg_default(&qc);
	qc.max_streams = max_streams;
	struct net_dp_cb cb = receiver_dp_cb_template;
	cb.ctx = &r;
	char ip[64];
	uint16_t port = 0;
	addr_string(&addrs->local, ip, sizeof(ip));
	rc = net_quic_server_new(ip, &port, conn_id, psk, &qc, &cb, &q, err);
	explicit_bzero(psk, sizeof(psk));
	/* Only the host that reached us over SSH may start the QUIC handshake. */
	if (rc == 0 && addrs->peer_len > 0)
		net_quic_server_allow(q, (const struct sockaddr *)&addrs->peer, addrs->peer_len);
	if (rc < 0) {
		send_error(c, "QUIC_UNAVAILABLE", err->msg);
		code = ENGINE_EXIT_NET;
		goto out;
	}
	net_quic_as_dp(q, &r.dp);
	r.ctl = c;
	memset(m, 0, sizeof(*m));
	m->type = NET_CTL_QUIC_READY;
	snprintf(m->u.quic_ready.connection_id, sizeof(m->u.quic_ready.connection_id), "%s", conn_id);
	snprintf(m->u.quic_ready.ip, sizeof(m->u.quic_ready.ip), "%s", ip);
	m->u.quic_ready.port = port;
	m->u.quic_ready.max_streams = max_streams;
	m->u.quic_ready.initial_max_data = qc.max_data;
	if ((rc = net_ctl_send(c, m, err)) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}

	if ((rc = expect(c, NET_CTL_SYNC_START, m, ENGINE_CTL_TIMEOUT_MS, err)) < 0) {
		code = ENGINE_EXIT_START;
		goto out;
	}
	if ((rc = receiver_open(&r, &m->u.sync_start, err)) < 0) {
		send_error(c, "DESTINATION", err->msg);
		code = ENGINE_EXIT_FILESEL;
		goto out;
	}

	/* Receive until the sender says it is done (sync_complete names how many streams it opened) and
	 * that many have closed here; answer ack_complete; then wait for bye. */
	uint64_t expected = 0, deadline = 0;
	bool completing = false, answered = false, bye = false;
	while (!bye) {
		if (stop_signal) {
			qs_err_set(err, -EINTR, "stopped by signal %d; unfinished files removed",
			           (int)stop_signal);
			code = ENGINE_EXIT_SIGNAL;
			goto out;
		}
		rc = poll_once(c, q ? &r.dp : NULL, 200, err);
		receiver_flush_reports(&r);
		if (rc < 0 && !(rc == -ECONNABORTED && completing)) {
			code = rc == -ETIMEDOUT ? ENGINE_EXIT_TIMEOUT : ENGINE_EXIT_NET;
			goto out;
		}
		for (;;) {
			struct qs_err e = {0};
			int r2 = net_ctl_recv(c, m, &e);
			if (r2 == 0)
				break;
			if (r2 == -ENOMSG) {
				send_error(c, "UNKNOWN_TYPE", e.msg);
				continue;
			}
			if (r2 < 0) {
				qs_err_set(err, r2, "control channel: %s", e.msg);
				code = r2 == -EPIPE ? ENGINE_EXIT_START : ENGINE_EXIT_STREAM;
				goto out;
			}
			if (m->type == NET_CTL_SYNC_COMPLETE && !completing) {
				completing = true;
				expected = m->u.sync_complete.files_transferred;
				deadline = engine_now_ns() + (uint64_t)ENGINE_DRAIN_TIMEOUT_MS * 1000000ull;
			} else if (m->type == NET_CTL_BYE) {
				bye = true;
			}
		}
		if (completing && !answered && (r.closed >= expected || engine_now_ns() > deadline)) {
			if (r.closed < expected)
				r.failed += expected - r.closed;
			struct qs_err e = {0};
			if (receiver_finish(&r, &e) < 0) {
				fprintf(stderr, "qsync: receiver: %s\n", e.msg);
				r.failed++;
			}
			memset(m, 0, sizeof(*m));
			m->type = NET_CTL_ACK_COMPLETE;
			m->u.ack_complete.files_ok = r.ok;
			m->u.ack_complete.files_failed = r.failed;
			m->u.ack_complete.bytes = r.bytes;
			if ((rc = net_ctl_send(c, m, err)) < 0) {
				code = ENGINE_EXIT_STREAM;
				goto out;
			}
			answered = true;
		}
	}
	if (r.failed) {
		qs_err_set(err, -EIO, "%llu entries were not written", (unsigned long long)r.failed);
		code = ENGINE_EXIT_PARTIAL;
	}

out:
	if (q) {
		net_quic_close(q);
		net_quic_free(q);
	}
	r.ctl = NULL;
	receiver_free(&r);
	explicit_bzero(psk, sizeof(psk));
	if (m)
		explicit_bzero(m, sizeof(*m)); /* it may have carried the secret */
	free(m);
	return code;
}
