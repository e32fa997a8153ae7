"""PyTorch 1.13 CPU baselines for bench/bench_graph.cpp: the same computations, forward +
backward, timed the same way (median wall time of --repeat runs after one warm-up), with the same
counters (GFLOP/s of forward + backward GEMM flops = 3x the forward's; GB/s of feature bytes
gathered + written for the SpMM).

Sparse ops use the strongest stock tools: index_select / index_add_ for gathers and sums,
scatter_reduce("amax") for max, torch.sparse.mm on a coalesced COO matrix as a second sum baseline.
GLEVR's EdgeConv is timed twice: with the same split first layer as stgnn ("split") and as PyG
runs it, one GEMM on per-edge [x_i ; x_j - x_i] rows ("pyg").

    /usr/bin/python3 bench/torch/bench_graph.py            # full sizes (minutes)
    /usr/bin/python3 bench/torch/bench_graph.py --quick    # smoke test at small sizes
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def timed(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name, seconds, counter, value):
    print(f"{name:<34} {seconds * 1e3:10.1f} ms   {counter}={value / seconds * 1e-9:8.2f}/s")


def batch(edge_lists, nodes_per_graph):
    src = torch.cat([s + k * nodes_per_graph for k, (s, _) in enumerate(edge_lists)])
    dst = torch.cat([d + k * nodes_per_graph for k, (_, d) in enumerate(edge_lists)])
    return src, dst


def edge_softmax(scores, dst, n):
    heads = scores.shape[1]
    index = dst[:, None].expand(-1, heads)
    row_max = torch.full((n, heads), -math.inf).scatter_reduce(
        0, index, scores.detach(), "amax", include_self=True)
    ex = (scores - row_max[dst]).exp()
    return ex / torch.zeros(n, heads).index_add(0, dst, ex)[dst]


# ---- RSTG space stage

def region_edges():
    cells = []
    for s in (3, 2, 1):
        size = 6 / s
        cells += [(i * size, j * size, (i + 1) * size, (j + 1) * size)
                  for i in range(s) for j in range(s)]
    src, dst = [], []
    eps = 1e-6 * 6
    for a, p in enumerate(cells):
        for b, q in enumerate(cells):
            if a == b:
                continue
            rows = min(p[2], q[2]) - max(p[0], q[0])
            cols = min(p[3], q[3]) - max(p[1], q[1])
            rows_pos, cols_pos = rows > eps, cols > eps
            if (rows_pos and cols_pos) or (rows_pos and abs(cols) <= eps) or \
                    (cols_pos and abs(rows) <= eps):
                src.append(a)
                dst.append(b)
    return torch.tensor(src), torch.tensor(dst)


def bench_rstg(dim, videos, repeat):
    s, d = region_edges()
    assert len(s) == 90
    src, dst = batch([(s, d)] * (videos * 10), 14)
    n, e = videos * 10 * 14, len(src)
    g = torch.Generator().manual_seed(1)

    def p(*shape, scale):
        return (torch.randn(*shape, generator=g) * scale).requires_grad_()

    s1, s2 = 1 / math.sqrt(2 * dim), 1 / math.sqrt(dim)
    send_w1, send_b1 = p(dim, 2 * dim, scale=s1), p(dim, scale=0.01)
    send_w2, send_b2 = p(dim, dim, scale=s2), p(dim, scale=0.01)
    att_w, gather_b = p(2, dim, scale=s2), p(dim, scale=0.01)
    up_w1, up_b1 = p(dim, 2 * dim, scale=s1), p(dim, scale=0.01)
    up_w2, up_b2 = p(dim, dim, scale=s2), p(dim, scale=0.01)
    x = torch.randn(n, dim, generator=g).requires_grad_()

    def step():
        at_source = x @ send_w1[:, :dim].t()
        at_destination = x @ send_w1[:, dim:].t() + send_b1
        m = F.relu(at_source.index_select(0, src) + at_destination.index_select(0, dst))
        m = F.relu(F.linear(m, send_w2, send_b2))
        proj = x @ att_w.t()
        scores = F.leaky_relu(proj[src, 1:2] + proj[dst, 0:1], 0.2)
        a = edge_softmax(scores, dst, n)
        gathered = F.relu(torch.zeros(n, dim).index_add(0, dst, m * a) + gather_b)
        h = F.relu(F.linear(torch.cat([x, gathered], 1), up_w1, up_b1))
        y = F.relu(F.linear(h, up_w2, up_b2))
        y.backward(torch.ones_like(y))
        x.grad = None

    flops = 3 * 2.0 * dim * dim * (2 * n + e + 2 * n + n)
    report(f"RstgSpaceStage/{dim} ({n}n {e}e)", timed(step, repeat), "GFLOPs", flops)


# ---- GLEVR layers

def glevr_graph(takes, segments):
    src, dst = [], []
    for j in range(segments):
        for i in range(max(0, j - 1), min(segments, j + 2)):
            src.append(j)
            dst.append(i)
    chain = (torch.tensor(src), torch.tensor(dst))
    src, dst = batch([chain] * takes, segments)
    relation = (torch.arange(len(src)) % 10 == 0).long()
    return src, dst, relation


def bench_edgeconv(takes, segments, c1, c2, repeat, variant):
    src, dst, _ = glevr_graph(takes, segments)
    n, e = takes * segments, len(src)
    g = torch.Generator().manual_seed(2)
    w0 = (torch.randn(c1, 2 * c1, generator=g) / math.sqrt(2 * c1)).requires_grad_()
    b0 = torch.zeros(c1).requires_grad_()
    w2 = (torch.randn(c2, c1, generator=g) / math.sqrt(c1)).requires_grad_()
    b2 = torch.zeros(c2).requires_grad_()
    x = torch.randn(n, c1, generator=g).requires_grad_()
    index = dst[:, None].expand(-1, c2)

    def step():
        if variant == "split":
            w_a, w_b = w0[:, :c1], w0[:, c1:]
            at_destination = F.linear(x, w_a - w_b, b0)
            at_source = x @ w_b.t()
            hidden = at_source.index_select(0, src) + at_destination.index_select(0, dst)
        else:
            xi, xj = x.index_select(0, dst), x.index_select(0, src)
            hidden = F.linear(torch.cat([xi, xj - xi], 1), w0, b0)
        m = F.linear(F.relu(hidden), w2, b2)
        y = torch.zeros(n, c2).scatter_reduce(0, index, m, "amax", include_self=False)
        y.backward(torch.ones_like(y))
        x.grad = None
        for t in (w0, b0, w2, b2):
            t.grad = None

    first = 2 * 2.0 * n * c1 * c1 if variant == "split" else 2.0 * e * 2 * c1 * c1
    flops = 3 * (first + 2.0 * e * c1 * c2)
    report(f"GlevrEdgeConv[{variant}] ({n}n {e}e)", timed(step, repeat), "GFLOPs", flops)


def bench_rgcn(takes, segments, c_in, c_out, repeat):
    src, dst, relation = glevr_graph(takes, segments)
    n, r = takes * segments, 2
    g = torch.Generator().manual_seed(3)
    weight = (torch.randn(r, c_in, c_out, generator=g) / math.sqrt(c_in)).requires_grad_()
    root = (torch.randn(c_in, c_out, generator=g) / math.sqrt(c_in)).requires_grad_()
    bias = torch.zeros(c_out).requires_grad_()
    x = torch.randn(n, c_in, generator=g).requires_grad_()
    slot = dst * r + relation
    inv_count = 1.0 / torch.bincount(slot, minlength=n * r).clamp(min=1).float()
    edge_scale = inv_count[slot][:, None]
    read_row = src * r + relation

    def step():
        # Transform first (out < in), one GEMM for all relations, then mean per relation.
        per_relation = (x @ weight.permute(1, 0, 2).reshape(c_in, r * c_out)).reshape(n * r, c_out)
        messages = per_relation.index_select(0, read_row) * edge_scale
        y = torch.zeros(n, c_out).index_add(0, dst, messages) + x @ root + bias
        y.backward(torch.ones_like(y))
        x.grad = None
        for t in (weight, root, bias):
            t.grad = None

    flops = 3 * 2.0 * n * c_in * c_out * (r + 1)
    report(f"GlevrRgcn ({n}n {len(src)}e)", timed(step, repeat), "GFLOPs", flops)


# ---- large sparse aggregation

def bench_large_sparse(n, e, f, repeat):
    g = torch.Generator().manual_seed(4)
    weights = torch.arange(1, n + 1, dtype=torch.float64).pow(-0.8)
    dst = torch.multinomial(weights, e, replacement=True, generator=g)
    src = torch.randint(0, n, (e,), generator=g)
    x = torch.randn(n, f, generator=g).requires_grad_()
    row = 4.0 * f
    sum_bytes = 2 * (e * row + n * row)
    max_bytes = (e * row + 2 * n * row) + (2 * e * row + n * row)
    adjacency = torch.sparse_coo_tensor(torch.stack([dst, src]), torch.ones(e), (n, n)).coalesce()
    index = dst[:, None].expand(-1, f)

    def sum_index():
        y = torch.zeros(n, f).index_add(0, dst, x.index_select(0, src))
        y.backward(torch.ones_like(y))
        x.grad = None

    def sum_sparse():
        y = torch.sparse.mm(adjacency, x)
        y.backward(torch.ones_like(y))
        x.grad = None

    def max_scatter():
        y = torch.zeros(n, f).scatter_reduce(0, index, x.index_select(0, src), "amax",
                                             include_self=False)
        y.backward(torch.ones_like(y))
        x.grad = None

    report(f"LargeSparse/sum index_add ({e}e)", timed(sum_index, repeat), "GBps", sum_bytes)
    report(f"LargeSparse/sum sparse.mm ({e}e)", timed(sum_sparse, repeat), "GBps", sum_bytes)
    report(f"LargeSparse/max scatter_reduce ({e}e)", timed(max_scatter, repeat), "GBps", max_bytes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    videos = 2 if args.quick else 32
    for dim in (128, 512):
        bench_rstg(dim, videos, repeat)
    takes, c1, c2 = (2, 192, 128) if args.quick else (32, 1536, 1024)
    for variant in ("split", "pyg"):
        bench_edgeconv(takes, 625, c1, c2, repeat, variant)
    bench_rgcn(takes, 625, 128 if args.quick else 1024, 278, repeat)
    bench_large_sparse(10000 if args.quick else 100000, 100000 if args.quick else 1000000, 64,
                       repeat)


if __name__ == "__main__":
    main()
