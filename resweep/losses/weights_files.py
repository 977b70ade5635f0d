"""Finding and reading a local pretrained-weights file (VGG, ResNet, MAE encoders).

Nothing is ever downloaded: a file is looked for at the explicit path given in the config, else
at ``$<env var>``, else in caches where a download elsewhere would have put it (torch hub,
Hugging Face hub). When none exists the caller's :class:`WeightsNotFoundError` lists every path
tried and says which knob or variable provides the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from resweep.errors import ResweepError, WeightsNotFoundError

# (how the place was named, path): how a candidate shows in the refusal.
Candidate = tuple[str, Path]


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint cache, where torchvision puts downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def candidate_files(
    explicit: str | Path | None, env_var: str, cache_files: Sequence[Candidate]
) -> list[Candidate]:
    """Where weights are looked for, in order: the explicit path alone, else ``$env_var`` and caches."""
    if explicit is not None:
        # An explicit path that does not exist is a mistake: never silently look elsewhere.
        return [("argument", Path(explicit).expanduser())]
    found: list[Candidate] = []
    env = os.environ.get(env_var)
    if env:
        found.append((f"${env_var}", Path(env).expanduser()))
    return found + list(cache_files)


def find_weights_file(
    candidates: Sequence[Candidate],
    explicit: bool,
    explicit_missing: Callable[[str], str],
    none_found: Callable[[str], str],
) -> Path:
    """The first existing candidate, or :class:`WeightsNotFoundError` listing what was tried.

    ``explicit_missing(tried)`` / ``none_found(tried)`` build the message (``tried`` is one
    indented line per candidate) for an explicit path that is missing / for no file anywhere.
    """
    for _, path in candidates:
        if path.is_file():
            return path
    tried = "\n".join(f"  - {path} ({how})" for how, path in candidates)
    raise WeightsNotFoundError(explicit_missing(tried) if explicit else none_found(tried))


def weights_or_random(resolve: Callable[[], Path], explicit: bool, allow_random: bool) -> Path | None:
    """``resolve()``, or ``None`` (random weights) when no file exists and that is allowed.

    A missing explicit path is always refused: random weights stand in only for a file that was
    not named.
    """
    try:
        return resolve()
    except WeightsNotFoundError:
        if not allow_random or explicit:
            raise
        return None


def load_state_mapping(path: Path, what: str, nested_keys: Sequence[str]) -> Mapping:
    """The state dict in a ``.safetensors`` or torch file (``weights_only``), unwrapped.

    Checkpoints sometimes nest the weights (timm train scripts, lightning, BasicSR, the MAE
    authors): the first of ``nested_keys`` that holds a mapping is taken instead.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise several types for bad files
        raise ResweepError(f"cannot load {what} weights {path}: {exc}") from exc
    for key in nested_keys:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise ResweepError(f"{path} holds no state dict (got {type(state).__name__})")
    return state
