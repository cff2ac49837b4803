"""Tests for modules/sd/compile.py: a compiled UNet gives the eager result, and a second process hits the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from torch._dynamo.utils import counters
from modules.sd.compile import compile_unet
from modules.sd.unet import UNetModel
from tests.sd.factory import TINY_UNETS
from pathlib import Path
torch.manual_seed(0)
unet = UNetModel(TINY_UNETS["sd1"]).eval()
x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([10.0]), torch.randn(1, 77, 128)
with torch.inference_mode():
    eager = unet(x, t, c)
    compiled = compile_unet(unet, Path(sys.argv[2]))(x, t, c)
print(json.dumps({"diff": (compiled - eager).abs().max().item(), "graphs": counters["stats"]["unique_graphs"],
                  "hits": counters["inductor"]["fxgraph_cache_hit"],
                  "misses": counters["inductor"]["fxgraph_cache_miss"]}))
"""


@pytest.mark.slow
def test_compiled_unet_matches_eager_and_reuses_the_cache(tmp_path: Path, root: Path):
    """Compiles a tiny UNet twice in fresh processes: one graph, output equals eager (1e-4), then a cache hit."""
    runs = []
    for _ in range(2):
        # an inherited Inductor cache folder (set by any earlier torch.compile user) must not replace ours
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inherited")}
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(tmp_path / "cache")], capture_output=True,
                             text=True, timeout=1800, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["diff"] < 1e-4 and runs[1]["diff"] < 1e-4
    assert runs[0]["graphs"] == 1, "the UNet must compile as one graph (no graph breaks)"
    assert runs[0]["misses"] > 0
    assert runs[1]["hits"] > 0 and runs[1]["misses"] == 0
