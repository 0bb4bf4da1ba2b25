/* qs_failfs: a FUSE file system for end-to-end tests, passing everything through to a backing
 * directory except that fsync of a file whose name contains "failsync", or of a directory whose name
 * contains "faildir", fails with EIO (what a disk that loses a write reports), and fsync of a
 * directory whose name contains "slowdir" takes 0.6 s (a slow disk). As a source it lies: a regular
 * file whose name contains "liesize" says it is LIE_BYTES longer than its content, and reading a file
 * whose name contains "readfail" fails with EIO. Usage: qs_failfs BACKING_DIR
 * MOUNTPOINT [fuse options]; it stays in the foreground, single-threaded, until unmounted (fusermount3
 * -u MOUNTPOINT). */
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static int backing = -1; /* the backing directory, open */

/* The path FUSE hands over ("/a/b") relative to the backing directory ("a/b", "." for the root). */
static const char *rel(const char *path)
{
	while (*path == '/')
		path++;
	return *path ? path : ".";
}

#define SYS(expr) ((expr) < 0 ? -errno : 0)

#define LIE_BYTES 1000 /* what a "liesize" file claims beyond its content */

static int f_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	int rc = fi ? SYS(fstat((int)fi->fh, st)) : SYS(fstatat(backing, rel(path), st, AT_SYMLINK_NOFOLLOW));
	if (rc == 0 && S_ISREG(st->st_mode) && strstr(path, "liesize"))
		st->st_size += LIE_BYTES;
	return rc;
}

static int f_readlink(const char *path, char *buf, size_t size)
{
	ssize_t n = readlinkat(backing, rel(path), buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int f_mkdir(const char *path, mode_t mode)
{
	return SYS(mkdirat(backing, rel(path), mode));
}

static int f_unlink(const char *path)
{
	return SYS(unlinkat(backing, rel(path), 0));
}

static int f_rmdir(const char *path)
{
	return SYS(unlinkat(backing, rel(path), AT_REMOVEDIR));
}

static int f_symlink(const char *target, const char *path)
{
	return SYS(symlinkat(target, backing, rel(path)));
}

static int f_rename(const char *from, const char *to, unsigned int flags)
{
	return SYS(renameat2(backing, rel(from), backing, rel(to), flags));
}

static int f_link(const char *from, const char *to)
{
	return SYS(linkat(backing, rel(from), backing, rel(to), 0));
}

static int f_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (fi)
		return SYS(fchmod((int)fi->fh, mode));
	return SYS(fchmodat(backing, rel(path), mode, 0));
}

static int f_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	if (fi)
		return SYS(fchown((int)fi->fh, uid, gid));
	return SYS(fchownat(backing, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW));
}

static int f_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	if (fi)
		return SYS(ftruncate((int)fi->fh, size));
	int fd = openat(backing, rel(path), O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = SYS(ftruncate(fd, size));
	close(fd);
	return rc;
}

static int f_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	if (fi)
		return SYS(futimens((int)fi->fh, tv));
	return SYS(utimensat(backing, rel(path), tv, AT_SYMLINK_NOFOLLOW));
}

static int f_open(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(backing, rel(path), (fi->flags & ~O_NOFOLLOW) | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int f_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int fd = openat(backing, rel(path), fi->flags | O_CREAT | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int f_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	if (strstr(path, "readfail"))
		return -EIO;
	ssize_t n = pread((int)fi->fh, buf, size, off);
	return n < 0 ? -errno : (int)n;
}

static int f_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)path;
	ssize_t n = pwrite((int)fi->fh, buf, size, off);
	return n < 0 ? -errno : (int)n;
}

static int f_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return SYS(fstatvfs(backing, st));
}

static int f_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close((int)fi->fh);
	return 0;
}

/* The point of it all: a file named *failsync* never reaches the disk, and says so here. */
static int f_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	if (strstr(path, "failsync"))
		return -EIO;
	return SYS(datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh));
}

static int f_opendir(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(backing, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	return 0;
}

static int f_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                     enum fuse_readdir_flags flags)
{
	(void)path;
	(void)off;
	(void)flags;
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	rewinddir(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (fill(buf, e->d_name, NULL, 0, 0))
			break;
	return 0;
}

static int f_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	closedir((DIR *)(uintptr_t)fi->fh);
	return 0;
}

static int f_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	const char *name = strrchr(path, '/');
	if (strstr(name ? name + 1 : path, "faildir")) /* (its own name: a directory in it flushes) */
		return -EIO;
	if (strstr(name ? name + 1 : path, "slowdir")) /* (a disk that takes its time) */
		usleep(600 * 1000);
	return SYS(fsync(dirfd((DIR *)(uintptr_t)fi->fh)));
}

static int f_access(const char *path, int mask)
{
	return SYS(faccessat(backing, rel(path), mask, AT_SYMLINK_NOFOLLOW));
}

static const struct fuse_operations ops = {
    .getattr = f_getattr,
    .readlink = f_readlink,
    .mkdir = f_mkdir,
    .unlink = f_unlink,
    .rmdir = f_rmdir,
    .symlink = f_symlink,
    .rename = f_rename,
    .link = f_link,
    .chmod = f_chmod,
    .chown = f_chown,
    .truncate = f_truncate,
    .utimens = f_utimens,
    .open = f_open,
    .create = f_create,
    .read = f_read,
    .write = f_write,
    .statfs = f_statfs,
    .release = f_release,
    .fsync = f_fsync,
    .opendir = f_opendir,
    .readdir = f_readdir,
    .releasedir = f_releasedir,
    .fsyncdir = f_fsyncdir,
    .access = f_access,
};

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: qs_failfs BACKING_DIR MOUNTPOINT [fuse options]\n");
		return 2;
	}
	backing = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (backing < 0) {
		perror(argv[1]);
		return 1;
	}
	umask(0);
	/* fuse_main sees: prog MOUNTPOINT -f -s [options] */
	char *fargv[64];
	int fargc = 0;
	fargv[fargc++] = argv[0];
	fargv[fargc++] = argv[2];
	fargv[fargc++] = "-f";
	fargv[fargc++] = "-s";
	for (int i = 3; i < argc && fargc < 63; i++)
		fargv[fargc++] = argv[i];
	fargv[fargc] = NULL;
	return fuse_main(fargc, fargv, &ops, NULL);
}
