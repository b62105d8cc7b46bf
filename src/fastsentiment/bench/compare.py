"""`fastsentiment compare`: where two backends (or two models) disagree, worst first."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastsentiment.bench.data import SST2_FOLDER, load_bench_data
from fastsentiment.bench.run import check_config
from fastsentiment.errors import InputError
from fastsentiment.tokenization import Truncations


def compare_configs(
    a: str,
    b: str,
    *,
    model: str | None = None,
    model_b: str | None = None,
    data: str = SST2_FOLDER,
    text_column: str | None = None,
    show: int = 10,
    device: str = "auto",
    device_b: str | None = None,
) -> dict[str, Any]:
    """Agreement, |Δlogit| and the `show` most confident disagreements of configurations `a` (on `device`) and `b`
    (on `device_b`, default the same device): two backends, two models, or one backend on a CPU and a GPU."""
    from fastsentiment.classifier import Classifier

    for config in (a, b):  # the devices: checked by the loads below, in their own words
        check_config(config)
        if config.startswith("pipeline"):
            raise InputError("compare takes backends; the pipeline reference is torch:fp32 here")
    # The data before the models: a mistyped path is refused before an export of minutes, not after it.
    split = load_bench_data(data, text_column, with_labels=False).agreement  # predictions against predictions
    first = Classifier.load(model, backend=a, device=device)
    second = Classifier.load(model_b or model, backend=b, device=device if device_b is None else device_b)
    order = label_order(first.labels, second.labels)
    texts = split.texts
    left = first.logits(texts, names=split.names)  # truncation warnings name the file's lines, once
    right = second.logits(texts, truncations=Truncations(named=0))
    # B's scores from its own logits (its scoring function), then both in A's class order
    left_p, right_p = first.scores(left), second.scores(right)[:, order]
    right = right[:, order]
    left_y, right_y = left.argmax(1), right.argmax(1)
    delta = np.abs(left - right)
    disagree = np.flatnonzero(left_y != right_y)
    worst = disagree[np.argsort(-(left_p.max(1) + right_p.max(1))[disagree], kind="stable")][:show]
    names = first.labels
    return {
        "a": a,
        "b": b,
        "model_a": str(first.model.path),
        "model_b": str(second.model.path),
        "device_a": first.backend.device,
        "device_b": second.backend.device,
        "data": data,
        "labels": list(names),  # the order of both sides' logits below (B's columns follow A's classes)
        "sentences": len(texts),
        "differ": len(disagree),
        "agreement": float((left_y == right_y).mean()),
        "max_abs_logit_delta": float(delta.max()),
        "mean_abs_logit_delta": float(delta.mean()),
        "disagreements": [
            {
                "text": texts[i],
                "a": names[left_y[i]],
                "a_score": float(left_p[i].max()),
                "b": second.labels[order[right_y[i]]],  # in B's own words
                "b_score": float(right_p[i].max()),
                "a_logits": left[i].tolist(),
                "b_logits": right[i].tolist(),
            }
            for i in worst
        ],
    }


def label_order(a: list[str], b: list[str]) -> list[int]:
    """For each of A's classes, the column of B's logits that holds it: models may list the same classes in another
    order ("POSITIVE", "NEGATIVE") or case ("positive"), and their logits are compared class by class, not column by
    column. Classes that do not match one to one are refused."""
    if a == b:
        return list(range(len(a)))
    for key in (str, str.casefold):
        index = {key(name): i for i, name in enumerate(b)}
        if len(a) == len(b) == len(index) == len({key(name) for name in a}) and all(key(n) in index for n in a):
            return [index[key(name)] for name in a]
    raise InputError(f"the models' labels differ: {', '.join(a)} vs {', '.join(b)}; compare needs the same classes")
