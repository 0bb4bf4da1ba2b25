/* The native SSH server of `qsync serve` (libssh's server API): an ed25519 host key, public-key
 * authentication against an authorized_keys file, one forked process per connection, and one exec of
 * a qsync server invocation per connection, whose channel is handed to a caller's session handler. */
#ifndef QS_NET_SSH_SERVER_H
#define QS_NET_SSH_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/err.h"
#include "net/control.h"

#define NET_SSH_SERVER_DEFAULT_ADDR     "127.0.0.1"
#define NET_SSH_SERVER_DEFAULT_PORT     2222
#define NET_SSH_SERVER_DEFAULT_SESSIONS 16
#define NET_SSH_SERVER_MAX_SESSIONS     1024
#define NET_SSH_SERVER_DEFAULT_GRACE_S  30 /* key exchange, auth and exec must be done by then */
#define NET_SSH_SERVER_MAX_GRACE_S      3600
#define NET_SSH_SERVER_MAX_AUTH_TRIES   6     /* refused keys per connection before it is dropped */
#define NET_SSH_SERVER_STOP_WAIT_MS     10000 /* on SIGTERM: sessions get this long before SIGKILL */
#define NET_SSH_CMD_MAX                 4096  /* longest exec command considered at all */
#define NET_SSH_AUTHKEYS_MAX_LINE       16384 /* longer authorized_keys lines are refused */
#define NET_SSH_AUTHKEYS_MAX_BLOB       8192  /* decoded public key blob (RSA 16384 is ~2 KiB) */

struct net_ssh_server_opts {
	char listen_addr[64]; /* numeric IPv4 or IPv6 address (no names) */
	int port;             /* 0: an ephemeral port; the one bound is announced on stderr */
	/* ed25519 private key (OpenSSH format, mode 0600). Empty: $XDG_CONFIG_HOME/qsync/ssh_host_ed25519_key
	 * (~/.config/qsync/... without XDG_CONFIG_HOME). A missing key is a start-up error unless
	 * host_key_create is set: then it is made (and FILE.pub beside it) and its fingerprint printed. */
	char host_key[1024];
	bool host_key_create;
	char authorized_keys[1024]; /* empty: ~/.ssh/authorized_keys of the user the server runs as */
	int max_sessions;  /* connections at once (1..NET_SSH_SERVER_MAX_SESSIONS); more are closed */
	int login_grace_s; /* 1..NET_SSH_SERVER_MAX_GRACE_S */
	int verbose;       /* 0: sessions and failures; 1: every request; 2, 3: libssh's log too */
};

/* What the session handler is told about its connection. */
struct net_ssh_server_conn {
	struct sockaddr_storage local; /* the address the connection was accepted on */
	struct sockaddr_storage peer;  /* the client's address */
	socklen_t local_len, peer_len;
	const char *user; /* the authenticated user name (the user the server runs as) */
};

/* Runs one peer session on c (owned by the server: the handler must not finish it). Runs in the
 * connection's own process. Returns the exit status the client is sent (0..255). */
typedef int (*net_ssh_server_handler)(struct net_ctl_chan *c, const struct net_ssh_server_conn *conn,
                                      void *ctx);

/* Fills the defaults: 127.0.0.1 port 2222, default host key and authorized_keys paths (empty), no key
 * creation, NET_SSH_SERVER_DEFAULT_SESSIONS, NET_SSH_SERVER_DEFAULT_GRACE_S, verbose 0. */
void net_ssh_server_opts_default(struct net_ssh_server_opts *o);

/* Parses a --listen value into o->listen_addr and o->port: "ADDR:PORT", "[V6ADDR]:PORT", "[V6ADDR]",
 * "ADDR" (port unchanged) or a bare IPv6 address. ADDR must be a numeric IPv4/IPv6 address; PORT
 * 0..65535. Returns 0 or -EINVAL with err naming what was wrong. */
int net_ssh_server_parse_listen(const char *s, struct net_ssh_server_opts *o, struct qs_err *err);

/* Serves until SIGTERM or SIGINT: loads (or creates) the host key, checks authorized_keys, listens, and
 * forks one process per accepted connection, which does key exchange, public-key authentication (only
 * keys listed in authorized_keys, user name = the serving user, signature checked), accepts one
 * session channel and one exec request that passes net_ssh_server_check_command, then calls
 * handler(chan, conn, ctx) and sends its return value as the channel's exit-status, EOF and close.
 * Anything else (shell, pty, env, subsystem, X11, agent and port forwarding, a second channel, another
 * command) is refused; a refused command or shell is told why on the channel's stderr and gets
 * exit-status 1. Everything is logged on stderr with the client's address. On SIGTERM/SIGINT the
 * listener closes, running sessions get SIGTERM and NET_SSH_SERVER_STOP_WAIT_MS to end, then SIGKILL.
 * Returns 0 after a clean stop, or a negative errno when it cannot start (err says why: -ENOENT for a
 * missing host key, -EADDRINUSE, -EPERM for a key file others can read, ...). */
int net_ssh_server_run(const struct net_ssh_server_opts *o, net_ssh_server_handler handler, void *ctx,
                       struct qs_err *err);

/* The one rule for which exec commands run, used by the native server and by `qsync --server` under an
 * authorized_keys command= or sshd ForceCommand (SSH_ORIGINAL_COMMAND). Accepted: exactly
 * "qsync --server", or "P/qsync --server" where P is empty or made only of A-Z a-z 0-9 and / . _ - + ,
 * @ % = : ~ (what the client sends: "<--remote-path> --server"). Nothing is trimmed: one space, no
 * leading or trailing blanks, no other arguments, no quotes, no shell syntax. Returns 0, or -EPERM
 * (NULL or empty, too long, or anything else) with err quoting the command (control bytes escaped). */
int net_ssh_server_check_command(const char *cmd, struct qs_err *err);

/* One authorized_keys key, as parsed from its line. */
struct net_ssh_authkey {
	char type[48];                           /* "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa" */
	uint8_t blob[NET_SSH_AUTHKEYS_MAX_BLOB]; /* the decoded key; it names the same type */
	size_t blob_len;
	char comment[128]; /* what follows the key, truncated; may be empty */
	bool command;      /* command="..." was given (it passed net_ssh_server_check_command) */
	bool restricted;   /* restrict or no-* options were given */
};

/* Parses one authorized_keys line (no '\n'; a trailing '\r' is ignored). Format as OpenSSH's:
 * [options] type base64 [comment]; blank lines and lines starting with '#' (after blanks) are skipped.
 * Option policy: only options that forbid what this server never allows anyway are accepted —
 * restrict, no-pty, no-port-forwarding, no-agent-forwarding, no-X11-forwarding, no-user-rc (any case)
 * — and command="C" when C passes net_ssh_server_check_command (so one line serves both helper and
 * native mode). Any other option (from=, environment=, permitopen=, expiry-time=, cert-authority,
 * principals=, command= naming something else, ...) makes the line refused, never half-honoured.
 * Key types: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa; certificates, security keys and DSA
 * are refused. Returns 1 with *k filled for a key line, 0 for a blank or comment line, -EINVAL for a
 * malformed line (bad quoting, bad base64, a blob of another type), -ENOTSUP for an option or key type
 * that is refused, -E2BIG for a line or key over the limits; err says which. */
int net_ssh_authkeys_parse_line(const char *line, struct net_ssh_authkey *k, struct qs_err *err);

#endif
