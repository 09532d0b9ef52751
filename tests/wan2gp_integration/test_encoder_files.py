"""The encoder file writer: names, dtypes, real-size layouts, the offline tokenizer folder, seeding."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece
import torch
from transformers import AutoTokenizer

from tools.volume import encoder_files
from tools.volume.encoder_files import CLIP_FILE, UMT5_DIR, UMT5_FILE, VAE_FILE, write_encoder_files


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("encoders")
    write_encoder_files(root, "tiny")
    return root


def _load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_writes_the_wan_file_names_and_the_umt5_tokenizer_layout(root):
    for name in (VAE_FILE, CLIP_FILE, UMT5_FILE):
        assert (root / name).is_file(), name
    tokenizer_files = {"spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert tokenizer_files <= {p.name for p in (root / UMT5_DIR).iterdir()}


@pytest.mark.parametrize(("name", "dtype"), [(VAE_FILE, torch.float32), (CLIP_FILE, torch.float16),
                                             (UMT5_FILE, torch.bfloat16)])  # fmt: skip
def test_tensors_have_the_dtype_of_the_real_file(root, name, dtype):
    assert {t.dtype for t in _load(root / name).values()} == {dtype}


def test_full_sizes_have_the_published_parameter_counts():
    umt5 = sum(torch.Size(s).numel() for s in encoder_files._UMT5["full"].wan_shapes().values())
    clip = encoder_files._CLIP["full"].wan_shapes()
    vae = sum(torch.Size(s).numel() for s in encoder_files.vae_wan_shapes(encoder_files._VAE["full"]).values())
    assert 5.67e9 < umt5 < 5.69e9  # umT5-XXL encoder, 11.4 GB in bf16
    assert clip["visual.pos_embedding"] == (1, 257, 1280)
    assert len([k for k in clip if k.endswith("attn.to_qkv.weight")]) == 32
    assert 0.63e9 < sum(torch.Size(s).numel() for s in clip.values()) < 0.64e9  # ViT-H/14 visual tower
    assert 126e6 < vae < 128e6


def test_tokenizer_loads_offline_with_t5_special_ids(root):
    tokenizer = AutoTokenizer.from_pretrained(root / UMT5_DIR, local_files_only=True)
    assert len(tokenizer) == encoder_files.TINY_VOCAB
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("a woman dances", padding="max_length", max_length=16).input_ids
    eos = ids.index(1)
    assert eos > 0 and ids[eos + 1 :] == [0] * (15 - eos)


def test_tokenizer_json_and_sentencepiece_agree(root):
    fast = AutoTokenizer.from_pretrained(root / UMT5_DIR, local_files_only=True)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(root / UMT5_DIR / "spiece.model"))
    text = "the dancer turns slowly, raising her arms"
    assert fast(text).input_ids == sp.encode(text) + [1]


def test_same_seed_same_weights_other_seed_other_weights(root, tmp_path):
    write_encoder_files(tmp_path / "a", "tiny", seed=0)
    write_encoder_files(tmp_path / "b", "tiny", seed=1)
    first, again, other = _load(root / CLIP_FILE), _load(tmp_path / "a" / CLIP_FILE), _load(tmp_path / "b" / CLIP_FILE)
    key = "visual.transformer.0.attn.to_qkv.weight"
    assert torch.equal(first[key], again[key])
    assert not torch.equal(first[key], other[key])
