/* libFuzzer target for the control-message parser (net_ctl_parse): any bytes must give 0 or a clean
 * negative errno, never a crash; a message that parses must re-emit, parse again, and emit the same
 * line the second time (the codec is a fixed point after one pass). */
#include "net/control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct net_ctl_msg first, second;
static char line1[NET_CTL_MAX_LINE + 2], line2[NET_CTL_MAX_LINE + 2];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qs_err err = {0};
	int rc = net_ctl_parse((const char *)data, size, &first, &err);
	if (rc < 0 && (err.code != rc || err.msg[0] == '\0'))
		abort(); /* every error carries words */
	if (rc != 0)
		return 0;
	ssize_t n1 = net_ctl_emit(&first, line1, sizeof(line1));
	if (n1 <= 0)
		abort();
	rc = net_ctl_parse(line1, (size_t)n1 - 1, &second, &err);
	if (rc != 0) {
		fprintf(stderr, "re-parse failed: %d %s\nline: %s", rc, err.msg, line1);
		abort();
	}
	ssize_t n2 = net_ctl_emit(&second, line2, sizeof(line2));
	if (n2 != n1 || memcmp(line1, line2, (size_t)n1) != 0) {
		fprintf(stderr, "emit is not stable:\n%s%s", line1, line2);
		abort();
	}
	return 0;
}
