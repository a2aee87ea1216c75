#!/usr/bin/python3
"""The strong, standard baseline themed's default model is compared against.

scikit-learn TfidfVectorizer (character 1-2-grams, sublinear TF) + one LinearSVC
per theme (C=0.5, balanced class weights). With --tune, each theme's threshold on
the decision value is tuned the way themed tunes its own: on out-of-fold
decision values of grouped (by article) k-fold cross-validation on the training
file only, to maximize F1. Never fits anything on the evaluation files.

  /usr/bin/python3 tools/baseline_sklearn.py --train ../shared/corpus/train.jsonl \
      --eval ../shared/corpus/dev.jsonl --eval ../shared/corpus/seeds.jsonl [--tune] [--json]
  /usr/bin/python3 tools/baseline_sklearn.py --multiclass-cv ../shared/bench/thucnews/train.jsonl

Needs Debian's python3-sklearn (hence /usr/bin/python3, not a pyenv python).
"""
import argparse
import json
import sys

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.svm import LinearSVC


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def vectorizer():
    return TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)


def label_matrix(rows, themes):
    y = np.zeros((len(rows), len(themes)), dtype=int)
    for i, r in enumerate(rows):
        for t in r["themes"]:
            if t in themes:
                y[i, themes.index(t)] = 1
    return y


def best_threshold(dec, y):
    order = np.argsort(-dec)
    d, yy = dec[order], y[order]
    tp = np.cumsum(yy)
    fp = np.cumsum(1 - yy)
    pos = yy.sum()
    f1 = 2 * tp / (tp + fp + pos)
    i = int(np.argmax(f1))
    return (d[i] + d[i + 1]) / 2 if i + 1 < len(d) else d[i] - 1e-9


def scores(y, p):
    tp = (y & p).sum(0)
    fp = ((1 - y) & p).sum(0)
    fn = (y & (1 - p)).sum(0)
    per = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    return float(micro), float(per.mean()), per


def multilabel(args):
    train = load(args.train)
    themes = ["organization", "talent", "industry", "governance", "culture", "ecology"]
    xt = [r["text"] for r in train]
    yt = label_matrix(train, themes)
    vec = vectorizer()
    X = vec.fit_transform(xt)
    thr = np.zeros(len(themes))
    if args.tune:
        groups = [r.get("doc", r["id"]) for r in train]
        oof = np.zeros(yt.shape)
        for tr, te in GroupKFold(n_splits=5).split(X, yt[:, 0], groups):
            v = vectorizer()
            Xtr = v.fit_transform([xt[i] for i in tr])
            Xte = v.transform([xt[i] for i in te])
            for k in range(len(themes)):
                m = LinearSVC(C=0.5, class_weight="balanced").fit(Xtr, yt[tr, k])
                oof[te, k] = m.decision_function(Xte)
        thr = np.array([best_threshold(oof[:, k], yt[:, k]) for k in range(len(themes))])
    models = [LinearSVC(C=0.5, class_weight="balanced").fit(X, yt[:, k]) for k in range(len(themes))]
    out = {}
    for path in args.eval:
        rows = load(path)
        Xe = vec.transform([r["text"] for r in rows])
        ye = label_matrix(rows, themes)
        pe = np.stack([(m.decision_function(Xe) > thr[k]).astype(int) for k, m in enumerate(models)], 1)
        micro, macro, per = scores(ye, pe)
        out[path] = {"micro_f1": round(micro, 4), "macro_f1": round(macro, 4),
                     "per_theme": {t: round(float(per[k]), 4) for k, t in enumerate(themes)}}
    if args.json:
        print(json.dumps({"tuned": args.tune, "results": out}, ensure_ascii=False))
    else:
        for path, r in out.items():
            print(f"{path}: micro-F1 {r['micro_f1']:.4f} macro-F1 {r['macro_f1']:.4f} "
                  f"({'tuned' if args.tune else 'untuned'} thresholds)")


def multiclass_cv(args):
    rows = load(args.multiclass_cv)
    x = [r["text"] for r in rows]
    y = np.array([r["themes"][0] for r in rows])
    accs = []
    for tr, te in StratifiedKFold(n_splits=5, shuffle=True, random_state=1).split(x, y):
        v = vectorizer()
        m = LinearSVC(C=0.5).fit(v.fit_transform([x[i] for i in tr]), y[tr])
        accs.append(float((m.predict(v.transform([x[i] for i in te])) == y[te]).mean()))
    print(json.dumps({"cv_accuracy": round(float(np.mean(accs)), 4), "folds": accs}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train")
    ap.add_argument("--eval", action="append", default=[])
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--multiclass-cv")
    args = ap.parse_args()
    if args.multiclass_cv:
        multiclass_cv(args)
    elif args.train and args.eval:
        multilabel(args)
    else:
        ap.error("give --train and --eval, or --multiclass-cv")


if __name__ == "__main__":
    sys.exit(main())
