"""Every Hub call k2v-hub makes, in one place.

Two sources of model repos share one interface (:class:`RepoSource`): :class:`HubSource` (the real Hub, a
private endpoint through ``HF_ENDPOINT``, or the project's test server) and :class:`LocalSource` (the embedded
default: a folder laid out like Hub repos, ``DIR/<org>/<name>/``). Every ``HfApi`` is made with
``library_name="k2v-hub"`` so Hub-side logs see the plugin. ``huggingface_hub`` retries downloads, pagination and
uploads itself; :func:`with_retries` covers the calls it does not (repo info, create repo, commit).
Tokens are passed through, never logged or stored.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from . import __version__
from .errors import HubError
from .utils import logger

__all__ = [
    "LIBRARY_NAME",
    "get_api",
    "with_retries",
    "split_revision",
    "RepoRef",
    "RepoSource",
    "HubSource",
    "LocalSource",
    "download_repo",
    "upload_folder",
    "commit_files",
]

LIBRARY_NAME = "k2v-hub"
MODEL_FILES = ["config.json", "preprocessor_config.json", "*.safetensors", "README.md"]
PICKLE_FILES = ["pytorch_model.bin"]
RETRY_STATUSES = {429, 500, 502, 503, 504}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def get_api(token: str | None = None, endpoint: str | None = None) -> HfApi:
    """An ``HfApi`` that identifies k2v-hub in its user agent."""
    return HfApi(endpoint=endpoint, token=token, library_name=LIBRARY_NAME, library_version=__version__)


def validate_repo_id(repo_id: str, what: str = "repo id") -> str:
    """Check ``repo_id`` looks like ``name`` or ``org/name``; raise HubError saying so otherwise."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise HubError(f"{repo_id!r} is not a valid {what}.", "Use the form ORG/NAME.")
    return repo_id


def split_revision(spec: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; no ``@`` -> ``(spec, None)``."""
    if "@" in spec and not Path(spec).exists():
        repo, rev = spec.rsplit("@", 1)
        return repo, rev or None
    return spec, None


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError)):
        return False
    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        return status in RETRY_STATUSES
    name = type(exc).__name__
    return any(s in name for s in ("ConnectError", "ReadError", "RemoteProtocolError", "Timeout", "ConnectionError",
                                   "NetworkError", "WriteError"))


def with_retries(fn, *args, retries: int = 6, base_delay: float = 0.5, max_delay: float = 8.0, **kwargs):
    """Call ``fn`` and retry on 429/5xx and dropped connections with jittered exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - filtered by _retryable
            if attempt == retries or not _retryable(exc):
                raise
            delay = min(max_delay, base_delay * 2**attempt) * (0.5 + random.random() / 2)
            logger.info("Retrying %s after %s (attempt %d/%d)", getattr(fn, "__name__", "call"),
                        type(exc).__name__, attempt + 1, retries)
            time.sleep(delay)


def hub_error(exc: Exception, repo_id: str, repo_type: str = "model") -> HubError:
    """Turn a huggingface_hub exception into a one-line HubError that says what to do."""
    if isinstance(exc, GatedRepoError):
        return HubError(f"{repo_type} {repo_id} is gated.", "Accept its conditions on the Hub and pass --token.")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"{repo_type} {repo_id} was not found (or it is private).",
                        "Check the id, or pass --token / run `hf auth login` for a private repo.")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"Revision not found in {repo_type} {repo_id}.", "Check --revision.")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return HubError(f"Not authorised for {repo_type} {repo_id} (HTTP {status}).",
                        "Pass --token or run `hf auth login` with a token that can access it.")
    return HubError(f"Hub request for {repo_type} {repo_id} failed: {type(exc).__name__}.",
                    "Check your connection or HF_ENDPOINT and try again.")


@dataclass(frozen=True)
class RepoRef:
    """A model repo at one revision.

    Attributes:
        model_id: ``org/name``.
        revision: the commit sha (40 hex) the row refers to.
        card_data: the card's YAML metadata (``datasets``, ``tags``...), if read.
        downloads: download count from the Hub (or the local zoo's metadata file).
        likes: like count.
    """

    model_id: str
    revision: str
    card_data: dict = field(default_factory=dict, compare=False, hash=False)
    downloads: int = 0
    likes: int = 0

    @property
    def url(self) -> str:
        """The model page."""
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/{self.model_id}"


class RepoSource:
    """Where model repos come from: ``list_models(org)`` and ``snapshot(ref)`` (a local folder)."""

    kind = "abstract"

    def list_models(self, org: str, *, limit: int | None = None) -> list[RepoRef]:  # pragma: no cover
        raise NotImplementedError

    def snapshot(self, ref: RepoRef, *, allow_pickle: bool = False) -> Path:  # pragma: no cover
        raise NotImplementedError


class HubSource(RepoSource):
    """Model repos on a Hub endpoint, through ``HfApi`` and ``snapshot_download``."""

    kind = "hub"

    def __init__(self, token: str | None = None, endpoint: str | None = None):
        self.token = token
        self.api = get_api(token, endpoint)

    def list_models(self, org, *, limit=None):
        """The org's image-classification models (``list_models(author=org, pipeline_tag=...)``)."""
        validate_repo_id(org, "organisation name")
        try:
            infos = with_retries(lambda: list(self.api.list_models(author=org, pipeline_tag="image-classification",
                                                                   limit=limit, full=True, cardData=True)))
        except HfHubHTTPError as exc:
            raise hub_error(exc, org, "organisation") from None
        refs = []
        for info in infos:
            card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
            sha = info.sha
            if not sha:
                sha = with_retries(self.api.model_info, info.id).sha
            refs.append(RepoRef(info.id, sha, card, int(info.downloads or 0), int(info.likes or 0)))
        return sorted(refs, key=lambda r: r.model_id)

    def model_ref(self, model_id: str, revision: str | None = None) -> RepoRef:
        """One model's current revision and metadata."""
        validate_repo_id(model_id, "model id")
        try:
            info = with_retries(self.api.model_info, model_id, revision=revision)
        except HfHubHTTPError as exc:
            raise hub_error(exc, model_id) from None
        card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
        return RepoRef(info.id, info.sha, card, int(info.downloads or 0), int(info.likes or 0))

    def snapshot(self, ref, *, allow_pickle=False):
        """Download only config, preprocessor config, safetensors weights and card (pickle only if allowed)."""
        patterns = MODEL_FILES + (PICKLE_FILES if allow_pickle else [])
        try:
            return Path(snapshot_download(ref.model_id, revision=ref.revision, allow_patterns=patterns,
                                          token=self.token, library_name=LIBRARY_NAME,
                                          library_version=__version__))
        except HfHubHTTPError as exc:
            raise hub_error(exc, ref.model_id) from None


def folder_revision(path: Path) -> str:
    """A 40-hex revision for a local repo folder: sha1 over its files' names and sha256 contents."""
    h = hashlib.sha1()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def read_card_metadata(readme: Path) -> dict:
    """The YAML front matter of a README.md (``{}`` if none or unreadable)."""
    if not readme.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme).data.to_dict()
    except Exception:  # noqa: BLE001 - a broken card is not fatal
        return {}


class LocalSource(RepoSource):
    """The embedded default: repos in ``root/<org>/<name>/``, no account, no network.

    Popularity comes from ``root/popularity.json`` when the offline zoo wrote one.
    """

    kind = "local"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise HubError(f"Zoo folder {self.root} does not exist.", "Build one with `k2v-hub zoo build --out DIR`.")
        pop = self.root / "popularity.json"
        self._popularity = json.loads(pop.read_text()) if pop.is_file() else {}

    def list_models(self, org, *, limit=None):
        """Folders under ``root/org`` whose card says ``pipeline_tag: image-classification`` (or with id2label)."""
        validate_repo_id(org, "organisation name")
        org_dir = self.root / org
        if not org_dir.is_dir():
            raise HubError(f"No organisation {org!r} in {self.root}.",
                           f"Available: {', '.join(sorted(p.name for p in self.root.iterdir() if p.is_dir()))}.")
        refs = []
        for repo in sorted(p for p in org_dir.iterdir() if p.is_dir()):
            card = read_card_metadata(repo / "README.md")
            tag = card.get("pipeline_tag")
            if tag is None and (repo / "config.json").is_file():
                try:
                    tag = "image-classification" if json.loads((repo / "config.json").read_text()).get("id2label") else None
                except json.JSONDecodeError:
                    tag = None
            if tag != "image-classification":
                continue
            model_id = f"{org}/{repo.name}"
            pop = self._popularity.get(model_id, {})
            refs.append(RepoRef(model_id, folder_revision(repo), card, int(pop.get("downloads", 0)),
                                int(pop.get("likes", 0))))
            if limit and len(refs) >= limit:
                break
        return refs

    def model_ref(self, model_id: str, revision: str | None = None) -> RepoRef:
        """One local model's revision and metadata."""
        validate_repo_id(model_id, "model id")
        path = self.root / model_id
        if not path.is_dir():
            raise HubError(f"Model {model_id} not found in {self.root}.")
        pop = self._popularity.get(model_id, {})
        return RepoRef(model_id, folder_revision(path), read_card_metadata(path / "README.md"),
                       int(pop.get("downloads", 0)), int(pop.get("likes", 0)))

    def snapshot(self, ref, *, allow_pickle=False):
        """The repo folder itself."""
        return self.root / ref.model_id


def download_repo(repo_id: str, *, repo_type: str = "dataset", revision: str | None = None,
                  token: str | None = None, allow_patterns=None) -> Path:
    """``snapshot_download`` with the k2v-hub user agent and one-line errors; returns the local folder."""
    validate_repo_id(repo_id, f"{repo_type} id")
    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, token=token,
                                      allow_patterns=allow_patterns, library_name=LIBRARY_NAME,
                                      library_version=__version__))
    except HfHubHTTPError as exc:
        raise hub_error(exc, repo_id, repo_type) from None


def upload_folder(folder: str | Path, repo_id: str, *, repo_type: str = "dataset", token: str | None = None,
                  private: bool | None = None, commit_message: str = "Upload with k2v-hub",
                  create_pr: bool = False, allow_patterns=None, delete_patterns=None) -> str:
    """Create the repo if needed and upload ``folder`` in one commit; return the commit URL."""
    validate_repo_id(repo_id, f"{repo_type} id")
    api = get_api(token)
    try:
        with_retries(api.create_repo, repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = with_retries(api.upload_folder, folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                            commit_message=commit_message, create_pr=create_pr, allow_patterns=allow_patterns,
                            delete_patterns=delete_patterns)
    except HfHubHTTPError as exc:
        raise hub_error(exc, repo_id, repo_type) from None
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))


def commit_files(repo_id: str, files: dict[str, bytes], *, repo_type: str = "model", token: str | None = None,
                 commit_message: str, create_pr: bool = False, revision: str | None = None) -> str:
    """Add or replace several files in one commit (``create_commit``); return the commit or PR URL."""
    from huggingface_hub import CommitOperationAdd

    validate_repo_id(repo_id, f"{repo_type} id")
    api = get_api(token)
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in files.items()]
    try:
        info = with_retries(api.create_commit, repo_id, ops, repo_type=repo_type, commit_message=commit_message,
                            create_pr=create_pr, revision=revision)
    except HfHubHTTPError as exc:
        raise hub_error(exc, repo_id, repo_type) from None
    return str(info.pr_url or info.commit_url)


def read_text_file(repo_id: str, filename: str, *, repo_type: str = "model", revision: str | None = None,
                   token: str | None = None) -> str | None:
    """One small text file from a repo, or ``None`` if the repo has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision, token=token,
                               library_name=LIBRARY_NAME, library_version=__version__)
    except EntryNotFoundError:
        return None
    except HfHubHTTPError as exc:
        raise hub_error(exc, repo_id, repo_type) from None
    return Path(path).read_text(encoding="utf-8")
