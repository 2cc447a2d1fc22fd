"""Drive a real ComfyUI server in a subprocess: start it, prove the pack loaded, run prompts.

Modelled on how ComfyUI tests itself (a ``main.py`` subprocess plus HTTP and websocket). Stdlib
only, except the websocket listener (``websocket-client``, imported when used), so that
``tools/mgt.py demo`` can drive a server from a bare python3.11 too.

ComfyUI's own exit code and ``--quick-test-for-ci`` hide custom-node import failures, so
``start()`` asserts that every expected node id is listed by ``/object_info`` and otherwise raises
with the server's import errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # ComfyUI colours its log even into a file
_FAILURE_MARKERS = ("IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint", "did not return")


class ComfyHarnessError(RuntimeError):
    """The server did not come up, or came up without the pack's nodes."""


class PromptRejected(ComfyHarnessError):
    """``POST /prompt`` refused the prompt (validation); ``body`` is ComfyUI's JSON answer."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000]}")
        self.status, self.body = status, body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure_excerpt(log: str, limit: int = 150) -> str:
    """The log lines that explain a failed pack import: tracebacks and ComfyUI's failure lines."""
    keep, in_traceback = [], False
    for line in log.splitlines():
        if "Traceback (most recent call last)" in line:
            in_traceback = True
        if in_traceback or any(m in line for m in _FAILURE_MARKERS):
            keep.append(line)
        if in_traceback and line[:1].strip() and "Traceback" not in line:
            in_traceback = False  # the unindented exception line closes the block
    return "\n".join(keep[-limit:]) if keep else "\n".join(log.splitlines()[-40:])


class EventListener:
    """Collects the websocket events the server sends to our client id, on a background thread."""

    def __init__(self, port: int, client_id: str):
        import websocket  # websocket-client; only the test env needs it

        self._ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?clientId={client_id}", timeout=10)
        self._ws.settimeout(None)
        self._events: list[tuple[str, dict]] = []
        self.binary_frames = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                msg = self._ws.recv()
            except Exception:  # closed by close() or by the server going away
                return
            if not isinstance(msg, str):  # binary frames: preview images
                with self._cond:
                    self.binary_frames += 1
                continue
            event = json.loads(msg)
            with self._cond:
                self._events.append((event.get("type"), event.get("data") or {}))
                self._cond.notify_all()

    def for_prompt(self, prompt_id: str) -> list[tuple[str, dict]]:
        with self._cond:
            return [(t, d) for t, d in self._events if d.get("prompt_id") == prompt_id]

    def wait_for(self, prompt_id: str, event_type: str, timeout: float = 30) -> dict:
        """Block until an event of this type for this prompt arrived; return its data."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(t == event_type and d.get("prompt_id") == prompt_id for t, d in self._events), timeout
            )
            if not ok:
                seen = [t for t, d in self._events if d.get("prompt_id") == prompt_id]
                raise TimeoutError(f"no {event_type!r} event for prompt {prompt_id} in {timeout} s; got {seen}")
            return next(d for t, d in self._events if t == event_type and d.get("prompt_id") == prompt_id)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.abort()
        with contextlib.suppress(Exception):
            self._ws.close()
        self._thread.join(timeout=5)


class ComfyServer:
    """One ComfyUI process on 127.0.0.1 with a throwaway base directory. Use as a context manager."""

    def __init__(self, python, launcher, comfy_dir, extra_paths_yaml, expected_nodes=(), *,
                 websocket: bool = True, start_timeout: float = 240, cpu: bool = True):
        self.python, self.launcher, self.comfy_dir = Path(python), Path(launcher), Path(comfy_dir)
        self.extra_paths_yaml = Path(extra_paths_yaml)
        self.expected_nodes = tuple(expected_nodes)
        self.use_websocket, self.start_timeout = websocket, start_timeout
        self.cpu = cpu  # False: ComfyUI picks its device (the GPU), as users run it
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.events: EventListener | None = None
        self.log_text = ""
        self.tmp: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ComfyServer:
        self.tmp = Path(tempfile.mkdtemp(prefix="mgt-comfy-"))
        self.base = self.tmp / "base"
        frontend = self.tmp / "frontend-empty"  # stands in for the UI-only frontend package
        for d in (self.base / "custom_nodes", frontend):  # main.py lists <base>/custom_nodes unconditionally
            d.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = self.tmp / "server.log"
        cmd = [self.python, self.launcher, self.comfy_dir, *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port", self.port,
               "--base-directory", self.base, "--front-end-root", frontend, "--database-url", "sqlite:///:memory:",
               "--disable-api-nodes", "--extra-model-paths-config", self.extra_paths_yaml]
        with open(self._log_path, "wb") as log:
            self.proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
            if self.use_websocket:
                self.events = EventListener(self.port, self.client_id)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise ComfyHarnessError(
                    f"ComfyUI exited with code {self.proc.returncode} before answering:\n{failure_excerpt(self.log())}"
                )
            try:
                info = self.object_info()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() - t0 > self.start_timeout:
                    raise ComfyHarnessError(
                        f"ComfyUI did not answer /object_info within {self.start_timeout} s:\n{failure_excerpt(self.log())}"
                    ) from None
                time.sleep(0.5)
        self.start_seconds = time.monotonic() - t0
        missing = [n for n in self.expected_nodes if n not in info]
        if missing:
            raise ComfyHarnessError(
                f"ComfyUI started but lacks the pack's nodes {missing}; the pack failed to load. "
                f"Server log:\n{failure_excerpt(self.log())}"
            )

    def log(self) -> str:
        """The server's stdout+stderr so far (kept in ``log_text`` after ``stop``)."""
        if self.tmp and self._log_path.exists():
            self.log_text = _ANSI.sub("", self._log_path.read_text(errors="replace"))
        return self.log_text

    def stop(self) -> None:
        """Terminate the server (kill after 15 s) and delete its base directory."""
        if self.events:
            self.events.close()
            self.events = None
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        if self.tmp:
            self.log()
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- client ------------------------------------------------------------------------------
    def _request(self, path: str, body: dict | None = None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own loopback server
            raw = resp.read()
        return json.loads(raw) if raw else None

    def _request_bytes(self, path: str, timeout: float = 30) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:  # noqa: S310 - our own loopback server
            return resp.read()

    def object_info(self, node: str | None = None) -> dict:
        return self._request("/object_info" + (f"/{node}" if node else ""))

    def queue(self, prompt: dict, extra_data: dict | None = None) -> str:
        """POST an API-format prompt; returns its id. Raises PromptRejected on HTTP 400."""
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        try:
            return self._request("/prompt", body)["prompt_id"]
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"raw": raw.decode(errors="replace")}
            raise PromptRejected(e.code, body) from None

    def wait(self, prompt_id: str, timeout: float = 120) -> dict:
        """Poll /history until the prompt finished (success or error); returns its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self._request(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            if self.proc.poll() is not None:
                raise ComfyHarnessError(f"ComfyUI died while running {prompt_id}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s")

    def run(self, prompt: dict, timeout: float = 120, extra_data: dict | None = None) -> tuple[str, dict]:
        """queue + wait."""
        prompt_id = self.queue(prompt, extra_data)
        return prompt_id, self.wait(prompt_id, timeout)

    def interrupt(self) -> None:
        self._request("/interrupt", {})

    def output_images(self, entry: dict) -> list[Path]:
        """Files that output nodes (SaveImage...) wrote for a finished prompt."""
        out = self.base / "output"
        return [out / img.get("subfolder", "") / img["filename"]
                for node in entry.get("outputs", {}).values()
                for img in node.get("images", []) if img.get("type") == "output"]
