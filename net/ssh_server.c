/* The native SSH server (net/ssh_server.h): the parent listens, forks one process per connection and
 * stops cleanly on a signal; each connection process does key exchange, public-key auth against
 * authorized_keys, takes one exec of a qsync server invocation and runs the caller's session on it. */
#include "net/ssh_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>

#include "net/ssh_int.h"

#define LISTEN_BACKLOG  64
#define FINISH_FLUSH_MS 5000 /* our exit-status, EOF and close reach the client */
#define FINISH_WAIT_MS  3000 /* then the client's close or disconnect, so nothing is cut short */
#define REFUSED_EXIT    1    /* exit-status of a refused command or shell (ENGINE_EXIT_USAGE) */
#define SSH_FAILED_EXIT 255  /* a connection process that ended before any session */
#define LOG_LINE_MAX    1024
#define CMD_QUOTE_MAX   160 /* a refused command, as quoted in messages */
#define HOST_KEY_SUBDIR "qsync/ssh_host_ed25519_key"
#define SIG_ACCEPTED_TYPES                                                                                   \
	"ssh-ed25519,ecdsa-sha2-nistp521,ecdsa-sha2-nistp384,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256"

/* ---- logging ------------------------------------------------------------------------------------ */

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* One line on stderr in one write, so lines of concurrent connection processes do not interleave. */
__attribute__((format(printf, 1, 2))) static void slog(const char *fmt, ...)
{
	char buf[LOG_LINE_MAX];
	int n = snprintf(buf, sizeof(buf), "qsync serve[%d]: ", (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(buf))
		return;
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof(buf) - 2)
		len = sizeof(buf) - 2;
	buf[len++] = '\n';
	write_all(STDERR_FILENO, buf, len);
}

/* A command as it may be shown: printable ASCII kept, anything else as \xNN, cut with "...". */
static void quote_cmd(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		if (o + 8 >= cap) {
			memcpy(out + o, "...", 4);
			return;
		}
		if (*p >= 0x20 && *p < 0x7f && *p != '\\')
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *p);
	}
	out[o] = '\0';
}

/* The numeric address of a into ip ("?" when it is not IP); returns the port. */
static unsigned addr_ip(const struct sockaddr_storage *a, char *ip, size_t cap)
{
	snprintf(ip, cap, "?");
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
		inet_ntop(AF_INET, &v4->sin_addr, ip, (socklen_t)cap);
		return ntohs(v4->sin_port);
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
		inet_ntop(AF_INET6, &v6->sin6_addr, ip, (socklen_t)cap);
		return ntohs(v6->sin6_port);
	}
	return 0;
}

/* "127.0.0.1 port 5555", "::1 port 5555". */
static void addr_text(const struct sockaddr_storage *a, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];
	unsigned port = addr_ip(a, ip, sizeof(ip));
	snprintf(out, cap, "%s port %u", ip, port);
}

/* "ssh-ed25519 SHA256:..." */
static void key_text(const ssh_key k, char *out, size_t cap)
{
	unsigned char *h = NULL;
	size_t hl = 0;
	char *fp = NULL;
	const char *t = ssh_key_type_to_char(ssh_key_type(k));
	if (ssh_get_publickey_hash(k, SSH_PUBLICKEY_HASH_SHA256, &h, &hl) == SSH_OK)
		fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, h, hl);
	snprintf(out, cap, "%s %s", t ? t : "unknown", fp ? fp : "(no fingerprint)");
	ssh_string_free_char(fp);
	ssh_clean_pubkey_hash(&h);
}

/* ---- the command rule --------------------------------------------------------------------------- */

static bool path_char_ok(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("/._-+,@%=:~", c) != NULL;
}

int net_ssh_server_check_command(const char *cmd, struct qs_err *err)
{
	static const char tail[] = "qsync --server";
	const size_t tlen = sizeof(tail) - 1;
	char q[CMD_QUOTE_MAX];

	if (!cmd || !*cmd)
		return qs_err_set(err, -EPERM,
		                  "refused an empty command (a shell?): only 'qsync --server' runs here");
	size_t n = strnlen(cmd, NET_SSH_CMD_MAX + 1);
	if (n > NET_SSH_CMD_MAX)
		return qs_err_set(err, -EPERM,
		                  "refused a command of over %d bytes: only 'qsync --server' runs here",
		                  NET_SSH_CMD_MAX);
	if (n >= tlen && memcmp(cmd + n - tlen, tail, tlen) == 0) {
		size_t plen = n - tlen; /* "P/" before "qsync", or nothing */
		if (plen == 0)
			return 0;
		if (cmd[plen - 1] == '/') {
			size_t i = 0;
			while (i < plen && path_char_ok((unsigned char)cmd[i]))
				i++;
			if (i == plen)
				return 0;
		}
	}
	quote_cmd(cmd, q, sizeof(q));
	return qs_err_set(err, -EPERM, "refused command '%s': only 'qsync --server' runs here", q);
}

/* ---- authorized_keys ---------------------------------------------------------------------------- */

static const char *const accepted_types[] = {
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
};
static const char *const refused_types[] = {
    "ssh-dss",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
};
static const char *const restricting_opts[] = {
    "restrict", "no-pty", "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding", "no-user-rc",
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool word_is(const char *w, size_t n, const char *name)
{
	return strlen(name) == n && memcmp(w, name, n) == 0;
}

/* 1 accepted type, -ENOTSUP a type we know and refuse, 0 not a key type at all. */
static int key_type_class(const char *w, size_t n)
{
	static const char cert[] = "-cert-v01@openssh.com";
	const size_t clen = sizeof(cert) - 1;
	for (size_t i = 0; i < N_OF(accepted_types); i++)
		if (word_is(w, n, accepted_types[i]))
			return 1;
	for (size_t i = 0; i < N_OF(refused_types); i++)
		if (word_is(w, n, refused_types[i]))
			return -ENOTSUP;
	if (n > clen && memcmp(w + n - clen, cert, clen) == 0)
		return -ENOTSUP;
	return 0;
}

/* Parses the options field at *pp (up to the first unquoted blank) into k. */
static int parse_options(const char **pp, struct net_ssh_authkey *k, struct qs_err *err)
{
	const char *p = *pp;
	char val[NET_SSH_CMD_MAX + 1];

	for (;;) {
		const char *name = p;
		while (*p && *p != '=' && *p != ',' && !is_blank(*p))
			p++;
		size_t nlen = (size_t)(p - name);
		if (nlen == 0)
			return qs_err_set(err, -EINVAL, "empty option in the options field");
		bool has_val = *p == '=';
		size_t vlen = 0;
		if (has_val) {
			p++;
			if (*p != '"')
				return qs_err_set(err, -EINVAL, "option '%.*s=' needs a double-quoted value",
				                  (int)(nlen > 64 ? 64 : nlen), name);
			p++;
			while (*p && *p != '"') {
				if (*p == '\\' && p[1] == '"')
					p++;
				if (vlen + 1 >= sizeof(val))
					return qs_err_set(
					    err, -E2BIG, "option '%.*s' has a value over %d bytes",
					    (int)(nlen > 64 ? 64 : nlen), name, NET_SSH_CMD_MAX);
				val[vlen++] = *p++;
			}
			if (*p != '"')
				return qs_err_set(err, -EINVAL, "unterminated quote in option '%.*s'",
				                  (int)(nlen > 64 ? 64 : nlen), name);
			p++;
			val[vlen] = '\0';
		}

		bool known = false;
		if (!has_val) {
			for (size_t i = 0; i < N_OF(restricting_opts); i++)
				if (strlen(restricting_opts[i]) == nlen &&
				    strncasecmp(name, restricting_opts[i], nlen) == 0)
					known = true;
			if (known)
				k->restricted = true;
		} else if (nlen == 7 && strncasecmp(name, "command", 7) == 0) {
			struct qs_err e = {0};
			if (net_ssh_server_check_command(val, &e) < 0)
				return qs_err_set(
				    err, -ENOTSUP,
				    "command=\"...\" is honoured only for a qsync server invocation: %s",
				    e.msg);
			k->command = true;
			known = true;
		}
		if (!known)
			return qs_err_set(err, -ENOTSUP, "option '%.*s' is not supported by qsync serve",
			                  (int)(nlen > 64 ? 64 : nlen), name);
		if (*p == ',') {
			p++;
			continue;
		}
		if (is_blank(*p))
			break;
		return qs_err_set(err, -EINVAL, "options but no key");
	}
	*pp = p;
	return 0;
}

int net_ssh_authkeys_parse_line(const char *line, struct net_ssh_authkey *k, struct qs_err *err)
{
	const char *p = line;
	size_t n = strnlen(line, NET_SSH_AUTHKEYS_MAX_LINE + 2);
	int rc;

	memset(k, 0, sizeof(*k));
	if (n > NET_SSH_AUTHKEYS_MAX_LINE)
		return qs_err_set(err, -E2BIG, "line is over %d bytes", NET_SSH_AUTHKEYS_MAX_LINE);
	while (is_blank(*p))
		p++;
	if (!*p || *p == '#' || (*p == '\r' && !p[1]))
		return 0;

	const char *w = p;
	while (*p && !is_blank(*p) && *p != '\r')
		p++;
	int cls = key_type_class(w, (size_t)(p - w));
	if (cls == 0) { /* not a key type: an options field comes first */
		p = w;
		if ((rc = parse_options(&p, k, err)) < 0)
			return rc;
		while (is_blank(*p))
			p++;
		w = p;
		while (*p && !is_blank(*p) && *p != '\r')
			p++;
		cls = key_type_class(w, (size_t)(p - w));
	}
	size_t tlen = (size_t)(p - w);
	if (cls < 0)
		return qs_err_set(err, -ENOTSUP, "key type %.*s is not supported by qsync serve",
		                  (int)(tlen > 64 ? 64 : tlen), w);
	if (cls == 0)
		return qs_err_set(err, -EINVAL, "'%.*s' is not a key type", (int)(tlen > 64 ? 64 : tlen), w);
	memcpy(k->type, w, tlen);
	k->type[tlen] = '\0';

	while (is_blank(*p))
		p++;
	const char *b = p;
	while (*p && !is_blank(*p) && *p != '\r')
		p++;
	size_t blen = (size_t)(p - b);
	if (blen == 0)
		return qs_err_set(err, -EINVAL, "%s key without its base64 data", k->type);
	if (blen > ((size_t)NET_SSH_AUTHKEYS_MAX_BLOB + 2) / 3 * 4)
		return qs_err_set(err, -E2BIG, "%s key is over %d bytes", k->type, NET_SSH_AUTHKEYS_MAX_BLOB);
	ssize_t got = net_b64_decode(b, blen, k->blob, sizeof(k->blob));
	if (got < 0)
		return qs_err_set(err, -EINVAL, "%s key: bad base64", k->type);
	k->blob_len = (size_t)got;
	/* the blob starts with its own type name: it must be the one the line says */
	uint32_t inner = 0;
	if (k->blob_len >= 4)
		inner = (uint32_t)k->blob[0] << 24 | (uint32_t)k->blob[1] << 16 | (uint32_t)k->blob[2] << 8 |
		        k->blob[3];
	if (k->blob_len < 4 || inner != tlen || k->blob_len - 4 < inner ||
	    memcmp(k->blob + 4, k->type, tlen) != 0)
		return qs_err_set(err, -EINVAL, "%s key: the key data is of another type", k->type);

	while (is_blank(*p))
		p++;
	size_t clen = strcspn(p, "\r");
	while (clen > 0 && is_blank(p[clen - 1]))
		clen--;
	if (clen >= sizeof(k->comment))
		clen = sizeof(k->comment) - 1;
	memcpy(k->comment, p, clen);
	k->comment[clen] = '\0';
	return 1;
}

/* The file must be a regular file owned by us or root that nobody else can write. */
static int authkeys_open(const char *path, FILE **out, struct qs_err *err)
{
	struct stat st;
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return qs_err_set(err, -errno, "cannot read authorized_keys %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return qs_err_set(err, -e, "cannot stat authorized_keys %s: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return qs_err_set(err, -EINVAL, "authorized_keys %s is not a regular file", path);
	}
	if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022)) {
		close(fd);
		return qs_err_set(
		    err, -EPERM,
		    "authorized_keys %s is writable by others or not ours (owner %u, mode %04o); "
		    "refusing it",
		    path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
	}
	*out = fdopen(fd, "r");
	if (!*out) {
		close(fd);
		return qs_err_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

/* Looks blob up in the authorized_keys file at path: 1 listed, 0 not, or a negative errno when the file
 * cannot be used. Counts usable keys in *nkeys (may be NULL) and logs refused lines when warn. */
static int authkeys_lookup(const char *path, const uint8_t *blob, size_t blob_len, bool warn, int *nkeys,
                           struct qs_err *err)
{
	FILE *f = NULL;
	struct net_ssh_authkey *k = NULL;
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0, found = 0, rc;

	if (nkeys)
		*nkeys = 0;
	if ((rc = authkeys_open(path, &f, err)) < 0)
		return rc;
	if (!(k = malloc(sizeof(*k)))) {
		rc = qs_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		errno = 0;
		ssize_t len = getline(&line, &cap, f);
		if (len < 0) {
			if (errno && errno != EINVAL) {
				rc = qs_err_set(err, -errno, "reading authorized_keys %s: %s", path,
				                strerror(errno));
				goto out;
			}
			break;
		}
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (strlen(line) != (size_t)len) {
			if (warn)
				slog("%s:%d: a NUL byte in the line; line ignored", path, lineno);
			continue;
		}
		struct qs_err e = {0};
		int r = net_ssh_authkeys_parse_line(line, k, &e);
		if (r < 0) {
			if (warn)
				slog("%s:%d: %s; line ignored", path, lineno, e.msg);
			continue;
		}
		if (r == 0)
			continue;
		if (nkeys)
			(*nkeys)++;
		if (blob && k->blob_len == blob_len && memcmp(k->blob, blob, blob_len) == 0) {
			found = 1;
			break;
		}
	}
	rc = found;
out:
	free(line);
	free(k);
	fclose(f);
	return rc;
}

/* ---- options ------------------------------------------------------------------------------------ */

void net_ssh_server_opts_default(struct net_ssh_server_opts *o)
{
	memset(o, 0, sizeof(*o));
	snprintf(o->listen_addr, sizeof(o->listen_addr), "%s", NET_SSH_SERVER_DEFAULT_ADDR);
	o->port = NET_SSH_SERVER_DEFAULT_PORT;
	o->max_sessions = NET_SSH_SERVER_DEFAULT_SESSIONS;
	o->login_grace_s = NET_SSH_SERVER_DEFAULT_GRACE_S;
}

/* A numeric address into ss (port 0). */
static int parse_ip(const char *ip, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		*len = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		*len = sizeof(*v6);
		return 0;
	}
	return -EINVAL;
}

int net_ssh_server_parse_listen(const char *s, struct net_ssh_server_opts *o, struct qs_err *err)
{
	char addr[sizeof(o->listen_addr)];
	const char *port = NULL;
	size_t alen;
	struct sockaddr_storage ss;
	socklen_t sl;

	if (!s || !*s)
		return qs_err_set(err, -EINVAL, "--listen needs ADDR:PORT");
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || (rb[1] && rb[1] != ':'))
			return qs_err_set(err, -EINVAL, "--listen %s: expected [IPV6]:PORT", s);
		alen = (size_t)(rb - s - 1);
		if (rb[1] == ':')
			port = rb + 2;
		s++;
	} else {
		const char *c = strchr(s, ':');
		if (c && !strchr(c + 1, ':')) { /* one colon: ADDR:PORT */
			alen = (size_t)(c - s);
			port = c + 1;
		} else { /* none: ADDR; several: a bare IPv6 address */
			alen = strlen(s);
		}
	}
	if (alen == 0 || alen >= sizeof(addr))
		return qs_err_set(err, -EINVAL, "--listen: bad address in '%s'", s);
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (parse_ip(addr, &ss, &sl) < 0)
		return qs_err_set(err, -EINVAL, "--listen: '%s' is not a numeric IPv4 or IPv6 address", addr);
	if (port) {
		long v = 0;
		if (!*port)
			return qs_err_set(err, -EINVAL, "--listen: no port after '%s:'", addr);
		for (const char *q = port; *q; q++) {
			if (*q < '0' || *q > '9' || v > 65535)
				return qs_err_set(err, -EINVAL, "--listen: bad port '%s'", port);
			v = v * 10 + (*q - '0');
		}
		if (v > 65535)
			return qs_err_set(err, -EINVAL, "--listen: port %ld is out of range (0..65535)", v);
		o->port = (int)v;
	}
	memcpy(o->listen_addr, addr, alen + 1);
	return 0;
}

/* ---- host key ----------------------------------------------------------------------------------- */

static int refuse_passphrase(const char *prompt, char *buf, size_t len, int echo, int verify, void *userdata)
{
	return -1;
}

/* mkdir -p of path's parent directory, mode 0700 for what it makes. */
static int make_parent_dirs(const char *path, struct qs_err *err)
{
	char d[sizeof(((struct net_ssh_server_opts *)0)->host_key)];
	snprintf(d, sizeof(d), "%s", path);
	char *slash = strrchr(d, '/');
	if (!slash || slash == d)
		return 0;
	*slash = '\0';
	for (char *p = d + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(d, 0700) < 0 && errno != EEXIST)
			return qs_err_set(err, -errno, "cannot create directory %s: %s", d, strerror(errno));
		*p = c;
		if (!c)
			return 0;
	}
}

static int write_new_file(const char *path, const char *text, mode_t mode, bool exclusive, struct qs_err *err)
{
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (exclusive ? O_EXCL : O_TRUNC);
	int fd = open(path, flags, mode);
	if (fd < 0)
		return qs_err_set(err, -errno, "cannot create %s: %s", path, strerror(errno));
	size_t n = strlen(text);
	ssize_t w = write(fd, text, n);
	int e = w < 0 ? errno : EIO;
	if (w != (ssize_t)n || fsync(fd) < 0 || close(fd) < 0) {
		if (w == (ssize_t)n)
			e = errno;
		close(fd);
		unlink(path);
		return qs_err_set(err, -e, "cannot write %s: %s", path, strerror(e));
	}
	return 0;
}

static int create_host_key(const char *path, ssh_key *out, struct qs_err *err)
{
	ssh_key key = NULL;
	char *priv = NULL, *pub = NULL, *text = NULL;
	char pubpath[sizeof(((struct net_ssh_server_opts *)0)->host_key) + 8];
	char host[256] = "localhost";
	char desc[160];
	int rc;

	if ((rc = make_parent_dirs(path, err)) < 0)
		return rc;
	if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK) {
		rc = qs_err_set(err, -EIO, "cannot generate an ed25519 host key");
		goto out;
	}
	if (ssh_pki_export_privkey_base64(key, NULL, NULL, NULL, &priv) != SSH_OK ||
	    ssh_pki_export_pubkey_base64(key, &pub) != SSH_OK) {
		rc = qs_err_set(err, -EIO, "cannot encode the new host key");
		goto out;
	}
	size_t plen = strlen(priv);
	if (!(text = malloc(plen + 2))) {
		rc = qs_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	memcpy(text, priv, plen + 1);
	if (plen == 0 || text[plen - 1] != '\n')
		memcpy(text + plen, "\n", 2);
	if ((rc = write_new_file(path, text, 0600, true, err)) < 0)
		goto out;
	(void)gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	char publine[1024];
	snprintf(publine, sizeof(publine), "ssh-ed25519 %s qsync-serve@%s\n", pub, host);
	snprintf(pubpath, sizeof(pubpath), "%s.pub", path);
	if ((rc = write_new_file(pubpath, publine, 0644, false, err)) < 0)
		goto out;
	key_text(key, desc, sizeof(desc));
	slog("created host key %s (%s); its public half is %s", path, desc, pubpath);
	*out = key;
	key = NULL;
	rc = 0;
out:
	if (text) {
		explicit_bzero(text, strlen(text));
		free(text);
	}
	if (priv) {
		explicit_bzero(priv, strlen(priv));
		ssh_string_free_char(priv);
	}
	ssh_string_free_char(pub);
	ssh_key_free(key);
	return rc;
}

static int load_host_key(const char *path, bool create, ssh_key *out, struct qs_err *err)
{
	struct stat st;
	ssh_key key = NULL;

	*out = NULL;
	if (stat(path, &st) < 0) {
		if (errno == ENOENT && create)
			return create_host_key(path, out, err);
		if (errno == ENOENT)
			return qs_err_set(err, -ENOENT,
			                  "host key %s does not exist: create it with --host-key-create (or "
			                  "ssh-keygen -t ed25519 -N '' -f %s)",
			                  path, path);
		return qs_err_set(err, -errno, "cannot read host key %s: %s", path, strerror(errno));
	}
	if (!S_ISREG(st.st_mode))
		return qs_err_set(err, -EINVAL, "host key %s is not a regular file", path);
	if (st.st_mode & 077)
		return qs_err_set(err, -EPERM, "host key %s can be read by others (mode %04o): chmod 600 %s",
		                  path, (unsigned)(st.st_mode & 07777), path);
	if (ssh_pki_import_privkey_file(path, NULL, refuse_passphrase, NULL, &key) != SSH_OK)
		return qs_err_set(err, -EINVAL,
		                  "cannot load host key %s: not an unencrypted OpenSSH private key", path);
	if (ssh_key_type(key) != SSH_KEYTYPE_ED25519) {
		const char *t = ssh_key_type_to_char(ssh_key_type(key));
		ssh_key_free(key);
		return qs_err_set(err, -EINVAL,
		                  "host key %s is a %s key; qsync serve uses ed25519 (ssh-keygen -t ed25519)",
		                  path, t ? t : "unknown");
	}
	*out = key;
	return 0;
}

/* The serving user's name and home, from the password database (not $HOME, as sshd does). */
static int serving_user(char *name, size_t ncap, char *home, size_t hcap, struct qs_err *err)
{
	struct passwd *pw = getpwuid(geteuid());
	if (!pw || !pw->pw_name || !pw->pw_dir)
		return qs_err_set(err, -ENOENT, "user id %u has no password database entry",
		                  (unsigned)geteuid());
	snprintf(name, ncap, "%s", pw->pw_name);
	snprintf(home, hcap, "%s", pw->pw_dir);
	return 0;
}

/* ---- one connection (in its own process) ---------------------------------------------------------- */

enum conn_req {
	REQ_NONE,    /* waiting for an exec */
	REQ_EXEC,    /* a qsync server invocation: run the session */
	REQ_REFUSED, /* a shell or another command: tell why, exit-status 1 */
};

struct server {
	const struct net_ssh_server_opts *o;
	net_ssh_server_handler handler;
	void *ctx;
	char host_key[sizeof(((struct net_ssh_server_opts *)0)->host_key)];
	char authkeys[sizeof(((struct net_ssh_server_opts *)0)->authorized_keys)];
	char user[256];
	ssh_bind bind;
	int lfd;
	pid_t *kids;
	int nkids;
	sigset_t oldmask;
};

struct conn {
	const struct server *sv;
	ssh_session s;
	ssh_channel ch; /* the one session channel */
	struct ssh_server_callbacks_struct scb;
	struct ssh_channel_callbacks_struct ccb; /* lives as long as the session (and so the channel) */
	char where[96];                          /* the client, for messages */
	char user[256];                          /* who authenticated */
	int refused_auths;
	bool authed;
	bool drop; /* too many refused authentication attempts */
	bool remote_closed;
	enum conn_req req;
	char why[QS_ERR_MSG_MAX]; /* REQ_REFUSED: for the channel's stderr */
};

static char grace_msg[256];
static size_t grace_len;

static void on_grace_alarm(int sig)
{
	ssize_t w = write(STDERR_FILENO, grace_msg, grace_len); /* one line; async-signal-safe */
	(void)w;
	_exit(SSH_FAILED_EXIT);
}

static int on_auth_pubkey(ssh_session s, const char *user, struct ssh_key_struct *pubkey, char state,
                          void *ud)
{
	struct conn *cn = ud;
	char desc[160];
	char *b64 = NULL;
	uint8_t *blob = NULL;
	const char *why = NULL;
	struct qs_err e = {0};
	char uq[CMD_QUOTE_MAX]; /* the user name as it may be logged */
	int found = 0;

	key_text(pubkey, desc, sizeof(desc));
	quote_cmd(user ? user : "?", uq, sizeof(uq));
	if (cn->drop || cn->authed)
		return SSH_AUTH_DENIED;
	if (state != SSH_PUBLICKEY_STATE_NONE && state != SSH_PUBLICKEY_STATE_VALID) {
		why = "bad signature";
	} else if (!user || strcmp(user, cn->sv->user) != 0) {
		why = "not the user this server runs as";
	} else if (ssh_pki_export_pubkey_base64(pubkey, &b64) != SSH_OK ||
	           !(blob = malloc(NET_SSH_AUTHKEYS_MAX_BLOB))) {
		why = "cannot encode the key";
	} else {
		ssize_t bl = net_b64_decode(b64, strlen(b64), blob, NET_SSH_AUTHKEYS_MAX_BLOB);
		found = bl > 0 ? authkeys_lookup(cn->sv->authkeys, blob, (size_t)bl, cn->sv->o->verbose > 0,
		                                 NULL, &e)
		               : -EINVAL;
		if (found < 0)
			why = e.msg[0] ? e.msg : "the key cannot be looked up";
		else if (found == 0)
			why = "not in authorized_keys";
	}
	ssh_string_free_char(b64);
	free(blob);

	if (!why) {
		if (state == SSH_PUBLICKEY_STATE_NONE) {
			if (cn->sv->o->verbose)
				slog("%s: key %s for %s is listed; waiting for its signature", cn->where,
				     desc, uq);
			return SSH_AUTH_SUCCESS; /* "this key would do": the client signs next */
		}
		snprintf(cn->user, sizeof(cn->user), "%s", user);
		cn->authed = true;
		slog("accepted publickey for %s from %s: %s", uq, cn->where, desc);
		return SSH_AUTH_SUCCESS;
	}
	cn->refused_auths++;
	slog("refused publickey for %s from %s: %s (%s)", uq, cn->where, desc, why);
	if (cn->refused_auths >= NET_SSH_SERVER_MAX_AUTH_TRIES)
		cn->drop = true;
	return SSH_AUTH_DENIED;
}

static int on_exec(ssh_session s, ssh_channel ch, const char *command, void *ud)
{
	struct conn *cn = ud;
	struct qs_err e = {0};
	if (cn->req != REQ_NONE)
		return -1; /* one command per connection */
	if (net_ssh_server_check_command(command, &e) == 0) {
		cn->req = REQ_EXEC;
		if (cn->sv->o->verbose)
			slog("%s: exec '%s'", cn->where, command);
		return 0;
	}
	cn->req = REQ_REFUSED;
	snprintf(cn->why, sizeof(cn->why), "%s", e.msg);
	slog("%s: %s", cn->where, e.msg);
	return 0; /* taken, so the client hears why on stderr and gets exit-status 1 */
}

static int on_shell(ssh_session s, ssh_channel ch, void *ud)
{
	struct conn *cn = ud;
	if (cn->req != REQ_NONE)
		return -1;
	cn->req = REQ_REFUSED;
	snprintf(cn->why, sizeof(cn->why), "refused a shell: only 'qsync --server' runs here");
	slog("%s: %s", cn->where, cn->why);
	return 0;
}

static int on_pty(ssh_session s, ssh_channel ch, const char *term, int w, int h, int pw, int ph, void *ud)
{
	struct conn *cn = ud;
	slog("%s: refused a pty request", cn->where);
	return -1;
}

static int on_env(ssh_session s, ssh_channel ch, const char *name, const char *value, void *ud)
{
	struct conn *cn = ud;
	char q[CMD_QUOTE_MAX];
	if (cn->sv->o->verbose) {
		quote_cmd(name ? name : "?", q, sizeof(q));
		slog("%s: refused env request for %s", cn->where, q);
	}
	return -1;
}

static int on_subsystem(ssh_session s, ssh_channel ch, const char *subsystem, void *ud)
{
	struct conn *cn = ud;
	char q[CMD_QUOTE_MAX];
	quote_cmd(subsystem ? subsystem : "", q, sizeof(q));
	slog("%s: refused subsystem '%s'", cn->where, q);
	return -1;
}

static void on_close(ssh_session s, ssh_channel ch, void *ud)
{
	struct conn *cn = ud;
	cn->remote_closed = true;
}

/* Whatever the callbacks above leave: libssh refuses it (return 1: its default reply); we log it. */
static int on_message(ssh_session s, ssh_message m, void *ud)
{
	struct conn *cn = ud;
	int sub = ssh_message_subtype(m);
	bool v = cn->sv->o->verbose > 0;
	char q[CMD_QUOTE_MAX]; /* what the client named, as it may be logged */

	switch (ssh_message_type(m)) {
	case SSH_REQUEST_AUTH: {
		const char *user = ssh_message_auth_user(m);
		quote_cmd(user ? user : "?", q, sizeof(q));
		const char *method = sub == SSH_AUTH_METHOD_PASSWORD      ? "password"
		                     : sub == SSH_AUTH_METHOD_INTERACTIVE ? "keyboard-interactive"
		                     : sub == SSH_AUTH_METHOD_GSSAPI_MIC  ? "gssapi-with-mic"
		                     : sub == SSH_AUTH_METHOD_HOSTBASED   ? "hostbased"
		                                                          : "unknown";
		if (sub == SSH_AUTH_METHOD_NONE || cn->authed) {
			if (v)
				slog("%s: auth method none for %s: offering publickey", cn->where, q);
			break;
		}
		cn->refused_auths++;
		slog("refused %s authentication for %s from %s: public keys only", method, q, cn->where);
		if (cn->refused_auths >= NET_SSH_SERVER_MAX_AUTH_TRIES)
			cn->drop = true;
		break;
	}
	case SSH_REQUEST_CHANNEL_OPEN:
		if (sub == SSH_CHANNEL_DIRECT_TCPIP) {
			const char *d = ssh_message_channel_request_open_destination(m);
			quote_cmd(d ? d : "?", q, sizeof(q));
			slog("%s: refused port forwarding to %s port %d", cn->where, q,
			     ssh_message_channel_request_open_destination_port(m));
		} else {
			slog("%s: refused a channel of type %d", cn->where, sub);
		}
		break;
	case SSH_REQUEST_CHANNEL:
		if (sub == SSH_CHANNEL_REQUEST_X11)
			slog("%s: refused X11 forwarding", cn->where);
		else if (v && sub != SSH_CHANNEL_REQUEST_WINDOW_CHANGE)
			slog("%s: refused a channel request (type %d)", cn->where, sub);
		break;
	case SSH_REQUEST_GLOBAL:
		if (sub == SSH_GLOBAL_REQUEST_TCPIP_FORWARD)
			slog("%s: refused remote port forwarding (port %d)", cn->where,
			     ssh_message_global_request_port(m));
		else if (v && sub != SSH_GLOBAL_REQUEST_KEEPALIVE)
			slog("%s: refused a global request (type %d)", cn->where, sub);
		break;
	default:
		break;
	}
	return 1;
}

static ssh_channel on_channel_open(ssh_session s, void *ud)
{
	struct conn *cn = ud;
	if (!cn->authed || cn->ch) {
		slog("%s: refused a %s session channel", cn->where, cn->ch ? "second" : "pre-auth");
		return NULL;
	}
	cn->ch = ssh_channel_new(s);
	if (!cn->ch)
		return NULL;
	memset(&cn->ccb, 0, sizeof(cn->ccb));
	cn->ccb.userdata = cn;
	cn->ccb.channel_exec_request_function = on_exec;
	cn->ccb.channel_shell_request_function = on_shell;
	cn->ccb.channel_pty_request_function = on_pty;
	cn->ccb.channel_env_request_function = on_env;
	cn->ccb.channel_subsystem_request_function = on_subsystem;
	cn->ccb.channel_close_function = on_close;
	ssh_callbacks_init(&cn->ccb);
	ssh_set_channel_callbacks(cn->ch, &cn->ccb);
	return cn->ch;
}

/* Processes input until cond holds, the client goes away, or ms pass (-1: no limit but the alarm). */
static void pump(struct conn *cn, bool (*cond)(const struct conn *), int64_t ms)
{
	ssh_event ev = ssh_event_new();
	int64_t deadline = ms < 0 ? INT64_MAX : net_ssh_now_ms() + ms;
	if (!ev || ssh_event_add_session(ev, cn->s) != SSH_OK) {
		if (ev)
			ssh_event_free(ev);
		return;
	}
	while (!cond(cn) && !cn->drop && ssh_is_connected(cn->s) && net_ssh_now_ms() < deadline) {
		if (ssh_event_dopoll(ev, NET_SSH_POLL_STEP_MS) == SSH_ERROR && errno != EINTR)
			break;
	}
	ssh_event_remove_session(ev, cn->s);
	ssh_event_free(ev);
}

/* A request to act on, or a session channel the client closed before making one. */
static bool have_request(const struct conn *cn)
{
	return cn->req != REQ_NONE || (cn->ch && ssh_channel_is_closed(cn->ch));
}

static bool remote_closed(const struct conn *cn)
{
	return cn->remote_closed;
}

/* exit-status, EOF, close; then the client's close, so the status is not lost with the connection. */
static void end_channel(struct conn *cn, int status)
{
	if (!cn->ch)
		return;
	ssh_set_blocking(cn->s, 0); /* a client that stopped reading must not hold us */
	if (ssh_channel_is_open(cn->ch)) {
		(void)ssh_channel_request_send_exit_status(cn->ch, status);
		(void)ssh_channel_send_eof(cn->ch);
		(void)ssh_channel_close(cn->ch);
	}
	(void)ssh_blocking_flush(cn->s, FINISH_FLUSH_MS);
	ssh_set_blocking(cn->s, 1);
	pump(cn, remote_closed, FINISH_WAIT_MS);
}

struct srv_link {
	struct net_ssh_chan base; /* first: the impl the shared transport functions see */
	struct conn *cn;
	int exit_status; /* sent on finish */
};

static int srv_link_finish(void *impl, int *exit_status)
{
	struct srv_link *l = impl;
	if (exit_status)
		*exit_status = -1; /* we are the side that has one to send */
	end_channel(l->cn, l->exit_status);
	free(l);
	return 0;
}

static const struct net_ctl_ops srv_link_ops = {
    .read = net_ssh_chan_read,
    .write = net_ssh_chan_write,
    .poll_fd = net_ssh_chan_poll_fd,
    .pending = net_ssh_chan_pending,
    .finish = srv_link_finish,
};

static int run_session(struct conn *cn, int fd)
{
	struct net_ssh_server_conn info;
	struct net_ctl_chan *c = NULL;
	struct srv_link *l = calloc(1, sizeof(*l));
	int64_t t0 = net_ssh_now_ms();

	if (!l) {
		end_channel(cn, SSH_FAILED_EXIT);
		return SSH_FAILED_EXIT;
	}
	l->base.s = cn->s;
	l->base.ch = cn->ch;
	l->cn = cn;
	if (net_ctl_chan_new(&srv_link_ops, l, &c) < 0) {
		free(l);
		end_channel(cn, SSH_FAILED_EXIT);
		return SSH_FAILED_EXIT;
	}
	memset(&info, 0, sizeof(info));
	info.local_len = sizeof(info.local);
	info.peer_len = sizeof(info.peer);
	if (getsockname(fd, (struct sockaddr *)&info.local, &info.local_len) < 0)
		info.local_len = 0;
	if (getpeername(fd, (struct sockaddr *)&info.peer, &info.peer_len) < 0)
		info.peer_len = 0;
	info.user = cn->user;

	int code = cn->sv->handler(c, &info, cn->sv->ctx);
	if (code < 0 || code > 255)
		code = SSH_FAILED_EXIT;
	l->exit_status = code;
	net_ctl_chan_finish(c, NULL);
	int64_t ms = net_ssh_now_ms() - t0;
	slog("session for %s from %s ended: exit %d after %lld.%03lld s", cn->user, cn->where, code,
	     (long long)(ms / 1000), (long long)(ms % 1000));
	return code;
}

/* The connection process's whole life. Returns its exit code. */
static int serve_conn(struct server *sv, int fd, const struct sockaddr_storage *peer)
{
	struct conn *cn = calloc(1, sizeof(*cn));
	int code = SSH_FAILED_EXIT;

	if (!cn) {
		close(fd);
		return code;
	}
	cn->sv = sv;
	addr_text(peer, cn->where, sizeof(cn->where));
	int n = snprintf(grace_msg, sizeof(grace_msg),
	                 "qsync serve[%d]: %s: login grace time (%d s) is over; connection dropped\n",
	                 (int)getpid(), cn->where, sv->o->login_grace_s);
	grace_len = n > 0 && (size_t)n < sizeof(grace_msg) ? (size_t)n : 0;
	signal(SIGALRM, on_grace_alarm);
	alarm((unsigned)sv->o->login_grace_s);
	if (sv->o->verbose)
		slog("connection from %s", cn->where);

	if (!(cn->s = ssh_new())) {
		close(fd);
		goto out;
	}
	if (ssh_bind_accept_fd(sv->bind, cn->s, fd) != SSH_OK) {
		/* fd may or may not belong to the session now: this process ends either way */
		slog("%s: cannot start the session: %s", cn->where, ssh_get_error(sv->bind));
		goto out;
	}
	cn->scb.userdata = cn;
	cn->scb.auth_pubkey_function = on_auth_pubkey;
	cn->scb.channel_open_request_session_function = on_channel_open;
	ssh_callbacks_init(&cn->scb);
	ssh_set_server_callbacks(cn->s, &cn->scb);
	ssh_set_message_callback(cn->s, on_message, cn);

	if (ssh_handle_key_exchange(cn->s) != SSH_OK) {
		char q[CMD_QUOTE_MAX * 2];
		quote_cmd(ssh_get_error(cn->s), q, sizeof(q));
		slog("%s: key exchange failed: %s", cn->where, q);
		goto out;
	}
	ssh_set_auth_methods(cn->s, SSH_AUTH_METHOD_PUBLICKEY); /* what a refusal offers: nothing else */
	pump(cn, have_request, -1);
	if (cn->drop) {
		slog("%s: %d authentication attempts refused; disconnecting", cn->where, cn->refused_auths);
		goto out;
	}
	if (cn->req == REQ_NONE) {
		if (!cn->authed)
			slog("%s: connection closed before authentication (%d attempts refused)", cn->where,
			     cn->refused_auths);
		else if (cn->sv->o->verbose)
			slog("%s: connection closed without a command", cn->where);
		goto out;
	}
	alarm(0);

	if (cn->req == REQ_REFUSED) {
		char line[QS_ERR_MSG_MAX + 32];
		snprintf(line, sizeof(line), "qsync serve: %s\n", cn->why);
		(void)ssh_channel_write_stderr(cn->ch, line, (uint32_t)strlen(line));
		end_channel(cn, REFUSED_EXIT);
		code = REFUSED_EXIT;
		goto out;
	}
	code = run_session(cn, fd);
out:
	alarm(0);
	if (cn->s) {
		if (ssh_is_connected(cn->s))
			ssh_disconnect(cn->s);
		ssh_free(cn->s); /* frees the channel and closes fd */
	}
	free(cn);
	return code;
}

/* ---- the listener (the parent) ------------------------------------------------------------------ */

static volatile sig_atomic_t stop_sig;
static volatile sig_atomic_t child_exited;

static void on_stop(int sig)
{
	stop_sig = sig;
}

static void on_child(int sig)
{
	child_exited = 1;
}

static const int handled_sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD};

static void reap(struct server *sv, bool quiet)
{
	for (int i = 0; i < sv->nkids;) {
		int st;
		pid_t r = waitpid(sv->kids[i], &st, WNOHANG);
		if (r == 0 || (r < 0 && errno == EINTR)) {
			i++;
			continue;
		}
		if (r > 0 && !quiet && sv->o->verbose) {
			if (WIFSIGNALED(st))
				slog("connection process %d killed by signal %d", (int)r, WTERMSIG(st));
			else
				slog("connection process %d exited %d", (int)r, WEXITSTATUS(st));
		} else if (r > 0 && WIFSIGNALED(st) && WTERMSIG(st) != SIGTERM && WTERMSIG(st) != SIGKILL) {
			slog("connection process %d died of signal %d", (int)r, WTERMSIG(st));
		}
		sv->kids[i] = sv->kids[--sv->nkids];
	}
}

static int listen_on(struct server *sv, struct qs_err *err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1;
	const struct net_ssh_server_opts *o = sv->o;

	if (parse_ip(o->listen_addr, &ss, &sl) < 0)
		return qs_err_set(err, -EINVAL, "listen address '%s' is not a numeric IPv4 or IPv6 address",
		                  o->listen_addr);
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)o->port);
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)o->port);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return qs_err_set(err, -errno, "socket: %s", strerror(errno));
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		int e = errno;
		close(fd);
		return qs_err_set(err, -e, "cannot listen on %s%s%s:%d: %s",
		                  ss.ss_family == AF_INET6 ? "[" : "", o->listen_addr,
		                  ss.ss_family == AF_INET6 ? "]" : "", o->port, strerror(e));
	}
	sv->lfd = fd;
	return 0;
}

static void accept_one(struct server *sv)
{
	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);
	char where[96];

	int fd = accept4(sv->lfd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			slog("accept: %s", strerror(errno));
			struct timespec ts = {0, 100L * 1000 * 1000};
			nanosleep(&ts, NULL); /* let sessions end rather than spin */
		}
		return;
	}
	addr_text(&peer, where, sizeof(where));
	if (sv->nkids >= sv->o->max_sessions) {
		slog("refused connection from %s: %d sessions already running (--max-sessions)", where,
		     sv->nkids);
		close(fd);
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		slog("refused connection from %s: fork: %s", where, strerror(errno));
		close(fd);
		return;
	}
	if (pid == 0) {
		/* the connection process: default signal dispositions, nothing of the listener's */
		for (size_t i = 0; i < N_OF(handled_sigs); i++)
			signal(handled_sigs[i], SIG_DFL);
		sigprocmask(SIG_SETMASK, &sv->oldmask, NULL);
		close(sv->lfd);
		int code = serve_conn(sv, fd, &peer);
		ssh_bind_free(sv->bind);
		free(sv->kids);
		ssh_finalize();
		exit(code);
	}
	sv->kids[sv->nkids++] = pid;
	close(fd);
}

static void stop_children(struct server *sv)
{
	if (sv->nkids == 0)
		return;
	slog("stopping %d running session%s", sv->nkids, sv->nkids == 1 ? "" : "s");
	for (int i = 0; i < sv->nkids; i++)
		kill(sv->kids[i], SIGTERM);
	int64_t deadline = net_ssh_now_ms() + NET_SSH_SERVER_STOP_WAIT_MS;
	while (sv->nkids > 0 && net_ssh_now_ms() < deadline) {
		struct timespec ts = {0, 50L * 1000 * 1000};
		nanosleep(&ts, NULL);
		reap(sv, true);
	}
	for (int i = 0; i < sv->nkids; i++) {
		slog("connection process %d did not stop; killing it", (int)sv->kids[i]);
		kill(sv->kids[i], SIGKILL);
	}
	while (sv->nkids > 0) {
		int st;
		if (waitpid(sv->kids[sv->nkids - 1], &st, 0) >= 0 || errno != EINTR)
			sv->nkids--;
	}
}

/* Fills the resolved paths and the serving user. */
static int resolve(struct server *sv, struct qs_err *err)
{
	const struct net_ssh_server_opts *o = sv->o;
	char home[1024];
	int rc;

	if ((rc = serving_user(sv->user, sizeof(sv->user), home, sizeof(home), err)) < 0)
		return rc;
	if (o->authorized_keys[0])
		snprintf(sv->authkeys, sizeof(sv->authkeys), "%s", o->authorized_keys);
	else if (snprintf(sv->authkeys, sizeof(sv->authkeys), "%s/.ssh/authorized_keys", home) >=
	         (int)sizeof(sv->authkeys))
		return qs_err_set(err, -ENAMETOOLONG, "home directory %s is too long", home);
	if (o->host_key[0]) {
		snprintf(sv->host_key, sizeof(sv->host_key), "%s", o->host_key);
	} else {
		const char *xdg = getenv("XDG_CONFIG_HOME");
		int n = xdg && xdg[0] == '/'
		            ? snprintf(sv->host_key, sizeof(sv->host_key), "%s/%s", xdg, HOST_KEY_SUBDIR)
		            : snprintf(sv->host_key, sizeof(sv->host_key), "%s/.config/%s", home,
		                       HOST_KEY_SUBDIR);
		if (n < 0 || (size_t)n >= sizeof(sv->host_key))
			return qs_err_set(err, -ENAMETOOLONG, "the default host key path is too long");
	}
	return 0;
}

static int check_opts(const struct net_ssh_server_opts *o, struct qs_err *err)
{
	if (o->port < 0 || o->port > 65535)
		return qs_err_set(err, -EINVAL, "port %d is out of range (0..65535)", o->port);
	if (o->max_sessions < 1 || o->max_sessions > NET_SSH_SERVER_MAX_SESSIONS)
		return qs_err_set(err, -EINVAL, "max sessions %d is out of range (1..%d)", o->max_sessions,
		                  NET_SSH_SERVER_MAX_SESSIONS);
	if (o->login_grace_s < 1 || o->login_grace_s > NET_SSH_SERVER_MAX_GRACE_S)
		return qs_err_set(err, -EINVAL, "login grace %d s is out of range (1..%d)", o->login_grace_s,
		                  NET_SSH_SERVER_MAX_GRACE_S);
	return 0;
}

int net_ssh_server_run(const struct net_ssh_server_opts *o, net_ssh_server_handler handler, void *ctx,
                       struct qs_err *err)
{
	struct server sv = {.o = o, .handler = handler, .ctx = ctx, .lfd = -1};
	struct sigaction sa, old[N_OF(handled_sigs)];
	sigset_t block, waitmask;
	ssh_key key = NULL;
	char desc[160], bound[96];
	int rc, nkeys = 0;
	bool sigs_set = false;

	if (!o || !handler)
		return qs_err_set(err, -EINVAL, "net_ssh_server_run: missing argument");
	if ((rc = check_opts(o, err)) < 0 || (rc = resolve(&sv, err)) < 0)
		return rc;
	if (!(sv.kids = calloc((size_t)o->max_sessions, sizeof(*sv.kids))))
		return qs_err_set(err, -ENOMEM, "out of memory");

	if ((rc = load_host_key(sv.host_key, o->host_key_create, &key, err)) < 0)
		goto out;
	key_text(key, desc, sizeof(desc));
	{
		struct qs_err e = {0};
		int r = authkeys_lookup(sv.authkeys, NULL, 0, true, &nkeys, &e);
		if (r == -ENOENT)
			slog("warning: %s does not exist: nobody can log in until it lists a key",
			     sv.authkeys);
		else if (r < 0) {
			rc = qs_err_set(err, r, "%s", e.msg);
			goto out;
		} else if (nkeys == 0)
			slog("warning: %s lists no usable key: nobody can log in", sv.authkeys);
	}

	if (!(sv.bind = ssh_bind_new())) {
		rc = qs_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (ssh_bind_options_set(sv.bind, SSH_BIND_OPTIONS_IMPORT_KEY, key) != SSH_OK) {
		rc = qs_err_set(err, -EINVAL, "cannot use host key %s: %s", sv.host_key,
		                ssh_get_error(sv.bind));
		goto out;
	}
	key = NULL; /* the bind owns it now */
	if (ssh_bind_options_set(sv.bind, SSH_BIND_OPTIONS_PUBKEY_ACCEPTED_KEY_TYPES, SIG_ACCEPTED_TYPES) !=
	    SSH_OK) {
		rc =
		    qs_err_set(err, -EINVAL, "cannot set the accepted key types: %s", ssh_get_error(sv.bind));
		goto out;
	}
	if (o->verbose >= 2) {
		int level = o->verbose >= 3 ? SSH_LOG_PACKET : SSH_LOG_PROTOCOL;
		(void)ssh_bind_options_set(sv.bind, SSH_BIND_OPTIONS_LOG_VERBOSITY, &level);
	}

	/* Signals are blocked except inside ppoll, so none is lost between a check and the wait. */
	sigemptyset(&block);
	for (size_t i = 0; i < N_OF(handled_sigs); i++)
		sigaddset(&block, handled_sigs[i]);
	sigprocmask(SIG_BLOCK, &block, &sv.oldmask);
	waitmask = sv.oldmask; /* what ppoll waits with: ours open, whatever else the caller blocked */
	for (size_t i = 0; i < N_OF(handled_sigs); i++)
		sigdelset(&waitmask, handled_sigs[i]);
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < N_OF(handled_sigs); i++) {
		sa.sa_handler = handled_sigs[i] == SIGCHLD ? on_child : on_stop;
		sa.sa_flags = handled_sigs[i] == SIGCHLD ? SA_NOCLDSTOP : 0;
		sigaction(handled_sigs[i], &sa, &old[i]);
	}
	signal(SIGPIPE, SIG_IGN);
	sigs_set = true;
	stop_sig = 0;

	if ((rc = listen_on(&sv, err)) < 0)
		goto out;
	{
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getsockname(sv.lfd, (struct sockaddr *)&ss, &sl) == 0) {
			unsigned port = addr_ip(&ss, bound, sizeof(bound));
			slog("listening on %s%s%s:%u; host key %s (%s); authorized_keys %s (%d key%s); user "
			     "%s",
			     ss.ss_family == AF_INET6 ? "[" : "", bound, ss.ss_family == AF_INET6 ? "]" : "",
			     port, sv.host_key, desc, sv.authkeys, nkeys, nkeys == 1 ? "" : "s", sv.user);
		}
	}

	while (!stop_sig) {
		struct pollfd p = {.fd = sv.lfd, .events = POLLIN};
		child_exited = 0;
		reap(&sv, false);
		int r = ppoll(&p, 1, NULL, &waitmask);
		if (r < 0 && errno != EINTR) {
			rc = qs_err_set(err, -errno, "poll: %s", strerror(errno));
			goto out;
		}
		if (r > 0 && (p.revents & POLLIN) && !stop_sig)
			accept_one(&sv);
	}
	slog("stopping on signal %d", (int)stop_sig);
	close(sv.lfd);
	sv.lfd = -1;
	stop_children(&sv);
	rc = 0;
out:
	if (sv.lfd >= 0)
		close(sv.lfd);
	if (sv.nkids > 0)
		stop_children(&sv);
	if (sigs_set) {
		for (size_t i = 0; i < N_OF(handled_sigs); i++)
			sigaction(handled_sigs[i], &old[i], NULL);
		sigprocmask(SIG_SETMASK, &sv.oldmask, NULL);
	}
	ssh_key_free(key);
	ssh_bind_free(sv.bind);
	free(sv.kids);
	return rc;
}
