#include "themectl_doc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "themectl.h"

int themectl_jdoc_parse(themectl_jdoc_t *d, const char *name, uint64_t lineno, const char *line,
                        size_t n) {
  memset(d, 0, sizeof *d);
  json_error_t je;
  /* No JSON_DECODE_ANY: a bare scalar is "not a JSON object" like an array. */
  d->obj = json_loadb(line, n, 0, &je);
  if (!json_is_object(d->obj)) {
    snprintf(d->msg, sizeof d->msg, "%s:%llu: %s", name, (unsigned long long)lineno,
             d->obj ? "not a JSON object" : je.text);
    d->code = "invalid_json";
    return 1;
  }
  d->id = json_object_get(d->obj, "id");
  const json_t *text = json_object_get(d->obj, "text"), *ps = json_object_get(d->obj, "passages");
  /* "text" wins when it is a string: the other members, "passages" and
   * per-line options included, are not part of the request. */
  if (json_is_string(text)) {
    d->text = json_string_value(text);
    d->len = json_string_length(text);
    return 0;
  }
  if (json_is_array(ps)) {
    d->passages = ps;
    return 0;
  }
  snprintf(d->msg, sizeof d->msg, "%s:%llu: expected a string \"text\" (or a \"passages\" array)", name,
           (unsigned long long)lineno);
  d->code = "invalid_request";
  return 1;
}

void themectl_jdoc_free(themectl_jdoc_t *d) {
  json_decref(d->obj);
  d->obj = NULL;
}

void themectl_doc_error(const json_t *id, const char *code, const char *msg) {
  /* Name the document as the user named it: a file name, a string id unquoted. */
  char *shown = json_is_string(id) ? strdup(json_string_value(id))
                                   : id ? json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
  themectl_errorf("classify: %s%s%s (%s)", shown ? shown : "", shown ? ": " : "", msg ? msg : "error",
                  code ? code : "error");
  free(shown);
}
