"""ONNX Runtime inference: the serving side of the encoder.

Execution providers are explicit: CUDA when requested and available (the
``gpu`` extra installs onnxruntime-gpu), otherwise CPU. A session is safe to
call from several threads; batching is the caller's choice (the embedding
agent batches uploads, the search API embeds one query).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from encoders.model_dir import ONNX_FILE, ModelMetadata, read_metadata

log = logging.getLogger(__name__)


def choose_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when present and wanted, CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = []
    if prefer_gpu and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


class OnnxEncoder:
    """Embeds preprocessed images with an exported model directory."""

    def __init__(
        self,
        model_dir: Path,
        threads: int = 0,
        providers: Sequence[str] | None = None,
        *,
        spin: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.metadata: ModelMetadata = read_metadata(model_dir)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin:
            # Idle intra-op threads sleep instead of busy-waiting for the next run.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_dir / ONNX_FILE),
            sess_options=options,
            providers=list(providers) if providers else choose_providers(),
        )
        log.info(
            "encoder %s version %s on %s",
            self.metadata.name,
            self.metadata.version,
            self._session.get_providers(),
        )

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def dim(self) -> int:
        return self.metadata.dim

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        """``(n, 3, H, W)`` float32 -> ``(n, dim)`` L2-normalised float32."""
        if inputs.ndim != 4 or inputs.shape[0] == 0:
            raise ValueError(f"expected a non-empty (n, 3, H, W) batch, got {inputs.shape}")
        outputs = self._session.run(
            [self.metadata.output_name],
            {self.metadata.input_name: np.ascontiguousarray(inputs, dtype=np.float32)},
        )[0]
        return np.asarray(outputs, dtype=np.float32)
