"""Transformer masked autoencoder (He et al., CVPR 2022) built from timm's parts.

Follows the MAE authors' ``models_mae.py``: a ViT encoder that sees only the visible patches
(random masking by sorting per-sample noise), a lighter transformer decoder that gets the
encoded visible tokens plus a shared mask token at every masked position, fixed 2-D sin-cos
position embeddings, and a pixel MSE on the masked patches only, optionally against
per-patch-normalised pixels (``norm_pix_loss``).

Patch embedding and transformer blocks are timm's (``PatchEmbed``, ``Block``); position
embeddings are resampled with ``timm.layers.resample_abs_pos_embed`` for inputs whose patch
grid differs from the one built at construction. Parameter names of :class:`MaeEncoder` are
those of timm's ``VisionTransformer`` (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N``, ``norm``), so the ImageNet MAE encoder (KMAE) loads into it directly.

Images enter in [0, 1]; the encoder normalises them with ImageNet statistics as MAE does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from pydantic import BaseModel, ConfigDict, Field
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

from resweep.models.common import IMAGENET_MEAN, IMAGENET_STD


class VitMaeArch(BaseModel):
    """Size of a transformer MAE (encoder + decoder)."""

    model_config = ConfigDict(extra="forbid")
    img_size: int = Field(224, ge=8, description="side the position embeddings are built for")
    patch_size: int = Field(16, ge=2)
    embed_dim: int = Field(768, ge=8)
    depth: int = Field(12, ge=1)
    num_heads: int = Field(12, ge=1)
    decoder_embed_dim: int = Field(512, ge=8)
    decoder_depth: int = Field(8, ge=1)
    decoder_num_heads: int = Field(16, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)


#: named sizes; "base" is ViT-B/16 with the MAE paper's decoder (the KMAE encoder).
VIT_MAE_ARCHS: dict[str, VitMaeArch] = {
    "tiny": VitMaeArch(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                       decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2),
    "small": VitMaeArch(img_size=96, patch_size=16, embed_dim=192, depth=6, num_heads=3,
                        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    "base": VitMaeArch(),
}


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``(N, dim)`` float64 sin-cos code of ``N`` positions: ``dim/2`` frequencies, sines then cosines."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.reshape(-1, 1).double() * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_pos_embed(embed_dim: int, grid: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos embedding ``(1, [1 +] gh*gw, D)``; the class token gets zeros."""
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
    gh, gw = grid
    # as get_2d_sincos_pos_embed: first half of the channels from the column index (w), second
    # half from the row index (h)
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    emb = torch.cat([sincos_1d(embed_dim // 2, xs), sincos_1d(embed_dim // 2, ys)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=torch.float64), emb], dim=0)
    return emb.float().unsqueeze(0)


def random_keep_ids(
    batch: int, length: int, mask_ratio: float, generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking: ``(ids_keep (B, L_keep), ids_restore (B, L))``."""
    keep = max(1, int(length * (1 - mask_ratio)))
    noise = torch.rand(batch, length, generator=generator, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    return ids_shuffle[:, :keep], torch.argsort(ids_shuffle, dim=1)


def mae_norm_layer() -> type[nn.Module]:
    return partial(nn.LayerNorm, eps=1e-6)  # type: ignore[return-value]


class MaeEncoder(nn.Module):
    """ViT encoder of an MAE; ``forward`` returns the final tokens after the last norm."""

    def __init__(self, arch: VitMaeArch, normalize_input: bool = True) -> None:
        super().__init__()
        self.arch = arch
        self.patch_size = arch.patch_size
        self.normalize_input = normalize_input
        self.patch_embed = PatchEmbed(
            arch.img_size, arch.patch_size, 3, arch.embed_dim,
            strict_img_size=False, dynamic_img_pad=True,
        )
        self.grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.embed_dim))
        # fixed, as in MAE (requires_grad False) but a parameter so checkpoints carry it
        self.pos_embed = nn.Parameter(
            sincos_pos_embed(arch.embed_dim, self.grid), requires_grad=False
        )
        self.blocks = nn.ModuleList(
            Block(arch.embed_dim, arch.num_heads, arch.mlp_ratio, qkv_bias=True, norm_layer=mae_norm_layer())
            for _ in range(arch.depth)
        )
        self.norm = mae_norm_layer()(arch.embed_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(init_linear_and_norm)

    def grid_of(self, height: int, width: int) -> tuple[int, int]:
        p = self.patch_size
        return math.ceil(height / p), math.ceil(width / p)

    def num_patches(self, height: int, width: int) -> int:
        gh, gw = self.grid_of(height, width)
        return gh * gw

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        if tuple(grid) == tuple(self.grid):
            return self.pos_embed
        return resample_abs_pos_embed(
            self.pos_embed, new_size=list(grid), old_size=list(self.grid), num_prefix_tokens=1
        )

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens with position embeddings ``(B, L, D)`` and the class token ``(B, 1, D)``."""
        if self.normalize_input:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        grid = self.grid_of(x.shape[-2], x.shape[-1])
        pos = self._pos_embed(grid).to(x.dtype)
        tokens = self.patch_embed(x) + pos[:, 1:]
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return tokens, cls

    def forward_tokens(
        self,
        x: torch.Tensor,
        ids_keep: torch.Tensor | None = None,
        blocks: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        """Encoder outputs ``(B, 1 + L_keep, D)``: the final tokens after ``norm`` (``blocks``
        None) or the outputs of the listed blocks (0-based, negative counts from the end).

        ``ids_keep`` (B, L_keep) selects the visible patches (MAE masking); None keeps all.
        """
        tokens, cls = self.embed(x)
        if ids_keep is not None:
            index = ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
            tokens = torch.gather(tokens, 1, index)
        h = torch.cat([cls, tokens], dim=1)
        wanted = None if blocks is None else {b % len(self.blocks) for b in blocks}
        outs: dict[int, torch.Tensor] = {}
        last = len(self.blocks) - 1 if wanted is None else max(wanted)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if wanted is not None and i in wanted:
                outs[i] = h
            if i == last:
                break
        if wanted is None:
            return [self.norm(h)]
        return [outs[b % len(self.blocks)] for b in blocks]  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[0]


def init_linear_and_norm(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VitMae(nn.Module):
    """Encoder + lighter decoder; ``forward(imgs)`` returns ``(loss, prediction, mask)``."""

    def __init__(self, arch: VitMaeArch, norm_pix_loss: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.norm_pix_loss = norm_pix_loss
        self.encoder = MaeEncoder(arch)
        p = arch.patch_size
        self.decoder_embed = nn.Linear(arch.embed_dim, arch.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, arch.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed(arch.decoder_embed_dim, self.encoder.grid), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(arch.decoder_embed_dim, arch.decoder_num_heads, arch.mlp_ratio, qkv_bias=True,
                  norm_layer=mae_norm_layer())
            for _ in range(arch.decoder_depth)
        )
        self.decoder_norm = mae_norm_layer()(arch.decoder_embed_dim)
        self.decoder_pred = nn.Linear(arch.decoder_embed_dim, p * p * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(init_linear_and_norm)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, L, p*p*3)`` in the encoder's normalised pixel space, row-major
        patches (the order of the patch tokens); H and W must be multiples of the patch."""
        p = self.arch.patch_size
        b, c, h, w = imgs.shape
        if h % p or w % p:
            raise ValueError(f"pretraining crops must be multiples of the patch {p}, got {h}x{w}")
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        target = self.patchify((imgs - enc.mean) / enc.std)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        b, length = ids_restore.shape
        masks = self.mask_token.expand(b, length + 1 - x.shape[1], -1)
        body = torch.cat([x[:, 1:], masks], dim=1)
        body = torch.gather(body, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], body], dim=1)
        if self.decoder_pos_embed.shape[1] != length + 1:
            raise ValueError(
                f"the decoder was built for a {tuple(self.encoder.grid)} patch grid; pretrain on "
                f"{self.arch.img_size}x{self.arch.img_size} crops (got {length} patches)"
            )
        x = x + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float = 0.75, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, prediction (B, L, p*p*3), mask (B, L): 1 = masked)``."""
        length = self.encoder.num_patches(imgs.shape[-2], imgs.shape[-1])
        ids_keep, ids_restore = random_keep_ids(imgs.shape[0], length, mask_ratio, generator)
        ids_keep, ids_restore = ids_keep.to(imgs.device), ids_restore.to(imgs.device)
        latent = self.encoder.forward_tokens(imgs, ids_keep=ids_keep)[0]
        pred = self.forward_decoder(latent, ids_restore)
        mask = torch.ones(imgs.shape[0], length, device=imgs.device)
        mask.scatter_(1, ids_keep, 0.0)
        loss = self.masked_loss(imgs, pred, mask)
        return loss, pred, mask

    def masked_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean per-patch MSE over the masked patches (MAE's ``forward_loss``)."""
        per_patch = ((pred - self.target(imgs)) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()
