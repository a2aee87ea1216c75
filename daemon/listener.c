/*
 * Listening sockets: --listen addresses (unix with a stale-socket check and
 * mode 0660, TCP with port 0 resolved for the log) and the sockets systemd
 * hands over (socket activation). Accepted connections go to
 * td_server_on_connection (server.c).
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "server.h"

/* A socket file left by a crashed instance is removed, one that still
 * answers is not: another daemon is serving on it. */
static int unix_stale(const char *path, td_err_t *err) {
  struct stat st;
  if (lstat(path, &st) != 0) return 0;
  if (!S_ISSOCK(st.st_mode))
    return td_err_set(err, TD_EIO, "listen unix:%s: exists and is not a socket", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return td_err_set(err, TD_EIO, "socket: %s", strerror(errno));
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  int e = errno;
  close(fd);
  if (rc == 0)
    return td_err_set(err, TD_EIO, "listen unix:%s: another process is listening on it", path);
  if (e == ECONNREFUSED) {
    td_log_info("removing stale socket %s", path);
    if (unlink(path) != 0 && errno != ENOENT)
      return td_err_set(err, TD_EIO, "listen unix:%s: cannot remove stale socket: %s", path,
                        strerror(errno));
  }
  return 0;
}

/* uv_pipe_bind turns bind(2)'s ENOENT into EACCES (for likeness with
 * Windows), so a socket path in a directory that does not exist reads
 * "permission denied", even as root, and sends the operator chasing
 * permissions. After a refused bind, look at the parent directory: if it is
 * missing or not a directory, say so (returns 1 with err set); else 0, and
 * the error stands as reported (a real EACCES stays "permission denied"). */
static int unix_parent_missing(const char *path, td_err_t *err) {
  char *dir = td_path_parent(path);
  if (!dir) {
    td_err_set(err, TD_ENOMEM, "out of memory");
    return 1;
  }
  struct stat st;
  int missing = 1;
  if (stat(dir, &st) == 0) {
    if (!(missing = !S_ISDIR(st.st_mode))) goto out;
    td_err_set(err, TD_EIO, "listen unix:%s: %s is not a directory", path, dir);
  } else if (errno == ENOENT) {
    td_err_set(err, TD_EIO, "listen unix:%s: directory %s does not exist", path, dir);
  } else if (errno == ENOTDIR) {
    td_err_set(err, TD_EIO, "listen unix:%s: directory %s: a component of it is not a directory",
               path, dir);
  } else {
    missing = 0; /* e.g. EACCES on the way there: "permission denied" is right */
  }
out:
  free(dir);
  return missing;
}

/* The addresses a tcp listen address names (*ai, for freeaddrinfo). */
static int resolve(const td_listen_addr_t *a, struct addrinfo **ai, td_err_t *err) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  char port[16];
  snprintf(port, sizeof port, "%d", a->port);
  *ai = NULL;
  int g = getaddrinfo(a->host, port, &hints, ai);
  if (g)
    return td_err_set(err, TD_EIO, "listen tcp:%s:%d: %s", a->host, a->port,
                      g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
  return 0;
}

int td_listen_addr_check(const td_listen_addr_t *a, td_err_t *err) {
  if (a->is_unix) return unix_parent_missing(a->path, err) ? err->code : 0;
  struct addrinfo *ai;
  int rc = resolve(a, &ai, err);
  if (!rc) freeaddrinfo(ai);
  return rc;
}

static void sockname(td_listener_t *l) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char host[INET6_ADDRSTRLEN] = "?";
  if (l->is_unix) {
    char path[sizeof l->name - 8];
    size_t n = sizeof path;
    if (uv_pipe_getsockname(&l->h.pipe, path, &n) == 0) {
      path[n < sizeof path ? n : sizeof path - 1] = '\0';
      snprintf(l->name, sizeof l->name, "unix:%s", path);
    }
    return;
  }
  if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &len) != 0) return;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    uv_ip6_name(a, host, sizeof host);
    snprintf(l->name, sizeof l->name, "tcp:[%s]:%d", host, ntohs(a->sin6_port));
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    uv_ip4_name(a, host, sizeof host);
    snprintf(l->name, sizeof l->name, "tcp:%s:%d", host, ntohs(a->sin_port));
  }
}

/* With --allow-remote, say once per listener what it means. */
static void warn_remote(const td_listener_t *l) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &len) == 0 &&
      !td_sockaddr_is_loopback((struct sockaddr *)&ss))
    td_log_warn("%s is reachable from other hosts (--allow-remote): anyone who can connect may "
                "classify; admin operations need the admin token",
                l->name);
}

static int listen_one(td_server_t *s, td_listener_t *l, const td_listen_addr_t *a, td_err_t *err) {
  int rc;
  if (a->is_unix) {
    if (unix_stale(a->path, err)) return err->code;
    uv_pipe_init(s->loop, &l->h.pipe, 0);
    l->is_unix = 1;
    l->open = 1;
    if ((rc = uv_pipe_bind(&l->h.pipe, a->path))) {
      if ((rc == UV_EACCES || rc == UV_ENOTDIR) && unix_parent_missing(a->path, err)) return err->code;
      return td_err_set(err, TD_EIO, "listen unix:%s: %s", a->path, uv_strerror(rc));
    }
    l->unlink_path = strdup(a->path);
    if (chmod(a->path, 0660) != 0)
      return td_err_set(err, TD_EIO, "chmod %s: %s", a->path, strerror(errno));
  } else {
    struct addrinfo *ai;
    if ((rc = resolve(a, &ai, err))) return rc;
    /* td_config_validate checked the name; this is the address bound. */
    if (!s->cfg->allow_remote && !td_sockaddr_is_loopback(ai->ai_addr)) {
      freeaddrinfo(ai);
      return td_err_set(err, TD_EINVAL,
                        "listen tcp:%s:%d: not a loopback address; themed listens on other "
                        "addresses only with --allow-remote (config \"allow_remote\": true)",
                        a->host, a->port);
    }
    uv_tcp_init_ex(s->loop, &l->h.tcp, ai->ai_family);
    l->open = 1;
    rc = uv_tcp_bind(&l->h.tcp, ai->ai_addr, ai->ai_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    freeaddrinfo(ai);
    if (rc) return td_err_set(err, TD_EIO, "listen tcp:%s:%d: %s", a->host, a->port, uv_strerror(rc));
  }
  l->h.handle.data = l;
  if ((rc = uv_listen(&l->h.stream, 511, td_server_on_connection)))
    return td_err_set(err, TD_EIO, "listen %s%s: %s", a->is_unix ? "unix:" : "tcp:",
                      a->is_unix ? a->path : a->host, uv_strerror(rc));
  sockname(l);
  td_log_info("listening on %s", l->name);
  if (!a->is_unix) warn_remote(l);
  return 0;
}

/* systemd socket activation: fds SD_LISTEN_FDS_START.. are listening
 * sockets; adopt the stream ones of a family we speak. */
static int adopt_one(td_server_t *s, td_listener_t *l, int fd, td_err_t *err) {
  int rc;
  l->inherited = 1;
  if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0) {
    uv_pipe_init(s->loop, &l->h.pipe, 0);
    l->is_unix = 1;
    l->open = 1;
    rc = uv_pipe_open(&l->h.pipe, fd);
  } else if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0) {
    uv_tcp_init(s->loop, &l->h.tcp);
    l->open = 1;
    rc = uv_tcp_open(&l->h.tcp, fd);
  } else {
    return td_err_set(err, TD_EINVAL, "inherited fd %d is not a listening unix or TCP stream socket", fd);
  }
  if (rc) return td_err_set(err, TD_EIO, "inherited fd %d: %s", fd, uv_strerror(rc));
  l->h.handle.data = l;
  snprintf(l->name, sizeof l->name, "fd:%d", fd);
  if ((rc = uv_listen(&l->h.stream, 511, td_server_on_connection)))
    return td_err_set(err, TD_EIO, "inherited fd %d: listen: %s", fd, uv_strerror(rc));
  sockname(l);
  td_log_info("listening on %s (socket-activated, fd %d)", l->name, fd);
  if (!l->is_unix) {
    /* The unit chose the address, but reaching beyond this host is still
     * an explicit decision of the daemon's configuration. */
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (!s->cfg->allow_remote &&
        uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &len) == 0 &&
        !td_sockaddr_is_loopback((struct sockaddr *)&ss))
      return td_err_set(err, TD_EINVAL,
                        "inherited fd %d (%s): not a loopback address; themed listens on other "
                        "addresses only with --allow-remote (config \"allow_remote\": true)",
                        fd, l->name);
    warn_remote(l);
  }
  return 0;
}

static int inherited_unix(const td_server_t *s, const char *path) {
  for (size_t i = 0; i < s->nlisteners; i++) {
    const td_listener_t *l = &s->listeners[i];
    if (l->inherited && l->is_unix && strncmp(l->name, "unix:", 5) == 0 &&
        strcmp(l->name + 5, path) == 0)
      return 1;
  }
  return 0;
}

int td_server_listen(td_server_t *s, int n_inherited, td_err_t *err) {
  size_t n = s->cfg->nlisten + (size_t)(n_inherited > 0 ? n_inherited : 0);
  s->listeners = calloc(n ? n : 1, sizeof *s->listeners);
  if (!s->listeners) return td_err_set(err, TD_ENOMEM, "out of memory");
  for (int i = 0; i < n_inherited; i++) {
    td_listener_t *l = &s->listeners[s->nlisteners++];
    l->srv = s;
    if (adopt_one(s, l, SD_LISTEN_FDS_START + i, err)) return err->code;
  }
  for (size_t i = 0; i < s->cfg->nlisten; i++) {
    td_listen_addr_t a;
    if (td_listen_addr_parse(s->cfg->listen[i], &a, err)) return err->code;
    /* With both themed.socket and themed.service enabled, systemd hands us
     * the very socket the unit's --listen names: serve it once. */
    if (a.is_unix && inherited_unix(s, a.path)) {
      td_log_info("listen unix:%s: already inherited from systemd", a.path);
      continue;
    }
    td_listener_t *l = &s->listeners[s->nlisteners++];
    l->srv = s;
    if (listen_one(s, l, &a, err)) return err->code;
  }
  return 0;
}

void td_listeners_close(td_server_t *s) {
  for (size_t i = 0; i < s->nlisteners; i++) {
    td_listener_t *l = &s->listeners[i];
    if (!l->open) continue;
    l->open = 0;
    uv_close(&l->h.handle, NULL);
    if (l->unlink_path) {
      unlink(l->unlink_path);
      TD_FREE(l->unlink_path);
    }
  }
}

