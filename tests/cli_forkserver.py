"""The tests' `fastsentiment` commands, each in a process forked from one that has imported the heavy libraries.

Most of a command's time in the suite was interpreter start-up: a tiny `train` run spent 4 of its 5.5 s importing
torch and transformers, and the suite runs a few hundred commands. A zygote process per test worker imports them
once; each command is a child forked from it that sets the caller's environment, working folder, CPUs and standard
streams, runs `python -m fastsentiment` (the same `__main__`, through runpy), and ends as an interpreter does
(non-daemon threads joined, exit hooks run, streams flushed, exit status 120 if they cannot be, an escaped Ctrl+C
re-raised as the signal): a process of its own, as before, only without the imports. The imports leave a few
threads behind (OpenBLAS's, pyarrow's allocator's, OpenVINO's telemetry executor); none takes a lock a command
needs, and the native ones are fork-aware.

A command for which a test sets an environment key other than those in `FORKABLE_ENV` (PYTHONPATH
stubs hiding a runtime, Ray's token, Hugging Face's settings, which huggingface_hub reads at import) needs a fresh
interpreter, and gets one (`fresh_reason`); so does every command with `--fresh-cli` on pytest's command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Environment keys read when a command runs, not when a module is imported: a child can take them. (Not
# XDG_CACHE_HOME: fastsentiment reads it late, but huggingface_hub derives its cache folder from it at import.)
FORKABLE_ENV = {"FASTSENTIMENT_CACHE", "FASTSENTIMENT_THREADS", "COLUMNS"}

ZYGOTE = r"""
import atexit, json, os, runpy, signal, sys, threading, traceback

requests, replies = os.fdopen(os.dup(0), "rb", 0), os.dup(1)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.dup2(2, 1)  # a stray print of an import cannot reach the reply channel

import importlib
import fastsentiment.cli
fastsentiment.cli._register_commands()
for name in ("numpy", "tokenizers", "rich", "safetensors", "pyarrow", "onnxruntime", "openvino", "torch",
             "transformers.models.bert.modeling_bert", "fastsentiment.train.loop"):
    try:
        importlib.import_module(name)
    except ImportError:  # an install without that extra: its commands import as they would anyway
        pass

def reply(message):
    os.write(replies, (json.dumps(message) + "\n").encode())

def feed(fd, data):
    try:
        with open(fd, "wb") as stream:
            stream.write(data)
    except BrokenPipeError:  # the command exited without reading all of it
        pass

def run(request):
    os.setpgid(0, 0)  # the command and whatever it starts: one group, killed together on a timeout
    requests.close()
    os.close(replies)
    # Standard input is an anonymous pipe, as subprocess gives: `--file /dev/stdin` opens it again, which a named
    # pipe whose writer has gone would block
    with open(request["stdin"], "rb") as given:
        data = given.read()
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)
    threading.Thread(target=feed, args=(write_end, data), daemon=True).start()
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(path, os.O_WRONLY)
        os.dup2(opened, fd)
        os.close(opened)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    os.sched_setaffinity(0, request["cpus"])
    sys.argv = ["fastsentiment", *request["argv"]]
    code, interrupted = 0, False
    try:
        runpy.run_module("fastsentiment", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:
        traceback.print_exc()
        code = 1
    # As Py_FinalizeEx: non-daemon threads joined (and concurrent.futures' exit hooks), atexit, then the streams
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = 120
    if interrupted:  # as Python ends on an uncaught KeyboardInterrupt: killed by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)

reply({"ready": True})
for line in requests:
    request = json.loads(line)
    sys.stdout.flush()  # nothing an import left unwritten is copied into the child
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        run(request)
    reply({"pid": child})
    _, status = os.waitpid(child, 0)
    reply({"status": os.waitstatus_to_exitcode(status)})
"""


class Zygote:
    """One test worker's zygote: started on first use, gone when the worker ends (its request pipe closes)."""

    def __init__(self, root: Path, environment: dict[str, str]) -> None:
        self.root = root
        self.environment = dict(environment)  # fixed now, whenever the zygote starts: its imports see this
        self.process: subprocess.Popen | None = None

    @staticmethod
    def fresh_reason(overrides: dict[str, str], base: dict[str, str]) -> str | None:
        """Why a command whose test sets `overrides` over the test process's environment `base` needs a fresh
        interpreter (a key read at import), or None. What the test process itself acquired after the zygote started
        (pytest's current test, the settings Ray and torch write into os.environ when a test imports them) is not
        the command's: a fresh interpreter saw it only because subprocess copies os.environ."""
        unforkable = sorted(
            key for key, value in overrides.items() if base.get(key) != value and key not in FORKABLE_ENV
        )
        return f"environment: {', '.join(unforkable)}" if unforkable else None

    def _started(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", ZYGOTE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,  # replies read unbuffered: one left in a buffer would not wake select()
                cwd=self.root,
                env=self.environment,
            )
            ready = self._reply(self.process, 300)
            assert ready == {"ready": True}, ready
        return self.process

    @staticmethod
    def _reply(process: subprocess.Popen, timeout: float) -> dict:
        readable, _, _ = select.select([process.stdout], [], [], timeout)
        if not readable:
            raise TimeoutError
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI zygote exited with status {process.wait()}")
        return json.loads(line)

    def run(self, argv: list[str], input: bytes | None, env: dict[str, str], timeout: float):
        process = self._started()
        with tempfile.TemporaryDirectory(prefix="fastsentiment-cli-") as scratch:
            streams = {name: Path(scratch) / name for name in ("stdin", "stdout", "stderr")}
            streams["stdin"].write_bytes(input or b"")
            for name in ("stdout", "stderr"):
                streams[name].touch()
            request = {
                "argv": argv,
                "env": env,
                "cwd": str(self.root),
                "cpus": sorted(os.sched_getaffinity(0)),
                **{name: str(path) for name, path in streams.items()},
            }
            process.stdin.write((json.dumps(request) + "\n").encode())
            process.stdin.flush()
            child = self._reply(process, 60)["pid"]
            try:
                status = self._reply(process, timeout)["status"]
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it ended just now
                    os.killpg(child, signal.SIGKILL)
                self._reply(process, 60)
                raise subprocess.TimeoutExpired(["fastsentiment", *argv], timeout) from None
            return subprocess.CompletedProcess(
                ["fastsentiment", *argv], status, streams["stdout"].read_bytes(), streams["stderr"].read_bytes()
            )
