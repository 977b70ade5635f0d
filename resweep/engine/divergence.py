"""When a training run counts as collapsed: the loss rules and the evaluation rules.

A collapse is a result (status 'diverged'), not a crash. Each rule has a name, reported as
``diverged_rule``, and a sentence saying what it saw, reported as ``diverged_detail``. The
thresholds are ``train.divergence`` (:class:`resweep.config.DivergenceConfig`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from resweep.config import DivergenceConfig
from resweep.engine.evaluate import EvalResult
from resweep.engine.reporting import STATUS_DIVERGED

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


def loss_divergence_report(
    loss_value: float, terms: dict[str, float], rules: DivergenceConfig, iteration: int,
    last_eval: dict[str, float],
) -> dict[str, Any]:
    """The final report of a run whose loss collapsed at step ``iteration + 1``: the last
    evaluation, the step's loss terms, and the rule that fired."""
    rule, detail = loss_collapse(loss_value, rules, iteration + 1)
    return {
        "iteration": iteration,
        **last_eval,
        **{f"loss.{name}": value for name, value in terms.items()},
        "status": STATUS_DIVERGED,
        "diverged": 1,
        "diverged_loss": loss_value if math.isfinite(loss_value) else str(loss_value),
        "diverged_rule": rule,
        "diverged_detail": detail,
    }
