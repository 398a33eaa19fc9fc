"""A small Chrome DevTools Protocol client over websocket-client: headless Chromium, no mocks.

``Browser.start`` launches ``chromium --headless`` with a private profile and waits for the
``DevToolsActivePort`` file; ``Browser.page()`` opens a tab. A page records console errors and
uncaught exceptions, navigates, evaluates JavaScript, waits on conditions and takes screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket

BINARIES = ("chromium", "chromium-browser", "google-chrome", "chrome")
DEADLINE_S = 120.0


def find_chromium() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    """Poll ``condition`` until it returns a truthy value (the deadline only guards hangs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Page:
    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=DEADLINE_S, suppress_origin=True)
        self._id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  width=1280, height=900, deviceScaleFactor=1, mobile=False)  # fmt: skip

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        my_id = self._id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)

    def _drain_until(self, method: str) -> None:
        if any(e["method"] == method for e in self.events):
            return
        while True:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return

    def navigate(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        self._drain_until("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_js(self, expression: str, what: str) -> Any:
        return wait_for(lambda: self.evaluate(expression), what)

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen since navigate()."""
        self.send("Runtime.evaluate", expression="0")  # flush pending events
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(str(d.get("exception", {}).get("description", d.get("text"))))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"] + " " + p["entry"].get("url", ""))
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]  # fmt: skip

    def screenshot(self, path: Path) -> Path:
        height = int(self.evaluate("document.documentElement.scrollHeight") or 900)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": 1280, "height": min(height, 4000),
                               "scale": 1})  # fmt: skip
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        self.ws.close()


class Browser:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, profile: Path) -> None:
        self.proc, self.port, self.profile = proc, port, profile

    @classmethod
    def start(cls, binary: str, profile: Path) -> Browser:
        profile.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"

        def ready() -> int | None:
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {proc.returncode}")
            if port_file.exists():
                first = port_file.read_text().split("\n")[0].strip()
                return int(first) if first else None
            return None

        port = wait_for(ready, "chromium's DevToolsActivePort")
        return cls(proc, port, profile)

    def page(self) -> Page:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(req, timeout=DEADLINE_S) as r:
            target = json.loads(r.read())
        return Page(target["webSocketDebuggerUrl"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def keep_screenshot(path: Path) -> None:
    """Copy a test's screenshot to $SIGTUNE_SCREENSHOT_DIR (how docs/img is produced)."""
    target = os.environ.get("SIGTUNE_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
