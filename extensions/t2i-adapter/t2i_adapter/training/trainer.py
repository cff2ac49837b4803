"""Adapter training after the original ``train_depth.py``: frozen Stable Diffusion, AdamW on the adapter only.

Each step: caption -> text conditioning, picture -> VAE latent (a posterior sample), a timestep drawn uniformly from
0..999 and Gaussian noise; the noised latent goes through the frozen UNet with the adapter's features of the
condition map injected (as at inference), and the loss is the MSE to the model's own target: the noise for
epsilon models (SD1.x, SDXL — the original's loss), v for v-prediction models such as the demo model.

Experiment folder (as the original): ``models/model_ad_<iter>.pth`` holds the adapter in the released-file format
(a plain dict of tensors, loadable by ``load_adapter``); ``training_states/<iter>.state`` holds what a resume needs
— optimizer state, the random generator's state and the position in the data order; ``train.log`` the log. A resume
reloads the adapter weights too (the original forgot them), so stopping and resuming gives the same weights as one
uninterrupted run with the same seed. Every random draw comes from one CPU generator, so runs are reproducible on
any device.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from modules.conditioning import TextConditioner
from modules.training.checkpoints import load_checkpoint, save_checkpoint
from modules.training.progress import TrainingLog

from ..adapter_full import SDXL_DOWNSAMPLES, Adapter, FullAdapterConfig
from ..adapter_light import AdapterLight, LightAdapterConfig
from ..features import prepare_condition
from ..injection import feature_channels, hooks_from_maps
from ..loading import read_adapter_state_dict
from .dataset import AdapterDataset

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TrainingError(ValueError):
    """Settings or files that do not fit together; the message says what to change."""


@dataclass
class TrainSettings:
    """One training run. ``steps`` is the total iteration count: a resumed run continues up to it."""

    meta: Path
    condition: str
    output: Path
    model: Path | None = None
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-5
    seed: int = 0
    save_every: int = 1000
    kind: str = "full"  # full | light
    cond_channels: int = 3
    light_blocks: int = 4
    resolution: int | None = None
    device: str = "cpu"
    model_dtype: str = "float32"
    resume: bool = True
    init_from: Path | None = None
    progress: bool = True


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None
    target: str = "epsilon"
    interrupted: bool = False


def adapter_config_for(model: Any, kind: str, cond_channels: int, light_blocks: int = 4):
    """The adapter config whose features fit ``model``'s UNet: its channels, and the VAE's pixels per latent."""
    unet_config, vae_down = model.unet.config, model.vae.config.downscale
    if model.is_sdxl:
        if kind != "full":
            raise TrainingError("Only full adapters exist for SDXL; use --kind full.")
        return FullAdapterConfig(channels=feature_channels(unet_config, "sdxl"), cond_channels=cond_channels,
                                 unshuffle=2 * vae_down, downsamples=SDXL_DOWNSAMPLES)
    channels = feature_channels(unet_config, "sd1")
    if kind == "light":
        return LightAdapterConfig(channels=channels, nums_rb=light_blocks, cond_channels=cond_channels,
                                  unshuffle=vae_down)
    if kind != "full":
        raise TrainingError(f"Unknown adapter kind {kind!r}; use full or light.")
    return FullAdapterConfig(channels=channels, cond_channels=cond_channels, unshuffle=vae_down)


def build_adapter(config: FullAdapterConfig | LightAdapterConfig, seed: int) -> nn.Module:
    """A freshly initialised adapter; the seed fixes its initial weights without touching the global generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Adapter(config) if isinstance(config, FullAdapterConfig) else AdapterLight(config)


def saved_steps(output: Path) -> list[int]:
    """Iterations with both a training state and the adapter weights, ascending."""
    states = output / "training_states"
    found = [int(m.group(1)) for p in states.glob("*.state") if (m := re.fullmatch(r"(\d+)\.state", p.name))]
    return sorted(step for step in found if (output / "models" / f"model_ad_{step}.pth").is_file())


def adapter_state(adapter: nn.Module) -> dict[str, Tensor]:
    """The released-file format: a plain dict of (CPU, contiguous) tensors, no prefix."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in adapter.state_dict().items()}


def _load_weights(adapter: nn.Module, path: Path) -> None:
    state, _ = read_adapter_state_dict(path)
    try:
        adapter.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise TrainingError(f"{path.name} does not fit the adapter these settings build "
                            f"({str(e).splitlines()[0]}); check --kind and --cond-channels.") from e


class _Order:
    """Shuffled data order, one permutation per epoch, drawn from the run's generator."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator
        self.epoch, self.position = 0, 0
        self.order = torch.randperm(size, generator=generator)

    def take(self, count: int) -> list[int]:
        picked = []
        for _ in range(count):
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
                self.order = torch.randperm(self.size, generator=self.generator)
            picked.append(int(self.order[self.position]))
            self.position += 1
        return picked

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "order": self.order.clone()}

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self.order = int(state["epoch"]), int(state["position"]), state["order"].clone()


class AdapterTrainer:
    """Holds one run's frozen model, adapter, optimizer, data order and generator; ``run`` trains to the end."""

    def __init__(self, settings: TrainSettings, model: Any = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.settings = s = settings
        self.output = Path(s.output)
        self.log = log or TrainingLog(self.output / "train.log")
        if model is None:
            if s.model is None:
                raise TrainingError("Name the Stable Diffusion checkpoint to train against (--model).")
            from modules.sd.loader import load_model

            model = load_model(s.model, device=s.device, dtype=DTYPES[s.model_dtype])
        self.model = model
        self.device = torch.device(model.device)
        self.dataset = AdapterDataset(Path(s.meta), s.condition, s.resolution)
        self.config = adapter_config_for(model, s.kind, s.cond_channels, s.light_blocks)
        self.family = "sdxl" if model.is_sdxl else "sd1"
        self.adapter = build_adapter(self.config, s.seed).to(self.device).train()
        self.optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=s.lr)
        self.generator = torch.Generator().manual_seed(s.seed)
        self.order = _Order(len(self.dataset), self.generator)
        self.conditioner = TextConditioner(model)
        self.target = "v" if model.prediction_type == "v_prediction" else "epsilon"
        self.step = 0
        for part in (model.unet, model.vae, *model.text_encoders.values()):
            part.requires_grad_(False)

    # ------------------------------------------------------------------------------------------ checkpoints

    def resume_or_start(self) -> None:
        s = self.settings
        steps = saved_steps(self.output) if s.resume else []
        if steps:
            self._restore(steps[-1])
            self.log(f"Resumed from iteration {self.step} in {self.output}.")
        elif s.init_from is not None:
            _load_weights(self.adapter, Path(s.init_from))
            self.log(f"Starting from the weights of {Path(s.init_from).name}.")

    def _restore(self, step: int) -> None:
        state = load_checkpoint(self.output / "training_states" / f"{step}.state")
        saved_config = state.get("adapter_config")
        if saved_config != dataclasses.asdict(self.config):
            raise TrainingError(f"{self.output} was trained with another adapter layout ({saved_config}); "
                                "use the same --kind/--cond-channels/--model, or a new --out folder.")
        _load_weights(self.adapter, self.output / "models" / f"model_ad_{step}.pth")
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        self.order.restore(state["order"])
        self.step = int(state["iter"])

    def save(self) -> Path:
        """Write ``model_ad_<iter>.pth`` and ``training_states/<iter>.state`` (each atomically)."""
        weights = self.output / "models" / f"model_ad_{self.step}.pth"
        save_checkpoint(weights, adapter_state(self.adapter))
        save_checkpoint(self.output / "training_states" / f"{self.step}.state", {
            "iter": self.step,
            "optimizer": self.optimizer.state_dict(),
            "rng": self.generator.get_state(),
            "order": self.order.state(),
            "adapter_config": dataclasses.asdict(self.config),
            "settings": {"lr": self.settings.lr, "batch_size": self.settings.batch_size,
                         "condition": self.settings.condition, "seed": self.settings.seed},
        })
        return weights

    # ------------------------------------------------------------------------------------------ training

    @torch.no_grad()
    def _noised_batch(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor, Tensor]:
        """(noised latents, timesteps, context, y, target, condition) of the next batch."""
        images, conds, captions = self.dataset.batch(self.order.take(self.settings.batch_size))
        model, device = self.model, self.device
        text = self.conditioner.get_learned_conditioning(captions)
        context, y = (text["crossattn"], text["vector"]) if isinstance(text, dict) else (text, None)
        latents = model.vae.encode_to_latent(images.to(device) * 2 - 1, generator=self.generator).float()
        timesteps = torch.randint(0, model.schedule.num_timesteps, (latents.shape[0],), generator=self.generator)
        noise = torch.randn(latents.shape, generator=self.generator).to(device)
        alphas = model.schedule.alphas_cumprod[timesteps].float().view(-1, 1, 1, 1).to(device)
        noised = alphas.sqrt() * latents + (1 - alphas).sqrt() * noise
        target = noise if self.target == "epsilon" else alphas.sqrt() * noise - (1 - alphas).sqrt() * latents
        cond = prepare_condition(conds, self.config.cond_channels, self.config.unshuffle).to(device)
        return noised, timesteps.to(device).float(), context, y, target, cond

    def train_step(self) -> float:
        noised, timesteps, context, y, target, cond = self._noised_batch()
        features = self.adapter(cond)
        hooks = hooks_from_maps(features, None, self.family, self.model.unet.config)
        prediction = self.model.unet(noised, timesteps, context, y, hooks=hooks)
        loss = F.mse_loss(prediction.float(), target.float())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def run(self) -> TrainResult:
        s = self.settings
        self.resume_or_start()
        result = TrainResult(step=self.step, target=self.target)
        self.log(f"Training a {s.kind} adapter ({sum(p.numel() for p in self.adapter.parameters()):,} parameters, "
                 f"{self.config.cond_channels}-channel '{s.condition}' condition) on {len(self.dataset)} pictures, "
                 f"iterations {self.step} -> {s.steps}, loss target: {self.target}"
                 + (" (the model predicts v, so the adapter learns v like it)" if self.target == "v" else ""))
        bar = tqdm(total=s.steps, initial=self.step, desc="T2I-Adapter", disable=not s.progress, file=sys.stderr)
        try:
            while self.step < s.steps:
                loss = self.train_step()
                result.losses.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if self.step % s.save_every == 0 or self.step == s.steps:
                    result.checkpoint = self.save()
        except KeyboardInterrupt:
            result.checkpoint, result.interrupted = self.save(), True
            self.log(f"Interrupted: saved iteration {self.step}; run the same command again to resume.")
        finally:
            bar.close()
        result.step = self.step
        if result.checkpoint is not None:
            self.log(f"Saved {result.checkpoint} (iteration {self.step}).")
        return result


def train(settings: TrainSettings, model: Any = None, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume) one adapter; ``model`` may be an already loaded ``StableDiffusionModel``."""
    return AdapterTrainer(settings, model, log).run()
