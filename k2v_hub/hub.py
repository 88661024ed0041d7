"""Every Hub call k2v-hub makes, in one place.

Two sources of model repos share one interface (:class:`RepoSource`): :class:`HubSource` (the real Hub, a
private endpoint through ``HF_ENDPOINT``, or the project's test server) and :class:`LocalSource` (the embedded
default: a folder laid out like Hub repos, ``DIR/<org>/<name>/``). Every ``HfApi`` is made with
``library_name="k2v-hub"`` (and every download passes it) so Hub-side logs see the plugin.

Retries: ``huggingface_hub`` retries only some requests itself (pagination, LFS batch/upload/verify, HEAD 429).
It does not retry ``model_info``/``repo_info``, ``create_repo``, the preupload and commit POSTs, a download GET
answered 5xx or a HEAD whose connection dropped (those surface as ``LocalEntryNotFoundError`` or "Force download
failed"). So every Hub call here goes through :func:`with_retries`, at the smallest step that can be repeated
safely: repo info, one file listing, one file download, one LFS pre-upload, one commit. Retried: HTTP 408/429/5xx,
dropped or refused connections and timeouts (``httpx`` errors, also when wrapped as the cause of a
``LocalEntryNotFoundError``); never 401/403/404, gated repos or offline mode. Backoff is exponential with jitter,
``K2V_HUB_RETRIES`` attempts after the first (default 8) and ``K2V_HUB_RETRY_BASE_DELAY`` seconds first delay
(default 0.5, capped at 8 s). A call that still fails raises :class:`~k2v_hub.errors.HubError` (one line, exit
code 6).

Tokens are passed through, never logged or stored.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, InferenceClient, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

try:  # huggingface_hub >= 2 uses httpx2; older releases httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx

from . import __version__
from .errors import DatasetError, HubError, IndexError_, K2VError, ModelRefused, one_line
from .limits import MAX_CARD_BYTES, MAX_CONFIG_BYTES, MAX_DECLARED_DATA_BYTES, check_file_sizes, read_json_object
from .utils import logger

__all__ = [
    "LIBRARY_NAME",
    "get_api",
    "with_retries",
    "hub_call",
    "split_revision",
    "RepoRef",
    "RepoSource",
    "HubSource",
    "LocalSource",
    "download_repo",
    "upload_folder",
    "commit_files",
    "download_snapshot",
    "download_file",
    "inference_client",
]

LIBRARY_NAME = "k2v-hub"
MODEL_FILES = ["config.json", "preprocessor_config.json", "*.safetensors", "README.md"]
PICKLE_FILES = ["pytorch_model.bin"]
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
DEFAULT_RETRIES = 8
DEFAULT_BASE_DELAY = 0.5
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_NETWORK_ERRORS = (_httpx.TimeoutException, _httpx.NetworkError, _httpx.RemoteProtocolError, ConnectionError,
                   TimeoutError)
_NETWORK_ERROR_NAMES = ("ConnectError", "ReadError", "WriteError", "RemoteProtocolError", "RemoteDisconnected",
                        "ProtocolError", "Timeout", "ConnectionError", "NetworkError", "IncompleteRead")
_rng = random.Random()
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


def dataset_reference(spec: str | Path) -> tuple[Path | None, str | None, str | None]:
    """A dataset named by text: ``(folder, None, None)`` when the path exists, else ``(None, repo_id, revision)``.

    Raises:
        DatasetError: the path is a file, or it neither exists nor is a valid Hub dataset id.
    """
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise DatasetError(f"{path} is a file, not a dataset folder.", "Pass a folder or a Hub dataset id.")
        return path, None, None
    repo_id, rev = split_revision(str(spec))
    try:
        validate_repo_id(repo_id, "dataset id")
    except K2VError:
        raise DatasetError(f"{str(spec)!r} is not a folder and not a valid Hub dataset id.",
                           "Pass an existing folder or ORG/NAME.") from None
    return None, repo_id, rev


def index_reference(spec: str | Path) -> tuple[Path | None, str | None, str | None]:
    """An index named by text: ``(folder, None, None)`` when the path exists, else ``(None, repo_id, revision)``.

    Raises:
        IndexError_: it neither exists nor looks like a Hub dataset id (``ORG/NAME[@revision]``).
    """
    path = Path(spec)
    if path.exists():
        return path, None, None
    repo_id, rev = split_revision(str(spec))
    if "/" not in repo_id or repo_id.startswith((".", "/")):
        raise IndexError_(f"Index {str(spec)!r} is neither a folder nor a Hub dataset id.",
                          "Build one with `k2v-hub index --org ORG --zoo DIR --out INDEX`.")
    return None, repo_id, rev


def _retryable(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a passing fault worth another try: HTTP 408/429/5xx, a dropped or refused connection,
    a timeout, or one of these wrapped by huggingface_hub (``LocalEntryNotFoundError`` / "Force download failed"
    raised *from* it). Never: not found, gated, bad revision, 401/403, offline mode."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, LocalEntryNotFoundError) or (
                isinstance(exc, ValueError) and "Force download failed" in str(exc)):
            exc = exc.__cause__  # retryable only if what it wraps is
            continue
        if isinstance(exc, (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, RemoteEntryNotFoundError,
                            OfflineModeIsEnabled)):
            return False
        if isinstance(exc, HfHubHTTPError):
            response = getattr(exc, "response", None)
            return getattr(response, "status_code", None) in RETRY_STATUSES
        if isinstance(exc, _httpx.HTTPStatusError):
            return exc.response.status_code in RETRY_STATUSES
        if isinstance(exc, _NETWORK_ERRORS):
            return True
        if any(s in type(exc).__name__ for s in _NETWORK_ERROR_NAMES):
            return True
        return False
    return False


def _env_number(name: str, default, cast):
    try:
        return cast(os.environ[name])
    except (KeyError, ValueError):
        return default


def with_retries(fn, *args, retries: int | None = None, base_delay: float | None = None, max_delay: float = 8.0,
                 **kwargs):
    """Call ``fn(*args, **kwargs)``; on a retryable fault (see :func:`_retryable`) try again, at most ``retries``
    more times (``$K2V_HUB_RETRIES``, default 8), after jittered exponential delays starting at ``base_delay``
    seconds (``$K2V_HUB_RETRY_BASE_DELAY``, default 0.5) and capped at ``max_delay``. Other errors, and the last
    fault, are raised as they are."""
    retries = _env_number("K2V_HUB_RETRIES", DEFAULT_RETRIES, int) if retries is None else retries
    base_delay = _env_number("K2V_HUB_RETRY_BASE_DELAY", DEFAULT_BASE_DELAY, float) if base_delay is None \
        else base_delay
    for attempt in range(max(0, retries) + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - filtered by _retryable
            if attempt >= retries or not _retryable(exc):
                raise
            delay = min(max_delay, base_delay * 2**attempt) * (0.5 + _rng.random() / 2)
            logger.info("Retrying %s after %s (attempt %d/%d, %.2f s)", getattr(fn, "__name__", "call"),
                        type(exc).__name__, attempt + 1, retries, delay)
            time.sleep(delay)


def hub_call(fn, *args, what: tuple[str, str], keep: tuple = (), **kwargs):
    """:func:`with_retries`, and any Hub failure left (but those in ``keep``) turned into a one-line
    :class:`HubError` about ``what = (repo_id, repo_type)``."""
    try:
        return with_retries(fn, *args, **kwargs)
    except HubError:
        raise
    except Exception as exc:
        if keep and isinstance(exc, keep):
            raise
        if isinstance(exc, (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled)) or _retryable(exc):
            raise hub_error(exc, *what) from None
        raise


def hub_error(exc: Exception, repo_id: str, repo_type: str = "model") -> HubError:
    """Turn a huggingface_hub exception into a one-line HubError that says what to do."""
    if isinstance(exc, GatedRepoError):
        return HubError(f"{repo_type} {repo_id} is gated.", "Accept its conditions on the Hub and pass --token.")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"{repo_type} {repo_id} was not found (or it is private).",
                        "Check the id, or pass --token / run `hf auth login` for a private repo.")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"Revision not found in {repo_type} {repo_id}.", "Check --revision.")
    if isinstance(exc, RemoteEntryNotFoundError):
        return HubError(f"A file is missing from {repo_type} {repo_id}.", "Check the repo's files and revision.")
    cause = exc
    while isinstance(cause, (LocalEntryNotFoundError, ValueError)) and cause.__cause__ is not None:
        cause = cause.__cause__  # what huggingface_hub wrapped
    if isinstance(cause, OfflineModeIsEnabled) or (isinstance(exc, LocalEntryNotFoundError) and cause is exc):
        return HubError(f"{repo_type} {repo_id} is not in the local cache and the Hub is not reachable "
                        "(HF_HUB_OFFLINE?).", "Unset HF_HUB_OFFLINE or download it once online.")
    if cause is not exc and isinstance(cause, (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError)):
        return hub_error(cause, repo_id, repo_type)
    status = getattr(getattr(cause, "response", None), "status_code", None)
    if status in (401, 403):
        return HubError(f"Not authorised for {repo_type} {repo_id} (HTTP {status}).",
                        "Pass --token or run `hf auth login` with a token that can access it.")
    what = f"HTTP {status}" if status else type(cause).__name__
    if not _retryable(cause):  # a refusal, not a passing fault: say what the Hub said
        said = " ".join(str(getattr(cause, "server_message", "") or "").split())[:300]
        return HubError(f"Hub request for {repo_type} {repo_id} failed ({what}){': ' + said if said else ''}.",
                        "Check the repo id, revision and your rights on it.")
    return HubError(f"Hub request for {repo_type} {repo_id} failed ({what}) after retries.",
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

    def declared_data(self, dataset_id: str) -> tuple[Path, str]:  # pragma: no cover
        """One parquet file of the dataset repo ``dataset_id`` and the revision it was read at."""
        raise NotImplementedError


def pick_data_file(files: dict[str, int], dataset_id: str) -> str:
    """Which parquet file of a dataset repo (``{path: bytes}``) a fingerprint reads: the first of its train split
    (else the first), within :data:`~k2v_hub.limits.MAX_DECLARED_DATA_BYTES`.

    Raises:
        HubError: no parquet file, or the chosen one is over the limit.
    """
    parquet = sorted(p for p in files if p.endswith(".parquet"))
    if not parquet:
        raise HubError(f"Dataset {dataset_id} has no parquet file.", "Its card's data cannot be fingerprinted.")
    name = next((p for p in parquet if "train" in p.rsplit("/", 1)[-1] or "/train" in p), parquet[0])
    if files[name] > MAX_DECLARED_DATA_BYTES:
        raise HubError(f"Dataset {dataset_id}: {name} is {files[name]} bytes "
                       f"(limit {MAX_DECLARED_DATA_BYTES}).", "Its card's data is not fingerprinted.")
    return name


class HubSource(RepoSource):
    """Model repos on a Hub endpoint, through ``HfApi`` and per-file downloads (each retried).

    A model's revision is its *content revision*: the newest commit that changed a file the black box reads
    (``config.json``, ``preprocessor_config.json``, weights), found from the tree's ``lastCommit`` entries. A commit
    that only touches the card or ``k2v/`` (what ``k2v-hub push-card`` writes) leaves it unchanged, so pushing cards
    does not make the next ``k2v-hub index`` run query the whole org again. ``content_revision=False`` uses the
    head commit instead.
    """

    kind = "hub"

    def __init__(self, token: str | None = None, endpoint: str | None = None, *, content_revision: bool = True):
        self.token = token
        self.endpoint = endpoint
        self.content_revision = content_revision
        self.api = get_api(token, endpoint)

    def list_models(self, org, *, limit=None):
        """The org's image-classification models (``list_models(author=org, pipeline_tag=...)``)."""
        validate_repo_id(org, "organisation name")
        infos = hub_call(lambda: list(self.api.list_models(author=org, pipeline_tag="image-classification",
                                                              limit=limit, full=True, cardData=True)),
                          what=(org, "organisation"))
        refs = []
        for info in infos:
            card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
            sha = info.sha
            if not sha:
                sha = hub_call(self.api.model_info, info.id, what=(info.id, "model")).sha
            if self.content_revision:
                sha = self._content_revision(info.id, sha)
            refs.append(RepoRef(info.id, sha, card, int(info.downloads or 0), int(info.likes or 0)))
        return sorted(refs, key=lambda r: r.model_id)

    def _content_revision(self, model_id: str, head: str) -> str:
        """The newest commit, at or before ``head``, that changed a model file (``head`` if unknown)."""
        from huggingface_hub.hf_api import RepoFile

        entries = hub_call(lambda: list(self.api.list_repo_tree(model_id, revision=head, expand=True)),
                            what=(model_id, "model"))
        model_files = [p for p in MODEL_FILES + PICKLE_FILES if p != "README.md"]
        commits = {}
        for e in entries:
            if isinstance(e, RepoFile) and _matches(e.path, model_files):
                if e.last_commit is None:
                    return head
                commits[e.last_commit.oid] = e.last_commit.date
        if not commits:
            return head
        if len(commits) == 1:
            return next(iter(commits))
        newest = max(commits.values())
        if sum(d == newest for d in commits.values()) == 1:
            return max(commits, key=commits.get)
        for commit in hub_call(self.api.list_repo_commits, model_id, revision=head, what=(model_id, "model")):
            if commit.commit_id in commits:  # newest first
                return commit.commit_id
        return head

    def model_ref(self, model_id: str, revision: str | None = None) -> RepoRef:
        """One model's revision (the content revision unless ``revision`` is given) and metadata."""
        validate_repo_id(model_id, "model id")
        info = hub_call(self.api.model_info, model_id, revision=revision, what=(model_id, "model"))
        card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
        sha = info.sha
        if self.content_revision and revision is None:
            sha = self._content_revision(model_id, sha)
        return RepoRef(info.id, sha, card, int(info.downloads or 0), int(info.likes or 0))

    def snapshot(self, ref, *, allow_pickle=False):
        """Download only config, preprocessor config, safetensors weights and card (pickle only if allowed), once
        their sizes in the file listing are within :mod:`k2v_hub.limits` (else ``ModelRefused``, nothing fetched)."""
        patterns = MODEL_FILES + (PICKLE_FILES if allow_pickle else [])
        return download_repo(ref.model_id, repo_type="model", revision=ref.revision, token=self.token,
                             allow_patterns=patterns, endpoint=self.endpoint,
                             check_sizes=lambda sizes: check_file_sizes(sizes, ref.model_id))

    def declared_data(self, dataset_id):
        """The first train parquet file of a Hub dataset repo (:func:`pick_data_file`), downloaded at its head
        commit; returns ``(path, commit)``."""
        from huggingface_hub.hf_api import RepoFile

        validate_repo_id(dataset_id, "dataset id")
        what = (dataset_id, "dataset")
        sha = hub_call(self.api.repo_info, dataset_id, repo_type="dataset", what=what).sha
        tree = hub_call(lambda: list(self.api.list_repo_tree(dataset_id, repo_type="dataset", revision=sha,
                                                              recursive=True)), what=what)
        name = pick_data_file({f.path: f.size or 0 for f in tree if isinstance(f, RepoFile)}, dataset_id)
        path = hub_call(hf_hub_download, dataset_id, name, repo_type="dataset", revision=sha, token=self.token,
                        endpoint=self.endpoint, library_name=LIBRARY_NAME, library_version=__version__, what=what)
        return Path(path), sha


def folder_revision(path: Path) -> str:
    """A 40-hex revision for a local repo folder: sha1 over its files' names and sha256 contents."""
    h = hashlib.sha1()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and ".git" not in p.parts):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(_file_sha256(f))
    return h.hexdigest()


def _file_sha256(path: Path, chunk: int = 2**20) -> bytes:
    """sha256 of a file read in chunks: a repo file's size never sizes a read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.digest()


def read_card_metadata(readme: Path) -> dict:
    """The YAML front matter of a README.md (``{}`` if none, unreadable or over ``MAX_CARD_BYTES``)."""
    if not readme.is_file() or readme.stat().st_size > MAX_CARD_BYTES:
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
            try:
                ref = self._listed(org, repo)
            except OSError as exc:  # an unreadable folder must not stop the org
                logger.warning("Left out %s/%s: %s", org, repo.name, one_line(exc))
                continue
            if ref is not None:
                refs.append(ref)
            if limit and len(refs) >= limit:
                break
        return refs

    def _listed(self, org: str, repo: Path) -> RepoRef | None:
        """A folder's ref if its card says image classification (or its config has ``id2label``), else ``None``."""
        card = read_card_metadata(repo / "README.md")
        tag = card.get("pipeline_tag")
        if tag is None and (repo / "config.json").is_file():
            try:
                config = read_json_object(repo / "config.json", "config.json", MAX_CONFIG_BYTES)
                tag = "image-classification" if config.get("id2label") else None
            except ModelRefused:
                tag = None
        if tag != "image-classification":
            return None
        model_id = f"{org}/{repo.name}"
        pop = self._popularity.get(model_id, {})
        return RepoRef(model_id, folder_revision(repo), card, int(pop.get("downloads", 0)), int(pop.get("likes", 0)))

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

    def declared_data(self, dataset_id):
        """The first train parquet file of the local dataset repo ``root/datasets/<dataset_id>/`` (laid out as on
        the Hub); returns ``(path, folder revision)``."""
        validate_repo_id(dataset_id, "dataset id")
        folder = self.root / "datasets" / dataset_id
        if not folder.is_dir():
            raise HubError(f"Dataset {dataset_id} not found in {self.root / 'datasets'}.",
                           "Its card's data cannot be fingerprinted.")
        files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*.parquet")}
        return folder / pick_data_file(files, dataset_id), folder_revision(folder)


def _matches(path: str, patterns) -> bool:
    if patterns is None:
        return True
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return any(fnmatch.fnmatch(path, p if not p.endswith("/") else p + "*") for p in patterns)


def download_repo(repo_id: str, *, repo_type: str = "dataset", revision: str | None = None,
                  token: str | None = None, allow_patterns=None, endpoint: str | None = None,
                  check_sizes=None) -> Path:
    """Download a repo's files (those matching ``allow_patterns``) into the Hub cache; return the snapshot folder.

    ``check_sizes``, if given, is called with ``{path: bytes}`` of those files before any is downloaded (and may
    raise to refuse the repo).

    Done in retried steps rather than one ``snapshot_download``: resolve the revision to a commit (``repo_info``),
    list the files at that commit, download each file (``hf_hub_download`` at the commit: cached files cost no
    request), then, for a branch or tag, one ``snapshot_download`` that only records the ref for offline use. A
    fault costs one step, not the whole download. Offline (``HF_HUB_OFFLINE=1``) the cached snapshot is returned.
    """
    from huggingface_hub import constants
    from huggingface_hub.hf_api import RepoFile

    validate_repo_id(repo_id, f"{repo_type} id")
    common = dict(repo_type=repo_type, token=token, library_name=LIBRARY_NAME, library_version=__version__)
    if constants.HF_HUB_OFFLINE:
        return Path(hub_call(snapshot_download, repo_id, revision=revision, allow_patterns=allow_patterns,
                              what=(repo_id, repo_type), **common))
    api = get_api(token, endpoint)
    sha = revision if revision and _COMMIT_SHA.match(revision) else None
    if sha is None:
        sha = hub_call(api.repo_info, repo_id, repo_type=repo_type, revision=revision,
                        what=(repo_id, repo_type)).sha
    tree = hub_call(lambda: list(api.list_repo_tree(repo_id, repo_type=repo_type, revision=sha, recursive=True)),
                     what=(repo_id, repo_type))
    files = {f.path: f.size or 0 for f in tree if isinstance(f, RepoFile)}
    wanted = {name: size for name, size in files.items() if _matches(name, allow_patterns)}
    if check_sizes is not None:
        check_sizes(wanted)
    first = None
    for name in sorted(wanted):
        path = Path(hub_call(hf_hub_download, repo_id, name, revision=sha, endpoint=endpoint,
                             what=(repo_id, repo_type), **common))
        first = first or (name, path)
    if first is not None and revision == sha:  # pinned to a commit: no ref to record, the folder is known
        name, path = first
        return path.parents[len(Path(name).parts) - 1]
    # Everything is cached now: this records refs/<revision> (for offline use) and returns the snapshot folder.
    return Path(hub_call(snapshot_download, repo_id, revision=revision, allow_patterns=allow_patterns,
                          endpoint=endpoint, max_workers=1, what=(repo_id, repo_type), **common))


def upload_folder(folder: str | Path, repo_id: str, *, repo_type: str = "dataset", token: str | None = None,
                  private: bool | None = None, commit_message: str = "Upload with k2v-hub",
                  create_pr: bool = False, allow_patterns=None, delete_patterns=None,
                  revision: str | None = None) -> str:
    """Create the repo if needed and upload ``folder`` (files matching ``allow_patterns``) in one commit; files in
    the repo matching ``delete_patterns`` and absent from the folder are deleted in the same commit. Returns the
    commit (or pull request) URL."""
    validate_repo_id(repo_id, f"{repo_type} id")
    folder = Path(folder)
    api = get_api(token)
    hub_call(api.create_repo, repo_id, repo_type=repo_type, private=private, exist_ok=True,
              what=(repo_id, repo_type))
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if _matches(rel, allow_patterns):
            files[rel] = path
    deletes = []
    if delete_patterns:
        remote = hub_call(api.list_repo_files, repo_id, repo_type=repo_type, revision=revision,
                           what=(repo_id, repo_type))
        deletes = [f for f in remote if f not in files and f != ".gitattributes" and _matches(f, delete_patterns)]
    return commit_files(repo_id, files, repo_type=repo_type, token=token, commit_message=commit_message,
                        create_pr=create_pr, revision=revision, delete=deletes)


def commit_files(repo_id: str, files: dict, *, repo_type: str = "model", token: str | None = None,
                 commit_message: str, create_pr: bool = False, revision: str | None = None,
                 delete=()) -> str:
    """Add or replace several files (``{path_in_repo: bytes or local Path}``) in one commit; return the commit or
    pull request URL.

    Two retried steps: pre-upload (upload modes, then LFS objects; finished uploads are not redone) and the commit
    itself (with its README metadata check). ``create_pr`` opens ``refs/pr/N`` and leaves the branch unchanged.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    validate_repo_id(repo_id, f"{repo_type} id")
    api = get_api(token)
    adds = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(data) if isinstance(data, Path) else data)
            for name, data in files.items()]
    ops = adds + [CommitOperationDelete(path_in_repo=name) for name in delete]
    if adds:
        hub_call(api.preupload_lfs_files, repo_id, adds, repo_type=repo_type, revision=revision,
                  create_pr=create_pr, what=(repo_id, repo_type))
    info = hub_call(api.create_commit, repo_id, ops, repo_type=repo_type, commit_message=commit_message,
                     create_pr=create_pr, revision=revision, what=(repo_id, repo_type))
    return str(info.pr_url or info.commit_url)


def read_text_file(repo_id: str, filename: str, *, repo_type: str = "model", revision: str | None = None,
                   token: str | None = None) -> str | None:
    """One small text file from a repo, or ``None`` if the repo has no such file."""
    validate_repo_id(repo_id, f"{repo_type} id")
    try:
        path = hub_call(hf_hub_download, repo_id, filename, repo_type=repo_type, revision=revision, token=token,
                         library_name=LIBRARY_NAME, library_version=__version__, what=(repo_id, repo_type),
                         keep=(RemoteEntryNotFoundError,))
    except RemoteEntryNotFoundError:
        return None
    return Path(path).read_text(encoding="utf-8")


def download_snapshot(repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
                      allow_patterns=None) -> Path:
    """One ``snapshot_download`` of a model repo (the files matching ``allow_patterns``), retried as a whole by
    :func:`with_retries` and identified as k2v-hub; returns the snapshot folder (``snapshots/<commit sha>``).

    Failures are raised as huggingface_hub raised them, not mapped to :class:`HubError`: the caller (the feature
    backbone loader) words its own error.
    """
    return Path(with_retries(snapshot_download, repo_id, revision=revision, token=token,
                             allow_patterns=allow_patterns, library_name=LIBRARY_NAME, library_version=__version__))


def download_file(repo_id: str, filename: str, *, revision: str | None = None, cache_dir=None,
                  force_download: bool = False, local_files_only: bool = False, token: str | bool | None = None
                  ) -> Path:
    """One file of a model repo through ``hf_hub_download``, identified as k2v-hub (the retriever's weights).

    Failures are raised as huggingface_hub raised them: ``from_pretrained`` callers expect its errors.
    """
    return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                force_download=force_download, local_files_only=local_files_only, token=token,
                                library_name=LIBRARY_NAME, library_version=__version__))


def inference_client(model: str, token: str | None = None) -> InferenceClient:
    """A client for a model's Inference endpoint (a Hub id or a URL): the black box that never downloads weights."""
    return InferenceClient(model=model, token=token)

