"""Tests for modules/devices.py: device and dtype choice for faked hardware."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modules import cmd_args, devices

CPU_PLAIN = devices.Capabilities(cuda_available=False, cuda_device_count=0, mps_available=False,
                                 cpu_has_native_bf16=False)
CPU_AMX = devices.Capabilities(cuda_available=False, cuda_device_count=0, mps_available=False,
                               cpu_has_native_bf16=True)
CUDA_2 = devices.Capabilities(cuda_available=True, cuda_device_count=2, mps_available=False,
                              cpu_has_native_bf16=True)
MPS = devices.Capabilities(cuda_available=False, cuda_device_count=0, mps_available=True, cpu_has_native_bf16=False)


def choose(caps, *flags):
    return devices.choose(caps, cmd_args.parse_args(list(flags), environ={}))


def test_cuda_gets_fp16():
    c = choose(CUDA_2)
    assert c.device == torch.device("cuda", 0) and c.dtype == torch.float16 and c.dtype_vae == torch.float16
    assert c.notice is None


def test_device_id_selects_the_gpu_and_bad_ids_are_explained():
    assert choose(CUDA_2, "--device-id", "1").device == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="2 CUDA device"):
        choose(CUDA_2, "--device-id", "5")


def test_mps_before_cpu():
    assert choose(MPS).device.type == "mps"


def test_cpu_with_native_bf16_uses_bf16_with_a_notice():
    c = choose(CPU_AMX)
    assert c.device.type == "cpu" and c.dtype == torch.bfloat16
    assert c.notice and "CPU" in c.notice and "bf16" in c.notice


def test_plain_cpu_uses_fp32():
    c = choose(CPU_PLAIN)
    assert c.dtype == torch.float32 and c.notice


def test_no_half_and_precision_full_force_fp32():
    assert choose(CUDA_2, "--no-half").dtype == torch.float32
    c = choose(CPU_AMX, "--precision", "full")
    assert c.dtype == torch.float32 and c.dtype_vae == torch.float32


def test_no_half_vae_keeps_only_the_vae_in_fp32():
    c = choose(CUDA_2, "--no-half-vae")
    assert c.dtype == torch.float16 and c.dtype_vae == torch.float32


def test_use_cpu_overrides_cuda():
    assert choose(CUDA_2, "--use-cpu", "all").device.type == "cpu"
    assert choose(CUDA_2, "--use-cpu", "sd").device.type == "cpu"
    assert choose(CUDA_2, "--use-cpu", "esrgan").device.type == "cuda"


def test_cpu_flags_read_from_cpuinfo(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    assert "amx_bf16" in devices.cpu_flags(info)
    assert devices.cpu_flags(tmp_path / "missing") == frozenset()


def test_detect_capabilities_runs_on_this_machine():
    caps = devices.detect_capabilities()
    assert isinstance(caps.cpu_has_native_bf16, bool)
