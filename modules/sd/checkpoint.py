"""Reading checkpoint files: `.safetensors` through a memory map, `.ckpt`/`.pt` through a restricted unpickler.

Why our own safetensors reader: loading must not hold the file twice. `SafetensorsFile` maps the file, hands out one
tensor at a time (a zero-copy view, or a converted copy) and lets the caller release the pages it has consumed, so
peak memory while loading is the model in its target dtype plus one tensor — not file + model.

Why a restricted unpickler: a `.ckpt` is a pickle, and a pickle can run any code. We load them with torch's
weights-only unpickler (an allow-list of tensor-rebuilding globals), extended by the few harmless globals real SD
checkpoints contain. A file that wants anything else is refused with a clear error and its code never runs;
`--disable-safe-unpickle` (`allow_unsafe=True`) lifts the restriction for files the user trusts.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import pickle
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor

from modules.errors import BadCheckpoint

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsFile:
    """A memory-mapped `.safetensors` file: header parsed up front, tensors read on demand."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size < 8:
                raise BadCheckpoint(f"{self.path.name} is not a safetensors file: it is only {size} bytes long.")
            (header_len,) = struct.unpack("<Q", self._file.read(8))
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise BadCheckpoint(f"{self.path.name} is not a valid safetensors file (bad header length).",
                                    "The file may be truncated or of another format.")
            try:
                header = json.loads(self._file.read(header_len))
            except (UnicodeDecodeError, ValueError) as e:
                raise BadCheckpoint(f"{self.path.name} has a corrupt safetensors header: {e}.") from e
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            self._entries: dict[str, dict] = header
            self._data_start = 8 + header_len
            for name, entry in header.items():
                end = entry.get("data_offsets", [0, 0])[1]
                if entry.get("dtype") not in SAFETENSORS_DTYPES:
                    dtype = entry.get("dtype")
                    raise BadCheckpoint(f"{self.path.name}: tensor {name!r} has unsupported dtype {dtype}.")
                if self._data_start + end > size:
                    raise BadCheckpoint(f"{self.path.name} is truncated: tensor {name!r} ends past the file's end.",
                                        "Download or copy the file again.")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
        except BaseException:
            self._file.close()
            raise

    def names(self) -> list[str]:
        return list(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key]["shape"])

    def _span(self, key: str) -> tuple[int, int]:
        begin, end = self._entries[key]["data_offsets"]
        return self._data_start + begin, self._data_start + end

    def view(self, key: str) -> Tensor:
        """A zero-copy tensor backed by the file's pages (valid until `close()`)."""
        entry = self._entries[key]
        dtype = SAFETENSORS_DTYPES[entry["dtype"]]
        start, end = self._span(key)
        if end == start:
            return torch.empty(entry["shape"], dtype=dtype)
        flat = torch.frombuffer(self._map, dtype=torch.uint8, count=end - start, offset=start)
        return flat.view(dtype).reshape(entry["shape"])

    def read(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> Tensor:
        """An independent copy of one tensor (converted to `dtype`), after which its file pages are released."""
        source = self.view(key)
        tensor = source.to(device=device, dtype=dtype or source.dtype, copy=True)
        self.release(key)
        return tensor

    def release(self, key: str) -> None:
        """Drop the already-read pages of one tensor from this process's memory (they stay in the page cache)."""
        start, end = self._span(key)
        page = mmap.PAGESIZE
        first, last = (start // page) * page, ((end + page - 1) // page) * page
        if self._map is not None and hasattr(self._map, "madvise") and last > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, min(last, len(self._map)) - first)

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # views still alive: the mapping goes when they do
                self._map.close()
        self._file.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HarmlessCheckpointCallback:
    """Stands in for pytorch_lightning's ModelCheckpoint, which old SD `.ckpt` files pickle beside the weights."""

    def __setstate__(self, state: object) -> None:
        self.state = state


_EXTRA_SAFE_GLOBALS: list = [
    (_HarmlessCheckpointCallback, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
]


def _numpy_safe_globals() -> list:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a requirement
        return []
    found: list = [np.dtype]
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar"])
            found.append((module.scalar, f"{module_name}.scalar"))
        except (ImportError, AttributeError):
            continue
    found += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int64", "int32")]
    return found


def load_pickle_checkpoint(path: Path, *, allow_unsafe: bool = False) -> Mapping:
    """Load a `.ckpt`/`.pt` file; only tensor data and plain containers unless `allow_unsafe`."""
    if allow_unsafe:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(_EXTRA_SAFE_GLOBALS + _numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        message = str(e)
        if "GLOBAL" in message or "Unsupported" in message or "blocked" in message:
            raise BadCheckpoint(
                f"{path.name} was refused: its pickle asks to run code or build objects that a checkpoint does not "
                f"need ({_global_name(message) or 'unsupported content'}).",
                "Use a .safetensors version of this model, or start with --disable-safe-unpickle if you trust it.",
            ) from e
        raise BadCheckpoint(f"{path.name} could not be read: {message.splitlines()[0] if message else 'bad pickle'}.",
                            "The file may be truncated or corrupt.") from e


def _global_name(message: str) -> str:
    for marker in ("GLOBAL ", "global "):
        if marker in message:
            return message.split(marker, 1)[1].split()[0].rstrip(".,:")
    return ""


def read_state_dict(path: str | os.PathLike[str], *, allow_unsafe: bool = False) -> dict[str, Tensor]:
    """The whole state dict of a checkpoint file, unwrapped from a `state_dict` key when nested.

    For `.safetensors` the tensors are zero-copy views of the mapped file. Every failure is a `BadCheckpoint`
    naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(f"{path} does not exist or is not a file.")
    try:
        if path.suffix.lower() == ".safetensors":
            f = SafetensorsFile(path)
            return {key: f.view(key) for key in f}
        loaded = load_pickle_checkpoint(path, allow_unsafe=allow_unsafe)
    except BadCheckpoint:
        raise
    except Exception as e:  # torch.load raises many kinds for damaged files
        raise BadCheckpoint(f"{path.name} could not be read: {type(e).__name__}: {e}",
                            "The file may be truncated, corrupt or not a model checkpoint.") from e
    return unwrap_state_dict(loaded, path)


NESTED_WEIGHT_KEYS = ("state_dict", "params_ema", "params-ema", "params", "model_state_dict", "model", "net")
"""Where training checkpoints nest their weights: SD `.ckpt` (state_dict), ESRGAN-family `.pth` (params_ema, ...)."""


def unwrap_state_dict(loaded: object, path: Path) -> dict[str, Tensor]:
    """Take the weights out of a training checkpoint's nesting and keep only tensors."""
    if isinstance(loaded, Mapping):
        for key in NESTED_WEIGHT_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping):
        raise BadCheckpoint(f"{path.name} does not contain a state dict (found {type(loaded).__name__}).")
    return {k: v for k, v in loaded.items() if isinstance(v, Tensor)}


def iter_state_dict_items(state_dict: Mapping[str, Tensor], prefix: str) -> Iterator[tuple[str, Tensor]]:
    """Items under `prefix`, with the prefix removed."""
    n = len(prefix)
    for key, value in state_dict.items():
        if key.startswith(prefix):
            yield key[n:], value
