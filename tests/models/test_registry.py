"""The model registry (cogsample.models): names and folders to ModelInfo and loaded models."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cogsample import models
from cogsample.models.builtin import BuiltinModel, builtin_info
from cogsample.models.trained import trained_info


def test_inspect_the_built_in_models():
    assert models.inspect("builtin") == builtin_info()
    assert models.inspect("builtin-i2v") == builtin_info(i2v=True)
    assert models.inspect("builtin-trained") == trained_info()
    assert models.inspect("builtin-trained-i2v") == trained_info(i2v=True)
    assert all(models.is_builtin(n) for n in models.BUILTIN) and not models.is_builtin("/models/CogVideoX-5b")
    assert set(models.EXACT) < set(models.BUILTIN)


def test_inspect_a_missing_folder_names_it(tmp_path):
    # a typo of a built-in name or a missing folder: the built-in names, and what a path must be
    for name in (str(tmp_path / "nowhere"), "builtinx"):
        with pytest.raises(ValueError) as e:
            models.inspect(name)
        assert str(e.value) == (
            f"model {name!r} is neither a built-in model (builtin, builtin-i2v, builtin-trained, builtin-trained-i2v) "
            "nor an existing path; a path must be a diffusers-format CogVideoX folder (with model_index.json)"
        )


def test_load_the_exact_model():
    model = models.load("builtin-i2v", device=torch.device("cpu"), dtype=torch.float32)
    assert isinstance(model, BuiltinModel) and model.info == builtin_info(i2v=True)


def test_inspect_the_folders(tiny_folders):
    from cogsample.models.cogvideox import inspect_folder

    for kind, folder in tiny_folders.items():
        info = models.inspect(str(folder))
        assert info == inspect_folder(folder), kind
        # the size rules the folder's configs give
        assert (info.fixed_size is not None) == (kind == "i2v"), kind  # learned positional embeddings
        assert (info.max_height is not None) == kind.endswith("1.5"), kind  # the rotary table
        assert info.image_short_side == (768 if kind == "i2v-1.5" else None), kind
        assert info.size_multiple == 16


def test_the_registry_imports_no_model_module_until_asked():
    code = (
        "import sys, cogsample.models as m\n"
        # the protocol, image and video preparation, the LoRA and quantization checks (torch alone)
        "shared = {'cogsample.models.base', 'cogsample.models.images', 'cogsample.models.videos',\n"
        "          'cogsample.models.lora', 'cogsample.models.quantize', 'cogsample.models.hook_caches'}\n"
        "loaded = lambda: sorted(k for k in sys.modules if k.startswith('cogsample.models.') and k not in shared)\n"
        "assert loaded() == [], loaded()\n"
        "m.inspect('builtin')\n"
        "assert loaded() == ['cogsample.models.builtin'], loaded()\n"
        "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
