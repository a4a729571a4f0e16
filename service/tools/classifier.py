"""`darling-reward classifier train|eval`: fit an equivalence classifier on labelled pairs, and measure one.

`train` fine-tunes a pair classifier (the folder it writes is served by DARLING_CLASSIFIER=cross-encoder with
DARLING_CLASSIFIER_PATH=DIR and no other flag), or with `--head` fits the embedded default's small head over the
frozen packaged MiniLM. `eval` loads a classifier through the service's own `load_backends`, so what it measures
is what the service runs; by default it applies the specification's rules (identical text, short texts) first, as the
service does, and `--no-rules` scores the bare classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Any

from models.data import noveltybench_pairs
from models.training.data import Pair, balanced_subsample, read_idea_pairs, read_pairs, split_heldout


def packaged_ideas() -> str:
    import models.training.ideas

    return os.path.join(os.path.dirname(models.training.ideas.__file__), "short_ideas.json")


def _read(path: str) -> list[Pair]:
    try:
        return read_pairs(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(str(exc)) from None


def _select(pairs: list[Pair], args: argparse.Namespace) -> list[Pair]:
    """The pairs a command works on: the held-out rule, a limit, a balanced subsample, in that order."""
    split = getattr(args, "split", "all")
    if split != "all":
        train, held = split_heldout(pairs)
        pairs = held if split == "heldout" else train
    if args.limit:
        pairs = pairs[: args.limit]
    if getattr(args, "balanced", False):
        pairs = balanced_subsample(pairs)
    if not pairs:
        raise SystemExit("no pairs left after selection")
    return pairs


def _train_head(args: argparse.Namespace, pairs: list[Pair]) -> dict[str, Any]:
    import numpy as np

    from models.backends.base import weights_digest
    from models.backends.embedding import packaged_minilm_path
    from models.backends.embedding_head import HeadConfig
    from models.training.head import compute_views, train_head
    from models.training.metrics import evaluate

    base = args.base or packaged_minilm_path()
    encoder = _frozen_encoder(args)
    extra = _ideas(args.ideas)
    views = compute_views(encoder, sorted({t for p in pairs + extra for t in (p.a, p.b)}), args.cache)
    config = HeadConfig(
        groups=tuple(args.features.split(",")),
        dim=int(encoder.model.config.hidden_size),
        hidden=args.hidden,
        dropout=args.dropout,
        max_chunks=args.max_chunks,
        segment_tokens=encoder.segment_tokens,
        base="all-MiniLM-L6-v2" if base == packaged_minilm_path() else os.path.basename(os.path.normpath(base)),
        base_digest=weights_digest(base),
    )
    if args.space:
        from models.training.cv import select_and_fit

        head, chosen = select_and_fit(
            pairs, views, extra, args.space, threshold_rule=args.threshold_rule, seed=args.seed, base_config=config
        )
        chosen.update(pairs=os.path.basename(args.pairs), split=args.split, limit=args.limit, n_pairs=len(pairs))
        chosen.update(n_idea_pairs=len(extra), ideas=args.ideas, space=args.space)
        head.config = replace(head.config, trained=chosen)
        head.save(args.out)
        return {"out": args.out, "threshold": head.config.threshold, "features": head.config.n_features, **chosen}
    head, oof = train_head(
        config,
        pairs,
        views,
        extra,
        extra_weight=args.idea_weight,
        steps=args.head_steps,
        lr=args.head_lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        threshold=args.threshold,
    )
    record = {
        "pairs": os.path.basename(args.pairs),
        "split": args.split,
        "limit": args.limit,
        "n_pairs": len(pairs),
        "n_idea_pairs": len(extra),
        "ideas": args.ideas,
        "idea_weight": args.idea_weight,
        "steps": args.head_steps,
        "lr": args.head_lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
    }
    if oof is not None:
        # Out-of-fold: each pair judged by a head fitted without it, at the threshold chosen on all of them.
        cv = evaluate(oof, np.array([p.label for p in pairs]), head.config.threshold)
        record["cv_balanced_accuracy"] = round(cv["balanced_accuracy"], 4)
        record["cv_roc_auc"] = round(cv["roc_auc"], 4)
    head.config = replace(head.config, trained=record)
    head.save(args.out)
    return {"out": args.out, "threshold": head.config.threshold, "features": head.config.n_features, **record}


def _train(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1) if args.threads is None else args.threads)
    pairs = _select(_read(args.pairs), args)
    if args.head:
        print(json.dumps(_train_head(args, pairs)))
        return 0
    from models.backends.embedding import packaged_minilm_path
    from models.training.pair_classifier import Recipe, train_pair_classifier

    recipe = Recipe(
        steps=args.steps,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup=args.warmup,
        batch=args.batch,
        micro_batch=min(args.micro_batch, args.batch),
        max_length=args.max_length,
        lora=args.lora,
        lora_r=args.lora_r,
        seed=args.seed,
        device=args.device,
    )
    val = _select(_read(args.val_pairs), argparse.Namespace(limit=0)) if args.val_pairs else None
    record = train_pair_classifier(pairs, args.base or packaged_minilm_path(), args.out, recipe, val, args.threshold)
    print(json.dumps({"out": args.out, **record}))
    return 0


def _scores(args: argparse.Namespace, pairs: list[Pair]) -> tuple[list[float], float, str, int]:
    """Each pair's P(equivalent) as the service computes it, the threshold it would use, its id, and rule hits."""
    from tqdm import tqdm

    from models.rules import decide_by_rules
    from service.engine.engine import load_backends
    from service.settings import Settings

    overrides: dict[str, Any] = {"verifier": False, "quality_model_path": None, "device": args.device}
    if args.model or args.preset:
        overrides["classifier"] = "cross-encoder"
        if args.preset:
            from models.backends.cross_encoder import PRESETS

            if args.preset not in PRESETS:
                raise SystemExit(f"--preset: unknown preset {args.preset!r}; known: {sorted(PRESETS)}")
            overrides["classifier_preset"] = args.preset
        path = args.model or PRESETS[args.preset].checkpoint
        if not path:
            raise SystemExit(f"--preset {args.preset} names no checkpoint; give --model DIR")
        overrides["classifier_path"] = path
    elif args.base:
        overrides["classifier_path"] = args.base
    if args.head is not None:
        overrides["embedding_head"] = args.head
    try:
        clf = load_backends(Settings(**overrides)).classifier
    except (OSError, ValueError) as exc:  # a hub id while offline, a folder that is not a model, a bad head
        raise SystemExit(f"cannot load the classifier: {exc}") from None
    threshold = clf.default_threshold if args.threshold is None else args.threshold
    scores = [0.0] * len(pairs)
    todo: list[int] = []
    by_rule = 0
    for i, p in enumerate(pairs):
        decided = decide_by_rules(p.a, p.b) if args.rules else None
        if decided is None:
            todo.append(i)
        else:
            scores[i] = 1.0 if decided[1] else 0.0  # a rule's verdict holds whatever the threshold
            by_rule += 1
    with tqdm(total=len(todo), unit="pair", desc="scoring", file=sys.stderr, disable=not todo) as bar:
        for start in range(0, len(todo), args.batch):
            part = todo[start : start + args.batch]
            out = clf.run([clf.encode_pair(pairs[i].a, pairs[i].b) for i in part])
            for i, s in zip(part, out, strict=True):
                scores[i] = s
            bar.update(len(part))
    return scores, threshold, clf.id, by_rule


def _table(m: dict[str, Any]) -> str:
    c = m["confusion"]
    lines = [
        f"classifier            {m['classifier']}",
        f"pairs                 {m['n']} ({m['positives']} equivalent, {m['rule_decided']} decided by rules)",
        f"threshold             {m['threshold']:.4f}  (equivalent iff p > threshold)",
        f"accuracy              {m['accuracy']:.4f}",
        f"balanced accuracy     {m['balanced_accuracy']:.4f}",
        f"precision             {m['precision']:.4f}",
        f"recall                {m['recall']:.4f}",
        f"f1                    {m['f1']:.4f}",
        f"roc auc               {m['roc_auc']:.4f}",
        f"best-accuracy thr     {m['best_accuracy_threshold']:.4f}  (accuracy {m['best_accuracy']:.4f})",
        f"best-f1 thr           {m['best_f1_threshold']:.4f}  (f1 {m['best_f1']:.4f})",
        f"best-balanced thr     {m['best_balanced_accuracy_threshold']:.4f}  "
        f"(balanced accuracy {m['best_balanced_accuracy']:.4f})",
        "confusion             predicted equivalent  predicted distinct",
        f"  equivalent          {c['tp']:>20}  {c['fn']:>18}",
        f"  distinct            {c['fp']:>20}  {c['tn']:>18}",
    ]
    return "\n".join(lines)


def _frozen_encoder(args: argparse.Namespace) -> Any:
    """The frozen encoder the head reads, windowed as the head will be (not the served classifier)."""
    from models.backends.base import weights_digest
    from models.backends.embedding import EmbeddingClassifier, packaged_minilm_path
    from models.backends.loading import LoadOptions

    base = args.base or packaged_minilm_path()
    encoder = EmbeddingClassifier.load(base, LoadOptions(device=args.device), head="none")
    return EmbeddingClassifier(
        encoder.model, encoder.tokenizer, 0.5, "train", weights_digest(base), max_chunks=args.max_chunks
    )


def _cv_table(r: dict[str, Any]) -> str:
    def fmt(iv: dict[str, float]) -> str:
        return f"{iv['mean']:.4f}  [{iv['ci_low']:.4f}, {iv['ci_high']:.4f}]"

    lines = [
        f"protocol              {r['repeats']}x{r['folds']}-fold, grouped ({r['n_groups']} groups), stratified; "
        f"nested: {r['inner_folds']}-fold inner CV picks 1 of {len(r['candidates'])} configurations "
        f"and the threshold ({r['threshold_rule']})",
        f"pairs                 {r['n']} ({r['positives']} equivalent) + {r['n_extra']} short idea pairs in training",
        "interval              95% t over the fold estimates, Nadeau-Bengio corrected",
    ]
    lines += [f"{k.replace('_', ' '):<22}{fmt(v)}" for k, v in r["nested"].items()]
    lines.append("each configuration (threshold still chosen inside the folds): balanced accuracy, roc auc")
    for name, m in r["per_candidate"].items():
        lines.append(
            f"  {name:<44} {fmt(m['balanced_accuracy'])}  {m['roc_auc']['mean']:.4f}  selected {r['selected'][name]}x"
        )
    return "\n".join(lines)


def _eval_cv(args: argparse.Namespace, pairs: list[Pair]) -> int:
    import torch

    from models.training.cv import cross_validate
    from models.training.head import compute_views

    if args.model or args.preset or args.head is not None:
        raise SystemExit("--cv measures the embedding head's recipe; it takes no --model, --preset or --head")
    if args.threshold is not None:
        raise SystemExit("--cv chooses the threshold inside the training folds; --threshold does not apply")
    torch.set_num_threads(max(1, os.cpu_count() or 1) if args.threads is None else args.threads)
    encoder = _frozen_encoder(args)
    extra = _ideas(args.ideas)
    views = compute_views(encoder, sorted({t for p in pairs + extra for t in (p.a, p.b)}), args.cache)
    result = cross_validate(
        pairs,
        views,
        extra,
        space=args.space or "full",
        folds=args.folds,
        repeats=args.repeats,
        inner_folds=args.inner_folds,
        threshold_rule=args.threshold_rule,
        seed=args.seed,
        rules=args.rules,
    )
    out = result.as_dict()
    print(json.dumps(out, sort_keys=True) if args.json else _cv_table(out))
    return 0


def _ideas(spec: str) -> list[Pair]:
    if spec == "none":
        return []
    return read_idea_pairs(packaged_ideas() if spec == "packaged" else spec)


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from models.training.metrics import evaluate, roc_curve

    if args.cv:
        return _eval_cv(args, _select(_read(args.pairs), args))

    if (args.model or args.preset) and (args.head is not None or args.base):
        raise SystemExit("--head and --base apply to the embedded default only, not to --model/--preset")
    pairs = _select(_read(args.pairs), args)
    scores, threshold, clf_id, by_rule = _scores(args, pairs)
    s, y = np.array(scores), np.array([p.label for p in pairs])
    metrics = evaluate(s, y, threshold)
    metrics.update(classifier=clf_id, rule_decided=by_rule, rules=args.rules, split=args.split)
    if args.roc:
        from models.training.plot import write_roc_png

        fpr, tpr = roc_curve(s, y)
        write_roc_png(args.roc, fpr, tpr, f"{clf_id}  AUC {metrics['roc_auc']:.3f}")
    print(json.dumps(metrics, sort_keys=True) if args.json else _table(metrics))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pairs",
        default=str(noveltybench_pairs()),
        help="JSONL of labelled pairs: generation_0, generation_1, similar, id (default: the packaged 1,000 pairs).",
    )
    p.add_argument(
        "--split",
        choices=("all", "train", "heldout"),
        default="all",
        help="Use all pairs, or the train / held-out side of the fixed rule sha256(id) % 5 == 0 -> held out.",
    )
    p.add_argument("--limit", type=int, default=0, help="Only the first N pairs (after --split); 0 = all.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    p.add_argument("--threshold", type=float, default=None, help="Decision threshold (default: the model's own).")


# The cost target (docs/classifiers.md): reading long answers in full cost 2.4x the encoder work for no
# cross-validated gain, so the packaged head reads each text's first window only.
_CHUNKS_HELP = "256-token windows encoded per text, evenly spaced (1: the first 256 tokens, the packaged head's)."
_RULE_HELP = (
    "balanced: the balanced-accuracy-optimal cut of out-of-fold scores on the training side; prior: 0.5, the "
    "balanced point of the class-weighted loss."
)


def register(sub: Any) -> None:
    clf = sub.add_parser("classifier", help="Train and evaluate equivalence classifiers on labelled pairs.")
    csub = clf.add_subparsers(dest="classifier_command", required=True)

    t = csub.add_parser("train", help="Fine-tune a pair classifier (or, with --head, the embedded head).")
    _common(t)
    t.add_argument("--out", required=True, help="Folder to write (served as-is by the cross-encoder backend).")
    t.add_argument("--base", default=None, help="Local model folder to start from (default: the packaged MiniLM).")
    t.add_argument("--steps", type=int, default=80, help="Optimiser steps.")
    t.add_argument("--lr", type=float, default=2e-5, help="Peak learning rate.")
    t.add_argument("--min-lr", type=float, default=2e-6, help="Learning rate at the end of the cosine.")
    t.add_argument("--warmup", type=int, default=10, help="Linear warm-up steps.")
    t.add_argument("--batch", type=int, default=64, help="Effective batch (examples per step, both orders count).")
    t.add_argument("--micro-batch", type=int, default=16, help="Examples per forward (gradient accumulation).")
    t.add_argument("--max-length", type=int, default=512, help="Tokens per pair input (longest_first truncation).")
    t.add_argument("--lora", action="store_true", help="Train LoRA adapters (peft), merged into the saved weights.")
    t.add_argument("--lora-r", type=int, default=8, help="LoRA rank.")
    t.add_argument("--val-pairs", default=None, help="Pairs to tune the threshold on (default: 0.5).")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None, help="Torch CPU threads (default: all cores).")
    h = t.add_argument_group("--head: the embedded default's head over the frozen MiniLM")
    h.add_argument("--head", action="store_true", help="Fit the embedding head instead of fine-tuning.")
    h.add_argument("--ideas", default="packaged", help="Short idea/phrasing pairs to add: packaged, none, or a file.")
    h.add_argument("--idea-weight", type=float, default=1.0, help="Weight of the idea pairs against --pairs.")
    h.add_argument("--features", default="cos,len,lex", help="Feature groups, comma-separated (also: vec).")
    h.add_argument("--hidden", type=int, default=16, help="Hidden units (0 = logistic regression).")
    h.add_argument("--dropout", type=float, default=0.0)
    h.add_argument("--head-steps", type=int, default=1200, help="Full-batch optimiser steps.")
    h.add_argument("--head-lr", type=float, default=3e-3)
    h.add_argument("--weight-decay", type=float, default=1e-2)
    h.add_argument("--max-chunks", type=int, default=1, help=_CHUNKS_HELP)
    h.add_argument("--cache", default=None, help="File keeping the encoded texts' token states between runs.")
    h.add_argument(
        "--space",
        choices=("current", "full"),
        default=None,
        help="Pick the configuration from this space by grouped 5-fold CV on the pairs (the packaged head: full).",
    )
    h.add_argument("--threshold-rule", choices=("balanced", "prior"), default="balanced", help=_RULE_HELP)
    t.set_defaults(func=_train)

    e = csub.add_parser("eval", help="Accuracy, precision, recall, F1, ROC-AUC, best thresholds, confusion matrix.")
    _common(e)
    e.add_argument("--model", default=None, help="A cross-encoder folder (e.g. from `classifier train`).")
    e.add_argument("--preset", default=None, help="Cross-encoder input preset (with --model, or its checkpoint).")
    e.add_argument("--head", default=None, help="Embedded default only: default, none (plain cosine) or a folder.")
    e.add_argument("--base", default=None, help="Embedded default only: the encoder folder (default: packaged MiniLM).")
    e.add_argument("--balanced", action="store_true", help="Evaluate on a balanced subsample (all of the rarer class).")
    e.add_argument("--no-rules", dest="rules", action="store_false", help="Score every pair with the classifier.")
    e.add_argument("--batch", type=int, default=32, help="Pairs per forward.")
    e.add_argument("--json", action="store_true", help="One JSON object instead of a table.")
    e.add_argument("--roc", default=None, metavar="PNG", help="Write the ROC curve to this PNG file.")
    cv = e.add_argument_group("--cv: repeated, grouped, nested cross-validation of the embedding head's recipe")
    cv.add_argument("--cv", action="store_true", help="Cross-validate instead of scoring one fixed classifier.")
    cv.add_argument("--space", choices=("current", "full"), default=None, help="Configurations compared (full).")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--repeats", type=int, default=5)
    cv.add_argument("--inner-folds", type=int, default=3, help="Inner CV on each training side: the choices.")
    cv.add_argument("--threshold-rule", choices=("balanced", "prior"), default="balanced", help=_RULE_HELP)
    cv.add_argument("--ideas", default="packaged", help="Short idea pairs added to every training side.")
    cv.add_argument("--max-chunks", type=int, default=1, help=_CHUNKS_HELP)
    cv.add_argument("--cache", default=None, help="File keeping the encoded texts' token states between runs.")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--threads", type=int, default=None, help="Torch CPU threads (default: all cores).")
    e.set_defaults(func=_eval)
