/* The sender's tree walk, a directory at a time: names sorted within each directory, symlinks reported
 * and never followed, everything relative to the directory's fd (fdopendir/fstatat), so a path string is
 * never re-resolved from the top while walking. The walk itself (which directory next, on which worker)
 * is the engine's: engine/sender.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"

#define IO_WALK_NAMES_INIT 64

#define QP(p) io_path_quote((p), strlen(p), (char[IO_QUOTE_MAX]){0}, IO_QUOTE_MAX)

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Reads every name in d except "." and "..", sorted. */
static int read_names(DIR *d, char ***out, size_t *count)
{
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			rc = -errno;
			break;
		}
		if (de->d_name[0] == '.' &&
		    (de->d_name[1] == '\0' || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : IO_WALK_NAMES_INIT;
			char **nn = realloc(names, ncap * sizeof(*nn));
			if (!nn) {
				rc = -ENOMEM;
				break;
			}
			names = nn;
			cap = ncap;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			rc = -ENOMEM;
			break;
		}
		n++;
	}
	if (rc < 0) {
		free_names(names, n);
		return rc;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_names);
	*out = names;
	*count = n;
	return 0;
}

/* Components in rel ("" has none). */
int io_dir_read(int dfd, int (*cb)(void *ctx, const char *name, const struct stat *st, int dfd), void *ctx,
                struct qs_err *err)
{
	char **names = NULL;
	size_t n = 0;
	int rc;
	DIR *d = fdopendir(dfd);
	if (!d) {
		rc = -errno;
		close(dfd);
		return qs_err_set(err, rc, "cannot read the directory: %s", strerror(-rc));
	}
	rc = read_names(d, &names, &n);
	if (rc < 0) {
		qs_err_set(err, rc, "cannot read the directory: %s", strerror(-rc));
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* vanished since readdir: nothing to send */
			rc = -errno;
			qs_err_set(err, rc, "cannot stat \"%s\": %s", QP(names[i]), strerror(-rc));
			goto out;
		}
		rc = cb(ctx, names[i], &st, dirfd(d));
		if (rc < 0) {
			qs_err_set(err, rc, "stopped at \"%s\": %s", QP(names[i]), strerror(-rc));
			goto out;
		}
	}
	rc = 0;
out:
	free_names(names, n);
	closedir(d);
	return rc;
}
