"""Train the embedded demo model from scratch on the CPU: VAE, then UNet + text encoder, then export and judge.

    python -m modules.training.demo_model --out models/demo --minutes 90 [--resume]

The budget is wall time: the VAE gets ``--vae-share`` of it, the diffusion phase the rest (less a small reserve for
encoding the latent pool and exporting). Checkpoints go to ``--work-dir`` every few minutes; ``--resume`` continues
from them with the time already spent counted (a finished phase is loaded, not retrained). The result is
``<out>/atelier-demo.safetensors``, a plain SD1 single file, with ``training-log.txt`` and ``metrics.json`` beside it;
unless ``--no-eval``, the judge of ``modules.training.evaluate`` scores it through the ordinary pipeline at the end.
Any field of ``VAESettings`` / ``UNetSettings`` can be overridden with ``--vae-set`` / ``--unet-set NAME=VALUE``;
``--tiny --vae-steps 2 --unet-steps 2`` is a one-minute smoke run of the whole path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import torch

from modules.training.checkpoints import prepare_work_dir
from modules.training.demo_model_config import DEMO, TINY, DemoModelConfig, with_prediction
from modules.training.export import export_checkpoint
from modules.training.progress import TrainingLog
from modules.training.train_unet import CHECKPOINT_NAME as UNET_CHECKPOINT
from modules.training.train_unet import UNetSettings, train_unet
from modules.training.train_vae import CHECKPOINT_NAME as VAE_CHECKPOINT
from modules.training.train_vae import VAESettings, train_vae

CHECKPOINT_FILE = "atelier-demo.safetensors"
LOG_FILE = "training-log.txt"
METRICS_FILE = "metrics.json"
DEFAULT_WORK_DIR = Path("data/training/demo")
RESERVE_MINUTES = 2.0  # latent pool encoding and export, outside the two training loops


def choose_threads(requested: int) -> int:
    """``requested`` if given; else every core on an idle machine, fewer under load.

    Measured here: with another process keeping a core busy, a 2-thread run is ~10x slower than idle while 1 thread
    keeps most of its speed, so threads that would have to share a core are not worth having.
    """
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    return max(1, min(cores, round(cores - load_average() + 0.49)))


def load_average() -> float:
    """The 1-minute load average (0 where the system does not report one)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def with_overrides(settings: Any, items: Sequence[str]) -> Any:
    """``settings`` with ``name=value`` items applied, each value converted to the field's current type."""
    changes = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in {f.name for f in fields(settings)}:
            known = ", ".join(f.name for f in fields(settings))
            raise SystemExit(f"Bad setting {item!r}: expected NAME=VALUE with NAME one of {known}.")
        kind = type(getattr(settings, name))
        try:
            changes[name] = kind(text)
        except ValueError as e:
            raise SystemExit(f"Bad value in {item!r}: {e}") from e
    return replace(settings, **changes)


def budgets(minutes: float, vae_share: float) -> tuple[float, float]:
    """(VAE seconds, UNet seconds) for a total budget."""
    train = max(0.0, minutes - RESERVE_MINUTES) * 60
    return train * vae_share, train * (1 - vae_share)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole training; returns the metrics written to ``metrics.json``."""
    vae_settings = with_overrides(VAESettings(seed=args.seed), args.vae_set)
    unet_settings = with_overrides(UNetSettings(seed=args.seed), args.unet_set)
    if args.tiny and not any(item.startswith("pool_size=") for item in args.unet_set):
        unet_settings = replace(unet_settings, pool_size=256)
    out, work_dir = Path(args.out), prepare_work_dir(Path(args.work_dir))
    existing = [work_dir / n for n in (VAE_CHECKPOINT, UNET_CHECKPOINT) if (work_dir / n).exists()]
    if existing and not (args.resume or args.fresh):
        raise SystemExit(f"{work_dir} holds an earlier run ({', '.join(p.name for p in existing)}): "
                         "pass --resume to continue it or --fresh to start over.")
    if args.fresh:
        for path in existing:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    log = TrainingLog(out / LOG_FILE)
    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config: DemoModelConfig = with_prediction(TINY if args.tiny else DEMO, args.prediction)
    vae_s, unet_s = budgets(args.minutes, args.vae_share)
    if args.vae_minutes is not None:
        vae_s = args.vae_minutes * 60
    if args.unet_minutes is not None:
        unet_s = args.unet_minutes * 60
    log(f"demo model: {'resuming' if args.resume else 'starting'}; budget VAE {vae_s / 60:.1f} min, UNet "
        f"{unet_s / 60:.1f} min; on {device} with {threads} thread(s) (load {load_average():.2f}); work dir {work_dir}")
    started = time.monotonic()
    vae, vae_info = train_vae(config, work_dir, vae_s, settings=vae_settings, max_steps=args.vae_steps,
                              resume=args.resume, log=log, show_bar=not args.no_bar, device=device,
                              data_workers=args.data_workers)
    model, unet_info = train_unet(config, vae, work_dir, unet_s, settings=unet_settings, max_steps=args.unet_steps,
                                  resume=args.resume, log=log, show_bar=not args.no_bar, device=device)
    model.cpu()
    vae.cpu()
    metrics: dict[str, Any] = {
        "config": asdict(config), "vae_settings": asdict(vae_settings), "unet_settings": asdict(unet_settings),
        "threads": threads, "device": str(device), "vae": vae_info, "unet": unet_info,
        "session_minutes": (time.monotonic() - started) / 60,
    }
    path = export_checkpoint(out / CHECKPOINT_FILE, config, model.unet, vae, model.text.merged(),
                             metadata={"atelier.training": {"vae": vae_info, "unet": unet_info}})
    metrics["checkpoint"] = {"file": path.name, "megabytes": path.stat().st_size / 1e6}
    log(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if not args.no_eval:
        metrics["evaluation"] = evaluate_export(path, args.eval_prompts, args.eval_seeds, config.image_size, log)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf8")
    return metrics


def evaluate_export(path: Path, prompts: int, seeds: int, size: int, log: TrainingLog) -> dict[str, Any]:
    """The judge's scores of the exported file, loaded the way the web UI loads any checkpoint."""
    from modules.sd.loader import load_model
    from modules.training.evaluate import evaluate_model, single_image_seconds

    model = load_model(path)
    result = evaluate_model(model, prompts=prompts, seeds=seeds, size=size)
    result["seconds_one_image"] = single_image_seconds(model, size=size)
    log(f"evaluation: {json.dumps(result)}")
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="models/demo", help="folder for the .safetensors, log and metrics")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="checkpoints and caches")
    parser.add_argument("--minutes", type=float, default=90.0, help="total wall-time budget")
    parser.add_argument("--resume", action="store_true", help="continue from the work dir's checkpoints")
    parser.add_argument("--fresh", action="store_true", help="delete the work dir's checkpoints first")
    parser.add_argument("--vae-share", type=float, default=0.22, help="fraction of the budget for the VAE")
    parser.add_argument("--vae-minutes", type=float, help="override the VAE budget")
    parser.add_argument("--unet-minutes", type=float, help="override the UNet budget")
    parser.add_argument("--vae-steps", type=int, help="stop the VAE after this many steps (smoke runs)")
    parser.add_argument("--unet-steps", type=int, help="stop the UNet after this many steps (smoke runs)")
    parser.add_argument("--vae-set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a VAESettings field, e.g. batch_size=8 (repeatable)")
    parser.add_argument("--unet-set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a UNetSettings field, e.g. high_noise_fraction=0.4 (repeatable)")
    parser.add_argument("--prediction", choices=("v_prediction", "epsilon"), default="v_prediction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores, fewer under load)")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (default cpu)")
    parser.add_argument("--data-workers", type=int, default=0,
                        help="processes rendering VAE training pictures ahead (useful with --device cuda)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (32 px) for smoke runs")
    parser.add_argument("--no-eval", action="store_true", help="skip judging the exported model")
    parser.add_argument("--eval-prompts", type=int, default=24)
    parser.add_argument("--eval-seeds", type=int, default=4)
    parser.add_argument("--no-bar", action="store_true", help="no progress bar (log lines only)")
    args = parser.parse_args(argv)
    if args.resume and args.fresh:
        parser.error("--resume and --fresh exclude each other")
    if not 0 < args.vae_share < 1:
        parser.error("--vae-share must be between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    metrics = run(parse_args(argv))
    summary = {k: metrics[k] for k in ("checkpoint", "evaluation") if k in metrics}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
