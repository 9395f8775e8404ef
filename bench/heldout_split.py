"""Split a category folder into ``train/`` and ``heldout/`` trees for fine-tuning measurements.

``python -m bench.heldout_split --out DIR [--source DIR] [--heldout 0.5] [--seed 0]``

Within every first-level category folder a seeded share of the images goes
to ``heldout/``, the rest to ``train/``, each keeping its relative path (as
symbolic links), so ``visearch train --images DIR/train`` and
``visearch run --demo DIR/train`` give the same image ids, and
``visearch eval build classes --source DIR/heldout`` builds the held-back
evaluation set with the same classes. Prints one JSON line with the counts.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

from visearch.catalog.corpus import DEMO_CORPUS, find_images


def split(source: Path, out: Path, heldout: float, seed: int) -> dict[str, int]:
    """Link each image under ``out/train`` or ``out/heldout``; returns the counts."""
    by_class: dict[str, list[Path]] = defaultdict(list)
    for path in find_images(source):
        by_class[path.relative_to(source).parts[0]].append(path)
    for part in ("train", "heldout"):
        shutil.rmtree(out / part, ignore_errors=True)
    rng = random.Random(seed)
    counts = {"train": 0, "heldout": 0}
    for label in sorted(by_class):
        paths = sorted(by_class[label])
        rng.shuffle(paths)
        cut = round(len(paths) * heldout)
        for index, path in enumerate(paths):
            part = "heldout" if index < cut else "train"
            target = out / part / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
            counts[part] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEMO_CORPUS)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--heldout", type=float, default=0.5, help="share held back per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = split(args.source, args.out, args.heldout, args.seed)
    print(json.dumps({"out": str(args.out), **counts}))


if __name__ == "__main__":
    main()
