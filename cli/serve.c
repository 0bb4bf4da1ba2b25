/* `qsync serve`: option parsing and usage for the native daemon, which is net/ssh_server.c with a
 * session handler that runs engine_server_session, the same peer session `qsync --server` runs; and
 * the forced-command check of `qsync --server` (SSH_ORIGINAL_COMMAND). */
#include "cli/serve.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "net/ssh_server.h"

enum {
	OPT_LISTEN = 1000,
	OPT_HOST_KEY,
	OPT_HOST_KEY_CREATE,
	OPT_AUTHORIZED_KEYS,
	OPT_MAX_SESSIONS,
	OPT_LOGIN_GRACE,
};

static const char serve_usage[] =
    "Usage: qsync serve [OPTIONS]\n"
    "\n"
    "The native qsync daemon: an SSH server of its own (no OpenSSH server needed) that runs the peer\n"
    "side of qsync transfers, data over QUIC. Clients reach it as any qsync host:\n"
    "  qsync -a -e 'ssh -p 2222' ./data/ user@host:/backup/data/\n"
    "It authenticates by public key only, against authorized_keys, as the user it runs as; it runs\n"
    "nothing but qsync sessions (no shell, no other command, no forwarding). Stop it with SIGTERM.\n"
    "\n"
    "Options:\n"
    "      --listen=ADDR:PORT      address to listen on, numeric IPv4 or [IPv6] (default 127.0.0.1:2222;\n"
    "                              port 0 picks a free one, named in the start-up line)\n"
    "      --host-key=FILE         ed25519 host key (default ~/.config/qsync/ssh_host_ed25519_key)\n"
    "      --host-key-create       create the host key (and FILE.pub) if it does not exist\n"
    "      --authorized-keys=FILE  keys allowed to log in (default ~/.ssh/authorized_keys)\n"
    "      --max-sessions=N        connections at once, more are turned away (default 16)\n"
    "      --login-grace=S         seconds a client has to authenticate and start (default 30)\n"
    "  -v, --verbose               log every connection and request; -vv, -vvv libssh's log too\n"
    "  -h, --help                  this text\n"
    "\n"
    "authorized_keys lines may carry restrict, no-pty, no-port-forwarding, no-agent-forwarding,\n"
    "no-X11-forwarding, no-user-rc and command=\"qsync --server\"; a line with any other option is\n"
    "ignored (with a warning), never half-honoured.\n";

__attribute__((format(printf, 1, 2))) static int serve_usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "qsync serve: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'qsync serve --help'.\n");
	return ENGINE_EXIT_USAGE;
}

static int parse_count(const char *v, long lo, long hi, const char *what, int *out)
{
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi)
		return serve_usage_error("%s: expected %ld..%ld, got \"%s\"", what, lo, hi, v);
	*out = (int)x;
	return 0;
}

static int copy_path(char *dst, size_t cap, const char *v, const char *what)
{
	if (!*v)
		return serve_usage_error("%s: empty file name", what);
	if (strlen(v) >= cap)
		return serve_usage_error("%s: file name is too long", what);
	memcpy(dst, v, strlen(v) + 1);
	return 0;
}

struct serve_ctx {
	int verbose;
};

/* The session handler: the peer session of `qsync --server`, on the daemon's channel. */
static int serve_session(struct net_ctl_chan *c, const struct net_ssh_server_conn *conn, void *ctx)
{
	const struct serve_ctx *sc = ctx;
	struct engine_addrs a;
	struct qs_err err = {0};

	memset(&a, 0, sizeof(a));
	if (conn->local_len <= sizeof(a.local)) {
		memcpy(&a.local, &conn->local, conn->local_len);
		a.local_len = conn->local_len;
	}
	if (conn->peer_len <= sizeof(a.peer)) {
		memcpy(&a.peer, &conn->peer, conn->peer_len);
		a.peer_len = conn->peer_len;
	}
	int rc = engine_server_session(c, &a, sc->verbose, &err);
	if (rc != ENGINE_EXIT_OK)
		fprintf(stderr, "qsync serve[%d]: session: %s (exit %d)\n", (int)getpid(),
		        err.msg[0] ? err.msg : "failed", rc);
	return rc;
}

int cli_serve_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"listen", required_argument, NULL, OPT_LISTEN},
	    {"host-key", required_argument, NULL, OPT_HOST_KEY},
	    {"host-key-create", no_argument, NULL, OPT_HOST_KEY_CREATE},
	    {"authorized-keys", required_argument, NULL, OPT_AUTHORIZED_KEYS},
	    {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
	    {"login-grace", required_argument, NULL, OPT_LOGIN_GRACE},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct net_ssh_server_opts o;
	struct serve_ctx sc = {0};
	struct qs_err err = {0};
	int ch, rc;

	net_ssh_server_opts_default(&o);
	opterr = 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+vh", longopts, NULL)) != -1) {
		switch (ch) {
		case OPT_LISTEN:
			if (net_ssh_server_parse_listen(optarg, &o, &err) < 0)
				return serve_usage_error("%s", err.msg);
			break;
		case OPT_HOST_KEY:
			if ((rc = copy_path(o.host_key, sizeof(o.host_key), optarg, "--host-key")) != 0)
				return rc;
			break;
		case OPT_HOST_KEY_CREATE:
			o.host_key_create = true;
			break;
		case OPT_AUTHORIZED_KEYS:
			if ((rc = copy_path(o.authorized_keys, sizeof(o.authorized_keys), optarg,
			                    "--authorized-keys")) != 0)
				return rc;
			break;
		case OPT_MAX_SESSIONS:
			if ((rc = parse_count(optarg, 1, NET_SSH_SERVER_MAX_SESSIONS, "--max-sessions",
			                      &o.max_sessions)) != 0)
				return rc;
			break;
		case OPT_LOGIN_GRACE:
			if ((rc = parse_count(optarg, 1, NET_SSH_SERVER_MAX_GRACE_S, "--login-grace",
			                      &o.login_grace_s)) != 0)
				return rc;
			break;
		case 'v':
			o.verbose++;
			break;
		case 'h':
			fputs(serve_usage, stdout);
			return 0;
		case ':':
			return serve_usage_error("option %s needs a value", argv[optind - 1]);
		default:
			return serve_usage_error("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind != argc)
		return serve_usage_error("unexpected argument '%s'", argv[optind]);

	sc.verbose = o.verbose;
	rc = net_ssh_server_run(&o, serve_session, &sc, &err);
	if (rc < 0) {
		fprintf(stderr, "qsync serve: %s\n", err.msg[0] ? err.msg : "cannot start");
		return ENGINE_EXIT_START;
	}
	return 0;
}

int cli_serve_forced_check(void)
{
	const char *cmd = getenv("SSH_ORIGINAL_COMMAND");
	struct qs_err err = {0};

	if (cmd && net_ssh_server_check_command(cmd, &err) < 0) {
		fprintf(stderr, "qsync --server: %s\n", err.msg);
		return ENGINE_EXIT_USAGE;
	}
	if (isatty(STDIN_FILENO)) {
		fprintf(stderr,
		        "qsync --server: refusing to run on a terminal: it speaks only to a qsync client "
		        "(is this a login under a forced command?)\n");
		return ENGINE_EXIT_USAGE;
	}
	return 0;
}
