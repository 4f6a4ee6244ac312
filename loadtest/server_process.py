"""Start `npcserver serve` as a child process on a free loopback port, for benchmarks and tests.

Waits for the server's own readiness line ("ready in N s: ws://..."), not for a guessed delay,
and always stops the process (SIGINT, then kill).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready in .*?(ws://\S+)")


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[str]
    log_tail: deque[str] = field(default_factory=lambda: deque(maxlen=200))


@contextmanager
def server_process(*args: str, timeout_s: float = 180.0) -> Iterator[ServerProcess]:
    """`python -m npcserver serve --port 0 ARGS...`; yields once the models are loaded."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "npcserver", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tail: deque[str] = deque(maxlen=200)
    ready = threading.Event()
    found: list[str] = []

    def read_log() -> None:  # also keeps the pipe from filling up and blocking the server
        assert process.stderr is not None
        for line in process.stderr:
            tail.append(line)
            if not found and (match := READY.search(line)):
                found.append(match.group(1))
                ready.set()
        ready.set()  # the process ended

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.25):
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready within {timeout_s:.0f} s:\n" + "".join(tail))
        if not found:
            raise RuntimeError(f"server exited with {process.poll()} before it was ready:\n" + "".join(tail))
        yield ServerProcess(found[0], process, tail)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        reader.join(5)
        if process.stderr is not None:
            process.stderr.close()
