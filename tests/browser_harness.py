"""Load a page in headless Chromium and report what a person would see go wrong (used by the report tests).

    result = load_page(path, screenshot=tmp_path / "page.png")
    result.console_errors    # console.error / console.assert failures, uncaught exceptions, Log errors
    result.external_requests # anything fetched that is not the file itself or a data: URL
    result.dom               # document.documentElement.outerHTML after load
    result.evaluate          # values of the `checks` expressions, e.g. {"bars": 12}

Driven through the DevTools protocol over `--remote-debugging-pipe` (NUL-separated JSON on file
descriptors 3 and 4), so nothing but the standard library is needed, and console messages arrive as
protocol events rather than as log lines to parse. Every wait is on a protocol reply or event, with
a deadline; nothing sleeps.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TIMEOUT = 60.0
INSTALL_HINT = "install it with `apt-get update && apt-get install -y chromium` (Debian/Ubuntu), or set CHROMIUM=/path"


def chromium_binary() -> str | None:
    """Debian's `chromium` (or $CHROMIUM), or None when there is none on this machine."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def require_chromium() -> str:
    """The Chromium binary; without one, fail under CI and skip loudly elsewhere (never pass silently)."""
    import pytest

    binary = chromium_binary()
    if binary is None:
        message = f"Chromium is not installed, so the report cannot be checked in a real browser: {INSTALL_HINT}."
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: this check must run in CI; .ci/run installs it as root.)")
        pytest.skip("!!! NOT CHECKED IN A BROWSER !!! " + message)
    return binary


@dataclass
class PageResult:
    console_errors: list[str] = field(default_factory=list)
    console_messages: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    dom: str = ""
    evaluate: dict[str, object] = field(default_factory=dict)
    screenshot: Path | None = None


class _Pipe:
    """The DevTools protocol over Chromium's pipe: send commands, collect events, wait for replies."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int, deadline: float):
        self.proc, self.out, self.inp, self.deadline = proc, to_browser, from_browser, deadline
        self.buffer, self.events, self.next_id = b"", [], 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self.next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait(self, matches) -> dict:
        """The next message that `matches`; every other message is kept in `events`."""
        for i, m in enumerate(self.events):
            if "id" not in m and matches(m):
                return self.events.pop(i)
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                m = json.loads(raw)
                if matches(m):
                    return m
                if "id" not in m:
                    self.events.append(m)
            left = self.deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError("Chromium did not answer in time (or exited)")
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 1 << 20)
                if not chunk:
                    raise TimeoutError("Chromium closed the DevTools pipe")
                self.buffer += chunk


def load_page(path: Path, screenshot: Path | None = None, checks: dict[str, str] | None = None,
              width: int = 1280, timeout: float = TIMEOUT) -> PageResult:
    """Open `path` in headless Chromium, wait for load, and return what happened (see module docstring)."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError(f"Chromium not found: {INSTALL_HINT}")
    url = Path(path).resolve().as_uri()
    to_browser_r, to_browser_w = _high_pipe()
    from_browser_r, from_browser_w = _high_pipe()

    def wire_fds():  # the child reads commands on fd 3 and writes replies on fd 4 (inheritable dups)
        os.dup2(to_browser_r, 3)
        os.dup2(from_browser_w, 4)

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.Popen(
            [binary, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_fds, close_fds=False,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            return _drive(_Pipe(proc, to_browser_w, from_browser_r, time.monotonic() + timeout),
                          url, screenshot, checks or {}, width)
        finally:
            try:
                os.write(to_browser_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_browser_w)
            os.close(from_browser_r)


def _high_pipe() -> tuple[int, int]:
    """A close-on-exec pipe on fds >= 10, so that dup2 onto 3 and 4 in the child cannot clobber it."""
    import fcntl

    pair = []
    for fd in os.pipe():
        pair.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return pair[0], pair[1]


def _drive(cdp: _Pipe, url: str, screenshot: Path | None, checks: dict[str, str], width: int) -> PageResult:
    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.send(f"{domain}.enable", session=session)
    cdp.send("Emulation.setDeviceMetricsOverride",
             {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
    cdp.send("Page.navigate", {"url": url}, session=session)
    cdp.wait(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session)
    # let tasks queued during load (timers, promise jobs) run before judging the console
    cdp.send("Runtime.evaluate", {"expression": "new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))",
                                  "awaitPromise": True}, session=session)
    result = PageResult()
    for name, expression in checks.items():
        result.evaluate[name] = _evaluate(cdp, session, expression)
    result.dom = _evaluate(cdp, session, "document.documentElement.outerHTML")
    if screenshot is not None:
        metrics = cdp.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = cdp.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": metrics["height"], "scale": 1}}, session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        result.screenshot = screenshot
    for m in cdp.events:
        if m.get("sessionId") != session:
            continue
        method, params = m.get("method"), m.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            result.console_messages.append(f"{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                result.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            result.console_errors.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            result.console_errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            requested = params.get("request", {}).get("url", "")
            if requested != url and not requested.startswith(("data:", "about:")):
                result.external_requests.append(requested)
    return result


def _evaluate(cdp: _Pipe, session: str, expression: str):
    reply = cdp.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
    if "exceptionDetails" in reply:
        raise RuntimeError(f"{expression}: {reply['exceptionDetails'].get('text')}")
    return reply["result"].get("value")
