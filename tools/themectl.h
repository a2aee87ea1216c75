/*
 * Declarations shared by the themectl sources: themectl.c (main, the offline
 * commands train / classify / eval) and themectl_client.c (the commands that
 * talk to a running daemon).
 */
#ifndef THEMECTL_H
#define THEMECTL_H

/* Exit codes: 0 success, 1 the command failed, 2 bad usage. */
#define THEMECTL_EXIT_FAIL 1
#define THEMECTL_EXIT_USAGE 2

/*
 * The daemon client: health, reload, stats, stream, and classify with
 * --socket/--connect. argv[0] is the command name (e.g. "health"), the rest
 * are its arguments, as for a main(). Returns the process exit code.
 */
int themectl_client_main(int argc, char **argv);
/* `themectl publish` / `themectl collect` (tools/themectl_nats.c), argv[0] the command. */
int themectl_nats_main(int argc, char **argv);

/* Prints "themectl: <message>\n" on stderr: the one line every error gets. */
void themectl_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A usage error: "themectl: CMD: message (see 'themectl CMD --help')" on
 * stderr; returns THEMECTL_EXIT_USAGE. */
int themectl_usage_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* getopt's '?' and ':' returns (opterr is 0), said once as a usage error. */
int themectl_bad_option(const char *cmd, int ch, char **argv);

#endif
