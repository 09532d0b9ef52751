"""Object-level reasoning of MatAnyone: the object summarizer (mask value -> per-object summaries) and the
object transformer (queries initialised from the summaries exchange information with the pixel readout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pose.multi.matanyone.config import MatAnyoneConfig
from pose.multi.matanyone.layers import CAResBlock, GConv2d, PositionalEncoding


def foreground_logits(prob: torch.Tensor) -> torch.Tensor:
    """(B, N, ...) object probabilities -> (B, N + 1, ...) logits with the background (all objects absent) first."""
    with_bg = torch.cat([torch.prod(1 - prob, dim=1, keepdim=True), prob], 1).clamp(1e-7, 1 - 1e-7)
    return torch.log(with_bg / (1 - with_bg))


class CrossAttention(nn.Module):
    """Attention from `x` to `mem` with positional terms added to queries and keys; the residual is the
    (optionally normalised) input."""

    def __init__(self, dim: int, heads: int, norm: bool = True):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor, mem: torch.Tensor, x_pe: torch.Tensor, mem_pe: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        x = self.norm(x)
        out = self.cross_attn(x + x_pe, mem + mem_pe, mem, attn_mask=attn_mask, need_weights=False)[0]
        return x + out


class SelfAttention(nn.Module):
    """Self-attention of the queries (positional term on queries and keys, not values)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return x + self.self_attn(x + pe, x + pe, x, need_weights=False)[0]


class FFN(nn.Module):
    """Pre-norm feed-forward block with a ReLU."""

    def __init__(self, dim: int, ff_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear2(F.relu(self.linear1(self.norm(x))))


class PixelFFN(nn.Module):
    """The pixel tokens back to a map, refined by a channel-attention block."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = CAResBlock(dim, dim)

    def forward(self, pixel_flat: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B*N, h*w, C) -> (B*N, C, h, w)."""
        return self.conv(pixel_flat.unflatten(1, (height, width)).permute(0, 3, 1, 2))


class QueryTransformerBlock(nn.Module):
    """Queries read the pixels (masked to the fore/background), attend to each other, then the pixels read them."""

    def __init__(self, config: MatAnyoneConfig):
        super().__init__()
        dim, heads = config.embed_dim, config.num_heads
        self.read_from_pixel = CrossAttention(dim, heads)
        self.self_attn = SelfAttention(dim, heads)
        self.ffn = FFN(dim, config.ff_dim)
        self.read_from_query = CrossAttention(dim, heads, norm=False)
        self.pixel_ffn = PixelFFN(dim)

    def forward(self, query: torch.Tensor, pixel: torch.Tensor, query_pe: torch.Tensor, pixel_pe: torch.Tensor,
                attn_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """query (B*N, Q, C), pixel (B*N, C, h, w), pixel_pe (B*N, h*w, C), attn_mask (B*N*heads, Q, h*w)."""
        height, width = pixel.shape[-2:]
        pixel_flat = pixel.flatten(2).transpose(1, 2)
        query = self.read_from_pixel(query, pixel_flat, query_pe, pixel_pe, attn_mask=attn_mask)
        query = self.ffn(self.self_attn(query, query_pe))
        pixel_flat = self.read_from_query(pixel_flat, query, pixel_pe, query_pe)
        return query, self.pixel_ffn(pixel_flat, height, width)


class QueryTransformer(nn.Module):
    """`object_transformer`: refines the fused pixel readout with object queries."""

    def __init__(self, config: MatAnyoneConfig):
        super().__init__()
        dim = config.embed_dim
        self.num_heads, self.num_queries = config.num_heads, config.num_queries
        self.query_init = nn.Embedding(config.num_queries, dim)
        self.query_emb = nn.Embedding(config.num_queries, dim)
        self.summary_to_query_init = nn.Linear(dim, dim)
        self.summary_to_query_emb = nn.Linear(dim, dim)
        self.pixel_init_proj = GConv2d(dim, dim, kernel_size=1)
        self.pixel_emb_proj = GConv2d(dim, dim, kernel_size=1)
        self.spatial_pe = PositionalEncoding(dim, config.pixel_pe_scale, config.pixel_pe_temperature)
        self.blocks = nn.ModuleList(QueryTransformerBlock(config) for _ in range(config.num_blocks))
        self.mask_pred = nn.ModuleList(nn.Sequential(nn.ReLU(), GConv2d(dim, 1, kernel_size=1))
                                       for _ in range(config.num_blocks + 1))  # fmt: skip

    def attention_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Auxiliary logits (B, N, h, w) -> (B*N*heads, Q, h*w), True where attention is blocked: the first half
        of the queries sees the object's pixels only, the second half the rest; a query that would see nothing
        sees everything."""
        scores = foreground_logits(logits.sigmoid())
        foreground = (scores[:, 1:] >= scores.max(dim=1, keepdim=True)[0]).flatten(2)  # (B, N, h*w)
        half = self.num_queries // 2
        blocked = torch.cat([(~foreground)[:, :, None].expand(-1, -1, half, -1),
                             foreground[:, :, None].expand(-1, -1, half, -1)], 2)  # fmt: skip
        blocked = blocked[:, :, None].expand(-1, -1, self.num_heads, -1, -1).flatten(0, 2)
        return blocked & ~blocked.all(-1, keepdim=True)

    def forward(self, pixel: torch.Tensor, summaries: torch.Tensor) -> torch.Tensor:
        """pixel (B, N, C, h, w), summaries (B, N, Q, C + 1) running sums with the area last -> (B, N, C, h, w)."""
        batch, objects, _, height, width = pixel.shape
        summaries = summaries.flatten(0, 1)
        values = summaries[..., :-1] / (summaries[..., -1:] + 1e-4)
        query = self.query_init.weight + self.summary_to_query_init(values)
        query_pe = self.query_emb.weight + self.summary_to_query_emb(values)
        pixel_pe = self.spatial_pe.grid(height, width).flatten(0, 1)
        pixel_pe = pixel_pe + self.pixel_emb_proj(pixel).flatten(0, 1).flatten(2).transpose(1, 2)
        pixel = self.pixel_init_proj(pixel)
        attn_mask = self.attention_mask(self.mask_pred[0](pixel).squeeze(2))
        for i, block in enumerate(self.blocks):
            query, flat = block(query, pixel.flatten(0, 1), query_pe, pixel_pe, attn_mask)
            pixel = flat.unflatten(0, (batch, objects))
            if i + 1 < len(self.blocks):
                attn_mask = self.attention_mask(self.mask_pred[i + 1](pixel).squeeze(2))
        return pixel


class ObjectSummarizer(nn.Module):
    """Mask value -> per-object summaries: weighted sums of features over the object (first half of the
    summaries) and the rest of the frame (second half), with their total weight (area) appended."""

    def __init__(self, config: MatAnyoneConfig):
        super().__init__()
        dim = config.embed_dim
        self.num_summaries = config.num_summaries
        self.pos_enc = PositionalEncoding(dim, config.pixel_pe_scale, config.pixel_pe_temperature)
        self.input_proj = nn.Linear(config.value_dim, dim)
        self.feature_pred = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.weights_pred = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                          nn.Linear(dim, config.num_summaries))  # fmt: skip

    def forward(self, masks: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """masks (B, N, H, W), value (B, N, Cv, h, w) -> (B, N, Q, C + 1)."""
        height, width = value.shape[-2:]
        masks = F.interpolate(masks, size=(height, width), mode="area").unsqueeze(-1)
        half = self.num_summaries // 2
        allowed = torch.cat([masks.expand(-1, -1, -1, -1, half), (1 - masks).expand(-1, -1, -1, -1, half)], -1)
        value = self.input_proj(value.permute(0, 1, 3, 4, 2)) + self.pos_enc.grid(height, width)
        weights = self.weights_pred(value).sigmoid() * allowed
        sums = torch.einsum("bkhwq,bkhwc->bkqc", weights, self.feature_pred(value))
        area = weights.flatten(2, 3).sum(2).unsqueeze(-1)
        return torch.cat([sums, area], -1)
