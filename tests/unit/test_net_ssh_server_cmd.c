/* Unit tests for the native server's rules (net/ssh_server.h): which exec commands count as a qsync
 * server invocation (the same rule guards SSH_ORIGINAL_COMMAND), the authorized_keys line parser and
 * its option policy over a table of lines, and the --listen parser. Plain C: each failing check prints
 * file:line; main returns non-zero when any failed. */
#include "net/ssh_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* An ed25519 key (ssh-keygen output) and the same blob named as another type. */
#define ED_B64 "AAAAC3NzaC1lZDI1NTE5AAAAIM1LIcKWEjsKdxlgtp6AV+idQ28sbF67LAyh2EVnla8Z"
#define RSA_B64                                                                                              \
	"AAAAB3NzaC1yc2EAAAADAQABAAAAgQC0ykFfFGUkEDvzYZKp46cQwPRZAp5ki7lV8tl8XyCnhjkGJaKz2msK2EJTA2VPoPRDoG" \
	"N5VPBJaWpFCEmcf9tdXHDKUAkeaW7glAKSYzsH91cdEEl51V2r4A2ggAuUiTF6z96Oqah15GXRQS9pGR4EA/"               \
	"hBAFLuHiSCtTj2WsrpZw=="

/* ---- the command rule ---- */

static const char *const accepted_cmds[] = {
    "qsync --server",
    "/usr/local/bin/qsync --server",
    "/qsync --server",
    "./qsync --server",
    "bin/qsync --server",
    "~/bin/qsync --server",
    "/opt/q-sync_1.2+x,y@z%w=v:u/qsync --server",
};

static const char *const refused_cmds[] = {
    "",
    "sh",
    "qsync",
    "qsync --serverx",
    "qsync --server extra",
    "qsync --server ",
    "  qsync --server ",
    " qsync --server",
    "qsync  --server",
    "qsync\t--server",
    "qsync --server; rm -rf /",
    "qsync --server && x",
    "qsync --server | x",
    "qsync --server\n",
    "qsync --server\nrm -rf /",
    "echo x\nqsync --server",
    "$(rm -rf /)/qsync --server",
    "`rm -rf /`/qsync --server",
    "/bin/$(x)/qsync --server",
    "/bin/`x`/qsync --server",
    "x;/qsync --server",
    "a b/qsync --server",
    "'/usr/bin/qsync' --server",
    "\"/usr/bin/qsync\" --server",
    "/usr/bin/qsync\\ --server",
    "rsync --server",
    "notqsync --server",
    "/usr/bin/notqsync --server",
    "/usr/bin/qsync.sh --server",
    "qsync -a --server",
    "qsync serve",
    "echo pwned",
    "touch /tmp/marker",
    "/bin/sh -c 'qsync --server'",
    "sftp",
    "internal-sftp",
    "/usr/lib/qsync --server*",
    "/usr/*/qsync --server",
    "/usr/b?n/qsync --server",
    "/usr/bin/qsync --server #",
    "/usr/{bin}/qsync --server",
    "/usr/bin/qsync --server >/tmp/x",
    "\x01/qsync --server",
};

static void test_commands(void)
{
	for (size_t i = 0; i < sizeof(accepted_cmds) / sizeof(accepted_cmds[0]); i++) {
		struct qs_err e = {0};
		int rc = net_ssh_server_check_command(accepted_cmds[i], &e);
		checks++;
		if (rc != 0) {
			fprintf(stderr, "%s:%d: [%s] refused (%d: %s), want accepted\n", __FILE__, __LINE__,
			        accepted_cmds[i], rc, e.msg);
			failures++;
		}
	}
	for (size_t i = 0; i < sizeof(refused_cmds) / sizeof(refused_cmds[0]); i++) {
		struct qs_err e = {0};
		int rc = net_ssh_server_check_command(refused_cmds[i], &e);
		checks++;
		if (rc != -EPERM || !strstr(e.msg, "qsync --server") || strchr(e.msg, '\n')) {
			fprintf(stderr, "%s:%d: [%s] gave %d \"%s\", want -EPERM with a one-line reason\n",
			        __FILE__, __LINE__, refused_cmds[i], rc, e.msg);
			failures++;
		}
	}
	/* NULL is refused; a command one byte over the limit is refused, one at it is judged normally */
	CHECK(net_ssh_server_check_command(NULL, NULL) == -EPERM);
	char *big = malloc(NET_SSH_CMD_MAX + 2);
	CHECK(big != NULL);
	if (big) {
		const char tail[] = "/qsync --server";
		size_t fill = NET_SSH_CMD_MAX - (sizeof(tail) - 1);
		memset(big, 'a', fill);
		memcpy(big + fill, tail, sizeof(tail));
		CHECK(strlen(big) == NET_SSH_CMD_MAX);
		CHECK(net_ssh_server_check_command(big, NULL) == 0);
		memmove(big + 1, big, NET_SSH_CMD_MAX + 1);
		CHECK(strlen(big) == NET_SSH_CMD_MAX + 1);
		struct qs_err e = {0};
		CHECK(net_ssh_server_check_command(big, &e) == -EPERM);
		CHECK(strstr(e.msg, "bytes") != NULL);
		free(big);
	}
	/* the refusal quotes the command with control bytes escaped, never raw */
	struct qs_err e = {0};
	CHECK(net_ssh_server_check_command("a\nb", &e) == -EPERM);
	CHECK(strstr(e.msg, "a\\x0ab") != NULL);
}

/* ---- authorized_keys lines ---- */

struct line_case {
	const char *line;
	int want;            /* 1 key, 0 skipped, or the negative errno */
	const char *type;    /* for keys */
	const char *comment; /* for keys */
	int command, restricted;
	const char *err_has; /* for errors: a word the message must hold */
};

static const struct line_case lines[] = {
    {"", 0, NULL, NULL, 0, 0, NULL},
    {"   \t ", 0, NULL, NULL, 0, 0, NULL},
    {"# a comment", 0, NULL, NULL, 0, 0, NULL},
    {"   # indented comment ssh-ed25519 " ED_B64, 0, NULL, NULL, 0, 0, NULL},
    {"\r", 0, NULL, NULL, 0, 0, NULL},
    {"ssh-ed25519 " ED_B64, 1, "ssh-ed25519", "", 0, 0, NULL},
    {"ssh-ed25519 " ED_B64 " user@host", 1, "ssh-ed25519", "user@host", 0, 0, NULL},
    {"ssh-ed25519 " ED_B64 " a comment with spaces  \r", 1, "ssh-ed25519", "a comment with spaces", 0, 0,
     NULL},
    {"  \tssh-ed25519\t" ED_B64 "\tc", 1, "ssh-ed25519", "c", 0, 0, NULL},
    {"ssh-rsa " RSA_B64 " rsa", 1, "ssh-rsa", "rsa", 0, 0, NULL},
    {"restrict ssh-ed25519 " ED_B64, 1, "ssh-ed25519", "", 0, 1, NULL},
    {"no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc ssh-ed25519 " ED_B64, 1,
     "ssh-ed25519", "", 0, 1, NULL},
    {"NO-PTY ssh-ed25519 " ED_B64, 1, "ssh-ed25519", "", 0, 1, NULL},
    {"command=\"qsync --server\" ssh-ed25519 " ED_B64 " forced", 1, "ssh-ed25519", "forced", 1, 0, NULL},
    {"restrict,command=\"/usr/local/bin/qsync --server\" ssh-ed25519 " ED_B64, 1, "ssh-ed25519", "", 1, 1,
     NULL},
    {"command=\"/usr/bin/qsync --server\",no-pty ssh-ed25519 " ED_B64, 1, "ssh-ed25519", "", 1, 1, NULL},
    /* options this server does not implement: the line is refused, never half-honoured */
    {"from=\"10.0.0.1\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "from"},
    {"restrict,from=\"10.0.0.1\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "from"},
    {"environment=\"A=b\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "environment"},
    {"permitopen=\"h:1\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "permitopen"},
    {"expiry-time=\"20300101\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "expiry-time"},
    {"cert-authority ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "cert-authority"},
    {"pty ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "pty"},
    {"restrict=\"x\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "restrict"},
    {"command=\"/bin/sh\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "command"},
    {"command=\"qsync --server; rm -rf /\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "command"},
    {"command=\"backup.sh\",restrict ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "command"},
    /* quoting */
    {"command=\"qsync --server ssh-ed25519 " ED_B64, -EINVAL, NULL, NULL, 0, 0, "quote"},
    {"command=qsync ssh-ed25519 " ED_B64, -EINVAL, NULL, NULL, 0, 0, "quoted"},
    {"command=\"q\\\"sync --server\" ssh-ed25519 " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "command"},
    {"no-pty,,restrict ssh-ed25519 " ED_B64, -EINVAL, NULL, NULL, 0, 0, "empty option"},
    {"no-pty,", -EINVAL, NULL, NULL, 0, 0, "empty option"},
    {"restrict", -EINVAL, NULL, NULL, 0, 0, "no key"},
    {"restrict ", -EINVAL, NULL, NULL, 0, 0, "key type"},
    /* key types and data */
    {"ssh-dss AAAAB3NzaC1kc3MAAACBAP", -ENOTSUP, NULL, NULL, 0, 0, "ssh-dss"},
    {"ssh-ed25519-cert-v01@openssh.com " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "cert"},
    {"sk-ssh-ed25519@openssh.com " ED_B64, -ENOTSUP, NULL, NULL, 0, 0, "sk-ssh"},
    {"restrict ssh-foo " ED_B64, -EINVAL, NULL, NULL, 0, 0, "ssh-foo"},
    {"ssh-ed25519", -EINVAL, NULL, NULL, 0, 0, "base64"},
    {"ssh-ed25519   ", -EINVAL, NULL, NULL, 0, 0, "base64"},
    {"ssh-ed25519 AAAA!!!!", -EINVAL, NULL, NULL, 0, 0, "base64"},
    {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1LIcKWEjsKdxlgtp6AV+idQ28sbF67LAyh2EVnla8", -EINVAL, NULL, NULL,
     0, 0, "base64"},
    {"ssh-rsa " ED_B64, -EINVAL, NULL, NULL, 0, 0, "another type"},
    {"ecdsa-sha2-nistp256 " ED_B64, -EINVAL, NULL, NULL, 0, 0, "another type"},
    {"ssh-ed25519 AAAA", -EINVAL, NULL, NULL, 0, 0, "another type"},
    {"ssh-ed25519 AAAAAA==", -EINVAL, NULL, NULL, 0, 0, "another type"},
};

static void test_lines(void)
{
	struct net_ssh_authkey *k = malloc(sizeof(*k));
	CHECK(k != NULL);
	if (!k)
		return;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		const struct line_case *c = &lines[i];
		struct qs_err e = {0};
		int rc = net_ssh_authkeys_parse_line(c->line, k, &e);
		checks++;
		if (rc != c->want) {
			fprintf(stderr, "%s:%d: line [%s] gave %d (%s), want %d\n", __FILE__, __LINE__,
			        c->line, rc, e.msg, c->want);
			failures++;
			continue;
		}
		if (rc == 1) {
			checks++;
			if (strcmp(k->type, c->type) != 0 || strcmp(k->comment, c->comment) != 0 ||
			    k->command != (c->command != 0) || k->restricted != (c->restricted != 0) ||
			    k->blob_len < 20) {
				fprintf(
				    stderr,
				    "%s:%d: line [%s]: type \"%s\" comment \"%s\" command %d restricted %d "
				    "blob %zu\n",
				    __FILE__, __LINE__, c->line, k->type, k->comment, k->command,
				    k->restricted, k->blob_len);
				failures++;
			}
		}
		if (rc < 0) {
			checks++;
			if (!c->err_has || !strstr(e.msg, c->err_has)) {
				fprintf(stderr, "%s:%d: line [%s]: message \"%s\" should name \"%s\"\n",
				        __FILE__, __LINE__, c->line, e.msg, c->err_has ? c->err_has : "?");
				failures++;
			}
		}
	}

	/* the ed25519 blob decodes to its type and a 32-byte key */
	CHECK(net_ssh_authkeys_parse_line("ssh-ed25519 " ED_B64, k, NULL) == 1);
	CHECK(k->blob_len == 4 + 11 + 4 + 32);
	CHECK(memcmp(k->blob + 4, "ssh-ed25519", 11) == 0);

	/* a line at the length limit is judged; one byte over is refused as too long */
	size_t max = NET_SSH_AUTHKEYS_MAX_LINE;
	char *big = malloc(max + 2);
	CHECK(big != NULL);
	if (big) {
		const char head[] = "ssh-ed25519 " ED_B64 " ";
		memcpy(big, head, sizeof(head) - 1);
		memset(big + sizeof(head) - 1, 'c', max - (sizeof(head) - 1));
		big[max] = '\0';
		CHECK(net_ssh_authkeys_parse_line(big, k, NULL) == 1);
		CHECK(strlen(k->comment) == sizeof(k->comment) - 1);
		big[max] = 'c';
		big[max + 1] = '\0';
		struct qs_err e = {0};
		CHECK(net_ssh_authkeys_parse_line(big, k, &e) == -E2BIG);
		/* a key blob over the limit */
		char *huge = malloc(max + 1);
		CHECK(huge != NULL);
		if (huge) {
			size_t b = (NET_SSH_AUTHKEYS_MAX_BLOB + 3) / 3 * 4 + 4;
			memcpy(huge, "ssh-rsa ", 8);
			memset(huge + 8, 'A', b);
			huge[8 + b] = '\0';
			CHECK(net_ssh_authkeys_parse_line(huge, k, &e) == -E2BIG);
			free(huge);
		}
		free(big);
	}
	free(k);
}

/* ---- --listen ---- */

static void test_listen(void)
{
	struct net_ssh_server_opts o;
	struct qs_err e;

	net_ssh_server_opts_default(&o);
	CHECK(strcmp(o.listen_addr, "127.0.0.1") == 0 && o.port == 2222);
	CHECK(o.max_sessions == NET_SSH_SERVER_DEFAULT_SESSIONS &&
	      o.login_grace_s == NET_SSH_SERVER_DEFAULT_GRACE_S);
	CHECK(net_ssh_server_parse_listen("0.0.0.0:22", &o, &e) == 0);
	CHECK(strcmp(o.listen_addr, "0.0.0.0") == 0 && o.port == 22);
	CHECK(net_ssh_server_parse_listen("[::1]:2022", &o, &e) == 0);
	CHECK(strcmp(o.listen_addr, "::1") == 0 && o.port == 2022);
	CHECK(net_ssh_server_parse_listen("[::]", &o, &e) == 0);
	CHECK(strcmp(o.listen_addr, "::") == 0 && o.port == 2022);
	CHECK(net_ssh_server_parse_listen("fe80::1:2", &o, &e) == 0);
	CHECK(strcmp(o.listen_addr, "fe80::1:2") == 0 && o.port == 2022);
	CHECK(net_ssh_server_parse_listen("10.1.2.3", &o, &e) == 0);
	CHECK(strcmp(o.listen_addr, "10.1.2.3") == 0 && o.port == 2022);
	CHECK(net_ssh_server_parse_listen("127.0.0.1:0", &o, &e) == 0 && o.port == 0);
	CHECK(net_ssh_server_parse_listen("127.0.0.1:65535", &o, &e) == 0 && o.port == 65535);
	net_ssh_server_opts_default(&o);
	CHECK(net_ssh_server_parse_listen("127.0.0.1:65536", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen("localhost:22", &o, &e) == -EINVAL);
	CHECK(strstr(e.msg, "numeric") != NULL);
	CHECK(net_ssh_server_parse_listen("127.0.0.1:", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen(":22", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen("127.0.0.1:2x", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen("127.0.0.1:-1", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen("[::1", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen("[::1]x", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen("[]:22", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen("[127.0.0.1:22", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen("", &o, &e) == -EINVAL);
	CHECK(net_ssh_server_parse_listen(NULL, &o, &e) == -EINVAL);
	/* failures leave the options as they were */
	CHECK(strcmp(o.listen_addr, "127.0.0.1") == 0 && o.port == 2222);
}

int main(void)
{
	test_commands();
	test_lines();
	test_listen();
	if (failures) {
		fprintf(stderr, "%d of %d checks failed\n", failures, checks);
		return 1;
	}
	printf("all %d checks passed\n", checks);
	return 0;
}
