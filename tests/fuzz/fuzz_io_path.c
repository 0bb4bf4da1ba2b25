/* libFuzzer target for the receiver's path checker: whatever the bytes, io_path_check must not crash,
 * must give words with every refusal, and whatever it accepts must be relative and free of "..". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qs_err e = {0};
	char *p = malloc(size + 1);
	if (!p)
		return 0;
	memcpy(p, data, size);
	p[size] = '\0';
	int rc = io_path_check(p, size, &e);
	if (rc < 0 && e.msg[0] == '\0')
		abort();
	if (rc == 0) {
		if (size == 0 || p[0] == '/' || memchr(p, '\0', size))
			abort();
		for (const char *c = p; c; c = strchr(c, '/')) {
			if (*c == '/')
				c++;
			if (strncmp(c, "..", 2) == 0 && (c[2] == '/' || c[2] == '\0'))
				abort();
		}
	}
	free(p);
	return 0;
}
