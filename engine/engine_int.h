/* Engine internals shared by transfer.c (the conversation and the event loop), sender.c and
 * receiver.c. Not included outside engine/. */
#ifndef QS_ENGINE_INT_H
#define QS_ENGINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "engine/engine.h"
#include "io/io.h"
#include "net/control.h"
#include "net/dp.h"
#include "net/quic.h"
#include "net/stream.h"

#define ENGINE_CTL_TIMEOUT_MS   30000 /* a control reply must come within this */
#define ENGINE_DRAIN_TIMEOUT_MS 30000 /* after sync_complete, the receiver's last closes */
#define ENGINE_PROGRESS_NS      250000000ull

uint64_t engine_now_ns(void);

/* transfer.c: shared by the client (client.c) and the peer (server.c) */

/* Waits for a message of the wanted type; an error message from the peer ends the wait with its words;
 * progress and unknown types are skipped. */
int engine_expect(struct net_ctl_chan *c, enum net_ctl_type want, struct net_ctl_msg *m, int timeout_ms,
                  struct qs_err *err);

/* Sends an error message (no file) on the control channel. */
int engine_send_error(struct net_ctl_chan *c, const char *code, const char *msg);

/* Polls the control channel and the data plane (either may be NULL) once, at most max_ms, and runs
 * the data plane's process(). */
int engine_poll_once(struct net_ctl_chan *c, const struct net_dp *dp, int max_ms, struct qs_err *err);

/* Fills buf from the kernel's CSPRNG. */
int engine_random(void *buf, size_t n);

/* Raises the soft descriptor limit to the hard one and returns how many descriptors streams may hold
 * (each stream in flight may keep a file open on either side). */
size_t engine_fd_budget(void);
void engine_emit(const struct engine_opts *o, enum engine_event_kind k, const char *path, const char *msg,
                 const struct engine_stats *st);

/* ---- sender ---- */

struct snd_entry {
	char *rel;  /* path on the wire ("" for the root) */
	char *abs;  /* where the walk found it (messages, readlink) */
	char *link; /* symlink target, or NULL */
	uint32_t flags;
	uint32_t src;   /* index into sender.roots */
	uint32_t tail;  /* offset in rel of the path below the source's top ("" for the top itself) */
	struct stat st; /* as the walk saw it; the file opened later must be this one (dev, ino) */
};

/* One source as given on the command line: its directory held open so that files are opened beneath
 * it (no symlink followed below the top), or -1 for a source that is a single file. */
struct snd_root {
	int fd;
	char *top; /* the path walked */
};

struct sender {
	const struct engine_opts *o;
	struct engine_stats *st;
	struct net_dp dp; /* where streams are opened */
	struct snd_entry *ents;
	size_t n, cap;
	size_t next; /* next entry to open a stream for */
	size_t in_flight;
	size_t max_in_flight;
	uint64_t streams_opened; /* on the current data path (sync_complete says how many) */
	/* Entries whose stream was cut off with its data path (NET_DP_GONE), to be sent again on the next
	 * one (failover); if there is no next one they are not done, and the transfer fails anyway. */
	size_t *resend;
	size_t n_resend, cap_resend;
	size_t walk_errors; /* sources or directories that could not be read */
	struct snd_root *roots;
	size_t n_roots;
	bool single_file; /* exactly one source and it is not a directory */
};

/* Walks every source into s->ents (rsync's trailing-slash rule). Unreadable sources are reported as
 * file errors and counted in walk_errors; returns 0, or a negative errno for a fatal problem. */
int sender_plan(struct sender *s, const struct engine_opts *o, struct engine_stats *st, struct qs_err *err);

/* Opens streams for pending entries while the stream budget allows. Returns 0 or negative errno. */
int sender_pump(struct sender *s, struct qs_err *err);

/* True when every entry has a stream and every stream has closed. */
bool sender_done(const struct sender *s);

/* Moves the sender to another data plane: from now on streams open on dp; streams_opened restarts.
 * Entries whose streams the old one cut off (closed with NET_DP_GONE before their ack) wait in resend. */
void sender_switch(struct sender *s, const struct net_dp *dp);

void sender_free(struct sender *s);

extern const struct net_dp_cb sender_dp_cb_template;

/* ---- receiver ---- */

struct rcv_dirfix {
	char *rel;
	bool set_mode; /* with -p, or a directory this transfer created */
	uint32_t mode;
	int64_t mtime_ns;
	uint32_t uid, gid;
};

/* A refusal waiting to be reported on the control channel: written from the main loop, never from
 * inside a data-plane callback (a slow control channel must not stall QUIC). */
struct rcv_report {
	char *file;
	int64_t sid;
	const char *code;
	char *msg;
};

#define RCV_MAX_DIR_BYTES (256u << 20) /* directory bookkeeping a sender may make us hold */
#define RCV_MAX_REPORTS   1024         /* queued error reports; more are counted, not queued */
#define RCV_WBUF_BIG      (256u << 10) /* write buffer of a file larger than this */
#define RCV_WBUF_BUDGET   (64u << 20)  /* all write buffers together */
#define RCV_WBUF_FREE_MAX 64           /* idle big buffers kept for reuse */

struct receiver {
	int rootfd;
	struct io_dircache *dc; /* parents of the files being written, beneath rootfd */
	bool root;              /* running as root: owner and group can be given away */
	bool single_file;
	char single_name[256];
	bool single_used;
	bool perms, times, owner, group, do_fsync;
	mode_t umask;
	struct net_ctl_chan *ctl;
	struct net_dp dp; /* where the sender's streams arrive */
	struct rcv_dirfix *dirs;
	size_t n_dirs, cap_dirs, dir_bytes;
	struct rcv_report reports[RCV_MAX_REPORTS];
	size_t n_reports, reports_dropped;
	bool root_seen;
	uint64_t ok, failed, bytes;
	uint64_t closed; /* streams ended on the current data path (sync_complete says how many to await) */
	int verbose;
	size_t wbuf_bytes; /* held by streams now */
	uint8_t *wfree[RCV_WBUF_FREE_MAX];
	size_t n_wfree;
};

/* Opens (creating the last level if needed) the destination described by sync_start. */
int receiver_open(struct receiver *r, const struct net_ctl_sync_start *ss, struct qs_err *err);

/* Sends the queued error reports on the control channel. Called from the main loop. */
void receiver_flush_reports(struct receiver *r);

/* Applies directory modes and times, deepest first (after all contents are written). */
int receiver_finish(struct receiver *r, struct qs_err *err);

void receiver_free(struct receiver *r);

extern const struct net_dp_cb receiver_dp_cb_template;

#endif
