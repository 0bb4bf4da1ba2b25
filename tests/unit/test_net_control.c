/* Unit tests for the control plane (net/control.h): the JSON codec on every message type and every
 * malformed input we can think of, base64, and the line channel over socketpairs and pipes.
 * Plain C: each failing check prints file:line; main returns non-zero when any failed. */
#include "net/control.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

static struct net_ctl_msg msg_a, msg_b; /* big (paths): keep them off the stack */

/* Parses line and checks the return code and that the error words contain needle (if given). */
static void expect_parse_n(const char *file, int lineno, const char *line, size_t len, int want,
                           const char *needle)
{
	struct qs_err e = {0};
	int rc = net_ctl_parse(line, len, &msg_a, &e);
	checks++;
	if (rc != want) {
		fprintf(stderr, "%s:%d: parse(%.80s) = %d (%s), want %d\n", file, lineno, line, rc, e.msg,
		        want);
		failures++;
		return;
	}
	if (rc < 0 && e.code != rc) {
		fprintf(stderr, "%s:%d: err.code %d, want %d\n", file, lineno, e.code, rc);
		failures++;
	}
	if (rc < 0 && e.msg[0] == '\0') {
		fprintf(stderr, "%s:%d: no error words for %.80s\n", file, lineno, line);
		failures++;
	}
	if (needle && !strstr(e.msg, needle)) {
		fprintf(stderr, "%s:%d: error \"%s\" does not mention \"%s\"\n", file, lineno, e.msg, needle);
		failures++;
	}
}
#define EXPECT_PARSE(line, want, needle) expect_parse_n(__FILE__, __LINE__, line, strlen(line), want, needle)

/* ---- round trips -------------------------------------------------------------------------------- */

/* Emits m, parses the line back into msg_b and checks it equals m (which must be zeroed before being
 * filled, so padding and string tails compare equal). */
static void round_trip_n(const char *file, int lineno, struct net_ctl_msg *m)
{
	static char buf[NET_CTL_MAX_LINE + 2];
	struct qs_err e = {0};
	snprintf(m->type_name, sizeof(m->type_name), "%s", net_ctl_type_name(m->type));
	ssize_t n = net_ctl_emit(m, buf, sizeof(buf));
	checks++;
	if (n <= 0 || buf[n - 1] != '\n' || buf[n] != '\0' || memchr(buf, '\n', (size_t)n - 1)) {
		fprintf(stderr, "%s:%d: emit %s = %zd\n", file, lineno, net_ctl_type_name(m->type), n);
		failures++;
		return;
	}
	int rc = net_ctl_parse(buf, (size_t)n - 1, &msg_b, &e);
	checks++;
	if (rc != 0) {
		fprintf(stderr, "%s:%d: reparse of %s: %d %s\n  line: %.200s\n", file, lineno,
		        net_ctl_type_name(m->type), rc, e.msg, buf);
		failures++;
		return;
	}
	checks++;
	if (memcmp(m, &msg_b, sizeof(*m)) != 0) {
		fprintf(stderr, "%s:%d: %s does not survive a round trip\n  line: %.200s\n", file, lineno,
		        net_ctl_type_name(m->type), buf);
		failures++;
	}
}
#define ROUND_TRIP(m) round_trip_n(__FILE__, __LINE__, m)

static struct net_ctl_msg *fresh(enum net_ctl_type t)
{
	static struct net_ctl_msg m;
	memset(&m, 0, sizeof(m));
	m.type = t;
	return &m;
}

static void test_round_trips(void)
{
	struct net_ctl_msg *m;

	m = fresh(NET_CTL_HELLO);
	snprintf(m->u.hello.version, sizeof(m->u.hello.version), "%s", NET_CTL_PROTO_VERSION);
	m->u.hello.caps = NET_CAP_QUIC_V1;
	ROUND_TRIP(m);
	m->u.hello.caps = 0; /* empty array */
	ROUND_TRIP(m);
	m->u.hello.caps = NET_CAP_QUICK_CHECK;
	ROUND_TRIP(m);
	m->u.hello.caps = NET_CAP_QUIC_V1 | NET_CAP_QUICK_CHECK;
	ROUND_TRIP(m);
	m->u.hello.caps = NET_CAP_ASK_BATCH;
	ROUND_TRIP(m);
	m->u.hello.caps = NET_CAP_QUIC_V1 | NET_CAP_QUICK_CHECK | NET_CAP_ASK_BATCH | NET_CAP_BUNDLE;
	ROUND_TRIP(m);
	m->u.hello.caps = NET_CAP_BUNDLE;
	ROUND_TRIP(m);
	m->u.hello.caps = NET_CAP_FSYNC;
	ROUND_TRIP(m);
	m->u.hello.caps =
	    NET_CAP_QUIC_V1 | NET_CAP_QUICK_CHECK | NET_CAP_ASK_BATCH | NET_CAP_BUNDLE | NET_CAP_FSYNC;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_HELLO_ACK);
	snprintf(m->u.hello.version, sizeof(m->u.hello.version), "1.7");
	m->u.hello.caps = NET_CAP_QUIC_V1;
	m->u.hello.quic_available = true;
	m->u.hello.quic_port = 65535;
	ROUND_TRIP(m);
	m->u.hello.max_streams = 4096;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_QUIC_INIT);
	snprintf(m->u.quic_init.connection_id, sizeof(m->u.quic_init.connection_id), "0123456789abcdef");
	for (int i = 0; i < NET_CTL_PSK_LEN; i++)
		m->u.quic_init.psk[i] = (uint8_t)(i * 37 + 250);
	snprintf(m->u.quic_init.cipher_suite, sizeof(m->u.quic_init.cipher_suite), "TLS_AES_128_GCM_SHA256");
	m->u.quic_init.max_streams = UINT32_MAX;
	ROUND_TRIP(m);
	m->u.quic_init.connections = 8;
	ROUND_TRIP(m);
	CHECK_EQ(msg_b.u.quic_init.psk[31], (uint8_t)(31 * 37 + 250));

	m = fresh(NET_CTL_QUIC_READY);
	snprintf(m->u.quic_ready.connection_id, sizeof(m->u.quic_ready.connection_id),
	         "0123456789ABCDEF0123456789abcdef");
	snprintf(m->u.quic_ready.ip, sizeof(m->u.quic_ready.ip), "fe80::1:2:3:4%%eth0");
	m->u.quic_ready.port = 4433;
	m->u.quic_ready.max_streams = 256;
	m->u.quic_ready.initial_max_data = UINT64_MAX;
	ROUND_TRIP(m);
	m->u.quic_ready.n_ports = 3;
	m->u.quic_ready.ports[0] = 4433;
	m->u.quic_ready.ports[1] = 1;
	m->u.quic_ready.ports[2] = 65535;
	ROUND_TRIP(m);
	m->u.quic_ready.n_ports = NET_CTL_MAX_CONNS;
	for (int i = 0; i < NET_CTL_MAX_CONNS; i++)
		m->u.quic_ready.ports[i] = (uint16_t)(10000 + i);
	ROUND_TRIP(m);

	m = fresh(NET_CTL_SYNC_START);
	snprintf(m->u.sync_start.source, sizeof(m->u.sync_start.source), "/home/me/src dir/");
	snprintf(m->u.sync_start.destination, sizeof(m->u.sync_start.destination), "-rf my \"dest\"\\x");
	m->u.sync_start.preserve_permissions = true;
	m->u.sync_start.preserve_timestamps = true;
	m->u.sync_start.preserve_owner = true;
	m->u.sync_start.preserve_group = true;
	m->u.sync_start.recursive = true;
	m->u.sync_start.single_file = true;
	ROUND_TRIP(m);
	m->u.sync_start.preserve_owner = false;
	m->u.sync_start.single_file = false;
	ROUND_TRIP(m); /* group without owner */
	m->u.sync_start.preserve_group = false;
	memset(m->u.sync_start.source, 0, sizeof(m->u.sync_start.source));
	ROUND_TRIP(m);
	memset(m->u.sync_start.destination, 'd', NET_CTL_MAX_STR); /* the longest path that fits */
	ROUND_TRIP(m);
	m->u.sync_start.data_path = NET_CTL_PATH_SSH;
	ROUND_TRIP(m);
	m->u.sync_start.quick_check = true;
	ROUND_TRIP(m);
	m->u.sync_start.fsync = true;
	ROUND_TRIP(m);
	m->u.sync_start.quick_check = false;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_DATA_PATH);
	m->u.data_path.path = NET_CTL_PATH_SSH;
	snprintf(m->u.data_path.reason, sizeof(m->u.data_path.reason), "QUIC handshake: no answer in 3 s");
	ROUND_TRIP(m);
	m = fresh(NET_CTL_DATA_PATH_ACK);
	m->u.data_path.path = NET_CTL_PATH_SSH;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_SYNC_READY);
	ROUND_TRIP(m);
	m->u.sync_ready.existing = true;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_PROGRESS);
	m->u.progress.discovered_files = 1;
	m->u.progress.completed_files = 2;
	m->u.progress.in_flight_files = 3;
	m->u.progress.bytes_transferred = UINT64_MAX;
	m->u.progress.throughput_mbps = 12345;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_ERROR);
	snprintf(m->u.error.file, sizeof(m->u.error.file), "a/b c/\xc3\xa9t\xc3\xa9.txt");
	m->u.error.quic_stream_id = INT64_MAX;
	snprintf(m->u.error.error_code, sizeof(m->u.error.error_code), "UNSAFE_PATH");
	snprintf(m->u.error.message, sizeof(m->u.error.message), "refused:\n\t\"../x\"");
	ROUND_TRIP(m);
	memset(m->u.error.file, 0, sizeof(m->u.error.file));
	m->u.error.quic_stream_id = -1;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_RETRY);
	snprintf(m->u.retry.file, sizeof(m->u.retry.file), "dir/file");
	m->u.retry.quic_stream_id = 4;
	ROUND_TRIP(m);
	m->u.retry.quic_stream_id = -1;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_SYNC_COMPLETE);
	m->u.sync_complete.files_transferred = 1000000;
	m->u.sync_complete.bytes_transferred = 1ull << 40;
	m->u.sync_complete.duration_seconds = 12.345678901234567;
	m->u.sync_complete.average_throughput_mbps = 940;
	ROUND_TRIP(m);
	m->u.sync_complete.duration_seconds = 1e300;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_ACK_COMPLETE);
	m->u.ack_complete.files_ok = 10;
	m->u.ack_complete.files_failed = 2;
	m->u.ack_complete.bytes = 99;
	snprintf(m->u.ack_complete.checksum, sizeof(m->u.ack_complete.checksum), "xxh3:0123456789abcdef");
	ROUND_TRIP(m);
	m->u.ack_complete.files_failed_late = 2; /* (said, and zero is said too) */
	m->u.ack_complete.has_failed_late = true;
	ROUND_TRIP(m);
	m->u.ack_complete.files_failed_late = 0;
	ROUND_TRIP(m);

	m = fresh(NET_CTL_BYE);
	ROUND_TRIP(m);
}

static void test_escaping(void)
{
	static char buf[NET_CTL_MAX_LINE + 2];
	struct net_ctl_msg *m = fresh(NET_CTL_RETRY);
	/* quote, backslash, control bytes, DEL, UTF-8 (2, 3 and 4 bytes), spaces, a leading dash */
	const char *path =
	    "-x \"q\" back\\slash \x01\x1f\n\t\x7f d\xc3\xa9j\xc3\xa0/\xe6\x97\xa5/\xf0\x9f\x98\x80";
	snprintf(m->u.retry.file, sizeof(m->u.retry.file), "%s", path);
	m->u.retry.quic_stream_id = -1;
	ssize_t n = net_ctl_emit(m, buf, sizeof(buf));
	CHECK(n > 0);
	CHECK(strstr(buf, "\\\"q\\\"") != NULL);
	CHECK(strstr(buf, "back\\\\slash") != NULL);
	CHECK(strstr(buf, "\\u0001\\u001f\\u000a\\u0009") != NULL);
	CHECK(strstr(buf, "\xf0\x9f\x98\x80") != NULL); /* UTF-8 passes through */
	for (ssize_t i = 0; i < n - 1; i++)
		CHECK((unsigned char)buf[i] >= 0x20);
	ROUND_TRIP(m);

	/* every escape JSON has, read back to the bytes it stands for */
	EXPECT_PARSE(
	    "{\"type\":\"retry\",\"file\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u65e5\\ud83d\\ude00\"}", 0,
	    NULL);
	CHECK(strcmp(msg_a.u.retry.file, "a\"b\\c/d\b\f\n\r\t\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80") == 0);
	CHECK_EQ(msg_a.u.retry.quic_stream_id, -1);
	/* escaped key names are the same keys */
	EXPECT_PARSE("{\"typ\\u0065\":\"retry\",\"\\u0066ile\":\"x\"}", 0, NULL);
	CHECK(strcmp(msg_a.u.retry.file, "x") == 0);
	/* whitespace everywhere JSON allows it */
	EXPECT_PARSE(" \t{ \"type\" : \"bye\" , \"x\" : [ 1 , { } ] }\r\n ", 0, NULL);
}

static void test_base64(void)
{
	uint8_t in[64], out[64];
	char txt[100];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 151 + 7);
	for (size_t n = 0; n <= 40; n++) {
		ssize_t e = net_b64_encode(in, n, txt, sizeof(txt));
		CHECK_EQ(e, (ssize_t)((n + 2) / 3 * 4));
		CHECK_EQ(strlen(txt), (size_t)e);
		ssize_t d = net_b64_decode(txt, (size_t)e, out, sizeof(out));
		CHECK_EQ(d, (ssize_t)n);
		CHECK(memcmp(in, out, n) == 0);
	}
	CHECK_EQ(net_b64_encode((const uint8_t *)"foobar", 6, txt, sizeof(txt)), 8);
	CHECK(strcmp(txt, "Zm9vYmFy") == 0);
	CHECK_EQ(net_b64_encode((const uint8_t *)"f", 1, txt, sizeof(txt)), 4);
	CHECK(strcmp(txt, "Zg==") == 0);
	CHECK_EQ(net_b64_encode((const uint8_t *)"fo", 2, txt, sizeof(txt)), 4);
	CHECK(strcmp(txt, "Zm8=") == 0);
	CHECK_EQ(net_b64_encode((const uint8_t *)"foo", 3, txt, 4), -ENOSPC); /* no room for the NUL */
	CHECK_EQ(net_b64_encode((const uint8_t *)"foo", 3, txt, 5), 4);

	CHECK_EQ(net_b64_decode("Zm9vYmFy", 8, out, sizeof(out)), 6);
	CHECK(memcmp(out, "foobar", 6) == 0);
	CHECK_EQ(net_b64_decode("Zm9vYmFy", 8, out, 5), -ENOSPC);
	CHECK_EQ(net_b64_decode("Zg=", 3, out, sizeof(out)), -EINVAL);      /* not a multiple of 4 */
	CHECK_EQ(net_b64_decode("Zg", 2, out, sizeof(out)), -EINVAL);       /* unpadded */
	CHECK_EQ(net_b64_decode("Zg=a", 4, out, sizeof(out)), -EINVAL);     /* data after padding */
	CHECK_EQ(net_b64_decode("Z===", 4, out, sizeof(out)), -EINVAL);     /* too much padding */
	CHECK_EQ(net_b64_decode("Zh==", 4, out, sizeof(out)), -EINVAL);     /* stray bits */
	CHECK_EQ(net_b64_decode("Zg==Zg==", 8, out, sizeof(out)), -EINVAL); /* padding in the middle */
	CHECK_EQ(net_b64_decode("Zm9v!mFy", 8, out, sizeof(out)), -EINVAL);
	CHECK_EQ(net_b64_decode("Zm9v YmF", 8, out, sizeof(out)), -EINVAL);
	CHECK_EQ(net_b64_decode("Zm9-", 4, out, sizeof(out)), -EINVAL); /* url alphabet */
	CHECK_EQ(net_b64_decode("", 0, out, sizeof(out)), 0);
}

/* ---- malformed input ---------------------------------------------------------------------------- */

#define PSK32 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" /* bytes 0..31 */
#define PSK31 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="
#define PSK33 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g"

static void test_syntax_errors(void)
{
	EXPECT_PARSE("", -EBADMSG, "empty");
	EXPECT_PARSE("   ", -EBADMSG, NULL);
	EXPECT_PARSE("not json", -EBADMSG, NULL);
	EXPECT_PARSE("hello", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\"", -EBADMSG, "truncated");
	EXPECT_PARSE("{\"type\":\"by", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":", -EBADMSG, NULL);
	EXPECT_PARSE("{", -EBADMSG, NULL);
	EXPECT_PARSE("[1,2]", -EBADMSG, "not an object");
	EXPECT_PARSE("[{\"type\":\"bye\"}]", -EBADMSG, "not an object");
	EXPECT_PARSE("\"hello\"", -EBADMSG, "not an object");
	EXPECT_PARSE("42", -EBADMSG, "not an object");
	EXPECT_PARSE("true", -EBADMSG, "not an object");
	EXPECT_PARSE("null", -EBADMSG, "not an object");
	EXPECT_PARSE("{\"type\":\"bye\"} x", -EBADMSG, "trailing");
	EXPECT_PARSE("{\"type\":\"bye\"}{}", -EBADMSG, "trailing");
	EXPECT_PARSE("{\"type\":\"bye\"}\n{\"type\":\"bye\"}", -EBADMSG, "trailing");
	EXPECT_PARSE("{\"type\":\"bye\",}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\" \"bye\"}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\" \"a\":1}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",,\"a\":1}", -EBADMSG, NULL);
	EXPECT_PARSE("{'type':'bye'}", -EBADMSG, NULL);
	EXPECT_PARSE("{type:\"bye\"}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"a\":[1,]}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"a\":[1}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"a\":01}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"a\":1.}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"a\":-}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"a\":tru}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"a\":nul}", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"a\":\"raw\ttab\"}", -EBADMSG, "control character");
	{
		static const char nul_in[] = "{\"type\":\"bye\",\"a\":\"x\0y\"}";
		expect_parse_n(__FILE__, __LINE__, nul_in, sizeof(nul_in) - 1, -EBADMSG, NULL);
		static const char nul_after[] = "{\"type\":\"bye\"}\0";
		expect_parse_n(__FILE__, __LINE__, nul_after, sizeof(nul_after) - 1, -EBADMSG, NULL);
	}
	/* bad escapes */
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\xb\"}", -EBADMSG, "escape");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\u12\"}", -EBADMSG, "\\u");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\u12", -EBADMSG, NULL);
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\u0000b\"}", -EBADMSG, "\\u0000");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\ud83d\"}", -EBADMSG, "surrogate");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\ud83dx\"}", -EBADMSG, "surrogate");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\ud83d\\u0041\"}", -EBADMSG, "surrogate");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\ude00\"}", -EBADMSG, "surrogate");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\\\"}", -EBADMSG, NULL);
	/* a bad escape in a field nobody reads is still bad JSON */
	EXPECT_PARSE("{\"type\":\"bye\",\"junk\":\"\\q\"}", -EBADMSG, NULL);

	/* nesting */
	{
		static char deep[256];
		size_t o = (size_t)snprintf(deep, sizeof(deep), "{\"type\":\"bye\",\"a\":");
		for (int i = 0; i < 40; i++)
			deep[o++] = '[';
		for (int i = 0; i < 40; i++)
			deep[o++] = ']';
		deep[o++] = '}';
		deep[o] = '\0';
		EXPECT_PARSE(deep, -EBADMSG, "nested");
	}
}

static void test_type_errors(void)
{
	EXPECT_PARSE("{}", -EPROTO, "\"type\"");
	EXPECT_PARSE("{\"version\":\"1.0\"}", -EPROTO, "\"type\"");
	EXPECT_PARSE("{\"type\":5}", -EPROTO, "expected a string");
	EXPECT_PARSE("{\"type\":null}", -EPROTO, "expected a string");
	EXPECT_PARSE("{\"type\":[\"bye\"]}", -EPROTO, NULL);
	EXPECT_PARSE("{\"type\":\"bye\",\"type\":\"bye\"}", -EPROTO, "twice");
	EXPECT_PARSE("{\"type\":\"Bye\"}", -ENOMSG, NULL);

	EXPECT_PARSE("{\"type\":\"frobnicate\",\"x\":1}", -ENOMSG, "frobnicate");
	CHECK_EQ(msg_a.type, NET_CTL_UNKNOWN);
	CHECK(strcmp(msg_a.type_name, "frobnicate") == 0);
	EXPECT_PARSE("{\"type\":\"bandwidth_limit_with_a_very_long_name_indeed\"}", -ENOMSG, "...");
	CHECK_EQ(msg_a.type, NET_CTL_UNKNOWN);
	CHECK_EQ(strlen(msg_a.type_name), sizeof(msg_a.type_name) - 1);
	CHECK(strncmp(msg_a.type_name, "bandwidth_limit_with_a_very_lon", 31) == 0);
	/* a known name followed by more is not the known type */
	EXPECT_PARSE("{\"type\":\"hello-ack-and-a-lot-more-than-32-bytes\"}", -ENOMSG, NULL);
	EXPECT_PARSE("{\"type\":\"\"}", -ENOMSG, NULL);
	/* hostile bytes in the type name are not echoed raw into the error words */
	EXPECT_PARSE("{\"type\":\"a\\u001b[31m\"}", -ENOMSG, NULL);
	{
		struct qs_err e = {0};
		const char *l = "{\"type\":\"a\\u001b[31m\"}";
		net_ctl_parse(l, strlen(l), &msg_a, &e);
		CHECK(strchr(e.msg, 0x1b) == NULL);
		CHECK(strcmp(msg_a.type_name, "a\x1b[31m") == 0);
	}

	CHECK(strcmp(net_ctl_type_name(NET_CTL_HELLO_ACK), "hello-ack") == 0);
	CHECK(strcmp(net_ctl_type_name(NET_CTL_QUIC_INIT), "quic_init") == 0);
	CHECK(strcmp(net_ctl_type_name(NET_CTL_BYE), "bye") == 0);
	CHECK(strcmp(net_ctl_type_name(NET_CTL_UNKNOWN), "unknown") == 0);
	CHECK(strcmp(net_ctl_type_name((enum net_ctl_type)999), "unknown") == 0);
}

static void test_missing_fields(void)
{
	/* the minimal valid message of each type, then each one with a required field taken away */
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":[]}", 0, NULL);
	EXPECT_PARSE("{\"type\":\"hello\",\"capabilities\":[]}", -EPROTO,
	             "hello: required field \"version\"");
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":\"1.0\"}", -EPROTO,
	             "hello: required field \"capabilities\"");

	EXPECT_PARSE("{\"type\":\"hello-ack\",\"version\":\"1.0\",\"capabilities\":[\"quic-v1\"]}", 0, NULL);
	CHECK_EQ(msg_a.type, NET_CTL_HELLO_ACK);
	CHECK_EQ(msg_a.u.hello.caps, NET_CAP_QUIC_V1);
	CHECK_EQ(msg_a.u.hello.quic_available, false);
	EXPECT_PARSE("{\"type\":\"hello-ack\",\"capabilities\":[]}", -EPROTO,
	             "hello-ack: required field \"version\"");
	EXPECT_PARSE("{\"type\":\"hello-ack\",\"version\":\"1.0\"}", -EPROTO,
	             "hello-ack: required field \"capabilities\"");

	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00ff\",\"psk\":\"" PSK32
	             "\",\"max_streams\":8}",
	             0, NULL);
	CHECK_EQ(msg_a.u.quic_init.psk[31], 31);
	CHECK_EQ(msg_a.u.quic_init.max_streams, 8);
	EXPECT_PARSE("{\"type\":\"quic_init\",\"psk\":\"" PSK32 "\",\"max_streams\":8}", -EPROTO,
	             "quic_init: required field \"connection_id\"");
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00ff\",\"max_streams\":8}", -EPROTO,
	             "quic_init: required field \"psk\"");
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00ff\",\"psk\":\"" PSK32 "\"}", -EPROTO,
	             "quic_init: required field \"max_streams\"");

	EXPECT_PARSE("{\"type\":\"quic_ready\",\"connection_id\":\"00ff\",\"udp_endpoint\":{\"ip\":\"::1\","
	             "\"port\":1},"
	             "\"max_streams\":8}",
	             0, NULL);
	CHECK_EQ(msg_a.u.quic_ready.port, 1);
	CHECK(strcmp(msg_a.u.quic_ready.ip, "::1") == 0);
	EXPECT_PARSE(
	    "{\"type\":\"quic_ready\",\"udp_endpoint\":{\"ip\":\"::1\",\"port\":1},\"max_streams\":8}",
	    -EPROTO, "quic_ready: required field \"connection_id\"");
	EXPECT_PARSE("{\"type\":\"quic_ready\",\"connection_id\":\"00ff\",\"max_streams\":8}", -EPROTO,
	             "quic_ready: required field \"udp_endpoint\"");
	EXPECT_PARSE("{\"type\":\"quic_ready\",\"connection_id\":\"00ff\",\"udp_endpoint\":{\"ip\":\"::1\","
	             "\"port\":1}}",
	             -EPROTO, "quic_ready: required field \"max_streams\"");
	EXPECT_PARSE("{\"type\":\"quic_ready\",\"connection_id\":\"00ff\",\"udp_endpoint\":{\"port\":1},"
	             "\"max_streams\":8}",
	             -EPROTO, "quic_ready: required field \"udp_endpoint.ip\"");
	EXPECT_PARSE("{\"type\":\"quic_ready\",\"connection_id\":\"00ff\",\"udp_endpoint\":{\"ip\":\"::1\"},"
	             "\"max_streams\":8}",
	             -EPROTO, "quic_ready: required field \"udp_endpoint.port\"");

	EXPECT_PARSE("{\"type\":\"sync_start\",\"destination\":\"/tmp/x\"}", 0, NULL);
	CHECK_EQ(msg_a.u.sync_start.recursive, false);
	EXPECT_PARSE("{\"type\":\"sync_start\",\"source\":\"/a\",\"options\":{\"recursive\":true}}", -EPROTO,
	             "sync_start: required field \"destination\"");

	EXPECT_PARSE("{\"type\":\"progress\"}", 0, NULL);

	EXPECT_PARSE("{\"type\":\"error\",\"error_code\":\"E\",\"message\":\"m\"}", 0, NULL);
	CHECK_EQ(msg_a.u.error.quic_stream_id, -1);
	CHECK_EQ(msg_a.u.error.file[0], '\0');
	EXPECT_PARSE("{\"type\":\"error\",\"message\":\"m\"}", -EPROTO,
	             "error: required field \"error_code\"");
	EXPECT_PARSE("{\"type\":\"error\",\"error_code\":\"E\"}", -EPROTO,
	             "error: required field \"message\"");

	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"f\"}", 0, NULL);
	EXPECT_PARSE("{\"type\":\"retry\",\"quic_stream_id\":4}", -EPROTO, "retry: required field \"file\"");

	EXPECT_PARSE("{\"type\":\"sync_complete\",\"files_transferred\":1,\"bytes_transferred\":2}", 0, NULL);
	EXPECT_PARSE("{\"type\":\"sync_complete\",\"bytes_transferred\":2}", -EPROTO,
	             "sync_complete: required field \"files_transferred\"");
	EXPECT_PARSE("{\"type\":\"sync_complete\",\"files_transferred\":1}", -EPROTO,
	             "sync_complete: required field \"bytes_transferred\"");

	EXPECT_PARSE("{\"type\":\"ack_complete\",\"files_ok\":1,\"files_failed\":0}", 0, NULL);
	EXPECT_PARSE("{\"type\":\"ack_complete\",\"files_ok\":1,\"files_failed\":2,\"files_failed_late\":2}",
	             0, NULL);
	EXPECT_PARSE("{\"type\":\"ack_complete\",\"files_ok\":1,\"files_failed\":1,\"files_failed_late\":2}",
	             -EPROTO, "ack_complete: field \"files_failed_late\": more than files_failed");
	EXPECT_PARSE("{\"type\":\"ack_complete\",\"files_ok\":1,\"files_failed\":1,\"files_failed_late\":-1}",
	             -EPROTO, "files_failed_late");
	EXPECT_PARSE("{\"type\":\"ack_complete\",\"files_failed\":0}", -EPROTO,
	             "ack_complete: required field \"files_ok\"");
	EXPECT_PARSE("{\"type\":\"ack_complete\",\"files_ok\":1}", -EPROTO,
	             "ack_complete: required field \"files_failed\"");

	EXPECT_PARSE("{\"type\":\"bye\"}", 0, NULL);
	CHECK_EQ(msg_a.type, NET_CTL_BYE);
	CHECK(strcmp(msg_a.type_name, "bye") == 0);

	/* null is "absent": fine for optional fields, not for required ones */
	EXPECT_PARSE("{\"type\":\"error\",\"error_code\":\"E\",\"message\":\"m\",\"file\":null,\"quic_stream_"
	             "id\":null}",
	             0, NULL);
	CHECK_EQ(msg_a.u.error.quic_stream_id, -1);
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":null}", -EPROTO,
	             "retry: field \"file\": expected a string");
	/* unknown fields of any shape are ignored, even duplicated */
	EXPECT_PARSE("{\"type\":\"bye\",\"x\":{\"y\":[1,2,{\"z\":null}]},\"x\":-1.5e7,\"w\":\"\\u00e9\"}", 0,
	             NULL);
	/* a known field twice is refused */
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"a\",\"file\":\"b\"}", -EPROTO,
	             "retry: field \"file\" appears twice");
}

static void test_mistyped_fields(void)
{
	/* string where a number belongs, number where a string belongs */
	EXPECT_PARSE("{\"type\":\"progress\",\"completed_files\":\"5\"}", -EPROTO,
	             "progress: field \"completed_files\": expected a non-negative integer");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":5}", -EPROTO, "retry: field \"file\": expected a string");
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":1.0,\"capabilities\":[]}", -EPROTO,
	             "hello: field \"version\": expected a string");
	EXPECT_PARSE("{\"type\":\"progress\",\"completed_files\":true}", -EPROTO, NULL);
	EXPECT_PARSE("{\"type\":\"progress\",\"completed_files\":[1]}", -EPROTO, NULL);
	EXPECT_PARSE("{\"type\":\"progress\",\"completed_files\":{}}", -EPROTO, NULL);

	/* negative, fractional, exponent, overflowing */
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00\",\"psk\":\"" PSK32
	             "\",\"max_streams\":-1}",
	             -EPROTO, "quic_init: field \"max_streams\": expected a non-negative integer");
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00\",\"psk\":\"" PSK32
	             "\",\"max_streams\":1.5}",
	             -EPROTO, "quic_init: field \"max_streams\": expected a non-negative integer");
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00\",\"psk\":\"" PSK32
	             "\",\"max_streams\":1.0}",
	             -EPROTO, "max_streams");
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00\",\"psk\":\"" PSK32
	             "\",\"max_streams\":1e3}",
	             -EPROTO, "max_streams");
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00\",\"psk\":\"" PSK32
	             "\",\"max_streams\":-0}",
	             -EPROTO, "max_streams");
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00\",\"psk\":\"" PSK32
	             "\",\"max_streams\":4294967295}",
	             0, NULL);
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"00\",\"psk\":\"" PSK32
	             "\",\"max_streams\":4294967296}",
	             -EPROTO, "quic_init: field \"max_streams\"");
	EXPECT_PARSE("{\"type\":\"progress\",\"bytes_transferred\":18446744073709551615}", 0, NULL);
	CHECK(msg_a.u.progress.bytes_transferred == UINT64_MAX);
	EXPECT_PARSE("{\"type\":\"progress\",\"bytes_transferred\":18446744073709551616}", -EPROTO,
	             "progress: field \"bytes_transferred\"");
	EXPECT_PARSE("{\"type\":\"progress\",\"bytes_transferred\":99999999999999999999999999999}", -EPROTO,
	             "bytes_transferred");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"f\",\"quic_stream_id\":-1}", -EPROTO, "quic_stream_id");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"f\",\"quic_stream_id\":9223372036854775808}", -EPROTO,
	             "quic_stream_id");
	EXPECT_PARSE("{\"type\":\"retry\",\"file\":\"f\",\"quic_stream_id\":9223372036854775807}", 0, NULL);

	/* ports */
#define READY(port)                                                                                          \
	"{\"type\":\"quic_ready\",\"connection_id\":\"ab\",\"udp_endpoint\":{\"ip\":\"1.2.3.4\","            \
	"\"port\":" port "},\"max_streams\":1}"
	EXPECT_PARSE(READY("0"), -EPROTO, "quic_ready: field \"udp_endpoint.port\"");
	EXPECT_PARSE(READY("65536"), -EPROTO, "quic_ready: field \"udp_endpoint.port\"");
	EXPECT_PARSE(READY("-443"), -EPROTO, "udp_endpoint.port");
	EXPECT_PARSE(READY("\"443\""), -EPROTO, "udp_endpoint.port");
	EXPECT_PARSE(READY("65535"), 0, NULL);
	CHECK_EQ(msg_a.u.quic_ready.port, 65535);
	EXPECT_PARSE(READY("1"), 0, NULL);
#undef READY
	EXPECT_PARSE("{\"type\":\"quic_ready\",\"connection_id\":\"ab\",\"udp_endpoint\":\"1.2.3.4:5\",\"max_"
	             "streams\":1}",
	             -EPROTO, "quic_ready: field \"udp_endpoint\": expected an object");
	EXPECT_PARSE(
	    "{\"type\":\"quic_ready\",\"connection_id\":\"ab\",\"udp_endpoint\":{\"ip\":4,\"port\":5},"
	    "\"max_streams\":1}",
	    -EPROTO, "udp_endpoint.ip");
	EXPECT_PARSE("{\"type\":\"hello-ack\",\"version\":\"1.0\",\"capabilities\":[],\"quic_port\":65536}",
	             -EPROTO, "hello-ack: field \"quic_port\"");
	EXPECT_PARSE("{\"type\":\"hello-ack\",\"version\":\"1.0\",\"capabilities\":[],\"quic_available\":1}",
	             -EPROTO, "hello-ack: field \"quic_available\": expected true or false");
	EXPECT_PARSE(
	    "{\"type\":\"hello-ack\",\"version\":\"1.0\",\"capabilities\":[],\"quic_available\":\"true\"}",
	    -EPROTO, "quic_available");

	/* options */
	EXPECT_PARSE("{\"type\":\"sync_start\",\"destination\":\"d\",\"options\":{\"recursive\":1}}", -EPROTO,
	             "sync_start: field \"options.recursive\": expected true or false");
	EXPECT_PARSE("{\"type\":\"sync_start\",\"destination\":\"d\",\"options\":[true]}", -EPROTO,
	             "sync_start: field \"options\": expected an object");
	EXPECT_PARSE(
	    "{\"type\":\"sync_start\",\"destination\":\"d\",\"options\":{\"recursive\":true,\"fancy\":7}}", 0,
	    NULL);
	CHECK_EQ(msg_a.u.sync_start.recursive, true);
	CHECK_EQ(msg_a.u.sync_start.preserve_owner, false);
	CHECK_EQ(msg_a.u.sync_start.preserve_group, false);
	CHECK_EQ(msg_a.u.sync_start.data_path, NET_CTL_PATH_QUIC); /* absent: QUIC, as before */

	/* quic_ready ports */
#define QR                                                                                                   \
	"{\"type\":\"quic_ready\",\"connection_id\":\"ab\",\"udp_endpoint\":{\"ip\":\"::1\",\"port\":5},"    \
	"\"max_streams\":1,"
	EXPECT_PARSE(QR "\"ports\":[5,6]}", 0, NULL);
	CHECK_EQ(msg_a.u.quic_ready.n_ports, 2);
	CHECK_EQ(msg_a.u.quic_ready.ports[1], 6);
	EXPECT_PARSE(QR "\"ports\":[]}", -EPROTO, "quic_ready: field \"ports\": expected a non-empty array");
	EXPECT_PARSE(QR "\"ports\":5}", -EPROTO, "quic_ready: field \"ports\"");
	EXPECT_PARSE(QR "\"ports\":[5,0]}", -EPROTO, "expected an array of UDP ports (1..65535)");
	EXPECT_PARSE(QR "\"ports\":[65536]}", -EPROTO, "expected an array of UDP ports");
	EXPECT_PARSE(QR "\"ports\":[\"5\"]}", -EPROTO, "expected an array of UDP ports");
	EXPECT_PARSE(QR "\"ports\":[-1]}", -EPROTO, "expected an array of UDP ports");
	{
		char line[1024];
		int n = snprintf(line, sizeof(line), QR "\"ports\":[");
		for (int i = 0; i <= NET_CTL_MAX_CONNS; i++) /* one over the limit */
			n += snprintf(line + n, sizeof(line) - (size_t)n, "%s%d", i ? "," : "", 1000 + i);
		snprintf(line + n, sizeof(line) - (size_t)n, "]}");
		EXPECT_PARSE(line, -EPROTO, "quic_ready: field \"ports\": more than 64 entries");
	}
#undef QR
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"ab\",\"psk\":"
	             "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\","
	             "\"max_streams\":1,\"connections\":\"2\"}",
	             -EPROTO, "quic_init: field \"connections\": expected a non-negative integer");

	/* data paths */
	EXPECT_PARSE("{\"type\":\"sync_start\",\"destination\":\"d\",\"data_path\":\"ssh\"}", 0, NULL);
	CHECK_EQ(msg_a.u.sync_start.data_path, NET_CTL_PATH_SSH);
	EXPECT_PARSE("{\"type\":\"sync_start\",\"destination\":\"d\",\"data_path\":\"tcp\"}", -EPROTO,
	             "sync_start: field \"data_path\": expected \"quic\" or \"ssh\"");
	EXPECT_PARSE("{\"type\":\"sync_start\",\"destination\":\"d\",\"data_path\":1}", -EPROTO,
	             "sync_start: field \"data_path\": expected a string");
	EXPECT_PARSE("{\"type\":\"data_path\",\"path\":\"sshh\"}", -EPROTO,
	             "data_path: field \"path\": expected \"quic\" or \"ssh\"");
	EXPECT_PARSE("{\"type\":\"data_path\",\"path\":\"a-much-too-long-path-name\"}", -EPROTO,
	             "data_path: field \"path\"");
	EXPECT_PARSE("{\"type\":\"data_path\"}", -EPROTO, "data_path: required field \"path\"");
	EXPECT_PARSE("{\"type\":\"data_path_ack\",\"path\":\"ssh\",\"reason\":5}", -EPROTO,
	             "data_path_ack: field \"reason\": expected a string");
	EXPECT_PARSE("{\"type\":\"hello-ack\",\"version\":\"1.0\",\"capabilities\":[],\"max_streams\":-1}",
	             -EPROTO, "hello-ack: field \"max_streams\"");

	/* capabilities */
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":\"quic-v1\"}", -EPROTO,
	             "hello: field \"capabilities\": expected an array of strings");
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":[\"quic-v1\",2]}", -EPROTO,
	             "capabilities");
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":[[\"quic-v1\"]]}", -EPROTO,
	             "capabilities");
	EXPECT_PARSE(
	    "{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":[\"zstd\",\"quic-v2\",\"quic-v1\"]}", 0,
	    NULL);
	CHECK_EQ(msg_a.u.hello.caps, NET_CAP_QUIC_V1);
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":[\"zstd\"]}", 0, NULL);
	CHECK_EQ(msg_a.u.hello.caps, 0);
	EXPECT_PARSE(
	    "{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":[\"quick-check\",\"quic-v1\"]}", 0,
	    NULL);
	CHECK_EQ(msg_a.u.hello.caps, NET_CAP_QUIC_V1 | NET_CAP_QUICK_CHECK);
	EXPECT_PARSE(
	    "{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":[\"ask-batch\",\"quick-check\"]}", 0,
	    NULL);
	CHECK_EQ(msg_a.u.hello.caps, NET_CAP_QUICK_CHECK | NET_CAP_ASK_BATCH);
	EXPECT_PARSE("{\"type\":\"sync_ready\",\"existing\":\"yes\"}", -EPROTO, "existing");
	EXPECT_PARSE("{\"type\":\"sync_ready\"}", 0, NULL);
	CHECK_EQ(msg_a.u.sync_ready.existing, false);
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":"
	             "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\","
	             "\"o\",\"quic-v1\"]}",
	             0, NULL);
	CHECK_EQ(msg_a.u.hello.caps, NET_CAP_QUIC_V1);
	EXPECT_PARSE("{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":"
	             "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\","
	             "\"o\",\"p\",\"quic-v1\"]}",
	             -EPROTO, "hello: field \"capabilities\": more than 16");

	/* duration */
	EXPECT_PARSE("{\"type\":\"sync_complete\",\"files_transferred\":1,\"bytes_transferred\":2,\"duration_"
	             "seconds\":"
	             "0.25}",
	             0, NULL);
	CHECK(msg_a.u.sync_complete.duration_seconds == 0.25);
	EXPECT_PARSE("{\"type\":\"sync_complete\",\"files_transferred\":1,\"bytes_transferred\":2,\"duration_"
	             "seconds\":"
	             "3}",
	             0, NULL);
	CHECK(msg_a.u.sync_complete.duration_seconds == 3.0);
	EXPECT_PARSE("{\"type\":\"sync_complete\",\"files_transferred\":1,\"bytes_transferred\":2,\"duration_"
	             "seconds\":"
	             "-1}",
	             -EPROTO, "sync_complete: field \"duration_seconds\"");
	EXPECT_PARSE("{\"type\":\"sync_complete\",\"files_transferred\":1,\"bytes_transferred\":2,\"duration_"
	             "seconds\":"
	             "1e999}",
	             -EPROTO, "duration_seconds");
	EXPECT_PARSE("{\"type\":\"sync_complete\",\"files_transferred\":1,\"bytes_transferred\":2,\"duration_"
	             "seconds\":"
	             "\"1\"}",
	             -EPROTO, "duration_seconds");

	/* psk */
#define INIT(psk)                                                                                            \
	"{\"type\":\"quic_init\",\"connection_id\":\"0123456789abcdef\",\"psk\":" psk ",\"max_streams\":1}"
	EXPECT_PARSE(INIT("\"" PSK32 "\""), 0, NULL);
	EXPECT_PARSE(INIT("\"" PSK31 "\""), -EPROTO, "quic_init: field \"psk\": expected base64 of 32 bytes");
	EXPECT_PARSE(INIT("\"" PSK33 "\""), -EPROTO, "quic_init: field \"psk\"");
	EXPECT_PARSE(INIT("\"" PSK33 PSK33 "\""), -EPROTO, "quic_init: field \"psk\"");
	EXPECT_PARSE(INIT("\"\""), -EPROTO, "quic_init: field \"psk\"");
	EXPECT_PARSE(INIT("\"not base64 at all, not even close!!!!!!!!!!!\""), -EPROTO,
	             "quic_init: field \"psk\"");
	EXPECT_PARSE(INIT("12345"), -EPROTO, "quic_init: field \"psk\": expected a string");
	EXPECT_PARSE(INIT("\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\""), -EPROTO, "psk"); /* unpadded */
	/* '/' escaped as \/ is still '/' */
	EXPECT_PARSE(INIT("\"\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/"
	                  "\\/\\/\\/\\/\\/\\/"
	                  "\\/\\/\\/\\/\\/\\/\\/\\/\\/\\/8=\""),
	             0, NULL);
	CHECK_EQ(msg_a.u.quic_init.psk[0], 0xff);
#undef INIT
	/* connection ids are hex and fit */
	EXPECT_PARSE("{\"type\":\"quic_init\",\"connection_id\":\"xyz\",\"psk\":\"" PSK32
	             "\",\"max_streams\":1}",
	             -EPROTO, "quic_init: field \"connection_id\": expected a hex string");
	EXPECT_PARSE(
	    "{\"type\":\"quic_init\",\"connection_id\":\"0123456789abcdef0123456789abcdef0\",\"psk\":\"" PSK32
	    "\",\"max_streams\":1}",
	    -EPROTO, "quic_init: field \"connection_id\": longer than 32 bytes");
}

/* A message whose string field is n bytes long. */
static char *line_with_field(const char *prefix, size_t n, const char *suffix, char fill)
{
	size_t a = strlen(prefix), b = strlen(suffix);
	char *s = malloc(a + n + b + 1);
	if (!s)
		abort();
	memcpy(s, prefix, a);
	memset(s + a, fill, n);
	memcpy(s + a + n, suffix, b + 1);
	return s;
}

static void test_limits(void)
{
	/* string lengths: exactly the field, and one over */
	char *l = line_with_field("{\"type\":\"sync_start\",\"destination\":\"", NET_CTL_MAX_STR, "\"}", 'p');
	EXPECT_PARSE(l, 0, NULL);
	CHECK_EQ(strlen(msg_a.u.sync_start.destination), NET_CTL_MAX_STR);
	free(l);
	l = line_with_field("{\"type\":\"sync_start\",\"destination\":\"", NET_CTL_MAX_STR + 1, "\"}", 'p');
	EXPECT_PARSE(l, -EPROTO, "sync_start: field \"destination\": longer than 4096 bytes");
	free(l);
	l = line_with_field("{\"type\":\"error\",\"error_code\":\"E\",\"message\":\"", 1024, "\"}", 'm');
	EXPECT_PARSE(l, -EPROTO, "error: field \"message\": longer than 1023 bytes");
	free(l);
	l = line_with_field("{\"type\":\"hello\",\"capabilities\":[],\"version\":\"", 16, "\"}", '1');
	EXPECT_PARSE(l, -EPROTO, "hello: field \"version\"");
	free(l);
	/* an escape that expands past the end counts in decoded bytes: 2048 é are 4096 bytes, fit */
	{
		size_t n = NET_CTL_MAX_STR / 2;
		char *s = malloc(40 + 6 * n + 4);
		size_t o = (size_t)sprintf(s, "{\"type\":\"retry\",\"file\":\"");
		for (size_t i = 0; i < n; i++)
			o += (size_t)sprintf(s + o, "\\u00e9");
		strcpy(s + o, "\"}");
		EXPECT_PARSE(s, 0, NULL);
		CHECK_EQ(strlen(msg_a.u.retry.file), NET_CTL_MAX_STR);
		/* one more byte does not fit */
		strcpy(s + o, "x\"}");
		EXPECT_PARSE(s, -EPROTO, "longer than");
		free(s);
	}

	/* the line limit: exactly NET_CTL_MAX_LINE is parsed, one more byte is not */
	const char *pre = "{\"type\":\"bye\",\"pad\":\"";
	size_t fill = NET_CTL_MAX_LINE - strlen(pre) - 2;
	l = line_with_field(pre, fill, "\"}", 'z');
	CHECK_EQ(strlen(l), NET_CTL_MAX_LINE);
	EXPECT_PARSE(l, 0, NULL);
	free(l);
	l = line_with_field(pre, fill + 1, "\"}", 'z');
	CHECK_EQ(strlen(l), NET_CTL_MAX_LINE + 1);
	EXPECT_PARSE(l, -EMSGSIZE, NULL);
	free(l);

	/* tokens: a type and 509 numbers are 512 tokens; one more is too many */
	{
		static char s[8192];
		for (int extra = 0; extra <= 1; extra++) {
			size_t o = (size_t)sprintf(s, "{\"type\":\"bye\",\"a\":[");
			int nums = NET_CTL_MAX_TOKENS - 5 + extra; /* object, "type", "bye", "a", array */
			for (int i = 0; i < nums; i++)
				o += (size_t)sprintf(s + o, i ? ",%d" : "%d", i);
			strcpy(s + o, "]}");
			EXPECT_PARSE(s, extra ? -EBADMSG : 0, extra ? "tokens" : NULL);
		}
	}
}

static void test_emit(void)
{
	char small[16];
	struct net_ctl_msg *m = fresh(NET_CTL_BYE);
	CHECK_EQ(net_ctl_emit(m, small, sizeof(small)), 15); /* {"type":"bye"}\n + NUL */
	CHECK(strcmp(small, "{\"type\":\"bye\"}\n") == 0);
	CHECK_EQ(net_ctl_emit(m, small, 15), -ENOSPC);
	CHECK_EQ(net_ctl_emit(m, small, 0), -ENOSPC);
	m = fresh(NET_CTL_UNKNOWN);
	CHECK_EQ(net_ctl_emit(m, small, sizeof(small)), -EINVAL);
	m = fresh(NET_CTL_QUIC_INIT);
	memset(m->u.quic_init.psk, 0xab, sizeof(m->u.quic_init.psk));
	char mid[64];
	CHECK_EQ(net_ctl_emit(m, mid, sizeof(mid)), -ENOSPC);
	for (size_t i = 0; i < 16; i++) /* no partial line (and secret) left behind */
		CHECK_EQ(mid[i], 0);
	/* unterminated fixed fields are bounded by their size */
	m = fresh(NET_CTL_HELLO);
	memset(m->u.hello.version, '9', sizeof(m->u.hello.version));
	static char buf[256];
	CHECK(net_ctl_emit(m, buf, sizeof(buf)) > 0);
	CHECK(strstr(buf, "\"9999999999999999\"") != NULL);
}

/* ---- the channel -------------------------------------------------------------------------------- */

static int64_t ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w <= 0) {
			perror("write");
			abort();
		}
		s += w;
		n -= (size_t)w;
	}
}

static void wr(int fd, const char *s)
{
	write_all(fd, s, strlen(s));
}

struct pair {
	struct net_ctl_chan *c;
	int peer;
	int mine;
};

static void open_pair(struct pair *p)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		perror("socketpair");
		abort();
	}
	int big = 1 << 20;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	p->mine = sv[0];
	p->peer = sv[1];
	CHECK_EQ(net_ctl_chan_fds(sv[0], sv[0], &p->c), 0);
}

static void close_pair(struct pair *p)
{
	int st = 0;
	CHECK_EQ(net_ctl_chan_finish(p->c, &st), 0);
	CHECK_EQ(st, -1);
	CHECK(fcntl(p->mine, F_GETFD) >= 0); /* finish leaves the fds open */
	close(p->mine);
	if (p->peer >= 0)
		close(p->peer);
}

static void test_chan_basic(void)
{
	struct pair p;
	struct qs_err e = {0};
	open_pair(&p);
	int fl = fcntl(p.mine, F_GETFL);
	CHECK(fl & O_NONBLOCK);
	CHECK_EQ(net_ctl_poll_fd(p.c), p.mine);
	CHECK_EQ(net_ctl_pending(p.c), 0);
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), 0);

	/* two messages in one write, the second with \r\n */
	wr(p.peer,
	   "{\"type\":\"hello\",\"version\":\"1.0\",\"capabilities\":[\"quic-v1\"]}\n{\"type\":\"bye\"}\r\n");
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), 1);
	CHECK_EQ(msg_a.type, NET_CTL_HELLO);
	CHECK_EQ(msg_a.u.hello.caps, NET_CAP_QUIC_V1);
	CHECK_EQ(net_ctl_pending(p.c), 1); /* the bye is buffered */
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), 1);
	CHECK_EQ(msg_a.type, NET_CTL_BYE);
	CHECK_EQ(net_ctl_pending(p.c), 0);
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), 0);

	/* one message split over many writes, byte by byte */
	const char *line =
	    "{\"type\":\"retry\",\"file\":\"split/one byte at a time\",\"quic_stream_id\":8}\n";
	for (size_t i = 0; line[i]; i++) {
		write_all(p.peer, line + i, 1);
		int rc = net_ctl_recv(p.c, &msg_a, &e);
		if (line[i + 1])
			CHECK_EQ(rc, 0);
		else
			CHECK_EQ(rc, 1);
	}
	CHECK_EQ(msg_a.type, NET_CTL_RETRY);
	CHECK(strcmp(msg_a.u.retry.file, "split/one byte at a time") == 0);
	CHECK_EQ(msg_a.u.retry.quic_stream_id, 8);

	/* an unknown type then a good one: both delivered, in order, and the channel goes on */
	wr(p.peer, "{\"type\":\"zap\",\"v\":1}\n{\"type\":\"progress\",\"completed_files\":3}\n");
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), -ENOMSG);
	CHECK_EQ(msg_a.type, NET_CTL_UNKNOWN);
	CHECK(strcmp(msg_a.type_name, "zap") == 0);
	CHECK(strstr(e.msg, "zap") != NULL);
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), 1);
	CHECK_EQ(msg_a.type, NET_CTL_PROGRESS);
	CHECK_EQ(msg_a.u.progress.completed_files, 3);

	/* send: what arrives on the other end parses to what was sent */
	struct net_ctl_msg *m = fresh(NET_CTL_QUIC_INIT);
	snprintf(m->u.quic_init.connection_id, sizeof(m->u.quic_init.connection_id), "feedface");
	memset(m->u.quic_init.psk, 7, sizeof(m->u.quic_init.psk));
	m->u.quic_init.max_streams = 64;
	CHECK_EQ(net_ctl_send(p.c, m, &e), 0);
	char got[512];
	ssize_t n = read(p.peer, got, sizeof(got) - 1);
	CHECK(n > 0 && got[n - 1] == '\n');
	if (n > 0) {
		got[n] = '\0';
		CHECK_EQ(net_ctl_parse(got, (size_t)n - 1, &msg_b, &e), 0);
		CHECK_EQ(msg_b.u.quic_init.psk[5], 7);
		CHECK_EQ(msg_b.u.quic_init.max_streams, 64);
	}

	/* recv_wait returns at once when a message is there, and times out when none comes */
	wr(p.peer, "{\"type\":\"bye\"}\n");
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 1000, &e), 1);
	int64_t t0 = ms_now();
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 200, &e), -ETIMEDOUT);
	int64_t dt = ms_now() - t0;
	CHECK(dt >= 190 && dt < 2000);
	CHECK(e.msg[0] != '\0');
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 0, &e), -ETIMEDOUT);

	close_pair(&p);
}

static void test_chan_restores_flags(void)
{
	int fds[2];
	CHECK_EQ(pipe(fds), 0);
	struct net_ctl_chan *c;
	CHECK_EQ(net_ctl_chan_fds(fds[0], fds[1], &c), 0);
	CHECK(fcntl(fds[0], F_GETFL) & O_NONBLOCK);
	CHECK_EQ(net_ctl_chan_finish(c, NULL), 0);
	CHECK((fcntl(fds[0], F_GETFL) & O_NONBLOCK) == 0);
	CHECK_EQ(net_ctl_chan_finish(NULL, NULL), 0);
	close(fds[0]);
	close(fds[1]);
}

static void test_chan_pipe(void)
{
	/* helper mode: a pipe in each direction; send through one and receive through the other */
	int a[2], b[2];
	struct qs_err e = {0};
	CHECK_EQ(pipe(a), 0);
	CHECK_EQ(pipe(b), 0);
	struct net_ctl_chan *left, *right;
	CHECK_EQ(net_ctl_chan_fds(b[0], a[1], &left), 0);
	CHECK_EQ(net_ctl_chan_fds(a[0], b[1], &right), 0);
	struct net_ctl_msg *m = fresh(NET_CTL_SYNC_START);
	snprintf(m->u.sync_start.destination, sizeof(m->u.sync_start.destination),
	         "-dest with spaces/\xc3\xa9");
	m->u.sync_start.recursive = true;
	CHECK_EQ(net_ctl_send(left, m, &e), 0);
	CHECK_EQ(net_ctl_send(left, fresh(NET_CTL_BYE), &e), 0);
	CHECK_EQ(net_ctl_recv_wait(right, &msg_a, 1000, &e), 1);
	CHECK_EQ(msg_a.type, NET_CTL_SYNC_START);
	CHECK(strcmp(msg_a.u.sync_start.destination, "-dest with spaces/\xc3\xa9") == 0);
	CHECK_EQ(msg_a.u.sync_start.recursive, true);
	CHECK_EQ(net_ctl_recv_wait(right, &msg_a, 1000, &e), 1);
	CHECK_EQ(msg_a.type, NET_CTL_BYE);

	/* the reader goes away: sending fails with -EPIPE and no SIGPIPE kills us */
	close(a[0]);
	CHECK_EQ(net_ctl_send(left, fresh(NET_CTL_BYE), &e), -EPIPE);
	CHECK(e.msg[0] != '\0');

	/* the writer goes away: the reader sees a clean close */
	close(b[1]);
	CHECK_EQ(net_ctl_recv_wait(left, &msg_a, 1000, &e), -EPIPE);
	CHECK(strstr(e.msg, "peer closed the control channel") != NULL);
	CHECK_EQ(net_ctl_chan_finish(left, NULL), 0);
	CHECK_EQ(net_ctl_chan_finish(right, NULL), 0);
	close(a[1]);
	close(b[0]);
}

static void test_chan_close(void)
{
	struct pair p;
	struct qs_err e = {0};

	/* mid-line close */
	open_pair(&p);
	wr(p.peer, "{\"type\":\"bye\"}\n{\"type\":");
	close(p.peer);
	p.peer = -1;
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), 1); /* what came whole is still delivered */
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), -EPIPE);
	CHECK(strstr(e.msg, "middle of a message") != NULL);
	CHECK_EQ(net_ctl_pending(p.c), 1);
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), -EPIPE); /* and it stays that way */
	close_pair(&p);

	/* clean close */
	open_pair(&p);
	wr(p.peer, "{\"type\":\"bye\"}\n");
	close(p.peer);
	p.peer = -1;
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 1000, &e), 1);
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 1000, &e), -EPIPE);
	CHECK(strstr(e.msg, "peer closed the control channel") != NULL);
	close_pair(&p);

	/* a malformed line is fatal and sticky */
	open_pair(&p);
	wr(p.peer, "[1,2]\n{\"type\":\"bye\"}\n");
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), -EBADMSG);
	CHECK(strstr(e.msg, "not an object") != NULL);
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), -EBADMSG);
	close_pair(&p);

	open_pair(&p);
	wr(p.peer, "\n");
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), -EBADMSG);
	close_pair(&p);

	open_pair(&p);
	wr(p.peer, "{\"type\":\"retry\"}\n");
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), -EPROTO);
	CHECK(strstr(e.msg, "retry: required field \"file\"") != NULL);
	close_pair(&p);
}

static void test_chan_limits(void)
{
	struct pair p;
	struct qs_err e = {0};
	const char *pre = "{\"type\":\"bye\",\"pad\":\"";
	size_t fill = NET_CTL_MAX_LINE - strlen(pre) - 2;

	/* exactly the limit, with \n and with \r\n */
	open_pair(&p);
	char *l = line_with_field(pre, fill, "\"}\n", 'z');
	wr(p.peer, l);
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 2000, &e), 1);
	free(l);
	l = line_with_field(pre, fill, "\"}\r\n", 'z');
	wr(p.peer, l);
	wr(p.peer, "{\"type\":\"bye\"}\n");
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 2000, &e), 1);
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 2000, &e), 1);
	free(l);
	close_pair(&p);

	/* one over, with its newline */
	open_pair(&p);
	l = line_with_field(pre, fill + 1, "\"}\n", 'z');
	wr(p.peer, l);
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 2000, &e), -EMSGSIZE);
	CHECK(strstr(e.msg, "limit") != NULL);
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), -EMSGSIZE);
	free(l);
	close_pair(&p);

	/* over the limit and no newline ever: found without waiting for one */
	open_pair(&p);
	l = line_with_field("", NET_CTL_MAX_LINE + 100, "", 'x');
	wr(p.peer, l);
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 2000, &e), -EMSGSIZE);
	free(l);
	close_pair(&p);

	/* exactly the limit plus a lone '\r' pending is not yet an error */
	open_pair(&p);
	l = line_with_field(pre, fill, "\"}\r", 'z');
	wr(p.peer, l);
	CHECK_EQ(net_ctl_recv(p.c, &msg_a, &e), 0);
	wr(p.peer, "\n");
	CHECK_EQ(net_ctl_recv_wait(p.c, &msg_a, 2000, &e), 1);
	free(l);
	close_pair(&p);

	/* a long line in many small pieces */
	open_pair(&p);
	l = line_with_field(pre, fill, "\"}\n", 'z');
	size_t n = strlen(l);
	int rc = 0;
	for (size_t o = 0; o < n; o += 1000) {
		write_all(p.peer, l + o, n - o < 1000 ? n - o : 1000);
		rc = net_ctl_recv(p.c, &msg_a, &e);
		if (rc != 0)
			break;
	}
	CHECK_EQ(rc, 1);
	free(l);
	close_pair(&p);
}

/* A transport with no fd: bytes appear after a number of reads; exercises the sleeping wait. */
struct slow {
	const char *data;
	int reads_before;
	int pendings;
	bool finished;
};

static ssize_t slow_read(void *impl, void *buf, size_t cap)
{
	struct slow *s = impl;
	if (s->reads_before-- > 0 || !*s->data)
		return 0;
	size_t n = strlen(s->data);
	if (n > cap)
		n = cap;
	memcpy(buf, s->data, n);
	s->data += n;
	return (ssize_t)n;
}

static ssize_t slow_write(void *impl, const void *buf, size_t len)
{
	return -EIO;
}

static int slow_poll_fd(void *impl)
{
	return -1;
}

static int slow_pending(void *impl)
{
	struct slow *s = impl;
	s->pendings++;
	return 0;
}

static int slow_finish(void *impl, int *exit_status)
{
	struct slow *s = impl;
	s->finished = true;
	if (exit_status)
		*exit_status = 7;
	return 0;
}

static void test_chan_no_fd(void)
{
	static const struct net_ctl_ops ops = {
	    .read = slow_read,
	    .write = slow_write,
	    .poll_fd = slow_poll_fd,
	    .pending = slow_pending,
	    .finish = slow_finish,
	};
	struct slow s = {.data = "{\"type\":\"bye\"}\n", .reads_before = 3};
	struct net_ctl_chan *c;
	struct qs_err e = {0};
	CHECK_EQ(net_ctl_chan_new(&ops, &s, &c), 0);
	CHECK_EQ(net_ctl_poll_fd(c), -1);
	CHECK_EQ(net_ctl_recv_wait(c, &msg_a, 2000, &e), 1);
	CHECK_EQ(msg_a.type, NET_CTL_BYE);
	int64_t t0 = ms_now();
	CHECK_EQ(net_ctl_recv_wait(c, &msg_a, 100, &e), -ETIMEDOUT);
	int64_t dt = ms_now() - t0;
	CHECK(dt >= 90 && dt < 2000);
	CHECK(s.pendings > 0);
	CHECK_EQ(net_ctl_send(c, fresh(NET_CTL_BYE), &e), -EIO);
	int st = 0;
	CHECK_EQ(net_ctl_chan_finish(c, &st), 0);
	CHECK_EQ(st, 7);
	CHECK(s.finished);
}

int main(void)
{
	test_round_trips();
	test_escaping();
	test_base64();
	test_syntax_errors();
	test_type_errors();
	test_missing_fields();
	test_mistyped_fields();
	test_limits();
	test_emit();
	test_chan_basic();
	test_chan_restores_flags();
	test_chan_pipe();
	test_chan_close();
	test_chan_limits();
	test_chan_no_fd();
	if (failures) {
		fprintf(stderr, "test_net_control: %d of %d checks failed\n", failures, checks);
		return 1;
	}
	printf("test_net_control: all %d checks passed\n", checks);
	return 0;
}
