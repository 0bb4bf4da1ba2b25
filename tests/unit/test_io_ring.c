/* Unit tests for io/ring.c: writes (async and not) land exactly, several in flight at once; reads into
 * registered buffers and plain ones, a short read at the end of a file, errors (a bad descriptor) are
 * reported through done(), and drain waits for everything in flight; opens beneath a root and the
 * read-then-close of a small file. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/io.h"

#include "check.h"

struct op {
	struct io_ring_op op;
	int res;
	int done;
};

static void on_done(struct io_ring_op *o, int res)
{
	struct op *x = (struct op *)o;
	x->res = res;
	x->done++;
}

/* Reaps until every op in ops is done (or 5 s pass). */
static void wait_all(struct io_ring *r, struct op *ops, int n)
{
	for (int t = 0; t < 500; t++) {
		int left = 0;
		for (int i = 0; i < n; i++)
			left += ops[i].done == 0;
		if (!left)
			return;
		struct pollfd p = {.fd = io_ring_fd(r), .events = POLLIN};
		poll(&p, 1, 10);
		io_ring_reap(r);
	}
}

static void test_writes(bool async)
{
	char path[] = "/tmp/qs_ring.XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	struct io_ring *r = NULL;
	int rc = io_ring_new(8, async, &r);
	if (rc < 0) {
		fprintf(stderr, "test_io_ring: no io_uring here (%s): skipped\n", strerror(-rc));
		close(fd);
		unlink(path);
		return;
	}
	static uint8_t buf[4][65536];
	struct op ops[4];
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 4; i++) {
		memset(buf[i], 'a' + i, sizeof(buf[i]));
		ops[i].op.done = on_done;
		/* out of order on purpose: each lands at its own offset */
		CHECK(io_ring_write(r, &ops[i].op, fd, buf[i], sizeof(buf[i]), (uint64_t)(3 - i) * 65536) ==
		      0);
	}
	CHECK(io_ring_inflight(r) == 4);
	wait_all(r, ops, 4);
	CHECK(io_ring_inflight(r) == 0);
	for (int i = 0; i < 4; i++)
		CHECK(ops[i].done == 1 && ops[i].res == 65536);
	struct stat st;
	CHECK(fstat(fd, &st) == 0 && st.st_size == 4 * 65536);
	uint8_t back[65536];
	for (int i = 0; i < 4; i++) {
		CHECK(pread(fd, back, sizeof(back), (off_t)(3 - i) * 65536) == 65536);
		CHECK(back[0] == 'a' + i && back[65535] == 'a' + i);
	}
	/* a write to a descriptor that is not open: the error comes through done() */
	struct op bad = {.op.done = on_done};
	CHECK(io_ring_write(r, &bad.op, 987654, buf[0], 10, 0) == 0);
	wait_all(r, &bad, 1);
	CHECK(bad.done == 1 && bad.res == -EBADF);
	/* drain waits for what is in flight */
	struct op last = {.op.done = on_done};
	CHECK(io_ring_write(r, &last.op, fd, buf[1], 100, 1 << 20) == 0);
	io_ring_drain(r);
	CHECK(last.done == 1 && last.res == 100);
	io_ring_free(r);
	close(fd);
	unlink(path);
}

static void test_reads(void)
{
	char path[] = "/tmp/qs_ring.XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	static uint8_t data[300000];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 31 + (i >> 11));
	CHECK(write(fd, data, sizeof(data)) == (ssize_t)sizeof(data));
	struct io_ring *r = NULL;
	if (io_ring_new(8, false, &r) < 0) {
		close(fd);
		unlink(path);
		return;
	}
	uint8_t *bufs = aligned_alloc(4096, 2 * 131072);
	struct iovec iov[2] = {{bufs, 131072}, {bufs + 131072, 131072}};
	bool fixed = io_ring_register(r, iov, 2) == 0;
	struct op ops[3];
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 3; i++)
		ops[i].op.done = on_done;
	/* a registered buffer, a plain one, and a read that runs past the end of the file */
	CHECK(io_ring_read(r, &ops[0].op, fd, bufs, 131072, 0, fixed ? 0 : -1) == 0);
	uint8_t *plain = malloc(131072);
	CHECK(io_ring_read(r, &ops[1].op, fd, plain, 131072, 131072, -1) == 0);
	CHECK(io_ring_read(r, &ops[2].op, fd, bufs + 131072, 131072, 262144, fixed ? 1 : -1) == 0);
	wait_all(r, ops, 3);
	CHECK(ops[0].res == 131072 && memcmp(bufs, data, 131072) == 0);
	CHECK(ops[1].res == 131072 && memcmp(plain, data + 131072, 131072) == 0);
	CHECK(ops[2].res == (int)(sizeof(data) - 262144)); /* short: the end of the file */
	CHECK(memcmp(bufs + 131072, data + 262144, sizeof(data) - 262144) == 0);
	/* at the end exactly: 0 bytes */
	struct op end = {.op.done = on_done};
	CHECK(io_ring_read(r, &end.op, fd, plain, 10, sizeof(data), -1) == 0);
	wait_all(r, &end, 1);
	CHECK(end.done == 1 && end.res == 0);
	io_ring_free(r);
	free(plain);
	free(bufs);
	close(fd);
	unlink(path);
}

/* fsync on the ring: done() gets 0 for a file (and a directory), the error for a descriptor that is not
 * open; several in flight at once. */
static void test_fsync(void)
{
	char dir[] = "/tmp/qs_ring_dir.XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	struct io_ring *r = NULL;
	if (io_ring_new(8, true, &r) < 0) {
		rmdir(dir);
		return;
	}
	CHECK(io_ring_workers(r, 64) == 0); /* more workers for flushing: allowed, nothing else changes */
	char path[4][64];
	int fds[5];
	struct op ops[6];
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < 4; i++) {
		snprintf(path[i], sizeof(path[i]), "%s/f%d", dir, i);
		fds[i] = open(path[i], O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		CHECK(fds[i] >= 0 && write(fds[i], "data", 4) == 4);
	}
	fds[4] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(fds[4] >= 0);
	for (int i = 0; i < 5; i++) {
		ops[i].op.done = on_done;
		CHECK(io_ring_fsync(r, &ops[i].op, fds[i]) == 0);
	}
	ops[5].op.done = on_done;
	CHECK(io_ring_fsync(r, &ops[5].op, 987654) == 0);
	CHECK(io_ring_inflight(r) == 6);
	wait_all(r, ops, 6);
	for (int i = 0; i < 5; i++)
		CHECK(ops[i].done == 1 && ops[i].res == 0);
	CHECK(ops[5].done == 1 && ops[5].res == -EBADF);
	CHECK(io_ring_inflight(r) == 0);
	io_ring_free(r);
	for (int i = 0; i < 4; i++) {
		close(fds[i]);
		unlink(path[i]);
	}
	close(fds[4]);
	rmdir(dir);
}

/* The open/read/close chain of a small file: opens beneath a root queued many at once and sent in one
 * submit; an open refused where a symlink, ".." or nothing is in the way; each opened file read whole
 * and then closed by the ring, also when the read is short or fails. */
static void test_open_read_close(void)
{
	char dir[] = "/tmp/qs_ring_orc.XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(root >= 0);
	struct io_ring *r = NULL;
	if (io_ring_new(8, false, &r) < 0) {
		close(root);
		rmdir(dir);
		return;
	}
	enum { NF = 40 };
	static char names[NF][16];
	static uint8_t want[NF][3000], got[NF][4096];
	CHECK(mkdirat(root, "sub", 0700) == 0);
	for (int i = 0; i < NF; i++) {
		snprintf(names[i], sizeof(names[i]), "sub/f%02d", i);
		int fd = openat(root, names[i], O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		for (size_t k = 0; k < sizeof(want[i]); k++)
			want[i][k] = (uint8_t)(k * 7 + (size_t)i);
		CHECK(fd >= 0 && write(fd, want[i], sizeof(want[i])) == (ssize_t)sizeof(want[i]));
		close(fd);
	}
	CHECK(symlinkat("sub", root, "link") == 0);
	/* 40 opens queued, more than the ring's 8 entries: a full queue is submitted on the way */
	struct op ops[NF];
	memset(ops, 0, sizeof(ops));
	for (int i = 0; i < NF; i++) {
		ops[i].op.done = on_done;
		CHECK(io_ring_open_beneath(r, &ops[i].op, root, names[i]) == 0);
	}
	CHECK(io_ring_submit(r) == 0);
	wait_all(r, ops, NF);
	int fds[NF];
	for (int i = 0; i < NF; i++) {
		CHECK(ops[i].done == 1 && ops[i].res >= 0);
		fds[i] = ops[i].res;
	}
	/* each read whole (the last one asks for more than there is: short) and closed by the ring */
	struct op rd[NF];
	memset(rd, 0, sizeof(rd));
	int queued = 0;
	for (int i = 0; i < NF; i++) {
		rd[i].op.done = on_done;
		size_t len = i == NF - 1 ? sizeof(got[i]) : sizeof(want[i]);
		int rc = io_ring_read_close(r, &rd[i].op, fds[i], got[i], len);
		if (rc == -EBUSY) { /* the ring's completions are all spoken for: let some finish */
			wait_all(r, rd, queued);
			rc = io_ring_read_close(r, &rd[i].op, fds[i], got[i], len);
		}
		CHECK(rc == 0);
		queued = i + 1;
	}
	CHECK(io_ring_submit(r) == 0);
	wait_all(r, rd, NF);
	io_ring_drain(r); /* the closes too */
	CHECK(io_ring_inflight(r) == 0);
	for (int i = 0; i < NF; i++) {
		CHECK(rd[i].done == 1 && rd[i].res == (int)sizeof(want[i]));
		CHECK(memcmp(got[i], want[i], sizeof(want[i])) == 0);
		CHECK(fcntl(fds[i], F_GETFD) < 0 && errno == EBADF); /* the ring closed it */
	}
	/* a failed read still closes: a directory's fd */
	struct op o = {.op.done = on_done}, rf = {.op.done = on_done};
	CHECK(io_ring_open_beneath(r, &o.op, root, "sub") == 0);
	io_ring_drain(r);
	CHECK(o.done == 1 && o.res >= 0);
	CHECK(io_ring_read_close(r, &rf.op, o.res, got[0], 10) == 0);
	io_ring_drain(r);
	CHECK(rf.done == 1 && rf.res == -EISDIR);
	CHECK(fcntl(o.res, F_GETFD) < 0 && errno == EBADF);
	/* refused: a symlink in the path, "..", a name that is not there; "" is the root itself */
	const char *bad[] = {"link/f00", "../x", "sub/none"};
	const int codes[][2] = {{-ELOOP, -EXDEV}, {-EXDEV, -EXDEV}, {-ENOENT, -ENOENT}};
	for (int i = 0; i < 3; i++) {
		struct op b = {.op.done = on_done};
		CHECK(io_ring_open_beneath(r, &b.op, root, bad[i]) == 0);
		io_ring_drain(r);
		CHECK(b.done == 1 && (b.res == codes[i][0] || b.res == codes[i][1]));
	}
	/* a FIFO where a file was listed: the open does not wait for a writer (O_NONBLOCK) */
	CHECK(mkfifoat(root, "fifo", 0600) == 0);
	struct op ff = {.op.done = on_done};
	CHECK(io_ring_open_beneath(r, &ff.op, root, "fifo") == 0);
	io_ring_drain(r);
	struct stat fst;
	CHECK(ff.done == 1 && ff.res >= 0 && fstat(ff.res, &fst) == 0 && S_ISFIFO(fst.st_mode));
	if (ff.res >= 0)
		close(ff.res);
	unlinkat(root, "fifo", 0);
	struct op top = {.op.done = on_done};
	CHECK(io_ring_open_beneath(r, &top.op, root, "") == 0);
	io_ring_drain(r);
	CHECK(top.done == 1 && top.res >= 0);
	close(top.res);
	io_ring_free(r);
	for (int i = 0; i < NF; i++)
		unlinkat(root, names[i], 0);
	unlinkat(root, "link", 0);
	unlinkat(root, "sub", AT_REMOVEDIR);
	close(root);
	rmdir(dir);
}

int main(void)
{
	test_writes(false);
	test_writes(true);
	test_reads();
	test_fsync();
	test_open_read_close();
	if (failures) {
		fprintf(stderr, "test_io_ring: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_io_ring: ok\n");
	return 0;
}
