"""Spatiotemporal masked autoencoder (MAE-ST, Feichtenhofer et al. 2022) from timm's parts.

A clip ``(B, T, 3, H, W)`` is cut into tubelets of ``t`` frames x ``p`` x ``p`` pixels, each
embedded by one 3-D convolution (kernel = stride = tubelet) into a token. Masking is random
*per tubelet* (MAE-ST's default, ratio 0.9): every tubelet is hidden or seen as a whole, and
the hidden ones differ from one time slot to the next (not "tube" masking, which would hide
the same spatial patch in every frame). The encoder (timm ``Block``s) sees the visible tokens
only; the lighter decoder gets them back with a shared mask token at every hidden position
and predicts the hidden tubelets' pixels; the loss is the MSE on the hidden tubelets, against
per-tubelet normalised pixels by default (``norm_pix_loss``).

Position embeddings are fixed sin-cos, separable as in MAE-ST (a third of the channels from the
time index, two thirds from the 2-D patch position) and computed for the clip's own token grid,
so any ``T``/``H``/``W`` works: ``T`` is padded to a multiple of ``t`` by repeating the last
frame, ``H``/``W`` to multiples of ``p`` by reflection.

Frames enter in [0, 1] and are normalised with ``arch.pixel_mean``/``pixel_std`` (ImageNet's
statistics by default, as image MAE does; Kinetics' 0.45/0.225 for MAE-ST's released weights).

An encoder loaded from MAE-ST's checkpoints (:mod:`resweep.models.mae_video_weights`) has what
those carry instead of the fixed embedding: *learnt* position embeddings, separable
(``pos_embed: separable``: a spatial table of ``gh*gw`` rows plus a temporal one of ``gt``
rows) or joint (``pos_embed: joint``, one table of ``gt*gh*gw`` rows), resampled to the clip's
own grid (bicubic in space, linear in time) when it differs from the grid they were trained
for (``arch.pos_grid``), and a class token (``cls_token``) that goes through the blocks with
the tubelet tokens. ``num_prefix_tokens`` says how many leading tokens are not tubelets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from timm.models.vision_transformer import Block
from torch import nn

from resweep.models.common import IMAGENET_MEAN, IMAGENET_STD
from resweep.models.mae_vit import init_linear_and_norm, mae_norm_layer, random_keep_ids, sincos_1d

__all__ = [
    "VIDEO_MAE_ARCHS",
    "VideoMae",
    "VideoMaeArch",
    "VideoMaeEncoder",
    "frames_of",
    "random_tubelet_keep_ids",
    "sincos_3d",
]

# Tubelets are masked exactly as MAE masks image patches (per sample, on the CPU generator).
random_tubelet_keep_ids = random_keep_ids


class VideoMaeArch(BaseModel):
    """Size of a spatiotemporal MAE (encoder + decoder)."""

    model_config = ConfigDict(extra="forbid")
    tubelet_frames: int = Field(2, ge=1, description="t: frames per tubelet")
    patch_size: int = Field(16, ge=2, description="p: tubelet side in pixels")
    embed_dim: int = Field(384, ge=12)
    depth: int = Field(6, ge=1)
    num_heads: int = Field(6, ge=1)
    decoder_embed_dim: int = Field(192, ge=12)
    decoder_depth: int = Field(2, ge=1)
    decoder_num_heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    qkv_bias: bool = True
    pos_embed: Literal["sincos", "separable", "joint"] = Field(
        "sincos", description="fixed 3-D sin-cos (ours), or MAE-ST's learnt separable / joint tables"
    )
    pos_grid: tuple[int, int, int] | None = Field(
        None, description="learnt embeddings: the (gt, gh, gw) token grid they were trained for"
    )
    cls_token: bool = Field(False, description="a class token through the blocks (MAE-ST's cls_embed)")
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD


VIDEO_MAE_ARCHS: dict[str, VideoMaeArch] = {
    "tiny": VideoMaeArch(tubelet_frames=2, patch_size=8, embed_dim=48, depth=2, num_heads=2,
                         decoder_embed_dim=24, decoder_depth=1, decoder_num_heads=2),
    "small": VideoMaeArch(),
}


def frames_of(x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
    """``(B, T, 3, H, W)`` from itself or from frames stacked on channels ``(B, 3T, H, W)``
    (the ``target: all`` layout of task ``video_denoise``)."""
    if x.dim() == 5:
        return x
    if x.dim() != 4 or x.shape[1] % 3:
        raise ValueError(f"expected (B, T, 3, H, W) or (B, 3T, H, W) frames, got {tuple(x.shape)}")
    t = x.shape[1] // 3
    if num_frames is not None and t != num_frames:
        raise ValueError(f"expected {num_frames} frames stacked on channels, got {t}")
    return x.reshape(x.shape[0], t, 3, *x.shape[-2:])


def sincos_3d(embed_dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """``(1, gt*gh*gw, D)`` fixed embedding, token order time-major then row-major."""
    if embed_dim % 12:
        raise ValueError(f"3-D sin-cos embedding needs embed_dim divisible by 12, got {embed_dim}")
    gt, gh, gw = grid
    d_time, d_space = embed_dim // 3, embed_dim - embed_dim // 3
    ts, ys, xs = torch.meshgrid(
        torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij"
    )
    emb = torch.cat([
        sincos_1d(d_space // 2, xs), sincos_1d(d_space // 2, ys), sincos_1d(d_time, ts)
    ], dim=1)
    return emb.float().unsqueeze(0)


class VideoMaeEncoder(nn.Module):
    """Tubelet embedding + transformer blocks; ``forward`` returns the visible tokens."""

    def __init__(self, arch: VideoMaeArch) -> None:
        super().__init__()
        if arch.pos_embed != "sincos" and arch.pos_grid is None:
            raise ValueError(f"learnt '{arch.pos_embed}' position embeddings need arch.pos_grid")
        self.arch = arch
        t, p = arch.tubelet_frames, arch.patch_size
        self.tubelet = (t, p, p)
        d = arch.embed_dim
        self.proj = nn.Conv3d(3, d, kernel_size=self.tubelet, stride=self.tubelet)
        self.num_prefix_tokens = int(arch.cls_token)
        if arch.cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.pos_embed_class = nn.Parameter(torch.zeros(1, 1, d))
        if arch.pos_grid is not None and arch.pos_embed == "separable":
            gt, gh, gw = arch.pos_grid
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, gh * gw, d))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, gt, d))
        elif arch.pos_grid is not None and arch.pos_embed == "joint":
            gt, gh, gw = arch.pos_grid
            self.pos_embed = nn.Parameter(torch.zeros(1, gt * gh * gw, d))
        self.blocks = nn.ModuleList(
            Block(d, arch.num_heads, arch.mlp_ratio, qkv_bias=arch.qkv_bias, norm_layer=mae_norm_layer())
            for _ in range(arch.depth)
        )
        self.norm = mae_norm_layer()(d)
        self.register_buffer("mean", torch.tensor(arch.pixel_mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(arch.pixel_std).view(1, 1, 3, 1, 1), persistent=False)
        w = self.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        self.apply(init_linear_and_norm)

    def position_embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """``(1, gt*gh*gw, D)`` for a token grid, time-major then row-major."""
        if self.arch.pos_embed == "sincos":
            return sincos_3d(self.arch.embed_dim, grid)
        assert self.arch.pos_grid is not None
        gt0, gh0, gw0 = self.arch.pos_grid
        gt, gh, gw = grid
        d = self.arch.embed_dim
        if self.arch.pos_embed == "separable":
            spatial = self.pos_embed_spatial.reshape(1, gh0, gw0, d).permute(0, 3, 1, 2)
            if (gh, gw) != (gh0, gw0):
                spatial = F.interpolate(spatial, size=(gh, gw), mode="bicubic", align_corners=False)
            temporal = self.pos_embed_temporal.transpose(1, 2)  # (1, D, gt0)
            if gt != gt0:
                temporal = F.interpolate(temporal, size=gt, mode="linear", align_corners=False)
            # as MAE-ST: spatial repeated over time plus temporal repeated over space
            return (spatial.flatten(2).transpose(1, 2).repeat(1, gt, 1)
                    + temporal.transpose(1, 2).repeat_interleave(gh * gw, dim=1))
        joint = self.pos_embed.reshape(1, gt0, gh0, gw0, d).permute(0, 4, 1, 2, 3)
        if (gt, gh, gw) != (gt0, gh0, gw0):
            joint = F.interpolate(joint, size=(gt, gh, gw), mode="trilinear", align_corners=False)
        return joint.flatten(2).transpose(1, 2)

    def grid_of(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        t, p, _ = self.tubelet
        return math.ceil(frames / t), math.ceil(height / p), math.ceil(width / p)

    def prepare(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, T', 3, H', W')`` padded to whole tubelets."""
        video = frames_of(video)
        video = (video - self.mean.to(video.dtype)) / self.std.to(video.dtype)
        t, p, _ = self.tubelet
        b, n, c, h, w = video.shape
        pad_t, pad_h, pad_w = (-n) % t, (-h) % p, (-w) % p
        if pad_t:
            video = torch.cat([video, video[:, -1:].expand(b, pad_t, c, h, w)], dim=1)
        if pad_h or pad_w:
            flat = video.reshape(b * video.shape[1], c, h, w)
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            flat = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
            video = flat.reshape(b, -1, c, h + pad_h, w + pad_w)
        return video

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """Tubelet tokens with position embeddings ``(B, L, D)``, time-major order."""
        prepared = self.prepare(video)
        tokens = self.proj(prepared.transpose(1, 2))  # (B, D, gt, gh, gw)
        grid = tuple(tokens.shape[-3:])
        tokens = tokens.flatten(2).transpose(1, 2)
        return tokens + self.position_embedding(grid).to(tokens)  # type: ignore[arg-type]

    def forward_tokens(
        self, video: torch.Tensor, ids_keep: torch.Tensor | None = None,
        blocks: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        """The final tokens after ``norm`` (``blocks`` None) or the listed blocks' outputs;
        ``ids_keep (B, keep)`` selects the visible tubelets (None: all). With a class token
        the first ``num_prefix_tokens`` rows of every output are it."""
        h = self.embed(video)
        if ids_keep is not None:
            h = torch.gather(h, 1, ids_keep.to(h.device).unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        if self.num_prefix_tokens:
            cls = (self.cls_token + self.pos_embed_class).to(h.dtype).expand(h.shape[0], -1, -1)
            h = torch.cat([cls, h], dim=1)
        wanted = None if blocks is None else {b % len(self.blocks) for b in blocks}
        outs: dict[int, torch.Tensor] = {}
        # stop after the deepest block read: later blocks would cost time and change nothing
        last = len(self.blocks) - 1 if wanted is None else max(wanted)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if wanted is not None and i in wanted:
                outs[i] = h
            if i == last:
                break
        if blocks is None:
            return [self.norm(h)]
        return [outs[b % len(self.blocks)] for b in blocks]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(video)[0]


class VideoMae(nn.Module):
    """Encoder + decoder; ``forward(video)`` returns ``(loss, prediction (B, L, t*p*p*3),
    mask (B, L): 1 = hidden)``."""

    def __init__(self, arch: VideoMaeArch, norm_pix_loss: bool = True) -> None:
        super().__init__()
        if arch.cls_token or arch.pos_embed != "sincos":
            raise ValueError("the video MAE trained here has no class token and sin-cos positions; "
                             "MAE-ST's layout is read into a VideoMaeEncoder only")
        self.arch = arch
        self.norm_pix_loss = norm_pix_loss
        self.encoder = VideoMaeEncoder(arch)
        t, p = arch.tubelet_frames, arch.patch_size
        self.decoder_embed = nn.Linear(arch.embed_dim, arch.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, arch.decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            Block(arch.decoder_embed_dim, arch.decoder_num_heads, arch.mlp_ratio, qkv_bias=True,
                  norm_layer=mae_norm_layer())
            for _ in range(arch.decoder_depth)
        )
        self.decoder_norm = mae_norm_layer()(arch.decoder_embed_dim)
        self.decoder_pred = nn.Linear(arch.decoder_embed_dim, t * p * p * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(init_linear_and_norm)

    def tubelets(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised, padded pixels as ``(B, L, t*p*p*3)`` in token order."""
        x = self.encoder.prepare(video)
        t, p, _ = self.encoder.tubelet
        b, n, c, h, w = x.shape
        x = x.reshape(b, n // t, t, c, h // p, p, w // p, p)
        x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)  # B, gt, gh, gw, t, p, p, c
        return x.reshape(b, (n // t) * (h // p) * (w // p), t * p * p * c)

    def target(self, video: torch.Tensor) -> torch.Tensor:
        target = self.tubelets(video)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        x = self.decoder_embed(latent)
        b, length = ids_restore.shape
        masks = self.mask_token.expand(b, length - x.shape[1], -1)
        x = torch.cat([x, masks], dim=1)
        x = torch.gather(x, 1, ids_restore.to(x.device).unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = x + sincos_3d(x.shape[-1], grid).to(x)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward(
        self, video: torch.Tensor, mask_ratio: float = 0.9, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        video = frames_of(video)
        grid = self.encoder.grid_of(video.shape[1], video.shape[-2], video.shape[-1])
        length = grid[0] * grid[1] * grid[2]
        ids_keep, ids_restore = random_tubelet_keep_ids(video.shape[0], length, mask_ratio, generator)
        latent = self.encoder.forward_tokens(video, ids_keep=ids_keep)[0]
        pred = self.decode(latent, ids_restore, grid)
        mask = torch.ones(video.shape[0], length, device=video.device)
        mask.scatter_(1, ids_keep.to(video.device), 0.0)
        return self.masked_loss(video, pred, mask), pred, mask

    def masked_loss(self, video: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean per-tubelet MSE over the hidden tubelets."""
        per_tubelet = ((pred - self.target(video)) ** 2).mean(dim=-1)
        return (per_tubelet * mask).sum() / mask.sum()

    def pixel_mask(self, mask: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        """Token mask ``(B, L)`` -> pixel mask ``(B, T, H, W)`` (1 = hidden), for checks/plots."""
        gt, gh, gw = self.encoder.grid_of(frames, height, width)
        t, p, _ = self.encoder.tubelet
        m = mask.reshape(-1, gt, gh, gw)
        m = m.repeat_interleave(t, 1).repeat_interleave(p, 2).repeat_interleave(p, 3)
        return m[:, :frames, :height, :width]
