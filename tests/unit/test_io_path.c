/* io/path.c against hostile names: a table of paths a malicious sender might send, each limit crossed
 * by one, then real opens beneath a temp root (with openat2, and again with openat2 made to fail with
 * ENOSYS by a seccomp filter so the component-by-component fallback is exercised too). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

/* ---- the table ---------------------------------------------------------------------------------- */

struct pcase {
	const char *p;
	size_t len; /* 0: strlen */
	int want;
};

static const struct pcase cases[] = {
    {"", 0, -EINVAL},
    {"/etc/x", 0, -EINVAL},
    {"../escape", 0, -EINVAL},
    {"a/../../b", 0, -EINVAL},
    {"a/./b", 0, -EINVAL},
    {".", 0, -EINVAL},
    {"..", 0, -EINVAL},
    {"a//b", 0, -EINVAL},
    {"a/", 0, -EINVAL},
    {"/", 0, -EINVAL},
    {"a\0b", 3, -EINVAL},
    {"a\0", 2, -EINVAL},
    {"a/..", 0, -EINVAL},
    {"./a", 0, -EINVAL},
    {"a/.", 0, -EINVAL},
    {"//a", 0, -EINVAL},
    /* names that look odd but are fine */
    {"a", 0, 0},
    {"a/b/c", 0, 0},
    {"with space/and more", 0, 0},
    {"\xc3\xbcn\xc3\xaf"
     "c\xc3\xb6"
     "d\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac",
     0, 0},
    {"-rf", 0, 0},
    {".hidden", 0, 0},
    {"..foo", 0, 0},
    {"foo..", 0, 0},
    {"...", 0, 0},
    {"a/.b/..c/d..", 0, 0},
    {"ctl\x01\x1b[2Jbyte", 0, 0}, /* legal on disk; only its printing must be safe */
    {"a\0b", 1, 0},               /* len stops before the NUL */
};

/* A path of exactly len bytes: components of 99 'a's separated by '/'. */
static char *long_path(size_t len)
{
	char *p = malloc(len + 1);
	for (size_t i = 0; i < len; i++)
		p[i] = (i % 100 == 99) ? '/' : 'a';
	if (p[len - 1] == '/')
		p[len - 1] = 'b';
	p[len] = '\0';
	return p;
}

/* "a/a/.../a" with n components. */
static char *deep_path(size_t n)
{
	char *p = malloc(2 * n);
	for (size_t i = 0; i < n; i++) {
		p[2 * i] = 'a';
		p[2 * i + 1] = '/';
	}
	p[2 * n - 1] = '\0';
	return p;
}

static void test_table(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct pcase *c = &cases[i];
		struct qs_err e = {0};
		size_t len = c->len ? c->len : strlen(c->p);
		int rc = io_path_check(c->p, len, &e);
		if (rc != c->want) {
			fprintf(stderr, "case %zu: io_path_check(\"%s\") = %d, want %d\n", i, c->p, rc,
			        c->want);
			failures++;
		}
		if (rc < 0) {
			CHECK(e.code == rc);
			CHECK(strncmp(e.msg, "unsafe path \"", 13) == 0);
			/* nothing unprintable reaches the message */
			for (const char *m = e.msg; *m; m++)
				CHECK((unsigned char)*m >= 0x20 && *m != 0x7f);
		}
	}
	CHECK_RC(io_path_check(NULL, 0, NULL), -EINVAL);
}

static void test_messages(void)
{
	struct qs_err e = {0};
	CHECK_RC(io_path_check("../escape", 9, &e), -EINVAL);
	CHECK(strcmp(e.msg, "unsafe path \"../escape\": \"..\" component") == 0);
	CHECK_RC(io_path_check("a\0b", 3, &e), -EINVAL);
	CHECK(strstr(e.msg, "\"a\\x00b\"") && strstr(e.msg, "NUL"));
	/* control bytes, quotes and invalid UTF-8 are escaped; valid UTF-8 is kept */
	const char *nasty = "x\n\x1b[31m\"\\\xff\xc2\x9b/./\xc3\xa9";
	CHECK_RC(io_path_check(nasty, strlen(nasty), &e), -EINVAL);
	CHECK(strstr(e.msg, "x\\x0a\\x1b[31m\\x22\\x5c\\xff\\xc2\\x9b/./\xc3\xa9") != NULL);
	CHECK(strstr(e.msg, "\".\" component") != NULL);
	CHECK_RC(io_path_check("a//b", 4, &e), -EINVAL);
	CHECK(strstr(e.msg, "empty component") != NULL);
	/* a long path is shortened in the message, never overflowing it */
	char *p = long_path(IO_PATH_MAX + 1);
	CHECK_RC(io_path_check(p, IO_PATH_MAX + 1, &e), -ENAMETOOLONG);
	CHECK(strstr(e.msg, "...\"") && strstr(e.msg, "longer than 4096 bytes"));
	CHECK(strlen(e.msg) < sizeof(e.msg));
	free(p);
}

static void test_limits(void)
{
	struct qs_err e = {0};
	char comp[IO_NAME_MAX + 2];

	memset(comp, 'n', sizeof(comp));
	comp[IO_NAME_MAX] = '\0';
	CHECK_RC(io_path_check(comp, IO_NAME_MAX, &e), 0);
	comp[IO_NAME_MAX] = 'n';
	comp[IO_NAME_MAX + 1] = '\0';
	CHECK_RC(io_path_check(comp, IO_NAME_MAX + 1, &e), -ENAMETOOLONG);
	CHECK(strstr(e.msg, "component longer than 255 bytes") != NULL);

	char *p = long_path(IO_PATH_MAX);
	CHECK_RC(io_path_check(p, IO_PATH_MAX, &e), 0);
	free(p);
	p = long_path(IO_PATH_MAX + 1);
	CHECK_RC(io_path_check(p, IO_PATH_MAX + 1, &e), -ENAMETOOLONG);
	free(p);

	p = deep_path(IO_PATH_MAX_DEPTH);
	CHECK_RC(io_path_check(p, strlen(p), &e), 0);
	free(p);
	p = deep_path(IO_PATH_MAX_DEPTH + 1);
	CHECK_RC(io_path_check(p, strlen(p), &e), -ENAMETOOLONG);
	CHECK(strstr(e.msg, "more than 512 components") != NULL);
	free(p);
}

/* ---- on a real disk ----------------------------------------------------------------------------- */

static char tmpdir[64];

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

static int file_is(const char *p, const char *content)
{
	char buf[256] = {0};
	FILE *f = fopen(p, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	return n == strlen(content) && memcmp(buf, content, n) == 0;
}

static int exists(const char *p)
{
	struct stat st;
	return lstat(p, &st) == 0;
}

static void pathf(char *out, size_t cap, const char *rel)
{
	snprintf(out, cap, "%s/%s", tmpdir, rel);
}

/* Builds: root/{sub/file, link -> outside, last -> outside/victim, file}, outside/victim. */
static int setup(void)
{
	char p[256], q[256];
	strcpy(tmpdir, "/tmp/qs_io_path.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		exit(2);
	}
	pathf(p, sizeof(p), "root");
	mkdir(p, 0755);
	pathf(p, sizeof(p), "root/sub");
	mkdir(p, 0755);
	pathf(p, sizeof(p), "root/sub/file");
	put_file(p, "inside");
	pathf(p, sizeof(p), "root/file");
	put_file(p, "plain");
	pathf(p, sizeof(p), "outside");
	mkdir(p, 0755);
	pathf(p, sizeof(p), "outside/victim");
	put_file(p, "precious");
	pathf(q, sizeof(q), "outside");
	pathf(p, sizeof(p), "root/link");
	CHECK(symlink(q, p) == 0);
	pathf(q, sizeof(q), "outside/victim");
	pathf(p, sizeof(p), "root/last");
	CHECK(symlink(q, p) == 0);
	pathf(p, sizeof(p), "root/tmplink");
	CHECK(symlink("/tmp", p) == 0);
	pathf(p, sizeof(p), "root");
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		perror(p);
		exit(2);
	}
	return fd;
}

static void victim_untouched(void)
{
	char p[256];
	pathf(p, sizeof(p), "outside/victim");
	CHECK(file_is(p, "precious"));
	pathf(p, sizeof(p), "outside/x");
	CHECK(!exists(p));
	pathf(p, sizeof(p), "outside/newdir");
	CHECK(!exists(p));
	pathf(p, sizeof(p), "outside/a");
	CHECK(!exists(p));
}

static void test_open_beneath(int root)
{
	struct stat st;
	int fd;

	/* ordinary opens work */
	fd = io_open_beneath(root, "sub/file", O_RDONLY, 0);
	CHECK(fd >= 0);
	if (fd >= 0) {
		char b[16] = {0};
		CHECK(read(fd, b, sizeof(b) - 1) == 6 && strcmp(b, "inside") == 0);
		CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
		close(fd);
	}
	fd = io_open_beneath(root, "", O_RDONLY | O_DIRECTORY, 0);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	fd = io_open_beneath(root, "sub/new", O_WRONLY | O_CREAT | O_EXCL, 0600);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0600);
		close(fd);
		unlinkat(root, "sub/new", 0);
	}

	/* a symlink in the middle, pointing anywhere, is refused */
	CHECK_RC(io_open_beneath(root, "link/x", O_WRONLY | O_CREAT, 0600), -ELOOP);
	CHECK_RC(io_open_beneath(root, "link/victim", O_WRONLY | O_TRUNC, 0), -ELOOP);
	CHECK_RC(io_open_beneath(root, "tmplink/x", O_WRONLY | O_CREAT, 0600), -ELOOP);
	/* a symlink as the last component is refused... */
	CHECK_RC(io_open_beneath(root, "last", O_WRONLY | O_TRUNC, 0), -ELOOP);
	CHECK_RC(io_open_beneath(root, "last", O_RDONLY, 0), -ELOOP);
	CHECK_RC(io_open_beneath(root, "link", O_RDONLY | O_DIRECTORY, 0), -ELOOP);
	/* ...unless the link itself is asked for */
	fd = io_open_beneath(root, "last", O_PATH | O_NOFOLLOW, 0);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(fstat(fd, &st) == 0 && S_ISLNK(st.st_mode));
		close(fd);
	}
	/* escapes */
	CHECK_RC(io_open_beneath(root, "../outside/victim", O_WRONLY | O_TRUNC, 0), -EXDEV);
	CHECK_RC(io_open_beneath(root, "sub/../../outside/victim", O_WRONLY | O_TRUNC, 0), -EXDEV);
	CHECK_RC(io_open_beneath(root, "..", O_RDONLY | O_DIRECTORY, 0), -EXDEV);
	CHECK_RC(io_open_beneath(root, "/etc/passwd", O_RDONLY, 0), -EXDEV);
	CHECK_RC(io_open_beneath(root, "file/x", O_RDONLY, 0), -ENOTDIR);
	CHECK_RC(io_open_beneath(root, NULL, O_RDONLY, 0), -EINVAL);
	victim_untouched();
}

static void test_mkdir_parent(int root)
{
	struct qs_err e = {0};
	const char *base = NULL;
	struct stat st;
	char p[256];
	int fd;

	/* parents are created 0700, the last component is not */
	const char *rel = "p1/p2/p3/leaf";
	fd = io_open_parent(root, rel, &base, &e);
	CHECK(fd >= 0);
	CHECK(base == rel + 9);
	if (fd >= 0) {
		CHECK(fstat(fd, &st) == 0 && S_ISDIR(st.st_mode));
		close(fd);
	}
	pathf(p, sizeof(p), "root/p1");
	CHECK(lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
	pathf(p, sizeof(p), "root/p1/p2/p3");
	CHECK(lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
	pathf(p, sizeof(p), "root/p1/p2/p3/leaf");
	CHECK(!exists(p));
	/* a single name: the parent is the root */
	fd = io_open_parent(root, "top", &base, &e);
	CHECK(fd >= 0 && strcmp(base, "top") == 0);
	if (fd >= 0)
		close(fd);
	/* existing parents are reused */
	fd = io_open_parent(root, "sub/anything", &base, &e);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);

	/* a symlink where a directory should be */
	CHECK_RC(io_open_parent(root, "link/a/b", &base, &e), -ELOOP);
	CHECK(strstr(e.msg, "\"link/a/b\"") != NULL);
	CHECK_RC(io_open_parent(root, "sub/../link/x", &base, &e), -EINVAL);
	CHECK_RC(io_open_parent(root, "file/x", &base, &e), -ENOTDIR);
	CHECK_RC(io_open_parent(root, "last/x", &base, &e), -ELOOP);

	/* io_mkdir_beneath */
	CHECK_RC(io_mkdir_beneath(root, "", &e), 0);
	CHECK_RC(io_mkdir_beneath(root, "d1/d2", &e), 0);
	pathf(p, sizeof(p), "root/d1/d2");
	CHECK(lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0700) == 0700);
	CHECK_RC(io_mkdir_beneath(root, "d1/d2", &e), 0); /* already there: fine */
	CHECK_RC(io_mkdir_beneath(root, "file", &e), -EEXIST);
	CHECK(strstr(e.msg, "not a directory") != NULL);
	CHECK_RC(io_mkdir_beneath(root, "last", &e), -EEXIST); /* a symlink is not a directory */
	CHECK_RC(io_mkdir_beneath(root, "link", &e), -EEXIST);
	CHECK_RC(io_mkdir_beneath(root, "link/newdir", &e), -ELOOP);
	CHECK_RC(io_mkdir_beneath(root, "link/a/newdir", &e), -ELOOP);
	CHECK_RC(io_mkdir_beneath(root, "../outside/newdir", &e), -EINVAL);
	CHECK_RC(io_mkdir_beneath(root, "a\nb/../x", &e), -EINVAL);
	victim_untouched();
}

static void suite(void)
{
	int root = setup();
	test_open_beneath(root);
	test_mkdir_parent(root);
	close(root);
	rm_tree(tmpdir);
	CHECK(!exists(tmpdir));
}

/* Makes openat2 fail with ENOSYS for this process, as on a kernel older than 5.6. */
static int deny_openat2(void)
{
#if defined(__x86_64__)
	const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
	const unsigned arch = AUDIT_ARCH_AARCH64;
#else
	return -1;
#endif
	struct sock_filter f[] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -1;
	return 0;
}

static void test_fallback(void)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		if (deny_openat2() < 0) {
			fprintf(stderr, "test_io_path: cannot install seccomp filter, fallback not tested\n");
			_exit(0);
		}
		struct open_how_stub {
			unsigned long long flags, mode, resolve;
		} how = {O_RDONLY, 0, 0};
		if (syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof(how)) >= 0 || errno != ENOSYS) {
			fprintf(stderr, "seccomp filter did not take\n");
			_exit(1);
		}
		suite();
		_exit(failures ? 1 : 0);
	}
	int status = 0;
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
	umask(022);
	test_table();
	test_messages();
	test_limits();
	suite();
	test_fallback();
	if (failures) {
		fprintf(stderr, "test_io_path: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_io_path: ok\n");
	return 0;
}
