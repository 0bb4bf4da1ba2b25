/* SSH control-plane client (libssh): connects as OpenSSH would (~/.ssh/config, known_hosts, agent and
 * key files), honours the rsync-style -e 'ssh -p PORT -i KEY -l USER -F FILE -o Opt=Val' string, runs the
 * remote command on an exec channel, and hands back a control line channel (net/control.h) over it. */
#ifndef QS_NET_SSH_H
#define QS_NET_SSH_H

#include <stdbool.h>
#include <sys/socket.h>

#include "common/err.h"
#include "net/control.h"

#define NET_SSH_MAX_IDENTITIES 8
#define NET_SSH_MAX_OPTS       32

enum net_ssh_strict {
	NET_SSH_STRICT_DEFAULT = 0, /* as configured (ssh_config), else "ask": refuse unknown keys */
	NET_SSH_STRICT_YES,         /* refuse unknown and changed keys */
	NET_SSH_STRICT_ACCEPT_NEW,  /* add unknown keys to known_hosts, refuse changed ones */
	NET_SSH_STRICT_NO,          /* add unknown keys, still refuse changed ones */
};

struct net_ssh_opts {
	char host[256];
	char user[128]; /* empty: from config or the local user */
	int port;       /* 0: from config or 22 */
	char identity[NET_SSH_MAX_IDENTITIES][1024];
	int n_identity;
	char config_file[1024]; /* -F; empty: ~/.ssh/config */
	char known_hosts[1024]; /* UserKnownHostsFile; empty: default */
	enum net_ssh_strict strict;
	int connect_timeout_s; /* ConnectTimeout; 0: libssh default */
	bool batch_mode;       /* BatchMode=yes: never prompt (we never prompt anyway) */
	int verbose;           /* -v count */
};

/* Parses an rsync-style --rsh value ("ssh -p 2222 -i key -o StrictHostKeyChecking=no") into o, on top
 * of what o already holds. The first word must be a program name (ignored: libssh is the client).
 * Understands -p -i -l -F -o (Port, IdentityFile, User, UserKnownHostsFile, StrictHostKeyChecking,
 * ConnectTimeout, BatchMode, Hostname), -v, -q, -4/-6/-C/-T/-x/-a (accepted, no effect).
 * Quoting follows the shell's single and double quotes. Anything else is an error naming the word. */
int net_ssh_parse_rsh(const char *rsh, struct net_ssh_opts *o, struct qs_err *err);

/* Connects, verifies the host key, authenticates (agent, then identities, then default keys), opens a
 * session channel and execs command on it. On success *chan is a control channel over the exec channel
 * (its finish() reports the remote exit status) and peer/peerlen hold the SSH server's address (the
 * client dials QUIC there). Returns 0 or a negative errno with err saying what failed
 * (-ECONNREFUSED, -EACCES for auth, -EKEYREJECTED for a host key problem, ...). */
int net_ssh_connect(const struct net_ssh_opts *o, const char *command, struct net_ctl_chan **chan,
                    struct sockaddr_storage *peer, socklen_t *peerlen, struct qs_err *err);

#endif
