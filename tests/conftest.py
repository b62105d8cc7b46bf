from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_forkserver import Zygote
from tiny_models import build_model

_zygote: Zygote | None = None  # set in pytest_configure unless --fresh-cli


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--fresh-cli",
        action="store_true",
        help="start a fresh interpreter for every fastsentiment command instead of forking one that has imported "
        "the libraries (tests/cli_forkserver.py)",
    )


def pytest_configure(config) -> None:
    """Give each pytest-xdist worker its own share of this process's CPUs.

    Every backend sizes its thread pool by the CPUs it may run on (`usable_cpus`), so pinned workers (and the
    subprocesses they start, which inherit the affinity) each run on their own cores instead of all of them
    spinning on all cores at once.
    """
    global _zygote
    if not config.getoption("fresh_cli"):
        _zygote = Zygote(ROOT, {**os.environ, "HF_HUB_OFFLINE": "1"})
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # set by pytest-xdist in its workers: gw0, gw1, ...
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= workers:
        # modulo: the worker that replaces a crashed one is numbered on (gw2 of two), and an empty set is refused
        os.sched_setaffinity(0, cpus[int(worker.removeprefix("gw")) % workers :: workers])


ROOT = Path(__file__).resolve().parents[1]
# For tests that compare a command's scores with an in-process Classifier's: one batch-independent fp32 path on
# both sides. `auto` may choose a per-tensor int8 whose scores move with a sentence's batch neighbours (it did on
# an AVX2-only CPU and in CI), and a file job may measure and pick another path.
PINNED_FP32 = ("--backend", "onnx", "--precision", "fp32")
SST2 = Path(os.environ.get("FASTSENTIMENT_SST2", ROOT.parent / "shared" / "data" / "sst2"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "tiny-bert", "bert")


@pytest.fixture(scope="session")
def distilbert_dir(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("models") / "tiny-distilbert", "distilbert")


@pytest.fixture(scope="session", params=["bert", "distilbert"])
def tiny_model(request, bert_dir, distilbert_dir) -> Path:
    return bert_dir if request.param == "bert" else distilbert_dir


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    if not (SST2 / "dev.tsv").is_file():
        pytest.skip(f"SST-2 not found at {SST2} (set FASTSENTIMENT_SST2)")
    return SST2


@pytest.fixture(scope="session")
def sst2_dev(sst2_dir) -> tuple[list[str], list[int]]:
    with open(sst2_dir / "dev.tsv", encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def run_cli(*args: str, input: bytes | str | None = None, env: dict | None = None, timeout: float = 300):
    """Run the real `fastsentiment` command in a process of its own: forked from the worker's zygote, or a fresh
    interpreter where its environment needs one (or with --fresh-cli)."""
    if isinstance(input, str):
        input = input.encode()
    base = {**os.environ, "HF_HUB_OFFLINE": "1"}
    environment = {**base, **(env or {})}
    if _zygote is not None and _zygote.fresh_reason(env or {}, base) is None:
        return _zygote.run(list(args), input, environment, timeout)
    return subprocess.run(
        [sys.executable, "-m", "fastsentiment", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=environment,
        cwd=ROOT,
    )


def coreml_program(package: Path):
    """The spec of a saved .mlpackage and the operations of its main function (read without macOS)."""
    import coremltools as ct

    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    function = spec.mlProgram.functions["main"]
    (block,) = function.block_specializations.values()
    return spec, block


def save_split_decision(model, latency_path_rate: float) -> None:
    """A stored CPU decision whose throughput path (onnx:fp32: 100 sentences/s at batch 32, 5 ms at batch 1) is not
    its latency path (openvino:fp32: `latency_path_rate` sentences/s, 3 ms), in the cache $FASTSENTIMENT_CACHE names."""
    from fastsentiment.backends import auto

    def row(config: str, sentences_per_s: float, latency_ms: float) -> dict:
        return {"config": config, "sentences_per_s": sentences_per_s, "latency_ms": latency_ms, "faithful": True,
                "failed": None}  # fmt: skip

    auto._save(
        auto.decision_path(model, "cpu"),
        {
            "key": auto.decision_key(model, "cpu", "builtin-v2"),
            "measured_at": "2026-01-01 00:00",
            "table": [row("onnx:fp32", 100.0, 5.0), row("openvino:fp32", latency_path_rate, 3.0)],
            "throughput": {"backend": "onnx", "precision": "fp32", "why": "onnx:fp32, the fastest"},
            "latency": {"backend": "openvino", "precision": "fp32", "why": "openvino:fp32, 3.00 ms p50 at batch 1"},
        },
    )
