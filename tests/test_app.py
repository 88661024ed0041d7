"""The web app's answers (`k2v_hub.app.Answerer`, no browser): the ranking, the picture, the JSON download equal to
`k2v-hub find --format json`, a message for every bad input with the app still answering, nothing of the upload
left behind or logged; and the Space entry point (`app.py`) serving on 127.0.0.1.

The index is the small fast one of `test_bad_inputs.py` (linear black boxes, ``pixels-8`` features); the browser
test (`test_app_browser.py`) drives the real page on the tiny zoo.
"""

from __future__ import annotations

import io
import json
import logging
import os
import runpy
import socket
import subprocess
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from k2v_hub.app import FOLDER_SEPARATOR, Answerer
from k2v_hub.errors import IndexError_, UsageError
from k2v_hub.finetune_fit import FEATURES, train_finetune_predictor
from k2v_hub.find import find_model, matches_json

from fakes import FEATURE_SPACE, build_fast_index, console_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
CLASSES = ("zebra-secret", "okapi-secret", "tapir-secret")  # names that must appear in no log record


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


GOOD = {f"{c}/{i}.png": png(10 * k + i) for k, c in enumerate(CLASSES) for i in range(3)}


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    return build_fast_index(tmp_path_factory.mktemp("fast"))[0]


@pytest.fixture
def answerer(index, tmp_path) -> Answerer:
    return Answerer(str(index), work_dir=tmp_path / "work", upload_dir=tmp_path / "gradio")


def uploaded(tmp_path: Path, members: dict, name: str = "upload.zip") -> str:
    """A zip where Gradio keeps uploads: ``<upload folder>/<hash>/<name>``."""
    path = tmp_path / "gradio" / f"h{len(list(tmp_path.glob('gradio/*')))}" / name
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return str(path)


def test_a_zip_gets_the_ranking_picture_and_json_and_leaves_nothing(answerer, index, tmp_path, caplog,
                                                                     monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "shared-datasets-cache")
    steps = []
    with caplog.at_level(logging.DEBUG):
        answer = answerer.answer("zip", zip_file=uploaded(tmp_path, GOOD), top_k=3,
                                 progress=lambda fraction, what: steps.append((fraction, what)))
    assert answer.status.startswith("Ranked 3 of 4 indexed models in "), answer.status
    # the upload, its unpacked images and their datasets cache are gone; nothing mentions the data in the logs
    assert list((tmp_path / "gradio").rglob("*")) == []
    assert list((tmp_path / "work" / "uploads").iterdir()) == []
    assert not (tmp_path / "shared-datasets-cache").exists()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(c in logged for c in CLASSES), logged
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and len(steps) == 3
    expected = find_model(str(_folder(tmp_path / "same", GOOD)), str(index), top_k=3, show_progress=False)
    assert [m.model_id for m in answer.matches] == [m.model_id for m in expected]
    assert Path(answer.json_file).read_text() == matches_json(expected) + "\n"
    assert Path(answer.picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for m in expected:
        assert f'<a href="{m.url}" target="_blank" rel="noopener">{m.model_id}</a>' in answer.ranking
    assert "queries" in answer.ranking and "m0-class0" in answer.ranking  # cost and labels


def _folder(root: Path, members: dict) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.mark.parametrize("goal", ["as-is", "fine-tune"])
def test_the_json_download_is_what_find_format_json_prints(index, tmp_path, goal):
    """The page's answer, for either goal, is what `k2v-hub find --goal ... --format json` prints (the fast index
    is in a feature space of its own: the page is given a fine-tune predictor made in it)."""
    predictor = train_finetune_predictor([np.random.default_rng(0).normal(size=(4, len(FEATURES)))],
                                         [np.arange(4.0)], steps=5, feature_space=FEATURE_SPACE)
    predictor.save_pretrained(tmp_path / "predictor")
    answerer = Answerer(str(index), work_dir=tmp_path / "work", upload_dir=tmp_path / "gradio",
                        finetune_predictor=str(tmp_path / "predictor"))
    assert answerer.goals == ("as-is", "fine-tune")
    answer = answerer.answer("zip", zip_file=uploaded(tmp_path, GOOD), top_k=3, goal=goal)
    folder = _folder(tmp_path / "dataset", GOOD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([*console_script("k2v-hub"), "find", "--dataset", str(folder), "--index", str(index),
                           "--top-k", "3", "--format", "json", "--goal", goal,
                           "--finetune-predictor", str(tmp_path / "predictor")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(answer.json_file).read_text() == proc.stdout


def test_fine_tune_is_offered_only_with_a_predictor_of_the_index_feature_space(answerer, tmp_path):
    """The shipped predictor is made in another feature space than the fast index's: the page offers "as-is" only
    and a "fine-tune" request is a message saying so."""
    assert answerer.goals == ("as-is",)
    answer = answerer.answer("zip", zip_file=uploaded(tmp_path, GOOD), top_k=3, goal="fine-tune")
    assert answer.status.startswith("Error: The goal 'fine-tune' is not available") and answer.json_file is None
    assert "Choose as-is" in answer.status and list((tmp_path / "gradio").rglob("*.zip")) == []


def test_a_folder_upload_ranks_like_the_same_zip(answerer, tmp_path):
    by_zip = answerer.answer("zip", zip_file=uploaded(tmp_path, GOOD), top_k=3)
    stored = []
    for i, (name, data) in enumerate(GOOD.items()):  # as the page sends them: flat, named by their path
        path = tmp_path / "gradio" / f"f{i}" / f"pets{FOLDER_SEPARATOR}{name.replace('/', FOLDER_SEPARATOR)}"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        stored.append(str(path))
    by_folder = answerer.answer("folder", folder_files=stored, top_k=3)
    assert by_folder.status.startswith("Ranked"), by_folder.status
    assert Path(by_folder.json_file).read_text() == Path(by_zip.json_file).read_text()
    assert list((tmp_path / "gradio").rglob("*")) == []


BAD = {
    "one class": ({"zebra-secret/1.png": png(1), "zebra-secret/2.png": png(2)}, "one class folder"),
    "no class folders": ({"1.png": png(1), "2.png": png(2)}, "No class folders"),
    "empty zip": ({}, "The zip is empty"),
    "corrupt images": ({**GOOD, "okapi-secret/bad.png": b"not an image"}, "not a readable image: okapi-secret/bad"),
    "../ paths": ({**GOOD, "../escape.png": png(3)}, "unsafe path"),
    "zip bomb": ({**GOOD, "okapi-secret/zeros.png": b"\0" * (4 * 2**20)}, "decompression bomb"),
}


def test_bad_inputs_are_a_message_and_the_app_keeps_answering(answerer, tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    for name, (members, match) in BAD.items():
        answer = answerer.answer("zip", zip_file=uploaded(tmp_path, members), top_k=3)
        assert answer.status.startswith("Error: ") and match in answer.status, (name, answer.status)
        assert (answer.ranking, answer.picture, answer.json_file) == ("", None, None)
    once = uploaded(tmp_path, GOOD)
    assert answerer.answer("zip", zip_file=once, top_k=3).status.startswith("Ranked")
    assert "Upload it again" in answerer.answer("zip", zip_file=once).status  # Find pressed twice: it is gone
    assert "No zip uploaded" in answerer.answer("zip").status
    assert "No folder uploaded" in answerer.answer("folder").status
    dropped = tmp_path / "gradio" / "dropped" / "1.png"  # a folder dropped onto the page: base names only
    dropped.parent.mkdir()
    dropped.write_bytes(png(1))
    assert "arrived without their folders" in answerer.answer("folder", folder_files=[str(dropped)]).status
    assert "No Hub dataset id given" in answerer.answer("hub", hub_id="  ").status
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    assert "cannot be reached" in answerer.answer("hub", hub_id="k2v-nobody/no-such-dataset").status
    assert "not a valid Hub dataset id" in answerer.answer("hub", hub_id="not an id!").status
    assert list((tmp_path / "gradio").rglob("*.zip")) == []  # every upload deleted after its answer
    assert answerer.answer("zip", zip_file=uploaded(tmp_path, GOOD), top_k=3).status.startswith("Ranked")


def test_an_unexpected_failure_is_a_message_too(answerer, tmp_path, monkeypatch):
    monkeypatch.setattr("k2v_hub.app.find_model", lambda *a, **k: 1 / 0)
    answer = answerer.answer("zip", zip_file=uploaded(tmp_path, GOOD))
    assert answer.status == "Error: unexpected ZeroDivisionError: division by zero"


def test_a_bad_index_fails_before_serving(tmp_path):
    with pytest.raises(IndexError_, match="not a k2v-hub index"):
        Answerer(str(tmp_path))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_space_entry_point_serves_the_page_on_localhost(index, tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")
    monkeypatch.delenv("K2V_INDEX", raising=False)
    with pytest.raises(UsageError, match="K2V_INDEX is not set"):
        runpy.run_path(str(REPO / "app.py"), run_name="__main__")
    monkeypatch.setenv("K2V_INDEX", str(index))
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(_free_port()))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    served = {}

    def fetch_then_stop(demo):
        served["url"] = demo.local_url
        served["page"] = urllib.request.urlopen(demo.local_url, timeout=60).read().decode()
        served["config"] = json.loads(urllib.request.urlopen(demo.local_url + "config", timeout=60).read())
        demo.close()

    monkeypatch.setattr("k2v_hub.app.serve_until_stopped", fetch_then_stop)
    runpy.run_path(str(REPO / "app.py"), run_name="__main__")
    assert served["url"].startswith("http://127.0.0.1:")
    assert "k2v-hub: which model fits my images?" in served["page"]
    config = served["config"]
    assert config["analytics_enabled"] is False and config.get("run_history") is False
    assert config["max_file_size"] == 200 * 2**20
