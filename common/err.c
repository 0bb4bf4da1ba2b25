/* qs_err: the one way errors carry words upward. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int qs_err_set(struct qs_err *e, int code, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
		e->code = code;
	}
	return code;
}

void qs_err_clear(struct qs_err *e)
{
	if (e) {
		e->code = 0;
		e->msg[0] = '\0';
	}
}
