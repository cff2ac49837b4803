"""Prompt styles: named prompt fragments kept in `styles.csv` (columns name, prompt, negative_prompt), as in A1111.

A style containing `{prompt}` wraps the user's prompt; any other style is appended after it with ", ".
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

CSV_FIELDS = ("name", "prompt", "negative_prompt")
PROMPT_PLACEHOLDER = "{prompt}"


class PromptStyle(NamedTuple):
    name: str
    prompt: str
    negative_prompt: str
    path: str | None = None


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """One style applied to a prompt: fill `{prompt}` (every occurrence) or append with ", ", skipping empty parts."""
    if PROMPT_PLACEHOLDER in style_prompt:
        return style_prompt.replace(PROMPT_PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles_to_prompt(prompt: str, styles: Iterable[str]) -> str:
    """Apply style prompt texts in order; each one sees the result of the previous ones."""
    for style_prompt in styles:
        prompt = merge_prompts(style_prompt, prompt)
    return prompt


class StyleDatabase:
    """The styles of one CSV file, by name; unknown names act as an empty style (A1111's "None")."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.no_style = PromptStyle("None", "", "")
        self.styles: dict[str, PromptStyle] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again; a missing file means no styles."""
        self.styles.clear()
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8-sig", newline="") as file:
            for row in csv.DictReader(file):
                style = self._style_from_row(row)
                if style is not None:
                    self.styles[style.name] = style

    def _style_from_row(self, row: dict) -> PromptStyle | None:
        """A row of the current layout or of A1111's old "name, text" layout; rows without a name are skipped."""
        name = row.get("name")
        if not name:
            return None
        prompt = row.get("prompt", row.get("text")) or ""
        return PromptStyle(name, prompt, row.get("negative_prompt") or "", str(self.path))

    def get_style_prompts(self, styles: Iterable[str]) -> list[str]:
        return [self.styles.get(name, self.no_style).prompt for name in styles]

    def get_negative_style_prompts(self, styles: Iterable[str]) -> list[str]:
        return [self.styles.get(name, self.no_style).negative_prompt for name in styles]

    def apply_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        return apply_styles_to_prompt(prompt, self.get_style_prompts(styles))

    def apply_negative_styles_to_prompt(self, prompt: str, styles: Iterable[str]) -> str:
        return apply_styles_to_prompt(prompt, self.get_negative_style_prompts(styles))

    def save_styles(self, path: str | os.PathLike | None = None) -> None:
        """Write all styles atomically (temp file + rename) and keep the previous file as `<name>.bak`."""
        target = Path(path) if path is not None else self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        temp_path = self._write_temp_csv(target.parent)
        try:
            if target.exists():
                shutil.copy2(target, f"{target}.bak")
            os.replace(temp_path, target)
        except BaseException:
            Path(temp_path).unlink(missing_ok=True)
            raise
        log.info("Saved %d styles to %s", len(self.styles), target)

    def _write_temp_csv(self, directory: Path) -> str:
        """The CSV in a temp file beside the target, so the final rename never crosses file systems."""
        fd, temp_path = tempfile.mkstemp(suffix=".csv.tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=CSV_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(style._asdict() for style in self.styles.values())
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            Path(temp_path).unlink(missing_ok=True)
            raise
        return temp_path
