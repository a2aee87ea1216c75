/*
 * Classify: one document in, tagged passages out. The pure engine: no I/O.
 * themectl and the daemon both call this and both print td_result_json(), so
 * the offline CLI and the service can never disagree on shape or numbers.
 */
#ifndef TD_CLASSIFY_H
#define TD_CLASSIFY_H

#include <jansson.h>

#include "common.h"
#include "features.h"
#include "model.h"
#include "text.h"

/* How every response object is serialized, offline and served alike. */
#define TD_JSON_DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(6))

typedef struct td_doc {
  const char *id;               /* echoed, may be NULL */
  const char *text;             /* whole article (split here) ... */
  size_t len;
  const td_span_t *passages;    /* ... or passages already split */
  size_t npassages;
} td_doc_t;

/* The largest top_k any input takes (a value over the theme count means every
 * theme): one limit for the protocol and every themectl path. */
#define TD_MAX_TOP_K 1000000

typedef struct td_classify_opts {
  double threshold;    /* < 0: each theme's tuned threshold; else this one */
  int top_k;           /* 0: every theme over threshold; k > 0: at most k */
                       /* (at most TD_MAX_TOP_K, as every input path checks) */
  int explain;         /* add top contributing tokens per tagged theme */
  int explain_k;       /* tokens per theme in an explanation (default 8) */
  int include_text;    /* echo each passage's text */
  size_t max_passages; /* 0 = unlimited; more passages -> TD_ELIMIT */
} td_classify_opts_t;
void td_classify_opts_default(td_classify_opts_t *o);

/* Per-passage results; reusable across calls. Owns its arrays. */
typedef struct td_result {
  td_passages_t passages; /* offsets (see docs/protocol.md) */
  td_span_t *spans;       /* passage texts (point into the caller's input) */
  double *dec;            /* count * ntheme decision values */
  double *scores;         /* count * ntheme calibrated scores */
  size_t cap;             /* capacity of spans/dec/scores in passages */
  size_t ntheme;
} td_result_t;
void td_result_init(td_result_t *r);
void td_result_free(td_result_t *r);

/* Per-thread scratch: feature buffers etc. One per worker thread. */
typedef struct td_scratch td_scratch_t;
td_scratch_t *td_scratch_new(void);
void td_scratch_free(td_scratch_t **s);

/*
 * Splits (or takes) the passages, validates UTF-8 (TD_EUTF8 with the byte
 * offset), featurizes with heading context, scores every theme. With
 * pre-split passages, offsets are as if the passages were joined by "\n".
 */
int td_classify(const td_model_t *m, const td_doc_t *doc,
                const td_classify_opts_t *o, td_scratch_t *s, td_result_t *r,
                td_err_t *err);

/* Whether theme k is tagged on passage i under o (threshold/top-k/multiclass). */
int td_result_tagged(const td_model_t *m, const td_classify_opts_t *o,
                     const td_result_t *r, size_t i, size_t k);

/*
 * The response object (new reference):
 * {"id":..., "model":"name@version",
 *  "passages":[{"index":0,"start":..,"end":..,"byte_start":..,"byte_end":..,
 *               "heading":bool,"themes":[{"theme":"talent","score":0.93}]}],
 *  "summary":{"passages":N,"other":M,"themes":{"talent":{"passages":k,"share":..,"max":..}},"top":[...]}}
 * A passage tagged `other` has "themes": []. explain/include_text add fields.
 * NULL only on allocation failure.
 */
json_t *td_result_json(const td_model_t *m, const td_doc_t *doc,
                       const td_classify_opts_t *o, const td_result_t *r,
                       td_scratch_t *s);

/* One feature's part in a decision value (td_explain). */
typedef struct td_contrib {
  const char *label; /* the tokens behind the feature, not NUL-terminated: "书记"
                        for the passage's own text, "heading:队伍建设" for the
                        heading it sits under, "prev:" / "next:" for the
                        neighbouring passages; tokens that share one hashed
                        bucket are joined by " / " */
  size_t len;
  uint32_t index;    /* the feature (hashed bucket) */
  double value;      /* its value in the passage's vector */
  double contrib;    /* w[index][k] * value */
} td_contrib_t;
typedef int (*td_contrib_cb)(void *ud, const td_contrib_t *c);

/*
 * Calls cb for every non-zero feature of passage i with its contribution to
 * theme k, in index order. Exact for a linear model: the contributions plus
 * m->bias[k] sum to r->dec[i * ntheme + k] (tests/unit/test_explain.c). s
 * must hold the feature vectors of r: the scratch td_classify used for r.
 * A non-zero return from cb stops the walk and is returned. TD_EINVAL for a
 * non-linear model or an index out of range.
 */
int td_explain(const td_model_t *m, const td_result_t *r, size_t i, size_t k, td_scratch_t *s,
               td_contrib_cb cb, void *ud, td_err_t *err);

/* Where td_result_write takes the "id" member from. */
typedef enum td_result_id {
  TD_RESULT_ID_DOC = 0, /* doc->id, or null: td_result_json's own shape */
  TD_RESULT_ID_OMIT,    /* no "id" member (a request that sent none) */
  TD_RESULT_ID_JSON     /* the given JSON value (a request's scalar id) */
} td_result_id_t;

/*
 * The same response, serialized into `out` (appended, a buffer the caller
 * reuses): td_result_json's object with the "id" member replaced (in place)
 * or removed as id_mode says, dumped once by jansson with TD_JSON_DUMP_FLAGS.
 * Returns 0, or TD_ENOMEM (out left as it was).
 */
int td_result_write(const td_model_t *m, const td_doc_t *doc, const td_classify_opts_t *o,
                    const td_result_t *r, td_scratch_t *s, td_result_id_t id_mode,
                    const json_t *id_json, td_buf_t *out);

#endif
