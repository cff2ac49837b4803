"""Request features over real HTTP: input images by URL (refused for local hosts unless the server's settings allow
it), and the scripts / script-info / extensions routes with their provider callables."""

from __future__ import annotations

import http.server
import io
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modules.api import image_fetch
from modules.errors import InvalidRequest
from tests.api.server import TINY, Served, assert_error, b64_png, decode, serving_on_one_thread

pytest_plugins = ["tests.pipeline_fixtures"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_sd1: Any, tiny_checkpoint_dir: Path) -> Iterator[Served]:
    with serving_on_one_thread(tmp_path_factory.mktemp("api-requests"), tiny_sd1, tiny_checkpoint_dir) as served:
        yield served


@pytest.fixture(scope="module")
def png_server() -> Iterator[str]:
    """A local HTTP server: /red.png (a 32x32 PNG), /big.png (over a small cap), /moved (302 to /red.png), else 404."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (220, 20, 20)).save(buffer, format="PNG")
    body = buffer.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/red.png")
                self.end_headers()
                return
            if self.path not in ("/red.png", "/big.png"):
                self.send_error(404)
                return
            payload = body if self.path == "/red.png" else body * 50
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_inputs_refused_for_local_hosts_until_allowed(api: Served, png_server: str) -> None:
    opts = api.ctx.opts
    url = f"{png_server}/red.png"
    request = {**TINY, "init_images": [url], "denoising_strength": 0.5}
    assert_error(api.post("img2img", json=request), 422, "init_images[0]", "127.0.0.1", "api_forbid_local_requests")
    assert_error(api.post("extra-single-image", json={"image": url}), 422, "local")
    assert_error(api.post("options", json={"api_forbid_local_requests": False}), 422, "cannot be changed")
    assert opts.api_forbid_local_requests is True
    opts.set("api_forbid_local_requests", False)  # only the server's own settings may allow it
    try:
        response = api.post("img2img", json=request)
        assert response.status_code == 200, response.text
        assert decode(response.json()["images"][0]).size == (32, 32)
        extras = api.post("extra-single-image", json={"image": f"{png_server}/moved", "upscaler_1": "Nearest"})
        assert extras.status_code == 200, extras.text
        assert decode(extras.json()["image"]).getpixel((5, 5)) == (220, 20, 20)
        assert_error(api.post("img2img", json={**request, "mask": f"{png_server}/nothing.png"}), 422, "mask",
                     "404")
        opts.set("api_enable_requests", False)
        assert_error(api.post("img2img", json=request), 422, "api_enable_requests")
    finally:
        opts.set("api_forbid_local_requests", True)
        opts.set("api_enable_requests", True)


def test_fetch_limits_and_address_checks(png_server: str) -> None:
    assert image_fetch.fetch_image_bytes(f"{png_server}/red.png", forbid_local=False)[:4] == b"\x89PNG"
    with pytest.raises(InvalidRequest, match="limit"):
        image_fetch.fetch_image_bytes(f"{png_server}/big.png", forbid_local=False, max_bytes=1000)
    for url in ("http://localhost/x.png", "http://10.1.2.3/x.png", "http://[::1]:8080/x.png",
                "http://169.254.169.254/latest"):
        with pytest.raises(InvalidRequest, match="local or private"):
            image_fetch.check_url(url, True, "image")
    image_fetch.check_url("http://8.8.8.8/x.png", True, "image")  # a global address passes
    with pytest.raises(InvalidRequest, match="not an http"):
        image_fetch.check_url("file:///etc/passwd", False, "image")


SCRIPTS = [
    {"name": "x/y/z plot", "is_alwayson": False, "is_img2img": False, "args": [{"label": "X type", "value": 0}]},
    {"name": "x/y/z plot", "is_alwayson": False, "is_img2img": True, "args": []},
    {"name": "prompt matrix", "is_alwayson": False, "is_img2img": False, "args": []},
    {"name": "extra options", "is_alwayson": True, "is_img2img": False, "args": [
        {"label": "Strength", "value": 0.5, "minimum": 0, "maximum": 1, "step": 0.05, "choices": None}]},
]


class FakeRunner:
    """Stands in for the extension system's ScriptRunner: ``run`` makes the selected script's result."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.hooks: list[str] = []

    def run(self, p: Any, *args: Any) -> Any:
        self.calls.append(args)
        return None  # no selectable script chosen: the API falls back to process_images

    def process(self, p: Any) -> None:
        self.hooks.append("process")

    def after_extra_networks_activate(self, p: Any, **kwargs: Any) -> None:
        self.hooks.append("after_extra_networks_activate")


def test_scripts_and_script_info_use_the_provider(api: Served) -> None:
    assert api.get("scripts").json() == {"txt2img": [], "img2img": []}
    assert api.get("script-info").json() == []
    api.ctx.scripts_info = lambda: SCRIPTS
    try:
        assert api.get("scripts").json() == {"txt2img": ["x/y/z plot", "prompt matrix"], "img2img": ["x/y/z plot"]}
        info = api.get("script-info").json()
        assert [s["name"] for s in info] == [s["name"] for s in SCRIPTS]
        assert info[3]["args"][0] == {"label": "Strength", "value": 0.5, "minimum": 0, "maximum": 1, "step": 0.05,
                                      "choices": None}
        body = assert_error(api.post("txt2img", json={**TINY, "script_name": "Nope"}), 422, "nope")
        assert "x/y/z plot" in body["detail"] and "prompt matrix" in body["detail"]
        assert_error(api.post("img2img", json={**TINY, "init_images": [b64_png(Image.new("RGB", (32, 32)))],
                                               "script_name": "prompt matrix"}), 422, "x/y/z plot")
        assert_error(api.post("txt2img", json={**TINY, "alwayson_scripts": {"x/y/z plot": {}}}), 422,
                     "extra options")
        assert_error(api.post("txt2img", json={**TINY, "script_name": "Prompt Matrix"}), 422, "cannot be run")

        runner = FakeRunner()

        def prepare(p: Any, kind: str, req: Any) -> None:
            if req.script_args == ["bad"]:
                raise ValueError("prompt matrix: bad arguments")
            p.scripts, p.script_args = runner, [kind, req.script_name]

        api.ctx.prepare_scripts = prepare
        ok = api.post("txt2img", json={**TINY, "script_name": "Prompt Matrix", "send_images": False})
        assert ok.status_code == 200, ok.text
        assert runner.calls == [("txt2img", "Prompt Matrix")]
        assert runner.hooks == ["process", "after_extra_networks_activate"]  # then process_images ran with it
        assert_error(api.post("txt2img", json={**TINY, "script_name": "prompt matrix", "script_args": ["bad"]}),
                     422, "bad arguments")
    finally:
        api.ctx.scripts_info = lambda: []
        api.ctx.prepare_scripts = None


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_extensions_from_folders_and_git(api: Served) -> None:
    root = api.ctx.paths.extensions_dir
    (root / "plain-ext").mkdir(parents=True)
    repo = root / "git-ext"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("x", encoding="utf8")
    git(repo, "add", "README.md")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", "https://example.com/someone/git-ext.git")
    api.ctx.opts.set("disabled_extensions", ["plain-ext"])
    try:
        items = {e["name"]: e for e in api.get("extensions").json()}
    finally:
        api.ctx.opts.set("disabled_extensions", [])
    assert items["plain-ext"] == {"name": "plain-ext", "remote": None, "branch": None, "commit_hash": None,
                                  "commit_date": None, "version": None, "enabled": False}
    commit = git(repo, "rev-parse", "HEAD")
    assert items["git-ext"] == {"name": "git-ext", "remote": "https://example.com/someone/git-ext.git",
                                "branch": "main", "commit_hash": commit,
                                "commit_date": int(git(repo, "log", "-1", "--format=%ct")), "version": commit[:8],
                                "enabled": True}
    api.ctx.extensions_info = lambda: [{"name": "from-provider", "enabled": True}]
    try:
        assert api.get("extensions").json() == [{"name": "from-provider", "remote": None, "branch": None,
                                                 "commit_hash": None, "commit_date": None, "version": None,
                                                 "enabled": True}]
    finally:
        api.ctx.extensions_info = None
        api.ctx.__post_init__()
