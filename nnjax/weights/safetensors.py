"""safetensors checkpoints (one file or a sharded ``.index.json``) read into NumPy arrays, without torch.

A safetensors file is a JSON header plus raw tensor bytes: reading it runs no code. Floating
tensors come back as float32 (float16 included), integer ones unchanged; NumPy has no bfloat16,
so a bfloat16 checkpoint is refused in one sentence (re-save it in float32 or float16).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnjax.errors import NnjaxError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def safetensors_file(folder: str | Path) -> Path:
    """The weights of a checkpoint folder saved with ``save_pretrained``: ``model.safetensors``, else
    its sharded index ``model.safetensors.index.json``; a folder holding only a pickle is refused."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    if (folder / "pytorch_model.bin").is_file():
        raise NnjaxError(
            f"{str(folder)!r} holds only pytorch_model.bin (a pickle, which nnjax does not load); "
            "save the model with save_pretrained(..., safe_serialization=True) to get model.safetensors."
        )
    raise NnjaxError(
        f"{str(folder)!r} has no model.safetensors; give a folder saved with save_pretrained "
        "(config.json, model.safetensors, tokenizer files)."
    )


def _shards(index: Path) -> list[Path]:
    """The shard files a sharded index names (each a plain file name beside the index)."""
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise NnjaxError(
            f"{str(index)!r} is not a safetensors index (JSON with a 'weight_map'); re-download or re-save it."
        ) from None
    bad = [name for name in names if not isinstance(name, str) or Path(name).name != name]
    if bad:
        raise NnjaxError(f"{str(index)!r} names a shard outside its folder ({bad[0]!r}); re-download or re-save it.")
    return [index.parent / name for name in names]


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint by name: ``path`` is a checkpoint folder, a ``.safetensors``
    file or a sharded ``.index.json``. Floating tensors as float32, others in their own dtype."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    weights = safetensors_file(path) if path.is_dir() else path
    if not weights.is_file():
        raise NnjaxError(f"Weight file {str(weights)!r} does not exist; check the path.")
    files = _shards(weights) if weights.name.endswith(".index.json") else [weights]
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="np") as handle:
                for key in handle.keys():
                    value = handle.get_tensor(key)
                    tensors[key] = value.astype(np.float32) if value.dtype.kind == "f" else value
        except (SafetensorError, OSError, ValueError, TypeError) as err:
            raise NnjaxError(f"Cannot read {str(file)!r} ({err}); re-download or re-save the checkpoint.") \
                from None
    return tensors
