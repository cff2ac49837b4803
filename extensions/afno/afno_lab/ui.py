"""The "AFNO lab" tab: rollout viewer, dataset generation, training with a live loss curve, checkpoints.

Handlers are methods of :class:`LabUi` that take and return plain values, so tests call them directly; the work runs
on the shared job queue (:mod:`afno_lab.lab_jobs`). Errors a user can fix come back as a visible message.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from afno_lab import lab_jobs, plots
from afno_lab.api import LabError, TrainRequest, train_request_to_specs
from afno_lab.checkpoint import CheckpointError, load_model
from afno_lab.dataset import DatasetSpec, list_cached, read_spec
from afno_lab.store import MODEL_SUFFIXES, LabPaths, ModelStore

POLL_SECONDS = 2.0


def _fail(message: str) -> str:
    return f"**Error:** {message}"


class LabUi:
    """State shared by the tab's handlers: the queue, the lab's folders, its models and its training runs."""

    def __init__(self, queue: Any, paths: LabPaths, registry: lab_jobs.RunRegistry,
                 store: ModelStore | None = None) -> None:
        self.queue, self.paths, self.registry = queue, paths, registry
        self.store = store or ModelStore(paths)

    # models -----------------------------------------------------------------------------------------------------
    def model_choices(self) -> list[str]:
        return list(self.store.available())

    def model_info(self, name: str | None) -> str:
        try:
            info = lab_jobs.model_summary(self.store, name)
        except (CheckpointError, ValueError) as e:
            return _fail(str(e))
        cfg, training = info["config"], info["training"]
        lines = [f"**{info['name']}** — {info['parameters']:,} parameters, {info['size_mb']} MB",
                 f"{cfg['img_size'][0]}×{cfg['img_size'][1]}, patch {cfg['patch_size'][0]}, "
                 f"D {cfg['embed_dim']}, depth {cfg['depth']}, {cfg['num_blocks']} blocks, "
                 f"history {info['stepper']['history']}, ν {info['stepper']['viscosity']:g}"]
        if training.get("one_step_rel_l2") is not None:
            lines.append(f"held-out rel. L2: one-step {training['one_step_rel_l2']}, "
                         f"10-step {training.get('ten_step_rel_l2')}")
        elif training.get("rollout_rel_l2"):
            lines.append(f"held-out rel. L2 by lead: {training['rollout_rel_l2']}")
        return "\n\n".join(lines)

    # rollout ----------------------------------------------------------------------------------------------------
    def rollout(self, name: str | None, seed: float, t_start: float, steps: float, with_truth: bool,
                upload: str | None) -> tuple[Any, str | None, Any, str]:
        """(heat-map grid, GIF path, error-vs-lead plot, message) for one rollout."""
        try:
            initial = self._read_initial(upload) if upload else None
            result = lab_jobs.run_rollout(self.queue, self.store, name or None, initial, int(steps or 1), with_truth,
                                          int(seed or 0), float(t_start or 0))
        except (LabError, CheckpointError, ValueError, TimeoutError) as e:
            return None, None, None, _fail(getattr(e, "message", str(e)))
        truth = result.truth if result.truth is not None else result.prediction
        grid = plots.heatmap_grid(truth, result.prediction, dt=result.record_every)
        self.paths.renders.mkdir(parents=True, exist_ok=True)
        gif = self.paths.renders / f"rollout-{int(time.time() * 1000)}.gif"
        gif.write_bytes(plots.gif_bytes(plots.comparison_frames(truth, result.prediction, result.record_every)))
        curve = None
        message = f"{result.model}: {int(steps)} steps."
        if result.rel_l2 is not None:
            curve = plots.error_vs_lead({result.model: result.rel_l2}, dt=result.record_every)
            message += f" Relative L2 at lead 1: {result.rel_l2[0]:.4f}, at lead {int(steps)}: {result.rel_l2[-1]:.4f}."
        else:
            message += " No solver comparison asked for: the truth row repeats the prediction."
        return grid, str(gif), curve, message

    @staticmethod
    def _read_initial(upload: str) -> torch.Tensor:
        path = Path(upload)
        if path.suffix != ".npy":
            raise LabError("upload the initial vorticity as a .npy file (n×n or k×n×n float array)")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise LabError(f"{path.name} could not be read as .npy: {e}") from e
        if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise LabError(f"{path.name} must hold finite numbers shaped n×n or k×n×n, got {array.shape}")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    # datasets ---------------------------------------------------------------------------------------------------
    def cached_datasets(self) -> str:
        files = list_cached(self.paths.datasets) if self.paths.datasets.is_dir() else []
        if not files:
            return "No datasets cached yet."
        rows = ["| file | trajectories | t_end | n | ν |", "|---|---|---|---|---|"]
        for f in files:
            try:
                s = read_spec(f)
                rows.append(f"| {f.name} | {s.n_samples} | {s.t_end:g} | {s.resolution} | {s.viscosity:g} |")
            except ValueError:
                rows.append(f"| {f.name} | ? | ? | ? | ? |")
        return "\n".join(rows)

    def generate_dataset(self, n_samples: float, t_end: float, resolution: float, viscosity: float,
                         seed: float) -> Iterator[tuple[Any, str]]:
        """Queue the generation, yield progress while it runs, then a preview of the first trajectory."""
        try:
            spec = DatasetSpec(n_samples=int(n_samples), t_end=float(t_end), resolution=int(resolution),
                               viscosity=float(viscosity), seed=int(seed))
            spec.validate()
        except ValueError as e:
            yield None, _fail(str(e))
            return
        from afno_lab import dataset

        progress: dict[str, Any] = {"text": "queued"}

        def work() -> torch.Tensor:
            def report(done: int, total: int, text: str) -> None:
                progress["text"] = f"{done}/{total} — {text}"
                self.queue.state.sampling_step, self.queue.state.sampling_steps = done, total

            return dataset.cached(spec, self.paths.datasets, progress=report,
                                  should_stop=lambda: bool(self.queue.state.interrupted))[0]

        job = self.queue.submit(work, kind="afno-data", description="AFNO dataset")
        while not job.finished:
            yield None, f"Generating: {progress['text']}"
            time.sleep(0.5)
        try:
            data = job.wait()
        except InterruptedError:
            yield None, "Stopped; nothing was cached."
            return
        except Exception as e:
            yield None, _fail(f"{type(e).__name__}: {e}")
            return
        frames = data[0, :: max(1, data.shape[1] // 5)][:5]
        preview = plots.heatmap_grid(frames, frames, dt=spec.record_every * max(1, data.shape[1] // 5))
        yield preview, f"Dataset ready: {tuple(data.shape)} (trajectories, frames, n, n).\n\n{self.cached_datasets()}"

    # training ---------------------------------------------------------------------------------------------------
    def start_training(self, *values: Any) -> tuple[str, str]:
        """Values in :data:`TRAIN_FIELDS` order → (task id, message)."""
        fields = dict(zip(TRAIN_FIELDS, values, strict=True))
        if fields.get("max_minutes") in (0, None, ""):
            fields["max_minutes"] = None
        try:
            req = TrainRequest(**fields)
            spec, config = train_request_to_specs(req)
            record = lab_jobs.submit_training(self.queue, self.registry, self.paths, spec, config, req.name,
                                              req.resume, req.max_minutes, req.device)
        except Exception as e:  # pydantic's ValidationError or a ValueError naming the bad field
            return "", _fail(str(e).replace("\n", " "))
        return record.task_id, f"Queued as {record.task_id}; run folder {self.paths.runs / record.name}."

    def stop_training(self, task_id: str) -> str:
        if not task_id:
            return "No training started from this page."
        job = self.queue.get(task_id)
        if job is None or job.finished:
            return "That training has already ended."
        if self.queue.cancel(task_id):
            return "Removed from the queue before it started."
        if self.queue.current is job:
            self.queue.interrupt()
            return "Stopping after the current step; a checkpoint will be saved."
        return "Could not stop it."

    def poll(self, task_id: str, shown: str) -> tuple[Any, str, Any, str]:
        """(loss curve, status, error-vs-lead plot, what is drawn) — plots are redrawn only when something changed."""
        record = self.registry.get(task_id) if task_id else None
        if record is None:
            return gr.update(), "No training started from this page yet.", gr.update(), shown
        status = f"**{record.phase}** — {record.message or 'waiting for the queue'}"
        if record.error:
            status += f"\n\n{_fail(record.error)}"
        drawn = f"{task_id}:{len(record.losses)}:{len(record.rollout_rel_l2)}"
        if drawn == shown:
            return gr.update(), status, gr.update(), shown
        curve = plots.loss_curve(record.losses) if record.losses else gr.update()
        errors = (plots.error_vs_lead({record.name: record.rollout_rel_l2}) if record.rollout_rel_l2
                  else gr.update())
        return curve, status, errors, drawn

    # checkpoints ------------------------------------------------------------------------------------------------
    def import_checkpoint(self, upload: str | None) -> tuple[str, Any]:
        """Check an uploaded file loads as an AFNONet, then copy it into the user's model folder."""
        if not upload:
            return "Choose a file first.", gr.update()
        src = Path(upload)
        if src.suffix not in MODEL_SUFFIXES:
            return _fail(f"{src.name}: use one of {', '.join(MODEL_SUFFIXES)}"), gr.update()
        try:
            net, _, _ = load_model(src)
        except CheckpointError as e:
            return _fail(str(e)), gr.update()
        self.paths.user_models.mkdir(parents=True, exist_ok=True)
        dest = self.paths.user_models / src.name
        shutil.copyfile(src, dest)
        cfg = net.config
        return (f"Imported {dest.name}: {cfg.in_chans}→{cfg.out_chans} channels, {cfg.img_size[0]}×{cfg.img_size[1]},"
                f" D {cfg.embed_dim}, depth {cfg.depth}.", gr.update(choices=self.model_choices(), value=dest.name))

    def save_model_as(self, name: str | None, new_name: str) -> tuple[str, Any]:
        """Copy a model (e.g. ``run/<name>``) into the user's folder as ``<new_name>.safetensors``."""
        if not lab_jobs.run_name_ok(new_name or ""):
            return _fail("give a file name of letters, digits, '-', '_' or '.'"), gr.update()
        try:
            src = self.store.resolve(name)
        except CheckpointError as e:
            return _fail(str(e)), gr.update()
        dest = self.paths.user_models / (new_name if new_name.endswith(src.suffix) else new_name + src.suffix)
        if dest.exists():
            return _fail(f"{dest.name} already exists in {self.paths.user_models}"), gr.update()
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return f"Saved {dest}.", gr.update(choices=self.model_choices(), value=dest.name)


TRAIN_FIELDS = ("name", "n_samples", "t_end", "n_test", "steps", "batch_size", "lr", "history", "unroll",
                "patch_size", "embed_dim", "depth", "precision", "device", "max_minutes", "resume")


def build_tab(lab: LabUi) -> gr.Blocks:
    """The tab's Blocks (returned to ``on_ui_tabs``)."""
    models = lab.model_choices()
    with gr.Blocks(analytics_enabled=False) as tab, gr.Tabs():
        with gr.Tab("Rollout", id="afno_rollout"):
            with gr.Row():
                with gr.Column(scale=1):
                    model = gr.Dropdown(models, value=models[0] if models else None, label="Model",
                                        elem_id="afno_model")
                    refresh = gr.Button("↻ Refresh models", size="sm")
                    # filled when a page loads, not when the app starts (reading the model takes seconds)
                    info = gr.Markdown(lab.model_info, inputs=[model]) if models else gr.Markdown("No model yet.")
                    seed = gr.Number(0, precision=0, label="Initial field seed (GRF)", elem_id="afno_seed")
                    t_start = gr.Slider(0, 40, value=10, step=1, label="Start time (solver warm-up)")
                    upload = gr.File(label="…or an initial field (.npy, n×n)", file_types=[".npy"],
                                     type="filepath")
                    steps = gr.Slider(1, 50, value=10, step=1, label="Rollout steps")
                    truth = gr.Checkbox(True, label="Compare with the solver (truth and errors)")
                    go = gr.Button("Roll out", variant="primary", elem_id="afno_rollout_button")
                with gr.Column(scale=2):
                    message = gr.Markdown(elem_id="afno_rollout_message")
                    grid = gr.Image(label="truth / prediction / |error|", type="pil", elem_id="afno_grid")
                    with gr.Row():
                        gif = gr.Image(label="animation", type="filepath", elem_id="afno_gif")
                        curve = gr.Image(label="relative L2 versus lead time", type="pil")
            model.change(lab.model_info, model, info)
            refresh.click(lambda: gr.update(choices=lab.model_choices()), None, model)
            go.click(lab.rollout, [model, seed, t_start, steps, truth, upload], [grid, gif, curve, message])
        with gr.Tab("Dataset", id="afno_dataset"):
            with gr.Row():
                n_samples = gr.Number(64, precision=0, label="Trajectories")
                t_end = gr.Number(20, label="Length (time units, one frame each)")
                resolution = gr.Dropdown([32, 64, 128], value=64, label="Grid")
                viscosity = gr.Number(1e-3, label="Viscosity ν")
                data_seed = gr.Number(0, precision=0, label="Seed")
            make = gr.Button("Generate (or load from cache)", variant="primary")
            data_status = gr.Markdown(lab.cached_datasets())
            preview = gr.Image(label="first trajectory", type="pil")
            make.click(lab.generate_dataset, [n_samples, t_end, resolution, viscosity, data_seed],
                       [preview, data_status])
        with gr.Tab("Train", id="afno_train"):
            with gr.Row():
                name = gr.Textbox("lab", label="Run name")
                tn = gr.Number(64, precision=0, label="Trajectories")
                tt = gr.Number(20, label="Length")
                ntest = gr.Number(8, precision=0, label="Held out")
            with gr.Row():
                tsteps = gr.Number(500, precision=0, label="Steps")
                batch = gr.Number(16, precision=0, label="Batch")
                lr = gr.Number(1e-3, label="Learning rate")
                history = gr.Number(1, precision=0, label="History frames (k in → next)")
                unroll = gr.Number(1, precision=0, label="Unrolled steps in the loss")
            with gr.Row():
                patch = gr.Dropdown([2, 4, 8], value=4, label="Patch")
                dim = gr.Number(128, precision=0, label="Embed dim")
                depth = gr.Number(4, precision=0, label="Depth")
                precision = gr.Dropdown(["auto", "fp32", "bf16", "fp16"], value="auto", label="Precision")
                device = gr.Dropdown(["auto", "cpu", "cuda"], value="auto", label="Device")
                minutes = gr.Number(0, label="Stop after minutes (0: no limit)")
                resume = gr.Checkbox(False, label="Resume this run")
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="afno_train_start")
                stop = gr.Button("Stop", elem_id="afno_train_stop")
            task = gr.Textbox(label="Task id", interactive=False)
            train_status = gr.Markdown()
            with gr.Row():
                loss_plot = gr.Image(label="loss", type="pil")
                eval_plot = gr.Image(label="held-out rollout error", type="pil")
            shown = gr.State("")
            start.click(lab.start_training, [name, tn, tt, ntest, tsteps, batch, lr, history, unroll, patch, dim,
                                             depth, precision, device, minutes, resume], [task, train_status])
            stop.click(lab.stop_training, task, train_status)
            timer = gr.Timer(POLL_SECONDS)
            timer.tick(lab.poll, [task, shown], [loss_plot, train_status, eval_plot, shown], show_progress="hidden")
        with gr.Tab("Checkpoints", id="afno_checkpoints"):
            gr.Markdown(f"Models are read from `{lab.paths.shipped}`, `{lab.paths.user_models}` (lab files or "
                        f"FourCastNet-style `.pt`/`.tar`, `module.` prefixes are fine) and training runs in "
                        f"`{lab.paths.runs}`.")
            ckpt_file = gr.File(label="Import a checkpoint", type="filepath")
            import_btn = gr.Button("Import")
            with gr.Row():
                save_from = gr.Dropdown(models, value=models[0] if models else None, label="Model")
                save_name = gr.Textbox(label="Save as (file name)")
                save_btn = gr.Button("Save to my models")
            ckpt_status = gr.Markdown()
            import_btn.click(lab.import_checkpoint, ckpt_file, [ckpt_status, model])
            save_btn.click(lab.save_model_as, [save_from, save_name], [ckpt_status, model])
    return tab
