/* A few parent directories held open beneath the destination root (io/io.h): the receiver gets entries
 * grouped by directory, so the parent of the next file is usually the parent of the last one, and one
 * lookup here replaces an openat2 and a close per file. The fds are opened exactly as io_open_parent
 * opens them (beneath the root, no symlink followed), so holding one changes nothing about what can be
 * reached: an fd names the directory inode, whatever later happens to its path. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"

struct slot {
	char *path; /* relative to the root, "" for the root itself; NULL: free */
	size_t len;
	int fd;
	mode_t mode;
	gid_t gid;
	unsigned refs;
	bool stale; /* forgotten while held: closed when the last holder lets go, never found again */
	uint64_t used;
};

struct io_dircache {
	int rootfd;
	uint64_t tick;
	struct slot s[IO_DIRCACHE_SLOTS];
};

int io_dircache_new(int rootfd, struct io_dircache **out)
{
	struct io_dircache *dc = calloc(1, sizeof(*dc));
	if (!dc)
		return -ENOMEM;
	dc->rootfd = rootfd;
	for (size_t i = 0; i < IO_DIRCACHE_SLOTS; i++)
		dc->s[i].fd = -1;
	*out = dc;
	return 0;
}

static void slot_clear(struct slot *s)
{
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

void io_dircache_free(struct io_dircache *dc)
{
	if (!dc)
		return;
	for (size_t i = 0; i < IO_DIRCACHE_SLOTS; i++)
		slot_clear(&dc->s[i]);
	free(dc);
}

int io_dircache_parent(struct io_dircache *dc, const char *rel, const char **base, struct io_dirref *ref,
                       struct qs_err *err)
{
	int rc;
	ref->fd = -1;
	ref->slot = -1;
	if (!rel)
		return qs_err_set(err, -EINVAL, "no path");
	if ((rc = io_path_check(rel, strlen(rel), err)) < 0)
		return rc;
	const char *slash = strrchr(rel, '/');
	size_t dlen = slash ? (size_t)(slash - rel) : 0;
	*base = slash ? slash + 1 : rel;

	for (size_t i = 0; i < IO_DIRCACHE_SLOTS; i++) {
		struct slot *s = &dc->s[i];
		if (s->path && !s->stale && s->len == dlen && memcmp(s->path, rel, dlen) == 0) {
			s->refs++;
			s->used = ++dc->tick;
			*ref =
			    (struct io_dirref){.fd = s->fd, .mode = s->mode, .gid = s->gid, .slot = (int)i};
			return 0;
		}
	}

	const char *b;
	int fd = io_open_parent(dc->rootfd, rel, &b, err);
	if (fd < 0)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return qs_err_set(err, rc, "cannot stat a directory: %s", strerror(-rc));
	}
	*ref = (struct io_dirref){.fd = fd, .mode = st.st_mode, .gid = st.st_gid, .slot = -1};

	/* a free slot, else the least recently used one nobody holds; all held: not cached */
	struct slot *pick = NULL;
	for (size_t i = 0; i < IO_DIRCACHE_SLOTS; i++) {
		struct slot *s = &dc->s[i];
		if (!s->path) {
			pick = s;
			break;
		}
		if (s->refs == 0 && (!pick || s->used < pick->used))
			pick = s;
	}
	if (!pick)
		return 0;
	char *p = malloc(dlen + 1);
	if (!p)
		return 0; /* uncached is still correct */
	memcpy(p, rel, dlen);
	p[dlen] = '\0';
	slot_clear(pick);
	*pick = (struct slot){.path = p,
	                      .len = dlen,
	                      .fd = fd,
	                      .mode = st.st_mode,
	                      .gid = st.st_gid,
	                      .refs = 1,
	                      .used = ++dc->tick};
	ref->slot = (int)(pick - dc->s);
	return 0;
}

void io_dircache_put(struct io_dircache *dc, struct io_dirref *ref)
{
	if (ref->slot < 0) {
		if (ref->fd >= 0)
			close(ref->fd);
	} else {
		struct slot *s = &dc->s[ref->slot];
		if (s->refs > 0)
			s->refs--;
		if (s->refs == 0 && s->stale)
			slot_clear(s);
	}
	ref->fd = -1;
	ref->slot = -1;
}

void io_dircache_forget(struct io_dircache *dc, const char *rel)
{
	size_t n = strlen(rel);
	for (size_t i = 0; i < IO_DIRCACHE_SLOTS; i++) {
		struct slot *s = &dc->s[i];
		if (!s->path)
			continue;
		bool under = n == 0 || (s->len >= n && memcmp(s->path, rel, n) == 0 &&
		                        (s->len == n || s->path[n] == '/'));
		if (!under)
			continue;
		if (s->refs == 0)
			slot_clear(s);
		else
			s->stale = true;
	}
}
