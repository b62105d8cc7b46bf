"""Artefacts written by `fastsentiment export` and what the coreml backend says off macOS."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, coreml_program, run_cli
from tiny_models import build_model

LAYERS, HEADS = 2, 4


@pytest.fixture(scope="module")
def ane_source(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("m") / "bert", "bert", layers=LAYERS, hidden=32, heads=HEADS)


@pytest.mark.parametrize(("lengths", "expected"), [("128", None), ("16,32,64", [(1, 16), (1, 32), (1, 64)])])
def test_coreml_package_has_int32_inputs_fp16_ops_and_the_ane_layout(ane_source, tmp_path, lengths, expected):
    pytest.importorskip("coremltools")
    import coremltools.proto.FeatureTypes_pb2 as ft
    import coremltools.proto.MIL_pb2 as mil

    package = tmp_path / "model.mlpackage"
    if lengths == "128":
        # An earlier package there is replaced, as the ONNX and OpenVINO exports replace their files.
        (package / "Data").mkdir(parents=True)
        (package / "Manifest.json").write_text("{}")
    else:  # anything else there is not the tool's to remove
        package.write_text("notes")
        result = run_cli("export", "coreml", str(ane_source), str(package), "--seq-lengths", lengths)
        assert result.returncode == 2
        assert (
            result.stderr.decode()
            == f"error: {package} exists and is not a CoreML package; remove it or choose another path\n"
        )
        package.unlink()
    if lengths == "128":  # the tiny model accepts 64 tokens: 128 asked for must be refused with a clear error
        result = run_cli("export", "coreml", str(ane_source), str(package), "--seq-lengths", "128")
        # one line: the options are checked before coremltools, whose import prints lines of its own off macOS
        assert result.returncode == 2 and result.stderr.decode().startswith(
            "error: sequence lengths must lie between 2 and 64"
        )
        assert result.stderr.decode().count("\n") == 1, result.stderr.decode()
        lengths = None  # the default, 128, is cut to the model's 64 (it was refused as above)
    asked = [] if lengths is None else ["--seq-lengths", lengths]
    result = run_cli("export", "coreml", str(ane_source), str(package), *asked)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    # Its one line, without coremltools' import warnings and per-pass progress bars around it.
    assert result.stdout.decode().startswith(f"wrote {package} (fp16") and result.stderr == b"", result.stderr[-2000:]
    assert [path.name for path in tmp_path.iterdir()] == ["model.mlpackage"]  # no partial package left beside it
    spec, block = coreml_program(package)
    assert spec.WhichOneof("Type") == "mlProgram"
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert set(inputs) == {"input_ids", "attention_mask"}
    for array in inputs.values():
        assert array.dataType == ft.ArrayFeatureType.INT32
        shapes = sorted(tuple(s.shape) for s in array.enumeratedShapes.shapes)
        assert shapes == (expected or []) and (expected or list(array.shape) == [1, 64])
    assert [o.name for o in spec.description.output] == ["logits"]

    ops = Counter(op.type for op in block.operations)
    # 4 attention projections + 2 feed-forward convs per layer, then pooler and classifier
    assert ops["conv"] == LAYERS * 6 + 2
    assert ops["einsum"] == LAYERS * HEADS * 2  # one score and one mix einsum per head
    assert ops["softmax"] == LAYERS * HEADS
    assert "matmul" not in ops and "linear" not in ops
    conv_weights = [
        op.attributes["val"].type.tensorType.dataType
        for op in block.operations
        if op.type == "const" and len(op.attributes["val"].type.tensorType.dimensions) == 4
    ]
    assert conv_weights and set(conv_weights) == {mil.DataType.FLOAT16}


def test_coreml_backend_gives_a_batch_the_smallest_package_length_that_holds_it_or_its_texts():
    """CoreML predicts on macOS only; here its package is a stand-in noting the inputs it is given. A batch padded to
    a multiple past the longest enumerated length (`pad_to_multiple_of`) runs at the length its texts need; one that
    fits runs at the smallest length holding its width (bench's fixed rows ask for that); texts longer are refused."""
    from fastsentiment.backends.coreml_backend import CoremlBackend
    from fastsentiment.errors import BackendError

    class Package:
        def __init__(self) -> None:
            self.widths: list[int] = []

        def predict(self, rows):
            self.widths.append(rows[0]["input_ids"].shape[1])
            return [{"logits": np.zeros((1, 2))} for _ in rows]

    package = Package()
    backend = CoremlBackend(package, [32, 64, 128], Path("unused.mlpackage"), "cpu")

    def batch(width: int, used: int) -> tuple[np.ndarray, np.ndarray]:
        mask = np.zeros((2, width), dtype=np.int64)
        mask[0, :used] = 1
        return np.where(mask == 1, 7, 0), mask

    assert backend.logits(*batch(144, 121)).shape == (2, 2)  # padded past 128 for 121 tokens of text
    backend.logits(*batch(128, 40))  # bench's fixed length: kept
    backend.logits(*batch(40, 40))
    assert package.widths == [128, 128, 64]
    with pytest.raises(BackendError, match="the CoreML model takes at most 128 tokens"):
        backend.logits(*batch(144, 130))


def test_coreml_backend_off_macos_is_a_one_line_error(bert_dir):
    if sys.platform == "darwin":
        pytest.skip("this is macOS: the coreml backend runs here")
    result = run_cli("classify", "I like cheese", "-m", str(bert_dir), "-b", "coreml")
    assert result.returncode == 2
    assert result.stderr.decode().splitlines()[-1].startswith("error: backend coreml: CoreML predicts on macOS only")


def test_onnx_export_runs_in_plain_onnxruntime(bert_dir, tmp_path, monkeypatch):
    import onnxruntime

    from fastsentiment import Classifier

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "model.onnx"
    result = run_cli("export", "onnx", str(bert_dir), str(out), "--precision", "fp32")
    assert result.returncode == 0, result.stderr.decode()
    clf = Classifier.load(bert_dir, backend="torch")
    batch = clf.encoder.pad(clf.encoder.encode(["I like cheese", "bad film"]))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
    (logits,) = session.run(["logits"], feeds)
    np.testing.assert_allclose(logits, clf.backend.logits(batch.input_ids, batch.attention_mask), atol=1e-4)


def test_openvino_export_computes_what_the_model_computes(bert_dir, tmp_path, monkeypatch):
    ov = pytest.importorskip("openvino")
    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "model.xml"
    result = run_cli("export", "openvino", str(bert_dir), str(out))
    assert result.returncode == 0, result.stderr.decode()

    from fastsentiment import Classifier

    reference = Classifier.load(bert_dir, backend="torch", precision="fp32")
    texts = ["I like cheese", "the film was not good at all , and i hate this cake", "bad"]
    batch = reference.encoder.pad(reference.encoder.encode(texts))
    compiled = ov.Core().compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if "token_type_ids" in {name for port in compiled.inputs for name in port.get_names()}:
        feeds["token_type_ids"] = np.zeros_like(batch.input_ids)
    exported = compiled(feeds)[compiled.output("logits")]
    np.testing.assert_allclose(exported, reference.logits(texts), atol=1e-4)


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_an_export_into_a_place_that_cannot_hold_it_is_one_line(bert_dir, tmp_path, kind):
    suffix = {"onnx": ".onnx", "openvino": ".xml"}[kind]
    (tmp_path / "a-file").write_text("")
    (tmp_path / f"a-folder{suffix}").mkdir()
    for out, says in [
        (tmp_path / "a-file" / f"model{suffix}", "a-file is a file, not a folder"),
        (tmp_path / f"a-folder{suffix}", "is a folder; name a file"),
    ]:
        result = run_cli("export", kind, str(bert_dir), str(out))
        stderr = result.stderr.decode()
        assert result.returncode == 2 and says in stderr and stderr.count("\n") == 1, stderr
    result = run_cli("export", kind, str(bert_dir), str(tmp_path / "new" / "folder" / f"model{suffix}"))
    assert result.returncode == 0, result.stderr.decode()[-2000:]  # missing folders are created, for both kinds


def test_openvino_second_load_reads_the_compiled_model_cache(bert_dir, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from fastsentiment.backends.registry import load_backend
    from fastsentiment.cache import cache_root
    from fastsentiment.models.modeldir import load_model_dir

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    model = load_model_dir(bert_dir)
    ids = np.array([[101, 7, 8, 102]], dtype=np.int64)
    mask = np.ones_like(ids)
    first = load_backend(model, "openvino", "cpu", "fp32").logits(ids, mask)
    blobs = sorted((cache_root() / "openvino" / "fp32").glob("*.blob"))
    assert blobs, "the first load must write a compiled blob"
    stamps = [blob.stat().st_mtime_ns for blob in blobs]
    second = load_backend(model, "openvino", "cpu", "fp32").logits(ids, mask)
    assert [blob.stat().st_mtime_ns for blob in sorted((cache_root() / "openvino" / "fp32").glob("*.blob"))] == stamps
    np.testing.assert_allclose(first, second, atol=1e-5)


def test_openvino_bf16_follows_the_cpu(bert_dir, tmp_path, monkeypatch):
    """bf16 where the CPU computes it; elsewhere a one-line refusal that names the way out, not a silent fp32."""
    pytest.importorskip("openvino")
    from fastsentiment.backends.base import cpu_computes_bf16

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    result = run_cli("classify", "-m", str(bert_dir), "--backend", "openvino", "--precision", "bf16", "I like cheese")
    if cpu_computes_bf16():
        assert result.returncode == 0, result.stderr.decode()[-2000:]
    else:
        assert result.returncode == 2
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "no bf16" in lines[0] and "--precision fp32" in lines[0], lines


PARALLEL_CHECK = """
import faulthandler, os, sys
import numpy as np
faulthandler.dump_traceback_later(100, exit=True)  # a hang shows every thread's stack instead of a bare timeout
os.sched_setaffinity(0, range(os.cpu_count()))  # the test worker was pinned to one CPU; this child is not
from fastsentiment.backends.registry import load_backend
from fastsentiment.classifier import Classifier
from fastsentiment.models.modeldir import load_model_dir
from fastsentiment.tokenization import TextEncoder

model = load_model_dir(sys.argv[1])
encoder = TextEncoder.from_model_dir(model)
texts = [("word " * (1 + i % 37)).strip() for i in range(240)]
ids = encoder.encode(texts)
throughput = load_backend(model, "openvino", "cpu", "fp32", threads=2, workload="throughput")
batched = Classifier(model, throughput, encoder, 4, threads=2)
lone = batched.one_call_at_a_time()  # what the server runs a text on when the machine is quiet
assert (lone.backend.spec.name, lone.backend.precision, lone.labels) == ("openvino", "fp32", batched.labels)
assert lone.threads == 2 and lone.one_call_at_a_time() is lone
print(lone.backend.parallel_calls, batched.backend.parallel_calls)
np.testing.assert_allclose(batched.logits_for_ids(ids), lone.logits_for_ids(ids), atol=1e-5)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is a Linux API")
def test_openvino_throughput_runs_calls_side_by_side_with_the_same_answers(bert_dir, tmp_path):
    """Loaded for throughput on two or more CPUs, OpenVINO splits them into streams and the Classifier runs that
    many batches at once (each call with its own infer request, its output copied before the request is reused);
    every text gets exactly what one call at a time gives it, on the same model loaded with every thread on one
    call (`one_call_at_a_time`)."""
    pytest.importorskip("openvino")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: OpenVINO makes one stream")
    env = {**os.environ, "FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", PARALLEL_CHECK, str(bert_dir)], capture_output=True, text=True, env=env, timeout=150
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["1", "2"]  # latency: one call with every thread; throughput: two streams


def test_an_openvino_export_whose_weights_cannot_be_written_leaves_nothing_half_written(bert_dir, tmp_path):
    pytest.importorskip("openvino")
    out = tmp_path / "model.xml"
    (tmp_path / "model.bin").mkdir()  # where the weights go
    result = run_cli("export", "openvino", str(bert_dir), str(out))
    assert (result.returncode, result.stderr.decode()) == (
        2,
        f"error: cannot write {tmp_path / 'model.bin'}: Is a directory\n",
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.bin"]  # no .xml without weights, no scratch


def on_a_small_tmpfs(tmp_path: Path, folder: str, size: str, command: str) -> tuple[int, str, str]:
    """Run `command` in `tmp_path`, where `folder` is a tmpfs of `size` mounted in a namespace of its own (a full disk
    without filling a real one): its exit code, its stderr and the names left in `folder`."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("needs unshare to mount a small tmpfs in a namespace of its own")
    script = f"""
        cd {tmp_path} && mkdir {folder} && mount -t tmpfs -o size={size} tmpfs {folder} || exit 99
        {command} 2>full.err; echo $? > full.rc; ls -A {folder} > full.ls
    """
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], cwd=ROOT, capture_output=True, check=False)
    assert done.returncode != 99, done.stderr.decode()  # the tmpfs could not be mounted
    read = lambda name: (tmp_path / name).read_text()  # noqa: E731
    return int(read("full.rc")), read("full.err"), read("full.ls")


@pytest.mark.parametrize("kind", ["onnx", "openvino", "openvino --fp16-weights"])
def test_an_export_that_does_not_fit_on_its_disk_says_so_and_leaves_nothing(bert_dir, tmp_path, kind):
    """OpenVINO's writer reports a full disk as "basic_ios::clear: iostream error", without the system's reason,
    and (fp16 weights) after removing what it wrote, which gives the space back."""
    kind, *options = kind.split()
    pytest.importorskip(kind)
    suffix = {"onnx": ".onnx", "openvino": ".xml"}[kind]
    export = f"{sys.executable} -m fastsentiment export {kind} {bert_dir} small/model{suffix} {' '.join(options)}"
    size = "72k" if options else "48k"  # fp16 weights (~85 kB) do not fit, and what OpenVINO removes leaves room
    code, error, left = on_a_small_tmpfs(tmp_path, "small", size, f"FASTSENTIMENT_CACHE={tmp_path / 'cache'} {export}")
    assert code == 2 and error.splitlines()[-1].endswith(": No space left on device"), error
    assert left == ""


def test_a_cache_without_room_is_named_in_the_error(bert_dir, tmp_path):
    """The export's writer names no file: "error: No space left on device" did not say that the cache was full, while
    the output's own disk had room."""
    pytest.importorskip("onnxruntime")
    export = f"{sys.executable} -m fastsentiment export onnx {bert_dir} model.onnx --precision fp32"
    code, error, _ = on_a_small_tmpfs(tmp_path, "cache", "64k", f"FASTSENTIMENT_CACHE={tmp_path / 'cache'} {export}")
    assert code == 2, error
    assert error.splitlines()[-1].startswith("error: cannot write ") and (
        f" in the cache at {tmp_path / 'cache'}" in error and "No space left on device; free space there" in error
    ), error
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_an_export_onto_a_link_writes_where_it_points_and_keeps_the_link(bert_dir, tmp_path, kind):
    """The files were moved onto the link's own name: the link became a file and what it named was left stale."""
    suffix = {"onnx": ".onnx", "openvino": ".xml"}[kind]
    pytest.importorskip({"onnx": "onnxruntime", "openvino": "openvino"}[kind])
    store = tmp_path / "store"
    store.mkdir()
    (store / f"v1{suffix}").write_text("an earlier export")
    link = tmp_path / f"latest{suffix}"
    link.symlink_to(store / f"v1{suffix}")
    if kind == "openvino":  # OpenVINO reads the weights beside the name it is given: a release links both
        (tmp_path / "latest.bin").symlink_to(store / "v1.bin")
    result = run_cli("export", kind, str(bert_dir), str(link), env={"FASTSENTIMENT_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert link.is_symlink() and link.resolve() == store / f"v1{suffix}"
    written = sorted(path.name for path in store.iterdir())
    assert written == (["v1.onnx"] if kind == "onnx" else ["v1.bin", "v1.xml"])  # the weights beside it, no scratch
    if kind == "onnx":
        import onnxruntime

        onnxruntime.InferenceSession(str(link))
    else:
        import openvino as ov

        ov.Core().read_model(str(link))
    # A link to a place nothing can be written in is refused before any export, by its target's place (the link's own
    # folder was checked: the export ran, then failed with exit 1 naming a scratch folder).
    (tmp_path / "a-file").write_text("")
    stray = tmp_path / f"stray{suffix}"
    stray.symlink_to(tmp_path / "a-file" / f"x{suffix}")
    cache = tmp_path / "cache-2"
    result = run_cli("export", kind, str(bert_dir), str(stray), env={"FASTSENTIMENT_CACHE": str(cache)})
    assert result.returncode == 2 and result.stderr.decode() == (
        f"error: OUT {tmp_path / 'a-file' / f'x{suffix}'}: {tmp_path / 'a-file'} is a file, not a folder\n"
    )
    assert not cache.exists()  # nothing exported


def test_an_export_from_a_damaged_cache_is_built_again_not_copied(bert_dir, tmp_path):
    """`export onnx` copied a cached export truncated on disk and said it had written it."""
    import onnxruntime

    env = {"FASTSENTIMENT_CACHE": str(tmp_path / "cache")}
    first = run_cli("export", "onnx", str(bert_dir), str(tmp_path / "a.onnx"), "-p", "plain", env=env)
    assert first.returncode == 0, first.stderr.decode()
    (cached,) = (tmp_path / "cache").glob("onnx/*/model-plain.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])
    again = run_cli("export", "onnx", str(bert_dir), str(tmp_path / "b.onnx"), "-p", "plain", env=env)
    assert again.returncode == 0, again.stderr.decode()
    assert "does not load" in again.stderr.decode() and "building it again" in again.stderr.decode()
    onnxruntime.InferenceSession(str(tmp_path / "b.onnx"))  # a whole model
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()


def test_an_export_of_a_missing_model_makes_no_folders(tmp_path):
    out = tmp_path / "new" / "folders" / "model.onnx"
    result = run_cli("export", "onnx", str(tmp_path / "no-such-model"), str(out))
    assert result.returncode == 2 and "model directory not found" in result.stderr.decode()
    assert not (tmp_path / "new").exists()


def test_a_folder_where_a_cached_export_goes_is_named_in_one_line(bert_dir, tmp_path):
    from fastsentiment.export.onnx import export_revision
    from fastsentiment.models import resolve_model

    model = resolve_model(bert_dir)
    blocked = tmp_path / "onnx" / f"{model.content_hash[:32]}-r{export_revision(model)}" / "model-fp32.onnx"
    blocked.mkdir(parents=True)
    result = run_cli(
        "classify", "-m", str(bert_dir), "-b", "onnx:fp32", "x", env={"FASTSENTIMENT_CACHE": str(tmp_path)}
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"error: cannot put model-fp32.onnx in the cache at {blocked}: Is a directory; remove it, or set "
        "FASTSENTIMENT_CACHE to another folder"
    )


@pytest.mark.parametrize(("config", "precision"), [("onnx:fp32", "fp32"), ("openvino:fp32", "plain")])
def test_an_export_with_its_weights_beside_it_is_cached_loaded_and_copied_whole(bert_dir, tmp_path, config, precision):
    """A model too large for one protobuf message (2 GiB: XLM-RoBERTa-large in fp32) was a traceback at its export;
    it is now written with its weights in `<name>.onnx.data`. A tiny model exported in that layout stands in for it:
    the cache takes both files, the backend loads them, `export onnx` copies both under the new name (the graph
    naming its own weights file), and a damaged weights file is built again."""
    import shutil

    import onnxruntime

    from fastsentiment.cache import cached_file
    from fastsentiment.export.onnx import export_onnx
    from fastsentiment.models import resolve_model

    cache = tmp_path / "cache"
    env = {"FASTSENTIMENT_CACHE": str(cache)}
    args = ["classify", "-m", str(bert_dir), "-b", config, "--json", "good film", "bad film"]
    whole = run_cli(*args, env=env)
    assert whole.returncode == 0, whole.stderr.decode()
    assert (
        run_cli("export", "onnx", str(bert_dir), str(tmp_path / "whole.onnx"), "-p", precision, env=env).returncode == 0
    )
    (cached,) = cache.glob(f"onnx/*/model-{precision}.onnx")
    cached.unlink()
    shutil.rmtree(cache / "openvino", ignore_errors=True)  # OpenVINO's compiled models: it must read the new file
    cached_file(cached, lambda scratch: export_onnx(resolve_model(bert_dir), scratch, precision, weights_apart=True))
    assert sorted(path.name for path in cached.parent.iterdir()) == [cached.name, f"{cached.name}.data"]

    apart = run_cli(*args, env=env)
    assert apart.returncode == 0 and not apart.stderr, apart.stderr.decode()
    assert apart.stdout == whole.stdout
    exported = run_cli("export", "onnx", str(bert_dir), str(tmp_path / "apart.onnx"), "-p", precision, env=env)
    assert exported.returncode == 0, exported.stderr.decode()
    assert exported.stdout.decode().startswith(f"wrote {tmp_path / 'apart.onnx.data'} and {tmp_path / 'apart.onnx'} (")
    assert sorted(path.name for path in tmp_path.glob("*.onnx*")) == ["apart.onnx", "apart.onnx.data", "whole.onnx"]

    (cached.parent / f"{cached.name}.data").write_bytes(b"damaged")
    shutil.rmtree(cache / "openvino", ignore_errors=True)  # a compiled model would answer without reading it
    rebuilt = run_cli(*args, env=env)
    assert rebuilt.returncode == 0 and "building it again" in rebuilt.stderr.decode(), rebuilt.stderr.decode()
    assert rebuilt.stdout == whole.stdout
    assert sorted(path.name for path in cached.parent.iterdir()) == [cached.name]  # the damaged weights gone

    shutil.rmtree(cache)  # the copy reads its own weights file, not the cache's
    ids = np.array([[2, 7, 9, 3]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    outputs = [
        onnxruntime.InferenceSession(str(tmp_path / name)).run(None, feeds)[0] for name in ("whole.onnx", "apart.onnx")
    ]
    np.testing.assert_array_equal(*outputs)


def test_the_optimiser_keeps_one_shape_inference_copy_of_the_model_at_a_time(bert_dir, tmp_path):
    """ONNX Runtime's fusions infer shapes four times, each on a copy of the whole model; uncollected, the copies
    held 7x a large model's weights at once. Counted here as the shape-inference helpers alive when each new one
    is made, with the fused graph unchanged and the optimiser's class as it was afterwards."""
    import collections
    import weakref

    import onnx
    from onnxruntime.transformers.optimizer import MODEL_TYPES
    from shape_infer_helper import SymbolicShapeInferenceHelper  # as ONNX Runtime's optimiser imports it

    from fastsentiment.export import onnx as onnx_export
    from fastsentiment.models.modeldir import load_model_dir

    model = load_model_dir(bert_dir)
    raw, optimised = tmp_path / "raw.onnx", tmp_path / "optimised.onnx"
    onnx_export._export_fp32(model, raw)
    alive, most_at_once = weakref.WeakSet(), []
    original_init = SymbolicShapeInferenceHelper.__init__

    def counting_init(self, *args, **kwargs):
        most_at_once.append(len(alive))
        alive.add(self)
        original_init(self, *args, **kwargs)

    SymbolicShapeInferenceHelper.__init__ = counting_init
    try:
        onnx_export._optimise(raw, optimised, model)
    finally:
        SymbolicShapeInferenceHelper.__init__ = original_init
    assert len(most_at_once) >= 3  # several fusions inferred shapes
    assert max(most_at_once) <= 1, most_at_once  # the one the model holds, until it is replaced
    operators = collections.Counter(node.op_type for node in onnx.load(str(optimised)).graph.node)
    assert operators["Attention"] == 2 and operators["SkipLayerNormalization"] == 4
    assert "infer_runtime_shape" not in vars(MODEL_TYPES["bert"][0])


def test_ctrl_c_while_coremltools_imports_is_an_interrupt_once_the_import_is_whole():
    """coremltools imports torch and its other optional libraries under a bare `except:`: Ctrl+C in that window was
    swallowed (the export ran on and exited 0) or left torch half imported (a traceback, an abort)."""
    import signal
    import time

    from fastsentiment.export.coreml import _interrupt_after

    before, finished = signal.getsignal(signal.SIGINT), []
    with pytest.raises(KeyboardInterrupt):
        with _interrupt_after():
            os.kill(os.getpid(), signal.SIGINT)
            try:  # what coremltools does with an interrupt inside its imports
                time.sleep(0.2)
            except:  # noqa: E722
                pass
            finished.append(True)
    assert finished == [True] and signal.getsignal(signal.SIGINT) is before


def test_a_coreml_package_that_does_not_fit_on_its_disk_is_one_line_and_leaves_nothing(ane_source, tmp_path):
    """coremltools' copy into place failed with shutil.Error's list of every file it missed (one line of temporary
    paths, exit 1), and left the partial package beside the target."""
    pytest.importorskip("coremltools")
    export = f"{sys.executable} -m fastsentiment export coreml {ane_source} small/x.mlpackage --seq-lengths 16"
    code, error, left = on_a_small_tmpfs(tmp_path, "small", "48k", export)
    assert code == 2 and error.splitlines()[-1] == "error: cannot write small/x.mlpackage: No space left on device"
    assert left == ""


def test_a_model_folder_whose_tokenizer_cannot_load_is_refused_before_an_export_or_explain(bert_dir, tmp_path):
    """Exports and explain ran on a folder whose tokenizer.json is not JSON, which no command can serve from; the
    README says such a folder is refused in one line before anything runs."""
    import shutil

    broken = shutil.copytree(bert_dir, tmp_path / "broken")
    (broken / "tokenizer.json").write_text("{ not json")
    cache = tmp_path / "cache"
    for command in (["export", "onnx", str(broken), str(tmp_path / "x.onnx")], ["explain", "-m", str(broken)]):
        result = run_cli(*command, env={"FASTSENTIMENT_CACHE": str(cache)})
        stderr = result.stderr.decode()
        assert result.returncode == 2 and stderr.count("\n") == 1, stderr
        assert stderr.startswith(f"error: {broken / 'tokenizer.json'}: cannot load tokenizer"), stderr
    assert not cache.exists() and not (tmp_path / "x.onnx").exists()
