"""The int8 DiT file written through mmgp's saver, and loading it (and its bf16 twin) back."""

from __future__ import annotations

import base64
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from optimum.quanto import QModuleMixin
from safetensors.torch import load_file, save_file

import common.files as common_files
import common.page_lock as common_page_lock
from common.errors import VolumeFileError
from common.files import read_safetensors_header
from tools.volume.dit_file import BF16_FILE, write_dit_file
from wan2gp_integration.dit import DiTConfig, ScailDiT
from wan2gp_integration.loading import DIT_FILE, load_dit, quantization_map

QUANTIZED_LINEARS = (
    "self_attn.q self_attn.k self_attn.v self_attn.o cross_attn.q cross_attn.k cross_attn.v cross_attn.o "
    "cross_attn.k_img cross_attn.v_img ffn.0 ffn.2"
).split()
QUANTO_SUFFIXES = (".weight._data", ".weight._scale", ".bias", ".input_scale", ".output_scale")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dit")
    write_dit_file(root, "tiny", seed=5, bf16_twin=True)
    return root


@pytest.fixture(scope="module")
def header(volume) -> tuple[dict, dict]:
    return read_safetensors_header(volume / DIT_FILE)


def file_keys(cfg: DiTConfig) -> set[str]:
    """The keys mmgp's int8 file of ScailDiT(cfg) should hold: block Linears in quanto layout."""
    with torch.device("meta"):
        keys = set(ScailDiT(cfg).state_dict())
    for i in range(cfg.num_layers):
        for linear in QUANTIZED_LINEARS:
            m = f"blocks.{i}.{linear}"
            keys -= {f"{m}.weight", f"{m}.bias"}
            keys |= {m + suffix for suffix in QUANTO_SUFFIXES}
    return keys


def test_int8_file_has_the_expected_keys(header):
    assert set(header[0]) == file_keys(DiTConfig.tiny())


def test_full_size_file_would_have_2745_keys(header):
    tiny = DiTConfig.tiny()
    per_block = sum(k.startswith("blocks.0.") for k in header[0])
    outside = sum(not k.startswith("blocks.") for k in header[0])
    assert len(header[0]) == outside + tiny.num_layers * per_block
    assert outside + 40 * per_block == len(file_keys(DiTConfig.full())) == 2745


def test_block_linears_are_int8_with_bf16_row_scales(header):
    entries = header[0]
    for linear in QUANTIZED_LINEARS:
        m = f"blocks.1.{linear}"
        data, scale = entries[f"{m}.weight._data"], entries[f"{m}.weight._scale"]
        assert data["dtype"] == "I8" and scale["dtype"] == "BF16"
        assert scale["shape"] == [data["shape"][0], 1]
        assert entries[f"{m}.input_scale"]["shape"] == [] and entries[f"{m}.output_scale"]["shape"] == []


def test_everything_else_stays_bf16(header):
    others = {k: e for k, e in header[0].items() if not k.endswith("._data")}
    assert {e["dtype"] for e in others.values()} == {"BF16"}
    assert header[0]["text_embedding.0.weight"]["shape"] == [256, 128]  # not quantized: plain weight key
    assert header[0]["head.head.weight"]["dtype"] == "BF16"


def test_metadata_is_mmgp_quanto(header):
    metadata = header[1]
    assert metadata["quantization_format"] == "quanto"
    qmap = json.loads(base64.b64decode(metadata["quantization_map_base64"]))
    assert set(qmap) == {f"blocks.{i}.{m}" for i in range(2) for m in QUANTIZED_LINEARS}
    assert all(entry == {"weights": "qint8", "activations": "none"} for entry in qmap.values())
    config = json.loads(base64.b64decode(metadata["config_base64"]))
    assert (config["dim"], config["num_layers"], config["in_dim"]) == (256, 2, 20)


def test_int8_weights_are_per_row_absmax_of_the_bf16_twin(volume):
    int8 = load_file(volume / DIT_FILE)
    bf16 = load_file(volume / BF16_FILE)
    weight = bf16["blocks.0.ffn.0.weight"].float()
    scale = int8["blocks.0.ffn.0.weight._scale"].float()
    torch.testing.assert_close(scale, weight.abs().amax(dim=1, keepdim=True) / 127, rtol=1e-2, atol=0)
    dequantized = int8["blocks.0.ffn.0.weight._data"].float() * scale
    # quanto divides in bf16 (8-bit mantissa), so a value rounds to within 3/4 of a step, not 1/2
    assert torch.all((dequantized - weight).abs() <= scale * 0.76)


def test_bf16_twin_has_plain_keys_of_the_model(volume):
    with torch.device("meta"):
        expected = set(ScailDiT(DiTConfig.tiny()).state_dict())
    assert set(read_safetensors_header(volume / BF16_FILE)[0]) == expected


@pytest.fixture(scope="module")
def loaded(volume) -> dict[str, ScailDiT]:
    return {name: load_dit(volume / name, CPU, torch.float32) for name in (DIT_FILE, BF16_FILE)}


def sample_inputs(cfg: DiTConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(2, cfg.in_dim, 3, 4, 8, generator=g),
        "pose": torch.randn(2, cfg.in_dim, 2, 2, 4, generator=g),
        "t": torch.tensor([900.0, 900.0], dtype=torch.float64),
        "context": torch.randn(2, 512, cfg.text_dim, generator=g),
        "clip_tokens": torch.randn(2, 257, cfg.clip_dim, generator=g),
    }


def test_int8_file_loads_block_linears_as_quanto_modules(loaded):
    model = loaded[DIT_FILE]
    assert model.cfg == DiTConfig.tiny()
    assert isinstance(model.blocks[0].ffn[0], QModuleMixin)
    assert isinstance(model.blocks[1].cross_attn.k_img, QModuleMixin)
    assert not isinstance(model.text_embedding[0], QModuleMixin)
    assert model.patch_embedding.weight.dtype == torch.float32
    assert model.blocks[0].modulation.dtype == torch.float32


def test_int8_model_runs_in_float32_on_cpu(loaded):
    model = loaded[DIT_FILE]
    with torch.no_grad():
        out = model(**sample_inputs(model.cfg))
    assert out.shape == (2, 16, 3, 4, 8) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_int8_linear_computes_in_float32_on_cpu(loaded):
    linear = loaded[DIT_FILE].blocks[0].ffn[0]
    x = torch.randn(2, 7, linear.in_features, generator=torch.Generator().manual_seed(1))
    dequantized = linear.weight._data.float() * linear.weight._scale.float()
    with torch.no_grad():
        out = linear(x)
    torch.testing.assert_close(out, x @ dequantized.t() + linear.bias, rtol=1e-5, atol=1e-5)


def test_bf16_file_gives_the_int8_prediction_up_to_quantization(loaded):
    inputs = sample_inputs(DiTConfig.tiny())
    with torch.no_grad():
        int8, bf16 = (loaded[name](**inputs) for name in (DIT_FILE, BF16_FILE))
    relative = ((int8 - bf16).norm() / bf16.norm()).item()
    assert 0 < relative < 0.03, relative


def _storage_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor holding the model's data; a quanto weight's int8 data and scale apart."""
    found = dict(model.named_buffers())
    for name, param in model.named_parameters():
        if type(param.data) is torch.Tensor:
            found[name] = param
        else:
            found.update({f"{name}._data": param._data, f"{name}._scale": param._scale})
    return found


def test_a_page_locked_load_locks_every_tensor_and_tells_mmgp(volume, monkeypatch):
    locked: list = []
    monkeypatch.setattr(common_files, "page_lock", locked.append)  # the file's buffer
    monkeypatch.setattr(common_page_lock, "page_lock", locked.append)  # what loading made anew
    model = load_dit(volume / DIT_FILE, CPU, torch.bfloat16, pinned=True)
    spans = [(buffer.ctypes.data, buffer.ctypes.data + buffer.nbytes) for buffer in locked]
    outside = [name for name, tensor in _storage_tensors(model).items()
               if tensor.numel() and not any(start <= tensor.data_ptr() < end for start, end in spans)]  # fmt: skip
    assert len(locked) == 2 and outside == []
    assert model._already_pinned  # mmgp's marker: it skips its own pinning of this model


def test_missing_file_names_it(tmp_path):
    path = tmp_path / DIT_FILE
    with pytest.raises(VolumeFileError, match=f"{DIT_FILE}.*missing"):
        load_dit(path, CPU, torch.float32)


def test_truncated_file_is_refused(volume, tmp_path):
    path = tmp_path / DIT_FILE
    data = (volume / DIT_FILE).read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(VolumeFileError, match=f"{DIT_FILE}.*truncated"):
        load_dit(path, CPU, torch.float32)


def test_file_without_a_key_names_the_missing_key(volume, tmp_path):
    state = load_file(volume / BF16_FILE)
    del state["blocks.1.cross_attn.norm_k_img.weight"]
    path = tmp_path / BF16_FILE
    save_file(state, path)
    with pytest.raises(VolumeFileError, match=r"missing keys: blocks\.1\.cross_attn\.norm_k_img\.weight"):
        load_dit(path, CPU, torch.float32)


def test_other_checkpoint_is_refused_with_its_name(tmp_path):
    path = tmp_path / "not_a_dit.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(VolumeFileError, match="not_a_dit.safetensors.*missing keys: blocks.0.ffn.0.weight"):
        load_dit(path, CPU, torch.float32)


def test_int8_file_without_quantization_map_is_refused(volume, tmp_path):
    path = tmp_path / DIT_FILE
    shutil.copy(volume / DIT_FILE, path)
    raw = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8 : 8 + length])
    head["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(head).encode().ljust(length)  # keep the data offsets valid
    path.write_bytes(bytes(raw[:8]) + encoded[:length] + bytes(raw[8 + length :]))
    with pytest.raises(VolumeFileError, match="quantization map"):
        load_dit(path, CPU, torch.float32)


def test_unreadable_plain_quantization_map_names_the_problem(tmp_path):
    path = tmp_path / DIT_FILE
    save_file({"a": torch.zeros(1)}, path, metadata={"quantization_map": "{not json"})
    with pytest.raises(VolumeFileError, match=f"{DIT_FILE}: unreadable quantization map"):
        quantization_map(path, read_safetensors_header(path)[1])


@pytest.mark.gpu
def test_int8_model_in_bf16_on_cuda_matches_cpu_float32(volume, loaded):
    cuda = torch.device("cuda")
    model = load_dit(volume / DIT_FILE, cuda, torch.bfloat16)
    inputs = sample_inputs(model.cfg)
    on_cuda = {k: v.to(cuda, torch.bfloat16 if v.dtype == torch.float32 else v.dtype) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**on_cuda).float().cpu()
        expected = loaded[DIT_FILE](**inputs)
    relative = ((out - expected).norm() / expected.norm()).item()
    assert relative < 0.05, relative
