"""`fastsentiment compare`: where two backends (or two models) disagree, worst first."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastsentiment.bench.data import load_bench_data
from fastsentiment.bench.run import check_config
from fastsentiment.errors import InputError
from fastsentiment.tokenization import Truncations


def compare_configs(
    a: str,
    b: str,
    *,
    model: str | None = None,
    model_b: str | None = None,
    data: str = "../shared/data/sst2",
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
    first = Classifier.load(model, backend=a, device=device)
    second = Classifier.load(model_b or model, backend=b, device=device if device_b is None else device_b)
    if first.labels != second.labels:
        raise InputError(f"the models' labels differ: {first.labels} vs {second.labels}")
    split = load_bench_data(data, text_column, with_labels=False).agreement  # predictions against predictions
    texts = split.texts
    left = first.logits(texts, names=split.names)  # truncation warnings name the file's lines, once
    right = second.logits(texts, truncations=Truncations(named=0))
    left_p, right_p = first.scores(left), second.scores(right)
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
                "b": names[right_y[i]],
                "b_score": float(right_p[i].max()),
                "a_logits": left[i].tolist(),
                "b_logits": right[i].tolist(),
            }
            for i in worst
        ],
    }
