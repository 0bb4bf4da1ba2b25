/* The control plane: newline-delimited JSON messages (docs/PROTOCOL.md) parsed with jsmn into a fixed
 * token array, written by a small escaping emitter, and carried over a line channel whose transport is
 * a pair of fds (helper mode: stdin/stdout) or an SSH exec channel (net/ssh.h). */
#ifndef QS_NET_CONTROL_H
#define QS_NET_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define NET_CTL_MAX_LINE      (64 * 1024) /* bytes in one message, newline excluded */
#define NET_CTL_MAX_TOKENS    512         /* jsmn tokens per message */
#define NET_CTL_MAX_STR       4096        /* longest string field (paths) */
#define NET_CTL_MAX_CAPS      16          /* capabilities listed in hello */
#define NET_CTL_MAX_CONNS     64          /* QUIC connections of one session (quic_ready.ports) */
#define NET_CTL_PSK_LEN       32          /* session secret, bytes */
#define NET_CTL_PROTO_VERSION "1.0"

enum net_ctl_type {
	NET_CTL_UNKNOWN = 0, /* parse fills this with -ENOMSG for a well-formed message of unknown type */
	NET_CTL_HELLO,
	NET_CTL_HELLO_ACK,
	NET_CTL_QUIC_INIT,
	NET_CTL_QUIC_READY,
	NET_CTL_SYNC_START,
	NET_CTL_PROGRESS,
	NET_CTL_ERROR,
	NET_CTL_RETRY,
	NET_CTL_SYNC_COMPLETE,
	NET_CTL_ACK_COMPLETE,
	NET_CTL_BYE,
	NET_CTL_DATA_PATH,     /* client -> peer: carry the file data over SSH from here on */
	NET_CTL_DATA_PATH_ACK, /* peer -> client: agreed; the last line before frames */
	NET_CTL_SYNC_READY,    /* peer -> client: the destination is open (with quick_check) */
};

/* Where the file data travels. */
enum net_ctl_path {
	NET_CTL_PATH_QUIC = 0, /* "quic" (the default) */
	NET_CTL_PATH_SSH,      /* "ssh": frames on this control channel (framed mode below) */
};

/* Capability bits; on the wire they are the strings in brackets. Unknown strings are ignored. */
#define NET_CAP_QUIC_V1     (1u << 0) /* "quic-v1" */
#define NET_CAP_QUICK_CHECK (1u << 1) /* "quick-check": unchanged files are not sent (sync_ready, ASK) */
#define NET_CAP_ASK_BATCH   (1u << 2) /* "ask-batch": many files ask on one stream (net/stream.h BATCH) */
#define NET_CAP_BUNDLE      (1u << 3) /* "bundle": many small files go on one stream (net/stream.h) */
#define NET_CAP_FSYNC       (1u << 4) /* "fsync": the receiver honours options.fsync */

/* hello / hello-ack. Required: version, capabilities. hello-ack also: quic_available. */
struct net_ctl_hello {
	char version[16];
	uint32_t caps;
	bool quic_available;  /* hello-ack only (optional, default false) */
	uint32_t quic_port;   /* hello-ack only (optional) */
	uint32_t max_streams; /* hello-ack only (optional, 0 = not said): streams it takes at once */
};

/* quic_init, client -> peer. Required: connection_id, psk (base64 of 32 bytes), max_streams.
 * cipher_suite optional. The psk is secret: wipe the struct after use. */
struct net_ctl_quic_init {
	char connection_id[33]; /* hex, 16 chars on the wire (64-bit id) */
	uint8_t psk[NET_CTL_PSK_LEN];
	char cipher_suite[48];
	uint32_t max_streams;
	uint32_t connections; /* optional (0 = absent: one): QUIC connections the client would like */
};

/* quic_ready, peer -> client. Required: connection_id, udp_endpoint {ip, port}, max_streams.
 * initial_max_data optional. */
struct net_ctl_quic_ready {
	char connection_id[33];
	char ip[64];
	uint16_t port;
	uint32_t max_streams; /* for all connections together */
	uint64_t initial_max_data;
	/* optional "ports": one UDP port per QUIC connection granted (absent: just udp_endpoint.port) */
	uint16_t ports[NET_CTL_MAX_CONNS];
	uint32_t n_ports;
};

/* sync_start, client -> peer. Required: destination (push) ; source optional (informational).
 * options object optional, each flag defaults false. */
struct net_ctl_sync_start {
	char source[NET_CTL_MAX_STR + 1];
	char destination[NET_CTL_MAX_STR + 1];
	bool preserve_permissions;
	bool preserve_timestamps;
	bool preserve_owner;
	bool preserve_group;
	bool recursive;
	bool single_file;            /* the only entry is a regular file named by destination itself */
	enum net_ctl_path data_path; /* "data_path" (optional, default "quic"); "ssh": frames follow */
	bool quick_check; /* options.quick_check: skip files the destination has with the same size and
	                   * mtime (the peer answers sync_ready) */
	bool fsync;       /* options.fsync: every file (and its directory entry) is on the disk before it
	                   * is acknowledged; sent only to a peer with the "fsync" capability */
};

/* sync_ready, peer -> client, after sync_start with quick_check. Optional: existing (default false):
 * the destination was there before this transfer, so entries may ask before they send (ASK). */
struct net_ctl_sync_ready {
	bool existing;
};

/* data_path, client -> peer. Required: path ("ssh"). reason optional: why (for the log). After this
 * line the client sends nothing until data_path_ack; after data_path_ack both directions are framed. */
struct net_ctl_data_path {
	enum net_ctl_path path;
	char reason[256];
};

/* progress. All fields optional (default 0). */
struct net_ctl_progress {
	uint64_t discovered_files;
	uint64_t completed_files;
	uint64_t in_flight_files;
	uint64_t bytes_transferred;
	uint64_t throughput_mbps;
};

/* error. Required: error_code, message. file and quic_stream_id optional (-1 when absent). */
struct net_ctl_error {
	char file[NET_CTL_MAX_STR + 1];
	int64_t quic_stream_id;
	char error_code[48];
	char message[1024];
};

/* retry. Required: file. quic_stream_id optional. */
struct net_ctl_retry {
	char file[NET_CTL_MAX_STR + 1];
	int64_t quic_stream_id;
};

/* sync_complete, sender side. Required: files_transferred, bytes_transferred. Others optional. */
struct net_ctl_sync_complete {
	uint64_t files_transferred;
	uint64_t bytes_transferred;
	double duration_seconds;
	uint64_t average_throughput_mbps;
};

/* ack_complete, receiver side. Required: files_ok, files_failed. bytes, checksum, files_failed_late
 * optional. files_failed_late: of files_failed, those found after every entry had been answered (a
 * directory whose attributes or flush failed at the end), which the sender never heard of on a stream;
 * has_failed_late says whether the peer sent it (an older qsync does not). */
struct net_ctl_ack_complete {
	uint64_t files_ok;
	uint64_t files_failed;
	uint64_t bytes;
	uint64_t files_failed_late;
	bool has_failed_late;
	char checksum[128];
};

struct net_ctl_msg {
	enum net_ctl_type type;
	char type_name[32]; /* as received (truncated), for messages about unknown types */
	union {
		struct net_ctl_hello hello; /* HELLO and HELLO_ACK */
		struct net_ctl_quic_init quic_init;
		struct net_ctl_quic_ready quic_ready;
		struct net_ctl_sync_start sync_start;
		struct net_ctl_progress progress;
		struct net_ctl_error error;
		struct net_ctl_retry retry;
		struct net_ctl_sync_complete sync_complete;
		struct net_ctl_ack_complete ack_complete;
		struct net_ctl_data_path data_path; /* DATA_PATH and DATA_PATH_ACK */
		struct net_ctl_sync_ready sync_ready;
	} u;
};

/* Returns the wire name of a type ("hello-ack", "quic_init", ...), or "unknown". */
const char *net_ctl_type_name(enum net_ctl_type t);

/* Parses one message (line without its '\n', len <= NET_CTL_MAX_LINE) into *out, zeroing it first.
 * Returns 0; -EMSGSIZE for a line over the limit; -EBADMSG for malformed JSON or a non-object;
 * -EPROTO for a missing or mistyped field (err names the message type and the field);
 * -ENOMSG for a well-formed message whose type is unknown (out->type = NET_CTL_UNKNOWN and
 * out->type_name holds it, so the caller can answer with an error and go on).
 * Unknown fields are ignored. Never allocates. */
int net_ctl_parse(const char *line, size_t len, struct net_ctl_msg *out, struct qs_err *err);

/* Writes *m as one JSON line ending in '\n' into buf. Returns the length, or -ENOSPC. Strings are
 * escaped (", \, control characters as \uXXXX; bytes >= 0x80 pass through as UTF-8). */
ssize_t net_ctl_emit(const struct net_ctl_msg *m, char *buf, size_t cap);

/* Base64 helpers for the psk field (standard alphabet, padded). encode returns the length written
 * (excluding NUL) or -ENOSPC; decode returns bytes written, -EINVAL for bad input, -ENOSPC. */
ssize_t net_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);
ssize_t net_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* ---- the line channel ---------------------------------------------------------------------- */

/* A transport under the channel. read is non-blocking: >0 bytes read, 0 nothing now, -EPIPE at end of
 * stream, other negative errno on failure. write writes all of buf (may block) or fails.
 * poll_fd is a descriptor that becomes readable when read may return data (may be -1: poll by time).
 * finish closes the transport and reports the peer's exit status where there is one (else -1).
 * pending returns >0 when read would return data without the fd being readable (buffered), may be NULL. */
struct net_ctl_ops {
	ssize_t (*read)(void *impl, void *buf, size_t cap);
	ssize_t (*write)(void *impl, const void *buf, size_t len);
	int (*poll_fd)(void *impl);
	int (*pending)(void *impl);
	int (*finish)(void *impl, int *exit_status);
};

struct net_ctl_chan;

/* Wraps a transport. The channel owns impl from here on (finish releases it). Returns 0 or -ENOMEM. */
int net_ctl_chan_new(const struct net_ctl_ops *ops, void *impl, struct net_ctl_chan **out);

/* A channel over two file descriptors (helper mode: 0 and 1). rfd is made non-blocking. The fds are
 * not closed by finish. */
int net_ctl_chan_fds(int rfd, int wfd, struct net_ctl_chan **out);

/* Emits and writes one message. Returns 0 or a negative errno with err filled. */
int net_ctl_send(struct net_ctl_chan *c, const struct net_ctl_msg *m, struct qs_err *err);

/* Takes the next complete message if one has arrived, without blocking. Returns 1 with *m filled,
 * 0 when no full line is available yet, or a negative errno: -EPIPE peer closed (err says if mid-line),
 * -EMSGSIZE line over NET_CTL_MAX_LINE (fatal: the channel is unusable after), or a net_ctl_parse error
 * (-EBADMSG/-EPROTO are fatal; -ENOMSG is not: the line is consumed and the channel goes on). */
int net_ctl_recv(struct net_ctl_chan *c, struct net_ctl_msg *m, struct qs_err *err);

/* Like net_ctl_recv but waits up to timeout_ms (-1: forever) for a message. -ETIMEDOUT on time out. */
int net_ctl_recv_wait(struct net_ctl_chan *c, struct net_ctl_msg *m, int timeout_ms, struct qs_err *err);

/* The fd to poll for readability (may be -1), and whether bytes are already buffered (a full line in
 * the channel's own buffer, or data inside the transport). */
int net_ctl_poll_fd(struct net_ctl_chan *c);
int net_ctl_pending(struct net_ctl_chan *c);

/* ---- framed mode: the SSH-only data path ------------------------------------------------------
 * Once both sides have agreed to carry file data over the SSH connection (docs/PROTOCOL.md: sync_start
 * with data_path "ssh", or data_path / data_path_ack), the channel carries frames instead of lines, in
 * both directions:
 *     u8 kind | varint sid | varint len | len bytes
 * kind NET_CTL_FR_CTL holds one JSON message without its newline (sid 0, len <= NET_CTL_MAX_LINE) and
 * goes on flowing through net_ctl_send / net_ctl_recv; the other kinds carry streams (net/mux.h) and are
 * handed to a sink as they are read. */
#define NET_CTL_MAX_FRAME     (64 * 1024) /* payload of a data frame */
#define NET_CTL_FRAME_HDR_MAX (1 + 8 + 8) /* kind + two varints */

enum net_ctl_frame_kind {
	NET_CTL_FR_CTL = 0,   /* a control message */
	NET_CTL_FR_DATA = 1,  /* stream bytes */
	NET_CTL_FR_FIN = 2,   /* the stream's last bytes (len may be 0) */
	NET_CTL_FR_RESET = 3, /* payload: varint app_error; the stream is gone both ways */
	NET_CTL_FR_MAX = NET_CTL_FR_RESET,
};

/* Receives every non-control frame, in order, from inside net_ctl_recv / net_ctl_pump. A negative
 * return is fatal to the channel (err says why): the call that read the frame returns it. */
struct net_ctl_sink {
	void *ctx;
	int (*frame)(void *ctx, unsigned kind, uint64_t sid, const uint8_t *p, size_t n, struct qs_err *err);
};

/* Switches c to frames in both directions. Bytes already read beyond the last line are frames. The
 * sink is copied. Returns 0, or -EALREADY when c is framed already. */
int net_ctl_chan_framed(struct net_ctl_chan *c, const struct net_ctl_sink *sink);

/* True once net_ctl_chan_framed was called. */
bool net_ctl_chan_is_framed(const struct net_ctl_chan *c);

/* Writes one stream frame (framed mode only). p must be preceded by NET_CTL_FRAME_HDR_MAX writable
 * bytes: the header is built there so the frame goes out in one write. n <= NET_CTL_MAX_FRAME.
 * Returns 0 or a negative errno with err filled. */
int net_ctl_send_frame(struct net_ctl_chan *c, unsigned kind, uint64_t sid, uint8_t *p, size_t n,
                       struct qs_err *err);

/* Framed mode: reads what has arrived and hands stream frames to the sink, stopping in front of the
 * first control frame (which net_ctl_recv returns). Returns 1 when a control message is waiting, 0 when
 * nothing is, or a fatal negative errno as net_ctl_recv. Never blocks. */
int net_ctl_pump(struct net_ctl_chan *c, struct qs_err *err);

/* Closes the channel and frees it. *exit_status gets the peer's exit status if known, else -1.
 * Returns 0 or a negative errno. c may be NULL. */
int net_ctl_chan_finish(struct net_ctl_chan *c, int *exit_status);

#endif
