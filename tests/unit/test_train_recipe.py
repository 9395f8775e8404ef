"""``visearch train`` picks its recipe from its inputs; options given always win."""

from visearch.cli.main import build_parser
from visearch.models.training import config_from_args


def _config(*options: str, with_pairs: bool):
    args = build_parser().parse_args(["train", "--images", "x", *options])
    return config_from_args(args, with_pairs)


def test_without_pairs_the_ssl_defaults() -> None:
    config = _config(with_pairs=False)
    assert (config.ssl_weight, config.temperature, config.batch_size) == (1.0, 0.5, 256)


def test_with_pairs_the_click_recipe() -> None:
    config = _config(with_pairs=True)
    assert (config.ssl_weight, config.temperature, config.batch_size) == (0.0, 0.1, 64)


def test_options_given_override_either_recipe() -> None:
    options = ("--ssl-weight", "0.5", "--temperature", "0.3", "--batch-size", "128")
    for with_pairs in (False, True):
        config = _config(*options, with_pairs=with_pairs)
        assert (config.ssl_weight, config.temperature, config.batch_size) == (0.5, 0.3, 128)
    assert _config("--ssl-weight", "0", with_pairs=False).ssl_weight == 0.0  # 0 is given, too
