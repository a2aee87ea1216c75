#!/usr/bin/python3
"""scikit-learn screen behind docs/model.md's THUCNews rows (5-fold stratified CV, seed 1).

Which differences between themectl and the scikit-learn baseline matter: tokens (the bigram
plugin's, with and without keep_punct / split_words, emulated here on NFKC_Casefold text), loss
(hinge vs squared hinge), C, Crammer-Singer, and complement naive Bayes.

  /usr/bin/python3 tools/screen_thucnews.py [../shared/bench/thucnews/train.jsonl [VECTORS.svm]]

VECTORS.svm (optional): a bundle's own vectors of the same file, from
  build/themectl vectorize --model BUNDLE --data ../shared/bench/thucnews/train.jsonl --out VECTORS.svm
scored with hinge LinearSVC C=2 under five different (unstratified) fold assignments.

Needs Debian's python3-sklearn. Prints one "accuracy  setting" line per row (~4 minutes).
"""
import json
import sys
import unicodedata
import warnings

import numpy as np
from sklearn.calibration import _SigmoidCalibration
from sklearn.datasets import load_svmlight_file
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.naive_bayes import ComplementNB
from sklearn.svm import LinearSVC

warnings.filterwarnings("ignore")


def cls(c):
    """The bigram plugin's classes: C(JK), W(ord), S(eparator)."""
    if c.isascii():
        return "W" if c.isalnum() else "S"
    if "\u4e00" <= c <= "\u9fff":
        return "C"
    if c.isalpha():
        n = unicodedata.name(c, "")
        return "C" if any(k in n for k in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")) else "W"
    return "W" if c.isdecimal() else "S"


def bigram_tokens(s, keep_punct=False, split_words=False, n=2):
    """The bigram plugin's tokens (approximately: Python's NFKC + casefold)."""
    s = unicodedata.normalize("NFKC", s).casefold()
    out, run, word = [], [], ""

    def flush():
        for i in range(len(run)):
            for k in range(min(n, i + 1), 0, -1):
                out.append("".join(run[i - k + 1:i + 1]))
        run.clear()

    for c in s:
        k = cls(c)
        if k == "W" and not split_words:
            word += c
            continue
        if word:
            flush()
            out.append(word)
            word = ""
        if k == "C" or k == "W" or (keep_punct and k == "S"):
            if c.isspace():
                if run and run[-1] == " ":
                    continue
                c = " "
            run.append(c)
        else:
            flush()
    if word:
        flush()
        out.append(word)
    flush()
    return out


class NBSVM:
    """One-vs-rest linear SVMs over binary features scaled by each class's log-count ratio
    (Wang & Manning 2012)."""

    def __init__(self, C):
        self.C = C

    def fit(self, X, y):
        X = (X > 0).astype(float)
        self.classes, self.parts = np.unique(y), []
        for c in self.classes:
            pos = y == c
            p, q = 1 + X[pos].sum(0), 1 + X[~pos].sum(0)
            r = np.asarray(np.log((p / p.sum()) / (q / q.sum()))).ravel()
            self.parts.append((r, LinearSVC(C=self.C).fit(X.multiply(r).tocsr(), pos.astype(int))))
        return self

    def predict(self, X):
        X = (X > 0).astype(float)
        d = np.stack([m.decision_function(X.multiply(r).tocsr()) for r, m in self.parts], 1)
        return self.classes[d.argmax(1)]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "../shared/bench/thucnews/train.jsonl"
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    x = [r["text"] for r in rows]
    y = np.array([r["themes"][0] for r in rows])
    folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=1).split(x, y))

    def cv(name, vec, clf):
        accs = []
        for tr, te in folds:
            v = vec()
            m = clf().fit(v.fit_transform([x[i] for i in tr]), y[tr])
            accs.append(float((m.predict(v.transform([x[i] for i in te])) == y[te]).mean()))
        print(f"{np.mean(accs):.4f}  {name}", flush=True)

    char12 = lambda: TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    for C in (0.5, 1, 2):
        cv(f"char 1-2, squared hinge, C={C}", char12, lambda: LinearSVC(C=C))
        cv(f"char 1-2, hinge, C={C}", char12, lambda: LinearSVC(C=C, loss="hinge", max_iter=20000))
    cv("char 1-2, Crammer-Singer, C=0.5", char12, lambda: LinearSVC(C=0.5, multi_class="crammer_singer"))
    for kp, sw in ((False, False), (True, False), (True, True)):
        for C in (0.5, 2):
            vec = lambda: TfidfVectorizer(analyzer=lambda s: bigram_tokens(s, kp, sw), sublinear_tf=True)
            cv(f"bigram keep_punct={kp} split_words={sw}, squared hinge, C={C}", vec,
               lambda: LinearSVC(C=C))
    tri = lambda: TfidfVectorizer(analyzer=lambda s: bigram_tokens(s, True, True, 3), sublinear_tf=True)
    cv("bigram keep_punct split_words + trigrams, squared hinge, C=2", tri, lambda: LinearSVC(C=2))
    counts = lambda: CountVectorizer(analyzer="char", ngram_range=(1, 2))
    cv("char 1-2 counts, complement naive Bayes, alpha=1", counts, lambda: ComplementNB(alpha=1.0))
    for C in (0.1, 1):
        cv(f"char 1-2, NB-SVM, C={C}", counts, lambda: NBSVM(C))

    # Argmax over per-class Platt-calibrated scores (what themectl --multiclass does) vs raw.
    classes = np.unique(y)
    for C in (1, 2):
        oof = np.zeros((len(y), len(classes)))
        for tr, te in folds:
            v = char12()
            m = LinearSVC(C=C, loss="hinge", max_iter=20000).fit(v.fit_transform([x[i] for i in tr]), y[tr])
            oof[te] = m.decision_function(v.transform([x[i] for i in te]))
        cal = np.stack([_SigmoidCalibration().fit(oof[:, k], (y == c).astype(int)).predict(oof[:, k])
                        for k, c in enumerate(classes)], 1)
        print(f"{(classes[oof.argmax(1)] == y).mean():.4f}  char 1-2, hinge, C={C}, raw argmax", flush=True)
        print(f"{(classes[cal.argmax(1)] == y).mean():.4f}  char 1-2, hinge, C={C}, Platt argmax", flush=True)

    if len(sys.argv) > 2:
        X, _ = load_svmlight_file(sys.argv[2], zero_based=False)
        X = X.tocsr()
        for seed in range(1, 6):
            accs = []
            for tr, te in KFold(5, shuffle=True, random_state=seed).split(X):
                m = LinearSVC(C=2, loss="hinge", max_iter=20000).fit(X[tr], y[tr])
                accs.append(float((m.predict(X[te]) == y[te]).mean()))
            print(f"{np.mean(accs):.4f}  {sys.argv[2]}, hinge, C=2, KFold seed {seed}", flush=True)


if __name__ == "__main__":
    main()
