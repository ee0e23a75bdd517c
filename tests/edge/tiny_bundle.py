"""A tiny bundle built with ``onnx.helper`` alone: three graphs of the bundle format's IO, random
weights, a manifest that ``load_bundle`` accepts. No torch: the edge suite runs on an edge box.

The graphs do what the real ones do, in miniature: the image graph pools 16 x 16 cells and maps
each cell's colour to ``v_fea`` and ``v_emb`` by 1x1 convolutions; the audio graph's embedding is the
mean magnitude of 128 sample phases; the head scores every cell against the audio embedding
(``av_map`` = sigmoid of the dot product), gates the cosine class maps by it and takes the softmax
over clusters, as the trained head does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from avsl_edge import bundle as B
from avsl_edge.audio import CLIP_SAMPLES, SAMPLE_RATE
from avsl_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD

CLASSES = ("banjo", "bell", "drum")
CLUSTERS = 4                       # one class owns two clusters, as K > C runs have
IMAGE_SIZE = 64                    # 4 x 4 feature map
EMBED, FEATURE = 128, 512
OPSET = 17


def _io(name: str, *shape: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tiny_bundle")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def image_graph(rng: np.random.Generator) -> onnx.ModelProto:
    hw = B.feature_size(IMAGE_SIZE)
    nodes = [
        helper.make_node("AveragePool", ["image"], ["cells"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Conv", ["cells", "w_fea"], ["v_fea_raw"]),
        helper.make_node("Relu", ["v_fea_raw"], ["v_fea"]),
        helper.make_node("Conv", ["cells", "w_emb"], ["v_emb"]),
    ]
    inits = [_const("w_fea", rng.normal(0, 1, (FEATURE, 3, 1, 1))), _const("w_emb", rng.normal(0, 1, (EMBED, 3, 1, 1)))]
    g = helper.make_graph(nodes, "image", [_io("image", B.BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)],
                          [_io("v_fea", B.BATCH, FEATURE, hw, hw), _io("v_emb", B.BATCH, EMBED, hw, hw)], inits)
    return _model(g)


def audio_graph(rng: np.random.Generator) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Reshape", ["waveform", "phases"], ["by_phase"]),
        helper.make_node("Abs", ["by_phase"], ["magnitude"]),
        helper.make_node("ReduceMean", ["magnitude"], ["a_emb_raw"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["a_emb_raw", "gain"], ["a_emb"]),
        helper.make_node("MatMul", ["a_emb", "w_cls"], ["cluster_logits"]),
        helper.make_node("Softmax", ["cluster_logits"], ["audio_probs"], axis=1),
    ]
    inits = [numpy_helper.from_array(np.array([-1, CLIP_SAMPLES // EMBED, EMBED], np.int64), "phases"),
             _const("gain", np.float32(10.0)), _const("w_cls", rng.normal(0, 1, (EMBED, CLUSTERS)))]
    g = helper.make_graph(nodes, "audio", [_io("waveform", B.BATCH, CLIP_SAMPLES)],
                          [_io("a_emb", B.BATCH, EMBED), _io("audio_probs", B.BATCH, CLUSTERS)], inits)
    return _model(g)


def head_graph(softmax_scale: float = 3.0) -> onnx.ModelProto:
    hw = B.feature_size(IMAGE_SIZE)
    nodes = [
        helper.make_node("Einsum", ["v_emb", "a_emb"], ["av_logits"], equation="bchw,bc->bhw"),
        helper.make_node("Mul", ["av_logits", "inv_sqrt_embed"], ["av_scaled"]),
        helper.make_node("Sigmoid", ["av_scaled"], ["av_map3"]),
        helper.make_node("Unsqueeze", ["av_map3", "channel_axis"], ["av_map"]),
        helper.make_node("ReduceMax", ["av_map3"], ["av_score"], axes=[1, 2], keepdims=0),
        # cosine between each cell's feature and each dictionary key, gated by the av map
        helper.make_node("ReduceL2", ["v_fea"], ["fea_norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["fea_norm", "eps"], ["fea_norm_safe"]),
        helper.make_node("Div", ["v_fea", "fea_norm_safe"], ["fea_unit"]),
        helper.make_node("ReduceL2", ["dictionary"], ["key_norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["key_norm", "eps"], ["key_norm_safe"]),
        helper.make_node("Div", ["dictionary", "key_norm_safe"], ["key_unit"]),
        helper.make_node("Einsum", ["fea_unit", "key_unit"], ["cosines"], equation="bchw,kc->bkhw"),
        helper.make_node("Mul", ["cosines", "av_map"], ["class_maps"]),
        helper.make_node("Mul", ["class_maps", "softmax_scale"], ["class_logits"]),
        helper.make_node("Softmax", ["class_logits"], ["class_probs"], axis=1),
        helper.make_node("Mul", ["class_probs", "av_map"], ["gated_probs"]),
        helper.make_node("ReduceMax", ["gated_probs"], ["sounding_objects"], axes=[2, 3], keepdims=0),
    ]
    inits = [_const("inv_sqrt_embed", np.float32(1.0 / np.sqrt(EMBED))), _const("eps", np.float32(1e-12)),
             _const("softmax_scale", np.float32(softmax_scale)),
             numpy_helper.from_array(np.array([1], np.int64), "channel_axis")]
    b = B.BATCH
    g = helper.make_graph(
        nodes, "head",
        [_io("v_fea", b, FEATURE, hw, hw), _io("v_emb", b, EMBED, hw, hw), _io("a_emb", b, EMBED),
         _io("dictionary", CLUSTERS, FEATURE)],
        [_io("av_map", b, 1, hw, hw), _io("av_score", b), _io("class_maps", b, CLUSTERS, hw, hw),
         _io("class_probs", b, CLUSTERS, hw, hw), _io("sounding_objects", b, CLUSTERS)], inits)
    return _model(g)


def write_tiny_bundle(root: Path, seed: int = 0, **postprocessing) -> Path:
    """Write the tiny bundle into the new folder ``root`` (fp32 variant only) and return it;
    ``postprocessing`` sets rule fields (e.g. ``in_view_threshold=0.0``)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "fp32").mkdir(parents=True)
    for name, model in (("image", image_graph(rng)), ("audio", audio_graph(rng)), ("head", head_graph())):
        onnx.save(model, root / "fp32" / f"{name}.onnx")
    np.save(root / B.DICTIONARY_NAME, rng.normal(0, 1, (CLUSTERS, FEATURE)).astype(np.float32))
    hw = B.feature_size(IMAGE_SIZE)
    manifest = B.Manifest(
        classes=CLASSES, num_clusters=CLUSTERS,
        dictionary={"file": B.DICTIONARY_NAME, "shape": [CLUSTERS, FEATURE], "dtype": "float32"},
        cluster_match={"cluster_to_class": [0, 1, 2, 2], "n_classes": len(CLASSES), "affinity": None},
        preprocessing=B.Preprocessing(image_size=IMAGE_SIZE, mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD),
                                      sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES),
        postprocessing=B.Postprocessing(**postprocessing),
        graphs=B.graph_specs(CLUSTERS, IMAGE_SIZE, (hw, hw), EMBED, FEATURE, CLIP_SAMPLES),
        variants={"fp32": B.Variant({g: B.GraphFile(f"fp32/{g}.onnx", "fp32") for g in ("audio", "image", "head")},
                                    "onnx.helper graphs with random weights (tests)")},
        model={"image_size": IMAGE_SIZE, "feature_hw": [hw, hw], "num_clusters": CLUSTERS},
        export={"exporter": "tests/edge/tiny_bundle.py (onnx.helper)", "opset": OPSET},
    )
    B.write_manifest(root, manifest)
    return root
