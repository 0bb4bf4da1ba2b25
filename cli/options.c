/* Command-line parsing: rsync's option names and its SRC... [user@]host:DEST form. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "qs_version.h" /* QSYNC_VERSION, QSYNC_COMMIT: made by cli/version.cmake */

enum {
	OPT_JSON = 1000,
	OPT_REMOTE_PATH,
	OPT_SERVER,
	OPT_STREAMS,
	OPT_FSYNC,
	OPT_PROGRESS,
	OPT_QUIC_TIMEOUT,
	OPT_TIMEOUT,
	OPT_CC,
	OPT_NO_PERMS,
	OPT_NO_TIMES,
	OPT_NO_QUIC,
	OPT_QUIC_IDLE,
	OPT_WORKERS,
	OPT_MEMORY,
};

static const char usage_text[] =
    "Usage: qsync [OPTIONS] SRC... [USER@]HOST:DEST    push over SSH control + QUIC data\n"
    "       qsync [OPTIONS] SRC... DEST                  local (a local peer over loopback)\n"
    "       qsync serve [OPTIONS]                        the native daemon (qsync serve --help)\n"
    "\n"
    "A trailing slash on SRC copies the directory's contents (\"dir/\"), none copies the directory\n"
    "itself (\"dir\"), as rsync does.\n"
    "\n"
    "Options:\n"
    "  -a, --archive          -rlptgoD (recursive, links, perms, times, group, owner)\n"
    "  -r, --recursive        recurse into directories\n"
    "  -l, --links            copy symlinks as symlinks\n"
    "  -p, --perms            preserve permissions\n"
    "  -t, --times            preserve modification times (nanoseconds)\n"
    "  -o, --owner, -g, --group  preserve owner and group (when the receiver runs as root)\n"
    "  -D                     accepted for rsync compatibility; devices and specials are skipped\n"
    "  -v, --verbose          list each entry as it is confirmed; -vv more\n"
    "  -q, --quiet            no summary, no informational messages\n"
    "      --progress, -P     show a live progress line\n"
    "      --json             one JSON event per line on stdout (progress, file errors, summary)\n"
    "  -e, --rsh=COMMAND      ssh command line whose options to use, e.g. 'ssh -p 2222 -i key'\n"
    "                         (-p -i -l -F -o Port/IdentityFile/User/UserKnownHostsFile/\n"
    "                         StrictHostKeyChecking/ConnectTimeout/BatchMode are honoured)\n"
    "      --remote-path=PATH qsync binary on the remote side (also --rsync-path)\n"
    "      --streams=N        at most N QUIC streams at once (default 1000)\n"
    "      --workers=N        QUIC connections, each driven by its own pinned thread (default: one\n"
    "                         per core; the peer grants at most one per core of its own)\n"
    "      --memory=SIZE      flow-control windows and buffers of this side (default 256M; K M G)\n"
    "      --no-quic          carry the file data over the SSH connection, not QUIC\n"
    "  -I, --ignore-times     send every file (default: skip those the destination has with the\n"
    "                         same size and modification time)\n"
    "      --quic-timeout=S   seconds the QUIC handshake may take before the data goes over SSH\n"
    "                         instead (default 3)\n"
    "      --quic-idle=S      seconds without a QUIC packet mid-transfer before the rest goes over\n"
    "                         SSH (default 5)\n"
    "      --timeout=S        seconds to wait for each control reply from the peer (default 30)\n"
    "      --cc=ALGO          congestion control of the QUIC data: bbr (default), bbr2, cubic\n"
    "                         (cubic measured ~20x slower than bbr at 50 ms RTT with 0.1 % loss)\n"
    "      --fsync            fsync every file before it is renamed into place\n"
    "  -h, --help             this text\n"
    "  -V, --version          the version\n"
    "\n"
    "Exit codes follow rsync's: 0 ok, 1 usage, 2 protocol, 3 file selection, 5 start-up, 10 socket I/O,\n"
    "12 data stream, 23 partial transfer, 30 timeout, 255 SSH.\n";

/* arg as a whole decimal number in 1..max. */
static bool parse_count(const char *arg, unsigned long max, unsigned long *v)
{
	char *end;
	errno = 0;
	*v = strtoul(arg, &end, 10);
	return !errno && end != arg && !*end && *v >= 1 && *v <= max;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "qsync: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'qsync --help'.\n");
	return ENGINE_EXIT_USAGE;
}

/* "[user@]host:path" (a ':' before any '/'), "[user@][v6addr]:path". Returns 1 and fills the parts when
 * arg names a remote path, 0 when it is local. */
static int split_remote(const char *arg, char *user, size_t ucap, char *host, size_t hcap, const char **path)
{
	const char *colon = NULL;
	const char *slash = strchr(arg, '/');
	const char *at = strchr(arg, '@');
	const char *h = arg;
	if (at && (!slash || at < slash))
		h = at + 1;
	if (*h == '[') {
		const char *rb = strchr(h, ']');
		if (!rb || rb[1] != ':')
			return 0;
		colon = rb + 1;
	} else {
		colon = strchr(h, ':');
	}
	if (!colon || (slash && slash < colon))
		return 0;
	size_t ulen = (h > arg) ? (size_t)(h - arg - 1) : 0;
	if (ulen >= ucap)
		ulen = ucap - 1;
	memcpy(user, arg, ulen);
	user[ulen] = '\0';
	const char *hs = h, *he = colon;
	if (*hs == '[') {
		hs++;
		he--;
	}
	size_t hlen = (size_t)(he - hs);
	if (hlen >= hcap)
		hlen = hcap - 1;
	memcpy(host, hs, hlen);
	host[hlen] = '\0';
	*path = colon + 1;
	return 1;
}

int cli_parse(int argc, char **argv, struct cli *c)
{
	static const struct option longopts[] = {
	    {"archive", no_argument, NULL, 'a'},
	    {"recursive", no_argument, NULL, 'r'},
	    {"links", no_argument, NULL, 'l'},
	    {"perms", no_argument, NULL, 'p'},
	    {"times", no_argument, NULL, 't'},
	    {"owner", no_argument, NULL, 'o'},
	    {"group", no_argument, NULL, 'g'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"rsh", required_argument, NULL, 'e'},
	    {"remote-path", required_argument, NULL, OPT_REMOTE_PATH},
	    {"rsync-path", required_argument, NULL, OPT_REMOTE_PATH},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"progress", no_argument, NULL, OPT_PROGRESS},
	    {"server", no_argument, NULL, OPT_SERVER},
	    {"streams", required_argument, NULL, OPT_STREAMS},
	    {"quic-timeout", required_argument, NULL, OPT_QUIC_TIMEOUT},
	    {"quic-idle", required_argument, NULL, OPT_QUIC_IDLE},
	    {"no-quic", no_argument, NULL, OPT_NO_QUIC},
	    {"ignore-times", no_argument, NULL, 'I'},
	    {"workers", required_argument, NULL, OPT_WORKERS},
	    {"memory", required_argument, NULL, OPT_MEMORY},
	    {"timeout", required_argument, NULL, OPT_TIMEOUT},
	    {"cc", required_argument, NULL, OPT_CC},
	    {"fsync", no_argument, NULL, OPT_FSYNC},
	    {"no-perms", no_argument, NULL, OPT_NO_PERMS},
	    {"no-times", no_argument, NULL, OPT_NO_TIMES},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct engine_opts *o = &c->eo;
	int ch;

	engine_opts_default(o);
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+arlptogDvqe:PzhVI", longopts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			o->recursive = o->links = o->perms = o->times = o->owner = o->group = true;
			break;
		case 'r':
			o->recursive = true;
			break;
		case 'l':
			o->links = true;
			break;
		case 'p':
			o->perms = true;
			break;
		case 't':
			o->times = true;
			break;
		case 'o':
			o->owner = true;
			break;
		case 'g':
			o->group = true;
			break;
		case 'D':
			break;
		case 'v':
			o->verbose++;
			break;
		case 'q':
			o->quiet = true;
			break;
		case 'e':
			c->rsh = optarg;
			break;
		case 'P':
		case OPT_PROGRESS:
			c->progress = true;
			break;
		case 'z':
			fprintf(stderr, "qsync: -z: compression is not supported; sending uncompressed\n");
			break;
		case OPT_REMOTE_PATH:
			o->remote_path = optarg;
			break;
		case OPT_JSON:
			c->json = true;
			break;
		case OPT_SERVER:
			c->server = true;
			break;
		case OPT_FSYNC:
			o->do_fsync = true;
			break;
		case OPT_NO_PERMS:
			o->perms = false;
			break;
		case OPT_NO_TIMES:
			o->times = false;
			break;
		case OPT_NO_QUIC:
			o->no_quic = true;
			break;
		case 'I':
			o->ignore_times = true;
			break;
		case OPT_STREAMS: {
			unsigned long v;
			if (!parse_count(optarg, 100000, &v))
				return usage_error("--streams: expected 1..100000, got \"%s\"", optarg);
			o->max_streams = (uint32_t)v;
			break;
		}
		case OPT_WORKERS: {
			unsigned long v;
			if (!parse_count(optarg, 64, &v))
				return usage_error("--workers: expected 1..64, got \"%s\"", optarg);
			o->workers = (unsigned)v;
			break;
		}
		case OPT_MEMORY: {
			char *end;
			errno = 0;
			unsigned long long v = strtoull(optarg, &end, 10);
			unsigned long long mul = 1;
			if (*end == 'K' || *end == 'k')
				mul = 1ull << 10;
			else if (*end == 'M' || *end == 'm')
				mul = 1ull << 20;
			else if (*end == 'G' || *end == 'g')
				mul = 1ull << 30;
			if (mul > 1)
				end++;
			if (errno || end == optarg || *end || v == 0 || v > (64ull << 30) / mul ||
			    v * mul < (8ull << 20))
				return usage_error("--memory: expected 8M..64G, got \"%s\"", optarg);
			o->memory_bytes = v * mul;
			break;
		}
		case OPT_QUIC_TIMEOUT:
		case OPT_QUIC_IDLE:
		case OPT_TIMEOUT: {
			char *end;
			double v = strtod(optarg, &end);
			const char *name = ch == OPT_TIMEOUT     ? "--timeout"
			                   : ch == OPT_QUIC_IDLE ? "--quic-idle"
			                                         : "--quic-timeout";
			if (end == optarg || *end || !(v >= 0.001 && v <= 86400))
				return usage_error("%s: expected seconds in [0.001, 86400], got \"%s\"", name,
				                   optarg);
			uint32_t ms = (uint32_t)(v * 1000);
			if (ch == OPT_TIMEOUT)
				o->ctl_timeout_ms = ms;
			else if (ch == OPT_QUIC_IDLE)
				o->quic_idle_ms = ms;
			else
				o->quic_timeout_ms = ms;
			break;
		}
		case OPT_CC:
			if (strcmp(optarg, "bbr2") == 0)
				o->cc = ENGINE_CC_BBR2;
			else if (strcmp(optarg, "bbr") == 0)
				o->cc = ENGINE_CC_BBR;
			else if (strcmp(optarg, "cubic") == 0)
				o->cc = ENGINE_CC_CUBIC;
			else
				return usage_error("--cc: expected bbr, bbr2 or cubic, got \"%s\"", optarg);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return CLI_DONE;
		case 'V':
			printf("qsync %s (%s, protocol %s)\n", QSYNC_VERSION, QSYNC_COMMIT,
			       NET_CTL_PROTO_VERSION);
			return CLI_DONE;
		case ':':
			return usage_error("option %s needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option %s", argv[optind - 1]);
		}
	}
	if (c->server) {
		if (optind != argc)
			return usage_error("--server takes no paths (they come over the control channel): %s",
			                   argv[optind]);
		return 0;
	}
	int nargs = argc - optind;
	if (nargs < 2)
		return usage_error("%s",
		                   nargs == 0 ? "no source or destination given" : "no destination given");
	if (nargs - 1 > ENGINE_MAX_SOURCES)
		return usage_error("too many sources (at most %s)", "1024");

	for (int i = optind; i < argc - 1; i++) {
		char u[8], h[8];
		const char *p;
		if (split_remote(argv[i], u, sizeof(u), h, sizeof(h), &p))
			return usage_error("pulling from a remote source (%s) is not implemented yet",
			                   argv[i]);
		o->sources[o->n_sources++] = argv[i];
	}

	const char *dst = argv[argc - 1];
	const char *path;
	if (split_remote(dst, o->ssh.user, sizeof(o->ssh.user), o->ssh.host, sizeof(o->ssh.host), &path)) {
		char saved_user[sizeof(o->ssh.user)];
		if (path[0] == ':')
			return usage_error("rsync daemon syntax (host::module) is not supported: %s", dst);
		if (o->ssh.host[0] == '\0')
			return usage_error("no host in %s", dst);
		o->remote = true;
		o->dest = path[0] ? path : ".";
		memcpy(saved_user, o->ssh.user, sizeof(saved_user));
		if (c->rsh) {
			struct qs_err e = {0};
			char host[sizeof(o->ssh.host)];
			memcpy(host, o->ssh.host, sizeof(host));
			if (net_ssh_parse_rsh(c->rsh, &o->ssh, &e) < 0)
				return usage_error("-e: %s", e.msg);
			memcpy(o->ssh.host, host, sizeof(host));
		}
		if (saved_user[0]) /* user@host wins over -l, as with ssh */
			memcpy(o->ssh.user, saved_user, sizeof(saved_user));
		o->ssh.verbose = o->verbose > 2 ? o->verbose - 2 : 0;
	} else {
		o->dest = dst;
	}
	return 0;
}
