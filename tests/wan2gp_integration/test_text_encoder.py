"""umT5 text encoder: Wan keys -> UMT5EncoderModel, parity with Wan's T5 encoder written out here, padding, errors."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from common.errors import VolumeFileError
from tools.volume.encoder_files import UMT5_DIR, UMT5_FILE
from wan2gp_integration.text_encoder import TEXT_LEN, TextEncoder, UMT5EncoderConfig, clean_prompt

CPU = torch.device("cpu")
LONG_PROMPT = " ".join(["a woman in a red dress dances slowly on a bright stage, the camera follows her"] * 12)


@pytest.fixture(scope="module")
def wan(generator_root) -> dict[str, torch.Tensor]:
    state = torch.load(generator_root / UMT5_FILE, map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in state.items()}


@pytest.fixture(scope="module")
def encoder(generator_root) -> TextEncoder:
    return TextEncoder.from_files(generator_root / UMT5_FILE, generator_root / UMT5_DIR, CPU, torch.float32)


def t5_buckets(length: int, num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """Bidirectional T5 relative-position buckets [L, L] for key j seen from query i."""
    rel = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half = num_buckets // 2
    exact = half // 2
    far = exact + (torch.log(rel.abs().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)).long()
    return (rel > 0).long() * half + torch.where(rel.abs() < exact, rel.abs(), far.clamp(max=half - 1))


def wan_umt5(wan: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Wan's T5Encoder forward (shared_pos=False): RMS norms, unscaled attention + per-block bias, gated tanh-GELU."""

    def rms(x, weight):
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    x = wan["token_embedding.weight"][ids]
    (b, length), buckets = ids.shape, t5_buckets(ids.shape[1])
    num_layers = len({k.split(".")[1] for k in wan if k.startswith("blocks.")})
    for i in range(num_layers):
        p = f"blocks.{i}."
        bias = wan[p + "pos_embedding.embedding.weight"][buckets].permute(2, 0, 1)[None]  # [1, heads, L, L]
        bias = bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        heads = bias.shape[1]
        h = rms(x, wan[p + "norm1.weight"])
        q, k, v = ((h @ wan[p + f"attn.{n}.weight"].T).view(b, length, heads, -1).transpose(1, 2) for n in "qkv")
        attn = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
        x = x + (attn @ v).transpose(1, 2).reshape(b, length, -1) @ wan[p + "attn.o.weight"].T
        h = rms(x, wan[p + "norm2.weight"])
        gate = F.gelu(h @ wan[p + "ffn.gate.0.weight"].T, approximate="tanh")
        x = x + (gate * (h @ wan[p + "ffn.fc1.weight"].T)) @ wan[p + "ffn.fc2.weight"].T
    return rms(x, wan["norm.weight"])


def _token_counts(encoder: TextEncoder, prompts: list[str]) -> list[int]:
    return [len(encoder.tokenizer(clean_prompt(p), truncation=True, max_length=TEXT_LEN).input_ids) for p in prompts]


def test_every_wan_tensor_lands_in_the_module(wan, encoder):
    module = dict(encoder.model.named_parameters(remove_duplicate=False))
    assert module["shared.weight"] is module["encoder.embed_tokens.weight"]
    assert torch.equal(module["shared.weight"], wan["token_embedding.weight"])
    assert torch.equal(module["encoder.final_layer_norm.weight"], wan["norm.weight"])
    names = {
        "norm1": "layer.0.layer_norm", "attn.q": "layer.0.SelfAttention.q", "attn.k": "layer.0.SelfAttention.k",
        "attn.v": "layer.0.SelfAttention.v", "attn.o": "layer.0.SelfAttention.o",
        "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias", "norm2": "layer.1.layer_norm",
        "ffn.gate.0": "layer.1.DenseReluDense.wi_0", "ffn.fc1": "layer.1.DenseReluDense.wi_1",
        "ffn.fc2": "layer.1.DenseReluDense.wo",
    }  # fmt: skip
    blocks = sorted({k.split(".")[1] for k in wan if k.startswith("blocks.")})
    assert len(module) == 3 + len(blocks) * len(names)
    for i in blocks:
        for wan_name, hf_name in names.items():
            assert torch.equal(module[f"encoder.block.{i}.{hf_name}.weight"], wan[f"blocks.{i}.{wan_name}.weight"])


def test_each_block_has_its_own_position_bias(encoder):
    biases = [block.layer[0].SelfAttention.relative_attention_bias.weight for block in encoder.model.encoder.block]
    assert len(biases) == 2 and not torch.equal(biases[0], biases[1])


def test_output_matches_wan_umt5_on_the_real_tokens(wan, encoder):
    prompts = ["a man waves his hand", LONG_PROMPT]
    tokens = encoder.tokenizer([clean_prompt(p) for p in prompts], padding=True, return_tensors="pt")
    expected = wan_umt5(wan, tokens.input_ids, tokens.attention_mask)
    out = encoder.encode(prompts)
    for row, count in enumerate(_token_counts(encoder, prompts)):
        ours, ref = out[row, :count], expected[row, :count]
        assert ((ours - ref).norm() / ref.norm()).item() < 1e-4


def test_rows_after_the_tokens_are_zero(encoder):
    prompts = ["a girl spins", "the dancer jumps high on the stage"]
    out = encoder.encode(prompts)
    assert out.shape == (2, TEXT_LEN, 128)
    for row, count in enumerate(_token_counts(encoder, prompts)):
        assert (out[row, :count].abs().sum(-1) > 0).all()
        assert (out[row, count:] == 0).all()


def test_a_prompt_encodes_the_same_alone_and_beside_a_longer_one(encoder):
    alone = encoder.encode(["a girl spins"])
    batched = encoder.encode(["a girl spins", LONG_PROMPT])
    torch.testing.assert_close(batched[:1], alone, rtol=1e-5, atol=1e-6)


def test_prompts_longer_than_512_tokens_are_truncated(encoder):
    out = encoder.encode([" ".join([LONG_PROMPT] * 4)])
    assert out.shape == (1, TEXT_LEN, 128)
    assert (out[0].abs().sum(-1) > 0).all()


def test_prompt_cleaning_repairs_unescapes_and_collapses_whitespace():
    assert clean_prompt("  caf\u00c3\u00a9 &amp;amp; bar\n\t dance  ") == "café & bar dance"


def test_missing_weights_are_named(generator_root, tmp_path):
    with pytest.raises(VolumeFileError, match="models_t5_umt5-xxl-enc-bf16.pth: missing"):
        TextEncoder.from_files(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", generator_root / UMT5_DIR, CPU, torch.float32)


def test_truncated_weights_are_refused(generator_root, tmp_path):
    data = (generator_root / UMT5_FILE).read_bytes()
    (tmp_path / "enc.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(VolumeFileError, match="enc.pth"):
        TextEncoder.from_files(tmp_path / "enc.pth", generator_root / UMT5_DIR, CPU, torch.float32)


def test_missing_block_tensor_is_named(generator_root, tmp_path):
    state = torch.load(generator_root / UMT5_FILE, weights_only=True)
    del state["blocks.1.pos_embedding.embedding.weight"]
    torch.save(state, tmp_path / "enc.pth")
    with pytest.raises(VolumeFileError, match="missing keys: blocks.1.pos_embedding.embedding.weight"):
        TextEncoder.from_files(tmp_path / "enc.pth", generator_root / UMT5_DIR, CPU, torch.float32)


def test_missing_tokenizer_folder_is_named(generator_root, tmp_path):
    with pytest.raises(VolumeFileError, match="spiece.model: missing"):
        TextEncoder.from_files(generator_root / UMT5_FILE, tmp_path / "umt5-xxl", CPU, torch.float32)


def test_tokenizer_larger_than_the_embedding_is_refused(generator_root, tmp_path):
    small = UMT5EncoderConfig(vocab=100, dim=128, dim_attn=128, dim_ffn=320, num_heads=2, num_layers=1, num_buckets=32)
    torch.save({k: torch.zeros(s) for k, s in small.wan_shapes().items()}, tmp_path / "enc.pth")
    shutil.copytree(generator_root / UMT5_DIR, tmp_path / "tok", ignore=shutil.ignore_patterns("*.pth"))
    with pytest.raises(VolumeFileError, match="512 tokens but enc.pth embeds 100"):
        TextEncoder.from_files(tmp_path / "enc.pth", tmp_path / "tok", CPU, torch.float32)


def test_no_tensor_is_left_on_the_meta_device(encoder):
    assert not any(t.is_meta for t in [*encoder.model.parameters(), *encoder.model.buffers()])
