"""Trains tally's reference fraud model and writes a model version directory.

Reproducible from a seed: the data come from `tally fraud dataset` (the payments simulator
measured by the engine's own feature code), LightGBM runs single-threaded and deterministic, so
the same seed writes the same files.

    python models/fraud/train.py --tally target/release/tally --seed 7 --out models/fraud/1

Writes into --out:
  model.onnx   the trees (onnxmltools, no ZipMap), the `label` output's shape repaired (the
               converter declares [1]), each node's training-row count in `nodes_hitrates`
               (the ONNX export has no covers; tally's evaluator needs them for per-feature
               contributions)
  model.txt    the LightGBM booster (MLServer's lightgbm runtime serves it: the same trees)
  config.toml  inputs/outputs for the model server; the feature schema, thresholds and the
               training reference distributions (for drift) for the fraud engine
  check.csv    rows with onnxruntime's probabilities, for the Rust evaluator's test
  report.json  ROC-AUC and precision at 80 % recall of the model and of the rule scorer on
               held-out data (another simulator seed)
"""

import argparse
import json
import os
import subprocess
import tempfile

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.metrics import precision_recall_curve, roc_auc_score

META = ["transaction_id", "account_id", "occurred_at_ms", "pattern", "fraud", "rule_score"]
SCHEMA_VERSION = 1
INPUT = "features"


def dataset(tally, seed, transactions, path):
    subprocess.run(
        [tally, "fraud", "dataset", "--seed", str(seed), "--transactions", str(transactions), "--out", path],
        check=True,
    )
    return pd.read_csv(path)


def precision_at_recall(y, score, recall=0.8):
    p, r, _ = precision_recall_curve(y, score)
    return float(p[r >= recall].max())


def flagged_stats(y, score, threshold):
    flagged = score >= threshold
    caught = int((flagged & (y == 1)).sum())
    return {
        "threshold": float(threshold),
        "flagged_share": float(flagged.mean()),
        "precision": float(caught / max(int(flagged.sum()), 1)),
        "recall": float(caught / max(int((y == 1).sum()), 1)),
    }


def threshold_at_recall(y, score, recall):
    """The highest threshold whose recall is at least `recall`."""
    order = np.sort(score[y == 1])[::-1]
    k = int(np.ceil(recall * len(order))) - 1
    return float(order[max(k, 0)])


def threshold_at_precision(y, score, precision):
    """The lowest threshold whose precision is at least `precision`."""
    p, _, t = precision_recall_curve(y, score)
    ok = np.where(p[:-1] >= precision)[0]
    return float(t[ok[0]]) if len(ok) else 1.0


def add_covers(model, x):
    """Writes each node's count of training rows into nodes_hitrates (routes `x` through every
    tree: the counts are what TreeSHAP/Saabas attributions weigh subtrees by)."""
    node = model.graph.node[0] if model.graph.node[0].op_type == "TreeEnsembleClassifier" else next(
        n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"
    )
    a = {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}
    treeids = np.array(a["nodes_treeids"])
    nodeids = np.array(a["nodes_nodeids"])
    feats = np.array(a["nodes_featureids"])
    values = np.array(a["nodes_values"], dtype=np.float32)
    modes = [m.decode() if isinstance(m, bytes) else m for m in a["nodes_modes"]]
    if set(modes) - {"BRANCH_LEQ", "LEAF"}:
        raise SystemExit(f"unexpected node modes {set(modes)}")
    truen = np.array(a["nodes_truenodeids"])
    falsen = np.array(a["nodes_falsenodeids"])
    leaf = np.array([m == "LEAF" for m in modes])
    counts = np.zeros(len(nodeids), dtype=np.float64)
    rows = np.arange(len(x))
    for tree in np.unique(treeids):
        idx = np.where(treeids == tree)[0]
        pos = np.full(int(nodeids[idx].max()) + 1, -1)
        pos[nodeids[idx]] = idx  # node id within the tree -> index into the attribute arrays
        at = np.full(len(x), pos[0])
        active = np.ones(len(x), dtype=bool)
        while active.any():
            np.add.at(counts, at[active], 1)
            inner = active & ~leaf[at]
            go_true = x[rows, feats[at]] <= values[at]
            nxt = np.where(go_true, pos[np.clip(truen[at], 0, len(pos) - 1)], pos[np.clip(falsen[at], 0, len(pos) - 1)])
            at = np.where(inner, nxt, at)
            active = inner
    for attr in node.attribute:
        if attr.name == "nodes_hitrates":
            del attr.floats[:]
            attr.floats.extend(counts.astype(np.float32).tolist())
    return counts


def repair_label_shape(model):
    for out in model.graph.output:
        if out.name == "label":
            dims = out.type.tensor_type.shape.dim
            if len(dims) == 1:
                dims[0].ClearField("dim_value")
                dims[0].dim_param = "N"


def reference_bins(x, names, bins=10):
    """Per feature: decile edges of the training data and the share of rows per bin (the
    reference PSI compares production against)."""
    out = []
    for j, name in enumerate(names):
        col = x[:, j].astype(np.float64)
        edges = np.unique(np.quantile(col, np.linspace(0, 1, bins + 1)[1:-1]))
        # Bin i holds edges[i-1] <= value < edges[i] (the last bin the rest), as tally's
        # bin_of counts them.
        idx = np.searchsorted(edges, col, side="right")
        share = np.bincount(idx, minlength=len(edges) + 1) / len(col)
        out.append({"feature": name, "edges": [float(e) for e in edges], "share": [float(s) for s in share]})
    return out


def toml_list(values):
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tally", default="target/release/tally")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train", type=int, default=200_000)
    ap.add_argument("--test", type=int, default=100_000)
    ap.add_argument("--version", default="1")
    ap.add_argument("--out", default="models/fraud/1")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        train = dataset(args.tally, args.seed, args.train, os.path.join(tmp, "train.csv"))
        test = dataset(args.tally, args.seed + 1000, args.test, os.path.join(tmp, "test.csv"))
    names = [c for c in train.columns if c not in META]
    x = train[names].to_numpy(np.float32)
    y = train["fraud"].to_numpy()
    cut = int(len(x) * 0.8)  # the simulator's time order: validate on the latest fifth

    def classifier(trees):
        return lgb.LGBMClassifier(
            n_estimators=trees,
            learning_rate=0.05,
            num_leaves=31,
            min_child_samples=40,
            subsample=1.0,
            colsample_bytree=1.0,
            random_state=args.seed,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )

    # Early stopping picks the number of trees; the model shipped is refitted with exactly that
    # many, so the ONNX export, the booster MLServer serves and predict_proba are one model (an
    # early-stopped classifier predicts with its best iteration, but exports every tree).
    probe = classifier(300)
    probe.fit(x[:cut], y[:cut], eval_set=[(x[cut:], y[cut:])], callbacks=[lgb.early_stopping(30, verbose=False)])
    clf = classifier(probe.best_iteration_ or 300)
    clf.fit(x[:cut], y[:cut])
    valid_score = clf.predict_proba(x[cut:])[:, 1]
    # Review what catches 95 % of the fraud; decline only where 99 % of what is declined is fraud.
    review = threshold_at_recall(y[cut:], valid_score, 0.95)
    decline = max(threshold_at_precision(y[cut:], valid_score, 0.99), review)

    booster = clf.booster_
    booster.save_model(os.path.join(args.out, "model.txt"))

    onx = convert_lightgbm(clf, initial_types=[(INPUT, FloatTensorType([None, len(names)]))], zipmap=False)
    onx.graph.name = f"fraud-{args.version}"  # the converter names it with a random uuid
    repair_label_shape(onx)
    add_covers(onx, x[:cut])
    onnx.checker.check_model(onx)
    onnx.save(onx, os.path.join(args.out, "model.onnx"))

    sess = ort.InferenceSession(os.path.join(args.out, "model.onnx"))
    xt = test[names].to_numpy(np.float32)
    yt = test["fraud"].to_numpy()
    label, proba = sess.run(["label", "probabilities"], {INPUT: xt})
    model_score = proba[:, 1]
    assert np.abs(model_score - clf.predict_proba(xt)[:, 1]).max() < 1e-5, "onnx and lightgbm disagree"

    rules = test["rule_score"].to_numpy()
    report = {
        "seed": args.seed,
        "train_rows": int(len(x)),
        "train_fraud_share": float(y.mean()),
        "test_rows": int(len(xt)),
        "test_fraud_share": float(yt.mean()),
        "trees": int(booster.num_trees()),
        "model": {
            "roc_auc": float(roc_auc_score(yt, model_score)),
            "precision_at_80_recall": precision_at_recall(yt, model_score),
        },
        "rules": {
            "roc_auc": float(roc_auc_score(yt, rules)),
            "precision_at_80_recall": precision_at_recall(yt, rules),
        },
        "thresholds": {"review": review, "decline": decline},
        # What each actually flags at its own review threshold (the rules' is fixed in the
        # engine: 0.5 review, 0.9 decline).
        "model_at_review": flagged_stats(yt, model_score, review),
        "rules_at_review": flagged_stats(yt, rules, 0.5),
        "by_pattern_recall_at_review": {
            p: float((model_score[(test["pattern"] == p).to_numpy()] >= review).mean())
            for p in sorted(test["pattern"].unique())
        },
    }
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")

    # Rows for the Rust evaluator's test: a seeded sample plus every fraud pattern's first row.
    rng = np.random.default_rng(args.seed)
    pick = np.sort(np.concatenate([rng.choice(len(xt), 400, replace=False), np.where(yt == 1)[0][:100]]))
    check = pd.DataFrame(xt[pick], columns=names)
    check["label"] = label[pick]
    check["probability"] = model_score[pick]
    check.to_csv(os.path.join(args.out, "check.csv"), index=False, float_format="%.9g")

    with open(os.path.join(args.out, "config.toml"), "w") as f:
        f.write(f"# Written by models/fraud/train.py --seed {args.seed}; see report.json.\n")
        f.write('platform = "onnx"\nfile = "model.onnx"\nmax_batch_size = 1024\n\n')
        f.write(f'[[inputs]]\nname = "{INPUT}"\ndatatype = "FP32"\nshape = [-1, {len(names)}]\n\n')
        f.write('[[outputs]]\nname = "label"\ndatatype = "INT64"\nshape = [-1]\n\n')
        f.write('[[outputs]]\nname = "probabilities"\ndatatype = "FP32"\nshape = [-1, 2]\n\n')
        f.write(f"[fraud]\nschema_version = {SCHEMA_VERSION}\nfeatures = {toml_list(names)}\n")
        f.write(f"thresholds = {{ review = {review:.6f}, decline = {decline:.6f} }}\n\n")
        for ref in reference_bins(x, names):
            f.write(f'[[fraud.reference]]\nfeature = "{ref["feature"]}"\n')
            f.write(f"edges = {toml_list(ref['edges'])}\nshare = {toml_list(ref['share'])}\n\n")
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
