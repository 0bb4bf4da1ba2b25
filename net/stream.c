/* Data-stream framing: encoders for the header/metadata, trailer and ack, and the incremental decoder
 * that turns QUIC stream bytes into META / DATA / END events. Every byte from the peer is read through
 * the small bounds-checked reader below; DATA events point into the caller's input (no copy). */
#include "net/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define HDR_LEN        ((unsigned)NET_STREAM_HDR_LEN) /* u32 file_id, u32 flags */
#define META_FIXED_LEN (8u + 8u + 4u + 4u + 4u)       /* size, mtime_ns, mode, uid, gid */
#define VARINT_MAX_LEN 8u
#define VARINT_MAX     ((UINT64_C(1) << 62) - 1)
#define SYMLINK_MAX    NET_STREAM_MAX_PATH /* longest symlink target we carry */
#define ERR_PATH_MAX   120u                /* escaped path chars shown in an error */

/* decoder states; a negative state is the sticky errno of a rejected stream */
enum { ST_META = 0, ST_DATA, ST_TRAILER, ST_END, ST_BATCH };

_Static_assert(NET_STREAM_MAX_META >= HDR_LEN + VARINT_MAX_LEN + NET_STREAM_MAX_PATH + META_FIXED_LEN,
               "decoder buffer must hold the largest header+metadata");
_Static_assert(NET_STREAM_MAX_META >= NET_STREAM_TRAILER_LEN, "decoder buffer must hold the trailer");

/* ---- bounds-checked reader: each get_* returns false on underrun and then leaves the span alone ---- */

struct rd {
	const uint8_t *p;
	size_t len;
};

static bool get_u8(struct rd *r, uint8_t *v)
{
	if (r->len < 1)
		return false;
	*v = r->p[0];
	r->p++;
	r->len--;
	return true;
}

static bool get_u32(struct rd *r, uint32_t *v)
{
	if (r->len < 4)
		return false;
	*v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	r->len -= 4;
	return true;
}

static bool get_u64(struct rd *r, uint64_t *v)
{
	uint32_t hi, lo;
	struct rd save = *r;

	if (!get_u32(r, &hi) || !get_u32(r, &lo)) {
		*r = save;
		return false;
	}
	*v = (uint64_t)hi << 32 | lo;
	return true;
}

/* Length of the varint whose first byte is b (RFC 9000 §16: the top two bits). */
static size_t varint_len(uint8_t b)
{
	return (size_t)1 << (b >> 6);
}

/* Non-minimal encodings are accepted, as RFC 9000 allows. */
static bool get_varint(struct rd *r, uint64_t *v)
{
	size_t n;
	uint64_t x;

	if (r->len < 1)
		return false;
	n = varint_len(r->p[0]);
	if (r->len < n)
		return false;
	x = r->p[0] & 0x3f;
	for (size_t i = 1; i < n; i++)
		x = x << 8 | r->p[i];
	r->p += n;
	r->len -= n;
	*v = x;
	return true;
}

static bool get_bytes(struct rd *r, size_t n, const uint8_t **out)
{
	if (r->len < n)
		return false;
	*out = r->p;
	r->p += n;
	r->len -= n;
	return true;
}

/* ---- writer for the encoders: records overflow instead of writing past cap ---- */

struct wr {
	uint8_t *p;
	size_t cap;
	size_t len;
	bool overflow;
};

static void put_bytes(struct wr *w, const void *src, size_t n)
{
	if (w->overflow || w->cap - w->len < n) {
		w->overflow = true;
		return;
	}
	if (n)
		memcpy(w->p + w->len, src, n);
	w->len += n;
}

static void put_u32(struct wr *w, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	put_bytes(w, b, sizeof(b));
}

static void put_u64(struct wr *w, uint64_t v)
{
	put_u32(w, (uint32_t)(v >> 32));
	put_u32(w, (uint32_t)v);
}

static void put_varint(struct wr *w, uint64_t v)
{
	uint8_t b[VARINT_MAX_LEN];
	ssize_t n = net_varint_encode(v, b, sizeof(b));

	if (n < 0) {
		w->overflow = true;
		return;
	}
	put_bytes(w, b, (size_t)n);
}

ssize_t net_varint_decode(const uint8_t *p, size_t n, uint64_t *v)
{
	struct rd r = {p, n};
	if (!get_varint(&r, v))
		return 0;
	return (ssize_t)(n - r.len);
}

ssize_t net_varint_encode(uint64_t v, uint8_t *buf, size_t cap)
{
	size_t n;
	uint8_t prefix;

	if (v > VARINT_MAX)
		return -ERANGE;
	if (v < (UINT64_C(1) << 6)) {
		n = 1;
		prefix = 0x00;
	} else if (v < (UINT64_C(1) << 14)) {
		n = 2;
		prefix = 0x40;
	} else if (v < (UINT64_C(1) << 30)) {
		n = 4;
		prefix = 0x80;
	} else {
		n = 8;
		prefix = 0xc0;
	}
	if (cap < n)
		return -ENOSPC;
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	buf[0] |= prefix;
	return (ssize_t)n;
}

/* ---- safe printing of peer-supplied paths ---- */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if the bytes there are not valid UTF-8. */
static size_t utf8_seq_len(const uint8_t *p, size_t n)
{
	size_t len;
	uint8_t lo = 0x80, hi = 0xbf;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	/* the second byte's range excludes overlongs, surrogates and code points past U+10FFFF */
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/* A valid sequence that would still fool a terminal: C1 controls, bidi overrides and isolates,
 * line/paragraph separators. */
static bool utf8_is_unsafe(const uint8_t *p, size_t len)
{
	if (len == 2 && p[0] == 0xc2 && p[1] < 0xa0)
		return true;
	if (len == 3 && p[0] == 0xe2 && p[1] == 0x80 && p[2] >= 0xa8 && p[2] <= 0xae)
		return true;
	if (len == 3 && p[0] == 0xe2 && p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9)
		return true;
	return false;
}

/* Writes a printable rendering of p[0..n) into out: control bytes, invalid UTF-8, quotes and
 * backslashes become \xNN / \" / \\; a long path is cut with "...". */
static void escape_path(const uint8_t *p, size_t n, char *out, size_t cap)
{
	size_t o = 0, i = 0;

	while (i < n) {
		char tmp[8];
		size_t tl, sl = utf8_seq_len(p + i, n - i);

		if (sl == 0 || (sl == 1 && (p[i] < 0x20 || p[i] == 0x7f)) || utf8_is_unsafe(p + i, sl)) {
			sl = 1;
			tl = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
		} else if (p[i] == '"' || p[i] == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)p[i];
			tl = 2;
		} else {
			memcpy(tmp, p + i, sl);
			tl = sl;
		}
		if (o + tl + 4 > cap) { /* room for "..." and the NUL */
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, tmp, tl);
		o += tl;
		i += sl;
	}
	out[o] = '\0';
}

/* ---- encoders ---- */

/* The flags a batch's entry may have: a regular file or a symlink that asks. */
static int check_batch_flags(uint32_t flags, const char **why)
{
	if (flags == NET_STREAM_F_ASK || flags == (NET_STREAM_F_ASK | NET_STREAM_F_SYMLINK))
		return 0;
	*why = flags == NET_STREAM_F_BATCH ? "a batch inside a batch"
	                                   : "a batch holds only regular files and symlinks that ask";
	return -EPROTO;
}

/* Framing rules shared by the encoder and the decoder; returns 0 or the errno and a reason. */
static int check_flags_size(uint32_t flags, uint64_t size, bool batch_entry, const char **why)
{
	if (batch_entry) {
		if (check_batch_flags(flags, why))
			return -EPROTO;
		if ((flags & NET_STREAM_F_SYMLINK) && (size == 0 || size > SYMLINK_MAX)) {
			*why = "symlink target size outside 1..4096";
			return -EPROTO;
		}
		return 0;
	}
	if ((flags & NET_STREAM_F_DIR) && (flags & NET_STREAM_F_SYMLINK)) {
		*why = "both DIR and SYMLINK flags set";
		return -EPROTO;
	}
	if ((flags & NET_STREAM_F_DIR) && size != 0) {
		*why = "directory entry with non-zero size";
		return -EPROTO;
	}
	if ((flags & NET_STREAM_F_SYMLINK) && (size == 0 || size > SYMLINK_MAX)) {
		*why = "symlink target size outside 1..4096";
		return -EPROTO;
	}
	if ((flags & NET_STREAM_F_ASK) &&
	    (flags & (NET_STREAM_F_DIR | NET_STREAM_F_SYMLINK | NET_STREAM_F_ROOT))) {
		*why = "ASK on something that is not a regular file";
		return -EPROTO;
	}
	if ((flags & NET_STREAM_F_RANGE) &&
	    (flags & (NET_STREAM_F_DIR | NET_STREAM_F_SYMLINK | NET_STREAM_F_ROOT))) {
		*why = "RANGE on something that is not a regular file";
		return -EPROTO;
	}
	if ((flags & NET_STREAM_F_RANGE) && size == 0) {
		*why = "empty range";
		return -EPROTO;
	}
	return 0;
}

/* The range fields against each other: a range inside its file, an index inside its count. */
static int check_range(const struct net_stream_meta *m, const char **why)
{
	if (!(m->flags & NET_STREAM_F_RANGE))
		return 0;
	if (m->range_count < 2 || m->range_count > NET_STREAM_MAX_RANGES) {
		*why = "range count outside 2..1048576";
		return -EPROTO;
	}
	if (m->range_idx >= m->range_count) {
		*why = "range index not below the range count";
		return -EPROTO;
	}
	if (m->range_off > m->file_size || m->size > m->file_size - m->range_off) {
		*why = "range reaches past the end of its file";
		return -EPROTO;
	}
	/* The one layout: range i is [i*L, min((i+1)*L, file_size)) with L = ceil(file_size / count), and
	 * every range non-empty. So distinct indexes never overlap, and all of them tile the file. */
	uint64_t unit = m->file_size / m->range_count + (m->file_size % m->range_count != 0);
	uint64_t start, last;
	if (__builtin_mul_overflow((uint64_t)m->range_idx, unit, &start) ||
	    __builtin_mul_overflow((uint64_t)(m->range_count - 1), unit, &last) || last >= m->file_size ||
	    m->range_off != start || m->size != (m->file_size - start < unit ? m->file_size - start : unit)) {
		*why = "range is not where the file's layout puts it";
		return -EPROTO;
	}
	return 0;
}

static int check_flags_path(uint32_t flags, uint64_t path_len, const char **why)
{
	if ((flags & NET_STREAM_F_ROOT) && path_len != 0) {
		*why = "ROOT entry with a non-empty path";
		return -EPROTO;
	}
	if (!(flags & NET_STREAM_F_ROOT) && path_len == 0) {
		*why = "empty path on a non-ROOT entry";
		return -EPROTO;
	}
	return 0;
}

static ssize_t meta_encode(const struct net_stream_meta *m, bool batch_entry, uint8_t *buf, size_t cap)
{
	struct wr w = {buf, cap, 0, false};
	const char *why;

	if (m->path_len > NET_STREAM_MAX_PATH)
		return -ENAMETOOLONG;
	if (m->flags & ~NET_STREAM_F_KNOWN)
		return -EINVAL;
	if (memchr(m->path, '\0', m->path_len))
		return -EINVAL;
	/* never produce what the decoder rejects */
	if (check_flags_path(m->flags, m->path_len, &why) ||
	    check_flags_size(m->flags, m->size, batch_entry, &why) || check_range(m, &why))
		return -EINVAL;

	put_u32(&w, m->file_id);
	put_u32(&w, m->flags);
	put_varint(&w, m->path_len);
	put_bytes(&w, m->path, m->path_len);
	put_u64(&w, m->size);
	put_u64(&w, (uint64_t)m->mtime_ns); /* two's complement, well defined for the conversion */
	put_u32(&w, m->mode);
	put_u32(&w, m->uid);
	put_u32(&w, m->gid);
	if (m->flags & NET_STREAM_F_RANGE) {
		put_u64(&w, m->range_off);
		put_u64(&w, m->file_size);
		put_u32(&w, m->range_idx);
		put_u32(&w, m->range_count);
	}
	if (w.overflow)
		return -ENOSPC;
	return (ssize_t)w.len;
}

ssize_t net_stream_meta_encode(const struct net_stream_meta *m, uint8_t *buf, size_t cap)
{
	return meta_encode(m, false, buf, cap);
}

ssize_t net_stream_batch_entry_encode(const struct net_stream_meta *m, uint8_t *buf, size_t cap)
{
	return meta_encode(m, true, buf, cap);
}

void net_stream_batch_encode(uint8_t out[NET_STREAM_HDR_LEN])
{
	struct wr w = {out, NET_STREAM_HDR_LEN, 0, false};
	put_u32(&w, 0);
	put_u32(&w, NET_STREAM_F_BATCH);
}

void net_stream_bundle_encode(uint8_t out[NET_STREAM_HDR_LEN])
{
	struct wr w = {out, NET_STREAM_HDR_LEN, 0, false};
	put_u32(&w, 0);
	put_u32(&w, NET_STREAM_F_BUNDLE);
}

void net_stream_trailer_encode(uint64_t hash, uint8_t out[NET_STREAM_TRAILER_LEN])
{
	for (size_t i = 0; i < NET_STREAM_TRAILER_LEN; i++)
		out[i] = (uint8_t)(hash >> (8 * (NET_STREAM_TRAILER_LEN - 1 - i)));
}

/* ---- decoder ---- */

void net_stream_dec_init(struct net_stream_dec *d)
{
	d->state = ST_META;
	d->have = 0;
	d->data_done = 0;
	d->batch_entry = d->bundle_entry = false;
	memset(&d->meta, 0, sizeof(d->meta));
}

void net_stream_dec_init_bundle_entry(struct net_stream_dec *d)
{
	net_stream_dec_init(d);
	d->bundle_entry = true;
}

void net_stream_dec_init_batch_entry(struct net_stream_dec *d)
{
	net_stream_dec_init(d);
	d->batch_entry = true;
}

bool net_stream_dec_idle(const struct net_stream_dec *d)
{
	return d->state == ST_META && d->have == 0;
}

static int64_t u64_to_i64(uint64_t u)
{
	/* two's complement without relying on implementation-defined conversion */
	if (u <= (uint64_t)INT64_MAX)
		return (int64_t)u;
	return -(int64_t)(~u) - 1;
}

/* Records a rejection: the decoder stays failed, err names the stream. */
static int dec_fail(struct net_stream_dec *d, struct qs_err *err, int code, const char *why)
{
	char path[ERR_PATH_MAX + 4];

	d->state = code;
	if (d->meta.path_len || (d->meta.flags & NET_STREAM_F_ROOT)) {
		escape_path((const uint8_t *)d->meta.path, d->meta.path_len, path, sizeof(path));
		return qs_err_set(err, code, "stream for file_id %" PRIu32 " (path \"%s\"): %s",
		                  d->meta.file_id, path, why);
	}
	return qs_err_set(err, code, "stream for file_id %" PRIu32 ": %s", d->meta.file_id, why);
}

/* How many header+metadata bytes must be gathered before we learn more. Sets *need; *complete when
 * path_len is known so *need is the whole header+metadata. Checks each field as soon as it is readable. */
static int meta_need(struct net_stream_dec *d, size_t *need, bool *complete, struct qs_err *err)
{
	struct rd r = {d->buf, d->have};
	uint32_t flags;
	uint64_t path_len;
	const char *why;
	char msg[96];
	int rc;

	*complete = false;
	if (!get_u32(&r, &d->meta.file_id) || !get_u32(&r, &flags)) {
		*need = HDR_LEN;
		return 0;
	}
	if (d->batch_entry && check_batch_flags(flags, &why))
		return dec_fail(d, err, -EPROTO, why);
	if (d->bundle_entry && flags != 0 && flags != NET_STREAM_F_SYMLINK)
		return dec_fail(d, err, -EPROTO,
		                flags == NET_STREAM_F_BUNDLE || flags == NET_STREAM_F_BATCH
		                    ? "a bundle or batch inside a bundle"
		                    : "a bundle holds only regular files and symlinks, not asking");
	bool group = flags == NET_STREAM_F_BATCH || flags == NET_STREAM_F_BUNDLE;
	if (group && d->meta.file_id != 0)
		return dec_fail(d, err, -EPROTO, "a batch's or bundle's header has a file_id other than 0");
	if (group) { /* the header is all of it */
		d->meta.flags = flags;
		*need = HDR_LEN;
		*complete = true;
		return 0;
	}
	if (flags & ~NET_STREAM_F_KNOWN) {
		snprintf(msg, sizeof(msg), "unknown flag bits 0x%" PRIx32, flags & ~NET_STREAM_F_KNOWN);
		return dec_fail(d, err, -EPROTO, msg);
	}
	if (r.len == 0) {
		*need = HDR_LEN + 1;
		return 0;
	}
	if (!get_varint(&r, &path_len)) {
		*need = HDR_LEN + varint_len(r.p[0]);
		return 0;
	}
	if (path_len > NET_STREAM_MAX_PATH) {
		snprintf(msg, sizeof(msg), "path length %" PRIu64 " over the limit of %d bytes", path_len,
		         NET_STREAM_MAX_PATH);
		return dec_fail(d, err, -ENAMETOOLONG, msg);
	}
	rc = check_flags_path(flags, path_len, &why);
	if (rc)
		return dec_fail(d, err, rc, why);
	*need = HDR_LEN + varint_len(d->buf[HDR_LEN]) + (size_t)path_len + META_FIXED_LEN +
	        ((flags & NET_STREAM_F_RANGE) ? NET_STREAM_RANGE_LEN : 0);
	*complete = true;
	return 0;
}

/* Parses the gathered header+metadata (all of it is in buf) into d->meta. */
static int meta_parse(struct net_stream_dec *d, struct qs_err *err)
{
	struct net_stream_meta *m = &d->meta;
	struct rd r = {d->buf, d->have};
	uint64_t path_len, mtime;
	const uint8_t *path;
	const char *why;
	int rc;

	if (!get_u32(&r, &m->file_id) || !get_u32(&r, &m->flags) || !get_varint(&r, &path_len) ||
	    path_len > NET_STREAM_MAX_PATH || !get_bytes(&r, (size_t)path_len, &path) ||
	    !get_u64(&r, &m->size) || !get_u64(&r, &mtime) || !get_u32(&r, &m->mode) ||
	    !get_u32(&r, &m->uid) || !get_u32(&r, &m->gid))
		return dec_fail(d, err, -EPROTO, "metadata does not parse"); /* meta_need guards this */
	if ((m->flags & NET_STREAM_F_RANGE) && (!get_u64(&r, &m->range_off) || !get_u64(&r, &m->file_size) ||
	                                        !get_u32(&r, &m->range_idx) || !get_u32(&r, &m->range_count)))
		return dec_fail(d, err, -EPROTO, "range fields do not parse");
	if (r.len != 0)
		return dec_fail(d, err, -EPROTO, "metadata does not parse");
	m->path_len = (uint32_t)path_len;
	memcpy(m->path, path, m->path_len);
	m->path[m->path_len] = '\0';
	m->mtime_ns = u64_to_i64(mtime);
	if (memchr(m->path, '\0', m->path_len))
		return dec_fail(d, err, -EINVAL, "NUL byte inside the path");
	rc = check_flags_size(m->flags, m->size, d->batch_entry, &why);
	if (rc == 0 && d->bundle_entry && m->size > NET_STREAM_BUNDLE_FILE_MAX) {
		why = "a file in a bundle larger than 256 KiB";
		rc = -EPROTO;
	}
	if (rc == 0)
		rc = check_range(m, &why);
	if (rc)
		return dec_fail(d, err, rc, why);
	return 0;
}

ssize_t net_stream_dec_feed(struct net_stream_dec *d, const uint8_t *p, size_t n, struct net_stream_ev *ev,
                            struct qs_err *err)
{
	size_t used = 0, need = 0, take;
	bool complete = false;
	uint64_t left;
	int rc;

	memset(ev, 0, sizeof(*ev));
	if (d->state < 0)
		return qs_err_set(err, d->state, "stream for file_id %" PRIu32 " was already rejected",
		                  d->meta.file_id);

	switch (d->state) {
	case ST_META:
		for (;;) {
			rc = meta_need(d, &need, &complete, err);
			if (rc < 0)
				return rc;
			if (complete && d->have == need)
				break;
			if (used == n)
				return (ssize_t)used; /* EV_NONE: need more bytes */
			take = need - d->have;
			if (take > n - used)
				take = n - used;
			memcpy(d->buf + d->have, p + used, take);
			d->have += take;
			used += take;
		}
		if (d->meta.flags == NET_STREAM_F_BATCH || d->meta.flags == NET_STREAM_F_BUNDLE) {
			d->have = 0;
			d->state = ST_BATCH;
			ev->kind =
			    d->meta.flags == NET_STREAM_F_BATCH ? NET_STREAM_EV_BATCH : NET_STREAM_EV_BUNDLE;
			return (ssize_t)used;
		}
		rc = meta_parse(d, err);
		if (rc < 0)
			return rc;
		d->have = 0;
		if (d->batch_entry) /* a symlink's target follows; a file's data does not */
			d->state = (d->meta.flags & NET_STREAM_F_SYMLINK) ? ST_DATA : ST_END;
		else
			d->state = d->meta.size ? ST_DATA : ST_TRAILER;
		ev->kind = NET_STREAM_EV_META;
		return (ssize_t)used;

	case ST_DATA:
		left = d->meta.size - d->data_done;
		take = n < left ? n : (size_t)left;
		if (take == 0)
			return 0;
		ev->kind = NET_STREAM_EV_DATA;
		ev->data = p;
		ev->len = take;
		ev->offset = d->data_done;
		d->data_done += take;
		if (d->data_done == d->meta.size)
			d->state = d->batch_entry ? ST_END : ST_TRAILER; /* (a batch's entries have none) */
		return (ssize_t)take;

	case ST_TRAILER: {
		struct rd r = {d->buf, NET_STREAM_TRAILER_LEN};

		take = NET_STREAM_TRAILER_LEN - d->have;
		if (take > n)
			take = n;
		if (take)
			memcpy(d->buf + d->have, p, take);
		d->have += take;
		if (d->have < NET_STREAM_TRAILER_LEN)
			return (ssize_t)take;
		if (n > take && !d->bundle_entry) { /* (in a bundle, the next entry) */
			char msg[64];
			snprintf(msg, sizeof(msg), "%zu bytes after the trailer", n - take);
			return dec_fail(d, err, -EPROTO, msg);
		}
		get_u64(&r, &ev->hash);
		ev->kind = NET_STREAM_EV_END;
		d->state = ST_END;
		return (ssize_t)take;
	}

	case ST_BATCH:
		if (n == 0)
			return 0;
		return dec_fail(d, err, -EPROTO,
		                "a batch's or bundle's entries are not read by its header's decoder");

	case ST_END:
		if (n == 0)
			return 0;
		{
			char msg[64];
			snprintf(msg, sizeof(msg), "%zu bytes after the trailer", n);
			return dec_fail(d, err, -EPROTO, msg);
		}
	}
	return qs_err_set(err, -EPROTO, "stream decoder in an unknown state %d", d->state);
}

int net_stream_dec_finish(const struct net_stream_dec *d, struct qs_err *err)
{
	const struct net_stream_meta *m = &d->meta;
	char path[ERR_PATH_MAX + 4];

	if (d->state == ST_END) {
		qs_err_clear(err);
		return 0;
	}
	if (d->state < 0)
		return qs_err_set(err, d->state, "stream for file_id %" PRIu32 " was already rejected",
		                  m->file_id);
	if (d->state == ST_META) {
		if (d->have < HDR_LEN)
			return qs_err_set(err, -EPIPE, "stream ended inside the header (%zu of %u bytes)",
			                  d->have, HDR_LEN);
		return qs_err_set(err, -EPIPE, "stream for file_id %" PRIu32 " ended inside the metadata",
		                  m->file_id);
	}
	if (d->state == ST_BATCH)
		return qs_err_set(err, -EPROTO, "a batch or bundle ends where its last entry does, not here");
	escape_path((const uint8_t *)m->path, m->path_len, path, sizeof(path));
	if (d->state == ST_DATA)
		return qs_err_set(err, -EPIPE,
		                  "stream for file_id %" PRIu32 " (path \"%s\") ended after %" PRIu64
		                  " of %" PRIu64 " data bytes",
		                  m->file_id, path, d->data_done, m->size);
	return qs_err_set(err, -EPIPE,
	                  "stream for file_id %" PRIu32
	                  " (path \"%s\") ended inside the trailer (%zu of %u bytes)",
	                  m->file_id, path, d->have, NET_STREAM_TRAILER_LEN);
}

/* ---- ack ---- */

ssize_t net_stream_ack_encode(uint8_t status, const char *msg, uint8_t *buf, size_t cap)
{
	struct wr w = {buf, cap, 0, false};
	size_t len = msg ? strlen(msg) : 0;

	if (len > NET_STREAM_MAX_ACK_MSG) {
		len = NET_STREAM_MAX_ACK_MSG;
		/* cut on a UTF-8 character boundary, not inside one */
		for (int i = 0; i < 3 && len > 0 && ((uint8_t)msg[len] & 0xc0) == 0x80; i++)
			len--;
	}
	put_bytes(&w, &status, 1);
	put_varint(&w, len);
	put_bytes(&w, msg, len);
	if (w.overflow)
		return -ENOSPC;
	return (ssize_t)w.len;
}

ssize_t net_stream_ack_len(const uint8_t *p, size_t n)
{
	struct rd r = {p, n};
	uint8_t status;
	uint64_t len;
	const uint8_t *text;

	if (!get_u8(&r, &status) || !get_varint(&r, &len))
		return 0;
	if (status > NET_STREAM_EIO || len > NET_STREAM_MAX_ACK_MSG)
		return -EPROTO;
	if (!get_bytes(&r, (size_t)len, &text))
		return 0;
	return (ssize_t)(n - r.len);
}

int net_stream_ack_decode(const uint8_t *p, size_t n, uint8_t *status, char *msg, size_t msgcap)
{
	struct rd r = {p, n};
	uint64_t len;
	const uint8_t *text;
	size_t out;

	if (!get_u8(&r, status) || !get_varint(&r, &len))
		return -EAGAIN;
	if (*status > NET_STREAM_EIO || len > NET_STREAM_MAX_ACK_MSG)
		return -EPROTO;
	if (!get_bytes(&r, (size_t)len, &text))
		return -EAGAIN;
	if (r.len != 0)
		return -EPROTO; /* the ack is the last thing on the stream */
	if (msgcap == 0)
		return 0;
	out = (size_t)len < msgcap - 1 ? (size_t)len : msgcap - 1;
	/* the peer's words end up on a terminal: control bytes become '?' */
	for (size_t i = 0; i < out; i++)
		msg[i] = (char)((text[i] < 0x20 || text[i] == 0x7f) ? '?' : text[i]);
	msg[out] = '\0';
	return 0;
}
