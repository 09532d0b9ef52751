"""NLF eager files with random weights: `pose/nlf_l_multi_0.3.2.eager.safetensors` + `.meta.json`.

Key names are the real ones (`crop_model.backbone.1.*` = torchvision EfficientNetV2 `features`,
`crop_model.heatmap_head.*`, `__meta_cano_all_smpl`). `full` has EfficientNetV2-L in float32 (the real
file's size class); `tiny` keeps the real head and weight field (link 512, 1280 backbone channels, so the
filters are [P, 513, 10] as in the real file) but a backbone of one narrow block per stage, in float16;
the loader reads every size from the tensors. SMPL body models and fitters are not written (unused).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig, efficientnet_v2_l

from pose.files import NLF_META_FILE, NLF_WEIGHTS_FILE

log = logging.getLogger(__name__)

N_VERTEX_SUBSET = 1024
# Approximate SMPL neutral T-pose joints (metres, x left of the body, y up, z forward), SMPL order.
SMPL_JOINTS = np.array([
    [0.00, -0.22, 0.03], [0.06, -0.31, 0.01], [-0.06, -0.31, 0.01], [0.00, -0.11, -0.01],
    [0.10, -0.68, 0.02], [-0.10, -0.68, 0.02], [0.00, 0.03, 0.00], [0.09, -1.08, -0.02],
    [-0.09, -1.08, -0.02], [0.00, 0.08, 0.02], [0.12, -1.14, 0.10], [-0.12, -1.14, 0.10],
    [0.00, 0.29, -0.01], [0.08, 0.20, -0.01], [-0.08, 0.20, -0.01], [0.00, 0.37, 0.04],
    [0.18, 0.23, -0.02], [-0.18, 0.23, -0.02], [0.44, 0.21, -0.04], [-0.44, 0.21, -0.04],
    [0.69, 0.22, -0.04], [-0.69, 0.22, -0.04], [0.77, 0.21, -0.05], [-0.77, 0.21, -0.05],
], dtype=np.float32)  # fmt: skip
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
META = {
    "crop_model": {
        "proc_side": 384, "stride_test": 32, "centered_stride": True, "backbone_link_dim": 512, "depth": 8,
        "box_size_m": 2.2, "uncert_bias": 0.0, "uncert_bias2": 0.001, "fix_uncert_factor": False,
        "mix_3d_inside_fov": 0.5, "weak_perspective": False, "backbone": "efficientnetv2-l",
    },
    "pad_white_pixels": True,
    "cano_all_keys": ["smpl"],
    "skeleton_infos": {},
}  # fmt: skip
# One block per stage with EfficientNetV2's strides and block types, narrow channels, real 1280 output.
TINY_STAGES = [
    FusedMBConvConfig(1, 3, 1, 16, 16, 1), FusedMBConvConfig(4, 3, 2, 16, 16, 1),
    FusedMBConvConfig(4, 3, 2, 16, 24, 1), MBConvConfig(4, 3, 2, 24, 32, 1), MBConvConfig(6, 3, 1, 32, 32, 1),
    MBConvConfig(6, 3, 2, 32, 48, 1), MBConvConfig(6, 3, 1, 48, 64, 1),
]  # fmt: skip


def canonical_points(rng: np.random.Generator) -> np.ndarray:
    """[1024 + 24, 3]: points scattered along the bones of a T-pose (a stand-in vertex subset), then joints."""
    children = np.arange(1, 24)
    parents = np.array(SMPL_PARENTS[1:])
    bone = rng.integers(0, len(children), N_VERTEX_SUBSET)
    t = rng.random((N_VERTEX_SUBSET, 1))
    along = SMPL_JOINTS[parents[bone]] * (1 - t) + SMPL_JOINTS[children[bone]] * t
    surface = along + rng.normal(0.0, 0.04, (N_VERTEX_SUBSET, 3))
    return np.concatenate([surface, SMPL_JOINTS]).astype(np.float32)


def _backbone(size: str) -> nn.Sequential:
    if size == "full":
        return efficientnet_v2_l().features
    return EfficientNet(TINY_STAGES, dropout=0.0, norm_layer=partial(nn.BatchNorm2d, eps=1e-3),
                        last_channel=1280).features


def _head_state(points: np.ndarray) -> dict[str, torch.Tensor]:
    """Heatmap head and weight field with the real sizes; random, scaled to keep activations moderate."""
    link, n_out, posenc = META["crop_model"]["backbone_link_dim"], 2 + META["crop_model"]["depth"], 1024

    def linear(n_out_: int, n_in: int) -> torch.Tensor:
        return torch.randn(n_out_, n_in) / np.sqrt(n_in)

    mini, maxi = torch.from_numpy(points.min(0)), torch.from_numpy(points.max(0))
    field = {
        "gps_net.learnable_fourier.linear.weight": torch.randn(256, 3) * 4.0,
        "gps_net.mlp.0.weight": linear(2048, 512), "gps_net.mlp.0.bias": torch.zeros(2048),
        "gps_net.mlp.2.weight": linear(posenc, 2048), "gps_net.mlp.2.bias": torch.zeros(posenc),
        "gps_net.mini": mini, "gps_net.maxi": maxi, "gps_net.center": (mini + maxi) / 2,
        "r_sqrt_eigva": torch.rand(posenc) * 10 + 1,
        "pred_mlp.0.weight": linear(384, posenc), "pred_mlp.0.bias": torch.zeros(384),
        "pred_mlp.2.weight": linear((link + 1) * n_out, 384) * 0.1, "pred_mlp.2.bias": torch.zeros((link + 1) * n_out),
    }  # fmt: skip
    head = {
        "layer.0.weight": linear(link, 1280).reshape(link, 1280, 1, 1),
        "layer.1.weight": torch.ones(link), "layer.1.bias": torch.zeros(link),
        "layer.1.running_mean": torch.zeros(link), "layer.1.running_var": torch.ones(link),
        "layer.1.num_batches_tracked": torch.zeros((), dtype=torch.long),
    }  # fmt: skip
    head.update({f"weight_field.{k}": v for k, v in field.items()})
    return {f"crop_model.heatmap_head.{k}": v for k, v in head.items()}


def nlf_state(size: Literal["tiny", "full"], seed: int = 0) -> dict[str, torch.Tensor]:
    """The whole eager state dict (fp16 floats for tiny, fp32 for full)."""
    torch.manual_seed(seed)
    points = canonical_points(np.random.default_rng(seed))
    state = {f"crop_model.backbone.1.{k}": v for k, v in _backbone(size).state_dict().items()}
    state["crop_model.backbone.0.mean"] = torch.tensor(0.5)
    state["crop_model.backbone.0.std"] = torch.tensor(0.5)
    state.update(_head_state(points))
    state["__meta_cano_all_smpl"] = torch.from_numpy(points)
    dtype = torch.float16 if size == "tiny" else torch.float32
    return {k: (v.to(dtype) if v.is_floating_point() and not k.startswith("__meta") else v).contiguous()
            for k, v in state.items()}


def write_nlf_files(root: Path, size: Literal["tiny", "full"], *, seed: int = 0) -> None:
    """Write both NLF files under `root`."""
    weights, meta = Path(root) / NLF_WEIGHTS_FILE, Path(root) / NLF_META_FILE
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(nlf_state(size, seed), str(weights), metadata={"format": "pt"})
    meta.write_text(json.dumps(META, indent=1))
    log.info("wrote %s (%s)", weights, size)
