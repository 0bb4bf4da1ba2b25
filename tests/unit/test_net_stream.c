/* Unit tests for net/stream.c: varints, header/metadata, the incremental decoder fed in any chunking,
 * every framing error and limit (each crossed by one), truncation at every byte, and the ack. */
#include "net/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define CHECK_EQ(a, b)                                                                                       \
	do {                                                                                                 \
		long long a_ = (long long)(a), b_ = (long long)(b);                                          \
		checks++;                                                                                    \
		if (a_ != b_) {                                                                              \
			failures++;                                                                          \
			fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a,  \
			        a_, #b, b_);                                                                 \
		}                                                                                            \
	} while (0)

/* ---- helpers ---- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: deterministic per seed, so a failure reproduces */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

/* Any 64-bit digest will do: hashing is the caller's job, the decoder only carries the trailer. */
static uint64_t fnv1a(const uint8_t *p, size_t n)
{
	uint64_t h = UINT64_C(14695981039346656037);
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * UINT64_C(1099511628211);
	return h;
}

static void meta_set(struct net_stream_meta *m, uint32_t file_id, uint32_t flags, const char *path,
                     uint64_t size)
{
	memset(m, 0, sizeof(*m));
	m->file_id = file_id;
	m->flags = flags;
	m->path_len = (uint32_t)strlen(path);
	memcpy(m->path, path, m->path_len + 1);
	m->size = size;
	m->mtime_ns = INT64_C(1700000000123456789);
	m->mode = 0100644;
	m->uid = 1000;
	m->gid = 1000;
}

/* Builds header+meta+data+trailer; returns the length. */
static size_t build_stream(const struct net_stream_meta *m, const uint8_t *data, uint8_t *out, size_t cap)
{
	ssize_t n = net_stream_meta_encode(m, out, cap);
	if (n < 0) {
		fprintf(stderr, "build_stream: encode failed %zd\n", n);
		exit(2);
	}
	if ((size_t)n + m->size + NET_STREAM_TRAILER_LEN > cap) {
		fprintf(stderr, "build_stream: no room\n");
		exit(2);
	}
	if (m->size)
		memcpy(out + n, data, m->size);
	net_stream_trailer_encode(fnv1a(data, m->size), out + n + m->size);
	return (size_t)n + m->size + NET_STREAM_TRAILER_LEN;
}

enum chunking { CH_WHOLE, CH_BYTE, CH_RANDOM };

struct result {
	int rc; /* first negative feed return, else finish's return */
	int metas, ends, datas, batches, bundles;
	size_t fail_at; /* bytes offered before the failing feed call began */
	struct net_stream_meta meta;
	uint8_t *data;
	uint64_t data_len;
	uint64_t hash;
	bool zero_copy; /* every DATA event pointed inside the chunk offered */
	bool in_order;  /* DATA offsets were contiguous, META came first, END last */
	struct qs_err err;
};

/* Feeds in[0..n) to a fresh decoder in the given chunking, then calls finish. */
static void decode(const uint8_t *in, size_t n, enum chunking ch, struct result *r)
{
	struct net_stream_dec *d = malloc(sizeof(*d));
	size_t pos = 0;

	memset(r, 0, sizeof(*r));
	r->data = malloc(n + 1);
	r->zero_copy = r->in_order = true;
	net_stream_dec_init(d);
	while (pos < n) {
		size_t chunk = ch == CH_WHOLE ? n - pos : ch == CH_BYTE ? 1 : 1 + (size_t)(rng() % 97);
		size_t off = 0;
		if (chunk > n - pos)
			chunk = n - pos;
		while (off < chunk) {
			struct net_stream_ev ev;
			ssize_t c = net_stream_dec_feed(d, in + pos + off, chunk - off, &ev, &r->err);
			if (c < 0) {
				r->rc = (int)c;
				r->fail_at = pos + off;
				goto out;
			}
			if (c == 0 && ev.kind == NET_STREAM_EV_NONE) {
				r->in_order = false; /* no progress on non-empty input */
				r->rc = -999;
				goto out;
			}
			switch (ev.kind) {
			case NET_STREAM_EV_META:
				r->metas++;
				if (r->metas != 1 || r->datas || r->ends)
					r->in_order = false;
				r->meta = d->meta;
				break;
			case NET_STREAM_EV_DATA:
				r->datas++;
				if (ev.data != in + pos + off || ev.len != (size_t)c)
					r->zero_copy = false;
				if (ev.offset != r->data_len || r->metas != 1 || r->ends)
					r->in_order = false;
				memcpy(r->data + r->data_len, ev.data, ev.len);
				r->data_len += ev.len;
				break;
			case NET_STREAM_EV_END:
				r->ends++;
				if (r->metas != 1)
					r->in_order = false;
				r->hash = ev.hash;
				break;
			case NET_STREAM_EV_BATCH:
				r->batches++;
				break;
			case NET_STREAM_EV_BUNDLE:
				r->bundles++;
				break;
			case NET_STREAM_EV_NONE:
				break;
			}
			off += (size_t)c;
		}
		pos += chunk;
	}
	r->rc = net_stream_dec_finish(d, &r->err);
out:
	free(d);
}

static void result_free(struct result *r)
{
	free(r->data);
	r->data = NULL;
}

static bool meta_equal(const struct net_stream_meta *a, const struct net_stream_meta *b)
{
	return a->file_id == b->file_id && a->flags == b->flags && a->path_len == b->path_len &&
	       memcmp(a->path, b->path, a->path_len + 1) == 0 && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->mode == b->mode && a->uid == b->uid && a->gid == b->gid &&
	       a->range_off == b->range_off && a->file_size == b->file_size && a->range_idx == b->range_idx &&
	       a->range_count == b->range_count;
}

/* Header (file_id, flags) followed by the raw varint bytes given. */
static size_t raw_header(uint8_t *out, uint32_t file_id, uint32_t flags)
{
	uint8_t b[8] = {
	    (uint8_t)(file_id >> 24), (uint8_t)(file_id >> 16), (uint8_t)(file_id >> 8), (uint8_t)file_id,
	    (uint8_t)(flags >> 24),   (uint8_t)(flags >> 16),   (uint8_t)(flags >> 8),   (uint8_t)flags};
	memcpy(out, b, 8);
	return 8;
}

static size_t put_be64(uint8_t *out, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(v >> (56 - 8 * i));
	return 8;
}

static size_t put_be32(uint8_t *out, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		out[i] = (uint8_t)(v >> (24 - 8 * i));
	return 4;
}

/* A stream built by hand, bypassing the encoder's checks: header, the varint bytes given, path, fixed
 * fields, then data and trailer. */
static size_t raw_stream(uint8_t *out, uint32_t flags, const uint8_t *varint, size_t vlen, const char *path,
                         size_t plen, uint64_t size, const uint8_t *data)
{
	size_t n = raw_header(out, 7, flags);
	memcpy(out + n, varint, vlen);
	n += vlen;
	memcpy(out + n, path, plen);
	n += plen;
	n += put_be64(out + n, size);
	n += put_be64(out + n, 42);
	n += put_be32(out + n, 0100644);
	n += put_be32(out + n, 0);
	n += put_be32(out + n, 0);
	if (data) {
		memcpy(out + n, data, size);
		n += size;
		n += put_be64(out + n, fnv1a(data, size));
	}
	return n;
}

/* ---- tests ---- */

static void test_varint_encode(void)
{
	static const struct {
		uint64_t v;
		size_t len;
		uint8_t bytes[8];
	} cases[] = {
	    {0, 1, {0x00}},
	    {37, 1, {0x25}}, /* RFC 9000 §A.1 examples */
	    {63, 1, {0x3f}},
	    {64, 2, {0x40, 0x40}},
	    {15293, 2, {0x7b, 0xbd}},
	    {16383, 2, {0x7f, 0xff}},
	    {16384, 4, {0x80, 0x00, 0x40, 0x00}},
	    {494878333, 4, {0x9d, 0x7f, 0x3e, 0x7d}},
	    {(UINT64_C(1) << 30) - 1, 4, {0xbf, 0xff, 0xff, 0xff}},
	    {UINT64_C(1) << 30, 8, {0xc0, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00}},
	    {UINT64_C(151288809941952652), 8, {0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c}},
	    {(UINT64_C(1) << 62) - 1, 8, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	};
	uint8_t buf[16];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(buf, 0xaa, sizeof(buf));
		CHECK_EQ(net_varint_encode(cases[i].v, buf, sizeof(buf)), cases[i].len);
		CHECK(memcmp(buf, cases[i].bytes, cases[i].len) == 0);
		CHECK_EQ(buf[cases[i].len], 0xaa); /* nothing written past the varint */
		/* exactly enough room works, one byte less does not */
		CHECK_EQ(net_varint_encode(cases[i].v, buf, cases[i].len), cases[i].len);
		CHECK_EQ(net_varint_encode(cases[i].v, buf, cases[i].len - 1), -ENOSPC);
	}
	CHECK_EQ(net_varint_encode(UINT64_C(1) << 62, buf, sizeof(buf)), -ERANGE);
	CHECK_EQ(net_varint_encode(UINT64_MAX, buf, sizeof(buf)), -ERANGE);
}

/* Decoding varints through the one place the wire carries a large one: path_len. Values within the path
 * limit must round trip; larger ones must be read exactly (the error names the value) and rejected. */
static void test_varint_decode(void)
{
	static const uint64_t vals[] = {1,
	                                63,
	                                64,
	                                16383,
	                                16384,
	                                NET_STREAM_MAX_PATH,
	                                NET_STREAM_MAX_PATH + 1,
	                                (UINT64_C(1) << 30) - 1,
	                                UINT64_C(1) << 30,
	                                UINT64_C(1) << 40,
	                                (UINT64_C(1) << 62) - 1};
	static uint8_t buf[NET_STREAM_MAX_META + 64];
	static char path[NET_STREAM_MAX_PATH + 1];

	memset(path, 'p', sizeof(path));
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		uint8_t vb[8];
		ssize_t vl = net_varint_encode(vals[i], vb, sizeof(vb));
		struct result r;
		size_t n;

		CHECK(vl > 0);
		if (vals[i] <= NET_STREAM_MAX_PATH) {
			n = raw_stream(buf, 0, vb, (size_t)vl, path, (size_t)vals[i], 0, (const uint8_t *)"");
			decode(buf, n, CH_WHOLE, &r);
			CHECK_EQ(r.rc, 0);
			CHECK_EQ(r.meta.path_len, vals[i]);
		} else {
			char want[64];
			n = raw_header(buf, 7, 0);
			memcpy(buf + n, vb, (size_t)vl);
			n += (size_t)vl;
			decode(buf, n, CH_WHOLE, &r);
			CHECK_EQ(r.rc, -ENAMETOOLONG);
			snprintf(want, sizeof(want), "path length %" PRIu64 " ", vals[i]);
			CHECK(strstr(r.err.msg, want) != NULL);
		}
		result_free(&r);
	}

	/* a non-minimal varint (5 as 8 bytes) is accepted */
	{
		const uint8_t vb[8] = {0xc0, 0, 0, 0, 0, 0, 0, 5};
		struct result r;
		size_t n = raw_stream(buf, 0, vb, 8, "a/b/c", 5, 3, (const uint8_t *)"xyz");
		decode(buf, n, CH_BYTE, &r);
		CHECK_EQ(r.rc, 0);
		CHECK_EQ(r.meta.path_len, 5);
		CHECK(strcmp(r.meta.path, "a/b/c") == 0);
		CHECK_EQ(r.data_len, 3);
		result_free(&r);
	}
}

static void roundtrip_meta(const struct net_stream_meta *m)
{
	static uint8_t buf[NET_STREAM_MAX_META + 4096 + 16];
	static uint8_t data[4096];
	struct result r;
	size_t n;

	for (size_t i = 0; i < m->size && i < sizeof(data); i++)
		data[i] = (uint8_t)i;
	n = build_stream(m, data, buf, sizeof(buf));
	for (int ch = CH_WHOLE; ch <= CH_BYTE; ch++) {
		decode(buf, n, (enum chunking)ch, &r);
		CHECK_EQ(r.rc, 0);
		CHECK(meta_equal(&r.meta, m));
		CHECK_EQ(r.ends, 1);
		result_free(&r);
	}
}

static void test_meta_roundtrip(void)
{
	static struct net_stream_meta m;
	static uint8_t buf[NET_STREAM_MAX_META + 16];
	ssize_t n;

	meta_set(&m, 0xdeadbeef, 0,
	         "dir/\xc3\xbcn\xc3\xaf"
	         "c\xc3\xb8"
	         "d\xc3\xa9 \xe6\x96\x87\xe4\xbb\xb6.txt",
	         10);
	m.mtime_ns = INT64_C(-1234567890123456789); /* before the epoch */
	m.mode = 0104755;
	m.uid = 0;
	m.gid = UINT32_MAX;
	roundtrip_meta(&m);

	meta_set(&m, 1, 0, "-leading dash/with spaces  in it", 0);
	m.mtime_ns = INT64_MIN;
	roundtrip_meta(&m);

	meta_set(&m, UINT32_MAX, 0, "x", 1);
	m.mtime_ns = INT64_MAX;
	m.uid = UINT32_MAX;
	roundtrip_meta(&m);

	meta_set(&m, 2, 0, "a", 0);
	m.mtime_ns = -1;
	roundtrip_meta(&m);

	/* exactly NET_STREAM_MAX_PATH bytes: accepted both ways; the encoded length is the largest */
	meta_set(&m, 3, 0, "", 0);
	memset(m.path, 'q', NET_STREAM_MAX_PATH);
	m.path[NET_STREAM_MAX_PATH] = '\0';
	m.path_len = NET_STREAM_MAX_PATH;
	n = net_stream_meta_encode(&m, buf, sizeof(buf));
	CHECK_EQ(n, 8 + 2 + NET_STREAM_MAX_PATH + 28);
	CHECK(n <= NET_STREAM_MAX_META);
	roundtrip_meta(&m);

	/* one more byte: rejected by the encoder (decoder side: test_limits) */
	m.path_len = NET_STREAM_MAX_PATH + 1;
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -ENAMETOOLONG);

	/* a range: its fields travel after the rest, and only with the flag */
	/* the last of 2^20 ranges of a 1 TiB file: L = 2^20, so it is the last MiB */
	meta_set(&m, 7, NET_STREAM_F_RANGE, "big/file", 1u << 20);
	m.range_off = (1ull << 40) - (1u << 20);
	m.file_size = 1ull << 40;
	m.range_idx = NET_STREAM_MAX_RANGES - 1;
	m.range_count = NET_STREAM_MAX_RANGES;
	n = net_stream_meta_encode(&m, buf, sizeof(buf));
	CHECK_EQ(n, 8 + 1 + 8 + 28 + NET_STREAM_RANGE_LEN);
	m.size = 1000; /* (the decoder's data test only needs a few bytes of it) */
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL); /* not the layout's length */
	meta_set(&m, 7, NET_STREAM_F_RANGE, "big/file", 1000);
	m.file_size = 2000;
	m.range_count = 2;
	roundtrip_meta(&m); /* range 0 of 2 */
	m.range_idx = 1;
	m.range_off = 1000;
	roundtrip_meta(&m); /* range 1 of 2 */
	m.range_idx = 0;
	m.range_off = 0;
	/* ranges the encoder will not make (the decoder: test_ranges) */
	m.range_count = 1;
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.range_count = NET_STREAM_MAX_RANGES + 1;
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.range_count = 4;
	m.range_idx = 4;
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.range_idx = 1;
	m.range_off = m.file_size - 999; /* one byte past the end */
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.range_count = 2;
	m.range_off = 999; /* inside the file, but not where the layout puts range 1 */
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.range_off = UINT64_MAX; /* would wrap */
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	meta_set(&m, 7, NET_STREAM_F_RANGE | NET_STREAM_F_DIR, "big/file", 0);
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	/* ASK: regular files and their ranges only */
	meta_set(&m, 7, NET_STREAM_F_ASK | NET_STREAM_F_DIR, "d", 0);
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	meta_set(&m, 7, NET_STREAM_F_ASK | NET_STREAM_F_SYMLINK, "l", 3);
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	meta_set(&m, 7, NET_STREAM_F_ASK, "f", 3);
	CHECK(net_stream_meta_encode(&m, buf, sizeof(buf)) > 0);
	meta_set(&m, 7, NET_STREAM_F_RANGE, "big/file", 0); /* an empty range */
	m.file_size = 10;
	m.range_count = 2;
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);

	/* encoder refusals */
	meta_set(&m, 4, 0, "ok", 0);
	n = net_stream_meta_encode(&m, buf, sizeof(buf));
	CHECK_EQ(n, 8 + 1 + 2 + 28);
	CHECK_EQ(net_stream_meta_encode(&m, buf, (size_t)n), n);
	CHECK_EQ(net_stream_meta_encode(&m, buf, (size_t)n - 1), -ENOSPC);
	CHECK_EQ(net_stream_meta_encode(&m, buf, 0), -ENOSPC);
	m.flags = 1u << 3;
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.flags = 0;
	m.path[1] = '\0'; /* path_len still 2: embedded NUL */
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	meta_set(&m, 4, NET_STREAM_F_DIR, "d", 5);
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	meta_set(&m, 4, NET_STREAM_F_ROOT, "notempty", 0);
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	meta_set(&m, 4, 0, "", 0);
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);
	meta_set(&m, 4, NET_STREAM_F_SYMLINK, "l", 0);
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL);

	/* the trailer is big-endian */
	{
		uint8_t t[NET_STREAM_TRAILER_LEN];
		const uint8_t want[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
		net_stream_trailer_encode(UINT64_C(0x0123456789abcdef), t);
		CHECK(memcmp(t, want, 8) == 0);
	}
}

static void test_stream_roundtrip(void)
{
	const size_t sizes[] = {1, 2, 100, 4096, 65536 + 3};
	static struct net_stream_meta m;

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t cap = sizes[s] + NET_STREAM_MAX_META + 16, n;
		uint8_t *data = malloc(sizes[s]), *buf = malloc(cap);
		struct result r;

		rng_state = 0x9e3779b97f4a7c15u + s;
		for (size_t i = 0; i < sizes[s]; i++)
			data[i] = (uint8_t)rng();
		meta_set(&m, (uint32_t)s, 0, "some dir/file.bin", sizes[s]);
		n = build_stream(&m, data, buf, cap);

		for (int ch = CH_WHOLE; ch <= CH_RANDOM; ch++) {
			for (uint64_t seed = 1; seed <= (ch == CH_RANDOM ? 5u : 1u); seed++) {
				rng_state = seed * 0x2545f4914f6cdd1du;
				decode(buf, n, (enum chunking)ch, &r);
				CHECK_EQ(r.rc, 0);
				CHECK_EQ(r.metas, 1);
				CHECK_EQ(r.ends, 1);
				CHECK(r.zero_copy);
				CHECK(r.in_order);
				CHECK(meta_equal(&r.meta, &m));
				CHECK_EQ(r.data_len, sizes[s]);
				CHECK(memcmp(r.data, data, sizes[s]) == 0);
				CHECK(r.hash == fnv1a(data, sizes[s]));
				if (ch == CH_WHOLE) /* feed hands out all the data in one event */
					CHECK_EQ(r.datas, 1);
				result_free(&r);
			}
		}
		free(data);
		free(buf);
	}
}

static void test_entry_kinds(void)
{
	static struct net_stream_meta m;
	static uint8_t buf[NET_STREAM_MAX_META + NET_STREAM_MAX_PATH + 16];
	static char target[NET_STREAM_MAX_PATH + 2];
	struct result r;
	size_t n;

	/* empty file: META then END, no DATA */
	meta_set(&m, 10, 0, "empty", 0);
	n = build_stream(&m, (const uint8_t *)"", buf, sizeof(buf));
	for (int ch = CH_WHOLE; ch <= CH_BYTE; ch++) {
		decode(buf, n, (enum chunking)ch, &r);
		CHECK_EQ(r.rc, 0);
		CHECK_EQ(r.metas, 1);
		CHECK_EQ(r.datas, 0);
		CHECK_EQ(r.ends, 1);
		CHECK(r.hash == fnv1a(NULL, 0));
		result_free(&r);
	}

	/* directory */
	meta_set(&m, 11, NET_STREAM_F_DIR, "a/dir", 0);
	m.mode = 040755;
	n = build_stream(&m, NULL, buf, sizeof(buf));
	decode(buf, n, CH_BYTE, &r);
	CHECK_EQ(r.rc, 0);
	CHECK(meta_equal(&r.meta, &m));
	CHECK_EQ(r.datas, 0);
	result_free(&r);

	/* the destination root: empty path */
	meta_set(&m, 12, NET_STREAM_F_ROOT | NET_STREAM_F_DIR, "", 0);
	m.mode = 040700;
	n = build_stream(&m, NULL, buf, sizeof(buf));
	CHECK_EQ(n, 8 + 1 + 28 + 8);
	decode(buf, n, CH_BYTE, &r);
	CHECK_EQ(r.rc, 0);
	CHECK(meta_equal(&r.meta, &m));
	CHECK_EQ(r.meta.path[0], '\0');
	result_free(&r);

	/* symlink: the data is the target */
	meta_set(&m, 13, NET_STREAM_F_SYMLINK, "link", 11);
	m.mode = 0120777;
	n = build_stream(&m, (const uint8_t *)"../target/x", buf, sizeof(buf));
	decode(buf, n, CH_BYTE, &r);
	CHECK_EQ(r.rc, 0);
	CHECK(meta_equal(&r.meta, &m));
	CHECK_EQ(r.data_len, 11);
	CHECK(memcmp(r.data, "../target/x", 11) == 0);
	result_free(&r);

	/* symlink target limits: 1 and 4096 accepted, 0 and 4097 rejected */
	memset(target, 't', sizeof(target));
	{
		const uint64_t sz[] = {1, NET_STREAM_MAX_PATH, 0, NET_STREAM_MAX_PATH + 1};
		const int want[] = {0, 0, -EPROTO, -EPROTO};
		const uint8_t v1[1] = {4};
		for (int i = 0; i < 4; i++) {
			n = raw_stream(buf, NET_STREAM_F_SYMLINK, v1, 1, "link", 4, sz[i],
			               (const uint8_t *)target);
			decode(buf, n, CH_WHOLE, &r);
			CHECK_EQ(r.rc, want[i]);
			result_free(&r);
		}
	}
}

static void test_truncation(void)
{
	static struct net_stream_meta m;
	uint8_t buf[256];
	size_t n, meta_len;
	struct result r;

	meta_set(&m, 77, 0, "a/b", 5);
	n = build_stream(&m, (const uint8_t *)"hello", buf, sizeof(buf));
	meta_len = n - 5 - NET_STREAM_TRAILER_LEN;
	for (size_t cut = 0; cut < n; cut++) {
		for (int ch = CH_WHOLE; ch <= CH_BYTE; ch++) {
			decode(buf, cut, (enum chunking)ch, &r);
			CHECK_EQ(r.rc, -EPIPE);
			CHECK_EQ(r.err.code, -EPIPE);
			CHECK_EQ(r.ends, 0);
			if (cut < 8) {
				CHECK(strstr(r.err.msg, "inside the header") != NULL);
			} else if (cut < meta_len) {
				CHECK(strstr(r.err.msg, "inside the metadata") != NULL);
				CHECK(strstr(r.err.msg, "77") != NULL);
			} else if (cut < meta_len + 5) {
				char want[64];
				snprintf(want, sizeof(want), "ended after %zu of 5 data bytes",
				         cut - meta_len);
				CHECK(strstr(r.err.msg, want) != NULL);
				CHECK(strstr(r.err.msg, "a/b") != NULL);
			} else {
				CHECK(strstr(r.err.msg, "inside the trailer") != NULL);
			}
			result_free(&r);
		}
	}
	decode(buf, n, CH_BYTE, &r);
	CHECK_EQ(r.rc, 0);
	result_free(&r);
}

static void test_framing_errors(void)
{
	static struct net_stream_meta m;
	static uint8_t buf[NET_STREAM_MAX_META + 64];
	struct net_stream_dec *d = malloc(sizeof(*d));
	struct net_stream_ev ev;
	struct qs_err err;
	struct result r;
	size_t n;

	/* bytes after the trailer: in the same chunk, and in a later call */
	meta_set(&m, 5, 0, "f", 3);
	n = build_stream(&m, (const uint8_t *)"abc", buf, sizeof(buf));
	buf[n] = 0;
	decode(buf, n + 1, CH_WHOLE, &r);
	CHECK_EQ(r.rc, -EPROTO);
	CHECK(strstr(r.err.msg, "after the trailer") != NULL);
	result_free(&r);
	decode(buf, n + 1, CH_BYTE, &r);
	CHECK_EQ(r.rc, -EPROTO);
	CHECK_EQ(r.ends, 1);
	CHECK_EQ(r.fail_at, n);
	result_free(&r);
	/* a rejected decoder stays rejected */
	net_stream_dec_init(d);
	CHECK_EQ(net_stream_dec_feed(d, buf, 3, &ev, &err), 3);
	buf[5] = 0x80; /* flags byte: unknown bit 15 */
	CHECK_EQ(net_stream_dec_feed(d, buf + 3, n - 3, &ev, &err), -EPROTO);
	CHECK_EQ(net_stream_dec_feed(d, buf + 3, 1, &ev, &err), -EPROTO);
	CHECK(net_stream_dec_finish(d, &err) < 0);

	/* unknown flags, found as soon as the header is in */
	{
		const uint32_t bad[] = {1u << 7, 1u << 31, NET_STREAM_F_BATCH | NET_STREAM_F_ASK,
		                        NET_STREAM_F_BATCH | NET_STREAM_F_DIR};
		for (int i = 0; i < 4; i++) {
			n = raw_header(buf, 9, bad[i]);
			decode(buf, n, CH_BYTE, &r);
			CHECK_EQ(r.rc, -EPROTO);
			CHECK_EQ(r.fail_at, 7);
			CHECK(strstr(r.err.msg, "unknown flag") != NULL);
			CHECK(strstr(r.err.msg, "file_id 9") != NULL);
			result_free(&r);
		}
	}

	/* NUL in the path */
	{
		const uint8_t v[1] = {5};
		n = raw_stream(buf, 0, v, 1, "ab\0cd", 5, 1, (const uint8_t *)"z");
		decode(buf, n, CH_WHOLE, &r);
		CHECK_EQ(r.rc, -EINVAL);
		CHECK(strstr(r.err.msg, "NUL") != NULL);
		CHECK(strstr(r.err.msg, "ab\\x00cd") != NULL);
		result_free(&r);
	}

	/* path_len over the limit by one (2-byte varint), and 2^40 (8-byte varint): rejected as soon as the
	 * varint is complete, without waiting for any path bytes */
	{
		const uint8_t v4097[2] = {0x40 | (NET_STREAM_MAX_PATH + 1) >> 8,
		                          (NET_STREAM_MAX_PATH + 1) & 0xff};
		const uint8_t v2p40[8] = {0xc0, 0, 0x01, 0, 0, 0, 0, 0}; /* 2^40 */
		n = raw_header(buf, 1, 0);
		memcpy(buf + n, v4097, 2);
		decode(buf, n + 2, CH_BYTE, &r);
		CHECK_EQ(r.rc, -ENAMETOOLONG);
		CHECK_EQ(r.fail_at, n + 1);
		result_free(&r);

		memcpy(buf + n, v2p40, 8);
		decode(buf, n + 8, CH_BYTE, &r);
		CHECK_EQ(r.rc, -ENAMETOOLONG);
		CHECK_EQ(r.fail_at, n + 7);
		CHECK(strstr(r.err.msg, "1099511627776") != NULL);
		result_free(&r);
		/* in one big chunk the decoder stops there too: nothing past the varint is looked at */
		memset(buf + n + 8, 0xee, 64);
		decode(buf, n + 8 + 64, CH_WHOLE, &r);
		CHECK_EQ(r.rc, -ENAMETOOLONG);
		result_free(&r);
	}

	/* DIR with size 5; ROOT with a path; a plain entry with no path; DIR|SYMLINK */
	{
		const uint8_t v1[1] = {1}, v0[1] = {0};
		n = raw_stream(buf, NET_STREAM_F_DIR, v1, 1, "d", 1, 5, (const uint8_t *)"12345");
		decode(buf, n, CH_WHOLE, &r);
		CHECK_EQ(r.rc, -EPROTO);
		CHECK(strstr(r.err.msg, "directory") != NULL);
		result_free(&r);
		n = raw_stream(buf, NET_STREAM_F_ROOT, v1, 1, "d", 1, 0, (const uint8_t *)"");
		decode(buf, n, CH_BYTE, &r);
		CHECK_EQ(r.rc, -EPROTO);
		CHECK_EQ(r.fail_at, 8); /* known once path_len is read */
		result_free(&r);
		n = raw_stream(buf, 0, v0, 1, "", 0, 0, (const uint8_t *)"");
		decode(buf, n, CH_BYTE, &r);
		CHECK_EQ(r.rc, -EPROTO);
		result_free(&r);
		n = raw_stream(buf, NET_STREAM_F_DIR | NET_STREAM_F_SYMLINK, v1, 1, "d", 1, 0,
		               (const uint8_t *)"");
		decode(buf, n, CH_BYTE, &r);
		CHECK_EQ(r.rc, -EPROTO);
		result_free(&r);
	}

	/* the path in an error is printed safely: control bytes and invalid UTF-8 are escaped */
	{
		const char evil[] = "x\x1b[31m\n\xff\xc2\x85\xe2\x80\xae\"\\ok\xc3\xa9";
		const uint8_t v[1] = {sizeof(evil) - 1};
		n = raw_stream(buf, NET_STREAM_F_DIR, v, 1, evil, sizeof(evil) - 1, 5,
		               (const uint8_t *)"12345");
		decode(buf, n, CH_WHOLE, &r);
		CHECK_EQ(r.rc, -EPROTO);
		CHECK(strstr(r.err.msg, "x\\x1b[31m\\x0a\\xff\\xc2\\x85\\xe2\\x80\\xae\\\"\\\\ok\xc3\xa9") !=
		      NULL);
		for (const char *c = r.err.msg; *c; c++)
			CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
		result_free(&r);
	}

	/* a long path in an error is cut, and the message still ends cleanly */
	{
		static char longp[NET_STREAM_MAX_PATH];
		const uint8_t v[2] = {0x40 | NET_STREAM_MAX_PATH >> 8, NET_STREAM_MAX_PATH & 0xff};
		memset(longp, 1, sizeof(longp));
		n = raw_stream(buf, NET_STREAM_F_DIR, v, 2, longp, sizeof(longp), 1, (const uint8_t *)"1");
		decode(buf, n, CH_WHOLE, &r);
		CHECK_EQ(r.rc, -EPROTO);
		CHECK(strstr(r.err.msg, "...") != NULL);
		CHECK(strlen(r.err.msg) < QS_ERR_MSG_MAX);
		result_free(&r);
	}

	/* finish on a fresh decoder; feeding nothing is harmless */
	net_stream_dec_init(d);
	CHECK_EQ(net_stream_dec_feed(d, NULL, 0, &ev, &err), 0);
	CHECK_EQ(ev.kind, NET_STREAM_EV_NONE);
	CHECK_EQ(net_stream_dec_finish(d, &err), -EPIPE);
	free(d);
}

/* A batch's header: the decoder says so after exactly its 8 bytes and takes nothing more; the entries
 * that follow are ordinary ASK metadata, each for a decoder of its own. */
static void test_batch(void)
{
	static uint8_t buf[2 * NET_STREAM_MAX_META];
	static struct net_stream_meta m;
	struct net_stream_dec *d = malloc(sizeof(*d));
	struct net_stream_ev ev;
	struct qs_err err;
	struct result r;

	net_stream_batch_encode(buf);
	CHECK_EQ(NET_STREAM_HDR_LEN, 8);
	CHECK(buf[0] == 0 && buf[3] == 0 && buf[7] == NET_STREAM_F_BATCH);
	meta_set(&m, 9, NET_STREAM_F_ASK, "d/f", 100);
	ssize_t k = net_stream_meta_encode(&m, buf + 8, sizeof(buf) - 8);
	CHECK(k > 0);
	/* in one call: the header alone is consumed */
	net_stream_dec_init(d);
	CHECK_EQ(net_stream_dec_feed(d, buf, 8 + (size_t)k, &ev, &err), 8);
	CHECK_EQ(ev.kind, NET_STREAM_EV_BATCH);
	CHECK_EQ(net_stream_dec_feed(d, buf + 8, 0, &ev, &err), 0);
	CHECK_EQ(net_stream_dec_feed(d, buf + 8, (size_t)k, &ev, &err), -EPROTO);
	CHECK(strstr(err.msg, "batch") != NULL);
	/* a byte at a time; then the header's decoder is no judge of where the batch ends */
	decode(buf, 8, CH_BYTE, &r);
	CHECK_EQ(r.batches, 1);
	CHECK_EQ(r.metas, 0);
	CHECK_EQ(r.rc, -EPROTO);
	result_free(&r);
	/* a batch header's file_id is 0 */
	raw_header(buf + 100, 1, NET_STREAM_F_BATCH);
	decode(buf + 100, 8, CH_BYTE, &r);
	CHECK_EQ(r.batches, 0);
	CHECK_EQ(r.rc, -EPROTO);
	CHECK(strstr(r.err.msg, "file_id other than 0") != NULL);
	result_free(&r);
	/* a batch header cut short is a truncated header */
	decode(buf, 5, CH_WHOLE, &r);
	CHECK_EQ(r.batches, 0);
	CHECK_EQ(r.rc, -EPIPE);
	result_free(&r);
	/* the entry, for a fresh decoder: an ASK regular file's metadata */
	net_stream_dec_init(d);
	CHECK_EQ(net_stream_dec_feed(d, buf + 8, (size_t)k, &ev, &err), k);
	CHECK_EQ(ev.kind, NET_STREAM_EV_META);
	CHECK_EQ(d->meta.file_id, 9);
	CHECK_EQ(d->meta.flags, NET_STREAM_F_ASK);
	CHECK(strcmp(d->meta.path, "d/f") == 0);
	free(d);

	/* an entry of a batch: a file that asks (nothing follows), or a symlink that asks with its
	 * target; no trailer either way */
	d = malloc(sizeof(*d));
	meta_set(&m, 3, NET_STREAM_F_ASK | NET_STREAM_F_SYMLINK, "l", 4);
	CHECK_EQ(net_stream_meta_encode(&m, buf, sizeof(buf)), -EINVAL); /* not outside a batch */
	k = net_stream_batch_entry_encode(&m, buf, sizeof(buf));
	CHECK(k > 0);
	memcpy(buf + k, "tgt!", 4);
	net_stream_dec_init_batch_entry(d);
	CHECK(net_stream_dec_idle(d));
	CHECK_EQ(net_stream_dec_feed(d, buf, (size_t)k + 4, &ev, &err), k);
	CHECK_EQ(ev.kind, NET_STREAM_EV_META);
	CHECK(!net_stream_dec_idle(d));
	CHECK_EQ(net_stream_dec_feed(d, buf + k, 4, &ev, &err), 4);
	CHECK_EQ(ev.kind, NET_STREAM_EV_DATA);
	CHECK(ev.offset == 0 && ev.len == 4 && memcmp(ev.data, "tgt!", 4) == 0);
	meta_set(&m, 4, NET_STREAM_F_ASK, "f", 1u << 30);
	k = net_stream_batch_entry_encode(&m, buf, sizeof(buf));
	CHECK(k > 0);
	net_stream_dec_init_batch_entry(d);
	CHECK_EQ(net_stream_dec_feed(d, buf, (size_t)k, &ev, &err), k);
	CHECK_EQ(ev.kind, NET_STREAM_EV_META);
	CHECK_EQ(d->meta.size, 1u << 30);
	/* anything else is refused by the encoder, and by the decoder as soon as the flags are in */
	{
		const uint32_t bad[] = {0, NET_STREAM_F_SYMLINK, NET_STREAM_F_DIR,
		                        NET_STREAM_F_ASK | NET_STREAM_F_RANGE, NET_STREAM_F_BATCH};
		const char *why[] = {"only regular files and symlinks", "only regular files and symlinks",
		                     "only regular files and symlinks", "only regular files and symlinks",
		                     "a batch inside a batch"};
		for (int i = 0; i < 5; i++) {
			meta_set(&m, 5, bad[i] == NET_STREAM_F_BATCH ? 0 : bad[i], "x",
			         bad[i] & NET_STREAM_F_DIR ? 0 : 3);
			if (bad[i] != NET_STREAM_F_BATCH)
				CHECK_EQ(net_stream_batch_entry_encode(&m, buf, sizeof(buf)), -EINVAL);
			raw_header(buf, 5, bad[i]);
			net_stream_dec_init_batch_entry(d);
			CHECK_EQ(net_stream_dec_feed(d, buf, 8, &ev, &err), -EPROTO);
			CHECK(strstr(err.msg, why[i]) != NULL);
		}
	}
	/* a symlink's target of impossible length */
	meta_set(&m, 6, NET_STREAM_F_ASK | NET_STREAM_F_SYMLINK, "l", NET_STREAM_MAX_PATH + 1);
	CHECK_EQ(net_stream_batch_entry_encode(&m, buf, sizeof(buf)), -EINVAL);
	free(d);

	/* a bundle: its header, then whole entries back to back; each entry's decoder takes no more than
	 * its trailer, and refuses what a bundle may not hold */
	d = malloc(sizeof(*d));
	net_stream_bundle_encode(buf);
	CHECK(buf[7] == NET_STREAM_F_BUNDLE);
	decode(buf, 8, CH_BYTE, &r);
	CHECK_EQ(r.bundles, 1);
	result_free(&r);
	{
		size_t n1, n2;
		meta_set(&m, 1, 0, "a", 3);
		n1 = build_stream(&m, (const uint8_t *)"abc", buf, sizeof(buf));
		meta_set(&m, 2, NET_STREAM_F_SYMLINK, "l", 2);
		n2 = build_stream(&m, (const uint8_t *)"tg", buf + n1, sizeof(buf) - n1);
		net_stream_dec_init_bundle_entry(d);
		size_t at = 0;
		int ends = 0;
		while (at < n1 + n2) {
			ssize_t c = net_stream_dec_feed(d, buf + at, n1 + n2 - at, &ev, &err);
			CHECK(c > 0);
			if (c <= 0)
				break;
			at += (size_t)c;
			if (ev.kind == NET_STREAM_EV_END) {
				ends++;
				CHECK_EQ(at,
				         ends == 1 ? n1 : n1 + n2); /* (the next entry's bytes left alone) */
				net_stream_dec_init_bundle_entry(d);
			}
		}
		CHECK_EQ(ends, 2);
		CHECK(net_stream_dec_idle(d));
	}
	{
		const uint32_t bad[] = {NET_STREAM_F_DIR, NET_STREAM_F_ASK, NET_STREAM_F_RANGE,
		                        NET_STREAM_F_BUNDLE};
		for (int i = 0; i < 4; i++) {
			raw_header(buf, 5, bad[i]);
			net_stream_dec_init_bundle_entry(d);
			CHECK_EQ(net_stream_dec_feed(d, buf, 8, &ev, &err), -EPROTO);
			CHECK(strstr(err.msg, "bundle") != NULL);
		}
	}
	meta_set(&m, 7, 0, "big", NET_STREAM_BUNDLE_FILE_MAX + 1);
	k = net_stream_meta_encode(&m, buf, sizeof(buf));
	net_stream_dec_init_bundle_entry(d);
	CHECK_EQ(net_stream_dec_feed(d, buf, (size_t)k, &ev, &err), -EPROTO);
	CHECK(strstr(err.msg, "larger than 256 KiB") != NULL);
	free(d);

	/* the answers: an ack's length, to split HAVE + ack from what follows */
	uint8_t a[NET_STREAM_MAX_ACK + 4];
	ssize_t n = net_stream_ack_encode(NET_STREAM_EIO, "no", a, sizeof(a));
	CHECK_EQ(n, 4);
	CHECK_EQ(net_stream_ack_len(a, (size_t)n), 4);
	a[n] = 'S';
	CHECK_EQ(net_stream_ack_len(a, (size_t)n + 1), 4);
	for (ssize_t cut = 0; cut < n; cut++)
		CHECK_EQ(net_stream_ack_len(a, (size_t)cut), 0);
	a[0] = 9; /* no such status */
	CHECK_EQ(net_stream_ack_len(a, (size_t)n), -EPROTO);
	a[0] = 0;
	a[1] = 0x44; /* a two-byte varint: 0x400 + ... over the message limit */
	a[2] = 0x01;
	CHECK_EQ(net_stream_ack_len(a, 3), -EPROTO);
}

static void test_ack(void)
{
	uint8_t buf[NET_STREAM_MAX_ACK + 16];
	char msg[NET_STREAM_MAX_ACK_MSG + 1];
	static char big[4000];
	uint8_t status;
	ssize_t n;

	n = net_stream_ack_encode(NET_STREAM_EHASH, "hash mismatch for a/b", buf, sizeof(buf));
	CHECK_EQ(n, 1 + 1 + 21);
	CHECK_EQ(net_stream_ack_decode(buf, (size_t)n, &status, msg, sizeof(msg)), 0);
	CHECK_EQ(status, NET_STREAM_EHASH);
	CHECK(strcmp(msg, "hash mismatch for a/b") == 0);
	/* every strict prefix is incomplete; one more byte is malformed */
	for (ssize_t cut = 0; cut < n; cut++)
		CHECK_EQ(net_stream_ack_decode(buf, (size_t)cut, &status, msg, sizeof(msg)), -EAGAIN);
	buf[n] = 'x';
	CHECK_EQ(net_stream_ack_decode(buf, (size_t)n + 1, &status, msg, sizeof(msg)), -EPROTO);
	/* a small message buffer truncates */
	CHECK_EQ(net_stream_ack_decode(buf, (size_t)n, &status, msg, 5), 0);
	CHECK(strcmp(msg, "hash") == 0);
	CHECK_EQ(net_stream_ack_decode(buf, (size_t)n, &status, NULL, 0), 0);
	/* no room */
	CHECK_EQ(net_stream_ack_encode(0, "hash mismatch for a/b", buf, 22), -ENOSPC);
	CHECK_EQ(net_stream_ack_encode(0, "hash mismatch for a/b", buf, 23), 23);

	/* OK with no message, NULL or empty */
	CHECK_EQ(net_stream_ack_encode(NET_STREAM_OK, NULL, buf, sizeof(buf)), 2);
	CHECK_EQ(net_stream_ack_decode(buf, 2, &status, msg, sizeof(msg)), 0);
	CHECK_EQ(status, NET_STREAM_OK);
	CHECK_EQ(msg[0], '\0');
	CHECK_EQ(net_stream_ack_encode(NET_STREAM_OK, "", buf, 2), 2);
	CHECK_EQ(net_stream_ack_encode(NET_STREAM_OK, "", buf, 1), -ENOSPC);

	/* message limit: 1024 passes, longer is cut to 1024 on encode */
	memset(big, 'm', sizeof(big) - 1);
	big[NET_STREAM_MAX_ACK_MSG] = '\0';
	n = net_stream_ack_encode(NET_STREAM_EIO, big, buf, sizeof(buf));
	CHECK_EQ(n, 1 + 2 + NET_STREAM_MAX_ACK_MSG);
	big[NET_STREAM_MAX_ACK_MSG] = 'm';
	n = net_stream_ack_encode(NET_STREAM_EIO, big, buf, sizeof(buf));
	CHECK_EQ(n, 1 + 2 + NET_STREAM_MAX_ACK_MSG);
	CHECK(n <= NET_STREAM_MAX_ACK);
	CHECK_EQ(net_stream_ack_decode(buf, (size_t)n, &status, msg, sizeof(msg)), 0);
	CHECK_EQ(strlen(msg), NET_STREAM_MAX_ACK_MSG);
	CHECK_EQ(status, NET_STREAM_EIO);
	/* the cut does not split a UTF-8 character: "é" straddling byte 1024 is dropped whole */
	big[NET_STREAM_MAX_ACK_MSG - 1] = (char)0xc3;
	big[NET_STREAM_MAX_ACK_MSG] = (char)0xa9;
	n = net_stream_ack_encode(NET_STREAM_EIO, big, buf, sizeof(buf));
	CHECK_EQ(n, 1 + 2 + NET_STREAM_MAX_ACK_MSG - 1);

	/* msg_len over the limit by one: malformed as soon as the varint is read */
	buf[0] = NET_STREAM_EPROTO;
	buf[1] = 0x40 | (NET_STREAM_MAX_ACK_MSG + 1) >> 8;
	buf[2] = (NET_STREAM_MAX_ACK_MSG + 1) & 0xff;
	CHECK_EQ(net_stream_ack_decode(buf, 3, &status, msg, sizeof(msg)), -EPROTO);
	buf[1] = 0x40 | NET_STREAM_MAX_ACK_MSG >> 8;
	buf[2] = NET_STREAM_MAX_ACK_MSG & 0xff;
	CHECK_EQ(net_stream_ack_decode(buf, 3, &status, msg, sizeof(msg)), -EAGAIN);
	/* a huge varint */
	{
		const uint8_t huge[9] = {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
		CHECK_EQ(net_stream_ack_decode(huge, 9, &status, msg, sizeof(msg)), -EPROTO);
		CHECK_EQ(net_stream_ack_decode(huge, 5, &status, msg, sizeof(msg)), -EAGAIN);
	}
	/* unknown status */
	buf[0] = NET_STREAM_EIO + 1;
	buf[1] = 0;
	CHECK_EQ(net_stream_ack_decode(buf, 2, &status, msg, sizeof(msg)), -EPROTO);
	buf[0] = NET_STREAM_EIO;
	CHECK_EQ(net_stream_ack_decode(buf, 2, &status, msg, sizeof(msg)), 0);
	/* control bytes in the peer's words do not reach a terminal */
	n = net_stream_ack_encode(NET_STREAM_EBADPATH, "bad\x1b[2J\npath", buf, sizeof(buf));
	CHECK_EQ(net_stream_ack_decode(buf, (size_t)n, &status, msg, sizeof(msg)), 0);
	CHECK(strcmp(msg, "bad?[2J?path") == 0);
}

/* Range metadata a hostile sender could write: each refused by the decoder with its reason. */
static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void hostile_range(uint32_t flags, uint64_t size, uint64_t off, uint64_t file_size, uint32_t idx,
                          uint32_t count, const char *why)
{
	static uint8_t buf[256];
	struct result r;
	size_t n = raw_header(buf, 5, flags);
	buf[n++] = 1;
	buf[n++] = 'f';
	put64(buf + n, size);
	n += 8;
	put64(buf + n, 0);
	n += 8;
	put32(buf + n, 0100644);
	put32(buf + n + 4, 0);
	put32(buf + n + 8, 0);
	n += 12;
	put64(buf + n, off);
	put64(buf + n + 8, file_size);
	put32(buf + n + 16, idx);
	put32(buf + n + 20, count);
	n += 24;
	decode(buf, n, CH_WHOLE, &r);
	CHECK_EQ(r.rc, -EPROTO);
	if (!strstr(r.err.msg, why))
		fprintf(stderr, "hostile range: \"%s\" does not say \"%s\"\n", r.err.msg, why);
	CHECK(strstr(r.err.msg, why) != NULL);
	result_free(&r);
}

static void test_ranges(void)
{
	const uint32_t R = NET_STREAM_F_RANGE;
	hostile_range(R, 10, 0, 100, 0, 1, "range count outside");
	hostile_range(R, 10, 0, 100, 0, NET_STREAM_MAX_RANGES + 1, "range count outside");
	hostile_range(R, 10, 0, 100, 3, 3, "range index not below");
	hostile_range(R, 10, 91, 100, 1, 3, "past the end");
	hostile_range(R, 10, UINT64_MAX - 5, 100, 1, 3, "past the end");
	hostile_range(R, 101, 0, 100, 0, 3, "past the end");
	hostile_range(R, 0, 0, 100, 0, 3, "empty range");
	hostile_range(R | NET_STREAM_F_SYMLINK, 10, 0, 100, 0, 3, "RANGE on something");
	/* inside the file but off the layout (L = 34 for 100 bytes in 3): overlaps and holes */
	hostile_range(R, 34, 10, 100, 1, 3, "not where the file's layout puts it");
	hostile_range(R, 20, 34, 100, 1, 3, "not where the file's layout puts it");
	hostile_range(R, 33, 0, 100, 0, 3, "not where the file's layout puts it");
	hostile_range(R, 2, 4, 5, 2, 4, "past the end");
	/* a count so large the last range would be empty (L = 1 for 3 bytes in 3 is fine; 3 in 4 is not) */
	hostile_range(R, 1, 0, 3, 0, 4, "not where the file's layout puts it");
	/* the last range, short: fine */
	static struct net_stream_meta m;
	meta_set(&m, 5, R, "f", 32);
	m.range_off = 68;
	m.file_size = 100;
	m.range_idx = 2;
	m.range_count = 3;
	roundtrip_meta(&m);
}

int main(void)
{
	test_varint_encode();
	test_varint_decode();
	test_meta_roundtrip();
	test_stream_roundtrip();
	test_entry_kinds();
	test_truncation();
	test_framing_errors();
	test_ack();
	test_batch();
	test_ranges();
	if (failures) {
		fprintf(stderr, "test_net_stream: %d of %d checks failed\n", failures, checks);
		return 1;
	}
	printf("test_net_stream: all %d checks passed\n", checks);
	return 0;
}
