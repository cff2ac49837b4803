"""fp32 against bf16 autocast for one AFNO training step on this CPU (decides the ``auto`` precision).

    venv/bin/python extensions/afno/benchmarks/precision_cpu.py --threads 1

Times forward + backward + AdamW at the shipped model's size (64², patch 4, D 128, depth 4, batch 16) and prints the
milliseconds per step for each precision and whether this CPU has native bf16 (AVX512-BF16 / AMX).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from afno_lab.model import AFNOConfig, AFNONet  # noqa: E402
from afno_lab.training import cpu_has_native_bf16  # noqa: E402


def time_steps(dtype: torch.dtype | None, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    net = AFNONet(AFNOConfig(patch_size=(4, 4), embed_dim=128, depth=4))
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3)
    x, y = torch.randn(batch, 1, 64, 64), torch.randn(batch, 1, 64, 64)

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = net(x)
        loss = (out.float() - y).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), native bf16: {cpu_has_native_bf16()}")
    fp32 = time_steps(None, args.batch, args.repeats)
    bf16 = time_steps(torch.bfloat16, args.batch, args.repeats)
    print(f"fp32 {fp32:.0f} ms/step, bf16 autocast {bf16:.0f} ms/step ({bf16 / fp32:.1f}x)")


if __name__ == "__main__":
    main()
