"""Writes the seed corpus of the fuzz harnesses: small valid files made by the real writers
(numpy.save, torch.save, ffmpeg, gzip/tarfile, json) in tests/fuzz/corpus/<target>/.

Run with the system interpreter (numpy, torch 1.13) and the ffmpeg CLI on PATH:
    /usr/bin/python3 tests/fuzz/make_corpus.py
The layouts of the combined inputs (mnist_idx) are those of tests/fuzz/targets.h.
"""
import gzip
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def target_dir(name):
    path = os.path.join(CORPUS, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def write(directory, name, data):
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def digits(count, seed):
    """count 28x28 uint8 digits (a bright stroke on black) and labels 0..9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        r = rng.integers(4, 20)
        images[i, r:r + 6, 8:20] = rng.integers(100, 256)
    labels = (np.arange(count) % 10).astype(np.uint8)
    return images, labels


def idx(array, magic):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def gz(data):
    # mtime=0 keeps the corpus byte-identical between runs of this script.
    return gzip.compress(data, mtime=0)


def mnist_idx():
    out = target_dir("mnist_idx")
    for count, compress in [(1, False), (3, False), (2, True)]:
        images, labels = digits(count, count)
        image_file, label_file = idx(images, 2051), idx(labels, 2049)
        if compress:
            image_file, label_file = gz(image_file), gz(label_file)
        name = "pair_%d%s" % (count, "_gz" if compress else "")
        write(out, name, struct.pack("<I", len(image_file)) + image_file + label_file)


def digits_json(count, seed):
    images, _ = digits(count, seed)
    values = [round(float(v) / 255.0, 3) for v in images.reshape(-1)]
    return json.dumps({"data": values}, separators=(",", ":")).encode()


def npm_digits():
    out = target_dir("npm_digits")
    write(out, "digits_1.json", digits_json(1, 1))
    write(out, "digits_2.json", digits_json(2, 2))
    # The npm package layout: package/src/digits/<k>.json in a gzip tarball.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for k in range(10):
            payload = digits_json(1, 10 + k)
            info = tarfile.TarInfo("package/src/digits/%d.json" % k)
            info.size = len(payload)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(payload))
    write(out, "package.tgz", gz(buffer.getvalue()))
    # The digit cache (format in src/data/mnist.h).
    images, labels = digits(3, 7)
    body = b"STGNNDG1" + struct.pack("<QII", 3, 28, 28) + labels.tobytes() + images.tobytes()
    write(out, "cache.bin", body + struct.pack("<I", zlib.crc32(body)))


def clip(take, start, end, camera):
    return "%s/start%.3f_end%.3f_%s.mp4" % (take, start, end, camera)


def egoexo_annotations():
    out = target_dir("egoexo_annotations")
    segments = []
    for i, (start, end, step) in enumerate([(0.5, 2.0, 1000), (2.0, 4.25, 1001), (5.0, 6.0, 1003)]):
        take = "take-%d" % (i // 2)
        names = [clip(take, start, end, c) for c in ["aria02_214-1", "cam01", "gp02"]]
        segments.append({
            "take_uid": "uid-%d" % (i // 2), "take_name": take, "start_time": start,
            "end_time": end, "segment_name_list": names, "ego_segment_name": names[0],
            "step_unique_id": step, "label_id": step - 1000 if step != 1003 else 3,
            "step_name": "step %d" % step})
    write(out, "segments.json", json.dumps({"segments": segments}, indent=1).encode())
    unlabelled = [{k: v for k, v in s.items() if k not in ("label_id", "step_unique_id")}
                  for s in segments]
    write(out, "segments_test.json", json.dumps(unlabelled).encode())
    raw = {"annotations": {
        "uid-0": {"take_uid": "uid-0", "take_name": "take-0", "scenario": "Cooking",
                  "segments": [
                      {"start_time": 0.5, "end_time": 2.0, "step_unique_id": 1000,
                       "step_name": "Get bowl", "step_description": "d", "is_essential": True,
                       "step_id": 4},
                      {"start_time": 2.0, "end_time": 3.0, "step_unique_id": "1002"}]},
        "uid-1": {"take_name": "take-1", "segments": [
            {"start_time": 1, "end_time": 2, "step_unique_id": 9999}]}},
        "taxonomy": {}, "vocabulary": []}
    write(out, "keystep_raw.json", json.dumps(raw, indent=1).encode())


def egoexo_labels():
    out = target_dir("egoexo_labels")
    write(out, "mapping.csv",
          b"label_id,step_unique_id,step_name,scenario_name\n"
          b"0,1000,Get bowl,Cooking\n1,1001,\"Crack egg, carefully\",Cooking\n2,1002,Whisk,Cooking\n")
    write(out, "mapping_reordered.csv",
          b"\xef\xbb\xbfstep_name,step_unique_id,label_id\r\n\"Say \"\"hi\"\"\",7,1\r\nWave,3,0\r\n")


def npy():
    out = target_dir("npy")
    a = (np.arange(12, dtype=np.float32).reshape(3, 4) * 0.25) - 1.0

    def save(name, array, **kwargs):
        buffer = io.BytesIO()
        if kwargs:
            np.lib.format.write_array(buffer, array, **kwargs)
        else:
            np.save(buffer, array)
        write(out, name, buffer.getvalue())

    save("f4.npy", a)
    save("f2.npy", a.astype(np.float16))
    save("f8.npy", a.astype(np.float64))
    save("u1.npy", np.arange(6, dtype=np.uint8).reshape(2, 3))
    save("i4.npy", np.array([-7, 9], dtype=np.int32))
    save("i8.npy", np.array([-3, 0, 1 << 40], dtype=np.int64))
    save("fortran.npy", np.asfortranarray(a.reshape(2, 3, 2)))
    save("scalar.npy", np.float32(1.5))
    save("empty.npy", np.zeros((0, 5), dtype=np.float32))
    save("v2.npy", a, version=(2, 0))
    save("v3.npy", a, version=(3, 0))


def torch_pt():
    out = target_dir("torch_pt")
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.25 - 1.0

    def save(name, obj):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        write(out, name, buffer.getvalue())

    save("f32.pt", base)
    save("f16.pt", base.half())
    save("f64.pt", base.double())
    save("bf16.pt", base.bfloat16())
    save("transposed.pt", base.t())
    save("sliced.pt", base[1:, 1:3])
    save("scalar.pt", torch.tensor(2.5))
    save("parameter.pt", torch.nn.Parameter(base[0]))
    save("4d.pt", base.reshape(1, 3, 1, 4))
    save("rejected_dict.pt", {"features": base})  # a dict, not a tensor
    buffer = io.BytesIO()
    torch.save(base, buffer, pickle_protocol=4)
    write(out, "protocol4.pt", buffer.getvalue())


def safetensors_bytes(tensors, dtypes, metadata):
    """The safetensors layout, with stgnn's two checksums (src/autograd/safetensors.h)."""
    header = {}
    data = b""
    for name in sorted(tensors):
        raw = tensors[name].tobytes()
        header[name] = {"dtype": dtypes[name], "shape": list(tensors[name].shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    meta = dict(metadata)
    meta["stgnn.crc32"] = str(zlib.crc32(data))
    header["__metadata__"] = meta
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    meta["stgnn.header_crc32"] = str(zlib.crc32(canonical.encode()))
    blob = json.dumps(header).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    return struct.pack("<Q", len(blob)) + blob + data


def safetensors():
    out = target_dir("safetensors")
    weight = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    write(out, "checkpoint.safetensors", safetensors_bytes(
        {"layer.weight": weight, "layer.bias": np.array([0.5, -1], dtype=np.float32),
         "optimizer.exp_avg.layer.weight": np.zeros((2, 3), dtype=np.float32)},
        {"layer.weight": "F32", "layer.bias": "F32", "optimizer.exp_avg.layer.weight": "F32"},
        {"format": "stgnn-checkpoint-1", "epoch": "2", "optimizer.kind": "adam",
         "optimizer.steps": "8"}))
    write(out, "dtypes.safetensors", safetensors_bytes(
        {"h": np.array([-1.5, 2.25], dtype=np.float16), "d": np.array([[3.0]], dtype=np.float64),
         "b": torch.tensor([1.0, -0.5], dtype=torch.bfloat16).view(torch.int16).numpy(),
         "s": np.float32(4.0).reshape(())},
        {"h": "F16", "d": "F64", "b": "BF16", "s": "F32"}, {}))
    # Without stgnn's checksums, as other writers produce it.
    header = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    blob = json.dumps(header).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    write(out, "plain.safetensors",
          struct.pack("<Q", len(blob)) + blob + np.array([1, 2], dtype=np.float32).tobytes())


def config_json():
    out = target_dir("config_json")
    write(out, "config.json", json.dumps({
        "epochs": 2, "batch-size": 16, "lr": 0.003, "weight-decay": 0.0, "seed": 7,
        "threads": 2, "quiet": True, "out": "runs/x", "name": "tiny", "count": 3,
        "ratio": 0.25, "channels": "4,8,8", "mode": "train", "paths": ["a", "b"],
        "switch": False, "program": "syncmnist_exp", "git_commit": "abc1234",
        "extra": {"nested": [1, 2]}, "nothing": None}, indent=2).encode())
    write(out, "minimal.json", b'{"lr": 1e-4, "channels": "16"}')


def video():
    out = target_dir("video")
    source = "testsrc=size=16x16:rate=5:duration=0.8"
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                              text=True, check=True).stdout
    variants = [("mpeg4.mp4", ["-c:v", "mpeg4", "-pix_fmt", "yuv420p"]),
                ("mjpeg.avi", ["-c:v", "mjpeg", "-pix_fmt", "yuvj420p"]),
                ("anim.gif", ["-c:v", "gif"]),
                ("ffv1.mkv", ["-c:v", "ffv1"]),
                ("mpeg2.ts", ["-c:v", "mpeg2video", "-pix_fmt", "yuv420p"])]
    if " libx264 " in encoders:
        variants.append(("h264.mp4", ["-c:v", "libx264", "-preset", "ultrafast",
                                      "-pix_fmt", "yuv420p"]))
    if " libvpx " in encoders:
        variants.append(("vp8.webm", ["-c:v", "libvpx", "-pix_fmt", "yuv420p"]))
    with tempfile.TemporaryDirectory() as tmp:
        for name, codec in variants:
            path = os.path.join(tmp, name)
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                            source] + codec + ["-fflags", "+bitexact", "-flags:v", "+bitexact",
                                               "-map_metadata", "-1", path], check=True)
            with open(path, "rb") as f:
                write(out, name, f.read())


def main():
    for make in [mnist_idx, npm_digits, egoexo_annotations, egoexo_labels, npy, torch_pt,
                 safetensors, config_json, video]:
        make()


if __name__ == "__main__":
    main()
