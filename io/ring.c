/* One io_uring per lane (io/io.h): positioned writes submitted in batches and completed off the lane's
 * thread (IOSQE_ASYNC: the kernel's io-wq workers copy into the page cache while the lane goes on with
 * its packets), their completions announced on an eventfd the lane polls beside its socket. The caller
 * embeds a struct io_ring_op in whatever the write belongs to; done() is called from io_ring_reap(), on
 * the lane's own thread. Reads, fsyncs, and a small file's whole life on the sender (open beneath a
 * root, read, close: queued many at once, sent in one submit) go the same way. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io/io.h"

struct io_ring {
	struct io_uring ring;
	int efd;
	unsigned inflight;     /* submitted or queued, not yet reaped */
	unsigned queued;       /* prepared, not yet submitted */
	unsigned nbufs;        /* registered buffers */
	unsigned max_inflight; /* the completion queue's size: never more in flight, so none overflows */
	bool async;
};

#define RING_CQ_PER_SQ 16u /* completion entries per submission entry: writes pile up while disks work */
#define RING_CLOSE_TAG 1u  /* user data of a close with no owner: (fd << 1) | this (ops are aligned) */

int io_ring_new(unsigned depth, bool async, struct io_ring **out)
{
	struct io_ring *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	/* No SINGLE_ISSUER: the ring is made and drained by the control thread, used by a worker. */
	/* SUBMIT_ALL: an entry that fails as the kernel takes it (an open whose path is too long) does not
	 * stop the submit, so nothing queued behind it waits for the next one (kernels before 5.18 have no
	 * such flag: without it, the next submit or reap takes the rest) */
	struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL,
	                            .cq_entries = depth * RING_CQ_PER_SQ};
	int rc = io_uring_queue_init_params(depth, &r->ring, &p);
	if (rc == -EINVAL) {
		p = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE,
		                             .cq_entries = depth * RING_CQ_PER_SQ};
		rc = io_uring_queue_init_params(depth, &r->ring, &p);
	}
	if (rc < 0) {
		free(r);
		return rc;
	}
	r->max_inflight = p.cq_entries;
	r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->efd < 0 || io_uring_register_eventfd(&r->ring, r->efd) < 0) {
		rc = r->efd < 0 ? -errno : -EINVAL;
		if (r->efd >= 0)
			close(r->efd);
		io_uring_queue_exit(&r->ring);
		free(r);
		return rc;
	}
	r->async = async;
	*out = r;
	return 0;
}

int io_ring_fd(const struct io_ring *r)
{
	return r->efd;
}

unsigned io_ring_inflight(const struct io_ring *r)
{
	return r->inflight;
}

int io_ring_submit(struct io_ring *r)
{
	if (r->queued == 0)
		return 0;
	int rc = io_uring_submit(&r->ring);
	if (rc < 0)
		return rc;
	r->queued -= (unsigned)rc < r->queued ? (unsigned)rc : r->queued;
	return 0;
}

/* A free submission entry, or NULL when the ring cannot take one more op now. */
static struct io_uring_sqe *take_sqe(struct io_ring *r)
{
	if (r->inflight >= r->max_inflight)
		return NULL; /* its completion might not fit */
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	if (!sqe) {
		/* the submission queue is full: send what is there and try once more */
		(void)io_ring_submit(r);
		sqe = io_uring_get_sqe(&r->ring);
	}
	return sqe;
}

int io_ring_write(struct io_ring *r, struct io_ring_op *op, int fd, const void *buf, size_t len, uint64_t off)
{
	struct io_uring_sqe *sqe = take_sqe(r);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
	if (r->async)
		sqe->flags |= IOSQE_ASYNC;
	io_uring_sqe_set_data(sqe, op);
	op->len = len;
	r->queued++;
	r->inflight++;
	/* At once: an io-wq worker looks the fd up when it runs the write, so the caller must not close
	 * (and the process must not reuse) fd until done(); submitting now keeps that window to the write
	 * itself rather than the time until the next batch. Once prepared the op is the ring's, whatever
	 * the submit says: what the kernel did not take now goes with the next submit (io_ring_reap). */
	(void)io_ring_submit(r);
	return 0;
}

int io_ring_register(struct io_ring *r, const struct iovec *bufs, unsigned n)
{
	int rc = io_uring_register_buffers(&r->ring, bufs, n);
	if (rc == 0)
		r->nbufs = n;
	return rc;
}

int io_ring_read(struct io_ring *r, struct io_ring_op *op, int fd, void *buf, size_t len, uint64_t off,
                 int buf_index)
{
	struct io_uring_sqe *sqe = take_sqe(r);
	if (!sqe)
		return -EBUSY;
	if (buf_index >= 0 && (unsigned)buf_index < r->nbufs)
		io_uring_prep_read_fixed(sqe, fd, buf, (unsigned)len, off, buf_index);
	else
		io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
	io_uring_sqe_set_data(sqe, op);
	op->len = 0; /* a read may be short (the file shrank): the caller judges */
	r->queued++;
	r->inflight++;
	(void)io_ring_submit(r); /* (as for a write: the op is the ring's now) */
	return 0;
}

int io_ring_open_beneath(struct io_ring *r, struct io_ring_op *op, int rootfd, const char *rel)
{
	/* (the kernel copies it at the submit: it must outlive the sqe, not the call) */
	static const struct open_how how = {
	    .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	struct io_uring_sqe *sqe = take_sqe(r);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_openat2(sqe, rootfd, rel[0] ? rel : ".", (struct open_how *)&how);
	io_uring_sqe_set_data(sqe, op);
	op->len = 0;
	r->queued++;
	r->inflight++;
	return 0;
}

int io_ring_read_close(struct io_ring *r, struct io_ring_op *op, int fd, void *buf, size_t len)
{
	/* two entries, both of whose completions must fit */
	if (r->inflight + 2 > r->max_inflight || io_uring_sq_space_left(&r->ring) < 2) {
		(void)io_ring_submit(r);
		if (r->inflight + 2 > r->max_inflight || io_uring_sq_space_left(&r->ring) < 2)
			return -EBUSY;
	}
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	io_uring_prep_read(sqe, fd, buf, (unsigned)len, 0);
	/* a hard link: the close runs after the read whatever it returned (a soft link would cancel
	 * it on a short read) */
	sqe->flags |= IOSQE_IO_HARDLINK;
	io_uring_sqe_set_data(sqe, op);
	op->len = 0; /* a read may be short (the file shrank): the caller judges */
	sqe = io_uring_get_sqe(&r->ring);
	io_uring_prep_close(sqe, fd);
	/* nobody to tell, but the fd in the user data: if the read fails as the kernel takes it, the
	 * link is cut and the close cancelled, and the fd is closed here instead (complete) */
	io_uring_sqe_set_data64(sqe, ((uint64_t)(unsigned)fd << 1) | RING_CLOSE_TAG);
	r->queued += 2;
	r->inflight += 2;
	return 0;
}

int io_ring_workers(struct io_ring *r, unsigned n)
{
	unsigned v[2] = {n, 0}; /* bounded (file) work; 0 leaves the unbounded limit as it is */
	return io_uring_register_iowq_max_workers(&r->ring, v);
}

int io_ring_fsync(struct io_ring *r, struct io_ring_op *op, int fd)
{
	struct io_uring_sqe *sqe = take_sqe(r);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_fsync(sqe, fd, 0);
	sqe->flags |= IOSQE_ASYNC; /* it blocks anyway: straight to a worker, not tried inline first */
	io_uring_sqe_set_data(sqe, op);
	op->len = 0;
	r->queued++;
	r->inflight++;
	(void)io_ring_submit(r); /* (as for a write: the op is the ring's now) */
	return 0;
}

/* Tells op's owner how it ended. The close after a read (io_ring_read_close) has no owner: its user
 * data is the fd, tagged; a close that never ran (cancelled with its read) is done at once. */
static void complete(struct io_ring_op *op, int res)
{
	uint64_t tag = (uint64_t)(uintptr_t)op;
	if (tag & RING_CLOSE_TAG) {
		if (res == -ECANCELED)
			close((int)(tag >> 1));
		return;
	}
	/* a short write to a regular file means the disk could not take it all */
	if (res >= 0 && op->len && (size_t)res != op->len)
		res = -EIO;
	op->done(op, res);
}

int io_ring_reap(struct io_ring *r)
{
	uint64_t sink;
	int n = 0;
	(void)io_ring_submit(r); /* what an earlier submit could not hand over */
	(void)!read(r->efd, &sink, sizeof(sink));
	for (;;) {
		struct io_uring_cqe *cqe;
		if (io_uring_peek_cqe(&r->ring, &cqe) != 0 || !cqe)
			break;
		struct io_ring_op *op = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		io_uring_cqe_seen(&r->ring, cqe);
		r->inflight--;
		n++;
		complete(op, res);
	}
	if (r->queued)
		(void)io_ring_submit(r); /* what the done() calls queued (a read after an open) */
	return n;
}

void io_ring_drain(struct io_ring *r)
{
	while (r->inflight > 0) {
		struct io_uring_cqe *cqe;
		(void)io_ring_submit(r);
		int rc = io_uring_wait_cqe(&r->ring, &cqe);
		if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY)
			continue; /* (a signal in the middle of a teardown: the buffers are still the
			             kernel's) */
		if (rc < 0)
			break;
		io_uring_cqe_seen(&r->ring, cqe);
		r->inflight--;
		struct io_ring_op *op = io_uring_cqe_get_data(cqe);
		complete(op, cqe->res);
	}
}

void io_ring_free(struct io_ring *r)
{
	if (!r)
		return;
	io_ring_drain(r);
	io_uring_queue_exit(&r->ring);
	close(r->efd);
	free(r);
}
