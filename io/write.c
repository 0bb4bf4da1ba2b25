/* Atomic writes beneath the destination root: a received file is written unnamed (O_TMPFILE) in its
 * target directory, or where that cannot be, as a temporary ".<name>.qs.XXXXXX", and gets its final name
 * only when complete and its metadata applied (linked in, or renamed over the old file), so a good file
 * is never truncated or half-replaced and a killed receiver leaves nothing behind. Symlinks are made the same
 * way; directory metadata is applied last, without following a symlink at the final component. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"

/* Attempts at an unused temporary name before giving up (each with a fresh random suffix). */
#define IO_TMP_TRIES 100
/* ".<name>.qs.XXXXXX": the name is shortened so the whole fits in IO_NAME_MAX. */
#define IO_TMP_SUFFIX_LEN 6
#define IO_TMP_EXTRA      (1 + 4 + IO_TMP_SUFFIX_LEN)
/* Longest symlink target we create (PATH_MAX including the NUL). */
#define IO_LINK_MAX 4095

static const char *q(const char *p, char *buf, size_t cap)
{
	return io_path_quote(p, strlen(p), buf, cap);
}

/* Fills tmp (IO_NAME_MAX + 1 bytes) with a fresh ".<name>.qs.XXXXXX". */
static void tmp_name(char *tmp, const char *name)
{
	static const char abc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	unsigned char rnd[IO_TMP_SUFFIX_LEN];
	char suf[IO_TMP_SUFFIX_LEN + 1];
	static unsigned counter;

	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
		/* No entropy yet: uniqueness, not secrecy, is what matters here; O_EXCL catches a clash. */
		unsigned v =
		    (unsigned)getpid() * 2654435761u ^ __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
		for (size_t i = 0; i < sizeof(rnd); i++, v = v * 1103515245u + 12345u)
			rnd[i] = (unsigned char)(v >> 16);
	}
	for (size_t i = 0; i < IO_TMP_SUFFIX_LEN; i++)
		suf[i] = abc[rnd[i] % (sizeof(abc) - 1)];
	suf[IO_TMP_SUFFIX_LEN] = '\0';
	int n = (int)strnlen(name, IO_NAME_MAX);
	if (n > IO_NAME_MAX - IO_TMP_EXTRA)
		n = IO_NAME_MAX - IO_TMP_EXTRA;
	snprintf(tmp, IO_NAME_MAX + 1, ".%.*s.qs.%s", n, name, suf);
}

static void ns_to_ts(int64_t ns, struct timespec *ts)
{
	int64_t sec = ns / 1000000000, rem = ns % 1000000000;
	if (rem < 0) {
		rem += 1000000000;
		sec--;
	}
	ts->tv_sec = (time_t)sec;
	ts->tv_nsec = (long)rem;
}

/* atime is "now", as rsync leaves it; mtime as sent, or untouched. */
static void meta_times(const struct io_meta *m, struct timespec ts[2])
{
	ts[0].tv_sec = 0;
	ts[0].tv_nsec = UTIME_NOW;
	ns_to_ts(m->mtime_ns, &ts[1]);
}

/* -EISDIR if name exists in dirfd as a directory (it is never replaced), else 0. */
static int not_a_dir(int dirfd, const char *name)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
		return -EISDIR;
	return 0;
}

/* The process's umask, read once without changing it (other threads may be creating files). */
static mode_t umask_now(void)
{
	static int cached = -1; /* relaxed: every thread that races here computes the same value */
	int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
	if (c >= 0)
		return (mode_t)c;
	unsigned v = 0;
	FILE *f = fopen("/proc/self/status", "re");
	char line[128];
	bool found = false;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Umask: %o", &v) == 1) {
			found = true;
			break;
		}
	if (f)
		fclose(f);
	if (!found) {
		mode_t m = umask(077);
		umask(m);
		v = m;
	}
	__atomic_store_n(&cached, (int)(v & 0777), __ATOMIC_RELAXED);
	return (mode_t)(v & 0777);
}

static uid_t geteuid_cached(void)
{
	static long v = -1; /* relaxed: racing threads store the same value */
	long c = __atomic_load_n(&v, __ATOMIC_RELAXED);
	if (c < 0) {
		c = (long)geteuid();
		__atomic_store_n(&v, c, __ATOMIC_RELAXED);
	}
	return (uid_t)c;
}

static gid_t getegid_cached(void)
{
	static long v = -1; /* relaxed: racing threads store the same value */
	long c = __atomic_load_n(&v, __ATOMIC_RELAXED);
	if (c < 0) {
		c = (long)getegid();
		__atomic_store_n(&v, c, __ATOMIC_RELAXED);
	}
	return (gid_t)c;
}

/* Whether O_TMPFILE files can be linked in here: needs /proc for the linkat (or root's AT_EMPTY_PATH). */
static bool unnamed_ok(void)
{
	static int ok = -1; /* relaxed: racing threads all find the same answer */
	int v = __atomic_load_n(&ok, __ATOMIC_RELAXED);
	if (v < 0) {
		v = access("/proc/self/fd", X_OK) == 0;
		__atomic_store_n(&ok, v, __ATOMIC_RELAXED);
	}
	return v == 1;
}

/* Gives the unnamed file w->fd the name `name` in w->dirfd. Returns 0 or a negative errno. */
static int link_in(struct io_wfile *w, const char *name)
{
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", w->fd);
	if (linkat(AT_FDCWD, proc, w->dirfd, name, AT_SYMLINK_FOLLOW) == 0)
		return 0;
	return -errno;
}

static void wfile_init(struct io_wfile *w)
{
	w->dirfd = -1;
	w->dc = NULL;
	w->dir.fd = -1;
	w->dir.slot = -1;
	w->fd = -1;
	w->unnamed = false;
	w->tmpname[0] = '\0';
	w->name[0] = '\0';
}

/* The file itself, in w->dirfd under base. */
static int wfile_create(struct io_wfile *w, const char *rel, const char *base, uint32_t mode, unsigned flags,
                        struct qs_err *err)
{
	char qb[IO_QUOTE_MAX];
	int rc;
	snprintf(w->name, sizeof(w->name), "%s", base); /* io_path_check bounded it */
	if (!(flags & IO_WFILE_NAMED) && unnamed_ok()) {
		/* never setuid/setgid before the content and owner are final; commit adds them */
		mode_t m = (mode ? mode : 0600) & 0777;
		rc = openat(w->dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, m);
		if (rc >= 0) {
			w->fd = rc;
			w->unnamed = true;
			w->mode = m & ~umask_now();
			return 0;
		}
		/* no O_TMPFILE on this file system: a named temporary instead */
	}
	for (int i = 0; i < IO_TMP_TRIES; i++) {
		tmp_name(w->tmpname, w->name);
		rc = openat(w->dirfd, w->tmpname, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (rc >= 0 || errno != EEXIST)
			break;
	}
	if (rc < 0) {
		rc = -errno;
		w->tmpname[0] = '\0';
		qs_err_set(err, rc, "cannot create a temporary file for \"%s\": %s", q(rel, qb, sizeof(qb)),
		           strerror(-rc));
		io_wfile_abort(w);
		return rc;
	}
	w->fd = rc;
	w->mode = 0600;
	return 0;
}

int io_wfile_open(int rootfd, const char *rel, uint32_t mode, unsigned flags, struct io_wfile *w,
                  struct qs_err *err)
{
	const char *base;
	wfile_init(w);
	int rc = io_open_parent(rootfd, rel, &base, err);
	if (rc < 0)
		return rc;
	w->dirfd = rc;
	return wfile_create(w, rel, base, mode, flags, err);
}

int io_wfile_open_dc(struct io_dircache *dc, const char *rel, uint32_t mode, unsigned flags,
                     struct io_wfile *w, struct qs_err *err)
{
	const char *base;
	wfile_init(w);
	int rc = io_dircache_parent(dc, rel, &base, &w->dir, err);
	if (rc < 0)
		return rc;
	w->dc = dc;
	w->dirfd = w->dir.fd;
	return wfile_create(w, rel, base, mode, flags, err);
}

int io_wfile_pwrite(struct io_wfile *w, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	if (w->fd < 0)
		return -EBADF;
	if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -EFBIG;
	while (len > 0) {
		ssize_t n = pwrite(w->fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Links the unnamed file in over an existing name: under a temporary name first, then renamed over
 * it, so the final name always holds either the old file or the whole new one. */
static int link_over(struct io_wfile *w)
{
	int rc = -EEXIST;
	for (int i = 0; i < IO_TMP_TRIES && rc == -EEXIST; i++) {
		tmp_name(w->tmpname, w->name);
		rc = link_in(w, w->tmpname);
	}
	if (rc < 0) {
		w->tmpname[0] = '\0';
		return rc;
	}
	if ((rc = not_a_dir(w->dirfd, w->name)) < 0)
		return rc;
	if (renameat(w->dirfd, w->tmpname, w->dirfd, w->name) < 0)
		return -errno;
	w->tmpname[0] = '\0';
	return 0;
}

int io_wfile_prepare(struct io_wfile *w, const struct io_meta *meta, struct qs_err *err)
{
	char qb[IO_QUOTE_MAX];
	const char *what = "";
	struct stat st;

	if (w->fd < 0 || w->dirfd < 0)
		return qs_err_set(err, -EBADF, "no file being written");
	uint32_t want = meta && meta->set_mode ? meta->mode & 07777 : w->mode;
	bool chowned = false;
	/* chown first: it clears setuid/setgid, which the chmod after it puts back. Only when the owner
	 * differs: a chown is a journalled inode update even when it changes nothing. */
	/* The owner a new file gets is known when its directory is: our euid, and our egid or, in a
	 * setgid directory, the directory's group. Then the usual case (the owner is already right) costs
	 * no syscall at all. */
	bool owner_known = w->dc && (meta && meta->set_owner);
	uid_t new_uid = geteuid_cached();
	gid_t new_gid = w->dc && (w->dir.mode & S_ISGID) ? w->dir.gid : getegid_cached();
	if (owner_known && (meta->uid == (uint32_t)-1 || meta->uid == new_uid) &&
	    (meta->gid == (uint32_t)-1 || meta->gid == new_gid)) {
		/* nothing to change */
	} else if (meta && meta->set_owner) {
		if (fstat(w->fd, &st) < 0) {
			what = "stat";
			goto fail;
		}
		if ((meta->uid != (uint32_t)-1 && st.st_uid != meta->uid) ||
		    (meta->gid != (uint32_t)-1 && st.st_gid != meta->gid)) {
			if (fchown(w->fd, meta->uid, meta->gid) < 0) {
				what = "set owner of";
				goto fail;
			}
			chowned = true;
		}
	}
	if (meta && meta->keep_mode && fstatat(w->dirfd, w->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode))
		want = st.st_mode & 07777; /* like rsync without -p: a replaced file keeps its permissions */
	if (want != w->mode || (chowned && (want & 06000))) {
		if (fchmod(w->fd, want) < 0) {
			what = "set mode of";
			goto fail;
		}
		w->mode = want;
	}
	if (meta && meta->set_mtime) {
		struct timespec ts[2];
		meta_times(meta, ts);
		if (futimens(w->fd, ts) < 0) {
			what = "set mtime of";
			goto fail;
		}
	}
	return 0;
fail:;
	int rc = -errno;
	qs_err_set(err, rc, "cannot %s \"%s\": %s", what, q(w->name, qb, sizeof(qb)), strerror(-rc));
	io_wfile_abort(w);
	return rc;
}

int io_wfile_place(struct io_wfile *w, struct qs_err *err)
{
	char qb[IO_QUOTE_MAX];
	const char *what = "";
	int rc = 0;

	if (w->fd < 0 || w->dirfd < 0)
		return qs_err_set(err, -EBADF, "no file being written");
	if (w->unnamed) {
		/* the file gets a name only now, complete and with its metadata */
		rc = link_in(w, w->name);
		if (rc == -EEXIST)
			rc = link_over(w);
		if (rc < 0) {
			errno = -rc;
			if (rc == -EISDIR)
				goto isdir;
			what = "link into place";
			goto fail;
		}
		rc = close(w->fd);
		w->fd = -1;
		(void)rc; /* the name is already there: a late error here cannot be undone (local disks
		           * report write errors on write, or on fsync with --fsync) */
	} else {
		/* close can report a late write error (NFS, quota): it has to come before the rename. */
		rc = close(w->fd);
		w->fd = -1;
		if (rc < 0) {
			what = "write";
			goto fail;
		}
		rc = not_a_dir(w->dirfd, w->name);
		if (rc < 0)
			goto isdir;
		if (renameat(w->dirfd, w->tmpname, w->dirfd, w->name) < 0) {
			what = "rename into place";
			goto fail;
		}
		w->tmpname[0] = '\0'; /* it is the final file now: abort must not remove it */
	}
	w->unnamed = false;
	return 0;
isdir:
	rc = -EISDIR;
	qs_err_set(err, rc, "cannot replace \"%s\": it is a directory", q(w->name, qb, sizeof(qb)));
	io_wfile_abort(w);
	return rc;
fail:
	rc = -errno;
	qs_err_set(err, rc, "cannot %s \"%s\": %s", what, q(w->name, qb, sizeof(qb)), strerror(-rc));
	io_wfile_abort(w);
	return rc;
}

int io_wfile_commit(struct io_wfile *w, const struct io_meta *meta, bool do_fsync, struct qs_err *err)
{
	char qb[IO_QUOTE_MAX];
	int rc = io_wfile_prepare(w, meta, err);
	if (rc < 0)
		return rc;
	if (do_fsync && fsync(w->fd) < 0) {
		rc = -errno;
		qs_err_set(err, rc, "cannot fsync \"%s\": %s", q(w->name, qb, sizeof(qb)), strerror(-rc));
		io_wfile_abort(w);
		return rc;
	}
	if ((rc = io_wfile_place(w, err)) < 0)
		return rc;
	if (do_fsync && fsync(w->dirfd) < 0) {
		rc = -errno;
		qs_err_set(err, rc, "cannot fsync the directory of \"%s\": %s", q(w->name, qb, sizeof(qb)),
		           strerror(-rc));
	}
	io_wfile_abort(w); /* (the file is in place: this only lets go of its directory) */
	return rc;
}

void io_wfile_abort(struct io_wfile *w)
{
	if (w->dirfd >= 0 && w->tmpname[0])
		unlinkat(w->dirfd, w->tmpname, 0);
	w->tmpname[0] = '\0';
	if (w->fd >= 0)
		close(w->fd); /* an unnamed file is gone with its last descriptor */
	w->fd = -1;
	if (w->dc)
		io_dircache_put(w->dc, &w->dir);
	else if (w->dirfd >= 0)
		close(w->dirfd);
	w->dc = NULL;
	w->dirfd = -1;
	w->unnamed = false;
}

int io_symlink_beneath(int rootfd, const char *rel, const char *target, const struct io_meta *meta,
                       struct qs_err *err)
{
	char tmp[IO_NAME_MAX + 1], qb[IO_QUOTE_MAX];
	const char *base, *what = "";
	int rc = -EEXIST, pfd;

	tmp[0] = '\0';
	if (!target || target[0] == '\0' || strnlen(target, IO_LINK_MAX + 1) > IO_LINK_MAX)
		return qs_err_set(err, -EINVAL, "bad symlink target for \"%s\"",
		                  rel ? q(rel, qb, sizeof(qb)) : "");
	pfd = io_open_parent(rootfd, rel, &base, err);
	if (pfd < 0)
		return pfd;
	for (int i = 0; i < IO_TMP_TRIES; i++) {
		tmp_name(tmp, base);
		rc = symlinkat(target, pfd, tmp);
		if (rc == 0 || errno != EEXIST)
			break;
	}
	if (rc < 0) {
		tmp[0] = '\0';
		what = "create symlink";
		goto fail;
	}
	if (meta && meta->set_owner && fchownat(pfd, tmp, meta->uid, meta->gid, AT_SYMLINK_NOFOLLOW) < 0) {
		what = "set owner of";
		goto fail;
	}
	if (meta && meta->set_mtime) {
		struct timespec ts[2];
		meta_times(meta, ts);
		if (utimensat(pfd, tmp, ts, AT_SYMLINK_NOFOLLOW) < 0) {
			what = "set mtime of";
			goto fail;
		}
	}
	rc = not_a_dir(pfd, base);
	if (rc < 0) {
		qs_err_set(err, rc, "cannot replace \"%s\": it is a directory", q(rel, qb, sizeof(qb)));
		goto out;
	}
	if (renameat(pfd, tmp, pfd, base) < 0) {
		what = "rename into place";
		goto fail;
	}
	tmp[0] = '\0';
	rc = 0;
	goto out;
fail:
	rc = -errno;
	qs_err_set(err, rc, "cannot %s \"%s\": %s", what, q(rel, qb, sizeof(qb)), strerror(-rc));
out:
	if (tmp[0])
		unlinkat(pfd, tmp, 0);
	close(pfd);
	return rc;
}

/* Applies meta through fd, an O_PATH descriptor of a non-directory (never a symlink's target). */
static int meta_apply_path_fd(int fd, const struct io_meta *meta, const char **what)
{
	struct stat st;
	char proc[64];

	if (fstat(fd, &st) < 0) {
		*what = "stat";
		return -errno;
	}
	if (meta->set_owner &&
	    fchownat(fd, "", meta->uid, meta->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		*what = "set owner of";
		return -errno;
	}
	/* A symlink has no mode of its own. Anything else: chmod through the magic link, which names
	 * exactly the inode we hold and cannot be swapped for a symlink behind our back. */
	if (meta->set_mode && !S_ISLNK(st.st_mode)) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		if (chmod(proc, meta->mode & 07777) < 0) {
			*what = "set mode of";
			return -errno;
		}
	}
	if (meta->set_mtime) {
		struct timespec ts[2];
		meta_times(meta, ts);
		if (utimensat(fd, "", ts, AT_EMPTY_PATH) < 0) {
			*what = "set mtime of";
			return -errno;
		}
	}
	return 0;
}

/* Applies meta through fd, an open directory (or the root). */
static int meta_apply_dir_fd(int fd, const struct io_meta *meta, const char **what)
{
	if (meta->set_owner && fchown(fd, meta->uid, meta->gid) < 0) {
		*what = "set owner of";
		return -errno;
	}
	if (meta->set_mode && fchmod(fd, meta->mode & 07777) < 0) {
		*what = "set mode of";
		return -errno;
	}
	if (meta->set_mtime) {
		struct timespec ts[2];
		meta_times(meta, ts);
		if (futimens(fd, ts) < 0) {
			*what = "set mtime of";
			return -errno;
		}
	}
	return 0;
}

int io_meta_apply_beneath(int rootfd, const char *rel, const struct io_meta *meta, struct qs_err *err)
{
	char qb[IO_QUOTE_MAX];
	const char *what = "open";
	int rc, fd = -1;

	if (!rel)
		return qs_err_set(err, -EINVAL, "no path");
	if (!meta)
		return 0;
	if (rel[0] == '\0') {
		rc = meta_apply_dir_fd(rootfd, meta, &what);
		goto out;
	}
	rc = io_path_check(rel, strlen(rel), err);
	if (rc < 0)
		return rc;
	/* The usual case, a directory: an ordinary fd, so plain fchmod/futimens work on it. */
	fd = io_open_beneath(rootfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (fd >= 0) {
		rc = meta_apply_dir_fd(fd, meta, &what);
		goto out;
	}
	if (fd != -ENOTDIR && fd != -ELOOP && fd != -EACCES) {
		rc = fd;
		goto out;
	}
	/* Not a directory (or a symlink at the end): hold the entry itself, never what it points to. */
	fd = io_open_beneath(rootfd, rel, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	rc = meta_apply_path_fd(fd, meta, &what);
out:
	if (fd >= 0)
		close(fd);
	if (rc < 0)
		qs_err_set(err, rc, "cannot %s \"%s\": %s", what, q(rel, qb, sizeof(qb)),
		           rc == -ELOOP   ? "a symlink is in the way (not followed)"
		           : rc == -EXDEV ? "escapes the destination"
		                          : strerror(-rc));
	return rc;
}

int io_unchanged_dc(struct io_dircache *dc, const char *rel, uint64_t size, int64_t mtime_ns,
                    const struct io_meta *fix, struct qs_err *err)
{
	const char *base;
	struct io_dirref ref;
	struct stat st;
	int rc = io_dircache_parent(dc, rel, &base, &ref, err);
	if (rc < 0)
		return rc;
	rc = 0;
	if (fstatat(ref.fd, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != size ||
	    (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec != mtime_ns)
		goto out;
	bool chown_it = fix && fix->set_owner &&
	                ((fix->uid != (uint32_t)-1 && st.st_uid != fix->uid) ||
	                 (fix->gid != (uint32_t)-1 && st.st_gid != fix->gid));
	bool chmod_it = fix && fix->set_mode && (st.st_mode & 07777) != (fix->mode & 07777);
	if (chown_it || chmod_it) {
		/* through an fd of the very file looked at: a name swapped meanwhile is not touched */
		int fd = openat(ref.fd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		struct stat now;
		if (fd < 0)
			goto out; /* (unreadable to us: sent, and replaced, instead) */
		bool ok =
		    fstat(fd, &now) == 0 && now.st_ino == st.st_ino && now.st_dev == st.st_dev &&
		    (!chown_it || fchown(fd, fix->uid, fix->gid) == 0) &&
		    (!(chmod_it || (chown_it && (fix->mode & 06000))) || fchmod(fd, fix->mode & 07777) == 0);
		close(fd);
		if (!ok)
			goto out;
	}
	rc = 1;
out:
	io_dircache_put(dc, &ref);
	return rc;
}

int io_link_unchanged_dc(struct io_dircache *dc, const char *rel, const char *target, size_t target_len,
                         const struct io_meta *want, struct qs_err *err)
{
	const char *base;
	struct io_dirref ref;
	struct stat st;
	char now[IO_LINK_MAX + 1];
	int rc = io_dircache_parent(dc, rel, &base, &ref, err);
	if (rc < 0)
		return rc;
	rc = 0;
	if (target_len > IO_LINK_MAX || fstatat(ref.fd, base, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISLNK(st.st_mode) || (uint64_t)st.st_size != target_len)
		goto out;
	if (want && want->set_mtime &&
	    (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec != want->mtime_ns)
		goto out;
	if (want && want->set_owner &&
	    ((want->uid != (uint32_t)-1 && st.st_uid != want->uid) ||
	     (want->gid != (uint32_t)-1 && st.st_gid != want->gid)))
		goto out;
	ssize_t n = readlinkat(ref.fd, base, now, sizeof(now));
	rc = n == (ssize_t)target_len && memcmp(now, target, target_len) == 0;
out:
	io_dircache_put(dc, &ref);
	return rc;
}
