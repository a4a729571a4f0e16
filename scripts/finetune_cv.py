"""Experiment (issue 11): fine-tune the top of all-MiniLM-L6-v2 as a bi-encoder, judged by grouped 5-fold CV.

RECIPE -- fixed before any test fold was scored; nothing below is tuned on test folds:
  texts      the first 256-token window of each text (chunk_ids, max_chunks=1), as the cosine backend reads it.
  frozen     embeddings + the lower 6-K layers, run once per distinct text; their output states are cached,
             so a training step runs only the top K layers (forward + backward). Default K = 2.
  trained    every weight of the top K layers (full fine-tuning of those layers) plus a 2-parameter calibration
             p = sigmoid(scale * (cos - bias)), scale from 20, bias from 0.837 (DEFAULT_COSINE_THRESHOLD).
  embedding  mean of the window's token states, unit-normalised (the sentence-transformers pooling).
  objective  cosine-BCE on pairs: labelled training-fold pairs + the 288 short idea pairs, class weights per
             source (models/training/head.py class_weights), AdamW lr 2e-5 (calibration 1e-2), wd 0.01,
             16-pair batches, linear warm-up 10% then linear decay, E = 3 epochs, seed 0 (E chosen from the
             measured ~80 s per epoch at K = 2 on 2 threads, so 5 folds fit in ~25 min; no fold was scored).
  threshold  primary: 0.5 on the calibrated p (the class-weighted loss divides the training prior out: the
             "prior" rule of cv.py); secondary, also training-side only: the balanced-accuracy-optimal cut of the
             training-fold scores.
  rules      identical / short-text verdicts override every classifier, as in the service and in cv.py.
  protocol   grouped stratified 5-fold CV, 1 repeat, folds from models/training/cv.py repeated_folds(seed 0) --
             the first repeat of `classifier eval --cv`, so the frozen head's fold estimates from that run
             (--head-json) are on the same folds. Interval: cv.interval (Nadeau-Bengio corrected t).
  baseline   frozen MiniLM cosine on the same folds and windows, threshold balanced-optimal on training folds.
Cost shape kept: each text is encoded once, the pair score is the cosine of two per-text embeddings.

--joint-head (second experiment, fixed before any fold of it was scored): the packaged first-window head's
  features (the cosine, 3 length and 5 word-overlap features; IDF over the training fold's texts), standardised
  on the training fold; the head is first fitted on the frozen encoder's cosine exactly as the packaged recipe
  (cv.py CURRENT: MLP 16, 1200 full-batch steps, lr 3e-3, wd 0.01), then the top K layers and the head are
  trained together on the head's class-weighted BCE, the same 3 epochs, 16-pair batches and schedule as above,
  layers lr 2e-5, head lr 1e-3. Threshold 0.5 (the prior rule, as the packaged head). Compared on the same folds
  with the packaged first-window recipe (--head-json from `eval --cv --space current --threshold-rule prior`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.backends.embedding import DEFAULT_COSINE_THRESHOLD, chunk_ids, packaged_minilm_path, text_key
from models.backends.embedding_head import SCALAR_GROUPS, HeadConfig, TextView, name_set, opening_set, word_set
from models.rules import decide_by_rules
from models.training.cv import CURRENT, FeatureTable, interval, pair_groups, repeated_folds
from models.training.data import Pair, read_idea_pairs, read_pairs
from models.training.head import class_weights, fit_head, head_probs
from models.training.metrics import best_thresholds, evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = os.path.join(ROOT, "models", "data", "noveltybench_pairs", "train.jsonl")
IDEAS = os.path.join(ROOT, "models", "training", "ideas", "short_ideas.json")


def additive_mask(lengths: list[int], width: int) -> torch.Tensor:
    keep = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return torch.where(keep, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]


def pad(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    lengths = [len(s) for s in states]
    width = max(lengths)
    x = torch.zeros(len(states), width, states[0].shape[-1])
    for i, s in enumerate(states):
        x[i, : len(s)] = s.float()
    return x, additive_mask(lengths, width), lengths


def run_top(layers: torch.nn.ModuleList, states: list[torch.Tensor]) -> torch.Tensor:
    """Unit mean-pooled embeddings of texts whose lower-layer states are given, through the top layers."""
    x, mask, lengths = pad(states)
    for layer in layers:
        x = layer(x, attention_mask=mask)
    keep = (torch.arange(x.shape[1])[None, :] < torch.tensor(lengths)[:, None]).float().unsqueeze(-1)
    return torch.nn.functional.normalize((x * keep).sum(1) / keep.sum(1), dim=-1)


@torch.inference_mode()
def embed_all(layers: torch.nn.ModuleList, states: list[torch.Tensor], rows: int = 32) -> torch.Tensor:
    layers.eval()
    order = sorted(range(len(states)), key=lambda i: len(states[i]))
    out = torch.zeros(len(states), states[0].shape[-1])
    for s in range(0, len(order), rows):
        idx = order[s : s + rows]
        out[idx] = run_top(layers, [states[i] for i in idx])
    return out


def lower_states(model: Any, rows: list[list[int]], k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per text: the input of the top k layers and the final states (for the frozen baseline), unpadded."""
    below: list[torch.Tensor] = []
    final: list[torch.Tensor] = []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    got: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.inference_mode():
        for s in range(0, len(order), 32):
            idx = order[s : s + 32]
            width = max(len(rows[i]) for i in idx)
            ids = torch.zeros(len(idx), width, dtype=torch.long)
            att = torch.zeros(len(idx), width, dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, : len(rows[i])] = torch.tensor(rows[i])
                att[j, : len(rows[i])] = 1
            out = model(input_ids=ids, attention_mask=att, output_hidden_states=True)
            hs = out.hidden_states  # embeddings output, then each layer's output
            for j, i in enumerate(idx):
                n = len(rows[i])
                got[i] = (hs[-1 - k][j, :n].half(), out.last_hidden_state[j, :n].float())
    for i in range(len(rows)):
        below.append(got[i][0])
        final.append(got[i][1])
    return below, final


def lr_factor(step: int, total: int) -> float:
    warm = max(1, total // 10)
    return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))


def finetune(
    base_layers: torch.nn.ModuleList,
    states: list[torch.Tensor],
    train_pairs: list[tuple[int, int, int, int]],  # (text a, text b, label, stratum)
    epochs: int,
    batch: int,
    seed: int,
    head: Any = None,
    fixed: torch.Tensor | None = None,  # per training pair: the head's other features (len, lex)
) -> tuple[torch.nn.ModuleList, torch.Tensor, list[float]]:
    import copy

    torch.manual_seed(seed)
    layers = copy.deepcopy(base_layers)
    layers.train()
    for p in layers.parameters():
        p.requires_grad_(True)
    calib = torch.nn.Parameter(torch.tensor([20.0, DEFAULT_COSINE_THRESHOLD]))
    groups: list[dict[str, Any]] = [{"params": list(layers.parameters()), "lr": 2e-5}]
    if head is None:
        groups.append({"params": [calib], "lr": 1e-2, "weight_decay": 0.0})
    else:
        head.train()
        groups.append({"params": [p for p in head.parameters() if p.requires_grad], "lr": 1e-3})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    base_lrs = [g["lr"] for g in opt.param_groups]
    labels = torch.tensor([float(t[2]) for t in train_pairs])
    weights = class_weights(labels, torch.tensor([t[3] for t in train_pairs]))
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(train_pairs) / batch)
    total = epochs * steps_per_epoch
    losses: list[float] = []
    step = 0
    for _ in range(epochs):
        order = list(range(len(train_pairs)))
        rng.shuffle(order)
        epoch_loss = 0.0
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            texts = sorted({t for i in idx for t in train_pairs[i][:2]})
            where = {t: j for j, t in enumerate(texts)}
            emb = run_top(layers, [states[t] for t in texts])
            a = emb[[where[train_pairs[i][0]] for i in idx]]
            b = emb[[where[train_pairs[i][1]] for i in idx]]
            if head is None:
                logit = calib[0] * ((a * b).sum(-1) - calib[1])
            else:
                assert fixed is not None
                logit = head(torch.cat([(a * b).sum(-1, keepdim=True), fixed[idx]], dim=1))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logit, labels[idx], weight=weights[idx], reduction="sum"
            ) / float(weights[idx].sum())
            for g, lr in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = lr * lr_factor(step, total)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(layers.parameters(), 1.0)
            opt.step()
            epoch_loss += float(loss.detach()) * len(idx)
            step += 1
            if step % 25 == 0:
                print(f"  step {step}/{total} loss {float(loss.detach()):.4f}", file=sys.stderr, flush=True)
        losses.append(epoch_loss / len(train_pairs))
    return layers, calib.detach(), losses


def scores_of(emb: torch.Tensor, pairs: list[tuple[int, int, int, int]]) -> np.ndarray:
    a = emb[[p[0] for p in pairs]]
    b = emb[[p[1] for p in pairs]]
    return (a * b).sum(-1).numpy().astype(float)


def overridden(p: np.ndarray, rows: np.ndarray, ruled: dict[int, float]) -> np.ndarray:
    out = p.copy()
    for j, i in enumerate(rows):
        if int(i) in ruled:
            out[j] = ruled[int(i)]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top-layers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="pairs per optimiser step")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", type=int, default=0, help="run only the first N folds (time-boxed runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--head-json",
        default=None,
        help="`classifier eval --cv --json` output: its first repeat's "
        "fold estimates are the frozen head's on these folds",
    )
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--joint-head", action="store_true", help="the second experiment (header): head + top layers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = packaged_minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    pairs = read_pairs(PAIRS)
    ideas = read_idea_pairs(IDEAS)
    texts: dict[str, int] = {}
    raw: list[str] = []
    for p in [*pairs, *ideas]:
        for t in (p.a, p.b):
            if text_key(t) not in texts:
                texts[text_key(t)] = len(raw)
                raw.append(t)
    rows = []
    views: dict[str, TextView] = {}
    for t in raw:
        ids = tok(t, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        rows.append(chunk_ids(list(ids), tok.cls_token_id, tok.sep_token_id, 256, 1)[0][0])
        # What the len and lex features read: the whole text's size and words (no embedding).
        views[text_key(t)] = TextView(torch.zeros(1, 1), len(ids), word_set(t), name_set(t), opening_set(t))
    table = FeatureTable(pairs, ideas, views, 1 << 14)
    SCALAR_GROUPS["ftcos"] = 1
    t0 = time.perf_counter()
    below, final = lower_states(model, rows, args.top_layers)
    encode_s = time.perf_counter() - t0
    top = model.encoder.layer[-args.top_layers :]
    # Self-check: the cached lower states through the untouched top layers give the model's own embeddings.
    frozen = torch.nn.functional.normalize(torch.stack([h.mean(0) for h in final]), dim=-1)
    check = embed_all(top, below[:64])
    assert torch.allclose(check, frozen[:64], atol=2e-3), float((check - frozen[:64]).abs().max())
    print(f"{len(raw)} distinct texts, lower {6 - args.top_layers} layers encoded once in {encode_s:.0f}s", flush=True)

    def idx(p: Pair, stratum: int) -> tuple[int, int, int, int]:
        return (texts[text_key(p.a)], texts[text_key(p.b)], p.label, stratum)

    labelled = [idx(p, 0) for p in pairs]
    extra = [idx(p, 1) for p in ideas]
    labels = np.array([p.label for p in pairs])
    ruled = {i: float(d[1]) for i, p in enumerate(pairs) if (d := decide_by_rules(p.a, p.b)) is not None}
    splits = repeated_folds(labels, pair_groups(pairs), args.folds, 1, args.seed)
    if args.only_folds:
        splits = splits[: args.only_folds]
    frozen_all = scores_of(frozen, labelled)
    rows_out: list[dict[str, Any]] = []
    for f, (train, test) in enumerate(splits):
        # Frozen cosine: no fitted weights, threshold from the training folds only.
        th_frozen = float(best_thresholds(frozen_all[train], labels[train])["balanced_accuracy"])
        m_frozen = evaluate(overridden(frozen_all[test], test, ruled), labels[test], th_frozen)
        t1 = time.perf_counter()
        jhead = fixed = None
        extra_rows: dict[str, Any] = {}
        if args.joint_head:
            xp, xe = table.matrix(("len", "lex"), train)
            fixed = torch.cat([xp[torch.from_numpy(train)], xe])
            fcos = torch.from_numpy(scores_of(frozen, [labelled[i] for i in train] + extra)).float()[:, None]
            y = torch.tensor([float(labelled[i][2]) for i in train] + [float(e[2]) for e in extra])
            strata = torch.tensor([0] * len(train) + [1] * len(extra))
            config = HeadConfig(groups=("ftcos", "len", "lex"), hidden=CURRENT.hidden)
            jhead = fit_head(
                config, torch.cat([fcos, fixed], 1), y, strata, CURRENT.steps, CURRENT.lr, CURRENT.weight_decay
            )
            test_cos = torch.from_numpy(frozen_all[test]).float()[:, None]
            warm = head_probs(jhead, torch.cat([test_cos, xp[torch.from_numpy(test)]], 1))
            m_warm = evaluate(overridden(warm, test, ruled), labels[test], 0.5)
            extra_rows["frozen_head"] = {k: float(m_warm[k]) for k in ("balanced_accuracy", "roc_auc")}
        layers, calib, losses = finetune(
            top, below, [labelled[i] for i in train] + extra, args.epochs, args.batch, args.seed, jhead, fixed
        )
        train_s = time.perf_counter() - t1
        emb = embed_all(layers, below)
        cos = scores_of(emb, labelled)
        if jhead is not None:
            ct = torch.from_numpy(cos[test]).float()[:, None]
            joint = head_probs(jhead, torch.cat([ct, xp[torch.from_numpy(test)]], 1))
            m_joint = evaluate(overridden(joint, test, ruled), labels[test], 0.5)
            extra_rows["joint_head"] = {k: float(m_joint[k]) for k in ("balanced_accuracy", "roc_auc")}
        prob = 1 / (1 + np.exp(-float(calib[0]) * (cos - float(calib[1]))))
        m_prior = evaluate(overridden(prob[test], test, ruled), labels[test], 0.5)
        th_bal = float(best_thresholds(prob[train], labels[train])["balanced_accuracy"])
        m_bal = evaluate(overridden(prob[test], test, ruled), labels[test], th_bal)
        row = {
            "fold": f,
            "n_test": len(test),
            "train_s": round(train_s, 1),
            "loss_per_epoch": [round(x, 4) for x in losses],
            "calib": [round(float(c), 4) for c in calib],
            "frozen_cos": {k: float(m_frozen[k]) for k in ("balanced_accuracy", "roc_auc")},
            "ft_prior": {k: float(m_prior[k]) for k in ("balanced_accuracy", "roc_auc")},
            "ft_balanced": {k: float(m_bal[k]) for k in ("balanced_accuracy", "roc_auc")},
            **extra_rows,
        }
        rows_out.append(row)
        print(json.dumps(row), flush=True)
    head: list[float] = []
    if args.head_json:
        with open(args.head_json) as fh:
            blob = json.load(fh)
        same = repeated_folds(labels, pair_groups(pairs), blob["folds"], blob["repeats"], args.seed)[: len(splits)]
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(same, splits, strict=True)), "not the same folds"
        head = [e["balanced_accuracy"] for e in blob["fold_estimates"][: len(splits)]]
    frac = 1 / args.folds
    cols = {
        "frozen cosine (threshold on train folds)": [r["frozen_cos"]["balanced_accuracy"] for r in rows_out],
        f"fine-tuned top {args.top_layers}, p>=0.5 (primary)": [r["ft_prior"]["balanced_accuracy"] for r in rows_out],
        f"fine-tuned top {args.top_layers}, train-fold cut": [r["ft_balanced"]["balanced_accuracy"] for r in rows_out],
    }
    aucs = {
        "frozen cosine (threshold on train folds)": [r["frozen_cos"]["roc_auc"] for r in rows_out],
        f"fine-tuned top {args.top_layers}, p>=0.5 (primary)": [r["ft_prior"]["roc_auc"] for r in rows_out],
        f"fine-tuned top {args.top_layers}, train-fold cut": [r["ft_prior"]["roc_auc"] for r in rows_out],
    }
    if head:
        cols["frozen MiniLM + head (eval --cv, repeat 1)"] = head
    for key, name in (("frozen_head", "frozen cosine + len/lex head"), ("joint_head", "fine-tuned top + head, joint")):
        if rows_out and key in rows_out[0]:
            cols[name] = [r[key]["balanced_accuracy"] for r in rows_out]
            aucs[name] = [r[key]["roc_auc"] for r in rows_out]
    print(f"\nbalanced accuracy per fold, {len(splits)} of {args.folds} grouped folds, mean [95% NB interval]")
    for name, v in cols.items():
        iv = interval(v, frac) if len(v) > 1 else {"mean": v[0], "ci_low": math.nan, "ci_high": math.nan}
        auc = f"  auc {np.mean(aucs[name]):.3f}" if name in aucs else ""
        per = " ".join(f"{x:.3f}" for x in v)
        print(f"  {name:<44} {per}   {iv['mean']:.3f} [{iv['ci_low']:.3f}, {iv['ci_high']:.3f}]{auc}")
    print(
        f"training time per fold: {np.mean([r['train_s'] for r in rows_out]):.0f}s "
        f"({args.epochs} epochs, ~{len(splits[0][0]) + len(extra)} training pairs, {args.threads} threads)"
    )
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"args": vars(args), "folds": rows_out, "columns": cols}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
