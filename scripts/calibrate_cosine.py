"""Calibrate the MiniLM cosine threshold on the shared pairs: fit on a hash split, report held-out accuracy."""

import hashlib
import json
import sys

import numpy as np

sys.path.insert(0, ".")
from models.backends.embedding import EmbeddingClassifier

with open(sys.argv[1]) as f:
    rows = [json.loads(line) for line in f]
clf = EmbeddingClassifier.load(head="none")  # the plain cosine this script calibrates
scores = []
for i in range(0, len(rows), 32):
    chunk = rows[i : i + 32]
    scores += clf.run([clf.encode_pair(r["generation_0"], r["generation_1"]) for r in chunk])
s = np.array(scores)
y = np.array([r["similar"] for r in rows])
held = np.array([int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 5 == 0 for r in rows])


def bal_acc(thr, mask):
    pred = s[mask] > thr
    t = y[mask] == 1
    return 0.5 * (pred[t].mean() + (~pred[~t]).mean()), (pred == t).mean()


cands = np.unique(np.round(s[~held], 3))
best = max(cands, key=lambda t: bal_acc(t, ~held)[0])
print(
    json.dumps(
        {
            "threshold": float(best),
            "train_balanced_acc": bal_acc(best, ~held)[0],
            "heldout_balanced_acc": bal_acc(best, held)[0],
            "heldout_acc": bal_acc(best, held)[1],
            "n_heldout": int(held.sum()),
            "n_train": int((~held).sum()),
        }
    )
)
