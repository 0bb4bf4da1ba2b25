/* libFuzzer target for the data-stream decoder (net/stream.c). The input's first byte says how many of
 * the following bytes are chunk sizes; the rest is the stream, fed in those chunks (cycled), each one
 * copied to its own exact-size allocation so ASan sees any read past it. Then finish is called.
 * Besides crashes it checks the decoder's promises: progress, META once and first, DATA contiguous and
 * inside the input, END last, a decoded META that re-encodes and decodes to itself, and the ack parser.
 * A first byte of 0xc0 or more decodes one entry of a batch instead (no trailer; only ASK files and
 * ASK symlinks, the latter with their target as DATA); 0x80..0xbf the entries of a bundle, one after
 * the other (each a whole entry of a file or symlink, a fresh decoder after each END).
 *   clang -fsanitize=fuzzer,address -I. tests/fuzz/fuzz_net_stream.c net/stream.c common/err.c */
#include "net/stream.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIZES 8

#define REQUIRE(c)                                                                                           \
	do {                                                                                                 \
		if (!(c))                                                                                    \
			__builtin_trap();                                                                    \
	} while (0)

static struct net_stream_dec dec, dec2;

/* A META the decoder accepted must be one the encoder can write, and it must read back the same. */
static void check_meta(const struct net_stream_meta *m, bool batch)
{
	static uint8_t buf[NET_STREAM_MAX_META];
	struct net_stream_ev ev;
	struct qs_err err;
	ssize_t n, c;

	REQUIRE(m->path_len <= NET_STREAM_MAX_PATH);
	REQUIRE(m->path[m->path_len] == '\0');
	REQUIRE(strlen(m->path) == m->path_len);
	REQUIRE(!(m->flags & ~NET_STREAM_F_KNOWN));
	REQUIRE(!(m->flags & NET_STREAM_F_DIR) || m->size == 0);
	if (batch)
		REQUIRE(m->flags == NET_STREAM_F_ASK ||
		        m->flags == (NET_STREAM_F_ASK | NET_STREAM_F_SYMLINK));
	n = batch ? net_stream_batch_entry_encode(m, buf, sizeof(buf))
	          : net_stream_meta_encode(m, buf, sizeof(buf));
	REQUIRE(n > 0);
	if (batch)
		net_stream_dec_init_batch_entry(&dec2);
	else
		net_stream_dec_init(&dec2);
	c = net_stream_dec_feed(&dec2, buf, (size_t)n, &ev, &err);
	REQUIRE(c == n && ev.kind == NET_STREAM_EV_META);
	REQUIRE(memcmp(&dec2.meta, m, offsetof(struct net_stream_meta, path) + m->path_len) == 0);
	REQUIRE(dec2.meta.size == m->size && dec2.meta.mtime_ns == m->mtime_ns && dec2.meta.mode == m->mode &&
	        dec2.meta.uid == m->uid && dec2.meta.gid == m->gid);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t sizes[MAX_SIZES], nsizes = 0, pos = 0, turn = 0;
	const uint8_t *s;
	uint64_t data_seen = 0;
	int metas = 0, ends = 0, rc = 0;
	struct qs_err err;

	if (size == 0)
		return 0;
	bool batch = data[0] >= 0xc0, bundle = data[0] >= 0x80 && !batch;
	nsizes = data[0] % (MAX_SIZES + 1);
	if (nsizes > size - 1)
		nsizes = size - 1;
	for (size_t i = 0; i < nsizes; i++)
		sizes[i] = data[1 + i] == 0xff ? SIZE_MAX : (size_t)data[1 + i] + 1;
	s = data + 1 + nsizes;
	size -= 1 + nsizes;

	/* the ack parser sees the same bytes */
	{
		uint8_t status;
		char msg[64];
		int a = net_stream_ack_decode(s, size, &status, msg, sizeof(msg));
		REQUIRE(a == 0 || a == -EAGAIN || a == -EPROTO);
		if (a == 0)
			REQUIRE(strlen(msg) < sizeof(msg));
		/* the length of the ack the bytes start with agrees with the parser */
		ssize_t len = net_stream_ack_len(s, size);
		REQUIRE(len == 0 || len == -EPROTO || (len > 0 && (size_t)len <= size));
		if (a == 0)
			REQUIRE(len == (ssize_t)size);
		if (len > 0)
			REQUIRE(net_stream_ack_decode(s, (size_t)len, &status, msg, sizeof(msg)) == 0);
	}

	if (batch)
		net_stream_dec_init_batch_entry(&dec);
	else if (bundle)
		net_stream_dec_init_bundle_entry(&dec);
	else
		net_stream_dec_init(&dec);
	int entries = 0;
	while (pos < size && rc == 0) {
		size_t chunk = nsizes ? sizes[turn++ % nsizes] : SIZE_MAX, off = 0;
		uint8_t *copy;

		if (chunk > size - pos)
			chunk = size - pos;
		copy = malloc(chunk);
		REQUIRE(copy != NULL);
		memcpy(copy, s + pos, chunk);
		while (off < chunk) {
			struct net_stream_ev ev;
			ssize_t c = net_stream_dec_feed(&dec, copy + off, chunk - off, &ev, &err);

			if (c < 0) {
				REQUIRE(c == -EPROTO || c == -ENAMETOOLONG || c == -EINVAL);
				REQUIRE(err.code == c && err.msg[0] != '\0');
				rc = (int)c;
				break;
			}
			REQUIRE(c > 0 && (size_t)c <= chunk - off); /* progress on non-empty input */
			switch (ev.kind) {
			case NET_STREAM_EV_META:
				REQUIRE(metas == 0 && ends == 0);
				metas++;
				check_meta(&dec.meta, batch);
				break;
			case NET_STREAM_EV_DATA:
				REQUIRE(metas == 1 && ends == 0);
				REQUIRE(!batch || (dec.meta.flags & NET_STREAM_F_SYMLINK));
				REQUIRE(ev.data == copy + off && ev.len == (size_t)c);
				REQUIRE(ev.offset == data_seen);
				data_seen += ev.len;
				REQUIRE(data_seen <= dec.meta.size);
				break;
			case NET_STREAM_EV_END:
				REQUIRE(!batch);
				REQUIRE(metas == 1 && ends == 0 && data_seen == dec.meta.size);
				ends++;
				if (bundle) { /* the next entry, from the next byte on */
					REQUIRE(!(dec.meta.flags & ~NET_STREAM_F_SYMLINK));
					REQUIRE(dec.meta.size <= NET_STREAM_BUNDLE_FILE_MAX);
					net_stream_dec_init_bundle_entry(&dec);
					metas = ends = 0;
					data_seen = 0;
					entries++;
				}
				break;
			case NET_STREAM_EV_BATCH: /* only as the whole header, and nothing after it */
			case NET_STREAM_EV_BUNDLE:
				REQUIRE(!batch && !bundle);
				REQUIRE(metas == 0 && ends == 0 &&
				        pos + off + (size_t)c == NET_STREAM_HDR_LEN);
				metas++;
				break;
			case NET_STREAM_EV_NONE:
				break;
			}
			off += (size_t)c;
		}
		free(copy);
		pos += chunk;
	}

	if (bundle && rc == 0 && net_stream_dec_idle(&dec)) {
		(void)entries; /* ended where an entry did: a whole bundle (or nothing) */
	} else {
		int f = net_stream_dec_finish(&dec, &err);
		bool whole = batch && metas == 1 &&
		             (!(dec.meta.flags & NET_STREAM_F_SYMLINK) || data_seen == dec.meta.size);
		if (rc == 0 && (ends == 1 || whole))
			REQUIRE(f == 0);
		else
			REQUIRE(f < 0 && err.msg[0] != '\0');
	}
	return 0;
}
