/*
 * Labelled corpora in the JSON Lines format of ../shared/themes.md:
 *   {"id": "...", "doc": "...", "text": "...", "themes": ["talent"]}
 * Items keep file order; items of one `doc` are passages of one article in
 * order, which is how heading context is rebuilt at training time.
 */
#ifndef TD_CORPUS_H
#define TD_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct td_item {
  char *id;
  char *doc;       /* article id; falls back to id when absent */
  char *text;
  size_t len;
  uint64_t labels; /* bit k = themes[k]; 0 = `other` (multi-label mode) */
} td_item_t;

typedef struct td_corpus {
  td_item_t *items;
  size_t n, cap;
  char **themes;   /* theme names, index = bit; owned */
  size_t ntheme;
  /* articles: items [doc_start[d], doc_start[d+1]) share a doc id */
  size_t *doc_start;
  size_t ndocs;
  /* Optional, set after td_corpus_init: called with each doubt about data
   * that still loads (a label repeated within a row, a passage id seen
   * before), the message naming file, line and id. The caller reports it
   * (themectl prints a warning); NULL: not reported. */
  void (*warn)(void *ud, const char *msg);
  void *warn_ud;
} td_corpus_t;

/* Fewer positive passages than this and a theme's cross-validated F1 and
 * tuned threshold rest on too few examples to mean much. */
#define TD_CORPUS_MIN_POSITIVES 5

void td_corpus_init(td_corpus_t *c);
void td_corpus_free(td_corpus_t *c);

/*
 * Appends the items of a JSON Lines file. Errors name the file and line:
 * not JSON, not an object, missing/ill-typed field, invalid UTF-8, empty
 * text, `other` mixed with a theme, a theme name the bundle could not hold
 * (td_theme_name_ok), unknown theme (when the corpus has a fixed theme
 * list: set c->themes before loading, e.g. from a model).
 * In multiclass mode every item must have exactly one label and `other` is
 * an ordinary class. Otherwise `other` means no theme.
 * Items of one doc must be contiguous (they are in our corpora); a doc that
 * reappears later is an error.
 */
int td_corpus_load(td_corpus_t *c, const char *path, int multiclass, int fixed_themes,
                   td_err_t *err);
/* Call after the last load: builds the doc index. Empty corpus -> TD_EINVAL. */
int td_corpus_finish(td_corpus_t *c, td_err_t *err);
/* How many items carry theme k (its positives). */
size_t td_corpus_positives(const td_corpus_t *c, size_t k);

#endif
