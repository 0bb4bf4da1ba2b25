/* The SSH control-plane client: splits an rsync-style -e string into options, connects with libssh the
 * way OpenSSH would (ssh_config, known_hosts, agent, key files), execs the peer command on a session
 * channel and hands that channel to the control line channel (net/control.h) as a transport. */
#include "net/ssh.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libssh/callbacks.h>
#include <libssh/libssh.h>

#include "net/ssh_int.h"

#define RSH_MAX_LEN     4096  /* the whole -e string */
#define RSH_MAX_WORDS   64    /* words in it */
#define FINISH_DRAIN_MS 10000 /* wait for the remote's exit status after our EOF */

/* ---- the -e string ---------------------------------------------------------------------------- */

/* Splits s into words in buf (NUL-separated), like the shell's quoting: '...' literal, "..." with
 * \" \\ \$ \` escapes, \x outside quotes. Returns the number of words or a negative errno. */
static int split_words(const char *s, char *buf, size_t cap, char **words, int max_words, struct qs_err *err)
{
	size_t o = 0;
	int n = 0;
	const char *p = s;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (!*p)
			return n;
		if (n == max_words)
			return qs_err_set(err, -E2BIG, "ssh command has more than %d words", max_words);
		words[n++] = buf + o;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
			char c = *p++;
			if (c == '\'') {
				while (*p && *p != '\'') {
					if (o + 1 >= cap)
						goto too_long;
					buf[o++] = *p++;
				}
				if (!*p)
					return qs_err_set(err, -EINVAL,
					                  "unterminated ' quote in ssh command: %s", s);
				p++;
				continue;
			}
			if (c == '"') {
				while (*p && *p != '"') {
					char d = *p++;
					if (d == '\\' && (*p == '"' || *p == '\\' || *p == '$' || *p == '`'))
						d = *p++;
					if (o + 1 >= cap)
						goto too_long;
					buf[o++] = d;
				}
				if (!*p)
					return qs_err_set(err, -EINVAL,
					                  "unterminated \" quote in ssh command: %s", s);
				p++;
				continue;
			}
			if (c == '\\') {
				if (!*p)
					return qs_err_set(err, -EINVAL, "ssh command ends in a backslash: %s",
					                  s);
				c = *p++;
			}
			if (o + 1 >= cap)
				goto too_long;
			buf[o++] = c;
		}
		buf[o++] = '\0';
	}
too_long:
	return qs_err_set(err, -E2BIG, "ssh command is over %zu bytes", cap - 1);
}

static int copy_str(char *dst, size_t cap, const char *src, const char *what, struct qs_err *err)
{
	size_t n = strlen(src);
	if (n >= cap)
		return qs_err_set(err, -ENAMETOOLONG, "%s is too long (%zu bytes, at most %zu)", what, n,
		                  cap - 1);
	memcpy(dst, src, n + 1);
	return 0;
}

/* A decimal in [lo, hi]; nothing else (no sign, no spaces, no suffix). */
static int parse_int(const char *v, long lo, long hi, const char *what, int *out, struct qs_err *err)
{
	long x = 0;
	if (!*v)
		return qs_err_set(err, -EINVAL, "%s needs a number", what);
	for (const char *q = v; *q; q++) {
		if (*q < '0' || *q > '9')
			return qs_err_set(err, -EINVAL, "%s '%s' is not a number", what, v);
		x = x * 10 + (*q - '0');
		if (x > hi)
			break;
	}
	if (x < lo || x > hi)
		return qs_err_set(err, -ERANGE, "%s '%s' is out of range (%ld..%ld)", what, v, lo, hi);
	*out = (int)x;
	return 0;
}

static int parse_yesno(const char *v, const char *what, bool *out, struct qs_err *err)
{
	if (!strcasecmp(v, "yes") || !strcasecmp(v, "true")) {
		*out = true;
		return 0;
	}
	if (!strcasecmp(v, "no") || !strcasecmp(v, "false")) {
		*out = false;
		return 0;
	}
	return qs_err_set(err, -EINVAL, "%s must be yes or no, not '%s'", what, v);
}

static int add_identity(struct net_ssh_opts *o, const char *path, struct qs_err *err)
{
	if (!*path)
		return qs_err_set(err, -EINVAL, "empty identity file name");
	if (o->n_identity >= NET_SSH_MAX_IDENTITIES)
		return qs_err_set(err, -E2BIG, "too many identity files (at most %d): %s",
		                  NET_SSH_MAX_IDENTITIES, path);
	int rc =
	    copy_str(o->identity[o->n_identity], sizeof(o->identity[0]), path, "identity file name", err);
	if (rc == 0)
		o->n_identity++;
	return rc;
}

/* One -o argument: "Key=Value", "Key Value" or "Key = Value"; keys are case-insensitive. */
static int apply_o(struct net_ssh_opts *o, const char *arg, struct qs_err *err)
{
	char key[64];
	size_t k = strcspn(arg, "= \t");
	if (k == 0)
		return qs_err_set(err, -EINVAL, "-o '%s': missing option name", arg);
	if (k >= sizeof(key))
		return qs_err_set(err, -EINVAL, "unsupported ssh option -o %s", arg);
	memcpy(key, arg, k);
	key[k] = '\0';
	const char *v = arg + k;
	v += strspn(v, " \t");
	if (*v == '=')
		v++;
	v += strspn(v, " \t");

	char val[1024];
	size_t vn = strlen(v);
	while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
		vn--;
	if (vn >= 2 && v[0] == '"' && v[vn - 1] == '"') { /* ssh_config allows a quoted value */
		v++;
		vn -= 2;
	}
	if (vn >= sizeof(val))
		return qs_err_set(err, -ENAMETOOLONG, "-o %s: value is too long", key);
	memcpy(val, v, vn);
	val[vn] = '\0';

	bool known = !strcasecmp(key, "Port") || !strcasecmp(key, "IdentityFile") ||
	             !strcasecmp(key, "User") || !strcasecmp(key, "UserKnownHostsFile") ||
	             !strcasecmp(key, "StrictHostKeyChecking") || !strcasecmp(key, "ConnectTimeout") ||
	             !strcasecmp(key, "BatchMode") || !strcasecmp(key, "Hostname");
	if (!known)
		return qs_err_set(err, -EINVAL, "unsupported ssh option -o %s", key);
	if (!*val)
		return qs_err_set(err, -EINVAL, "ssh option -o %s needs a value", key);

	if (!strcasecmp(key, "Port"))
		return parse_int(val, 1, 65535, "Port", &o->port, err);
	if (!strcasecmp(key, "IdentityFile"))
		return add_identity(o, val, err);
	if (!strcasecmp(key, "User"))
		return copy_str(o->user, sizeof(o->user), val, "User", err);
	if (!strcasecmp(key, "UserKnownHostsFile"))
		return copy_str(o->known_hosts, sizeof(o->known_hosts), val, "UserKnownHostsFile", err);
	if (!strcasecmp(key, "Hostname"))
		return copy_str(o->host, sizeof(o->host), val, "Hostname", err);
	if (!strcasecmp(key, "ConnectTimeout"))
		return parse_int(val, 0, INT_MAX / 1000, "ConnectTimeout", &o->connect_timeout_s, err);
	if (!strcasecmp(key, "BatchMode"))
		return parse_yesno(val, "BatchMode", &o->batch_mode, err);
	/* StrictHostKeyChecking */
	if (!strcasecmp(val, "yes") || !strcasecmp(val, "true"))
		o->strict = NET_SSH_STRICT_YES;
	else if (!strcasecmp(val, "accept-new"))
		o->strict = NET_SSH_STRICT_ACCEPT_NEW;
	else if (!strcasecmp(val, "no") || !strcasecmp(val, "off") || !strcasecmp(val, "false"))
		o->strict = NET_SSH_STRICT_NO;
	else if (!strcasecmp(val, "ask"))
		o->strict = NET_SSH_STRICT_DEFAULT; /* we cannot ask: unknown keys are refused */
	else
		return qs_err_set(err, -EINVAL,
		                  "StrictHostKeyChecking must be yes, no, accept-new or ask, not '%s'", val);
	return 0;
}

static int apply_opt(struct net_ssh_opts *o, char flag, const char *val, struct qs_err *err)
{
	switch (flag) {
	case 'p':
		return parse_int(val, 1, 65535, "port (-p)", &o->port, err);
	case 'i':
		return add_identity(o, val, err);
	case 'l':
		if (!*val)
			return qs_err_set(err, -EINVAL, "empty user name (-l)");
		return copy_str(o->user, sizeof(o->user), val, "user name (-l)", err);
	case 'F':
		if (!*val)
			return qs_err_set(err, -EINVAL, "empty config file name (-F)");
		return copy_str(o->config_file, sizeof(o->config_file), val, "config file name (-F)", err);
	default: /* 'o' */
		return apply_o(o, val, err);
	}
}

int net_ssh_parse_rsh(const char *rsh, struct net_ssh_opts *o, struct qs_err *err)
{
	char buf[RSH_MAX_LEN];
	char *words[RSH_MAX_WORDS];
	int n, rc;

	if (!rsh || !o)
		return qs_err_set(err, -EINVAL, "no ssh command");
	n = split_words(rsh, buf, sizeof(buf), words, RSH_MAX_WORDS, err);
	if (n < 0)
		return n;
	if (n == 0)
		return qs_err_set(err, -EINVAL, "empty ssh command");

	/* words[0] is the program: libssh is the client whatever it names */
	for (int i = 1; i < n; i++) {
		const char *w = words[i];
		if (w[0] != '-' || w[1] == '\0')
			return qs_err_set(err, -EINVAL, "unexpected word '%s' in the ssh command", w);
		/* getopt-style clusters: "-vvC", "-p2222", "-Cp 2222" */
		for (int j = 1; w[j]; j++) {
			char f = w[j];
			if (f == 'v') {
				o->verbose++;
				continue;
			}
			if (strchr("q46CTxa", f))
				continue;
			if (!strchr("pilFo", f))
				return qs_err_set(err, -EINVAL, "unsupported ssh option -%c (in '%s')", f, w);
			const char *val;
			if (w[j + 1])
				val = w + j + 1;
			else if (i + 1 < n)
				val = words[++i];
			else
				return qs_err_set(err, -EINVAL, "ssh option -%c needs a value", f);
			if ((rc = apply_opt(o, f, val, err)) < 0)
				return rc;
			break;
		}
	}
	return 0;
}

/* ---- the transport over an exec channel ----------------------------------------------------------- */

/* read, write, poll_fd and pending are net/ssh_chan.c's (shared with the server); finish is ours. */
struct ssh_link {
	struct net_ssh_chan base;       /* first: the impl the shared transport functions see */
	struct ssh_callbacks_struct cb; /* must live as long as the session */
	bool passphrase_wanted;         /* a key asked for a passphrase we will not prompt for */
};

/* Frees everything; the session is disconnected if it was connected. */
static void link_free(struct ssh_link *l)
{
	if (!l)
		return;
	if (l->base.ch) {
		ssh_set_blocking(l->base.s, 0); /* closing must not wait on a dead peer */
		if (ssh_channel_is_open(l->base.ch))
			(void)ssh_channel_close(l->base.ch);
		(void)ssh_blocking_flush(l->base.s, 1000);
		ssh_channel_free(l->base.ch);
	}
	if (l->base.s) {
		if (ssh_is_connected(l->base.s))
			ssh_disconnect(l->base.s);
		ssh_free(l->base.s);
	}
	free(l);
}

static int link_finish(void *impl, int *exit_status)
{
	struct ssh_link *l = impl;
	int status = -1;
	char sink[4096];

	if (l->base.ch) {
		if (ssh_channel_is_open(l->base.ch))
			(void)ssh_channel_send_eof(l->base.ch);
		/* Non-blocking, so ssh_channel_get_exit_status only looks at what has arrived. The status
		 * comes before the remote's close; its EOF may come either side of it. */
		ssh_set_blocking(l->base.s, 0);
		int64_t deadline = net_ssh_now_ms() + FINISH_DRAIN_MS;
		for (;;) {
			net_ssh_chan_forward_stderr(&l->base);
			while (ssh_channel_read_nonblocking(l->base.ch, sink, sizeof(sink), 0) > 0)
				; /* the caller is done with the messages; the rest is dropped */
			status = ssh_channel_get_exit_status(l->base.ch);
			if (ssh_channel_is_closed(l->base.ch) ||
			    (status != -1 && ssh_channel_is_eof(l->base.ch)))
				break;
			int64_t rest = deadline - net_ssh_now_ms();
			if (rest <= 0)
				break;
			net_ssh_wait_input(l->base.s, rest);
		}
		net_ssh_chan_forward_stderr(&l->base);
		status = ssh_channel_get_exit_status(l->base.ch);
		if (status < 0)
			status = -1;
	}
	if (exit_status)
		*exit_status = status;
	link_free(l);
	return 0;
}

static const struct net_ctl_ops ssh_link_ops = {
    .read = net_ssh_chan_read,
    .write = net_ssh_chan_write,
    .poll_fd = net_ssh_chan_poll_fd,
    .pending = net_ssh_chan_pending,
    .finish = link_finish,
};

/* ---- connecting --------------------------------------------------------------------------------- */

/* Records that a key wanted a passphrase and refuses: we never prompt (no terminal, no surprises). */
static int no_passphrase(const char *prompt, char *buf, size_t len, int echo, int verify, void *userdata)
{
	struct ssh_link *l = userdata;
	l->passphrase_wanted = true;
	return -1;
}

/* "~/x" -> "$HOME/x" (OpenSSH does this for -i, -F and UserKnownHostsFile). */
static int expand_tilde(const char *in, char *out, size_t cap, const char *what, struct qs_err *err)
{
	if (in[0] != '~' || (in[1] != '/' && in[1] != '\0'))
		return copy_str(out, cap, in, what, err);
	const char *home = getenv("HOME");
	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : NULL;
	}
	if (!home)
		return qs_err_set(err, -ENOENT, "cannot expand ~ in %s: no home directory", in);
	int n = snprintf(out, cap, "%s%s", home, in + 1);
	if (n < 0 || (size_t)n >= cap)
		return qs_err_set(err, -ENAMETOOLONG, "%s is too long: %s", what, in);
	return 0;
}

static int connect_errno(const char *msg)
{
	if (strcasestr(msg, "refused"))
		return -ECONNREFUSED;
	if (strcasestr(msg, "timeout") || strcasestr(msg, "timed out"))
		return -ETIMEDOUT;
	if (strcasestr(msg, "resolve") || strcasestr(msg, "unreachable") || strcasestr(msg, "no route") ||
	    strcasestr(msg, "not known") || strcasestr(msg, "name or service"))
		return -EHOSTUNREACH;
	if (strcasestr(msg, "reset"))
		return -ECONNRESET;
	return -EPROTO; /* banner, key exchange, ... */
}

/* The name known_hosts files use: "host" on port 22, else "[host]:port". */
static void host_label(ssh_session s, const char *fallback, char *out, size_t cap)
{
	char *h = NULL;
	unsigned int port = 22;
	(void)ssh_options_get_port(s, &port);
	const char *name = ssh_options_get(s, SSH_OPTIONS_HOST, &h) == SSH_OK && h ? h : fallback;
	if (port == 22)
		snprintf(out, cap, "%s", name);
	else
		snprintf(out, cap, "[%s]:%u", name, port);
	ssh_string_free_char(h);
}

static int check_host_key(struct ssh_link *l, const struct net_ssh_opts *o, struct qs_err *err)
{
	ssh_session s = l->base.s;
	ssh_key key = NULL;
	unsigned char *hash = NULL;
	size_t hlen = 0;
	char *fp = NULL, *kh = NULL;
	char label[300];
	const char *type = "unknown";
	int rc = 0;

	host_label(s, o->host, label, sizeof(label));
	if (ssh_get_server_publickey(s, &key) != SSH_OK) {
		rc = qs_err_set(err, -EPROTO, "%s: no host key from the server: %s", label, ssh_get_error(s));
		goto out;
	}
	type = ssh_key_type_to_char(ssh_key_type(key));
	if (!type)
		type = "unknown";
	if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) != SSH_OK ||
	    !(fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen))) {
		rc = qs_err_set(err, -ENOMEM, "%s: cannot fingerprint the host key", label);
		goto out;
	}
	if (ssh_options_get(s, SSH_OPTIONS_KNOWNHOSTS, &kh) != SSH_OK)
		kh = NULL;

	enum ssh_known_hosts_e st = ssh_session_is_known_server(s);
	switch (st) {
	case SSH_KNOWN_HOSTS_OK:
		break;
	case SSH_KNOWN_HOSTS_CHANGED:
	case SSH_KNOWN_HOSTS_OTHER:
		/* never accepted, whatever StrictHostKeyChecking says (OpenSSH does the same) */
		rc = qs_err_set(
		    err, -EKEYREJECTED,
		    "host key for %s has CHANGED%s (now %s %s): possible man-in-the-middle attack; "
		    "refusing; remove the old key from %s if you trust the new one",
		    label, st == SSH_KNOWN_HOSTS_OTHER ? " type" : "", type, fp, kh ? kh : "known_hosts");
		goto out;
	case SSH_KNOWN_HOSTS_NOT_FOUND:
	case SSH_KNOWN_HOSTS_UNKNOWN:
		if (o->strict == NET_SSH_STRICT_DEFAULT || o->strict == NET_SSH_STRICT_YES) {
			rc = qs_err_set(
			    err, -EKEYREJECTED,
			    "host key for %s is not known (%s %s); refusing: check the fingerprint, "
			    "then accept it with -o StrictHostKeyChecking=accept-new",
			    label, type, fp);
			goto out;
		}
		if (ssh_session_update_known_hosts(s) != SSH_OK) {
			rc = qs_err_set(err, -EIO, "cannot add the host key for %s to %s: %s", label,
			                kh ? kh : "known_hosts", ssh_get_error(s));
			goto out;
		}
		fprintf(stderr, "Warning: Permanently added '%s' (%s %s) to the list of known hosts.\n",
		        label, type, fp);
		break;
	case SSH_KNOWN_HOSTS_ERROR:
	default:
		rc = qs_err_set(err, -EIO, "cannot check the host key of %s: %s", label, ssh_get_error(s));
		goto out;
	}
out:
	ssh_string_free_char(kh);
	ssh_string_free_char(fp);
	ssh_clean_pubkey_hash(&hash);
	ssh_key_free(key);
	return rc;
}

/* A failed attempt that broke the session (not a plain "no") ends the authentication. */
static bool auth_fatal(ssh_session s, int rc)
{
	return rc == SSH_AUTH_ERROR && (ssh_get_error_code(s) == SSH_FATAL || !ssh_is_connected(s));
}

static int authenticate(struct ssh_link *l, const struct net_ssh_opts *o, struct qs_err *err)
{
	ssh_session s = l->base.s;
	char note[160] = "";
	char path[1024];
	int rc;

	rc = ssh_userauth_none(s, NULL);
	if (rc == SSH_AUTH_SUCCESS)
		return 0;
	if (auth_fatal(s, rc))
		goto broken;

	const char *sock = getenv("SSH_AUTH_SOCK");
	if (sock && *sock) {
		rc = ssh_userauth_agent(s, NULL);
		if (rc == SSH_AUTH_SUCCESS)
			return 0;
		if (auth_fatal(s, rc))
			goto broken;
	}

	for (int i = 0; i < o->n_identity; i++) {
		ssh_key key = NULL;
		if ((rc = expand_tilde(o->identity[i], path, sizeof(path), "identity file name", err)) < 0)
			return rc;
		l->passphrase_wanted = false;
		int r = ssh_pki_import_privkey_file(path, NULL, no_passphrase, l, &key);
		if (r != SSH_OK) {
			char what[sizeof(note) - 4];
			if (l->passphrase_wanted)
				snprintf(what, sizeof(what),
				         "key %s needs a passphrase; load it into ssh-agent", path);
			else if (r == SSH_EOF)
				snprintf(what, sizeof(what), "identity file %s is not accessible", path);
			else
				snprintf(what, sizeof(what), "cannot load identity file %s", path);
			fprintf(stderr, "Warning: %s\n", what);
			snprintf(note, sizeof(note), " (%s)", what);
			ssh_key_free(key);
			continue;
		}
		rc = ssh_userauth_publickey(s, NULL, key);
		ssh_key_free(key);
		if (rc == SSH_AUTH_SUCCESS)
			return 0;
		if (auth_fatal(s, rc))
			goto broken;
	}

	/* the agent again, then IdentityFile from ssh_config and the default ~/.ssh/id_* keys */
	l->passphrase_wanted = false;
	rc = ssh_userauth_publickey_auto(s, NULL, NULL);
	if (rc == SSH_AUTH_SUCCESS)
		return 0;
	if (auth_fatal(s, rc))
		goto broken;
	if (l->passphrase_wanted && !note[0])
		snprintf(note, sizeof(note), " (a key needs a passphrase; load it into ssh-agent)");

	char *user = NULL, *host = NULL;
	(void)ssh_options_get(s, SSH_OPTIONS_USER, &user);
	(void)ssh_options_get(s, SSH_OPTIONS_HOST, &host);
	rc = qs_err_set(err, -EACCES, "permission denied (publickey) for %s@%s%s", user ? user : "?",
	                host ? host : o->host, note);
	ssh_string_free_char(user);
	ssh_string_free_char(host);
	return rc;
broken:
	return qs_err_set(err, -EIO, "authentication with %s failed: %s", o->host, ssh_get_error(s));
}

/* Config first (it only fills what is unset), then what the command line said, as OpenSSH orders it. */
static int set_options(ssh_session s, const struct net_ssh_opts *o, struct qs_err *err)
{
	char path[1024];
	int rc;

	if (o->verbose >= 2) {
		int level = o->verbose >= 3 ? SSH_LOG_PACKET : SSH_LOG_PROTOCOL;
		(void)ssh_options_set(s, SSH_OPTIONS_LOG_VERBOSITY, &level);
	}
	if (ssh_options_set(s, SSH_OPTIONS_HOST, o->host) != SSH_OK)
		return qs_err_set(err, -EINVAL, "bad host name '%s': %s", o->host, ssh_get_error(s));
	if (o->config_file[0]) {
		if ((rc = expand_tilde(o->config_file, path, sizeof(path), "config file name", err)) < 0)
			return rc;
		if (access(path, R_OK) != 0)
			return qs_err_set(err, -errno, "cannot read ssh config file %s: %s", path,
			                  strerror(errno));
		if (ssh_options_parse_config(s, path) != SSH_OK)
			return qs_err_set(err, -EINVAL, "bad ssh config file %s: %s", path, ssh_get_error(s));
	} else if (ssh_options_parse_config(s, NULL) != SSH_OK) {
		return qs_err_set(err, -EINVAL, "bad ssh config (~/.ssh/config or the system's): %s",
		                  ssh_get_error(s));
	}
	if (o->port) {
		unsigned int port = (unsigned int)o->port;
		if (ssh_options_set(s, SSH_OPTIONS_PORT, &port) != SSH_OK)
			return qs_err_set(err, -EINVAL, "bad port %d", o->port);
	}
	if (o->user[0] && ssh_options_set(s, SSH_OPTIONS_USER, o->user) != SSH_OK)
		return qs_err_set(err, -EINVAL, "bad user name '%s': %s", o->user, ssh_get_error(s));
	if (o->known_hosts[0]) {
		if ((rc = expand_tilde(o->known_hosts, path, sizeof(path), "UserKnownHostsFile", err)) < 0)
			return rc;
		if (ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, path) != SSH_OK)
			return qs_err_set(err, -EINVAL, "bad UserKnownHostsFile %s: %s", path,
			                  ssh_get_error(s));
	}
	if (o->connect_timeout_s > 0) {
		long t = o->connect_timeout_s;
		if (ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &t) != SSH_OK)
			return qs_err_set(err, -EINVAL, "bad ConnectTimeout %d", o->connect_timeout_s);
	}
	/* As OpenSSH does for every session: the tail of a large write must not wait for an ACK (Nagle),
	 * or each 64 KiB frame of the SSH-only data path stalls on its last packet. */
	int nodelay = 1;
	(void)ssh_options_set(s, SSH_OPTIONS_NODELAY, &nodelay);
	/* Explicit identities are tried first by authenticate() itself; adding them to libssh's list
	 * too would only offer each failing key twice against the server's MaxAuthTries. */
	return 0;
}

int net_ssh_connect(const struct net_ssh_opts *o, const char *command, struct net_ctl_chan **chan,
                    struct sockaddr_storage *peer, socklen_t *peerlen, struct qs_err *err)
{
	struct ssh_link *l = NULL;
	int rc;

	if (chan)
		*chan = NULL;
	if (!o || !command || !chan)
		return qs_err_set(err, -EINVAL, "net_ssh_connect: missing argument");
	if (!o->host[0])
		return qs_err_set(err, -EINVAL, "no host to connect to");

	l = calloc(1, sizeof(*l));
	if (!l)
		return qs_err_set(err, -ENOMEM, "out of memory");
	l->base.forward_stderr = true;
	l->base.s = ssh_new();
	if (!l->base.s) {
		rc = qs_err_set(err, -ENOMEM, "cannot make an ssh session");
		goto fail;
	}
	/* libssh would otherwise let OpenSSL prompt on the terminal for an encrypted key */
	l->cb.userdata = l;
	l->cb.auth_function = no_passphrase;
	ssh_callbacks_init(&l->cb);
	ssh_set_callbacks(l->base.s, &l->cb);

	if ((rc = set_options(l->base.s, o, err)) < 0)
		goto fail;

	if (ssh_connect(l->base.s) != SSH_OK) {
		const char *m = ssh_get_error(l->base.s);
		unsigned int port = 22;
		(void)ssh_options_get_port(l->base.s, &port);
		rc = qs_err_set(err, connect_errno(m), "ssh: connect to host %s port %u: %s", o->host, port,
		                m);
		goto fail;
	}
	if ((rc = check_host_key(l, o, err)) < 0)
		goto fail;
	if ((rc = authenticate(l, o, err)) < 0)
		goto fail;

	l->base.ch = ssh_channel_new(l->base.s);
	if (!l->base.ch) {
		rc = qs_err_set(err, -ENOMEM, "%s: cannot make a channel", o->host);
		goto fail;
	}
	if (ssh_channel_open_session(l->base.ch) != SSH_OK) {
		rc = qs_err_set(err, -EIO, "%s: cannot open a session channel: %s", o->host,
		                ssh_get_error(l->base.s));
		ssh_channel_free(l->base.ch);
		l->base.ch = NULL;
		goto fail;
	}
	if (ssh_channel_request_exec(l->base.ch, command) != SSH_OK) {
		rc = qs_err_set(err, -EIO, "%s: cannot run '%s': %s", o->host, command,
		                ssh_get_error(l->base.s));
		goto fail;
	}

	if (peer && peerlen) {
		/* the QUIC side dials this; through a ProxyCommand there is no such address (length 0) */
		socklen_t len = sizeof(*peer);
		memset(peer, 0, sizeof(*peer));
		if (getpeername(ssh_get_fd(l->base.s), (struct sockaddr *)peer, &len) != 0 ||
		    (peer->ss_family != AF_INET && peer->ss_family != AF_INET6)) {
			memset(peer, 0, sizeof(*peer));
			len = 0;
		}
		*peerlen = len;
	}

	if ((rc = net_ctl_chan_new(&ssh_link_ops, l, chan)) < 0) {
		rc = qs_err_set(err, rc, "out of memory");
		goto fail;
	}
	return 0;
fail:
	link_free(l);
	return rc;
}
