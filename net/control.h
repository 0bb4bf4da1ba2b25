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
};

/* Capability bits; on the wire they are the strings in brackets. Unknown strings are ignored. */
#define NET_CAP_QUIC_V1 (1u << 0) /* "quic-v1" */

/* hello / hello-ack. Required: version, capabilities. hello-ack also: quic_available. */
struct net_ctl_hello {
	char version[16];
	uint32_t caps;
	bool quic_available; /* hello-ack only (optional, default false) */
	uint32_t quic_port;  /* hello-ack only (optional) */
};

/* quic_init, client -> peer. Required: connection_id, psk (base64 of 32 bytes), max_streams.
 * cipher_suite optional. The psk is secret: wipe the struct after use. */
struct net_ctl_quic_init {
	char connection_id[33]; /* hex, 16 chars on the wire (64-bit id) */
	uint8_t psk[NET_CTL_PSK_LEN];
	char cipher_suite[48];
	uint32_t max_streams;
};

/* quic_ready, peer -> client. Required: connection_id, udp_endpoint {ip, port}, max_streams.
 * initial_max_data optional. */
struct net_ctl_quic_ready {
	char connection_id[33];
	char ip[64];
	uint16_t port;
	uint32_t max_streams;
	uint64_t initial_max_data;
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
	bool single_file; /* the only entry is a regular file named by destination itself */
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

/* ack_complete, receiver side. Required: files_ok, files_failed. bytes, checksum optional. */
struct net_ctl_ack_complete {
	uint64_t files_ok;
	uint64_t files_failed;
	uint64_t bytes;
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

/* Closes the channel and frees it. *exit_status gets the peer's exit status if known, else -1.
 * Returns 0 or a negative errno. c may be NULL. */
int net_ctl_chan_finish(struct net_ctl_chan *c, int *exit_status);

#endif
