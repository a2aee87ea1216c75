"""Every limit and every kind of bad input: the exact error code, and the
daemon (and, where the protocol allows, the same connection) still serves."""
import json
import socket
import time

from harness import Daemon, check, error_code, parse_http_responses, raw_http, wait

LIMITS = ("--max-request-bytes", "2048", "--max-line-bytes", "8192", "--max-passages", "5",
          "--max-documents", "3")
OK = {"op": "health"}


def _http_raw(d, data):
    s = d.connect()
    try:
        return parse_http_responses(raw_http(s, data))
    finally:
        s.close()


def _still_serves(d):
    check(d.call(OK)["status"] == "ok", "daemon stopped serving")
    st, _, body = d.request("POST", "/v1/classify", {"text": "发展集体经济"})
    check(st == 200 and "passages" in body, body)


def test_jsonl_bad_inputs_connection_survives():
    cases = [
        (b'{"op":"classify","text":"\xff\xfe bad"}\n', "invalid_utf8"),
        (b'{"text":"ok \xed\xa0\x80 surrogate"}\n', "invalid_utf8"),
        (b'{"text":"\\ud800"}\n', "invalid_utf8"),
        (b'{"text": "unterminated\n', "invalid_json"),
        (b'{"text": 5}\n', "invalid_request"),
        (b'{"passages": "not an array"}\n', "invalid_request"),
        (b'{"passages": ["ok", 3]}\n', "invalid_request"),
        (b'{"text": "x", "passages": ["y"]}\n', "invalid_request"),
        (b'{"text": "x", "threshold": "high"}\n', "invalid_request"),
        (b'{"text": "x", "threshold": 1.5}\n', "invalid_request"),
        (b'{"text": "x", "top_k": -1}\n', "invalid_request"),
        (b'{"text": "x", "explain": "yes"}\n', "invalid_request"),
        (b'{"id": [1], "text": "x"}\n', "invalid_request"),
        (b'{"id": 9}\n', "invalid_request"),
        (b'[1,2]\n', "invalid_request"),
        (b'{"op": 5}\n', "invalid_request"),
        (b'{"op": "frobnicate", "id": 7}\n', "unknown_op"),
        (b'{"passages": ["a","b","c","d","e","f"]}\n', "too_many_passages"),
        (("{\"text\": \"%s\"}\n" % "\\n".join(["发展集体经济"] * 6)).encode(), "too_many_passages"),
        (b'{"text": "' + b"x" * 3000 + b'"}\n', "too_large"),  # over the request limit, under the line limit
    ]
    with Daemon(*LIMITS) as d:
        with d.jsonl() as c:
            for raw, code in cases:
                c.send(raw)
                r = c.recv_line()
                check(r is not None and error_code(r) == code, "%r -> %r (want %s)" % (raw[:60], r, code))
                check(r["error"]["message"], "a message for humans")
                check(c.call({"op": "health", "id": "after"})["id"] == "after", "connection survives")
            r = c.call({"op": "frobnicate", "id": 7})
            check(r["id"] == 7, "the id is echoed on errors: %r" % r)
            # five passages are fine
            r = c.call({"passages": ["a", "b", "c", "d", "e"]})
            check(r["summary"]["passages"] == 5, r)
            # CRLF and blank lines
            c.send(b'\r\n{"op":"health","id":"crlf"}\r\n\n')
            check(c.recv_line()["id"] == "crlf")
        _still_serves(d)
        st = d.call({"op": "stats"})["stats"]["errors"]
        for code in ("invalid_utf8", "invalid_json", "invalid_request", "unknown_op", "too_many_passages", "too_large"):
            check(st.get(code, 0) >= 1, (code, st))


def test_jsonl_line_too_long_closes():
    with Daemon(*LIMITS) as d:
        with d.jsonl() as c:
            c.send({"op": "health", "id": 1})
            c.sock.sendall(b'{"text":"' + b"y" * 20000 + b'"}\n')
            r1 = c.recv_line()
            r2 = c.recv_line()
            check(r1["id"] == 1, r1)
            check(error_code(r2) == "too_large" and "line" in r2["error"]["message"], r2)
            check(c.eof(), "closed: the framing is lost")
        _still_serves(d)


def test_http_bad_inputs():
    with Daemon(*LIMITS) as d:
        with d.http() as h:
            cases = [
                ("POST", "/v1/classify", b'{"text":"\xff"}', 400, "invalid_utf8"),
                ("POST", "/v1/classify", b'{"text":', 400, "invalid_json"),
                ("POST", "/v1/classify", b'{"text":["x"]}', 400, "invalid_request"),
                ("POST", "/v1/classify", b'', 400, "invalid_request"),
                ("POST", "/v1/classify", b'{"passages":["1","2","3","4","5","6"]}', 413, "too_many_passages"),
                ("POST", "/v1/classify", json.dumps({"documents": [{"text": "a"}] * 4}).encode(), 413,
                 "too_many_documents"),
                ("POST", "/v1/classify", b'{"documents":[{"text":"a"},{"text":7}]}', 400, "invalid_request"),
                ("POST", "/v1/classify", b'{"documents":"x"}', 400, "invalid_request"),
                ("GET", "/v1/nothing", None, 404, "not_found"),
                ("GET", "/", None, 404, "not_found"),
                ("GET", "/v1/classify", None, 405, "method_not_allowed"),
                ("DELETE", "/v1/health", None, 405, "method_not_allowed"),
                ("POST", "/metrics", b"", 405, "method_not_allowed"),
            ]
            for method, path, body, status, code in cases:
                st, hdr, r = h.request(method, path, body, {"Content-Type": "application/json"})
                check(st == status and error_code(r) == code,
                      "%s %s %r -> %s %r (want %s %s)" % (method, path, (body or b"")[:40], st, r, status, code))
                if status == 405:
                    check(hdr.get("allow") in ("GET", "POST"), hdr)
                # keep-alive survives each error
                st, _, r = h.request("GET", "/v1/health")
                check(st == 200, r)
            st, _, r = h.request("POST", "/v1/classify", {"documents": [{"text": "a"}] * 3})
            check(st == 200 and len(r["results"]) == 3, r)
        _still_serves(d)


def test_http_body_too_large():
    with Daemon(*LIMITS) as d:
        body = json.dumps({"text": "x" * 3000}).encode()
        resp = _http_raw(d, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        check(len(resp) == 1 and resp[0][0] == 413, resp)
        check(json.loads(resp[0][2])["error"]["code"] == "too_large", resp)
        # chunked: the limit applies as the body arrives
        chunk = b"%x\r\n%s\r\n" % (len(body), body)
        resp = _http_raw(d, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + b"0\r\n\r\n")
        check(len(resp) == 1 and resp[0][0] == 413, resp)
        # malformed HTTP
        resp = _http_raw(d, b"GET /v1/health HTTP/1.1\r\nBad Header Line\r\n\r\n")
        check(len(resp) == 1 and resp[0][0] == 400, resp)
        check(json.loads(resp[0][2])["error"]["code"] == "invalid_request", resp)
        _still_serves(d)


def test_header_timeout_slowloris():
    with Daemon("--header-timeout", "1") as d:
        s = d.connect(timeout=wait(6))
        t0 = time.monotonic()
        out = raw_http(s, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        elapsed = time.monotonic() - t0
        s.close()
        resp = parse_http_responses(out)
        check(len(resp) == 1 and resp[0][0] == 408, out)
        check(json.loads(resp[0][2])["error"]["code"] == "header_timeout", resp)
        check(0.8 <= elapsed < wait(4), elapsed)
        _still_serves(d)
        # a complete request on a keep-alive connection is not a slow one
        with d.http() as h:
            check(h.request("GET", "/v1/health")[0] == 200)


def test_idle_timeout():
    with Daemon("--idle-timeout", "1") as d:
        with d.jsonl() as c:
            check(c.call(OK)["status"] == "ok")
            t0 = time.monotonic()
            c.sock.settimeout(wait(6))
            check(c.recv_line() is None, "closed without a message")
            elapsed = time.monotonic() - t0
            # The idle clock starts at the daemon's last read, before our
            # answer was written, so under valgrind it has run a while already.
            check(0.5 <= elapsed < wait(4), elapsed)
        _still_serves(d)
        check(d.call({"op": "stats"})["stats"]["errors"].get("idle_timeout", 0) >= 1)


def test_max_connections():
    with Daemon("--max-connections", "3") as d:
        held = [d.jsonl() for _ in range(3)]
        for i, c in enumerate(held):
            check(c.call({"op": "health", "id": i})["id"] == i)  # accepted and counted
        with d.jsonl() as fourth:
            fourth.send(OK)
            r = fourth.recv_line()
            check(error_code(r) == "too_many_connections", r)
            check(fourth.eof(), "then closed")
        s = d.connect()
        resp = parse_http_responses(raw_http(s, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"))
        s.close()
        check(len(resp) == 1 and resp[0][0] == 503, resp)
        check(json.loads(resp[0][2])["error"]["code"] == "too_many_connections")
        # a client that says nothing still gets the error
        with d.jsonl() as silent:
            r = silent.recv_line()
            check(error_code(r) == "too_many_connections", r)
        # the three still serve
        for i, c in enumerate(held):
            check(c.call({"op": "health", "id": i})["id"] == i)
        # a freed slot is taken again: EOF from our side reaches the daemon
        # asynchronously, so ask until it has been counted (bounded)
        held.pop().close()
        deadline = time.monotonic() + wait(5)
        while True:
            with d.jsonl() as c:
                c.send(OK)
                r = c.recv_line()
            if r and r.get("status") == "ok":
                break
            check(time.monotonic() < deadline, "slot never freed: %r" % r)
        for c in held:
            c.close()
