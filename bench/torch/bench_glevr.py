"""PyTorch 1.13 CPU baseline for bench/bench_glevr.cpp: one GLEVR training epoch over
takes x segments (1536-d ego + exo views, 278 classes), the same network, graphs and loop, in
plain PyTorch (no PyG): EdgeConv as PyG runs it (one GEMM on the per-edge rows
[x_i ; x_j - x_i], then a per-destination max with scatter_reduce "amax"), or with --split the
first layer split into per-node products as stgnn does; RGCNConv as a mean per relation
(index_add_ and in-degree counts) times W_r, plus the root weight and bias.

Per epoch: takes shuffled, batches of 32 takes (one graph each, block-diagonal), each batch's
features generated when needed (4.6 GB for 5,000 x 30 x 5 views would not fit the 4 GiB goal),
cross-entropy over every node, Adam lr 5e-4 weight decay 0.01. Prints seconds per epoch,
segments/s and peak RSS.

    /usr/bin/python3 bench/torch/bench_glevr.py                 # 5,000 takes x 30 (long)
    /usr/bin/python3 bench/torch/bench_glevr.py --takes 648     # 20 batches + 1 of 8 (GlevrEpoch/648)
    /usr/bin/python3 bench/torch/bench_glevr.py --quick         # smoke test: 64 takes
"""
import argparse
import sys
import warnings
import resource
import time

import torch
import torch.nn as nn

torch.set_num_threads(2)
warnings.filterwarnings("ignore", message="scatter_reduce")

DIM, CLASSES, BATCH = 1536, 278, 32


def take_edges(segments, exo, tau=1):
    """(src, dst, relation, attr) of one take: temporal chains (relation 0, attr sign(src - dst))
    per view, ego -> exo_k and exo_k <-> exo_l at the same index (relation 1, attr -2)."""
    src, dst, rel, attr = [], [], [], []
    for v in range(1 + exo):
        o = v * segments
        for j in range(segments):
            for i in range(max(0, j - tau), min(segments, j + tau + 1)):
                src.append(o + j), dst.append(o + i), rel.append(0)
                attr.append((j > i) - (j < i))
    for k in range(1, exo + 1):
        for i in range(segments):
            src.append(i), dst.append(k * segments + i), rel.append(1), attr.append(-2)
    for k in range(1, exo + 1):
        for l in range(k + 1, exo + 1):
            for i in range(segments):
                a, b = k * segments + i, l * segments + i
                src += [a, b]
                dst += [b, a]
                rel += [1, 1]
                attr += [-2, -2]
    return (torch.tensor(src), torch.tensor(dst), torch.tensor(rel),
            torch.tensor(attr, dtype=torch.float32))


class EdgeConv(nn.Module):
    def __init__(self, c1, c2, split):
        super().__init__()
        self.lin1, self.lin2, self.split, self.c1 = nn.Linear(2 * c1, c1), nn.Linear(c1, c2), split, c1

    def forward(self, x, src, dst):
        if self.split:
            wa, wb = self.lin1.weight[:, :self.c1], self.lin1.weight[:, self.c1:]
            h = (x @ (wa - wb).t() + self.lin1.bias)[dst] + (x @ wb.t())[src]
        else:
            xi, xj = x[dst], x[src]
            h = self.lin1(torch.cat([xi, xj - xi], 1))
        m = self.lin2(torch.relu(h))
        out = torch.zeros(x.shape[0], m.shape[1])
        return out.scatter_reduce(0, dst[:, None].expand_as(m), m, "amax", include_self=False)


class RGCN(nn.Module):
    def __init__(self, cin, cout, relations=2):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(relations, cin, cout))
        self.root = nn.Parameter(torch.empty(cin, cout))
        self.bias = nn.Parameter(torch.zeros(cout))
        nn.init.xavier_uniform_(self.weight)
        nn.init.xavier_uniform_(self.root)

    def forward(self, x, src, dst, rel):
        out = x @ self.root + self.bias
        for r in range(self.weight.shape[0]):
            mask = rel == r
            s, d = src[mask], dst[mask]
            count = torch.zeros(x.shape[0]).index_add_(0, d, torch.ones(d.shape[0])).clamp_(min=1)
            mean = torch.zeros(x.shape[0], x.shape[1]).index_add_(0, d, x[s]) / count[:, None]
            out = out + mean @ self.weight[r]
        return out


class Stream(nn.Module):
    def __init__(self, c1, c2, split):
        super().__init__()
        self.edge, self.norm, self.rgcn = EdgeConv(c1, c2, split), nn.BatchNorm1d(c2), RGCN(c2, CLASSES)
        self.dropout = nn.Dropout(0.5)

    def forward(self, h, src, dst, rel):
        y = self.dropout(torch.relu(self.norm(self.edge(h, src, dst))))
        return self.rgcn(y, src, dst, rel)


class Glevr(nn.Module):
    def __init__(self, split):
        super().__init__()
        self.input = nn.Linear(DIM, DIM)
        self.norm = nn.BatchNorm1d(DIM)
        self.streams = nn.ModuleList([Stream(DIM, 1024, split) for _ in range(3)])

    def forward(self, x, src, dst, rel, attr):
        h = torch.relu(self.norm(self.input(x)))
        f, b = attr <= 0, attr >= 0
        return (self.streams[0](h, src[f], dst[f], rel[f]) +
                self.streams[1](h, src[b], dst[b], rel[b]) +
                self.streams[2](h, src, dst, rel))


def take_features(take, segments, views, labels):
    g = torch.Generator().manual_seed(take)
    x = torch.rand(views * segments, DIM, generator=g) - 0.5
    signal = (((labels.repeat(views)[:, None] * 131 + torch.arange(DIM)[None]) % 17) == 0)
    return x + 0.5 * signal.float()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--takes", type=int, default=5000)
    parser.add_argument("--segments", type=int, default=30)
    parser.add_argument("--exo", type=int, default=4)
    parser.add_argument("--split", action="store_true", help="split EdgeConv's first layer")
    parser.add_argument("--quick", action="store_true", help="64 takes (smoke test)")
    args = parser.parse_args()
    takes = 64 if args.quick else args.takes
    views = 1 + args.exo
    torch.manual_seed(1)
    model = Glevr(args.split)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=0.01)
    src1, dst1, rel1, attr1 = take_edges(args.segments, args.exo)
    nodes = views * args.segments
    labels = torch.randint(0, CLASSES, (takes, args.segments))
    order = torch.randperm(takes)
    start = time.perf_counter()
    for first in range(0, takes, BATCH):
        ids = order[first:first + BATCH].tolist()
        x = torch.cat([take_features(t, args.segments, views, labels[t]) for t in ids])
        y = torch.cat([labels[t].repeat(views) for t in ids])
        offsets = torch.arange(len(ids)).repeat_interleave(src1.shape[0]) * nodes
        src, dst = src1.repeat(len(ids)) + offsets, dst1.repeat(len(ids)) + offsets
        rel, attr = rel1.repeat(len(ids)), attr1.repeat(len(ids))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x, src, dst, rel, attr), y)
        loss.backward()
        optimizer.step()
        done = min(first + BATCH, takes)
        elapsed = time.perf_counter() - start
        print(f"\r{done}/{takes} takes  {elapsed:7.1f} s  ETA {elapsed / done * (takes - done):7.1f} s",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"GlevrEpoch/{takes}/{args.segments}/{args.exo} ({'split' if args.split else 'pyg'}) "
          f"{seconds:9.1f} s/epoch   {takes * args.segments / seconds:8.1f} segments/s   "
          f"peak RSS {peak:8.0f} MiB   loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
