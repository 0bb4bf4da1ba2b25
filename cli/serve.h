/* `qsync serve`, the native daemon (an embedded SSH server running peer sessions), and the check that
 * keeps `qsync --server` to its one job under an authorized_keys command= or sshd ForceCommand.
 * Internal to cli/. */
#ifndef QS_CLI_SERVE_H
#define QS_CLI_SERVE_H

/* qsync serve [OPTIONS]: argv[0] is "serve". Parses its own options, then serves until SIGTERM/SIGINT.
 * Returns the process exit code: 0 after a clean stop or --help, ENGINE_EXIT_USAGE for a bad option,
 * ENGINE_EXIT_START when it cannot start (host key, address, authorized_keys), after saying why. */
int cli_serve_main(int argc, char **argv);

/* For qsync --server, before anything else runs: when SSH_ORIGINAL_COMMAND is set (a forced command),
 * it must be a qsync server invocation (net_ssh_server_check_command), and stdin must not be a
 * terminal (a login shell under a forced command). Returns 0 to go on, or ENGINE_EXIT_USAGE after
 * printing why on stderr. */
int cli_serve_forced_check(void);

#endif
