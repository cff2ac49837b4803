"""Long inputs: a 2,000-line generated Python file is split under the token budget, translated chunk by chunk in
dependency order by a scripted server (each request given the signatures it calls), and reassembled in source
order; plus the brace/indent heuristics, the ordered stream, fence stripping and language detection."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from code_translator.assembly import Assembly  # noqa: E402
from code_translator.chunking import Chunk, estimate_tokens, plan_chunks, split_units  # noqa: E402
from code_translator.detect import detect_language  # noqa: E402
from code_translator.fences import FenceStripper, extract_code, strip_fences  # noqa: E402
from code_translator.languages import LANGUAGES, NATURAL_LANGUAGE, highlight_mode  # noqa: E402
from code_translator.ordering import signatures, translation_order  # noqa: E402
from code_translator.server_backend import ServerBackend, ServerSettings  # noqa: E402
from code_translator.translator import TranslationJob, translate  # noqa: E402
from ct_fake_openai import Reply, ScriptedChatServer  # noqa: E402

FUNCTIONS = 100
BUDGET = 700


def generated_file() -> str:
    """100 functions of 20 lines each; f_i calls f_{i+1}, so dependency order is the reverse of source order."""
    lines: list[str] = []
    for i in range(FUNCTIONS):
        body = [f"def f_{i:03d}(x):", f'    """Step {i}: add {i} and pass the result on."""', "    total = x"]
        body += [f"    total = total + {i} * {k}" for k in range(13)]
        body += [f"    total = f_{i + 1:03d}(total)" if i + 1 < FUNCTIONS else "    total = total - 1",
                 "    # done", "    return total", ""]
        lines += body
    assert len(lines) == 2000
    return "\n".join(lines) + "\n"


def scripted_translation(body: dict) -> Reply:
    """Each function becomes one JavaScript line, so the reply shows which functions the request carried."""
    user = body["messages"][1]["content"]
    code = user.split("Now yours.\nPython code:\n", 1)[1]
    names = re.findall(r"^def (f_\d+)\(", code, flags=re.MULTILINE)
    return Reply([f"function {name}(x) {{ return x; }}\n" for name in names])


def test_two_thousand_lines_are_chunked_ordered_by_dependency_and_reassembled():
    source = generated_file()
    chunks = plan_chunks(source, "Python", BUDGET)
    assert len(chunks) >= 8
    assert all(estimate_tokens(c.text) <= BUDGET and c.tokens <= BUDGET for c in chunks)
    assert "".join(c.text for c in chunks) == source  # nothing lost or duplicated
    with ScriptedChatServer(scripted_translation) as server:
        backend = ServerBackend(ServerSettings(base_url=server.url, model="test-model"))
        updates = list(translate(TranslationJob("Python", "JavaScript", source, chunk_tokens=BUDGET), backend))
    last = updates[-1]
    assert last.error is None and last.status == f"Done in {len(chunks)} chunks."
    requested = [re.findall(r"^def (f_\d+)\(", r["messages"][1]["content"].split("Now yours.")[1], re.MULTILINE)
                 for r in server.requests]
    assert len(requested) == len(chunks)
    firsts = [int(names[0][2:]) for names in requested]
    assert firsts == sorted(firsts, reverse=True)  # callees before callers: last chunk first
    for names, body in zip(requested, server.requests, strict=True):
        callee = int(names[-1][2:]) + 1
        note = body["messages"][1]["content"]
        if callee < FUNCTIONS:  # the function it calls was translated earlier, and its signature is given
            assert "already translated to JavaScript" in note
            assert f"function f_{callee:03d}(x) {{ return x; }}" in note
        assert f"part {len(chunks) - requested.index(names)} of {len(chunks)}" in note
    assert re.findall(r"function (f_\d+)", last.output) == [f"f_{i:03d}" for i in range(FUNCTIONS)]
    assert "".join(u.delta for u in updates) == last.output  # the stream is in source order too
    progress = [u.status for u in updates if u.status.startswith("Chunk ")]
    assert progress[0].startswith(f"Chunk 1/{len(chunks)}: lines {2000 - chunks[-1].text.count(chr(10)) + 1}-2000")
    assert any(s.startswith(f"Chunk {len(chunks)}/{len(chunks)}: lines 1-") for s in progress)


def test_brace_languages_split_at_top_level_definitions():
    js = ("// helpers\nfunction a(x) {\n  if (x) {\n    return b(x);\n  }\n  return 0;\n}\n\n"
          "const c = (y) => {\n  return a(y) + 1;\n};\n\nfunction b(z) {\n  return z * 2;\n}\n")
    units = split_units(js, "JavaScript")
    assert [u.text.splitlines()[0] for u in units] == ["// helpers", "const c = (y) => {", "function b(z) {"]
    assert units[0].defines == {"a"} and "b" in units[0].uses
    chunks = plan_chunks(js, "JavaScript", 28)  # units of 25, 19 and 12 tokens: one chunk each
    assert "".join(c.text for c in chunks) == js
    by_name = {name: c.index for c in chunks for name in c.defines}
    order = translation_order(chunks)
    assert order.index(by_name["b"]) < order.index(by_name["a"]) < order.index(by_name["c"])
    c_code = "#include <stdio.h>\n\nint twice(int v) {\n    return 2 * v;\n}\n\nint main(void) {\n" \
             "    printf(\"%d\\n\", twice(4));\n    return 0;\n}\n"
    units = split_units(c_code, "C")
    assert [sorted(u.defines) for u in units] == [[], ["twice"], ["main"]]


def test_indent_languages_and_oversized_definitions():
    ruby = "def a\n  b\nend\n\ndef b\n  1\nend\n"
    assert [u.text for u in split_units(ruby, "Ruby")] == ["def a\n  b\nend\n\n", "def b\n  1\nend\n"]
    big = "def huge(x):\n" + "".join(f"    x = x + {i}\n" + ("\n" if i % 10 == 9 else "") for i in range(200))
    chunks = plan_chunks(big, "Python", 120)
    assert len(chunks) > 3 and all(c.tokens <= 120 for c in chunks)
    assert "".join(c.text for c in chunks) == big
    assert [c.continues_previous for c in chunks] == [False] + [True] * (len(chunks) - 1)
    assert translation_order(chunks) == list(range(len(chunks)))


def test_cycles_fall_back_to_source_order():
    chunks = [Chunk(0, "", 1, depends_on={1}), Chunk(1, "", 1, depends_on={0}), Chunk(2, "", 1, depends_on={1})]
    assert translation_order(chunks) == [0, 1, 2]


def test_signatures_across_languages():
    code = ("def f(a, b):\n    pass\nclass K(Base):\n    def m(self):\n        pass\nfunction g(x) {\n}\n"
            "export const h = (y) => y;\nint add(int a, int b) {\n  if (a) {\n  }\n}\nfn run(x: i32) -> i32 {\n")
    assert signatures(code) == ["def f(a, b):", "class K(Base):", "    def m(self):", "function g(x)",
                                "export const h = (y) => y;", "int add(int a, int b)", "fn run(x: i32) -> i32"]


@pytest.mark.parametrize("pieces", [1, 2, 3, 5, 11])
def test_stream_equals_output_whatever_the_order_of_completion(pieces: int):
    texts = ["alpha\n", "beta", "", "gamma\n\n", "delta"]
    assembly = Assembly(len(texts))
    streamed = ""
    for index in [4, 1, 0, 3, 2]:
        text = texts[index]
        for cut in range(0, len(text) + 1, max(1, len(text) // pieces)):
            assembly.set(index, text[:cut])
            streamed += assembly.take()
        assembly.set(index, text, finished=True)
        streamed += assembly.take()
    assert streamed == assembly.output() == "alpha\n\nbeta\n\ngamma\n\ndelta"


@pytest.mark.parametrize("reply", ["plain\ncode\n", "```python\nx = 1\n```\n", "```\na\n```", "- a\n- b",
                                   "``not a fence", "text\n```js\ninner\n```\nafter\n"])
def test_fence_stripping_streams_like_the_whole(reply: str):
    for size in (1, 2, 3, 7):
        stripper = FenceStripper()
        out = "".join(stripper.feed(reply[i:i + size]) for i in range(0, len(reply), size)) + stripper.finish()
        assert out == strip_fences(reply)
    assert strip_fences("plain\ncode\n") == "plain\ncode\n"
    assert strip_fences("```python\nx = 1\n```\n") == "x = 1\n"
    assert extract_code("Here it is:\n```js\nlet a;\n```\nDone.") == "let a;\n"


def test_language_list_detection_and_highlighting():
    assert len(LANGUAGES) >= 47 and NATURAL_LANGUAGE in LANGUAGES
    assert {"Pascal", "COBOL", "CoffeeScript", "SwiftUI", "Vue", "SAS", "PL/SQL", "NoSQL"} <= set(LANGUAGES)
    assert highlight_mode("Python") == "python" and highlight_mode("C++") == "cpp" and highlight_mode("Go") is None
    assert detect_language("", "main.rs") == "Rust"
    assert detect_language("#!/usr/bin/env node\nconsole.log(1)\n") == "JavaScript"
    assert detect_language("def f(x):\n    return x\n\nprint(f(2))\n") == "Python"
    assert detect_language('#include <stdio.h>\nint main(void) { printf("hi"); }\n') == "C"
    assert detect_language("package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(1)\n}\n") == "Go"
    assert detect_language("const x = 1;\nconsole.log(x);\n") == "JavaScript"
    assert detect_language("just some words") is None


def test_tab_upload_and_typing_pick_the_input_language(tmp_path: Path):
    from code_translator.settings import HostContext
    from code_translator.ui import TabHandlers

    handlers = TabHandlers(HostContext(lambda: None, lambda: None, lambda: None))
    source = tmp_path / "main.rs"
    source.write_text("fn main() {\n    println!(\"hi\");\n}\n")
    code = source.read_text()
    assert handlers.upload(str(source), True, "Python") == (code, "Rust", "Loaded main.rs (detected Rust).")
    assert handlers.upload(str(source), False, "C") == (code, "C", "Loaded main.rs.")
    assert handlers.detect("const x = 1;\nconsole.log(x);\n", True, "Python") == "JavaScript"
    assert handlers.detect("const x = 1;\nconsole.log(x);\n", False, "Python") == "Python"  # chosen by hand
    assert handlers.detect("???", True, "Go") == "Go"
    big = tmp_path / "big.py"
    big.write_bytes(b"#" * (3 * 1024 * 1024))
    code, language, status = handlers.upload(str(big), True, "Go")
    assert (code, language) == ("", "Go") and status == "Error: big.py is 3072 KiB; the limit is 2 MiB."
