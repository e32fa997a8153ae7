"""torch.nn.GRU / torch.nn.LSTM at the shapes of bench/bench_recurrent.cpp, for comparison.

T = 10 frames, B = 32 videos x 14 nodes = 448 rows, in = H = 128 and 512, no initial state,
gradients for the input and every weight; 2 threads, as the C++ benchmarks get.

    /usr/bin/python3 bench/torch/bench_recurrent.py                 # 3 warm-up runs, median of 20
    /usr/bin/python3 bench/torch/bench_recurrent.py --warmup 1 --repeats 1   # smoke test

Prints one line per measurement: module, shapes, pass, median milliseconds.
"""
import argparse
import statistics
import time

import torch

T, B = 10, 32 * 14
SIZES = [128, 512]


def median_ms(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(cls, size, warmup, repeats):
    torch.manual_seed(0)
    layer = cls(size, size)
    x = torch.randn(T, B, size, requires_grad=True)
    g = torch.ones(T, B, size)

    def forward_backward():
        out, _ = layer(x)
        out.backward(g)
        layer.zero_grad(set_to_none=True)
        x.grad = None

    def forward():
        with torch.no_grad():
            layer(x)

    shapes = f"T={T} B={B} in={size} H={size}"
    for name, fn in [("forward+backward", forward_backward), ("forward (no grad)", forward)]:
        ms = median_ms(fn, warmup, repeats)
        print(f"torch.nn.{cls.__name__:<5} {shapes:<26} {name:<18} {ms:9.2f} ms "
              f"(median of {repeats})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for cls in [torch.nn.GRU, torch.nn.LSTM]:
        for size in SIZES:
            measure(cls, size, args.warmup, args.repeats)


if __name__ == "__main__":
    main()
