/*
 * Logging: one line per event on stderr, with a level.
 *
 *   2026-11-30T16:40:01Z info listening on unix:/run/themed/themed.sock
 *
 * Under systemd (stderr is the journal stream named by $JOURNAL_STREAM, or
 * --log-journal) lines carry an sd-daemon priority prefix instead of the
 * timestamp ("<6>listening on ..."), so journald records the level and adds
 * its own time. Thread-safe: every line goes out in one write(2).
 */
#ifndef TD_LOG_H
#define TD_LOG_H

enum td_log_level {
  TD_LOG_ERROR = 0,
  TD_LOG_WARN = 1,
  TD_LOG_INFO = 2,
  TD_LOG_DEBUG = 3,
};

/* level: lines above it are dropped. journal: <0 auto-detect, 0 off, 1 on. */
void td_log_init(int level, int journal);
/* "error", "warn"/"warning", "info", "debug" -> level, or -1. */
int td_log_level_parse(const char *s);
const char *td_log_level_name(int level);
int td_log_enabled(int level);

void td_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define td_log_error(...) td_log(TD_LOG_ERROR, __VA_ARGS__)
#define td_log_warn(...) td_log(TD_LOG_WARN, __VA_ARGS__)
#define td_log_info(...) td_log(TD_LOG_INFO, __VA_ARGS__)
#define td_log_debug(...) td_log(TD_LOG_DEBUG, __VA_ARGS__)

#endif
