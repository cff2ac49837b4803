"""Train a T2I-Adapter on a frozen Stable Diffusion checkpoint (the original ``train_depth.py`` flow).

Dataset: a meta file listing pictures ``X.png``; beside each, the condition map ``X.<cond>.png`` and the caption
``X.txt``. Example, from the repository root::

    venv/bin/python extensions/t2i-adapter/train_adapter.py --model models/Stable-diffusion/v1-5.safetensors \\
        --meta data/depth/meta.txt --cond depth --out experiments/depth --steps 20000 --batch-size 8

Writes ``<out>/models/model_ad_<iter>.pth`` (released-file format: copy it to models/T2I-Adapter) and training
states; running the same command again resumes. ``--make-demo-dataset DIR`` writes the demo model's shape pictures
with mask and edge maps instead, and prints the command that trains the demo adapter on them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
for entry in (HERE, HERE.parents[1]):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from t2i_adapter.training import (  # noqa: E402
    DatasetError,
    TrainingError,
    TrainSettings,
    train,
    write_demo_dataset,
)
from t2i_adapter.training.trainer import DTYPES  # noqa: E402

from modules.errors import AtelierError  # noqa: E402

DEMO_MODEL = Path("models/demo/atelier-demo.safetensors")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="frozen Stable Diffusion checkpoint (.safetensors/.ckpt)")
    parser.add_argument("--meta", type=Path, help="dataset list: one picture path per line")
    parser.add_argument("--cond", default="depth", help="condition name: reads X.<cond>.png beside each picture")
    parser.add_argument("--out", type=Path, default=Path("experiments/t2i-adapter"), help="experiment folder")
    parser.add_argument("--steps", type=int, default=10000, help="total iterations (a resume continues up to it)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (original: 1e-5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=1000, help="checkpoint every N iterations (and at the end)")
    parser.add_argument("--kind", choices=("full", "light"), default="full", help="adapter architecture")
    parser.add_argument("--cond-channels", type=int, choices=(1, 3), default=3,
                        help="1 for edge-like maps (sketch, canny, mask), 3 for RGB maps (depth, pose, colour)")
    parser.add_argument("--light-blocks", type=int, default=4, help="residual blocks per level of a light adapter")
    parser.add_argument("--resolution", type=int, help="resize and centre-crop every picture to this square size")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--model-dtype", choices=tuple(DTYPES), default="float32",
                        help="dtype of the frozen model (the adapter always trains in float32)")
    parser.add_argument("--init-from", type=Path, help="start from these adapter weights (same layout)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if the folder has checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo = parser.add_argument_group("demo dataset")
    demo.add_argument("--make-demo-dataset", type=Path, metavar="DIR",
                      help="write the demo model's shape pictures with mask/edge maps to DIR and exit")
    demo.add_argument("--demo-count", type=int, default=4096, help="pictures in the demo dataset")
    demo.add_argument("--demo-seed", type=int, default=7)
    return parser.parse_args(argv)


def demo_dataset(args: argparse.Namespace) -> int:
    meta = write_demo_dataset(args.make_demo_dataset, args.demo_count, seed=args.demo_seed)
    print(f"Wrote {args.demo_count} pictures with mask and edge maps; list: {meta}")
    print("Train the demo adapter (the demo model predicts v, so the adapter learns v) with:")
    print(f"  venv/bin/python extensions/t2i-adapter/train_adapter.py --model {DEMO_MODEL} --meta {meta} --cond mask "
          f"--cond-channels 1 --out experiments/demo-adapter --steps 3000 --batch-size 16 --lr 1e-4 --save-every 500")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_demo_dataset is not None:
        return demo_dataset(args)
    if args.model is None or args.meta is None:
        print("error: --model and --meta are required (or --make-demo-dataset DIR)", file=sys.stderr)
        return 2
    settings = TrainSettings(
        meta=args.meta, condition=args.cond, output=args.out, model=args.model, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, save_every=max(1, args.save_every), kind=args.kind,
        cond_channels=args.cond_channels, light_blocks=args.light_blocks, resolution=args.resolution,
        device=args.device, model_dtype=args.model_dtype, resume=not args.no_resume, init_from=args.init_from,
        progress=not args.no_progress,
    )
    try:
        result = train(settings)
    except (AtelierError, DatasetError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'Interrupted' if result.interrupted else 'Finished'} at iteration {result.step}: {result.checkpoint}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
