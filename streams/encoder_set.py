"""The encoders an embedding worker runs: the serving version and any candidates.

Kept current by a :class:`~streams.model_registry.ModelWatcher`: a deployed
version is loaded and new uploads are embedded with it as well (so its index
stays complete while the backfill catches up with older images); a retired
version is unloaded.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from encoders.preprocess import INPUT_SIZE
from encoders.runtime import OnnxEncoder
from encoders.tiles import tile_boxes
from streams.model_registry import ModelRegistry, ModelWatcher
from streams.schemas import ModelChanged
from streams.settings import Settings

log = logging.getLogger(__name__)


def encoder_from_settings(model_dir: Path, settings: Settings) -> OnnxEncoder:
    """A service's encoder: the configured intra-op threads and spinning policy."""
    return OnnxEncoder(model_dir, threads=settings.ort_threads, spin=settings.ort_spin)


class EncoderSet:
    """Thread-safe map of active model versions to loaded encoders."""

    def __init__(self, settings: Settings, watch: bool = True) -> None:
        self.settings = settings
        self.registry = ModelRegistry.serving_from(settings.resolved_model_dir)
        self._encoders: dict[str, OnnxEncoder] = {}
        self._lock = threading.Lock()
        self.watcher = ModelWatcher(settings, self.apply) if watch else None

    def start(self, timeout_s: float = 30.0) -> EncoderSet:
        """Read the models topic to its end, then load the active encoders."""
        if self.watcher is not None and not self.watcher.start_and_catch_up(timeout_s):
            raise TimeoutError("the models topic could not be read")
        with self._lock:
            self._sync()
        return self

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def apply(self, event: ModelChanged) -> None:
        with self._lock:
            if self.registry.apply(event):
                self._sync()

    def active(self) -> list[OnnxEncoder]:
        """Serving encoder first, then candidates (a consistent snapshot)."""
        with self._lock:
            active = self.registry.active()
            return [self._encoders[v.version] for v in active if v.version in self._encoders]

    def _sync(self) -> None:
        wanted = {v.version: v.model_dir for v in self.registry.active()}
        for version in list(self._encoders):
            if version not in wanted:
                log.info("unloading encoder %s", version)
                del self._encoders[version]
        for version, model_dir in wanted.items():
            if version in self._encoders:
                continue
            try:
                encoder = encoder_from_settings(Path(model_dir), self.settings)
            except Exception:  # a broken model dir must not stop the serving encoder
                log.exception("cannot load model %s from %s", version, model_dir)
                continue
            if encoder.version != version:
                log.error("%s holds model %s, not %s: ignored", model_dir, encoder.version, version)
                continue
            self._warm_up(encoder)
            log.info("loaded encoder %s from %s", version, model_dir)
            self._encoders[version] = encoder

    def _warm_up(self, encoder: OnnxEncoder) -> None:
        """Run the largest batch the agent can send once, before any upload.

        ONNX Runtime's memory arena grows to the largest batch it has seen and
        keeps it: without this, the worker's RSS stepped up by ~130 MB the first
        time a backlog filled a batch, minutes into a soak, and looked like a leak.
        """
        rows = self.settings.embed_batch_size * (1 + len(tile_boxes(self.settings.tiles)))
        encoder.embed(np.zeros((rows, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32))
