"""The tests' `fastsentiment` commands, each in a process forked from one that has imported the heavy libraries.

Most of a command's time in the suite was interpreter start-up: a tiny `train` run spent 4 of its 5.5 s importing
torch and transformers, and the suite runs a few hundred commands. A zygote process per test worker imports them
once; each command is a child forked from it that sets the caller's environment, working folder, CPUs and standard
streams, runs `python -m fastsentiment` (the same `__main__`, through runpy), and exits with its status: a process
of its own, as before, only without the imports. Nothing is imported in the zygote that starts threads able to hold
a lock across the fork (checked: the runtimes' thread pools start on first use).

A command whose environment differs from the test process's in anything but the keys in `FORKABLE_ENV` (PYTHONPATH
stubs hiding a runtime, Ray's token) needs a fresh interpreter, and gets one (`fresh_reason`); so does every command
with `--fresh-cli` on pytest's command line.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# Environment keys the code reads when a command runs, not when a module is imported: a child can take them.
FORKABLE_ENV = {"FASTSENTIMENT_CACHE", "FASTSENTIMENT_THREADS", "HF_HUB_OFFLINE", "XDG_CACHE_HOME", "COLUMNS"}

ZYGOTE = r"""
import atexit, json, os, runpy, sys, threading, traceback

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
    code = 0
    try:
        runpy.run_module("fastsentiment", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)

reply({"ready": True})
for line in requests:
    request = json.loads(line)
    child = os.fork()
    if child == 0:
        run(request)
    reply({"pid": child})
    _, status = os.waitpid(child, 0)
    reply({"status": os.waitstatus_to_exitcode(status)})
"""


class Zygote:
    """One test worker's zygote: started on first use, gone when the worker ends (its request pipe closes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.process: subprocess.Popen | None = None

    def _started(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", ZYGOTE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=self.root,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
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
                os.killpg(child, signal.SIGKILL)
                self._reply(process, 60)
                raise subprocess.TimeoutExpired(["fastsentiment", *argv], timeout) from None
            return subprocess.CompletedProcess(
                ["fastsentiment", *argv], status, streams["stdout"].read_bytes(), streams["stderr"].read_bytes()
            )


def fresh_reason(env: dict[str, str]) -> str | None:
    """Why a command with `env` needs a fresh interpreter (an environment key read at import time), or None."""
    changed = {key for key in env.keys() | os.environ.keys() if env.get(key) != os.environ.get(key)}
    unforkable = sorted(changed - FORKABLE_ENV)
    return f"environment: {', '.join(unforkable)}" if unforkable else None
