/* The sender's tree walk: pre-order, names sorted within each directory, symlinks reported and never
 * followed. Directories are descended through their fds (openat/fdopendir/fstatat), so a path string is
 * never re-resolved from the top while walking. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"

#define IO_WALK_NAMES_INIT 64

#define QP(p) io_path_quote((p), strlen(p), (char[IO_QUOTE_MAX]){0}, IO_QUOTE_MAX)

struct walker {
	int (*cb)(void *ctx, const struct io_walk_ent *e);
	void *ctx;
	struct qs_err *err;
	bool recursive;
	char rel[IO_PATH_MAX + 1];
	char *abs; /* path, then "/" + the part of rel below prefix */
	size_t abs_cap;
};

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
static size_t depth_of(const char *rel)
{
	size_t d = rel[0] ? 1 : 0;
	for (const char *p = rel; *p; p++)
		d += *p == '/';
	return d;
}

/* Walks the directory open as dfd (taken over), whose rel/abs are w->rel[0..rel_len), w->abs[0..abs_len),
 * at depth components. */
static int walk_dir(struct walker *w, int dfd, size_t rel_len, size_t abs_len, size_t depth)
{
	char **names = NULL;
	size_t n = 0;
	int rc;
	DIR *d = fdopendir(dfd);

	if (!d) {
		rc = -errno;
		close(dfd);
		return qs_err_set(w->err, rc, "cannot read directory \"%s\": %s", QP(w->abs), strerror(-rc));
	}
	rc = read_names(d, &names, &n);
	if (rc < 0) {
		qs_err_set(w->err, rc, "cannot read directory \"%s\": %s", QP(w->abs), strerror(-rc));
		goto out;
	}
	if (n > 0 && depth + 1 > IO_PATH_MAX_DEPTH) {
		rc = qs_err_set(w->err, -ENAMETOOLONG, "\"%s\": more than %d levels deep", QP(w->abs),
		                IO_PATH_MAX_DEPTH);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen(names[i]);
		size_t rl = rel_len + (rel_len ? 1 : 0) + nl;
		bool aslash = abs_len == 0 || w->abs[abs_len - 1] != '/';
		size_t al = abs_len + (aslash ? 1 : 0) + nl;
		if (rl > IO_PATH_MAX || al + 1 > w->abs_cap) {
			w->rel[rel_len] = '\0';
			rc = qs_err_set(w->err, -ENAMETOOLONG, "\"%s\" + \"%s\": path longer than %d bytes",
			                QP(w->abs), QP(names[i]), IO_PATH_MAX);
			goto out;
		}
		char *r = w->rel + rel_len, *a = w->abs + abs_len;
		if (rel_len)
			*r++ = '/';
		memcpy(r, names[i], nl + 1);
		if (aslash)
			*a++ = '/';
		memcpy(a, names[i], nl + 1);

		struct io_walk_ent e = {.rel = w->rel, .abs = w->abs};
		if (fstatat(dirfd(d), names[i], &e.st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = -errno;
			if (rc == -ENOENT) /* vanished since readdir: nothing to send */
				goto next;
			qs_err_set(w->err, rc, "cannot stat \"%s\": %s", QP(w->abs), strerror(-rc));
			goto out;
		}
		rc = w->cb(w->ctx, &e);
		if (rc < 0) {
			qs_err_set(w->err, rc, "walk stopped at \"%s\": %s", QP(w->abs), strerror(-rc));
			goto out;
		}
		if (S_ISDIR(e.st.st_mode)) {
			int cfd = openat(dirfd(d), names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0) {
				rc = -errno;
				if (rc == -ENOENT)
					goto next;
				qs_err_set(w->err, rc, "cannot open directory \"%s\": %s", QP(w->abs),
				           strerror(-rc));
				goto out;
			}
			rc = walk_dir(w, cfd, rl, al, depth + 1);
			if (rc < 0)
				goto out;
		}
	next:
		w->rel[rel_len] = '\0';
		w->abs[abs_len] = '\0';
	}
	rc = 0;
out:
	w->rel[rel_len] = '\0';
	w->abs[abs_len] = '\0';
	free_names(names, n);
	closedir(d);
	return rc;
}

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

int io_walk(const char *path, const char *prefix, bool recursive,
            int (*cb)(void *ctx, const struct io_walk_ent *e), void *ctx, struct qs_err *err)
{
	struct walker w = {.cb = cb, .ctx = ctx, .err = err, .recursive = recursive};
	size_t plen, xlen;
	int rc, fd;

	if (!path || !cb)
		return qs_err_set(err, -EINVAL, "nothing to walk");
	if (!prefix)
		prefix = "";
	plen = strlen(path);
	xlen = strlen(prefix);
	if (xlen > IO_PATH_MAX)
		return qs_err_set(err, -ENAMETOOLONG, "\"%s\": path longer than %d bytes", QP(prefix),
		                  IO_PATH_MAX);
	if (depth_of(prefix) > IO_PATH_MAX_DEPTH)
		return qs_err_set(err, -ENAMETOOLONG, "\"%s\": more than %d levels deep", QP(prefix),
		                  IO_PATH_MAX_DEPTH);
	/* abs = path + "/" + (rel without prefix); rel is bounded, so this is too. */
	w.abs_cap = plen + 1 + IO_PATH_MAX + 1;
	w.abs = malloc(w.abs_cap);
	if (!w.abs)
		return qs_err_set(err, -ENOMEM, "out of memory");
	memcpy(w.abs, path, plen + 1);
	memcpy(w.rel, prefix, xlen + 1);

	struct io_walk_ent top = {.rel = w.rel, .abs = w.abs};
	if (lstat(path, &top.st) < 0) {
		rc = -errno;
		qs_err_set(err, rc, "cannot stat \"%s\": %s", QP(path), strerror(-rc));
		goto out;
	}
	rc = cb(ctx, &top);
	if (rc < 0) {
		qs_err_set(err, rc, "walk stopped at \"%s\": %s", QP(path), strerror(-rc));
		goto out;
	}
	if (!recursive || !S_ISDIR(top.st.st_mode))
		goto out;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		qs_err_set(err, rc, "cannot open directory \"%s\": %s", QP(path), strerror(-rc));
		goto out;
	}
	rc = walk_dir(&w, fd, xlen, plen, depth_of(prefix));
out:
	free(w.abs);
	return rc;
}
