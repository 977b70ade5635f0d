"""SwinIR (Liang et al., 2021, "SwinIR: Image Restoration Using Swin Transformer").

Shallow conv -> residual Swin transformer blocks (RSTB: windowed self-attention with relative
position bias, alternating shifted windows, conv at the end) -> conv + long skip ->
reconstruction. The reconstruction is the lightweight "pixelshuffledirect" one (one conv to
``C * scale**2`` channels + pixel shuffle); at scale 1 the output is the input plus a predicted
residual, as in SwinIR's denoising configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from resweep.errors import ConfigError
from resweep.models.common import (
    MeanShift,
    RestorationNet,
    conv3x3,
    crop_to,
    default_mean,
    pad_to_multiple,
)
from resweep.models.registry import register_model


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, nW, ws*ws, C)``; H and W must be multiples of ``ws``."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B, nW, ws*ws, C)`` -> ``(B, H, W, C)``."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def shifted_window_mask(
    h: int, w: int, ws: int, shift: int, device: torch.device | None = None
) -> torch.Tensor:
    """Additive mask ``(nW, N, N)`` for shifted windows: 0 inside a region, -100 across.

    After the cyclic shift some windows hold pixels from non-adjacent image regions; the mask
    stops them attending to each other (the value -100 is the original implementation's).
    """
    img = torch.zeros(1, h, w, 1, device=device)
    bounds = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    region = 0
    for hs in bounds:
        for wsl in bounds:
            img[:, hs, wsl, :] = region
            region += 1
    windows = window_partition(img, ws).squeeze(0).squeeze(-1)  # (nW, N)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``ws x ws`` windows with a learned relative position bias."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        ws = window_size
        # One bias per head for each of the (2ws-1)^2 possible relative offsets.
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
        coords = coords.flatten(1)  # (2, N)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # (N, N, 2)
        index = rel[..., 0] * (2 * ws - 1) + rel[..., 1]
        # Derived from window_size: not persistent, so state dicts hold only learned values.
        self.register_buffer("relative_position_index", index, persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, nW, N, C)``; ``mask``: ``(nW, N, N)`` additive, or None."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).view(b, nw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, heads, N, d)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn_mask = bias.view(n, n, -1).permute(2, 0, 1)  # (heads, N, N)
        if mask is not None:
            attn_mask = attn_mask + mask.unsqueeze(1)  # (nW, heads, N, N), broadcast over B
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask.to(q.dtype),
            dropout_p=self.attn_drop if self.training else 0.0,
        )
        out = out.transpose(2, 3).reshape(b, nw, n, c)
        return self.proj_drop(self.proj(out))


class SwinTransformerBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP, each with a residual connection."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attn_drop, drop)
        # timm on first build, not at import: `import timm.layers` pulls in torchvision
        # (~2.5 s), and every config validation imports this module to list the models
        from timm.layers import DropPath, Mlp

        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        s = self.shift_size
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = self.attn(window_partition(y, self.window_size), mask if s else None)
        y = window_reverse(y, self.window_size, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class RSTB(nn.Module):
    """Residual Swin Transformer Block: ``depth`` Swin blocks, a 3x3 conv, and a skip."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        # The conv gives the transformer features a translation-equivariant inductive bias.
        self.conv = conv3x3(dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.blocks:
            y = block(y, size, mask)
        b, _, c = y.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, *size))
        return x + y.flatten(2).transpose(1, 2)


@register_model(
    "swinir_tiny",
    embed_dim=24,
    depths=(2, 2),
    num_heads=(2, 2),
    window_size=4,
    mlp_ratio=2.0,
)
@register_model(
    "swinir_light",
    embed_dim=60,
    depths=(6, 6, 6, 6),
    num_heads=(6, 6, 6, 6),
    window_size=8,
    mlp_ratio=2.0,
)
class SwinIR(RestorationNet):
    """SwinIR with the lightweight pixel-shuffle-direct reconstruction (any integer scale).

    Inputs are padded (reflect) to a multiple of ``window_size`` and the output cropped back.
    """

    def __init__(
        self,
        scale: int = 1,
        in_channels: int = 3,
        embed_dim: int = 60,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        img_range: float = 1.0,
    ) -> None:
        super().__init__(scale)
        depths, num_heads = list(depths), list(num_heads)
        if len(depths) != len(num_heads):
            raise ConfigError(f"SwinIR: depths {depths} and num_heads {num_heads} differ in length")
        if any(embed_dim % h for h in num_heads):
            raise ConfigError(f"SwinIR: embed_dim={embed_dim} not divisible by heads {num_heads}")
        if window_size < 2:
            raise ConfigError(f"SwinIR: window_size must be >= 2, got {window_size}")
        self.window_size = window_size
        mean = default_mean(in_channels)
        self.sub_mean = MeanShift(mean, img_range, sign=-1)
        self.conv_first = conv3x3(in_channels, embed_dim)
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        # Stochastic depth grows linearly over all Swin blocks of the network.
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            RSTB(
                embed_dim,
                d,
                h,
                window_size,
                mlp_ratio,
                qkv_bias,
                drop_rate,
                attn_drop_rate,
                dpr[start : start + d],
            )
            for d, h, start in zip(depths, num_heads, starts, strict=True)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = conv3x3(embed_dim, embed_dim)
        self.last_layer = conv3x3(embed_dim, in_channels * scale**2)
        self.shuffle = nn.PixelShuffle(scale)
        self.add_mean = MeanShift(mean, img_range, sign=1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Transformer-style init for linear/norm layers; convs keep PyTorch's default.
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.pos_drop(self.patch_norm(x.flatten(2).transpose(1, 2)))
        ws = self.window_size
        mask = shifted_window_mask(h, w, ws, ws // 2, device=x.device)  # shared by all blocks
        for layer in self.layers:
            y = layer(y, (h, w), mask)
        return self.norm(y).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, self.window_size)
        x = self.sub_mean(x)
        feat = self.conv_first(x)
        feat = feat + self.conv_after_body(self.forward_features(feat))
        out = self.shuffle(self.last_layer(feat))
        if self.scale == 1:
            out = out + x  # restoration at scale 1 predicts a residual on the input
        return crop_to(self.add_mean(out), h * self.scale, w * self.scale)
