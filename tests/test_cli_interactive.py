import os
import re
import signal
import subprocess
import sys
import time

from conftest import ROOT, run_cli

PROMPT = "Enter text to classify (or 'ctrl+D' to quit): "


def test_prompt_answers_each_line_and_ctrl_d_exits_cleanly(bert_dir):
    result = run_cli("interactive", "--model", str(bert_dir), input="I like cheese\nI hate cheesecake\n")
    assert result.returncode == 0, result.stderr
    stdout = result.stdout.decode()
    answers = re.findall(r"Sentiment prediction: (positive|negative) \((\d+\.\d\d)%\)", stdout)
    assert len(answers) == 2
    assert stdout.count(PROMPT) == 3  # two answers, then the prompt that receives Ctrl+D


def test_verbose_logs_the_experiment_timings_and_logits(bert_dir):
    result = run_cli("interactive", "-v", "--model", str(bert_dir), input="I like cheese\n")
    assert result.returncode == 0
    log = result.stderr.decode()
    for pattern in [
        r"Loaded model in \d+\.\d ms",
        r"Loaded tokenizer in \d+\.\d ms",
        r"Tokenized input in \d+\.\d ms",
        r"Inferred in \d+\.\d ms",
        r"Logits: \[-?\d+\.\d+, -?\d+\.\d+\]",
    ]:
        assert re.search(pattern, log), (pattern, log)


def test_bad_lines_get_an_error_and_the_prompt_continues(bert_dir):
    result = run_cli("interactive", "--model", str(bert_dir), input=b"\n   \nbad \xff\ngood\n")
    assert result.returncode == 0
    stderr = result.stderr.decode()
    assert "error: line 1: empty text" in stderr and "error: line 2: empty text" in stderr  # named by line
    assert "error: line 3: not valid UTF-8" in stderr
    assert result.stdout.decode().count("Sentiment prediction:") == 1


def test_ctrl_c_at_the_prompt_exits_with_code_0(bert_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsentiment", "interactive", "--model", str(bert_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        # pytest-xdist's workers ignore SIGINT and a child inherits that: a terminal's default, as a shell gives.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    seen = b""
    while PROMPT.encode() not in seen and time.monotonic() < deadline:
        seen += process.stdout.read1(4096)
    assert PROMPT.encode() in seen
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0  # on the signal: stdin is still open
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr


def test_long_lines_are_chunked_or_refused_as_asked(bert_dir):
    from fastsentiment import Classifier

    long_line = " ".join(["good film", "bad cake", "love cheese"][i % 3] for i in range(60))  # 120 words, 64 max
    pinned = ("--model", str(bert_dir), "--backend", "onnx", "--precision", "fp32")
    chunked = run_cli("interactive", "-v", *pinned, "--long-text", "chunk", input=long_line + "\n")
    assert chunked.returncode == 0, chunked.stderr
    assert re.search(r"Tokenized and inferred 122 tokens in 3 window\(s\)", chunked.stderr.decode())
    (expected,) = Classifier.load(bert_dir, backend="onnx", precision="fp32").predict([long_line], long_text="chunk")
    assert f"Sentiment prediction: {expected.label.lower()} ({expected.score:.2%})" in chunked.stdout.decode()
    lines = f"{long_line}\ngood\n{long_line}\n"
    refused = run_cli("interactive", "--model", str(bert_dir), "--long-text", "error", input=lines)
    assert refused.returncode == 0
    # each named by its line (both were "input 1": every line is a call of its own)
    assert "error: line 1 has 122 tokens, over the model's limit of 64" in refused.stderr.decode()
    assert "error: line 3 has 122 tokens, over the model's limit of 64" in refused.stderr.decode()
    assert refused.stdout.decode().count("Sentiment prediction") == 1  # the prompt went on to the next line
    # a stride its windows have no room for is refused once, before the prompt (it was refused on every line)
    wide = run_cli("interactive", *pinned, "--long-text", "chunk", "--stride", "62", input="good\n")
    assert wide.returncode == 2 and not wide.stdout
    assert wide.stderr.decode().strip() == "error: stride must be between 0 and 61 tokens for windows of 64 tokens"


def test_at_a_terminal_arrow_keys_edit_and_recall_lines_instead_of_becoming_text(bert_dir):
    """Typed at a terminal: the up arrow recalls the last line and the left arrow moves the cursor (they were
    classified as the text "^[[A"); bytes that are not UTF-8 are still an error for their line."""
    import pty
    import select

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsentiment", "interactive", "--model", str(bert_dir)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TERM": "xterm"},
        close_fds=True,
    )
    os.close(terminal)
    seen = b""

    def prompts(count: int) -> None:
        """Read the terminal until the prompt has been shown `count` times (a key typed before it would reach the
        terminal between two reads, as no person types)."""
        nonlocal seen
        deadline = time.monotonic() + 120
        while seen.count(PROMPT.encode()) < count and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                seen += os.read(controller, 4096)

    try:
        prompts(1)
        os.write(controller, b"good fim\x1b[Dl\r")  # "good fim", one to the left, "l": "good film"
        prompts(2)
        os.write(controller, b"\x1b[A\r")  # the line before, again
        prompts(3)
        os.write(controller, b"bad \xff cake\r")
        prompts(4)
        os.write(controller, b"\x04")
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    text = seen.decode("utf-8", "replace")
    assert text.count("Sentiment prediction:") == 2 and "error: line 3: not valid UTF-8" in text, text
    assert text.count("good film\r\nSentiment prediction") == 1  # the recalled line, shown whole
    assert "[A" not in text and "Traceback" not in text


def test_a_line_over_the_text_limit_is_refused_unread_and_the_prompt_continues(bert_dir):
    """A file without line ends piped in was one line: read and tokenised whole, it took about 130 bytes a
    character (a 5,000,000-character line: 0.9 GB). Refused as a file job refuses such a text, its rest skipped."""
    from fastsentiment.jobs.rows import MAX_TEXT_CHARS

    lines = ["good " * (MAX_TEXT_CHARS // 5) + "x", "x" * (3 * MAX_TEXT_CHARS), "bad", "good"]
    result = run_cli("interactive", "--model", str(bert_dir), input="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    for number in (1, 2):
        assert f"error: line {number}: over the limit of {MAX_TEXT_CHARS:,} characters" in stderr, stderr
    assert "truncated" not in stderr  # refused, not tokenised
    assert result.stdout.decode().count("Sentiment prediction:") == 2
