/*
 * One `classify --jsonl` input line as a document, and how a document that
 * fails is reported: shared by the offline command (themectl.c) and the
 * daemon client (themectl_client.c), so that both read the same lines the
 * same way and print the same error lines (README: offline and daemon give
 * the same output).
 */
#ifndef THEMECTL_DOC_H
#define THEMECTL_DOC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct themectl_jdoc {
  json_t *obj;             /* the parsed line (owned), NULL if it is not JSON */
  const json_t *id;        /* its "id" (borrowed from obj), or NULL */
  const char *text;        /* "text" when it is a string ... */
  size_t len;
  const json_t *passages;  /* ... else "passages" when it is an array */
  const char *code;        /* NULL, or the error code the line is answered with */
  char msg[600];           /* the error message, "NAME:LINE: ..." */
} themectl_jdoc_t;

/*
 * Reads one line (n bytes, no '\n') of the input `name`, line number lineno.
 * 0: d->text or d->passages is set; 1: the line is answered with an error
 * (d->code, d->msg: invalid_json for a line that is not a JSON object,
 * invalid_request for one without a string "text" or a "passages" array;
 * d->id is set when the object has one). Free with themectl_jdoc_free
 * either way.
 */
int themectl_jdoc_parse(themectl_jdoc_t *d, const char *name, uint64_t lineno, const char *line,
                        size_t n);
void themectl_jdoc_free(themectl_jdoc_t *d);

/* A document that failed, on stderr: "themectl: classify: ID: MESSAGE (CODE)",
 * a string id unquoted, another id as compact JSON, no id: no "ID: ". */
void themectl_doc_error(const json_t *id, const char *code, const char *msg);

#endif
