"""Idealised 3Sync: how many videos does an RSTG-shaped graph need to learn synchrony when
vision is taken out of the problem?

Each video is three nodes, one per digit, fed its exact identity (one-hot class) and, per frame,
its position on the 100x100 canvas and optionally its move since the previous frame. The label
follows the SyncMNIST protocol (the synchronised pair of distinct classes, "none" with
probability 1/92; jumps are integers in [-10, 10); no clipping here: a position may leave the
canvas, which changes nothing for the relation). The network is RSTG's graph part on those
nodes, fully connected: K = 3 space stages (send MLP on [x_j ; x_i], attention gather, update
MLP, residual + LayerNorm as in the default preset) with an LSTM time stage before each, a final
LSTM, mean over time, sum over nodes, a linear classifier; Adam, batch 32, gradient clipping 5.

A diagnostic for RESULTS.md ("What limits the default preset"); the project does not use it.

  /usr/bin/python3 bench/torch/ideal_sync.py --inputs moves --variant full
  /usr/bin/python3 bench/torch/ideal_sync.py --inputs moves --variant time-residual
  /usr/bin/python3 bench/torch/ideal_sync.py --inputs moves --variant 1-temp-stage
  /usr/bin/python3 bench/torch/ideal_sync.py --inputs moves --variant space-only

prints the accuracy on 1,000 held-out videos every 6,400 training videos.
"""
import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PAIRS = [(a, b) for a in range(10) for b in range(a + 1, 10)]
FRAMES = 10


def make_batch(size, generator, with_moves):
    """-> node inputs [B, T, 3, 12 or 14], labels [B]."""
    classes = torch.stack([torch.randperm(10, generator=generator)[:3] for _ in range(size)])
    jumps = torch.randint(-10, 10, (size, FRAMES - 1, 3, 2), generator=generator).float()
    none = torch.rand(size, generator=generator) < 1 / 92
    labels = torch.full((size,), 45)
    for i in range(size):
        if none[i]:
            continue
        first, second = torch.randperm(3, generator=generator)[:2].tolist()
        jumps[i, :, second] = jumps[i, :, first]
        pair = tuple(sorted((classes[i, first].item(), classes[i, second].item())))
        labels[i] = PAIRS.index(pair)
    start = torch.randint(0, 73, (size, 3, 2), generator=generator).float()
    positions = torch.cat([start[:, None], start[:, None] + jumps.cumsum(1)], 1)
    inputs = [F.one_hot(classes, 10).float()[:, None].expand(size, FRAMES, 3, 10),
              positions / 50 - 0.7]
    if with_moves:
        inputs.append(torch.cat([torch.zeros(size, 1, 3, 2), jumps], 1) / 10)
    return torch.cat(inputs, 3), labels


class SpaceStage(nn.Module):
    def __init__(self, dim, dot):
        super().__init__()
        self.dot = dot
        self.send_in = nn.Linear(2 * dim, dim)
        self.send_out = nn.Linear(dim, dim)
        if dot:
            self.query = nn.Linear(dim, dim, bias=False)
            self.key = nn.Linear(dim, dim, bias=False)
        else:
            self.score_target = nn.Linear(dim, 1, bias=False)
            self.score_source = nn.Linear(dim, 1, bias=False)
        self.gather_bias = nn.Parameter(torch.zeros(dim))
        self.update_in = nn.Linear(2 * dim, dim)
        self.update_out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):  # x [M, N, D], every node hears every other node
        m, n, d = x.shape
        receiver = x[:, :, None].expand(m, n, n, d)
        sender = x[:, None, :].expand(m, n, n, d)
        messages = F.relu(self.send_out(F.relu(self.send_in(torch.cat([sender, receiver], 3)))))
        if self.dot:
            scores = (self.query(x)[:, :, None] * self.key(x)[:, None, :]).sum(3) / math.sqrt(d)
        else:
            scores = F.leaky_relu(
                self.score_target(x)[:, :, None, 0] + self.score_source(x)[:, None, :, 0], 0.2)
        scores = scores.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
        weights = scores.softmax(2)
        gathered = F.relu((weights[..., None] * messages).sum(2) + self.gather_bias)
        update = self.update_out(F.relu(self.update_in(torch.cat([x, gathered], 2))))
        return self.norm(x + update)


class IdealRstg(nn.Module):
    def __init__(self, inputs, dim, variant, dot, stages=3):
        super().__init__()
        self.variant, self.stages = variant, stages
        self.project = nn.Linear(inputs, dim)
        self.time = nn.LSTM(dim, dim)
        self.final = nn.LSTM(dim, dim)
        self.space = SpaceStage(dim, dot)
        self.classifier = nn.Linear(dim, 46)

    def time_stage(self, cell, h):  # h [B, T, N, D], one sequence per node
        b, t, n, d = h.shape
        out, _ = cell(h.permute(1, 0, 2, 3).reshape(t, b * n, d))
        return out.reshape(t, b, n, d).permute(1, 0, 2, 3)

    def forward(self, x):
        h = self.project(x)
        b, t, n, d = h.shape
        for _ in range(self.stages):
            if self.variant in ("full", "time-residual"):
                timed = self.time_stage(self.time, h)
                h = timed + h if self.variant == "time-residual" else timed
            h = self.space(h.reshape(b * t, n, d)).reshape(b, t, n, d)
        if self.variant != "space-only":
            h = self.time_stage(self.final, h)
        return self.classifier(h.mean(1).sum(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", choices=["positions", "moves"], default="moves",
                        help="node inputs: class + position, or class + position + move")
    parser.add_argument("--variant", default="full",
                        choices=["full", "time-residual", "1-temp-stage", "space-only"])
    parser.add_argument("--attention", choices=["additive", "dot"], default="additive")
    parser.add_argument("--videos", type=int, default=64000, help="training videos")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    moves = args.inputs == "moves"
    model = IdealRstg(14 if moves else 12, args.dim, args.variant, args.attention == "dot")
    optimiser = torch.optim.Adam(model.parameters(), args.lr)
    data = torch.Generator().manual_seed(args.seed + 1)
    val_x, val_y = make_batch(1000, torch.Generator().manual_seed(99), moves)
    batch = 32
    for step in range(1, args.videos // batch + 1):
        x, y = make_batch(batch, data, moves)
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimiser.step()
        if (step * batch) % 6400 == 0:
            with torch.no_grad():
                accuracy = (model(val_x).argmax(1) == val_y).float().mean().item()
            print(f"{args.variant} {args.inputs} {args.attention}: {step * batch} videos, "
                  f"train loss {loss.item():.3f}, val acc {100 * accuracy:.1f}%", flush=True)


if __name__ == "__main__":
    main()
