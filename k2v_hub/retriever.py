"""The Know2Vec retriever: M_EXT + Q_EXT in one `nn.Module`, saved and shared with `PyTorchModelHubMixin`.

Weights load from safetensors only (never pickle): plain files, or the int8 shipping format of the default retriever
(:mod:`k2v_hub.quantize`). The config records the feature space, dimensions, probe set fingerprint, oracle view and
library version; :meth:`Retriever.fingerprint` hashes the weights so an index can say exactly which retriever made
its embeddings.
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
from torch import nn

from . import __version__
from .encoders import ModelEncoder, TaskEncoder
from .errors import K2VError
from .features import k2v_home
from .hub import download_file
from .knowledge import knowledge_fingerprint
from .quantize import load_weights
from .utils import give_usual_mode

WEIGHTS_NAME = "model.safetensors"
#: The Hub id of the default retriever. The package ships the same weights (``k2v_hub/default_retriever``, in the
#: int8 shipping format) and ``k2v-hub build-retriever`` rebuilds them on this machine
#: (``$K2V_HUB_HOME/default_retriever``): with no ``--retriever``, the copy built here is used when it exists, else
#: the shipped one, online or offline, and an index records either as ``DEFAULT_RETRIEVER_ID`` at revision
#: ``BUNDLED_REVISION`` with its weight fingerprint; without both, the Hub repo is used.
DEFAULT_RETRIEVER_ID = "k2v-hub/know2vec-retriever"
BUNDLED_REVISION = "bundled"


class SafetensorsHubMixin(PyTorchModelHubMixin):
    """`PyTorchModelHubMixin` that saves ``model.safetensors`` with the usual file mode and loads it only (plain, or
    in the shipping format of :mod:`k2v_hub.quantize`), keys checked strictly, pickle never read, nothing printed
    (`k2v-hub find --format json` writes only its answer)."""

    def _save_pretrained(self, save_directory: Path) -> None:
        """Save the weights as ``model.safetensors``, with the usual file mode (`safetensors` makes 0600 files)."""
        super()._save_pretrained(save_directory)
        give_usual_mode(Path(save_directory) / WEIGHTS_NAME)

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location="cpu", strict=True, **model_kwargs):
        """Load weights from ``model.safetensors`` only, dequantized to float32 if in the shipping format."""
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
            if not weights.is_file():
                raise K2VError(f"{model_id} has no {WEIGHTS_NAME}.", f"Is this a k2v-hub {cls.__name__} folder?")
        else:
            weights = download_file(model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token)
        model.load_state_dict(load_weights(weights, map_location), strict=True)
        return model.eval()


def _fingerprint_or_none(record_json) -> str | None:
    """:func:`~k2v_hub.knowledge.knowledge_fingerprint` of a stored record, ``None`` if it is not JSON."""
    try:
        return knowledge_fingerprint(record_json)
    except (TypeError, ValueError):
        return None


class Retriever(
    nn.Module,
    SafetensorsHubMixin,
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

    def trained_mask(self, model_ids, knowledge=None) -> np.ndarray | None:
        """Which of ``model_ids`` this retriever was trained on with ground truth (its ``training_info``: mode
        ``supervised``, ids in ``trained_models``); ``None`` when none of them is.

        ``knowledge``: each model's knowledge record as JSON (an index row's ``knowledge``). A retriever that kept
        the fingerprints of the records it learnt (``trained_knowledge``) counts a model only if its record is the
        one it learnt: the same id with other weights (a retrained model, another zoo's) is new to it. Without
        ``knowledge``, such a retriever counts none; one trained before it kept them matches ids alone.
        """
        info = self.training_info if isinstance(self.training_info, dict) else {}
        ids = info.get("trained_models")
        if info.get("mode") != "supervised" or not isinstance(ids, list):
            return None
        fingerprints = info.get("trained_knowledge") or []
        if len(fingerprints) == len(ids):
            learnt = {(i, f) for i, f in zip(ids, fingerprints) if isinstance(i, str)}
            ids_learnt = {i for i, _ in learnt}
            records = [None] * len(model_ids) if knowledge is None else list(knowledge)
            mask = np.array([m in ids_learnt and r is not None and (m, _fingerprint_or_none(r)) in learnt
                             for m, r in zip(model_ids, records)], dtype=bool)
        else:
            known = {i for i in ids if isinstance(i, str)}
            mask = np.array([m in known for m in model_ids], dtype=bool)
        return mask if mask.any() else None

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



#: What to do when no copy of the default retriever is on this machine and the Hub cannot give it.
BUILD_HINT = ("Reinstall k2v-hub (the package ships it), build it with `k2v-hub build-retriever` (about 90 minutes "
              "on 2 CPU cores), or pass --retriever DIR_OR_ID.")


def built_retriever_dir() -> Path:
    """Where ``k2v-hub build-retriever`` puts the default retriever (``config.json``, ``model.safetensors``, card):
    ``$K2V_HUB_HOME/default_retriever``."""
    return k2v_home() / "default_retriever"


def shipped_retriever_dir() -> Path:
    """The copy of the default retriever shipped inside the package: ``k2v_hub/default_retriever``."""
    return Path(__file__).with_name("default_retriever")


def bundled_retriever_dir() -> Path:
    """The local copy of the default retriever used with no ``--retriever``: the one built on this machine when it
    has weights, else the one shipped in the package."""
    built = built_retriever_dir()
    return built if (built / WEIGHTS_NAME).is_file() else shipped_retriever_dir()


def has_bundled_retriever() -> bool:
    """Whether a local copy of the default retriever (built here or shipped) is on this machine."""
    return (bundled_retriever_dir() / WEIGHTS_NAME).is_file()


def load_bundled_retriever() -> Retriever:
    """The local copy of the default retriever (see :func:`bundled_retriever_dir`), in float32 (no network).

    Raises:
        K2VError: neither built on this machine nor shipped in the package.
    """
    if not has_bundled_retriever():
        raise K2VError(f"No copy of the default retriever on this machine: none built ({built_retriever_dir()}) "
                       f"and none shipped ({shipped_retriever_dir()}).", BUILD_HINT)
    return Retriever.from_pretrained(str(bundled_retriever_dir())).float()


def _training_summary(info: dict) -> str:
    if not info:
        return "Not recorded."
    return "\n".join(f"- **{k}**: {len(v)} (listed in config.json)" if isinstance(v, list) and len(v) > 8
                     else f"- **{k}**: {v}" for k, v in info.items())
