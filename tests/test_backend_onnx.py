"""The ONNX Runtime backend: parity, caching, atomic exports, and a torch-free inference path."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_cli
from fastsentiment import Classifier
from fastsentiment.errors import BackendError
from fastsentiment.export.onnx import export_revision
from fastsentiment.models import resolve_model

TEXTS = ["I like cheese", "I hate cheesecake", "a", "the film was not good , but the cake was great and i love it"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(directory))
    return directory


def test_fp32_export_matches_hugging_face(tiny_model, cache):
    expected = Classifier.load(tiny_model, backend="torch").logits(TEXTS, batch_size=4)
    clf = Classifier.load(tiny_model, backend="onnx", precision="fp32")
    assert np.abs(clf.logits(TEXTS, batch_size=4) - expected).max() <= 1e-4
    # exported once, into the cache named by the environment, keyed by the model's content
    (export,) = cache.glob("onnx/*/model-fp32.onnx")
    model = resolve_model(tiny_model)
    assert export.parent.name == f"{model.content_hash[:32]}-r{export_revision(model)}"


def test_int8_is_the_cpu_default_and_close_to_fp32(bert_dir, cache):
    clf = Classifier.load(bert_dir, backend="onnx")
    assert (clf.backend.device, clf.backend.precision) == ("cpu", "int8")
    expected = Classifier.load(bert_dir, backend="torch").logits(TEXTS)
    assert np.abs(clf.logits(TEXTS) - expected).max() < 0.1


def test_int8_dynamic_runs_every_projection_on_integer_kernels(bert_dir, cache):
    """The opt-in fast int8: QAttention and integer matmuls, int8 embeddings, a smaller file than block-wise."""
    import onnx

    clf = Classifier.load(bert_dir, backend="onnx", precision="int8-dynamic")
    expected = Classifier.load(bert_dir, backend="torch").logits(TEXTS)
    assert np.abs(clf.logits(TEXTS) - expected).max() < 0.1
    operators = {node.op_type for node in onnx.load(str(clf.backend.path)).graph.node}
    assert {"QAttention", "MatMulInteger", "QEmbedLayerNormalization"} <= operators
    assert not operators & {"MatMul", "Attention", "MatMulNBits"}
    blockwise = Classifier.load(bert_dir, backend="onnx", precision="int8").backend.path
    assert clf.backend.path.stat().st_size < blockwise.stat().st_size
    # 7-bit weights where the CPU has no int8 dot product (VPMADDUBSW saturates on full-range weights)
    from fastsentiment.backends.base import cpu_flags

    seven_bit = not cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}
    assert clf.backend.path.name == ("model-int8-dynamic-7bit.onnx" if seven_bit else "model-int8-dynamic.onnx")


def test_unsupported_device_precision_pairs_are_clear_errors(bert_dir, cache):
    with pytest.raises(BackendError, match="fp16 runs on cuda"):
        Classifier.load(bert_dir, backend="onnx", precision="fp16", device="cpu")
    with pytest.raises(BackendError, match="choose one of int8, int8-dynamic, fp32, fp16"):
        Classifier.load(bert_dir, backend="onnx", precision="int4")


def test_cuda_fp16_when_present(bert_dir, cache):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here")
    clf = Classifier.load(bert_dir, backend="onnx", device="cuda")
    assert clf.backend.precision == "fp16"
    expected = Classifier.load(bert_dir, backend="torch").logits(TEXTS)
    assert np.abs(clf.logits(TEXTS) - expected).max() < 0.05
    numbered = Classifier.load(bert_dir, backend="onnx", device="cuda:0")  # the provider's device_id
    assert numbered.backend._session.get_provider_options()["CUDAExecutionProvider"]["device_id"] == "0"


def test_inference_path_imports_neither_torch_nor_transformers(bert_dir, cache):
    Classifier.load(bert_dir, backend="onnx")  # export (with torch) into the cache first
    script = (
        "import sys\n"
        "from fastsentiment import Classifier\n"
        f"clf = Classifier.load({str(bert_dir)!r}, backend='onnx')\n"
        "print(clf('I like cheese'))\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, env={**os.environ}, cwd=ROOT)
    assert result.returncode == 0, result.stderr.decode()


def test_an_interrupted_export_leaves_nothing_a_later_run_would_load(bert_dir, cache):
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsentiment", "classify", "x", "-m", str(bert_dir), "-b", "onnx"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    deadline = time.monotonic() + 120
    while not list(cache.glob("onnx/*/.building-*/*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not list(cache.glob("onnx/*/*.onnx")), "a partial export was left where it would be loaded"
    (killed,) = cache.glob("onnx/*/.building-*")
    folder = killed.parent
    # A live build of another process (whatever its pid namespace or host: it holds its folder's lock) is kept;
    # folders without a held file (where locks cannot be told) are swept once a day old.
    import fcntl

    (folder / ".building-live").mkdir()
    live = open(folder / ".building-live" / ".held", "w")  # held while the next build runs
    fcntl.flock(live, fcntl.LOCK_EX)
    (folder / ".building-fresh").mkdir()
    (folder / ".building-stale").mkdir()
    os.utime(folder / ".building-stale", (time.time() - 2 * 86400,) * 2)
    result = run_cli("classify", "I like cheese", "-m", str(bert_dir), "-b", "onnx")
    assert result.returncode == 0, result.stderr
    assert len(list(cache.glob("onnx/*/model-int8.onnx"))) == 1
    live.close()
    # the killed build's scratch folder (a SIGKILL skips its clean-up) is swept by the next build there
    assert sorted(path.name for path in folder.glob(".building-*")) == [".building-fresh", ".building-live"]


def test_auto_without_a_measurement_is_the_interim_choice_and_one_off_calls_start_on_onnx(bert_dir, cache):
    from fastsentiment.backends.auto import interim_choice

    interim = interim_choice("auto", "throughput")
    loaded = Classifier.load(bert_dir)
    assert (loaded.backend.spec.name, loaded.backend.precision) == (interim.backend, interim.precision)
    assert Classifier.load(bert_dir, workload="start").backend.spec.name == "onnx"


def test_backends_command_lists_every_backend():
    result = run_cli("backends")
    text = result.stdout.decode()
    for name in ("onnx", "torch", "ane"):
        assert any(line.split("│")[1].strip() == name for line in text.splitlines() if "│" in line), name


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_cache_that_cannot_be_written_is_one_line_naming_the_setting(bert_dir, tmp_path, backend):
    """A file where the cache folder should be (as a read-only home would do for any user but root)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = run_cli(
        "classify",
        "--model",
        str(bert_dir),
        "--backend",
        backend,
        "I like cheese",
        env={"FASTSENTIMENT_CACHE": str(blocker / "cache")},
    )
    assert result.returncode == 2 and result.stdout == b""
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write to the cache folder {blocker / 'cache'}")
    assert lines[0].endswith("set FASTSENTIMENT_CACHE to a writable folder")


@pytest.mark.parametrize(("config", "file"), [("onnx:fp32", "model-fp32.onnx"), ("openvino:fp32", "model-plain.onnx")])
def test_a_damaged_cached_export_is_built_again_with_a_warning(bert_dir, tmp_path, config, file):
    """A cached export truncated on disk since it was built (a full disk, a copy cut short) made every later run a
    traceback; it is built again once, said in one warning, and the run answers as before."""
    env = {"FASTSENTIMENT_CACHE": str(tmp_path)}
    args = ["classify", "-m", str(bert_dir), "-b", config, "--json", "good film"]
    first = run_cli(*args, env=env)
    assert first.returncode == 0, first.stderr.decode()
    (cached,) = tmp_path.glob(f"onnx/*/{file}")
    with open(cached, "r+b") as damaged:
        damaged.truncate(1000)
    again = run_cli(*args, env=env)
    assert again.returncode == 0, again.stderr.decode()
    (warning,) = again.stderr.decode().splitlines()
    assert warning.startswith(f"warning: the cached {cached} does not load (") and warning.endswith("building it again")
    assert json.loads(again.stdout) == json.loads(first.stdout)


def test_an_unwritable_openvino_compiled_cache_compiles_without_it(bert_dir, tmp_path):
    env = {"FASTSENTIMENT_CACHE": str(tmp_path)}
    (tmp_path / "openvino").write_text("a file where the compiled-model cache would go")  # unwritable, even as root
    result = run_cli("classify", "-m", str(bert_dir), "-b", "openvino:fp32", "good film", env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.decode().strip() == (
        f"warning: cannot write OpenVINO's compiled-model cache {tmp_path / 'openvino' / 'fp32'}: compiling on every load"
    )
