/* qsync: rsync -a over SSH (authentication and a JSON control conversation) and QUIC (the bytes). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/serve.h"

int main(int argc, char **argv)
{
	static struct cli c;
	struct engine_stats st;
	struct qs_err err = {0};

	signal(SIGPIPE, SIG_IGN);
	if (argc > 1 && strcmp(argv[1], "serve") == 0)
		return cli_serve_main(argc - 1, argv + 1);
	int rc = cli_parse(argc, argv, &c);
	if (rc == CLI_DONE)
		return 0;
	if (rc != 0)
		return rc;

	if (c.server) {
		if ((rc = cli_serve_forced_check()) != 0)
			return rc;
		rc = engine_server_run(STDIN_FILENO, STDOUT_FILENO, c.eo.verbose, &err);
		if (rc != ENGINE_EXIT_OK)
			fprintf(stderr, "qsync --server: %s (exit %d)\n", err.msg[0] ? err.msg : "failed",
			        rc);
		return rc;
	}

	c.stderr_tty = isatty(STDERR_FILENO);
	c.eo.on_event = cli_on_event;
	c.eo.event_ctx = &c;
	rc = engine_client_run(&c.eo, &st, &err);
	if (rc != ENGINE_EXIT_OK) {
		if (c.json) {
			printf("{\"event\":\"error\",\"exit_code\":%d}\n", rc);
			fflush(stdout);
		}
		fprintf(stderr, "qsync: %s (exit %d)\n", err.msg[0] ? err.msg : "failed", rc);
	}
	return rc;
}
