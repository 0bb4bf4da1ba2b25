/* What the user sees: -v file lines on stdout, errors on stderr, a live progress line (--progress),
 * the closing summary, or, with --json, one JSON object per line on stdout for every event. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void json_stats(FILE *f, const char *event, const struct engine_stats *st)
{
	double mbs = st->seconds > 0 ? (double)st->bytes_done / 1e6 / st->seconds : 0;
	fprintf(f,
	        "{\"event\":\"%s\",\"files_discovered\":%llu,\"files_done\":%llu,\"files_failed\":%llu,"
	        "\"files_in_flight\":%llu,\"bytes_total\":%llu,\"bytes_sent\":%llu,\"bytes_done\":%llu,"
	        "\"wire_bytes\":%llu,"
	        "\"seconds\":%.3f,\"mb_per_s\":%.1f,\"data_path\":",
	        event, (unsigned long long)st->files_discovered, (unsigned long long)st->files_done,
	        (unsigned long long)st->files_failed, (unsigned long long)st->files_in_flight,
	        (unsigned long long)st->bytes_total, (unsigned long long)st->bytes_sent,
	        (unsigned long long)st->bytes_done, (unsigned long long)st->wire_bytes, st->seconds, mbs);
	json_str(f, st->data_path ? st->data_path : "none");
	fprintf(f, ",\"data_path_reason\":");
	json_str(f, st->data_path_reason);
	fprintf(f,
	        ",\"files_unchanged\":%llu,\"bytes_unchanged\":%llu,\"files_resent\":%llu,\"files_done_"
	        "quic\":%llu,\"files_done_ssh\":"
	        "%llu,"
	        "\"streams_total\":%llu,\"streams_done_quic\":%llu,\"streams_sent_ssh\":%llu,"
	        "\"streams_in_flight\":%llu,"
	        "\"quic_port\":%u,\"streams_max\":%u,\"connections\":%u,\"steals\":%llu,"
	        "\"files_read_ahead\":%llu,\"cc\":\"%s\",\"lane_streams\":[",
	        (unsigned long long)st->files_unchanged, (unsigned long long)st->bytes_unchanged,
	        (unsigned long long)st->files_resent, (unsigned long long)st->files_done_quic,
	        (unsigned long long)st->files_done_ssh, (unsigned long long)st->streams_total,
	        (unsigned long long)st->streams_done_quic, (unsigned long long)st->streams_sent_ssh,
	        (unsigned long long)st->streams_in_flight, st->quic_port, st->streams_max, st->connections,
	        (unsigned long long)st->steals, (unsigned long long)st->files_read_ahead,
	        st->cc ? st->cc : "");
	for (uint32_t i = 0; i < st->connections && i < ENGINE_MAX_LANES; i++)
		fprintf(f, "%s%llu", i ? "," : "", (unsigned long long)st->lane_streams[i]);
	fprintf(f, "]}\n");
	fflush(f);
}

static void human_bytes(char *buf, size_t cap, double b)
{
	const char *u[] = {"B", "kB", "MB", "GB", "TB"};
	int i = 0;
	while (b >= 1000 && i < 4) {
		b /= 1000;
		i++;
	}
	snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

void cli_on_event(void *ctx, const struct engine_event *ev)
{
	struct cli *c = ctx;
	const struct engine_stats *st = ev->stats;

	if (c->json) {
		switch (ev->kind) {
		case ENGINE_EV_FILE_ERROR:
			fprintf(stdout, "{\"event\":\"file_error\",\"path\":");
			json_str(stdout, ev->path ? ev->path : "");
			fprintf(stdout, ",\"message\":");
			json_str(stdout, ev->msg ? ev->msg : "");
			fprintf(stdout, "}\n");
			fflush(stdout);
			break;
		case ENGINE_EV_PROGRESS:
			json_stats(stdout, "progress", st);
			break;
		case ENGINE_EV_SUMMARY:
			json_stats(stdout, "summary", st);
			break;
		case ENGINE_EV_DATA_PATH:
			fprintf(stdout, "{\"event\":\"data_path\",\"path\":");
			json_str(stdout, ev->path ? ev->path : "");
			fprintf(stdout, ",\"reason\":");
			json_str(stdout, ev->msg ? ev->msg : "");
			fprintf(stdout, ",\"files_done\":%llu}\n",
			        st ? (unsigned long long)st->files_done : 0ull);
			fflush(stdout);
			break;
		default:
			break;
		}
		return;
	}

	switch (ev->kind) {
	case ENGINE_EV_DATA_PATH:
		if (!c->eo.quiet)
			fprintf(stderr, "%sqsync: data over SSH from here on: %s\n",
			        c->progress && c->stderr_tty ? "\r\033[K" : "", ev->msg ? ev->msg : "");
		break;
	case ENGINE_EV_INFO:
		if (!c->eo.quiet)
			fprintf(stderr, "qsync: %s: %s\n", ev->path ? ev->path : "", ev->msg ? ev->msg : "");
		break;
	case ENGINE_EV_FILE_DONE:
		if (c->eo.verbose)
			printf("%s\n", ev->path);
		break;
	case ENGINE_EV_FILE_ERROR:
		fprintf(stderr, "%sqsync: %s: %s\n", c->progress && c->stderr_tty ? "\r\033[K" : "",
		        ev->path ? ev->path : "", ev->msg ? ev->msg : "");
		break;
	case ENGINE_EV_PROGRESS: {
		if (!c->progress)
			break;
		char done[32], total[32], rate[32];
		human_bytes(done, sizeof(done), (double)st->bytes_sent);
		/* what is to be sent: unchanged files leave the total as their verdicts come */
		uint64_t tot = st->bytes_total - (st->bytes_unchanged < st->bytes_total ? st->bytes_unchanged
		                                                                        : st->bytes_total);
		human_bytes(total, sizeof(total), (double)tot);
		human_bytes(rate, sizeof(rate), st->seconds > 0 ? (double)st->bytes_sent / st->seconds : 0);
		int pct = tot ? (int)(100.0 * (double)st->bytes_sent / (double)tot) : 100;
		fprintf(stderr, "%s%10s / %-10s %3d%%  %10s/s  %llu/%llu files  %llu in flight  %.1fs%s",
		        c->stderr_tty ? "\r\033[K" : "", done, total, pct, rate,
		        (unsigned long long)st->files_done, (unsigned long long)st->files_discovered,
		        (unsigned long long)st->files_in_flight, st->seconds, c->stderr_tty ? "" : "\n");
		fflush(stderr);
		break;
	}
	case ENGINE_EV_SUMMARY: {
		if (c->progress && c->stderr_tty)
			fprintf(stderr, "\r\033[K");
		if (c->eo.quiet)
			break;
		char done[32], rate[32];
		human_bytes(done, sizeof(done), (double)st->bytes_done);
		human_bytes(rate, sizeof(rate), st->seconds > 0 ? (double)st->bytes_done / st->seconds : 0);
		printf("qsync: %llu of %llu entries (%s) in %.2f s, %s/s, over %s",
		       (unsigned long long)st->files_done, (unsigned long long)st->files_discovered, done,
		       st->seconds, rate, st->data_path ? st->data_path : "nothing");
		if (st->quic_port)
			printf(" (%u connection%s from UDP port %u, up to %u streams)", st->connections,
			       st->connections == 1 ? "" : "s", st->quic_port, st->streams_max);
		else if (st->data_path_reason[0])
			printf(" (%s)", st->data_path_reason);
		if (st->files_unchanged)
			printf("; %llu unchanged", (unsigned long long)st->files_unchanged);
		if (st->files_resent)
			printf("; %llu resent after the switch", (unsigned long long)st->files_resent);
		printf("; %llu failed\n", (unsigned long long)st->files_failed);
		fflush(stdout);
		break;
	}
	}
}
