"""The command line entry points."""

import subprocess
import sys

import pytest

from cogsample.cli import main
from cogsample.samplers import SAMPLERS


def test_samplers_lists_every_sampler_with_its_sat_name(capsys):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    for spec in SAMPLERS.values():
        assert spec.name in out and all(r in out for r in spec.reference)
    assert "s_churn=0.0" in out


def test_module_entry_point_and_usage_errors():
    ok = subprocess.run([sys.executable, "-m", "cogsample", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "golden" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "cogsample", "golden"], capture_output=True, text=True)
    assert bad.returncode == 2 and "DIR" in bad.stderr


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

    from cogsample.cli import Progress
    from cogsample.pipeline import StepEvent

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


def test_generate_says_what_the_run_costs_up_front(tmp_path, capsys):
    rc = main(["generate", "--prompt", "a red ball bouncing", "--out", str(tmp_path), *SMALL])
    assert rc == 0
    summary = capsys.readouterr().err.splitlines()[0]
    # 6 steps of DynamicCFG, both branches each: 12 forwards, and a rough time on the built-in model
    assert summary.startswith("1 video(s) of 9 frames at 96x64 on builtin: ")
    assert "; 12 network forwards, roughly " in summary and summary.endswith(" on a 2-core CPU")


def test_generate_refuses_what_cannot_fit_in_memory_in_one_line(tmp_path, capsys, monkeypatch):
    from cogsample import cost

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
    from cogsample import pipeline

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
