"""The screenshot of ``cogsample serve``'s page in docs: a finished video and a running job.

A real server (the built-in model at its native 49 frames, 368x240, ``--steps 20``) in a temporary
out folder and Debian's headless Chromium at 1280x900, set up as the page's test does
(``tests/server/browser.py``): a first prompt is made and its video paused at 0.4 s; the same
prompt at another seed is caught while running, a third is typed but not sent.

    python benchmarks/serve_screenshot.py docs/serve.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server import browser  # noqa: E402
from tests.server.browser import job_selector, job_state, open_page, submit, wait_for  # noqa: E402

FIRST = "a red ball bouncing on a blue background"
TYPED = "a green ball moving from right to left on a white background"

# played up to t and paused there (the server answers no Range requests, so a seek would go to 0)
PLAY_TO = """
const [selector, t, done] = arguments;
const v = document.querySelector(selector + ' video');
const check = () => { if (v.currentTime >= t) { v.pause(); done(v.currentTime); } else setTimeout(check, 20); };
v.play().then(check, (e) => done(String(e)));
"""


def main(dest: str = str(ROOT / "docs" / "serve.png")) -> None:
    reason = browser.missing()
    if reason:
        raise SystemExit(f"no screenshot: {reason}")
    with tempfile.TemporaryDirectory(prefix="cogsample-serve-") as tmp:
        out = Path(tmp) / "out"
        with browser.served(out, "--model", "builtin", "--steps", "20") as url, browser.chromium(1280, 900) as driver:
            metrics = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # the page itself 1280x900
            open_page(driver, url)
            submit(driver, FIRST)
            first = wait_for(lambda: job_state(driver, FIRST), 15, "the first job")["id"]
            wait_for(lambda: job_state(driver, FIRST)["status"] == "finished", 180, "the first video")
            wait_for(
                lambda: driver.execute_script(
                    "const s = document.querySelector(arguments[0] + ' img.sheet');"
                    "const c = document.querySelector(arguments[0] + ' .command');"
                    "return s.complete && s.naturalWidth > 0 && c.textContent.length > 0;",
                    job_selector(first),
                ),
                30,
                "the sheet and the command",
            )
            driver.execute_async_script(PLAY_TO, job_selector(first), 0.4)

            submit(driver, FIRST, steps="400", seed="7")  # the same prompt at another seed

            def far_enough():
                s = driver.execute_script(
                    "const e = document.querySelector('#jobs .job[data-status=running] .progress');"
                    "return e && {value: e.value, max: e.max};"
                )
                return s and s["value"] >= 0.35 * s["max"]

            wait_for(far_enough, 180, "the second job to be well under way")
            for field in ("steps", "seed"):
                driver.find_element("id", field).clear()
            prompt = driver.find_element("id", "prompt")
            prompt.clear()
            prompt.send_keys(TYPED)
            driver.find_element("id", "fast").click()
            driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(dest)
    print(dest)


if __name__ == "__main__":
    main(*sys.argv[1:])
