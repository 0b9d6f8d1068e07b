"""Start the app the way a user does (`python launch.py` in a subprocess) for the app benchmarks.

The benchmarks talk to it only over HTTP with gradio_client, so bench/ never imports `app`.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(workspace: Path, checkpoint: Optional[str], device: str, model_concurrency: int = 1,
              timeout_s: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yields (url, server process) once the page answers; the server is stopped on exit."""
    port = free_port()
    cmd = [sys.executable, str(ROOT / "launch.py"), "--workspace", str(workspace), "--port", str(port),
           "--device", device, "--model-concurrency", str(model_concurrency), "--no-examples"]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"launch.py exited with code {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the app did not answer on {url} within {timeout_s:.0f} s") from None
                time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
