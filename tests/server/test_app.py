"""The HTTP API through a real client on loopback: jobs made, finished ones answered at once,
cancelling, files read-only inside the out folder, the token, and bad requests each refused with a
4xx that names the problem while the server goes on serving."""

import base64
import json
import os
import socket

import pytest

from tests.server.serving import call, data_url, in_process, png_bytes, png_data_url, wait_for

PROMPT = "a red ball bouncing on a blue background"


def finished(url, jid):
    status, job = call(f"{url}/api/jobs/{jid}")
    assert status == 200, job
    assert job["status"] not in ("failed", "cancelled"), job
    return job if job["status"] == "finished" else None


def test_a_job_is_made_and_its_files_served(tmp_path):
    with in_process(tmp_path) as (url, _app):
        status, job = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT, "seed": 3})
        assert status == 202 and set(job) >= {"id", "name", "status"} and job["name"].endswith(job["id"])
        done = wait_for(lambda: finished(url, job["id"]), what="the job to finish")
        for role, path in done["files"].items():
            status, data = call(url + path)
            assert status == 200 and len(data if isinstance(data, bytes) else json.dumps(data)) > 0, role
        status, meta = call(url + done["files"]["meta"])
        assert meta["seed"] == 3 and meta["command"][:2] == ["cogsample", "generate"]
        # asked again: the same job, finished at once, with its files
        status, again = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT, "seed": 3})
        assert status == 200 and again["status"] == "finished" and again["id"] == job["id"] and again["files"]
        status, listing = call(f"{url}/api/jobs")
        assert [j["id"] for j in listing["jobs"]] == [job["id"]]
        # another prompt later: the model kept its text encoder for it
        status, other = call(f"{url}/api/jobs", "POST", {"prompt": "a yellow square rotating", "seed": 3})
        assert wait_for(lambda: finished(url, other["id"]), what="the second prompt's job")


def test_a_file_is_served_whole_or_by_byte_range(tmp_path):
    with in_process(tmp_path, start_worker=False) as (url, _app):
        (tmp_path / "v.mp4").write_bytes(bytes(range(100)))
        assert call(f"{url}/files/v.mp4")[1] == bytes(range(100))
        for header, want in [
            ("bytes=10-19", range(10, 20)),
            ("bytes=90-", range(90, 100)),
            ("bytes=-5", range(95, 100)),
        ]:
            status, data = call(f"{url}/files/v.mp4", headers={"Range": header})
            assert status == 206 and data == bytes(want), header
        status, err = call(f"{url}/files/v.mp4", headers={"Range": "bytes=200-"})
        assert status == 416 and "outside" in err["error"]


def test_an_image_upload_is_kept_by_its_hash_inside_the_out_folder(tmp_path):
    with in_process(tmp_path, start_worker=False, model="builtin-i2v") as (url, app):
        status, job = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT, "image": png_data_url()})
        assert status == 202, job
        kept = app.queue.get(job["id"]).request["image"]
        assert os.path.dirname(kept) == str((tmp_path / ".uploads").resolve())


def test_a_queued_job_is_cancelled_and_a_finished_one_is_not(tmp_path):
    with in_process(tmp_path, start_worker=False) as (url, app):
        status, job = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT})
        assert job["status"] == "queued"
        status, cancelled = call(f"{url}/api/jobs/{job['id']}", "DELETE")
        assert status == 200 and cancelled["status"] == "cancelled"
        # the worker, started now, leaves it; a resubmission queues it again
        app.worker.start()
        status, again = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT})
        assert again["id"] == job["id"]
        wait_for(lambda: finished(url, job["id"]), what="the resubmitted job")
        status, refused = call(f"{url}/api/jobs/{job['id']}", "DELETE")
        assert status == 409 and "finished" in refused["error"]


def test_a_token_guards_the_api_and_the_files_but_not_the_page(tmp_path):
    with in_process(tmp_path, start_worker=False, token="s3cret") as (url, _app):
        assert call(f"{url}/")[0] == 200
        status, err = call(f"{url}/api/jobs")
        assert status == 401 and "token" in err["error"]
        assert call(f"{url}/api/jobs", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(f"{url}/api/jobs", headers={"Authorization": "Bearer s3cret"})[0] == 200
        (tmp_path / "x.json").write_text("{}")
        assert call(f"{url}/files/x.json")[0] == 401
        assert call(f"{url}/files/x.json?token=s3cret")[0] == 200


def _raw(url, request: bytes) -> bytes:
    """Send bytes as they are (what a client library would not), the answer's status line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        return s.recv(4096).split(b"\r\n", 1)[0]


GOOD = {"prompt": PROMPT}
JSON = {"Content-Type": "application/json"}
#: (what, method, path, body, headers, status, words the error must hold)
BAD = [
    ("bad JSON", "POST", "/api/jobs", b'{"prompt": ', JSON, 400, "not JSON"),
    ("not an object", "POST", "/api/jobs", b'["a"]', JSON, 400, "JSON object"),
    ("not UTF-8", "POST", "/api/jobs", b'{"prompt": "\xff"}', JSON, 400, "UTF-8"),
    ("wrong content type", "POST", "/api/jobs", b"prompt=a", {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("unknown field", "POST", "/api/jobs", {**GOOD, "colour": "red"}, {}, 400, "unknown key(s) colour"),
    ("no prompt", "POST", "/api/jobs", {"seed": 1}, {}, 400, "prompt"),
    ("empty prompt", "POST", "/api/jobs", {"prompt": "  "}, {}, 400, "prompt is empty"),
    ("seed as text", "POST", "/api/jobs", {**GOOD, "seed": "one"}, {}, 400, "seed must be an integer"),
    ("steps as float", "POST", "/api/jobs", {**GOOD, "steps": 2.5}, {}, 400, "steps must be an integer"),
    ("fast as text", "POST", "/api/jobs", {**GOOD, "fast": "yes"}, {}, 400, "fast must be true/false"),
    ("steps 0", "POST", "/api/jobs", {**GOOD, "steps": 0}, {}, 400, "steps"),
    ("bad frames", "POST", "/api/jobs", {**GOOD, "frames": 10}, {}, 400, "frames"),
    ("huge prompt", "POST", "/api/jobs", {"prompt": "a" * 5000}, {}, 413, "at most 4000"),
    ("image as a path", "POST", "/api/jobs", {**GOOD, "image": "/etc/passwd"}, {}, 400, "image must be an uploaded"),
    ("image not base64", "POST", "/api/jobs", {**GOOD, "image": "data:image/png;base64,@@"}, {}, 400, "base64"),
    (
        "image not an image",
        "POST",
        "/api/jobs",
        {**GOOD, "image": "data:image/png;base64," + base64.b64encode(b"hello world").decode()},
        {},
        400,
        "not a PNG, JPEG or WebP",
    ),
    (
        "image truncated",
        "POST",
        "/api/jobs",
        {**GOOD, "image": data_url(png_bytes()[:60])},
        {},
        400,
        "could not be decoded",
    ),
    ("video path", "POST", "/api/jobs", {**GOOD, "video": "/tmp/a.mp4"}, {}, 400, "video is not taken over HTTP"),
    ("lora path", "POST", "/api/jobs", {**GOOD, "lora": "/tmp/x.safetensors"}, {}, 400, "LoRAs are fixed"),
    ("noise path", "POST", "/api/jobs", {**GOOD, "initial_noise": "../n.pt"}, {}, 400, "initial_noise"),
    ("config path", "POST", "/api/jobs", {**GOOD, "sampler_config": "../../x.yaml"}, {}, 400, "not a path"),
    ("process option", "POST", "/api/jobs", {**GOOD, "model": "/models/x"}, {}, 400, "cannot vary per video"),
    ("file path trick", "GET", "/files/../../etc/passwd", None, {}, 404, "no such file"),
    ("encoded path trick", "GET", "/files/%2e%2e%2fsecret.txt", None, {}, 404, "no such file"),
    ("hidden file", "GET", "/files/.queue", None, {}, 404, "no such file"),
    ("job id trick", "GET", "/api/jobs/..%2f..%2fx", None, {}, 404, "no job"),
    ("unknown route", "GET", "/api/nothing", None, {}, 404, "no such API route"),
    ("wrong method", "PUT", "/api/jobs", b"{}", JSON, 405, "not allowed"),
    ("static trick", "GET", "/static/../app.py", None, {}, 404, "no such page"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    (out.parent / "secret.txt").write_text("outside the out folder")
    with in_process(out, start_worker=False, max_body=64 * 1024) as (url, app):
        yield url, app


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_a_bad_request_gets_a_4xx_naming_the_problem_and_the_server_goes_on(server, case):
    url, app = server
    _what, method, path, body, headers, want, words = case
    status, answer = call(url + path, method, body, headers)
    assert status == want, answer
    assert isinstance(answer, dict) and words in answer["error"], answer
    assert app.queue.jobs() == []  # nothing accepted
    assert call(f"{url}/api/config")[0] == 200


def test_a_body_over_the_limit_and_one_without_length_are_refused(server):
    url, _app = server
    status, answer = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT, "image": "data:," + "A" * 70000})
    assert status == 413 and "at most 65536" in answer["error"]
    line = _raw(url, b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n")
    assert line.startswith(b"HTTP/1.1 411")
    assert call(f"{url}/api/config")[0] == 200


def test_a_file_outside_the_out_folder_is_not_served_through_a_link(server, tmp_path):
    url, app = server
    outside = tmp_path / "private.json"
    outside.write_text("{}")
    (app.queue.out.path / "link.json").symlink_to(outside)
    assert call(f"{url}/files/link.json")[0] == 404


def test_a_generate_run_on_the_same_out_folder_finishes_a_queued_job(tmp_path):
    from cogsample.cli.main import main

    with in_process(tmp_path, start_worker=False) as (url, _app):
        _status, job = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT, "seed": 5})
        assert job["status"] == "queued"
        size = ["--frames", "9", "--height", "64", "--width", "96", "--steps", "8"]
        assert main(["generate", "--prompt", PROMPT, "--seed", "5", "--out", str(tmp_path), "-q", *size]) == 0
        _status, done = call(f"{url}/api/jobs/{job['id']}")
        assert done["status"] == "finished" and done["files"]["video"].endswith(f"{job['name']}.mp4")


def test_caches_and_guidance_rules_pass_through_the_api_and_change_the_name(tmp_path):
    with in_process(tmp_path, start_worker=False, model="builtin-trained") as (url, _app):
        names = set()
        extras = (
            *({}, {"guidance": "apg"}, {"guidance": "cfg-zero-star"}, {"cache": "first-block:threshold=0.15"}),
            *({"cache": "taylorseer", "guidance": "mag"}, {"guidance": "pag"}, {"guidance": "slg:layers=1"}),
        )
        for extra in extras:
            status, job = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT, **extra})
            assert status == 202, job
            names.add(job["name"])
        assert len(names) == 7
        status, err = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT, "cache": "first-block:speed=9"})
        assert status == 400 and "speed" in err["error"]
        status, err = call(f"{url}/api/jobs", "POST", {"prompt": PROMPT, "guidance": "slg:layers=9"})
        assert status == 400 and "layers" in err["error"] and "0 to 3" in err["error"], err


def test_a_refused_request_with_an_unread_body_closes_its_connection(server):
    url, _app = server
    host, port = url.removeprefix("http://").split(":")
    body = b'{"prompt": "x"}'
    head = f"POST /api/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        answer = b""
        while chunk := s.recv(4096):  # the server closes: the read ends
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404") and b"Connection: close" in answer
    assert call(f"{url}/api/config")[0] == 200
