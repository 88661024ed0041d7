"""Uploads to the web app (`k2v_hub.uploads`): a good zip or folder becomes an image folder; every bad one is a
one-line `DatasetError` that says what to do, and nothing is written outside the destination folder."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from k2v_hub.errors import DatasetError
from k2v_hub.uploads import UploadLimits, gather_folder, safe_relative_path, unpack_zip


def png(seed: int = 0, size=(8, 8)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels: Pillow's decompression-bomb check reads only this header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IEND", b"")


GOOD = {"ant/1.png": png(1), "ant/2.png": png(2), "bee/1.png": png(3), "bee/2.png": png(4)}


def make_zip(path: Path, members: dict, method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, b"x")
            else:
                zf.writestr(name, data)
    return path


def refused(tmp_path: Path, members: dict, match: str, limits=UploadLimits()) -> str:
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match=match) as info:
        unpack_zip(make_zip(tmp_path / "upload.zip", members), dest, limits)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400 and info.value.hint, message
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents and p.name != "upload.zip"]
    assert outside == []  # nothing escaped the destination
    return message


def test_a_zip_of_class_folders_unpacks_to_them(tmp_path):
    root = unpack_zip(make_zip(tmp_path / "u.zip", GOOD), tmp_path / "dest")
    assert root == tmp_path / "dest"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == sorted(GOOD)


def test_one_wrapping_folder_is_looked_through_and_clutter_is_skipped(tmp_path):
    members = {f"my data/{k}": v for k, v in GOOD.items()}
    members.update({"__MACOSX/my data/ant/._1.png": b"apple double", "my data/.DS_Store": b"x",
                    "my data/ant/.hidden.png": b"x", "my data/README.txt": b"notes"})
    root = unpack_zip(make_zip(tmp_path / "u.zip", members), tmp_path / "dest")
    assert root.name == "my data"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == sorted(GOOD)


def test_not_a_zip(tmp_path):
    (tmp_path / "u.zip").write_bytes(b"PK but not really")
    with pytest.raises(DatasetError, match="not a zip file"):
        unpack_zip(tmp_path / "u.zip", tmp_path / "dest")


def test_empty_zip(tmp_path):
    refused(tmp_path, {}, "The zip is empty")


def test_no_images(tmp_path):
    refused(tmp_path, {"ant/notes.txt": b"x", "bee/notes.txt": b"y"}, "holds no images")


def test_no_class_folders(tmp_path):
    refused(tmp_path, {"1.png": png(1), "2.png": png(2)}, "No class folders: 1.png, 2.png sit at the top")


def test_one_class(tmp_path):
    refused(tmp_path, {"ant/1.png": png(1), "ant/2.png": png(2)}, "one class folder \\('ant'\\)")


def test_images_nested_below_their_class_folder(tmp_path):
    refused(tmp_path, {**GOOD, "bee/more/3.png": png(5)}, "directly in their class folder: bee/more/3.png")


def test_corrupt_image_files(tmp_path):
    members = {**GOOD, "ant/3.png": b"not an image at all", "bee/3.jpg": png(6)[:20]}
    refused(tmp_path, members, "2 files are not a readable image: ant/3.png, bee/3.jpg")


def test_image_decompression_bomb(tmp_path):
    refused(tmp_path, {**GOOD, "bee/huge.png": png_header_only(40_000, 40_000)},
            "bee/huge.png is too large to decode safely")


def test_zip_decompression_bomb(tmp_path):
    refused(tmp_path, {**GOOD, "ant/zeros.png": b"\0" * (8 * 2**20)}, "ant/zeros.png unpacks to 8 MB from .*bomb")


@pytest.mark.parametrize("name", ["../evil/1.png", "ant/../../evil.png", "/etc/evil.png", "C:/evil.png",
                                  "..\\evil\\1.png"])
def test_paths_that_leave_the_folder(tmp_path, name):
    refused(tmp_path, {**GOOD, name: png(7)}, "unsafe path")
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path / "evil").exists()


def test_symlink_entry(tmp_path):
    link = zipfile.ZipInfo("ant/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    refused(tmp_path, {**GOOD, "ant/link.png": link}, "symbolic link \\(ant/link.png\\)")


def test_encrypted_entry(tmp_path):
    data = bytearray(make_zip(tmp_path / "u.zip", {**GOOD, "ant/secret.png": png(9)}).read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last entry's central-directory record: set "encrypted"
    struct.pack_into("<H", data, central + 8, struct.unpack_from("<H", data, central + 8)[0] | 0x1)
    (tmp_path / "u.zip").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="ant/secret.png is encrypted"):
        unpack_zip(tmp_path / "u.zip", tmp_path / "dest")


def test_over_the_size_limits(tmp_path):
    limits = UploadLimits(max_upload_bytes=200)
    refused(tmp_path, GOOD, "over the 200 bytes limit", limits)
    refused(tmp_path, GOOD, "4 entries, over the limit of 3", UploadLimits(max_members=3))
    refused(tmp_path, GOOD, "unpacks to .* over the", UploadLimits(max_unpacked_bytes=100))


def test_headers_that_lie_about_the_size(tmp_path):
    data = bytearray(make_zip(tmp_path / "u.zip", {**GOOD, "ant/3.png": png(8, (64, 64))},
                              zipfile.ZIP_STORED).read_bytes())
    central = data.rfind(b"PK\x01\x02")  # the last entry's central-directory record: claim 10 bytes
    struct.pack_into("<I", data, central + 24, 10)
    (tmp_path / "u.zip").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="damaged at ant/3.png"):
        unpack_zip(tmp_path / "u.zip", tmp_path / "dest")


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_members"):
        UploadLimits(max_members=0)


def test_safe_relative_path():
    assert safe_relative_path("./a//b/./c.png").as_posix() == "a/b/c.png"
    for bad in ("../x", "a/../../x", "/x", "\\\\server\\x", "D:x.png"):
        with pytest.raises(DatasetError, match="unsafe path"):
            safe_relative_path(bad)


def write_files(folder: Path, members: dict) -> list[tuple[Path, str]]:
    files = []
    for i, (name, data) in enumerate(members.items()):
        stored = folder / f"{i}-{Path(name).name}"  # a folder upload's files arrive flat, under other names
        stored.write_bytes(data)
        files.append((stored, name))
    return files


def test_a_folder_upload_keeps_its_class_folders(tmp_path):
    (tmp_path / "in").mkdir()
    root = gather_folder(write_files(tmp_path / "in", {f"pets/{k}": v for k, v in GOOD.items()}), tmp_path / "dest")
    assert root == tmp_path / "dest" / "pets"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == sorted(GOOD)


@pytest.mark.parametrize("members, limits, match", [
    ({}, UploadLimits(), "The folder upload is empty"),
    ({"1.png": png(1), "2.png": png(2)}, UploadLimits(), "No class folders"),
    ({**GOOD, "../x.png": png(1)}, UploadLimits(), "unsafe path"),
    (GOOD, UploadLimits(max_members=2), "4 files, over the limit of 2"),
    (GOOD, UploadLimits(max_upload_bytes=100), "over the 100 bytes limit"),
    ({**GOOD, "bee/3.png": b"junk"}, UploadLimits(), "1 file is not a readable image: bee/3.png"),
])
def test_bad_folder_uploads(tmp_path, members, limits, match):
    (tmp_path / "in").mkdir()
    with pytest.raises(DatasetError, match=match):
        gather_folder(write_files(tmp_path / "in", members), tmp_path / "dest", limits)
    assert not (tmp_path / "x.png").exists()
