"""Pictures for the tab and the README: loss curve, error versus lead time, truth/prediction/error heat maps, a GIF.

Every function returns a PIL image (or GIF bytes), drawn with matplotlib's Agg backend, so nothing needs a display.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    import matplotlib.pyplot as plt


@functools.cache
def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported at the first picture (it costs ~1 s of the app's start)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot

VORTICITY_CMAP = "RdBu_r"
ERROR_CMAP = "magma"


def _to_image(fig: plt.Figure) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    _pyplot().close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def loss_curve(losses: Sequence[tuple[int, float]], title: str = "training loss (relative L2)") -> Image.Image:
    """Loss per step (faint) and its running mean, on a log scale."""
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.2), dpi=100)
    if losses:
        steps = np.array([s for s, _ in losses])
        values = np.array([v for _, v in losses])
        ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8, label="per step")
        window = max(1, len(values) // 25)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, color="tab:blue", linewidth=1.8, label=f"mean of {window}")
        ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no steps yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _to_image(fig)


def error_vs_lead(curves: dict[str, Sequence[float]], reference: dict[str, float] | None = None,
                  dt: float = 1.0) -> Image.Image:
    """Relative L2 against lead time for each named curve; ``reference`` values are drawn as horizontal lines."""
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.2), dpi=100)
    for name, values in curves.items():
        leads = np.arange(1, len(values) + 1) * dt
        ax.plot(leads, values, marker="o", markersize=3, label=name)
    for i, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color=f"C{i + 3}", linestyle="--", linewidth=1, label=name)
    ax.set_xlabel("lead time")
    ax.set_ylabel("relative L2")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("rollout error versus lead time", fontsize=10)
    fig.tight_layout()
    return _to_image(fig)


def _limits(truth: np.ndarray) -> float:
    return float(np.abs(truth).max()) or 1.0


def comparison_frame(truth: np.ndarray, pred: np.ndarray, lead: int, vmax: float, emax: float,
                     dt: float = 1.0) -> Image.Image:
    """One row: truth, prediction, |error| heat maps for one lead time."""
    fig, axes = _pyplot().subplots(1, 3, figsize=(7.5, 2.7), dpi=80)
    err = np.abs(pred - truth)
    rel = float(np.linalg.norm(pred - truth) / max(np.linalg.norm(truth), 1e-12))
    panels = [(truth, "truth", VORTICITY_CMAP, -vmax, vmax), (pred, "prediction", VORTICITY_CMAP, -vmax, vmax),
              (err, f"|error| (rel. L2 {rel:.3f})", ERROR_CMAP, 0.0, emax)]
    for ax, (field, name, cmap, lo, hi) in zip(axes, panels, strict=True):
        im = ax.imshow(field, cmap=cmap, vmin=lo, vmax=hi, origin="lower")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.suptitle(f"lead {lead} (t + {lead * dt:g})", fontsize=10)
    fig.tight_layout()
    return _to_image(fig)


def comparison_frames(truth: torch.Tensor, pred: torch.Tensor, dt: float = 1.0) -> list[Image.Image]:
    """One frame per lead for a single trajectory: truth and pred are (T, n, n) on shared colour scales."""
    t, p = truth.float().cpu().numpy(), pred.float().cpu().numpy()
    vmax, emax = _limits(t), float(np.abs(p - t).max()) or 1.0
    return [comparison_frame(t[i], p[i], i + 1, vmax, emax, dt) for i in range(t.shape[0])]


def heatmap_grid(truth: torch.Tensor, pred: torch.Tensor, leads: Sequence[int] | None = None,
                 dt: float = 1.0) -> Image.Image:
    """Rows truth / prediction / |error|, one column per chosen lead (default: up to 5 spread over the rollout)."""
    t, p = truth.float().cpu().numpy(), pred.float().cpu().numpy()
    n = t.shape[0]
    leads = list(leads) if leads else sorted({round(x) for x in np.linspace(1, n, min(n, 5))})
    vmax, emax = _limits(t), float(np.abs(p - t).max()) or 1.0
    fig, axes = _pyplot().subplots(3, len(leads), figsize=(1.9 * len(leads) + 0.6, 5.8), dpi=80, squeeze=False)
    for c, lead in enumerate(leads):
        fields = (t[lead - 1], p[lead - 1], np.abs(p[lead - 1] - t[lead - 1]))
        for r, (field, cmap, lo, hi) in enumerate(zip(fields, (VORTICITY_CMAP, VORTICITY_CMAP, ERROR_CMAP),
                                                      (-vmax, -vmax, 0.0), (vmax, vmax, emax), strict=True)):
            ax = axes[r][c]
            ax.imshow(field, cmap=cmap, vmin=lo, vmax=hi, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t + {lead * dt:g}", fontsize=9)
            if c == 0:
                ax.set_ylabel(("truth", "prediction", "|error|")[r], fontsize=9)
    fig.tight_layout()
    return _to_image(fig)


def gif_bytes(frames: Sequence[Image.Image], ms_per_frame: int = 400) -> bytes:
    """An endlessly looping animated GIF of ``frames``."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    buffer = io.BytesIO()
    first, *rest = [f.convert("P", palette=Image.Palette.ADAPTIVE, colors=255) for f in frames]
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=ms_per_frame, loop=0)
    return buffer.getvalue()


def field_image(field: torch.Tensor, vmax: float | None = None) -> Image.Image:
    """A single vorticity field as a coloured picture, for thumbnails."""
    f = field.float().cpu().numpy()
    vmax = vmax or _limits(f)
    rgba = _pyplot().get_cmap(VORTICITY_CMAP)((f / vmax + 1) / 2, bytes=True)
    return Image.fromarray(rgba[::-1, :, :3])
