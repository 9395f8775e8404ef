"""docs/configuration.md is generated from the settings object and must not go stale."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from streams.settings import PREFIX, Settings
from streams.settings_doc import field_docs, render

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_has_a_description() -> None:
    docs = field_docs()
    assert [f.name for f in fields(Settings) if not docs.get(f.name)] == []


def test_the_committed_page_is_what_the_settings_render() -> None:
    """Regenerate with `python -m streams.settings_doc docs/configuration.md`."""
    assert PAGE.read_text() == render()
    for f in fields(Settings):
        assert f"`{PREFIX}{f.name.upper()}`" in PAGE.read_text()
