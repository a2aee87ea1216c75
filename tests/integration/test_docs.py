"""The examples in docs/protocol.md are what the daemon answers with the bundled model.

They went stale once already (a retrained bundle changed the scores); these tests
make the next retrain say so. They compare with the bundled default model only.
"""
import json
import os
import re
import subprocess

from harness import ROOT, THEMECTL, Daemon, check, model_dir, plugin_dir

PROTOCOL = os.path.join(ROOT, "docs", "protocol.md")
DEFAULT_MODEL = os.path.join(ROOT, "models", "rural-themes")


def _doc():
    with open(PROTOCOL, encoding="utf-8") as f:
        return f.read()


def _bundled():
    """True when the tests serve the bundled default model (the docs' examples are its)."""
    if os.path.realpath(model_dir()) != os.path.realpath(DEFAULT_MODEL):
        print("skipped: THEMED_TEST_MODEL is not the bundled models/rural-themes")
        return False
    return True


def _json_block(doc, first):
    """The ```json block of the doc that starts with `first`."""
    for block in re.findall(r"```json\n(.*?)```", doc, re.S):
        if block.startswith(first):
            return block
    raise AssertionError("docs/protocol.md: no json block starting with %r" % first)


def test_docs_protocol_result_example_is_the_daemons_answer():
    if not _bundled():
        return
    doc = _doc()
    m = re.search(r"curl --unix-socket \$S http://x/v1/classify -d '(\{\"id\":\"a1\".*?\})'", doc)
    check(m, "docs/protocol.md: the /v1/classify curl example is gone")
    body = json.loads(m.group(1))  # single quotes: the shell passes \n on, JSON reads it
    want = json.loads(_json_block(doc, '{"id":"a1","model"'))
    with Daemon() as d:
        st, _, got = d.request("POST", "/v1/classify", json.dumps(body, ensure_ascii=False))
        check(st == 200, (st, got))
        check(got == want, "docs/protocol.md's result example differs from the answer:\n%s\n%s"
              % (json.dumps(want, ensure_ascii=False), json.dumps(got, ensure_ascii=False)))


def test_docs_protocol_explain_example_is_themectls_output():
    if not _bundled():
        return
    doc = _doc()
    want = json.loads("{" + _json_block(doc, '"explain"') + "}")["explain"]
    m = re.search(r"\(the heading `(.+?)` of the article `(.+?)` / `(.+?)` / `(.+?)`", doc)
    check(m, "docs/protocol.md: the explanation example's article is not named")
    text = "\n".join(m.group(k) for k in (2, 3, 4)) + "\n"
    p = subprocess.run([THEMECTL, "classify", "--model", DEFAULT_MODEL, "--plugins", plugin_dir(),
                        "--explain"], input=text.encode(), capture_output=True, timeout=60)
    check(p.returncode == 0, p.stderr.decode())
    got = json.loads(p.stdout)["passages"][0]["explain"]
    check(got == want, "docs/protocol.md's explain example differs from themectl's:\n%s\n%s"
          % (json.dumps(want, ensure_ascii=False), json.dumps(got, ensure_ascii=False)))
