"""The default retriever: the package ships it (under 5 MiB, the recorded build of the documented command on the
current bench plan, its numbers unmoved by the int8 shipping format), and with it the whole path runs with no
``--retriever`` anywhere on an empty cache (index an org, find); the command rebuilds one, used before the shipped
copy (index, find, adapt); with no copy at all, the error says how to build one."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from k2v_hub import retriever as retriever_module
from k2v_hub.bench.default_retriever import COMMAND, FINETUNE_COMMAND, MAX_BYTES
from k2v_hub.cli import main
from k2v_hub.errors import K2VError
from k2v_hub.finetune_fit import SUBFOLDER, bundled_finetune_dir, load_finetune_predictor
from k2v_hub.quantize import DTYPE, SCALE_SUFFIX, load_weights, save_quantized
from k2v_hub.retriever import (BUNDLED_REVISION, DEFAULT_RETRIEVER_ID, WEIGHTS_NAME, Retriever, bundled_retriever_dir,
                               shipped_retriever_dir)
from k2v_hub.zoo.data import ZooData
from k2v_hub.zoo.plan import plan_zoo

from fakes import fresh_k2v_home

BUILD_RECORD = Path(__file__).parents[1] / "benchmarks" / "results" / "default-retriever.json"
#: The project flags any committed file over 5 MiB.
FIVE_MIB = 5_242_880


def checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """``proc`` (a ``k2v-hub`` run) if it exited 0."""
    assert proc.returncode == 0, f"{' '.join(map(str, proc.args))}: {proc.stderr[-3000:]}"
    return proc


def _dtypes(weights) -> set[str]:
    with safe_open(str(weights), "pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}


def test_the_recorded_build_is_of_the_current_bench_plan():
    """The build the README quotes was made by the documented command on the zoo plan the code now draws."""
    info = json.loads(BUILD_RECORD.read_text())
    assert info["command"] == COMMAND.format(profile="bench", seed=0)
    assert info["zoo_plan_fingerprint"] == plan_zoo("bench", seed=0).fingerprint()
    assert info["chosen_on"] == "validation" and info["dtype"] == DTYPE
    assert info["bench"] == info["bench_float32"]  # the shipping format did not move the numbers
    assert info["weights_bytes"] <= MAX_BYTES <= FIVE_MIB


def test_the_package_ships_the_recorded_build_under_5_mib():
    """The shipped copy is the recorded build, byte for byte and as it loads, and its card shows its numbers."""
    folder, record = shipped_retriever_dir(), json.loads(BUILD_RECORD.read_text())
    weights = folder / WEIGHTS_NAME
    assert weights.stat().st_size == record["weights_bytes"] < FIVE_MIB
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["weights_sha256"]
    assert _dtypes(weights) == {"I8", "F16"}
    info = json.loads((folder / "config.json").read_text())["training_info"]
    assert info["command"] == COMMAND.format(profile="bench", seed=0)
    assert info["zoo_plan_fingerprint"] == plan_zoo("bench", seed=0).fingerprint()
    assert info["dtype"] == DTYPE and info["bench"] == info["bench_float32"] == record["bench"]
    assert Retriever.from_pretrained(str(folder)).fingerprint() == record["weights_fingerprint"]
    card = (folder / "README.md").read_text()
    assert f"| {info['bench']['r@1']} | {info['bench_float32']['r@1']} |" in card and info["converted"] in card


def test_the_shipping_format_round_trips_within_one_int8_step(tmp_path):
    """A retriever saved in the shipping format loads (strict keys) within one int8 step of its large weights and
    exactly as float16 elsewhere; a float16 copy makes the same file; a plain file loads unchanged; an int8 weight
    without its scales is refused."""
    torch.manual_seed(0)
    original = Retriever()
    with torch.no_grad():
        original.model_encoder.node[1].weight[3] = 0  # an all-zero row stays zero
    original.save_pretrained(tmp_path / "q")
    save_quantized(original.state_dict(), tmp_path / "q" / WEIGHTS_NAME)
    stored = load_file(tmp_path / "q" / WEIGHTS_NAME)
    loaded = Retriever.from_pretrained(str(tmp_path / "q")).state_dict()
    large = [k for k, v in stored.items() if v.dtype == torch.int8]
    assert "model_encoder.node.1.weight" in large and "query_encoder.node.1.weight" in large
    for name, weight in original.state_dict().items():
        if name in large:
            step = stored[name + SCALE_SUFFIX].float()[:, None]
            assert ((loaded[name] - weight).abs() <= step).all(), name
        else:
            assert stored[name].dtype == torch.float16 and torch.equal(loaded[name], weight.half().float()), name
    assert (loaded["model_encoder.node.1.weight"][3] == 0).all()

    save_quantized({k: v.half() for k, v in original.state_dict().items()}, tmp_path / "from-float16.safetensors")
    assert (tmp_path / "from-float16.safetensors").read_bytes() == (tmp_path / "q" / WEIGHTS_NAME).read_bytes()
    plain = {k: v.float() for k, v in original.state_dict().items()}
    save_file(plain, tmp_path / "plain.safetensors")
    assert all(torch.equal(v, plain[k]) for k, v in load_weights(tmp_path / "plain.safetensors").items())
    save_file({large[0]: stored[large[0]]}, tmp_path / "bad.safetensors")
    with pytest.raises(K2VError, match="without its per-row scales"):
        load_weights(tmp_path / "bad.safetensors")


def saved_space(folder: Path) -> str:
    """The feature space a retriever folder's config names."""
    return json.loads((folder / "config.json").read_text())["feature_space"]


def test_a_copy_built_here_comes_before_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.setenv("K2V_HUB_HOME", str(tmp_path))
    assert bundled_retriever_dir() == shipped_retriever_dir()
    (tmp_path / "default_retriever").mkdir()
    assert bundled_retriever_dir() == shipped_retriever_dir()  # no weights: not a copy
    shutil.copy(shipped_retriever_dir() / WEIGHTS_NAME, tmp_path / "default_retriever" / WEIGHTS_NAME)
    assert bundled_retriever_dir() == tmp_path / "default_retriever"
    # the fine-tune predictor the same way: the one built here, beside that copy, comes first
    assert bundled_finetune_dir() == shipped_retriever_dir() / SUBFOLDER
    shutil.copytree(shipped_retriever_dir() / SUBFOLDER, tmp_path / "default_retriever" / SUBFOLDER)
    assert bundled_finetune_dir() == tmp_path / "default_retriever" / SUBFOLDER


def test_with_no_retriever_anywhere_the_shipped_copy_indexes_and_finds(tiny_zoo, shipped_default_retriever):
    """The two commands ran ahead (``conftest.py``), one after the other, on an empty cache."""
    runs, home = iter(shipped_default_retriever["runs"]), shipped_default_retriever["home"]
    zoo, index = ZooData(tiny_zoo), shipped_default_retriever["index"]
    report = json.loads(checked(next(runs)).stdout)  # index --org ORG --zoo ZOO --out IDX
    assert report["indexed"] and not report["skipped"] and not (home / "default_retriever").exists()
    meta = json.loads((index / "k2v_index.json").read_text())
    assert (meta["retriever_id"], meta["retriever_revision"]) == (DEFAULT_RETRIEVER_ID, BUNDLED_REVISION)
    assert meta["retriever_fingerprint"] == json.loads(BUILD_RECORD.read_text())["weights_fingerprint"]
    matches = json.loads(checked(next(runs)).stdout)  # find --dataset TASK --index IDX --rerank none
    assert matches and {m["model_id"] for m in matches} <= set(zoo.model_ids)
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)


def test_without_any_copy_index_says_how_to_build_one(tiny_zoo, tmp_path, k2v_home, monkeypatch):
    """Neither built here nor shipped (a broken install, hidden here) and the Hub unreachable: one line, a hint."""
    monkeypatch.setenv("K2V_HUB_HOME", str(fresh_k2v_home(tmp_path / "home", k2v_home)))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(retriever_module, "shipped_retriever_dir", lambda: tmp_path / "not-shipped")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as e:
        main(["index", "--org", ZooData(tiny_zoo).org, "--zoo", str(tiny_zoo), "--out", str(tmp_path / "idx")])
    assert e.value.code != 0 and not (tmp_path / "idx" / "k2v_index.json").exists()
    assert "k2v-hub build-retriever" in err.getvalue() and "--retriever" in err.getvalue()
    assert "Traceback" not in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


@pytest.mark.slow
def test_build_then_index_find_and_adapt_with_no_retriever_anywhere(tiny_zoo, built_default_retriever,
                                                                     one_torch_thread):
    """The copy the command builds here is the default, before the shipped one. The four commands ran ahead
    (``conftest.py``), one after the other, on an empty cache and a copy of the tiny zoo."""
    runs, home = iter(built_default_retriever["runs"]), built_default_retriever["home"]
    command = COMMAND.format(profile="tiny", seed=0)
    info = json.loads(checked(next(runs)).stdout)  # build-retriever --profile tiny --seed 0 --work WORK
    built = home / "default_retriever"
    saved = json.loads((built / "config.json").read_text())["training_info"]
    assert saved["command"] == info["command"] == command
    assert saved["zoo_plan_fingerprint"] == plan_zoo("tiny", seed=0).fingerprint()
    assert _dtypes(built / WEIGHTS_NAME) == {"I8", "F16"} and saved["dtype"] == DTYPE
    assert 0 <= saved["bench"]["r@1"] <= 1 and saved["bench"]["eval_tasks"] > 0
    assert (built / "README.md").read_text().count("|") > 10
    # the fine-tune predictor of `find --goal fine-tune` is built beside it, in the retriever's feature space
    assert info["finetune"]["command"] == FINETUNE_COMMAND.format(profile="tiny", seed=0)
    assert load_finetune_predictor(built / SUBFOLDER).feature_space == saved_space(built)
    assert "transfer tasks" in (built / SUBFOLDER / "README.md").read_text()

    index = built_default_retriever["index"]
    report = json.loads(checked(next(runs)).stdout)  # index --org ORG --zoo ZOO --out IDX
    assert report["indexed"] and not report["skipped"]
    meta = json.loads((index / "k2v_index.json").read_text())
    assert (meta["retriever_id"], meta["retriever_revision"]) == (DEFAULT_RETRIEVER_ID, BUNDLED_REVISION)
    assert meta["retriever_fingerprint"] == Retriever.from_pretrained(str(built)).float().fingerprint()
    assert meta["retriever_fingerprint"] != json.loads(BUILD_RECORD.read_text())["weights_fingerprint"]
    matches = json.loads(checked(next(runs)).stdout)  # find --dataset TASK --index IDX --rerank none
    assert {m["model_id"] for m in matches} <= set(ZooData(tiny_zoo).model_ids) and matches
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    adapted = json.loads(checked(next(runs)).stdout)  # train --index IDX --out ADAPTED --steps 2
    assert adapted["mode"] == "self-supervised" and (built_default_retriever["adapted"] / WEIGHTS_NAME).is_file()
