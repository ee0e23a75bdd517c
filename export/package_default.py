"""Package an exported bundle as the default model shipped inside ``avsl_edge`` (torch-free).

    python export/package_default.py --bundle runs/release/bundle --variants int8,int8-cpu \\
        --card docs/model_card.md                      # -> avsl_edge/models/default

An export writes every variant (fp32 alone is ~90 MB); the package keeps a few, so that ``pip install``
stays small: the chosen variants' graph files, the fp32 head graph they all use, the dictionary,
the model card (``MODEL_CARD.md``) and a manifest listing only those variants (their reports, with
their scores against the export's fp32, stay). Engines are left out: they only load on the GPU they
were built on. Paths of the exporting machine (the evaluation data) are cut to their last two
parts. The new folder replaces the old one only once it is complete and loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python export/package_default.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import copy
import shutil
from collections.abc import Sequence

from avsl_edge.bundle import VARIANTS, BundleError, load_bundle, write_manifest
from avsl_edge.errors import UserError
from avsl_edge.fileio import atomic_dir
from avsl_edge.registry import PACKAGED_BUNDLE

CARD_NAME = "MODEL_CARD.md"


def run_relative(path: str) -> str:
    """A path of the exporting machine as the package records it: its last two parts (a run's
    ``data/test``), so no machine's folder names ship."""
    return Path(*Path(path).parts[-2:]).as_posix() if Path(path).is_absolute() else path


def package_bundle(src: str | Path, out: str | Path, variants: Sequence[str], card: str | Path | None = None) -> Path:
    """Copy ``variants`` of the bundle ``src`` (and ``card`` as MODEL_CARD.md) into ``out``."""
    bundle = load_bundle(src)
    if not variants:
        raise BundleError("name at least one variant to package")
    missing = [v for v in variants if v not in bundle.manifest.variants]
    if missing:
        raise BundleError(f"{bundle.root}: has no variant {missing} (it has {sorted(bundle.manifest.variants)})")
    if card is not None and not Path(card).is_file():
        raise UserError(f"--card {card}: no such file")
    manifest = copy.deepcopy(bundle.manifest)
    left_out = [v for v in manifest.variants if v not in variants]
    manifest.variants = {v: manifest.variants[v] for v in manifest.variants if v in variants}
    manifest.engines = []
    manifest.export = {**manifest.export, "packaged": {"variants": list(manifest.variants), "left_out": left_out}}
    for entry in [(var.report or {}).get("eval") for var in manifest.variants.values()] + [manifest.metrics]:
        if isinstance(entry, dict) and isinstance(entry.get("data"), str):
            entry["data"] = run_relative(entry["data"])
    manifest.files = {}
    with atomic_dir(out) as tmp:
        for rel in manifest.referenced_files():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle.root / rel, tmp / rel)
        if card is not None:
            shutil.copyfile(card, tmp / CARD_NAME)
        write_manifest(tmp, manifest)
        load_bundle(tmp)  # the copy verifies before it replaces anything
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python export/package_default.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="an exported bundle folder")
    p.add_argument("--variants", default="int8,int8-cpu",
                   help=f"comma-separated, of {', '.join(VARIANTS)} (default int8,int8-cpu)")
    p.add_argument("--card", type=Path, help="the model card to ship beside it (Markdown)")
    p.add_argument("--out", type=Path, default=PACKAGED_BUNDLE, help="default: the package's avsl_edge/models/default")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        out = package_bundle(args.bundle, args.out, variants, args.card)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {', '.join(variants)} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
