"""Tests for modules/styles.py: A1111's style merging and the styles.csv database with atomic saves."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.styles import PromptStyle, StyleDatabase, apply_styles_to_prompt, merge_prompts

MERGES = [
    ("masterpiece", "a cat", "a cat, masterpiece"),
    ("  masterpiece  ", "  a cat  ", "a cat, masterpiece"),  # both sides stripped when appending
    ("", "a cat ", "a cat"),  # an empty style still strips the prompt
    ("masterpiece", "", "masterpiece"),
    ("", "", ""),
    ("photo of {prompt}, 4k", "a cat", "photo of a cat, 4k"),
    ("{prompt}", "  a cat  ", "  a cat  "),  # the placeholder keeps the prompt as it is
    ("{prompt} and {prompt}", "x", "x and x"),
    ("photo of {prompt}", "", "photo of "),
    ("{PROMPT}", "x", "x, {PROMPT}"),  # the placeholder is case-sensitive
]


@pytest.mark.parametrize(("style", "prompt", "expected"), MERGES)
def test_merge_prompts(style: str, prompt: str, expected: str):
    assert merge_prompts(style, prompt) == expected


def test_styles_apply_in_order():
    assert apply_styles_to_prompt("cat", ["photo of {prompt}", "4k", "{prompt}, sharp"]) == "photo of cat, 4k, sharp"
    assert apply_styles_to_prompt("cat", []) == "cat"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8-sig", newline="")
    return path


def test_load_styles(tmp_path: Path):
    path = write(
        tmp_path / "styles.csv",
        'name,prompt,negative_prompt\r\nCinema,"film still of {prompt}, 35mm","cartoon, drawing"\r\n'
        'Multi,"line one\nline two",\r\n,orphan,\r\n',
    )
    db = StyleDatabase(path)
    assert list(db.styles) == ["Cinema", "Multi"]
    assert db.styles["Cinema"] == PromptStyle("Cinema", "film still of {prompt}, 35mm", "cartoon, drawing", str(path))
    assert db.styles["Multi"].prompt == "line one\nline two" and db.styles["Multi"].negative_prompt == ""
    assert db.apply_styles_to_prompt("a cat", ["Cinema", "Missing"]) == "film still of a cat, 35mm"
    assert db.apply_negative_styles_to_prompt("blurry", ["Cinema"]) == "blurry, cartoon, drawing"
    assert db.get_style_prompts(["Missing"]) == [""]
    assert db.get_negative_style_prompts(["Cinema", "Multi"]) == ["cartoon, drawing", ""]


def test_load_old_name_text_layout(tmp_path: Path):
    db = StyleDatabase(write(tmp_path / "styles.csv", "name,text\nOld,vintage\n"))
    assert db.styles["Old"].prompt == "vintage" and db.styles["Old"].negative_prompt == ""


def test_missing_file_means_no_styles(tmp_path: Path):
    db = StyleDatabase(tmp_path / "nope.csv")
    assert db.styles == {}
    assert db.apply_styles_to_prompt("x", ["Anything"]) == "x"


def test_save_round_trips_and_keeps_backup(tmp_path: Path):
    path = write(tmp_path / "styles.csv", "name,prompt,negative_prompt\nA,a,\n")
    db = StyleDatabase(path)
    db.styles["B"] = PromptStyle("B", 'quoted "text", with comma', "neg\nline")
    db.save_styles()
    assert (tmp_path / "styles.csv.bak").read_text(encoding="utf-8-sig") == "name,prompt,negative_prompt\nA,a,\n"
    assert path.read_bytes().startswith(b"\xef\xbb\xbfname,prompt,negative_prompt\r\n")
    reloaded = StyleDatabase(path)
    assert [(s.name, s.prompt, s.negative_prompt) for s in reloaded.styles.values()] == [
        ("A", "a", ""),
        ("B", 'quoted "text", with comma', "neg\nline"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["styles.csv", "styles.csv.bak"]  # no temp file left


def test_save_to_other_path_creates_folders(tmp_path: Path):
    db = StyleDatabase(tmp_path / "styles.csv")
    db.styles["X"] = PromptStyle("X", "x", "y")
    target = tmp_path / "sub" / "copy.csv"
    db.save_styles(target)
    assert StyleDatabase(target).styles["X"].negative_prompt == "y"
    assert not (tmp_path / "styles.csv").exists()


def test_failed_save_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write(tmp_path / "styles.csv", "name,prompt,negative_prompt\nA,a,\n")
    db = StyleDatabase(path)
    db.styles["B"] = PromptStyle("B", "b", "")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("modules.styles.os.replace", broken_replace)
    with pytest.raises(OSError):
        db.save_styles()
    assert path.read_text(encoding="utf-8-sig") == "name,prompt,negative_prompt\nA,a,\n"
    assert not list(tmp_path.glob("*.tmp"))
