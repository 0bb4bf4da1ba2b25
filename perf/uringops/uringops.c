/* qs_uringops: what the file life cycle of a small file costs on this kernel, done with plain syscalls
 * (as qsync does it) and done on an io_uring, batched and linked (as the engine's design first asked).
 * It times the same steps the sender and the receiver take for each file, on one thread, and says how
 * many io-wq workers the kernel started: an op that a worker runs is a context switch, not a saved
 * syscall. Its numbers decide which steps belong on the ring (docs/ENGINE.md, "io_uring").
 *
 *   qs_uringops [-n FILES] [-s BYTES] [-r ROUNDS] DIR     (DIR: an empty directory on the disk to test)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64 /* files per submit: a bundle's worth */

struct cfg {
	int n;
	size_t size;
	int rounds;
	int src, dst; /* directory fds */
};

static char (*names)[16];
static char *bufs; /* BATCH buffers of cfg.size + 1 */
static struct statx sx[BATCH];
static int fds[BATCH];
static int failures;

static double mono(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* CPU of the whole process: io-wq workers are threads of it, so their work counts here. */
static double cpu(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
	       (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/* Threads of this process whose name says io-wq worker ("iou-wrk-"). */
static int iowq_threads(void)
{
	char path[300], comm[32];
	int n = 0;
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	for (struct dirent *de; (de = readdir(d));) {
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		FILE *f = de->d_name[0] != '.' ? fopen(path, "r") : NULL;
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && strncmp(comm, "iou-wrk", 7) == 0)
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

static void bad(const char *what, int res)
{
	if (failures++ < 5)
		fprintf(stderr, "qs_uringops: %s: %s\n", what, strerror(-res));
}

static char *buf(int j, size_t size)
{
	return bufs + (size_t)j * (size + 1);
}

/* Waits for want completions; a negative result other than a cut link is a failure. */
static void reap(struct io_uring *r, unsigned want, const char *what)
{
	struct io_uring_cqe *c;
	for (unsigned got = 0; got < want; got++) {
		if (io_uring_wait_cqe(r, &c) < 0) {
			bad("wait", -EIO);
			return;
		}
		if (c->res < 0)
			bad(what, c->res);
		io_uring_cqe_seen(r, c);
	}
}

static const struct open_how how_read = {
    .flags = O_RDONLY, .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};

/* The sender as qsync has it: open beneath the source, check it is the inode listed, read, close. */
static void send_sync(const struct cfg *c, struct io_uring *r)
{
	(void)r;
	for (int i = 0; i < c->n; i++) {
		int fd = (int)syscall(SYS_openat2, c->src, names[i], &how_read, sizeof(how_read));
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0 ||
		    pread(fd, buf(0, c->size), c->size, 0) != (ssize_t)c->size)
			bad("send-sync", -errno);
		if (fd >= 0)
			close(fd);
	}
}

/* The sender on the ring: OPENAT2 into a direct descriptor, READ it, CLOSE it, linked, BATCH files a
 * submit. with_statx: a STATX of the name first, the nearest the ring comes to qsync's check (statx
 * cannot take a direct descriptor). */
static void send_ring(const struct cfg *c, struct io_uring *r, bool with_statx)
{
	for (int i = 0; i < c->n; i += BATCH) {
		int k = c->n - i < BATCH ? c->n - i : BATCH;
		for (int j = 0; j < k; j++) {
			struct io_uring_sqe *s;
			if (with_statx) {
				s = io_uring_get_sqe(r);
				io_uring_prep_statx(s, c->src, names[i + j], AT_SYMLINK_NOFOLLOW,
				                    STATX_BASIC_STATS, &sx[j]);
				s->flags |= IOSQE_IO_LINK;
			}
			s = io_uring_get_sqe(r);
			io_uring_prep_openat2_direct(s, c->src, names[i + j], (struct open_how *)&how_read,
			                             (unsigned)j);
			s->flags |= IOSQE_IO_LINK;
			s = io_uring_get_sqe(r);
			io_uring_prep_read(s, j, buf(j, c->size), (unsigned)c->size, 0);
			s->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK;
			s = io_uring_get_sqe(r);
			io_uring_prep_close_direct(s, (unsigned)j);
		}
		io_uring_submit(r);
		reap(r, (unsigned)k * (with_statx ? 4u : 3u), "send-ring");
	}
}

/* Submits k opens prepared with user_data = their slot and puts each one's fd (or -errno) in fds[]. */
static int opened(struct io_uring *r, int k)
{
	io_uring_submit(r);
	struct io_uring_cqe *cq;
	for (int got = 0; got < k; got++) {
		if (io_uring_wait_cqe(r, &cq) < 0)
			return -EIO;
		fds[cq->user_data] = cq->res;
		io_uring_cqe_seen(r, cq);
	}
	return 0;
}

/* The sender on the ring with qsync's check kept: BATCH OPENAT2s into ordinary descriptors in one
 * submit; fstat of each (the inode the walk saw?); then READ and CLOSE linked, in a second submit. */
static void send_ring_fd(const struct cfg *c, struct io_uring *r)
{
	for (int i = 0; i < c->n; i += BATCH) {
		int k = c->n - i < BATCH ? c->n - i : BATCH;
		for (int j = 0; j < k; j++) {
			struct io_uring_sqe *s = io_uring_get_sqe(r);
			io_uring_prep_openat2(s, c->src, names[i + j], (struct open_how *)&how_read);
			s->user_data = (uint64_t)j;
		}
		if (opened(r, k) < 0)
			return;
		unsigned want = 0;
		for (int j = 0; j < k; j++) {
			struct stat st;
			if (fds[j] < 0 || fstat(fds[j], &st) < 0) {
				bad("send-ring-fd open", fds[j] < 0 ? fds[j] : -errno);
				continue;
			}
			struct io_uring_sqe *s = io_uring_get_sqe(r);
			io_uring_prep_read(s, fds[j], buf(j, c->size), (unsigned)c->size, 0);
			s->flags |= IOSQE_IO_LINK;
			io_uring_prep_close(io_uring_get_sqe(r), fds[j]);
			want += 2;
		}
		io_uring_submit(r);
		reap(r, want, "send-ring-fd");
	}
}

static void proc_name(char *out, size_t cap, int fd)
{
	snprintf(out, cap, "/proc/self/fd/%d", fd);
}

/* The receiver as qsync has it for a small file: an unnamed file in the directory, its bytes, its
 * mtime, linked in under its name. */
static void recv_sync(const struct cfg *c, struct io_uring *r)
{
	(void)r;
	struct timespec ts[2] = {{0, UTIME_OMIT}, {1700000000, 0}};
	char proc[32];
	for (int i = 0; i < c->n; i++) {
		int fd = openat(c->dst, ".", O_TMPFILE | O_WRONLY, 0644);
		if (fd < 0) {
			bad("recv-sync open", -errno);
			continue;
		}
		proc_name(proc, sizeof(proc), fd);
		if (pwrite(fd, buf(0, c->size), c->size, 0) != (ssize_t)c->size || futimens(fd, ts) < 0 ||
		    linkat(AT_FDCWD, proc, c->dst, names[i], AT_SYMLINK_FOLLOW) < 0)
			bad("recv-sync", -errno);
		close(fd);
	}
}

/* The receiver on the ring: BATCH OPENATs (O_TMPFILE) in one submit; then for each, the mtime (no ring
 * op for it) and WRITE, LINKAT, CLOSE linked, in one more submit. A linked op needs its fd when it is
 * prepared, so the opens cannot be linked before them. */
static void recv_ring(const struct cfg *c, struct io_uring *r)
{
	struct timespec ts[2] = {{0, UTIME_OMIT}, {1700000000, 0}};
	static char proc[BATCH][32];
	for (int i = 0; i < c->n; i += BATCH) {
		int k = c->n - i < BATCH ? c->n - i : BATCH;
		for (int j = 0; j < k; j++) {
			struct io_uring_sqe *s = io_uring_get_sqe(r);
			io_uring_prep_openat(s, c->dst, ".", O_TMPFILE | O_WRONLY, 0644);
			s->user_data = (uint64_t)j;
		}
		if (opened(r, k) < 0)
			return;
		unsigned want = 0;
		for (int j = 0; j < k; j++) {
			if (fds[j] < 0) {
				bad("recv-ring open", fds[j]);
				continue;
			}
			if (futimens(fds[j], ts) < 0)
				bad("recv-ring futimens", -errno);
			proc_name(proc[j], sizeof(proc[j]), fds[j]);
			struct io_uring_sqe *s = io_uring_get_sqe(r);
			io_uring_prep_write(s, fds[j], buf(j, c->size), (unsigned)c->size, 0);
			s->flags |= IOSQE_IO_LINK;
			s = io_uring_get_sqe(r);
			io_uring_prep_linkat(s, AT_FDCWD, proc[j], c->dst, names[i + j], AT_SYMLINK_FOLLOW);
			s->flags |= IOSQE_IO_LINK;
			s = io_uring_get_sqe(r);
			io_uring_prep_close(s, fds[j]);
			want += 3;
		}
		io_uring_submit(r);
		reap(r, want, "recv-ring");
	}
}

/* The walk: lstat of every name, one by one or BATCH a submit. */
static void walk_sync(const struct cfg *c, struct io_uring *r)
{
	(void)r;
	struct stat st;
	for (int i = 0; i < c->n; i++)
		if (fstatat(c->src, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			bad("walk-sync", -errno);
}

static void walk_ring(const struct cfg *c, struct io_uring *r)
{
	for (int i = 0; i < c->n; i += BATCH) {
		int k = c->n - i < BATCH ? c->n - i : BATCH;
		for (int j = 0; j < k; j++)
			io_uring_prep_statx(io_uring_get_sqe(r), c->src, names[i + j], AT_SYMLINK_NOFOLLOW,
			                    STATX_BASIC_STATS, &sx[j]);
		io_uring_submit(r);
		reap(r, (unsigned)k, "walk-ring");
	}
}

static void empty_dst(const struct cfg *c)
{
	for (int i = 0; i < c->n; i++)
		unlinkat(c->dst, names[i], 0);
}

struct mode {
	const char *name;
	void (*run)(const struct cfg *c, struct io_uring *r);
	bool writes;
};

static void send_ring_plain(const struct cfg *c, struct io_uring *r)
{
	send_ring(c, r, false);
}

static void send_ring_statx(const struct cfg *c, struct io_uring *r)
{
	send_ring(c, r, true);
}

static const struct mode modes[] = {
    {"walk-sync", walk_sync, false},
    {"walk-ring", walk_ring, false},
    {"send-sync", send_sync, false},
    {"send-ring", send_ring_plain, false},
    {"send-ring+statx", send_ring_statx, false},
    {"send-ring+fstat", send_ring_fd, false},
    {"recv-sync", recv_sync, true},
    {"recv-ring", recv_ring, true},
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	struct cfg c = {.n = 10000, .size = 10240, .rounds = 5};
	int opt;
	while ((opt = getopt(argc, argv, "n:s:r:")) != -1) {
		if (opt == 'n')
			c.n = atoi(optarg);
		else if (opt == 's')
			c.size = (size_t)strtoul(optarg, NULL, 10);
		else if (opt == 'r')
			c.rounds = atoi(optarg);
		else
			goto usage;
	}
	if (optind != argc - 1 || c.n <= 0 || c.rounds <= 0 || c.size == 0 || c.size > 1 << 20)
		goto usage;
	int top = open(argv[optind], O_RDONLY | O_DIRECTORY);
	if (top < 0 || (mkdirat(top, "src", 0755) < 0 && errno != EEXIST) ||
	    (mkdirat(top, "dst", 0755) < 0 && errno != EEXIST)) {
		perror(argv[optind]);
		return 1;
	}
	c.src = openat(top, "src", O_RDONLY | O_DIRECTORY);
	c.dst = openat(top, "dst", O_RDONLY | O_DIRECTORY);
	names = calloc((size_t)c.n, sizeof(*names));
	bufs = calloc(BATCH, c.size + 1);
	if (c.src < 0 || c.dst < 0 || !names || !bufs)
		return 1;
	memset(bufs, 'q', (size_t)BATCH * (c.size + 1));
	for (int i = 0; i < c.n; i++) {
		snprintf(names[i], sizeof(names[i]), "f%07d", i);
		int fd = openat(c.src, names[i], O_CREAT | O_WRONLY | O_TRUNC, 0644);
		if (fd < 0 || pwrite(fd, bufs, c.size, 0) != (ssize_t)c.size) {
			perror("making the source files");
			return 1;
		}
		close(fd);
	}

	struct io_uring r;
	int rc = io_uring_queue_init(BATCH * 4, &r, 0);
	if (rc == 0)
		rc = io_uring_register_files_sparse(&r, BATCH);
	if (rc < 0) {
		fprintf(stderr, "qs_uringops: io_uring: %s\n", strerror(-rc));
		return 1;
	}
	double wall[NMODES][64], cpus[NMODES][64];
	if (c.rounds > 64)
		c.rounds = 64;
	/* Modes alternate within each round, so a slow moment of the machine falls on all of them. */
	for (int k = 0; k < c.rounds; k++)
		for (size_t m = 0; m < NMODES; m++) {
			double w0 = mono(), c0 = cpu();
			modes[m].run(&c, &r);
			wall[m][k] = mono() - w0;
			cpus[m][k] = cpu() - c0;
			if (modes[m].writes)
				empty_dst(&c);
		}
	printf("%d files of %zu bytes, %d rounds, batches of %d; kernel io-wq workers started: %d\n", c.n,
	       c.size, c.rounds, BATCH, iowq_threads());
	printf("%-16s %14s %14s %14s\n", "mode", "CPU us/file", "wall us/file", "CPU/wall");
	for (size_t m = 0; m < NMODES; m++) {
		qsort(wall[m], (size_t)c.rounds, sizeof(double), cmp_double);
		qsort(cpus[m], (size_t)c.rounds, sizeof(double), cmp_double);
		double w = wall[m][c.rounds / 2], u = cpus[m][c.rounds / 2];
		printf("%-16s %14.2f %14.2f %14.2f\n", modes[m].name, u / c.n * 1e6, w / c.n * 1e6, u / w);
	}
	empty_dst(&c);
	for (int i = 0; i < c.n; i++)
		unlinkat(c.src, names[i], 0);
	unlinkat(top, "src", AT_REMOVEDIR);
	unlinkat(top, "dst", AT_REMOVEDIR);
	io_uring_queue_exit(&r);
	if (failures)
		fprintf(stderr,
		        "qs_uringops: %d operations failed: the figures above are not to be trusted\n",
		        failures);
	return failures ? 1 : 0;
usage:
	fprintf(stderr, "usage: qs_uringops [-n FILES] [-s BYTES (<= 1 MiB)] [-r ROUNDS] DIR\n");
	return 2;
}
