"""The Know2Vec retriever: M_EXT + Q_EXT in one `nn.Module`, saved and shared with `PyTorchModelHubMixin`.

Weights load from safetensors only (never pickle). The config records the feature space, dimensions, probe set
fingerprint, oracle view and library version; :meth:`Retriever.fingerprint` hashes the weights so an index can
say exactly which retriever made its embeddings.
"""

from __future__ import annotations

import hashlib
import os
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin
from safetensors.torch import load_model
from torch import nn

from . import __version__
from .encoders import ModelEncoder, TaskEncoder
from .errors import K2VError
from .features import k2v_home
from .hub import download_file
from .utils import give_usual_mode

WEIGHTS_NAME = "model.safetensors"
#: The Hub id of the default retriever. ``k2v-hub build-retriever`` builds the same weights on this machine
#: (``$K2V_HUB_HOME/default_retriever``, float16): with no ``--retriever``, that copy is used when it exists, online
#: or offline, and an index records it as ``DEFAULT_RETRIEVER_ID`` at revision ``BUNDLED_REVISION`` with its weight
#: fingerprint; without it, the Hub repo is used.
DEFAULT_RETRIEVER_ID = "k2v-hub/know2vec-retriever"
BUNDLED_REVISION = "bundled"


class Retriever(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="k2v-hub",
    tags=["know2vec", "model-retrieval", "k2v-hub"],
    repo_url="https://github.com/k2v-hub/k2v-hub",
    paper_url="https://arxiv.org/abs/2412.16251",
    license="apache-2.0",
):
    """Encodes models (knowledge graph sets) and tasks (class means) into one L2-normalised space.

    Args:
        feature_space: id of the frozen feature space node and query features come from.
        feature_dim: its dimension D.
        hidden_dim: width of the encoders.
        embed_dim: dimension of model and task vectors (256 as in the paper).
        model_encoder: ``"lstm"`` (paper), ``"concat"`` or ``"average"`` for M_EXT.
        query_encoder: same choices for Q_EXT.
        max_classes: C, classes per model graph.
        probe_fingerprint: fingerprint of the probe set the retriever was trained with.
        probe_spec: how to rebuild that probe set.
        oracle_view: the black-box view knowledge records were built with.
        k2v_hub_version: library version that made the retriever.
        training_info: a summary of how it was trained (data, mode, losses, steps, metrics).
    """

    def __init__(
        self,
        *,
        feature_space: str = "mobilenet_v2-imagenet",
        feature_dim: int = 1280,
        hidden_dim: int = 256,
        embed_dim: int = 256,
        model_encoder: str = "lstm",
        query_encoder: str = "lstm",
        max_classes: int = 16,
        probe_fingerprint: str | None = None,
        probe_spec: dict | None = None,
        oracle_view: str = "full",
        k2v_hub_version: str = __version__,
        training_info: dict | None = None,
    ):
        super().__init__()
        self.feature_space = feature_space
        self.feature_dim = feature_dim
        self.embed_dim = embed_dim
        self.max_classes = max_classes
        self.probe_fingerprint = probe_fingerprint
        self.probe_spec = probe_spec
        self.oracle_view = oracle_view
        self.k2v_hub_version = k2v_hub_version
        self.training_info = training_info or {}
        self.model_encoder = ModelEncoder(feature_dim, hidden_dim, embed_dim, model_encoder, max_classes)
        self.query_encoder = TaskEncoder(feature_dim, hidden_dim, embed_dim, query_encoder, max_classes)

    @property
    def config(self) -> dict:
        """The JSON config saved as ``config.json``."""
        return dict(self._hub_mixin_config or {})

    def encode_models(self, graphs: list) -> torch.Tensor:
        """Model vectors ``[m, embed_dim]`` (L2-normalised) from graph sets ``[K, K, D]``."""
        graphs = [torch.as_tensor(g, dtype=torch.float32) for g in graphs]
        return F.normalize(self.model_encoder(graphs), dim=-1)

    def encode_tasks(self, class_means: list) -> torch.Tensor:
        """Task vectors ``[n, embed_dim]`` (L2-normalised) from per-task class means ``[K, D]``."""
        class_means = [torch.as_tensor(m, dtype=torch.float32) for m in class_means]
        return F.normalize(self.query_encoder(class_means), dim=-1)

    def forward(self, graphs: list, class_means: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: (model vectors ``[m, d]``, task vectors ``[n, d]``), both L2-normalised."""
        return self.encode_models(graphs), self.encode_tasks(class_means)

    @torch.inference_mode()
    def embed_models(self, graphs: list, batch_size: int = 32) -> np.ndarray:
        """Inference helper: model vectors as a float32 numpy array."""
        self.eval()
        out = [self.encode_models(graphs[i : i + batch_size]) for i in range(0, len(graphs), batch_size)]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.embed_dim), np.float32)

    @torch.inference_mode()
    def embed_task(self, class_means) -> np.ndarray:
        """Inference helper: one task vector ``[embed_dim]``."""
        self.eval()
        return self.encode_tasks([class_means])[0].numpy().astype(np.float32)

    def fingerprint(self) -> str:
        """sha256[:16] of the weights (names, shapes and bytes, in order): identifies this exact retriever."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The retriever's model card, rendered from ``cards/retriever_card.md``."""
        card_data = ModelCardData(**self._hub_mixin_info.model_card_data.to_dict())
        config = self.config
        summary = kwargs.pop("training_summary", None) or _training_summary(self.training_info)
        template = files("k2v_hub.cards").joinpath("retriever_card.md").read_text()
        return ModelCard.from_template(
            card_data,
            template_str=template,
            training_summary=summary,
            **{k: config.get(k) for k in ("feature_space", "feature_dim", "embed_dim", "model_encoder",
                                           "query_encoder", "max_classes", "probe_fingerprint", "oracle_view",
                                           "k2v_hub_version")},
            **kwargs,
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        """Save the weights as ``model.safetensors``, with the usual file mode (`safetensors` makes 0600 files)."""
        super()._save_pretrained(save_directory)
        give_usual_mode(Path(save_directory) / WEIGHTS_NAME)

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location="cpu", strict=True, **model_kwargs):
        """Load weights from ``model.safetensors`` only; pickle files are never read."""
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
            if not weights.is_file():
                raise K2VError(f"{model_id} has no {WEIGHTS_NAME}.", "Is this a k2v-hub retriever folder?")
        else:
            weights = download_file(model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token)
        load_model(model, str(weights), strict=True, device=map_location)
        return model.eval()


#: What to do when the default retriever is neither built here nor reachable on the Hub.
BUILD_HINT = ("Build it once with `k2v-hub build-retriever` (about 90 minutes on 2 CPU cores), or pass "
              "--retriever DIR_OR_ID.")


def bundled_retriever_dir() -> Path:
    """Where ``k2v-hub build-retriever`` puts the default retriever (``config.json``, ``model.safetensors``, card):
    ``$K2V_HUB_HOME/default_retriever``."""
    return k2v_home() / "default_retriever"


def has_bundled_retriever() -> bool:
    """Whether the default retriever has been built on this machine."""
    return (bundled_retriever_dir() / WEIGHTS_NAME).is_file()


def load_bundled_retriever() -> Retriever:
    """The default retriever built on this machine, upcast to float32 (no network).

    Raises:
        K2VError: it has not been built.
    """
    folder = bundled_retriever_dir()
    if not has_bundled_retriever():
        raise K2VError(f"The default retriever has not been built on this machine ({folder}).", BUILD_HINT)
    return Retriever.from_pretrained(str(folder)).float()


def _training_summary(info: dict) -> str:
    if not info:
        return "Not recorded."
    return "\n".join(f"- **{k}**: {v}" for k, v in info.items())
