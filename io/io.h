/* Disk side of qsync: path validation for names that arrive from the network, opening beneath a
 * destination root without following symlinks (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), atomic file
 * writes (temporary file in the target directory, renamed only when complete), metadata application, and
 * the sender's tree walk. Nothing here knows about the network. */
#ifndef QS_IO_IO_H
#define QS_IO_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/err.h"

#define IO_PATH_MAX       4096 /* bytes in a relative path */
#define IO_NAME_MAX       255  /* bytes in one component */
#define IO_PATH_MAX_DEPTH 512  /* components in a path */

/* Judges a relative path that came from the network: non-empty, relative, no NUL within len, no empty,
 * "." or ".." component, no trailing '/', total <= IO_PATH_MAX, each component <= IO_NAME_MAX, at most
 * IO_PATH_MAX_DEPTH components. Returns 0, or -EINVAL / -ENAMETOOLONG with err naming the path
 * (printed safely: control bytes escaped) and the rule it broke. */
int io_path_check(const char *p, size_t len, struct qs_err *err);

#define IO_QUOTE_MAX 120

/* Writes p[0..len) into out (size cap) safe to print: control bytes, DEL, invalid UTF-8, '"' and '\'
 * become \xNN, so a hostile name can neither drive a terminal nor fake the quoting. Long paths end in
 * "...". Returns out. */
const char *io_path_quote(const char *p, size_t len, char *out, size_t cap);

/* Opens rel (already checked) beneath the directory rootfd with openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS. flags/mode as openat. Returns an fd or negative errno
 * (-ELOOP/-EXDEV when a symlink or escape was refused). */
int io_open_beneath(int rootfd, const char *rel, int flags, mode_t mode);

/* Ensures every directory above rel exists beneath rootfd (rel's last component is not created),
 * creating missing ones with mode 0700 (the caller applies final modes later), and returns an
 * O_RDONLY|O_DIRECTORY fd of rel's parent directory (the caller closes it). Never follows symlinks: a
 * symlink where a directory should be is -ENOTDIR/-ELOOP. *base gets a pointer to rel's last component. */
int io_open_parent(int rootfd, const char *rel, const char **base, struct qs_err *err);

/* Creates directory rel beneath rootfd (and its parents) with mode 0700, so we can write into it; the
 * final mode comes later from io_meta_apply_beneath. An existing directory is fine (its mode is left as
 * it is); an existing non-directory, a symlink included, is -EEXIST. rel "" is the root itself (no-op). */
int io_mkdir_beneath(int rootfd, const char *rel, struct qs_err *err);

/* ---- a cache of open parent directories ------------------------------------------------------ */

/* Entries arrive grouped by directory, so the parent a file needs was usually opened for the file
 * before it: the cache keeps the last IO_DIRCACHE_SLOTS parents open, by path beneath one root, each
 * with its mode and group (a file created in a setgid directory takes its group). One thread uses a
 * cache; a held entry is never evicted. */
#define IO_DIRCACHE_SLOTS 16

struct io_dircache;

/* A cache of directories beneath rootfd (borrowed: it must outlive the cache). Returns 0 or -ENOMEM. */
int io_dircache_new(int rootfd, struct io_dircache **out);
void io_dircache_free(struct io_dircache *dc);

/* A held parent directory (see io_dircache_parent). */
struct io_dirref {
	int fd;
	mode_t mode;
	gid_t gid;
	int slot; /* -1: not cached, fd is the holder's to close (io_dircache_put does) */
};

/* As io_open_parent (checks rel, creates missing parents with mode 0700), but the directory comes
 * from, and is held in, the cache. Returns 0 with *ref filled, or a negative errno with err. */
int io_dircache_parent(struct io_dircache *dc, const char *rel, const char **base, struct io_dirref *ref,
                       struct qs_err *err);

/* Lets go of a held directory. */
void io_dircache_put(struct io_dircache *dc, struct io_dirref *ref);

/* Forgets rel and everything below it (a directory replaced or removed by the caller). */
void io_dircache_forget(struct io_dircache *dc, const char *rel);

/* Metadata to apply to a finished entry. */
struct io_meta {
	uint32_t mode; /* permission bits (type bits ignored) */
	int64_t mtime_ns;
	uint32_t uid, gid; /* (uint32_t)-1 leaves that one as it is */
	bool set_mode, set_mtime, set_owner;
	bool keep_mode; /* files: an existing regular file under the final name keeps its permission bits */
};

/* A file being received. Preferably an unnamed file (O_TMPFILE) in the target directory: invisible
 * until commit links it in, and gone by itself if the process dies. Where the file system or /proc
 * does not allow that (or IO_WFILE_NAMED is asked for), a temporary ".<name>.qs.XXXXXX", mode 0600,
 * renamed into place at commit. */
struct io_wfile {
	int dirfd;                     /* the target directory */
	struct io_dircache *dc;        /* dirfd is held in this cache (NULL: dirfd is ours to close) */
	struct io_dirref dir;          /* ... as this reference */
	int fd;                        /* the file being written */
	bool unnamed;                  /* fd is an O_TMPFILE: nothing is in the directory yet */
	uint32_t mode;                 /* its permission bits now */
	char tmpname[IO_NAME_MAX + 1]; /* the temporary's name ("" while unnamed) */
	char name[IO_NAME_MAX + 1];
};

#define IO_WFILE_NAMED 0x1u /* a named temporary even where an unnamed file would do */

/* Creates the file for rel beneath rootfd (parents created as io_open_parent does). mode: the
 * permission bits it will end with; an unnamed file is created with them (less the umask, and never
 * setuid/setgid) so that commit needs no chmod, a named temporary is always 0600. Returns 0 or a
 * negative errno with err. */
int io_wfile_open(int rootfd, const char *rel, uint32_t mode, unsigned flags, struct io_wfile *w,
                  struct qs_err *err);

/* The same, with the parent directory from (and held in) dc until commit or abort. */
int io_wfile_open_dc(struct io_dircache *dc, const char *rel, uint32_t mode, unsigned flags,
                     struct io_wfile *w, struct qs_err *err);

/* Positioned write of all len bytes. Returns 0 or a negative errno. */
int io_wfile_pwrite(struct io_wfile *w, const void *buf, size_t len, uint64_t off);

/* Applies meta (owner, mode, mtime: only what differs), optionally fsyncs, and puts the file in place:
 * an unnamed file is linked in under name, or, when name exists, linked under a temporary name and
 * renamed over it; a named temporary is renamed over name. A directory under the final name is never
 * replaced (-EISDIR). Returns 0, or a negative errno (nothing is left behind, the final name as it
 * was). */
int io_wfile_commit(struct io_wfile *w, const struct io_meta *meta, bool do_fsync, struct qs_err *err);

/* io_wfile_commit in its phases, for a caller that flushes on a ring (io_ring_fsync) between them:
 * io_wfile_prepare applies meta; then w->fd may be flushed; io_wfile_place puts the file in place (and
 * closes w->fd); then w->dirfd may be flushed; io_wfile_abort lets go of the directory. Each phase
 * returns 0, or a negative errno with err after aborting w as io_wfile_commit does. */
int io_wfile_prepare(struct io_wfile *w, const struct io_meta *meta, struct qs_err *err);
int io_wfile_place(struct io_wfile *w, struct qs_err *err);

/* The quick check, as rsync's: is rel (beneath dc's root) already a regular file of this size and
 * mtime? Returns 1 when it is, after applying what fix asks for that differs (owner with set_owner,
 * permission bits with set_mode; mtime needs nothing), 0 when it must be sent (absent, another type,
 * different, or its metadata cannot be fixed in place), or a negative errno with err for a path that
 * cannot be looked at. A symlink under the name is never followed. */
int io_unchanged_dc(struct io_dircache *dc, const char *rel, uint64_t size, int64_t mtime_ns,
                    const struct io_meta *fix, struct qs_err *err);

/* The quick check of a symlink: is rel (beneath dc's root) already a symlink to exactly target (and,
 * where want asks for them, with its mtime and owner)? Returns 1 when it is, 0 when it must be sent, or
 * a negative errno with err for a path that cannot be looked at. Nothing is changed. */
int io_link_unchanged_dc(struct io_dircache *dc, const char *rel, const char *target, size_t target_len,
                         const struct io_meta *want, struct qs_err *err);

/* Drops the file and closes everything; the final name is untouched. Safe to call twice. */
void io_wfile_abort(struct io_wfile *w);

/* Creates symlink rel -> target beneath rootfd atomically (temp name + rename), applying mtime and owner
 * to the link itself. */
int io_symlink_beneath(int rootfd, const char *rel, const char *target, const struct io_meta *meta,
                       struct qs_err *err);

/* Applies meta to an existing entry rel beneath rootfd ("" = the root), without following a symlink at
 * the last component (used for directories after their contents are written). */
int io_meta_apply_beneath(int rootfd, const char *rel, const struct io_meta *meta, struct qs_err *err);

/* ---- io_uring: one ring per lane ------------------------------------------------------------ */

/* A write in flight: embedded by the caller in what the write belongs to. done() runs from io_ring_reap
 * (or io_ring_drain) on the ring's thread with res = 0.. bytes written (always len: a short write is
 * reported as -EIO) or a negative errno; the buffer may be reused from then on. */
struct io_ring_op {
	void (*done)(struct io_ring_op *op, int res);
	size_t len; /* set by io_ring_write */
};

struct io_ring;

/* A ring of depth entries. async: every write goes to the kernel's io-wq workers (IOSQE_ASYNC), so the
 * copy into the page cache runs beside the submitting thread instead of inside its submit. Returns 0 or
 * a negative errno (no io_uring here: the caller writes synchronously instead). One thread uses a ring. */
int io_ring_new(unsigned depth, bool async, struct io_ring **out);

/* Waits for every write in flight (calling done), then frees r. NULL is fine. */
void io_ring_free(struct io_ring *r);

/* An eventfd that becomes readable when completions are waiting (poll it beside the socket). */
int io_ring_fd(const struct io_ring *r);

/* Submits a positioned write of buf[0..len) to fd at off. buf must stay untouched, and fd open, until
 * done() (the kernel's worker looks fd up when it runs the write). Returns 0 (the op is the ring's from
 * then on, even if the kernel takes it only at a later submit), or -EBUSY when the ring is full or as
 * many ops are in flight as its completion queue holds (write synchronously then). */
int io_ring_write(struct io_ring *r, struct io_ring_op *op, int fd, const void *buf, size_t len,
                  uint64_t off);

/* Registers n buffers for reads (io_uring fixed buffers: pinned once, not per read). Returns 0 or a
 * negative errno (reads then go to plain buffers). */
struct iovec;
int io_ring_register(struct io_ring *r, const struct iovec *bufs, unsigned n);

/* Submits a positioned read of up to len bytes of fd at off into buf, registered buffer buf_index
 * (or -1 for a plain buffer); done() gets the bytes read (may be short: 0 at the end of the file) or a
 * negative errno. Reads are not sent to io-wq: from the page cache they complete inline; otherwise the
 * kernel queues them itself. Same rules for fd and buf as a write. Returns 0 or -EBUSY. */
int io_ring_read(struct io_ring *r, struct io_ring_op *op, int fd, void *buf, size_t len, uint64_t off,
                 int buf_index);

/* Queues an open of rel (already checked) beneath rootfd for reading, as io_open_beneath opens it
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, O_RDONLY | O_CLOEXEC), and
 * O_NONBLOCK, so that a FIFO found where a file was expected cannot hang the open: the caller clears it
 * once it knows the file is a regular one. done() gets the new fd or a negative errno. From the dentry
 * cache the kernel opens it inline, at the submit; otherwise an io-wq worker looks it up. rel must
 * stay as it is until done() (the kernel copies it when it takes the entry, which is the next submit
 * unless that one fails early). Queued only: many go to the kernel in one io_ring_submit. Returns 0 or
 * -EBUSY (open it at once then). */
int io_ring_open_beneath(struct io_ring *r, struct io_ring_op *op, int rootfd, const char *rel);

/* Queues a read of up to len bytes of fd from offset 0 into buf, then a close of fd that runs however
 * the read ended (the fd is the ring's from now on: never close it yourself; if the kernel refuses the
 * read outright, the ring closes it at once). done() gets the bytes read (short at the end of the
 * file) or a negative errno; the close's outcome is not reported. Queued only, like
 * io_ring_open_beneath. Returns 0, or -EBUSY with fd untouched (still the caller's). */
int io_ring_read_close(struct io_ring *r, struct io_ring_op *op, int fd, void *buf, size_t len);

/* Submits an fsync of fd (always run by an io-wq worker: it blocks until the disk has the data, and
 * many in flight at once share the file system's journal commits). done() gets 0 or a negative errno.
 * fd must stay open until done(). Returns 0 or -EBUSY (fsync synchronously then). */
int io_ring_fsync(struct io_ring *r, struct io_ring_op *op, int fd);

/* At most n io-wq workers for the calling thread's file ops on r (the kernel's default is 4 per CPU,
 * enough for writes; fsyncs wait on the disk rather than the CPU, and more of them at once share more
 * journal commits). Call it from the thread that submits. Returns 0 or a negative errno. */
int io_ring_workers(struct io_ring *r, unsigned n);

/* Submits anything still queued. Returns 0 or a negative errno. */
int io_ring_submit(struct io_ring *r);

/* Submits what earlier calls could not, then calls done() for every completion waiting, then submits
 * what those done() queued; never blocks. Returns how many. */
int io_ring_reap(struct io_ring *r);

/* Submits what is queued and waits until nothing is in flight. */
void io_ring_drain(struct io_ring *r);

/* Writes queued or submitted and not yet reaped. */
unsigned io_ring_inflight(const struct io_ring *r);

/* ---- sender: tree walk ----------------------------------------------------------------------- */

/* One directory of a walk done in pieces (the sender walks each directory as a job of its own, on
 * whichever worker takes it): reads every entry of the directory open as dfd (taken over, closed
 * before returning), in name order, lstats each (fstatat, no symlink followed; entries that vanish
 * meanwhile are skipped) and calls cb with its name, stat and the directory's fd (for readlinkat or
 * openat while cb runs). cb returns 0 to go on or a negative errno to stop. Returns 0 or a negative
 * errno with err. */
int io_dir_read(int dfd, int (*cb)(void *ctx, const char *name, const struct stat *st, int dfd), void *ctx,
                struct qs_err *err);

#endif
