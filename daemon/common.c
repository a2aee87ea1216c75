#include "common.h"

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

size_t td_utf8_whole(const char *s, size_t len) {
  size_t i = len;
  while (i > 0 && len - i < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
  if (i == 0) return len;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  return len - (i - 1) < need ? i - 1 : len;
}

void td_vformat(char *buf, size_t cap, const char *fmt, va_list ap) {
  int n = vsnprintf(buf, cap, fmt, ap);
  if (n >= 0 && (size_t)n >= cap) buf[td_utf8_whole(buf, cap - 1)] = '\0';
}

int td_err_set(td_err_t *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    td_vformat(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

int td_err_prefix(td_err_t *err, const char *fmt, ...) {
  if (!err) return 0;
  /* Build "prefix: old" in a buffer, then keep what fits: messages are
   * for humans, and a cut tail beats a lost prefix. */
  char old[sizeof err->msg];
  memcpy(old, err->msg, sizeof old);
  td_buf_t b;
  td_buf_init(&b);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n >= 0 && td_buf_reserve(&b, (size_t)n) == 0) {
    va_start(ap, fmt);
    vsnprintf(b.data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b.len = (size_t)n;
    td_buf_printf(&b, ": %s", old);
    size_t k = td_utf8_prefix(b.data, sizeof err->msg - 1); /* not inside a character */
    memcpy(err->msg, b.data, k);
    err->msg[k] = '\0';
  }
  td_buf_free(&b);
  return err->code;
}

void td_err_clear(td_err_t *err) {
  if (err) {
    err->code = 0;
    err->msg[0] = '\0';
  }
}

const char *td_strerror(int code) {
  switch (code) {
  case TD_OK: return "OK";
  case TD_ENOMEM: return "ENOMEM";
  case TD_EINVAL: return "EINVAL";
  case TD_EIO: return "EIO";
  case TD_EFORMAT: return "EFORMAT";
  case TD_EUTF8: return "EUTF8";
  case TD_EPLUGIN: return "EPLUGIN";
  case TD_ELIMIT: return "ELIMIT";
  case TD_EMODEL: return "EMODEL";
  case TD_ESTATE: return "ESTATE";
  default: return "EUNKNOWN";
  }
}

void td_buf_init(td_buf_t *b) { b->data = NULL; b->len = b->cap = 0; }

void td_buf_free(td_buf_t *b) {
  TD_FREE(b->data);
  b->len = b->cap = 0;
}

int td_buf_reserve(td_buf_t *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) return TD_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int td_buf_append(td_buf_t *b, const void *p, size_t n) {
  if (td_buf_reserve(b, n)) return TD_ENOMEM;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int td_buf_printf(td_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return TD_EINVAL;
  if (td_buf_reserve(b, (size_t)n)) return TD_ENOMEM;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

size_t td_utf8_prefix(const char *s, size_t max) {
  size_t n = strnlen(s, max);
  if (n < max) return n; /* the whole string fits */
  /* s[max] exists (it is at worst the NUL); if it continues a character,
   * the cut falls inside one: back up to that character's lead byte. */
  size_t k = n;
  while (k > 0 && n - k < 3 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
  return ((unsigned char)s[k] & 0xC0) == 0x80 ? n : k;
}

int td_read_file(const char *path, char **out, size_t *len, td_err_t *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return td_err_set(err, TD_EIO, "%s: %s", path, strerror(errno));
  td_buf_t b;
  td_buf_init(&b);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (td_buf_append(&b, chunk, n)) {
      fclose(f);
      td_buf_free(&b);
      return td_err_set(err, TD_ENOMEM, "%s: out of memory", path);
    }
  }
  /* fread sets errno on failure (EISDIR for a directory, which fopen
   * accepts); fclose may change it, so it is kept first. */
  int bad = ferror(f), e = errno;
  fclose(f);
  if (bad) {
    td_buf_free(&b);
    return td_err_set(err, TD_EIO, "%s: %s", path, strerror(e));
  }
  if (!b.data && td_buf_reserve(&b, 0)) return td_err_set(err, TD_ENOMEM, "out of memory");
  b.data[b.len] = '\0';
  *out = b.data;
  if (len) *len = b.len;
  return 0;
}

uint64_t td_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int td_secret_equal(const char *a, size_t alen, const char *b, size_t blen) {
  size_t n = alen > blen ? alen : blen;
  /* volatile: the compiler may not turn the loop into a memcmp-like early exit */
  volatile unsigned char acc = (unsigned char)(alen != blen);
  for (size_t i = 0; i < n; i++) {
    unsigned char x = i < alen ? (unsigned char)a[i] : 0;
    unsigned char y = i < blen ? (unsigned char)b[i] : 0;
    acc |= (unsigned char)(x ^ y);
  }
  return acc == 0;
}

int td_cpu_set_allowed(cpu_set_t *set) {
  CPU_ZERO(set);
  return sched_getaffinity(0, sizeof *set, set);
}

int td_cpus_allowed(void) {
  cpu_set_t set;
  long n = td_cpu_set_allowed(&set) ? sysconf(_SC_NPROCESSORS_ONLN) : CPU_COUNT(&set);
  return n < 1 ? 1 : n > 65536 ? 65536 : (int)n;
}

size_t td_path_last(const char *path, const char **start) {
  size_t n = strlen(path);
  while (n > 0 && path[n - 1] == '/') n--;
  size_t b = n;
  while (b > 0 && path[b - 1] != '/') b--;
  *start = path + b;
  return n - b;
}

char *td_path_parent(const char *path) {
  const char *s = strrchr(path, '/');
  size_t n = !s ? 1 : s == path ? 1 : (size_t)(s - path);
  char *p = malloc(n + 1);
  if (p) {
    memcpy(p, s ? path : ".", n);
    p[n] = '\0';
  }
  return p;
}

int td_theme_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-') return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-' || c == '.'))
      return 0;
  }
  return 1;
}

static int remove_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(p);
  return 0; /* go on: remove what can be */
}

void td_remove_tree(const char *path) { nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS); }
