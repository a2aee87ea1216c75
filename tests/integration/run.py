#!/usr/bin/env python3
"""Integration test runner: finds tests/integration/test_*.py, runs every
test_* function in them (each starts the real daemon; see harness.py), and
prints "N passed, N failed" as its last line. Exit status 0 iff none failed.

  python3 tests/integration/run.py [SUBSTRING ...]   run only matching tests
"""
import glob
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

PER_TEST_TIMEOUT = 90


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout("test took longer than %ds" % int(PER_TEST_TIMEOUT * harness.SCALE))


def prepare_models(tmp):
    """Bundle A (served) and bundle B (same name, another version) for reloads."""
    a = os.environ.get("THEMED_TEST_MODEL")
    if not a:
        default = os.path.join(harness.ROOT, "models", "rural-themes")
        if os.path.isfile(os.path.join(default, "manifest.json")):
            a = default
        else:
            a = harness.train_model(os.path.join(tmp, "model-a"), name="rural-themes")
        os.environ["THEMED_TEST_MODEL"] = a
    if not os.environ.get("THEMED_TEST_MODEL_B"):
        with open(os.path.join(a, "manifest.json")) as f:
            name = json.load(f).get("name", "rural-themes")
        b = harness.train_model(os.path.join(tmp, "model-b"), version="2.0.0-test", name=name)
        os.environ["THEMED_TEST_MODEL_B"] = b


def main(argv):
    for exe in (harness.THEMED, harness.THEMECTL):
        if not os.access(exe, os.X_OK):
            print("integration: %s not built (make %s)" % (exe, os.path.relpath(exe, harness.ROOT)))
            print("0 passed, 1 failed")
            return 1
    tmp = tempfile.mkdtemp(prefix="themed-it-models-")
    try:
        prepare_models(tmp)
    except Exception as e:  # noqa: BLE001
        print("integration: cannot prepare models: %s" % e)
        print("0 passed, 1 failed")
        return 1
    print("integration: %s, model %s" % (harness.THEMED, os.environ["THEMED_TEST_MODEL"]))
    tests = []
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        mod = importlib.import_module(os.path.basename(path)[:-3])
        for name in sorted(dir(mod)):
            fn = getattr(mod, name)
            if name.startswith("test_") and callable(fn):
                full = "%s.%s" % (mod.__name__, name)
                if not argv or any(a in full for a in argv):
                    tests.append((full, fn))
    signal.signal(signal.SIGALRM, _alarm)
    passed = failed = 0
    t_all = time.monotonic()
    for full, fn in tests:
        t0 = time.monotonic()
        signal.alarm(int(PER_TEST_TIMEOUT * harness.SCALE))
        try:
            fn()
            signal.alarm(0)
            passed += 1
            print("ok   %-55s %6.2fs" % (full, time.monotonic() - t0), flush=True)
        except BaseException as e:  # noqa: BLE001
            signal.alarm(0)
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            print("FAIL %-55s %6.2fs" % (full, time.monotonic() - t0), flush=True)
            traceback.print_exc(file=sys.stdout)
    if not harness.KEEP:
        shutil.rmtree(tmp, ignore_errors=True)
    print("integration: %.1fs" % (time.monotonic() - t_all))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
