"""``visearch train``: where the training images and pairs come from, and the command.

Click pairs name images by the ids the running system gave them, so the
training images must carry the same ids:

* ``--images DIR``: ids as ``visearch ingest`` / ``visearch run --demo DIR``
  make them (:func:`visearch.catalog.corpus.image_id_for`, the path under ``DIR``);
* ``--image-store DIR``: the service's image store (``<data>/images``), ids
  are its keys (uploads through the API included). Private images are left
  out: a user who marked an image private did not offer it for training.

Kept out of ``visearch/cli/main.py`` so that the CLI only wires the subcommand in.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from encoders.train_config import DEFAULT_DIM, TrainConfig
from streams.settings import Settings
from visearch.catalog.corpus import find_images, image_id_for
from visearch.catalog.store import ImageStore

log = logging.getLogger(__name__)


def images_in_folder(root: Path) -> dict[str, Path]:
    """Image id -> file for a folder, with the ids ``visearch ingest`` gives them."""
    images: dict[str, Path] = {}
    for path in find_images(root):
        image_id = image_id_for(path, root)
        if image_id in images:
            log.warning("%s has the same id as %s; keeping the first", path, images[image_id])
            continue
        images[image_id] = path
    return images


def images_in_store(root: Path) -> tuple[dict[str, Path], int]:
    """Image id -> file for the public images of an image store, and the private count."""
    store = ImageStore(root)
    images: dict[str, Path] = {}
    private = 0
    for stored in store:
        if stored.private:
            private += 1
        else:
            images[stored.image_id] = store.path_of(stored.image_id)
    return images, private


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train`` on the CLI's subparsers."""
    defaults = TrainConfig()
    train = sub.add_parser(
        "train",
        help="fine-tune: train a projection head (SimCLR + click pairs) and export it",
        description="Train a projection head on the frozen pretrained backbone with NT-Xent "
        "over augmented views and the click-pair loss, then export backbone + head to one "
        "ONNX model directory (parity-checked). Prints one JSON line.",
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of training images (ids as ingest)")
    source.add_argument("--image-store", type=Path, help="an image store, e.g. data/images")
    train.add_argument(
        "--pairs",
        type=Path,
        help="labelled pairs: a `visearch pairs export` file (JSONL or Parquet), or `topic` to "
        "stream <prefix>.labeled-pairs",
    )
    train.add_argument("--base", type=Path, help="pretrained model dir (default: settings)")
    train.add_argument("--out", type=Path, help="output model dir (default: <data>/models/...)")
    train.add_argument("--dim", type=int, default=DEFAULT_DIM, help="embedding dimension")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument(
        "--views-per-image", type=int, default=defaults.views_per_image, help="augmented views"
    )
    clicks = TrainConfig.click_recipe()
    for option, field in [
        ("--batch-size", "batch_size"),
        ("--temperature", "temperature"),
        ("--ssl-weight", "ssl_weight"),
    ]:
        kind = int if field == "batch_size" else float
        train.add_argument(
            option,
            type=kind,
            help=f"default {getattr(defaults, field)}, with --pairs {getattr(clicks, field)}",
        )
    train.add_argument("--pairs-weight", type=float, default=defaults.pairs_weight)
    train.add_argument("--lr", type=float, default=defaults.learning_rate, help="learning rate")
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)


def config_from_args(args: argparse.Namespace, with_pairs: bool) -> TrainConfig:
    """The run's configuration: options given win, then the recipe for the inputs
    (:meth:`TrainConfig.click_recipe` with pairs, the SSL defaults without)."""
    recipe = TrainConfig.click_recipe() if with_pairs else TrainConfig()
    return TrainConfig(
        dim=args.dim,
        epochs=args.epochs,
        views_per_image=args.views_per_image,
        batch_size=recipe.batch_size if args.batch_size is None else args.batch_size,
        temperature=recipe.temperature if args.temperature is None else args.temperature,
        ssl_weight=recipe.ssl_weight if args.ssl_weight is None else args.ssl_weight,
        pairs_weight=args.pairs_weight,
        learning_rate=args.lr,
        seed=args.seed,
    )


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from encoders.finetune import finetune
    from encoders.model_dir import ModelDirError
    from feedback.pair_dataset import PairStream
    from visearch.catalog.corpus import DEMO_CORPUS
    from visearch.models.serving import ensure_exported

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one line per graph pass
    private = 0
    if args.images is not None:
        images = images_in_folder(args.images)
    else:
        images, private = images_in_store(args.image_store)
    source = settings if str(args.pairs) == "topic" else args.pairs
    pairs = list(PairStream(source).records()) if args.pairs else []
    base = args.base or settings.resolved_model_dir
    if args.base is None:
        ensure_exported(base, args.images or DEMO_CORPUS)
    config = config_from_args(args, with_pairs=bool(pairs))
    out = args.out or settings.data_dir / "models" / f"efficientnet-lite0-head{args.dim}"
    try:
        summary = finetune(images, pairs, base, out, config, args.device, not args.no_progress)
    except ModelDirError as exc:
        print(f"visearch: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({**summary, "private_images_left_out": private}))
    return 0
