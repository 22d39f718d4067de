"""Debian's Chromium driven by Selenium, and ``cogsample serve`` as a real process, for the page's
test (``test_page.py``) and its screenshot (``benchmarks/serve_screenshot.py``).

Nothing is downloaded: the browser and its driver are Debian's (``chromium``, ``chromium-driver``),
named by path so that Selenium Manager stays idle. Every wait is bounded; the server is stopped by
its pid (SIGTERM, then SIGKILL) and the browser quit, whatever happened.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Headless, no sandbox (root in a container), nothing that reaches out of the machine.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
)
SERVER_START_S = 90
STOP_S = 20


def missing() -> str | None:
    """Why the browser test cannot run here (None when it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is absent (apt-get install chromium chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not importable (pip install -e '.[test]')"
    return None


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check()`` until it returns a truthy value (returned), or fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_S (its whole session: the worker too)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_S)


@contextmanager
def served(out: Path, *args: str, log: Path | None = None) -> Iterator[str]:
    """``python -m cogsample serve --host 127.0.0.1 --port P --out OUT ARGS`` until the block ends:
    yields its base URL once ``/api/config`` answers (its output goes to ``log``)."""
    port = free_port()
    log = Path(log or Path(out).parent / "serve.log")
    cmd = [sys.executable, "-m", "cogsample", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as stream:
        proc = subprocess.Popen(
            [*cmd, "--out", str(out), *args], stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            get_json(f"{url}/api/config", timeout=2)
        except urllib.error.HTTPError:
            return True  # an answer all the same (401 where a token is needed)
        except (OSError, ValueError):
            return False
        return True

    try:
        wait_for(answers, SERVER_START_S, f"the server to answer /api/config (log: {log})", every=0.2)
        yield url
    finally:
        _stop(proc)


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium (Debian's, by path) with a fresh profile, quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    with tempfile.TemporaryDirectory(prefix="cogsample-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(30)
            driver.set_script_timeout(30)
            yield driver
        finally:
            driver.quit()


# ------------------------------------------------------------------------------------------------
# the page, as a person uses it


def open_page(driver: Any, url: str) -> None:
    """Open the page and wait until it has read the server's config."""
    driver.get(url + "/")
    wait_for(lambda: driver.execute_script("return !!document.querySelector('#model strong')"), 30, "the config")


def submit(driver: Any, prompt: str, **fields: str) -> None:
    """Fill the form (``fields``: id -> text, every other option field emptied) and press Generate."""
    from selenium.webdriver.common.by import By

    for field in ("prompt", "steps", "seed", "scale", "frames"):
        element = driver.find_element(By.ID, field)
        element.clear()
        text = prompt if field == "prompt" else fields.get(field, "")
        if text:
            element.send_keys(text)
    driver.find_element(By.ID, "submit").click()


def job_state(driver: Any, prompt: str) -> dict[str, Any] | None:
    """The page's element for the job of ``prompt``: id, status, progress value and max."""
    return driver.execute_script(
        """
        for (const el of document.querySelectorAll('#jobs .job')) {
          if (el.querySelector('.job-prompt').textContent !== arguments[0]) continue;
          const bar = el.querySelector('.progress');
          return {id: el.dataset.id, status: el.dataset.status, value: bar.value, max: bar.max};
        }
        return null;
        """,
        prompt,
    )


def job_selector(job_id: str) -> str:
    return f'#jobs .job[data-id="{job_id}"]'
