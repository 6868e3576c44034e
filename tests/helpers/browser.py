"""Headless Chromium for the browser checks: a page's DOM after its scripts ran, and a screenshot."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=20000"]


def chromium() -> str | None:
    """The Chromium (or Chrome) executable, or None when none is installed."""
    return next(
        (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
    )


def rendered_dom(browser: str, url: str) -> str:
    """The page's DOM once its scripts have run (up to 20 s of virtual time)."""
    result = subprocess.run(
        [browser, *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True
    )
    return result.stdout


def screenshot(browser: str, url: str, path: Path, size: tuple[int, int] = (1280, 1400)) -> Path:
    """A PNG of the rendered page at `size` (width, height)."""
    subprocess.run(
        [browser, *FLAGS, f"--window-size={size[0]},{size[1]}", f"--screenshot={path}", url],
        capture_output=True,
        timeout=180,
        check=True,
    )
    return path


@contextmanager
def served(folder: Path) -> Iterator[str]:
    """`folder` served over HTTP on 127.0.0.1 (a free port) for the duration; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        """No access log in the test output."""
