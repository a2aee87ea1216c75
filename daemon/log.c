#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int g_level = TD_LOG_INFO;
static int g_journal = 0;

/* systemd sets JOURNAL_STREAM=<dev>:<ino> for the stream it connected to
 * stderr; children that redirect stderr inherit the variable, so compare it
 * with what fd 2 really is before trusting it (systemd.exec(5)). */
static int journal_detect(void) {
  const char *e = getenv("JOURNAL_STREAM");
  if (!e || !*e) return 0;
  unsigned long long dev, ino;
  struct stat st;
  if (sscanf(e, "%llu:%llu", &dev, &ino) != 2) return 0;
  if (fstat(STDERR_FILENO, &st) != 0) return 0;
  return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void td_log_init(int level, int journal) {
  if (level >= TD_LOG_ERROR && level <= TD_LOG_DEBUG) g_level = level;
  g_journal = journal < 0 ? journal_detect() : journal;
}

int td_log_level_parse(const char *s) {
  if (!s) return -1;
  if (!strcasecmp(s, "error") || !strcasecmp(s, "err")) return TD_LOG_ERROR;
  if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning")) return TD_LOG_WARN;
  if (!strcasecmp(s, "info")) return TD_LOG_INFO;
  if (!strcasecmp(s, "debug")) return TD_LOG_DEBUG;
  return -1;
}

const char *td_log_level_name(int level) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  return level >= 0 && level <= TD_LOG_DEBUG ? names[level] : "?";
}

int td_log_enabled(int level) { return level <= g_level; }

void td_log(int level, const char *fmt, ...) {
  if (level > g_level) return;
  /* sd-daemon priorities: 3 err, 4 warning, 6 info, 7 debug. */
  static const int prio[] = {3, 4, 6, 7};
  char line[2048];
  int n;
  if (g_journal) {
    n = snprintf(line, sizeof line, "<%d>", prio[level]);
  } else {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, "%s ", td_log_level_name(level));
  }
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  size_t len = (size_t)n + (size_t)m;
  if (len > sizeof line - 2) len = sizeof line - 2; /* truncated message */
  /* One event, one line: a message must not break the line format. */
  for (size_t i = (size_t)n; i < len; i++)
    if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
