"""What k2v-hub writes gets the usual file modes, the umask respected: files 0o666 and folders 0o777 minus the
umask, as `open` and `mkdir` give them, although the package writes under temporary names and renames into place
(``mkstemp`` and `safetensors` make 0600 files, ``mkdtemp`` 0700 folders), so other users can read a saved
retriever, an index, its journal and card, the knowledge cache and a converted backbone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from k2v_hub.features import convert_mobilenet_v2
from k2v_hub.hub import LocalSource
from k2v_hub.index import CARD_FILE, DATA_FILE, META_FILE, ROWS_DIR, build_index
from k2v_hub.pipeline import make_indexer, save_retriever
from k2v_hub.retriever import Retriever
from k2v_hub.zoo.data import ZooData

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: faster on one intra-op thread


@pytest.fixture(params=[0o022, 0o002, 0o027], ids=lambda m: f"umask-{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, str]:
    """``{relative path: octal mode}`` of everything under ``root`` (``root`` itself is ``.``)."""
    return {str(p.relative_to(root)): f"{stat.S_IMODE(p.stat().st_mode):03o}" for p in [root, *root.rglob("*")]}


def expected(root: Path, umask: int) -> dict[str, str]:
    return {str(p.relative_to(root)): f"{(0o777 if p.is_dir() else 0o666) & ~umask:03o}"
            for p in [root, *root.rglob("*")]}


def test_saved_retriever_has_the_usual_modes(tiny_retriever, tmp_path, umask):
    out = tmp_path / "retriever"
    save_retriever(Retriever.from_pretrained(tiny_retriever), out)
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert modes(out) == expected(out, umask)


def test_converted_backbone_folder_has_the_usual_modes(tmp_path, umask):
    out = convert_mobilenet_v2(tmp_path / "backbone")  # written in a mkdtemp folder, renamed into place
    assert (out / "model.safetensors").is_file()
    assert modes(out) == expected(out, umask)


def test_index_journal_card_and_knowledge_cache_have_the_usual_modes(tiny_zoo, tiny_retriever, tmp_path):
    old = os.umask(0o002)  # not the common 0o022: the group-write bit shows the umask is read, not assumed
    try:
        indexer = make_indexer(Retriever.from_pretrained(tiny_retriever), retriever_id=str(tiny_retriever),
                               cache_dir=tmp_path / "knowledge")
        build_index(LocalSource(tiny_zoo), ZooData(tiny_zoo).org, tmp_path / "index", indexer, limit=2,
                    show_progress=False)
    finally:
        os.umask(old)
    index = tmp_path / "index"
    for name in (DATA_FILE, META_FILE, CARD_FILE, ROWS_DIR):
        assert (index / name).exists(), name
    assert len(list((tmp_path / "knowledge").glob("*.json"))) == 2
    for root in (index, tmp_path / "knowledge"):
        assert modes(root) == expected(root, 0o002)
