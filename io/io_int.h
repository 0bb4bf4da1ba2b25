/* Internals shared by io/ files only. */
#ifndef QS_IO_INT_H
#define QS_IO_INT_H

#include <stddef.h>

#define IO_QUOTE_MAX 120

/* Writes p[0..len) into out (size cap) safe to print: control bytes, DEL, invalid UTF-8, '"' and '\'
 * become \xNN, so a hostile name can neither drive a terminal nor fake the quoting. Long paths end in
 * "...". Returns out. */
const char *io_path_quote(const char *p, size_t len, char *out, size_t cap);

#endif
