"""Pipelining, ordering, concurrency and backpressure."""
import json
import threading

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
