"""``POST /code-translator/v1/translate`` on a real uvicorn server: streamed text, JSON, error statuses with their
reasons, the error line after a broken stream, verify through the API and its refusals; the other routes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

EXTENSION = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXTENSION))

from code_translator.api import ERROR_MARK, add_routes  # noqa: E402
from code_translator.settings import HostContext  # noqa: E402
from ct_fake_openai import Reply, ScriptedChatServer  # noqa: E402

from modules.cmd_args import parse_args  # noqa: E402
from tests.conftest import free_port, start_app  # noqa: E402

JS = ["function add(a, b) {\n", "  return a + b;\n", "}\n"]
BODY = {"input_language": "Python", "output_language": "JavaScript", "code": "def add(a, b):\n    return a + b\n"}


class Served:
    def __init__(self, args: Any = None) -> None:
        from fastapi import FastAPI

        self.opts = SimpleNamespace(data={"code_translator_model": "test-model"})
        self.args = args
        app = FastAPI()
        add_routes(app, HostContext(lambda: self.opts, lambda: None, lambda: self.args))
        base, self.server, self.thread = start_app(app)
        self.url = f"{base}/code-translator/v1"

    def translate(self, chat_url: str, **fields: Any) -> requests.Response:
        return requests.post(f"{self.url}/translate", json={**BODY, "base_url": chat_url, **fields}, timeout=60)


@pytest.fixture(scope="module")
def api() -> Iterator[Served]:
    served = Served()
    yield served
    served.server.should_exit = True
    served.thread.join(10)


def test_streamed_text_is_the_translation(api: Served):
    with ScriptedChatServer([Reply(JS)]) as chat:
        response = api.translate(chat.url)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert response.text == "".join(JS)


def test_json_answer(api: Served):
    with ScriptedChatServer([Reply(JS)]) as chat:
        response = api.translate(chat.url, stream=False, model="test-model")
    assert response.status_code == 200
    assert response.json() == {"output": "".join(JS), "status": "Done.", "error": None}


def test_failures_before_output_get_their_status_and_reason(api: Served):
    with ScriptedChatServer([Reply(JS)], models=("test-model", "coder")) as chat:
        missing = api.translate(chat.url, model="nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "UnknownModel" and missing.json()["available_models"] == ["coder", "test-model"]
    dead = api.translate(f"http://127.0.0.1:{free_port()}/v1")
    assert dead.status_code == 502 and dead.json()["detail"].startswith("Cannot reach the server at")
    with ScriptedChatServer([Reply(JS)], api_key="right") as chat:
        denied = api.translate(chat.url, api_key="wrong", stream=False)
    assert denied.status_code == 401 and denied.json()["error"] == "AuthenticationFailed"
    same = requests.post(f"{api.url}/translate", json={**BODY, "output_language": "python"}, timeout=10)
    assert same.status_code == 422 and "both Python" in same.json()["detail"]
    incomplete = requests.post(f"{api.url}/translate", json={"code": "x"}, timeout=10)
    assert incomplete.status_code == 422


def test_broken_stream_keeps_partial_output(api: Served):
    broken = Reply(["part one\n", "part two\n", "lost\n"], disconnect_after=2)
    with ScriptedChatServer([broken, Reply(broken.deltas, disconnect_after=2)]) as chat:
        streamed = api.translate(chat.url)
        as_json = api.translate(chat.url, stream=False)
    assert streamed.status_code == 200
    assert streamed.text.startswith("part one\npart two\n\n" + ERROR_MARK + " The connection to ")
    assert as_json.status_code == 502
    assert as_json.json()["output"] == "part one\npart two\n" and as_json.json()["error"] == "StreamInterrupted"


def test_verify_through_the_api_and_its_refusals(api: Served):
    source = "print(6 * 7)\n"
    with ScriptedChatServer([Reply(["print(42)\n"])]) as chat:
        result = api.translate(chat.url, code=source, output_language="Bash", stream=False, verify_inputs="")
        streamed = api.translate(chat.url, code=source, output_language="Bash", verify_inputs="")
    assert result.status_code == 200 and result.json()["verify"]["passed"] is False
    assert "exit codes differ" in result.json()["verify"]["diff"]  # Bash has no print command
    assert streamed.status_code == 422 and '"stream": false' in streamed.json()["detail"]
    api.args = parse_args(["--listen"], environ={})
    try:
        refused = api.translate("http://127.0.0.1:9/v1", stream=False, verify_inputs="")
    finally:
        api.args = None
    assert refused.status_code == 403 and "--listen" in refused.json()["detail"]


def test_languages_and_models_routes(api: Served):
    listing = requests.get(f"{api.url}/languages", timeout=10).json()
    assert len(listing["languages"]) >= 47 and "Python" in listing["runnable"]
    with ScriptedChatServer([], models=("a-model", "b-model")) as chat:
        models = requests.get(f"{api.url}/models", params={"base_url": chat.url}, timeout=10).json()
    assert models["models"] == ["a-model", "b-model"]


def test_command_line_streams_the_translation(tmp_path: Path):
    import os
    import subprocess

    source = tmp_path / "add.py"
    source.write_text(BODY["code"])
    env = {**os.environ, "OPENAI_API_KEY": "", "OMP_NUM_THREADS": "1"}
    script = str(EXTENSION / "translate.py")
    with ScriptedChatServer([Reply(JS)], models=("test-model",)) as chat:
        done = subprocess.run([sys.executable, script, "--to", "JavaScript", str(source), "--base-url", chat.url,
                               "--model", "test-model", "--out", str(tmp_path / "add.js")],
                              capture_output=True, text=True, timeout=120, env=env)
        failed = subprocess.run([sys.executable, script, "--to", "JavaScript", str(source), "--base-url", chat.url,
                                 "--model", "nope"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(JS) and (tmp_path / "add.js").read_text() == "".join(JS)
    assert "[Translating with test-model at" in done.stderr  # the language came from the file name
    assert failed.returncode == 1 and "Error: The server does not know the model 'nope'." in failed.stderr
