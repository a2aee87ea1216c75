#include "features.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

/* Recorded in the manifest: a bundle names the exact hash it was built with. */
#define HASH_NAME "murmur3_32"
/* Seed offsets: the context block and token pairs get their own hash
 * functions, so 产业 in a heading and 产业 in the body are unrelated features.
 * They are part of what "murmur3_32" means in a manifest: changing them (or
 * the pair construction) needs a new hash name, or old bundles score wrong. */
#define CTX_SALT 0x9e3779b9u
#define PAIR_SALT 0x85ebca6bu
/* Neighbour blocks re-mix the body hash instead of re-hashing the bytes, so a
 * passage is tokenized once per call whichever blocks it feeds. */
#define PREV_SALT 0x27d4eb2fu
#define NEXT_SALT 0x165667b1u
#define DOC_SALT 0xd3a2646cu

#define MAX_CONTEXT_WEIGHT 100.0

void td_feat_config_default(td_feat_config_t *c) {
  c->buckets = TD_FEAT_DEFAULT_BUCKETS;
  c->ngram_max = 1;
  c->sublinear_tf = 1;
  c->use_idf = 1;
  c->context_weight = 0.5;
  c->seed = 0x7d5eed;
  c->neighbor_weight = 0;
  c->doc_weight = 0;
  c->norm = TD_NORM_L2_TOKENS;
}

static const char *norm_name(td_norm_t n) { return n == TD_NORM_L2 ? "l2" : "l2-tokens"; }

/* ---- hashing: MurmurHash3 x86_32 (Austin Appleby, public domain) ---- */

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

/* Inlined into the per-token callbacks (count_token, keep_hash): a call per
 * token was a visible share of featurizing (bench/NOTES.md). */
static inline uint32_t hash32(const void *key, size_t len, uint32_t seed) {
  const uint8_t *p = key;
  const uint32_t c1 = 0xcc9e2d51u, c2 = 0x1b873593u;
  uint32_t h = seed;
  size_t nblocks = len / 4;
  for (size_t i = 0; i < nblocks; i++, p += 4) {
    /* Little-endian reads on every host, so indexes do not depend on the CPU. */
    uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    k *= c1;
    k = rotl32(k, 15);
    k *= c2;
    h ^= k;
    h = rotl32(h, 13);
    h = h * 5 + 0xe6546b64u;
  }
  uint32_t k = 0;
  switch (len & 3) {
  case 3: k ^= (uint32_t)p[2] << 16; /* fall through */
  case 2: k ^= (uint32_t)p[1] << 8;  /* fall through */
  case 1:
    k ^= p[0];
    k *= c1;
    k = rotl32(k, 15);
    k *= c2;
    h ^= k;
  }
  h ^= (uint32_t)len;
  return fmix32(h);
}

uint32_t td_features_hash(const void *key, size_t len, uint32_t seed) {
  return hash32(key, len, seed);
}

/*
 * 1 + ln(tf) for the counts that occur (a token seldom repeats in a
 * passage), looked up: log() per feature was a visible share of
 * featurizing. Filled with the same expression, so the values are the same
 * bits. Larger counts compute it.
 */
#define SUBLINEAR_TABLE 64
static double sublinear_tab[SUBLINEAR_TABLE];
static pthread_once_t sublinear_once = PTHREAD_ONCE_INIT;
static void sublinear_init(void) {
  for (unsigned k = 1; k < SUBLINEAR_TABLE; k++) sublinear_tab[k] = 1.0 + log((double)k);
}
static inline double sublinear(uint32_t cnt) {
  return cnt < SUBLINEAR_TABLE ? sublinear_tab[cnt] : 1.0 + log((double)cnt);
}

/* A token pair hashes the two token hashes, not the concatenated strings. */
static inline uint32_t pair_hash(uint32_t h1, uint32_t h2, uint32_t seed) {
  uint8_t b[8] = {(uint8_t)h1, (uint8_t)(h1 >> 8), (uint8_t)(h1 >> 16), (uint8_t)(h1 >> 24),
                  (uint8_t)h2, (uint8_t)(h2 >> 8), (uint8_t)(h2 >> 16), (uint8_t)(h2 >> 24)};
  return td_features_hash(b, sizeof b, seed ^ PAIR_SALT);
}

/* ---- config JSON ---- */

json_t *td_feat_config_to_json(const td_feat_config_t *c) {
  json_t *j = json_pack("{s:s, s:s, s:I, s:i, s:b, s:b, s:f, s:I, s:s}", "kind", "hash", "hash",
                        HASH_NAME, "buckets", (json_int_t)c->buckets, "ngram_max", c->ngram_max,
                        "sublinear_tf", c->sublinear_tf != 0, "use_idf", c->use_idf != 0,
                        "context_weight", c->context_weight, "seed", (json_int_t)c->seed, "norm",
                        norm_name(c->norm));
  /* Optional keys only when they change something: a bundle without them
   * stays loadable by readers that predate them. */
  if (j && ((c->neighbor_weight != 0 &&
              json_object_set_new(j, "neighbor_weight", json_real(c->neighbor_weight))) ||
             (c->doc_weight != 0 && json_object_set_new(j, "doc_weight", json_real(c->doc_weight))))) {
    json_decref(j);
    return NULL;
  }
  return j;
}

/* The offending value, compact and bounded, for error messages. */
static void show(const json_t *v, char *buf, size_t n) {
  char *s = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
  if (!s) {
    snprintf(buf, n, "%s", v ? "?" : "nothing");
    return;
  }
  if (strlen(s) >= n && n > 4) {
    memcpy(buf, s, n - 4);
    memcpy(buf + n - 4, "...", 4);
  } else {
    snprintf(buf, n, "%s", s);
  }
  free(s);
}

static int bad_value(td_err_t *err, const char *key, const char *expected, const json_t *v) {
  char got[96];
  show(v, got, sizeof got);
  return td_err_set(err, TD_EFORMAT, "features.%s: expected %s, got %s", key, expected, got);
}

static int get_flag(const json_t *j, const char *key, int *out, td_err_t *err) {
  const json_t *v = json_object_get(j, key);
  if (json_is_boolean(v)) {
    *out = json_is_true(v);
    return 0;
  }
  /* 0/1 too: hand-edited manifests write C-style flags. */
  if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
    *out = (int)json_integer_value(v);
    return 0;
  }
  return bad_value(err, key, "true or false", v);
}

static int get_const(const json_t *j, const char *key, const char *want, td_err_t *err) {
  const json_t *v = json_object_get(j, key);
  if (json_is_string(v) && strcmp(json_string_value(v), want) == 0) return 0;
  char exp[64];
  snprintf(exp, sizeof exp, "\"%s\"", want);
  return bad_value(err, key, exp, v);
}

int td_feat_config_from_json(const json_t *j, td_feat_config_t *c, td_err_t *err) {
  static const char *const keys[] = {"kind",    "hash",           "buckets", "ngram_max",
                                     "sublinear_tf", "use_idf", "context_weight", "seed",
                                     "norm",
                                     /* optional from here on */
                                     "neighbor_weight", "doc_weight"};
  const size_t nkeys = sizeof keys / sizeof keys[0], nrequired = 9;
  if (!json_is_object(j)) {
    char got[96];
    show(j, got, sizeof got);
    return td_err_set(err, TD_EFORMAT, "features: expected an object, got %s", got);
  }
  const char *k;
  const json_t *v;
  json_object_foreach((json_t *)j, k, v) {
    size_t i = 0;
    while (i < nkeys && strcmp(k, keys[i]) != 0) i++;
    if (i == nkeys) return td_err_set(err, TD_EFORMAT, "features.%s: unknown key", k);
  }
  for (size_t i = 0; i < nrequired; i++)
    if (!json_object_get(j, keys[i]))
      return td_err_set(err, TD_EFORMAT, "features.%s: missing", keys[i]);

  td_feat_config_t t;
  int rc;
  if ((rc = get_const(j, "kind", "hash", err)) || (rc = get_const(j, "hash", HASH_NAME, err)))
    return rc;
  v = json_object_get(j, "norm");
  if (json_is_string(v) && strcmp(json_string_value(v), "l2") == 0)
    t.norm = TD_NORM_L2;
  else if (json_is_string(v) && strcmp(json_string_value(v), "l2-tokens") == 0)
    t.norm = TD_NORM_L2_TOKENS;
  else
    return bad_value(err, "norm", "\"l2\" or \"l2-tokens\"", v);

  v = json_object_get(j, "buckets");
  json_int_t b = json_is_integer(v) ? json_integer_value(v) : 0;
  if (!td_feat_buckets_ok(b))
    return bad_value(err, "buckets", TD_FEAT_BUCKETS_RULE, v);
  t.buckets = (uint32_t)b;

  v = json_object_get(j, "ngram_max");
  if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 2)
    return bad_value(err, "ngram_max", "1 or 2", v);
  t.ngram_max = (int)json_integer_value(v);

  if ((rc = get_flag(j, "sublinear_tf", &t.sublinear_tf, err)) ||
      (rc = get_flag(j, "use_idf", &t.use_idf, err)))
    return rc;

  v = json_object_get(j, "context_weight");
  if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0 ||
      json_number_value(v) > MAX_CONTEXT_WEIGHT)
    return bad_value(err, "context_weight", "a number between 0 and 100", v);
  t.context_weight = json_number_value(v);

  v = json_object_get(j, "seed");
  if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0xffffffffLL)
    return bad_value(err, "seed", "an integer between 0 and 4294967295", v);
  t.seed = (uint32_t)json_integer_value(v);

  static const char *const optional[] = {"neighbor_weight", "doc_weight"};
  double *dst[] = {&t.neighbor_weight, &t.doc_weight};
  for (size_t i = 0; i < 2; i++) {
    *dst[i] = 0;
    if (!(v = json_object_get(j, optional[i]))) continue;
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0 ||
        json_number_value(v) > MAX_CONTEXT_WEIGHT)
      return bad_value(err, optional[i], "a number between 0 and 100", v);
    *dst[i] = json_number_value(v);
  }

  *c = t;
  return 0;
}

/* ---- sparse vectors ---- */

void td_fvec_init(td_fvec_t *v) {
  v->items = NULL;
  v->count = v->cap = 0;
}

void td_fvec_free(td_fvec_t *v) {
  TD_FREE(v->items);
  v->count = v->cap = 0;
}

static int fvec_reserve(td_fvec_t *v, size_t extra) {
  if (v->count + extra <= v->cap) return 0;
  size_t cap = v->cap ? v->cap : 64;
  while (cap < v->count + extra) cap *= 2;
  td_feat_t *p = realloc(v->items, cap * sizeof *p);
  if (!p) return TD_ENOMEM;
  v->items = p;
  v->cap = cap;
  return 0;
}

/* ---- count map: bucket index -> count, reused across passages ----
 *
 * Entries live in a dense array (iteration and output in insertion order);
 * an open-addressing table of entry numbers finds them. Slots carry a
 * generation stamp, so clearing the map between passages is O(1) instead of
 * a memset of the whole table. Memory only grows.
 */
typedef struct cmap {
  uint32_t *slot_ent; /* entry number per slot */
  uint32_t *slot_gen; /* slot is live iff slot_gen == gen */
  size_t nslot;       /* power of two */
  uint32_t gen;
  uint32_t *key, *cnt; /* entries */
  size_t n, cap;
} cmap_t;

static void cmap_free(cmap_t *m) {
  free(m->slot_ent);
  free(m->slot_gen);
  free(m->key);
  free(m->cnt);
  memset(m, 0, sizeof *m);
}

static void cmap_clear(cmap_t *m) {
  m->n = 0;
  if (++m->gen == 0) { /* wrapped: stale stamps could look live */
    if (m->slot_gen) memset(m->slot_gen, 0, m->nslot * sizeof *m->slot_gen);
    m->gen = 1;
  }
}

static inline size_t slot_of(uint32_t key, size_t nslot) {
  return (size_t)((key * 0x9e3779b1u) >> 7) & (nslot - 1); /* spread clustered indexes */
}

static int cmap_grow(cmap_t *m) {
  size_t nslot = m->nslot ? m->nslot * 2 : 1024;
  uint32_t *se = malloc(nslot * sizeof *se), *sg = calloc(nslot, sizeof *sg);
  uint32_t *k = realloc(m->key, nslot / 2 * sizeof *k);
  if (k) m->key = k;
  uint32_t *c = realloc(m->cnt, nslot / 2 * sizeof *c);
  if (c) m->cnt = c;
  if (!se || !sg || !k || !c) {
    free(se);
    free(sg);
    return TD_ENOMEM;
  }
  m->cap = nslot / 2;
  free(m->slot_ent);
  free(m->slot_gen);
  m->slot_ent = se;
  m->slot_gen = sg;
  m->nslot = nslot;
  m->gen = 1;
  for (size_t e = 0; e < m->n; e++) {
    size_t s = slot_of(m->key[e], nslot);
    while (sg[s] == 1) s = (s + 1) & (nslot - 1);
    sg[s] = 1;
    se[s] = (uint32_t)e;
  }
  return 0;
}

static inline int cmap_add(cmap_t *m, uint32_t key) {
  if (m->n >= m->cap && cmap_grow(m)) return TD_ENOMEM; /* load <= 1/2 */
  size_t s = slot_of(key, m->nslot);
  while (m->slot_gen[s] == m->gen) {
    uint32_t e = m->slot_ent[s];
    if (m->key[e] == key) {
      m->cnt[e]++;
      return 0;
    }
    s = (s + 1) & (m->nslot - 1);
  }
  m->slot_gen[s] = m->gen;
  m->slot_ent[s] = (uint32_t)m->n;
  m->key[m->n] = key;
  m->cnt[m->n++] = 1;
  return 0;
}

struct td_fscratch {
  cmap_t counts;
  td_fvec_t ctx;    /* the weighted context block of ... */
  long ctx_of;      /* ... this passage of the current call, or -1 */
  td_fvec_t tmp;    /* td_features_doc_df's vector */
  td_fvec_t sortbuf; /* radix sort's second buffer */
  /* Neighbour blocks: every passage's token hashes (full 32 bits, in text
   * order), passage i's at th[toff[i] .. toff[i+1]); pre = filled this call. */
  uint32_t *th;
  size_t nth, capth;
  size_t *toff;
  size_t captoff;
  int pre;
  td_fvec_t docv; /* the weighted doc block of the current call ... */
  int doc_ok;     /* ... once computed */
  /* td_features_doc_dot with l2-tokens: each passage's distinct token
   * hashes and their counts, passage i's at uh/uc[uoff[i] .. uoff[i+1]) */
  uint32_t *uh, *uc;
  size_t capu;
  size_t *uoff;
  size_t capuoff;
  /* and the partial sums (nt dot products, then the squared norm) of the
   * passage being scored, of the cached heading block and of the doc block */
  double *acc, *ctxacc, *docacc;
  size_t capacc;
};

td_fscratch_t *td_fscratch_new(void) {
  pthread_once(&sublinear_once, sublinear_init); /* every featurization has a scratch */
  td_fscratch_t *s = calloc(1, sizeof *s);
  if (s) s->ctx_of = -1;
  return s;
}

void td_fscratch_free(td_fscratch_t **sp) {
  if (!sp || !*sp) return;
  td_fscratch_t *s = *sp;
  cmap_free(&s->counts);
  td_fvec_free(&s->ctx);
  td_fvec_free(&s->tmp);
  td_fvec_free(&s->sortbuf);
  free(s->th);
  free(s->toff);
  td_fvec_free(&s->docv);
  free(s->uh);
  free(s->uc);
  free(s->uoff);
  free(s->acc);
  TD_FREE(*sp);
}

/* ---- featurization ---- */

typedef struct emit_ud {
  cmap_t *m;
  uint32_t seed, keymask; /* count by keymask & hash: the index, or the whole hash */
  int pairs, have_prev, oom;
  uint32_t prev;
} emit_ud_t;

/* Hashes the plugin's bytes in place: nothing is copied per token. */
static int count_token(void *ud, const char *tok, size_t len) {
  emit_ud_t *u = ud;
  if (!len) return 0;
  uint32_t h = hash32(tok, len, u->seed);
  if (cmap_add(u->m, h & u->keymask)) goto oom;
  if (u->pairs) {
    if (u->have_prev && cmap_add(u->m, pair_hash(u->prev, h, u->seed) & u->keymask)) goto oom;
    u->prev = h;
    u->have_prev = 1;
  }
  return 0;
oom:
  u->oom = 1;
  return TD_ENOMEM;
}

/* What a block counts by: the bucket index (norm l2) or the whole 32-bit
 * hash (l2-tokens: two tokens that share a bucket stay two features until
 * finish() adds them up). */
static inline uint32_t key_mask(const td_feat_config_t *c) {
  return c->norm == TD_NORM_L2 ? c->buckets - 1 : UINT32_MAX;
}

/* A block's counted keys -> tf (1 + ln tf when sublinear) x idf x scale,
 * appended unsorted to v. */
static int emit_counts(const td_feat_config_t *c, const double *idf, const cmap_t *m,
                       double scale, td_fvec_t *v, td_err_t *err) {
  if (m->n && fvec_reserve(v, m->n)) return td_err_set(err, TD_ENOMEM, "out of memory");
  uint32_t mask = c->buckets - 1;
  for (size_t e = 0; e < m->n; e++) {
    uint32_t index = m->key[e] & mask;
    double tf = c->sublinear_tf ? sublinear(m->cnt[e]) : m->cnt[e];
    if (c->use_idf && idf) tf *= idf[index];
    v->items[v->count++] = (td_feat_t){index, tf * scale};
  }
  return 0;
}

/* One block (body or context) of text, counted and appended to v. */
static int add_block(const td_feat_config_t *c, const td_tokenizer_t *tok, const double *idf,
                     const td_span_t *sp, uint32_t seed, double scale, td_fscratch_t *s,
                     td_fvec_t *v, td_err_t *err) {
  cmap_t *m = &s->counts;
  cmap_clear(m);
  emit_ud_t u = {.m = m, .seed = seed, .keymask = key_mask(c), .pairs = c->ngram_max >= 2};
  if (sp->len) {
    int rc = td_tokenizer_run(tok, sp->s, sp->len, count_token, &u, err);
    if (u.oom) return td_err_set(err, TD_ENOMEM, "out of memory");
    if (rc) return rc;
  }
  return emit_counts(c, idf, m, scale, v, err);
}

/* In-place sort by index. Not qsort: glibc's qsort mallocs a merge buffer
 * for arrays over 1 KiB, and this runs once per passage. Quicksort with a
 * median of three, recursing into the smaller side (O(log n) stack), and
 * insertion sort for short ranges. */
static void sort_feats(td_feat_t *a, size_t n) {
  while (n > 16) {
    size_t mid = n / 2;
    uint32_t x = a[0].index, y = a[mid].index, z = a[n - 1].index;
    uint32_t pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
    size_t i = 0, j = n - 1;
    for (;;) {
      while (a[i].index < pivot) i++;
      while (a[j].index > pivot) j--;
      if (i >= j) break;
      td_feat_t t = a[i];
      a[i++] = a[j];
      a[j--] = t;
    }
    /* [0, j] <= pivot <= [j+1, n) */
    size_t left = j + 1;
    if (left < n - left) {
      sort_feats(a, left);
      a += left;
      n -= left;
    } else {
      sort_feats(a + left, n - left);
      n = left;
    }
  }
  for (size_t i = 1; i < n; i++) {
    td_feat_t t = a[i];
    size_t j = i;
    for (; j > 0 && a[j - 1].index > t.index; j--) a[j] = a[j - 1];
    a[j] = t;
  }
}

/* Sort, sum entries that share an index (body and context can collide),
 * drop zeros, L2-normalize. */
/*
 * Sorts by index, stably, through the scratch buffer: one counting pass on
 * the top log2(n) bits of the index into about n buckets, then an insertion
 * sort that only moves an entry within its bucket (hashed indexes spread
 * evenly: a bucket holds about one). Linear, like the two-pass LSD radix
 * sort it replaces, with the same (stable) result, but its fixed cost
 * scales with n instead of 2 x 512 counters: sorting was a tenth of
 * classifying a passage (bench/NOTES.md). Short vectors, or a failed
 * buffer growth, take sort_feats.
 */
static void sort_by_index(td_feat_t *a, size_t n, uint32_t buckets, td_fscratch_t *s) {
  if (n <= 48) {
    sort_feats(a, n);
    return;
  }
  if (fvec_reserve(&s->sortbuf, n)) {
    sort_feats(a, n);
    return;
  }
  unsigned bits = 1, b = 1;
  while (bits < 32 && (1u << bits) < buckets) bits++;
  while (b < 11 && ((size_t)1 << b) < n) b++;
  if (b > bits) b = bits;
  unsigned shift = bits - b;
  uint32_t count[1u << 11];
  memset(count, 0, ((size_t)1 << b) * sizeof *count);
  for (size_t i = 0; i < n; i++) count[a[i].index >> shift]++;
  uint32_t sum = 0;
  for (uint32_t d = 0; d < (1u << b); d++) {
    uint32_t c = count[d];
    count[d] = sum;
    sum += c;
  }
  td_feat_t *t = s->sortbuf.items;
  for (size_t i = 0; i < n; i++) t[count[a[i].index >> shift]++] = a[i];
  for (size_t i = 1; i < n; i++) {
    td_feat_t x = t[i];
    size_t j = i;
    for (; j > 0 && t[j - 1].index > x.index; j--) t[j] = t[j - 1];
    t[j] = x;
  }
  memcpy(a, t, n * sizeof *a);
}

static void finish(const td_feat_config_t *c, td_fvec_t *v, td_fscratch_t *s) {
  if (!v->count) return;
  /* l2-tokens: the norm of the token features, before they are merged. */
  double ss_tokens = 0;
  if (c->norm == TD_NORM_L2_TOKENS)
    for (size_t r = 0; r < v->count; r++) ss_tokens += v->items[r].value * v->items[r].value;
  sort_by_index(v->items, v->count, c->buckets, s);
  /* One pass merges entries that share an index and drops the ones that
   * sum to zero, accumulating the squares as each index is closed: the
   * same values, sums in the same order, as merging, then filtering, in
   * two passes (one pass less over the vector; bench/NOTES.md). */
  td_feat_t *it = v->items;
  size_t z = 0, n = v->count;
  double ss = 0;
  for (size_t r = 0; r < n;) {
    td_feat_t f = it[r++];
    while (r < n && it[r].index == f.index) f.value += it[r++].value;
    if (f.value == 0) continue;
    ss += f.value * f.value;
    it[z++] = f;
  }
  v->count = z;
  if (c->norm == TD_NORM_L2_TOKENS) ss = ss_tokens;
  if (ss > 0) {
    double inv = 1.0 / sqrt(ss);
    for (size_t r = 0; r < z; r++) v->items[r].value *= inv;
  }
}

/* ---- neighbour blocks: token hashes kept per passage ---- */

static inline uint32_t block_index(uint32_t h, uint32_t salt, uint32_t mask) {
  return fmix32(h ^ salt) & mask;
}

typedef struct keep_ud {
  td_fscratch_t *s;
  uint32_t seed;
  int oom;
} keep_ud_t;

static int keep_hash(void *ud, const char *tok, size_t len) {
  keep_ud_t *u = ud;
  td_fscratch_t *s = u->s;
  if (!len) return 0;
  if (s->nth == s->capth) {
    size_t cap = s->capth ? s->capth * 2 : 1024;
    uint32_t *p = realloc(s->th, cap * sizeof *p);
    if (!p) {
      u->oom = 1;
      return TD_ENOMEM;
    }
    s->th = p;
    s->capth = cap;
  }
  s->th[s->nth++] = hash32(tok, len, u->seed);
  return 0;
}

/* Neighbour and doc blocks reuse each passage's token hashes; a lone
 * passage has no neighbours, and its body is counted straight from the
 * tokenizer (the same features: add_block counts as add_hashed_range). */
static int needs_prepass(const td_feat_config_t *c, size_t n) {
  return (c->neighbor_weight > 0 && n > 1) || c->doc_weight > 0;
}

/* Tokenizes every passage once and keeps its token hashes (s->th, s->toff). */
static int prepass(const td_feat_config_t *c, const td_tokenizer_t *tok, const td_span_t *spans,
                   size_t n, td_fscratch_t *s, td_err_t *err) {
  s->pre = 0;
  s->nth = 0;
  if (n + 1 > s->captoff) {
    size_t *p = realloc(s->toff, (n + 1) * sizeof *p);
    if (!p) return td_err_set(err, TD_ENOMEM, "out of memory");
    s->toff = p;
    s->captoff = n + 1;
  }
  keep_ud_t u = {.s = s, .seed = c->seed};
  for (size_t i = 0; i < n; i++) {
    s->toff[i] = s->nth;
    if (!spans[i].len) continue;
    int rc = td_tokenizer_run(tok, spans[i].s, spans[i].len, keep_hash, &u, err);
    if (u.oom) return td_err_set(err, TD_ENOMEM, "out of memory");
    if (rc) return td_err_prefix(err, "passage %zu", i);
  }
  s->toff[n] = s->nth;
  s->pre = 1;
  return 0;
}

/*
 * add_block over the kept hashes of passages [p0, p1) counted together.
 * salt 0: the body block (one passage),
 * exactly what add_block computes from the text (index h & mask, plus pairs
 * when ngram_max == 2); otherwise a neighbour block (index
 * block_index(h, salt), tokens only).
 */
static int add_hashed_range(const td_feat_config_t *c, const double *idf, size_t p0, size_t p1,
                            uint32_t salt, double scale, td_fscratch_t *s, td_fvec_t *v,
                            td_err_t *err) {
  cmap_t *m = &s->counts;
  cmap_clear(m);
  uint32_t mask = key_mask(c);
  int pairs = !salt && c->ngram_max >= 2;
  for (size_t q = s->toff[p0]; q < s->toff[p1]; q++) {
    uint32_t h = s->th[q];
    if (cmap_add(m, salt ? block_index(h, salt, mask) : h & mask))
      return td_err_set(err, TD_ENOMEM, "out of memory");
    if (pairs && q > s->toff[p0] && cmap_add(m, pair_hash(s->th[q - 1], h, c->seed) & mask))
      return td_err_set(err, TD_ENOMEM, "out of memory");
  }
  return emit_counts(c, idf, m, scale, v, err);
}

static int add_hashed_block(const td_feat_config_t *c, const double *idf, size_t p, uint32_t salt,
                            double scale, td_fscratch_t *s, td_fvec_t *v, td_err_t *err) {
  return add_hashed_range(c, idf, p, p + 1, salt, scale, s, v, err);
}

/*
 * The blocks shared by several passages of a call, each made once: the
 * whole-document block (s->docv) and the block of the heading a run of
 * passages sits under (s->ctx, for passage s->ctx_of). *blk is the block,
 * or NULL when the passage has none; *fresh says it was made by this call,
 * so a caller can derive its own cache from it.
 */
static int doc_block(const td_feat_config_t *c, const double *idf, size_t n, td_fscratch_t *s,
                     const td_fvec_t **blk, int *fresh, td_err_t *err) {
  *blk = NULL;
  *fresh = 0;
  if (!s->pre || !(c->doc_weight > 0) || n == 0) return 0;
  if (!s->doc_ok) {
    s->docv.count = 0;
    if (add_hashed_range(c, idf, 0, n, DOC_SALT, c->doc_weight, s, &s->docv, err))
      return td_err_prefix(err, "document block");
    s->doc_ok = 1;
    *fresh = 1;
  }
  *blk = &s->docv;
  return 0;
}

static int heading_block(const td_feat_config_t *c, const td_tokenizer_t *tok, const double *idf,
                         const td_span_t *spans, const td_passage_t *ps, size_t n, size_t i,
                         td_fscratch_t *s, const td_fvec_t **blk, int *fresh, td_err_t *err) {
  *blk = NULL;
  *fresh = 0;
  if (!ps || !(c->context_weight > 0) || ps[i].context < 0) return 0;
  long ctx = ps[i].context;
  if ((size_t)ctx >= n)
    return td_err_set(err, TD_EINVAL, "passage %zu: context %ld out of range (%zu passages)", i,
                      ctx, n);
  /* Passages under one heading share its block: tokenize it once. */
  if (s->ctx_of != ctx) {
    s->ctx_of = -1;
    s->ctx.count = 0;
    if (add_block(c, tok, idf, &spans[ctx], c->seed ^ CTX_SALT, c->context_weight, s, &s->ctx,
                  err))
      return td_err_prefix(err, "passage %zu: heading %ld", i, ctx);
    s->ctx_of = ctx;
    *fresh = 1;
  }
  *blk = &s->ctx;
  return 0;
}

static int append_block(td_fvec_t *v, const td_fvec_t *b, td_err_t *err) {
  if (!b || !b->count) return 0;
  if (fvec_reserve(v, b->count)) return td_err_set(err, TD_ENOMEM, "out of memory");
  memcpy(v->items + v->count, b->items, b->count * sizeof *v->items);
  v->count += b->count;
  return 0;
}

static int passage_vec(const td_feat_config_t *c, const td_tokenizer_t *tok, const double *idf,
                       const td_span_t *spans, const td_passage_t *ps, size_t n, size_t i,
                       td_fscratch_t *s, td_fvec_t *v, td_err_t *err) {
  v->count = 0;
  int rc = s->pre ? add_hashed_block(c, idf, i, 0, 1.0, s, v, err)
                  : add_block(c, tok, idf, &spans[i], c->seed, 1.0, s, v, err);
  if (rc) return td_err_prefix(err, "passage %zu", i);
  if (s->pre && c->neighbor_weight > 0) {
    if (i > 0 && (rc = add_hashed_block(c, idf, i - 1, PREV_SALT, c->neighbor_weight, s, v, err)))
      return td_err_prefix(err, "passage %zu: previous passage", i);
    if (i + 1 < n &&
        (rc = add_hashed_block(c, idf, i + 1, NEXT_SALT, c->neighbor_weight, s, v, err)))
      return td_err_prefix(err, "passage %zu: next passage", i);
  }
  const td_fvec_t *blk;
  int fresh;
  if ((rc = doc_block(c, idf, n, s, &blk, &fresh, err)) || (rc = append_block(v, blk, err)) ||
      (rc = heading_block(c, tok, idf, spans, ps, n, i, s, &blk, &fresh, err)) ||
      (rc = append_block(v, blk, err)))
    return rc;
  finish(c, v, s);
  return 0;
}

static int check_args(const td_feat_config_t *c, const td_tokenizer_t *tok, const td_span_t *spans,
                      size_t n, td_fscratch_t *s, const void *out, td_err_t *err) {
  if (!c || !tok || !s || (n && (!spans || !out)))
    return td_err_set(err, TD_EINVAL, "features: bad arguments");
  if (c->buckets < 2 || (c->buckets & (c->buckets - 1)))
    return td_err_set(err, TD_EINVAL, "features: buckets %u is not a power of two", c->buckets);
  for (size_t i = 0; i < n; i++)
    if (spans[i].len && !spans[i].s)
      return td_err_set(err, TD_EINVAL, "features: passage %zu has no text", i);
  return 0;
}

int td_features_doc(const td_feat_config_t *c, const td_tokenizer_t *tok, const double *idf,
                    const td_span_t *spans, const td_passage_t *ps, size_t n, td_fscratch_t *s,
                    td_fvec_t *out, td_err_t *err) {
  int rc = check_args(c, tok, spans, n, s, out, err);
  if (rc) return rc;
  s->ctx_of = -1; /* the caches never outlive a call: spans change */
  s->pre = s->doc_ok = 0;
  if (needs_prepass(c, n)) rc = prepass(c, tok, spans, n, s, err);
  for (size_t i = 0; !rc && i < n; i++)
    if ((rc = passage_vec(c, tok, idf, spans, ps, n, i, s, &out[i], err))) break;
  s->ctx_of = -1;
  s->pre = s->doc_ok = 0;
  return rc;
}

int td_features_doc_df(const td_feat_config_t *c, const td_tokenizer_t *tok,
                       const td_span_t *spans, const td_passage_t *ps, size_t n,
                       td_fscratch_t *s, uint32_t *df, td_err_t *err) {
  int rc = check_args(c, tok, spans, n, s, df, err);
  if (rc) return rc;
  s->ctx_of = -1;
  s->pre = s->doc_ok = 0;
  if (needs_prepass(c, n)) rc = prepass(c, tok, spans, n, s, err);
  for (size_t i = 0; i < n && !rc; i++) {
    /* Without idf no value is zero, so the vector lists every index touched. */
    if ((rc = passage_vec(c, tok, NULL, spans, ps, n, i, s, &s->tmp, err))) break;
    for (size_t q = 0; q < s->tmp.count; q++)
      if (df[s->tmp.items[q].index] != UINT32_MAX) df[s->tmp.items[q].index]++;
  }
  s->ctx_of = -1;
  s->pre = s->doc_ok = 0;
  return rc;
}

/* ---- dot products block by block (norm l2-tokens) ----
 *
 * A passage's vector is the sum of its blocks' token features, divided by
 * the norm of those features. Its dot product with a weight column is so
 * the sum over blocks of each block's dot product, divided by the norm: no
 * block needs to be merged with another, sorted or stored. Each call adds a
 * block's part to acc[0..nt) and its squared norm to acc[nt].
 */

/* Themes up to this many are summed in registers (DOT_DISPATCH); up to
 * DOT_MAX_THEMES in a local array (td_features_doc_dot refuses more). */
#define DOT_REG_MAX 12
#define DOT_MAX_THEMES 64

/* Calls DOT_N(N) with a constant N for nt = 1..DOT_REG_MAX, and returns:
 * each sum then lives in a register. Larger nt falls through (to DOT_N(nt)). */
#define DOT_DISPATCH(nt)                                                                          \
  switch (nt) {                                                                                  \
  case 1: DOT_N(1); return;                                                                      \
  case 2: DOT_N(2); return;                                                                      \
  case 3: DOT_N(3); return;                                                                      \
  case 4: DOT_N(4); return;                                                                      \
  case 5: DOT_N(5); return;                                                                      \
  case 6: DOT_N(6); return;                                                                      \
  case 7: DOT_N(7); return;                                                                      \
  case 8: DOT_N(8); return;                                                                      \
  case 9: DOT_N(9); return;                                                                      \
  case 10: DOT_N(10); return;                                                                    \
  case 11: DOT_N(11); return;                                                                    \
  case 12: DOT_N(12); return;                                                                    \
  }

/* acc[k] += w[index][k] * value and acc[nt] += value^2 over the entries, in
 * their order (each acc[k] the same sum, bit for bit, as td_model_decision's
 * over the same entries when it starts at 0). */
static inline __attribute__((always_inline)) void
entries_dot_n(const td_feat_t *e, size_t m, const double *w, size_t nt, double *acc) {
  double a[DOT_MAX_THEMES + 1];
  for (size_t k = 0; k <= nt; k++) a[k] = acc[k];
  for (size_t i = 0; i < m; i++) {
    const double *row = w + (size_t)e[i].index * nt;
    double v = e[i].value;
    for (size_t k = 0; k < nt; k++) a[k] += row[k] * v;
    a[nt] += v * v;
  }
  for (size_t k = 0; k <= nt; k++) acc[k] = a[k];
}

static void entries_dot(const td_feat_t *e, size_t m, const double *w, size_t nt, double *acc) {
#define DOT_N(N) entries_dot_n(e, m, w, N, acc)
  DOT_DISPATCH(nt)
  DOT_N(nt);
#undef DOT_N
}

/* Passage p's distinct tokens as a block: the body (salt 0) or a neighbour
 * block, the same features add_hashed_range makes for it. Inlined with a
 * constant nt (distinct_dot), the sums stay in registers: through acc they
 * were a load and a store per multiply-add (acc may alias w). */
static inline __attribute__((always_inline)) void
distinct_dot_n(const td_feat_config_t *c, const double *idf, const td_fscratch_t *s, size_t p,
               uint32_t salt, double scale, const double *w, size_t nt, double *acc) {
  uint32_t mask = c->buckets - 1;
  double a[DOT_MAX_THEMES + 1];
  for (size_t k = 0; k <= nt; k++) a[k] = acc[k];
  for (size_t e = s->uoff[p]; e < s->uoff[p + 1]; e++) {
    uint32_t index = (salt ? fmix32(s->uh[e] ^ salt) : s->uh[e]) & mask;
    double v = c->sublinear_tf ? sublinear(s->uc[e]) : s->uc[e];
    if (c->use_idf && idf) v *= idf[index];
    v *= scale;
    const double *row = w + (size_t)index * nt;
    for (size_t k = 0; k < nt; k++) a[k] += row[k] * v;
    a[nt] += v * v;
  }
  for (size_t k = 0; k <= nt; k++) acc[k] = a[k];
}

static void distinct_dot(const td_feat_config_t *c, const double *idf, const td_fscratch_t *s,
                         size_t p, uint32_t salt, double scale, const double *w, size_t nt,
                         double *acc) {
#define DOT_N(N) distinct_dot_n(c, idf, s, p, salt, scale, w, N, acc)
  DOT_DISPATCH(nt)
  DOT_N(nt);
#undef DOT_N
}

/* Counts each passage's kept token hashes once (s->uh, s->uc, s->uoff): the
 * body and both neighbour blocks are made from that one list. */
static int distinct_pass(size_t n, td_fscratch_t *s, td_err_t *err) {
  if (n + 1 > s->capuoff) {
    size_t *p = realloc(s->uoff, (n + 1) * sizeof *p);
    if (!p) return td_err_set(err, TD_ENOMEM, "out of memory");
    s->uoff = p;
    s->capuoff = n + 1;
  }
  if (s->nth > s->capu) {
    uint32_t *h = realloc(s->uh, s->nth * sizeof *h);
    if (h) s->uh = h;
    uint32_t *k = h ? realloc(s->uc, s->nth * sizeof *k) : NULL;
    if (!k) return td_err_set(err, TD_ENOMEM, "out of memory");
    s->uc = k;
    s->capu = s->nth;
  }
  cmap_t *m = &s->counts;
  size_t nu = 0;
  for (size_t i = 0; i < n; i++) {
    s->uoff[i] = nu;
    cmap_clear(m);
    for (size_t q = s->toff[i]; q < s->toff[i + 1]; q++)
      if (cmap_add(m, s->th[q])) return td_err_set(err, TD_ENOMEM, "out of memory");
    memcpy(s->uh + nu, m->key, m->n * sizeof *s->uh);
    memcpy(s->uc + nu, m->cnt, m->n * sizeof *s->uc);
    nu += m->n;
  }
  s->uoff[n] = nu;
  return 0;
}

static int passage_dot(const td_feat_config_t *c, const td_tokenizer_t *tok, const double *idf,
                       const td_span_t *spans, const td_passage_t *ps, size_t n, size_t i,
                       const double *w, size_t nt, td_fscratch_t *s, double *out,
                       td_err_t *err) {
  double *acc = s->acc;
  memset(acc, 0, (nt + 1) * sizeof *acc);
  int rc = 0;
  if (s->pre && c->ngram_max < 2) {
    distinct_dot(c, idf, s, i, 0, 1.0, w, nt, acc);
  } else { /* pairs, or no kept hashes: the body as td_features_doc makes it */
    s->tmp.count = 0;
    rc = s->pre ? add_hashed_block(c, idf, i, 0, 1.0, s, &s->tmp, err)
                : add_block(c, tok, idf, &spans[i], c->seed, 1.0, s, &s->tmp, err);
    if (rc) return td_err_prefix(err, "passage %zu", i);
    entries_dot(s->tmp.items, s->tmp.count, w, nt, acc);
  }
  if (s->pre && c->neighbor_weight > 0) {
    if (i > 0) distinct_dot(c, idf, s, i - 1, PREV_SALT, c->neighbor_weight, w, nt, acc);
    if (i + 1 < n) distinct_dot(c, idf, s, i + 1, NEXT_SALT, c->neighbor_weight, w, nt, acc);
  }
  /* the shared blocks' sums are kept beside them, made when they are */
  const td_fvec_t *blk;
  int fresh;
  double *sums[2] = {s->docacc, s->ctxacc};
  for (int b = 0; b < 2; b++) {
    rc = b ? heading_block(c, tok, idf, spans, ps, n, i, s, &blk, &fresh, err)
           : doc_block(c, idf, n, s, &blk, &fresh, err);
    if (rc) return rc;
    if (!blk) continue;
    if (fresh) {
      memset(sums[b], 0, (nt + 1) * sizeof *acc);
      entries_dot(blk->items, blk->count, w, nt, sums[b]);
    }
    for (size_t k = 0; k <= nt; k++) acc[k] += sums[b][k];
  }
  double inv = acc[nt] > 0 ? 1.0 / sqrt(acc[nt]) : 0;
  for (size_t k = 0; k < nt; k++) out[k] = acc[k] * inv;
  return 0;
}

int td_features_doc_dot(const td_feat_config_t *c, const td_tokenizer_t *tok, const double *idf,
                        const td_span_t *spans, const td_passage_t *ps, size_t n, const double *w,
                        size_t nt, td_fscratch_t *s, double *out, td_err_t *err) {
  int rc = check_args(c, tok, spans, n, s, out, err);
  if (rc) return rc;
  if (n && (!w || !nt || nt > DOT_MAX_THEMES))
    return td_err_set(err, TD_EINVAL, "features: bad arguments");
  if (3 * (nt + 1) > s->capacc) {
    double *a = realloc(s->acc, 3 * (nt + 1) * sizeof *a);
    if (!a) return td_err_set(err, TD_ENOMEM, "out of memory");
    s->acc = a;
    s->capacc = 3 * (nt + 1);
  }
  s->ctxacc = s->acc + (nt + 1);
  s->docacc = s->acc + 2 * (nt + 1);
  s->ctx_of = -1;
  s->pre = s->doc_ok = 0;
  if (needs_prepass(c, n)) rc = prepass(c, tok, spans, n, s, err);
  if (c->norm == TD_NORM_L2_TOKENS) {
    if (!rc && s->pre) rc = distinct_pass(n, s, err);
    for (size_t i = 0; !rc && i < n; i++)
      rc = passage_dot(c, tok, idf, spans, ps, n, i, w, nt, s, out + i * nt, err);
  } else {
    /* l2: merging before the norm needs the vector; sums in index order */
    for (size_t i = 0; !rc && i < n; i++) {
      if ((rc = passage_vec(c, tok, idf, spans, ps, n, i, s, &s->tmp, err))) break;
      memset(s->acc, 0, (nt + 1) * sizeof *s->acc);
      entries_dot(s->tmp.items, s->tmp.count, w, nt, s->acc);
      memcpy(out + i * nt, s->acc, nt * sizeof *out);
    }
  }
  s->ctx_of = -1;
  s->pre = s->doc_ok = 0;
  return rc;
}

double td_features_idf(uint32_t df, size_t n_docs) {
  return log((1.0 + (double)n_docs) / (1.0 + (double)df)) + 1.0;
}

/* ---- explanations ---- */

typedef struct tok_rec {
  size_t off, len; /* in the byte buffer */
  uint32_t hash;   /* full hash, before masking */
} tok_rec_t;

typedef struct tok_set {
  td_buf_t bytes;
  tok_rec_t *recs;
  size_t n, cap;
  uint32_t *slots; /* record number + 1, 0 = empty */
  size_t nslot;
  uint32_t seed;
  int pairs, have_prev, oom;
  td_buf_t prev; /* the previous token's bytes (pairs) */
  uint32_t prev_hash;
} tok_set_t;

static const char *const block_names[TD_BLOCK_COUNT] = {"body", "heading", "prev", "next", "doc"};

const char *td_features_block_name(td_block_t b) {
  return (unsigned)b < TD_BLOCK_COUNT ? block_names[b] : "?";
}

long td_features_block_source(const td_feat_config_t *c, const td_passage_t *ps, size_t n,
                              size_t i, td_block_t b) {
  if (!c || i >= n) return -1;
  switch (b) {
  case TD_BLOCK_BODY: return (long)i;
  case TD_BLOCK_HEADING:
    return ps && c->context_weight > 0 && ps[i].context >= 0 && (size_t)ps[i].context < n
               ? ps[i].context : -1;
  case TD_BLOCK_PREV: return c->neighbor_weight > 0 && i > 0 ? (long)i - 1 : -1;
  case TD_BLOCK_NEXT: return c->neighbor_weight > 0 && i + 1 < n ? (long)i + 1 : -1;
  case TD_BLOCK_DOC: return c->doc_weight > 0 ? 0 : -1;
  default: return -1;
  }
}

static int set_grow(tok_set_t *t) {
  size_t nslot = t->nslot ? t->nslot * 2 : 256;
  uint32_t *sl = calloc(nslot, sizeof *sl);
  tok_rec_t *r = realloc(t->recs, nslot / 2 * sizeof *r);
  if (r) t->recs = r;
  if (!sl || !r) {
    free(sl);
    return TD_ENOMEM;
  }
  t->cap = nslot / 2;
  free(t->slots);
  t->slots = sl;
  t->nslot = nslot;
  for (size_t e = 0; e < t->n; e++) {
    size_t s = slot_of(t->recs[e].hash, nslot);
    while (sl[s]) s = (s + 1) & (nslot - 1);
    sl[s] = (uint32_t)e + 1;
  }
  return 0;
}

/* Adds bytes (a token, or "a b" for a pair) unless already present; *rec
 * gets its record number. */
static int set_add(tok_set_t *t, uint32_t hash, const char *a, size_t alen, const char *b,
                   size_t blen, size_t *rec) {
  size_t len = b ? alen + 1 + blen : alen;
  if (t->n >= t->cap && set_grow(t)) return TD_ENOMEM;
  size_t s = slot_of(hash, t->nslot);
  for (; t->slots[s]; s = (s + 1) & (t->nslot - 1)) {
    tok_rec_t *r = &t->recs[t->slots[s] - 1];
    if (r->hash != hash || r->len != len) continue;
    const char *have = t->bytes.data + r->off;
    if (memcmp(have, a, alen) == 0 &&
        (!b || (have[alen] == ' ' && memcmp(have + alen + 1, b, blen) == 0))) {
      *rec = t->slots[s] - 1;
      return 0;
    }
  }
  size_t off = t->bytes.len;
  if (td_buf_append(&t->bytes, a, alen) ||
      (b && (td_buf_append(&t->bytes, " ", 1) || td_buf_append(&t->bytes, b, blen))))
    return TD_ENOMEM;
  t->recs[t->n] = (tok_rec_t){off, len, hash};
  t->slots[s] = (uint32_t)t->n + 1;
  *rec = t->n++;
  return 0;
}

static int collect_token(void *ud, const char *tok, size_t len) {
  tok_set_t *t = ud;
  if (!len) return 0;
  uint32_t h = td_features_hash(tok, len, t->seed);
  size_t rec;
  if (set_add(t, h, tok, len, NULL, 0, &rec)) goto oom;
  if (t->pairs) {
    if (t->have_prev && set_add(t, pair_hash(t->prev_hash, h, t->seed), t->prev.data,
                                t->prev.len, tok, len, &rec))
      goto oom;
    td_buf_reset(&t->prev);
    if (td_buf_append(&t->prev, tok, len)) goto oom;
    t->prev_hash = h;
    t->have_prev = 1;
  }
  return 0;
oom:
  t->oom = 1;
  return TD_ENOMEM;
}

int td_features_tokens(const td_feat_config_t *c, const td_tokenizer_t *tok, const char *text,
                       size_t len, td_token_index_cb cb, void *ud, td_err_t *err) {
  return td_features_block_tokens(c, tok, TD_BLOCK_BODY, text, len, cb, ud, err);
}

int td_features_block_tokens(const td_feat_config_t *c, const td_tokenizer_t *tok, td_block_t b,
                             const char *text, size_t len, td_token_index_cb cb, void *ud,
                             td_err_t *err) {
  if (!c || !tok || !cb || (len && !text) || (unsigned)b >= TD_BLOCK_COUNT)
    return td_err_set(err, TD_EINVAL, "features: bad arguments");
  /* As passage_vec hashes each block: the heading block with its own seed
   * (pairs too), the neighbours by re-mixing the body hash (tokens only). */
  uint32_t salt = b == TD_BLOCK_PREV ? PREV_SALT : b == TD_BLOCK_NEXT ? NEXT_SALT
                  : b == TD_BLOCK_DOC ? DOC_SALT : 0;
  tok_set_t t = {.seed = b == TD_BLOCK_HEADING ? c->seed ^ CTX_SALT : c->seed,
                 .pairs = !salt && c->ngram_max >= 2};
  td_buf_init(&t.bytes);
  td_buf_init(&t.prev);
  int rc = 0;
  if (len) {
    rc = td_tokenizer_run(tok, text, len, collect_token, &t, err);
    if (t.oom) rc = td_err_set(err, TD_ENOMEM, "out of memory");
  }
  uint32_t mask = c->buckets - 1;
  for (size_t e = 0; !rc && e < t.n; e++)
    rc = cb(ud, t.bytes.data + t.recs[e].off, t.recs[e].len,
            salt ? block_index(t.recs[e].hash, salt, mask) : t.recs[e].hash & mask);
  td_buf_free(&t.bytes);
  td_buf_free(&t.prev);
  free(t.recs);
  free(t.slots);
  return rc;
}
