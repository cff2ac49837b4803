"""One UNet denoising step, Atelier's UNet vs diffusers' UNet2DConditionModel, same SD1.5-architecture weights.

Each (implementation, dtype) runs in its own subprocess so the peak RSS printed is that implementation's alone.
Weights are random (seeded, fan-in scaled) and generated straight into the checkpoint layout; diffusers receives
them through its own ``convert_ldm_unet_checkpoint``. Batch 2 (a CFG pair), 64x64 latent (512x512 px) unless
--size, 77 context tokens.

    venv/bin/python benchmarks/unet_step.py [--steps 3] [--dtypes fp32,bf16] [--impls ours,diffusers]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# name -> (weight dtype, compute dtype); "bf16w" keeps bf16 weights but computes in fp32 (ours only)
DTYPES = {
    "fp32": (torch.float32, torch.float32),
    "bf16": (torch.bfloat16, torch.bfloat16),
    "bf16w": (torch.bfloat16, torch.float32),
}
DIFFUSERS_SD15 = {
    "sample_size": 64,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
}


def random_checkpoint(dtype: torch.dtype, memory_format: torch.memory_format) -> dict[str, torch.Tensor]:
    """Seeded random SD1.5 UNet weights in the original key layout, without building a model (keeps RSS honest)."""
    from modules.sd.unet import SD15_UNET, UNetModel

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in UNetModel(SD15_UNET).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name, shape in shapes.items():
        if len(shape) > 1:
            fan_in = shape[1:].numel()
            tensor = torch.randn(shape, generator=generator).mul_(fan_in**-0.5)
        elif name.endswith("weight"):  # norm scales
            tensor = torch.ones(shape)
        else:
            tensor = torch.randn(shape, generator=generator).mul_(0.02)
        weights[name] = tensor.to(dtype, memory_format=memory_format if len(shape) == 4 else torch.preserve_format)
    return weights


def build(
    impl: str, dtype: torch.dtype, channels_last: bool, compute_dtype: torch.dtype | None = None
) -> torch.nn.Module:
    """The model with the benchmark weights assigned (no copy); weights are made channels-last up front so
    converting the model afterwards does not hold two copies."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    weights = random_checkpoint(dtype, memory_format)
    if impl == "ours":
        from modules.sd.unet import SD15_UNET, UNetModel

        with torch.device("meta"):
            model = UNetModel(SD15_UNET)
        model.load_state_dict(weights, strict=True, assign=True)
        del weights
        if channels_last:
            model.enable_channels_last()
        if compute_dtype is not None and compute_dtype != dtype:
            model.set_compute_dtype(compute_dtype)
        return model.eval()
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    checkpoint = {f"model.diffusion_model.{k}": weights.pop(k) for k in list(weights)}
    with torch.device("meta"):
        model = UNet2DConditionModel(**DIFFUSERS_SD15)
    model.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, DIFFUSERS_SD15), strict=True, assign=True)
    del checkpoint
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model.eval()


def worker(impl: str, dtype_name: str, steps: int, channels_last: bool, size: int) -> dict:
    """Build one implementation, run a warm-up step and ``steps`` timed steps; returns timings and peak RSS."""
    dtype, compute_dtype = DTYPES[dtype_name]
    model = build(impl, dtype, channels_last, compute_dtype)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, size, size, generator=generator).to(compute_dtype)
    timesteps = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, 768, generator=generator).to(compute_dtype)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def step() -> torch.Tensor:
        if impl == "ours":
            return model(x, timesteps, context)
        return model(x, timesteps, context).sample

    times, cpu_times = [], []
    with torch.inference_mode():
        out = step()
        for _ in range(steps):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = step()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return {
        "impl": impl,
        "dtype": dtype_name,
        "s_per_step": sum(times) / len(times),
        "min_s": min(times),
        "cpu_s_per_step": sum(cpu_times) / len(cpu_times),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mib": rss_loaded,
        "out_abs_mean": out.float().abs().mean().item(),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--dtypes", default="fp32,bf16", help="fp32, bf16, bf16w (bf16 weights, fp32 compute; ours)")
    parser.add_argument("--impls", default="ours,diffusers")
    parser.add_argument("--no-channels-last", action="store_true", help="ours: keep NCHW (default: channels-last)")
    parser.add_argument("--diffusers-channels-last", action="store_true", help="also give diffusers channels-last")
    parser.add_argument("--size", type=int, default=64, help="latent height and width (64 = 512x512 px)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        impl, dtype_name = args.worker
        channels_last = not args.no_channels_last if impl == "ours" else args.diffusers_channels_last
        print(json.dumps(worker(impl, dtype_name, args.steps, channels_last, args.size)))
        return

    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, batch 2, {args.size}x{args.size} latent, 77x768 context")
    print(f"{'dtype':<6}{'impl':<11}{'s/step':>8}{'min':>8}{'CPU s':>8}{'peak RSS MiB':>14}{'RSS loaded':>12}")
    results: dict[tuple[str, str], dict] = {}
    for dtype_name in args.dtypes.split(","):
        for impl in args.impls.split(","):
            if impl != "ours" and DTYPES[dtype_name][0] != DTYPES[dtype_name][1]:
                continue  # diffusers has no separate compute dtype
            command = [sys.executable, __file__, "--worker", impl, dtype_name, "--steps", str(args.steps)]
            command += ["--threads", str(args.threads), "--size", str(args.size)]
            command += ["--no-channels-last"] * args.no_channels_last
            command += ["--diffusers-channels-last"] * args.diffusers_channels_last
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            results[(dtype_name, impl)] = result
            print(
                f"{dtype_name:<6}{impl:<11}{result['s_per_step']:>8.3f}{result['min_s']:>8.3f}{result['cpu_s_per_step']:>8.2f}"
                f"{result['peak_rss_mib']:>14.0f}{result['rss_after_load_mib']:>12.0f}",
                flush=True,
            )
        if (dtype_name, "ours") in results and (dtype_name, "diffusers") in results:
            ours, reference = results[(dtype_name, "ours")], results[(dtype_name, "diffusers")]
            ratio = ours["s_per_step"] / reference["s_per_step"]
            cpu_ratio = ours["cpu_s_per_step"] / reference["cpu_s_per_step"]
            print(f"{dtype_name:<6}ours/diffusers time ratio: {ratio:.3f} (CPU time {cpu_ratio:.3f})", flush=True)


if __name__ == "__main__":
    main()
