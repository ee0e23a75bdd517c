"""Build TensorRT engines from a bundle variant (on the machine that will run them).

    python export/to_tensorrt.py --bundle runs/cpu/bundle --variant int8 --batch-max 8

Needs TensorRT 10 or 11 (``pip install tensorrt``; JetPack 6 ships 10.x) and an NVIDIA GPU; torch
is not needed, so a Jetson builds its own engines from a bundle exported elsewhere. Every graph of
the variant is parsed into a strongly typed network (its precision comes from the ONNX file:
fp16 casts or int8 Q/DQ), built with one optimization profile over the batch dimension and a
timing cache shared by all builds on this GPU + TensorRT, and written to ``<bundle>/engines/``
with a manifest record (precision, batch range, GPU name, compute capability, TensorRT version).
Engines only run where they were built; the runtime refuses any other GPU or TensorRT version.
The recipe is documented in avsl_edge/tensorrt_engine.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python export/to_tensorrt.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse

from avsl_edge.bundle import GRAPHS, TENSORRT_VARIANTS
from avsl_edge.errors import UserError
from avsl_edge.tensorrt_engine import (BuildOptions, build_bundle_engines,
                                       gpu_info, import_tensorrt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python export/to_tensorrt.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, type=Path, help="a bundle folder (python export/to_onnx.py)")
    p.add_argument("--variant", choices=TENSORRT_VARIANTS, default="fp32",
                   help="which ONNX variant to build (default fp32; int8 is the symmetric QDQ form TensorRT takes, "
                        "int8-cpu is for ONNX Runtime's CPU EP only)")
    p.add_argument("--graphs", default=",".join(GRAPHS), help=f"comma-separated subset of {','.join(GRAPHS)}")
    p.add_argument("--batch-min", type=int, default=1)
    p.add_argument("--batch-opt", type=int, default=1)
    p.add_argument("--batch-max", type=int, default=8)
    p.add_argument("--workspace-mib", type=int, default=0, help="builder workspace limit (0 = TensorRT default)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 math in fp32 layers (Ampere and newer)")
    p.add_argument("--timing-cache", type=Path,
                   help="timing cache file (default: <bundle>/engines/timing.<gpu>.trt<version>.cache)")
    args = p.parse_args(argv)
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()]
    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown:
        p.error(f"unknown graphs {unknown}; choose from {','.join(GRAPHS)}")
    try:
        options = BuildOptions(args.batch_min, args.batch_opt, args.batch_max, args.workspace_mib, args.tf32,
                               args.timing_cache)
    except ValueError as exc:
        p.error(str(exc))
    try:
        trt = import_tensorrt()
        gpu = gpu_info()
        print(f"TensorRT {trt.__version__} on {gpu.name} (compute capability {gpu.compute_capability})")
        records = build_bundle_engines(args.bundle, args.variant, options, graphs, trt=trt, gpu=gpu)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in records:
        print(f"{r.file}  ({r.graph}, {r.precision}, batch {r.batch_min}-{r.batch_max})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
