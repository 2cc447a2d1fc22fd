"""Reading safetensors files tensor by tensor, with errors that name the file and the key.

We read with plain file reads instead of mmap: a tensor's bytes land straight in its final
buffer (or a one-tensor scratch buffer when the dtype changes), so peak memory while loading
stays near the size of the weights in the target dtype and no mapped file pages pile up in RSS.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from ..errors import MGTLoadError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class SafetensorsFile:
    """The header of one safetensors file, validated against the file's real size."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        name = self.path
        if not os.path.isfile(name):
            raise MGTLoadError(f"{name}: file not found")
        size = os.path.getsize(name)
        with open(name, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise MGTLoadError(f"{name}: only {size} bytes; not a safetensors file (truncated?)")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise MGTLoadError(
                    f"{name}: header length {n} does not fit in a {size}-byte file; not a safetensors file "
                    "(a .ckpt/.pt pickle? those are not loaded, for safety) or truncated"
                )
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise MGTLoadError(f"{name}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise MGTLoadError(f"{name}: corrupt safetensors header (not a JSON object)")
        self.metadata: dict = header.pop("__metadata__", None) or {}
        base = 8 + n
        self.tensors: dict[str, TensorInfo] = {}
        for key, info in header.items():
            try:
                dtype = DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                begin, end = (int(v) for v in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise MGTLoadError(f"{name}: corrupt header entry for {key!r}") from None
            if base + end > size:
                raise MGTLoadError(
                    f"{name}: tensor {key!r} ends at byte {base + end} but the file has {size} bytes "
                    "(truncated download? compare the size with the published one)"
                )
            numel = 1
            for s in shape:
                numel *= s
            if (end - begin) != numel * torch.empty((), dtype=dtype).element_size():
                raise MGTLoadError(f"{name}: tensor {key!r} has {end - begin} bytes for shape {list(shape)}")
            self.tensors[key] = TensorInfo(dtype, shape, base + begin, base + end)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.tensors.items()}

    def read(
        self,
        keys: Iterable[str] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (key, tensor) in file order, cast to ``dtype`` (floating tensors only)."""
        wanted = set(self.tensors) if keys is None else set(keys)
        order = sorted((info.start, k) for k, info in self.tensors.items() if k in wanted)
        device = torch.device(device) if device is not None else torch.device("cpu")
        with open(self.path, "rb") as f:
            for _, key in order:
                info = self.tensors[key]
                raw = torch.empty(info.nbytes, dtype=torch.uint8)
                f.seek(info.start)
                if info.nbytes and f.readinto(memoryview(raw.numpy())) != info.nbytes:
                    raise MGTLoadError(f"{self.path}: could not read tensor {key!r} (file changed or truncated)")
                t = raw.view(info.dtype).reshape(info.shape)
                target = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
                yield key, t.to(device=device, dtype=target)


def safetensors_file_size(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], metadata: dict | None = None) -> int:
    """Exact byte size of the safetensors file that would store tensors of these shapes/dtypes.

    Layout: u64 header length, compact JSON header padded with spaces to a multiple of 8, data
    ordered by dtype alignment (descending) then name. Lets tests compare a model's key/shape map
    with a published file size without writing or allocating anything.
    """

    def itemsize(dt: torch.dtype) -> int:
        return torch.empty((), dtype=dt).element_size()

    order = sorted(shapes, key=lambda k: (-itemsize(shapes[k][1]), k))
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for k in order:
        shape, dt = shapes[k]
        n = itemsize(dt)
        for s in shape:
            n *= s
        header[k] = {"dtype": DTYPE_NAMES[dt], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":"))
    n = len(text.encode())
    return 8 + n + (-n) % 8 + offset
