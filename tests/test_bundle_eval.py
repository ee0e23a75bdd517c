"""Scoring a bundle's variants on an AV-COCO split: together in one pass, as each alone."""

from avsl_edge.avcoco import load_avcoco
from avsl_edge.backends import CPU_EP, create_backend
from avsl_edge.bundle import load_bundle
from avsl_edge.bundle_eval import evaluate_bundle, evaluate_variants


def test_variants_scored_together_score_as_each_alone_and_as_the_export_recorded(smoke_bundle, smoke_run):
    bundle, coco = load_bundle(smoke_bundle), load_avcoco(smoke_run / "data" / "test")
    backends = {v: create_backend(bundle, "onnxruntime", [CPU_EP], v) for v in ("fp32", "int8-cpu")}
    together = evaluate_variants(backends, coco)
    for variant, backend in backends.items():
        alone = evaluate_bundle(backend, coco)
        assert together[variant] == alone
        recorded = bundle.manifest.variants[variant].report["eval"]["model"]
        assert set(recorded) == set(alone["model"])
        assert all(abs(recorded[k] - alone["model"][k]) < 1e-6 for k in recorded)
