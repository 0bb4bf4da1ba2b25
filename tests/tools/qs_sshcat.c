/* qs_sshcat: drives the SSH control client (net/ssh.h) by hand, for end-to-end tests of host keys,
 * authentication, remote stderr and exit status against a real sshd. Usage:
 *   qs_sshcat [-e RSH] [user@]host COMMAND...
 * Connects and runs COMMAND, sends each stdin line as a control message (parsed, then re-emitted), then
 * prints every message that comes back, one JSON line each, until the remote ends the channel, or,
 * once as many messages came back as were sent, until it stays quiet for QUIET_MS (a remote `cat` only
 * ends when it sees our EOF, which closing the channel sends). Prints "exit-status N" (-1: unknown).
 * Exit: 0 when the conversation ran, 1 when it broke after connecting, 2 usage, 255 ssh failure. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/control.h"
#include "net/ssh.h"

#define REPLY_TIMEOUT_MS 10000
#define QUIET_MS         500

static struct net_ctl_msg msg; /* large (paths): keep it off the stack */
static char out[NET_CTL_MAX_LINE + 2];

static int print_msg(const struct net_ctl_msg *m)
{
	ssize_t k = net_ctl_emit(m, out, sizeof(out));
	if (k < 0)
		return (int)k;
	fwrite(out, 1, (size_t)k, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	struct net_ssh_opts so = {0};
	struct qs_err e = {0};
	struct net_ctl_chan *ctl = NULL;
	struct sockaddr_storage peer;
	socklen_t peerlen = 0;
	const char *rsh = NULL;
	char *line = NULL;
	size_t line_cap = 0;
	char cmd[8192];
	int ai = 1, sent = 0, got = 0, status = -1, code = 0;

	if (ai < argc && strncmp(argv[ai], "-e", 2) == 0) {
		rsh = argv[ai][2] ? argv[ai] + 2 : (ai + 1 < argc ? argv[++ai] : NULL);
		ai++;
	}
	if (argc - ai < 2 || (ai > 1 && !rsh)) {
		fprintf(stderr, "usage: qs_sshcat [-e RSH] [user@]host COMMAND...\n");
		return 2;
	}
	if (rsh && net_ssh_parse_rsh(rsh, &so, &e) < 0) {
		fprintf(stderr, "qs_sshcat: -e: %s\n", e.msg);
		return 2;
	}
	const char *target = argv[ai++];
	const char *at = strrchr(target, '@');
	if (at) {
		snprintf(so.user, sizeof(so.user), "%.*s", (int)(at - target), target);
		target = at + 1;
	}
	snprintf(so.host, sizeof(so.host), "%s", target);
	/* like ssh: the command words are joined with spaces and the remote shell splits them again */
	size_t n = 0;
	cmd[0] = '\0';
	for (; ai < argc; ai++) {
		int w = snprintf(cmd + n, sizeof(cmd) - n, "%s%s", n ? " " : "", argv[ai]);
		if (w < 0 || (size_t)w >= sizeof(cmd) - n) {
			fprintf(stderr, "qs_sshcat: command too long\n");
			return 2;
		}
		n += (size_t)w;
	}

	if (net_ssh_connect(&so, cmd, &ctl, &peer, &peerlen, &e) < 0) {
		fprintf(stderr, "qs_sshcat: %s\n", e.msg);
		return 255;
	}

	ssize_t len;
	while ((len = getline(&line, &line_cap, stdin)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			continue;
		if (net_ctl_parse(line, (size_t)len, &msg, &e) < 0) {
			fprintf(stderr, "qs_sshcat: stdin line %d: %s\n", sent + 1, e.msg);
			code = 2;
			goto out;
		}
		if (net_ctl_send(ctl, &msg, &e) < 0) {
			fprintf(stderr, "qs_sshcat: %s\n", e.msg);
			code = 1;
			goto out;
		}
		sent++;
		/* take what has come back already, so a long input cannot fill both windows and stall */
		int rc;
		while ((rc = net_ctl_recv(ctl, &msg, &e)) == 1 || rc == -ENOMSG) {
			if (rc == 1 && print_msg(&msg) == 0)
				got++;
			else
				fprintf(stderr, "qs_sshcat: %s\n", e.msg);
		}
		if (rc < 0 && rc != -EPIPE) {
			fprintf(stderr, "qs_sshcat: %s\n", e.msg);
			code = 1;
			goto out;
		}
	}

	for (;;) {
		int rc = net_ctl_recv_wait(ctl, &msg, got >= sent ? QUIET_MS : REPLY_TIMEOUT_MS, &e);
		if (rc == 1) {
			if (print_msg(&msg) == 0)
				got++;
			continue;
		}
		if (rc == -ENOMSG) { /* a well-formed message of a type we do not know: say so, go on */
			fprintf(stderr, "qs_sshcat: %s\n", e.msg);
			continue;
		}
		if (rc == -EPIPE)
			break;
		if (rc == -ETIMEDOUT && got >= sent)
			break;
		fprintf(stderr, "qs_sshcat: %s\n", e.msg);
		code = 1;
		break;
	}
out:
	fflush(stdout);
	net_ctl_chan_finish(ctl, &status);
	printf("exit-status %d\n", status);
	free(line);
	return code;
}
