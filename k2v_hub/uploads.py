"""What a person hands the web app, unpacked into an image folder (``<class>/<image>``) with strict checks.

A zip of class folders (:func:`unpack_zip`) or the files of a folder upload (:func:`gather_folder`) are written
into a folder the caller owns (the app: a private temporary folder, removed after the answer). Refused, each with
a :class:`~k2v_hub.errors.DatasetError` that says what to do (see ``tests/test_uploads.py``):

- **Archives.** Not a zip, a damaged zip, over :attr:`UploadLimits.max_upload_bytes`, more than ``max_members``
  entries, encrypted entries, symlinks, absolute or ``..`` paths, images declaring more than ``max_unpacked_bytes``
  together (``zipfile`` unpacks no more than an entry declares: a zip whose headers lie fails its CRC check), and
  an entry over 1 MiB that unpacks to more than ``max_ratio`` times its packed size (a decompression bomb).
- **Layout.** An empty upload, no images, images outside class folders, images below a class folder's own level,
  a single class. One folder wrapping the class folders (``my_data/cat/1.png``) is looked through.
- **Images.** Files whose header cannot be read as an image, and images over Pillow's decompression-bomb limit.

Only image files (:data:`IMAGE_SUFFIXES`) are unpacked; other files, hidden files and ``__MACOSX`` are skipped.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from .errors import DatasetError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_CHUNK = 1 << 20
_LAYOUT_HINT = "Lay images out as <class name>/<image>.png, one folder per class, at least two classes."


@dataclass(frozen=True)
class UploadLimits:
    """How much one upload may hold.

    Attributes:
        max_upload_bytes: the zip file, or the folder upload's files together.
        max_members: entries of a zip, files of a folder upload.
        max_unpacked_bytes: what a zip unpacks to.
        max_ratio: unpacked / packed size of one zip entry over 1 MiB.
    """

    max_upload_bytes: int = 200 * 2**20
    max_members: int = 20_000
    max_unpacked_bytes: int = 2 * 2**30
    max_ratio: int = 200

    def __post_init__(self):
        for name in ("max_upload_bytes", "max_members", "max_unpacked_bytes", "max_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"UploadLimits.{name} must be >= 1, got {getattr(self, name)}.")


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n} bytes"


def safe_relative_path(name: str) -> PurePosixPath:
    """``name`` (a zip entry or a folder upload's relative path) as a relative path that stays inside its folder.

    Raises:
        DatasetError: an absolute path, a drive letter or a ``..`` part.
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        raise DatasetError(f"The upload holds an unsafe path ({one_line(name, 80)}): absolute or with '..'.",
                           "Zip the class folders themselves, with relative paths.")
    return PurePosixPath(*[p for p in path.parts if p not in ("", ".")])


def _wanted(path: PurePosixPath) -> bool:
    """An image file that is not hidden and not macOS metadata."""
    return (bool(path.parts) and path.suffix.lower() in IMAGE_SUFFIXES
            and not any(p.startswith(".") or p == "__MACOSX" for p in path.parts))


def unpack_zip(zip_path: str | Path, dest: str | Path, limits: UploadLimits = UploadLimits()) -> Path:
    """Unpack the images of a zip of class folders into ``dest``; return the folder holding the class folders.

    Raises:
        DatasetError: see the module docstring.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zip_path.stat().st_size > limits.max_upload_bytes:
        raise DatasetError(f"The upload is {_mb(zip_path.stat().st_size)}, over the {_mb(limits.max_upload_bytes)} "
                           "limit.", "Upload fewer or smaller images (32 per class are enough).")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        raise DatasetError("The upload is not a zip file.", "Upload a .zip of class folders.") from None
    with archive:
        members = archive.infolist()
        if not members:
            raise DatasetError("The zip is empty.", _LAYOUT_HINT)
        if len(members) > limits.max_members:
            raise DatasetError(f"The zip has {len(members)} entries, over the limit of {limits.max_members}.",
                               "Upload fewer images (32 per class are enough).")
        chosen = [(info, safe_relative_path(info.filename)) for info in members]
        for info, _ in chosen:
            _check_member(info, limits)
        chosen = [(info, path) for info, path in chosen if not info.is_dir() and _wanted(path)]
        declared = sum(info.file_size for info, _ in chosen)
        if declared > limits.max_unpacked_bytes:
            raise DatasetError(f"The zip unpacks to {_mb(declared)}, over the {_mb(limits.max_unpacked_bytes)} "
                               "limit.", "Upload fewer or smaller images.")
        for info, path in chosen:
            target = dest.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:  # zipfile stops at the declared size: a zip whose headers lie fails its CRC check instead
                with archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise DatasetError(one_line(f"The zip is damaged at {path} ({type(exc).__name__}: {exc})."),
                                   "Zip the folders again.") from None
    return class_root(dest)


def _check_member(info: zipfile.ZipInfo, limits: UploadLimits) -> None:
    name = one_line(info.filename, 80)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"The zip holds a symbolic link ({name}).", "Zip the image files themselves.")
    if info.flag_bits & 0x1:
        raise DatasetError(f"The zip entry {name} is encrypted.", "Zip the folders without a password.")
    if info.file_size > _CHUNK and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise DatasetError(f"The zip entry {name} unpacks to {_mb(info.file_size)} from "
                           f"{_mb(info.compress_size)}: a decompression bomb.", "Upload ordinary image files.")


def gather_folder(files: list[tuple[str | Path, str]], dest: str | Path,
                  limits: UploadLimits = UploadLimits()) -> Path:
    """Copy a folder upload's image files, given as ``(stored file, relative path)``, into ``dest``; return the
    folder holding the class folders.

    Raises:
        DatasetError: see the module docstring.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not files:
        raise DatasetError("The folder upload is empty.", _LAYOUT_HINT)
    if len(files) > limits.max_members:
        raise DatasetError(f"The folder upload has {len(files)} files, over the limit of {limits.max_members}.",
                           "Upload fewer images (32 per class are enough).")
    total = sum(Path(stored).stat().st_size for stored, _ in files)
    if total > limits.max_upload_bytes:
        raise DatasetError(f"The folder upload is {_mb(total)}, over the {_mb(limits.max_upload_bytes)} limit.",
                           "Upload fewer or smaller images (32 per class are enough).")
    for stored, name in files:
        path = safe_relative_path(name)
        if _wanted(path):
            target = dest.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stored, target)
    return class_root(dest)


def class_root(folder: str | Path) -> Path:
    """The folder holding the class folders of an unpacked upload, its images checked (headers only).

    Raises:
        DatasetError: no images, images outside class folders or nested below them, one class, unreadable images.
    """
    root = Path(folder)
    while True:
        entries = list(root.iterdir()) if root.is_dir() else []
        if len(entries) == 1 and entries[0].is_dir() and all(p.is_dir() for p in entries[0].iterdir()):
            root = entries[0]
        else:
            break
    images = sorted(p for p in root.rglob("*") if p.is_file())
    if not images:
        raise DatasetError(f"The upload holds no images ({', '.join(IMAGE_SUFFIXES)}).", _LAYOUT_HINT)
    loose = [p.name for p in images if p.parent == root]
    if loose:
        raise DatasetError(f"No class folders: {_names(loose)} sit{'s' if len(loose) == 1 else ''} at the top "
                           "of the upload.", _LAYOUT_HINT)
    deep = [p.relative_to(root).as_posix() for p in images if p.parent.parent != root]
    if deep:
        raise DatasetError(f"Images must sit directly in their class folder: {_names(deep)}.", _LAYOUT_HINT)
    classes = sorted({p.parent.name for p in images})
    if len(classes) < 2:
        raise DatasetError(f"The upload has one class folder ({classes[0]!r}).",
                           "Retrieval compares how models separate classes: give at least two class folders.")
    _check_images(root, images)
    return root


def _check_images(root: Path, images: list[Path]) -> None:
    """Every file's header reads as an image within Pillow's decompression-bomb limit."""
    bad = []
    for path in images:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - reading the header is the check
        except Image.DecompressionBombError:
            raise DatasetError(f"{path.relative_to(root).as_posix()} is too large to decode safely "
                               "(a decompression bomb).", "Downscale the image first.") from None
        except Exception:  # noqa: BLE001 - Pillow raises many kinds on non-images
            bad.append(path.relative_to(root).as_posix())
    if bad:
        raise DatasetError(f"{len(bad)} file{'s are' if len(bad) > 1 else ' is'} not a readable image: "
                           f"{_names(bad)}.", "Remove or re-save them.")


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(one_line(n, 60) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
