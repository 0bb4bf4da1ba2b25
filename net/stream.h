/* Data-stream framing (docs/PROTOCOL.md): every QUIC stream carries one entry as
 *   header (u32 file_id, u32 flags) | metadata | data | trailer (u64 XXH3-64 of data)
 * and the receiver answers on the same stream with an ack (u8 status, varint len, message).
 * Integers are big-endian; varints are QUIC varints (RFC 9000 §16). All decoding goes through a
 * bounds-checked reader; the decoder is incremental so bytes can be fed as QUIC delivers them. */
#ifndef QS_NET_STREAM_H
#define QS_NET_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define NET_STREAM_MAX_PATH    4096 /* bytes in a path, NUL excluded */
#define NET_STREAM_MAX_META    (8 + 8 + NET_STREAM_MAX_PATH + 8 + 8 + 4 + 4 + 4 + NET_STREAM_RANGE_LEN)
#define NET_STREAM_RANGE_LEN   (8 + 8 + 4 + 4) /* what RANGE adds to the metadata */
#define NET_STREAM_MAX_RANGES  (1u << 20)      /* ranges of one file */
#define NET_STREAM_TRAILER_LEN 8
#define NET_STREAM_MAX_ACK_MSG 1024
#define NET_STREAM_MAX_ACK     (1 + 8 + NET_STREAM_MAX_ACK_MSG) /* (a verdict byte may come before) */

/* flags */
#define NET_STREAM_F_DIR     (1u << 0) /* a directory: size 0, no data */
#define NET_STREAM_F_SYMLINK (1u << 1) /* a symlink: data is the target */
#define NET_STREAM_F_ROOT    (1u << 2) /* applies to the destination root itself: path is empty */
#define NET_STREAM_F_RANGE   (1u << 3) /* one byte range of a regular file (the range fields follow) */
#define NET_STREAM_F_ASK     (1u << 4) /* a regular file: the sender waits for the verdict before the data */
#define NET_STREAM_F_KNOWN                                                                                   \
	(NET_STREAM_F_DIR | NET_STREAM_F_SYMLINK | NET_STREAM_F_ROOT | NET_STREAM_F_RANGE | NET_STREAM_F_ASK)
/* A batch of questions (capability "ask-batch"): a header of file_id 0 and exactly this flag, then up
 * to NET_STREAM_BATCH_MAX entries, then FIN. An entry is a header and metadata with flags exactly ASK
 * (a regular file: nothing follows) or ASK|SYMLINK (its target follows, size bytes); no trailer. The
 * receiver answers each entry in order: SEND alone (the sender sends it again on a stream of its own,
 * without ASK), or HAVE and an ack (the destination has it; an error ack fails the entry). A batch that
 * cannot be read on ends after the answer to the entry at hand. */
#define NET_STREAM_F_BATCH   (1u << 5)
#define NET_STREAM_BATCH_MAX 256
/* A bundle of small entries (capability "bundle"): a header of file_id 0 and exactly this flag, then
 * up to NET_STREAM_BUNDLE_MAX entries, each a whole entry as on a stream of its own (header, metadata,
 * data, trailer) of a regular file (flags 0, at most NET_STREAM_BUNDLE_FILE_MAX bytes) or a symlink,
 * then FIN. The receiver puts each in place as its trailer arrives and answers with its ack, in
 * order. Many small files then share a stream's costs, and no stream slot waits on each. */
#define NET_STREAM_F_BUNDLE        (1u << 6)
#define NET_STREAM_BUNDLE_MAX      256
#define NET_STREAM_BUNDLE_FILE_MAX (256u << 10)
#define NET_STREAM_HDR_LEN         8 /* u32 file_id, u32 flags */

/* The receiver's answer to an ASK entry, the first byte it sends back on the stream: SEND (the data
 * follows from the sender, then the ack as usual), or HAVE (the destination has it already: the ack
 * follows at once, and the sender ends its side right after the metadata, with no data or trailer). */
#define NET_STREAM_VERDICT_SEND 'S'
#define NET_STREAM_VERDICT_HAVE 'H'

/* ack status */
enum net_stream_status {
	NET_STREAM_OK = 0,
	NET_STREAM_EBADPATH = 1, /* the path failed validation */
	NET_STREAM_EHASH = 2,    /* trailer hash did not match the data */
	NET_STREAM_ETRUNC = 3,   /* stream ended early */
	NET_STREAM_EPROTO = 4,   /* malformed framing */
	NET_STREAM_EIO = 5,      /* the receiver could not write */
};

struct net_stream_meta {
	uint32_t file_id;
	uint32_t flags;
	uint32_t path_len;
	char path[NET_STREAM_MAX_PATH + 1]; /* NUL-terminated copy; an embedded NUL is rejected */
	uint64_t size;
	int64_t mtime_ns; /* nanoseconds since the epoch */
	uint32_t mode;    /* st_mode bits, type bits included */
	uint32_t uid;
	uint32_t gid;
	/* RANGE only: size is the range's length; the data is bytes [range_off, range_off + size) of a
	 * file of file_size bytes, range range_idx of range_count (2..NET_STREAM_MAX_RANGES). The layout is
	 * fixed: with L = ceil(file_size / range_count), range i is [i*L, min((i+1)*L, file_size)), and
	 * every range is non-empty; anything else is refused. */
	uint64_t range_off;
	uint64_t file_size;
	uint32_t range_idx;
	uint32_t range_count;
};

/* Encodes header + metadata into buf. Returns the length, -ENAMETOOLONG, -EINVAL (NUL in path or
 * unknown flag) or -ENOSPC. */
ssize_t net_stream_meta_encode(const struct net_stream_meta *m, uint8_t *buf, size_t cap);

/* Encodes the header and metadata of a batch's entry (flags ASK, or ASK|SYMLINK: the target is the
 * caller's to append). Returns the length, or -EINVAL for anything a batch may not hold, -ENOSPC. */
ssize_t net_stream_batch_entry_encode(const struct net_stream_meta *m, uint8_t *buf, size_t cap);

/* Encodes a batch's or a bundle's header (NET_STREAM_HDR_LEN bytes). */
void net_stream_batch_encode(uint8_t out[NET_STREAM_HDR_LEN]);
void net_stream_bundle_encode(uint8_t out[NET_STREAM_HDR_LEN]);

/* Encodes the 8-byte trailer. */
void net_stream_trailer_encode(uint64_t hash, uint8_t out[NET_STREAM_TRAILER_LEN]);

/* Incremental decoder for one stream. */
enum net_stream_ev_kind {
	NET_STREAM_EV_NONE = 0, /* consumed bytes, nothing to report yet */
	NET_STREAM_EV_META,     /* dec->meta is complete and valid as framing (path not yet judged) */
	NET_STREAM_EV_DATA,     /* ev->data/len are content bytes at ev->offset (points into the input) */
	NET_STREAM_EV_END,      /* trailer read: ev->hash holds it; nothing may follow */
	NET_STREAM_EV_BATCH,    /* a batch header: the entries that follow go to a decoder each */
	NET_STREAM_EV_BUNDLE,   /* a bundle header: likewise */
};

struct net_stream_ev {
	enum net_stream_ev_kind kind;
	const uint8_t *data;
	size_t len;
	uint64_t offset;
	uint64_t hash;
};

struct net_stream_dec {
	int state;
	size_t have;                      /* bytes gathered in buf for the current part */
	uint8_t buf[NET_STREAM_MAX_META]; /* header+meta being gathered */
	uint64_t data_done;
	bool batch_entry;  /* decoding an entry of a batch (net_stream_dec_init_batch_entry) */
	bool bundle_entry; /* ... of a bundle (net_stream_dec_init_bundle_entry) */
	struct net_stream_meta meta;
};

void net_stream_dec_init(struct net_stream_dec *d);

/* For one entry of a batch: only the flags a batch allows; META, then for a symlink DATA (its target),
 * and the entry is complete (no trailer, no END event). */
void net_stream_dec_init_batch_entry(struct net_stream_dec *d);

/* For one entry of a bundle: a regular file (flags 0, at most NET_STREAM_BUNDLE_FILE_MAX bytes) or a
 * symlink, framed as on a stream of its own; END comes at its trailer, and what follows it is left for
 * the next entry's decoder (the call consumes no more than the trailer). */
void net_stream_dec_init_bundle_entry(struct net_stream_dec *d);

/* True when the decoder has not read a byte of its entry yet. */
bool net_stream_dec_idle(const struct net_stream_dec *d);

/* Feeds bytes. Returns how many were consumed (>= 0; may be < n: call again with the rest) and sets
 * *ev; or a negative errno: -EPROTO malformed (unknown flag, bad varint, bytes after the trailer),
 * -ENAMETOOLONG path over the limit, -EINVAL NUL in path. err says which. */
ssize_t net_stream_dec_feed(struct net_stream_dec *d, const uint8_t *p, size_t n, struct net_stream_ev *ev,
                            struct qs_err *err);

/* Called when the stream ended (FIN). Returns 0 if the trailer was read, else -EPIPE (truncated: err
 * says where). */
int net_stream_dec_finish(const struct net_stream_dec *d, struct qs_err *err);

/* Ack: status and an optional message (truncated to NET_STREAM_MAX_ACK_MSG). encode returns length or
 * -ENOSPC. decode parses a complete ack: 0, -EPROTO malformed, -EAGAIN incomplete (need more bytes). */
ssize_t net_stream_ack_encode(uint8_t status, const char *msg, uint8_t *buf, size_t cap);
int net_stream_ack_decode(const uint8_t *p, size_t n, uint8_t *status, char *msg, size_t msgcap);

/* The length of the ack that p[0..n) starts with: > 0, 0 when incomplete, -EPROTO when malformed. */
ssize_t net_stream_ack_len(const uint8_t *p, size_t n);

/* QUIC varints (RFC 9000 §16): encode returns bytes written (1,2,4,8) or -ERANGE/-ENOSPC; decode
 * returns the bytes it read, or 0 when p[0..n) does not hold the whole varint yet. */
ssize_t net_varint_encode(uint64_t v, uint8_t *buf, size_t cap);
ssize_t net_varint_decode(const uint8_t *p, size_t n, uint64_t *v);

#endif
