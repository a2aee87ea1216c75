#!/usr/bin/python3
"""scikit-learn screen over a bundle's own vectors of the domain corpus (docs/model.md).

The mirror of `themectl train`'s recipe on the vectors the bundle makes (heading and neighbour
blocks included): per theme, hinge LinearSVC, C from {0.125 .. 4} and a threshold on the
decision value that maximizes the out-of-fold F1, 5 folds grouped by article on train.jsonl;
then a final fit on all of train.jsonl, scored on dev.jsonl and seeds.jsonl. Modes:

  base    the vectors as they are
  nbsq    NB-SVM-style scaling: each feature times sqrt|r|, r its log-count ratio between the
          theme's positives and negatives (smoothing ALPHA), computed on the training folds only
  nb      each feature times r (the classic NB-SVM scaling)
  clean   drop the training passages whose label an inner grouped 5-fold CV contradicts by a
          margin over ALPHA (y * decision < -ALPHA), then fit on the rest (confident learning)
  rbf     libsvm's C-SVC (scikit-learn's SVC) with the RBF kernel exp(-ALPHA |x - y|^2)
  poly2   the same with the kernel (x.y + ALPHA)^2 (C grid 0.5 .. 8 for both kernels)
  pos     nine more features, times ALPHA: the passage is its article's first, second, last or
          second to last, and which fifth of the article it is in
  center  each passage's vector minus ALPHA times its article's mean vector, L2-normalized
          again (what sets a passage apart from the rest of its article)
  neg     out-of-domain passages (--neg SVM, e.g. THUCNews headlines vectorized by the same
          bundle) added to every training fit as negatives for every theme, weight ALPHA
  lsa     a dense topic vector, times ALPHA: a truncated SVD (--lsa-dims, 100) of character
          1-2-gram tf-idf fitted on train.jsonl (plus --lsa-text JSONL, unlabelled)

  for f in train dev seeds; do
    build/themectl vectorize --model models/rural-themes --data ../shared/corpus/$f.jsonl \\
      --out VECDIR/$f.svm
  done
  /usr/bin/python3 tools/screen_domain.py VECDIR [MODE [ALPHA]] [--corpus ../shared/corpus]
                                           [--article-power P] [--with VECDIR2 [--weight W]]
                                           [--lsa-dims D] [--lsa-text JSONL]

--with VECDIR2 [--weight W] averages this model with a second bundle's (its vectors of the same
three files, fitted the same way), each model's decision values divided by their out-of-fold
standard deviation, W the second's share; the thresholds are tuned on the average.

--article-power P weights each training passage by n^-P, n its article's passage count (so long
articles do not dominate), normalized to a mean weight of 1 (linear modes).

Needs Debian's python3-sklearn. Prints the chosen C per theme and micro / macro F1 (lowest
theme) for CV, dev and seeds (~30 s per mode).
"""
import argparse
import json
from collections import Counter
import warnings

import numpy as np
from scipy import sparse
from sklearn.datasets import load_svmlight_file
from sklearn.model_selection import GroupKFold
from sklearn.svm import SVC, LinearSVC

warnings.filterwarnings("ignore")
THEMES = ["organization", "talent", "industry", "governance", "culture", "ecology"]
CS = [0.125, 0.25, 0.5, 1, 2, 4]
NFEAT = 4 * 262144 + 16  # the passage's, heading's, previous and next passage's spaces


def scores(P, Y):
    tp, fp, fn = (P * Y).sum(0), (P * (1 - Y)).sum(0), ((1 - P) * Y).sum(0)
    f = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()), f.mean(), f.min()


def best_threshold(s, y):
    o = np.argsort(-s)
    tp = np.cumsum(y[o])
    i = int(np.argmax(2 * tp / (np.arange(1, len(s) + 1) + y.sum())))
    return (s[o][i] + (s[o][i + 1] if i + 1 < len(s) else s[o][i] - 1)) / 2


def position_flags(rows):
    """Per passage: first, second, last, second to last of its article, and which fifth of
    the article it is in (rows of one article are consecutive and in order)."""
    docs = [r["doc"] for r in rows]
    n, k = Counter(docs), Counter()
    F = np.zeros((len(rows), 9))
    for i, d in enumerate(docs):
        j = k[d]
        k[d] += 1
        F[i, 0], F[i, 1] = j == 0, j == 1
        F[i, 2], F[i, 3] = j == n[d] - 1, j == n[d] - 2
        F[i, 4 + min(4, 5 * j // n[d])] = 1
    return sparse.csr_matrix(F)


def lsa_vectors(R, dims, extra):
    """Latent semantic analysis: a truncated SVD of character 1-2-gram tf-idf, fitted on
    train.jsonl's text (plus the "text" of every line of the JSON Lines files in extra, as
    unlabelled text; never dev or seeds), then each passage's L2-normalized projection."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize
    texts = [r["text"] for r in R["train"]]
    for path in extra:
        texts += [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    tf = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True, min_df=2).fit(texts)
    svd = TruncatedSVD(dims, random_state=1).fit(tf.transform(texts))
    return {s: sparse.csr_matrix(normalize(svd.transform(tf.transform([r["text"] for r in R[s]]))))
            for s in R}


def centered(x, rows, alpha):
    """Each passage's vector minus ALPHA times its article's mean vector, L2-normalized again:
    a token every passage of the article has (党建 in an article about 党建) weighs less."""
    from sklearn.preprocessing import normalize
    docs = [r["doc"] for r in rows]
    index = {d: k for k, d in enumerate(dict.fromkeys(docs))}
    member = sparse.csr_matrix((np.ones(len(docs)), ([index[d] for d in docs], np.arange(len(docs)))))
    mean = sparse.diags(1 / np.asarray(member.sum(1)).ravel()) @ member @ x
    return normalize(sparse.csr_matrix(x - alpha * (member.T @ mean)))


def theme_scores(a, R, Y, vecdir):
    """Per theme, the C of the best out-of-fold F1; returns the chosen Cs, the out-of-fold
    decision values at them (passages x themes) and a final fit's on dev and seeds."""
    X = {s: sparse.csr_matrix(load_svmlight_file(f"{vecdir}/{s}.svm", n_features=NFEAT)[0])
         for s in R}

    if a.mode == "pos":  # where the passage sits in its article, as ALPHA-weighted flags
        X = {s: sparse.hstack([X[s], a.alpha * position_flags(R[s])]).tocsr() for s in X}
    if a.mode == "lsa":  # a dense topic vector per passage, ALPHA-weighted
        Z = lsa_vectors(R, a.lsa_dims, a.lsa_text)
        X = {s: sparse.hstack([X[s], a.alpha * Z[s]]).tocsr() for s in X}

    if a.mode == "center":  # what sets the passage apart from its own article
        X = {s: centered(X[s], R[s], a.alpha) for s in X}

    neg = None
    if a.mode == "neg":
        neg = sparse.csr_matrix(load_svmlight_file(a.neg, n_features=NFEAT)[0])

    kernel = a.mode in ("rbf", "poly2")
    if kernel:  # Gram matrices against train.jsonl, from the linear ones
        G = {s: (X[s] @ X["train"].T).toarray() for s in X}
        sq = {s: np.asarray(X[s].multiply(X[s]).sum(1)).ravel() for s in X}
        K = {s: np.exp(-a.alpha * (sq[s][:, None] + sq["train"][None, :] - 2 * G[s]))
             if a.mode == "rbf" else (G[s] + a.alpha) ** 2 for s in X}

    def ratio(x, y):
        if a.mode not in ("nb", "nbsq"):
            return None
        p = np.asarray(x[y == 1].sum(0)).ravel() + a.alpha
        q = np.asarray(x[y == 0].sum(0)).ravel() + a.alpha
        r = np.log((p / p.sum()) / (q / q.sum()))
        return r if a.mode == "nb" else np.sqrt(np.abs(r))

    def scaled(x, r):
        return x if r is None else x @ sparse.diags(r)

    docs = [r["doc"] for r in R["train"]]
    size = Counter(docs)
    weight = np.array([size[d] ** -a.article_power for d in docs])
    weight *= len(weight) / weight.sum()

    def fit(x, y, c, w=None):
        return LinearSVC(C=c, loss="hinge", max_iter=20000, dual=True).fit(x, y, sample_weight=w)

    def kept(rows, y, c):
        """The rows of train.jsonl a clean fit keeps (all unless mode clean)."""
        if a.mode != "clean":
            return rows
        inner = np.zeros(len(rows))
        for tr, te in GroupKFold(n_splits=5).split(rows, groups=[docs[i] for i in rows]):
            inner[te] = fit(X["train"][rows[tr]], y[tr], c).decision_function(X["train"][rows[te]])
        return rows[(2 * y - 1) * inner > -a.alpha]

    def decision(rows, col, c, test, test_set):
        """Fits theme `col` on train.jsonl's `rows`; decision values of `test` rows of
        `test_set` (a split name)."""
        y = Y["train"][rows, col]
        if kernel:
            m = SVC(C=c, kernel="precomputed").fit(K["train"][np.ix_(rows, rows)], y)
            return m.decision_function(K[test_set][np.ix_(test, rows)])
        keep = kept(rows, y, c)
        y = Y["train"][keep, col]
        r = ratio(X["train"][keep], y)
        x, w = X["train"][keep], weight[keep]
        if a.mode == "neg":  # unlabelled out-of-domain text as negatives for every theme
            x = sparse.vstack([x, neg]).tocsr()
            y = np.concatenate([y, np.zeros(neg.shape[0], dtype=y.dtype)])
            w = np.concatenate([w, np.full(neg.shape[0], a.alpha)])
        return fit(scaled(x, r), y, c, w).decision_function(scaled(X[test_set][test], r))

    folds = list(GroupKFold(n_splits=5).split(X["train"], groups=docs))
    oofs, tests, chosen = [], {"dev": [], "seeds": []}, []
    every = np.arange(len(R["train"]))
    for j in range(len(THEMES)):
        y, best = Y["train"][:, j], None
        for c in ([0.5, 1, 2, 4, 8] if kernel else CS):
            oof = np.zeros(len(y))
            for tr, te in folds:
                oof[te] = decision(tr, j, c, te, "train")
            th = best_threshold(oof, y)
            f = 2 * ((oof >= th) & (y == 1)).sum() / ((oof >= th).sum() + y.sum())
            if best is None or f > best[0]:
                best = (f, c, oof)
        chosen.append(best[1])
        oofs.append(best[2])
        for s in tests:
            tests[s].append(decision(every, j, best[1], np.arange(len(R[s])), s))
    return chosen, np.array(oofs).T, {s: np.array(v).T for s, v in tests.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vecdir")
    ap.add_argument("mode", nargs="?", default="base", choices=["base", "nb", "nbsq", "clean", "rbf", "poly2", "pos", "lsa", "center", "neg"])
    ap.add_argument("alpha", nargs="?", type=float, default=1.0)
    ap.add_argument("--corpus", default="../shared/corpus")
    ap.add_argument("--article-power", type=float, default=0.0)
    ap.add_argument("--with", dest="other", metavar="VECDIR2",
                    help="ensemble: a second bundle's vectors of the same files, fitted the same way")
    ap.add_argument("--weight", type=float, default=0.5, help="VECDIR2's share of the ensemble")
    ap.add_argument("--lsa-dims", type=int, default=100, help="lsa: dimensions kept")
    ap.add_argument("--lsa-text", action="append", default=[], metavar="JSONL",
                    help="lsa: more unlabelled text to fit on (repeatable)")
    ap.add_argument("--neg", metavar="SVM", help="neg: vectors of out-of-domain passages, each a "
                    "negative for every theme with sample weight ALPHA (training folds only)")
    a = ap.parse_args()
    R, Y = {}, {}
    for s in ("train", "dev", "seeds"):
        R[s] = [json.loads(line) for line in open(f"{a.corpus}/{s}.jsonl", encoding="utf-8")]
        Y[s] = np.array([[t in r["themes"] for t in THEMES] for r in R[s]], dtype=int)
    runs = [(1.0, theme_scores(a, R, Y, a.vecdir))]
    if a.other:  # each model's decision values in units of their out-of-fold spread
        runs = [(1 - a.weight, runs[0][1]), (a.weight, theme_scores(a, R, Y, a.other))]
    oof = sum(w * o / o.std(0) for w, (_, o, _) in runs)
    ths = [best_threshold(oof[:, j], Y["train"][:, j]) for j in range(len(THEMES))]
    print(f"{a.mode} alpha {a.alpha} article-power {a.article_power}"
          + (f" with {a.other} weight {a.weight}" if a.other else "")
          + ": C " + "; ".join(str(c) for _, (c, _, _) in runs))
    print("  CV    %.4f / %.4f (lowest %.3f)" % scores((oof >= ths).astype(int), Y["train"]))
    for s in ("dev", "seeds"):
        t = sum(w * d[s] / o.std(0) for w, (_, o, d) in runs)
        print(f"  {s:5} %.4f / %.4f (lowest %.3f)" % scores((t >= ths).astype(int), Y[s]))


if __name__ == "__main__":
    main()
