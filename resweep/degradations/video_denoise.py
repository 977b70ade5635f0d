"""Video denoising: Gaussian noise on every frame of a clip, one sigma per clip.

The network input of a video task is one 4-D tensor, so the image engine (batches, DDP,
channels-last, methods) runs unchanged: a window of T noisy frames is *packed* along the
channel axis in temporal order, followed by one noise-level map (FastDVDnet's input)::

    packed = [frame_0 (3 ch), frame_1 (3 ch), ..., frame_{T-1} (3 ch), sigma map (1 ch)]

:func:`pack_window` / :func:`unpack_window` are the one definition of that layout; models of
task ``video_denoise`` (``resweep.models.fastdvdnet``) and the clip evaluation read it
through them. The target is the window's centre frame ``(3, H, W)``, or with
``task.video.target = "all"`` every frame stacked the same way ``(3T, H, W)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from resweep.degradations.tasks import Task, quantize_8bit, register_task

__all__ = ["VideoDenoise", "pack_window", "unpack_window", "window_indices"]

FRAME_CHANNELS = 3


def pack_window(frames: Tensor, sigma: float | Tensor) -> Tensor:
    """``(T, 3, H, W)`` or ``(B, T, 3, H, W)`` frames plus sigma (in [0, 1] units; a float or
    a ``(B,)`` tensor) -> ``(3T + 1, H, W)`` / ``(B, 3T + 1, H, W)``."""
    batched = frames.dim() == 5
    if frames.dim() not in (4, 5) or frames.shape[-3] != FRAME_CHANNELS:
        raise ValueError(f"expected (T, 3, H, W) or (B, T, 3, H, W) frames, got {tuple(frames.shape)}")
    f = frames if batched else frames.unsqueeze(0)
    b, t, c, h, w = f.shape
    sig = torch.as_tensor(sigma, dtype=f.dtype, device=f.device).reshape(-1)
    if sig.numel() == 1:
        sig = sig.expand(b)
    noise_map = sig.view(b, 1, 1, 1).expand(b, 1, h, w)
    packed = torch.cat([f.reshape(b, t * c, h, w), noise_map], dim=1)
    return packed if batched else packed.squeeze(0)


def unpack_window(packed: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack_window` for batched input: ``(B, 3T+1, H, W)`` ->
    ``(frames (B, T, 3, H, W), noise map (B, 1, H, W))``, with a clear error on a mismatch."""
    expected = FRAME_CHANNELS * num_frames + 1
    if packed.dim() != 4 or packed.shape[1] != expected:
        raise ValueError(
            f"expected a packed window of {num_frames} frames, shape (B, {expected}, H, W) "
            f"(3 channels per frame + 1 noise map), got {tuple(packed.shape)}"
        )
    b, _, h, w = packed.shape
    frames = packed[:, :-1].reshape(b, num_frames, FRAME_CHANNELS, h, w)
    return frames, packed[:, -1:]


def window_indices(centre: int, num_frames: int, clip_length: int) -> list[int]:
    """Frame indices of the ``num_frames`` window centred on ``centre``, mirrored at the clip
    ends (FastDVDnet's test protocol: frame -1 is frame 1), clamped for very short clips."""
    half = num_frames // 2
    last = clip_length - 1
    out = []
    for i in range(centre - half, centre + half + 1):
        if i < 0:
            i = -i
        elif i > last:
            i = 2 * last - i
        out.append(min(max(i, 0), last))
    return out


@register_task
class VideoDenoise(Task):
    """Additive white Gaussian noise on every frame of a clip, sigma on the 8-bit scale:
    ``noise_sigma``, or drawn once per clip uniformly from ``video.noise_sigma_range``."""

    kind = "video_denoise"
    allowed_scales = (1,)  # read by the task registry of the stages branch
    is_video = True

    @property
    def num_frames(self) -> int:
        return int(self.config.video.num_frames)

    @property
    def target(self) -> str:
        return str(self.config.video.target)

    @property
    def is_deterministic(self) -> bool:
        rng = self.config.video.noise_sigma_range
        return (rng[1] if rng is not None else self.config.noise_sigma) == 0

    def draw_sigma(self, generator: torch.Generator) -> float:
        """Sigma of one clip on the 8-bit scale (drawn only with a range)."""
        rng = self.config.video.noise_sigma_range
        if rng is None:
            return float(self.config.noise_sigma)
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return rng[0] + (rng[1] - rng[0]) * u

    def degrade_clip(
        self, frames: Tensor, generator: torch.Generator, sigma_8bit: float | None = None
    ) -> tuple[Tensor, float]:
        """``(N, 3, H, W)`` clean frames -> ``(noisy frames, sigma / 255)``: one sigma per clip
        (``sigma_8bit``, else the task's), independent noise per pixel, channel and frame;
        8-bit rounding if configured."""
        if frames.dim() != 4 or frames.shape[1] != FRAME_CHANNELS:
            raise ValueError(f"expected (N, 3, H, W) frames, got {tuple(frames.shape)}")
        sigma = (self.draw_sigma(generator) if sigma_8bit is None else float(sigma_8bit)) / 255.0
        noisy = frames
        if sigma > 0:
            noise = torch.randn(frames.shape, generator=generator, dtype=frames.dtype, device="cpu")
            noisy = frames + sigma * noise.to(frames.device)
        if self.config.quantize_input:
            noisy = quantize_8bit(noisy)
        return noisy, sigma

    def _degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        # Task.degrade on a 4-D tensor: its first axis is read as the frames of one clip.
        if hr.dim() == 3:
            return self.degrade_clip(hr.unsqueeze(0), generator)[0].squeeze(0)
        return self.degrade_clip(hr, generator)[0]

    def degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        # degrade_clip rounds itself (the base class would round a second time: harmless, but
        # one place states the rule).
        if not hr.is_floating_point():
            raise TypeError(f"degrade needs a float image in [0, 1], got {hr.dtype}")
        return self._degrade(hr, generator)

    def target_of(self, window: Tensor) -> Tensor:
        """The training target of a ``(T, 3, H, W)`` clean window: its centre frame
        ``(3, H, W)``, or all frames packed as ``(3T, H, W)``."""
        if self.target == "centre":
            return window[window.shape[0] // 2]
        return window.reshape(-1, *window.shape[-2:])

    def baseline(self, lq: Tensor) -> Tensor:
        """The no-learning reference: the noisy frame(s) the target stands for."""
        batched = lq if lq.dim() == 4 else lq.unsqueeze(0)
        frames, _ = unpack_window(batched, self.num_frames)
        if self.target == "centre":
            out = frames[:, self.num_frames // 2]
        else:
            out = frames.reshape(frames.shape[0], -1, *frames.shape[-2:])
        out = out.clone()
        return out if lq.dim() == 4 else out.squeeze(0)
