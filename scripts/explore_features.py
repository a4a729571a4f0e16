"""Issue 11 exploration: new pair-feature groups measured with the same repeated, grouped CV as `eval --cv`.

Not wired into the service. Each new group is computed here from the token states of up to 8 windows per text
and handed to the CV's feature table, so every variant is scored on the same 5 x 5 folds (seed 0, threshold 0.5,
the packaged MLP recipe) as `eval --cv --space current`. Variants (`+` joins groups; `base` = cos,len,lex):
  prm      the prompt: each answer's cosine to the prompt (mean, difference), the answers' cosine with the
           prompt's direction projected out (mean and first window), word Jaccard outside the prompt's words
  tok      BERTScore-style greedy alignment of the last-layer token states of all windows (F1, min, max of P/R)
  w1 / w2  the packaged groups from the first window only / the first and last windows (the cost question)
  lab      who labelled the pair, one-hot in training and set to the training mean when predicting
  --bag N  average N heads fitted with different seeds

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/explore_features.py --cache /tmp/darling-states.pt \
        --variants base,base+prm,base+tok,base+prm+tok,w1,w2 --json out.json

Measured on the packaged 1,000 pairs (balanced accuracy, mean [95% Nadeau-Bengio CI] over 25 folds; ROC-AUC):
  base 75.3 [71.6, 79.0] 0.820 | base+prm 74.0 [70.7, 77.3] 0.815 | base+tok 74.5 [70.8, 78.1] 0.817
  base+prm+tok 73.4 [69.6, 77.2] 0.810 | w1 75.0 [71.6, 78.3] 0.815 | w2 75.7 [72.0, 79.5] 0.821
  w1+lab 70.3 [66.0, 74.5] 0.775 | w1 --bag 5 74.8 [72.0, 77.7] 0.818
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import torch

from models.backends.embedding import EmbeddingClassifier, packaged_minilm_path, text_key
from models.backends.embedding_head import SCALAR_GROUPS, TextView, batch_features, word_set
from models.backends.loading import LoadOptions
from models.training import cv as cvmod
from models.training.data import read_idea_pairs, read_pairs
from models.training.token_cache import encode_texts, views_from_states


def prompt_features(a: TextView, b: TextView, p: torch.Tensor, pw: frozenset[str]) -> list[float]:
    ca, cb = float(a.mean @ p), float(b.mean @ p)
    u = torch.nn.functional.normalize(a.mean - ca * p, dim=-1)
    v = torch.nn.functional.normalize(b.mean - cb * p, dim=-1)
    fa = torch.nn.functional.normalize(a.first - float(a.first @ p) * p, dim=-1)
    fb = torch.nn.functional.normalize(b.first - float(b.first @ p) * p, dim=-1)
    wa, wb = a.words - pw, b.words - pw
    return [
        (ca + cb) / 2,
        abs(ca - cb),
        float(u @ v),
        float(fa @ fb),
        len(wa & wb) / max(1, len(wa | wb)),
    ]


def token_features(sa: torch.Tensor, sb: torch.Tensor) -> list[float]:
    sim = sa @ sb.T
    r, p = float(sim.max(1).values.mean()), float(sim.max(0).values.mean())
    f = 2 * p * r / max(1e-6, p + r)
    return [f, min(p, r), max(p, r)]


def token_matrix(states: list[torch.Tensor]) -> torch.Tensor:
    body = [h[1:-1] if len(h) > 2 else h for h in states]
    return torch.nn.functional.normalize(torch.cat(body).float(), dim=-1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/darling-states.pt")
    ap.add_argument("--variants", default="base,prm,tok,prm+tok")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rule", default="prior")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--wd", type=float, default=1e-2)
    ap.add_argument("--json", default="")
    ap.add_argument("--bag", type=int, default=1, help="Average this many heads fitted with different seeds.")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    import models.data.noveltybench_pairs as pkg
    import models.training.ideas as ideas_pkg

    pairs = read_pairs(pkg.__path__[0] + "/train.jsonl")
    ideas_file = ideas_pkg.__path__[0] + "/short_ideas.json"
    with open(ideas_file) as f:
        idea_prompts = [p["prompt"] for p in json.load(f)["prompts"]]
    extra = [replace(p, group=idea_prompts[int(p.id.split(":")[1])]) for p in read_idea_pairs(ideas_file)]

    base = packaged_minilm_path()
    enc = EmbeddingClassifier.load(base, LoadOptions(device="cpu"), head="none")
    from models.backends.base import weights_digest

    enc = EmbeddingClassifier(enc.model, enc.tokenizer, 0.5, "train", weights_digest(base), max_chunks=8)
    texts = sorted({t for p in pairs + extra for t in (p.a, p.b)})
    prompts = sorted({p.group for p in pairs + extra})
    states = encode_texts(enc, sorted(set(texts) | set(prompts)), args.cache)
    views = views_from_states(enc, texts, states, enc.segment_tokens)
    pviews = views_from_states(enc, prompts, states, enc.segment_tokens)
    allp = [*pairs, *extra]

    extra_groups: dict[str, torch.Tensor] = {}
    variants = args.variants.split(",")
    need = {g for v in variants for g in v.split("+")}
    if "prm" in need:
        rows = []
        for p in allp:
            pv = pviews[text_key(p.group)]
            rows.append(prompt_features(views[text_key(p.a)], views[text_key(p.b)], pv.mean, word_set(p.group)))
        extra_groups["prm"] = torch.tensor(rows)
    if "tok" in need:
        mats = {}
        rows = []
        for p in allp:
            for t in (p.a, p.b):
                if text_key(t) not in mats:
                    mats[text_key(t)] = token_matrix(states[text_key(t)])
            rows.append(token_features(mats[text_key(p.a)], mats[text_key(p.b)]))
        extra_groups["tok"] = torch.tensor(rows)
    for name, keep in (("w1", lambda c: c[:1]), ("w2", lambda c: c[[0, -1]] if len(c) > 1 else c)):
        if any(name in v for v in variants):
            cut = {k: replace(v, chunks=keep(v.chunks)) for k, v in views.items()}
            vp = [(cut[text_key(p.a)], cut[text_key(p.b)]) for p in allp]
            extra_groups[name + "cos"] = batch_features(("cos",), vp, torch.zeros(1))
    if "lab" in need:
        with open(pkg.__path__[0] + "/train.jsonl") as f:
            who = {str(r["id"]): str(r["labeler"]) for r in map(json.loads, f)}
        names = sorted(set(who.values()))
        lab = torch.zeros(len(allp), len(names))
        for i, p in enumerate(pairs):
            lab[i, names.index(who[p.id])] = 1.0
        extra_groups["lab"] = lab
    for name, x in extra_groups.items():
        SCALAR_GROUPS[name] = x.shape[1]
        print(f"group {name}: {x.shape[1]} features", file=sys.stderr)

    results = {}
    for v in variants:
        parts = v.split("+")
        groups: list[str] = []
        for g in parts:
            if g == "base":
                groups += ["cos", "len", "lex"]
            elif g in ("w1", "w2"):
                groups += [g + "cos", "len", "lex"]
            else:
                groups.append(g)
        cand = cvmod.Candidate(tuple(groups), hidden=args.hidden, steps=args.steps, weight_decay=args.wd)
        orig_fp = cvmod._fit_predict
        lab_cols = extra_groups["lab"].shape[1] if "lab" in parts else 0

        def fit_predict(cand, xp, xe, labels, extra_labels, fit_rows, predict_rows, seed, _lab=lab_cols, _fp=orig_fp):  # type: ignore[no-untyped-def]
            if _lab:
                # Who labelled a pair is known in training only: predict as the average labeller would.
                xp = xp.clone()
                mean = xp[torch.from_numpy(fit_rows), -_lab:].mean(0)
                xp[torch.from_numpy(predict_rows), -_lab:] = mean
            return (
                sum(_fp(cand, xp, xe, labels, extra_labels, fit_rows, predict_rows, seed + s) for s in range(args.bag))
                / args.bag
            )

        cvmod._fit_predict = fit_predict
        try:
            res = cvmod.cross_validate(
                pairs,
                views,
                extra,
                space=[cand],
                repeats=args.repeats,
                threshold_rule=args.rule,
                progress=False,
                precomputed=extra_groups,
            )
        finally:
            cvmod._fit_predict = orig_fp
        n = res.nested
        folds = [round(e["balanced_accuracy"] * 100, 1) for e in res.fold_estimates]
        results[v] = {"nested": n, "folds": folds, "candidate": cand.name}
        b = n["balanced_accuracy"]
        print(
            f"{v:20s} bal {100 * b['mean']:.1f} [{100 * b['ci_low']:.1f}, {100 * b['ci_high']:.1f}]"
            f"  acc {100 * n['accuracy']['mean']:.1f}  auc {n['roc_auc']['mean']:.3f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
