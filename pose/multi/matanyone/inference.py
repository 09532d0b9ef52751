"""MatAnyone propagation of first-frame masks through a clip (the upstream InferenceCore + Wan2GP wrapper schedule).

Schedule: the clip is prefixed with `warmup_frames` copies of frame 0. Step 0 memorises the given masks; steps
0..warmup re-predict frame 0 from that memory and restart the memory from the prediction ("first-frame
prediction"); later steps read the working memory, add a memory frame every `mem_every` steps and update the
sensory memory on the staggered steps. Alphas of steps `warmup`.. are the clip's. Frames are (optionally
resized to `max_internal_size`, then) zero-padded, centred, to multiples of 16 before ImageNet normalisation;
the alphas are cropped (and resized) back.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import InputError
from pose.multi.matanyone.memory import WorkingMemory
from pose.multi.matanyone.model import MatAnyone

STRIDE = 16


def pad_amounts(height: int, width: int, multiple: int = STRIDE) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that brings (H, W) to multiples of `multiple`, split evenly with
    the odd pixel at the right/bottom."""
    extra_h, extra_w = -height % multiple, -width % multiple
    return extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2


def unpad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop the last two axes of `x` by `pad` (left, right, top, bottom)."""
    left, right, top, bottom = pad
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


def stagger_steps(mem_every: int, stagger_updates: int) -> set[int]:
    """Steps after the last memory frame at which the decoder updates the sensory memory."""
    if stagger_updates >= mem_every:
        return set(range(1, mem_every + 1))
    return {int(v) for v in np.round(np.linspace(1, mem_every, stagger_updates))}


class PropagationSession:
    """State of one clip for N persons (the batch): memory, sensory memory, last alpha, last value and features."""

    def __init__(self, model: MatAnyone):
        self.model = model
        config = model.config
        self.memory = WorkingMemory(config.max_mem_frames)
        self.stagger = stagger_steps(config.mem_every, config.stagger_updates)
        self.step_index = -1
        self.last_memory_step = 0
        self.sensory: torch.Tensor | None = None
        self.last_mask: torch.Tensor | None = None
        self.last_value: torch.Tensor | None = None
        self.last_pix_feat: torch.Tensor | None = None

    def _memorise(self, image: torch.Tensor, pix_feat: torch.Tensor, key: torch.Tensor, shrinkage: torch.Tensor) -> None:
        """Encode `last_mask` into a memory frame and refresh the sensory memory from it."""
        persons = self.last_mask.shape[0]
        value, self.sensory, summaries = self.model.encode_mask(image.expand(persons, -1, -1, -1),
                                                                pix_feat.expand(persons, -1, -1, -1),
                                                                self.sensory, self.last_mask)  # fmt: skip
        self.memory.add(key, shrinkage, value, summaries)
        self.last_memory_step = self.step_index
        self.last_value = value

    @torch.no_grad()
    def start(self, image: torch.Tensor, masks: torch.Tensor) -> None:
        """image (1, 3, H, W) in [0, 1] and masks (N, 1, H, W) in [0, 1], padded: the given masks become memory."""
        self.step_index += 1
        features, pix_feat = self.model.encode_image(image)
        key, shrinkage, _ = self.model.transform_key(features[0])
        self.sensory = pix_feat.new_zeros(masks.shape[0], 1, self.model.config.sensory_dim, *pix_feat.shape[-2:])
        self.last_mask, self.last_pix_feat = masks, pix_feat
        self._memorise(image, pix_feat, key, shrinkage)

    @torch.no_grad()
    def step(self, image: torch.Tensor, first_frame: bool = False) -> torch.Tensor:
        """image (1, 3, H, W) in [0, 1], padded -> alpha (N, H, W). `first_frame` re-predicts frame 0 from the
        memory of the previous step and restarts the memory from that prediction."""
        persons = self.last_mask.shape[0]
        self.step_index += 1
        if first_frame:
            self.step_index = self.last_memory_step = 0
        since_memory = self.step_index - self.last_memory_step
        is_memory_frame = first_frame or since_memory >= self.model.config.mem_every
        update_sensory = first_frame or since_memory in self.stagger

        features, pix_feat = self.model.encode_image(image)
        key, shrinkage, selection = self.model.transform_key(features[0])
        pix_many = pix_feat.expand(persons, -1, -1, -1)
        if first_frame:
            readout = self.last_value
        else:
            readout = self.memory.read(key, selection, self.model.config.top_k)
            keep = self.model.uncertainty(self.last_pix_feat.expand(persons, -1, -1, -1), pix_many, self.last_mask,
                                          readout[:, 0] - self.last_value[:, 0]).unsqueeze(1)  # fmt: skip
            readout = readout * keep + self.last_value * (1 - keep)
        fused = self.model.pixel_fusion(pix_many, readout, self.sensory, self.last_mask)
        readout = self.model.readout_query(fused, self.memory.summaries)
        many = [f.expand(persons, -1, -1, -1) for f in features]
        sensory, alpha = self.model.segment(many, readout, self.sensory, update_sensory)
        if update_sensory:
            self.sensory = sensory
        self.last_mask, self.last_pix_feat = alpha, pix_feat
        if first_frame:
            self.memory = WorkingMemory(self.model.config.max_mem_frames)
        if is_memory_frame:
            self._memorise(image, pix_feat, key, shrinkage)
        else:
            self.last_value = self.model.encode_mask(image.expand(persons, -1, -1, -1), pix_many, self.sensory,
                                                     alpha, deep_update=False)[0]  # fmt: skip
        return alpha[:, 0]


def internal_size(height: int, width: int, max_internal_size: int) -> tuple[int, int]:
    """The size the model runs at: the frame's, or scaled so the shorter side is `max_internal_size`."""
    shorter = min(height, width)
    if max_internal_size <= 0 or shorter <= max_internal_size:
        return height, width
    return int(height / shorter * max_internal_size), int(width / shorter * max_internal_size)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) bilinearly resized (no corner alignment); unchanged when already `size`."""
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def propagate_masks(model: MatAnyone, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """frames (T, H, W, 3) uint8 RGB and first-frame masks (N, H, W) (bool or [0, 1]) -> alpha (N, T, H, W)
    float32 in [0, 1]."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"propagate_masks: frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if masks.ndim != 3 or masks.shape[1:] != frames.shape[1:3]:
        raise InputError(f"propagate_masks: masks {masks.shape} do not match frames {frames.shape[1:3]}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    height, width = frames.shape[1:3]
    size = internal_size(height, width, model.config.max_internal_size)
    pad = pad_amounts(*size)

    def prepare(frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, H', W') in [0, 1] at the internal size, zero-padded."""
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None].to(dtype) / 255.0
        return F.pad(resize(image, size), pad)

    warmup = model.config.warmup_frames
    session = PropagationSession(model)
    first = prepare(frames[0])
    start_masks = torch.from_numpy(np.asarray(masks, np.float32)).to(device, dtype)[:, None]
    session.start(first, F.pad(resize(start_masks, size), pad))
    alpha = np.zeros((len(masks), len(frames), height, width), np.float32)
    for index in range(warmup + len(frames)):
        image = first if index <= warmup else prepare(frames[index - warmup])
        out = session.step(image, first_frame=index <= warmup)
        if index >= warmup:
            out = resize(unpad(out, pad)[:, None], (height, width))[:, 0]
            alpha[:, index - warmup] = out.float().cpu().numpy()
    return alpha
