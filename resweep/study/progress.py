"""Live progress of a study or a single run: refreshed in place on a terminal (rich), plain
lines otherwise (CI, a log file).

Fed by reports (iteration, ``time_per_step``) and status changes; between reports a running
trial's ETA counts down from its last known speed. Ray-free and torch-free.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from resweep.status import Status

PLAIN_INTERVAL_S = 15.0


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class RunState:
    label: str
    total: int
    iteration: int = 0
    seconds_per_step: float | None = None
    reported_at: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.monotonic)
    objective: float | None = None
    waiting: str | None = None
    """what the run waits for (resources that may still come), until its first report"""

    def eta(self, now: float) -> float | None:
        if self.seconds_per_step is None:
            return None
        remaining = max(0, self.total - self.iteration) * self.seconds_per_step
        return max(0.0, remaining - (now - self.reported_at))

    def update(self, result: dict[str, Any], objective: str | None = None) -> None:
        iteration = result.get("iteration")
        if isinstance(iteration, int | float):
            self.iteration = int(iteration)
        step = result.get("time_per_step")
        if isinstance(step, int | float) and step > 0:
            self.seconds_per_step = float(step)
        if objective and isinstance(result.get(objective), int | float):
            self.objective = float(result[objective])
        self.reported_at = time.monotonic()
        self.waiting = None


class Progress:
    """Progress of one or more runs. ``live``: refresh in place (default: stdout is a terminal)."""

    def __init__(
        self,
        title: str,
        *,
        total_runs: int | None = 1,
        objective: str | None = None,
        mode: str = "max",
        quiet: bool = False,
        live: bool | None = None,
        stream: IO[str] | None = None,
        plain_interval_s: float = PLAIN_INTERVAL_S,
        single_run: bool = False,
    ):
        self.title = title
        self.total_runs = total_runs
        self.objective = objective
        self.mode = mode
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.live_mode = (self.stream.isatty() if live is None else live) and not quiet
        self.plain_interval_s = plain_interval_s
        self.single_run = single_run
        self.running: dict[str, RunState] = {}
        self.waiting: dict[str, RunState] = {}  # not started: waiting for resources
        self.counts: dict[str, int] = {}
        self.best: tuple[float, str] | None = None
        self.mean_seconds_per_step: float | None = None
        self.iterations_per_run: int | None = None
        self._last_plain = 0.0
        self._last_lines: list[str] = []
        self._live: Any = None
        self._console: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.quiet or not self.live_mode or self._live is not None:
            return
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=self.stream)
        self._live = Live(console=self._console, refresh_per_second=2, transient=False,
                          get_renderable=self.render)
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
        elif not self.quiet:
            self._print_plain(force=True)

    # ------------------------------------------------------------------ events
    def run_started(self, run_id: str, label: str, total: int) -> None:
        self.waiting.pop(run_id, None)
        self.running[run_id] = RunState(label=label, total=total)
        self.iterations_per_run = total or self.iterations_per_run
        self.tick()

    def run_report(self, run_id: str, result: dict[str, Any]) -> None:
        state = self.running.get(run_id)
        if state is None:
            return
        state.update(result, self.objective)
        if state.seconds_per_step:
            known = [s.seconds_per_step for s in self.running.values() if s.seconds_per_step]
            self.mean_seconds_per_step = sum(known) / len(known)
        self.tick()

    def run_waiting(self, run_id: str, label: str, total: int, what: str | None) -> None:
        """A run that waits for resources that may still come (``what``: for which), or that no
        longer waits (``None``): a started run until its first report, or one not started."""
        state = self.running.get(run_id)
        was = state.waiting if state is not None else (run_id in self.waiting or None)
        if state is not None:
            state.waiting = what if state.seconds_per_step is None else None
        elif what is None:
            self.waiting.pop(run_id, None)
        elif run_id in self.waiting:
            self.waiting[run_id].waiting = what
        else:
            self.waiting[run_id] = RunState(label=label, total=total, waiting=what)
        now = state.waiting if state is not None else (run_id in self.waiting or None)
        self.tick(force=bool(now) != bool(was))  # starting or stopping to wait: a line at once

    def run_ended(self, run_id: str, status: str | None = None) -> None:
        self.waiting.pop(run_id, None)
        state = self.running.pop(run_id, None)
        if state is not None and status is not None and not self.quiet and self._live is None:
            # plain mode: one line per ended run (the live view shows it in its counts)
            print(f"{self.run_line(state, time.monotonic()).strip()} -> {status}", file=self.stream, flush=True)
        self.tick(force=True)

    def set_summary(self, counts: dict[str, int], best: tuple[float, str] | None) -> None:
        self.counts = dict(counts)
        self.best = best

    def message(self, text: str, style: str | None = None) -> None:
        """A line that stays (warnings, errors), printed above the live view."""
        if self.quiet:
            return
        if self._console is not None:
            from rich.text import Text

            self._console.print(Text(text, style=style or ""))
        else:
            print(text, file=self.stream, flush=True)

    def tick(self, force: bool = False) -> None:
        """Called often; plain mode prints a status block every ``plain_interval_s``."""
        if self.quiet or self._live is not None:
            return
        self._print_plain(force)

    # ------------------------------------------------------------------ views
    def ended(self) -> int:
        return sum(self.counts.get(s.value, 0) for s in (Status.FINISHED, Status.DIVERGED, Status.PRUNED, Status.ERRORED))

    def study_eta(self, now: float) -> float | None:
        """Remaining run time of the running trials plus the pending ones, over the concurrency."""
        if not self.running and not self.total_runs:
            return None
        concurrency = max(1, len(self.running))
        remaining = 0.0
        for state in self.running.values():
            eta = state.eta(now)
            if eta is None:
                return None
            remaining += eta
        if self.total_runs:
            pending = max(0, self.total_runs - self.ended() - len(self.running))
            if pending:
                if not (self.mean_seconds_per_step and self.iterations_per_run):
                    return None
                remaining += pending * self.iterations_per_run * self.mean_seconds_per_step
        return remaining / concurrency

    def summary_line(self, now: float) -> str:
        if self.single_run:
            return f"{self.title} | ETA {format_duration(self.study_eta(now))}"
        c = self.counts
        done = self.ended()
        total = f"/{self.total_runs}" if self.total_runs else ""
        parts = [
            f"{self.title}: {done}{total} done",
            f"{len(self.running)} running" + (f", {len(self.waiting)} waiting for resources" if self.waiting else ""),
            ", ".join(f"{c.get(s.value, 0)} {s.value}" for s in
                      (Status.FINISHED, Status.PRUNED, Status.DIVERGED, Status.ERRORED)),
        ]
        if self.objective:
            parts.append(
                f"best {self.objective} {self.best[0]:.4g} ({self.best[1]})" if self.best
                else f"best {self.objective}: -"
            )
        parts.append(f"ETA {format_duration(self.study_eta(now))}")
        return " | ".join(parts)

    def run_line(self, state: RunState, now: float) -> str:
        if state.seconds_per_step:
            speed = f"{state.seconds_per_step * 1000:.0f} ms/step"
        else:
            speed = f"waiting for resources: {state.waiting}" if state.waiting else "starting"
        objective = f" | {self.objective} {state.objective:.4g}" if state.objective is not None else ""
        return (f"  {state.label}: it {state.iteration}/{state.total} | {speed} | "
                f"ETA {format_duration(state.eta(now))}{objective}")

    def _shown(self) -> list[RunState]:
        return [*self.running.values(), *self.waiting.values()]

    def _print_plain(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_plain < self.plain_interval_s:
            return
        lines = [self.summary_line(now), *(self.run_line(s, now) for s in self._shown())]
        if force and lines == self._last_lines:
            return  # nothing new to say
        self._last_plain = now
        self._last_lines = lines
        lines[0] = f"[{time.strftime('%H:%M:%S')}] {lines[0]}"
        print("\n".join(lines), file=self.stream, flush=True)

    def render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        now = time.monotonic()
        table = Table(title=self.summary_line(now), title_justify="left", expand=False,
                      show_edge=False, pad_edge=False)
        for name, justify in (("trial", "left"), ("progress", "left"), ("iteration", "right"),
                              ("ms/step", "right"), ("ETA", "right"), (self.objective or "", "right")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for state in self._shown():
            table.add_row(
                state.label,
                f"waiting for resources: {state.waiting}" if state.waiting
                else ProgressBar(total=max(1, state.total), completed=state.iteration, width=20),
                f"{state.iteration}/{state.total}",
                f"{state.seconds_per_step * 1000:.0f}" if state.seconds_per_step else "-",
                format_duration(state.eta(now)),
                f"{state.objective:.4g}" if state.objective is not None else "-",
            )
        return table
