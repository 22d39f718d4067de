"""``cogsample serve``'s page in a real browser: Debian's Chromium, headless, driven by Selenium
against a real server process on loopback. A person's path: type a prompt, press Generate, watch
the job's progress move, and play the finished video (H.264 mp4) in the page beside its contact
sheet, metadata and the command that makes it again; an API error shown next to the form; a
queued job cancelled; a server with a token asks for it and keeps it.

Skipped only where ``/usr/bin/chromium``, ``/usr/bin/chromedriver`` or selenium is missing
(``.ci/run`` installs Debian's packages where apt-get is there).
"""

import json
import shlex

import pytest

from tests.server import browser
from tests.server.browser import job_selector, job_state, open_page, submit, wait_for

MISSING = browser.missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"the browser test needs Chromium and Selenium: {MISSING}")

#: The built-in model at its native size (49 frames, 368x240), 8 steps by default: about a second a
#: job; the long job's 60 steps run for several seconds, so its progress is seen moving.
ARGS = ("--model", "builtin", "--steps", "8")
SMALL = ("--model", "builtin", "--frames", "9", "--height", "64", "--width", "96", "--steps", "8")
LONG = "a red ball bouncing on a blue background"
SHORT = "a yellow square rotating on a black background"
LONG_STEPS = 60
FINISH_S = 120

PLAY = """
const [selector, done] = arguments;
const v = document.querySelector(selector + ' video');
const error = () => v.error && {code: v.error.code, message: v.error.message};
const state = (extra) => ({time: v.currentTime, error: error(), ready: v.readyState, width: v.videoWidth,
                           src: v.currentSrc, ...extra});
const start = performance.now();
v.muted = true;
v.play().then(() => {
  const check = () => {
    if (v.currentTime > 0 || v.error || performance.now() - start > 15000) done(state({}));
    else setTimeout(check, 50);
  };
  check();
}, (e) => done(state({rejected: String(e)})));
"""


def plays(driver, job_id):
    """The job's <video> after play(): its time, error, size (None where its element is missing)."""
    return driver.execute_async_script(PLAY, job_selector(job_id))


def sheet_loaded(driver, job_id):
    return driver.execute_script(
        "const i = document.querySelector(arguments[0] + ' img.sheet'); return i && i.complete && i.naturalWidth;",
        job_selector(job_id),
    )


def text_of(driver, selector):
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.textContent;", selector)


def watch_until_finished(driver, prompt, timeout=FINISH_S):
    """Every state the page shows for ``prompt``'s job (10 a second) until it is finished."""
    seen = []

    def finished():
        state = job_state(driver, prompt)
        seen.append(state)
        if state and state["status"] in ("failed", "cancelled"):
            raise AssertionError(f"the job ended {state['status']}: {text_of(driver, job_selector(state['id']))}")
        return state and state["status"] == "finished"

    wait_for(finished, timeout, f"{prompt!r} to be finished", every=0.1)
    return [s for s in seen if s]


def check_finished_job(driver, url, job_id):
    """Its video plays, its sheet shows, its metadata and command are the server's."""
    played = plays(driver, job_id)
    assert played["error"] is None and "rejected" not in played, played
    assert played["time"] > 0 and played["width"] > 0, played
    assert wait_for(lambda: sheet_loaded(driver, job_id), 15, "the contact sheet to load") > 0

    job = browser.get_json(f"{url}/api/jobs/{job_id}")
    meta = browser.get_json(url + job["files"]["meta"])
    wait_for(lambda: text_of(driver, job_selector(job_id) + " .command"), 15, "the command")
    command = text_of(driver, job_selector(job_id) + " .command")
    assert shlex.split(command) == meta["command"], command
    assert json.loads(text_of(driver, job_selector(job_id) + " .meta-json")) == meta


def test_a_prompt_becomes_a_video_that_plays_in_the_page(tmp_path):
    with browser.served(tmp_path / "out", *ARGS) as url, browser.chromium() as driver:
        open_page(driver, url)

        # an error of the API is shown next to the form, in the server's words
        submit(driver, LONG, steps="0")
        error = wait_for(lambda: driver.find_element("id", "error").text, 15, "#error")
        assert "steps" in error, error

        # a long job, and a second one queued behind it and cancelled
        submit(driver, LONG, steps=str(LONG_STEPS))
        long_id = wait_for(lambda: job_state(driver, LONG), 15, "the job in the list")["id"]
        assert text_of(driver, "#error") == "", "a good submit clears the error"
        submit(driver, SHORT)
        short = wait_for(lambda: job_state(driver, SHORT), 15, "the second job in the list")
        assert short["status"] == "queued", short
        driver.find_element("css selector", job_selector(short["id"]) + " .cancel").click()
        wait_for(lambda: job_state(driver, SHORT)["status"] == "cancelled", 15, "the cancel")

        # the long job's progress moves, then it is finished
        seen = watch_until_finished(driver, LONG)
        running = [s["value"] for s in seen if s["status"] == "running"]
        assert any(0 < v < LONG_STEPS for v in running), f"no progress seen between 0 and {LONG_STEPS}: {seen}"
        assert running == sorted(running), running
        assert seen[-1]["value"] == seen[-1]["max"], seen[-1]

        check_finished_job(driver, url, long_id)
        assert job_state(driver, SHORT)["status"] == "cancelled"


def test_a_server_with_a_token_asks_for_it_and_the_page_keeps_it(tmp_path):
    token = "s3cret-token"
    with browser.served(tmp_path / "out", *SMALL, "--token", token) as url, browser.chromium() as driver:
        driver.get(url + "/")
        field = driver.find_element("id", "token")
        wait_for(field.is_displayed, 15, "the token field")
        field.send_keys(token + "\t")  # a change event: kept, and the config read with it
        wait_for(lambda: driver.execute_script("return !!document.querySelector('#model strong')"), 30, "config")

        submit(driver, SHORT)
        job_id = wait_for(lambda: job_state(driver, SHORT), 15, "the job")["id"]
        watch_until_finished(driver, SHORT)
        src = driver.execute_script("return document.querySelector(arguments[0] + ' video').src", job_selector(job_id))
        assert src.endswith(f"?token={token}"), src
        played = plays(driver, job_id)
        assert played["error"] is None and played["time"] > 0, played

        driver.refresh()  # the token is still there: the list comes back without typing it again
        wait_for(lambda: job_state(driver, SHORT), 15, "the job after a reload")
        assert driver.find_element("id", "token").get_attribute("value") == token


def test_an_image_chosen_in_the_page_is_the_first_frame_of_an_image_to_video_job(tmp_path):
    from PIL import Image

    image = tmp_path / "first.png"
    Image.new("RGB", (96, 64), (220, 40, 40)).save(image)
    args = ("--model", "builtin-i2v", *SMALL[2:])
    with browser.served(tmp_path / "out", *args) as url, browser.chromium() as driver:
        open_page(driver, url)
        driver.find_element("id", "image").send_keys(str(image))
        wait_for(lambda: driver.find_element("id", "image-preview").is_displayed(), 15, "the image's preview")
        submit(driver, SHORT)
        job_id = wait_for(lambda: job_state(driver, SHORT), 15, "the job")["id"]
        watch_until_finished(driver, SHORT)
        job = browser.get_json(f"{url}/api/jobs/{job_id}")
        meta = browser.get_json(url + job["files"]["meta"])
        assert meta["image"], meta["image"]
        check_finished_job(driver, url, job_id)
