"""End-to-end start-up: `launch.py` in a real process serves real HTTP and prints its readiness line."""

from __future__ import annotations

import http.cookiejar
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.sd.factory import write_tiny_checkpoint


def start(root: Path, python: str, data_dir: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([python, "launch.py", "--skip-install", "--data-dir", str(data_dir), "--port", str(port),
                             *flags], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if "ready:" in line:
            return proc, f"http://127.0.0.1:{port}"
    proc.kill()
    pytest.fail("server did not become ready:\n" + "".join(lines))


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read().decode("utf8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf8", "replace")


@pytest.fixture
def server(request, root, python, tmp_path):
    procs = []

    def _start(*flags):
        proc, url = start(root, python, tmp_path, *flags)
        procs.append(proc)
        return url

    yield _start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_ui_starts_and_creates_the_data_folders(server, tmp_path):
    url = server("--theme", "dark")
    status, body = get(url + "/")
    assert status == 200 and "gradio" in body.lower()
    status, text = get(url + "/config")
    config = json.loads(text)
    assert "searchParams.set('__theme','dark')" in config["head"]  # --theme forces the theme
    assert "window.gradioApp" in config["head"]  # javascript/ is loaded into the page head
    elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"tab_txt2img", "txt2img_prompt", "txt2img_generate", "txt2img_gallery", "tab_img2img",
            "tab_pnginfo", "setting_sd_model_checkpoint"} <= elem_ids
    assert (tmp_path / "models" / "Stable-diffusion").is_dir()
    assert (tmp_path / "outputs" / "txt2img-images").is_dir()


def test_nowebui_serves_only_the_api_docs(server):
    url = server("--nowebui")
    assert get(url + "/docs")[0] == 200
    assert get(url + "/")[0] == 404


def test_gradio_auth_requires_login(server):
    url = server("--gradio-auth", "alice:secret")
    assert get(url + "/config")[0] == 401
    wrong = urllib.parse.urlencode({"username": "alice", "password": "nope"}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/login", data=wrong, timeout=30)
    assert e.value.code == 400
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    right = urllib.parse.urlencode({"username": "alice", "password": "secret"}).encode()
    assert opener.open(url + "/login", data=right, timeout=30).status == 200
    assert opener.open(url + "/config", timeout=30).status == 200


def post_json(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_nowebui_serves_the_sdapi_and_falls_back_to_the_demo_model(server):
    """No checkpoint of the user's own: the shipped demo model answers (a missing one is tested in
    tests/api/test_api_demo_model.py)."""
    url = server("--nowebui")
    status, body = get(url + "/sdapi/v1/samplers")
    assert status == 200 and "DPM++ 2M" in body
    status, body = post_json(url + "/sdapi/v1/txt2img", {"prompt": "a", "steps": 2, "width": 64, "height": 64})
    assert status == 200 and len(body["images"]) == 1
    assert json.loads(body["info"])["sd_model_name"] == "atelier-demo"


def test_api_generates_with_the_ckpt_flag(server, tmp_path):
    ckpt = write_tiny_checkpoint("sd1", tmp_path, name="tiny")
    url = server("--api", "--ckpt", str(ckpt))
    status, body = post_json(url + "/sdapi/v1/txt2img", {"prompt": "a red circle", "steps": 2, "width": 32,
                                                          "height": 32, "seed": 7, "sampler_name": "Euler"})
    assert status == 200, body
    info = json.loads(body["info"])
    assert info["seed"] == 7 and info["sd_model_name"] == "tiny" and len(body["images"]) == 1


@pytest.mark.parametrize("flags", [["--api", "--api-auth", "nocolon"], ["--gradio-auth-path", "/nonexistent/auth"]])
def test_bad_credential_flags_stop_with_a_message(root, python, tmp_path, flags):
    out = subprocess.run([python, "launch.py", "--skip-install", "--data-dir", str(tmp_path), *flags], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Cannot start" in out.stderr and "Traceback" not in out.stderr
