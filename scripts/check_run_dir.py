#!/usr/bin/env python3
"""Checks a training run directory for torn or corrupt files (scripts/kill9-campaign.sh).

  check_run_dir.py RUN_DIR                     every *.safetensors parses and its stgnn.crc32
                                               matches; metrics.csv has whole rows; JSON parses
  check_run_dir.py RUN_DIR --same-as REF_DIR   also: every checkpoint of REF_DIR exists in
                                               RUN_DIR with bit-identical tensors

Leftover hidden temporaries of interrupted atomic writes (.<name>.tmp.XXXXXX) are reported on
stdout but are not corruption: the real files are never touched until the rename.
Exit 0 when everything holds; 1 with one line per problem on stdout.
"""
import json
import pathlib
import struct
import sys
import zlib


def read_safetensors(path):
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ValueError("shorter than 8 bytes")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if 8 + header_len > len(raw):
        raise ValueError("header length beyond the file")
    header = json.loads(raw[8 : 8 + header_len])
    data = raw[8 + header_len :]
    meta = header.pop("__metadata__", {})
    if "stgnn.crc32" not in meta:
        raise ValueError("no stgnn.crc32 in the metadata")
    if str(zlib.crc32(data)) != meta["stgnn.crc32"]:
        raise ValueError("data CRC-32 mismatch")
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"tensor {name} outside the data")
        tensors[name] = (entry["dtype"], tuple(entry["shape"]), data[begin:end])
    return tensors


def main(argv):
    run = pathlib.Path(argv[1])
    ref = pathlib.Path(argv[3]) if len(argv) > 3 and argv[2] == "--same-as" else None
    problems = []
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run)
        if path.name.startswith(".") and ".tmp." in path.name:
            print(f"note: leftover temporary {rel}")
            continue
        try:
            if path.suffix == ".safetensors":
                read_safetensors(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.name == "metrics.csv":
                lines = path.read_text().split("\n")
                if lines[-1] != "":
                    raise ValueError("last row not terminated")
                width = lines[0].count(",")
                if any(line.count(",") != width for line in lines[1:-1]):
                    raise ValueError("a row with the wrong number of fields")
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            problems.append(f"{rel}: {e}")
    if ref is not None:
        for ref_path in sorted(ref.rglob("*.safetensors")):
            rel = ref_path.relative_to(ref)
            try:
                if read_safetensors(ref_path) != read_safetensors(run / rel):
                    problems.append(f"{rel}: tensors differ from the reference")
            except Exception as e:  # noqa: BLE001
                problems.append(f"{rel}: {e}")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
