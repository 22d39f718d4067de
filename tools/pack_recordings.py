"""Pack the reference's full golden recordings into the compact form the package ships.

    python tools/pack_recordings.py ../shared/golden ../shared/golden-amd-epyc

writes ``src/cogsample/reference/goldens/`` (see :mod:`cogsample.reference.recordings`); the folder's README.md is
kept (it is written by hand: the recordings' own README and the provenance).
"""

import argparse
import shutil
import tempfile
from pathlib import Path

from cogsample.reference.recordings import pack, shipped_root

#: recording name -> the processor family it was recorded on
MACHINES = {"intel-xeon": "Intel Xeon (AVX-512)", "amd-epyc": "AMD EPYC (Zen 4, AVX-512)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("intel", help="the Intel Xeon recording (the reference's golden/)")
    parser.add_argument("amd", help="the AMD EPYC recording (golden-amd-epyc/)")
    parser.add_argument("--out", default=str(shipped_root()), help="default: the package's recordings folder")
    args = parser.parse_args()
    out = Path(args.out)
    readme = (out / "README.md").read_text() if (out / "README.md").exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        sizes = pack(
            {"intel-xeon": (args.intel, MACHINES["intel-xeon"]), "amd-epyc": (args.amd, MACHINES["amd-epyc"])}, tmp
        )
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(tmp, out)
    if readme is not None:
        (out / "README.md").write_text(readme)
    for sub, size in sizes.items():
        print(f"{sub}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
