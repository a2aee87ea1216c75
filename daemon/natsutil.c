#include "natsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

natsStatus td_natsutil_set_servers(natsOptions *o, const char *urls) {
  char *copy = strdup(urls), *save = NULL;
  const char *list[64];
  int n = 0;
  if (!copy) return NATS_NO_MEMORY;
  for (char *t = strtok_r(copy, ",", &save); t && n < 64; t = strtok_r(NULL, ",", &save)) {
    while (*t == ' ') t++;
    size_t l = strlen(t);
    while (l && t[l - 1] == ' ') t[--l] = '\0';
    if (*t) list[n++] = t;
  }
  natsStatus s = n == 0 ? NATS_ADDRESS_MISSING
                 : n == 1 ? natsOptions_SetURL(o, list[0]) : natsOptions_SetServers(o, list, n);
  free(copy);
  return s;
}

natsStatus td_natsutil_stream_of(jsCtx *js, const char *subject, char *name, size_t cap, jsErrCode *je) {
  jsOptions o;
  jsStreamNamesList *list = NULL;
  jsOptions_Init(&o);
  /* libnats sends this as the "subject" filter of $JS.API.STREAM.NAMES: the
   * server lists the streams whose subjects overlap it. For a literal
   * subject that is the one stream (at most) that stores it. */
  o.Stream.Info.SubjectsFilter = subject;
  natsStatus s = js_StreamNames(&list, js, &o, je);
  if (s == NATS_OK && (!list || list->Count < 1 || !list->List[0])) s = NATS_NOT_FOUND;
  if (s == NATS_OK) snprintf(name, cap, "%s", list->List[0]);
  if (list) jsStreamNamesList_Destroy(list);
  return s;
}

const char *td_natsutil_err(natsStatus s) {
  const char *t = nats_GetLastError(NULL);
  return t && *t ? t : natsStatus_GetText(s);
}
