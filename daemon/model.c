/*
 * Model bundles: load + validate, write, collapse linear SVMs, score.
 * The bundle format is documented field by field in docs/model-format.md.
 */
#include "model.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libsvm/svm.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A model is shared between threads and freed by whoever drops the last
 * reference; a wrong magic means memory corruption or a use after free, so
 * there is nothing sane left to do but stop (Varnish's CHECK_OBJ). */
static void model_bad_magic(const char *fn, const td_model_t *m) {
  fprintf(stderr, "themed: %s: bad model object %p (magic %#x)\n", fn, (const void *)m,
          m ? m->magic : 0u);
  abort();
}
#define MODEL_CHECK(m)                                                                             \
  do {                                                                                             \
    if (!(m) || (m)->magic != TD_MODEL_MAGIC) model_bad_magic(__func__, (m));                      \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

static char *path_join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  while (la > 1 && a[la - 1] == '/') la--;
  char *p = malloc(la + 1 + lb + 1);
  if (!p) return NULL;
  memcpy(p, a, la);
  p[la] = '/';
  memcpy(p + la + 1, b, lb + 1);
  return p;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* A file named in the manifest must stay inside the bundle directory. */
static int rel_path_ok(const char *s) {
  if (!s[0] || s[0] == '/') return 0;
  for (const char *p = s; *p;) {
    const char *e = strchr(p, '/');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n == 0 || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
    p += n;
    if (*p == '/') p++;
  }
  return 1;
}

/* What a JSON value looks like, for "expected X, got Y" messages. */
static const char *describe(const json_t *v, char *buf, size_t n) {
  if (!v) return "nothing (missing)";
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_TRUE: return "true";
  case JSON_FALSE: return "false";
  case JSON_NULL: return "null";
  case JSON_INTEGER: snprintf(buf, n, "%lld", (long long)json_integer_value(v)); return buf;
  case JSON_REAL: snprintf(buf, n, "%g", json_real_value(v)); return buf;
  case JSON_STRING: {
    const char *s = json_string_value(v);
    size_t len = json_string_length(v), cut = len;
    if (cut > 40) { /* cut on a UTF-8 boundary */
      cut = 40;
      while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) cut--;
    }
    snprintf(buf, n, "\"%.*s%s\"", (int)cut, s, cut < len ? "..." : "");
    return buf;
  }
  }
  return "?";
}

/* Validation context: the file a message names. */
typedef struct vctx {
  const char *file;
  td_err_t *err;
} vctx_t;

static int expected(vctx_t *v, const char *field, const char *what, const json_t *got) {
  char buf[96];
  return td_err_set(v->err, TD_EMODEL, "%s: %s: expected %s, got %s", v->file, field, what,
                    describe(got, buf, sizeof buf));
}

static int get_string(vctx_t *v, const json_t *obj, const char *key, const char *field,
                      const char **out) {
  const json_t *j = json_object_get(obj, key);
  if (!json_is_string(j) || json_string_length(j) == 0 ||
      strlen(json_string_value(j)) != json_string_length(j))
    return expected(v, field, "a non-empty string", j);
  *out = json_string_value(j);
  return 0;
}

static int get_number(vctx_t *v, const json_t *obj, const char *key, const char *field,
                      double *out) {
  const json_t *j = json_object_get(obj, key);
  if (!json_is_number(j) || !isfinite(json_number_value(j)))
    return expected(v, field, "a number", j);
  *out = json_number_value(j);
  return 0;
}

static int get_int(vctx_t *v, const json_t *obj, const char *key, const char *field, long long lo,
                   long long hi, long long *out) {
  const json_t *j = json_object_get(obj, key);
  if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi) {
    char what[96];
    snprintf(what, sizeof what, "an integer in [%lld, %lld]", lo, hi);
    return expected(v, field, what, j);
  }
  *out = json_integer_value(j);
  return 0;
}

static int get_object(vctx_t *v, const json_t *obj, const char *key, const char *field,
                      int optional, const json_t **out) {
  const json_t *j = json_object_get(obj, key);
  if (!j && optional) {
    *out = NULL;
    return 0;
  }
  if (!json_is_object(j)) return expected(v, field, "an object", j);
  *out = j;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* libsvm model files                                                       */

/*
 * libsvm's svm_load_model trusts its input: a truncated SV section makes it
 * write past the nodes it counted, and nr_sv that does not add up to
 * total_sv makes svm_predict_values read out of bounds. So every file is
 * parsed here, strictly in the shape svm_save_model writes, with errors
 * that name the line.
 *
 * The same single pass builds the struct svm_model, exactly as
 * svm_load_model would from an accepted file (the same fields, values
 * parsed with strtod/strtol semantics, nodes in one block that
 * svm_free_and_destroy_model frees): the file used to be parsed twice --
 * once here to validate, once by libsvm -- and number parsing was ~90% of
 * a model load (bench/NOTES.md).
 */
typedef struct svm_hdr {
  int svm_type, kernel, nr_class;
  long total_sv;
  int have_degree, have_gamma, have_coef0, have_rho, have_label, have_nr_sv;
  /* nr_class when each array was read: they must match the final one */
  int n_rho, n_label, n_nr_sv, n_proba, n_probb;
} svm_hdr_t;

static const char *const svm_type_names[] = {"c_svc", "nu_svc", "one_class", "epsilon_svr",
                                             "nu_svr"};
static const char *const kernel_names[] = {"linear", "polynomial", "rbf", "sigmoid", "precomputed"};

static int name_index(const char *w, const char *const *names, int n) {
  if (!w) return -1; /* "svm_type" with no value (found by fuzz_bundle) */
  for (int i = 0; i < n; i++)
    if (!strcmp(w, names[i])) return i;
  return -1;
}

static int parse_long(const char *w, long *out) {
  if (!w || !*w) return 0;
  char *end;
  errno = 0;
  long x = strtol(w, &end, 10);
  if (errno || *end) return 0;
  *out = x;
  return 1;
}

static int parse_double(const char *w, double *out) {
  if (!w || !*w) return 0;
  char *end;
  errno = 0;
  double x = strtod(w, &end);
  if (*end || !isfinite(x)) return 0;
  *out = x;
  return 1;
}

/*
 * strtod of [s, e) for the plain decimal shapes libsvm (%.8g, %.17g) and
 * our writers use: [+-]digits[.digits][(e|E)[+-]digits]. Clinger's fast
 * path: with at most 19 significant digits, a mantissa <= 2^53 and a
 * power of ten <= 10^22, mantissa and power are exact doubles and one
 * multiplication or division rounds correctly, so the result is bit for
 * bit strtod's. Returns 0 for anything else (the caller then asks strtod).
 */
static int fast_double(const char *s, const char *e, double *out) {
  static const double p10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  const char *p = s;
  int neg = 0;
  if (p < e && (*p == '-' || *p == '+')) neg = *p++ == '-';
  /* the shape first: digits, '.', digits, exponent */
  const char *i0 = p;
  while (p < e && (unsigned)(*p - '0') < 10) p++;
  const char *i1 = p, *f0 = p, *f1 = p;
  if (p < e && *p == '.') {
    f0 = f1 = ++p;
    while (p < e && (unsigned)(*p - '0') < 10) p++;
    f1 = p;
  }
  if (i1 == i0 && f1 == f0) return 0; /* no digits */
  long ex = 0;
  if (p < e && (*p == 'e' || *p == 'E')) {
    int eneg = 0;
    long ev = 0;
    p++;
    if (p < e && (*p == '+' || *p == '-')) eneg = *p++ == '-';
    const char *d0 = p;
    for (; p < e && (unsigned)(*p - '0') < 10; p++)
      if (ev < 100000) ev = ev * 10 + (*p - '0');
    if (p == d0) return 0;
    ex = eneg ? -ev : ev;
  }
  if (p != e) return 0;
  /* then the significant digits, leading zeros skipped, in one tight loop */
  ex -= (long)(f1 - f0);
  while (i0 < i1 && *i0 == '0') i0++;
  if (i0 == i1)
    while (f0 < f1 && *f0 == '0') f0++;
  if ((i1 - i0) + (f1 - f0) > 19) return 0;
  uint64_t mant = 0;
  for (const char *q = i0; q < i1; q++) mant = mant * 10 + (uint64_t)(*q - '0');
  for (const char *q = f0; q < f1; q++) mant = mant * 10 + (uint64_t)(*q - '0');
  if (mant > (1ull << 53)) return 0;
  double v;
  if (!mant) v = 0;
  else if (ex >= 0 && ex <= 22) v = (double)mant * p10[ex];
  else if (ex < 0 && ex >= -22) v = (double)mant / p10[-ex];
  else return 0;
  *out = neg ? -v : v;
  return 1;
}

/* parse_double of the NUL-terminated token [s, e), the fast way when it can. */
static inline int token_double(char *s, char *e, double *out) {
  return fast_double(s, e, out) || parse_double(s, out);
}

/* parse_long of the NUL-terminated token [s, e): plain digits directly. */
static inline int token_long(char *s, char *e, long *out) {
  if (e > s && e - s <= 18) {
    long x = 0;
    const char *p = s;
    for (; p < e && *p >= '0' && *p <= '9'; p++) x = x * 10 + (*p - '0');
    if (p == e) {
      *out = x;
      return 1;
    }
  }
  return parse_long(s, out);
}

#define WS " \t\r"
static inline int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/*
 * The collapsed weights (12 MiB for 2^18 buckets x 6 themes) and the idf
 * table are read at random indexes, once per feature of every passage:
 * with 4 KiB pages nearly every lookup is a TLB miss. Asked for 2 MiB
 * pages (transparent huge pages in "madvise" mode, Debian's default) they
 * fit in a handful of TLB entries, and loading them takes a few page
 * faults instead of thousands.
 *
 * They are mapped directly rather than malloc'd: glibc raises its mmap
 * threshold to the size of each large block freed, so after the first
 * reload the next model's blocks came from the heap, and freeing them
 * returned nothing to the system (the daemon's RSS grew by a model per
 * reload; bench/NOTES.md). Mapped memory is zero and goes back on unmap.
 * Blocks under 2 MiB are malloc'd; big_free needs the size big_alloc got.
 */
#define HUGE_PAGE ((size_t)2 << 20)
static void *big_alloc(size_t n) {
  if (n < HUGE_PAGE) return calloc(1, n ? n : 1);
  size_t sz = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  /* over-map by one huge page, then trim to a 2 MiB-aligned block */
  char *p = mmap(NULL, sz + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  char *q = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
  if (q > p) munmap(p, (size_t)(q - p));
  if (q + sz < p + sz + HUGE_PAGE) munmap(q + sz, (size_t)(p + sz + HUGE_PAGE - (q + sz)));
#ifdef MADV_HUGEPAGE
  madvise(q, sz, MADV_HUGEPAGE); /* advice only: a refusal changes nothing */
#endif
  return q;
}

static void big_free(void *p, size_t n) {
  if (!p) return;
  if (n < HUGE_PAGE) free(p);
  else munmap(p, (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
}

static size_t page_round(size_t n);

/* Bytes of slack after a file read by read_padded: the digit parser may
 * load 8 bytes at any position before the end. */
#define READ_PAD 16

/*
 * td_read_file (same errors, NUL-terminated) in one read into fb, a buffer
 * reused for every file of a bundle, with READ_PAD zero bytes after the
 * end. td_read_file copies 64 KiB chunks into a new doubling buffer per
 * file: for the 20 MB of a bundle's SVM files that was measurable, and
 * every fresh buffer is thousands of page faults again.
 */
static int read_padded(const char *path, td_buf_t *fb, td_err_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return td_err_set(err, TD_EIO, "%s: %s", path, strerror(errno));
  struct stat st;
  /* +1: room for the read that sees the end */
  size_t want = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
  size_t n = 0;
  for (;;) {
    if (fb->cap < want + READ_PAD) {
      /* Mapped, like big_alloc's blocks, so it goes back to the system
       * when the load is done; what it held matters only past the first
       * read (then mremap keeps it). */
      size_t cap = page_round(want + READ_PAD);
      void *nb = fb->data ? mremap(fb->data, fb->cap, cap, MREMAP_MAYMOVE)
                          : mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                 -1, 0);
      if (nb == MAP_FAILED) {
        close(fd);
        return td_err_set(err, TD_ENOMEM, "%s: out of memory", path);
      }
      fb->data = nb;
      fb->cap = cap;
    }
    size_t room = fb->cap - READ_PAD - n;
    if (!room) { /* grew since fstat, or not a regular file */
      want = 2 * (fb->cap - READ_PAD);
      continue;
    }
    ssize_t r = read(fd, fb->data + n, room);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno; /* close may change it */
      close(fd);
      return td_err_set(err, TD_EIO, "%s: %s", path, strerror(e));
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  memset(fb->data + n, 0, READ_PAD);
  fb->len = n;
  return 0;
}

/* simdjson's eight-digit tests and conversion (little-endian loads). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HAVE_SWAR_DIGITS 1
static inline int eight_digits(uint64_t x) {
  return ((x & 0xF0F0F0F0F0F0F0F0ull) |
          (((x + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull) >> 4)) == 0x3333333333333333ull;
}
static inline uint64_t parse_eight(uint64_t x) {
  x -= 0x3030303030303030ull;
  x = x * 10 + (x >> 8);
  x = (((x & 0x000000FF000000FFull) * 0x000F424000000064ull) +
       (((x >> 16) & 0x000000FF000000FFull) * 0x0000271000000001ull)) >> 32;
  return x;
}
#endif

/*
 * One "index:value" pair as svm_save_model writes it (index 1-10 digits,
 * value %.8g without an exponent), parsed in a single pass over its bytes:
 * a model load is little else. On success *qp moves to the separator after
 * the pair. Any other shape returns 0 and is parsed the general way, so
 * what is accepted and every value stay exactly as before (fast_double's
 * argument holds here too).
 */
static inline int pair_fast(char **qp, long *idx, double *val) {
  static const double p10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  const char *q = *qp, *d0 = q;
  long x = 0;
  /* At most 11 digits are read: 10 fit a long, an 11th sends the pair to
   * the general parser (unbounded, x overflowed: found by fuzz_bundle). */
  for (; q - d0 <= 10 && (unsigned)(*q - '0') < 10; q++) x = x * 10 + (*q - '0');
  if (q == d0 || q - d0 > 10 || *q != ':') return 0;
  q++;
  int neg = 0, nd = 0, any = 0;
  long ex = 0;
  uint64_t mant = 0;
  if (*q == '-' || *q == '+') neg = *q++ == '-';
  for (unsigned d; (d = (unsigned)(*q - '0')) < 10; q++) {
    any = 1;
    if (mant | d) {
      if (++nd > 19) return 0;
      mant = mant * 10 + d;
    }
  }
  if (*q == '.') {
    /* Fraction digits all count (leading zeros too): nd + their number
     * <= 19 keeps mant < 10^19. Eight at a time while they last. */
    const char *f0 = ++q;
#ifdef HAVE_SWAR_DIGITS
    for (uint64_t w8; nd + (q - f0) + 8 <= 19; q += 8) {
      memcpy(&w8, q, 8); /* the buffer has READ_PAD bytes after its end */
      if (!eight_digits(w8)) break;
      mant = mant * 100000000u + parse_eight(w8);
    }
#endif
    for (unsigned d; (d = (unsigned)(*q - '0')) < 10; q++) {
      if (nd + (q - f0) >= 19) return 0;
      mant = mant * 10 + d;
    }
    any |= q > f0;
    ex = -(long)(q - f0);
  }
  if (!any || (*q && !is_ws(*q)) || mant > (1ull << 53) || ex < -22) return 0;
  double v = mant ? (double)mant / p10[-ex] : 0;
  *idx = x;
  *val = neg ? -v : v;
  *qp = (char *)q;
  return 1;
}

static int svm_line_err(const char *path, size_t line, td_err_t *err, const char *what) {
  return td_err_set(err, TD_EMODEL, "%s line %zu: %s", path, line, what);
}

/* libsvm sizes its per-class reads by nSV: each count >= 0, all of them
 * adding up to the support vectors there are. */
static int nr_sv_adds_up(const int *nsv, int nr_class, long total_sv) {
  int64_t sum = 0;
  for (int c = 0; c < nr_class; c++) {
    if (nsv[c] < 0) return 0;
    sum += nsv[c];
  }
  return sum == total_sv;
}

/* Reads `n` numbers (integers if ints) from the rest of a header line into
 * a new array *arr (doubles, or ints when ints). */
static int svm_hdr_numbers(char **save, long n, int ints, void **arr) {
  char *w;
  free(*arr);
  *arr = ints ? malloc((size_t)n * sizeof(int)) : malloc((size_t)n * sizeof(double));
  if (!*arr) return 0;
  for (long i = 0; i < n; i++) {
    w = strtok_r(NULL, WS, save);
    if (ints) {
      long x;
      if (!parse_long(w, &x)) return 0;
      ((int *)*arr)[i] = (int)x; /* libsvm's "%d" */
    } else {
      double x;
      if (!parse_double(w, &x)) return 0;
      ((double *)*arr)[i] = x;
    }
  }
  return strtok_r(NULL, WS, save) == NULL;
}

/*
 * The support vectors of a parsed model are one block of nodes, mapped
 * rather than malloc'd for the same reason as big_alloc's blocks (a freed
 * model's memory goes back to the system, reload after reload). libsvm's
 * svm_free_and_destroy_model would free() it, so parsed models are freed by
 * parsed_svm_free, which unmaps the block first.
 */
static size_t page_round(size_t n) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  return (n + pg - 1) / pg * pg;
}

/* Bytes from SV[0] to the terminator of the last SV. */
static size_t nodes_bytes(const struct svm_model *s) {
  if (!s->SV || s->l <= 0) return 0;
  const struct svm_node *e = s->SV[s->l - 1];
  while (e->index != -1) e++;
  return (size_t)(e + 1 - s->SV[0]) * sizeof *e;
}

static void svm_nodes_free(struct svm_model *s) {
  if (s->SV && s->l > 0 && s->free_sv) munmap(s->SV[0], page_round(nodes_bytes(s)));
  s->free_sv = 0; /* libsvm must not free() them */
}

static void parsed_svm_free(struct svm_model **sm) {
  if (!*sm) return;
  svm_nodes_free(*sm);
  svm_free_and_destroy_model(sm);
}

/* Parses, validates and builds one libsvm model file (read into fb, a
 * reused buffer); *out owned by the caller (parsed_svm_free). */
static int svm_parse(const char *path, uint32_t buckets, td_buf_t *fb, struct svm_model **out,
                     td_err_t *err) {
  *out = NULL;
  int rc = read_padded(path, fb, err);
  if (rc) return rc;
  char *buf = fb->data;
  size_t len = fb->len;
  struct svm_model *sm = calloc(1, sizeof *sm);
  if (!sm) return td_err_set(err, TD_ENOMEM, "out of memory");
  sm->free_sv = 1; /* as svm_load_model: SV[0] is the one block of nodes */
  svm_hdr_t h = {.svm_type = -1, .kernel = -1};
  size_t line = 0, nnode = 0, capnode = 0, xs_map = 0;
  struct svm_node *xs = NULL;
  char *p = buf, *end = buf + len, msg[160];
  int in_sv = 0;
  long nsv = 0;
  while (p < end && !rc) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *next = nl ? nl + 1 : end;
    if (nl) *nl = '\0';
    line++;
    if (memchr(p, '\0', (size_t)((nl ? nl : end) - p))) {
      rc = svm_line_err(path, line, err, "NUL byte in a text file");
      break;
    }
    if (in_sv) {
      if (nsv >= h.total_sv) {
        while (*p && is_ws(*p)) p++;
        if (*p) rc = svm_line_err(path, line, err, "text after the last support vector");
        p = next;
        continue;
      }
      /* <coef> x (nr_class-1), then index:value pairs, indexes ascending.
       * Scanned by hand: this loop is a model load's whole cost. */
      char *q = p;
      for (int c = 0; c < h.nr_class - 1 && !rc; c++) {
        while (*q && is_ws(*q)) q++;
        char *t = q;
        while (*q && !is_ws(*q)) q++;
        char *te = q;
        if (*q) q++;
        *te = '\0';
        double x;
        if (t == te || !token_double(t, te, &x))
          rc = svm_line_err(path, line, err, "expected a finite coefficient");
        else
          sm->sv_coef[c][nsv] = x;
      }
      sm->SV[nsv] = xs + nnode; /* xs does not move until the end */
      long prev = 0;
      while (!rc) {
        while (*q && is_ws(*q)) q++;
        if (!*q) break;
        long idx;
        double val;
        int ok = pair_fast(&q, &idx, &val);
        if (!ok) { /* the general way: the token, its first ':', two numbers */
          char *t = q, *colon = NULL;
          for (; *q && !is_ws(*q); q++)
            if (*q == ':' && !colon) colon = q;
          char *te = q;
          if (*q) q++;
          *te = '\0';
          if (!colon) {
            rc = svm_line_err(path, line, err, "expected index:value");
            break;
          }
          *colon = '\0';
          ok = token_long(t, colon, &idx) && token_double(colon + 1, te, &val);
        }
        if (!ok) {
          rc = svm_line_err(path, line, err,
                            "expected index:value with an integer index and a finite value");
        } else if (idx < 1 || idx > (long)buckets) {
          rc = td_err_set(err, TD_EMODEL,
                          "%s line %zu: index %ld out of range: the bundle has %u feature "
                          "buckets (libsvm indexes 1..%u)",
                          path, line, idx, buckets, buckets);
        } else if (idx <= prev) {
          rc = svm_line_err(path, line, err, "indexes not strictly ascending");
        } else if (nnode + 1 >= capnode) {
          rc = td_err_set(err, TD_EMODEL, "%s line %zu: more nodes than index:value pairs",
                          path, line); /* cannot happen: see capnode */
        } else {
          xs[nnode].index = (int)idx;
          xs[nnode++].value = val;
        }
        prev = idx;
      }
      if (!rc) xs[nnode++].index = -1; /* room: capnode has one per SV line */
      nsv++;
      p = next;
      continue;
    }
    char *save = NULL, *w = strtok_r(p, WS, &save);
    if (!w) {
      rc = svm_line_err(path, line, err, "empty line in the header");
    } else if (!strcmp(w, "svm_type")) {
      h.svm_type = name_index(strtok_r(NULL, WS, &save), svm_type_names, 5);
      if (h.svm_type != C_SVC)
        rc = td_err_set(err, TD_EMODEL,
                        "%s line %zu: expected a 2-class C-SVC with labels +1/-1, "
                        "got svm_type %s",
                        path, line, h.svm_type < 0 ? "(unknown)" : svm_type_names[h.svm_type]);
      sm->param.svm_type = h.svm_type;
    } else if (!strcmp(w, "kernel_type")) {
      h.kernel = name_index(strtok_r(NULL, WS, &save), kernel_names, 5);
      if (h.kernel < 0 || h.kernel == PRECOMPUTED)
        rc = svm_line_err(path, line, err,
                          "kernel_type: expected linear, polynomial, rbf or sigmoid");
      sm->param.kernel_type = h.kernel;
    } else if (!strcmp(w, "degree")) {
      long d;
      h.have_degree = 1;
      if (!parse_long(strtok_r(NULL, WS, &save), &d) || d < 0 || d > 100)
        rc = svm_line_err(path, line, err, "degree: expected an integer in [0, 100]");
      else
        sm->param.degree = (int)d;
    } else if (!strcmp(w, "gamma") || !strcmp(w, "coef0")) {
      double x;
      if (w[0] == 'g')
        h.have_gamma = 1;
      else
        h.have_coef0 = 1;
      if (!parse_double(strtok_r(NULL, WS, &save), &x)) {
        snprintf(msg, sizeof msg, "%s: expected a finite number", w);
        rc = svm_line_err(path, line, err, msg);
      } else if (w[0] == 'g') {
        sm->param.gamma = x;
      } else {
        sm->param.coef0 = x;
      }
    } else if (!strcmp(w, "nr_class")) {
      long x;
      if (!parse_long(strtok_r(NULL, WS, &save), &x) || x < 2 || x > 1000)
        rc = svm_line_err(path, line, err, "nr_class: expected an integer in [2, 1000]");
      else
        h.nr_class = (int)x;
    } else if (!strcmp(w, "total_sv")) {
      if (!parse_long(strtok_r(NULL, WS, &save), &h.total_sv) || h.total_sv < 0 ||
          h.total_sv > 100000000)
        rc = svm_line_err(path, line, err, "total_sv: expected an integer >= 0");
    } else if (!strcmp(w, "rho") || !strcmp(w, "probA") || !strcmp(w, "probB") ||
               !strcmp(w, "label") || !strcmp(w, "nr_sv")) {
      int ints = !strcmp(w, "label") || !strcmp(w, "nr_sv");
      long n = ints ? h.nr_class : (long)h.nr_class * (h.nr_class - 1) / 2;
      if (h.nr_class == 0) {
        snprintf(msg, sizeof msg, "%s before nr_class", w);
        rc = svm_line_err(path, line, err, msg);
        break;
      }
      void **arr;
      int *n_at;
      if (!strcmp(w, "rho")) h.have_rho = 1, arr = (void **)&sm->rho, n_at = &h.n_rho;
      else if (!strcmp(w, "label")) h.have_label = 1, arr = (void **)&sm->label, n_at = &h.n_label;
      else if (!strcmp(w, "nr_sv")) h.have_nr_sv = 1, arr = (void **)&sm->nSV, n_at = &h.n_nr_sv;
      else if (!strcmp(w, "probA")) arr = (void **)&sm->probA, n_at = &h.n_proba;
      else arr = (void **)&sm->probB, n_at = &h.n_probb;
      *n_at = h.nr_class;
      if (!svm_hdr_numbers(&save, n, ints, arr)) {
        if (!*arr) {
          rc = td_err_set(err, TD_ENOMEM, "out of memory");
          break;
        }
        snprintf(msg, sizeof msg, "%s: expected %ld %s", w, n,
                 ints ? "integers" : "finite numbers");
        rc = svm_line_err(path, line, err, msg);
      }
    } else if (!strcmp(w, "SV")) {
      in_sv = 1;
      if (h.svm_type < 0 || h.kernel < 0 || h.nr_class == 0 || !h.have_rho || !h.have_label ||
          !h.have_nr_sv || h.total_sv == 0) {
        rc = svm_line_err(path, line, err,
                          "header lacks one of svm_type, kernel_type, nr_class, "
                          "total_sv (> 0), rho, label, nr_sv");
      } else if (h.n_rho != h.nr_class || h.n_label != h.nr_class ||
                 h.n_nr_sv != h.nr_class || (sm->probA && h.n_proba != h.nr_class) ||
                 (sm->probB && h.n_probb != h.nr_class)) {
        /* libsvm sizes its reads by the last nr_class */
        rc = svm_line_err(path, line, err, "nr_class changed after rho, label, nr_sv or prob");
      } else if (!nr_sv_adds_up(sm->nSV, h.nr_class, h.total_sv)) {
        /* Checked on the counts libsvm will use, the last nr_sv line's: a
         * total over repeated lines let {-5e7, 0} then {1, 5e7+1} pass with
         * total_sv 2, and libsvm read far past its arrays (found in review). */
        rc = svm_line_err(path, line, err,
                          "nr_sv: the counts must be >= 0 and add up to total_sv");
      } else if ((h.kernel == POLY && !(h.have_degree && h.have_gamma && h.have_coef0)) ||
                 (h.kernel == RBF && !h.have_gamma) ||
                 (h.kernel == SIGMOID && !(h.have_gamma && h.have_coef0))) {
        rc = svm_line_err(path, line, err, "kernel parameters (degree/gamma/coef0) missing");
      }
      if (!rc) {
        /* Room for every node: a pair takes at least 4 bytes ("1:0" and a
         * separator), plus one terminator per SV. Pages never written are
         * never resident; the block is cut to size at the end. (Counting
         * the ':' first, as svm_load_model does, cost a sixth of a load.) */
        capnode = (size_t)(end - next) / 4 + (size_t)h.total_sv + 2;
        sm->nr_class = h.nr_class;
        sm->l = (int)h.total_sv;
        xs_map = page_round(capnode * sizeof *xs);
        xs = mmap(NULL, xs_map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (xs == MAP_FAILED) xs = NULL;
        sm->SV = malloc((size_t)h.total_sv * sizeof *sm->SV);
        sm->sv_coef = calloc((size_t)h.nr_class - 1, sizeof *sm->sv_coef);
        int ok = xs && sm->SV && sm->sv_coef;
        for (int c = 0; ok && c < h.nr_class - 1; c++)
          ok = (sm->sv_coef[c] = malloc((size_t)h.total_sv * sizeof(double))) != NULL;
        if (!ok) rc = td_err_set(err, TD_ENOMEM, "out of memory");
      }
    } else {
      snprintf(msg, sizeof msg, "unknown header key \"%.*s\"", (int)td_utf8_prefix(w, 40), w);
      rc = svm_line_err(path, line, err, msg);
    }
    p = next;
  }
  if (!rc && !in_sv)
    rc = td_err_set(err, TD_EMODEL, "%s: no \"SV\" line (not a libsvm model file?)", path);
  else if (!rc && nsv < h.total_sv)
    rc = td_err_set(err, TD_EMODEL, "%s: truncated: %ld of %ld support vectors", path, nsv,
                    h.total_sv);
  if (rc) {
    /* SV[] is not filled yet: libsvm must not free SV[0]; the block is xs.
     * sv_coef (calloc'd) has nr_class - 1 entries, NULL where not made. */
    free(sm->SV);
    sm->SV = NULL;
    sm->l = 0;
    if (xs) munmap(xs, xs_map);
    svm_free_and_destroy_model(&sm);
    return rc;
  }
  /* Unmap the pages past what was used (never touched: not resident, but
   * they would count as the process's mappings). */
  size_t used = page_round(nnode * sizeof *xs);
  if (used < xs_map) munmap((char *)xs + used, xs_map - used);
  *out = sm;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */

static void model_free(td_model_t *m) {
  if (!m) return;
  if (m->themes) {
    for (size_t k = 0; k < m->ntheme; k++) {
      free(m->themes[k].name);
      parsed_svm_free(&m->themes[k].svm);
    }
    free(m->themes);
  }
  td_tokenizer_free(&m->tok);
  free(m->dir);
  free(m->name);
  free(m->version);
  free(m->label);
  /* sizes as load_idf and collapse allocated them */
  big_free(m->idf, (size_t)m->feat.buckets * sizeof *m->idf);
  big_free(m->w, (size_t)m->feat.buckets * m->ntheme * sizeof *m->w);
  free(m->bias);
  if (m->manifest) json_decref(m->manifest);
  m->magic = 0; /* a later use trips MODEL_CHECK instead of reading freed data */
  free(m);
}

static int load_themes(td_model_t *m, vctx_t *v, const json_t *themes) {
  char field[96];
  if (!json_is_array(themes)) return expected(v, "themes", "an array of theme objects", themes);
  size_t n = json_array_size(themes);
  if (n == 0) return td_err_set(v->err, TD_EMODEL, "%s: themes: no themes", v->file);
  if (n > TD_MAX_THEMES)
    return td_err_set(v->err, TD_EMODEL, "%s: themes: %zu themes; at most %d are supported",
                      v->file, n, TD_MAX_THEMES);
  m->themes = calloc(n, sizeof *m->themes);
  if (!m->themes) return td_err_set(v->err, TD_ENOMEM, "out of memory");
  m->ntheme = n;
  for (size_t k = 0; k < n; k++) {
    const json_t *t = json_array_get(themes, k), *cal = NULL;
    td_theme_t *th = &m->themes[k];
    const char *name, *method, *svm;
    int rc;
    snprintf(field, sizeof field, "themes[%zu]", k);
    if (!json_is_object(t)) return expected(v, field, "an object", t);
    snprintf(field, sizeof field, "themes[%zu].name", k);
    if ((rc = get_string(v, t, "name", field, &name))) return rc;
    if (!td_theme_name_ok(name))
      return expected(v, field, "a name of " TD_THEME_NAME_RULE, json_object_get(t, "name"));
    /* `other` is what a passage with no theme is called; only a multiclass
     * bundle (where `other` is an ordinary class, see corpus.h) may have it. */
    if (!strcmp(name, "other") && !m->multiclass)
      return td_err_set(v->err, TD_EMODEL,
                        "%s: %s: \"other\" means no theme and cannot be a theme "
                        "(except in a multiclass bundle)",
                        v->file, field);
    for (size_t j = 0; j < k; j++)
      if (!strcmp(m->themes[j].name, name))
        return td_err_set(v->err, TD_EMODEL, "%s: %s: duplicate theme \"%s\" (also themes[%zu])",
                          v->file, field, name, j);
    if (!(th->name = xstrdup(name))) return td_err_set(v->err, TD_ENOMEM, "out of memory");

    snprintf(field, sizeof field, "themes[%zu].threshold", k);
    const json_t *jt = json_object_get(t, "threshold");
    if (!json_is_number(jt) || !(json_number_value(jt) > 0 && json_number_value(jt) < 1))
      return expected(v, field, "a number in (0,1)", jt);
    th->threshold = json_number_value(jt);

    snprintf(field, sizeof field, "themes[%zu].calibration", k);
    if ((rc = get_object(v, t, "calibration", field, 0, &cal))) return rc;
    snprintf(field, sizeof field, "themes[%zu].calibration.method", k);
    if ((rc = get_string(v, cal, "method", field, &method))) return rc;
    if (strcmp(method, "platt"))
      return expected(v, field, "\"platt\"", json_object_get(cal, "method"));
    snprintf(field, sizeof field, "themes[%zu].calibration.a", k);
    if ((rc = get_number(v, cal, "a", field, &th->platt_a))) return rc;
    snprintf(field, sizeof field, "themes[%zu].calibration.b", k);
    if ((rc = get_number(v, cal, "b", field, &th->platt_b))) return rc;

    snprintf(field, sizeof field, "themes[%zu].C", k);
    const json_t *jc = json_object_get(t, "C");
    if (!json_is_number(jc) || !(json_number_value(jc) > 0) || !isfinite(json_number_value(jc)))
      return expected(v, field, "a number > 0", jc);
    th->C = json_number_value(jc);

    snprintf(field, sizeof field, "themes[%zu].svm", k);
    if ((rc = get_string(v, t, "svm", field, &svm))) return rc;
    if (!rel_path_ok(svm))
      return expected(v, field, "a relative path inside the bundle", json_object_get(t, "svm"));

    const json_t *cv;
    snprintf(field, sizeof field, "themes[%zu].cv", k);
    if ((rc = get_object(v, t, "cv", field, 1, &cv))) return rc;
  }
  return 0;
}

/*
 * strtod with a memory. idf.tsv has one line per bucket but few distinct
 * values (an idf depends only on a document frequency), written with
 * %.17g, which fast_double cannot take (17 digits); strtod was a tenth of
 * a model load. The same bytes always give the same double, so a value
 * seen before is looked up by its exact text. Only fully consumed tokens
 * are remembered: a hit means strtod would have stopped at the NUL too.
 */
#define MEMO_SLOTS 4096
typedef struct strtod_memo {
  const char *s[MEMO_SLOTS]; /* into the file buffer, NUL-terminated */
  size_t len[MEMO_SLOTS];
  double x[MEMO_SLOTS];
  size_t used;
} strtod_memo_t;

static double memo_strtod(strtod_memo_t *mm, const char *s, size_t len, char **end) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  size_t k = h & (MEMO_SLOTS - 1);
  for (; mm->s[k]; k = (k + 1) & (MEMO_SLOTS - 1))
    if (mm->len[k] == len && !memcmp(mm->s[k], s, len)) {
      *end = (char *)s + len;
      return mm->x[k];
    }
  double x = strtod(s, end);
  if (*end == s + len && mm->used < MEMO_SLOTS / 2) { /* load <= 1/2 */
    mm->s[k] = s;
    mm->len[k] = len;
    mm->x[k] = x;
    mm->used++;
  }
  return x;
}

static int load_idf(td_model_t *m, vctx_t *v, const json_t *jidf) {
  const char *file;
  double dflt;
  long long n_docs;
  int rc;
  if ((rc = get_string(v, jidf, "file", "idf.file", &file))) return rc;
  if (!rel_path_ok(file))
    return expected(v, "idf.file", "a relative path inside the bundle",
                    json_object_get(jidf, "file"));
  if ((rc = get_number(v, jidf, "default", "idf.default", &dflt))) return rc;
  if (!(dflt > 0))
    return expected(v, "idf.default", "a number > 0", json_object_get(jidf, "default"));
  if ((rc = get_int(v, jidf, "n_docs", "idf.n_docs", 0, (long long)1 << 40, &n_docs))) return rc;

  uint32_t nb = m->feat.buckets;
  m->idf = big_alloc((size_t)nb * sizeof *m->idf);
  if (!m->idf) return td_err_set(v->err, TD_ENOMEM, "out of memory");
  for (uint32_t i = 0; i < nb; i++) m->idf[i] = NAN; /* NaN: not listed yet */

  char *path = path_join(m->dir, file), *buf = NULL;
  size_t len;
  strtod_memo_t *memo = NULL;
  if (!path) return td_err_set(v->err, TD_ENOMEM, "out of memory");
  if ((rc = td_read_file(path, &buf, &len, v->err))) goto done;
  memo = calloc(1, sizeof *memo); /* NULL: plain strtod */
  char *p = buf, *end = buf + len;
  size_t line = 0;
  while (p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *next = nl ? nl + 1 : end;
    size_t ll = (size_t)((nl ? nl : end) - p);
    line++;
    if (line == 1) {
      if (ll != 9 || memcmp(p, "index\tidf", 9)) {
        rc =
            td_err_set(v->err, TD_EMODEL, "%s line 1: expected the header \"index<TAB>idf\"", path);
        goto done;
      }
      p = next;
      continue;
    }
    /* "<index>\t<idf>": digits, one tab, a number, nothing else */
    char *q = p, *tab = memchr(p, '\t', ll), *e;
    unsigned long idx = 0;
    double x = 0;
    int ok = tab && tab > q && (size_t)(tab - q) <= 10;
    for (char *d = q; ok && d < tab; d++) {
      if (*d < '0' || *d > '9')
        ok = 0;
      else
        idx = idx * 10 + (unsigned long)(*d - '0');
    }
    if (ok) {
      if (nl)
        *nl = '\0';
      else
        buf[len] = '\0';
      if (memchr(tab + 1, '\0', (size_t)((nl ? nl : end) - (tab + 1)))) {
        ok = 0;
      } else {
        /* strtod would skip leading blanks: insist on the number itself */
        char c = tab[1];
        x = memo ? memo_strtod(memo, tab + 1, (size_t)((nl ? nl : end) - (tab + 1)), &e)
                 : strtod(tab + 1, &e);
        ok = e != tab + 1 && *e == '\0' &&
             ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.');
      }
    }
    if (!ok) {
      size_t show = ll > 40 ? 40 : ll;
      while (show > 0 && show < ll && ((unsigned char)p[show] & 0xC0) == 0x80) show--;
      for (size_t i = 0; i < show; i++)
        if (p[i] == '\0') show = i;
      rc = td_err_set(v->err, TD_EMODEL,
                      "%s line %zu: expected \"<index><TAB><idf>\", got \"%.*s%s\"", path, line,
                      (int)show, p, show < ll ? "..." : "");
      goto done;
    }
    if (idx >= nb) {
      rc = td_err_set(v->err, TD_EMODEL, "%s line %zu: index %lu out of range (buckets %u)", path,
                      line, idx, nb);
      goto done;
    }
    if (!isfinite(x) || !(x > 0)) {
      rc = td_err_set(v->err, TD_EMODEL, "%s line %zu: idf %g: expected a finite number > 0", path,
                      line, x);
      goto done;
    }
    if (!isnan(m->idf[idx])) {
      rc = td_err_set(v->err, TD_EMODEL, "%s line %zu: index %lu listed twice", path, line, idx);
      goto done;
    }
    m->idf[idx] = x;
    p = next;
  }
  if (line == 0) {
    rc = td_err_set(v->err, TD_EMODEL, "%s: empty file (expected the header \"index<TAB>idf\")",
                    path);
    goto done;
  }
  for (uint32_t i = 0; i < nb; i++)
    if (isnan(m->idf[i])) m->idf[i] = dflt;
done:
  free(memo);
  free(buf);
  free(path);
  return rc;
}

/*
 * The SVM files are parsed on up to two threads (or the CPUs it may run on, if
 * fewer): they are independent, and parsing them is most of a load (a
 * reload, too, runs on one daemon worker while the others serve). Errors
 * are reported as a sequential load would report them: the first theme in
 * order whose file fails, then that theme's label check.
 */
typedef struct svm_jobs {
  td_model_t *m;
  char **paths;
  int *rc;
  td_err_t *errs;
  size_t next;
  pthread_mutex_t mu;
  int stream;    /* collapse into m->w and free each theme's SVs once parsed */
  int nonlinear; /* streaming met a theme it cannot collapse (under mu) */
} svm_jobs_t;

/* w[:, k] += the support vectors of theme k (column k of the interleaved
 * weights; themes on other threads write other columns), in the file's
 * order, so the sums are the same bits however the themes are scheduled. */
static void collapse_theme(td_model_t *m, size_t k) {
  const struct svm_model *s = m->themes[k].svm;
  size_t nt = m->ntheme;
  double sign = s->label[0] == 1 ? 1 : -1;
  for (int j = 0; j < s->l; j++) {
    double c = sign * s->sv_coef[0][j];
    for (const struct svm_node *n = s->SV[j]; n->index != -1; n++)
      m->w[(size_t)(n->index - 1) * nt + k] += c * n->value;
  }
}

/* Frees one svm_model's support vectors; the header (rho, labels) stays. */
static void release_theme_svs(struct svm_model *s) {
  if (!s || !s->SV) return;
  svm_nodes_free(s); /* the one block of nodes */
  TD_FREE(s->SV);
  for (int c = 0; s->sv_coef && c < s->nr_class - 1; c++) TD_FREE(s->sv_coef[c]);
  TD_FREE(s->sv_coef);
  s->l = 0;
  for (int c = 0; s->nSV && c < s->nr_class; c++) s->nSV[c] = 0;
}

static int labels_pm1(const struct svm_model *s) {
  return svm_get_svm_type(s) == C_SVC && s->nr_class == 2 && s->label &&
         ((s->label[0] == 1 && s->label[1] == -1) || (s->label[0] == -1 && s->label[1] == 1));
}

static void *svm_worker(void *arg) {
  svm_jobs_t *j = arg;
  td_buf_t fb; /* this thread's files are read into this one (mapped) buffer */
  td_buf_init(&fb);
  for (;;) {
    pthread_mutex_lock(&j->mu);
    size_t k = j->next++;
    pthread_mutex_unlock(&j->mu);
    if (k >= j->m->ntheme) break;
    j->rc[k] = svm_parse(j->paths[k], j->m->feat.buckets, &fb, &j->m->themes[k].svm, &j->errs[k]);
    struct svm_model *s = j->m->themes[k].svm;
    if (!j->stream || j->rc[k] || !s) continue;
    if (s->param.kernel_type == LINEAR && labels_pm1(s)) {
      collapse_theme(j->m, k);
      release_theme_svs(s);
    } else if (s->param.kernel_type != LINEAR) {
      pthread_mutex_lock(&j->mu);
      j->nonlinear = 1;
      pthread_mutex_unlock(&j->mu);
    } /* bad labels: load_svms reports them */
  }
  if (fb.data) munmap(fb.data, fb.cap);
  return NULL;
}

static int load_svms(td_model_t *m, vctx_t *v, int stream) {
  size_t nt = m->ntheme, nb = m->feat.buckets;
  svm_jobs_t j = {.m = m, .stream = stream};
  int rc = 0;
  if (stream) {
    if (nb > SIZE_MAX / sizeof(double) / nt) return td_err_set(v->err, TD_ENOMEM, "out of memory");
    if (!(m->w = big_alloc(nb * nt * sizeof *m->w)))
      return td_err_set(v->err, TD_ENOMEM, "out of memory for %zu x %zu collapsed weights", nb, nt);
  }
  j.paths = calloc(nt, sizeof *j.paths);
  j.rc = calloc(nt, sizeof *j.rc);
  j.errs = calloc(nt, sizeof *j.errs);
  if (!j.paths || !j.rc || !j.errs) {
    rc = td_err_set(v->err, TD_ENOMEM, "out of memory");
    goto done;
  }
  for (size_t k = 0; k < nt; k++) {
    const json_t *jt = json_array_get(json_object_get(m->manifest, "themes"), k);
    if (!(j.paths[k] = path_join(m->dir, json_string_value(json_object_get(jt, "svm"))))) {
      rc = td_err_set(v->err, TD_ENOMEM, "out of memory");
      goto done;
    }
  }
  pthread_mutex_init(&j.mu, NULL);
  pthread_t th;
  int helper = td_cpus_allowed() > 1 && nt > 1 && pthread_create(&th, NULL, svm_worker, &j) == 0;
  svm_worker(&j); /* this thread takes its share too */
  if (helper) pthread_join(th, NULL);
  pthread_mutex_destroy(&j.mu);
  if (stream && j.nonlinear) {
    /* A kernel model needs every support vector: parse again, keeping them. */
    for (size_t k = 0; k < nt; k++) parsed_svm_free(&m->themes[k].svm);
    big_free(m->w, nb * nt * sizeof *m->w);
    m->w = NULL;
    for (size_t k = 0; k < nt; k++) free(j.paths[k]);
    free(j.paths);
    free(j.rc);
    free(j.errs);
    return load_svms(m, v, 0);
  }
  m->svs_released = stream;
  m->linear = 1;
  for (size_t k = 0; k < nt && !rc; k++) {
    td_theme_t *t = &m->themes[k];
    if (j.rc[k]) {
      if (v->err) *v->err = j.errs[k];
      rc = j.rc[k];
      break;
    }
    const struct svm_model *s = t->svm;
    const char *path = j.paths[k];
    if (!labels_pm1(s)) {
      if (s->nr_class != 2)
        rc = td_err_set(v->err, TD_EMODEL,
                        "%s: expected a 2-class C-SVC with labels +1/-1, got %d class%s", path,
                        s->nr_class, s->nr_class == 1 ? "" : "es");
      else
        rc = td_err_set(v->err, TD_EMODEL,
                        "%s: expected a 2-class C-SVC with labels +1/-1, got labels %d/%d", path,
                        s->label ? s->label[0] : 0, s->label ? s->label[1] : 0);
      break;
    }
    t->sign = s->label[0] == 1 ? 1 : -1;
    if (s->param.kernel_type != LINEAR) m->linear = 0;
  }
done:
  for (size_t k = 0; j.paths && k < nt; k++) free(j.paths[k]);
  free(j.paths);
  free(j.rc);
  free(j.errs);
  return rc;
}

/*
 * For a linear kernel libsvm's decision value is
 *   f(x) = sum_j coef_j <SV_j, x> - rho = <w, x> - rho,  w = sum_j coef_j SV_j,
 * so the support vectors collapse into one primal vector per theme. The
 * orientation (label[0] may be -1) is folded into w and bias so the hot loop
 * is a bare multiply-add: dec_k = sum_i w[i*ntheme+k] x_i + bias[k].
 */
static int collapse(td_model_t *m, td_err_t *err) {
  size_t nt = m->ntheme, nb = m->feat.buckets;
  m->bias = calloc(nt, sizeof *m->bias);
  if (!m->bias) return td_err_set(err, TD_ENOMEM, "out of memory");
  for (size_t k = 0; k < nt; k++)
    m->bias[k] = -(double)m->themes[k].sign * m->themes[k].svm->rho[0];
  if (!m->linear) return 0;
  if (!m->svs_released) { /* streamed: w is done */
    if (nb > SIZE_MAX / sizeof(double) / nt) return td_err_set(err, TD_ENOMEM, "out of memory");
    m->w = big_alloc(nb * nt * sizeof *m->w);
    if (!m->w)
      return td_err_set(err, TD_ENOMEM, "out of memory for %zu x %zu collapsed weights", nb, nt);
    for (size_t k = 0; k < nt; k++) collapse_theme(m, k);
  }
  /* Every number in the files is finite, but their products and sums need
   * not be (1e300 x 1e300): a weight that is not would make every score NaN,
   * and every passage silently "other". */
  for (size_t i = 0; i < nb * nt; i++)
    if (!isfinite(m->w[i]))
      return td_err_set(err, TD_EMODEL, "%s: the support vectors of theme \"%s\" add up to a "
                        "weight that is not finite (bucket %zu)", m->dir, m->themes[i % nt].name,
                        i / nt);
  return 0;
}

/*
 * Files a tokenizer reads travel inside the bundle: a string option
 * "dictionary" (the lexicon plugin's word list) names a file relative to the
 * bundle directory, which the plugin, knowing nothing of bundles, gets as
 * <bundle dir>/<path> (*out, a rewritten copy; NULL when nothing to rewrite).
 * Absolute paths and ".." are refused: a bundle is self-contained.
 */
static int bundle_tokenizer_options(const td_model_t *m, vctx_t *v, const json_t *opt,
                                    json_t **out) {
  *out = NULL;
  const json_t *d = opt ? json_object_get(opt, "dictionary") : NULL;
  if (!d) return 0;
  if (!json_is_string(d) || !rel_path_ok(json_string_value(d)))
    return expected(v, "tokenizer.options.dictionary",
                    "a file inside the bundle (a relative path without \"..\")", d);
  char *path = path_join(m->dir, json_string_value(d));
  json_t *copy = json_deep_copy(opt);
  if (!path || !copy || json_object_set_new(copy, "dictionary", json_string(path))) {
    free(path);
    json_decref(copy);
    return td_err_set(v->err, TD_ENOMEM, "out of memory");
  }
  free(path);
  *out = copy;
  return 0;
}

static int load_manifest(td_model_t *m, const char *plugin_dir, const char *mpath, td_err_t *err) {
  vctx_t v = {mpath, err};
  char *text;
  size_t len;
  int rc = td_read_file(mpath, &text, &len, err);
  if (rc) return rc;
  json_error_t je;
  m->manifest = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  free(text);
  if (!m->manifest)
    return td_err_set(err, TD_EMODEL, "%s: line %d column %d: %s", mpath, je.line, je.column,
                      je.text);
  const json_t *j = m->manifest, *tok = NULL, *feat = NULL, *idf = NULL, *split = NULL, *opt = NULL;
  if (!json_is_object(j)) return expected(&v, "(top level)", "an object", j);

  const json_t *jf = json_object_get(j, "format");
  if (!json_is_integer(jf)) return expected(&v, "format", "an integer", jf);
  if (json_integer_value(jf) > TD_MODEL_FORMAT)
    return td_err_set(err, TD_EMODEL, "%s: format %lld is newer than this themed supports (%d)",
                      mpath, (long long)json_integer_value(jf), TD_MODEL_FORMAT);
  if (json_integer_value(jf) != TD_MODEL_FORMAT) {
    char what[32];
    snprintf(what, sizeof what, "%d", TD_MODEL_FORMAT);
    return expected(&v, "format", what, jf);
  }

  const char *name, *version, *created, *tokname;
  if ((rc = get_string(&v, j, "name", "name", &name))) return rc;
  if ((rc = get_string(&v, j, "version", "version", &version))) return rc;
  if ((rc = get_string(&v, j, "created", "created", &created))) return rc;
  const json_t *mc = json_object_get(j, "multiclass");
  if (!json_is_boolean(mc)) return expected(&v, "multiclass", "true or false", mc);
  m->multiclass = json_is_true(mc);

  if ((rc = get_object(&v, j, "tokenizer", "tokenizer", 0, &tok))) return rc;
  if ((rc = get_string(&v, tok, "name", "tokenizer.name", &tokname))) return rc;
  if ((rc = get_object(&v, tok, "options", "tokenizer.options", 1, &opt))) return rc;

  if ((rc = get_object(&v, j, "features", "features", 0, &feat))) return rc;
  if ((rc = td_feat_config_from_json(feat, &m->feat, err))) {
    td_err_prefix(err, "%s", mpath); /* its messages name "features.<key>" */
    /* whatever features.c calls it, to a loader it is a bad bundle */
    if (rc != TD_ENOMEM) {
      rc = TD_EMODEL;
      if (err) err->code = rc;
    }
    return rc;
  }
  if (m->feat.buckets == 0 || (m->feat.buckets & (m->feat.buckets - 1)))
    return expected(&v, "features.buckets", "a power of two", json_object_get(feat, "buckets"));

  long long maxc, headc;
  if ((rc = get_object(&v, j, "split", "split", 0, &split))) return rc;
  if ((rc = get_int(&v, split, "max_chars", "split.max_chars", 0, 1000000000, &maxc))) return rc;
  if ((rc = get_int(&v, split, "heading_chars", "split.heading_chars", 0, 1000000000, &headc)))
    return rc;
  m->split.max_chars = (size_t)maxc;
  m->split.heading_chars = (size_t)headc;

  if ((rc = get_object(&v, j, "idf", "idf", 0, &idf))) return rc;
  if ((rc = load_themes(m, &v, json_object_get(j, "themes")))) return rc;
  const json_t *unused;
  if ((rc = get_object(&v, j, "training", "training", 1, &unused))) return rc;
  if ((rc = get_object(&v, j, "metrics", "metrics", 1, &unused))) return rc;

  if (!(m->name = xstrdup(name)) || !(m->version = xstrdup(version)) ||
      !(m->label = malloc(strlen(name) + strlen(version) + 2)))
    return td_err_set(err, TD_ENOMEM, "out of memory");
  sprintf(m->label, "%s@%s", name, version);

  if ((rc = load_idf(m, &v, idf))) return rc;
  if ((rc = load_svms(m, &v, (m->load_flags & TD_MODEL_LOAD_SERVE) != 0))) return rc;
  if ((rc = collapse(m, err))) return rc;

  /* Last: a plugin may be slow to create (dictionaries), and every cheaper
   * check should already have had its say. */
  json_t *bopt = NULL;
  if ((rc = bundle_tokenizer_options(m, &v, opt, &bopt))) return rc;
  rc = td_tokenizer_open(plugin_dir, tokname, bopt ? bopt : opt, &m->tok, err);
  json_decref(bopt);
  if (rc) return td_err_prefix(err, "%s: tokenizer \"%s\"", mpath, tokname);
  return 0;
}

int td_model_load(const char *dir, const char *plugin_dir, td_model_t **out, td_err_t *err) {
  return td_model_load_flags(dir, plugin_dir, 0, out, err);
}

static int load_once(const char *dir, const char *plugin_dir, int flags, td_model_t **out,
                     td_err_t *err) {
  *out = NULL;
  td_model_t *m = calloc(1, sizeof *m);
  if (!m) return td_err_set(err, TD_ENOMEM, "out of memory");
  m->magic = TD_MODEL_MAGIC;
  m->load_flags = flags;
  atomic_init(&m->refs, 1);
  char *mpath = NULL;
  int rc;
  if (!(m->dir = xstrdup(dir)) || !(mpath = path_join(dir, "manifest.json"))) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
  } else {
    rc = load_manifest(m, plugin_dir, mpath, err);
  }
  free(mpath);
  if (rc) {
    model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

/* Loads that see the bundle replaced under them before one does not */
#define LOAD_ATTEMPTS 5

int td_model_load_flags(const char *dir, const char *plugin_dir, int flags, td_model_t **out,
                        td_err_t *err) {
  uint64_t t0 = td_now_ns();
  *out = NULL;
  if (!dir || !*dir) return td_err_set(err, TD_EINVAL, "model directory not given");
  /*
   * The files are opened by path, one after the other, so a bundle swapped
   * in meanwhile (td_model_install) could give the manifest of one and the
   * weights of the other. The directory open across the load pins its
   * identity (its inode cannot be reused while open); if dir names another
   * directory at the end, whatever was read is dropped and the load starts
   * over. A writer never puts a swapped-out directory back, so the same
   * directory at both ends means every file came from it.
   */
  int rc = 0;
  for (int attempt = 1;; attempt++) {
    td_model_t *m = NULL;
    struct stat a, b;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int pinned = fd >= 0 && fstat(fd, &a) == 0;
    rc = load_once(dir, plugin_dir, flags, &m, err);
    int replaced =
        pinned && (stat(dir, &b) != 0 || b.st_dev != a.st_dev || b.st_ino != a.st_ino);
    if (fd >= 0) close(fd);
    if (!replaced) {
      if (!rc) {
        m->load_ns = td_now_ns() - t0;
        *out = m;
      }
      return rc;
    }
    td_model_unref(&m);
    if (attempt == LOAD_ATTEMPTS)
      return td_err_set(err, TD_EIO,
                        "%s: the bundle was replaced while it was being read, %d times in a row",
                        dir, LOAD_ATTEMPTS);
  }
}

td_model_t *td_model_ref(td_model_t *m) {
  MODEL_CHECK(m);
  atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
  return m;
}

void td_model_unref(td_model_t **mp) {
  if (!mp || !*mp) return;
  td_model_t *m = *mp;
  *mp = NULL;
  MODEL_CHECK(m);
  /* acq_rel: every thread's last use happens-before the free */
  long old = atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel);
  if (old == 1)
    model_free(m);
  else if (old < 1)
    model_bad_magic(__func__, m);
}

/* ------------------------------------------------------------------------ */
/* Scoring                                                                  */

void td_model_release_svs(td_model_t *m) {
  MODEL_CHECK(m);
  if (!m->linear || !m->w) return;
  for (size_t k = 0; k < m->ntheme; k++) release_theme_svs(m->themes[k].svm);
  m->svs_released = 1;
}

double td_model_decision_libsvm(const td_model_t *m, size_t k, const td_fvec_t *x) {
  if (m->svs_released) { /* only the collapsed hyperplane is left */
    double d = 0;
    for (size_t i = 0; i < x->count; i++)
      d += m->w[(size_t)x->items[i].index * m->ntheme + k] * x->items[i].value;
    return d + m->bias[k];
  }
  struct svm_node stack[256], *nodes = stack;
  if (x->count + 1 > sizeof stack / sizeof stack[0]) {
    nodes = malloc((x->count + 1) * sizeof *nodes);
    if (!nodes) return NAN;
  }
  for (size_t i = 0; i < x->count; i++) {
    nodes[i].index = (int)x->items[i].index + 1; /* libsvm indexes are 1-based */
    nodes[i].value = x->items[i].value;
  }
  nodes[x->count].index = -1;
  nodes[x->count].value = 0;
  double dv = 0;
  svm_predict_values(m->themes[k].svm, nodes, &dv);
  if (nodes != stack) free(nodes);
  return m->themes[k].sign * dv;
}

void td_model_decision(const td_model_t *m, const td_fvec_t *x, double *dec) {
  size_t nt = m->ntheme;
  if (!m->linear) {
    for (size_t k = 0; k < nt; k++) dec[k] = td_model_decision_libsvm(m, k, x);
    return;
  }
  /* Themes four (then two, then one) at a time, each sum in a register
   * across the features instead of a load and a store of dec[k] per
   * multiply-add. Every dec[k] still adds its terms in feature order, from
   * 0, then the bias: the same sums, bit for bit. */
  const double *w = m->w;
  const td_feat_t *it = x->items;
  size_t n = x->count, k = 0;
  for (; k + 4 <= nt; k += 4) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (size_t i = 0; i < n; i++) {
      const double *row = w + (size_t)it[i].index * nt + k;
      double v = it[i].value;
      a0 += row[0] * v;
      a1 += row[1] * v;
      a2 += row[2] * v;
      a3 += row[3] * v;
    }
    dec[k] = a0 + m->bias[k];
    dec[k + 1] = a1 + m->bias[k + 1];
    dec[k + 2] = a2 + m->bias[k + 2];
    dec[k + 3] = a3 + m->bias[k + 3];
  }
  for (; k + 2 <= nt; k += 2) {
    double a0 = 0, a1 = 0;
    for (size_t i = 0; i < n; i++) {
      const double *row = w + (size_t)it[i].index * nt + k;
      double v = it[i].value;
      a0 += row[0] * v;
      a1 += row[1] * v;
    }
    dec[k] = a0 + m->bias[k];
    dec[k + 1] = a1 + m->bias[k + 1];
  }
  for (; k < nt; k++) {
    double a0 = 0;
    for (size_t i = 0; i < n; i++) a0 += w[(size_t)it[i].index * nt + k] * it[i].value;
    dec[k] = a0 + m->bias[k];
  }
}

double td_model_score(const td_theme_t *t, double dec) {
  /* libsvm's sigmoid_predict: never exp() of a large positive number */
  double f = t->platt_a * dec + t->platt_b;
  if (f >= 0) {
    double e = exp(-f);
    return e / (1.0 + e);
  }
  return 1.0 / (1.0 + exp(f));
}

long td_model_theme_index(const td_model_t *m, const char *name) {
  for (size_t k = 0; k < m->ntheme; k++)
    if (!strcmp(m->themes[k].name, name)) return (long)k;
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */

static int mkdir_p(const char *dir, td_err_t *err) {
  char *p = xstrdup(dir);
  if (!p) return td_err_set(err, TD_ENOMEM, "out of memory");
  int rc = 0;
  for (char *s = p + 1;; s++) {
    if (*s == '/' || *s == '\0') {
      char c = *s;
      *s = '\0';
      struct stat st;
      if (mkdir(p, 0755) && errno != EEXIST)
        rc = td_err_set(err, TD_EIO, "%s: mkdir: %s", p, strerror(errno));
      else if (stat(p, &st) || !S_ISDIR(st.st_mode))
        rc = td_err_set(err, TD_EIO, "%s: not a directory", p);
      *s = c;
      if (rc || c == '\0') break;
    }
  }
  free(p);
  return rc;
}

/*
 * A bundle is replaced as a whole, never file by file: td_model_write
 * builds the complete new bundle in a sibling directory, td_model_install
 * fsyncs every file and directory in it and then swaps it with the old one
 * in one renameat2(RENAME_EXCHANGE). A reader that opens files by path
 * meanwhile sees one directory or the other (the loader notices a swap
 * during its own reads: td_model_load_flags), and after a crash the path
 * holds one complete bundle or the other. docs/model-format.md, "How a
 * bundle is written".
 */

/* EINVAL: the file system has nothing to sync for this kind of file. */
static int sync_fd(int fd, const char *what, td_err_t *err) {
  if (fsync(fd) && errno != EINVAL)
    return td_err_set(err, TD_EIO, "%s: fsync: %s", what, strerror(errno));
  return 0;
}

static int sync_dir(const char *dir, td_err_t *err) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return td_err_set(err, TD_EIO, "%s: %s", dir, strerror(errno));
  int rc = sync_fd(fd, dir, err);
  close(fd);
  return rc;
}

/* Every regular file and directory under dir (children first, then dir
 * itself), so the data and the names are on disk before the swap makes
 * them the bundle. Symlinks are neither followed nor synced. */
static int sync_tree(const char *dir, int depth, td_err_t *err) {
  if (depth > 8) return td_err_set(err, TD_EIO, "%s: directories nested too deep", dir);
  DIR *d = opendir(dir);
  if (!d) return td_err_set(err, TD_EIO, "%s: %s", dir, strerror(errno));
  int rc = 0;
  struct dirent *e;
  errno = 0;
  while (!rc && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *p = path_join(dir, e->d_name);
    struct stat st;
    if (!p) rc = td_err_set(err, TD_ENOMEM, "out of memory");
    else if (lstat(p, &st)) rc = td_err_set(err, TD_EIO, "%s: %s", p, strerror(errno));
    else if (S_ISDIR(st.st_mode)) rc = sync_tree(p, depth + 1, err);
    else if (S_ISREG(st.st_mode)) {
      int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd < 0) rc = td_err_set(err, TD_EIO, "%s: %s", p, strerror(errno));
      else {
        rc = sync_fd(fd, p, err);
        close(fd);
      }
    }
    free(p);
    errno = 0;
  }
  if (!rc && errno) rc = td_err_set(err, TD_EIO, "%s: %s", dir, strerror(errno));
  closedir(d);
  return rc ? rc : sync_dir(dir, err);
}

/*
 * Where a bundle asked for at `dir` goes: dir itself without trailing
 * slashes, or, when dir is a symlink, the directory it resolves to, so the
 * link keeps naming the bundle (swapping the link itself for a directory
 * would change what it is). *exists: a directory is there now; then *mode
 * holds its permission bits, and it must be one we may replace: it has a
 * manifest.json or is empty, so a mistyped path cannot wipe an unrelated
 * directory.
 */
static int bundle_target(const char *dir, char **target, int *exists, mode_t *mode,
                         td_err_t *err) {
  struct stat st;
  *target = NULL;
  *exists = 0;
  *mode = 0;
  /* without trailing slashes, which would make lstat follow a link */
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  char *t = malloc(n + 1);
  if (!t) return td_err_set(err, TD_ENOMEM, "out of memory");
  memcpy(t, dir, n);
  t[n] = '\0';
  if (lstat(t, &st) == 0 && S_ISLNK(st.st_mode)) {
    char *r = realpath(t, NULL);
    if (!r) {
      int rc = td_err_set(err, TD_EIO, "%s: %s", t, strerror(errno));
      free(t);
      return rc;
    }
    free(t);
    t = r;
  }
  int rc = 0;
  if (stat(t, &st)) {
    if (errno != ENOENT) rc = td_err_set(err, TD_EIO, "%s: %s", t, strerror(errno));
  } else if (!S_ISDIR(st.st_mode)) {
    rc = td_err_set(err, TD_EINVAL, "%s: exists and is not a directory", t);
  } else {
    *exists = 1;
    *mode = st.st_mode & 07777;
    char *man = path_join(t, "manifest.json");
    int has = man && access(man, F_OK) == 0, empty = 0;
    free(man);
    if (!has) {
      DIR *d = opendir(t);
      struct dirent *e;
      empty = d != NULL;
      while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
      if (d) closedir(d);
    }
    if (!has && !empty)
      rc = td_err_set(err, TD_EINVAL,
                      "%s: exists and is not a model bundle (no manifest.json); refusing to replace it",
                      t);
  }
  if (rc) free(t);
  else *target = t;
  return rc;
}

/* The old bundle's name while it is swapped out when the file system cannot
 * exchange two names: "<target>.old.<pid>.<n>", free. */
static int swap_without_exchange(const char *staged, const char *target, td_err_t *err) {
  td_buf_t old;
  td_buf_init(&old);
  int rc = 0;
  struct stat st;
  for (int n = 0;; n++) {
    td_buf_reset(&old);
    if (td_buf_printf(&old, "%s.old.%ld.%d", target, (long)getpid(), n)) {
      rc = td_err_set(err, TD_ENOMEM, "out of memory");
      break;
    }
    if (lstat(old.data, &st) && errno == ENOENT) break;
    if (n == 99) {
      rc = td_err_set(err, TD_EIO, "%s: no free name to move the old bundle to", old.data);
      break;
    }
  }
  if (!rc && rename(target, old.data))
    rc = td_err_set(err, TD_EIO, "rename %s -> %s: %s", target, old.data, strerror(errno));
  if (!rc && rename(staged, target)) {
    int e = errno;
    rename(old.data, target);
    rc = td_err_set(err, TD_EIO, "rename %s -> %s: %s", staged, target, strerror(e));
  }
  /* where the old bundle now is, for the caller to remove */
  if (!rc && rename(old.data, staged)) td_remove_tree(old.data);
  td_buf_free(&old);
  return rc;
}

int td_model_install(const char *staged, const char *dir, td_err_t *err) {
  if (!staged || !*staged || !dir || !*dir)
    return td_err_set(err, TD_EINVAL, "bundle directory not given");
  char *target = NULL, *tparent = NULL, *sparent = NULL;
  int exists, rc;
  mode_t mode;
  if ((rc = bundle_target(dir, &target, &exists, &mode, err))) return rc;
  if (!(tparent = td_path_parent(target)) || !(sparent = td_path_parent(staged))) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
    goto done;
  }
  /* the permissions the old bundle had (the daemon may read as another user) */
  if (exists && chmod(staged, mode)) {
    rc = td_err_set(err, TD_EIO, "%s: chmod: %s", staged, strerror(errno));
    goto done;
  }
  if ((rc = sync_tree(staged, 0, err))) goto done;

  if (!exists) {
    if (rename(staged, target)) {
      rc = td_err_set(err, TD_EIO, "rename %s -> %s: %s", staged, target, strerror(errno));
      goto done;
    }
  } else {
    int swapped = 0;
#ifdef RENAME_EXCHANGE
    if (renameat2(AT_FDCWD, staged, AT_FDCWD, target, RENAME_EXCHANGE) == 0) {
      swapped = 1;
    } else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
      rc = td_err_set(err, TD_EIO, "exchanging %s and %s: %s", staged, target, strerror(errno));
      goto done;
    }
#endif
    /* Not on this file system: two renames, with a moment in which dir is
     * missing (a reader fails to load, and sees no mix). */
    if (!swapped && (rc = swap_without_exchange(staged, target, err))) goto done;
  }
  /* the new name on disk; then the old bundle (now at `staged`) can go */
  rc = sync_dir(tparent, err);
  if (!rc && strcmp(tparent, sparent)) rc = sync_dir(sparent, err);
  if (rc) td_err_prefix(err, "%s is the new bundle, but it may not survive a crash", target);
  if (exists) td_remove_tree(staged);
done:
  free(target);
  free(tparent);
  free(sparent);
  return rc;
}

static int write_idf(const char *path, const td_bundle_spec_t *sp, td_err_t *err) {
  FILE *f = fopen(path, "w");
  if (!f) return td_err_set(err, TD_EIO, "%s: %s", path, strerror(errno));
  int bad = fputs("index\tidf\n", f) < 0;
  for (uint32_t i = 0; sp->df && i < sp->feat->buckets && !bad; i++)
    if (sp->df[i] > 0)
      bad = fprintf(f, "%u\t%.17g\n", i, td_features_idf(sp->df[i], sp->n_docs)) < 0;
  int e = errno;
  bad |= fclose(f) != 0;
  if (bad) return td_err_set(err, TD_EIO, "%s: write failed: %s", path, strerror(e ? e : errno));
  return 0;
}

static json_t *copy_or_empty(const json_t *j) { return j ? json_deep_copy(j) : json_object(); }

static json_t *build_manifest(const td_bundle_spec_t *sp) {
  char created[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);

  json_t *root = json_object(), *themes = json_array();
  if (!root || !themes) goto fail;
  /* json_object_set_new ignores a NULL value (and returns -1): caught by
   * checking every call. Keys stay in insertion order (jansson >= 2.8), so the
   * file reads top-down: identity, tokenizer, features, themes, provenance. */
  int bad = 0;
  bad |= json_object_set_new(root, "format", json_integer(TD_MODEL_FORMAT));
  bad |= json_object_set_new(root, "name", json_string(sp->name));
  bad |= json_object_set_new(root, "version", json_string(sp->version));
  bad |= json_object_set_new(root, "created", json_string(created));
  bad |= json_object_set_new(root, "multiclass", json_boolean(sp->multiclass));
  bad |= json_object_set_new(root, "tokenizer",
                             json_pack("{s:s, s:o}", "name", sp->tokenizer, "options",
                                       copy_or_empty(sp->tokenizer_options)));
  bad |= json_object_set_new(root, "features", td_feat_config_to_json(sp->feat));
  bad |= json_object_set_new(root, "idf",
                             json_pack("{s:s, s:f, s:I}", "file", "idf.tsv", "default",
                                       td_features_idf(0, sp->n_docs), "n_docs",
                                       (json_int_t)sp->n_docs));
  bad |= json_object_set_new(root, "split",
                             json_pack("{s:I, s:I}", "max_chars", (json_int_t)sp->split->max_chars,
                                       "heading_chars", (json_int_t)sp->split->heading_chars));
  for (size_t k = 0; k < sp->ntheme && !bad; k++) {
    char svm[96];
    snprintf(svm, sizeof svm, "svm/%s.model", sp->themes[k]);
    json_t *t = json_pack("{s:s, s:f, s:{s:s, s:f, s:f}, s:f, s:s}", "name", sp->themes[k],
                          "threshold", sp->thresholds[k], "calibration", "method", "platt", "a",
                          sp->platt_a[k], "b", sp->platt_b[k], "C", sp->C[k], "svm", svm);
    if (t && sp->theme_cv && sp->theme_cv[k])
      bad |= json_object_set_new(t, "cv", json_deep_copy(sp->theme_cv[k]));
    bad |= json_array_append_new(themes, t);
  }
  bad |= json_object_set_new(root, "themes", themes);
  themes = NULL;
  bad |= json_object_set_new(root, "training", copy_or_empty(sp->training));
  bad |= json_object_set_new(root, "metrics", copy_or_empty(sp->metrics));
  if (!bad) return root;
fail:
  json_decref(themes);
  json_decref(root);
  return NULL;
}

static int check_spec(const td_bundle_spec_t *sp, td_err_t *err) {
  if (!sp || !sp->name || !*sp->name || !sp->version || !*sp->version || !sp->tokenizer ||
      !*sp->tokenizer || !sp->feat || !sp->split || !sp->themes || !sp->svms || !sp->thresholds ||
      !sp->platt_a || !sp->platt_b || !sp->C)
    return td_err_set(err, TD_EINVAL, "bundle spec: a required member is missing");
  if (sp->tokenizer_options && !json_is_object(sp->tokenizer_options))
    return td_err_set(err, TD_EINVAL, "bundle spec: tokenizer options must be an object");
  if (sp->feat->buckets == 0 || (sp->feat->buckets & (sp->feat->buckets - 1)))
    return td_err_set(err, TD_EINVAL, "bundle spec: buckets %u is not a power of two",
                      sp->feat->buckets);
  if (sp->ntheme == 0 || sp->ntheme > TD_MAX_THEMES)
    return td_err_set(err, TD_EINVAL, "bundle spec: %zu themes (expected 1..%d)", sp->ntheme,
                      TD_MAX_THEMES);
  for (size_t k = 0; k < sp->ntheme; k++) {
    const char *n = sp->themes[k];
    if (!n || !td_theme_name_ok(n))
      return td_err_set(err, TD_EINVAL, "bundle spec: theme %zu: bad name \"%s\"", k, n ? n : "");
    if (!strcmp(n, "other") && !sp->multiclass)
      return td_err_set(err, TD_EINVAL, "bundle spec: \"other\" cannot be a theme");
    for (size_t j = 0; j < k; j++)
      if (!strcmp(sp->themes[j], n))
        return td_err_set(err, TD_EINVAL, "bundle spec: duplicate theme \"%s\"", n);
    if (!(sp->thresholds[k] > 0 && sp->thresholds[k] < 1))
      return td_err_set(err, TD_EINVAL, "bundle spec: theme %s: threshold %g not in (0,1)", n,
                        sp->thresholds[k]);
    if (!isfinite(sp->platt_a[k]) || !isfinite(sp->platt_b[k]) || !(sp->C[k] > 0) ||
        !isfinite(sp->C[k]))
      return td_err_set(err, TD_EINVAL, "bundle spec: theme %s: bad Platt A/B or C", n);
    const struct svm_model *s = sp->svms[k];
    if (!s || svm_get_svm_type(s) != C_SVC || s->nr_class != 2 || !s->label ||
        s->label[0] * s->label[1] != -1 || s->param.kernel_type == PRECOMPUTED)
      return td_err_set(err, TD_EINVAL,
                        "bundle spec: theme %s: expected a 2-class C-SVC with labels +1/-1", n);
  }
  return 0;
}

/* The files td_model_write makes, into an empty directory. */
static int write_files(const char *dir, const td_bundle_spec_t *sp, td_err_t *err) {
  int rc = check_spec(sp, err);
  if (rc) return rc;
  char *path = NULL, *text = NULL;
  json_t *man = NULL;
  td_buf_t rel;
  td_buf_init(&rel);
  if (!(path = path_join(dir, "svm"))) goto nomem;
  if (mkdir(path, 0755)) {
    rc = td_err_set(err, TD_EIO, "%s: mkdir: %s", path, strerror(errno));
    goto done;
  }
  for (size_t k = 0; k < sp->ntheme; k++) {
    td_buf_reset(&rel);
    if (td_buf_printf(&rel, "svm/%s.model", sp->themes[k])) goto nomem;
    free(path);
    if (!(path = path_join(dir, rel.data))) goto nomem;
    if (svm_save_model(path, sp->svms[k])) {
      rc = td_err_set(err, TD_EIO, "%s: libsvm could not write the file", path);
      goto done;
    }
  }

  free(path);
  if (!(path = path_join(dir, "idf.tsv"))) goto nomem;
  if ((rc = write_idf(path, sp, err))) goto done;

  free(path);
  if (!(path = path_join(dir, "manifest.json"))) goto nomem;
  if (!(man = build_manifest(sp))) goto nomem;
  /* 17 significant digits: every double reads back bit for bit */
  if (!(text = json_dumps(man, JSON_INDENT(2) | JSON_REAL_PRECISION(17)))) goto nomem;
  FILE *f = fopen(path, "w");
  if (!f) {
    rc = td_err_set(err, TD_EIO, "%s: %s", path, strerror(errno));
    goto done;
  }
  int bad = fputs(text, f) < 0 || fputc('\n', f) < 0, e = errno;
  if (fclose(f) && !bad) bad = 1, e = errno;
  if (bad) rc = td_err_set(err, TD_EIO, "%s: %s", path, strerror(e));
  goto done;
nomem:
  rc = td_err_set(err, TD_ENOMEM, "out of memory");
done:
  json_decref(man);
  free(text);
  free(path);
  td_buf_free(&rel);
  return rc;
}

int td_model_write_files(const char *staged, const td_bundle_spec_t *sp, td_err_t *err) {
  if (!staged || !*staged) return td_err_set(err, TD_EINVAL, "bundle directory not given");
  int rc = mkdir_p(staged, err);
  return rc ? rc : write_files(staged, sp, err);
}

int td_model_check_target(const char *dir, td_err_t *err) {
  if (!dir || !*dir) return td_err_set(err, TD_EINVAL, "bundle directory not given");
  char *target;
  int exists;
  mode_t mode;
  int rc = bundle_target(dir, &target, &exists, &mode, err);
  if (!rc) free(target);
  return rc;
}

int td_model_write(const char *dir, const td_bundle_spec_t *sp, td_err_t *err) {
  if (!dir || !*dir) return td_err_set(err, TD_EINVAL, "bundle directory not given");
  int rc = check_spec(sp, err); /* before anything is made */
  if (rc) return rc;
  char *target = NULL, *parent = NULL;
  int exists;
  mode_t mode;
  td_buf_t stage;
  td_buf_init(&stage);
  /* refused before anything is written: a directory that is not a bundle */
  if ((rc = bundle_target(dir, &target, &exists, &mode, err))) return rc;
  if (!(parent = td_path_parent(target))) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
    goto done;
  }
  if (!exists && (rc = mkdir_p(parent, err))) goto done;
  /* "<dir>.new.<pid>.<n>", beside the target: the same file system, so
   * the swap is a rename; mkdir makes it ours alone */
  for (int n = 0;; n++) {
    td_buf_reset(&stage);
    if (td_buf_printf(&stage, "%s.new.%ld.%d", target, (long)getpid(), n)) {
      rc = td_err_set(err, TD_ENOMEM, "out of memory");
      goto done;
    }
    if (mkdir(stage.data, 0755) == 0) break;
    if (errno != EEXIST || n == 99) {
      rc = td_err_set(err, TD_EIO, "%s: mkdir: %s", stage.data, strerror(errno));
      goto done;
    }
  }
  if (!(rc = write_files(stage.data, sp, err))) rc = td_model_install(stage.data, target, err);
  /* the old bundle after a swap, else the unfinished new one (or nothing) */
  td_remove_tree(stage.data);
done:
  free(target);
  free(parent);
  td_buf_free(&stage);
  return rc;
}
