"""Recordings of the reference: where their files are, their compact form, and which one this machine reproduces.

A recording is a directory as the reference's golden vectors were written: ``index.json`` (the
cases, the standalone files, the math mode), ``NAME.json`` per case or standalone file, and the
safetensors file each one names.

The recordings shipped in the package (:func:`shipped`) keep the same layout in a compact form,
made by :func:`pack` from the full recordings:

* tensors equal in every recording are stored once, in a ``shared`` directory beside them (inputs,
  random draws, most schedules); a recording's own file holds only what differs;
* the per-step sequences (``x_steps``, ``denoised_calls``: two thirds of the bytes) are kept as a
  :class:`Digest` per step (sha256 of the step's bytes, float64 sum and max ``|x|``), which checks
  every step exactly and still says at which step a replay first differs; the output is whole.

:func:`load_tensors` reads both forms alike. Each recording holds the bits of one processor family
(see :mod:`cogsample.reference.mathmode`); :func:`choose` picks the one whose probe this process reproduces.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from . import mathmode

Tensor = torch.Tensor

__all__ = [
    "DIGESTED",
    "Comparison",
    "Digest",
    "Recording",
    "choose",
    "compare",
    "load_meta",
    "load_tensors",
    "pack",
    "probe",
    "save_tensors",
    "shipped",
    "shipped_root",
]

#: The per-step sequences a compact recording keeps as digests.
DIGESTED = ("x_steps", "denoised_calls")

_FORMAT = 1
_DIGEST_PARTS = ("sha256", "sum", "absmax")


def _sha256_rows(t: Tensor) -> Tensor:
    """``(S, 32)`` uint8: sha256 of each leading-axis slice's bytes (little-endian, as stored)."""
    rows = t.detach().contiguous().cpu().reshape(t.shape[0], -1)
    # numpy has no bfloat16: hash the raw bytes through an integer view of the same width
    raw = rows.view(torch.uint8).numpy()
    return torch.tensor([list(hashlib.sha256(r.tobytes()).digest()) for r in raw], dtype=torch.uint8)


@dataclass(frozen=True)
class Comparison:
    """One compared tensor: ``exact`` (every bit equal); ``error``: max ``|got - recorded|`` (for a
    :class:`Digest`, a lower bound of it); ``within``: within the replay tolerance
    (:data:`~cogsample.reference.mathmode.REPLAY_RTOL`), element-wise, or for a digest, step by step on its
    sum and max ``|x|`` (necessary for element-wise, the output alone is checked element-wise)."""

    exact: bool
    error: float
    scale: float
    within: bool
    note: str = ""


@dataclass(frozen=True)
class Digest:
    """A recorded ``(S, ...)`` sequence kept per step: sha256 of each step's bytes, float64 sum and
    max ``|x|``, with the whole sequence's shape and dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    sha256: Tensor  # (S, 32) uint8
    sum: Tensor  # (S,) float64
    absmax: Tensor  # (S,) float64

    @classmethod
    def of(cls, t: Tensor) -> Digest:
        flat = t.detach().to(torch.float64).reshape(t.shape[0], -1)
        absmax = flat.abs().nan_to_num(0.0).amax(dim=1) if flat.shape[1] else torch.zeros(t.shape[0])
        return cls(tuple(t.shape), t.dtype, _sha256_rows(t), flat.sum(dim=1), absmax.to(torch.float64))

    def tensors(self, key: str) -> dict[str, Tensor]:
        return {f"{key}@sha256": self.sha256, f"{key}@sum": self.sum, f"{key}@absmax": self.absmax}

    def describe(self) -> str:
        return json.dumps({"shape": list(self.shape), "dtype": str(self.dtype).removeprefix("torch.")})

    @classmethod
    def read(cls, key: str, tensors: Mapping[str, Tensor], described: str) -> Digest:
        info = json.loads(described)
        parts = [tensors[f"{key}@{p}"] for p in _DIGEST_PARTS]
        return cls(tuple(info["shape"]), getattr(torch, info["dtype"]), *parts)

    def compare(self, got: Tensor, rtol: float = mathmode.REPLAY_RTOL) -> Comparison:
        """``got`` against the recorded sequence, step by step (shape and dtype must match)."""
        if tuple(got.shape) != self.shape or got.dtype != self.dtype:
            raise AssertionError(
                f"shape {tuple(got.shape)} {got.dtype} != recorded {self.shape} {self.dtype}".replace("torch.", "")
            )
        scale = float(self.absmax.max()) if self.absmax.numel() else 0.0
        mine = Digest.of(got)
        equal = (mine.sha256 == self.sha256).all(dim=1)
        if bool(equal.all()):
            return Comparison(True, 0.0, scale, True)
        n = max(1, got[0].numel())
        d_sum, d_max = (mine.sum - self.sum).abs(), (mine.absmax - self.absmax).abs()
        bound = float(torch.maximum(d_sum / n, d_max).nan_to_num(float("inf")).max())
        limit = rtol * torch.clamp(self.absmax, min=1.0)
        within = bool(((d_sum <= limit * n) & (d_max <= limit)).all())
        first = int((~equal).nonzero()[0])
        differing = int((~equal).sum())
        note = f"steps differ from step {first} on ({differing} of {len(equal)})"
        return Comparison(False, bound, scale, within, note)


def compare(got: Tensor, recorded: Tensor | Digest, what: str, rtol: float = mathmode.REPLAY_RTOL) -> Comparison:
    """``got`` against a recorded tensor (element-wise; NaN equals NaN) or :class:`Digest`."""
    if isinstance(recorded, Digest):
        try:
            return recorded.compare(got, rtol)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
    if tuple(got.shape) != tuple(recorded.shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)} != recorded {tuple(recorded.shape)}")
    if got.numel() == 0:
        return Comparison(True, 0.0, 0.0, True)
    a, b = got.detach().to(torch.float64), recorded.to(torch.float64)
    scale = float(b.abs().nan_to_num(0.0).max())
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    if bool(same.all()):
        return Comparison(True, 0.0, scale, True)
    diff = torch.where(same, torch.zeros_like(a), (a - b).abs()).nan_to_num(float("inf"))
    error = float(diff.max())
    return Comparison(False, error, scale, mathmode.within_tolerance(error, scale, rtol))


# -- reading either form -------------------------------------------------------------------------


def _index(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "index.json").read_text())


def _common_dir(directory: Path) -> Path | None:
    try:
        compact = _index(directory).get("compact")
    except (OSError, ValueError):
        return None
    return (directory / compact["common"]).resolve() if isinstance(compact, Mapping) else None


def load_meta(directory: str | Path, name: str) -> dict[str, Any]:
    """``NAME.json`` of a recording: its own, or the shared one of a compact recording."""
    directory = Path(directory)
    own = directory / f"{name}.json"
    common = _common_dir(directory)
    if not own.exists() and common is not None:
        own = common / f"{name}.json"
    return json.loads(own.read_text())


def load_tensors(directory: str | Path, name: str) -> dict[str, Tensor | Digest]:
    """The tensors of ``NAME`` as recorded: the file its JSON names, merged over the shared file
    of a compact recording; a digested sequence comes back as one :class:`Digest` under its key."""
    from safetensors import safe_open

    directory = Path(directory)
    file = load_meta(directory, name).get("tensor_file", f"{name}.safetensors")
    common = _common_dir(directory)
    paths = [p for p in ((common / file) if common else None, directory / file) if p is not None and p.exists()]
    if not paths:
        raise FileNotFoundError(f"no tensor file {file} in {directory}")
    tensors: dict[str, Tensor] = {}
    described: dict[str, str] = {}
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            described.update(f.metadata() or {})
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    out: dict[str, Tensor | Digest] = {k: v for k, v in tensors.items() if "@" not in k}
    for key in {k.split("@", 1)[0] for k in tensors if "@" in k}:
        out[key] = Digest.read(key, tensors, described[key])
    return out


def probe(directory: str | Path) -> mathmode.ProbeResult | None:
    """The probe a recording's ``index.json`` names, recomputed in this process; None for a
    recording that states no math mode."""
    wanted, name = mathmode.recorded_mode(directory)
    if name is None:
        return None
    tensors = {k: v for k, v in load_tensors(directory, name).items() if isinstance(v, Tensor)}
    return mathmode.check_probe(tensors, wanted or load_meta(directory, name).get("mkl_cbwr"))


def save_tensors(path: str | Path, tensors: Mapping[str, Tensor | Digest]) -> None:
    """Write tensors as :func:`load_tensors` reads them back (a :class:`Digest` as its parts)."""
    from safetensors.torch import save_file

    flat: dict[str, Tensor] = {}
    described: dict[str, str] = {}
    for key, value in tensors.items():
        if isinstance(value, Digest):
            flat.update(value.tensors(key))
            described[key] = value.describe()
        else:
            flat[key] = value.contiguous()
    save_file(flat, str(path), metadata=described or None)


# -- the shipped recordings ----------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """One recording of the reference: its directory, a short name and where it was made."""

    name: str
    directory: Path
    machine: str

    @property
    def mode(self) -> str | None:
        """The MKL_CBWR mode it was recorded in."""
        return mathmode.recorded_mode(self.directory)[0]

    def probe(self) -> mathmode.ProbeResult | None:
        """Its probe recomputed in this process (None for a recording that ships none)."""
        return probe(self.directory)

    def cases(self) -> list[str]:
        return list(_index(self.directory)["cases"])


def shipped_root() -> Path:
    """The package's folder of recordings."""
    return Path(str(resources.files("cogsample.reference") / "goldens"))


def shipped() -> list[Recording]:
    """The recordings shipped in the package, in ``index.json``'s order."""
    root = shipped_root()
    listed = json.loads((root / "index.json").read_text())["recordings"]
    return [Recording(r["name"], root / r["dir"], r["machine"]) for r in listed]


def choose(
    recordings: Sequence[Recording],
) -> tuple[Recording, dict[str, mathmode.ProbeResult | None]]:
    """The recording whose probe this process reproduces (the first such), else the one whose probe
    differs in the fewest ops; with every probe's result by recording name."""
    probes = {r.name: r.probe() for r in recordings}

    def distance(r: Recording) -> int:
        p = probes[r.name]
        return 0 if p is None or p.exact else len(p.differing)

    return min(recordings, key=distance), probes


# -- packing -------------------------------------------------------------------------------------


def _equal(a: Tensor, b: Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compact(t: Mapping[str, Tensor]) -> dict[str, Tensor | Digest]:
    return {k: Digest.of(v) if k in DIGESTED else v for k, v in t.items()}


def _same(a: Tensor | Digest, b: Tensor | Digest) -> bool:
    if isinstance(a, Digest) or isinstance(b, Digest):
        if not (isinstance(a, Digest) and isinstance(b, Digest)) or a.describe() != b.describe():
            return False
        return all(_equal(getattr(a, p), getattr(b, p)) for p in _DIGEST_PARTS)
    return _equal(a, b)


def _check_packed(original: Path, packed: Path, name: str) -> None:
    """Every tensor of the packed ``name`` reads back as the original (a digest: matches it)."""
    from safetensors.torch import load_file

    meta = load_meta(packed, name)
    if meta != json.loads((original / f"{name}.json").read_text()):
        raise AssertionError(f"{packed.name}/{name}.json does not read back as the original")
    full = load_file(str(original / meta.get("tensor_file", f"{name}.safetensors")))
    back = load_tensors(packed, name)
    if set(full) != set(back):
        raise AssertionError(f"{packed.name}/{name}: keys {sorted(set(full) ^ set(back))} do not read back")
    for key, value in full.items():
        same_dtype = not isinstance(back[key], Tensor) or back[key].dtype == value.dtype
        if not (same_dtype and compare(value, back[key], f"{name}/{key}").exact):
            raise AssertionError(f"{packed.name}/{name}/{key} does not read back as the original")


def pack(sources: Mapping[str, tuple[str | Path, str]], out: str | Path) -> dict[str, int]:
    """Write the compact form of full recordings to ``out``: ``sources`` maps a recording's name to
    ``(its directory, the machine it was recorded on)``. Every recording must hold the same cases and
    JSON. Returns the bytes written per directory."""
    from safetensors.torch import load_file

    out = Path(out)
    dirs = {name: Path(d) for name, (d, _) in sources.items()}
    first = next(iter(dirs.values()))
    index = _index(first)
    names = list(index["cases"]) + list(index.get("standalone", []))
    shutil.rmtree(out, ignore_errors=True)
    for sub in ("common", *dirs):
        (out / sub).mkdir(parents=True)
    for name in names:
        metas = {r: json.loads((d / f"{name}.json").read_text()) for r, d in dirs.items()}
        meta = metas[next(iter(metas))]
        if any(m != meta for m in metas.values()):
            raise ValueError(f"{name}.json differs between the recordings: they are not of the same cases")
        (out / "common" / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        file = meta.get("tensor_file", f"{name}.safetensors")
        compact = {r: _compact(load_file(str(d / file))) for r, d in dirs.items()}
        first_t = next(iter(compact.values()))
        common = [k for k in first_t if all(k in t and _same(t[k], first_t[k]) for t in compact.values())]
        save_tensors(out / "common" / file, {k: first_t[k] for k in common})
        for r, t in compact.items():
            own = {k: v for k, v in t.items() if k not in common}
            if own:
                save_tensors(out / r / file, own)
    for r, d in dirs.items():
        provenance = {
            "source": str(d.name),
            "machine": sources[r][1],
            "files_sha256": {p.name: _sha256_file(p) for p in sorted(d.iterdir()) if p.suffix != ".md"},
        }
        own_index = dict(index, compact={"format": _FORMAT, "common": "../common", "digests": list(DIGESTED)})
        own_index["provenance"] = provenance
        (out / r / "index.json").write_text(json.dumps(own_index, indent=1) + "\n")
    listing = [{"name": r, "dir": r, "machine": sources[r][1]} for r in dirs]
    (out / "index.json").write_text(json.dumps({"recordings": listing}, indent=1) + "\n")
    for r, d in dirs.items():
        for name in names:
            _check_packed(d, out / r, name)
    return {sub: sum(p.stat().st_size for p in (out / sub).iterdir()) for sub in ("common", *dirs)}
