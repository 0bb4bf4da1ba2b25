/* One transfer from start to summary. The client side (engine_client_run) walks the sources, reaches
 * the peer over SSH (or spawns a local peer for SRC DEST without a host), negotiates QUIC over the JSON
 * control channel and sends every entry on its own QUIC stream; the peer side (engine_server_run,
 * `qsync --server`) answers on stdin/stdout and receives into the destination through io/.
 * Sender/receiver logic lives in sender.c / receiver.c and is written in those terms, not client/server. */
#ifndef QS_ENGINE_ENGINE_H
#define QS_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/err.h"
#include "net/ssh.h"

/* Exit codes, as rsync's where the meaning is the same. */
enum engine_exit {
	ENGINE_EXIT_OK = 0,
	ENGINE_EXIT_USAGE = 1,    /* syntax or usage error */
	ENGINE_EXIT_PROTOCOL = 2, /* protocol incompatibility */
	ENGINE_EXIT_FILESEL = 3,  /* errors selecting input/output files, dirs */
	ENGINE_EXIT_START = 5,    /* error starting client-server protocol */
	ENGINE_EXIT_NET = 10,     /* error in socket I/O (QUIC) */
	ENGINE_EXIT_FILEIO = 11,  /* error in file I/O */
	ENGINE_EXIT_STREAM = 12,  /* error in the protocol data stream */
	ENGINE_EXIT_SIGNAL = 20,  /* stopped by a signal */
	ENGINE_EXIT_PARTIAL = 23, /* some files could not be transferred */
	ENGINE_EXIT_TIMEOUT = 30, /* timeout waiting for the peer */
	ENGINE_EXIT_SSH = 255,    /* the SSH connection failed */
};

#define ENGINE_MAX_SOURCES     1024
#define ENGINE_MAX_LANES       64   /* QUIC connections of one transfer */
#define ENGINE_QUIC_TIMEOUT_MS 3000 /* the QUIC handshake must finish within this, or data goes over SSH */
#define ENGINE_QUIC_IDLE_MS    5000 /* no packet for this long: QUIC is lost, the rest goes over SSH */
#define ENGINE_MEMORY_DEFAULT  (256ull << 20) /* windows and buffers of one side (--memory) */

struct engine_event;

struct engine_opts {
	/* what to send where (client) */
	const char *sources[ENGINE_MAX_SOURCES];
	int n_sources;
	const char *dest;        /* path on the receiving side */
	bool remote;             /* dest is on a remote host reached over SSH */
	struct net_ssh_opts ssh; /* when remote */
	const char *remote_path; /* remote qsync binary ("qsync") */

	/* what to preserve */
	bool recursive, links, perms, times, owner, group;
	bool do_fsync;

	/* data plane */
	uint32_t max_streams;  /* 0: default */
	unsigned workers;      /* QUIC connections and the threads that drive them; 0: one per core */
	uint64_t memory_bytes; /* flow-control windows and buffers of one side; 0: default (256 MiB) */
	enum engine_cc { ENGINE_CC_BBR, ENGINE_CC_BBR2, ENGINE_CC_CUBIC } cc; /* of what we send */
	uint32_t quic_timeout_ms; /* handshake must finish in this; 0: default */
	uint32_t quic_idle_ms;    /* QUIC silent this long mid-transfer: carry on over SSH; 0: default */
	bool no_quic;             /* --no-quic: the data goes over the SSH connection from the start */
	bool ignore_times;        /* -I: send every file, even one the destination has with this size and
	                           * mtime (without it such files are skipped, as rsync skips them) */
	uint32_t ctl_timeout_ms;  /* each control reply, and the final confirmation, within this */

	/* reporting */
	int verbose;
	bool quiet;
	void (*on_event)(void *ctx, const struct engine_event *ev);
	void *event_ctx;
};

enum engine_event_kind {
	ENGINE_EV_INFO,       /* msg: a line for -v */
	ENGINE_EV_FILE_DONE,  /* path: an entry was written and confirmed */
	ENGINE_EV_FILE_ERROR, /* path + msg: this entry failed */
	ENGINE_EV_PROGRESS,   /* stats: a snapshot, at most a few per second */
	ENGINE_EV_SUMMARY,    /* stats: the final figures */
	ENGINE_EV_DATA_PATH,  /* path ("ssh") + msg (why): the file data changes path */
};

struct engine_stats {
	uint64_t files_discovered; /* entries found by the walk (files, dirs, links) */
	uint64_t files_done;       /* confirmed by the receiver */
	uint64_t files_failed;
	uint64_t files_in_flight; /* taken by a lane and not yet finished (a large file once) */
	uint64_t bytes_total;     /* content bytes to send */
	uint64_t bytes_done;      /* content bytes confirmed */
	uint64_t bytes_sent;      /* content bytes handed to the data plane (live progress) */
	uint64_t wire_bytes;      /* bytes handed to QUIC, framing included */
	uint64_t files_resent;    /* entries sent again after the data path changed under them */
	uint64_t files_unchanged; /* the destination had them already (same size and mtime): not sent */
	uint64_t bytes_unchanged; /* ... their bytes (part of bytes_total, never of bytes_sent) */
	uint64_t files_done_quic, files_done_ssh; /* files confirmed over each data path */
	/* streams: a file's, or one range's of a large file (each a stream of its own) */
	uint64_t streams_total;     /* to send in all */
	uint64_t streams_done_quic; /* confirmed over QUIC */
	uint64_t streams_sent_ssh;  /* opened on the SSH data path */
	uint64_t streams_in_flight; /* open now (a bundle or a batch is one) */
	uint32_t streams_max;       /* negotiated max_streams */
	uint32_t connections;       /* QUIC connections (and worker threads) carrying the data; 0 over SSH */
	const char *cc;             /* their congestion control (bbr, bbr2, cubic); NULL without QUIC */
	uint64_t steals;           /* items a worker took from another's deque (known once the workers end) */
	uint64_t files_read_ahead; /* small files opened, read and closed on a ring, a bundle at a time */
	uint64_t lane_streams[ENGINE_MAX_LANES]; /* streams each QUIC connection carried */
	uint32_t quic_port;
	double seconds;
	const char *data_path;      /* "quic" or "ssh" */
	char data_path_reason[200]; /* why "ssh" ("" for quic): --no-quic, no QUIC at the peer, ... */
};

struct engine_event {
	enum engine_event_kind kind;
	const char *path;
	const char *msg;
	const struct engine_stats *stats;
};

/* Fills defaults: recursive off, links/perms/times off, remote_path "qsync", max_streams 1000,
 * QUIC handshake 3 s, QUIC idle 5 s, control timeout 30 s. */
void engine_opts_default(struct engine_opts *o);

/* Runs a push as the client. Returns an engine_exit code; err says why when it is not OK. */
int engine_client_run(const struct engine_opts *o, struct engine_stats *st, struct qs_err *err);

/* Where the SSH connection of a peer session came in: the QUIC port listens on local's IP (and nowhere
 * else) and admits handshakes only from peer's IP (peer_len 0: from anywhere). Ports are ignored. */
struct engine_addrs {
	struct sockaddr_storage local, peer;
	socklen_t local_len, peer_len;
};

/* Parses a numeric IPv4 or IPv6 address into ss (port 0). Returns 0 or -EINVAL. */
int engine_addr_parse(const char *ip, struct sockaddr_storage *ss, socklen_t *len);

/* Runs the peer side of one session on control channel c (which the caller still owns and finishes).
 * Returns an engine_exit code; err says why when it is not OK. */
int engine_server_session(struct net_ctl_chan *c, const struct engine_addrs *addrs, int verbose,
                          struct qs_err *err);

/* qsync --server: engine_server_session on the fds (stdin/stdout under sshd), with the addresses from
 * SSH_CONNECTION (loopback without it). Returns an engine_exit code. */
int engine_server_run(int in_fd, int out_fd, int verbose, struct qs_err *err);

#endif
