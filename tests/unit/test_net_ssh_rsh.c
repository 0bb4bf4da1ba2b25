/* Unit tests for net_ssh_parse_rsh (net/ssh.h): the rsync-style -e string split with shell quoting
 * into ssh options, every value form, the limits crossed by one, and each error naming what was wrong.
 * Plain C: each failing check prints file:line; main returns non-zero when any failed. */
#include "net/ssh.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

#define CHECK_EQ(got, want)                                                                                  \
	do {                                                                                                 \
		long long g_ = (long long)(got), w_ = (long long)(want);                                     \
		checks++;                                                                                    \
		if (g_ != w_) {                                                                              \
			fprintf(stderr, "%s:%d: %s = %lld, want %lld\n", __FILE__, __LINE__, #got, g_, w_);  \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

#define CHECK_STR(got, want)                                                                                 \
	do {                                                                                                 \
		checks++;                                                                                    \
		if (strcmp((got), (want)) != 0) {                                                            \
			fprintf(stderr, "%s:%d: %s = \"%s\", want \"%s\"\n", __FILE__, __LINE__, #got,       \
			        (got), (want));                                                              \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

/* Parses rsh into a fresh *o; returns the code. */
static int parse(const char *rsh, struct net_ssh_opts *o, struct qs_err *e)
{
	memset(o, 0, sizeof(*o));
	memset(e, 0, sizeof(*e));
	return net_ssh_parse_rsh(rsh, o, e);
}

/* Expects failure with code want and an error message holding needle. */
#define CHECK_FAIL(rsh, want, needle)                                                                        \
	do {                                                                                                 \
		struct net_ssh_opts o_;                                                                      \
		struct qs_err e_;                                                                            \
		int rc_ = parse((rsh), &o_, &e_);                                                            \
		CHECK_EQ(rc_, (want));                                                                       \
		checks++;                                                                                    \
		if (!strstr(e_.msg, (needle))) {                                                             \
			fprintf(stderr, "%s:%d: error for [%s] is \"%s\", want it to name \"%s\"\n",         \
			        __FILE__, __LINE__, (rsh), e_.msg, (needle));                                \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

static void test_basic(void)
{
	struct net_ssh_opts o;
	struct qs_err e;

	CHECK_EQ(parse("ssh -p 2222 -i ~/.ssh/id_ed25519", &o, &e), 0);
	CHECK_EQ(o.port, 2222);
	CHECK_EQ(o.n_identity, 1);
	CHECK_STR(o.identity[0], "~/.ssh/id_ed25519"); /* expanded when used */
	CHECK_STR(o.user, "");
	CHECK_EQ(o.strict, NET_SSH_STRICT_DEFAULT);

	CHECK_EQ(parse("ssh -p2222 -l bob", &o, &e), 0);
	CHECK_EQ(o.port, 2222);
	CHECK_STR(o.user, "bob");

	CHECK_EQ(parse("ssh -lbob -i/k1 -Fcfg", &o, &e), 0);
	CHECK_STR(o.user, "bob");
	CHECK_STR(o.identity[0], "/k1");
	CHECK_STR(o.config_file, "cfg");

	CHECK_EQ(
	    parse("ssh -o Port=2200 -o 'UserKnownHostsFile=/tmp/k h' -o StrictHostKeyChecking=accept-new", &o,
	          &e),
	    0);
	CHECK_EQ(o.port, 2200);
	CHECK_STR(o.known_hosts, "/tmp/k h");
	CHECK_EQ(o.strict, NET_SSH_STRICT_ACCEPT_NEW);

	CHECK_EQ(parse("ssh -F /tmp/cfg -o ConnectTimeout=5 -o BatchMode=yes", &o, &e), 0);
	CHECK_STR(o.config_file, "/tmp/cfg");
	CHECK_EQ(o.connect_timeout_s, 5);
	CHECK(o.batch_mode);

	/* the program name is ignored, whatever it is */
	CHECK_EQ(parse("/usr/bin/ssh", &o, &e), 0);
	CHECK_EQ(parse("  ssh\t-v  -vv -q -4 -6 -C -T -x -a -Cq ", &o, &e), 0);
	CHECK_EQ(o.verbose, 3);
	/* a cluster ending in a value option takes the next word */
	CHECK_EQ(parse("ssh -Cp 22", &o, &e), 0);
	CHECK_EQ(o.port, 22);
}

static void test_o_forms(void)
{
	struct net_ssh_opts o;
	struct qs_err e;

	/* "Key Value", "Key = Value", attached -oKey=Value, case-insensitive keys and yes/no values */
	CHECK_EQ(parse("ssh -o 'port 2201' -o 'user = alice' -oIDENTITYFILE=/k -o stricthostkeychecking=NO",
	               &o, &e),
	         0);
	CHECK_EQ(o.port, 2201);
	CHECK_STR(o.user, "alice");
	CHECK_EQ(o.n_identity, 1);
	CHECK_STR(o.identity[0], "/k");
	CHECK_EQ(o.strict, NET_SSH_STRICT_NO);

	CHECK_EQ(parse("ssh -o StrictHostKeyChecking=yes -o BatchMode=No -o HostName=10.0.0.1", &o, &e), 0);
	CHECK_EQ(o.strict, NET_SSH_STRICT_YES);
	CHECK(!o.batch_mode);
	CHECK_STR(o.host, "10.0.0.1");

	/* ask: we cannot ask, so it is the default (unknown keys refused) */
	CHECK_EQ(parse("ssh -o StrictHostKeyChecking=accept-new -o StrictHostKeyChecking=ask", &o, &e), 0);
	CHECK_EQ(o.strict, NET_SSH_STRICT_DEFAULT);

	CHECK_EQ(parse("ssh -o ConnectTimeout=0", &o, &e), 0);
	CHECK_EQ(o.connect_timeout_s, 0);

	/* on top of what o holds: the caller's host and user stay unless the string changes them */
	memset(&o, 0, sizeof(o));
	snprintf(o.host, sizeof(o.host), "example");
	snprintf(o.user, sizeof(o.user), "carol");
	CHECK_EQ(net_ssh_parse_rsh("ssh -p 2", &o, &e), 0);
	CHECK_STR(o.host, "example");
	CHECK_STR(o.user, "carol");
	CHECK_EQ(o.port, 2);
}

static void test_quoting(void)
{
	struct net_ssh_opts o;
	struct qs_err e;

	CHECK_EQ(parse("ssh -i '/tmp/a b/key'", &o, &e), 0);
	CHECK_STR(o.identity[0], "/tmp/a b/key");

	CHECK_EQ(parse("ssh -i \"/tmp/x\\\"y\"", &o, &e), 0);
	CHECK_STR(o.identity[0], "/tmp/x\"y");

	/* backslash outside quotes; other backslashes inside double quotes stay */
	CHECK_EQ(parse("ssh -i /tmp/a\\ b -i \"/c\\d\\\\e\" -i x'y z'\"w\"", &o, &e), 0);
	CHECK_EQ(o.n_identity, 3);
	CHECK_STR(o.identity[0], "/tmp/a b");
	CHECK_STR(o.identity[1], "/c\\d\\e");
	CHECK_STR(o.identity[2], "xy zw");

	/* single quotes keep backslashes */
	CHECK_EQ(parse("ssh -l 'a\\b'", &o, &e), 0);
	CHECK_STR(o.user, "a\\b");

	CHECK_FAIL("ssh -i '/tmp/a b", -EINVAL, "unterminated");
	CHECK_FAIL("ssh -i \"/tmp/a b", -EINVAL, "unterminated");
	CHECK_FAIL("ssh -i \"/tmp/a\\\"", -EINVAL, "unterminated");
	CHECK_FAIL("ssh -i /x\\", -EINVAL, "backslash");
}

static void test_identity_limit(void)
{
	struct net_ssh_opts o;
	struct qs_err e;
	char rsh[1024];
	size_t n = (size_t)snprintf(rsh, sizeof(rsh), "ssh");

	for (int i = 0; i < NET_SSH_MAX_IDENTITIES; i++)
		n += (size_t)snprintf(rsh + n, sizeof(rsh) - n, " -i /k%d", i);
	CHECK_EQ(parse(rsh, &o, &e), 0);
	CHECK_EQ(o.n_identity, NET_SSH_MAX_IDENTITIES);
	CHECK_STR(o.identity[NET_SSH_MAX_IDENTITIES - 1], "/k7");

	snprintf(rsh + n, sizeof(rsh) - n, " -o IdentityFile=/one-too-many");
	CHECK_FAIL(rsh, -E2BIG, "/one-too-many");
	snprintf(rsh + n, sizeof(rsh) - n, " -i /one-too-many");
	CHECK_FAIL(rsh, -E2BIG, "too many identity files");

	/* a path that fills the field exactly fits; one byte more does not */
	char big[sizeof(o.identity[0]) + 16];
	memset(big, 'a', sizeof(big));
	memcpy(big, "ssh -i ", 7);
	big[7 + sizeof(o.identity[0]) - 1] = '\0';
	CHECK_EQ(parse(big, &o, &e), 0);
	CHECK_EQ(strlen(o.identity[0]), sizeof(o.identity[0]) - 1);
	memset(big, 'a', sizeof(big));
	memcpy(big, "ssh -i ", 7);
	big[7 + sizeof(o.identity[0])] = '\0';
	CHECK_FAIL(big, -ENAMETOOLONG, "identity file name");
}

static void test_errors(void)
{
	CHECK_FAIL("ssh -Z", -EINVAL, "-Z");
	CHECK_FAIL("ssh -vZ", -EINVAL, "-Z");
	CHECK_FAIL("ssh -p", -EINVAL, "-p");
	CHECK_FAIL("ssh -i", -EINVAL, "-i");
	CHECK_FAIL("ssh -o", -EINVAL, "-o");
	CHECK_FAIL("ssh -p abc", -EINVAL, "abc");
	CHECK_FAIL("ssh -p 22x", -EINVAL, "22x");
	CHECK_FAIL("ssh -p -1", -EINVAL, "-1");
	CHECK_FAIL("ssh -p 0", -ERANGE, "0");
	CHECK_FAIL("ssh -p 65536", -ERANGE, "65536");
	CHECK_FAIL("ssh -p 99999999999999999999", -ERANGE, "99999999999999999999");
	CHECK_FAIL("ssh -o Port=70000", -ERANGE, "70000");
	CHECK_FAIL("ssh -o Bogus=1", -EINVAL, "Bogus");
	CHECK_FAIL("ssh -o ProxyCommand=nc", -EINVAL, "ProxyCommand");
	CHECK_FAIL("ssh -o Port=", -EINVAL, "Port");
	CHECK_FAIL("ssh -o =5", -EINVAL, "=5");
	CHECK_FAIL("ssh -o StrictHostKeyChecking=maybe", -EINVAL, "maybe");
	CHECK_FAIL("ssh -o BatchMode=perhaps", -EINVAL, "perhaps");
	CHECK_FAIL("ssh -o ConnectTimeout=soon", -EINVAL, "soon");
	CHECK_FAIL("ssh host", -EINVAL, "host");
	CHECK_FAIL("ssh -p 22 -", -EINVAL, "'-'");
	CHECK_FAIL("", -EINVAL, "empty");
	CHECK_FAIL("   ", -EINVAL, "empty");
	CHECK_FAIL("ssh -l ''", -EINVAL, "-l");

	struct net_ssh_opts o;
	struct qs_err e;
	memset(&o, 0, sizeof(o));
	CHECK_EQ(net_ssh_parse_rsh(NULL, &o, &e), -EINVAL);

	/* the whole string and its word count are bounded */
	static char huge[8192];
	memset(huge, 'x', sizeof(huge) - 1);
	memcpy(huge, "ssh -i ", 7);
	CHECK_FAIL(huge, -E2BIG, "bytes");
	char many[1024];
	size_t n = (size_t)snprintf(many, sizeof(many), "ssh");
	for (int i = 0; i < 70; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, " -v");
	CHECK_FAIL(many, -E2BIG, "words");
}

int main(void)
{
	test_basic();
	test_o_forms();
	test_quoting();
	test_identity_limit();
	test_errors();
	if (failures) {
		fprintf(stderr, "test_net_ssh_rsh: %d of %d checks failed\n", failures, checks);
		return 1;
	}
	printf("test_net_ssh_rsh: all %d checks passed\n", checks);
	return 0;
}
