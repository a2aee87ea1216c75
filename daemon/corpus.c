#include "corpus.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "text.h"

void td_corpus_init(td_corpus_t *c) { memset(c, 0, sizeof *c); }

void td_corpus_free(td_corpus_t *c) {
  for (size_t i = 0; i < c->n; i++) {
    /* doc falls back to id and then shares its string */
    if (c->items[i].doc != c->items[i].id) free(c->items[i].doc);
    free(c->items[i].id);
    free(c->items[i].text);
  }
  free(c->items);
  for (size_t k = 0; k < c->ntheme; k++) free(c->themes[k]);
  free(c->themes);
  free(c->doc_start);
  memset(c, 0, sizeof *c);
}

/* ---- a set of doc ids, so a doc that reappears later is caught ---- */

typedef struct docset {
  const char **slots;
  size_t cap, n;
} docset_t;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static int docset_grow(docset_t *d) {
  size_t cap = d->cap ? d->cap * 2 : 256;
  const char **slots = calloc(cap, sizeof *slots);
  if (!slots) return TD_ENOMEM;
  for (size_t i = 0; i < d->cap; i++) {
    if (!d->slots[i]) continue;
    size_t j = hash_str(d->slots[i]) & (cap - 1);
    while (slots[j]) j = (j + 1) & (cap - 1);
    slots[j] = d->slots[i];
  }
  free(d->slots);
  d->slots = slots;
  d->cap = cap;
  return 0;
}

/* 1 if s was already present, 0 if added, TD_ENOMEM. s must outlive d. */
static int docset_add(docset_t *d, const char *s) {
  if ((d->n + 1) * 2 > d->cap && docset_grow(d)) return TD_ENOMEM;
  size_t j = hash_str(s) & (d->cap - 1);
  while (d->slots[j]) {
    if (strcmp(d->slots[j], s) == 0) return 1;
    j = (j + 1) & (d->cap - 1);
  }
  d->slots[j] = s;
  d->n++;
  return 0;
}

static void warnf(const td_corpus_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(const td_corpus_t *c, const char *fmt, ...) {
  if (!c->warn) return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  c->warn(c->warn_ud, msg);
}

/* ---- one row ---- */

static long theme_index(const td_corpus_t *c, const char *name) {
  for (size_t k = 0; k < c->ntheme; k++)
    if (strcmp(c->themes[k], name) == 0) return (long)k;
  return -1;
}

static int add_theme(td_corpus_t *c, const char *name) {
  if (c->ntheme >= TD_MAX_THEMES) return TD_ELIMIT;
  char **t = realloc(c->themes, (c->ntheme + 1) * sizeof *t);
  if (!t) return TD_ENOMEM;
  c->themes = t;
  if (!(t[c->ntheme] = strdup(name))) return TD_ENOMEM;
  c->ntheme++;
  return 0;
}

static int push_item(td_corpus_t *c, const td_item_t *it) {
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 256;
    td_item_t *items = realloc(c->items, cap * sizeof *items);
    if (!items) return TD_ENOMEM;
    c->items = items;
    c->cap = cap;
  }
  c->items[c->n++] = *it;
  return 0;
}

/* With a fixed theme list, what the themes are: an unknown label is most
 * often a typo or a list that left one out, and the list shows which. */
static void known_themes(const td_corpus_t *c, char *buf, size_t n) {
  size_t len = 0;
  buf[0] = '\0';
  for (size_t k = 0; k < c->ntheme && len < n; k++) {
    int w = snprintf(buf + len, n - len, "%s%s", k ? ", " : "", c->themes[k]);
    if (w < 0 || (size_t)w >= n - len) {
      snprintf(buf + len, n - len, ", ...");
      break;
    }
    len += (size_t)w;
  }
}

/* Parses the "themes" array into a label mask; message in err, no prefix.
 * *dup: the first label the row repeats, else NULL (a string of c's, or the
 * literal "other": valid after the row is gone). */
static int parse_themes(td_corpus_t *c, const json_t *arr, int multiclass,
                        int fixed, uint64_t *labels, const char **dup, td_err_t *err) {
  const char *must = "\"themes\" must be a non-empty array of strings";
  if (!json_is_array(arr) || json_array_size(arr) == 0)
    return td_err_set(err, TD_EFORMAT, "%s", must);
  size_t i;
  json_t *v;
  int other = 0, nlab = 0;
  uint64_t mask = 0;
  *dup = NULL;
  json_array_foreach(arr, i, v) {
    if (!json_is_string(v) || json_string_length(v) == 0)
      return td_err_set(err, TD_EFORMAT, "%s", must);
    const char *name = json_string_value(v);
    if (!multiclass && strcmp(name, "other") == 0) {
      if (other && !*dup) *dup = "other";
      other = 1;
      continue;
    }
    long k = theme_index(c, name);
    if (k < 0) {
      if (fixed) {
        char list[256];
        known_themes(c, list, sizeof list);
        return td_err_set(err, TD_EINVAL, "unknown theme \"%s\" (the themes are: %s)", name, list);
      }
      /* A name the bundle could not hold would fail only after training. */
      if (!td_theme_name_ok(name))
        return td_err_set(err, TD_EINVAL, "\"%s\" is not a valid theme name (%s)", name,
                          TD_THEME_NAME_RULE);
      int rc = add_theme(c, name);
      if (rc == TD_ELIMIT)
        return td_err_set(err, rc, "more than %d themes", TD_MAX_THEMES);
      if (rc) return td_err_set(err, rc, "out of memory");
      k = (long)c->ntheme - 1;
    }
    if (!(mask & (1ull << k))) nlab++;
    else if (!*dup) *dup = c->themes[k];
    mask |= 1ull << k;
  }
  if (other && nlab)
    return td_err_set(err, TD_EINVAL, "\"other\" cannot be combined with another theme");
  if (multiclass && nlab != 1)
    return td_err_set(err, TD_EINVAL,
                      "multiclass: \"themes\" must hold exactly one label, found %d", nlab);
  *labels = mask;
  return 0;
}

static char *dup_field(const json_t *o, const char *key, int required, td_err_t *err,
                       int *rc) {
  const json_t *v = json_object_get(o, key);
  *rc = 0;
  if (!v && !required) return NULL;
  if (!json_is_string(v) || json_string_length(v) == 0) {
    *rc = td_err_set(err, TD_EFORMAT, "\"%s\" must be a non-empty string", key);
    return NULL;
  }
  char *s = strdup(json_string_value(v));
  if (!s) *rc = td_err_set(err, TD_ENOMEM, "out of memory");
  return s;
}

static void item_free(td_item_t *it) {
  if (it->doc != it->id) free(it->doc);
  free(it->id);
  free(it->text);
}

/* *dup_label: a label the row repeats (NULL if none; see parse_themes). */
static int parse_row(td_corpus_t *c, const char *line, size_t len, int multiclass,
                     int fixed, td_item_t *it, const char **dup_label, td_err_t *err) {
  json_error_t jerr;
  memset(it, 0, sizeof *it);
  *dup_label = NULL;
  json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!o) return td_err_set(err, TD_EFORMAT, "not valid JSON: %s", jerr.text);
  int rc = 0;
  if (!json_is_object(o)) {
    rc = td_err_set(err, TD_EFORMAT, "not a JSON object");
    goto out;
  }
  if (!(it->id = dup_field(o, "id", 1, err, &rc))) goto out;
  it->doc = dup_field(o, "doc", 0, err, &rc);
  if (rc) goto out;
  if (!it->doc) it->doc = it->id;
  const json_t *t = json_object_get(o, "text");
  if (!json_is_string(t)) {
    rc = td_err_set(err, TD_EFORMAT, "\"text\" must be a string");
    goto out;
  }
  size_t tlen = json_string_length(t);
  size_t bad = 0;
  /* jansson already refuses bad UTF-8 and \u0000 by default; checking again
   * with the engine's own rules keeps training and serving input identical. */
  if ((rc = td_text_check_utf8(json_string_value(t), tlen, &bad, NULL))) {
    rc = td_err_set(err, TD_EUTF8, "\"text\" is not valid UTF-8 (byte %zu)", bad);
    goto out;
  }
  /* A row of only white space would become no passage at serving time. */
  size_t nonspace = 0;
  for (size_t i = 0; i < tlen; i++) {
    unsigned char ch = (unsigned char)json_string_value(t)[i];
    if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') nonspace++;
  }
  if (nonspace == 0) {
    rc = td_err_set(err, TD_EINVAL, "\"text\" is empty");
    goto out;
  }
  if (!(it->text = malloc(tlen + 1))) {
    rc = td_err_set(err, TD_ENOMEM, "out of memory");
    goto out;
  }
  memcpy(it->text, json_string_value(t), tlen + 1);
  it->len = tlen;
  rc = parse_themes(c, json_object_get(o, "themes"), multiclass, fixed, &it->labels, dup_label, err);
out:
  json_decref(o);
  if (rc) {
    item_free(it);
    memset(it, 0, sizeof *it);
  }
  return rc;
}

int td_corpus_load(td_corpus_t *c, const char *path, int multiclass, int fixed_themes,
                   td_err_t *err) {
  char *data = NULL;
  size_t len = 0;
  int rc = td_read_file(path, &data, &len, err);
  if (rc) return rc;
  docset_t seen = {0}, ids = {0};
  const char *dup_label = NULL;
  /* Docs of earlier files count too: an article must not straddle files. */
  for (size_t i = 0; i < c->n; i++) {
    if (i > 0 && strcmp(c->items[i].doc, c->items[i - 1].doc) == 0) continue;
    if (docset_add(&seen, c->items[i].doc) < 0) {
      rc = td_err_set(err, TD_ENOMEM, "out of memory");
      goto out;
    }
  }
  /* So are ids, for the duplicate-id warning (only when someone listens). */
  for (size_t i = 0; c->warn && i < c->n; i++)
    if (docset_add(&ids, c->items[i].id) < 0) {
      rc = td_err_set(err, TD_ENOMEM, "out of memory");
      goto out;
    }
  /* NULL, not the last doc of the previous file: a file starts a new doc. */
  const char *prev_doc = NULL;
  size_t lineno = 0, added = 0;
  for (size_t pos = 0; pos < len;) {
    const char *line = data + pos;
    const char *nl = memchr(line, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - line) : len - pos;
    pos += ll + (nl ? 1 : 0);
    lineno++;
    size_t k = 0;
    while (k < ll && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) k++;
    if (k == ll) continue; /* blank line */
    td_item_t it;
    if ((rc = parse_row(c, line, ll, multiclass, fixed_themes, &it, &dup_label, err))) {
      td_err_prefix(err, "%s line %zu", path, lineno);
      goto out;
    }
    if (dup_label) {
      warnf(c, "%s line %zu: id \"%s\": label \"%s\" is listed twice in \"themes\"", path, lineno,
            it.id, dup_label);
    }
    if (!prev_doc || strcmp(prev_doc, it.doc) != 0) {
      int dup = docset_add(&seen, it.doc);
      if (dup) {
        rc = dup < 0 ? td_err_set(err, TD_ENOMEM, "out of memory")
                     : td_err_set(err, TD_EINVAL,
                                  "%s line %zu: doc \"%s\" reappears after other docs "
                                  "(passages of one article must be contiguous)",
                                  path, lineno, it.doc);
        item_free(&it);
        goto out;
      }
    }
    if (push_item(c, &it)) {
      item_free(&it);
      rc = td_err_set(err, TD_ENOMEM, "out of memory");
      goto out;
    }
    /* Often a row pasted twice: it would count twice in training and in
     * the cross-validation scores, and eval output could not tell them apart. */
    int seen_id = c->warn ? docset_add(&ids, c->items[c->n - 1].id) : 0;
    if (seen_id < 0) {
      rc = td_err_set(err, TD_ENOMEM, "out of memory");
      goto out;
    }
    if (seen_id) warnf(c, "%s line %zu: duplicate passage id \"%s\"", path, lineno, it.id);
    prev_doc = it.doc;
    added++;
  }
  if (added == 0) rc = td_err_set(err, TD_EINVAL, "empty corpus: no items in %s", path);
out:
  free(seen.slots);
  free(ids.slots);
  free(data);
  return rc;
}

size_t td_corpus_positives(const td_corpus_t *c, size_t k) {
  size_t n = 0;
  for (size_t i = 0; i < c->n; i++) n += (c->items[i].labels >> k) & 1;
  return n;
}

int td_corpus_finish(td_corpus_t *c, td_err_t *err) {
  if (c->n == 0) return td_err_set(err, TD_EINVAL, "empty corpus: no items");
  size_t nd = 0;
  for (size_t i = 0; i < c->n; i++)
    if (i == 0 || strcmp(c->items[i].doc, c->items[i - 1].doc) != 0) nd++;
  size_t *ds = malloc((nd + 1) * sizeof *ds);
  if (!ds) return td_err_set(err, TD_ENOMEM, "out of memory");
  size_t d = 0;
  for (size_t i = 0; i < c->n; i++)
    if (i == 0 || strcmp(c->items[i].doc, c->items[i - 1].doc) != 0) ds[d++] = i;
  ds[nd] = c->n;
  free(c->doc_start);
  c->doc_start = ds;
  c->ndocs = nd;
  return 0;
}
