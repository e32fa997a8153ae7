"""PyTorch 1.13 CPU peer of bench_foundation's BM_Conv2dForwardBackward: conv2d 3x3, no
padding, forward + backward at the RSTG backbone's shapes, 2 threads.

Run:  /usr/bin/python3 bench/torch/bench_conv.py
Prints one line per shape: ms per iteration (median of repeats) and GFLOP/s, counting the
same flops as the C++ benchmark (forward, weight gradient, and input gradient when C > 1).
"""
import statistics
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(1)

SHAPES = [  # frames, in channels, out channels, input size
    (320, 1, 32, 64), (320, 32, 64, 31), (320, 64, 128, 14),
    (10, 1, 512, 64), (10, 512, 512, 31), (10, 512, 512, 14),
]


def bench(n, c, o, s, repeats=10):
    x = torch.randn(n, c, s, s, requires_grad=c > 1)
    conv = torch.nn.Conv2d(c, o, 3)
    g = torch.ones(n, o, s - 2, s - 2)
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        y = conv(x)
        y.backward(g)
        conv.zero_grad(set_to_none=True)
        x.grad = None
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    forward = 2.0 * n * o * c * 9 * (s - 2) ** 2
    flops = forward * (3.0 if c > 1 else 2.0)
    return ms, flops / (ms * 1e-3) * 1e-9


if __name__ == "__main__":
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, mkldnn {torch.backends.mkldnn.is_available()}")
    for shape in SHAPES:
        ms, gflops = bench(*shape)
        print(f"conv2d fwd+bwd {shape}: {ms:.2f} ms  {gflops:.1f} GFLOP/s")
