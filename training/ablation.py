"""Ablation (supplementary Table 3): with vs without alternating optimisation, same data and seed.

    python -m training.ablation --preset cpu --out runs/ablation [any pipeline override ...]

Runs the pipeline twice (``<out>/alternate`` and ``<out>/no_alternate``; an existing finished run
is reused through --resume) and writes ``<out>/ablation.md`` + ``ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.pipeline import main as pipeline_main

ROWS = [("nmi", "NMI"), ("solo_iou@0.5", "solo IoU@0.5"), ("solo_auc", "solo AUC"),
        ("mosaic_ciou@0.3", "mosaic CIoU@0.3"), ("mosaic_auc", "mosaic AUC"), ("mosaic_nsa", "mosaic NSA")]


def comparison(tables: dict[str, dict]) -> str:
    lines = ["| metric | " + " | ".join(tables) + " |", "|---|" + "---:|" * len(tables)]
    for key, label in ROWS:
        cells = [f"{t['model'][key]:.3f}" if key == "nmi" else f"{t['model'][key]:.1f}" for t in tables.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "paper"])
    p.add_argument("--out", default="runs/ablation", type=Path)
    args, rest = p.parse_known_args(argv)
    tables = {}
    for name, extra in (("w/ alternation", []), ("w/o alternation", ["--no-alternate"])):
        out = args.out / ("alternate" if not extra else "no_alternate")
        if (out / "config.json").is_file():
            code = pipeline_main(["--out", str(out), "--resume", *rest])
        else:
            code = pipeline_main(["--preset", args.preset, "--out", str(out), "--no-export", *extra, *rest])
        if code != 0:
            return code
        tables[name] = json.loads((out / "eval.json").read_text())["table"]
    md = comparison(tables)
    (args.out / "ablation.md").write_text(f"# Alternating optimisation ablation (preset {args.preset})\n\n{md}\n")
    (args.out / "ablation.json").write_text(json.dumps(tables, indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
