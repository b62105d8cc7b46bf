"""The server's dynamic batcher and warm-up on a real tokenizer and real ONNX Runtime and OpenVINO models, without HTTP."""

import asyncio
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from fastsentiment import Classifier
from fastsentiment.errors import InputError
from fastsentiment.serve.app import counting_encoder, load_and_warm, warm_shapes
from fastsentiment.serve.batcher import QUIET_BATCHES, BatchSettings, DynamicBatcher


@pytest.fixture(scope="module")
def classifier(bert_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTSENTIMENT_CACHE", str(tmp_path_factory.mktemp("cache")))
        return Classifier.load(bert_dir, batch_size=4)


class Recorder:
    """The classifier's own encode and model call, noting what each batch held."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.encoded: list[str] = []
        self.batches: list[list[int]] = []  # token counts of the texts of each model call
        self._encode = counting_encoder(classifier.encoder, lambda count, longest, limit: None)  # the server's

    def encode(self, texts):
        self.encoded.extend(texts)
        return self._encode(texts)

    def run(self, sequences):
        self.batches.append([len(ids) for ids in sequences])
        return self.classifier.logits_for_ids(sequences)


def run_batcher(recorder: Recorder, settings: BatchSettings, scenario, concurrency: int = 1):
    async def main():
        batcher = DynamicBatcher(recorder.encode, recorder.run, settings, concurrency=concurrency)
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.drain()

    return asyncio.run(main())


def test_a_text_the_tokenizer_rejects_fails_alone(classifier):
    recorder = Recorder(classifier)
    # Undecodable; nothing left once tokenised (combining marks, which a BERT tokenizer strips with the accents: the
    # model would score [CLS] [SEP] alone); empty (the server refuses it before the queue, this worker too).
    texts = ["good film", "caf\udcff au lait", "\u0301\u0301 \ufe0f", "", "bad cake"]

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.submit([text]) for text in texts), return_exceptions=True)

    good, rejected, marks, empty, bad = run_batcher(recorder, BatchSettings(max_wait_ms=50), scenario)
    assert isinstance(rejected, InputError) and "cannot be tokenised" in str(rejected)
    for nothing in (marks, empty):
        assert (
            isinstance(nothing, InputError)
            and str(nothing) == "text 1: empty text (its tokenizer keeps none of its characters)"
        )
    expected = classifier.logits(["good film", "bad cake"])
    np.testing.assert_allclose(good[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(bad[0], expected[1], atol=1e-5)
    assert recorder.batches == [[4, 4]]  # one model call for the two neighbours, in spite of the failures


def test_token_budget_splits_batches_and_tokenises_each_text_once(classifier):
    recorder = Recorder(classifier)
    texts = [" ".join(["good"] * n) + " film" for n in range(1, 9)]  # 3 to 10 tokens, in arrival order
    budget = 24

    async def scenario(batcher):
        return await batcher.submit(texts)

    logits = run_batcher(recorder, BatchSettings(max_batch_size=64, max_batch_tokens=budget, max_wait_ms=50), scenario)
    np.testing.assert_allclose(logits, classifier.logits(texts), atol=1e-5)
    assert len(recorder.batches) > 1
    assert all(sum(batch) <= budget for batch in recorder.batches)
    assert [n for batch in recorder.batches for n in batch] == [n + 3 for n in range(1, 9)]  # arrival order kept
    assert sorted(recorder.encoded) == sorted(texts)  # texts put back in the queue are not tokenised again


@pytest.mark.parametrize(("max_wait_ms", "batches"), [(0, [[4], [4]]), (2000, [[4, 4]])])
def test_max_wait_gives_a_lone_request_time_for_company(classifier, max_wait_ms, batches):
    recorder = Recorder(classifier)

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit(["good film"]))
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(batcher.submit(["bad cake"]))
        return await asyncio.gather(first, second)

    run_batcher(recorder, BatchSettings(max_batch_size=2, max_wait_ms=max_wait_ms), scenario)
    assert recorder.batches == batches


def test_a_full_batch_does_not_wait(classifier):
    recorder = Recorder(classifier)

    async def scenario(batcher):
        return await asyncio.wait_for(batcher.submit(["good film", "bad cake"]), timeout=30)

    # max_batch_size texts are there at once: no waiting for the (one hour) max_wait_ms
    run_batcher(recorder, BatchSettings(max_batch_size=2, max_wait_ms=3_600_000), scenario)
    assert recorder.batches == [[4, 4]]


@pytest.mark.parametrize("concurrency", [1, 2])
def test_batches_run_side_by_side_up_to_the_backends_concurrency(classifier, concurrency):
    """With two streams, a request that arrives while another computes starts at once: both model calls are in
    flight together (they meet at a barrier). With one, the second waits, the barrier times out, and that failure
    fails only the batches that met it."""
    meeting = threading.Barrier(2, timeout=2)

    class Meeting(Recorder):
        def run(self, sequences):
            meeting.wait()
            return super().run(sequences)

    recorder = Meeting(classifier)

    async def scenario(batcher):
        return await asyncio.gather(
            batcher.submit(["I like cheese"]), batcher.submit(["I hate cheesecake"]), return_exceptions=True
        )

    first, second = run_batcher(recorder, BatchSettings(max_batch_size=1), scenario, concurrency)
    if concurrency == 2:
        expected = classifier.logits(["I like cheese", "I hate cheesecake"])
        np.testing.assert_allclose(np.vstack([first, second]), expected, atol=1e-5)
    else:
        assert isinstance(first, threading.BrokenBarrierError) and isinstance(second, threading.BrokenBarrierError)


def test_a_batch_that_meets_an_idle_machine_runs_alone_with_every_slot(classifier):
    """With `run_alone` (the model with every thread on one call), a short queue that finds the machine quiet
    runs there and holds both slots until done: a request arriving meanwhile waits for it rather than start on a
    stream beside it, and then runs on a stream (requests overlapped: the machine is not quiet), as do the next
    requests until QUIET_BATCHES batches in a row met no arrival. A queue longer than `alone_up_to` runs on the
    streams."""
    calls: list[str] = []
    alone_may_finish = threading.Event()
    recorder = Recorder(classifier)

    def run_streams(sequences):
        calls.append(f"streams {len(sequences)}")
        return recorder.run(sequences)

    def run_alone(sequences):
        calls.append(f"alone {len(sequences)}")
        assert alone_may_finish.wait(timeout=5)
        return recorder.run(sequences)

    async def scenario():
        batcher = DynamicBatcher(
            recorder.encode, run_streams, BatchSettings(), concurrency=2, run_alone=run_alone, alone_up_to=4
        )
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(["I like cheese"]))
            await asyncio.sleep(0.1)
            second = asyncio.ensure_future(batcher.submit(["I hate cheesecake"]))
            await asyncio.sleep(0.1)
            waiting = list(calls)  # the second request has not started beside the first
            alone_may_finish.set()
            answers = [await first, await second]
            for _ in range(QUIET_BATCHES):
                answers.append(await batcher.submit(["what a dull film"]))
            answers.append(await batcher.submit([f"film number {n}" for n in range(6)]))
            return waiting, answers
        finally:
            await batcher.drain()

    waiting, answers = asyncio.run(scenario())
    assert waiting == ["alone 1"]
    assert calls == ["alone 1"] + ["streams 1"] * QUIET_BATCHES + ["alone 1", "streams 6"]
    texts = ["I like cheese", "I hate cheesecake"] + ["what a dull film"] * QUIET_BATCHES
    texts += [f"film number {n}" for n in range(6)]
    np.testing.assert_allclose(np.vstack(answers), classifier.logits(texts), atol=1e-5)


@pytest.mark.parametrize(("max_deferral_ms", "finishes_under_load"), [(0, True), (600_000, False)])
def test_a_large_request_passed_over_for_smaller_ones_still_advances(classifier, max_deferral_ms, finishes_under_load):
    """Smaller requests go first while more is queued than one batch takes; under a steady stream of single texts
    that alone would hold a six-text request back until the stream stops. Past max_deferral_ms its texts take
    half of each batch, so it finishes while the stream still runs."""

    class Slow(Recorder):
        def run(self, sequences):
            threading.Event().wait(0.02)  # a model call long enough for the queue to stay full
            return super().run(sequences)

    async def scenario(batcher):
        stop = asyncio.Event()

        async def stream():
            while not stop.is_set():
                await asyncio.gather(*(batcher.submit(["good film"]) for _ in range(4)))

        streams = [asyncio.ensure_future(stream()) for _ in range(2)]
        await asyncio.sleep(0.05)  # the queue holds more than a batch
        large = asyncio.ensure_future(batcher.submit([f"bad cake {n}" for n in range(6)]))
        await asyncio.sleep(1.5)
        finished = large.done()
        stop.set()
        await asyncio.gather(*streams)
        assert (await large).shape == (6, len(classifier.labels))
        return finished

    settings = BatchSettings(max_batch_size=2, max_deferral_ms=max_deferral_ms)
    assert run_batcher(Slow(classifier), settings, scenario) is finishes_under_load


@pytest.mark.parametrize(("max_deferral_ms", "budget_in_long_texts"), [(500, 4), (0, 4), (0, 1)])
def test_a_short_request_overtakes_a_request_of_long_texts(classifier, max_deferral_ms, budget_in_long_texts):
    """A request of long texts runs a token budget at a time; a short request that arrives meanwhile goes into
    the next batch. It waited for the whole request: fewer texts were queued than a batch takes, so nothing was
    reordered, and the texts cut by the budget went back ahead of it. With max_deferral_ms 0 the long texts are
    overdue at once and take the first half of the budget: the short text still gets the other half, even where
    one long text is more than that half."""
    started = threading.Event()

    class Slow(Recorder):
        def run(self, sequences):
            started.set()
            threading.Event().wait(0.05)  # the short request arrives while this batch computes
            return super().run(sequences)

    recorder = Slow(classifier)
    long_texts = [f"{n} " + "a rather long and winding film " * 20 for n in range(40)]
    longest = classifier.encoder.max_length

    async def scenario(batcher):
        long_request = asyncio.ensure_future(batcher.submit(long_texts))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        short = await batcher.submit(["I like cheese"])
        return short, await long_request

    budget = budget_in_long_texts * longest
    settings = BatchSettings(max_batch_tokens=budget, max_deferral_ms=max_deferral_ms)
    short, long_logits = run_batcher(recorder, settings, scenario)
    batches_with_the_short_text = [index for index, batch in enumerate(recorder.batches) if min(batch) < longest]
    assert len(recorder.batches) >= 40 // budget_in_long_texts and batches_with_the_short_text == [1]
    assert all(sum(length for length in batch if length == longest) <= budget for batch in recorder.batches)
    np.testing.assert_allclose(short, classifier.logits(["I like cheese"]), atol=1e-5)
    np.testing.assert_allclose(long_logits, classifier.logits(long_texts), atol=1e-5)


def test_texts_a_batch_has_no_budget_for_are_free_to_run_on_another_slot_at_once(classifier):
    """A batch gave back the texts beyond its token budget only when its model call had returned: meanwhile a free
    slot found the queue empty, and a large request ran on one of two slots (a fifth slower through the server)."""
    lock = threading.Lock()
    running, most = [0], [0]

    class Counting(Recorder):
        def run(self, sequences):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            threading.Event().wait(0.05)
            try:
                return super().run(sequences)
            finally:
                with lock:
                    running[0] -= 1

    texts = [f"{n} " + "a rather long and winding film " * 20 for n in range(8)]
    longest = classifier.encoder.max_length

    async def scenario(batcher):
        return await batcher.submit(texts)

    recorder = Counting(classifier)
    logits = run_batcher(recorder, BatchSettings(max_batch_tokens=longest), scenario, concurrency=2)
    assert [len(batch) for batch in recorder.batches] == [1] * 8 and most[0] == 2
    np.testing.assert_allclose(logits, classifier.logits(texts), atol=1e-5)


def test_a_request_whose_client_went_away_leaves_the_queue_at_once(classifier):
    """Its texts stayed queued (cancelled) until a slot took them: while the model was busy they counted against
    max_queue, and a live request was refused as 'queue full'."""
    recorder, busy = Recorder(classifier), threading.Event()
    run = recorder.run
    recorder.run = lambda sequences: (busy.wait(30), run(sequences))[1]  # the one slot held until let go

    async def scenario(batcher):
        holding = asyncio.ensure_future(batcher.submit(["good film"]))
        while not recorder.encoded:  # the first batch is on the slot
            await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.submit([f"text {i}" for i in range(250)]))
        await asyncio.sleep(0.05)
        assert batcher.depth == 250
        gone.cancel()  # as the server cancels a request whose client disconnected
        await asyncio.sleep(0.05)
        depth = batcher.depth  # 250 + 100 texts would not fit max_queue
        busy.set()  # the slot comes free with nothing queued (the worker, waiting for it, must not fail then)
        first = await holding
        await asyncio.sleep(0.05)
        return depth, first, await asyncio.wait_for(batcher.submit(["bad cake"] * 100), timeout=30)

    depth, first, live = run_batcher(recorder, BatchSettings(max_queue=300), scenario)
    assert depth == 0 and first.shape == (1, 2) and live.shape == (100, 2)
    assert not [text for text in recorder.encoded if text.startswith("text ")]  # never computed


WARM_UP_CHECK = """
import json, os, sys
os.sched_setaffinity(0, range(os.cpu_count()))  # the test worker was pinned to one CPU, where OpenVINO runs one stream
from fastsentiment import Classifier
from fastsentiment.backends.base import parallel_calls
from fastsentiment.backends.openvino_backend import OpenvinoBackend
from fastsentiment.serve.app import WARM_UP_TEXT, load_and_warm, warm_shapes

shapes, closed = [], []
real = OpenvinoBackend.logits

def noted(self, input_ids, attention_mask):  # each call's shape, from whichever thread runs it
    shapes.append(list(input_ids.shape))
    if input_ids.shape[1] > 2:  # not the two-token call of a load
        closed.extend(int(row[mask.sum() - 1]) for row, mask in zip(input_ids, attention_mask))
    return real(self, input_ids, attention_mask)

OpenvinoBackend.logits = noted
classifier, alone = load_and_warm(lambda: Classifier.load(sys.argv[1], backend="openvino", batch_size=3), 12)
encoder = classifier.encoder
warmed = list(shapes)
shapes.clear()
capped = warm_shapes(alone, 2000)  # over the model's limit
capped_shapes = list(shapes)
shapes.clear()
alone_texts = warm_shapes(alone, 12, 1)  # a server that gathers one text at a time (--no-batching)
alone_shapes = list(shapes)
shapes.clear()
exact = warm_shapes(alone.padded_to_multiple_of(1), 12)
print(json.dumps({
    "streams": parallel_calls(classifier.backend),
    "two_models": alone is not classifier,
    "padding": [classifier.encoder.pad_to_multiple_of, alone.encoder.pad_to_multiple_of],
    "shapes": warmed,
    "closed": sorted(set(closed)),
    "sep": encoder.encode(["film"])[0][-1],
    "before": encoder.padded_width(len(encoder.encode([WARM_UP_TEXT])[0])),
    "capped": [capped, sorted({tuple(shape) for shape in capped_shapes})],
    "exact": [exact, sorted({tuple(shape) for shape in shapes})],
    "one_text": [alone_texts, alone_shapes],
}))
"""


def test_a_server_starts_with_every_shape_of_a_model_call_run_on_each_of_its_openvino_models(
    bert_dir, tmp_path, monkeypatch
):
    """OpenVINO prepares kernels per input shape: the server pads each call to a multiple of 8 tokens and runs every
    shape a call can take up to the warm-up length, 1 to the model batch size of texts at each padded width, once on
    each of its streams and on its one-call model, so that no request below saturation waits for that; each a real
    text cut as the encoder cuts (its [SEP] kept). ONNX Runtime does not prepare per shape: nothing more than its two
    shapes, and no padding."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: OpenVINO runs one stream")
    # In a process of its own: OpenVINO reads the CPUs it may use once per process, and this worker's are pinned.
    environment = {**os.environ, "FASTSENTIMENT_CACHE": str(tmp_path)}
    environment.pop("FASTSENTIMENT_THREADS", None)
    child = subprocess.run(
        [sys.executable, "-c", WARM_UP_CHECK, str(bert_dir)], env=environment, capture_output=True, timeout=300
    )
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    seen = json.loads(child.stdout.decode().strip().splitlines()[-1])
    assert seen["streams"] > 1 and seen["two_models"]  # two models: the streams, and every thread on one call
    assert seen["padding"] == [8, 8]
    # Up to 12 tokens pad to 8 or 16: 1 to 3 texts at each width, on every stream and on the one-call model.
    warmed = [[texts, width] for texts in (1, 2, 3) for width in (8, 16)] * (seen["streams"] + 1)
    # Besides: the text run before, alone and as 8 (calls of 3, 3, 2), on each model; the two-token call each OpenVINO
    # backend makes as it loads.
    before = [[texts, seen["before"]] for texts in (1, 3, 3, 2)] * 2 + [[1, 2]] * 2
    assert sorted(seen["shapes"]) == sorted(warmed + before)
    assert seen["closed"] == [seen["sep"]]  # every text of every call ends as the model was trained

    # A length over the model's: cut at tiny-bert's 64 tokens, 8 widths of 3 calls.
    assert seen["capped"] == [24, [[texts, width] for texts in (1, 2, 3) for width in range(8, 65, 8)]]
    # No more texts than a call can hold: one at a time.
    assert seen["one_text"] == [2, [[1, 8], [1, 16]]]
    # Unpadded: every length, 3 to 12 tokens.
    assert seen["exact"] == [30, [[texts, width] for texts in (1, 2, 3) for width in range(3, 13)]]

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path))
    onnx, onnx_alone = load_and_warm(lambda: Classifier.load(bert_dir, backend="onnx"), 12)
    assert onnx is onnx_alone and onnx.encoder.pad_to_multiple_of == 1
    assert warm_shapes(onnx, 12) == 0
