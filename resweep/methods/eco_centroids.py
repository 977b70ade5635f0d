"""ECO's teacher and its centroid cache (used by :mod:`resweep.methods.eco`).

Teacher: a pretrained SR network ``F_pre`` given as a resweep checkpoint, a plain weights
file + model name, the output folder of ``resweep train`` (its latest checkpoint), or an
experiment config trained here on first use (under a file lock, cached by the config's hash).

Centroids: ``ŷc = F_pre(x)`` for every WHOLE training image (``TrainPatchDataset.full_pair``,
so x, y, ŷc and D(ŷc) share one pixel grid), computed once per (teacher weights, dataset,
task) and shared by every trial of a sweep::

    <cache_dir>/eco/<key>/manifest.json    what was computed (teacher, data, task, per-image sizes)
                          centroid.npy     ŷc of all images, flattened and concatenated (uint8/f16/f32)
                          centroid_lr.npy  D(ŷc), float32, computed from the *stored* ŷc
                          clean_lr.npy     D(y), float32 (noisy tasks only: recovers the noise draw)
    <cache_dir>/eco/<key>.lock             fcntl lock: one process computes, the others wait
    <cache_dir>/eco/events.jsonl           one line per hit / computation (which process, when)
    <cache_dir>/eco/teachers/<hash>/       teachers trained from a config (checkpoint.pt, config.yaml)

``cache_dir`` is the run's ``MethodContext.cache_dir``: a study's ``<study>/cache`` (shared by
its trials), else ``$RESWEEP_CACHE`` or ``~/.cache/resweep``.

One flat file per kind keeps three file descriptors open however many images there are; the
files are memory-mapped, so a crop reads only its pixels. An entry is written into a temporary
folder and renamed into place, so a reader never sees a partial entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from resweep.degradations.imresize import bicubic_downsample
from resweep.engine.checkpoint import (
    CHECKPOINT_FILE,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from resweep.errors import ConfigError, ResweepError

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig
    from resweep.data.datasets import TrainPatchDataset

CACHE_VERSION = 1
CentroidDtype = Literal["uint8", "float16", "float32"]
_NP_DTYPES = {"uint8": np.uint8, "float16": np.float16, "float32": np.float32}

#: In-process counters (tests and benchmarks read them): teacher images run, forward passes,
#: cache entries computed / reused, teachers trained / reused.
STATS: dict[str, int] = {
    "teacher_images": 0,
    "teacher_forward_passes": 0,
    "computed": 0,
    "hits": 0,
    "teachers_trained": 0,
    "teacher_hits": 0,
}

Log = Callable[[str], None]


# --------------------------------------------------------------------------- small helpers
def _sha256_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def file_lock(path: Path, log: Log | None = None, what: str = "") -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path`` (created if needed), across processes.

    flock is advisory and per open file; it works on local disks and most NFS setups with
    lockd, not on every network filesystem.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"eco: waiting for another process {what} ({path.name})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def log_event(root: Path, event: str, **fields: Any) -> None:
    """Append one JSON line to ``root/events.jsonl`` (O_APPEND: lines of concurrent writers
    do not interleave on local filesystems)."""
    root.mkdir(parents=True, exist_ok=True)
    record = {"event": event, "time": time.time(), "pid": os.getpid(), "host": socket.gethostname(), **fields}
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(root / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(cache_dir: str | Path) -> list[dict[str, Any]]:
    """The hit / computation log of ``cache_dir/eco`` (empty if none)."""
    path = Path(cache_dir) / "eco" / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fresh_tmp(root: Path, key: str) -> Path:
    """A new temporary folder for entry ``key``; called under the entry's lock, so any older
    ``.tmp-<key>-*`` folder is what a killed process left behind, and is removed."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".tmp-{key}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{key}-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared
    return tmp


def _commit_dir(tmp: Path, final: Path) -> None:
    """Rename a finished temporary folder into place (atomic on one filesystem)."""
    try:
        os.rename(tmp, final)
    except OSError:
        # Someone else won (only possible without a working lock): keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise


# --------------------------------------------------------------------------- teacher
@dataclass
class ResolvedTeacher:
    """Weights and architecture of the teacher, with a content hash of the weights."""

    model_name: str
    model_kwargs: dict[str, Any]
    scale: int
    state: dict[str, Tensor]
    source: str  # where it came from, for messages and the manifest
    weights_sha256: str = ""
    trained_task: str | None = None  # the teacher's own task kind, when its config is known

    def __post_init__(self) -> None:
        if not self.weights_sha256:
            self.weights_sha256 = weights_fingerprint(self.state)

    def build(self, device: torch.device) -> nn.Module:
        from resweep.models import create_model

        model = create_model(self.model_name, scale=self.scale, **self.model_kwargs)
        try:
            model.load_state_dict(self.state)
        except RuntimeError as exc:
            raise ResweepError(
                f"eco teacher {self.source}: weights do not fit model '{self.model_name}' "
                f"{self.model_kwargs or ''}: {exc}"
            ) from None
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


def weights_fingerprint(state: dict[str, Tensor]) -> str:
    """sha256 of the weights' content (names, dtypes, shapes, bytes), not of any file path."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _weights_from_checkpoint(state: dict[str, Any], use_ema: bool) -> dict[str, Tensor]:
    ema = state.get("ema")
    if use_ema and isinstance(ema, dict) and ema:
        # ModelEma keeps the averaged network under 'module.'; those are the evaluated weights.
        return {k.removeprefix("module."): v for k, v in ema.items()}
    return {k.removeprefix("module."): v for k, v in state["model"].items()}


def teacher_from_checkpoint(path: Path, *, use_ema: bool, field: str) -> ResolvedTeacher:
    """A resweep checkpoint (folder or file); the architecture comes from its stored config."""
    try:
        state = load_checkpoint(path)
    except ResweepError as exc:
        raise ConfigError(str(exc), field=field) from None
    cfg = state.get("config")
    if not isinstance(cfg, dict) or "model" not in cfg or "task" not in cfg:
        raise ConfigError(
            f"checkpoint {path} stores no experiment config (model/task); use "
            "teacher.weights + teacher.model instead",
            field=field,
        )
    return ResolvedTeacher(
        model_name=str(cfg["model"]["name"]),
        model_kwargs=dict(cfg["model"].get("kwargs") or {}),
        scale=int(cfg["task"].get("scale", 1)),
        state=_weights_from_checkpoint(state, use_ema),
        source=f"checkpoint {path} (iteration {state.get('iteration')})",
        trained_task=cfg["task"].get("kind"),
    )


_CKPT_NUMBER = re.compile(r"(\d+)$")


def latest_checkpoint(run_dir: Path, *, field: str = "teacher.run_dir") -> Path:
    """The newest ``checkpoint.pt`` of a ``resweep train`` output folder (or a study trial's
    folder): the one ``result.json`` names, else the highest-numbered ``checkpoint_*`` folder.
    A folder holding several runs' checkpoints is ambiguous and refused."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder not found: {run_dir}", field=field)
    result = run_dir / "result.json"
    if result.is_file():
        with contextlib.suppress(ValueError, OSError):
            named = json.loads(result.read_text()).get("checkpoint")
            if named and (Path(named) / CHECKPOINT_FILE).is_file():
                return Path(named) / CHECKPOINT_FILE
    found = [
        p
        for p in run_dir.rglob(CHECKPOINT_FILE)
        if not any(part.startswith(".") for part in p.relative_to(run_dir).parts)
    ]
    if not found:
        raise ConfigError(f"no {CHECKPOINT_FILE} under {run_dir}: has the run saved a checkpoint yet?", field=field)
    runs = sorted({p.parent.parent for p in found})
    if len(runs) > 1:
        shown = ", ".join(str(r) for r in runs[:4]) + (" ..." if len(runs) > 4 else "")
        raise ConfigError(
            f"{run_dir} holds the checkpoints of {len(runs)} runs ({shown}); "
            "point teacher.run_dir at one of them or teacher.checkpoint at one checkpoint",
            field=field,
        )

    def order(p: Path) -> tuple[int, float]:
        m = _CKPT_NUMBER.search(p.parent.name)
        return (int(m.group(1)) if m else -1, p.stat().st_mtime)

    return max(found, key=order)


def teacher_from_weights(
    path: Path, model: str, model_kwargs: dict[str, Any], scale: int, *, field: str
) -> ResolvedTeacher:
    try:
        state = load_model_weights(path)
    except ResweepError as exc:
        raise ConfigError(str(exc), field=field) from None
    return ResolvedTeacher(model, dict(model_kwargs), scale, state, source=f"weights {path} ({model})")


def load_teacher_config(train: dict[str, Any]) -> ExperimentConfig:
    """The experiment config of a teacher to train (``methods.eco.teacher.train``)."""
    from resweep.config import ExperimentConfig

    return ExperimentConfig.from_dict(train, source="methods.eco.teacher.train")


# Keys that do not change the trained weights: renaming or re-logging a teacher reuses it.
_NON_WEIGHT_KEYS = ("name", "eval", "train.log_every", "train.checkpoint_every", "train.checkpoints_to_keep")


def teacher_config_hash(config: ExperimentConfig) -> str:
    data = config.to_dict()
    for dotted in _NON_WEIGHT_KEYS:
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return _sha256_json({"version": CACHE_VERSION, "config": data})[:16]


def train_teacher(
    config: ExperimentConfig, *, cache_dir: Path, device: torch.device, log: Log = print
) -> Path:
    """Train ``config`` with the engine once per config hash and return its checkpoint file.

    Concurrent callers (trials in other processes) block on a file lock while the first one
    trains; the global RNG state is forked so the calling run's randomness does not depend on
    whether it trained the teacher or found it cached.
    """
    from resweep.engine.trainer import STATUS_FINISHED, Trainer
    from resweep.methods.base import World

    root = Path(cache_dir) / "eco" / "teachers"
    key = teacher_config_hash(config)
    entry = root / key
    ckpt = entry / CHECKPOINT_FILE
    if ckpt.is_file():
        STATS["teacher_hits"] += 1
        log_event(root.parent, "teacher_hit", teacher=key)
        return ckpt
    with file_lock(root / f"{key}.lock", log, f"training teacher {key}"):
        if ckpt.is_file():
            STATS["teacher_hits"] += 1
            log_event(root.parent, "teacher_hit", teacher=key, waited=True)
            return ckpt
        log(f"eco: training the teacher '{config.name}' ({config.model.name}, "
            f"{config.train.iterations} iterations) -> {entry}")
        start = time.perf_counter()
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            trainer = Trainer(
                config,
                world=World(device=device),
                cache_dir=Path(cache_dir),
                log=lambda msg: log(f"[eco teacher] {msg}"),
            )
            outcome = trainer.fit()
            if outcome.status != STATUS_FINISHED:
                raise ResweepError(
                    f"eco: training the teacher '{config.name}' ended '{outcome.status}' at "
                    f"iteration {outcome.iteration}; fix its config (methods.eco.teacher.train)"
                )
            state = trainer.state_dict()
        tmp = _fresh_tmp(root, key)
        try:
            save_checkpoint(state, tmp)
            config.save(tmp / "config.yaml")
            (tmp / "result.json").write_text(
                json.dumps(
                    {"status": outcome.status, "iteration": outcome.iteration, "metrics": outcome.metrics,
                     "seconds": time.perf_counter() - start},
                    indent=2, default=str,
                )
            )
            _commit_dir(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        STATS["teachers_trained"] += 1
        log_event(root.parent, "teacher_trained", teacher=key, seconds=time.perf_counter() - start)
    return ckpt


# --------------------------------------------------------------------------- dataset identity
def _file_stats(paths: list[Path]) -> list[list[Any]]:
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([Path(p).name, st.st_size, st.st_mtime_ns])
    return out


def lr_sizes(dataset: TrainPatchDataset) -> list[tuple[int, int]]:
    """LR ``(h, w)`` of every whole image, as ``full_pair`` produces it (no decoding)."""
    src, s = dataset.source, dataset.scale
    if dataset.paired:
        return [tuple(src.lq_hw(i)) for i in range(len(src))]  # type: ignore[attr-defined,misc]
    return [(h // s, w // s) for h, w in (src.image_hw(i) for i in range(len(src)))]


def dataset_identity(dataset: TrainPatchDataset) -> dict[str, Any]:
    """What makes two training sets the same for the centroids: the source kind, image names
    and sizes, and a content fingerprint (file sizes + mtimes; pixels where there are no files)."""
    src = dataset.source
    names = [src.image_name(i) for i in range(len(src))]
    files: list[Path] | None = None
    if getattr(src, "pairs", None) is not None:
        files = [p for _, lq, gt in src.pairs for p in (lq, gt)]  # type: ignore[attr-defined]
    elif getattr(src, "files", None) is not None:
        files = list(src.files)  # type: ignore[attr-defined]
    elif isinstance(getattr(src, "path", None), (str, Path)) and Path(src.path).is_file():  # type: ignore[attr-defined]
        files = [Path(src.path)]  # type: ignore[attr-defined]
    if files is not None:
        content = {"files": _file_stats(files)}
    else:
        h = hashlib.sha256()
        for i in range(len(src)):
            h.update(src.load(i).numpy().tobytes())
        content = {"pixels_sha256": h.hexdigest()}
    return {
        "source": type(src).__name__,
        "paired": bool(dataset.paired),
        "count": len(src),
        "names": names,
        "lr_sizes": [list(hw) for hw in lr_sizes(dataset)],
        "content_sha256": _sha256_json(content),
    }


# --------------------------------------------------------------------------- the store
class CentroidStore:
    """A finished cache entry, read through memory maps (opened lazily in each process)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest: dict[str, Any] = json.loads((self.path / "manifest.json").read_text())
        self.scale = int(self.manifest["scale"])
        self.lr_hw = [tuple(hw) for hw in self.manifest["lr_sizes"]]
        self.has_clean_lr = bool(self.manifest["clean_lr"])
        self.dtype: str = self.manifest["centroid_dtype"]
        s2 = self.scale * self.scale
        lr_sizes = [3 * h * w for h, w in self.lr_hw]
        self._lr_off = np.concatenate([[0], np.cumsum(lr_sizes)]).astype(np.int64)
        self._hr_off = self._lr_off * s2
        self._maps: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.lr_hw)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers re-open the maps; pickling a memmap would copy the whole file.
        return {**self.__dict__, "_maps": {}}

    def _map(self, kind: str) -> np.ndarray:
        if kind not in self._maps:
            self._maps[kind] = np.load(self.path / f"{kind}.npy", mmap_mode="r")
        return self._maps[kind]

    def _image(self, kind: str, i: int) -> np.ndarray:
        h, w = self.lr_hw[i]
        if kind == "centroid":
            s = self.scale
            return self._map(kind)[self._hr_off[i] : self._hr_off[i + 1]].reshape(3, h * s, w * s)
        return self._map(kind)[self._lr_off[i] : self._lr_off[i + 1]].reshape(3, h, w)

    def centroid(self, i: int) -> Tensor:
        """ŷc of image ``i`` as float32 in [0, 1] (whole image: a copy; crops go through ``view``)."""
        return to_float(np.array(self._image("centroid", i)), self.dtype)

    def centroid_lr(self, i: int) -> Tensor:
        return torch.from_numpy(np.array(self._image("centroid_lr", i)))

    def clean_lr(self, i: int) -> Tensor:
        return torch.from_numpy(np.array(self._image("clean_lr", i)))

    def view(self, kind: str, i: int) -> MappedImage:
        """A lazily cropped view (``crop_aligned`` slices it; only the crop is read)."""
        return MappedImage(self._image(kind, i), self.dtype if kind == "centroid" else "float32")


def to_float(arr: np.ndarray, dtype: str) -> Tensor:
    """Stored centroid values (a writable array, not a read-only map) -> float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.float().div_(255.0) if dtype == "uint8" else t.float()


class MappedImage:
    """A ``(3, H, W)`` memory-mapped array that ``crop_aligned`` can slice like a tensor."""

    def __init__(self, arr: np.ndarray, dtype: str):
        self.arr, self.dtype = arr, dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.arr.shape)

    def __getitem__(self, key: Any) -> Tensor:
        return to_float(np.array(self.arr[key]), self.dtype)


# --------------------------------------------------------------------------- computation
def teacher_forward(model: nn.Module, lq: Tensor, scale: int, tile: int, overlap: int) -> Tensor:
    """``model(lq)`` for a ``(3, h, w)`` image, in LR tiles of side ``tile`` when the image is
    larger, so memory does not grow with the image. Neighbouring tiles overlap by ``overlap``
    pixels and each keeps only the part at least ``overlap // 2`` from its inner edges, so the
    result equals a whole-image pass wherever the network's receptive radius is within
    ``overlap // 2`` (zero padding only ever happens at the image's own border)."""
    c, h, w = lq.shape
    if h <= tile and w <= tile:
        STATS["teacher_forward_passes"] += 1
        return model(lq.unsqueeze(0)).squeeze(0).float()
    stride, half = max(1, tile - overlap), overlap // 2

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        out = list(range(0, n - tile + 1, stride))
        if out[-1] != n - tile:
            out.append(n - tile)
        return out

    def valid(start: int, size: int, n: int) -> tuple[int, int]:
        return start + (half if start > 0 else 0), start + size - (half if start + size < n else 0)

    out = torch.empty(c, h * scale, w * scale, device=lq.device)
    th, tw = min(tile, h), min(tile, w)
    for y in starts(h):
        for x in starts(w):
            pred = model(lq[:, y : y + th, x : x + tw].unsqueeze(0)).squeeze(0).float()
            STATS["teacher_forward_passes"] += 1
            (y0, y1), (x0, x1) = valid(y, th, h), valid(x, tw, w)
            out[:, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = pred[
                :, (y0 - y) * scale : (y1 - y) * scale, (x0 - x) * scale : (x1 - x) * scale
            ]
    return out


def quantize_centroid(sr: Tensor, dtype: str) -> np.ndarray:
    sr = sr.clamp(0.0, 1.0).cpu()
    if dtype == "uint8":
        return sr.mul(255.0).round().to(torch.uint8).numpy()
    return sr.numpy().astype(_NP_DTYPES[dtype])


def downsample_exact(img: Tensor, scale: int) -> Tensor:
    """D(img) in float64, one channel at a time (bounded memory on 2K images), as float32."""
    channels = [bicubic_downsample(img[c : c + 1].double(), scale) for c in range(img.shape[0])]
    return torch.cat(channels).float()


@dataclass
class CentroidRequest:
    """Everything the cache key depends on, plus how to compute a missing entry."""

    dataset: TrainPatchDataset
    teacher: ResolvedTeacher
    task: dict[str, Any]  # the task settings that change x (kind, scale, noise, quantisation)
    teacher_input: Literal["task", "clean"] = "task"
    centroid_dtype: CentroidDtype = "uint8"
    clean_lr: bool = False  # also store D(y), to recover the noise of noisy tasks
    tile: int = 256
    tile_overlap: int = 16
    identity: dict[str, Any] = field(default_factory=dict)

    def key_data(self) -> dict[str, Any]:
        if not self.identity:
            self.identity = dataset_identity(self.dataset)
        return {
            "version": CACHE_VERSION,
            "teacher": {
                "weights_sha256": self.teacher.weights_sha256,
                "model": self.teacher.model_name,
                "kwargs": self.teacher.model_kwargs,
                "tile": self.tile,
                "tile_overlap": self.tile_overlap,
            },
            "dataset": {k: v for k, v in self.identity.items()},
            "task": self.task,
            "teacher_input": self.teacher_input,
            "centroid_dtype": self.centroid_dtype,
            "clean_lr": self.clean_lr,
        }

    def key(self) -> str:
        return _sha256_json(self.key_data())[:20]


def ensure_centroids(
    request: CentroidRequest,
    *,
    cache_dir: Path,
    device: torch.device,
    log: Log = print,
    progress: bool = True,
) -> CentroidStore:
    """The cache entry of ``request``: reused if present, else computed once (file-locked)."""
    root = Path(cache_dir) / "eco"
    key = request.key()
    entry = root / key
    if (entry / "manifest.json").is_file():
        STATS["hits"] += 1
        log_event(root, "hit", key=key)
        return _checked(CentroidStore(entry), request)
    with file_lock(root / f"{key}.lock", log, f"computing centroids {key}"):
        if (entry / "manifest.json").is_file():
            STATS["hits"] += 1
            log_event(root, "hit", key=key, waited=True)
            return _checked(CentroidStore(entry), request)
        tmp = _fresh_tmp(root, key)
        try:
            manifest = _compute(request, tmp, key=key, device=device, log=log, progress=progress)
            _commit_dir(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        STATS["computed"] += 1
        log_event(root, "computed", key=key, images=manifest["computed_images"],
                  seconds=manifest["seconds"])
    return _checked(CentroidStore(entry), request)


def _checked(store: CentroidStore, request: CentroidRequest) -> CentroidStore:
    sizes = [tuple(hw) for hw in request.identity["lr_sizes"]]
    if store.lr_hw != sizes:
        raise ResweepError(f"eco centroid cache {store.path} does not match the training set; delete it")
    return store


def _compute(
    request: CentroidRequest, out: Path, *, key: str, device: torch.device, log: Log, progress: bool
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    ds, teacher = request.dataset, request.teacher
    s = ds.scale
    sizes = [tuple(hw) for hw in request.identity["lr_sizes"]]
    n_lr = sum(3 * h * w for h, w in sizes)
    np_dtype = _NP_DTYPES[request.centroid_dtype]
    open_mm = np.lib.format.open_memmap
    centroid = open_mm(out / "centroid.npy", mode="w+", dtype=np_dtype, shape=(n_lr * s * s,))
    centroid_lr = open_mm(out / "centroid_lr.npy", mode="w+", dtype=np.float32, shape=(n_lr,))
    clean_lr = (
        open_mm(out / "clean_lr.npy", mode="w+", dtype=np.float32, shape=(n_lr,)) if request.clean_lr else None
    )
    log(f"eco: computing centroids of {len(ds)} image(s) with the teacher ({teacher.source}) -> {out.parent / key}")
    start = time.perf_counter()
    passes_before = STATS["teacher_forward_passes"]
    model = teacher.build(device)
    lr_off = hr_off = 0
    bar = tqdm(range(len(ds)), desc="eco centroids", unit="img", disable=not progress, mininterval=1.0)
    with torch.no_grad():
        for i in bar:
            pair = ds.full_pair(i)
            gt = pair["gt"]
            lq = pair["lq"] if request.teacher_input == "task" else bicubic_downsample(gt, s)
            h, w = sizes[i]
            if tuple(lq.shape[-2:]) != (h, w) or tuple(gt.shape[-2:]) != (h * s, w * s):
                raise ResweepError(
                    f"eco: {ds.source.describe(i)} has LR {tuple(lq.shape[-2:])} / GT "
                    f"{tuple(gt.shape[-2:])}, expected {(h, w)} / {(h * s, w * s)}"
                )
            sr = teacher_forward(model, lq.to(device), s, request.tile, request.tile_overlap)
            STATS["teacher_images"] += 1
            stored = quantize_centroid(sr, request.centroid_dtype)
            m = stored.size
            centroid[hr_off : hr_off + m] = stored.reshape(-1)
            # D(ŷc) from the *stored* centroid: the blend then satisfies D(y_t) = x_t exactly.
            c_lr = downsample_exact(to_float(stored, request.centroid_dtype), s)
            centroid_lr[lr_off : lr_off + c_lr.numel()] = c_lr.numpy().reshape(-1)
            if clean_lr is not None:
                y_lr = downsample_exact(gt, s)
                clean_lr[lr_off : lr_off + y_lr.numel()] = y_lr.numpy().reshape(-1)
            hr_off += m
            lr_off += c_lr.numel()
    for arr in (centroid, centroid_lr, clean_lr):
        if arr is not None:
            arr.flush()
    del centroid, centroid_lr, clean_lr
    seconds = time.perf_counter() - start
    key_data = request.key_data()
    manifest = {
        "key": key,
        "version": CACHE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "seconds": seconds,
        "computed_images": len(ds),
        "teacher_forward_passes": STATS["teacher_forward_passes"] - passes_before,
        "teacher_source": teacher.source,
        "teacher_trained_task": teacher.trained_task,
        "scale": s,
        "centroid_dtype": request.centroid_dtype,
        "clean_lr": request.clean_lr,
        "lr_sizes": [list(hw) for hw in sizes],
        "key_data": key_data,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    log(f"eco: centroids of {len(ds)} image(s) computed in {seconds:.1f} s")
    return manifest
