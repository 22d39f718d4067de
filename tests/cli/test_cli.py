"""The command line entry points."""

import subprocess
import sys

import pytest

from cogsample.cli.main import main
from cogsample.sampling.samplers import SAMPLERS


def test_samplers_lists_every_sampler_with_its_sat_name(capsys):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    for spec in SAMPLERS.values():
        assert spec.name in out and all(r in out for r in spec.reference)
    assert "s_churn=0.0" in out


def test_module_entry_point_and_usage_errors():
    ok = subprocess.run([sys.executable, "-m", "cogsample", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "golden" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "cogsample", "golden", "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


SMALL = ["--frames", "9", "--height", "64", "--width", "96", "--steps", "6"]


def test_generate_plain_log_lines_when_not_a_terminal(tmp_path, capsys):
    rc = main(["generate", "--prompt", "a red ball bouncing", "--out", str(tmp_path), *SMALL])
    assert rc == 0
    cap = capsys.readouterr()
    assert cap.out.strip().endswith(".mp4") and len(cap.out.strip().splitlines()) == 1
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("video 1/1 step")]
    assert lines[-1].startswith("video 1/1 step 6/6 t=") and "step/s" in lines[-1] and "eta" in lines[-1]
    assert "vpsde_dpmpp_2m, 6 steps, DynamicCFG, profile sat, uncond zero" in cap.err


def test_generate_quiet_prints_only_paths(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# a comment\na red ball bouncing\n\na yellow square rotating\n")
    rc = main(["generate", "--prompts-file", str(prompts), "--out", str(tmp_path / "o"), "--quiet", *SMALL])
    cap = capsys.readouterr()
    assert rc == 0 and cap.err == ""
    paths = cap.out.split()
    names = [p.rsplit("/", 1)[1] for p in paths]
    assert [n.rsplit("-", 1)[0] for n in names] == ["a-red-ball-bouncing-s42", "a-yellow-square-rotating-s43"]


def test_generate_progress_bar_on_a_terminal(capsys):
    import io

    from cogsample.cli.main import Progress
    from cogsample.pipeline.events import StepEvent

    stream = io.StringIO()
    bar = Progress(stream, bar=True)
    for i in range(4):
        bar(StepEvent(0, 1, i, 4, 999 - 250 * i, 1.0, 0.1 * (i + 1)))
    text = stream.getvalue()
    assert "4/4" in text and "t=249" in text


def test_generate_errors_exit_2_with_the_reason(tmp_path, capsys):
    rc = main(["generate", "--prompt", "x", "--frames", "10", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cogsample generate: error: frames must be of the form 4k+1" in err and "nearest: 9 or 13" in err
    rc = main(["generate", "--prompt", "x", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert rc == 2 and "nowhere" in capsys.readouterr().err


def test_generate_says_when_it_reproduces_a_broken_diffusers_grid(tmp_path):
    args = ["generate", "--prompt", "a red ball", "--profile", "diffusers", "--out", str(tmp_path), *SMALL[:-1], "7"]
    run = subprocess.run([sys.executable, "-m", "cogsample", *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "cogsample generate: warning (DiffusersGridWarning)" in run.stderr
    assert "7 steps" in run.stderr and "does not end clean" in run.stderr


def test_version(capsys):
    import cogsample

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"cogsample {cogsample.__version__} (torch ")


SMALL4 = ["--frames", "9", "--height", "64", "--width", "96", "--steps", "4"]


def test_the_same_video_twice_is_made_once_said_and_printed_for_each_line(tmp_path, capsys):
    f = tmp_path / "dup.jsonl"
    f.write_text('{"prompt":"a red ball","seed":1}\n{"prompt":"a red ball","seed":1}\n{"prompt":"a blue square"}\n')
    assert main(["generate", "--prompts-file", str(f), "--out", str(tmp_path / "o"), *SMALL4]) == 0
    cap = capsys.readouterr()
    paths = cap.out.split()
    assert len(paths) == 3 and paths[0] == paths[1] != paths[2]  # a path for each line asked
    assert len(list((tmp_path / "o").glob("*.mp4"))) == 2
    stem = paths[0].rsplit("/", 1)[1].removesuffix(".mp4")
    assert f"warning: {f} lines 1 and 2 define the same video ({stem}): made once" in cap.err
    assert cap.err.splitlines()[1].startswith("2 video(s) (3 asked for) of 9 frames")
    # under --quiet: still a path a line; the warning stays on stderr
    assert main(["generate", "-q", "--prompts-file", str(f), "--out", str(tmp_path / "o"), *SMALL4]) == 0
    cap = capsys.readouterr()
    assert cap.out.split() == paths and cap.err.count("define the same video") == 1
    one = tmp_path / "one.jsonl"
    one.write_text('{"prompt":"a red ball","seed":1}\n')
    assert main(["generate", "-q", "--prompt", "a red ball", "--seed", "1", "--prompts-file", str(one),
                 "--out", str(tmp_path / "o"), *SMALL4]) == 0  # fmt: skip
    cap = capsys.readouterr()
    assert cap.out.split() == paths[:2] and f"--prompt 1 and {one} line 1 define the same video ({stem})" in cap.err


def test_every_bad_jsonl_line_is_reported_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("cogsample.pipeline.pipeline.load_model", lambda *a, **k: pytest.fail("loaded"))
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt":"a","steps":"ten"}\n{"prompt":"x","frames":50}\n')
    assert main(["generate", "--prompts-file", str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f'cogsample generate: error: {f} line 1: steps must be an integer, got "ten"'
    assert err[1].startswith(f"{f} line 2: frames") and "50" in err[1] and len(err) == 2


def test_a_batch_says_each_video_done_with_an_eta_and_ends_with_a_summary(tmp_path, capsys):
    args = ["generate", "--prompt", "a red ball", "--prompt", "a blue square", "--out", str(tmp_path), *SMALL4]
    assert main(args) == 0
    cap = capsys.readouterr()
    assert len(cap.out.split()) == 2 and all(p.endswith(".mp4") for p in cap.out.split())  # stdout: paths only
    err = cap.err.splitlines()
    first = next(ln for ln in err if ln.startswith("video 1 of 2 done ("))
    assert "; ETA " in first
    assert any(ln.startswith("video 2 of 2 done (") and "ETA" not in ln for ln in err)
    assert err[-1].startswith("done in ") and err[-1].endswith(": 2 made, 0 finished before, 0 failed (of 2 videos)")
    assert main(args) == 0  # again: both finished before
    assert capsys.readouterr().err.splitlines()[-1].endswith("0 made, 2 finished before, 0 failed (of 2 videos)")


def test_batch_progress_eta_is_the_mean_time_per_video_made_times_those_left():
    from types import SimpleNamespace

    from cogsample.pipeline.progress import BatchProgress

    now = [100.0]
    said = []
    b = BatchProgress(4, said.append, clock=lambda: now[0])
    b.result(SimpleNamespace(skipped=True, timings={}))
    now[0] = 112.0  # loading took 2 s, the first video 10 s
    b.result(SimpleNamespace(skipped=False, timings={"load_s": 2.0}))
    now[0] = 132.0  # the second 20 s: 15 s a video, one left
    b.result(SimpleNamespace(skipped=False, timings={"load_s": 2.0}))
    assert said == ["video 2 of 4 done (10 s); ETA 20 s", "video 3 of 4 done (20 s); ETA 15 s"]
    assert b.summary(failed=1) == "stopped in 32 s: 2 made, 1 finished before, 1 failed (of 4 videos)"


def test_quiet_has_a_short_form_on_every_subcommand():
    from cogsample.cli.main import build_parser

    parser = build_parser()
    for cmd in (["generate", "--prompt", "x"], ["bench"], ["train-tiny", "--out", "x"]):
        assert parser.parse_args([*cmd, "-q"]).quiet


def test_the_header_shows_each_lines_own_frames_and_steps(tmp_path, capsys):
    f = tmp_path / "per.jsonl"
    f.write_text('{"prompt":"a red ball","frames":13,"steps":3}\n{"prompt":"a blue square","steps":5}\n')
    assert main(["generate", "--prompts-file", str(f), "--out", str(tmp_path / "o"), *SMALL4]) == 0
    header = capsys.readouterr().err.splitlines()[0]
    assert header.startswith("2 video(s) of 9-13 frames at 96x64 on builtin: vpsde_dpmpp_2m, 3-5 steps,"), header


def test_a_missing_optional_dependency_is_one_line_naming_its_extra_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("cogsample.pipeline.pipeline.load_model", lambda *a, **k: pytest.fail("loaded"))
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if it were not installed
    args = ["generate", "--model", "builtin-trained", "--prompt", "a red ball", "--out", str(tmp_path)]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "cogsample generate: error: model 'builtin-trained' needs diffusers, which is not installed: "
        "pip install 'cogsample[cogvideox]'\n"
    )
    assert main(["train-tiny", "--out", str(tmp_path / "t")]) == 2
    assert "needs diffusers, which is not installed: pip install 'cogsample[cogvideox]'" in capsys.readouterr().err
    import cogsample

    with pytest.raises(ValueError, match=r"needs diffusers, which is not installed"):
        cogsample.Pipeline.load("builtin-trained")
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    from cogsample.models import check_installed

    with pytest.raises(ValueError) as e:
        check_installed(str(tmp_path))  # a CogVideoX folder (its tokenizer without tokenizer.json)
    assert str(e.value).endswith(
        "needs diffusers, transformers and sentencepiece, which are not installed: pip install 'cogsample[cogvideox]'"
    )


def test_a_missing_module_no_check_caught_is_still_one_line(tmp_path, capsys, monkeypatch):
    def load(*_a, **_k):
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr("cogsample.pipeline.pipeline.load_model", load)
    assert main(["generate", "--prompt", "a red ball", "--out", str(tmp_path), *SMALL4]) == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        err[-1]
        == "cogsample generate: error: needs transformers, which is not installed: pip install 'cogsample[cogvideox]'"
    )


def test_the_readme_set_up_installs_what_its_builtin_examples_need():
    import re
    from pathlib import Path

    import tomllib

    from cogsample.models import requirements

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    assert "python3 -m pip install torch==2.13.0 -e . && cogsample generate --prompt" in readme  # the main job
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    core = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in deps}
    models = set(re.findall(r"cogsample generate [^\n]*--model (builtin[\w-]*)", readme))
    assert models >= {"builtin-trained", "builtin-trained-i2v"}
    for model in models:
        for profile in ("sat", "diffusers"):
            assert set(requirements(model, profile)) <= core, (model, profile)


def test_the_folders_the_readme_examples_write_are_ignored_by_git(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    r = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "outputs/a.mp4", "runs/a.mp4", "bench/bench.json", "batch.jsonl"],
        capture_output=True,
        text=True,
    )
    assert r.stdout.split() == ["outputs/a.mp4", "runs/a.mp4", "bench/bench.json", "batch.jsonl"], r.stderr


def test_generate_says_what_the_run_costs_up_front(tmp_path, capsys):
    rc = main(["generate", "--prompt", "a red ball bouncing", "--out", str(tmp_path), *SMALL])
    assert rc == 0
    summary = capsys.readouterr().err.splitlines()[0]
    # 6 steps of DynamicCFG, both branches each: 12 forwards, and a rough time on the built-in model
    assert summary.startswith("1 video(s) of 9 frames at 96x64 on builtin: ")
    assert "; 12 network forwards, roughly " in summary and summary.endswith(" on a 2-core CPU")


def test_generate_refuses_what_cannot_fit_in_memory_in_one_line(tmp_path, capsys, monkeypatch):
    from cogsample.pipeline import cost

    out = tmp_path / "o"
    rc = main(["generate", "--width", "100000", "--height", "100000", "--prompt", "x", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("cogsample generate: error: frames=49, height=100000, width=100000: this video needs ")
    monkeypatch.setattr(cost, "free_bytes", lambda _d: 16 * 10**9)  # any machine: 16 GB free
    monkeypatch.setattr(cost, "_meminfo", lambda _k: 0)
    assert main(["generate", "--frames", "100001", "--prompt", "x", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "frames=100001, height=240, width=368: " in err and "16 GB" in err
    assert not out.exists()


def _noise_files(tmp_path):
    import torch

    wrong = tmp_path / "wrong.pt"
    torch.save(torch.zeros(1, 5, 16, 8, 12), wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a tensor file at all" * 10)
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    return wrong, garbage, blocker


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (["--context-overlap", "5"], "--context-overlap 5 has no effect: this latent of 3 frames is sampled whole"),
        (
            ["--profile", "diffusers", "--sampler", "vpsde_dpmpp_2m"],
            "--sampler 'vpsde_dpmpp_2m' is not in the diffusers profile, which reproduces diffusers' schedulers "
            "only: use one of diffusers_ddim, diffusers_dpm",
        ),
        (["--scale", "-3"], "--scale must be a finite number >= 0 (the guidance scale), got -3.0"),
        (["--fast", "--profile", "diffusers"], "--fast is the sat profile's measured setup"),
        (
            ["--initial-noise", "{wrong}", "--prompt", "y"],
            "initial_noise '{wrong}' has shape (1, 5, 16, 8, 12); this request samples latents "
            "(1 or 2, 3, 16, 8, 12), i.e. (1 or one row per video, T, 16, H/8, W/8)",
        ),
        (
            ["--initial-noise", "{garbage}"],
            "initial_noise '{garbage}' is not a tensor file cogsample can read (a .safetensors file, or a tensor "
            "saved with torch.save)",
        ),
        (["--out", "{blocker}"], "out directory '{blocker}' is not writable: it is a file, not a folder"),
        (
            ["--model", "builtinx"],
            "model 'builtinx' is neither a built-in model (builtin, builtin-i2v, builtin-trained, "
            "builtin-trained-i2v) nor an existing path; a path must be a diffusers-format CogVideoX folder",
        ),
    ],
    ids=["overlap", "diffusers-sampler", "scale", "fast-diffusers", "noise-shape", "noise-garbage", "out", "model"],
)
def test_generate_usage_errors_are_one_clear_line(tmp_path, capsys, monkeypatch, args, want):
    from cogsample.pipeline import pipeline

    monkeypatch.setattr(pipeline, "load_model", lambda *_a, **_k: pytest.fail("loaded"))
    wrong, garbage, blocker = _noise_files(tmp_path)
    names = {"wrong": wrong, "garbage": garbage, "blocker": blocker}
    args = [a.format(**names) for a in args]
    out = ["--out", str(tmp_path / "o")] if "--out" not in args else []
    assert main(["generate", "--prompt", "x", *out, *SMALL, *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("cogsample generate: error: ")
    assert want.format(**names) in err and "weights_only" not in err
    assert not (tmp_path / "o").exists() and blocker.read_text() == "mine"
