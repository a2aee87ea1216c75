#!/usr/bin/python3
"""Builds the domain word list for the `lexicon` tokenizer from labelled training data.

Candidates are the character n-grams (2 to --max-len characters) of the CJK runs of the
training passages that occur in at least --min-df passages. Each is scored by how much it
tells about the labels: the largest chi-square, over the themes and `other`, of the 2x2 table
"passage contains the n-gram" x "passage carries the label". The --top best are kept, minus
the n-grams that are (nearly) always part of one longer kept n-gram (the fragment adds
nothing the longer word does not), those that begin or end with a function character
(的, 了, 和, ...: phrase fragments, not words) and those whose neighbours on one side are
nearly always the same characters (boundary entropy below --min-entropy: "村基" is almost
always followed by 层, so it is a piece of 村基层, not a word), plus the hand-picked domain terms of HAND below, which
are kept whatever their counts. Each line is "word<TAB>frequency" (passages containing it,
at least 1), sorted by frequency, then by the word.

Use the training file only: never dev or seeds, which judge the model.

  /usr/bin/python3 tools/build_lexicon.py --data ../shared/corpus/train.jsonl \
      --out models/lexicon/rural.txt

Only the standard library is needed.
"""
import argparse
import json
import re
import sys
from collections import Counter, defaultdict

# Terms of the domain an analyst would expect to be words, whatever their counts in one
# training file (../shared/themes.md names most of them).
HAND = """
两委 村两委 一肩挑 第一书记 驻村工作队 集体经济 村集体经济 新型集体经济 人居环境 人居环境整治
三清一改 厕所革命 美丽乡村 美丽庭院 乡风文明 移风易俗 村规民约 好家风 红黑榜 道德评议
网格化 网格员 枫桥经验 四议两公开 小微权力清单 村务监督 村务公开 扫黑除恶 矛盾调解 便民服务
自治 法治 德治 三治融合 党支部 党小组 党总支 党组织 基层党组织 战斗堡垒 软弱涣散 评星定级
党员先锋 党建引领 抓党建促乡村振兴 述职评议考核 党建联建 党群服务中心 头雁 带头人 后备人才
村党组织书记 返乡创业 新农人 乡贤 高校毕业生 科技特派员 专家服务团 人才振兴 组织振兴 产业振兴
文化振兴 生态振兴 乡村振兴 乡村治理 合作社 家庭农场 农民专业合作社 电商 农村电商 乡村旅游
农文旅 共同富裕 消薄 增收 产业链 龙头企业 生态宜居 绿色发展 污水治理 垃圾分类 植树造林
新时代文明实践 文明实践站 非遗 红色教育 一村一品 致富带头人 人才培训 驻村帮扶
"""


def load(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    rows.append(json.loads(line))
    return rows


CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def ngrams(text, max_len):
    seen = set()
    for run in CJK_RUN.findall(text):
        for n in range(2, max_len + 1):
            for i in range(len(run) - n + 1):
                seen.add(run[i:i + n])
    return seen


# Function characters that begin or end phrases, not words: an n-gram with one at an edge
# ("的重", "村党") is a fragment that would steal characters from real words.
EDGE = set("的了是和与及在把被也都而并着这其之个或向让由")


def wordlike(g):
    return g[0] not in EDGE and g[-1] not in EDGE


def boundary_entropy(rows, grams, max_len):
    """min(left, right) entropy of the characters next to each gram, over all occurrences.
    A run edge counts as a new neighbour each time (an edge is a free boundary)."""
    from math import log
    left = defaultdict(Counter)
    right = defaultdict(Counter)
    edge = 0
    for r in rows:
        for run in CJK_RUN.findall(r["text"]):
            for n in range(2, max_len + 1):
                for i in range(len(run) - n + 1):
                    g = run[i:i + n]
                    if g not in grams:
                        continue
                    edge += 1
                    left[g][run[i - 1] if i > 0 else edge] += 1
                    edge += 1
                    right[g][run[i + n] if i + n < len(run) else edge] += 1

    def h(c):
        t = sum(c.values())
        return -sum(v / t * log(v / t) for v in c.values())

    return {g: min(h(left[g]), h(right[g])) for g in grams}


def chi2(a, b, c, d):
    """2x2 table: a = gram & label, b = gram & not label, c = no gram & label, d = neither."""
    n = a + b + c + d
    den = (a + b) * (c + d) * (a + c) * (b + d)
    return n * (a * d - b * c) ** 2 / den if den else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, help="labelled JSON Lines (train only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-df", type=int, default=5)
    ap.add_argument("--max-len", type=int, default=6)
    ap.add_argument("--top", type=int, default=3000)
    ap.add_argument("--min-entropy", type=float, default=1.0,
                    help="least boundary entropy (nats) on either side: fragments of longer words have little")
    ap.add_argument("--nest", type=float, default=0.9,
                    help="drop an n-gram when one longer kept n-gram has at least this share of its passages")
    args = ap.parse_args()

    rows = load(args.data)
    labels = sorted({t for r in rows for t in r["themes"]})
    n = len(rows)
    df = Counter()
    dfl = defaultdict(Counter)  # label -> gram -> passages
    nl = Counter()
    for r in rows:
        grams = ngrams(r["text"], args.max_len)
        df.update(grams)
        for t in r["themes"]:
            nl[t] += 1
            dfl[t].update(grams)
    scored = []
    for g, k in df.items():
        if k < args.min_df or not wordlike(g):
            continue
        best = 0.0
        for t in labels:
            a = dfl[t][g]
            best = max(best, chi2(a, k - a, nl[t] - a, n - k - (nl[t] - a)))
        scored.append((best, g))
    ent = boundary_entropy(rows, {g for _, g in scored}, args.max_len)
    scored = [(c, g) for c, g in scored if ent[g] >= args.min_entropy]
    scored.sort(key=lambda x: (-x[0], x[1]))
    kept = [g for _, g in scored[: args.top]]
    keep = set(kept)
    # A fragment nearly always inside one longer kept n-gram says nothing of its own.
    for g in sorted(kept, key=len):
        for h in keep:
            if len(h) > len(g) and g in h and df[h] >= args.nest * df[g]:
                keep.discard(g)
                break
    hand = [w for w in HAND.split() if w]
    words = {g: max(df[g], 1) for g in keep}
    for w in hand:
        words[w] = max(words.get(w, 0), df.get(w, 0), 1)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("# themed lexicon tokenizer word list: word<TAB>frequency (passages)\n")
        f.write(f"# built by tools/build_lexicon.py from {len(rows)} passages; "
                f"min_df {args.min_df}, max_len {args.max_len}, min_entropy {args.min_entropy}, "
                f"top {args.top}, nest {args.nest}; "
                f"{len(hand)} hand-picked terms\n")
        for w, k in sorted(words.items(), key=lambda x: (-x[1], x[0])):
            f.write(f"{w}\t{k}\n")
    print(f"{args.out}: {len(words)} words ({len(keep)} selected, {len(hand)} hand-picked)",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
