"""Reading TF (V2) checkpoints: ``model.ckpt.index`` + ``model.ckpt.data-NNNNN-of-MMMMM``.

The index is a LevelDB-format table (sorted keys, prefix-compressed blocks, a 48-byte
footer) mapping every tensor name to a ``BundleEntryProto`` (dtype, shape, shard, offset,
size); the data files hold the raw little-endian tensor bytes. Both formats are small and
fixed, so they are decoded here directly; ``TensorShapeProto`` is parsed with TF's own
protobuf definition (shipped in ``tensorboard``) when available. No TensorFlow needed.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from heads.tf_import.graphdef import VARIABLE_NAME

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER_SIZE = 5
#: TF DataType enum -> numpy
_DTYPES = {
    1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
    9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64,
}  # fmt: skip


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _snappy_decompress(data: bytes) -> bytes:
    """Raw snappy (the format of LevelDB blocks with compression type 1)."""
    length, pos = _varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            out += data[pos : pos + size]
            pos += size
            continue
        if kind == 1:
            size = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise ValueError("corrupt snappy block")
        for _ in range(size):  # copies may overlap their own output
            out.append(out[-offset])
    if len(out) != length:
        raise ValueError(f"snappy block: expected {length} bytes, got {len(out)}")
    return bytes(out)


def _read_block(table: bytes, offset: int, size: int) -> bytes:
    block = table[offset : offset + size]
    kind = table[offset + size]
    if kind == 0:
        return block
    if kind == 1:
        return _snappy_decompress(block)
    raise ValueError(f"unknown table block compression {kind}")


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` of every entry of a table block (keys prefix-compressed)."""
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_length]))
        pos += value_length
    return entries


def read_table(path: str | Path) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of a LevelDB-format table file, in key order."""
    table = Path(path).read_bytes()
    if len(table) < _FOOTER_SIZE:
        raise ValueError(f"{path} is too short to be a TF checkpoint index")
    footer = table[-_FOOTER_SIZE:]
    if struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
        raise ValueError(f"{path} is not a TF checkpoint index (bad table magic number)")
    _, pos = _varint(footer, 0)  # metaindex handle (unused)
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    entries = []
    for _, handle in _block_entries(_read_block(table, index_offset, index_size)):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        entries += _block_entries(_read_block(table, offset, size))
    return entries


def _fields(message: bytes) -> dict[int, list[int | bytes]]:
    """Protobuf wire fields: ``{field number: [values]}`` (varints, fixed ints, bytes)."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", message, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            value = message[pos : pos + length]
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<I", message, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _shape(message: bytes) -> tuple[int, ...]:
    """``TensorShapeProto`` -> shape (dim = 2, each with size = 1)."""
    dims = []
    for dim in _fields(message).get(2, []):
        assert isinstance(dim, bytes)
        size = _fields(dim).get(1, [0])[0]
        assert isinstance(size, int)
        dims.append(size - (1 << 64) if size >= 1 << 63 else size)
    return tuple(dims)


def _prefix(path: str | Path) -> Path:
    path = Path(path)
    if path.name.endswith(".index"):
        return path.with_name(path.name[: -len(".index")])
    return path


def read_checkpoint(path: str | Path, names_like_variables: bool = True) -> dict[str, np.ndarray]:
    """``{tensor name: array}`` of a TF V2 checkpoint.

    Args:
        path: the prefix (``.../model.ckpt``) or its ``.index`` file.
        names_like_variables: keep only trained-variable names (``.../weights``,
            ``.../BatchNorm/gamma`` ...), leaving out optimizer slots, moving averages and
            counters.
    """
    prefix = _prefix(path)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise FileNotFoundError(f"checkpoint index not found: {index}")
    entries = read_table(index)
    header = _fields(entries[0][1]) if entries and entries[0][0] == b"" else {}
    num_shards = int(header.get(1, [1])[0])  # type: ignore[arg-type]
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for key, value in entries:
        name = key.decode()
        if not name or (names_like_variables and not VARIABLE_NAME.match(name)):
            continue
        fields = _fields(value)
        dtype_code = int(fields.get(1, [0])[0])  # type: ignore[arg-type]
        if dtype_code not in _DTYPES:
            continue  # strings, resources: never weights
        if 7 in fields:
            raise NotImplementedError(f"{name} is stored as partitioned slices")
        shape = _shape(fields[2][0]) if 2 in fields else ()  # type: ignore[arg-type]
        shard = int(fields.get(3, [0])[0])  # type: ignore[arg-type]
        offset = int(fields.get(4, [0])[0])  # type: ignore[arg-type]
        size = int(fields.get(5, [0])[0])  # type: ignore[arg-type]
        if shard not in shards:
            data = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")
            if not data.is_file():
                raise FileNotFoundError(f"checkpoint data file not found: {data}")
            shards[shard] = data.read_bytes()
        raw = shards[shard][offset : offset + size]
        dtype = np.dtype(_DTYPES[dtype_code]).newbyteorder("<")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return out
