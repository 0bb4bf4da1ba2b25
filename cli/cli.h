/* The qsync command line: options (rsync's spelling where rsync has the option), progress, --json events
 * and the summary. Internal to cli/. */
#ifndef QS_CLI_H
#define QS_CLI_H

#include <stdbool.h>

#include "engine/engine.h"

struct cli {
	struct engine_opts eo;
	bool server;   /* qsync --server: the peer side on stdin/stdout */
	bool json;     /* one JSON event per line on stdout */
	bool progress; /* a live progress line on stderr */
	bool stderr_tty;
	const char *rsh; /* -e value */
};

#define CLI_DONE (-1) /* help or version was printed: exit 0 */

/* Parses argv into c. Returns 0 to run, CLI_DONE when it printed help/version, or an engine_exit code
 * (ENGINE_EXIT_USAGE) after printing why. */
int cli_parse(int argc, char **argv, struct cli *c);

/* The engine's event sink: prints file lines (-v), errors, progress and the summary, or JSON events. */
void cli_on_event(void *ctx, const struct engine_event *ev);

#endif
