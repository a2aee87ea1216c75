"""Pipelining, ordering, concurrency and backpressure."""
import json
import socket
import threading
import time

from harness import Daemon, check, error_code, parse_http_responses, raw_http

TEXTS = ["发展集体经济，壮大村级产业。", "抓队伍建设 选优配强乡村骨干力量",
         "开展人居环境整治，建设美丽乡村。\n推进移风易俗，树立文明乡风。", "来源：新华网",
         "健全自治、法治、德治相结合的乡村治理体系。"]


def _pipelined(d, n, tcp=False):
    """Writes n requests at once (mixed ops and sizes), then reads n answers."""
    with d.jsonl(tcp) as c:
        reqs = []
        for i in range(n):
            if i % 10 == 3:
                reqs.append({"op": "health", "id": i})
            elif i % 10 == 7:
                reqs.append({"id": i, "bad": True, "text": 5})  # an error keeps its place too
            else:
                reqs.append({"op": "classify", "id": i, "text": "\n".join(TEXTS[: 1 + i % 5] * (1 + i % 7))})
        c.send(b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in reqs))
        out = [c.recv_line() for _ in range(n)]
    check(all(o is not None for o in out), "missing responses")
    check([o["id"] for o in out] == list(range(n)), [o.get("id") for o in out])
    for i, o in enumerate(out):
        if i % 10 == 3:
            check(o["status"] == "ok", o)
        elif i % 10 == 7:
            check(error_code(o) == "invalid_request", o)
        else:
            check(o["summary"]["passages"] == len(TEXTS[: 1 + i % 5] * (1 + i % 7)) or
                  o["summary"]["passages"] > 0, o)
    return out


def test_jsonl_100_pipelined_in_order():
    with Daemon("--workers", "4") as d:
        _pipelined(d, 100)


def test_backpressure_max_pending_and_output():
    # 2 requests in flight per connection and 1 KiB of unsent output: reading
    # pauses and resumes; every answer still arrives, in order.
    with Daemon("--max-pending", "2", "--max-output-bytes", "1024") as d:
        _pipelined(d, 100)
        body = json.dumps({"text": TEXTS[2]}).encode()
        one = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        s = d.connect()
        resp = parse_http_responses(raw_http(s, one * 30 + b"GET /v1/health HTTP/1.1\r\nConnection: close\r\n\r\n"))
        s.close()
        check(len(resp) == 31 and all(r[0] == 200 for r in resp), [r[0] for r in resp])


def test_50_concurrent_clients():
    with Daemon(tcp=True) as d:
        errors = []
        counts = []

        def client(k):
            try:
                if k % 2:
                    with d.jsonl(tcp=k % 4 == 1) as c:
                        for i in range(10):
                            r = c.call({"id": "%d-%d" % (k, i), "text": TEXTS[(k + i) % 5]})
                            check(r["id"] == "%d-%d" % (k, i) and "passages" in r, r)
                    counts.append(10)
                else:
                    with d.http(tcp=k % 4 == 0) as h:
                        for i in range(10):
                            st, _, r = h.request("POST", "/v1/classify", {"id": i, "text": TEXTS[(k + i) % 5]})
                            check(st == 200 and r["id"] == i, r)
                    counts.append(10)
            except Exception as e:  # noqa: BLE001
                errors.append("client %d: %r" % (k, e))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(60)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(not errors, errors[:5])
        check(sum(counts) == 600, sum(counts))
        s = d.call({"op": "stats"})["stats"]
        check(s["connections_total"] >= 61, s)


def _many_pipelined(d, n, huge=False, delay=0):
    """n requests on one connection, written by a thread while this one reads:
    small classify lines (answered on the loop thread while the pool is idle),
    large ones (always on the pool), health ops and errors. Every answer must
    come back, in order, each byte for byte what the same request gets alone
    (but for its id), and the connection must end cleanly after a half-close."""
    big = "\n".join(TEXTS * 30)  # > 2 KiB: never classified on the loop thread
    kinds = [{"text": TEXTS[0]}, {"text": TEXTS[2]}, {"passages": TEXTS[:3]},
             {"text": big}, {"op": "health"}, {"text": 5}, {"text": TEXTS[4], "top_k": 1}]
    if huge:  # ~76 KB answers: the socket fills, writes go out in parts
        kinds.append({"text": big, "explain": True, "include_text": True})
    alone = []
    for k in kinds:
        r = d.call(dict(k, id="alone"))
        r.pop("id", None)
        alone.append(r)
    reqs = [dict(kinds[i % len(kinds) if i % 97 else 3], id=i) for i in range(n)]
    data = b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in reqs)
    c = d.jsonl()
    errors = []

    def send():
        try:
            for off in range(0, len(data), 4096):  # many small writes, many reads
                c.sock.sendall(data[off:off + 4096])
            c.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(delay)  # not reading yet: the daemon's writes back up
    out = []
    for _ in range(n):
        o = c.recv_line()
        if o is None:
            break
        out.append(o)
    t.join()
    check(not errors, errors)
    check(len(out) == n, "%d of %d answers" % (len(out), n))
    check([o.get("id") for o in out] == list(range(n)), "answers out of order")
    for i, o in enumerate(out):
        o.pop("id", None)
        want = alone[i % len(kinds) if i % 97 else 3]
        check(o == want, "answer %d differs from the same request alone: %r vs %r" % (i, o, want))
    check(c.eof(), "connection not closed after the half-close and the last answer")
    c.close()


def test_jsonl_3000_pipelined_in_order_and_complete():
    with Daemon() as d:
        _many_pipelined(d, 3000)
        s = d.call({"op": "stats"})["stats"]
        check(s["connections"] == 1, s)  # the pipelined one has gone


def test_jsonl_pipelined_with_backpressure_and_one_worker():
    # reading pauses often (8 in flight, 4 KiB unsent), one worker: answers
    # written in batches must still come out whole and in order
    with Daemon("--workers", "1", "--max-pending", "8", "--max-output-bytes", "4096") as d:
        _many_pipelined(d, 1500)


def test_jsonl_large_answers_to_a_slow_reader():
    # answers far larger than the socket buffer while the client is not reading:
    # partial writes, the rest queued, reading paused on --max-output-bytes
    with Daemon("--max-output-bytes", "100000") as d:
        _many_pipelined(d, 160, huge=True, delay=0.5)


def test_http_300_pipelined_in_order():
    with Daemon() as d:
        reqs = []
        for i in range(300):
            body = json.dumps({"id": i, "text": TEXTS[i % 5] if i % 50 else "\n".join(TEXTS * 30)},
                              ensure_ascii=False).encode()
            last = b"Connection: close\r\n" if i == 299 else b""
            reqs.append(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
                        % (last, len(body), body))
        s = d.connect()
        t = threading.Thread(target=s.sendall, args=(b"".join(reqs),))  # reading meanwhile
        t.start()
        resp = parse_http_responses(raw_http(s, b""))
        t.join()
        s.close()
        check(len(resp) == 300, len(resp))
        check(all(r[0] == 200 for r in resp), [r[0] for r in resp if r[0] != 200][:5])
        check([json.loads(r[2])["id"] for r in resp] == list(range(300)), "answers out of order")
