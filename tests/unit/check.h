/* The unit tests' one assertion: CHECK(cond) reports a false cond with its place and counts it in
 * `failures`, which main() turns into the exit status; `checks` counts every CHECK run. Included once,
 * by the test's own .c file. */
#ifndef QSYNC_TESTS_UNIT_CHECK_H
#define QSYNC_TESTS_UNIT_CHECK_H

#include <stdio.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                                          \
	do {                                                                                                 \
		checks++;                                                                                    \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);             \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

#endif
