"""``/afno/v1`` over real HTTP: uvicorn on 127.0.0.1, the shared ``JobQueue`` behind it, ``requests`` as the client."""

from __future__ import annotations

import base64
import io
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
import uvicorn
from fastapi import FastAPI
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afno_lab.api import LabApi, mount  # noqa: E402
from afno_lab.checkpoint import save_model  # noqa: E402
from afno_lab.forecaster import StepperInfo  # noqa: E402
from afno_lab.model import AFNOConfig, AFNONet  # noqa: E402
from afno_lab.store import LabPaths  # noqa: E402

from modules.internal_routes import add_internal_routes  # noqa: E402
from modules.jobs import JobQueue  # noqa: E402
from modules.shared_state import State  # noqa: E402
from tests.conftest import free_port, start_app  # noqa: E402

TINY_TRAIN = {"n_samples": 4, "t_end": 3, "resolution": 16, "n_test": 1, "steps": 4, "batch_size": 4,
              "patch_size": 4, "embed_dim": 16, "depth": 1, "num_blocks": 4, "warmup_steps": 1, "device": "cpu"}


class Server:
    def __init__(self, url: str, queue: JobQueue, paths: LabPaths, api: LabApi) -> None:
        self.url, self.queue, self.paths, self.api = url, queue, paths, api

    def post(self, route: str, **kw: Any) -> requests.Response:
        return requests.post(f"{self.url}/afno/v1/{route}", timeout=120, **kw)

    def get(self, route: str) -> requests.Response:
        return requests.get(f"{self.url}/afno/v1/{route}", timeout=60)

    def wait_training(self, task_id: str, phases: tuple[str, ...] = ("done", "stopped", "failed")) -> dict[str, Any]:
        deadline = time.time() + 120
        while time.time() < deadline:
            body = self.get(f"progress/{task_id}").json()
            if body["phase"] in phases:
                return body
            time.sleep(0.1)
        raise AssertionError(f"training {task_id} did not reach {phases}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("afno_api")
    paths = LabPaths(root / "shipped", root / "models" / "AFNO", root / "outputs" / "afno")
    torch.manual_seed(0)
    net = AFNONet(AFNOConfig(img_size=(16, 16), patch_size=(4, 4), embed_dim=16, depth=1, num_blocks=4))
    save_model(paths.shipped / "tiny.safetensors", net, StepperInfo(scale=0.5))
    queue = JobQueue(State())
    app = FastAPI()
    add_internal_routes(app, queue, "test")
    api = LabApi(queue, paths)
    mount(app, api)
    url, uv, thread = start_app(app)
    try:
        yield Server(url, queue, paths, api)
    finally:
        uv.should_exit = True
        thread.join(10)
        queue.shutdown(10)
        torch.set_num_threads(threads)


def _error(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail", "hint"} <= set(body), body
    for word in words:
        assert word.lower() in body["detail"].lower(), body


def test_rollout_from_a_field_with_truth_and_gif(server: Server) -> None:
    field = np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32)
    response = server.post("rollout", json={"initial": field.tolist(), "steps": 3, "with_truth": True, "gif": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny.safetensors" and body["shape"] == [3, 16, 16]
    prediction = np.asarray(body["prediction"])
    assert prediction.shape == (3, 16, 16) and np.isfinite(prediction).all()
    assert len(body["rel_l2"]) == 3 and all(e > 0 for e in body["rel_l2"])
    truth = np.asarray(body["truth"])
    rel = np.linalg.norm(prediction[0] - truth[0]) / np.linalg.norm(truth[0])
    assert rel == pytest.approx(body["rel_l2"][0], rel=1e-3)
    gif = Image.open(io.BytesIO(base64.b64decode(body["gif"])))
    assert gif.format == "GIF" and gif.n_frames == 3
    assert server.queue.get(body["task_id"]).kind == "afno-rollout"  # it ran on the shared queue's worker


def test_rollout_b64_round_trip_matches_list_encoding(server: Server) -> None:
    field = np.random.default_rng(1).normal(size=(16, 16)).astype("<f4")
    b64 = base64.b64encode(field.tobytes()).decode()
    a = server.post("rollout", json={"initial_b64": b64, "shape": [16, 16], "steps": 2, "encoding": "b64"}).json()
    b = server.post("rollout", json={"initial": field.tolist(), "steps": 2}).json()
    decoded = np.frombuffer(base64.b64decode(a["prediction"]), dtype="<f4").reshape(2, 16, 16)
    assert np.allclose(decoded, np.asarray(b["prediction"]), atol=1e-5)
    seeded = server.post("rollout", json={"seed": 3, "t_start": 1, "steps": 1})
    assert seeded.status_code == 200 and np.asarray(seeded.json()["prediction"]).shape == (1, 16, 16)


def test_rollout_bad_requests_are_clear(server: Server) -> None:
    ok = np.zeros((16, 16)).tolist()
    _error(server.post("rollout", json={"initial": np.zeros((8, 8)).tolist()}), 422, "takes (16, 16)")
    _error(server.post("rollout", json={"initial": [[1, 2], [3]]}), 422, "rectangular")
    _error(server.post("rollout", data='{"initial": [[NaN, 1], [1, 1]]}', headers={"Content-Type": "application/json"}),
           422)
    _error(server.post("rollout", json={}), 422, "initial field")
    _error(server.post("rollout", json={"initial": ok, "steps": 5000}), 422, "steps")
    _error(server.post("rollout", json={"initial": ok, "model": "nope"}), 404, "unknown model")
    _error(server.post("rollout", json={"initial_b64": "%%%", "shape": [16, 16]}), 422, "base64")
    _error(server.post("rollout", json={"initial_b64": "AAAA", "shape": [16, 16]}), 422, "bytes")
    _error(server.post("rollout", json={"initial": ok, "encoding": "hex"}), 422, "encoding")
    _error(server.get("progress/task(nope)"), 404, "no afno training")


def test_train_job_reports_progress_and_its_model_can_roll_out(server: Server) -> None:
    response = server.post("train", json={**TINY_TRAIN, "name": "tiny-run"})
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    assert task_id.startswith("task(afno-") and response.json()["progress"].endswith(task_id)
    server.wait_training(task_id)
    server.queue.get(task_id).wait(60)  # the run reports "done" just before its queue job returns
    body = server.get(f"progress/{task_id}").json()
    assert body["phase"] == "done", body
    assert body["step"] == 4 and [s for s, _ in body["losses"]] == [1, 2, 3, 4]
    assert len(body["rollout_rel_l2"]) == 3 and body["queue"]["status"] == "done"
    assert Path(body["model_path"]).is_file()
    internal = requests.post(f"{server.url}/internal/progress", json={"id_task": task_id}, timeout=10).json()
    assert internal["completed"] is True and server.queue.get(task_id).kind == "afno-train"
    names = [m["name"] for m in server.get("models").json()["models"]]
    assert names == ["tiny.safetensors", "run/tiny-run"]
    rollout = server.post("rollout", json={"model": "run/tiny-run", "seed": 1, "t_start": 0, "steps": 2})
    assert rollout.status_code == 200 and rollout.json()["model"] == "run/tiny-run"


def test_training_stops_on_interrupt_and_resumes(server: Server) -> None:
    settings = {**TINY_TRAIN, "name": "stoppable", "steps": 100_000}
    task_id = server.post("train", json=settings).json()["task_id"]
    deadline = time.time() + 60
    while server.get(f"progress/{task_id}").json()["step"] < 2 and time.time() < deadline:
        time.sleep(0.05)
    server.queue.interrupt()  # what /sdapi/v1/interrupt and the tab's Stop button do
    stopped = server.wait_training(task_id)
    assert stopped["phase"] == "stopped" and 2 <= stopped["step"] < 100_000
    assert (server.paths.runs / "stoppable" / "train_state.pt").is_file()
    again = server.post("train", json={**settings, "resume": True, "max_minutes": 1e-4}).json()["task_id"]
    resumed = server.wait_training(again)  # a 6 ms budget: one more step, then it stops at the deadline
    assert resumed["phase"] == "stopped" and resumed["step"] == stopped["step"] + 1
    assert [s for s, _ in resumed["losses"]] == list(range(1, stopped["step"] + 2))  # continued the saved run


def test_rollout_behind_a_busy_queue_is_a_503_and_is_withdrawn(server: Server) -> None:
    release = threading.Event()
    blocker = server.queue.submit(lambda: release.wait(30), kind="other", description="long job")
    server.api.rollout_timeout = 0.5
    try:
        response = server.post("rollout", json={"seed": 1, "steps": 1})
        _error(response, 503, "busy")
        assert server.queue.pending_count() == 0  # the waiting rollout was taken off the queue
    finally:
        server.api.rollout_timeout = 600.0
        release.set()
        blocker.wait(30)


def test_train_rejects_bad_settings(server: Server) -> None:
    _error(server.post("train", json={**TINY_TRAIN, "name": "../escape"}), 422, "run name")
    _error(server.post("train", json={**TINY_TRAIN, "embed_dim": 18}), 422, "divisible")
    _error(server.post("train", json={**TINY_TRAIN, "resolution": 18}), 422, "multiple of patch_size")
    _error(server.post("train", json={**TINY_TRAIN, "n_test": 4}), 422, "n_test")
    _error(server.post("train", json={**TINY_TRAIN, "precision": "fp8"}), 422, "precision")
    _error(server.post("train", json={**TINY_TRAIN, "steps": "many"}), 422, "steps")
    _error(server.post("train", json={**TINY_TRAIN, "device": "tpu"}), 422)


def test_on_app_started_uses_the_apps_queue_and_api_auth(tmp_path: Path) -> None:
    """The extension's hook mounts the routes on the app's own queue and folders, behind ``--api-auth``."""
    from types import SimpleNamespace

    from afno_lab import integration

    from modules.cmd_args import parse_args
    from modules.paths import paths_from_args

    args = parse_args(["--data-dir", str(tmp_path), "--api-auth", "ann:secret"], environ={})
    app_paths = paths_from_args(args)
    queue = JobQueue(State())
    app = FastAPI()
    app.state.atelier_context = SimpleNamespace(queue=queue, paths=app_paths, args=args)
    integration.on_app_started(None, app)
    lab = integration.lab_for(queue, app_paths)
    assert lab.paths.user_models == app_paths.models_dir / "AFNO" and lab.paths.work == app_paths.outputs_dir / "afno"
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        while not uv.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/afno/v1/models"
        denied = requests.get(url, timeout=10)
        _error(denied, 401)
        assert denied.headers["WWW-Authenticate"].startswith("Basic")
        allowed = requests.get(url, auth=("ann", "secret"), timeout=10)
        assert allowed.status_code == 200 and allowed.json()["models"][0]["file"].startswith(str(lab.paths.shipped))
    finally:
        uv.should_exit = True
        thread.join(10)
        queue.shutdown(10)
