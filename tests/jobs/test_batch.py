import errno
import json
import signal
import threading
import time

import pytest
import torch

from cogsample.jobs import batch
from cogsample.jobs.batch import Interrupted, batch_items, batch_options, read_prompts_file, run_batch
from cogsample.jobs.outdir import OutDir, WriteError
from cogsample.pipeline.options import GenerateOptions
from cogsample.pipeline.pipeline import Pipeline

SMALL = {"frames": 9, "height": 64, "width": 64, "steps": 4}


def _base(tmp_path, **kw) -> GenerateOptions:
    return GenerateOptions(prompts=(), out=str(tmp_path / "out"), **{**SMALL, **kw})


def test_plain_text_file_one_prompt_a_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# comment\na red ball\n\n  a blue square  \n")
    want = [(f"{f} line 2", {"prompt": "a red ball"}), (f"{f} line 4", {"prompt": "a blue square"})]
    assert read_prompts_file(f) == want


def test_jsonl_lines_carry_per_video_options(tmp_path):
    (tmp_path / "imgs").mkdir()
    f = tmp_path / "batch.jsonl"
    lines = [
        {"prompt": "a red ball", "seed": 7, "negative-prompt": "blurry", "cfg_interval": [0.4, 1]},
        {"prompt": "a blue square", "image": "imgs/first.png", "steps": 12, "scale": 3, "fast": True},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (a_where, a), (_, b) = read_prompts_file(f)
    assert a_where == f"{f} line 1" and a["negative_prompt"] == "blurry" and a["cfg_interval"] == (0.4, 1.0)
    assert b["image"] == str(tmp_path / "imgs" / "first.png")  # relative to the file's folder


def test_every_per_video_option_has_a_json_type(tmp_path):
    from cogsample.jobs.batch import _TYPES, PER_VIDEO

    assert set(PER_VIDEO) == set(_TYPES)
    f = tmp_path / "long.jsonl"
    line = {"prompt": "a ball", "frames": "4x", "context": "auto", "context_frames": 3, "context_overlap": 1}
    f.write_text(json.dumps({**line, "noise_repeat": True}) + "\n")
    ((_, entry),) = read_prompts_file(f)
    assert entry == {**line, "noise_repeat": True}


def test_jsonl_bad_lines_are_all_reported_with_their_numbers(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text(
        '{"prompt": "ok"}\n'
        '{"prompt": 3}\n'
        "not json\n"
        '{"prompt": "x", "model": "elsewhere"}\n'
        '{"prompt": "x", "stpes": 4}\n'
        '{"seed": 1}\n'
        '{"prompt": "x", "seed": true}\n'
    )
    with pytest.raises(ValueError) as e:
        read_prompts_file(f)
    msg = str(e.value).splitlines()
    assert [m.split(":")[0] for m in msg] == [f"{f} line {n}" for n in (2, 3, 4, 5, 6, 7)]
    assert "prompt must be a string, got 3" in msg[0] and "not a JSON object" in msg[1]
    assert "model cannot vary per video" in msg[2] and "unknown key(s) stpes" in msg[3]
    assert 'no "prompt"' in msg[4] and "seed must be an integer, got true" in msg[5]


def test_options_that_fail_planning_name_their_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr("cogsample.pipeline.pipeline.load_model", lambda *a, **k: pytest.fail("loaded"))
    f = tmp_path / "b.jsonl"
    f.write_text('{"prompt": "a"}\n{"prompt": "b", "frames": 50}\n{"prompt": "c", "sampler": "nope"}\n')
    with pytest.raises(ValueError) as e:
        batch_items(_base(tmp_path), read_prompts_file(f))
    lines = str(e.value).splitlines()
    assert lines[0].startswith(f"{f} line 2: frames") and "50" in lines[0]
    assert lines[1].startswith(f"{f} line 3: ") and "nope" in lines[1]


def test_seeds_and_noise_rows_follow_the_list(tmp_path):
    noise = tmp_path / "noise.pt"
    torch.save(torch.randn(3, 3, 16, 8, 8), noise)
    entries = [("", {"prompt": "a"}), ("", {"prompt": "b", "seed": 100}), ("", {"prompt": "c"})]
    jobs = batch_options(_base(tmp_path, seed=5, initial_noise=str(noise)), entries)
    assert [o.seed for _, o in jobs] == [5, 100, 7]
    assert [o.initial_noise_row for _, o in jobs] == [0, 1, 2]
    items = batch_items(_base(tmp_path, seed=5, initial_noise=str(noise)), entries)
    # each video names its noise row: three distinct videos even with equal prompts and seeds
    assert len({i.stem for i in items}) == 3
    too_few = [*entries, ("", {"prompt": "d"})]
    with pytest.raises(ValueError) as e:
        batch_items(_base(tmp_path, initial_noise=str(noise)), too_few)
    # one line: the file, its shape, and the shape the four videos need
    assert str(e.value) == (
        f"initial_noise {str(noise)!r} has shape (3, 3, 16, 8, 8); this request samples latents (1 or 4, 3, 16, 8, 8), "
        "i.e. (1 or one row per video, T, 16, H/8, W/8)"
    )


def test_one_row_noise_starts_every_video_of_the_list(tmp_path):
    noise = tmp_path / "one.pt"
    torch.save(torch.randn(1, 3, 16, 4, 4), noise)
    entries = [("", {"prompt": p}) for p in ("a", "b", "c")]
    items = batch_items(_base(tmp_path, height=32, width=32, initial_noise=str(noise)), entries)
    assert [i.plan.noise_row(0) for i in items] == [0, 0, 0]


def test_jsonl_lines_get_the_command_lines_new_checks(tmp_path, monkeypatch):
    from cogsample.pipeline import cost

    monkeypatch.setattr(cost, "free_bytes", lambda _d: 16 * 10**9)
    monkeypatch.setattr(cost, "_meminfo", lambda _k: 0)
    f = tmp_path / "b.jsonl"
    lines = [
        {"prompt": "a", "scale": -3},
        {"prompt": "b", "context_overlap": 2},
        {"prompt": "c", "frames": 100001, "height": 240, "width": 368},
        {"prompt": "d", "sampler": "vpsde_dpmpp_2m"},
        {"prompt": "e", "scale": 0},
    ]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(ValueError) as e:
        batch_items(_base(tmp_path), read_prompts_file(f))
    msg = str(e.value).splitlines()
    assert msg[0] == f"{f} line 1: --scale must be a finite number >= 0 (the guidance scale), got -3"
    assert msg[1].startswith(f"{f} line 2: --context-overlap 2 has no effect")
    assert msg[2].startswith(f"{f} line 3: frames=100001, height=240, width=368: this video needs at least")
    assert len(msg) == 3  # the sat profile runs every sampler; a zero scale is a scale
    with pytest.raises(ValueError, match=r"line 4: --sampler 'vpsde_dpmpp_2m' is not in the diffusers profile"):
        batch_items(_base(tmp_path, profile="diffusers"), read_prompts_file(f))


def test_fast_per_line_keeps_its_steps(tmp_path):
    jobs = batch_options(_base(tmp_path, steps=None), [("", {"prompt": "a", "fast": True, "steps": 12})])
    assert jobs[0][1].steps == 12 and jobs[0][1].cfg_index == "level" and jobs[0][1].grid == "logsnr"


def _items(tmp_path, prompts=("a red ball", "a blue square", "a green triangle"), **kw):
    return batch_items(_base(tmp_path, **kw), [("", {"prompt": p}) for p in prompts])


def _pipe():
    return Pipeline.load("builtin")


def test_run_batch_makes_each_video_once_in_order_and_skips_finished_ones(tmp_path):
    items = _items(tmp_path)
    heard = []
    first = run_batch(items, tmp_path / "out", pipeline=_pipe, on_result=heard.append)
    assert [r.files["video"].name for r in first] == [f"{i.stem}.mp4" for i in items]
    assert heard == first and not any(r.skipped for r in first)
    meta = json.loads(first[0].files["meta"].read_text())
    assert (meta["engine"], meta["rank"], meta["world_size"]) == ("local", 0, 1)

    def no_load():
        raise AssertionError("nothing is left to make: no model is loaded")

    again = run_batch([*items, items[0]], tmp_path / "out", pipeline=no_load)  # a duplicate is one video
    assert [r.skipped for r in again] == [True] * 3 and [r.files for r in again] == [r.files for r in first]


def test_a_video_another_process_holds_is_made_last_after_waiting(tmp_path):
    items = _items(tmp_path)
    d = OutDir(tmp_path / "out")
    d.check_writable()
    other = d.try_claim(items[0].stem)  # as another live process would hold it
    order = []

    def let_go():
        while len(order) < 2:
            time.sleep(0.01)
        d.release(other)

    t = threading.Thread(target=let_go)
    t.start()
    run_batch(items, d, pipeline=_pipe, on_result=lambda r: order.append(r.files["video"].name))
    t.join()
    assert order == [f"{items[k].stem}.mp4" for k in (1, 2, 0)]


def test_interrupted_mid_batch_leaves_finished_videos_and_nothing_else(tmp_path):
    items = _items(tmp_path)
    calls = []

    def progress(ev):
        calls.append(ev)
        if getattr(ev, "video", 0) == 1 and getattr(ev, "step", -1) == 2:
            raise Interrupted(signal.SIGTERM)

    with pytest.raises(Interrupted) as e:
        run_batch(items, tmp_path / "out", pipeline=_pipe, progress=progress)
    assert e.value.exit_code == 143
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{items[0].stem}{s}" for s in (".mp4", ".latents.safetensors", ".json", ".png"))
    assert batch.count_finished(items, tmp_path / "out") == (1, 3)


def test_disk_full_names_the_file_and_leaves_nothing_of_that_video(tmp_path, monkeypatch):
    from cogsample.jobs import outputs

    def full(dest, *_a, **_k):
        with outputs.atomic_path(dest) as tmp:
            tmp.write_bytes(b"x" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "write_mp4", full)
    items = _items(tmp_path, prompts=("a red ball",))
    with pytest.raises(WriteError) as e:
        run_batch(items, tmp_path / "out", pipeline=_pipe)
    assert str(e.value) == f"cannot write {tmp_path / 'out' / items[0].stem}.mp4: No space left on device"
    assert list((tmp_path / "out").iterdir()) == []


def test_signals_raise_turns_sigterm_into_interrupted():
    with pytest.raises(Interrupted) as e, batch.signals_raise():
        signal.raise_signal(signal.SIGTERM)
        time.sleep(1)
    assert e.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_type_and_value_errors_of_every_line_are_reported_in_one_pass(tmp_path, monkeypatch):
    # issue 21: a type error on line 1 hid line 2's value error
    monkeypatch.setattr("cogsample.pipeline.pipeline.load_model", lambda *a, **k: pytest.fail("loaded"))
    f = tmp_path / "b.jsonl"
    f.write_text('{"prompt":"a","steps":"ten"}\n{"prompt":"x","frames":50}\n{"prompt":"ok"}\n{"prompt": 3}\n')
    with pytest.raises(ValueError) as e:
        batch_items(_base(tmp_path), read_prompts_file(f, keep_bad=True))
    lines = str(e.value).splitlines()
    assert [m.split(": ")[0] for m in lines] == [f"{f} line {n}" for n in (1, 2, 4)]
    assert 'steps must be an integer, got "ten"' in lines[0] and "frames" in lines[1] and "50" in lines[1]
    assert "prompt must be a string" in lines[2]
    # a bad line keeps its place: the next line's seed is still --seed + its index
    jobs = batch_options(_base(tmp_path, seed=5), read_prompts_file(f, keep_bad=True))
    assert isinstance(jobs[0][1], ValueError) and [o.seed for _, o in jobs[1:3]] == [6, 7]


def test_repeats_finds_the_same_video_asked_for_twice(tmp_path):
    entries = [("", {"prompt": p, "seed": 1}) for p in ("a red ball", "a blue square", "a red ball", "a red ball")]
    assert batch.repeats(batch_items(_base(tmp_path), entries)) == [[0, 2, 3]]
    assert batch.repeats(_items(tmp_path)) == []
