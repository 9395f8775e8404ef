"""The README's configuration table documents every setting (no silent drift)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from streams.settings import PREFIX, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    missing = [f.name for f in fields(Settings) if f"`{PREFIX}{f.name.upper()}`" not in text]
    assert missing == []


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text and "make test" in text
