#!/usr/bin/python3
"""Reads a transferd model archive without transferd (tests of ExportModel).

  read_model_archive.py ARCHIVE
      Opens the tar with the tarfile module, parses model.json, parses
      weights.safetensors by hand (8-byte little-endian header length, JSON
      header, raw little-endian data), checks it (contiguous, in-bounds
      offsets; sizes matching dtype x shape; the SHA-256 and size model.json
      gives) and prints one JSON object: members, metadata, and per tensor its
      dtype, shape and float64 sum and absolute sum. Exit 1 on any problem.

  read_model_archive.py --rewrite ARCHIVE OUT [--set PATH=JSON]...
                        [--add-member NAME] [--drop-member NAME]
      Writes a copy of ARCHIVE (ustar, via tarfile) with model.json changed:
      each --set replaces the value at a dotted PATH ("model.head.hidden_units=16",
      'classes=["a","b","c"]'); --add-member adds a small extra file under
      NAME, --drop-member leaves one out. For the import tests' bad archives.
"""
import hashlib
import io
import json
import struct
import sys
import tarfile

import numpy as np

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def fail(message):
    print(f"read_model_archive: {message}", file=sys.stderr)
    sys.exit(1)


def parse_safetensors(blob):
    if len(blob) < 8:
        fail("weights.safetensors is shorter than its 8-byte header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        fail("weights.safetensors header runs past the end")
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len:]
    header.pop("__metadata__", None)
    spans = []
    tensors = {}
    for name, info in header.items():
        dtype, shape = info["dtype"], info["shape"]
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            fail(f"tensor {name}: offsets {begin}..{end} outside {len(data)} data bytes")
        count = int(np.prod(shape)) if shape else 1
        if dtype == "BF16":
            raw = np.frombuffer(data[begin:end], dtype="<u2")
            values = (raw.astype(np.uint32) << 16).view(np.float32)
        elif dtype in DTYPES:
            values = np.frombuffer(data[begin:end], dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"))
        else:
            fail(f"tensor {name}: unknown dtype {dtype}")
        if values.size != count:
            fail(f"tensor {name}: {values.size} values for shape {shape}")
        spans.append((begin, end))
        tensors[name] = {
            "dtype": dtype,
            "shape": shape,
            "numel": count,
            "sum": float(values.astype(np.float64).sum()),
            "abs_sum": float(np.abs(values.astype(np.float64)).sum()),
        }
    spans.sort()
    position = 0
    for begin, end in spans:
        if begin != position:
            fail(f"tensor data not contiguous at byte {begin} (expected {position})")
        position = end
    if position != len(data):
        fail(f"{len(data) - position} bytes after the last tensor")
    return tensors


def read(path):
    with tarfile.open(path, mode="r:") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        for m in members:
            if not m.isreg():
                fail(f"member {m.name} is not a regular file")
        if names != ["model.json", "weights.safetensors"]:
            fail(f"members {names}")
        meta = json.loads(tar.extractfile("model.json").read().decode("utf-8"))
        weights = tar.extractfile("weights.safetensors").read()
    if meta.get("format") != "transferd-model" or meta.get("format_version") != 1:
        fail(f"format {meta.get('format')} {meta.get('format_version')}")
    w = meta["weights"]
    sha256 = hashlib.sha256(weights).hexdigest()
    if w["sha256"] != sha256 or w["bytes"] != len(weights) or w["file"] != "weights.safetensors":
        fail(f"weights in model.json {w} but the file has {len(weights)} bytes, sha256 {sha256}")
    tensors = parse_safetensors(weights)
    out = {
        "members": names,
        "format": meta["format"],
        "format_version": meta["format_version"],
        "id": meta["id"],
        "display_name": meta["display_name"],
        "classes": meta["classes"],
        "model": meta["model"],
        "preprocessing": meta["preprocessing"],
        "history_epochs": len(meta["history"]),
        "best_epoch": meta["best_epoch"],
        "evaluations": len(meta["evaluations"]),
        "parameters": meta["parameters"],
        "weights_sha256": sha256,
        "tensors": tensors,
        "total_numel": sum(t["numel"] for t in tensors.values()),
    }
    json.dump(out, sys.stdout, sort_keys=True)
    print()


def rewrite(args):
    source, target = args[0], args[1]
    sets, add, drop = [], [], []
    rest = args[2:]
    while rest:
        flag, value = rest[0], rest[1]
        rest = rest[2:]
        if flag == "--set":
            key, _, text = value.partition("=")
            sets.append((key.split("."), json.loads(text)))
        elif flag == "--add-member":
            add.append(value)
        elif flag == "--drop-member":
            drop.append(value)
        else:
            fail(f"unknown flag {flag}")
    with tarfile.open(source, mode="r:") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    meta = json.loads(files["model.json"])
    for path, value in sets:
        node = meta
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    files["model.json"] = json.dumps(meta, indent=2).encode("utf-8")
    for name in add:
        files[name] = b"extra\n"
    with tarfile.open(target, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for name, data in files.items():
            if name in drop:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--rewrite":
        rewrite(sys.argv[2:])
    elif len(sys.argv) == 2:
        read(sys.argv[1])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
