/*
 * Features: tokens -> sparse vectors.
 *
 * Hashing trick over a power-of-two space. A passage contributes a *body*
 * block (its own tokens, plus adjacent-token pairs when ngram_max == 2) and,
 * when context is enabled, a *context* block: the tokens of the heading it
 * sits under (td_passage_t.context), hashed with a different seed so the two
 * never share a meaning. Each block: raw counts -> tf (sublinear 1+ln tf if
 * set) -> x idf[index] (if use_idf). The context block is scaled by
 * context_weight, then the whole vector is L2-normalized. Every knob is
 * recorded in the model manifest (td_feat_config_to_json) so serving
 * computes exactly what training computed.
 *
 * With neighbor_weight > 0, two more blocks: the tokens of the previous and
 * of the next passage of the same document, each in its own hashed space
 * (index = fmix32(body hash ^ salt): a neighbour's 产业 is a third feature,
 * beside the body's and the heading's), tf x idf, scaled by neighbor_weight.
 * With doc_weight > 0, one more: the tokens of the whole document (tf over
 * all its passages), the same block for every passage of it, again in its
 * own space and scaled by doc_weight. Every passage is then tokenized once
 * per call and its token hashes kept, so these blocks cost no extra
 * tokenizer work.
 */
#ifndef TD_FEATURES_H
#define TD_FEATURES_H

#include <jansson.h>
#include <stdint.h>

#include "common.h"
#include "plugin.h"
#include "text.h"

/*
 * How a passage's vector is counted and normalized (manifest "norm").
 * TD_NORM_L2 ("l2"): a block counts its tokens by bucket index, blocks are
 * summed, and the sum is L2-normalized. TD_NORM_L2_TOKENS ("l2-tokens"): a
 * block counts its tokens by their full 32-bit hash, and the L2 norm is taken
 * over those token features before features that share a bucket are added
 * together. The two differ only where hashes collide in the bucket space;
 * l2-tokens lets a linear model score a passage block by block, without
 * building and sorting its vector (td_features_doc_dot). New models use it.
 */
typedef enum td_norm { TD_NORM_L2 = 0, TD_NORM_L2_TOKENS = 1 } td_norm_t;

typedef struct td_feat_config {
  uint32_t buckets;      /* size of the hashed space, a power of two */
  int ngram_max;         /* 1: tokens; 2: tokens and adjacent token pairs */
  int sublinear_tf;      /* tf -> 1 + ln(tf) */
  int use_idf;           /* multiply by the idf table recorded in the bundle */
  double context_weight; /* scale of the heading-context block; 0 = off */
  uint32_t seed;         /* hash seed */
  double neighbor_weight; /* scale of the previous/next-passage blocks; 0 = off
                             (manifest key "neighbor_weight", optional: absent
                             in bundles that predate it, and written only when
                             non-zero, so those bundles stay readable by older
                             readers) */
  double doc_weight;     /* scale of the whole-document block; 0 = off
                            (manifest key "doc_weight", optional like
                            neighbor_weight) */
  td_norm_t norm;        /* manifest "norm": "l2" or "l2-tokens" */
} td_feat_config_t;

#define TD_FEAT_DEFAULT_BUCKETS (1u << 18)
/* The sizes a bundle may have (td_feat_config_from_json refuses others):
 * the trainer and themectl check against the same numbers up front. */
#define TD_FEAT_MIN_BUCKETS_LOG2 10
#define TD_FEAT_MAX_BUCKETS_LOG2 24
#define TD_FEAT_BUCKETS_RULE "a power of two between 2^10 and 2^24"
/* The one test of that rule: the loader, training and themectl's flag. */
static inline int td_feat_buckets_ok(long long b) {
  return b >= (1LL << TD_FEAT_MIN_BUCKETS_LOG2) && b <= (1LL << TD_FEAT_MAX_BUCKETS_LOG2) &&
         (b & (b - 1)) == 0;
}

void td_feat_config_default(td_feat_config_t *c);
/* New reference; the object written to manifest.json "features". */
json_t *td_feat_config_to_json(const td_feat_config_t *c);
/* Strict: unknown keys, missing keys and bad values are errors naming the
 * field. Optional keys (neighbor_weight, doc_weight) take their default
 * when absent. */
int td_feat_config_from_json(const json_t *j, td_feat_config_t *c, td_err_t *err);

typedef struct td_span {
  const char *s;
  size_t len;
} td_span_t;

typedef struct td_feat {
  uint32_t index; /* in [0, buckets) */
  double value;
} td_feat_t;

/* Sparse vector, sorted by index, no duplicates. Owns `items`. */
typedef struct td_fvec {
  td_feat_t *items;
  size_t count, cap;
} td_fvec_t;
void td_fvec_init(td_fvec_t *v);
void td_fvec_free(td_fvec_t *v);

/* Per-thread scratch (hash maps, buffers), reused across calls. */
typedef struct td_fscratch td_fscratch_t;
td_fscratch_t *td_fscratch_new(void);
void td_fscratch_free(td_fscratch_t **s);

/*
 * Featurizes the n passages of one document. spans[i] is passage i's text;
 * ps[i].context (if ps != NULL) names the heading passage whose tokens form
 * its context block. idf has c->buckets entries (NULL: all 1). out[0..n) are
 * overwritten (each must be initialized).
 */
int td_features_doc(const td_feat_config_t *c, const td_tokenizer_t *tok,
                     const double *idf, const td_span_t *spans,
                     const td_passage_t *ps, size_t n, td_fscratch_t *s,
                     td_fvec_t *out, td_err_t *err);

/*
 * Training helper: for each passage of a document, adds 1 to df[index] for
 * every distinct index its (body + context) features touch. df has
 * c->buckets entries.
 */
int td_features_doc_df(const td_feat_config_t *c, const td_tokenizer_t *tok,
                       const td_span_t *spans, const td_passage_t *ps, size_t n,
                       td_fscratch_t *s, uint32_t *df, td_err_t *err);

/*
 * For a linear model: out[i * nt + k] = the dot product of passage i's
 * vector (as td_features_doc makes it) with weight column k, where w holds
 * nt weights per bucket, row-major (w[index * nt + k]). With norm
 * l2-tokens no vector is built: each block adds its part of the dot products
 * and of the squared norm, and the total is divided by the norm once; the
 * result equals the vector's dot products up to the order of the
 * floating-point additions. With norm l2 the vectors are built and the sums
 * run in index order, bit for bit what a loop over td_features_doc's vector
 * gives. out has n * nt entries; nt is at most 64.
 */
int td_features_doc_dot(const td_feat_config_t *c, const td_tokenizer_t *tok,
                        const double *idf, const td_span_t *spans,
                        const td_passage_t *ps, size_t n, const double *w,
                        size_t nt, td_fscratch_t *s, double *out, td_err_t *err);

/* Smoothed idf as in scikit-learn: ln((1 + n_docs) / (1 + df)) + 1. */
double td_features_idf(uint32_t df, size_t n_docs);

/* The feature hash, MurmurHash3 x86_32 ("murmur3_32" in the manifest); a
 * token's body index is td_features_hash(tok, len, seed) & (buckets - 1). */
uint32_t td_features_hash(const void *key, size_t len, uint32_t seed);

/*
 * Explanation helper: calls cb once per distinct body token of `text`
 * (normalized by the tokenizer), in order of first occurrence, with the
 * feature index it hashes to (look its value up in the vector
 * td_features_doc produced). With ngram_max == 2, each distinct adjacent pair
 * is reported too, as the two tokens joined by one space. A non-zero return
 * from cb stops the walk and is returned.
 */
typedef int (*td_token_index_cb)(void *ud, const char *tok, size_t len,
                                 uint32_t index);
int td_features_tokens(const td_feat_config_t *c, const td_tokenizer_t *tok,
                       const char *text, size_t len, td_token_index_cb cb,
                       void *ud, td_err_t *err);

/* The blocks a passage's vector is made of (explanations name them). */
typedef enum td_block {
  TD_BLOCK_BODY = 0, /* the passage itself */
  TD_BLOCK_HEADING,  /* the heading it sits under (context_weight) */
  TD_BLOCK_PREV,     /* the previous passage (neighbor_weight) */
  TD_BLOCK_NEXT,     /* the next passage (neighbor_weight) */
  TD_BLOCK_DOC,      /* every passage of the document (doc_weight) */
  TD_BLOCK_COUNT
} td_block_t;

/* "body", "heading", "prev", "next", "doc". */
const char *td_features_block_name(td_block_t b);

/*
 * Which passage feeds block b of passage i (spans/ps/n as for
 * td_features_doc), or -1 when the block is off or empty for it. The doc
 * block is fed by every passage: this returns 0 when it is on (and n > 0),
 * and the caller walks all n passages.
 */
long td_features_block_source(const td_feat_config_t *c, const td_passage_t *ps, size_t n,
                              size_t i, td_block_t b);

/*
 * td_features_tokens for any block: each distinct token of `text` with the
 * index it has in block b (body: as td_features_tokens, pairs included;
 * other blocks: tokens only).
 */
int td_features_block_tokens(const td_feat_config_t *c, const td_tokenizer_t *tok,
                             td_block_t b, const char *text, size_t len,
                             td_token_index_cb cb, void *ud, td_err_t *err);

#endif
