/* The error record every module fills for its caller: a negative errno plus words for a user.
 * common/ is the one leaf below all modules; it holds only what every layer needs to say "why". */
#ifndef QS_COMMON_ERR_H
#define QS_COMMON_ERR_H

#include <stddef.h>

#define QS_ERR_MSG_MAX 256

struct qs_err {
	int code;                 /* negative errno, 0 when nothing went wrong */
	char msg[QS_ERR_MSG_MAX]; /* for a human; never holds a secret */
};

/* Records code and a printf-style message in *e (e may be NULL). Returns code, so callers can write
 * `return qs_err_set(err, -EINVAL, "bad path %s", p);`. */
int qs_err_set(struct qs_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Clears *e. */
void qs_err_clear(struct qs_err *e);

#endif
