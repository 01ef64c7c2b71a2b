"""A real headless Chromium driven over the DevTools protocol (aiohttp's websocket client, already
installed with LLaMA-Factory's dependencies): open a page, collect its console errors and
uncaught exceptions, evaluate JavaScript, click with real mouse events, take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

# As root Chromium needs --no-sandbox; the network flags keep it from dialling out (nothing
# outside is reachable here, and a report page must not need anything outside).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--remote-debugging-port=0"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Page:
    """One tab: ``evaluate`` JavaScript, ``click`` a selector, ``screenshot``; ``errors`` holds every
    console error, log error and uncaught exception seen since the page was opened."""

    def __init__(self, url: str, profile: Path, width: int = 1400, height: int = 1000) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []
        self.process = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}",
                                         f"--window-size={width},{height}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._id = 0
        self.loop.run_until_complete(self._open(url, profile))

    async def _open(self, url: str, profile: Path) -> None:
        import aiohttp

        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if time.monotonic() > end or self.process.poll() is not None:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.1)
        port = port_file.read_text().splitlines()[0]
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as response:
            targets = await response.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        self.socket = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        for domain in ("Runtime", "Log", "Page"):
            await self._call(f"{domain}.enable")
        await self._call("Page.navigate", url=url)
        await self._until(lambda m: m.get("method") == "Page.loadEventFired", 60)

    async def _call(self, method: str, **params):
        self._id += 1
        await self.socket.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        reply = await self._until(lambda m, wanted=self._id: m.get("id") == wanted, 60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def _until(self, wanted, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            message = await asyncio.wait_for(self.socket.receive_json(), max(0.1, end - time.monotonic()))
            self._note(message)
            if wanted(message):
                return message

    def _note(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")

    def settle(self, seconds: float = 0.5) -> None:
        """Read what the page sent meanwhile (late console errors land in ``errors``)."""
        async def drain():
            try:
                await self._until(lambda _message: False, seconds)
            except TimeoutError:
                pass
        self.loop.run_until_complete(drain())

    def evaluate(self, expression: str):
        result = self.loop.run_until_complete(self._call("Runtime.evaluate", expression=expression,
                                                         returnByValue=True, awaitPromise=True))
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the middle of the element."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView(); "
                            "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.loop.run_until_complete(self._call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                                                    button="left", clickCount=1))

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        params = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 6000), "scale": 1}
        blob = self.loop.run_until_complete(self._call("Page.captureScreenshot", **params))["data"]
        path.write_bytes(base64.b64decode(blob))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.socket.close())
            self.loop.run_until_complete(self.session.close())
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.loop.close()
