"""``variant="auto"``: the fastest variant here among those within 2 points of fp32 on the export's
test split, timed on this machine."""

import dataclasses

import avsl_edge
from avsl_edge.bundle import load_bundle
from avsl_edge.variant_choice import HEADLINE, accuracy_exclusions, choose_variant, fastest


def _with_deltas(bundle, deltas: dict):
    """``bundle`` as if its export had recorded these ``delta_vs_fp32`` (variant -> dict or None)."""
    variants = dict(bundle.manifest.variants)
    for v, delta in deltas.items():
        report = {} if delta is None else {"eval": {"model": {}, "delta_vs_fp32": delta}}
        variants[v] = dataclasses.replace(variants[v], report=report)
    return dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, variants=variants))


def test_a_variant_more_than_two_points_below_fp32_or_never_scored_is_left_out(smoke_bundle):
    bundle = _with_deltas(load_bundle(smoke_bundle), {
        "int8-cpu": {k: -1.5 for k in HEADLINE},
        "int8": {**{k: 0.0 for k in HEADLINE}, "duet_ciou@0.3": -2.5},
        "fp16": None,
    })
    assert accuracy_exclusions(bundle) == {"int8": "duet_ciou@0.3 -2.5 points vs fp32",
                                           "fp16": "the export recorded no test-split score against fp32"}


def test_the_fastest_wins_and_fp32_wins_a_tie():
    assert fastest({"fp32": 15.2, "int8-cpu": 5.9, "fp16": 16.5}) == "int8-cpu"
    assert fastest({"int8-cpu": 7.0, "fp32": 7.0}) == "fp32"


def test_auto_times_the_eligible_variants_here_and_keeps_the_fastest(smoke_bundle):
    bundle = _with_deltas(load_bundle(smoke_bundle), {"int8": {k: -3.0 for k in HEADLINE}})
    made, closed = [], []

    def make(v):
        be = avsl_edge.create_backend(bundle, "onnxruntime", variant=v)
        made.append(be)
        be.close = lambda v=v: closed.append(v)  # record instead of releasing: what is closed is asserted
        return be

    choice, backend = choose_variant(bundle, make, runs=2)
    assert set(choice.ms) == {"fp32", "fp16", "int8-cpu"} and choice.excluded.keys() == {"int8"}
    assert backend.variant == choice.variant == min(choice.ms, key=choice.ms.get)
    assert sorted(closed) == sorted(v for v in choice.ms if v != choice.variant)
    assert "int8: " in choice.reason and "within 2 points of fp32" in choice.reason


def test_a_single_eligible_variant_is_chosen_without_timing(smoke_bundle):
    bundle = _with_deltas(load_bundle(smoke_bundle), {v: None for v in ("fp16", "int8", "int8-cpu")})
    choice, backend = choose_variant(bundle, lambda v: avsl_edge.create_backend(bundle, "onnxruntime", variant=v))
    assert (choice.variant, backend.variant, dict(choice.ms)) == ("fp32", "fp32", {})
    assert choice.reason.startswith("the only variant within 2 points of fp32")
    assert choice.short == "auto, the only one within 2 points"


def test_load_chooses_the_variant_by_default_and_says_which_and_why(smoke_bundle):
    loc = avsl_edge.load(smoke_bundle)
    assert loc.backend.variant_choice is not None and loc.backend.variant == loc.backend.variant_choice.variant
    assert "(auto: fastest here" in loc.backend.description
    assert loc.backend.info()["variant_choice"]["ms"].keys() >= {"fp32"}
    assert avsl_edge.load(smoke_bundle, variant="fp32").backend.variant_choice is None  # by name: as asked


def test_live_and_run_default_to_auto_eval_and_bench_to_fp32():
    from avsl_edge.cli import build_parser

    parser = build_parser()
    defaults = {cmd: parser.parse_args([cmd, *extra]).variant for cmd, extra in {
        "live": [], "run": ["in.mp4", "--out", "out.mp4"], "eval": ["--data", "d"], "bench": []}.items()}
    assert defaults == {"live": "auto", "run": "auto", "eval": "fp32", "bench": "fp32"}


def test_the_live_hud_names_the_variant_and_why_auto_chose_it(smoke_bundle):
    from runtime.live_command import Hud, hud_lines, variant_label

    loc = avsl_edge.load(smoke_bundle)
    label = variant_label(loc.backend)
    assert label.startswith(f"{loc.backend.variant} (auto, ")
    assert hud_lines(Hud(variant=label))[1].startswith(label + "  ")
    assert variant_label(avsl_edge.load(smoke_bundle, variant="fp32").backend) == "fp32"


def test_info_names_what_auto_chooses_from(smoke_bundle, capsys):
    from avsl_edge.cli import main

    assert main(["info", "--model", str(smoke_bundle)]) == 0
    assert "--variant auto picks the fastest here of fp32" in capsys.readouterr().out
