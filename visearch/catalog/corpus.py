"""Finding real photos on disk: the demo corpus and user folders for ``ingest``."""

from __future__ import annotations

import re
from pathlib import Path

from streams.errors import VisearchError

# Debian's tuxpaint-stamps-default: ~800 real photo cut-outs in category folders,
# installable offline through apt (the Makefile installs it).
DEMO_CORPUS = Path("/usr/share/tuxpaint/stamps")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class CorpusError(VisearchError, RuntimeError):
    """A folder that should hold images holds none."""


def find_images(root: Path) -> list[Path]:
    """Image files under ``root``, sorted for reproducibility."""
    if not root.is_dir():
        raise CorpusError(f"{root} is not a directory")
    images = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not images:
        raise CorpusError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def image_id_for(path: Path, root: Path) -> str:
    """A readable, valid image id from the path relative to ``root``.

    ``animals/birds/cardinal.png`` -> ``animals-birds-cardinal``; characters
    outside the id alphabet become ``_`` and long ids keep their tail.
    """
    relative = path.relative_to(root).with_suffix("")
    text = "-".join(relative.parts)
    text = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip("._-") or "image"
    return text[-128:].lstrip("._-") or "image"


def image_folders(root: Path) -> dict[str, str]:
    """Each image's id (as :func:`image_id_for` names it) -> its folder under ``root``.

    Ids join folders and file name with ``-``, and file names contain ``-``
    too, so the folder cannot be parsed back out of an id: class ground truth
    (the traffic simulator's) needs this mapping.
    """
    return {
        image_id_for(path, root): path.parent.relative_to(root).as_posix()
        for path in find_images(root)
    }
