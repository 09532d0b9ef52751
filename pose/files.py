"""The pose files of the model volume (names relative to the model root) and their checks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from common.errors import VolumeFileError
from common.files import FileCheck, read_safetensors_header, require_file

YOLOX_FILE = "pose/yolox_l.onnx"
DWPOSE_FILE = "pose/dw-ll_ucoco_384.onnx"
NLF_WEIGHTS_FILE = "pose/nlf_l_multi_0.3.2.eager.safetensors"
NLF_META_FILE = "pose/nlf_l_multi_0.3.2.eager.meta.json"
SAM_FILE = "mask/sam_vit_h_4b8939_fp16.safetensors"
MATANYONE_FILE = "mask/model.safetensors"

# name -> {tensor name: trailing dims that must match}; leading (batch) dims may be symbolic.
YOLOX_IO = {"inputs": {"images": (3, 640, 640)}, "outputs": {"output": (8400, 85)}}
DWPOSE_IO = {"inputs": {"input": (3, 384, 288)}, "outputs": {"simcc_x": (133, 576), "simcc_y": (133, 768)}}


def count_children(keys: Iterable[str], prefix: str) -> int:
    """How many distinct names follow `prefix` (ending in '.') among `keys`: the layers of a stage, the blocks of
    an encoder."""
    return len({key[len(prefix) :].split(".")[0] for key in keys if key.startswith(prefix)})


def _dims(value_info) -> tuple[int | str, ...]:
    return tuple(d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim)


def check_onnx_file(path: Path, io: dict[str, dict[str, tuple[int, ...]]], *, by_position: bool = False) -> None:
    """VolumeFileError unless `path` is an ONNX model whose inputs/outputs have the expected trailing shapes.

    With `by_position` the names are not required (YOLOX exports differ in naming), only the order.
    """
    import onnx

    require_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        raise VolumeFileError(path, f"not an ONNX model ({type(exc).__name__})") from None
    initializers = {t.name for t in model.graph.initializer}
    for kind in ("inputs", "outputs"):
        found = [v for v in (model.graph.input if kind == "inputs" else model.graph.output) if v.name not in initializers]
        expected = io[kind]
        if by_position:
            if len(found) < len(expected):
                raise VolumeFileError(path, f"has {len(found)} {kind}, expected {len(expected)}")
            pairs = zip(expected.items(), found, strict=False)
        else:
            by_name = {v.name: v for v in found}
            missing = [name for name in expected if name not in by_name]
            if missing:
                names = ", ".join(sorted(by_name))
                raise VolumeFileError(path, f"no {kind[:-1]} named {missing[0]!r} (has {names}); wrong model?")
            pairs = ((item, by_name[item[0]]) for item in expected.items())
        for (name, tail), value in pairs:
            dims = _dims(value)
            if tuple(dims[-len(tail) :]) != tail:
                raise VolumeFileError(path, f"{kind[:-1]} {name!r} has shape {list(dims)}, expected [N, {', '.join(map(str, tail))}]")


def read_nlf_meta(path: Path) -> dict:
    """The NLF meta json; VolumeFileError unless it parses to an object carrying the `crop_model` config."""
    require_file(path)
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VolumeFileError(path, f"unreadable json ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("crop_model"), dict):
        raise VolumeFileError(path, "no 'crop_model' object; not an NLF eager meta file")
    return meta


def _check(root: Path, name: str, check) -> FileCheck:
    path = root / name
    try:
        check(path)
    except VolumeFileError as exc:
        size = path.stat().st_size if path.is_file() else None
        return FileCheck(name, path, size, exc.problem)
    return FileCheck(name, path, path.stat().st_size, None)


def check_pose_files(root: Path, *, multi_person: bool = True) -> list[FileCheck]:
    """One FileCheck per pose file (SAM and MatAnyone only with `multi_person`)."""
    root = Path(root)
    checks = [
        _check(root, YOLOX_FILE, lambda p: check_onnx_file(p, YOLOX_IO, by_position=True)),
        _check(root, DWPOSE_FILE, lambda p: check_onnx_file(p, DWPOSE_IO)),
        _check(root, NLF_WEIGHTS_FILE, read_safetensors_header),
        _check(root, NLF_META_FILE, read_nlf_meta),
    ]
    if multi_person:
        checks += [_check(root, SAM_FILE, read_safetensors_header), _check(root, MATANYONE_FILE, read_safetensors_header)]
    return checks


def require_pose_files(root: Path, *, multi_person: bool = True) -> None:
    """VolumeFileError for the first pose file that fails its check."""
    for check in check_pose_files(root, multi_person=multi_person):
        if not check.ok:
            raise VolumeFileError(check.path, check.problem)
