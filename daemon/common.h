/*
 * Shared conventions of the engine and the daemon: error codes, the error
 * record that carries a human message back up the stack, and small helpers.
 *
 * Convention (after libuv): functions return 0 on success or a negative
 * TD_E* code; the message for humans goes into a caller-provided td_err_t.
 * Nothing deep in the stack prints; the caller decides what to log.
 */
#ifndef TD_COMMON_H
#define TD_COMMON_H

#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define TD_VERSION "0.1.0"

enum td_errcode {
  TD_OK = 0,
  TD_ENOMEM = -1,   /* allocation failed */
  TD_EINVAL = -2,   /* bad argument or bad input (a caller's fault) */
  TD_EIO = -3,      /* file or socket I/O failed */
  TD_EFORMAT = -4,  /* a file or message is malformed */
  TD_EUTF8 = -5,    /* text is not valid UTF-8 */
  TD_EPLUGIN = -6,  /* plugin could not be loaded or failed */
  TD_ELIMIT = -7,   /* a configured limit was exceeded */
  TD_EMODEL = -8,   /* model bundle invalid or inconsistent */
  TD_ESTATE = -9,   /* operation not valid in the current state */
};

typedef struct td_err {
  int code;       /* last TD_E* code, 0 if none */
  char msg[512];  /* NUL-terminated human message, "" if none */
} td_err_t;

/* Sets err (if not NULL) and returns code, so callers can `return td_err_set(...)`. */
int td_err_set(td_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "prefix: " to an existing message (context on the way up). */
int td_err_prefix(td_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void td_err_clear(td_err_t *err);
/* Stable short name of a code: "ENOMEM", "EINVAL", ... */
const char *td_strerror(int code);

/* Allocation that aborts on failure would hide bugs under load; these return
 * NULL like malloc, the TD_FREE macro frees and NULLs (collectd's sfree). */
#define TD_FREE(p) do { free(p); (p) = NULL; } while (0)

/* Growable byte buffer. Owns `data`; init/free pair. */
typedef struct td_buf {
  char *data;
  size_t len, cap;
} td_buf_t;
void td_buf_init(td_buf_t *b);
void td_buf_free(td_buf_t *b);
int td_buf_reserve(td_buf_t *b, size_t extra);  /* 0 or TD_ENOMEM */
int td_buf_append(td_buf_t *b, const void *p, size_t n);
int td_buf_printf(td_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void td_buf_reset(td_buf_t *b) { b->len = 0; }

/* splitmix64 (Steele, Lea & Flood 2014): the next value of the stream in *s;
 * any seed gives a well-mixed stream. Training's shuffles (folds, the DCD
 * solver's order) draw from it, so a seed fixes every result. */
static inline uint64_t td_splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/*
 * Byte length of the longest prefix of the NUL-terminated s that is at most
 * max bytes and does not end inside a UTF-8 character: for "%.*s" where
 * "%.Ns" would cut a multi-byte character in two, and the message -- no
 * longer UTF-8 -- could not be sent as JSON at all. Bytes that are not UTF-8
 * are not judged, only the cut: at most 3 continuation bytes are stepped back.
 */
size_t td_utf8_prefix(const char *s, size_t max);

/* len, less a multi-byte character cut short at the end of s[0..len). */
size_t td_utf8_whole(const char *s, size_t len);

/* vsnprintf into a fixed buffer (cap > 0) that, when it cuts the text, cuts
 * it before a character rather than inside one: messages built this way
 * stay UTF-8, so they can go out as JSON. */
void td_vformat(char *buf, size_t cap, const char *fmt, va_list ap);

/* Reads a whole file into a malloc'd NUL-terminated buffer owned by the caller. */
int td_read_file(const char *path, char **out, size_t *len, td_err_t *err);

/*
 * Compares two secrets (the admin token) in time that depends only on their
 * lengths, never on where they first differ: every byte up to the longer
 * length is visited, differences are OR-ed together and a length mismatch
 * is folded in, so there is no early exit for a guesser to time. Returns 1
 * if equal.
 */
int td_secret_equal(const char *a, size_t alen, const char *b, size_t blen);

/*
 * The last component of path, trailing slashes ignored ("out/" -> "out",
 * "a/b//" -> "b"): *start points into path, the length is returned. 0 for
 * "/" (and ""). "." and ".." are returned as they are: only the caller knows
 * whether resolving them (realpath) makes sense.
 */
size_t td_path_last(const char *path, const char **start);

/* The directory path is in, as dirname(3) takes it from the last '/': "."
 * without one, "/" for "/x". malloc'd; NULL when out of memory. */
char *td_path_parent(const char *path);

/*
 * Theme names become file names (svm/<name>.model) and JSON keys, so they
 * are kept to a portable alphabet: TD_THEME_NAME_RULE says which, for
 * messages. The trainer checks names with this as it reads the data, so a
 * bad one is refused before training rather than when the bundle is written.
 */
#define TD_THEME_NAME_RULE "1-64 characters from [A-Za-z0-9_.-], not starting with '.' or '-'"
int td_theme_name_ok(const char *s);

/* Removes path and everything under it (files, directories; links are not
 * followed). Best effort: what cannot be removed stays. */
void td_remove_tree(const char *path);

/* "s" unless n is 1: for "%zu listener%s" in messages a person reads. */
static inline const char *td_plural(unsigned long long n) { return n == 1 ? "" : "s"; }

/* Monotonic clock in nanoseconds. */
uint64_t td_now_ns(void);

/* The CPUs this process may run on (sched_getaffinity: a cgroup cpuset,
 * taskset or a unit's CPUAffinity= narrow them below the CPUs online) into
 * *set; 0, or -1 with errno set. */
int td_cpu_set_allowed(cpu_set_t *set);
/* How many: those of td_cpu_set_allowed, the CPUs online if that cannot be
 * read; at least 1. */
int td_cpus_allowed(void);

#endif
