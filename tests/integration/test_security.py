"""Security: socket modes, loopback-only TCP, the admin token (file, constant-time
compare, rotation on SIGHUP), reload paths confined to the models directory,
plugins only from the configured directory and never from a world-writable one."""
import json
import os
import shutil
import signal
import stat
import subprocess
import time

from harness import (THEMED, Daemon, check, error_code, model_b_dir, model_dir, plugin_dir,
                     wait)

TOKEN = "s3cret-Token_0123456789"


def _label(bundle):
    with open(os.path.join(bundle, "manifest.json")) as f:
        m = json.load(f)
    return "%s@%s" % (m["name"], m["version"])


def _run(*args, env=None):
    """themed with args, expected to refuse to start: (exit code, output)."""
    e = dict(os.environ, THEMED_PLUGIN_DIR=plugin_dir())
    e.pop("NOTIFY_SOCKET", None)
    if env:
        e.update(env)
    r = subprocess.run([THEMED] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=e, timeout=wait(30))
    return r.returncode, r.stdout.decode("utf-8", "replace")


def _token_file(d, content=TOKEN + "\n", mode=0o600, name="admin.token"):
    p = os.path.join(d.dir, name)
    with open(p, "w") as f:
        f.write(content)
    os.chmod(p, mode)
    return p


def _failed_start(d):
    """Starts d expecting it to refuse: returns (exit code, log)."""
    d.start(ready=False)
    rc = d.proc.wait(timeout=wait(30))
    return rc, d.log()


# ---------------------------------------------------------------- sockets

def test_unix_socket_0660_whatever_the_umask():
    # umask 000 would leave a bound socket 0777; the daemon chmods it.
    with Daemon(pre_cmd=["sh", "-c", 'umask 000; exec "$@"', "sh"]) as d:
        st = os.stat(d.sock)
        check(stat.S_ISSOCK(st.st_mode), "a socket")
        check(stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode))
        check(st.st_uid == os.getuid(), "owned by the daemon's user")
        check(d.call({"op": "health"})["status"] == "ok")


def test_units_keep_the_socket_in_the_service_directory():
    """Installed, the socket lives in /run/themed, which the service owns (0750), at 0660."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def directives(name):
        out = {}
        with open(os.path.join(root, "systemd", name)) as f:
            for line in f:
                k, sep, v = line.strip().partition("=")
                if sep and not k.startswith("#"):
                    out.setdefault(k, []).append(v)
        return out

    svc, sock = directives("themed.service"), directives("themed.socket")
    check(svc.get("RuntimeDirectory") == ["themed"] and svc.get("RuntimeDirectoryMode") == ["0750"], svc)
    check(svc.get("User") == ["themed"] and svc.get("Group") == ["themed"], svc)
    check("unix:/run/themed/themed.sock" in " ".join(svc.get("ExecStart", [])), svc)
    check(sock.get("ListenStream") == ["/run/themed/themed.sock"] and sock.get("SocketMode") == ["0660"]
          and sock.get("SocketGroup") == ["themed"], sock)
    check(not any(l.startswith("tcp:") and not l.startswith(("tcp:127.", "tcp:[::1]"))
                  for l in " ".join(svc.get("ExecStart", [])).split()), "no remote TCP in the unit")


def test_remote_bind_refused_unless_allowed():
    for spec in ("tcp:0.0.0.0:0", "tcp:[::]:0"):
        rc, out = _run("--model", model_dir(), "--listen", spec)
        check(rc == 1, (spec, rc, out))
        check("not a loopback address" in out and "--allow-remote" in out, out)
    # --check-config applies the same rule
    rc, out = _run("--model", model_dir(), "--listen", "tcp:0.0.0.0:7300", "--check-config")
    check(rc == 1 and "--allow-remote" in out and "config ok" not in out, out)
    # loopback addresses and names are fine
    rc, out = _run("--model", model_dir(), "--listen", "tcp:127.0.0.2:7300", "--listen",
                   "tcp:localhost:7300", "--check-config")
    check(rc == 0 and "config ok" in out, out)
    # allowed explicitly: it serves, and the log says what that means
    with Daemon("--listen", "tcp:0.0.0.0:0", "--allow-remote") as d:
        check("reachable from other hosts" in d.log(), d.log())
        check(d.call({"op": "health"})["status"] == "ok")
    # the config file key does the same
    with Daemon(start=False) as d:
        cfg = os.path.join(d.dir, "themed.json")
        with open(cfg, "w") as f:
            json.dump({"allow_remote": True, "listen": ["tcp:0.0.0.0:0", "unix:" + d.sock]}, f)
        d.cmd = d.cmd[:d.cmd.index("--listen")] + ["--config", cfg]
        d.start()
        check("reachable from other hosts" in d.log(), d.log())


# ---------------------------------------------------------------- admin token

def test_admin_token_required_over_tcp_and_compared_exactly():
    with Daemon(start=False, tcp=True) as d:
        d.cmd += ["--admin-token-file", _token_file(d)]
        d.start()
        # JSON Lines over TCP: missing, wrong, prefix, longer, other case, wrong type
        for bad in (None, "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "", 42, [TOKEN]):
            req = {"op": "reload", "id": "r"}
            if bad is not None:
                req["token"] = bad
            r = d.call(req, tcp=True)
            check(error_code(r) == "unauthorized" and r["id"] == "r", (bad, r))
        r = d.call({"op": "reload", "token": TOKEN}, tcp=True)
        check(r.get("reloaded") is True, r)
        # HTTP: Authorization: Bearer
        for hdr in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + TOKEN},
                    {"Authorization": "Bearer " + TOKEN[:-1]}, {"Authorization": TOKEN}):
            st, _, body = d.request("POST", "/v1/reload", headers=hdr, tcp=True)
            check(st == 401 and error_code(body) == "unauthorized", (hdr, st, body))
        for scheme in ("Bearer ", "bearer "):
            st, _, body = d.request("POST", "/v1/reload", headers={"Authorization": scheme + TOKEN},
                                    tcp=True)
            check(st == 200 and body["reloaded"] is True, body)
        # the token is checked before the body is read: a malformed body tells
        # an unauthenticated client nothing but 401; with the token it is a 400
        for hdr in ({}, {"Authorization": "Bearer wrong"}):
            for bad in ('{"path":', "[1]", b"\xff"):
                st, _, body = d.request("POST", "/v1/reload", body=bad, headers=hdr, tcp=True)
                check(st == 401 and error_code(body) == "unauthorized", (hdr, bad, st, body))
        auth = {"Authorization": "Bearer " + TOKEN}
        for bad, code in (('{"path":', "invalid_json"), ("[1]", "invalid_request"), (b"\xff", "invalid_utf8"),
                          ('{"path":5}', "invalid_request")):
            st, _, body = d.request("POST", "/v1/reload", body=bad, headers=auth, tcp=True)
            check(st == 400 and error_code(body) == code, (bad, st, body))
        st, _, body = d.request("POST", "/v1/reload", body={"id": "r7"}, headers=auth, tcp=True)
        check(st == 200 and body["reloaded"] is True and body.get("id") == "r7", body)
        # read-only operations need no token; the unix socket is guarded by its mode
        check(d.call({"op": "health"}, tcp=True)["status"] == "ok")
        check(d.request("GET", "/v1/stats", tcp=True)[0] == 200)
        check(d.call({"op": "reload"}).get("reloaded") is True)
        check(TOKEN not in d.log(), "the token never reaches the log")


def _hup(d):
    """SIGHUP, then waits until the daemon has handled it (rereading the token is
    part of that): a request sent right after kill() may otherwise be answered
    first, and READY=1 cannot tell (every reload sends one)."""
    n = d.log().count("SIGHUP: reloading the model")
    d.kill(signal.SIGHUP)
    deadline = time.monotonic() + wait(20)
    while d.log().count("SIGHUP: reloading the model") <= n:
        check(time.monotonic() < deadline, "SIGHUP not handled; log:\n" + d.log())
        time.sleep(0.01)
    d.wait_note("READY=1", wait(20))


def test_admin_token_rotated_on_sighup_and_fails_closed():
    with Daemon(start=False, tcp=True) as d:
        path = _token_file(d)
        d.cmd += ["--admin-token-file", path]
        d.start()
        check(d.call({"op": "reload", "token": TOKEN}, tcp=True).get("reloaded") is True)
        # rotate: the new token works after SIGHUP, the old one no longer
        with open(path, "w") as f:
            f.write("n3w-token\n")
        _hup(d)
        check(error_code(d.call({"op": "reload", "token": TOKEN}, tcp=True)) == "unauthorized")
        check(d.call({"op": "reload", "token": "n3w-token"}, tcp=True).get("reloaded") is True)
        # a token file others can read is refused on SIGHUP too: no token matches any more
        os.chmod(path, 0o644)
        _hup(d)
        r = d.call({"op": "reload", "token": "n3w-token"}, tcp=True)
        check(error_code(r) == "unauthorized" and "could not be reread" in r["error"]["message"], r)
        check("readable by others" in d.log(), d.log())
        # fixed, SIGHUP again: back in service
        os.chmod(path, 0o600)
        _hup(d)
        check(d.call({"op": "reload", "token": "n3w-token"}, tcp=True).get("reloaded") is True)


def test_admin_token_file_refused_when_unsafe():
    cases = [(0o644, TOKEN, "readable by others"), (0o602, TOKEN, "writable by others"),
             (0o600, "\n", "is empty"), (0o600, "two words\n", "printable ASCII"),
             (0o600, "x" * 1025, "longer than 1024")]
    for mode, content, want in cases:
        with Daemon(start=False) as d:
            d.cmd += ["--admin-token-file", _token_file(d, content, mode)]
            rc, log = _failed_start(d)
            check(rc == 1 and want in log, (oct(mode), want, rc, log))
    with Daemon(start=False) as d:
        d.cmd += ["--admin-token-file", os.path.join(d.dir, "missing")]
        rc, log = _failed_start(d)
        check(rc == 1 and "No such file" in log, log)
    # group-readable is fine (root:themed 0640)
    with Daemon(start=False, tcp=True) as d:
        d.cmd += ["--admin-token-file", _token_file(d, mode=0o640)]
        d.start()
        check(d.call({"op": "reload", "token": TOKEN}, tcp=True).get("reloaded") is True)
    # not both ways at once
    rc, out = _run("--model", model_dir(), "--listen", "unix:/nonexistent/x.sock",
                   "--admin-token", "a", "--admin-token-file", "/dev/null", "--check-config")
    check(rc == 1 and "not both" in out, out)


def test_tcp_admin_refused_without_token_and_inline_token_warns():
    with Daemon(tcp=True) as d:
        r = d.call({"op": "reload", "token": "anything"}, tcp=True)
        check(error_code(r) == "unauthorized" and "--admin-token-file" in r["error"]["message"], r)
        st, _, body = d.request("POST", "/v1/reload", headers={"Authorization": "Bearer x"}, tcp=True)
        check(st == 401 and error_code(body) == "unauthorized", body)
        check(d.call({"op": "reload"}).get("reloaded") is True, "unix socket still works")
    with Daemon("--admin-token", TOKEN, tcp=True) as d:
        check("every local user can read it with ps" in d.log(), d.log())
        check(d.call({"op": "reload", "token": TOKEN}, tcp=True).get("reloaded") is True)


# ---------------------------------------------------------------- model paths

def _own_models(d):
    """A models directory of the daemon's own: models/a (served) and models/b."""
    root = os.path.join(d.dir, "models")
    os.makedirs(root)
    shutil.copytree(model_dir(), os.path.join(root, "a"))
    shutil.copytree(model_b_dir(), os.path.join(root, "b"))
    return root


def test_reload_path_confined_to_models_dir():
    label_a, label_b = _label(model_dir()), _label(model_b_dir())
    with Daemon(start=False) as d:
        root = _own_models(d)
        d.model = os.path.join(root, "a")
        d.cmd[d.cmd.index("--model") + 1] = d.model
        os.symlink(model_b_dir(), os.path.join(root, "escape"))  # inside, pointing outside
        d.start()
        outside = [model_b_dir(), "/etc", os.path.join(root, "..", os.path.basename(d.dir)),
                   os.path.join(root, "a", "..", "..", "x"), os.path.join(root, "escape"),
                   "/nonexistent-outside", "."]
        for p in outside:
            r = d.call({"op": "reload", "id": 1, "path": p})
            check(error_code(r) == "forbidden" and "outside the models directory" in r["error"]["message"],
                  (p, r))
            st, _, body = d.request("POST", "/v1/reload", {"path": p})
            check(st == 403 and error_code(body) == "forbidden", (p, st, body))
        check(d.call({"op": "health"})["model"] == label_a)
        # inside: loads (also through a relative-looking path that stays inside)
        r = d.call({"op": "reload", "path": os.path.join(root, "a", "..", "b")})
        check(r.get("reloaded") is True and r["model"] == label_b, r)
        # inside but missing: the usual reload_failed
        r = d.call({"op": "reload", "path": os.path.join(root, "nothing")})
        check(error_code(r) == "reload_failed" and "nothing" in r["error"]["message"], r)
        s = d.call({"op": "stats"})["stats"]
        check(s["errors"].get("forbidden") == 2 * len(outside), s["errors"])
        # a bundle directory swapped for a symlink to elsewhere is not followed on SIGHUP
        shutil.rmtree(os.path.join(root, "b"))
        os.symlink(model_dir(), os.path.join(root, "b"))
        d.kill(signal.SIGHUP)
        d.wait_note("READY=1", wait(20))
        check("outside the models directory" in d.log(), d.log())
        check(d.call({"op": "health"})["model"] == label_b, "still serving the old model")


def test_models_dir_flag_and_allow_any_model_path():
    with Daemon(start=False) as d:
        root = _own_models(d)
        # the served model itself must lie inside an explicit --models-dir
        other = os.path.join(d.dir, "elsewhere")
        os.makedirs(other)
        d.cmd += ["--models-dir", other]
        rc, log = _failed_start(d)
        check(rc == 1 and "outside the models directory" in log, log)
        d.cmd[-1] = os.path.join(d.dir, "missing-dir")
        rc, log = _failed_start(d)
        check(rc == 1 and "models_dir" in log and "No such file" in log, log)
        # an explicit directory that holds the model, and reloads inside it
        d.cmd[-1] = root
        d.cmd[d.cmd.index("--model") + 1] = os.path.join(root, "a")
        d.start()
        check(d.call({"op": "reload", "path": os.path.join(root, "b")}).get("reloaded") is True)
        check(error_code(d.call({"op": "reload", "path": model_dir()})) == "forbidden")
    with Daemon("--allow-any-model-path") as d:
        r = d.call({"op": "reload", "path": model_b_dir()})
        check(r.get("reloaded") is True, r)


# ---------------------------------------------------------------- plugins

def test_plugins_only_from_a_safe_configured_dir():
    with Daemon(start=False) as d:
        plugins = os.path.join(d.dir, "plugins")
        shutil.copytree(plugin_dir(), plugins)
        os.chmod(plugins, 0o755)
        d.cmd += ["--plugins", plugins]
        os.chmod(plugins, 0o777)  # anyone could drop a .so in
        rc, log = _failed_start(d)
        check(rc == 1 and "world-writable directory" in log, log)
        os.chmod(plugins, 0o755)
        so = os.path.join(plugins, os.listdir(plugins)[0])
        for f in os.listdir(plugins):
            os.chmod(os.path.join(plugins, f), 0o666)
        rc, log = _failed_start(d)
        check(rc == 1 and "world-writable file" in log, (so, log))
        for f in os.listdir(plugins):
            os.chmod(os.path.join(plugins, f), 0o755)
        d.start()
        check(d.call({"op": "health"})["status"] == "ok")
    # a manifest cannot name a plugin outside the plugin directory
    with Daemon(start=False) as d:
        root = _own_models(d)
        bad = os.path.join(root, "evil")
        shutil.copytree(model_dir(), bad)
        mpath = os.path.join(bad, "manifest.json")
        with open(mpath) as f:
            m = json.load(f)
        m["tokenizer"]["name"] = "../../tmp/evil"
        with open(mpath, "w") as f:
            json.dump(m, f)
        d.cmd[d.cmd.index("--model") + 1] = os.path.join(root, "a")
        d.start()
        r = d.call({"op": "reload", "path": bad})
        check(error_code(r) == "reload_failed" and "invalid tokenizer name" in r["error"]["message"], r)
