/* io/write.c and io/walk.c on a real temp dir: atomic commit with exact bytes, mode and mtime; abort and
 * failure leave the final name as it was and no temporary behind; symlinks already in the destination
 * are replaced, never followed; directory metadata; and the sender's walk order, names and limits. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/io.h"

#include "check.h"

#define CHECK_RC(expr, want)                                                                                 \
	do {                                                                                                 \
		int rc_ = (expr);                                                                            \
		if (rc_ != (want)) {                                                                         \
			fprintf(stderr, "%s:%d: %s = %d (%s), want %d\n", __FILE__, __LINE__, #expr, rc_,    \
			        rc_ < 0 ? strerror(-rc_) : "ok", (want));                                    \
			failures++;                                                                          \
		}                                                                                            \
	} while (0)

static char tmpdir[64];
static int root = -1;
static unsigned wflags; /* 0: unnamed files where possible; IO_WFILE_NAMED: named temporaries */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	if (flag == FTW_DP)
		return rmdir(p);
	return unlink(p);
}

static void rm_tree(const char *p)
{
	nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *P(const char *rel)
{
	static char buf[4][512];
	static int i;
	char *b = buf[i++ % 4];
	snprintf(b, sizeof(buf[0]), "%s/%s", tmpdir, rel);
	return b;
}

static void put_file(const char *p, const char *content)
{
	FILE *f = fopen(p, "w");
	if (!f) {
		perror(p);
		exit(2);
	}
	fputs(content, f);
	fclose(f);
}

static int file_is(const char *p, const void *content, size_t len)
{
	static char buf[1 << 16];
	int fd = open(p, O_RDONLY | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	return n == (ssize_t)len && memcmp(buf, content, len) == 0;
}

static int exists(const char *p)
{
	struct stat st;
	return lstat(p, &st) == 0;
}

/* Entries in dir whose name contains ".qs." (our temporaries). */
static int temps_in(const char *dir)
{
	int n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	for (struct dirent *de; (de = readdir(d));)
		if (strstr(de->d_name, ".qs."))
			n++;
	closedir(d);
	return n;
}

/* Fresh tree: root/, outside/{victim, dir/}. */
static void setup(void)
{
	strcpy(tmpdir, "/tmp/qs_io_write.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		exit(2);
	}
	mkdir(P("root"), 0755);
	mkdir(P("outside"), 0755);
	mkdir(P("outside/dir"), 0755);
	put_file(P("outside/victim"), "precious");
	root = open(P("root"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		perror("root");
		exit(2);
	}
}

static void teardown(void)
{
	close(root);
	root = -1;
	rm_tree(tmpdir);
	CHECK(!exists(tmpdir));
}

static int write_file(const char *rel, const void *data, size_t len, const struct io_meta *m,
                      struct qs_err *e)
{
	struct io_wfile w;
	int rc = io_wfile_open(root, rel, 0, wflags, &w, e);
	if (rc < 0)
		return rc;
	rc = io_wfile_pwrite(&w, data, len, 0);
	if (rc < 0) {
		io_wfile_abort(&w);
		return rc;
	}
	return io_wfile_commit(&w, m, true, e);
}

static void test_commit(void)
{
	struct qs_err e = {0};
	struct io_wfile w;
	struct stat st;
	static unsigned char data[40000];

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 7 + (i >> 8));

	/* bytes written out of order, in pieces, land exactly */
	CHECK_RC(io_wfile_open(root, "dir/sub/f", 0, wflags, &w, &e), 0);
	CHECK(w.fd >= 0 && w.dirfd >= 0);
	CHECK(strcmp(w.name, "f") == 0);
	if (w.unnamed) /* nothing at all in the directory while it is written */
		CHECK(w.tmpname[0] == '\0');
	else
		CHECK(strncmp(w.tmpname, ".f.qs.", 6) == 0 && strlen(w.tmpname) == 12);
	CHECK(fstat(w.fd, &st) == 0 && (st.st_mode & 07777) == 0600);
	CHECK_RC(io_wfile_pwrite(&w, data + 30000, 10000, 30000), 0);
	CHECK_RC(io_wfile_pwrite(&w, data, 30000, 0), 0);
	CHECK(!exists(P("root/dir/sub/f"))); /* nothing under the final name yet */
	CHECK(temps_in(P("root/dir/sub")) == (w.unnamed ? 0 : 1));
	struct io_meta m = {
	    .mode = 0640, .mtime_ns = 1234567890123456789LL, .set_mode = true, .set_mtime = true};
	CHECK_RC(io_wfile_commit(&w, &m, true, &e), 0);
	CHECK(file_is(P("root/dir/sub/f"), data, sizeof(data)));
	CHECK(lstat(P("root/dir/sub/f"), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0640);
	CHECK(st.st_mtim.tv_sec == 1234567890 && st.st_mtim.tv_nsec == 123456789);
	CHECK(temps_in(P("root/dir/sub")) == 0);
	CHECK(w.fd == -1 && w.dirfd == -1);
	io_wfile_abort(&w); /* after commit: harmless, and the file stays */
	CHECK(file_is(P("root/dir/sub/f"), data, sizeof(data)));

	/* 0755, an mtime before 1970, no fsync */
	CHECK_RC(io_wfile_open(root, "x755", 0, wflags, &w, &e), 0);
	CHECK_RC(io_wfile_pwrite(&w, "#!", 2, 0), 0);
	m = (struct io_meta){.mode = 0755, .mtime_ns = -1500000000LL, .set_mode = true, .set_mtime = true};
	CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
	CHECK(lstat(P("root/x755"), &st) == 0 && (st.st_mode & 07777) == 0755);
	CHECK(st.st_mtim.tv_sec == -2 && st.st_mtim.tv_nsec == 500000000);

	/* an empty file with no metadata keeps 0600 */
	CHECK_RC(io_wfile_open(root, "empty", 0, wflags, &w, &e), 0);
	CHECK_RC(io_wfile_commit(&w, NULL, false, &e), 0);
	CHECK(lstat(P("root/empty"), &st) == 0 && st.st_size == 0 && (st.st_mode & 07777) == 0600);

	if (geteuid() == 0) {
		/* setuid survives the chown that would clear it */
		CHECK_RC(io_wfile_open(root, "suid", 0, wflags, &w, &e), 0);
		m = (struct io_meta){
		    .mode = 04755, .uid = 1234, .gid = 5678, .set_mode = true, .set_owner = true};
		CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
		CHECK(lstat(P("root/suid"), &st) == 0 && (st.st_mode & 07777) == 04755);
		CHECK(st.st_uid == 1234 && st.st_gid == 5678);
		CHECK_RC(io_wfile_open(root, "sticky", 0, wflags, &w, &e), 0);
		m = (struct io_meta){.mode = 03775, .uid = 0, .gid = 0, .set_mode = true, .set_owner = true};
		CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
		CHECK(lstat(P("root/sticky"), &st) == 0 && (st.st_mode & 07777) == 03775);
	} else {
		fprintf(stderr, "test_io_write: not root, setuid/owner cases skipped\n");
	}

	/* a 255-byte name: the temporary name is shortened to fit */
	char longname[IO_NAME_MAX + 1];
	memset(longname, 'L', IO_NAME_MAX);
	longname[IO_NAME_MAX] = '\0';
	CHECK_RC(io_wfile_open(root, longname, 0, wflags, &w, &e), 0);
	CHECK(w.unnamed || strlen(w.tmpname) == IO_NAME_MAX);
	CHECK_RC(io_wfile_pwrite(&w, "long", 4, 0), 0);
	CHECK_RC(io_wfile_commit(&w, NULL, false, &e), 0);
	char lp[IO_NAME_MAX + 8];
	snprintf(lp, sizeof(lp), "root/%s", longname);
	CHECK(file_is(P(lp), "long", 4));

	/* the phases one by one (as the receiver runs them around fsyncs on its ring): nothing under the
	 * final name until place, the directory held until the abort after it */
	CHECK_RC(io_wfile_open(root, "dir/phased", 0, wflags, &w, &e), 0);
	CHECK_RC(io_wfile_pwrite(&w, "phased", 6, 0), 0);
	m = (struct io_meta){.mode = 0604, .mtime_ns = 1000000000LL, .set_mode = true, .set_mtime = true};
	CHECK_RC(io_wfile_prepare(&w, &m, &e), 0);
	CHECK(!exists(P("root/dir/phased")));
	CHECK(fsync(w.fd) == 0);
	CHECK_RC(io_wfile_place(&w, &e), 0);
	CHECK(w.fd == -1 && w.dirfd >= 0);
	CHECK(file_is(P("root/dir/phased"), "phased", 6));
	CHECK(lstat(P("root/dir/phased"), &st) == 0 && (st.st_mode & 07777) == 0604 &&
	      st.st_mtim.tv_sec == 1);
	CHECK(fsync(w.dirfd) == 0);
	io_wfile_abort(&w);
	CHECK(w.dirfd == -1 && file_is(P("root/dir/phased"), "phased", 6));
	CHECK(temps_in(P("root/dir")) == 0);
	/* place over a directory: refused, nothing left behind, the directory as it was */
	CHECK(mkdir(P("root/dir/adir"), 0755) == 0);
	CHECK_RC(io_wfile_open(root, "dir/adir", 0, wflags, &w, &e), 0);
	CHECK_RC(io_wfile_pwrite(&w, "x", 1, 0), 0);
	CHECK_RC(io_wfile_prepare(&w, NULL, &e), 0);
	CHECK_RC(io_wfile_place(&w, &e), -EISDIR);
	CHECK(strstr(e.msg, "is a directory") != NULL);
	CHECK(w.fd == -1 && w.dirfd == -1);
	CHECK(lstat(P("root/dir/adir"), &st) == 0 && S_ISDIR(st.st_mode));
	CHECK(temps_in(P("root/dir")) == 0);
	CHECK(rmdir(P("root/dir/adir")) == 0);

	/* bad names never get as far as the disk */
	CHECK_RC(io_wfile_open(root, "../outside/victim", 0, wflags, &w, &e), -EINVAL);
	CHECK(w.fd == -1 && w.dirfd == -1);
	io_wfile_abort(&w);
	CHECK_RC(io_wfile_open(root, "/abs", 0, wflags, &w, &e), -EINVAL);
	CHECK(temps_in(P("root")) == 0);
	CHECK(temps_in(P("outside")) == 0);
}

static void test_abort_and_replace(void)
{
	struct qs_err e = {0};
	struct io_wfile w;
	struct stat st, st2;

	/* abort leaves a good file as it was, and no temporary */
	put_file(P("root/good"), "good content");
	CHECK_RC(io_wfile_open(root, "good", 0, wflags, &w, &e), 0);
	CHECK_RC(io_wfile_pwrite(&w, "half", 4, 0), 0);
	io_wfile_abort(&w);
	io_wfile_abort(&w); /* twice is fine */
	CHECK(file_is(P("root/good"), "good content", 12));
	CHECK(temps_in(P("root")) == 0);

	/* commit replaces it atomically: a new inode, the old one intact for whoever holds it */
	int old = open(P("root/good"), O_RDONLY);
	CHECK(old >= 0 && fstat(old, &st) == 0);
	CHECK_RC(write_file("good", "new", 3, NULL, &e), 0);
	CHECK(file_is(P("root/good"), "new", 3));
	CHECK(lstat(P("root/good"), &st2) == 0 && st2.st_ino != st.st_ino);
	char b[32] = {0};
	CHECK(pread(old, b, sizeof(b), 0) == 12 && strcmp(b, "good content") == 0);
	close(old);

	/* the final name is a directory: -EISDIR, the directory and its content stay, no temporary */
	mkdir(P("root/isdir"), 0755);
	put_file(P("root/isdir/keep"), "k");
	CHECK_RC(io_wfile_open(root, "isdir", 0, wflags, &w, &e), 0);
	CHECK_RC(io_wfile_pwrite(&w, "x", 1, 0), 0);
	CHECK_RC(io_wfile_commit(&w, NULL, false, &e), -EISDIR);
	CHECK(strstr(e.msg, "\"isdir\"") && strstr(e.msg, "directory"));
	CHECK(lstat(P("root/isdir"), &st) == 0 && S_ISDIR(st.st_mode));
	CHECK(file_is(P("root/isdir/keep"), "k", 1));
	CHECK(temps_in(P("root")) == 0);
	CHECK(w.fd == -1 && w.dirfd == -1);

	/* a failure in commit (chown to an owner we may not use, when not root) removes the temporary;
	 * as root use a write error instead: a write on an aborted file */
	CHECK_RC(io_wfile_pwrite(&w, "x", 1, 0), -EBADF);
	CHECK_RC(io_wfile_commit(&w, NULL, false, &e), -EBADF);
	if (geteuid() != 0) {
		struct io_meta m = {.uid = 0, .gid = 0, .set_owner = true};
		CHECK_RC(io_wfile_open(root, "good", 0, wflags, &w, &e), 0);
		CHECK(io_wfile_commit(&w, &m, false, &e) == -EPERM);
		CHECK(file_is(P("root/good"), "new", 3));
		CHECK(temps_in(P("root")) == 0);
	}
	CHECK_RC(io_wfile_open(root, "huge", 0, wflags, &w, &e), 0);
	CHECK_RC(io_wfile_pwrite(&w, "x", 1, (uint64_t)INT64_MAX), -EFBIG);
	io_wfile_abort(&w);
	CHECK(!exists(P("root/huge")));

	/* "x" is a symlink to a file outside: the symlink itself is replaced, the outside file unchanged */
	CHECK(symlink(P("outside/victim"), P("root/x")) == 0);
	CHECK_RC(write_file("x", "mine", 4, NULL, &e), 0);
	CHECK(lstat(P("root/x"), &st) == 0 && S_ISREG(st.st_mode));
	CHECK(file_is(P("root/x"), "mine", 4));
	CHECK(file_is(P("outside/victim"), "precious", 8));

	/* "sub" is a symlink to a directory outside: writing "sub/f" fails, nothing appears outside */
	CHECK(symlink(P("outside/dir"), P("root/sub")) == 0);
	CHECK(write_file("sub/f", "evil", 4, NULL, &e) < 0);
	CHECK(write_file("sub/deeper/f", "evil", 4, NULL, &e) < 0);
	CHECK(!exists(P("outside/dir/f")) && !exists(P("outside/dir/deeper")));
	CHECK(temps_in(P("outside/dir")) == 0);
	/* a symlink to a directory inside the root is refused just the same */
	CHECK(symlink("dir", P("root/indir")) == 0);
	CHECK(write_file("indir/f", "evil", 4, NULL, &e) < 0);
	CHECK(!exists(P("root/dir/f")));
}

/* Unnamed files: created with their final mode, linked in at commit, gone if never committed, and the
 * same atomic replace of an existing file through a temporary name. */
static void test_unnamed(void)
{
	struct qs_err e = {0};
	struct io_wfile w;
	struct stat st, st2;

	CHECK_RC(io_wfile_open(root, "u/m640", 0640, 0, &w, &e), 0);
	if (!w.unnamed) {
		fprintf(stderr, "test_io_write: no O_TMPFILE here, unnamed cases skipped\n");
		io_wfile_abort(&w);
		return;
	}
	CHECK(fstat(w.fd, &st) == 0 && (st.st_mode & 07777) == 0640 && w.mode == 0640);
	CHECK_RC(io_wfile_pwrite(&w, "abc", 3, 0), 0);
	struct io_meta m = {.mode = 0640, .set_mode = true};
	CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
	CHECK(file_is(P("root/u/m640"), "abc", 3));
	CHECK(lstat(P("root/u/m640"), &st) == 0 && (st.st_mode & 07777) == 0640);

	/* the umask applies to the creation mode, and commit puts the wanted bits back */
	CHECK_RC(io_wfile_open(root, "u/m666", 0666, 0, &w, &e), 0);
	CHECK(w.mode == 0644);
	m = (struct io_meta){.mode = 0666, .set_mode = true};
	CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
	CHECK(lstat(P("root/u/m666"), &st) == 0 && (st.st_mode & 07777) == 0666);

	/* a process that dies before commit leaves nothing, not even a temporary */
	pid_t pid = fork();
	if (pid == 0) {
		struct io_wfile cw;
		struct qs_err ce = {0};
		if (io_wfile_open(root, "u/dies", 0644, 0, &cw, &ce) == 0 &&
		    io_wfile_pwrite(&cw, "half", 4, 0) == 0)
			_exit(0);
		_exit(1);
	}
	int status = -1;
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(!exists(P("root/u/dies")));
	CHECK(temps_in(P("root/u")) == 0);

	/* replacing an existing file: a new inode under the name, the old one intact for its holders,
	 * and without set_mode but with keep_mode the old permission bits */
	CHECK(chmod(P("root/u/m640"), 0604) == 0);
	int old = open(P("root/u/m640"), O_RDONLY);
	CHECK(old >= 0 && fstat(old, &st) == 0);
	CHECK_RC(io_wfile_open(root, "u/m640", 0600, 0, &w, &e), 0);
	CHECK_RC(io_wfile_pwrite(&w, "new!", 4, 0), 0);
	m = (struct io_meta){.keep_mode = true};
	CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
	CHECK(file_is(P("root/u/m640"), "new!", 4));
	CHECK(lstat(P("root/u/m640"), &st2) == 0 && st2.st_ino != st.st_ino && (st2.st_mode & 07777) == 0604);
	char b[8] = {0};
	CHECK(pread(old, b, sizeof(b), 0) == 3 && strcmp(b, "abc") == 0);
	close(old);
	CHECK(temps_in(P("root/u")) == 0);

	/* a directory under the final name is never replaced, and the temporary name goes again */
	mkdir(P("root/u/d"), 0755);
	CHECK_RC(io_wfile_open(root, "u/d", 0644, 0, &w, &e), 0);
	CHECK_RC(io_wfile_commit(&w, NULL, false, &e), -EISDIR);
	CHECK(lstat(P("root/u/d"), &st) == 0 && S_ISDIR(st.st_mode));
	CHECK(temps_in(P("root/u")) == 0);

	/* setuid is never there while the file is written, and is there once committed */
	CHECK_RC(io_wfile_open(root, "u/suid", 04755, 0, &w, &e), 0);
	CHECK(fstat(w.fd, &st) == 0 && (st.st_mode & 07000) == 0);
	m = (struct io_meta){.mode = 04755, .set_mode = true};
	CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
	CHECK(lstat(P("root/u/suid"), &st) == 0 && (st.st_mode & 07777) == 04755);
}

/* The parent-directory cache: hits hand out the same directory, misses create what is missing,
 * held directories are never evicted, a setgid directory's group reaches the files made in it, and
 * writes through the cache land exactly where io_wfile_open would put them. */
static void test_dircache(void)
{
	struct qs_err e = {0};
	struct io_dircache *dc = NULL;
	struct io_dirref a, b, held[IO_DIRCACHE_SLOTS + 2];
	const char *base;
	struct stat st1, st2;

	CHECK_RC(io_dircache_new(root, &dc), 0);
	CHECK_RC(io_dircache_parent(dc, "c/one/f1", &base, &a, &e), 0);
	CHECK(strcmp(base, "f1") == 0 && a.slot >= 0 && S_ISDIR(a.mode));
	CHECK_RC(io_dircache_parent(dc, "c/one/f2", &base, &b, &e), 0);
	CHECK(b.fd == a.fd && b.slot == a.slot); /* the same open directory */
	CHECK(fstat(a.fd, &st1) == 0 && stat(P("root/c/one"), &st2) == 0 && st1.st_ino == st2.st_ino);
	io_dircache_put(dc, &a);
	io_dircache_put(dc, &b);
	CHECK(a.fd == -1 && b.fd == -1);
	/* the root's own files */
	CHECK_RC(io_dircache_parent(dc, "toplevel", &base, &a, &e), 0);
	CHECK(fstat(a.fd, &st1) == 0 && fstat(root, &st2) == 0 && st1.st_ino == st2.st_ino);
	io_dircache_put(dc, &a);
	/* bad paths never reach the disk, through the cache either */
	CHECK_RC(io_dircache_parent(dc, "../outside/x", &base, &a, &e), -EINVAL);
	CHECK(!exists(P("outside/x")));
	/* more directories held at once than there are slots: the extra ones are not cached, and
	 * every one is the right directory */
	char rel[64];
	for (int i = 0; i < IO_DIRCACHE_SLOTS + 2; i++) {
		snprintf(rel, sizeof(rel), "many/d%02d/f", i);
		CHECK_RC(io_dircache_parent(dc, rel, &base, &held[i], &e), 0);
		snprintf(rel, sizeof(rel), "root/many/d%02d", i);
		CHECK(fstat(held[i].fd, &st1) == 0 && stat(P(rel), &st2) == 0 && st1.st_ino == st2.st_ino);
	}
	CHECK(held[IO_DIRCACHE_SLOTS].slot == -1 && held[IO_DIRCACHE_SLOTS + 1].slot == -1);
	for (int i = 0; i < IO_DIRCACHE_SLOTS + 2; i++)
		io_dircache_put(dc, &held[i]);
	/* forget: a held directory stays usable for its holder, and is opened afresh for the next one */
	CHECK_RC(io_dircache_parent(dc, "c/one/f3", &base, &a, &e), 0);
	io_dircache_forget(dc, "c");
	CHECK_RC(io_dircache_parent(dc, "c/one/f4", &base, &b, &e), 0);
	CHECK(b.slot != a.slot || b.fd != a.fd);
	CHECK(fstat(a.fd, &st1) == 0 && S_ISDIR(st1.st_mode));
	io_dircache_put(dc, &a);
	io_dircache_put(dc, &b);
	/* files through the cache */
	struct io_wfile w;
	CHECK_RC(io_wfile_open_dc(dc, "c/one/data", 0644, 0, &w, &e), 0);
	CHECK_RC(io_wfile_pwrite(&w, "cached", 6, 0), 0);
	struct io_meta m = {.mode = 0644, .set_mode = true, .mtime_ns = 5000000000LL, .set_mtime = true};
	CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
	CHECK(file_is(P("root/c/one/data"), "cached", 6));
	CHECK(lstat(P("root/c/one/data"), &st1) == 0 && st1.st_mtim.tv_sec == 5);
	if (geteuid() == 0) {
		/* a setgid directory: files made in it take its group, and an owner equal to what the
		 * file gets anyway needs no chown; a different one is applied */
		mkdir(P("root/g"), 0755);
		CHECK(chown(P("root/g"), 0, 4321) == 0 && chmod(P("root/g"), 02755) == 0);
		CHECK_RC(io_wfile_open_dc(dc, "g/f", 0644, 0, &w, &e), 0);
		m = (struct io_meta){.uid = 0, .gid = 4321, .set_owner = true};
		CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
		CHECK(lstat(P("root/g/f"), &st1) == 0 && st1.st_uid == 0 && st1.st_gid == 4321);
		CHECK_RC(io_wfile_open_dc(dc, "g/h", 0644, 0, &w, &e), 0);
		m = (struct io_meta){.uid = 77, .gid = 0, .set_owner = true};
		CHECK_RC(io_wfile_commit(&w, &m, false, &e), 0);
		CHECK(lstat(P("root/g/h"), &st1) == 0 && st1.st_uid == 77 && st1.st_gid == 0);
	}
	io_dircache_free(dc);
}

/* The quick check: same size and mtime of a regular file, nothing followed; fixes applied through the
 * file itself. */
static void test_unchanged(void)
{
	struct io_dircache *dc = NULL;
	struct qs_err e = {0};
	struct stat st;
	struct timespec ts[2] = {{.tv_sec = 100, .tv_nsec = 5}, {.tv_sec = 100, .tv_nsec = 5}};
	const int64_t t = 100000000005LL;
	mkdir(P("root/q"), 0755);
	put_file(P("root/q/f"), "hello");
	chmod(P("root/q/f"), 0644);
	CHECK(utimensat(AT_FDCWD, P("root/q/f"), ts, 0) == 0);
	CHECK(symlink(P("outside/victim"), P("root/q/link")) == 0);
	CHECK(utimensat(AT_FDCWD, P("root/q/link"), ts, AT_SYMLINK_NOFOLLOW) == 0);
	mkdir(P("root/q/dir"), 0755);
	CHECK(utimensat(AT_FDCWD, P("root/q/dir"), ts, 0) == 0);
	CHECK_RC(io_dircache_new(root, &dc), 0);

	CHECK_RC(io_unchanged_dc(dc, "q/f", 5, t, NULL, &e), 1);
	CHECK_RC(io_unchanged_dc(dc, "q/f", 6, t, NULL, &e), 0);     /* size */
	CHECK_RC(io_unchanged_dc(dc, "q/f", 5, t + 1, NULL, &e), 0); /* a nanosecond */
	CHECK_RC(io_unchanged_dc(dc, "q/absent", 5, t, NULL, &e), 0);
	CHECK_RC(io_unchanged_dc(dc, "q/link", 8, t, NULL, &e), 0); /* the victim is 8 bytes: not followed */
	CHECK_RC(io_unchanged_dc(dc, "q/dir", 0, t, NULL, &e), 0);
	CHECK_RC(io_unchanged_dc(dc, "../outside/victim", 8, t, NULL, &e), -EINVAL);

	/* a fix: mode through the file, and only when asked for */
	struct io_meta fix = {.mode = 0600, .set_mode = true, .uid = (uint32_t)-1, .gid = (uint32_t)-1};
	CHECK_RC(io_unchanged_dc(dc, "q/f", 5, t, &fix, &e), 1);
	CHECK(lstat(P("root/q/f"), &st) == 0 && (st.st_mode & 07777) == 0600);
	fix.set_mode = false;
	fix.mode = 0666;
	CHECK_RC(io_unchanged_dc(dc, "q/f", 5, t, &fix, &e), 1);
	CHECK(lstat(P("root/q/f"), &st) == 0 && (st.st_mode & 07777) == 0600);
	CHECK(st.st_mtim.tv_sec == 100 && st.st_mtim.tv_nsec == 5); /* the fix leaves the mtime */
	if (geteuid() == 0) {
		fix = (struct io_meta){.uid = 4242, .gid = 4343, .set_owner = true};
		CHECK_RC(io_unchanged_dc(dc, "q/f", 5, t, &fix, &e), 1);
		CHECK(lstat(P("root/q/f"), &st) == 0 && st.st_uid == 4242 && st.st_gid == 4343);
	}
	/* a link's victim is never changed by a fix */
	fix = (struct io_meta){.mode = 0600, .set_mode = true, .uid = (uint32_t)-1, .gid = (uint32_t)-1};
	CHECK_RC(io_unchanged_dc(dc, "q/link", 8, t, &fix, &e), 0);
	CHECK(lstat(P("outside/victim"), &st) == 0 && (st.st_mode & 07777) != 0600);
	io_dircache_free(dc);
}

static void test_symlink(void)
{
	struct qs_err e = {0};
	struct stat st, vst;
	char buf[512];

	CHECK(stat(P("outside/victim"), &vst) == 0);
	struct io_meta m = {
	    .mode = 0777, .mtime_ns = 1000000000LL * 1000000 + 42, .set_mode = true, .set_mtime = true};
	CHECK_RC(io_symlink_beneath(root, "links/ln", P("outside/victim"), &m, &e), 0);
	ssize_t n = readlink(P("root/links/ln"), buf, sizeof(buf) - 1);
	CHECK(n > 0);
	buf[n > 0 ? n : 0] = '\0';
	CHECK(strcmp(buf, P("outside/victim")) == 0);
	CHECK(lstat(P("root/links/ln"), &st) == 0 && S_ISLNK(st.st_mode));
	CHECK(st.st_mtim.tv_sec == 1000000 && st.st_mtim.tv_nsec == 42);
	/* the target was not followed: not touched in content or time */
	CHECK(file_is(P("outside/victim"), "precious", 8));
	CHECK(stat(P("outside/victim"), &st) == 0 && st.st_mtim.tv_sec == vst.st_mtim.tv_sec &&
	      st.st_mtim.tv_nsec == vst.st_mtim.tv_nsec);

	/* replaces an existing symlink and an existing file; never a directory */
	CHECK_RC(io_symlink_beneath(root, "links/ln", "../elsewhere", NULL, &e), 0);
	n = readlink(P("root/links/ln"), buf, sizeof(buf) - 1);
	CHECK(n == 12 && memcmp(buf, "../elsewhere", 12) == 0);
	put_file(P("root/links/file"), "f");
	CHECK_RC(io_symlink_beneath(root, "links/file", "t", NULL, &e), 0);
	CHECK(lstat(P("root/links/file"), &st) == 0 && S_ISLNK(st.st_mode));
	mkdir(P("root/links/d"), 0755);
	CHECK_RC(io_symlink_beneath(root, "links/d", "t", NULL, &e), -EISDIR);
	CHECK(lstat(P("root/links/d"), &st) == 0 && S_ISDIR(st.st_mode));
	CHECK(temps_in(P("root/links")) == 0);
	/* bad names and targets */
	CHECK_RC(io_symlink_beneath(root, "../outside/l", "t", NULL, &e), -EINVAL);
	CHECK_RC(io_symlink_beneath(root, "links/e", "", NULL, &e), -EINVAL);
	CHECK(symlink(P("outside/dir"), P("root/sl")) == 0);
	CHECK(io_symlink_beneath(root, "sl/l", "t", NULL, &e) < 0);
	CHECK(!exists(P("outside/dir/l")));
}

static void test_meta(void)
{
	struct qs_err e = {0};
	struct stat st, vst;

	CHECK_RC(io_mkdir_beneath(root, "md/inner", &e), 0);
	put_file(P("root/md/inner/f"), "x");
	struct io_meta m = {
	    .mode = 0751, .mtime_ns = 1500000000987654321LL, .set_mode = true, .set_mtime = true};
	CHECK_RC(io_meta_apply_beneath(root, "md/inner", &m, &e), 0);
	CHECK(lstat(P("root/md/inner"), &st) == 0 && (st.st_mode & 07777) == 0751);
	CHECK(st.st_mtim.tv_sec == 1500000000 && st.st_mtim.tv_nsec == 987654321);

	/* "" is the root itself */
	m.mode = 0705;
	m.mtime_ns = 1600000000000000001LL;
	CHECK_RC(io_meta_apply_beneath(root, "", &m, &e), 0);
	CHECK(lstat(P("root"), &st) == 0 && (st.st_mode & 07777) == 0705);
	CHECK(st.st_mtim.tv_sec == 1600000000 && st.st_mtim.tv_nsec == 1);
	m.mode = 0755;
	CHECK_RC(io_meta_apply_beneath(root, "", &m, &e), 0);

	/* a regular file */
	m = (struct io_meta){.mode = 0604, .mtime_ns = 7000000000LL, .set_mode = true, .set_mtime = true};
	CHECK_RC(io_meta_apply_beneath(root, "md/inner/f", &m, &e), 0);
	CHECK(lstat(P("root/md/inner/f"), &st) == 0 && (st.st_mode & 07777) == 0604 &&
	      st.st_mtim.tv_sec == 7);

	/* a symlink: its own time, never the target's mode or time */
	CHECK(stat(P("outside/victim"), &vst) == 0);
	CHECK(symlink(P("outside/victim"), P("root/md/ln")) == 0);
	m = (struct io_meta){.mode = 0666, .mtime_ns = 8000000000LL, .set_mode = true, .set_mtime = true};
	CHECK_RC(io_meta_apply_beneath(root, "md/ln", &m, &e), 0);
	CHECK(lstat(P("root/md/ln"), &st) == 0 && S_ISLNK(st.st_mode) && st.st_mtim.tv_sec == 8);
	CHECK(stat(P("outside/victim"), &st) == 0 && st.st_mode == vst.st_mode &&
	      st.st_mtim.tv_sec == vst.st_mtim.tv_sec);
	/* through a symlinked directory: refused, the outside directory unchanged */
	CHECK(stat(P("outside/dir"), &vst) == 0);
	CHECK(symlink(P("outside"), P("root/md/out")) == 0);
	CHECK(io_meta_apply_beneath(root, "md/out/dir", &m, &e) < 0);
	CHECK(stat(P("outside/dir"), &st) == 0 && st.st_mode == vst.st_mode);
	CHECK_RC(io_meta_apply_beneath(root, "../outside", &m, &e), -EINVAL);
	CHECK_RC(io_meta_apply_beneath(root, "md/missing", &m, &e), -ENOENT);
}

/* ---- walk --------------------------------------------------------------------------------------- */

struct seen {
	char name[64][128];
	mode_t mode[64];
	int dfd_ok; /* entries whose dfd was the directory read */
	int n;
	int stop_at; /* stop with -ECANCELED at this entry (-1: never) */
	struct stat dir;
};

static int record(void *ctx, const char *name, const struct stat *st, int dfd)
{
	struct seen *s = ctx;
	struct stat ds;
	if (s->n == s->stop_at)
		return -ECANCELED;
	if (s->n < 64) {
		snprintf(s->name[s->n], sizeof(s->name[0]), "%s", name);
		s->mode[s->n] = st->st_mode;
	}
	if (fstat(dfd, &ds) == 0 && ds.st_ino == s->dir.st_ino && ds.st_dev == s->dir.st_dev)
		s->dfd_ok++;
	s->n++;
	return 0;
}

static int open_dir(const char *path, struct seen *s, int stop_at)
{
	memset(s, 0, sizeof(*s));
	s->stop_at = stop_at;
	CHECK(stat(path, &s->dir) == 0);
	return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static void test_walk(void)
{
	struct qs_err e = {0};
	struct seen s;

	mkdir(P("top"), 0755);
	mkdir(P("top/b"), 0755);
	mkdir(P("top/e"), 0755);
	put_file(P("top/a"), "a");
	put_file(P("top/.h"), "h");
	put_file(P("top/b/z"), "z");
	CHECK(symlink("b", P("top/c")) == 0); /* a symlink to a directory: reported, not followed */
	CHECK(symlink("/nonexistent", P("top/d")) == 0);

	/* one directory, in name order, dot files too, not recursing, each lstat'ed, with the dir's fd */
	static const char *want[] = {".h", "a", "b", "c", "d", "e"};
	const int nwant = (int)(sizeof(want) / sizeof(want[0]));
	int fd = open_dir(P("top"), &s, -1);
	CHECK_RC(io_dir_read(fd, record, &s, &e), 0);
	CHECK(s.n == nwant && s.dfd_ok == nwant);
	for (int i = 0; i < nwant && i < s.n; i++) {
		if (strcmp(s.name[i], want[i]) != 0) {
			fprintf(stderr, "dir_read[%d] = %s, want %s\n", i, s.name[i], want[i]);
			failures++;
		}
	}
	CHECK(S_ISREG(s.mode[0]) && S_ISDIR(s.mode[2]) && S_ISLNK(s.mode[3]) && S_ISLNK(s.mode[4]) &&
	      S_ISDIR(s.mode[5]));

	/* the callback stops the listing with its error */
	fd = open_dir(P("top"), &s, 2);
	CHECK_RC(io_dir_read(fd, record, &s, &e), -ECANCELED);
	CHECK(s.n == 2 && e.code == -ECANCELED && strstr(e.msg, "\"b\"") != NULL);

	/* an empty directory: no call */
	fd = open_dir(P("top/e"), &s, -1);
	CHECK_RC(io_dir_read(fd, record, &s, &e), 0);
	CHECK(s.n == 0);

	/* not a directory: an error with words, and the fd is still taken over */
	fd = open(P("top/a"), O_RDONLY | O_CLOEXEC);
	memset(&s, 0, sizeof(s));
	CHECK(io_dir_read(fd, record, &s, &e) < 0);
	CHECK(s.n == 0 && strstr(e.msg, "cannot read the directory") != NULL);
	CHECK(fcntl(fd, F_GETFD) < 0 && errno == EBADF);
}

int main(void)
{
	umask(022);
	setup();
	test_commit();
	test_abort_and_replace();
	test_unnamed();
	test_dircache();
	test_unchanged();
	teardown();
	/* the named-temporary path, for file systems without O_TMPFILE */
	setup();
	wflags = IO_WFILE_NAMED;
	test_commit();
	test_abort_and_replace();
	wflags = 0;
	test_symlink();
	test_meta();
	test_walk();
	teardown();
	if (failures) {
		fprintf(stderr, "test_io_write: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_io_write: ok\n");
	return 0;
}
