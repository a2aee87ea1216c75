/*
 * What the daemon's NATS consumer (nats.c) and themectl's publish/collect
 * (tools/themectl_nats.c) both need from libnats: the server list from a
 * comma-separated URL option, the stream that captures a subject, and the
 * text of a failed call.
 */
#ifndef TD_NATSUTIL_H
#define TD_NATSUTIL_H

#include <nats/nats.h>

/* "nats://a:4222, nats://b:4222" -> o's server list (natsOptions_SetURL
 * takes one URL). NATS_ADDRESS_MISSING when the list is empty. */
natsStatus td_natsutil_set_servers(natsOptions *o, const char *urls);

/* The stream that stores what is published on the literal subject
 * `subject` (JetStream's stream names, filtered by subject): NATS_OK with its
 * name in name (cap bytes, cut if longer); NATS_NOT_FOUND when no stream
 * captures it; another status (and *je, which may be NULL) when the lookup
 * itself failed. */
natsStatus td_natsutil_stream_of(jsCtx *js, const char *subject, char *name, size_t cap, jsErrCode *je);

/* libnats's last error text for this thread, else the status's name.
 * Points into libnats; valid until the next libnats call on this thread. */
const char *td_natsutil_err(natsStatus s);

#endif
