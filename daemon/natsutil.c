#include "natsutil.h"

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

const char *td_natsutil_err(natsStatus s) {
  const char *t = nats_GetLastError(NULL);
  return t && *t ? t : natsStatus_GetText(s);
}
