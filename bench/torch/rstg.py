"""RSTG in plain PyTorch 1.13, written to compute exactly what src/models/rstg.cpp computes
(same layers, same parameter names), for two jobs:

  * the throughput peer:  /usr/bin/python3 bench/torch/rstg.py bench [--channels 16,32,64 ...]
    trains on random videos with 2 threads and prints videos/s (median of timed steps);
  * the reference gradients for tests/test_rstg_torch.cpp:
    /usr/bin/python3 bench/torch/rstg.py fixture tests/fixtures/rstg_torch

Only the variants needed for those two jobs are here: all-temp-stages (the full model), with an
LSTM or GRU time stage. Graph ops use index_select / index_add_, the usual PyTorch way.
"""
import argparse
import json
import math
import os
import statistics
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def grid_cells(rows, cols, height, width):
    ch, cw = height / rows, width / cols
    return [(i * ch, j * cw, (i + 1) * ch, (j + 1) * cw) for i in range(rows) for j in range(cols)]


def area_weights(cells, h, w):
    """[cells, h*w]: each pixel's share (overlap area / cell area) of each cell."""
    p = torch.zeros(len(cells), h * w)
    for k, (top, left, bottom, right) in enumerate(cells):
        area = (bottom - top) * (right - left)
        for r in range(math.floor(top), math.ceil(bottom)):
            dy = min(bottom, r + 1) - max(top, r)
            for c in range(math.floor(left), math.ceil(right)):
                dx = min(right, c + 1) - max(left, c)
                if dy > 0 and dx > 0:
                    p[k, r * w + c] = dy * dx / area
    return p


def cells_touch(a, b, eps=1e-4):
    rows = min(a[2], b[2]) - max(a[0], b[0])
    cols = min(a[3], b[3]) - max(a[1], b[1])
    if rows < -eps or cols < -eps:
        return False
    return (rows > eps and cols > eps) or (rows > eps and abs(cols) <= eps) or (cols > eps and abs(rows) <= eps)


def region_edges(cells):
    src, dst = [], []
    for i in range(len(cells)):
        for j in range(len(cells)):
            if i != j and cells_touch(cells[i], cells[j]):
                src.append(j)
                dst.append(i)
    return src, dst


class SpaceStage(nn.Module):
    def __init__(self, dim, layer_norm=False, residual=False):
        super().__init__()
        # stgnn's --stage-residual: the update's output plus the stage's input (off in the fixtures).
        self.residual = residual
        # stgnn's --stage-norm: LayerNorm on the stage's output (off in the fixtures).
        self.output_norm = nn.LayerNorm(dim) if layer_norm else None
        self.gather_bias = nn.Parameter(torch.zeros(dim))
        self.send_source = nn.Linear(dim, dim)
        self.send_target = nn.Linear(dim, dim, bias=False)
        self.send_out = nn.Linear(dim, dim)
        self.score_source = nn.Linear(dim, 1, bias=False)
        self.score_target = nn.Linear(dim, 1, bias=False)
        self.update = nn.Sequential()
        self.update.add_module("0", nn.Linear(2 * dim, dim))
        self.update.add_module("1", nn.Linear(dim, dim))

    def forward(self, x, src, dst):
        n = x.shape[0]
        hidden = F.relu(self.send_source(x)[src] + self.send_target(x)[dst])
        messages = F.relu(self.send_out(hidden))
        scores = F.leaky_relu(self.score_source(x)[src] + self.score_target(x)[dst], 0.2)  # [E, 1]
        # Softmax over each destination's in-edges.
        group_max = torch.full((n, 1), -math.inf).scatter_reduce(0, dst[:, None], scores, "amax")
        e = torch.exp(scores - group_max[dst])
        totals = torch.zeros(n, 1).index_add_(0, dst, e)
        weights = e / totals[dst]
        gathered = F.relu(torch.zeros_like(x).index_add_(0, dst, messages * weights) + self.gather_bias)
        u = self.update
        out = F.relu(u[1](F.relu(u[0](torch.cat([x, gathered], 1)))))
        if self.residual:
            out = out + x
        return self.output_norm(out) if self.output_norm is not None else out


class Rstg(nn.Module):
    def __init__(self, channels=(32, 64, 128), node_dim=128, stages=3, grids=(3, 2, 1), image=64, classes=46,
                 cell="lstm", stage_norm=False, stage_residual=False):
        super().__init__()
        self.backbone = nn.Sequential()
        c, size = 1, image
        for i, width in enumerate(channels):
            self.backbone.add_module(str(4 * i), nn.Conv2d(c, width, 3))
            self.backbone.add_module(str(4 * i + 1), nn.BatchNorm2d(width))
            self.backbone.add_module(str(4 * i + 2), nn.ReLU())
            self.backbone.add_module(str(4 * i + 3), nn.MaxPool2d(2))
            c, size = width, (size - 2) // 2
        cells = []
        for g in grids:
            cells += grid_cells(g, g, size, size)
        self.register_buffer("pool", area_weights(cells, size, size), persistent=False)
        src, dst = region_edges(cells)
        self.frame_src, self.frame_dst, self.n = src, dst, len(cells)
        self.node_norm = nn.BatchNorm1d(c)
        self.node_projection = nn.Linear(c, node_dim) if c != node_dim else None
        self.space = SpaceStage(node_dim, stage_norm, stage_residual)
        make = nn.LSTMCell if cell == "lstm" else nn.GRUCell
        self.lstm = cell == "lstm"
        self.time = make(node_dim, node_dim)
        self.final_time = make(node_dim, node_dim)
        self.classifier = nn.Linear(node_dim, classes)
        self.stages, self.dim = stages, node_dim

    def step(self, cell, x, state):
        if self.lstm:
            h, c = cell(x, state)
            return (h, c), h
        h = cell(x, state)
        return h, h

    def forward(self, video):
        b, t = video.shape[:2]
        fmap = self.backbone(video.reshape(b * t, *video.shape[2:]))  # [BT, C, h, w]
        nodes = torch.matmul(fmap.flatten(2), self.pool.t())  # [BT, C, n]
        nodes = nodes.transpose(1, 2).reshape(b * t * self.n, -1)
        nodes = self.node_norm(nodes)
        if self.node_projection is not None:
            nodes = self.node_projection(nodes)
        nodes = nodes.reshape(b, t, self.n, self.dim).permute(1, 0, 2, 3).reshape(t, b * self.n, self.dim)
        offsets = torch.arange(b).repeat_interleave(len(self.frame_src)) * self.n
        src = torch.tensor(self.frame_src).repeat(b) + offsets
        dst = torch.tensor(self.frame_dst).repeat(b) + offsets
        states = [None] * self.stages
        final = None
        outputs = []
        for s in range(t):
            x = nodes[s]
            for k in range(self.stages):
                states[k], x = self.step(self.time, x, states[k])
                x = self.space(x, src, dst)
            final, h = self.step(self.final_time, x, final)
            outputs.append(h)
        over_time = torch.stack(outputs).mean(0).reshape(b, self.n, self.dim)
        return self.classifier(over_time.sum(1))


def write_safetensors(path, tensors):
    """The safetensors format from its spec: 8-byte header length, JSON header, raw data."""
    header, data = {}, b""
    for name in sorted(tensors):
        raw = tensors[name].detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    blob = json.dumps(header).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)


def fixture_large(out_dir):
    """The default network at full size (threaded code paths), for a one-off check."""
    torch.manual_seed(11)
    os.makedirs(out_dir, exist_ok=True)
    model = Rstg(channels=(16, 32, 64), node_dim=64, stages=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    weights = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    write_safetensors(os.path.join(out_dir, "lstm_weights.safetensors"), weights)
    video = torch.rand(8, 10, 1, 64, 64, requires_grad=True)
    labels = torch.arange(8) * 5
    logits = model(video)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    grads.update({"input": video.grad, "logits": logits, "loss": loss.reshape(1), "video": video})
    write_safetensors(os.path.join(out_dir, "lstm_expected.safetensors"), grads)


def fixture(out_dir):
    """A small RSTG (22x22 frames, 2 conv blocks, grids 2x2 + 1x1) with its weights, one batch,
    the loss, and the gradients of every parameter and of the input."""
    torch.manual_seed(7)
    os.makedirs(out_dir, exist_ok=True)
    for cell in ["lstm", "gru"]:
        model = Rstg(channels=(3, 4), node_dim=5, stages=2, grids=(2, 1), image=22, classes=6, cell=cell)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))  # move zero-initialised biases off zero
        weights = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        write_safetensors(os.path.join(out_dir, f"{cell}_weights.safetensors"), weights)
        video = torch.rand(2, 3, 1, 22, 22, requires_grad=True)
        labels = torch.tensor([1, 4])
        logits = model(video)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        grads = {k: p.grad for k, p in model.named_parameters()}
        grads["input"] = video.grad
        grads["logits"] = logits
        grads["loss"] = loss.reshape(1)
        grads["video"] = video
        grads["running.node_norm.running_mean"] = model.node_norm.running_mean
        write_safetensors(os.path.join(out_dir, f"{cell}_expected.safetensors"), grads)


def bench(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = tuple(int(c) for c in args.channels.split(","))
    model = Rstg(channels=channels, node_dim=args.node_dim, stages=args.stages, cell=args.cell,
                 stage_norm=args.stage_norm, stage_residual=args.stage_residual)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    video = torch.rand(args.batch, 10, 1, 64, 64)
    labels = torch.randint(0, 46, (args.batch,))
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(video), labels).backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}: RSTG channels {args.channels} D {args.node_dim} "
          f"K {args.stages} {args.cell} stage-norm {int(args.stage_norm)} residual {int(args.stage_residual)} batch {args.batch}: {step * 1e3:.1f} ms/step, {args.batch / step:.2f} videos/s "
          f"(median of {args.steps})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--channels", default="16,32,64")
    b.add_argument("--node-dim", type=int, default=64)
    b.add_argument("--stages", type=int, default=3)
    b.add_argument("--cell", default="lstm")
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--steps", type=int, default=5)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--stage-norm", type=int, default=1, help="LayerNorm after each space stage (default preset: 1)")
    b.add_argument("--stage-residual", type=int, default=1,
                   help="residual space stages: the update plus the input (default preset: 1)")
    f = sub.add_parser("fixture")
    f.add_argument("out_dir")
    f.add_argument("--large", action="store_true", help="the default network at full size (not committed)")
    args = parser.parse_args()
    if args.command == "bench":
        bench(args)
    elif args.large:
        fixture_large(args.out_dir)
    else:
        fixture(args.out_dir)
