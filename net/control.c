/* The control-plane codec: one JSON object per line, checked by a strict syntax pass, tokenised by jsmn
 * into a fixed array on the stack, then read field by field into struct net_ctl_msg; and the escaping
 * writer that produces those lines. Nothing here allocates; every byte read is bounds-checked.
 *
 * Decisions the header leaves open:
 * - a known field given twice in one object is rejected (-EPROTO); unknown fields, duplicated or not,
 *   are ignored. "type" given twice is rejected too.
 * - an optional field whose value is null counts as absent.
 * - more than NET_CTL_MAX_TOKENS tokens, or nesting deeper than CTL_MAX_DEPTH, is -EBADMSG.
 * - strings are not checked for valid UTF-8 (file names are bytes); \u0000 and lone surrogates are
 *   refused, raw control characters inside strings too (strict JSON).
 * - net_ctl_emit also needs room for a terminating NUL (the line is always a C string), refuses
 *   NET_CTL_UNKNOWN with -EINVAL, and writes a non-finite or negative duration_seconds as 0.
 */
#include "net/control.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#define CTL_MAX_DEPTH   32 /* nesting of objects/arrays in one message; ours use 2 */
#define CTL_MAX_KEY     64 /* longest key we compare; longer keys cannot be ours */
#define CTL_MAX_NUMBER  64 /* longest number text we convert */
#define CTL_MAX_PSK_B64 64 /* base64 of 32 bytes is 44 characters */
#define CTL_HINT_MAX    40 /* bytes of a hostile string quoted back in an error */

static const char *const type_names[] = {
    [NET_CTL_UNKNOWN] = "unknown",
    [NET_CTL_HELLO] = "hello",
    [NET_CTL_HELLO_ACK] = "hello-ack",
    [NET_CTL_QUIC_INIT] = "quic_init",
    [NET_CTL_QUIC_READY] = "quic_ready",
    [NET_CTL_SYNC_START] = "sync_start",
    [NET_CTL_PROGRESS] = "progress",
    [NET_CTL_ERROR] = "error",
    [NET_CTL_RETRY] = "retry",
    [NET_CTL_SYNC_COMPLETE] = "sync_complete",
    [NET_CTL_ACK_COMPLETE] = "ack_complete",
    [NET_CTL_BYE] = "bye",
    [NET_CTL_DATA_PATH] = "data_path",
    [NET_CTL_DATA_PATH_ACK] = "data_path_ack",
    [NET_CTL_SYNC_READY] = "sync_ready",
};

static const char *const path_names[] = {[NET_CTL_PATH_QUIC] = "quic", [NET_CTL_PATH_SSH] = "ssh"};
#define N_TYPES (sizeof(type_names) / sizeof(type_names[0]))

const char *net_ctl_type_name(enum net_ctl_type t)
{
	if ((unsigned)t >= N_TYPES || !type_names[t])
		return "unknown";
	return type_names[t];
}

/* ---- base64 ----------------------------------------------------------------------------------- */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

ssize_t net_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
	size_t need = (n + 2) / 3 * 4;
	if (n > SIZE_MAX / 2 || need + 1 > cap)
		return -ENOSPC;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		size_t left = n - i;
		if (left > 1)
			v |= (uint32_t)in[i + 1] << 8;
		if (left > 2)
			v |= in[i + 2];
		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = left > 1 ? b64_alphabet[(v >> 6) & 63] : '=';
		out[o++] = left > 2 ? b64_alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return (ssize_t)o;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict: padded, no whitespace, padding only at the end, unused bits zero (one text per value). */
ssize_t net_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	if (n % 4 != 0)
		return -EINVAL;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		bool last = i + 4 == n;
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + (size_t)k];
			if (c == '=' && last && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad) /* data after '=' */
				return -EINVAL;
			v[k] = b64_value(c);
			if (v[k] < 0)
				return -EINVAL;
		}
		uint32_t w =
		    (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
			return -EINVAL;
		size_t nb = 3 - (size_t)pad;
		if (o + nb > cap)
			return -ENOSPC;
		out[o++] = (uint8_t)(w >> 16);
		if (nb > 1)
			out[o++] = (uint8_t)(w >> 8);
		if (nb > 2)
			out[o++] = (uint8_t)w;
	}
	return (ssize_t)o;
}

/* ---- strict JSON syntax check (before jsmn, which is lenient about commas, colons and numbers) ---- */

struct syn {
	const char *s;
	size_t len;
	size_t pos;
	const char *why; /* first problem found */
};

static bool syn_fail(struct syn *y, const char *why)
{
	if (!y->why)
		y->why = why;
	return false;
}

static void syn_ws(struct syn *y)
{
	while (y->pos < y->len) {
		char c = y->s[y->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			return;
		y->pos++;
	}
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads 4 hex digits at s[*pos]; -1 when they are not there. */
static long hex4(const char *s, size_t len, size_t pos)
{
	if (len < 4 || pos > len - 4)
		return -1;
	long v = 0;
	for (size_t k = 0; k < 4; k++) {
		int h = hexval((unsigned char)s[pos + k]);
		if (h < 0)
			return -1;
		v = v << 4 | h;
	}
	return v;
}

static bool syn_string(struct syn *y)
{
	y->pos++; /* opening quote */
	while (y->pos < y->len) {
		unsigned char c = (unsigned char)y->s[y->pos];
		if (c == '"') {
			y->pos++;
			return true;
		}
		if (c < 0x20)
			return syn_fail(y, "control character inside a string");
		if (c != '\\') {
			y->pos++;
			continue;
		}
		if (y->pos + 1 >= y->len)
			return syn_fail(y, "unterminated string");
		char e = y->s[y->pos + 1];
		if (e != '\0' && strchr("\"\\/bfnrt", e)) {
			y->pos += 2;
			continue;
		}
		if (e != 'u')
			return syn_fail(y, "bad escape in a string");
		long u = hex4(y->s, y->len, y->pos + 2);
		if (u < 0)
			return syn_fail(y, "bad \\u escape (needs 4 hex digits)");
		if (u == 0)
			return syn_fail(y, "\\u0000 is not allowed in a string");
		if (u >= 0xDC00 && u <= 0xDFFF)
			return syn_fail(y, "lone low surrogate in a \\u escape");
		y->pos += 6;
		if (u >= 0xD800 && u <= 0xDBFF) {
			long lo = -1;
			if (y->pos + 1 < y->len && y->s[y->pos] == '\\' && y->s[y->pos + 1] == 'u')
				lo = hex4(y->s, y->len, y->pos + 2);
			if (lo < 0xDC00 || lo > 0xDFFF)
				return syn_fail(y, "lone high surrogate in a \\u escape");
			y->pos += 6;
		}
	}
	return syn_fail(y, "unterminated string");
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool syn_number(struct syn *y)
{
	const char *s = y->s;
	size_t p = y->pos;
	if (s[p] != '-' && !is_digit(s[p]))
		return syn_fail(y, "unexpected character");
	if (s[p] == '-')
		p++;
	if (p >= y->len || !is_digit(s[p]))
		return syn_fail(y, "bad number");
	if (s[p] == '0')
		p++;
	else
		while (p < y->len && is_digit(s[p]))
			p++;
	if (p < y->len && s[p] == '.') {
		p++;
		if (p >= y->len || !is_digit(s[p]))
			return syn_fail(y, "bad number");
		while (p < y->len && is_digit(s[p]))
			p++;
	}
	if (p < y->len && (s[p] == 'e' || s[p] == 'E')) {
		p++;
		if (p < y->len && (s[p] == '+' || s[p] == '-'))
			p++;
		if (p >= y->len || !is_digit(s[p]))
			return syn_fail(y, "bad number");
		while (p < y->len && is_digit(s[p]))
			p++;
	}
	y->pos = p;
	return true;
}

static bool syn_word(struct syn *y, const char *w)
{
	size_t n = strlen(w);
	if (y->len - y->pos < n || memcmp(y->s + y->pos, w, n) != 0)
		return syn_fail(y, "unexpected character");
	y->pos += n;
	return true;
}

static bool syn_value(struct syn *y, int depth);

static bool syn_container(struct syn *y, int depth)
{
	bool obj = y->s[y->pos] == '{';
	char close = obj ? '}' : ']';
	if (depth >= CTL_MAX_DEPTH)
		return syn_fail(y, "nested too deeply");
	y->pos++;
	syn_ws(y);
	if (y->pos < y->len && y->s[y->pos] == close) {
		y->pos++;
		return true;
	}
	for (;;) {
		if (obj) {
			if (y->pos >= y->len || y->s[y->pos] != '"')
				return syn_fail(y, y->pos >= y->len ? "truncated" : "expected a string key");
			if (!syn_string(y))
				return false;
			syn_ws(y);
			if (y->pos >= y->len || y->s[y->pos] != ':')
				return syn_fail(y, y->pos >= y->len ? "truncated" : "expected ':'");
			y->pos++;
			syn_ws(y);
		}
		if (!syn_value(y, depth + 1))
			return false;
		syn_ws(y);
		if (y->pos >= y->len)
			return syn_fail(y, "truncated");
		if (y->s[y->pos] == close) {
			y->pos++;
			return true;
		}
		if (y->s[y->pos] != ',')
			return syn_fail(y, obj ? "expected ',' or '}'" : "expected ',' or ']'");
		y->pos++;
		syn_ws(y);
	}
}

static bool syn_value(struct syn *y, int depth)
{
	if (y->pos >= y->len)
		return syn_fail(y, "truncated");
	switch (y->s[y->pos]) {
	case '{':
	case '[':
		return syn_container(y, depth);
	case '"':
		return syn_string(y);
	case 't':
		return syn_word(y, "true");
	case 'f':
		return syn_word(y, "false");
	case 'n':
		return syn_word(y, "null");
	default:
		return syn_number(y);
	}
}

/* ---- reading tokens ----------------------------------------------------------------------------- */

struct pctx {
	const char *js;
	const jsmntok_t *tok;
	int ntok;
	const char *tname;  /* message type, for error words */
	const char *prefix; /* "" or "udp_endpoint." while inside a nested object */
	struct qs_err *err;
};

/* Index of the token after token i and everything inside it. */
static int skip(const jsmntok_t *tok, int ntok, int i)
{
	int pending = 1;
	while (pending > 0 && i < ntok) {
		pending += tok[i].size - 1;
		i++;
	}
	return i;
}

static int append_utf8(char *out, size_t cap, size_t *o, uint32_t cp)
{
	uint8_t b[4];
	size_t n;
	if (cp < 0x80) {
		b[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (uint8_t)(0xC0 | cp >> 6);
		b[1] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (uint8_t)(0xE0 | cp >> 12);
		b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		b[0] = (uint8_t)(0xF0 | cp >> 18);
		b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
		b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		b[3] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 4;
	}
	if (*o + n >= cap)
		return -ENAMETOOLONG;
	memcpy(out + *o, b, n);
	*o += n;
	return 0;
}

/* Unescapes the body of string token t into out (NUL-terminated, cap including the NUL).
 * -ENAMETOOLONG when it does not fit (out then holds a truncated prefix), -EBADMSG on a bad escape
 * (the syntax pass has refused those already; this is belt and braces). */
static int unescape(const char *s, size_t n, char *out, size_t cap, size_t *outlen)
{
	size_t o = 0;
	int rc = 0;
	if (cap == 0)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c != '\\') {
			if (c < 0x20) {
				rc = -EBADMSG;
				goto out;
			}
			if (o + 1 >= cap) {
				rc = -ENAMETOOLONG;
				goto out;
			}
			out[o++] = (char)c;
			i++;
			continue;
		}
		if (i + 1 >= n) {
			rc = -EBADMSG;
			goto out;
		}
		char e = s[i + 1];
		char lit = 0;
		switch (e) {
		case '"':
			lit = '"';
			break;
		case '\\':
			lit = '\\';
			break;
		case '/':
			lit = '/';
			break;
		case 'b':
			lit = '\b';
			break;
		case 'f':
			lit = '\f';
			break;
		case 'n':
			lit = '\n';
			break;
		case 'r':
			lit = '\r';
			break;
		case 't':
			lit = '\t';
			break;
		case 'u':
			break;
		default:
			rc = -EBADMSG;
			goto out;
		}
		if (lit) {
			if (o + 1 >= cap) {
				rc = -ENAMETOOLONG;
				goto out;
			}
			out[o++] = lit;
			i += 2;
			continue;
		}
		long u = hex4(s, n, i + 2);
		i += 6;
		if (u <= 0 || (u >= 0xDC00 && u <= 0xDFFF)) {
			rc = -EBADMSG;
			goto out;
		}
		uint32_t cp = (uint32_t)u;
		if (u >= 0xD800 && u <= 0xDBFF) {
			long lo = (i + 1 < n && s[i] == '\\' && s[i + 1] == 'u') ? hex4(s, n, i + 2) : -1;
			if (lo < 0xDC00 || lo > 0xDFFF) {
				rc = -EBADMSG;
				goto out;
			}
			i += 6;
			cp = 0x10000 + (((uint32_t)u - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
		}
		if ((rc = append_utf8(out, cap, &o, cp)) < 0)
			goto out;
	}
out:
	out[o] = '\0';
	if (outlen)
		*outlen = o;
	return rc;
}

static const char *tok_text(const struct pctx *p, int i)
{
	return p->js + p->tok[i].start;
}

static size_t tok_len(const struct pctx *p, int i)
{
	return (size_t)(p->tok[i].end - p->tok[i].start);
}

static bool key_is(const struct pctx *p, int k, const char *name)
{
	char buf[CTL_MAX_KEY];
	if (p->tok[k].type != JSMN_STRING || tok_len(p, k) >= 6 * sizeof(buf))
		return false;
	if (unescape(tok_text(p, k), tok_len(p, k), buf, sizeof(buf), NULL) < 0)
		return false;
	return strcmp(buf, name) == 0;
}

/* Finds field name in object token obj. Returns 1 with *val set, 0 when absent, -EPROTO when the field
 * is given twice. */
static int find_field(const struct pctx *p, int obj, const char *name, int *val)
{
	int found = -1;
	int i = obj + 1;
	for (int k = 0; k < p->tok[obj].size && i < p->ntok; k++) {
		if (i + 1 >= p->ntok)
			break;
		if (key_is(p, i, name)) {
			if (found >= 0)
				return qs_err_set(p->err, -EPROTO, "%s: field \"%s%s\" appears twice",
				                  p->tname, p->prefix, name);
			found = i + 1;
		}
		i = skip(p->tok, p->ntok, i + 1);
	}
	*val = found;
	return found >= 0;
}

static bool tok_is_null(const struct pctx *p, int v)
{
	return p->tok[v].type == JSMN_PRIMITIVE && tok_len(p, v) == 4 &&
	       memcmp(tok_text(p, v), "null", 4) == 0;
}

/* Looks a field up. Returns 1 with *v set, 0 when absent (or null and optional), -EPROTO when it is
 * required but absent, or given twice. */
static int field(const struct pctx *p, int obj, const char *name, bool required, int *v)
{
	int rc = find_field(p, obj, name, v);
	if (rc < 0)
		return rc;
	if (rc == 1 && tok_is_null(p, *v) && !required)
		rc = 0;
	if (rc == 0 && required)
		return qs_err_set(p->err, -EPROTO, "%s: required field \"%s%s\" is missing", p->tname,
		                  p->prefix, name);
	return rc;
}

static int mistyped(const struct pctx *p, const char *name, const char *what)
{
	return qs_err_set(p->err, -EPROTO, "%s: field \"%s%s\": expected %s", p->tname, p->prefix, name,
	                  what);
}

static int get_str(const struct pctx *p, int obj, const char *name, bool required, char *dst, size_t cap)
{
	int v;
	int rc = field(p, obj, name, required, &v);
	if (rc <= 0)
		return rc;
	if (p->tok[v].type != JSMN_STRING)
		return mistyped(p, name, "a string");
	rc = unescape(tok_text(p, v), tok_len(p, v), dst, cap, NULL);
	if (rc == -ENAMETOOLONG) {
		dst[0] = '\0';
		return qs_err_set(p->err, -EPROTO, "%s: field \"%s%s\": longer than %zu bytes", p->tname,
		                  p->prefix, name, cap - 1);
	}
	if (rc < 0)
		return qs_err_set(p->err, -EBADMSG, "%s: field \"%s%s\": bad escape", p->tname, p->prefix,
		                  name);
	return 1;
}

/* Token i as a non-negative integer no larger than max. */
static bool uint_token(const struct pctx *p, int i, uint64_t max, uint64_t *out)
{
	const char *s = tok_text(p, i);
	size_t n = tok_len(p, i);
	if (p->tok[i].type != JSMN_PRIMITIVE || n == 0 || n > 20)
		return false;
	uint64_t x = 0;
	for (size_t k = 0; k < n; k++) {
		if (!is_digit(s[k]))
			return false;
		unsigned d = (unsigned)(s[k] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	if (x > max)
		return false;
	*out = x;
	return true;
}

/* A non-negative integer no larger than max. */
static int get_uint(const struct pctx *p, int obj, const char *name, bool required, uint64_t max,
                    uint64_t *out)
{
	int v;
	int rc = field(p, obj, name, required, &v);
	if (rc <= 0)
		return rc;
	const char *s = tok_text(p, v);
	size_t n = tok_len(p, v);
	if (p->tok[v].type != JSMN_PRIMITIVE || n == 0 || !is_digit(s[0]))
		return mistyped(p, name, "a non-negative integer");
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return mistyped(p, name, "a non-negative integer");
		unsigned d = (unsigned)(s[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return mistyped(p, name, "a non-negative integer that fits in 64 bits");
		x = x * 10 + d;
	}
	if (x > max)
		return qs_err_set(p->err, -EPROTO,
		                  "%s: field \"%s%s\": %" PRIu64 " is out of range (at most %" PRIu64 ")",
		                  p->tname, p->prefix, name, x, max);
	*out = x;
	return 1;
}

static int get_u64(const struct pctx *p, int obj, const char *name, bool required, uint64_t *out)
{
	return get_uint(p, obj, name, required, UINT64_MAX, out);
}

static int get_u32(const struct pctx *p, int obj, const char *name, bool required, uint32_t *out)
{
	uint64_t x;
	int rc = get_uint(p, obj, name, required, UINT32_MAX, &x);
	if (rc == 1)
		*out = (uint32_t)x;
	return rc;
}

/* An optional stream id: absent is -1. */
static int get_stream_id(const struct pctx *p, int obj, int64_t *out)
{
	uint64_t x;
	*out = -1;
	int rc = get_uint(p, obj, "quic_stream_id", false, INT64_MAX, &x);
	if (rc == 1)
		*out = (int64_t)x;
	return rc;
}

static int get_bool(const struct pctx *p, int obj, const char *name, bool *out)
{
	int v;
	int rc = field(p, obj, name, false, &v);
	if (rc <= 0)
		return rc;
	const char *s = tok_text(p, v);
	size_t n = tok_len(p, v);
	if (p->tok[v].type == JSMN_PRIMITIVE && n == 4 && memcmp(s, "true", 4) == 0)
		*out = true;
	else if (p->tok[v].type == JSMN_PRIMITIVE && n == 5 && memcmp(s, "false", 5) == 0)
		*out = false;
	else
		return mistyped(p, name, "true or false");
	return 1;
}

/* A finite, non-negative number. */
static int get_double(const struct pctx *p, int obj, const char *name, double *out)
{
	int v;
	int rc = field(p, obj, name, false, &v);
	if (rc <= 0)
		return rc;
	char buf[CTL_MAX_NUMBER];
	size_t n = tok_len(p, v);
	const char *s = tok_text(p, v);
	if (p->tok[v].type != JSMN_PRIMITIVE || n == 0 || n >= sizeof(buf) || !is_digit(s[0]))
		return mistyped(p, name, "a non-negative number");
	memcpy(buf, s, n);
	buf[n] = '\0';
	char *end = NULL;
	double d = strtod(buf, &end);
	if (end != buf + n || !isfinite(d) || d < 0)
		return mistyped(p, name, "a finite non-negative number");
	*out = d;
	return 1;
}

static int get_object(const struct pctx *p, int obj, const char *name, bool required, int *v)
{
	int rc = field(p, obj, name, required, v);
	if (rc == 1 && p->tok[*v].type != JSMN_OBJECT)
		return mistyped(p, name, "an object");
	return rc;
}

/* ---- one reader per message type ------------------------------------------------------------- */

static int parse_caps(const struct pctx *p, int obj, uint32_t *caps)
{
	int v;
	int rc = field(p, obj, "capabilities", true, &v);
	if (rc <= 0)
		return rc;
	if (p->tok[v].type != JSMN_ARRAY)
		return mistyped(p, "capabilities", "an array of strings");
	if (p->tok[v].size > NET_CTL_MAX_CAPS)
		return qs_err_set(p->err, -EPROTO, "%s: field \"capabilities\": more than %d entries",
		                  p->tname, NET_CTL_MAX_CAPS);
	*caps = 0;
	int i = v + 1;
	for (int k = 0; k < p->tok[v].size && i < p->ntok; k++) {
		if (p->tok[i].type != JSMN_STRING)
			return mistyped(p, "capabilities", "an array of strings");
		char buf[CTL_MAX_KEY];
		if (tok_len(p, i) < sizeof(buf) &&
		    unescape(tok_text(p, i), tok_len(p, i), buf, sizeof(buf), NULL) == 0) {
			if (strcmp(buf, "quic-v1") == 0)
				*caps |= NET_CAP_QUIC_V1;
			else if (strcmp(buf, "quick-check") == 0)
				*caps |= NET_CAP_QUICK_CHECK;
			else if (strcmp(buf, "ask-batch") == 0)
				*caps |= NET_CAP_ASK_BATCH;
			else if (strcmp(buf, "bundle") == 0)
				*caps |= NET_CAP_BUNDLE;
			else if (strcmp(buf, "fsync") == 0)
				*caps |= NET_CAP_FSYNC;
		}
		i = skip(p->tok, p->ntok, i);
	}
	return 1;
}

static int parse_hello(const struct pctx *p, struct net_ctl_hello *h, bool ack)
{
	int rc;
	if ((rc = get_str(p, 0, "version", true, h->version, sizeof(h->version))) < 0 ||
	    (rc = parse_caps(p, 0, &h->caps)) < 0)
		return rc;
	if (!ack)
		return 0;
	uint64_t port = 0;
	if ((rc = get_bool(p, 0, "quic_available", &h->quic_available)) < 0 ||
	    (rc = get_uint(p, 0, "quic_port", false, 65535, &port)) < 0 ||
	    (rc = get_u32(p, 0, "max_streams", false, &h->max_streams)) < 0)
		return rc;
	h->quic_port = (uint32_t)port;
	return 0;
}

static int check_hex(const struct pctx *p, const char *name, const char *s)
{
	if (!*s)
		return mistyped(p, name, "a hex string");
	for (; *s; s++)
		if (hexval((unsigned char)*s) < 0)
			return mistyped(p, name, "a hex string");
	return 0;
}

static int parse_quic_init(const struct pctx *p, struct net_ctl_quic_init *q)
{
	char b64[CTL_MAX_PSK_B64 + 1];
	int rc;
	if ((rc = get_str(p, 0, "connection_id", true, q->connection_id, sizeof(q->connection_id))) < 0 ||
	    (rc = check_hex(p, "connection_id", q->connection_id)) < 0 ||
	    (rc = get_u32(p, 0, "max_streams", true, &q->max_streams)) < 0 ||
	    (rc = get_u32(p, 0, "connections", false, &q->connections)) < 0 ||
	    (rc = get_str(p, 0, "cipher_suite", false, q->cipher_suite, sizeof(q->cipher_suite))) < 0)
		return rc;
	if ((rc = get_str(p, 0, "psk", true, b64, sizeof(b64))) < 0)
		goto out;
	ssize_t n = net_b64_decode(b64, strlen(b64), q->psk, sizeof(q->psk));
	if (n != NET_CTL_PSK_LEN) {
		rc = mistyped(p, "psk", "base64 of 32 bytes");
		goto out;
	}
	rc = 0;
out:
	explicit_bzero(b64, sizeof(b64));
	if (rc < 0)
		explicit_bzero(q->psk, sizeof(q->psk));
	return rc;
}

static int parse_quic_ready(struct pctx *p, struct net_ctl_quic_ready *q)
{
	int rc, ep;
	uint64_t port = 0;
	if ((rc = get_str(p, 0, "connection_id", true, q->connection_id, sizeof(q->connection_id))) < 0 ||
	    (rc = check_hex(p, "connection_id", q->connection_id)) < 0 ||
	    (rc = get_object(p, 0, "udp_endpoint", true, &ep)) < 0 ||
	    (rc = get_u32(p, 0, "max_streams", true, &q->max_streams)) < 0 ||
	    (rc = get_u64(p, 0, "initial_max_data", false, &q->initial_max_data)) < 0)
		return rc;
	int pv;
	if ((rc = field(p, 0, "ports", false, &pv)) < 0)
		return rc;
	if (rc == 1) {
		if (p->tok[pv].type != JSMN_ARRAY || p->tok[pv].size < 1)
			return mistyped(p, "ports", "a non-empty array of UDP ports");
		if (p->tok[pv].size > NET_CTL_MAX_CONNS)
			return qs_err_set(p->err, -EPROTO, "%s: field \"ports\": more than %d entries",
			                  p->tname, NET_CTL_MAX_CONNS);
		int i = pv + 1;
		for (int k = 0; k < p->tok[pv].size && i < p->ntok; k++) {
			uint64_t x;
			if (!uint_token(p, i, 65535, &x) || x == 0)
				return mistyped(p, "ports", "an array of UDP ports (1..65535)");
			q->ports[q->n_ports++] = (uint16_t)x;
			i = skip(p->tok, p->ntok, i);
		}
	}
	p->prefix = "udp_endpoint.";
	if ((rc = get_str(p, ep, "ip", true, q->ip, sizeof(q->ip))) < 0 ||
	    (rc = get_uint(p, ep, "port", true, 65535, &port)) < 0)
		return rc;
	if (port == 0)
		return qs_err_set(p->err, -EPROTO,
		                  "%s: field \"udp_endpoint.port\": 0 is out of range (1..65535)", p->tname);
	q->port = (uint16_t)port;
	return 0;
}

/* A data path name: "quic" or "ssh". A missing optional field leaves *out as it is. */
static int get_path(const struct pctx *p, const char *name, bool required, enum net_ctl_path *out)
{
	char buf[16];
	int rc = get_str(p, 0, name, required, buf, sizeof(buf));
	if (rc <= 0)
		return rc;
	for (size_t i = 0; i < sizeof(path_names) / sizeof(path_names[0]); i++)
		if (strcmp(buf, path_names[i]) == 0) {
			*out = (enum net_ctl_path)i;
			return 1;
		}
	return mistyped(p, name, "\"quic\" or \"ssh\"");
}

static int parse_data_path(const struct pctx *p, struct net_ctl_data_path *d)
{
	int rc;
	if ((rc = get_path(p, "path", true, &d->path)) < 0 ||
	    (rc = get_str(p, 0, "reason", false, d->reason, sizeof(d->reason))) < 0)
		return rc;
	return 0;
}

static int parse_sync_start(struct pctx *p, struct net_ctl_sync_start *s)
{
	int rc, o;
	if ((rc = get_str(p, 0, "destination", true, s->destination, sizeof(s->destination))) < 0 ||
	    (rc = get_str(p, 0, "source", false, s->source, sizeof(s->source))) < 0 ||
	    (rc = get_path(p, "data_path", false, &s->data_path)) < 0 ||
	    (rc = get_object(p, 0, "options", false, &o)) < 0)
		return rc;
	if (rc == 0)
		return 0;
	p->prefix = "options.";
	if ((rc = get_bool(p, o, "preserve_permissions", &s->preserve_permissions)) < 0 ||
	    (rc = get_bool(p, o, "preserve_timestamps", &s->preserve_timestamps)) < 0 ||
	    (rc = get_bool(p, o, "preserve_owner", &s->preserve_owner)) < 0 ||
	    (rc = get_bool(p, o, "preserve_group", &s->preserve_group)) < 0 ||
	    (rc = get_bool(p, o, "recursive", &s->recursive)) < 0 ||
	    (rc = get_bool(p, o, "single_file", &s->single_file)) < 0 ||
	    (rc = get_bool(p, o, "quick_check", &s->quick_check)) < 0 ||
	    (rc = get_bool(p, o, "fsync", &s->fsync)) < 0)
		return rc;
	return 0;
}

static int parse_progress(const struct pctx *p, struct net_ctl_progress *g)
{
	int rc;
	if ((rc = get_u64(p, 0, "discovered_files", false, &g->discovered_files)) < 0 ||
	    (rc = get_u64(p, 0, "completed_files", false, &g->completed_files)) < 0 ||
	    (rc = get_u64(p, 0, "in_flight_files", false, &g->in_flight_files)) < 0 ||
	    (rc = get_u64(p, 0, "bytes_transferred", false, &g->bytes_transferred)) < 0 ||
	    (rc = get_u64(p, 0, "throughput_mbps", false, &g->throughput_mbps)) < 0)
		return rc;
	return 0;
}

static int parse_error(const struct pctx *p, struct net_ctl_error *e)
{
	int rc;
	if ((rc = get_str(p, 0, "error_code", true, e->error_code, sizeof(e->error_code))) < 0 ||
	    (rc = get_str(p, 0, "message", true, e->message, sizeof(e->message))) < 0 ||
	    (rc = get_str(p, 0, "file", false, e->file, sizeof(e->file))) < 0 ||
	    (rc = get_stream_id(p, 0, &e->quic_stream_id)) < 0)
		return rc;
	return 0;
}

static int parse_retry(const struct pctx *p, struct net_ctl_retry *r)
{
	int rc;
	if ((rc = get_str(p, 0, "file", true, r->file, sizeof(r->file))) < 0 ||
	    (rc = get_stream_id(p, 0, &r->quic_stream_id)) < 0)
		return rc;
	return 0;
}

static int parse_sync_complete(const struct pctx *p, struct net_ctl_sync_complete *s)
{
	int rc;
	if ((rc = get_u64(p, 0, "files_transferred", true, &s->files_transferred)) < 0 ||
	    (rc = get_u64(p, 0, "bytes_transferred", true, &s->bytes_transferred)) < 0 ||
	    (rc = get_double(p, 0, "duration_seconds", &s->duration_seconds)) < 0 ||
	    (rc = get_u64(p, 0, "average_throughput_mbps", false, &s->average_throughput_mbps)) < 0)
		return rc;
	return 0;
}

static int parse_ack_complete(const struct pctx *p, struct net_ctl_ack_complete *a)
{
	int rc;
	if ((rc = get_u64(p, 0, "files_ok", true, &a->files_ok)) < 0 ||
	    (rc = get_u64(p, 0, "files_failed", true, &a->files_failed)) < 0 ||
	    (rc = get_u64(p, 0, "bytes", false, &a->bytes)) < 0 ||
	    (rc = get_str(p, 0, "checksum", false, a->checksum, sizeof(a->checksum))) < 0)
		return rc;
	if ((rc = get_u64(p, 0, "files_failed_late", false, &a->files_failed_late)) < 0)
		return rc;
	a->has_failed_late = rc == 1;
	if (a->files_failed_late > a->files_failed)
		return qs_err_set(p->err, -EPROTO, "%s: field \"files_failed_late\": more than files_failed",
		                  p->tname);
	return 0;
}

/* Copies s into a printable, quoted-safe hint for an error message. */
static void hint(const char *s, char *out, size_t cap)
{
	size_t o = 0;
	for (; *s && o + 1 < cap; s++)
		out[o++] = (*s >= 0x20 && *s < 0x7f && *s != '"') ? *s : '?';
	out[o] = '\0';
}

static const char *value_kind(char c)
{
	switch (c) {
	case '[':
		return "an array";
	case '"':
		return "a string";
	case 't':
	case 'f':
		return "a boolean";
	case 'n':
		return "null";
	default:
		return "a number";
	}
}

int net_ctl_parse(const char *line, size_t len, struct net_ctl_msg *out, struct qs_err *err)
{
	jsmntok_t tok[NET_CTL_MAX_TOKENS];
	struct pctx p = {.js = line, .tok = tok, .tname = "control message", .prefix = "", .err = err};
	struct syn y = {.s = line, .len = len};
	int rc;

	memset(out, 0, sizeof(*out));
	out->type = NET_CTL_UNKNOWN;
	if (len > NET_CTL_MAX_LINE)
		return qs_err_set(err, -EMSGSIZE, "control message of %zu bytes is over the %d-byte limit",
		                  len, NET_CTL_MAX_LINE);

	syn_ws(&y);
	if (y.pos >= len)
		return qs_err_set(err, -EBADMSG, "malformed control message: empty line");
	char first = line[y.pos];
	if (!syn_value(&y, 0))
		return qs_err_set(err, -EBADMSG, "malformed control message: %s at byte %zu", y.why, y.pos);
	syn_ws(&y);
	if (y.pos != len)
		return qs_err_set(err, -EBADMSG, "malformed control message: trailing data at byte %zu",
		                  y.pos);
	if (first != '{')
		return qs_err_set(err, -EBADMSG, "malformed control message: %s, not an object",
		                  value_kind(first));

	jsmn_parser jp;
	jsmn_init(&jp);
	int n = jsmn_parse(&jp, line, len, tok, NET_CTL_MAX_TOKENS);
	if (n == JSMN_ERROR_NOMEM)
		return qs_err_set(err, -EBADMSG, "malformed control message: more than %d JSON tokens",
		                  NET_CTL_MAX_TOKENS);
	if (n < 1 || tok[0].type != JSMN_OBJECT)
		return qs_err_set(err, -EBADMSG, "malformed control message (tokeniser error %d)", n);
	p.ntok = n;

	int tv;
	if ((rc = find_field(&p, 0, "type", &tv)) < 0)
		return rc;
	if (rc == 0)
		return qs_err_set(err, -EPROTO, "control message has no \"type\" field");
	if (tok[tv].type != JSMN_STRING)
		return qs_err_set(err, -EPROTO, "control message: field \"type\": expected a string");
	rc = unescape(tok_text(&p, tv), tok_len(&p, tv), out->type_name, sizeof(out->type_name), NULL);
	if (rc == -EBADMSG)
		return qs_err_set(err, -EBADMSG, "control message: field \"type\": bad escape");
	bool truncated = rc == -ENAMETOOLONG;
	for (size_t t = 1; !truncated && t < N_TYPES; t++)
		if (strcmp(out->type_name, type_names[t]) == 0)
			out->type = (enum net_ctl_type)t;
	if (out->type == NET_CTL_UNKNOWN) {
		char h[CTL_HINT_MAX];
		hint(out->type_name, h, sizeof(h));
		return qs_err_set(err, -ENOMSG, "unknown control message type \"%s%s\"", h,
		                  truncated ? "..." : "");
	}
	p.tname = type_names[out->type];

	switch (out->type) {
	case NET_CTL_HELLO:
	case NET_CTL_HELLO_ACK:
		rc = parse_hello(&p, &out->u.hello, out->type == NET_CTL_HELLO_ACK);
		break;
	case NET_CTL_QUIC_INIT:
		rc = parse_quic_init(&p, &out->u.quic_init);
		break;
	case NET_CTL_QUIC_READY:
		rc = parse_quic_ready(&p, &out->u.quic_ready);
		break;
	case NET_CTL_SYNC_START:
		rc = parse_sync_start(&p, &out->u.sync_start);
		break;
	case NET_CTL_PROGRESS:
		rc = parse_progress(&p, &out->u.progress);
		break;
	case NET_CTL_ERROR:
		rc = parse_error(&p, &out->u.error);
		break;
	case NET_CTL_RETRY:
		rc = parse_retry(&p, &out->u.retry);
		break;
	case NET_CTL_SYNC_COMPLETE:
		rc = parse_sync_complete(&p, &out->u.sync_complete);
		break;
	case NET_CTL_ACK_COMPLETE:
		rc = parse_ack_complete(&p, &out->u.ack_complete);
		break;
	case NET_CTL_DATA_PATH:
	case NET_CTL_DATA_PATH_ACK:
		rc = parse_data_path(&p, &out->u.data_path);
		break;
	case NET_CTL_SYNC_READY:
		rc = get_bool(&p, 0, "existing", &out->u.sync_ready.existing);
		break;
	case NET_CTL_BYE:
	default:
		rc = 0;
		break;
	}
	return rc < 0 ? rc : 0;
}

/* ---- the writer --------------------------------------------------------------------------------- */

struct jw {
	char *buf;
	size_t cap;
	size_t len;
	bool full;
	bool first; /* no member written yet in the open object */
};

static void jw_raw(struct jw *w, const char *s, size_t n)
{
	if (w->full || n > w->cap - w->len) {
		w->full = true;
		return;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
}

static void jw_lit(struct jw *w, const char *s)
{
	jw_raw(w, s, strlen(s));
}

/* Writes s (at most max bytes, stopping at a NUL) as a JSON string. */
static void jw_str(struct jw *w, const char *s, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strnlen(s, max);
	jw_raw(w, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			jw_raw(w, esc, 2);
		} else if (c < 0x20) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			jw_raw(w, esc, 6);
		} else {
			jw_raw(w, (const char *)&c, 1);
		}
	}
	jw_raw(w, "\"", 1);
}

static void jw_key(struct jw *w, const char *k)
{
	if (!w->first)
		jw_raw(w, ",", 1);
	w->first = false;
	jw_str(w, k, strlen(k));
	jw_raw(w, ":", 1);
}

#define JW_STR(w, k, field)                                                                                  \
	do {                                                                                                 \
		jw_key(w, k);                                                                                \
		jw_str(w, (field), sizeof(field));                                                           \
	} while (0)
#define JW_STR_OPT(w, k, field)                                                                              \
	do {                                                                                                 \
		if ((field)[0])                                                                              \
			JW_STR(w, k, field);                                                                 \
	} while (0)

static void jw_u64(struct jw *w, const char *k, uint64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRIu64, v);
	jw_key(w, k);
	jw_raw(w, num, (size_t)n);
}

static void jw_bool(struct jw *w, const char *k, bool v)
{
	jw_key(w, k);
	jw_lit(w, v ? "true" : "false");
}

static void jw_double(struct jw *w, const char *k, double v)
{
	char num[40];
	if (!isfinite(v) || v < 0)
		v = 0;
	int n = snprintf(num, sizeof(num), "%.17g", v);
	jw_key(w, k);
	jw_raw(w, num, (size_t)n);
}

static void jw_open(struct jw *w)
{
	jw_raw(w, "{", 1);
	w->first = true;
}

static void jw_close(struct jw *w)
{
	jw_raw(w, "}", 1);
	w->first = false;
}

static void emit_caps(struct jw *w, uint32_t caps)
{
	jw_key(w, "capabilities");
	static const struct {
		uint32_t bit;
		const char *lit;
	} names[] = {
	    {NET_CAP_QUIC_V1, "\"quic-v1\""},     {NET_CAP_QUICK_CHECK, "\"quick-check\""},
	    {NET_CAP_ASK_BATCH, "\"ask-batch\""}, {NET_CAP_BUNDLE, "\"bundle\""},
	    {NET_CAP_FSYNC, "\"fsync\""},
	};
	bool first = true;
	jw_raw(w, "[", 1);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(caps & names[i].bit))
			continue;
		if (!first)
			jw_raw(w, ",", 1);
		jw_lit(w, names[i].lit);
		first = false;
	}
	jw_raw(w, "]", 1);
}

ssize_t net_ctl_emit(const struct net_ctl_msg *m, char *buf, size_t cap)
{
	struct jw w = {.buf = buf, .cap = cap};
	char b64[CTL_MAX_PSK_B64 + 1];

	if ((unsigned)m->type >= N_TYPES || m->type == NET_CTL_UNKNOWN)
		return -EINVAL;
	jw_open(&w);
	jw_key(&w, "type");
	jw_str(&w, type_names[m->type], SIZE_MAX);
	switch (m->type) {
	case NET_CTL_HELLO:
	case NET_CTL_HELLO_ACK: {
		const struct net_ctl_hello *h = &m->u.hello;
		JW_STR(&w, "version", h->version);
		emit_caps(&w, h->caps);
		if (m->type == NET_CTL_HELLO_ACK) {
			jw_bool(&w, "quic_available", h->quic_available);
			if (h->quic_port)
				jw_u64(&w, "quic_port", h->quic_port);
			if (h->max_streams)
				jw_u64(&w, "max_streams", h->max_streams);
		}
		break;
	}
	case NET_CTL_QUIC_INIT: {
		const struct net_ctl_quic_init *q = &m->u.quic_init;
		JW_STR(&w, "connection_id", q->connection_id);
		if (net_b64_encode(q->psk, sizeof(q->psk), b64, sizeof(b64)) < 0)
			w.full = true;
		jw_key(&w, "psk");
		jw_str(&w, b64, sizeof(b64));
		explicit_bzero(b64, sizeof(b64));
		JW_STR_OPT(&w, "cipher_suite", q->cipher_suite);
		jw_u64(&w, "max_streams", q->max_streams);
		if (q->connections)
			jw_u64(&w, "connections", q->connections);
		break;
	}
	case NET_CTL_QUIC_READY: {
		const struct net_ctl_quic_ready *q = &m->u.quic_ready;
		JW_STR(&w, "connection_id", q->connection_id);
		jw_key(&w, "udp_endpoint");
		jw_open(&w);
		JW_STR(&w, "ip", q->ip);
		jw_u64(&w, "port", q->port);
		jw_close(&w);
		jw_u64(&w, "max_streams", q->max_streams);
		if (q->initial_max_data)
			jw_u64(&w, "initial_max_data", q->initial_max_data);
		if (q->n_ports) {
			jw_key(&w, "ports");
			jw_raw(&w, "[", 1);
			for (uint32_t i = 0; i < q->n_ports && i < NET_CTL_MAX_CONNS; i++) {
				char num[8];
				int k = snprintf(num, sizeof(num), "%s%u", i ? "," : "", q->ports[i]);
				jw_raw(&w, num, (size_t)k);
			}
			jw_raw(&w, "]", 1);
		}
		break;
	}
	case NET_CTL_SYNC_START: {
		const struct net_ctl_sync_start *s = &m->u.sync_start;
		JW_STR_OPT(&w, "source", s->source);
		JW_STR(&w, "destination", s->destination);
		if (s->data_path != NET_CTL_PATH_QUIC) {
			jw_key(&w, "data_path");
			jw_str(&w, path_names[s->data_path], SIZE_MAX);
		}
		jw_key(&w, "options");
		jw_open(&w);
		jw_bool(&w, "preserve_permissions", s->preserve_permissions);
		jw_bool(&w, "preserve_timestamps", s->preserve_timestamps);
		jw_bool(&w, "preserve_owner", s->preserve_owner);
		jw_bool(&w, "preserve_group", s->preserve_group);
		jw_bool(&w, "recursive", s->recursive);
		jw_bool(&w, "single_file", s->single_file);
		if (s->quick_check)
			jw_bool(&w, "quick_check", s->quick_check);
		if (s->fsync)
			jw_bool(&w, "fsync", s->fsync);
		jw_close(&w);
		break;
	}
	case NET_CTL_PROGRESS: {
		const struct net_ctl_progress *g = &m->u.progress;
		jw_u64(&w, "discovered_files", g->discovered_files);
		jw_u64(&w, "completed_files", g->completed_files);
		jw_u64(&w, "in_flight_files", g->in_flight_files);
		jw_u64(&w, "bytes_transferred", g->bytes_transferred);
		jw_u64(&w, "throughput_mbps", g->throughput_mbps);
		break;
	}
	case NET_CTL_ERROR: {
		const struct net_ctl_error *e = &m->u.error;
		JW_STR(&w, "error_code", e->error_code);
		JW_STR(&w, "message", e->message);
		JW_STR_OPT(&w, "file", e->file);
		if (e->quic_stream_id >= 0)
			jw_u64(&w, "quic_stream_id", (uint64_t)e->quic_stream_id);
		break;
	}
	case NET_CTL_RETRY: {
		const struct net_ctl_retry *r = &m->u.retry;
		JW_STR(&w, "file", r->file);
		if (r->quic_stream_id >= 0)
			jw_u64(&w, "quic_stream_id", (uint64_t)r->quic_stream_id);
		break;
	}
	case NET_CTL_SYNC_COMPLETE: {
		const struct net_ctl_sync_complete *s = &m->u.sync_complete;
		jw_u64(&w, "files_transferred", s->files_transferred);
		jw_u64(&w, "bytes_transferred", s->bytes_transferred);
		jw_double(&w, "duration_seconds", s->duration_seconds);
		jw_u64(&w, "average_throughput_mbps", s->average_throughput_mbps);
		break;
	}
	case NET_CTL_ACK_COMPLETE: {
		const struct net_ctl_ack_complete *a = &m->u.ack_complete;
		jw_u64(&w, "files_ok", a->files_ok);
		jw_u64(&w, "files_failed", a->files_failed);
		jw_u64(&w, "bytes", a->bytes);
		if (a->has_failed_late)
			jw_u64(&w, "files_failed_late", a->files_failed_late);
		JW_STR_OPT(&w, "checksum", a->checksum);
		break;
	}
	case NET_CTL_SYNC_READY:
		jw_bool(&w, "existing", m->u.sync_ready.existing);
		break;
	case NET_CTL_DATA_PATH:
	case NET_CTL_DATA_PATH_ACK: {
		const struct net_ctl_data_path *d = &m->u.data_path;
		jw_key(&w, "path");
		jw_str(&w, path_names[d->path], SIZE_MAX);
		JW_STR_OPT(&w, "reason", d->reason);
		break;
	}
	case NET_CTL_BYE:
	default:
		break;
	}
	jw_close(&w);
	jw_raw(&w, "\n", 1);
	jw_raw(&w, "", 1); /* room for the NUL */
	if (w.full) {
		/* a partial line may hold part of the psk */
		explicit_bzero(buf, w.len);
		return -ENOSPC;
	}
	buf[w.len - 1] = '\0';
	return (ssize_t)(w.len - 1);
}
