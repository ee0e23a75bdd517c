"""The decision rules of the :class:`~avsl_edge.localizer.Localizer` (its module docstring,
"Decisions"): their values, their ranges, and how a bundle manifest's ``postprocessing`` sets them.
Below the bundle format, which checks a manifest's rules with them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .boxes import BOX_METHODS
from .errors import UserError

if TYPE_CHECKING:
    from .bundle import Postprocessing

# the single scores, then "combined"; a calibration tie goes to the earlier one
SINGLE_SCORES: tuple[str, ...] = ("av_score", "presence", "heard_av", "heard_class")
IN_VIEW_SCORES: tuple[str, ...] = SINGLE_SCORES + ("combined",)
# the scores that "combined" weighs: sigmoid(bias + sum of weight x score), in_view_combination (the
# keys bundles store; heard_class came later and is not among them)
COMBINED_SCORES: tuple[str, ...] = ("av_score", "presence", "heard_av")
COMBINATION_KEYS: tuple[str, ...] = ("bias",) + COMBINED_SCORES
TEXT_RULES: tuple[str, ...] = ("in_view_score", "box_method")  # the Rules that are names, not numbers


class RuleError(UserError, ValueError):
    """A decision rule (threshold, score, box method) outside what it can be."""


class UnknownRuleError(UserError, TypeError):
    """A rule override that names no rule (a TypeError, as an unknown keyword argument is)."""


@dataclass(frozen=True)
class Rules:
    """The decision thresholds (module docstring, "Decisions")."""

    in_view_threshold: float = 0.5
    audio_gate_db: float = -50.0
    class_threshold: float = 0.25
    box_tau: float = 0.5
    in_view_score: str = "av_score"  # which score in_view_threshold applies to (IN_VIEW_SCORES)
    box_method: str = "map"          # how boxes are cut (avsl_edge.boxes.BOX_METHODS)
    # the calibrated weights of the "combined" in-view score ({"bias", *COMBINED_SCORES}), or None
    in_view_combination: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.in_view_score not in IN_VIEW_SCORES:
            raise RuleError(f"Rules.in_view_score must be one of {', '.join(IN_VIEW_SCORES)}, "
                             f"got {self.in_view_score!r}")
        if self.in_view_combination is not None:  # stored as a plain dict of floats, in COMBINATION_KEYS order
            object.__setattr__(self, "in_view_combination", check_combination(self.in_view_combination))
        elif self.in_view_score == "combined":
            raise RuleError("Rules.in_view_score 'combined' needs the weights that a calibration fits "
                            "(in_view_combination); this bundle has none: recalibrate it (python export/calibrate.py "
                            "--bundle B) or pick another in-view score")
        if self.box_method not in BOX_METHODS:
            raise RuleError(f"Rules.box_method must be one of {', '.join(BOX_METHODS)}, got {self.box_method!r}")
        for name in ("in_view_threshold", "class_threshold", "box_tau"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise RuleError(f"Rules.{name} must be a number in [0, 1], got {v!r}")
        if not (isinstance(self.audio_gate_db, (int, float)) and -200.0 <= self.audio_gate_db <= 0.0):
            raise RuleError(f"Rules.audio_gate_db must be a level in dBFS in [-200, 0], got {self.audio_gate_db!r}")

    @classmethod
    def from_postprocessing(cls, p: Postprocessing, **overrides: float | str | None) -> Rules:
        """The manifest's values (a bundle without calibration: ``sounding_threshold`` and defaults). An
        ``in_view_score`` override without an ``in_view_threshold`` one takes that score's calibrated
        threshold (:func:`calibrated_threshold`), where the calibration has it."""
        values: dict[str, Any] = {
            "in_view_threshold": p.in_view_threshold if p.in_view_threshold is not None else p.sounding_threshold,
            "audio_gate_db": p.audio_gate_db, "class_threshold": p.class_threshold, "box_tau": p.box_tau,
            "in_view_score": p.in_view_score or "av_score", "box_method": p.box_method or "map",
            "in_view_combination": p.in_view_combination,
        }
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise UnknownRuleError(f"unknown rule overrides {unknown}; the rules are {sorted(values)}")
        return cls(**values).replaced(p.calibration, **{k: (v if k in TEXT_RULES or k == "in_view_combination"
                                                            else float(v)) for k, v in overrides.items() if v is not None})

    def replaced(self, calibration: Mapping[str, Any], **overrides: Any) -> Rules:
        """These rules with ``overrides``; a new ``in_view_score`` without an ``in_view_threshold``
        takes that score's threshold from ``calibration`` (:func:`calibrated_threshold`). A calibration
        that fitted other scores but not this one (it predates the score) is a RuleError rather than
        the other score's threshold; without any calibration the threshold stays as it is."""
        score = overrides.get("in_view_score")
        if score is not None and overrides.get("in_view_threshold") is None and score != self.in_view_score:
            t = calibrated_threshold(calibration, str(score))
            fits = calibration.get("in_view_fits") if isinstance(calibration, Mapping) else None
            if t is None and isinstance(fits, Mapping) and fits and score in IN_VIEW_SCORES:
                raise RuleError(f"this bundle's calibration fitted {', '.join(sorted(fits))} but not {score} (it "
                                f"predates that score): give its threshold (in_view_threshold=X, --in-view-threshold X) "
                                f"or recalibrate the bundle (python export/calibrate.py --bundle B)")
            if t is not None:
                overrides = {**overrides, "in_view_threshold": t}
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return plain_rule_values(asdict(self))


def plain_rule_values(rules: Mapping[str, Any]) -> dict[str, Any]:
    """Rule values as JSON takes them: names (and None) as they are, the combination's weights as a
    dict, every threshold as a float."""
    return {k: (v if isinstance(v, str) or v is None else dict(v) if isinstance(v, Mapping) else float(v))
            for k, v in rules.items()}


def calibrated_threshold(calibration: Mapping[str, Any], score: str) -> float | None:
    """The threshold a calibration report fitted for the in-view ``score``, or None (none fitted: a
    bundle from before that score, or not calibrated)."""
    fits = calibration.get("in_view_fits") if isinstance(calibration, Mapping) else None
    fit = fits.get(score) if isinstance(fits, Mapping) else None
    t = fit.get("threshold") if isinstance(fit, Mapping) else None
    ok = isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and 0.0 <= t <= 1.0
    return float(t) if ok else None


def check_combination(weights: Any) -> dict[str, float]:
    """The in-view combination's weights as a dict, or a RuleError naming what is wrong."""
    if not isinstance(weights, Mapping) or set(weights) != set(COMBINATION_KEYS):
        got = sorted(weights) if isinstance(weights, Mapping) else type(weights).__name__
        raise RuleError(f"Rules.in_view_combination must map exactly {', '.join(COMBINATION_KEYS)} to weights, got {got}")
    for k, v in weights.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or abs(v) > 1e4:
            raise RuleError(f"Rules.in_view_combination[{k!r}] must be a finite number within +-1e4, got {v!r}")
    return {k: float(weights[k]) for k in COMBINATION_KEYS}


def combined_score(weights: Mapping[str, float], **scores: Any) -> Any:
    """The "combined" in-view score: sigmoid(bias + sum of weight x score) over COMBINED_SCORES (floats or
    arrays of them; a score whose weight is 0 may be None). The calibration's logistic regression
    (avsl_edge.calibrate.fit_in_view_combination) fits the weights; the export stores them in the manifest."""
    z = weights["bias"]
    for k in COMBINED_SCORES:
        if weights[k] != 0.0:
            if scores.get(k) is None:
                raise RuleError(f"the combined in-view score weighs {k}, which was not computed")
            z = z + weights[k] * np.asarray(scores[k], np.float64)
    return 1.0 / (1.0 + np.exp(-z))


def describe_combination(weights: Mapping[str, float]) -> str:
    """The combined in-view score written out: "sigmoid(-4.10 + 3.59 x av_score + ...)"."""
    terms = "".join(f" {'+' if w >= 0 else '-'} {abs(w):.2f} x {k}" for k, w in weights.items() if k != "bias")
    return f"sigmoid({weights['bias']:.2f}{terms})"
