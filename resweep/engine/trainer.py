"""The restoration training loop. Plain PyTorch: it knows nothing of Ray and nothing of any method.

``Trainer`` builds the task, data, model, optimiser and the enabled methods from an
``ExperimentConfig``, trains with DDP when a process group is initialised, evaluates on full
images, and hands metrics and checkpoint state to a ``Reporter`` (Ray Train's in a worker, a
local one in a plain process).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from resweep.config import ExperimentConfig
from resweep.data import build_train_dataset
from resweep.degradations.tasks import build_task
from resweep.engine.amp import bf16_autocast, loss_autocast
from resweep.engine.divergence import (
    RULE_EVAL_NONFINITE,
    RULE_EVAL_PSNR,
    RULE_LOSS_ABOVE_MAX,
    RULE_LOSS_NONFINITE,
    eval_collapse,
    loss_collapsed,
    loss_divergence_report,
)
from resweep.engine.ema import ModelEma
from resweep.engine.evaluate import EvalResult, Evaluator
from resweep.engine.optim import build_optimizer, build_scheduler
from resweep.engine.precise_bn import PreciseBatchNorm
from resweep.engine.records import NOTES_KEY, PER_IMAGE_KEY
from resweep.engine.reporting import (
    STATUS_DIVERGED,
    STATUS_FINISHED,
    STATUS_RUNNING,
    NullReporter,
    Reporter,
    RunOutcome,
    progress_line,
)
from resweep.engine.sampler import train_loader
from resweep.engine.setup import (
    build_evaluator,
    data_parallel,
    default_cache_dir,
    default_device,
    per_worker_batch,
    resolve_artifacts,
    set_up_model,
)
from resweep.losses import get_pixel_loss
from resweep.methods import MethodContext, World, build_methods
from resweep.methods.diagnostics import Diagnostic, Phase
from resweep.models import create_model

# The collapse rules live in engine.divergence, device/cache defaults in engine.setup and the
# reporting types in engine.reporting; importing them from here still works.
__all__ = [
    "RULE_EVAL_NONFINITE",
    "RULE_EVAL_PSNR",
    "RULE_LOSS_ABOVE_MAX",
    "RULE_LOSS_NONFINITE",
    "STATUS_DIVERGED",
    "STATUS_FINISHED",
    "STATUS_RUNNING",
    "NullReporter",
    "Reporter",
    "RunOutcome",
    "Trainer",
    "default_cache_dir",
    "default_device",
]

class Trainer:
    def __init__(
        self,
        config: ExperimentConfig,
        *,
        world: World | None = None,
        reporter: Reporter | None = None,
        resume_state: dict[str, Any] | None = None,
        cache_dir: Path | None = None,
        log: Callable[[str], None] = print,
        started_at: float | None = None,
        image_dir: Path | None = None,
        artifacts: dict[str, Path] | None = None,
    ):
        # wall-clock start (time.time, comparable across processes) for the startup metric
        self.started_at = started_at if started_at is not None else time.time()
        self.startup_seconds: float | None = None
        self.cfg = config
        # where the final evaluation's outputs go (``<image_dir>/<set>/<image>.png``); the
        # ground truth and baseline go to ``<image_dir>/../_gt`` and ``../_baseline``
        self.image_dir = Path(image_dir) if image_dir and config.eval.save_images else None
        self.world = world or World(device=default_device(config))
        self.device = self.world.device
        self.reporter = reporter or NullReporter()
        self.log = log if self.world.is_main else (lambda _msg: None)
        self.use_cuda = self.device.type == "cuda"
        self.autocast = self.use_cuda and config.train.amp
        # evaluation has its own switch, off by default: bf16 moves PSNR in the second decimal
        self.eval_autocast = self.use_cuda and config.eval.amp

        self.per_worker_batch = per_worker_batch(config, self.world.world_size)

        # Same seed on every rank: identical initial weights and method state (DDP checks this).
        torch.manual_seed(config.train.seed)
        self.task = build_task(config.task)
        model = create_model(config.model.name, scale=config.scale, **config.model.kwargs)
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.artifacts, self.artifact_records = resolve_artifacts(config, artifacts, cache_dir, self.device, self.log)
        self.model = model = set_up_model(model, config, self.artifacts, self.device, self.log)
        self.ema = ModelEma(model, config.train.ema_decay) if config.train.ema_decay else None

        self.methods = build_methods(
            MethodContext(
                config=config,
                model=model,
                task=self.task,
                world=self.world,
                cache_dir=cache_dir,
                log=self.log,
                artifacts=self.artifacts,
            )
        )
        for method in self.methods.values():
            method.to(self.device)
        self.replaces_pixel_loss = any(m.replaces_pixel_loss for m in self.methods.values())
        self.fp32_forward = sorted(n for n, m in self.methods.items() if m.needs_fp32_forward)
        if self.autocast and self.fp32_forward:
            self.log(f"train.amp: the forward runs in fp32, as {', '.join(self.fp32_forward)} needs")
        self.pixel_loss = get_pixel_loss(config.loss.pixel)

        self.optimizer = build_optimizer(model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.schedule, config.train.iterations)

        dataset = build_train_dataset(config, self.task)
        self.precise_bn = PreciseBatchNorm(config, model, dataset, self.task, self.log)
        for method in self.methods.values():
            dataset = method.wrap_train_dataset(dataset)
        self.dataset = dataset

        # evaluation runs on rank 0 only
        self.evaluator: Evaluator | None = (
            build_evaluator(config, self.task, self.device) if self.world.is_main else None
        )

        self.iteration = 0
        self.last_eval: dict[str, float] = {}
        self.train_seconds = 0.0
        # loss-spike skipping (train.skip_loss_spike): mean loss of the previous logging window
        self.loss_reference: float | None = None
        self.skipped_steps = 0
        self._eval_collapse: tuple[str, str] | None = None
        if resume_state is not None:
            self.load_state_dict(resume_state)

        self.train_model = data_parallel(model, self.world.distributed, self.device)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "methods": {name: m.state_dict() for name, m in self.methods.items()},
            "rng": {"torch": torch.get_rng_state()},
            "config": self.cfg.to_dict(),
            "last_eval": dict(self.last_eval),
            "train_seconds": self.train_seconds,
            "loss_reference": self.loss_reference,
            "skipped_steps": self.skipped_steps,
        }
        if self.use_cuda:
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        for name, method in self.methods.items():
            if name in state.get("methods", {}):
                method.load_state_dict(state["methods"][name])
        torch.set_rng_state(state["rng"]["torch"])
        if self.use_cuda and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.iteration = int(state["iteration"])
        self.last_eval = dict(state.get("last_eval", {}))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.loss_reference = state.get("loss_reference")
        self.skipped_steps = int(state.get("skipped_steps", 0))

    # ------------------------------------------------------------------ loop
    def _loader(self, stop: int | None = None, dataset: Dataset | None = None) -> DataLoader:
        """Training batches from the current iteration to ``stop`` (default: the end)."""
        return train_loader(
            self.dataset if dataset is None else dataset,
            seed=self.cfg.train.seed,
            rank=self.world.rank,
            world_size=self.world.world_size,
            per_worker_batch=self.per_worker_batch,
            start_iteration=self.iteration,
            stop_iteration=self.cfg.train.iterations if stop is None else stop,
            workers=self.cfg.data.loader_workers,
            pin_memory=self.use_cuda,
        )

    def _global_mean(self, value: torch.Tensor) -> float:
        if self.world.distributed:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world.world_size
        return float(value)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward, loss terms and backward of one step; returns the (detached later) terms."""
        it = self.iteration
        for method in self.methods.values():
            batch = method.transform_batch(batch, it)
        lq = batch["lq"]
        if self.use_cuda and self.cfg.train.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        device = self.device.type  # self.autocast is False on CPU, except where a test sets it
        with bf16_autocast(device, self.autocast and not self.fp32_forward):
            prediction = self.train_model(lq)
        prediction = prediction.float()
        terms: dict[str, torch.Tensor] = {}
        if not self.replaces_pixel_loss:
            terms["pixel"] = self.cfg.loss.pixel_weight * self.pixel_loss(prediction, batch["gt"])
        for method in self.methods.values():  # loss networks and distances in fp32 (engine.amp)
            with loss_autocast(device, self.autocast, method.config.loss_precision):
                terms.update(method.loss_terms(prediction, batch, it))
        total = sum(t.float() for t in terms.values())
        assert isinstance(total, torch.Tensor)
        terms = {"total": total, **terms}
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.optim.grad_value_clip:
            torch.nn.utils.clip_grad_value_(self.model.parameters(), self.cfg.optim.grad_value_clip)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        return terms

    def fit(self) -> RunOutcome:
        cfg = self.cfg
        total_iters = cfg.train.iterations
        ckpt_every = cfg.train.checkpoint_every or cfg.eval.every
        sums: dict[str, float] = {}
        window_steps = 0
        kept_loss, kept_steps = 0.0, 0  # steps not skipped as spikes, for the next reference
        spike = cfg.train.skip_loss_spike
        window_seconds = 0.0
        self.model.train()
        if self.iteration >= total_iters:
            self.log(f"nothing to do: already at iteration {self.iteration}/{total_iters}")
            final = {"iteration": self.iteration, **self.last_eval, "status": STATUS_FINISHED, "diverged": 0}
            self.reporter.report(final, None)
            return RunOutcome(STATUS_FINISHED, self.iteration, dict(self.last_eval))

        self.log(
            f"training {cfg.model.name} ({sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M params) "
            f"on {self.device}, {self.world.world_size} worker(s), batch {cfg.data.batch_size}, "
            f"iterations {self.iteration}->{total_iters}"
        )
        step_start = time.perf_counter()
        for batch in self._loader():
            batch = {
                k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
            terms = self.training_step(batch)
            loss_value = self._global_mean(terms["total"].detach())
            if loss_collapsed(loss_value, cfg.train.divergence):
                return self._diverged(loss_value, terms)
            if spike is not None and self.loss_reference is not None and loss_value > spike * self.loss_reference:
                self.skipped_steps += 1  # a spike: no optimiser step (the schedule still advances)
            else:
                self.optimizer.step()
                kept_loss, kept_steps = kept_loss + loss_value, kept_steps + 1
            self.scheduler.step()
            self.iteration += 1
            if self.ema is not None:
                self.ema.update(self.model)
            for method in self.methods.values():
                method.after_step(self.model, self.iteration)

            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            if self.use_cuda:
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            window_seconds += now - step_start
            window_steps += 1
            if self.startup_seconds is None:
                self.startup_seconds = time.time() - self.started_at

            it = self.iteration
            is_last = it == total_iters
            do_eval = it % cfg.eval.every == 0 or is_last
            do_ckpt = it % ckpt_every == 0 or is_last
            if it % cfg.train.log_every == 0 or do_eval or do_ckpt:
                self.train_seconds += window_seconds
                metrics = self._train_metrics(sums, window_steps, window_seconds)
                sums, window_steps, window_seconds = {}, 0, 0.0
                if kept_steps:
                    self.loss_reference = kept_loss / kept_steps
                kept_loss, kept_steps = 0.0, 0
                if spike is not None:
                    metrics["skipped_steps"] = self.skipped_steps
                if do_eval:
                    self._recompute_batchnorm()  # every rank: the statistics are all-reduced
                    metrics.update(self._evaluate(final=is_last))
                    if self._eval_collapse is not None:
                        return self._diverged_in_eval(metrics, *self._eval_collapse)
                metrics["status"] = STATUS_FINISHED if is_last else STATUS_RUNNING
                metrics["diverged"] = 0
                self._log_metrics(metrics)
                checkpoint = self.state_dict() if do_ckpt and self.world.is_main else None
                self.reporter.report(metrics, checkpoint)
            step_start = time.perf_counter()
        return RunOutcome(STATUS_FINISHED, self.iteration, dict(self.last_eval))

    def diagnostics(self, phase: Phase) -> list[Diagnostic]:
        """What the methods report about the model at ``phase`` (the EMA weights when there is
        an EMA, as evaluation and the saved weights use them); empty off the main rank."""
        if not self.world.is_main:
            return []
        model = self.ema.module if self.ema is not None else self.model
        return [d for m in self.methods.values() for d in m.diagnostics(model, self.dataset, phase)]

    # ------------------------------------------------------------------ helpers
    def _train_metrics(self, sums: dict[str, float], steps: int, seconds: float) -> dict[str, Any]:
        steps = max(steps, 1)
        metrics: dict[str, Any] = {"iteration": self.iteration}
        for name, value in sums.items():
            metrics[f"loss.{name}"] = value / steps
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["time_per_step"] = seconds / steps
        metrics["samples_per_second"] = self.cfg.data.batch_size * steps / max(seconds, 1e-9)
        metrics["train_seconds"] = self.train_seconds
        if self.startup_seconds is not None:
            metrics["startup_seconds"] = self.startup_seconds
        for name, method in self.methods.items():
            for key, value in method.metrics(self.iteration).items():
                metrics[f"{name}.{key}"] = value
        notes = [note for method in self.methods.values() for note in method.notes()]
        if notes:  # caveats travel with the results, not only in the log
            metrics[NOTES_KEY] = "; ".join(dict.fromkeys(notes))
        return metrics

    def _recompute_batchnorm(self) -> None:
        """Precise BN on the network that evaluation uses, over the next training batches
        (un-mixed by methods: evaluation inputs are not mixed either)."""
        if not self.precise_bn.batches:
            return
        model = self.ema.module if self.ema is not None else self.model
        loader = self._loader(stop=self.iteration + self.precise_bn.batches, dataset=self.precise_bn.dataset())
        batches = (batch["lq"].to(self.device, non_blocking=True) for batch in loader)
        with bf16_autocast("cuda", self.eval_autocast):
            self.precise_bn.run(model, batches, dist.all_reduce if self.world.distributed else None)

    def _evaluate(self, final: bool = False) -> dict[str, Any]:
        if self.evaluator is None:
            return {}
        model = self.ema.module if self.ema is not None else self.model
        save_dir = self.image_dir if final else None
        if save_dir is not None:
            self.evaluator.save_references(save_dir.parent)
        result = self.evaluator.evaluate(model, self.iteration, autocast=self.eval_autocast, save_dir=save_dir)
        self.last_eval = dict(result.means)
        self._eval_collapse = self._collapse_in(result)
        return {**result.means, PER_IMAGE_KEY: json.dumps(result.per_image)}

    def _collapse_in(self, result: EvalResult) -> tuple[str, str] | None:
        """``(rule, detail)`` of the first evaluation collapse rule that fires, else None."""
        names = [eval_set.name for eval_set in self.evaluator.eval_sets] if self.evaluator else []
        return eval_collapse(result, self.cfg.train.divergence, names, self.iteration)

    def _diverged_in_eval(self, metrics: dict[str, Any], rule: str, detail: str) -> RunOutcome:
        self.log(f"collapse seen in evaluation ({rule}): {detail}; ending the run")
        metrics.update(status=STATUS_DIVERGED, diverged=1, diverged_rule=rule, diverged_detail=detail)
        self._log_metrics(metrics)
        self.reporter.report(metrics, None)
        return RunOutcome(STATUS_DIVERGED, self.iteration, {k: v for k, v in metrics.items() if k != PER_IMAGE_KEY})

    def _diverged(self, loss_value: float, terms: dict[str, torch.Tensor]) -> RunOutcome:
        self.log(f"loss diverged at iteration {self.iteration + 1}: {loss_value!r}; ending the run")
        metrics = loss_divergence_report(
            loss_value, {name: float(value.detach()) for name, value in terms.items()},
            self.cfg.train.divergence, self.iteration, self.last_eval,
        )
        self.reporter.report(metrics, None)
        return RunOutcome(STATUS_DIVERGED, self.iteration, metrics)

    def _log_metrics(self, metrics: dict[str, Any]) -> None:
        self.log(progress_line(metrics, self.cfg.train.iterations))
