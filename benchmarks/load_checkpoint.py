"""Peak memory and time of loading a full-size SD1.5-architecture checkpoint: ours vs the naive way, in one run.

The naive way (what most loaders do) reads the whole file with `safetensors.torch.load_file`, builds the modules
with random init, then copies the weights in: the file, the init and the model all live at once. Ours builds on the
meta device and converts tensor by tensor from a memory map, releasing pages as it goes.

Each measurement runs in a fresh subprocess so peak RSS (ru_maxrss) belongs to that loader alone; the baseline
(Python + torch imported) is measured first and reported separately.

    python benchmarks/load_checkpoint.py [--file /tmp/sd15-random-fp16.safetensors] [--dtype float16|float32]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_checkpoint(path: Path) -> None:
    """A random-weight SD1.5-architecture checkpoint in the original single-file layout, stored in fp16."""
    import torch
    from safetensors.torch import save_file

    from modules.sd.text_encoders import SD1_CLIP_L, CLIPTextEncoder
    from modules.sd.unet import SD15_UNET, UNetModel
    from modules.sd.vae import AutoencoderKL, VAEConfig

    state: dict[str, torch.Tensor] = {}
    for prefix, factory in (("model.diffusion_model.", lambda: UNetModel(SD15_UNET)),
                            ("first_stage_model.", lambda: AutoencoderKL(VAEConfig())),
                            ("cond_stage_model.", lambda: CLIPTextEncoder(SD1_CLIP_L))):
        module = factory()
        state |= {prefix + k: v.detach().half().contiguous() for k, v in module.state_dict().items()}
        del module
    save_file(state, str(path))


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the parent's peak, inherited across fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, path: str, dtype_name: str) -> None:
    import torch

    dtype = getattr(torch, dtype_name)
    baseline = peak_rss_mb()
    start = time.perf_counter()
    if mode == "ours":
        from modules.sd.loader import load_model

        load_model(path, dtype=dtype)
    elif mode == "naive":
        from safetensors.torch import load_file

        from modules.sd import detection
        from modules.sd.loader import text_encoder_for
        from modules.sd.unet import UNetModel
        from modules.sd.vae import AutoencoderKL, fix_vae_state_dict

        sd = load_file(path)
        config = detection.detect(sd)
        parts = [(UNetModel(config.unet), detection.UNET_PREFIX, None),
                 (AutoencoderKL(config.vae), detection.VAE_PREFIX, fix_vae_state_dict)]
        for spec in config.text_encoders:
            module, fixup = text_encoder_for(spec)
            parts.append((module, spec.prefix, fixup))
        for module, prefix, fixup in parts:
            part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            module.to(dtype).load_state_dict(fixup(part) if fixup else part, strict=True)
    elapsed = time.perf_counter() - start
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak_rss_mb(), "seconds": elapsed}))


def measure(mode: str, path: Path, dtype: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--file", str(path), "--dtype", dtype],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=Path("/tmp/sd15-random-fp16.safetensors"))
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--child", choices=["ours", "naive"])
    args = parser.parse_args()
    if args.child:
        child(args.child, str(args.file), args.dtype)
        return
    if not args.file.exists():
        print(f"Writing a random SD1.5-architecture checkpoint to {args.file} ...", flush=True)
        make_checkpoint(args.file)
    size_mb = args.file.stat().st_size / 2**20
    print(f"checkpoint: {args.file.name}, {size_mb:.0f} MB; target dtype {args.dtype}")
    for mode in ("naive", "ours"):
        r = measure(mode, args.file, args.dtype)
        added = r["peak_mb"] - r["baseline_mb"]
        print(f"{mode:>5}: {r['seconds']:6.2f} s, peak RSS {r['peak_mb']:7.0f} MB "
              f"(baseline {r['baseline_mb']:.0f} MB, +{added:.0f} MB = {added / size_mb:.2f} x file, "
              f"total {r['peak_mb'] / size_mb:.2f} x file)")


if __name__ == "__main__":
    main()
