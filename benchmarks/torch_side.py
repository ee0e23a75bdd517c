"""PyTorch-side measurements: model MACs, the machine's peak fp32 GEMM rate, eager latency per
stage, and training throughput (pairs/s) of the presets."""

from __future__ import annotations

import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from avsl_edge.timing import Timing, measure
from training.config import preset
from training.model import AudioBranch, ImageBranch, ModelConfig, StageOne, StageTwo, global_score, \
    localization_loss_stage_one


def machine() -> dict:
    """CPU model, cores, ISA flags that matter (AVX-512, VNNI), library versions, GPU if any."""
    import platform

    import onnxruntime

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu in ("", "x86_64", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(),
            "isa": sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxruntime_providers": onnxruntime.get_available_providers(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def count_macs(image_size: int = 224) -> dict[str, float]:
    """Multiply-accumulates of one forward pass (batch 1), counted by torch's FlopCounterMode."""
    cfg = ModelConfig()
    out = {}
    for name, module, x in (("image", ImageBranch(cfg), torch.randn(1, 3, image_size, image_size)),
                            ("audio", AudioBranch(cfg), torch.randn(1, 16000))):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module.eval()(x)
        out[name] = counter.get_total_flops() / 2
    return out


def peak_gemm_flops(n: int = 2048, seconds: float = 2.0) -> float:
    """Best sustained fp32 GEMM rate (FLOP/s) of torch.matmul on this machine's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def peak_gemm_flops_onnxruntime(n: int = 2048, threads: int = 0, seconds: float = 2.0) -> float:
    """Best fp32 GEMM rate (FLOP/s) of ONNX Runtime's MatMul (MLAS) on this machine: the kernels
    the fp32 image graph runs on (torch.matmul's BLAS may not use every ISA extension of the CPU)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from avsl_edge.backends import ort_session

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gemm.onnx")
        onnx.save(model, path)
        sess = ort_session(path, intra_op_threads=threads, inter_op_threads=1)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    sess.run(None, feeds)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


@torch.no_grad()
def eager_stages(image_size: int = 224, warmup: int = 3, runs: int = 20, device: str = "cpu") -> dict[str, Timing]:
    """PyTorch eager, batch 1: audio (front-end + net), image net, head (CUDA: synchronised)."""
    model = StageTwo(ModelConfig()).eval().to(device)
    frame = torch.randn(1, 3, image_size, image_size, device=device)
    clip = torch.randn(1, 16000, device=device) * 0.1
    dictionary = torch.randn(11, 512, device=device)
    v = model.image(frame)
    a = model.audio(clip)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def head():
        loc = model.localization(v.v_emb, a.a_emb)
        model.class_aware(v.v_fea, dictionary, loc.av_map)

    def timed(fn):
        return measure(lambda: (fn(), sync()), warmup, runs)

    return {"audio": timed(lambda: model.audio(clip)), "image": timed(lambda: model.image(frame)),
            "head": timed(head)}


def training_throughput(preset_name: str, steps: int = 3, batch: int | None = None) -> float:
    """Stage-one localization steps per second x batch, in pairs/s (warm, synthetic tensors)."""
    cfg = preset(preset_name)
    s = cfg.data.image_size
    b = batch or cfg.stage_one.batch_size
    model = StageOne(cfg.model).train()
    opt = torch.optim.Adam(model.main_parameters(), lr=1e-4)
    images = torch.randn(2 * b, 3, s, s)
    clips = torch.randn(b, 16000) * 0.1
    labels = torch.tensor([1.0, 0.0]).repeat(b)

    def step():
        out = model(images, clips)
        loss = localization_loss_stage_one(global_score(out.av_logits), labels, from_logits=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = measure(step, warmup=1, runs=steps)
    return b / (t.median_ms / 1000)
