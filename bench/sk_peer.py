#!/usr/bin/python3
"""scikit-learn peer for bench/bench.py (run with /usr/bin/python3, pinned to one core).

TfidfVectorizer(char 1-2-grams, sublinear tf) + LinearSVC(C=0.5), as
tools/baseline_sklearn.py and ../shared/bench/README.md. Fits on --train,
then times prediction only (vectorizer.transform + decision_function, in
process CPU time) on --predict (one JSON object per line, "text"), and
scores --test. Prints one JSON object.

  multiclass: one LinearSVC over the classes (sklearn's one-vs-rest),
              accuracy and macro-F1 of the first label
  multilabel: one LinearSVC per theme, balanced class weights, threshold 0,
              micro- and macro-F1 over the themes
"""
import argparse
import json
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--predict", required=True)
    ap.add_argument("--mode", choices=["multiclass", "multilabel"], required=True)
    ap.add_argument("--themes", default="")
    a = ap.parse_args()
    train, test = load(a.train), load(a.test)
    pred_texts = [r["text"] for r in load(a.predict)]
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    X = vec.fit_transform([r["text"] for r in train])
    out = {"n_predict": len(pred_texts)}
    if a.mode == "multiclass":
        y = np.array([r["themes"][0] for r in train])
        m = LinearSVC(C=0.5).fit(X, y)
        t0 = time.process_time()
        m.decision_function(vec.transform(pred_texts))
        out["predict_cpu_s"] = time.process_time() - t0
        yt = np.array([r["themes"][0] for r in test])
        p = m.predict(vec.transform([r["text"] for r in test]))
        out["accuracy"] = float((p == yt).mean())
        f1s = []
        for c in sorted(set(yt)):
            tp = int(((p == c) & (yt == c)).sum())
            fp = int(((p == c) & (yt != c)).sum())
            fn = int(((p != c) & (yt == c)).sum())
            f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
        out["macro_f1"] = float(np.mean(f1s))
    else:
        themes = a.themes.split(",")
        Y = np.array([[int(t in r["themes"]) for t in themes] for r in train])
        models = [LinearSVC(C=0.5, class_weight="balanced").fit(X, Y[:, k]) for k in range(len(themes))]
        t0 = time.process_time()
        Xp = vec.transform(pred_texts)
        for m in models:
            m.decision_function(Xp)
        out["predict_cpu_s"] = time.process_time() - t0
        Xt = vec.transform([r["text"] for r in test])
        Yt = np.array([[int(t in r["themes"]) for t in themes] for r in test])
        P = np.stack([(m.decision_function(Xt) > 0).astype(int) for m in models], 1)
        tp = (Yt & P).sum(0)
        fp = ((1 - Yt) & P).sum(0)
        fn = (Yt & (1 - P)).sum(0)
        out["micro_f1"] = float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1))
        out["macro_f1"] = float(np.mean(2 * tp / np.maximum(2 * tp + fp + fn, 1)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
