import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cogsample.jobs import batch
from cogsample.jobs.batch import run_plan
from cogsample.jobs.naming import video_stem
from cogsample.pipeline import options, pipeline
from cogsample.pipeline.options import GenerateOptions
from cogsample.pipeline.planning import plan
from cogsample.sampling.config import SamplingConfig, sample
from cogsample.sampling.guidance import Conditioning
from cogsample.sampling.noise import GlobalNoise

SMALL = {"frames": 9, "height": 64, "width": 96, "steps": 8}


def _opts(tmp_path, **kw) -> GenerateOptions:
    base = {"prompts": ("a red ball bouncing on a blue background",), "out": str(tmp_path / "out"), **SMALL}
    base.update(kw)
    return GenerateOptions(**base)


@pytest.fixture
def no_loading(monkeypatch):
    """Planning must never load a model."""

    def boom(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pipeline, "load_model", boom)


def test_generate_writes_the_four_files(tmp_path):
    (res,) = batch.generate(_opts(tmp_path))
    out = tmp_path / "out"
    stem = video_stem(plan(_opts(tmp_path)), 0)
    assert stem.startswith("a-red-ball-bouncing-on-a-blue-background-s42-") and res.files["video"].name == f"{stem}.mp4"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{s}" for s in (".mp4", ".latents.safetensors", ".json", ".png")
    )
    lat = load_file(str(out / f"{stem}.latents.safetensors"))
    assert lat["latents"].shape == (1, 3, 16, 8, 12)
    assert torch.equal(lat["latents"], res.latents)
    meta = json.loads((out / f"{stem}.json").read_text())
    assert meta["prompt"] == res.prompt and meta["seed"] == 42 and meta["profile"] == "sat"
    assert meta["uncond"] == "zero" and meta["negative_prompt"] is None
    assert SamplingConfig.from_dict(meta["sampling"]) == plan(_opts(tmp_path)).sampling
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"]["torch"]
    assert set(meta["timings_s"]) >= {"encode_s", "sample_s", "decode_s"}
    assert res.video.shape == (9, 3, 64, 96)
    png = np.asarray(Image.open(out / f"{stem}.png"))
    assert png.shape[2] == 3 and png.shape[1] > 96


def test_sat_profile_is_the_core_sample_call(tmp_path):
    """The pipeline adds nothing to sampling: the same latents as ``sample()`` with torch's global
    stream seeded as the reference seeds it, and the zero uncond embedding."""
    from cogsample.models.builtin import BuiltinModel

    p = plan(_opts(tmp_path))
    model = BuiltinModel()
    (res,) = run_plan(p, model=model)
    torch.manual_seed(42)
    noise = GlobalNoise()
    x = noise.initial(p.shape)
    ctx = model.encode_prompts([p.options.prompts[0]])
    want = sample(model.network, x, Conditioning(ctx), p.sampling, noise=noise)
    assert torch.equal(res.latents, want)


def test_names_come_from_what_defines_the_video(tmp_path):
    """The same request finds its finished video (skipped, the file untouched); any option that
    changes the video gives another name, so nothing is overwritten."""
    (a,) = batch.generate(_opts(tmp_path))
    before = a.files["video"].stat().st_mtime_ns
    (again,) = batch.generate(_opts(tmp_path))
    assert again.skipped and again.files == a.files and again.latents is None
    assert a.files["video"].stat().st_mtime_ns == before
    (other,) = batch.generate(_opts(tmp_path, scale=3.0))
    assert not other.skipped and other.files["video"] != a.files["video"]
    assert not torch.equal(other.latents, a.latents)
    (redo,) = batch.generate(_opts(tmp_path), overwrite=True)
    assert not redo.skipped and redo.files == a.files and torch.equal(redo.latents, a.latents)
    # device and out folder do not define a video; model size, dtype and seed do
    base = video_stem(plan(_opts(tmp_path)), 0)
    assert video_stem(plan(_opts(tmp_path, out=str(tmp_path / "elsewhere"), device="cpu")), 0) == base
    for change in ({"seed": 43}, {"frames": 13}, {"steps": 9}, {"fps": 9}):
        assert video_stem(plan(_opts(tmp_path, **change)), 0) != base, change
    assert len(list((tmp_path / "out").iterdir())) == 8  # two videos, four files each, no lock or temporary


def test_json_command_reproduces_the_video(tmp_path):
    from cogsample.cli.main import build_parser

    a, b = batch.generate(_opts(tmp_path, prompts=("a yellow square rotating", "a green triangle"), seed=3))
    # video k of a batch is the single video with seed + k: the same name, found finished
    (a2,) = batch.generate(_opts(tmp_path, prompts=("a green triangle",), seed=4))
    assert a2.skipped and a2.files == b.files
    meta = json.loads(a.files["meta"].read_text())
    assert meta["seed"] == 3
    args = build_parser().parse_args([*meta["command"][1:], "--out", str(tmp_path / "again"), "--quiet"])
    assert args.func(args) == 0
    again = load_file(str(next((tmp_path / "again").glob("*.safetensors"))))
    assert torch.equal(again["latents"], a.latents)
    (alone,) = batch.generate(_opts(tmp_path / "alone", prompts=("a green triangle",), seed=4))
    assert torch.equal(alone.latents, b.latents)


def test_failure_while_saving_leaves_nothing(tmp_path, monkeypatch):
    from cogsample.jobs import outputs

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(outputs, "write_contact_sheet", broken)
    with pytest.raises(OSError, match="disk full"):
        batch.generate(_opts(tmp_path))
    assert list((tmp_path / "out").iterdir()) == []


def test_i2v_builtin_starts_from_the_image(tmp_path):
    from cogsample.models.builtin import CLIPS

    clip = CLIPS[1]
    first = clip.render(1, 64, 96)[0]  # (3, H, W) in [0, 1]
    img = tmp_path / "first.png"
    Image.fromarray((first.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(img)
    (res,) = batch.generate(_opts(tmp_path, model="builtin-i2v", image=str(img), prompts=(clip.caption,), steps=20))
    err = (res.video[0] - first).abs().mean()
    assert err < 0.05


def test_diffusers_profile_runs_on_builtin(tmp_path):
    (res,) = batch.generate(_opts(tmp_path, profile="diffusers"))
    meta = json.loads(res.files["meta"].read_text())
    assert meta["uncond"] == "negative-prompt" and meta["negative_prompt"] == ""
    assert meta["sampling"]["sampler"].startswith("diffusers")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"prompts": ()}, "no prompt"),
        ({"prompts": ("  ",)}, "prompt 1 is empty"),
        ({"frames": 10}, "frames must be of the form 4k\\+1.*got 10; nearest: 9 or 13"),
        ({"height": 70}, "height must be a multiple of 16.*got 70"),
        ({"width": 0}, "width must be an integer >= 16"),
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"sampler": "nope"}, "nope"),
        ({"sampler": "sdedit_euler"}, "sdedit_euler"),
        ({"sampler": "euler"}, "sigma space.*alpha=0"),
        ({"guidance": "strong"}, "guidance must be one of none, cfg, dynamic; got 'strong'"),
        ({"profile": "comfy"}, "profile must be one of sat, diffusers; got 'comfy'"),
        ({"uncond": "zero", "negative_prompt": "blurry"}, "--negative-prompt with --uncond zero"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"device": "tpu:x"}, "device 'tpu:x'"),
        ({"seed": -1}, "seed must be an integer"),
        ({"image": "x.png"}, "--image given, but model 'builtin' is text-to-video"),
        ({"model": "builtin-i2v"}, "image-to-video: give --image"),
        ({"model": "builtin-i2v", "image": "missing.png"}, "image 'missing.png' does not exist"),
        ({"sampler_config": "missing.yaml"}, "missing.yaml"),
        ({"sampler_config": "x.yaml", "profile": "diffusers"}, "goes with --profile sat"),
        ({"scale": float("nan")}, "scale must be a finite number"),
        ({"grid": "karras"}, "grid must be one of reference, logsnr, power, uniform; got 'karras'"),
        ({"grid": "logsnr", "profile": "diffusers"}, "goes with --profile sat"),
        ({"cfg_index": "timestep"}, "cfg_index must be one of reference, loop"),
        ({"cfg_interval": (0.5, 0.2)}, "start must be < end"),
        ({"cache": -1.0}, "threshold must be a finite number > 0, got -1.0"),
        ({"cache": 0.1, "cache_kind": "first-block"}, "first-block runs in a transformer's blocks; model 'builtin'"),
        ({"cache": "taylorseer:interval=0"}, r"--cache taylorseer: interval must be an integer >= 1, got '0'"),
        ({"cache": "teacache"}, "--cache kind must be one of output, first-block, faster, pab, mag, taylorseer, sea"),
        ({"cache": 0.1, "cache_kind": "blocks"}, "cache_kind must be one of output, first-block"),
        ({"offload": "disk"}, "offload must be one of none, model, sequential"),
        ({"offload": "model"}, "built-in model has none"),
        ({"frames": "x4"}, "frames must be an integer of the form 4k\\+1 or a multiple of the native length"),
        ({"frames": "0x"}, "frames must be an integer of the form 4k\\+1 or .*got '0x'"),
        ({"context": "on"}, "context must be one of auto, off; got 'on'"),
        ({"context_frames": 0, "frames": 25}, "context_frames must be an integer >= 1"),
        ({"context_frames": 3, "context_overlap": 3, "frames": 25}, r"context_overlap must be .*\[0, 2\].*got 3"),
        ({"context": "off", "context_frames": 3}, "context_frames shape context windows, and context is 'off'"),
        ({"noise_repeat": True}, "noise_repeat repeats the first context window's noise.*exact at any length"),
        ({"noise_repeat": True, "context_frames": 3}, "noise_repeat .*this latent of 3 frames is sampled whole"),
        ({"frames": 25, "context_frames": 3, "cache": 0.1, "cache_kind": "first-block"}, "first-block"),
        ({"scale": -3.0}, r"^--scale must be a finite number >= 0 \(the guidance scale\), got -3.0$"),
        ({"scale": -1, "guidance": "none"}, r"^--scale must be a finite number >= 0 .*got -1$"),
        ({"scale": -0.5, "profile": "diffusers"}, r"^--scale must be a finite number >= 0 .*got -0.5$"),
        (
            {"profile": "diffusers", "sampler": "vpsde_dpmpp_2m"},
            r"^--sampler 'vpsde_dpmpp_2m' is not in the diffusers profile.*one of diffusers_ddim, diffusers_dpm",
        ),
        ({"context_overlap": 1}, r"^--context-overlap 1 has no effect: this latent of 3 frames is sampled whole"),
        ({"context_overlap": 1, "frames": 61}, r"--context-overlap 1 .* 16 frames .*exact at any length"),
        ({"context_overlap": 1, "frames": 25, "context_frames": 7}, r"--context-overlap 1 .*fits one window of 7"),
    ],
)
def test_bad_requests_fail_before_any_work(tmp_path, no_loading, change, match):
    with pytest.raises(ValueError, match=match):
        plan(_opts(tmp_path, **change))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unreadable_image_and_unwritable_out(tmp_path, no_loading):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot be read as an image"):
        plan(_opts(tmp_path, model="builtin-i2v", image=str(bad)))
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    with pytest.raises(ValueError, match=r"out directory .* is not writable"):
        batch.generate(_opts(tmp_path, out=str(blocker)))
    with pytest.raises(ValueError, match="out directory"):
        batch.generate(_opts(tmp_path, out=str(blocker / "sub")))
    assert blocker.read_text() == "mine"


def test_sat_yaml_with_overrides(tmp_path):
    from pathlib import Path

    yaml = Path(__file__).resolve().parents[1] / "data" / "sat-configs" / "cogvideox_5b.yaml"
    p = plan(_opts(tmp_path, sampler_config=str(yaml), steps=12))
    assert p.sampling.steps == 12 and p.sampling.sampler == "vpsde_dpmpp_2m"
    assert p.sampling.guidance.num_steps == 12  # the explicit step count is the ramp's length too
    p2 = plan(_opts(tmp_path, sampler_config=str(yaml), sampler="video_ddim", guidance="cfg", scale=3.0))
    assert p2.sampling.sampler == "video_ddim" and dataclasses.asdict(p2.sampling.guidance) == {"scale": 3.0}


SAT_5B = Path(__file__).resolve().parents[1] / "data" / "sat-configs" / "cogvideox_5b.yaml"


@pytest.mark.parametrize("sampler_config", [None, "cogvideox-5b", "cogvideox_5b.yaml", str(SAT_5B)])
def test_steps_set_dynamic_cfg_num_steps_with_and_without_a_yaml(tmp_path, no_loading, sampler_config):
    from cogsample.sampling.guidance import DynamicCFG

    opts = GenerateOptions(prompts=("a red ball",), sampler_config=sampler_config, steps=25, out=str(tmp_path))
    s = plan(opts).sampling
    assert s.steps == 25 and s.guidance == DynamicCFG(6.0, 5.0, 25)
    # --scale on top of a yaml rebuilds the guidance by the same rule
    s = plan(dataclasses.replace(opts, scale=4.5)).sampling
    assert s.steps == 25 and s.guidance == DynamicCFG(4.5, 5.0, 25)
    # the default step count (50) is explicit too
    s = plan(dataclasses.replace(opts, steps=50)).sampling
    assert s.steps == 50 and s.guidance == DynamicCFG(6.0, 5.0, 50)


def test_steps_rule_for_a_yaml_whose_steps_differ(tmp_path, no_loading):
    """A yaml with 25 sampler steps and a 50-step ramp: taken as written without --steps; a given
    step count is the ramp's length."""
    import yaml

    from cogsample.reference.satconfig import load_sat_yaml
    from cogsample.sampling.guidance import DynamicCFG

    data = yaml.safe_load(SAT_5B.read_text())
    data["model"]["sampler_config"]["params"]["num_steps"] = 25
    path = tmp_path / "steps25.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_sat_yaml(path).guidance == DynamicCFG(6, 5, 50)  # as written, without a step count
    s = plan(_opts(tmp_path, sampler_config=str(path), steps=25)).sampling
    assert s.steps == 25 and s.guidance == DynamicCFG(6, 5, 25)
    s = plan(_opts(tmp_path, sampler_config=str(path), steps=None)).sampling
    assert s.steps == 25 and s.guidance == DynamicCFG(6, 5, 50)
    s = plan(_opts(tmp_path, sampler_config=str(path), steps=None, scale=4.5)).sampling  # a new scale only
    assert s.steps == 25 and s.guidance == DynamicCFG(4.5, 5, 50)
    # without a yaml and without a step count: 50 and a 50-step ramp
    s = plan(_opts(tmp_path, steps=None)).sampling
    assert s.steps == 50 and s.guidance == DynamicCFG(6, 5, 50)


def test_the_cli_takes_a_yaml_as_written_without_steps_and_says_the_rule(tmp_path, capsys):
    import yaml

    from cogsample.cli.main import build_parser, main

    data = yaml.safe_load(SAT_5B.read_text())
    data["model"]["sampler_config"]["params"]["num_steps"] = 3
    path = tmp_path / "steps3.yaml"
    path.write_text(yaml.safe_dump(data))
    args = ["generate", "--prompt", "a red ball", "--frames", "9", "--height", "32", "--width", "48"]
    assert main([*args, "--sampler-config", str(path), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    (meta,) = (tmp_path / "a").glob("*.json")
    m = json.loads(meta.read_text())
    assert m["sampling"]["steps"] == 3 and m["sampling"]["guidance"]["num_steps"] == 50
    assert "--steps" not in m["command"]  # the command reproduces it from the yaml again
    assert main([*args, "--sampler-config", str(path), "--steps", "4", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    (meta,) = (tmp_path / "b").glob("*.json")
    m = json.loads(meta.read_text())
    assert m["sampling"]["steps"] == 4 and m["sampling"]["guidance"]["num_steps"] == 4
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["generate"].format_help().split())
    assert "also set DynamicCFG's num_steps" in help_text and "with or without --sampler-config" in help_text


def test_speedup_options_compose_into_the_sampling_config(tmp_path, no_loading):
    from cogsample.sampling.cache import CacheConfig
    from cogsample.sampling.guidance import DynamicCFG, GuidanceInterval
    from cogsample.sampling.schedules import SpacedDDPM, ZeroSNRDDPM

    p = plan(_opts(tmp_path, grid="logsnr", cfg_index="loop", cfg_interval=(0.4, 1.0), skip_unit_cfg=True, cache=0.2))
    s = p.sampling
    assert s.schedule == SpacedDDPM(ZeroSNRDDPM(1.0), "logsnr") and s.skip_unit_cfg
    assert s.guidance == GuidanceInterval(DynamicCFG(6.0, 5.0, 8, "loop"), 0.4, 1.0)
    assert s.cache == CacheConfig.output(0.2)
    # sigma-space samplers start one step below the zero-SNR level
    assert plan(_opts(tmp_path, grid="power", sampler="euler")).sampling.schedule.t_max == 998
    # defaults change nothing
    assert plan(_opts(tmp_path)).sampling == options.resolve_sampling(_opts(tmp_path), p.info)


def test_fast_preset_and_its_command_round_trip(tmp_path):
    from cogsample.cli.main import build_parser

    opts = options.fast_options(_opts(tmp_path))
    assert opts.steps == options.FAST["steps"] and opts.grid == "logsnr"
    assert options.fast_options(_opts(tmp_path), steps_given=True).steps == SMALL["steps"]
    (res,) = batch.generate(opts)
    meta = json.loads(res.files["meta"].read_text())
    assert "--grid" in meta["command"] and meta["command"][meta["command"].index("--cfg-index") + 1] == "level"
    args = build_parser().parse_args([*meta["command"][1:], "--out", str(tmp_path / "again"), "--quiet"])
    assert args.func(args) == 0
    again = load_file(str(next((tmp_path / "again").glob("*.safetensors"))))
    assert torch.equal(again["latents"], res.latents)
    assert SamplingConfig.from_dict(meta["sampling"]) == plan(opts).sampling


def test_guidance_by_level_is_the_reference_at_its_own_steps_and_one_definition_at_any(tmp_path):
    """``--cfg-index level`` at the reference's 50 steps samples the very latents of the default
    (the same scales); at another step count it carries those scales, not a new DynamicCFG ramp."""
    from cogsample.sampling.guidance import LevelGuidance, guidance_scales

    base = _opts(tmp_path, steps=50, frames=5, height=32, width=48)
    (ref,) = batch.generate(base)
    (lvl,) = batch.generate(dataclasses.replace(base, cfg_index="level", out=str(tmp_path / "lvl")))
    assert torch.equal(ref.latents, lvl.latents) and ref.files["video"].name != lvl.files["video"].name
    s = plan(_opts(tmp_path, cfg_index="level", grid="logsnr", steps=10)).sampling
    assert isinstance(s.guidance, LevelGuidance) and s.guidance.guidance.num_steps == options.REFERENCE_STEPS
    scales = guidance_scales(s.guidance, s.grid().timesteps, 10)
    assert min(s.guidance.anchor_scales()) <= min(scales) and max(scales) <= max(s.guidance.anchor_scales())
    with pytest.raises(ValueError, match="cfg_index 'level' carries the SAT reference's DynamicCFG scales"):
        plan(_opts(tmp_path, cfg_index="level", profile="diffusers"))


def test_frames_as_a_multiple_of_the_native_length(tmp_path, no_loading):
    for frames, want in (("1x", 49), ("4x", 205), ("4X", 205), (None, 49), (25, 25)):
        assert plan(_opts(tmp_path, frames=frames, height=32, width=48)).frames == want


def test_the_exact_model_samples_whole_unless_windows_are_asked_for(tmp_path, no_loading):
    assert plan(_opts(tmp_path, frames="4x", height=32, width=48)).windows is None
    p = plan(_opts(tmp_path, frames=25, context_frames=3))
    assert p.windows.to_dict() == {"frames": 3, "overlap": 1} and p.forwards_per_call == 3
    assert p.sampling.context == p.windows
    # windows, their overlap and the repeated noise define the video: each gets its own name
    stems = {video_stem(p, 0)}
    for change in ({"context_overlap": 2}, {"noise_repeat": True}, {"context_frames": 4}):
        stems.add(video_stem(plan(_opts(tmp_path, **{"frames": 25, "context_frames": 3, **change})), 0))
    stems.add(video_stem(plan(_opts(tmp_path, frames=25)), 0))
    assert len(stems) == 5


def test_windows_and_repeated_noise_run_end_to_end_and_reproduce(tmp_path):
    from cogsample.pipeline.events import StepEvent
    from cogsample.pipeline.pipeline import Pipeline

    pipe = Pipeline.load("builtin")
    events = []
    kw = {"frames": 25, "height": 32, "width": 48, "steps": 4, "context_frames": 3, "context_overlap": 1}
    p = pipe.plan("a ball", **kw, noise_repeat=True)
    a = pipe.run(p, progress=events.append)
    b = pipe("a ball", **kw, noise_repeat=True)
    plain = pipe("a ball", **kw)
    assert torch.equal(a.latents, b.latents) and not torch.equal(a.latents, plain.latents)
    steps = [e for e in events if isinstance(e, StepEvent)]
    # 7 latent frames in windows [0,3) [2,5) [4,7): 3 windows, both CFG branches each step
    assert [e.forwards for e in steps] == [6, 12, 18, 24] and {e.windows for e in steps} == {3}
    assert a.forwards == 24 and a.video.shape[0] == 25
    (res,) = batch.generate(_opts(tmp_path, prompts=("a ball",), **kw, noise_repeat=True))
    meta = json.loads(res.files["meta"].read_text())
    assert meta["context_windows"] == {"frames": 3, "overlap": 1, "spans": [[0, 3], [2, 5], [4, 7]]}
    assert meta["noise_repeat"] is True and meta["forwards"] == 24
    assert meta["command"][-5:] == ["--context-frames", "3", "--context-overlap", "1", "--noise-repeat"]
    assert torch.equal(res.latents, a.latents)


def test_what_cannot_fit_in_memory_is_refused_before_any_work(tmp_path, no_loading, monkeypatch):
    from cogsample.pipeline import cost

    with pytest.raises(ValueError) as e:
        plan(_opts(tmp_path, frames=49, height=100000, width=100000))
    msg = str(e.value)
    assert msg.startswith("frames=49, height=100000, width=100000: this video needs at least 21.9 TB of memory (")
    assert "17.6 TB for the decoded video, 49 x 100000 x 100000 x 3 in float32 then uint8" in msg
    assert " is available (MemAvailable" in msg and "\n" not in msg
    # the estimate is machine-independent; what is available is read from the machine
    monkeypatch.setattr(cost, "free_bytes", lambda _d: 16 * 10**9)
    monkeypatch.setattr(cost, "_meminfo", lambda _k: 0)  # no swap
    with pytest.raises(ValueError, match=r"^frames=100001, height=240, width=368: .* 391 GB .* but 16 GB is available"):
        plan(_opts(tmp_path, frames=100001, height=None, width=None))
    # windows name their size too, and the built-in model's clips are rendered for the whole latent
    with pytest.raises(ValueError, match=r"^frames=100001, height=240, width=368, context_frames=13: "):
        plan(_opts(tmp_path, frames=100001, height=None, width=None, context_frames=13))
    # what runs is let through: the defaults, the README's 480x720, 4x the native length in windows
    for size in ({"frames": None, "height": None, "width": None}, {"height": 480, "width": 720}, {"frames": "4x"}):
        plan(_opts(tmp_path, **size))
    # a plan for another process (a Ray driver's) skips the check
    assert plan(_opts(tmp_path, frames=100001, height=None, width=None), memory=False).frames == 100001
    assert not (tmp_path / "out").exists()


def test_memory_need_on_a_gpu_counts_the_decoded_video_on_the_host(tmp_path, no_loading, monkeypatch):
    from cogsample.pipeline import cost

    p = dataclasses.replace(plan(_opts(tmp_path, frames=49, height=480, width=720)), device=torch.device("cuda", 0))
    need = cost.memory_need(p)
    assert need.host_bytes == 3 * 12 * 49 * 480 * 720  # float32 video + two float32 intermediates
    assert need.host_parts[0][0].startswith("the decoded video, 49 x 480 x 720 x 3")
    assert need.device_bytes >= 16 * 13 * 16 * 60 * 90 * 8  # the clip latents (float64) stay on the device
    monkeypatch.setattr(cost, "free_bytes", lambda d: 10**12 if d.type == "cuda" else 10**8)
    with pytest.raises(ValueError, match=r"needs at least 610 MB of host memory \(610 MB for the decoded video"):
        cost.check_memory(p)
    monkeypatch.setattr(cost, "free_bytes", lambda d: 10**8 if d.type == "cuda" else 10**12)
    with pytest.raises(ValueError, match=r"of memory on cuda:0 .*but 100 MB is free"):
        cost.check_memory(p)
    monkeypatch.setattr(cost, "free_bytes", lambda d: None)  # unknown: not refused
    cost.check_memory(p)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"guidance": "none"},
        {"sampler": "heun", "grid": "logsnr", "cfg_index": "loop"},
        {"cfg_interval": (0.4, 1.0), "skip_unit_cfg": True, "cfg_index": "loop", "steps": 6},
        {"frames": 25, "context_frames": 3},
        {"profile": "diffusers", "scale": 0.5},
        {"profile": "diffusers"},
    ],
    ids=["dynamic", "none", "heun", "interval-skip", "windows", "diffusers-unguided", "diffusers"],
)
def test_forwards_are_known_before_the_run(tmp_path, change):
    from cogsample.pipeline import cost
    from cogsample.pipeline.pipeline import Pipeline

    p = plan(_opts(tmp_path, **{"height": 32, "width": 48, "steps": 5, **change}))
    n, exact = cost.forwards(p)
    pipe = Pipeline.load("builtin", profile=p.options.profile)
    ran = pipe.run(p, decode=False).forwards
    assert ran == n if exact else ran <= n
    assert exact == (p.sampling.spec.calls_per_step == 1)
    assert cost.describe([p, p]).startswith(f"{'' if exact else 'at most '}{2 * n} network forwards in all, roughly")


def test_to_uint8_rounds_and_clamps():
    v = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = pipeline.to_uint8(v)
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
