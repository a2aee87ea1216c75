/*
 * Classify: passages -> features -> decision values -> calibrated scores,
 * and the one response shape (td_result_json) that themectl and the daemon
 * both print.
 */
#include "classify.h"
#include "jalloc.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unicode/utf8.h>

/* One token seen while explaining a passage: its label ("heading:党建")
 * and the feature index it hashes to. */
typedef struct expl_tok {
  size_t off, len; /* into td_scratch.tokbytes */
  uint32_t index;
  double contrib;
} expl_tok_t;

/* One non-zero feature of the passage being explained: the labels of every
 * token behind it, joined, and its part in the decision value. */
typedef struct expl_feat {
  size_t off, len; /* label, into td_scratch.tokbytes */
  uint32_t index;
  double value, contrib;
} expl_feat_t;

struct td_scratch {
  td_fscratch_t *fs;
  td_fvec_t *vecs; /* vecs[0..nvec) initialized, reused across documents */
  size_t nvec;
  int vecs_ok; /* vecs hold the last td_classify's passages (not scored from blocks) */
  /* explanations only */
  td_buf_t tokbytes;
  expl_tok_t *toks;
  size_t ntok, captok;
  int tok_oom;
  const char *tok_prefix; /* label prefix of the block being collected */
  expl_feat_t *feats;
  size_t nfeat, capfeat;
};

void td_classify_opts_default(td_classify_opts_t *o) {
  o->threshold = -1;
  o->top_k = 0;
  o->explain = 0;
  o->explain_k = 8;
  o->include_text = 0;
  o->max_passages = 0;
}

void td_result_init(td_result_t *r) {
  memset(r, 0, sizeof *r);
  td_passages_init(&r->passages);
}

void td_result_free(td_result_t *r) {
  td_passages_free(&r->passages);
  TD_FREE(r->spans);
  TD_FREE(r->dec);
  TD_FREE(r->scores);
  r->cap = r->ntheme = 0;
}

td_scratch_t *td_scratch_new(void) {
  td_scratch_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  if (!(s->fs = td_fscratch_new())) {
    free(s);
    return NULL;
  }
  td_buf_init(&s->tokbytes);
  return s;
}

void td_scratch_free(td_scratch_t **sp) {
  if (!sp || !*sp) return;
  td_scratch_t *s = *sp;
  td_fscratch_free(&s->fs);
  for (size_t i = 0; i < s->nvec; i++) td_fvec_free(&s->vecs[i]);
  free(s->vecs);
  td_buf_free(&s->tokbytes);
  free(s->toks);
  free(s->feats);
  free(s);
  *sp = NULL;
}

/* Grows the result to n passages of nt themes; keeps what it has when big
 * enough, so a worker's steady state allocates nothing. */
static int result_reserve(td_result_t *r, size_t n, size_t nt) {
  if (n <= r->cap && nt == r->ntheme) return 0;
  size_t cap = r->cap > n ? r->cap : n;
  if (cap < 16) cap = 16;
  while (cap < n) cap *= 2;
  if (cap > SIZE_MAX / sizeof(double) / (nt ? nt : 1)) return TD_ENOMEM;
  /* Until all three have grown, the arrays may be sized for neither the old
   * shape nor the new: a failure below must not leave cap and ntheme saying
   * they are (the next request, of the old shape, would write past them). */
  r->cap = r->ntheme = 0;
  td_span_t *sp = realloc(r->spans, cap * sizeof *sp);
  if (!sp) return TD_ENOMEM;
  r->spans = sp;
  double *d = realloc(r->dec, cap * nt * sizeof *d);
  if (!d) return TD_ENOMEM;
  r->dec = d;
  d = realloc(r->scores, cap * nt * sizeof *d);
  if (!d) return TD_ENOMEM;
  r->scores = d;
  r->cap = cap;
  r->ntheme = nt;
  return 0;
}

static int passages_reserve(td_passages_t *ps, size_t n) {
  if (n <= ps->cap) return 0;
  size_t cap = ps->cap ? ps->cap : 16;
  while (cap < n) cap *= 2;
  td_passage_t *p = realloc(ps->items, cap * sizeof *p);
  if (!p) return TD_ENOMEM;
  ps->items = p;
  ps->cap = cap;
  return 0;
}

static int scratch_vecs(td_scratch_t *s, size_t n) {
  if (n <= s->nvec) return 0;
  td_fvec_t *v = realloc(s->vecs, n * sizeof *v);
  if (!v) return TD_ENOMEM;
  s->vecs = v;
  for (size_t i = s->nvec; i < n; i++) td_fvec_init(&v[i]);
  s->nvec = n;
  return 0;
}

static int featurize(const td_model_t *m, const td_result_t *r, td_scratch_t *s, td_err_t *err) {
  size_t n = r->passages.count;
  s->vecs_ok = 0;
  if (scratch_vecs(s, n)) return td_err_set(err, TD_ENOMEM, "out of memory");
  int rc = td_features_doc(&m->feat, m->tok, m->feat.use_idf ? m->idf : NULL, r->spans,
                           r->passages.items, n, s->fs, s->vecs, err);
  s->vecs_ok = !rc;
  return rc;
}

static int limit_err(td_err_t *err, size_t n, size_t max) {
  return td_err_set(err, TD_ELIMIT, "document has %zu passages, the limit is %zu", n, max);
}

int td_classify(const td_model_t *m, const td_doc_t *doc, const td_classify_opts_t *o,
                td_scratch_t *s, td_result_t *r, td_err_t *err) {
  td_classify_opts_t def;
  if (!o) {
    td_classify_opts_default(&def);
    o = &def;
  }
  if (!m || m->magic != TD_MODEL_MAGIC || !doc || !s || !r)
    return td_err_set(err, TD_EINVAL, "td_classify: bad arguments");
  size_t nt = m->ntheme, n;
  int rc;
  td_passages_reset(&r->passages);

  if (doc->text) {
    size_t bad = 0;
    if (td_text_check_utf8(doc->text, doc->len, &bad, NULL))
      return td_err_set(err, TD_EUTF8, "invalid UTF-8 at byte %zu", bad);
    if ((rc = td_text_split(doc->text, doc->len, &m->split, &r->passages, err))) return rc;
    n = r->passages.count;
    if (o->max_passages && n > o->max_passages) return limit_err(err, n, o->max_passages);
    if (result_reserve(r, n, nt)) return td_err_set(err, TD_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
      td_passage_t *p = &r->passages.items[i];
      r->spans[i].s = doc->text + p->start;
      r->spans[i].len = p->end - p->start;
      p->no_words = !td_text_has_words(r->spans[i].s, r->spans[i].len);
    }
  } else {
    n = doc->npassages;
    if (n && !doc->passages) return td_err_set(err, TD_EINVAL, "td_classify: no passages");
    if (o->max_passages && n > o->max_passages) return limit_err(err, n, o->max_passages);
    if (result_reserve(r, n, nt) || passages_reserve(&r->passages, n))
      return td_err_set(err, TD_ENOMEM, "out of memory");
    /* Offsets as if the passages were one text joined by "\n", so a client
     * sees the same offsets whichever form it sent. */
    size_t b = 0, c = 0;
    for (size_t i = 0; i < n; i++) {
      const td_span_t *sp = &doc->passages[i];
      size_t bad = 0;
      if (sp->len && !sp->s) return td_err_set(err, TD_EINVAL, "passage %zu: no text", i);
      if (td_text_check_utf8(sp->s ? sp->s : "", sp->len, &bad, NULL))
        return td_err_set(err, TD_EUTF8, "passage %zu: invalid UTF-8 at byte %zu", i, bad);
      size_t nc = td_text_count_chars(sp->s ? sp->s : "", sp->len);
      td_passage_t *p = &r->passages.items[i];
      p->start = b;
      p->end = b + sp->len;
      p->cstart = c;
      p->cend = c + nc;
      p->is_heading = td_text_is_heading(sp->s ? sp->s : "", sp->len, m->split.heading_chars);
      p->context = -1;
      p->no_words = !td_text_has_words(sp->s ? sp->s : "", sp->len);
      r->spans[i] = *sp;
      b += sp->len + 1;
      c += nc + 1;
    }
    r->passages.count = n;
    td_text_link_headings(r->passages.items, n);
  }

  /* A linear model is scored block by block, without the vectors (about a
   * third of an article passage's work: bench/NOTES.md); explanations need
   * them, and td_explain makes them when they are not there. */
  if (m->linear && m->w && !o->explain) {
    s->vecs_ok = 0;
    if ((rc = td_features_doc_dot(&m->feat, m->tok, m->feat.use_idf ? m->idf : NULL, r->spans,
                                  r->passages.items, n, m->w, nt, s->fs, r->dec, err)))
      return rc;
    for (size_t i = 0; i < n; i++) {
      double *dec = r->dec + i * nt, *sc = r->scores + i * nt;
      for (size_t k = 0; k < nt; k++) {
        dec[k] += m->bias[k];
        sc[k] = td_model_score(&m->themes[k], dec[k]);
      }
    }
    return 0;
  }
  if ((rc = featurize(m, r, s, err))) return rc;
  for (size_t i = 0; i < n; i++) {
    double *dec = r->dec + i * nt, *sc = r->scores + i * nt;
    td_model_decision(m, &s->vecs[i], dec);
    for (size_t k = 0; k < nt; k++) sc[k] = td_model_score(&m->themes[k], dec[k]);
  }
  return 0;
}

/* Highest score wins; ties go to the earlier theme. */
static size_t argmax(const double *sc, size_t nt) {
  size_t best = 0;
  for (size_t k = 1; k < nt; k++)
    if (sc[k] > sc[best]) best = k;
  return best;
}

static double theme_threshold(const td_model_t *m, const td_classify_opts_t *o, size_t k) {
  return o->threshold >= 0 ? o->threshold : m->themes[k].threshold;
}

int td_result_tagged(const td_model_t *m, const td_classify_opts_t *o, const td_result_t *r,
                     size_t i, size_t k) {
  size_t nt = m->ntheme;
  const double *sc = r->scores + i * nt;
  /* No letter or digit of its own: what scores it has are its heading's and
   * neighbours' (found in review: "。" under 发展集体经济 was industry). */
  if (r->passages.items[i].no_words) return 0;
  if (m->multiclass) /* exactly one class per passage; a class named `other` means none */
    return argmax(sc, nt) == k && strcmp(m->themes[k].name, "other") != 0;
  if (!(sc[k] >= theme_threshold(m, o, k))) return 0;
  if (o->top_k <= 0) return 1;
  int better = 0; /* themes over threshold ranked above k */
  for (size_t j = 0; j < nt; j++) {
    if (j == k || !(sc[j] >= theme_threshold(m, o, j))) continue;
    if (sc[j] > sc[k] || (sc[j] == sc[k] && j < k)) better++;
  }
  return better < o->top_k;
}

static double round4(double x) { return round(x * 1e4) / 1e4; }

/* ------------------------------------------------------------------------ */
/* Explanations                                                             */

static int collect_token(void *ud, const char *tok, size_t len, uint32_t index) {
  td_scratch_t *s = ud;
  if (s->ntok == s->captok) {
    size_t cap = s->captok ? 2 * s->captok : 64;
    expl_tok_t *t = realloc(s->toks, cap * sizeof *t);
    if (!t) {
      s->tok_oom = 1;
      return 1;
    }
    s->toks = t;
    s->captok = cap;
  }
  size_t off = s->tokbytes.len;
  if ((s->tok_prefix && td_buf_append(&s->tokbytes, s->tok_prefix, strlen(s->tok_prefix))) ||
      td_buf_append(&s->tokbytes, tok, len)) {
    s->tok_oom = 1;
    return 1;
  }
  s->toks[s->ntok++] = (expl_tok_t){off, s->tokbytes.len - off, index, 0};
  return 0;
}

static int by_index(const void *a, const void *b) {
  const expl_tok_t *x = a, *y = b;
  if (x->index != y->index) return x->index < y->index ? -1 : 1;
  return x->off < y->off ? -1 : x->off > y->off; /* blocks, then text order */
}

static int by_contrib_desc(const void *a, const void *b) {
  const expl_feat_t *x = a, *y = b;
  if (x->contrib != y->contrib) return x->contrib > y->contrib ? -1 : 1;
  return x->off < y->off ? -1 : x->off > y->off; /* stable: body first, text order */
}

/*
 * Labels every non-zero feature of passage i (s->vecs[i]) into s->feats,
 * sorted by index: the tokens of each block that feeds the passage (body,
 * heading, neighbours), with the block's name as a prefix except for the
 * body ("书记", "heading:队伍", "prev:产业"); tokens that share a bucket are
 * joined by " / ". Leaves contrib at 0.
 */
static int label_features(const td_model_t *m, const td_result_t *r, size_t i, td_scratch_t *s,
                          td_err_t *err) {
  size_t n = r->passages.count;
  s->ntok = 0;
  s->nfeat = 0;
  s->tok_oom = 0;
  td_buf_reset(&s->tokbytes);
  char prefix[32];
  for (int b = 0; b < TD_BLOCK_COUNT; b++) {
    long src = td_features_block_source(&m->feat, r->passages.items, n, i, (td_block_t)b);
    if (src < 0) continue;
    snprintf(prefix, sizeof prefix, "%s:", td_features_block_name((td_block_t)b));
    /* the doc block is fed by every passage of the document */
    size_t last = b == TD_BLOCK_DOC ? n - 1 : (size_t)src;
    for (size_t p = (size_t)src; p <= last; p++) {
      s->tok_prefix = b == TD_BLOCK_BODY ? NULL : prefix;
      int rc = td_features_block_tokens(&m->feat, m->tok, (td_block_t)b, r->spans[p].s,
                                        r->spans[p].len, collect_token, s, err);
      s->tok_prefix = NULL;
      if (s->tok_oom) return td_err_set(err, TD_ENOMEM, "out of memory");
      if (rc) return rc;
    }
  }
  qsort(s->toks, s->ntok, sizeof *s->toks, by_index);
  const td_fvec_t *x = &s->vecs[i];
  if (x->count > s->capfeat) {
    expl_feat_t *f = realloc(s->feats, x->count * sizeof *f);
    if (!f) return td_err_set(err, TD_ENOMEM, "out of memory");
    s->feats = f;
    s->capfeat = x->count;
  }
  size_t t = 0;
  for (size_t q = 0; q < x->count; q++) {
    uint32_t idx = x->items[q].index;
    while (t < s->ntok && s->toks[t].index < idx) t++;
    size_t off = s->tokbytes.len, need = 24;
    for (size_t u = t; u < s->ntok && s->toks[u].index == idx; u++) need += s->toks[u].len + 3;
    /* Reserved up front, so the appends below never move the bytes they copy. */
    int bad = td_buf_reserve(&s->tokbytes, need);
    for (size_t u = t; !bad && u < s->ntok && s->toks[u].index == idx; u++) {
      const char *lab = s->tokbytes.data + s->toks[u].off;
      size_t len = s->toks[u].len, dup = 0;
      /* the same token from several passages (doc block) is named once */
      for (size_t w = t; w < u && !dup; w++)
        dup = s->toks[w].len == len && !memcmp(s->tokbytes.data + s->toks[w].off, lab, len);
      if (dup) continue;
      if (s->tokbytes.len > off) bad |= td_buf_append(&s->tokbytes, " / ", 3);
      bad |= td_buf_append(&s->tokbytes, lab, len);
    }
    if (!bad && s->tokbytes.len == off) { /* no token behind it: cannot happen, but say so */
      char tmp[24];
      int len = snprintf(tmp, sizeof tmp, "#%u", idx);
      bad |= td_buf_append(&s->tokbytes, tmp, (size_t)len);
    }
    if (bad) return td_err_set(err, TD_ENOMEM, "out of memory");
    s->feats[s->nfeat++] =
        (expl_feat_t){off, s->tokbytes.len - off, idx, x->items[q].value, 0};
  }
  return 0;
}

int td_explain(const td_model_t *m, const td_result_t *r, size_t i, size_t k, td_scratch_t *s,
               td_contrib_cb cb, void *ud, td_err_t *err) {
  if (!m || m->magic != TD_MODEL_MAGIC || !r || !s || !cb)
    return td_err_set(err, TD_EINVAL, "td_explain: bad arguments");
  if (!m->linear)
    return td_err_set(err, TD_EINVAL, "explanations need a linear model; this bundle's kernel is not linear");
  if (i >= r->passages.count || k >= m->ntheme)
    return td_err_set(err, TD_EINVAL, "td_explain: passage %zu or theme %zu out of range", i, k);
  int rc = s->vecs_ok && i < s->nvec ? 0 : featurize(m, r, s, err);
  if (!rc) rc = label_features(m, r, i, s, err);
  size_t nt = m->ntheme;
  for (size_t q = 0; !rc && q < s->nfeat; q++) {
    expl_feat_t *f = &s->feats[q];
    f->contrib = m->w[(size_t)f->index * nt + k] * f->value;
    td_contrib_t c = {s->tokbytes.data + f->off, f->len, f->index, f->value, f->contrib};
    rc = cb(ud, &c);
  }
  return rc;
}

/*
 * A token's text as a JSON string. Plugins are to emit UTF-8, but the host
 * hashes whatever bytes they give; a token that is not valid UTF-8 (which
 * jansson refuses) is shown with U+FFFD for each bad sequence rather than
 * failing the whole answer. NULL: out of memory.
 */
static json_t *token_string(const char *t, size_t len) {
  json_t *j = json_stringn(t, len);
  if (j || len > INT32_MAX) return j;
  char *fix = malloc(3 * len + 1), *o = fix;
  if (!fix) return NULL;
  const uint8_t *p = (const uint8_t *)t;
  for (int32_t i = 0, n = (int32_t)len; i < n;) {
    int32_t at = i;
    UChar32 c;
    U8_NEXT(p, i, n, c);
    if (c < 0) {
      memcpy(o, "\xef\xbf\xbd", 3); /* U+FFFD */
      o += 3;
    } else {
      memcpy(o, t + at, (size_t)(i - at));
      o += i - at;
    }
  }
  j = json_stringn(fix, (size_t)(o - fix));
  free(fix);
  return j;
}

/*
 * The contribution of a feature to theme k is w[index][k] * x[index]: exact
 * for a linear model (dec_k is the sum of them all plus the bias; td_explain
 * lists them all). The response keeps the explain_k largest positive ones.
 */
static int explain_passage(const td_model_t *m, const td_classify_opts_t *o, const td_result_t *r,
                           size_t i, const size_t *tagged, size_t ntag, td_scratch_t *s,
                           json_t *pobj) {
  td_err_t err;
  td_err_clear(&err);
  int rc = label_features(m, r, i, s, &err);
  if (rc == TD_ENOMEM) return rc;
  if (rc) return json_object_set_new(pobj, "explain_error", json_string(err.msg)) ? TD_ENOMEM : 0;
  json_t *ex = json_object();
  if (!ex || json_object_set_new(pobj, "explain", ex)) return TD_ENOMEM;
  size_t nt = m->ntheme;
  int k_max = o->explain_k > 0 ? o->explain_k : 8;
  for (size_t t = 0; t < ntag; t++) {
    size_t k = tagged[t];
    for (size_t j = 0; j < s->nfeat; j++)
      s->feats[j].contrib = m->w[(size_t)s->feats[j].index * nt + k] * s->feats[j].value;
    qsort(s->feats, s->nfeat, sizeof *s->feats, by_contrib_desc);
    json_t *arr = json_array();
    if (!arr || json_object_set_new(ex, m->themes[k].name, arr)) return TD_ENOMEM;
    for (size_t j = 0; j < s->nfeat && (int)j < k_max; j++) {
      /* only what argued for the theme, and visibly (weights print rounded) */
      if (!(round4(s->feats[j].contrib) > 0)) break;
      json_t *e = json_object();
      if (!e || json_array_append_new(arr, e) ||
          json_object_set_new_nocheck(e, "token", token_string(s->tokbytes.data + s->feats[j].off,
                                                               s->feats[j].len)) ||
          json_object_set_new_nocheck(e, "weight", json_real(round4(s->feats[j].contrib))))
        return TD_ENOMEM;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The response                                                             */

/* Insertion sort of at most TD_MAX_THEMES indexes by score, desc. */
static void sort_by_score(size_t *idx, size_t n, const double *sc) {
  for (size_t a = 1; a < n; a++) {
    size_t v = idx[a], b = a;
    while (b > 0 && (sc[idx[b - 1]] < sc[v] || (sc[idx[b - 1]] == sc[v] && idx[b - 1] > v))) {
      idx[b] = idx[b - 1];
      b--;
    }
    idx[b] = v;
  }
}

/*
 * Members set directly: json_pack parses its format string on every call,
 * once per passage and per tag. Keys are constant ASCII, and the strings
 * set with _nocheck are UTF-8 already (the model's label comes from its
 * manifest, which jansson parsed; theme names are checked against
 * [A-Za-z0-9_.-] at load), so the UTF-8 scan is skipped. The objects, and
 * so the bytes dumped, are the same (bench/NOTES.md). A NaN or an infinite
 * score still makes json_real fail, and the response with it.
 */
static int set_int(json_t *o, const char *key, size_t v) {
  return json_object_set_new_nocheck(o, key, json_integer((json_int_t)v));
}

static int set_real(json_t *o, const char *key, double v) {
  return json_object_set_new_nocheck(o, key, json_real(v));
}

json_t *td_result_json(const td_model_t *m, const td_doc_t *doc, const td_classify_opts_t *o,
                       const td_result_t *r, td_scratch_t *s) {
  td_classify_opts_t def;
  if (!o) {
    td_classify_opts_default(&def);
    o = &def;
  }
  size_t nt = m->ntheme, n = r->passages.count;
  size_t count[TD_MAX_THEMES] = {0}, tagged[TD_MAX_THEMES], other = 0;
  double maxsc[TD_MAX_THEMES];
  td_scratch_t *own = NULL;
  int explain = o->explain && m->linear;
  json_t *root = json_object(), *plist = json_array();
  if (!root || !plist) {
    json_decref(plist);
    goto fail;
  }
  /* json_object_set_new steals its value even when it fails */
  if (json_object_set_new(root, "id", doc && doc->id ? json_string(doc->id) : json_null()) ||
      json_object_set_new(root, "model", json_string_nocheck(m->label))) {
    json_decref(plist); /* not attached yet (an id or label that is not UTF-8) */
    goto fail;
  }
  if (json_object_set_new(root, "passages", plist)) goto fail;
  if (o->explain && !m->linear &&
      json_object_set_new(root, "explain_note",
                          json_string("explanations need a linear model; this bundle's "
                                      "kernel is not linear")))
    goto fail;
  if (explain) {
    /* Recomputed here rather than trusted from td_classify: the scratch
     * passed in need not be the one that produced r. */
    td_err_t err;
    td_err_clear(&err);
    if (!s && !(s = own = td_scratch_new())) goto fail;
    if (featurize(m, r, s, &err)) {
      explain = 0;
      if (json_object_set_new(root, "explain_error", json_string(err.msg))) goto fail;
    }
  }
  for (size_t k = 0; k < nt; k++) maxsc[k] = 0;

  for (size_t i = 0; i < n; i++) {
    const td_passage_t *p = &r->passages.items[i];
    const double *sc = r->scores + i * nt;
    size_t ntag = 0;
    for (size_t k = 0; k < nt; k++)
      if (td_result_tagged(m, o, r, i, k)) tagged[ntag++] = k;
    sort_by_score(tagged, ntag, sc);
    json_t *pobj = json_object();
    if (!pobj || json_array_append_new(plist, pobj) || set_int(pobj, "index", i) ||
        set_int(pobj, "start", p->cstart) || set_int(pobj, "end", p->cend) ||
        set_int(pobj, "byte_start", p->start) || set_int(pobj, "byte_end", p->end) ||
        json_object_set_new_nocheck(pobj, "heading", json_boolean(p->is_heading)))
      goto fail;
    json_t *themes = json_array();
    if (!themes || json_object_set_new_nocheck(pobj, "themes", themes)) goto fail;
    for (size_t t = 0; t < ntag; t++) {
      size_t k = tagged[t];
      json_t *e = json_object();
      if (!e || json_array_append_new(themes, e) ||
          json_object_set_new_nocheck(e, "theme", json_string_nocheck(m->themes[k].name)) ||
          set_real(e, "score", round4(sc[k])))
        goto fail;
      if (count[k]++ == 0 || sc[k] > maxsc[k]) maxsc[k] = sc[k];
    }
    if (ntag == 0) other++;
    if (o->include_text &&
        json_object_set_new(pobj, "text",
                            json_stringn(r->spans[i].s ? r->spans[i].s : "", r->spans[i].len)))
      goto fail;
    if (explain && ntag && explain_passage(m, o, r, i, tagged, ntag, s, pobj)) goto fail;
  }

  /* Summary: themes tagged at least once; "max" is the best score among the
   * passages that carry the theme; "top" orders themes by passages, then by
   * that best score. */
  json_t *summary = json_object(), *sth = json_object(), *top = json_array();
  if (!summary || !sth || !top) {
    json_decref(summary);
    json_decref(sth);
    json_decref(top);
    goto fail;
  }
  if (json_object_set_new(root, "summary", summary)) { /* summary stolen */
    json_decref(sth);
    json_decref(top);
    goto fail;
  }
  if (json_object_set_new(summary, "passages", json_integer((json_int_t)n)) ||
      json_object_set_new(summary, "other", json_integer((json_int_t)other)) ||
      json_object_set_new(summary, "themes", sth) || json_object_set_new(summary, "top", top))
    goto fail;
  size_t order[TD_MAX_THEMES], no = 0;
  for (size_t k = 0; k < nt; k++) {
    if (!count[k]) continue;
    json_t *e = json_object();
    if (!e || json_object_set_new_nocheck(sth, m->themes[k].name, e) ||
        set_int(e, "passages", count[k]) ||
        set_real(e, "share", round4((double)count[k] / (double)n)) ||
        set_real(e, "max", round4(maxsc[k])))
      goto fail;
    order[no++] = k;
  }
  for (size_t a = 1; a < no; a++) { /* insertion sort: passages desc, max desc, index */
    size_t v = order[a], b = a;
    while (b > 0 && (count[order[b - 1]] < count[v] ||
                     (count[order[b - 1]] == count[v] && maxsc[order[b - 1]] < maxsc[v]))) {
      order[b] = order[b - 1];
      b--;
    }
    order[b] = v;
  }
  for (size_t a = 0; a < no; a++)
    if (json_array_append_new(top, json_string_nocheck(m->themes[order[a]].name))) goto fail;
  td_scratch_free(&own);
  return root;
fail:
  td_scratch_free(&own);
  json_decref(root);
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* The response, serialized into a caller's buffer                          */

/*
 * The objects are built once by td_result_json and dumped once by jansson
 * into the caller's reused buffer: no parse/dump round trips, and the bytes
 * are jansson's by construction (the project writes no JSON by hand).
 */
int td_result_write(const td_model_t *m, const td_doc_t *doc, const td_classify_opts_t *o,
                    const td_result_t *r, td_scratch_t *s, td_result_id_t id_mode,
                    const json_t *id_json, td_buf_t *out) {
  /* The tree lives only until it is dumped: its allocations come from this
   * thread's arena (jalloc.h) and go back at once with json_decref below. */
  int scope = td_jalloc_scope_begin();
  json_t *res = td_result_json(m, doc, o, r, s);
  if (!res) {
    td_jalloc_scope_end(scope);
    return TD_ENOMEM;
  }
  if (id_mode == TD_RESULT_ID_JSON && id_json) json_object_set(res, "id", (json_t *)id_json);
  else if (id_mode != TD_RESULT_ID_DOC) json_object_del(res, "id");
  /* json_dumpb straight into the buffer's spare room: a dump callback is
   * called for every token (quote, colon, comma), which cost a fifth of the
   * dump (bench/NOTES.md). The room is guessed from the passages so that
   * one dump nearly always fits; if not, the buffer grows and it dumps again. */
  int rc = TD_ENOMEM;
  size_t n = 0;
  if (td_buf_reserve(out, 512 + 256 * r->passages.count) == 0) {
    size_t avail = out->cap - out->len - 1;
    n = json_dumpb(res, out->data + out->len, avail, TD_JSON_DUMP_FLAGS);
    if (n > avail && td_buf_reserve(out, n) == 0) {
      avail = out->cap - out->len - 1;
      n = json_dumpb(res, out->data + out->len, avail, TD_JSON_DUMP_FLAGS);
    }
    if (n > 0 && n <= avail) {
      out->len += n;
      rc = 0;
    }
  }
  if (out->data) out->data[out->len] = '\0';
  json_decref(res);
  td_jalloc_scope_end(scope);
  return rc;
}
