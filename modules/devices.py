"""Device and dtype choice.

The fastest precision differs by hardware: fp16 on CUDA, bf16 on CPUs with native bf16 matrix units (Intel AMX or
AVX512-BF16), fp32 elsewhere. The choice is a pure function of the flags and a `Capabilities` value so it can be
tested with faked hardware; `detect_capabilities()` reads the real machine. A CPU-only machine is normal here: it
gets a one-line notice, never an assertion (A1111's "Torch is not able to use GPU" is its most common start failure).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True)
class Capabilities:
    """What the machine offers, as far as precision and placement are concerned."""

    cuda_available: bool
    cuda_device_count: int
    mps_available: bool
    cpu_has_native_bf16: bool


@dataclass(frozen=True)
class DeviceChoice:
    """Where and in which precision each model part runs."""

    device: torch.device
    dtype: torch.dtype
    dtype_vae: torch.dtype
    dtype_text_encoder: torch.dtype
    notice: str | None = None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def detect_capabilities() -> Capabilities:
    """Read the real machine's capabilities."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Capabilities(
        cuda_available=cuda,
        cuda_device_count=torch.cuda.device_count() if cuda else 0,
        mps_available=mps,
        cpu_has_native_bf16=bool(CPU_BF16_FLAGS & cpu_flags()),
    )


def choose_device(caps: Capabilities, *, use_cpu: list[str] | tuple[str, ...] = (), device_id: str | None = None,
                  task: str = "sd") -> torch.device:
    """cuda → mps → cpu, unless `--use-cpu all` or `--use-cpu <task>` asks for the CPU."""
    if "all" in use_cpu or task in use_cpu:
        return torch.device("cpu")
    if caps.cuda_available:
        index = int(device_id) if device_id is not None else 0
        if index >= caps.cuda_device_count:
            raise ValueError(f"--device-id {index} does not exist: this machine has {caps.cuda_device_count} CUDA "
                             f"device(s), numbered from 0.")
        return torch.device("cuda", index)
    if caps.mps_available:
        return torch.device("mps")
    return torch.device("cpu")


def best_half_dtype(device: torch.device, caps: Capabilities) -> torch.dtype:
    """The fastest reduced precision the device runs natively, or fp32 when there is none."""
    if device.type == "cuda" or device.type == "mps":
        return torch.float16
    if device.type == "cpu" and caps.cpu_has_native_bf16:
        return torch.bfloat16
    return torch.float32


def choose(caps: Capabilities, args: argparse.Namespace) -> DeviceChoice:
    """Pick device and dtypes from flags (--use-cpu, --device-id, --no-half, --no-half-vae, --precision)."""
    device = choose_device(caps, use_cpu=args.use_cpu, device_id=args.device_id)
    half = best_half_dtype(device, caps)
    if args.precision == "half" and half == torch.float32:
        half = torch.float16 if device.type != "cpu" else torch.bfloat16
    full_precision = args.no_half or args.precision == "full"
    dtype = torch.float32 if full_precision else half
    dtype_vae = torch.float32 if (full_precision or args.no_half_vae) else half
    notice = None
    if device.type == "cpu":
        what = "bf16 (native on this CPU)" if dtype == torch.bfloat16 else str(dtype).replace("torch.", "")
        notice = f"No GPU found: running on the CPU in {what}. This works, just slower."
    return DeviceChoice(device=device, dtype=dtype, dtype_vae=dtype_vae, dtype_text_encoder=dtype, notice=notice)


def torch_gc() -> None:
    """Give cached accelerator memory back after large jobs."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
