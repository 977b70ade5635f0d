"""When a training run counts as collapsed: the loss rules and the evaluation rules.

A collapse is a result (status 'diverged'), not a crash. Each rule has a name, reported as
``diverged_rule``, and a sentence saying what it saw, reported as ``diverged_detail``. The
thresholds are ``train.divergence`` (:class:`resweep.config.DivergenceConfig`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from resweep.config import DivergenceConfig
from resweep.engine.evaluate import EvalResult

# Which collapse rule ended a run (reported as ``diverged_rule``, with ``diverged_detail``).
RULE_LOSS_NONFINITE = "loss_nonfinite"
RULE_LOSS_ABOVE_MAX = "loss_above_max"
RULE_EVAL_NONFINITE = "eval_nonfinite_output"
RULE_EVAL_PSNR = "eval_psnr_below_reference"


def loss_collapsed(loss_value: float, rules: DivergenceConfig) -> bool:
    """Whether a step's (all-worker mean) loss is a collapse: non-finite or above max_abs_loss."""
    return not math.isfinite(loss_value) or abs(loss_value) > rules.max_abs_loss


def loss_collapse(loss_value: float, rules: DivergenceConfig, iteration: int) -> tuple[str, str]:
    """``(rule, detail)`` for a loss that :func:`loss_collapsed` flagged at ``iteration``."""
    if math.isfinite(loss_value):
        rule = RULE_LOSS_ABOVE_MAX
        detail = f"|loss| {abs(loss_value):.4g} above max_abs_loss {rules.max_abs_loss:g}"
    else:
        rule = RULE_LOSS_NONFINITE
        detail = f"loss is {loss_value!r}"
    return rule, f"{detail} at iteration {iteration}"


def eval_collapse(
    result: EvalResult, rules: DivergenceConfig, set_names: Iterable[str], iteration: int
) -> tuple[str, str] | None:
    """``(rule, detail)`` of the first evaluation collapse rule that fires, else None."""
    if rules.eval_nonfinite and result.nonfinite:
        where = ", ".join(f"{n} image(s) of {s}" for s, n in result.nonfinite.items())
        return RULE_EVAL_NONFINITE, f"non-finite outputs at iteration {iteration}: {where}"
    margin = rules.eval_psnr_margin_db
    if margin is None:
        return None
    for name in set_names:
        value = result.means[f"eval.{name}.psnr"]
        reference = result.means[f"eval.{name}.psnr_baseline"]
        if not math.isfinite(value) or value < reference - margin:
            return RULE_EVAL_PSNR, (
                f"eval.{name}.psnr {value:.2f} dB at iteration {iteration} is more than "
                f"{margin:g} dB below the no-learning reference {reference:.2f} dB"
            )
    return None
