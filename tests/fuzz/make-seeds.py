#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets into tests/fuzz/corpus/.

Run once from the top of the tree after `make` (it needs build/themectl and
build/plugins); the output is committed, so the fuzz targets never need this
script or ../shared:

    python3 tests/fuzz/make-seeds.py

- fuzz_bundle/tiny.bundle: a real bundle, trained by `themectl train` on a
  small slice of tests/fixtures/labelled-train.jsonl (four passages per
  label, two themes, 1024 buckets), packed as fuzz_bundle expects (tests/fuzz/bundle_split.h): the
  manifest, idf.tsv and svm/<k>.model joined by "\\n%%\\n", the manifest's
  svm paths renamed to svm/<k>.model. fuzz_jsonl, fuzz_http and fuzz_loops
  serve it too.
- the other corpora: small hand-made inputs (valid requests, edge cases).

Server-target seeds (fuzz_jsonl, fuzz_http; fuzz_loops runs both) start with
two bytes: the connection's configuration and the write chunking
(server_common.h).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
SEP = b"\n%%\n"
THEMES = ("organization", "industry")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tiny_bundle():
    rows = []
    with open(os.path.join(ROOT, "tests", "fixtures", "labelled-train.jsonl"), encoding="utf-8") as f:
        for line in f:
            o = json.loads(line)
            themes = [t for t in o["themes"] if t in THEMES]
            if o["themes"] != ["other"] and not themes:
                continue
            o["themes"] = themes or ["other"]
            rows.append(o)
    tmp = tempfile.mkdtemp(prefix="themed-seeds-")
    try:
        data = os.path.join(tmp, "train.jsonl")
        with open(data, "w", encoding="utf-8") as f:
            # four passages per label: enough for two SVMs, small enough to read
            taken = {}
            for o in rows:
                key = o["themes"][0]
                if taken.get(key, 0) < 4:
                    taken[key] = taken.get(key, 0) + 1
                    f.write(json.dumps(o, ensure_ascii=False) + "\n")
        out = os.path.join(tmp, "bundle")
        env = dict(os.environ, THEMED_PLUGIN_DIR=os.path.join(BUILD, "plugins"))
        subprocess.run([os.path.join(BUILD, "themectl"), "train", "--data", data, "--out", out,
                        "--name", "fuzz-tiny", "--version", "1.0.0", "--themes", ",".join(THEMES),
                        "--folds", "1", "--c", "1", "--buckets", "1024", "--quiet"],
                       check=True, env=env)
        with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
            m = json.load(f)
        m["created"] = "2026-01-01T00:00:00Z"  # reproducible output
        svms = []
        for k, t in enumerate(m["themes"]):
            with open(os.path.join(out, t["svm"]), "rb") as f:
                svms.append(f.read())
            t["svm"] = "svm/%d.model" % k
        with open(os.path.join(out, "idf.tsv"), "rb") as f:
            idf = f.read()
        manifest = json.dumps(m, indent=1, ensure_ascii=False).encode()
        return SEP.join([manifest, idf] + svms)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    b = tiny_bundle()
    write("fuzz_bundle", "tiny.bundle", b)
    manifest = b.split(SEP, 1)[0]
    m = json.loads(manifest)
    m["tokenizer"] = {"name": "icu", "options": {"traditional_to_simplified": True}}
    write("fuzz_bundle", "tiny-icu.bundle", SEP.join([json.dumps(m).encode()] + b.split(SEP)[1:]))
    write("fuzz_bundle", "manifest-only", manifest)

    text = "抓队伍建设 选优配强乡村骨干力量\n发展集体经济，壮大村级产业。\r\n（一）生态宜居\u3000\n"
    # fuzz_jsonl: config byte, chunk byte, then the stream
    jl = {
        "classify": '{"id":"a1","text":%s}\n' % json.dumps(text, ensure_ascii=False),
        "ops": '{"op":"health","id":1}\n{"op":"ready"}\n{"op":"model"}\n{"op":"stats","id":null}\n',
        "passages": '{"op":"classify","passages":["发展集体经济","",  "x"],"top_k":1,'
                    '"explain":true,"include_text":true,"threshold":0.2}\n',
        "errors": '{"op":"nope"}\n[1,2]\n{"text":5}\n{"id":{"a":1},"text":"x"}\n{bad json\n'
                  '{"text":"a","passages":["b"]}\n\n   \n{"text":"\\ud800"}\n',
        "reload": '{"op":"reload","id":"r"}\n{"op":"reload","path":"/etc"}\n'
                  '{"op":"reload","token":"s3cret","path":"../x"}\n{"op":"reload","path":5}\n',
        "crlf-eof": '{"id":1,"text":"乡村振兴"}\r\n{"id":2,"text":"最后一行没有换行"}',
    }
    for i, (name, s) in enumerate(sorted(jl.items())):
        write("fuzz_jsonl", name, bytes([i * 37 % 256, i]) + s.encode())
    write("fuzz_jsonl", "pipeline-paused", bytes([0x41, 1]) + ('{"text":"产业"}\n' * 6).encode())
    write("fuzz_jsonl", "too-long", bytes([0x08, 0]) + ('{"text":"%s"}\n' % ("长" * 80)).encode()
          + b'{"op":"health"}\n')
    write("fuzz_jsonl", "tcp-token", bytes([0x30, 0]) + b'{"op":"reload","token":"s3cret"}\n'
          b'{"op":"reload","token":"s3cre"}\n{"op":"reload","token":1}\n')

    body = json.dumps({"id": "h1", "text": text}, ensure_ascii=False).encode()
    batch = json.dumps({"documents": [{"id": 1, "text": "发展产业"}, {"id": 2, "passages": ["党建"]}],
                        "top_k": 1}, ensure_ascii=False).encode()
    ht = {
        "classify": b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
        "batch-close": b"POST /v1/classify?x=1 HTTP/1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                       % (len(batch), batch),
        "gets": b"GET /v1/health HTTP/1.1\r\n\r\nGET /v1/ready HTTP/1.1\r\n\r\nGET /v1/model HTTP/1.1\r\n\r\n"
                b"GET /v1/stats HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"
                b"DELETE /v1/health HTTP/1.1\r\n\r\n",
        "chunked": b"POST /v1/classify HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\n{\"tex\r\n0f\r\nt\":\"\xe4\xb9\xa1\xe6\x9d\x91\xe6\x8c\xaf\xe5\x85\xb4\"}\r\n0\r\n\r\n",
        "expect": b"POST /v1/classify HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 17\r\n\r\n"
                  b"{\"text\":\"\xe5\x85\x9a\xe5\xbb\xba\"}",
        "reload": b"POST /v1/reload HTTP/1.1\r\nAuthorization: Bearer s3cret\r\nContent-Length: 15\r\n\r\n"
                  b"{\"path\":\"/tmp\"}POST /v1/reload HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "http10": b"GET /v1/health HTTP/1.0\r\n\r\n",
        "bad": b"GARBAGE\r\n\r\n",
    }
    for i, (name, s) in enumerate(sorted(ht.items())):
        write("fuzz_http", name, bytes([i * 53 % 256, i]) + s)
    write("fuzz_http", "tcp-bearer", bytes([0x30, 0]) + ht["reload"])
    write("fuzz_http", "not-a-protocol", bytes([0, 0]) + b"\x16\x03\x01\x00")

    # fuzz_split: max_chars byte, heading_chars byte, flags byte, text
    for i, s in enumerate([text, "一、总体要求\n" + "长句子，" * 60 + "。\n\u2028第二段\u2029\x85末尾",
                           "a\r\nb\rc\x0bd\x0ce", " \t\u3000\ufeff标题\u200b\n正文内容。"]):
        write("fuzz_split", "t%d" % i, bytes([3 + i * 40, 40 - i, i]) + s.encode())
    write("fuzz_split", "invalid", bytes([7, 20, 0]) + b"ok\xc0\xafbad \xed\xa0\x80 \xf4\x90\x80\x80")

    for t in ("fuzz_tok_icu", "fuzz_tok_bigram"):
        write(t, "zh", b"\x00" + text.encode())
        write(t, "trad", b"\x01" + "鄉村振興發展產業，壯大集體經濟".encode())
        write(t, "mixed", b"\x02" + "5G网络 covid19 Straße ｆｕｌｌ ﾊﾝｶｸ ー 한국어 ☃ \U0001F600".encode())
        write(t, "invalid", b"\x03" + b"\xff\xfe\xc3(\xe4\xb8 abc \xed\xa0\x80\x00zh\xe4\xb8\xad")
    print("seeds written to %s" % CORPUS)


if __name__ == "__main__":
    sys.exit(main())
