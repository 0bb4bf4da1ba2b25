/* Paths from the network, judged and opened without trusting them: io_path_check decides whether a
 * name may be used at all, and every open below goes through openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS
 * (or, on kernels without openat2, a component-by-component openat with O_NOFOLLOW), so nothing outside
 * the destination root is created, changed or followed. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io/io.h"

/* openat2 returns EAGAIN when a concurrent rename raced the lookup; retry a bounded number of times. */
#define IO_OPEN_RETRIES 64
/* Bytes of a path quoted in an error message (the message itself is QS_ERR_MSG_MAX). */

#define STR_(x) #x
#define STR(x)  STR_(x)

/* Length of the valid UTF-8 sequence at s (at most n bytes) that is printable as is, or 0. C1 controls
 * (U+0080..U+009F), overlong forms, surrogates and anything beyond U+10FFFF are not. */
static size_t utf8_printable(const unsigned char *s, size_t n)
{
	size_t need;
	unsigned char lo = 0x80, hi = 0xbf;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		need = 1;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		need = 2;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		need = 3;
	else
		return 0;
	if (need >= n)
		return 0;
	if (s[0] == 0xc2 || s[0] == 0xe0)
		lo = 0xa0; /* C1 controls (U+0080..U+009F); overlong three-byte forms */
	else if (s[0] == 0xed)
		hi = 0x9f; /* surrogates */
	else if (s[0] == 0xf0)
		lo = 0x90; /* overlong */
	else if (s[0] == 0xf4)
		hi = 0x8f; /* above U+10FFFF */
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i <= need; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return need + 1;
}

const char *io_path_quote(const char *p, size_t len, char *out, size_t cap)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t o = 0, limit = cap > 4 ? cap - 4 : 0; /* room for "..." and NUL */
	size_t i = 0;

	if (cap == 0)
		return out;
	while (i < len) {
		size_t u = s[i] >= 0x80 ? utf8_printable(s + i, len - i) : 0;
		if (u) {
			if (o + u > limit)
				break;
			memcpy(out + o, s + i, u);
			o += u;
			i += u;
		} else if (s[i] < 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\') {
			if (o + 4 > limit)
				break;
			snprintf(out + o, 5, "\\x%02x", s[i]);
			o += 4;
			i++;
		} else {
			if (o + 1 > limit)
				break;
			out[o++] = (char)s[i++];
		}
	}
	if (i < len && cap >= 4) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o < cap ? o : cap - 1] = '\0';
	return out;
}

static int bad_path(struct qs_err *err, int code, const char *p, size_t len, const char *rule)
{
	char q[IO_QUOTE_MAX];
	return qs_err_set(err, code, "unsafe path \"%s\": %s", io_path_quote(p, len, q, sizeof(q)), rule);
}

int io_path_check(const char *p, size_t len, struct qs_err *err)
{
	if (!p || len == 0)
		return bad_path(err, -EINVAL, "", 0, "empty");
	if (len > IO_PATH_MAX)
		return bad_path(err, -ENAMETOOLONG, p, len, "longer than " STR(IO_PATH_MAX) " bytes");
	if (memchr(p, '\0', len))
		return bad_path(err, -EINVAL, p, len, "NUL byte");
	if (p[0] == '/')
		return bad_path(err, -EINVAL, p, len, "absolute");
	if (p[len - 1] == '/')
		return bad_path(err, -EINVAL, p, len, "trailing '/'");

	size_t depth = 0;
	const char *c = p, *end = p + len;
	for (;;) {
		const char *slash = memchr(c, '/', (size_t)(end - c));
		const char *ce = slash ? slash : end;
		size_t n = (size_t)(ce - c);
		if (n == 0)
			return bad_path(err, -EINVAL, p, len, "empty component");
		if (n == 1 && c[0] == '.')
			return bad_path(err, -EINVAL, p, len, "\".\" component");
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return bad_path(err, -EINVAL, p, len, "\"..\" component");
		if (n > IO_NAME_MAX)
			return bad_path(err, -ENAMETOOLONG, p, len,
			                "component longer than " STR(IO_NAME_MAX) " bytes");
		if (++depth > IO_PATH_MAX_DEPTH)
			return bad_path(err, -ENAMETOOLONG, p, len,
			                "more than " STR(IO_PATH_MAX_DEPTH) " components");
		if (!slash)
			break;
		c = slash + 1;
	}
	return 0;
}

/* O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR; openat2 says ELOOP. Say what openat2 says. */
static int symlink_errno(int dfd, const char *comp, int rc)
{
	struct stat st;
	if (rc == -ENOTDIR && comp[0] && fstatat(dfd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISLNK(st.st_mode))
		return -ELOOP;
	return rc;
}

/* The fallback for kernels without openat2: one component at a time, never following a symlink and
 * refusing "..", so the result is the same as RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS. */
static int open_walk(int rootfd, const char *rel, int flags, mode_t mode)
{
	char comp[IO_NAME_MAX + 1];
	int dfd = rootfd, rc;
	const char *c = rel;

	if (rel[0] == '/')
		return -EXDEV;
	for (;;) {
		const char *slash = strchr(c, '/');
		size_t n = slash ? (size_t)(slash - c) : strlen(c);
		if (n > IO_NAME_MAX) {
			rc = -ENAMETOOLONG;
			goto out;
		}
		memcpy(comp, c, n);
		comp[n] = '\0';
		if (n == 2 && comp[0] == '.' && comp[1] == '.') {
			rc = -EXDEV;
			goto out;
		}
		if (!slash) {
			/* Last component: O_NOFOLLOW refuses a symlink, except O_PATH|O_NOFOLLOW which opens
			 * the link itself, exactly as openat2 with RESOLVE_NO_SYMLINKS does. */
			rc = openat(dfd, n ? comp : ".", flags | O_NOFOLLOW | O_CLOEXEC, mode);
			if (rc < 0)
				rc = symlink_errno(dfd, comp, -errno);
			goto out;
		}
		if (n == 0 || (n == 1 && comp[0] == '.')) {
			c = slash + 1;
			continue;
		}
		int nfd = openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0) {
			rc = symlink_errno(dfd, comp, -errno);
			goto out;
		}
		if (dfd != rootfd)
			close(dfd);
		dfd = nfd;
		c = slash + 1;
	}
out:
	if (dfd != rootfd)
		close(dfd);
	return rc;
}

int io_open_beneath(int rootfd, const char *rel, int flags, mode_t mode)
{
	if (!rel)
		return -EINVAL;
	bool creates = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
	struct open_how how = {
	    .flags = (uint64_t)(unsigned)(flags | O_CLOEXEC),
	    .mode = creates ? mode : 0, /* openat2 refuses a mode it would not use */
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	const char *p = rel[0] ? rel : ".";

	for (int i = 0; i < IO_OPEN_RETRIES; i++) {
		long fd = syscall(SYS_openat2, rootfd, p, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno == EAGAIN || errno == EINTR)
			continue;
		if (errno == ENOSYS)
			return open_walk(rootfd, rel, flags, creates ? mode : 0);
		return -errno;
	}
	return -EAGAIN;
}

static const char *why(int code)
{
	switch (code) {
	case -ELOOP:
		return "a symlink is in the way (not followed)";
	case -EXDEV:
		return "escapes the destination";
	default:
		return strerror(-code);
	}
}

int io_open_parent(int rootfd, const char *rel, const char **base, struct qs_err *err)
{
	char dir[IO_PATH_MAX + 1], q[IO_QUOTE_MAX];
	int rc, dfd = -1;

	if (!rel)
		return qs_err_set(err, -EINVAL, "no path");
	rc = io_path_check(rel, strlen(rel), err);
	if (rc < 0)
		return rc;
	const char *slash = strrchr(rel, '/');
	size_t dlen = slash ? (size_t)(slash - rel) : 0;
	*base = slash ? slash + 1 : rel;
	memcpy(dir, rel, dlen);
	dir[dlen] = '\0';

	/* Usually the parent exists already: one openat2. */
	rc = io_open_beneath(rootfd, dir, O_RDONLY | O_DIRECTORY, 0);
	if (rc != -ENOENT)
		goto out;

	/* Create what is missing, one component at a time, each opened beneath the one before. */
	dfd = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
	if (dfd < 0) {
		rc = -errno;
		goto out;
	}
	for (char *c = dir;;) {
		char *s = strchr(c, '/');
		if (s)
			*s = '\0';
		if (mkdirat(dfd, c, 0700) < 0 && errno != EEXIST) {
			rc = -errno;
			if (s)
				*s = '/';
			goto out;
		}
		rc = io_open_beneath(dfd, c, O_RDONLY | O_DIRECTORY, 0);
		if (s)
			*s = '/';
		if (rc < 0)
			goto out;
		close(dfd);
		dfd = rc;
		if (!s)
			break;
		c = s + 1;
	}
	rc = dfd;
	dfd = -1;
out:
	if (dfd >= 0)
		close(dfd);
	if (rc < 0)
		qs_err_set(err, rc, "cannot open parent directory of \"%s\": %s",
		           io_path_quote(rel, strlen(rel), q, sizeof(q)), why(rc));
	return rc;
}

int io_mkdir_beneath(int rootfd, const char *rel, struct qs_err *err)
{
	const char *base;
	char q[IO_QUOTE_MAX];
	struct stat st;
	int rc = 0, pfd;

	if (rel && rel[0] == '\0')
		return 0;
	pfd = io_open_parent(rootfd, rel, &base, err);
	if (pfd < 0)
		return pfd;
	if (mkdirat(pfd, base, 0700) < 0) {
		rc = -errno;
		if (rc == -EEXIST && fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
			rc = 0;
		if (rc < 0)
			qs_err_set(err, rc, "cannot create directory \"%s\": %s",
			           io_path_quote(rel, strlen(rel), q, sizeof(q)),
			           rc == -EEXIST ? "exists and is not a directory" : why(rc));
	}
	close(pfd);
	return rc;
}
