"""`fastsentiment serve` as a real process on 127.0.0.1, driven by real HTTP clients."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import ROOT, save_split_decision
from fastsentiment import Classifier
from fastsentiment.errors import InputError
from tiny_models import build_model

WORDS = "the a good bad film movie cheese cake like love hate not great was".split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, model, *options, script=None, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "fastsentiment"]
        command = [*head, "serve", "-m", str(model), "--port", str(self.port), *options]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read().decode()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.process.kill()  # no test holds it yet: left running, it would outlive the suite
        self.process.wait()
        raise AssertionError("server did not become ready")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def server(bert_dir, cache):
    # One backend on both sides, so answers can be compared to 1e-4 (auto would measure and may pick another).
    running = Server(bert_dir, "--backend", "onnx", env={"FASTSENTIMENT_CACHE": cache})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def local(bert_dir, cache):
    with pytest.MonkeyPatch.context() as patch:  # only while loading: the process's environment stays as it was
        patch.setenv("FASTSENTIMENT_CACHE", cache)
        return Classifier.load(bert_dir, backend="onnx")


def sentence(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(3 + i % 9))


def test_huggingface_inference_client_works_unchanged(server, local):
    from huggingface_hub import InferenceClient

    result = InferenceClient(server.url).text_classification("I like cheese")
    expected = local("I like cheese", top_k=None)
    assert [r.label for r in result] == [e["label"] for e in expected]
    assert [r.score for r in result] == pytest.approx([e["score"] for e in expected], abs=1e-4)


def test_predict_formats_and_options(server, local):
    single = httpx.post(f"{server.url}/predict", json={"inputs": "good film"}).json()
    assert len(single) == 1 and len(single[0]) == 2 and single[0][0]["score"] >= single[0][1]["score"]
    several = httpx.post(
        f"{server.url}/predict", json={"inputs": ["good film", "bad cake"], "parameters": {"top_k": 1}}
    )
    assert [len(r) for r in several.json()] == [1, 1]
    assert httpx.post(f"{server.url}/predict", json={"inputs": "good film", "truncate": False}).json() == single
    raw = httpx.post(f"{server.url}/predict", json={"inputs": "good film", "raw_scores": True}).json()
    logits = local.logits(["good film"])[0]
    assert sorted(r["score"] for r in raw[0]) == pytest.approx(sorted(logits), abs=1e-4)
    # What other clients send along: the older Inference API's options, TEI's truncation_direction (cut at the end).
    compatible = {"inputs": "good film", "options": {"wait_for_model": True}, "truncation_direction": "Right"}
    assert httpx.post(f"{server.url}/predict", json=compatible).json() == single
    left = httpx.post(f"{server.url}/predict", json={"inputs": "good film", "truncation_direction": "Left"})
    assert left.status_code == 422 and "truncation_direction" in left.json()["error"]


def same_answers(first: list, second: list) -> bool:
    return [[r["label"] for r in rows] for rows in first] == [[r["label"] for r in rows] for rows in second] and [
        r["score"] for rows in first for r in rows
    ] == pytest.approx([r["score"] for rows in second for r in rows], abs=1e-5)


def test_what_tei_and_transformers_clients_send(server):
    """TEI's batch of one-text lists and its nullable `truncate`; transformers' `truncation` and any-case
    `function_to_apply`; a text pair (TEI's [a, b] in a batch) refused in one line; a lone surrogate named where
    it is."""
    url = f"{server.url}/predict"
    batch = httpx.post(url, json={"inputs": ["good film", "bad cake"]}).json()
    assert same_answers(httpx.post(url, json={"inputs": [["good film"], ["bad cake"]]}).json(), batch)
    single = httpx.post(url, json={"inputs": "good film"}).json()
    for body in (
        {"inputs": "good film", "truncate": None},
        {"inputs": "good film", "parameters": {"truncation": True}},
        {"inputs": "good film", "parameters": {"function_to_apply": "SOFTMAX"}},
    ):
        assert same_answers(httpx.post(url, json=body).json(), single), body
    sigmoid = httpx.post(url, json={"inputs": "good film", "parameters": {"function_to_apply": "Sigmoid"}}).json()
    assert sum(r["score"] for r in sigmoid[0]) != pytest.approx(1.0, abs=1e-3)  # independent sigmoids
    long_text = " ".join(["good"] * 100)  # over the model's 64 tokens
    assert httpx.post(url, json={"inputs": long_text, "parameters": {"truncation": True}}).status_code == 200
    for body, where in [
        ({"inputs": long_text, "parameters": {"truncation": False}}, "inputs[0]"),
        ({"inputs": [["good film", "bad cake"]]}, "text pairs"),
        ({"inputs": "good film", "parameters": {"function_to_apply": "tanh"}}, "function_to_apply"),
    ]:
        refused = httpx.post(url, json=body)
        assert refused.status_code == 422 and where in refused.json()["error"], (body, refused.text)
    surrogate = httpx.post(url, content=b'{"inputs": "ok", "parameters": {"long_text": "\\ud800"}}')
    assert surrogate.status_code == 422
    assert surrogate.json()["error"].startswith("parameters.long_text: holds a lone surrogate escape")


def test_a_body_refused_before_it_is_read_closes_the_connection(server):
    """A 413 for a too-large announced body, a 415 for a compressed one: the unread body must not be read as the
    connection's next request (a client that sent `Expect: 100-continue` and reuses the connection hung)."""
    for head, status in [
        (b"Content-Length: 2000000\r\nExpect: 100-continue\r\n", b"413"),
        (b"Content-Length: 20\r\nContent-Encoding: gzip\r\n", b"415"),
    ]:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
            sock.settimeout(30)
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection (a timeout otherwise)
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 " + status) and b"connection: close" in answer.lower(), answer
    big = httpx.post(f"{server.url}/predict", json={"inputs": "good film"}, headers={"X-Big": "x" * 100_000})
    assert big.status_code == 431 and big.json()["error_type"] == "headers_too_large"
    assert httpx.post(f"{server.url}/predict", json={"inputs": "good film"}).status_code == 200


def answers_until_closed(sock: socket.socket) -> list[tuple[bytes, dict]]:
    """Every answer the server sends before it closes the connection (a timeout fails the test): its status line
    and JSON body, in order."""
    sock.settimeout(30)
    stream = b""
    while chunk := sock.recv(65536):
        stream += chunk
    answers = []
    while stream:
        head, _, rest = stream.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))
        assert b"content-type: application/json" in head.lower(), head
        answers.append((head.split(b"\r\n")[0], json.loads(rest[:length])))
        stream = rest[length:]
    return answers


def test_requests_the_server_cannot_frame_get_a_json_refusal_after_the_answers_before_them(server):
    """uvicorn answered bytes its parser rejects with a plain-text 400 at once, losing the answer to a pipelined
    request before them; a body under a coding the server does not undo was read as if plain; a body without a
    length was read as the connection's next request; a declared non-JSON body was called invalid JSON."""
    body = b'{"inputs": "good film"}'
    good = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    cases = [
        (good + b"BROKEN\r\n\r\n", [b"200 OK", b"400 Bad Request"], "invalid_http"),
        # a request target the parser takes and uvicorn's URL parser does not: the refusal crashed the connection
        # (no answer, a traceback in the log) and took the answer before it along
        (good + b"GET http://x:99999/health HTTP/1.1\r\nHost: x\r\n\r\n", [b"200 OK", b"400 Bad Request"], None),
        (good + good.replace(b"Content-Length: 23", b"Content-Length: -1"), [b"200 OK", b"400 Bad Request"], None),
        # several answers ahead of the refusal: it went out with the last of them still being answered, and that
        # answer was lost
        (good * 3 + b"BROKEN\r\n\r\n", [b"200 OK"] * 3 + [b"400 Bad Request"], "invalid_http"),
        (
            good * 2 + b"GET http://x:99999/health HTTP/1.1\r\nHost: x\r\n\r\n",
            [b"200 OK"] * 2 + [b"400 Bad Request"],
            None,
        ),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n17\r\n%s\r\n0\r\n\r\n"
            % body,
            [b"501 Not Implemented"],
            "unsupported_transfer_encoding",
        ),
        (  # two lines are one list: "gzip" on a line of its own let the compressed chunks through as plain
            b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"17\r\n%s\r\n0\r\n\r\n" % body,
            [b"501 Not Implemented"],
            "unsupported_transfer_encoding",
        ),
        # not ending in chunked, the body's length is unknown: the parser's 400 (RFC 9112), counted once (the
        # endpoint counted a 501 no client received as well)
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + body, [b"400 Bad Request"], None),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\n\r\n" + body, [b"411 Length Required"], "length_required"),
        (
            good.replace(b"Host: x", b"Host: x\r\nContent-Type: application/xml"),
            [b"415 Unsupported Media Type"],
            "unsupported_media_type",
        ),
    ]
    for request, statuses, kind in cases:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request)
            answers = answers_until_closed(sock)
        assert [status.split(b" ", 1)[1] for status, _ in answers] == statuses, (request, answers)
        if statuses[0] == b"200 OK":
            assert answers[0][1][0][0]["label"] in ("POSITIVE", "NEGATIVE", "LABEL_0", "LABEL_1")
        assert answers[-1][1]["error_type"] == (kind or "invalid_http"), answers
    for content_type in ("application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded"):
        answer = httpx.post(f"{server.url}/predict", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 200, (content_type, answer.text)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert re.search(r'fastsentiment_errors_total\{kind="invalid_http"\} ([0-9.]+)', metrics).group(1) == "6.0"
    counted = re.search(r'fastsentiment_errors_total\{kind="unsupported_transfer_encoding"\} ([0-9.]+)', metrics)
    assert counted.group(1) == "2.0"


def test_a_request_refused_midway_through_its_body_is_counted_once(server):
    """The protocol refused a broken chunk and counted it, and the endpoint, reading that body, saw the connection
    close and counted a client that went away too: two errors for one request, one of them not so."""

    def errors() -> dict[str, float]:
        metrics = httpx.get(f"{server.url}/metrics").text
        return {kind: float(n) for kind, n in re.findall(r'fastsentiment_errors_total\{kind="(\w+)"\} (\S+)', metrics)}

    before = errors()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"inp\r\n')
        time.sleep(0.3)  # the endpoint is reading the body
        sock.sendall(b"zz\r\nxx\r\n")
        answers = answers_until_closed(sock)
    assert [status for status, _ in answers] == [b"HTTP/1.1 400 Bad Request"]
    time.sleep(0.3)  # for the endpoint to see the connection gone
    after = errors()
    assert {kind: after[kind] - before.get(kind, 0) for kind in after if after[kind] != before.get(kind)} == {
        "invalid_http": 1
    }


@pytest.mark.parametrize("announced", [True, False])
def test_a_client_still_sending_a_body_too_large_reads_the_413(server, announced):
    """The server answered 413 and closed with the body's rest unread: the kernel reset the connection, and a client
    that sends its whole body before reading (Python's http.client) got "connection reset" instead of the answer.
    Now the answering side is shut and the rest read and dropped until the client is done."""
    body = json.dumps({"inputs": "x" * 8_000_000}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        if announced:  # Content-Length says it at once: refused before a byte of the body is read
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        else:  # chunked: refused once a MiB has been read
            connection.request("POST", "/predict", iter([body[i : i + 65536] for i in range(0, len(body), 65536)]))
        response = connection.getresponse()
        assert response.status == 413 and json.loads(response.read())["error_type"] == "body_too_large"
    finally:
        connection.close()
    assert httpx.post(f"{server.url}/predict", json={"inputs": "good film"}).status_code == 200


def test_many_concurrent_clients_get_their_own_answers(server, local):
    texts = [sentence(i) for i in range(400)]
    expected = local(texts)

    def ask(i):
        response = httpx.post(f"{server.url}/predict", json={"inputs": texts[i]}, timeout=60)
        return i, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=48) as pool:
        answers = list(pool.map(ask, range(len(texts))))
    assert all(status == 200 for _, status, _ in answers)
    for i, _, body in answers:
        best = body[0][0]
        assert best["label"] == expected[i]["label"], texts[i]
        assert best["score"] == pytest.approx(expected[i]["score"], abs=1e-3)
    metrics = httpx.get(f"{server.url}/metrics").text
    sizes = [line for line in metrics.splitlines() if line.startswith("fastsentiment_batch_size_count")]
    batches = float(sizes[0].split()[-1])
    assert batches < len(texts)  # requests were batched together


def test_a_text_over_the_limit_is_refused_in_plain_ascii_too():
    """The server's fast path for printable ASCII skipped the text rules, the length among them: a 1.5 million
    character text behind a raised --max-body-bytes was tokenised whole (409 MB) while the same length with an
    accent was refused."""
    from fastsentiment.serve.app import ApiError, check_text
    from fastsentiment.texts import MAX_TEXT_CHARS

    check_text(0, "good film " * (MAX_TEXT_CHARS // 10))  # the limit itself passes
    for text in ("good film " * 150_000, "gööd film " * 150_000):
        with pytest.raises(ApiError) as refused:
            check_text(2, text)
        assert (refused.value.status, refused.value.kind, refused.value.message) == (
            422,
            "validation",
            f"inputs[2]: a text of 1,500,000 characters, over the limit of {MAX_TEXT_CHARS:,} (split it up)",
        )


@pytest.mark.parametrize(
    ("content", "status", "kind"),
    [
        (b'{"inputs": ', 400, "invalid_json"),
        (b'{"inputs": "caf\xff"}', 400, "invalid_encoding"),
        (b'{"inputs": "\\ud800 alone"}', 422, "validation"),  # valid JSON, but no text holds a lone surrogate
        (b'{"inputs": "a b", "top_k": NaN}', 400, "invalid_json"),  # not "a lone surrogate", as it was called
        # nested deeper than Python's JSON reader goes, beside a lone surrogate: was a 500 "internal"
        (b'{"inputs": "\\ud800 x", "parameters": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_json"),
        (b'{"inputs": "\\ud800 x", "parameters": ' + b"[" * 990 + b"]" * 990 + b"}", 400, "invalid_json"),
        (b'{"inputs": 5}', 422, "validation"),
        (b'{"inputs": ["fine", 3]}', 422, "validation"),
        (b'{"inputs": ""}', 422, "validation"),
        (b'{"inputs": ["fine", "   "]}', 422, "validation"),
        (b'{"inputs": ["fine", "\\u0001\\u0002"]}', 422, "validation"),  # control characters alone: empty text
        (b'{"inputs": "\\u200b"}', 422, "validation"),  # a zero-width space alone: empty text
        (b'{"inputs": []}', 422, "validation"),
        (b'{"inputs": "x", "parameters": {"top_k": 0}}', 422, "validation"),
        (json.dumps({"inputs": ["x"] * 300}).encode(), 413, "too_many_inputs"),
        (json.dumps({"inputs": "x" * 2_000_000}).encode(), 413, "body_too_large"),
        # TEI's truncate=false: a text over the model's 64 tokens is refused, not cut
        (json.dumps({"inputs": " ".join(["good"] * 100), "truncate": False}).encode(), 422, "validation"),
        # 2,440 windows of one token's step: more than the queue's 2,048 could ever hold, so not a 503 to retry
        (
            json.dumps(
                {"inputs": " ".join(["good"] * 2500), "parameters": {"long_text": "chunk", "stride": 61}}
            ).encode(),
            422,
            "validation",
        ),
    ],
)
def test_bad_requests_get_clear_4xx_and_do_not_disturb_others(server, content, status, kind):
    with ThreadPoolExecutor(max_workers=2) as pool:
        good = pool.submit(httpx.post, f"{server.url}/predict", json={"inputs": ["good film"] * 20}, timeout=60)
        bad = httpx.post(f"{server.url}/predict", content=content, timeout=60)
        assert good.result().status_code == 200
    assert bad.status_code == status
    assert bad.json()["error_type"] == kind and bad.json()["error"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_a_stride_the_models_windows_have_no_room_for_is_refused_as_a_parameter(server):
    """Checked only when the windows were cut, its error lacked the `parameters:` every other setting's error has."""
    body = {"inputs": "good film", "parameters": {"long_text": "chunk", "stride": 100}}
    refused = httpx.post(f"{server.url}/predict", json=body, timeout=30)
    assert (refused.status_code, refused.json()["error"]) == (
        422,
        "parameters: stride must be between 0 and 61 tokens for windows of 64 tokens",
    )


def test_a_text_its_tokenizer_keeps_nothing_of_is_refused_by_its_place_in_the_request(server):
    """Combining marks alone (a BERT tokenizer strips them with the accents) left the model [CLS] [SEP] to score."""
    for parameters in ({}, {"long_text": "chunk"}):
        body = {"inputs": ["good film", "\u0301\u0301 \ufe0f"], "parameters": parameters}
        refused = httpx.post(f"{server.url}/predict", json=body, timeout=30)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "inputs[1]: empty text (its tokenizer keeps none of its characters)"


def test_settings_asked_for_twice_in_ways_that_disagree_are_refused_as_the_python_api_refuses_them(server):
    def post(body: dict) -> httpx.Response:
        return httpx.post(f"{server.url}/predict", json={"inputs": "good film", **body}, timeout=30)

    for body, message in [
        ({"parameters": {"long_text": "chunk", "truncation": True}}, "for windows give long_text 'chunk' alone"),
        ({"top_k": 1, "parameters": {"top_k": 2}}, "top_k is 1 at the top level and 2 in parameters"),
        ({"raw_scores": True, "parameters": {"function_to_apply": "softmax"}}, "raw_scores gives logits"),
        ({"truncate": True, "parameters": {"long_text": "error"}}, "truncate is true at the top level and long_text"),
        ({"truncate": True, "parameters": {"truncation": False}}, "truncate is true at the top level and long_text"),
        ({"truncate": True, "parameters": {"long_text": "chunk"}}, "truncate is true at the top level and long_text"),
        ({"truncate": False, "parameters": {"truncation": True}}, "truncate is false at the top level and long_text"),
        ({"truncate": False, "parameters": {"long_text": "truncate"}}, "truncate is false at the top level"),
        ({"parameters": {"truncation": "only_second"}}, "parameters.truncation"),
    ]:
        refused = post(body)
        assert refused.status_code == 422 and message in refused.json()["error"], (body, refused.text)
    # truncation false beside long_text "truncate" refuses a long text, as the Python API's truncation=False does.
    long = httpx.post(
        f"{server.url}/predict",
        json={"inputs": "good " * 100, "parameters": {"long_text": "truncate", "truncation": False}},
        timeout=30,
    )
    assert long.status_code == 422 and "over the model's limit" in long.json()["error"], long.text
    # Agreeing twice is fine; TEI's `truncate: false` (its clients' default) beside long_text keeps working.
    assert len(post({"top_k": 2, "parameters": {"top_k": 2}}).json()[0]) == 2
    assert post({"raw_scores": True, "parameters": {"function_to_apply": "NONE"}}).status_code == 200
    assert post({"truncate": False, "parameters": {"long_text": "chunk"}}).status_code == 200
    assert post({"truncate": True, "parameters": {"truncation": "longest_first"}}).status_code == 200
    # transformers' strategy names for one text: the first two cut, the last refuses
    for truncation, status in [("longest_first", 200), ("only_first", 200), ("do_not_truncate", 422)]:
        body = {"inputs": "good " * 100, "parameters": {"truncation": truncation}}
        assert httpx.post(f"{server.url}/predict", json=body, timeout=30).status_code == status, truncation


def test_routing_errors_have_the_same_shape_as_every_other_error(server):
    for response, status, kind in [
        (httpx.get(f"{server.url}/predict"), 405, "method_not_allowed"),
        (httpx.post(f"{server.url}/no/such/route", json={"inputs": "x"}), 404, "not_found"),
    ]:
        assert response.status_code == status and response.json()["error_type"] == kind and response.json()["error"]
    # Allow names every method the path takes (RFC 9110): HEAD was left out where it is served
    for path, allowed in [("/health", "GET, HEAD"), ("/info", "GET, HEAD"), ("/metrics", "GET, HEAD"), ("/", "POST")]:
        refused = httpx.request("OPTIONS", f"{server.url}{path}")
        assert (refused.status_code, refused.headers["allow"]) == (405, allowed), path


def test_health_info_metrics_docs(server):
    info = httpx.get(f"{server.url}/info").json()
    assert info["labels"] == ["NEGATIVE", "POSITIVE"]
    assert info["backend"] == "onnx"  # as the fixture asked
    assert info["model_batch_size"] == 8  # a CPU's default for the calls a gathered batch runs as
    # ONNX Runtime does not prepare kernels per shape: its calls are not padded past their longest text.
    assert (info["pad_to_multiple_of"], info["warm_up_length"]) == (1, 0)
    for key in ("model", "device", "precision", "max_length", "version"):
        assert key in info
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        "fastsentiment_requests_total",
        "fastsentiment_request_seconds_bucket",
        "fastsentiment_batch_size_bucket",
        "fastsentiment_queue_depth",
        "fastsentiment_errors_total",
    ):
        assert name in metrics
    assert httpx.get(f"{server.url}/docs").status_code == 200
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert "/predict" in document["paths"]
    operations = [
        o["operationId"] for route in document["paths"].values() for o in route.values() if "operationId" in o
    ]
    assert operations and len(operations) == len(set(operations))  # each once, or client generators fail
    with_mark = httpx.post(f"{server.url}/predict", content=b'\xef\xbb\xbf{"inputs": "good film"}')  # PowerShell's
    assert with_mark.status_code == 200 and with_mark.json()[0][0]["label"] in info["labels"]
    for route in ("/health", "/info", "/metrics"):  # uptime probes that ask with HEAD
        head = httpx.head(f"{server.url}{route}")
        assert head.status_code == 200 and head.content == b"", route


def test_a_server_on_auto_takes_the_path_measured_for_serving(bert_dir, tmp_path, monkeypatch):
    """Not the batch-32 throughput path where another is much quicker one text at a time and nearly as fast batched
    (`auto.decided`): most of a server's calls below saturation hold one text."""
    from fastsentiment.models import resolve_model

    monkeypatch.setenv("FASTSENTIMENT_CACHE", str(tmp_path / "cache"))
    save_split_decision(resolve_model(str(bert_dir)), latency_path_rate=95.0)
    running = Server(bert_dir, "--device", "cpu", env={"FASTSENTIMENT_CACHE": str(tmp_path / "cache")})
    try:
        info = httpx.get(f"{running.url}/info").json()
        assert (info["backend"], info["precision"]) == ("openvino", "fp32")  # the throughput path is onnx:fp32
        answer = httpx.post(f"{running.url}/predict", json={"inputs": "good film"})
        assert answer.status_code == 200 and answer.json()[0][0]["label"] in info["labels"]
    finally:
        running.stop()


def test_truncated_texts_are_counted_in_the_metrics(server):
    """The server counts the texts it cuts to the model's 64 tokens (a warning per long request would flood its log;
    it says so once)."""

    def truncated() -> float:
        metrics = httpx.get(f"{server.url}/metrics").text
        return float(
            next(
                line for line in metrics.splitlines() if line.startswith("fastsentiment_truncated_texts_total")
            ).split()[-1]
        )

    before = truncated()
    for _ in range(2):
        answer = httpx.post(f"{server.url}/predict", json={"inputs": ["good " * 100, "fine", "bad " * 80]}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()) == 3
    assert truncated() == before + 4


def computed_texts(server) -> float:
    metrics = httpx.get(f"{server.url}/metrics").text
    return float(
        next(line for line in metrics.splitlines() if line.startswith("fastsentiment_batch_size_sum")).split()[-1]
    )


def test_client_that_disconnects_mid_request_does_not_stall_the_server(server):
    computed = computed_texts(server)
    body = json.dumps({"inputs": [sentence(i) for i in range(200)]}).encode()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
    # sockets closed without reading the answers
    response = httpx.post(f"{server.url}/predict", json={"inputs": "good film"}, timeout=30)
    assert response.status_code == 200
    # the abandoned requests left the queue: far fewer than their 1,000 texts reached the model
    assert computed_texts(server) - computed < 500
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'fastsentiment_errors_total{kind="client_gone"}' in metrics and 'kind="backend"' not in metrics


# After the tests that count what the module's server did: these send it thousands of requests.
def test_an_upgrade_the_server_does_not_make_is_ignored_and_the_request_answered(server):
    """Every JDK HttpClient (and `curl --http2`) asks to upgrade a plain-http request to h2c. The parser took the body
    for the new protocol's bytes: the request was answered as if its body were empty (400 "not valid JSON") and what
    followed on the connection was dropped. A server may ignore an upgrade (RFC 9110, 7.8): this one does."""
    body = b'{"inputs": "good film"}'
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\n" + upgrade
    sized = head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    plain = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    last = plain.replace(b"Host: x", b"Host: x\r\nConnection: close")  # the server closes after its answer
    expected = httpx.post(f"{server.url}/predict", content=body).json()
    for parts in [
        [sized + last],
        [chunked + plain + sized + last],  # pipelined, the upgrade asked for before and after others
        [sized[: -len(body)], body[:5], body[5:] + last],  # the body in later reads, as a JDK client sends it
        # a request after the one that closes the connection is not an error: the parser read again after the upgrade
        # lacked uvicorn's leniency for it, and the closing request lost its answer to a 400
        [sized + last + plain],
    ]:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            for part in parts:
                sock.sendall(part)
                time.sleep(0.05)
            answers = answers_until_closed(sock)
        expected_count = b"".join(parts).split(b"Connection: close")[0].count(b"POST ")  # none after the closing one
        assert [status for status, _ in answers] == [b"HTTP/1.1 200 OK"] * expected_count, (parts, answers)
        assert all(same_answers(answer, expected) for _, answer in answers)


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads a process's memory from /proc")
def test_a_client_that_pipelines_without_reading_the_answers_cannot_fill_the_servers_memory(server):
    """uvicorn read on whenever the request being answered read its body or listened for a disconnect, so every
    request pipelined behind it was parsed and held (about 2.6 KB each): one connection that sent 7 MB of small
    requests and read nothing grew the server by 258 MB. Reading now stops while a few requests wait their turn;
    a client that reads its answers gets all of them, in order, whatever it pipelines."""
    body = b'{"inputs": "good"}'
    post = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"  # an answer that reads nothing
    requests = [post if index % 2 else health for index in range(99)]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"".join(requests) + post.replace(b"Host: x", b"Host: x\r\nConnection: close"))
        answers = answers_until_closed(sock)
    assert [status for status, _ in answers] == [b"HTTP/1.1 200 OK"] * 100
    assert answers[0][1] == {"status": "ok"} and answers[1][1][0][0]["label"] in ("POSITIVE", "NEGATIVE")

    before = resident_bytes(server.process.pid)
    stream = post * 100_000  # 7 MB
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        sent, deadline = 0, time.monotonic() + 3
        while sent < len(stream) and time.monotonic() < deadline:
            try:
                sent += sock.send(stream[sent : sent + 65536])
            except BlockingIOError:  # the server reads no more for now: as it should
                time.sleep(0.01)
        time.sleep(0.5)
        grown = resident_bytes(server.process.pid) - before
    assert grown < 64 << 20, f"the server grew by {grown >> 20} MB for {sent >> 20} MB sent"
    assert httpx.post(f"{server.url}/predict", content=body).status_code == 200


@pytest.fixture(scope="module")
def impatient(bert_dir, cache):
    """A server that gives a request's head and body one second each."""
    running = Server(
        bert_dir,
        "--backend",
        "onnx",
        "--body-timeout",
        "1",
        "--header-timeout",
        "1",
        "--model-batch-size",
        "3",
        env={"FASTSENTIMENT_CACHE": cache},
    )
    yield running
    running.stop()


def answer_until_closed(sock: socket.socket) -> tuple[bytes, dict]:
    """What the server sends before it closes the connection (a timeout fails the test): status line, JSON body."""
    sock.settimeout(30)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), answer
    return head.split(b"\r\n")[0], json.loads(body)


def test_a_client_that_stops_mid_body_gets_408_and_the_connection_is_closed(impatient):
    assert httpx.get(f"{impatient.url}/info").json()["model_batch_size"] == 3  # as asked
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"inputs": ')
        started = time.monotonic()
        # others are served while it waits
        assert httpx.post(f"{impatient.url}/predict", json={"inputs": "good film"}, timeout=30).status_code == 200
        status, body = answer_until_closed(sock)
        waited = time.monotonic() - started
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert body == {"error": "the body did not arrive within 1 s", "error_type": "body_timeout"}
    assert 0.9 < waited < 10


def test_a_client_that_does_not_finish_its_headers_in_time_gets_408_and_others_are_served(impatient):
    """uvicorn sets no deadline on a request's head: a connection that sent nothing, or headers a byte at a time
    (slowloris), stayed open for as long as the client liked. Now a begun head gets 408 when its time is up, and a
    connection on which no request has begun (silent, or blank lines after an answer) is closed without an answer;
    a head that arrives in pieces within the deadline, pipelined requests and a keep-alive connection's second
    request are served."""
    silent = socket.create_connection(("127.0.0.1", impatient.port))
    slow = socket.create_connection(("127.0.0.1", impatient.port))
    started = time.monotonic()
    slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    body = b'{"inputs": "good film"}'
    request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with silent, slow, httpx.Client(base_url=impatient.url, timeout=30) as client:
        with socket.create_connection(("127.0.0.1", impatient.port)) as patient:
            patient.settimeout(30)
            for piece in (request[:20], request[20:50], request[50:]):  # 0.5 s in all, within the deadline
                patient.sendall(piece)
                time.sleep(0.25)
            assert patient.recv(65536).startswith(b"HTTP/1.1 200 OK")
            patient.sendall(request + request)  # two pipelined requests in one write
            answers = b""
            while answers.count(b"HTTP/1.1 200 OK") < 2:
                answers += patient.recv(65536)
            patient.sendall(b"\r\n")  # a blank line begins no request, and stopped uvicorn's keep-alive timer
            while chunk := patient.recv(65536):  # until the server closes the connection
                answers += chunk
            assert answers.count(b"HTTP/1.1 ") == 2  # the two answers, and none to the blank line
        assert client.post("/predict", json={"inputs": "good film"}).status_code == 200
        time.sleep(1.5)  # idle between requests is keep-alive's to bound (5 s), not the head's
        assert client.post("/predict", json={"inputs": "bad film"}).status_code == 200
        silent.settimeout(30)
        assert silent.recv(65536) == b""
        status, answer = answer_until_closed(slow)
        assert status == b"HTTP/1.1 408 Request Timeout"
        assert answer == {"error": "the request headers did not arrive within 1 s", "error_type": "header_timeout"}
        waited = time.monotonic() - started
        assert 0.9 < waited < 10
        metrics = client.get("/metrics").text
    assert re.search(r'fastsentiment_errors_total\{kind="header_timeout"\} ([0-9.]+)', metrics).group(1) == "1.0"


def _send_until_refused(sock: socket.socket, start: bytes, filler: bytes) -> int:
    """Send `start`, then `filler` over and over (up to 64 MiB) until the server closes the connection: bytes sent."""
    sent = 0
    try:
        sock.sendall(start)
        while sent < 64 << 20:
            sock.sendall(filler)
            sent += len(filler)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def _refusal_if_readable(sock: socket.socket) -> tuple[bytes, dict] | None:
    try:
        return answer_until_closed(sock)
    except ConnectionResetError:  # the server closed with our unread bytes in its buffer: its answer is lost
        return None


def test_a_header_or_trailer_that_never_ends_is_refused_as_it_arrives(impatient):
    """The HTTP parser holds a header line, or a chunked body's trailer, whole until its end: one that never ends
    grew the server without bound. Each is refused with 431 once past the limit (64 KiB; for a chunked body, 64 KiB
    more than its data), within a read of the socket; the kernels' buffers take a few MB more."""
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sent = _send_until_refused(sock, b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Endless: ", b"x" * 16384)
        refusal = _refusal_if_readable(sock)
    assert sent < 16 << 20, f"{sent:,} bytes of one header were taken"  # 1.8-2.9 MB here; 64 MiB before
    if refusal is not None:
        assert refusal == (
            b"HTTP/1.1 431 Request Header Fields Too Large",
            {"error": "request headers over 65536 bytes", "error_type": "headers_too_large"},
        )
    body = b'{"inputs": "good film"}'
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
        sent = _send_until_refused(sock, head + b"%x\r\n%s\r\n0\r\nX-T: " % (len(body), body), b"x" * 16384)
        refusal = _refusal_if_readable(sock)
    assert sent < 16 << 20, f"{sent:,} bytes of one trailer were taken"  # 0.8-1.6 MB here
    if refusal is not None:
        assert refusal[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
        assert refusal[1]["error_type"] == "headers_too_large"
    assert httpx.post(f"{impatient.url}/predict", json={"inputs": "good film"}, timeout=30).status_code == 200
    metrics = httpx.get(f"{impatient.url}/metrics").text
    assert re.search(r'fastsentiment_errors_total\{kind="headers_too_large"\} ([0-9.]+)', metrics).group(1) == "2.0"


@pytest.mark.parametrize("path", [b"GET /health", b"POST /predict"])
def test_a_head_over_the_limit_that_arrives_in_one_read_is_refused(impatient, path):
    """Only reads wholly inside a head were counted: one read holding a whole head of 70 or 150 kB (a read can be a
    few hundred kB) was answered, /health with 200, as if within the 64 KiB limit."""
    for size in (70_000, 150_000):
        headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 90) for i in range(size // 100))
        body = b'{"inputs": "good film"}'
        head = b"%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (path, len(body), headers)
        with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
            sock.sendall(head + body)
            refusal = _refusal_if_readable(sock)
        # None: refused and closed while the rest was still coming, the answer lost to the reset (never a 200)
        assert refusal in (
            None,
            (
                b"HTTP/1.1 431 Request Header Fields Too Large",
                {"error": "request headers over 65536 bytes", "error_type": "headers_too_large"},
            ),
        ), size
    # heads within the limit whose blank line comes over two or three reads, their bodies (over 64 KiB) after it
    body = json.dumps({"inputs": ["good film"] * 3}).encode()
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n" % len(body)
    big = head + b"X-Big: " + b"v" * 60_000 + b"\r\n"
    trailing = b" " * 200_000  # bytes after the body: not part of any head
    for reads in ([big + b"\r", b"\n" + body + trailing], [head, b"\r", b"\n" + body + trailing]):
        with socket.create_connection(("127.0.0.1", impatient.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for read in reads:
                sock.sendall(read)
                time.sleep(0.2)  # each its own read of the server's socket
            sock.settimeout(30)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]


def test_full_queue_answers_503_with_retry_after(bert_dir, cache):
    server = Server(
        bert_dir, "--max-queue", "8", "--max-inputs", "8", "--max-batch-size", "2", env={"FASTSENTIMENT_CACHE": cache}
    )
    try:

        def ask(i):
            return httpx.post(f"{server.url}/predict", json={"inputs": [sentence(i)] * 6}, timeout=60)

        with ThreadPoolExecutor(max_workers=32) as pool:
            responses = list(pool.map(ask, range(64)))
        statuses = {r.status_code for r in responses}
        assert statuses <= {200, 503} and 503 in statuses and 200 in statuses
        rejected = next(r for r in responses if r.status_code == 503)
        assert rejected.headers["retry-after"] == "1" and rejected.json()["error_type"] == "overloaded"
    finally:
        server.stop()


def test_sigterm_finishes_accepted_requests_then_exits_0(bert_dir, cache):
    server = Server(bert_dir, env={"FASTSENTIMENT_CACHE": cache})
    texts = [sentence(i) for i in range(240)]
    # Each client's connection is open and accepted before the requests: a connection still being made when the
    # server stops is refused, as it should be (on a slow machine twelve threads took over 0.3 s to connect).
    clients = [httpx.Client(base_url=server.url, timeout=120) for _ in range(12)]
    for client in clients:
        assert client.get("/health").status_code == 200

    def ask(i):
        return clients[i].post("/predict", json={"inputs": texts[i * 20 : (i + 1) * 20]})

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(ask, i) for i in range(12)]
        time.sleep(0.3)  # let the requests be read and queued
        server.process.send_signal(signal.SIGTERM)
        responses = [future.result() for future in futures]
    for client in clients:
        client.close()
    assert [r.status_code for r in responses] == [200] * 12
    assert all(len(r.json()) == 20 for r in responses)
    assert server.process.wait(timeout=60) == 0


def test_sigterm_cuts_off_a_client_that_never_reads_its_answer_after_a_grace(tmp_path, cache):
    """The stop waits for every connection to close, and one whose client never read a large answer (left in the
    socket's buffers) held it for ever: the server ran until the orchestrator's SIGKILL. Another client's request,
    sent before the signal, is answered whole."""
    model = build_model(tmp_path / "many-labels", "bert", labels=tuple(f"LABEL_NUMBER_{i:05d}" for i in range(1000)))
    server = Server(model, "--backend", "onnx", env={"FASTSENTIMENT_CACHE": cache})
    try:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        body = json.dumps(
            {"inputs": [f"text {i}" for i in range(256)]}
        ).encode()  # every label of each: megabytes, never read
        stuck.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(1)  # answered meanwhile, into buffers the client leaves full
        with ThreadPoolExecutor(max_workers=1) as pool:
            other = pool.submit(
                httpx.post, f"{server.url}/predict", json={"inputs": [sentence(i) for i in range(64)]}, timeout=60
            )
            time.sleep(1)  # accepted (the loop is busy a while with the stuck request's answer on a loaded machine)
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=30) == 0
            answered = other.result()
        assert answered.status_code == 200 and len(answered.json()) == 64
    finally:
        stuck.close()
        server.process.kill()


FAILING_BACKEND = """
import sys
import numpy as np
from fastsentiment.backends import BackendSpec, register
from fastsentiment.backends.onnx_backend import OnnxBackend

class Failing(OnnxBackend):
    spec = BackendSpec("failing", "onnx that fails on the token 'hate'", "onnx", ("onnxruntime",), ("cpu",), ("int8",), "int8")
    def logits(self, input_ids, attention_mask):
        if (input_ids == HATE).any():
            raise RuntimeError("kernel exploded")
        return super().logits(input_ids, attention_mask)

register(Failing)

# A bug on the answer's path (not the request's fault) for requests asking top_k 1.
import fastsentiment.serve.app as app
ranked = app._ranked
def broken(classifier, scores, top_k):
    if top_k == 1:
        raise KeyError("a bug")
    return ranked(classifier, scores, top_k)
app._ranked = broken
from fastsentiment.cli import main
main(sys.argv[1:])
"""


def test_a_backend_error_or_a_bug_fails_only_its_requests_and_the_server_keeps_serving(bert_dir, cache, local):
    hate = local.encoder._tokenizer.token_to_id("hate")
    server = Server(
        bert_dir,
        "--backend",
        "failing",
        script=FAILING_BACKEND.replace("HATE", str(hate)),
        env={"FASTSENTIMENT_CACHE": cache},
    )
    try:
        failed = httpx.post(f"{server.url}/predict", json={"inputs": "I hate cheese"}, timeout=30)
        assert failed.status_code == 500 and failed.json()["error_type"] == "backend"
        assert "kernel exploded" in failed.json()["error"]
        for _ in range(3):
            assert httpx.post(f"{server.url}/predict", json={"inputs": "good film"}, timeout=30).status_code == 200
        assert 'fastsentiment_errors_total{kind="backend"} 1.0' in httpx.get(f"{server.url}/metrics").text
        # A bug in building the answer: a JSON 500 for that request, and the next ones are answered.
        bug = httpx.post(f"{server.url}/predict", json={"inputs": "good film", "parameters": {"top_k": 1}}, timeout=30)
        assert bug.status_code == 500 and bug.json() == {"error": "internal server error", "error_type": "internal"}
        assert httpx.post(f"{server.url}/predict", json={"inputs": "good film"}, timeout=30).status_code == 200
        assert 'fastsentiment_errors_total{kind="internal"} 1.0' in httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()


def test_a_huge_document_does_not_hold_up_a_concurrent_short_request(bert_dir, cache, local):
    """parameters.long_text="chunk": a 50,000-token document's windows go through the batcher a batch at a
    time, so a short request sent while it runs is answered long before it, and both answers are right."""
    running = Server(bert_dir, "--backend", "onnx", env={"FASTSENTIMENT_CACHE": cache})  # the default batching
    document = " ".join(WORDS[(i * 5) % len(WORDS)] for i in range(50_000))
    try:
        with ThreadPoolExecutor(2) as pool:

            def post(text, parameters):
                response = httpx.post(
                    f"{running.url}/predict", json={"inputs": text, "parameters": parameters}, timeout=300
                )
                return response, time.perf_counter()

            huge = pool.submit(post, document, {"long_text": "chunk"})
            time.sleep(0.2)  # the document is cut and its first windows are running
            short_sent = time.perf_counter()
            short_response, short_done = post("I like cheese", {})
            huge_response, huge_done = huge.result()
        assert short_response.status_code == 200 and huge_response.status_code == 200, huge_response.text
        assert short_sent < huge_done, "the short request must arrive while the document is still running"
        # In arrival order the short text would queue behind 1,000+ windows and finish after the document.
        assert short_done < huge_done
        assert short_response.json()[0][0]["label"] == local("I like cheese")[0]["label"]
        (expected,) = local.predict([document], long_text="chunk")
        assert expected.windows > 1000
        answer = huge_response.json()[0][0]
        assert answer["label"] == expected.label and abs(answer["score"] - expected.score) < 1e-4
        bad = httpx.post(f"{running.url}/predict", json={"inputs": document, "parameters": {"long_text": "error"}})
        assert bad.status_code == 422 and bad.json()["error"].startswith("inputs[0] has 50002 tokens")
    finally:
        running.stop()


SLOW_BACKEND = """
import sys
import time
from fastsentiment.backends import BackendSpec, register
from fastsentiment.backends.onnx_backend import OnnxBackend

class Slow(OnnxBackend):
    spec = BackendSpec("slow", "onnx that takes minutes to load", "onnx", ("onnxruntime",), ("cpu",), ("fp32",), "fp32")
    def __init__(self, *args, **kwargs):
        time.sleep(300)  # as a first `--backend auto` measuring every candidate
        super().__init__(*args, **kwargs)

register(Slow)
from fastsentiment.cli import main
main(sys.argv[1:])
"""


def start_loading_server(model, cache: str, load_seconds: int) -> tuple[subprocess.Popen, str, httpx.Response]:
    """A server whose backend takes `load_seconds` to load: the process, its URL, and its first /health answer."""
    port = free_port()
    script = SLOW_BACKEND.replace("time.sleep(300)", f"time.sleep({load_seconds})")
    process = subprocess.Popen(
        [sys.executable, "-c", script, "serve", "-m", str(model), "-b", "slow", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "FASTSENTIMENT_CACHE": cache},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline and process.poll() is None
        try:
            return process, url, httpx.get(f"{url}/health", timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_server_stopped_while_its_model_loads_exits_at_once(bert_dir, cache, stop):
    process, url, health = start_loading_server(bert_dir, cache, 300)
    try:
        assert (health.status_code, health.json()) == (503, {"status": "loading"})
        with ThreadPoolExecutor(max_workers=1) as pool:  # a request waiting for the model does not hold the stop
            body = {"inputs": "good film", "options": {"wait_for_model": True}}
            waiting = pool.submit(httpx.post, f"{url}/predict", json=body, timeout=60)
            time.sleep(0.5)
            assert not waiting.done()
            process.send_signal(stop)
            assert process.wait(timeout=20) == 0
            assert waiting.result().status_code == 503 and waiting.result().json()["error_type"] == "loading"
        assert "Traceback" not in process.stderr.read().decode()
    finally:
        process.kill()
        process.wait()


def test_wait_for_model_waits_for_a_loading_model_instead_of_a_503(bert_dir, cache):
    """The Inference API's `options.wait_for_model`: "wait for it instead of receiving 503"."""
    process, url, _ = start_loading_server(bert_dir, cache, 6)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(
                httpx.post,
                f"{url}/predict",
                json={"inputs": "good film", "options": {"wait_for_model": True}},
                timeout=120,
            )
            at_once = httpx.post(f"{url}/predict", json={"inputs": "good film"}, timeout=30)
            assert at_once.status_code == 503 and at_once.json()["error_type"] == "loading"
            assert not waiting.done()
            answered = waiting.result()
        assert answered.status_code == 200, answered.text
        assert {label["label"] for label in answered.json()[0]} == {"NEGATIVE", "POSITIVE"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_a_port_taken_by_another_server_is_one_line_before_the_model_loads(bert_dir, cache):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fastsentiment", "serve", "-m", str(bert_dir), "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "FASTSENTIMENT_CACHE": cache},
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.decode() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_port_0_serves_on_a_free_port_and_says_which(bert_dir, cache):
    command = [sys.executable, "-m", "fastsentiment", "serve", "-m", str(bert_dir), "--backend", "onnx", "--port", "0"]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, "FASTSENTIMENT_CACHE": cache}, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stderr.readline()
        port = int(re.fullmatch(r"fastsentiment serving on http://127\.0\.0\.1:(\d+) \(docs at /docs\)\n", line)[1])
        assert port > 0
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_requests_larger_than_the_queue_are_refused_when_the_server_starts(bert_dir, cache):
    """A request of more texts than the queue holds would be answered 503 "retry" forever: no such server starts."""
    command = [sys.executable, "-m", "fastsentiment", "serve", "-m", str(bert_dir), "--port", str(free_port())]
    result = subprocess.run(
        [*command, "--max-inputs", "50", "--max-queue", "10"],
        cwd=ROOT,
        env={**os.environ, "FASTSENTIMENT_CACHE": cache},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "error: --max-inputs 50 is more than --max-queue 10 holds: a request of that many texts could never be served\n"
    )


def test_a_model_that_cannot_load_stops_the_server_with_a_one_line_error(bert_dir, cache):
    command = [sys.executable, "-m", "fastsentiment", "serve", "-m", str(bert_dir), "--backend", "nosuch"]
    result = subprocess.run(
        [*command, "--port", str(free_port())],
        cwd=ROOT,
        env={**os.environ, "FASTSENTIMENT_CACHE": cache},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 2
    error = result.stderr.decode()
    assert error.strip().splitlines()[-1].startswith("error: unknown backend 'nosuch'") and "Traceback" not in error


@pytest.mark.parametrize(
    ("batching", "shapes"),
    [
        # 3 to 8 tokens pad to 4 or 8, 1 to 3 texts: 6 shapes on each of the server's models (one, or two where
        # OpenVINO runs streams).
        ([], (6, 12)),
        # One text per call: 2 shapes a model.
        (["--no-batching"], (2, 4)),
    ],
)
def test_an_openvino_server_says_how_many_shapes_it_ran_before_it_was_ready(bert_dir, cache, batching, shapes):
    running = Server(
        bert_dir, "--backend", "openvino", "--warm-up-length", "8", "--pad-to-multiple-of", "4",
        "--model-batch-size", "3", *batching, env={"FASTSENTIMENT_CACHE": cache},
    )  # fmt: skip
    try:
        answer = httpx.post(f"{running.url}/predict", json={"inputs": "good film"}, timeout=30)
        assert answer.status_code == 200 and len(answer.json()[0]) == 2
        info = httpx.get(f"{running.url}/info").json()
        assert (info["pad_to_multiple_of"], info["warm_up_length"]) == (4, 8)
    finally:
        running.stop()
    said = re.search(
        r"prepared (\d+) input shapes in [\d.]+ s \(--warm-up-length 8, --pad-to-multiple-of 4\)",
        running.process.stderr.read().decode(),
    )
    assert said and int(said.group(1)) in shapes


@pytest.mark.parametrize("length", [-1, 2.5, True])
def test_a_warm_up_length_that_is_not_a_count_of_tokens_is_refused(length):
    from fastsentiment.serve.app import ServerSettings

    with pytest.raises(InputError, match="--warm-up-length must be a whole number of tokens"):
        ServerSettings(warm_up_length=length)
    with pytest.raises(InputError, match="--pad-to-multiple-of must be a whole number of tokens, at least 1"):
        ServerSettings(pad_to_multiple_of=0 if length == -1 else length)
