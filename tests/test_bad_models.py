"""Bad models during `index`: one broken repo is skipped with a reason that says what to do, the rest of the org
is indexed, and no code ships with a repo runs unless asked (remote code, pickles).

An org is made in a temporary folder from copies of tiny-zoo models, plus broken variants of one of them, and
indexed with the real `build_index` + `LocalSource` + `TransformersOracle` (an untrained retriever in the
``pixels-8`` feature space, 48 probes, C = 4, 3 bisection steps: the models and the loading are what is tested).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from k2v_hub.errors import ModelRefused
from k2v_hub.limits import MAX_LABELS

ORG = "k2v-bad"
C, STEPS, N_PROBES = 4, 3, 48
PROBE = {"source": "builtin", "n": N_PROBES, "size": 32, "seed": 0, "kinds": ["shapes", "textures"]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- building broken repos


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def edit_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def set_card_tag(folder: Path, tag: str) -> None:
    (folder / "README.md").write_text(f"---\npipeline_tag: {tag}\nlibrary_name: transformers\n---\n# not images\n")


def marker_code(marker: Path, name: str) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text({name!r})\n"


def add_remote_code(folder: Path, marker: Path) -> None:
    """``auto_map`` to a config and model class whose import writes ``marker`` (a real, loadable model)."""
    (folder / "configuration_x.py").write_text(marker_code(marker, "configuration_x ran") + (
        "from transformers import ResNetConfig\n\n\nclass XConfig(ResNetConfig):\n    model_type = 'k2v-x'\n"))
    (folder / "modeling_x.py").write_text(marker_code(marker, "modeling_x ran") + (
        "from transformers import ResNetForImageClassification\n\nfrom .configuration_x import XConfig\n\n\n"
        "class XModel(ResNetForImageClassification):\n    config_class = XConfig\n"))

    def change(c):
        c["model_type"] = "k2v-x"
        c["auto_map"] = {"AutoConfig": "configuration_x.XConfig",
                         "AutoModelForImageClassification": "modeling_x.XModel"}

    edit_json(folder / "config.json", change)


def to_pickle(folder: Path, payload=None) -> None:
    """Replace the safetensors weights by ``pytorch_model.bin`` (torch.save of the state dict, or ``payload``)."""
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state if payload is None else payload, folder / "pytorch_model.bin")


class EvilPickle:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pickle ran')",)


def make_org(zoo: Path, root: Path, markers: Path) -> dict:
    """Good copies and broken variants under ``root/ORG``; returns the expected outcome of each."""
    from k2v_hub.zoo.data import ZooData

    data = ZooData(zoo)
    base = next(m for m in data.model_ids if data.models[m].get("arch") == "resnet")
    good = [m for m in data.model_ids if m != base][:2]
    org = root / ORG
    org.mkdir(parents=True)
    for m in good:
        shutil.copytree(zoo / m, org / m.split("/")[1])

    def variant(name: str) -> Path:
        shutil.copytree(zoo / base, org / name)
        return org / name

    expect: dict[str, tuple[str, ...] | str] = {f"{ORG}/{m.split('/')[1]}": "indexed" for m in good}

    def skipped(name, *words):
        expect[f"{ORG}/{name}"] = words

    # not image classification: never listed
    set_card_tag(variant("text-model"), "text-classification")
    f = variant("no-card-no-labels")
    (f / "README.md").unlink()
    edit_json(f / "config.json", lambda c: c.pop("id2label"))
    expect[f"{ORG}/text-model"] = expect[f"{ORG}/no-card-no-labels"] = "absent"

    (variant("no-preprocessor") / "preprocessor_config.json").unlink()
    skipped("no-preprocessor", "no preprocessor_config.json", "image processor config")

    add_remote_code(variant("remote-code"), markers / "remote-code")
    skipped("remote-code", "`auto_map`", "--trust-remote-code")

    f = variant("remote-processor")
    (f / "image_processing_x.py").write_text(marker_code(markers / "remote-processor", "processor ran"))
    edit_json(f / "preprocessor_config.json",
              lambda c: c.update(auto_map={"AutoImageProcessor": "image_processing_x.XProcessor"}))
    skipped("remote-processor", "preprocessor_config.json has `auto_map`", "--trust-remote-code")

    to_pickle(variant("pickle-only"))
    skipped("pickle-only", "pickle only", "--allow-pickle")

    to_pickle(variant("evil-pickle"), payload={"classifier.1.weight": EvilPickle(markers / "evil-pickle")})
    skipped("evil-pickle", "pickle only", "--allow-pickle")

    edit_weights(variant("nan-output"), lambda s: s["classifier.1.weight"].__setitem__((0, 0), float("nan")))
    skipped("nan-output", "NaN scores", "weights")

    def constant(s):
        s["classifier.1.weight"].zero_()
        s["classifier.1.bias"].copy_(torch.tensor([5.0] + [0.0] * (len(s["classifier.1.bias"]) - 1)))

    edit_weights(variant("constant"), constant)
    skipped("constant", "constant output", "skipped")

    f = variant("corrupt-safetensors")
    (f / "model.safetensors").write_bytes(b"\x00" * 64 + b"these are not weights")
    skipped("corrupt-safetensors", "model.safetensors is corrupt or truncated", "Re-upload")

    f = variant("truncated-safetensors")
    raw = (f / "model.safetensors").read_bytes()
    (f / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    skipped("truncated-safetensors", "model.safetensors is corrupt or truncated", "Re-upload")

    (variant("no-weights") / "model.safetensors").unlink()
    skipped("no-weights", "no weights file", "Upload safetensors")

    (variant("config-not-json") / "config.json").write_text("{ this is: not json")
    skipped("config-not-json", "config.json is not valid JSON", "Fix config.json")

    (variant("config-json-list") / "config.json").write_text("[1, 2, 3]")
    skipped("config-json-list", "config.json is not a JSON object", "Fix config.json")

    edit_json(variant("unknown-model-type") / "config.json", lambda c: c.update(model_type="k2v-does-not-exist"))
    skipped("unknown-model-type", "transformers cannot load it", "AutoModelForImageClassification")

    edit_json(variant("bad-label-keys") / "config.json",
              lambda c: c.update(id2label={k: v for k, v in zip("abcde", c["id2label"].values())}))
    skipped("bad-label-keys", "keys are not integers", "Fix config.json")

    def labels_mismatch(c):
        c["id2label"] = {str(i): f"label-{i}" for i in range(7)}
        c["label2id"] = {f"label-{i}": i for i in range(7)}

    edit_json(variant("labels-mismatch-weights") / "config.json", labels_mismatch)
    skipped("labels-mismatch-weights", "transformers cannot load it", "AutoModelForImageClassification")

    def too_many(c):
        c["id2label"] = {str(i): f"label-{i}" for i in range(MAX_LABELS + 1)}
        c.pop("label2id", None)

    edit_json(variant("too-many-labels") / "config.json", too_many)
    skipped("too-many-labels", f"{MAX_LABELS + 1} labels (limit {MAX_LABELS})", "not indexed")

    # thousands of labels: works, top-C classes only, query cost bounded
    f = variant("many-labels")

    def many(c):
        c["id2label"] = {str(i): f"class {i:04d}" for i in range(3000)}
        c["label2id"] = {f"class {i:04d}": i for i in range(3000)}

    edit_json(f / "config.json", many)

    def wide_head(s):
        g = torch.Generator().manual_seed(0)
        s["classifier.1.weight"] = torch.randn(3000, s["classifier.1.weight"].shape[1], generator=g)
        s["classifier.1.bias"] = torch.zeros(3000)

    edit_weights(f, wide_head)
    expect[f"{ORG}/many-labels"] = "indexed"
    return expect


def make_indexer(tmp: Path, **kw):
    from k2v_hub.features import FeatureExtractor
    from k2v_hub.knowledge import load_probe_set
    from k2v_hub.pipeline import make_indexer as _make_indexer
    from k2v_hub.pipeline import new_retriever

    extractor = FeatureExtractor.from_pretrained("pixels-8")
    _, fingerprint, spec = load_probe_set(PROBE)
    retriever = new_retriever(extractor, probe_spec=spec, probe_fingerprint=fingerprint, max_classes=C,
                              embed_dim=16, hidden_dim=16)
    return _make_indexer(retriever, retriever_id="untrained", probe=PROBE, max_classes=C, bisection_steps=STEPS,
                         extractor=extractor, cache_dir=tmp / "knowledge-cache", **kw)


@pytest.fixture(scope="module")
def org_run(tiny_zoo, tmp_path_factory):
    from k2v_hub.hub import LocalSource
    from k2v_hub.index import build_index, read_rows

    tmp = tmp_path_factory.mktemp("bad-models")
    markers = tmp / "markers"
    markers.mkdir()
    expect = make_org(tiny_zoo, tmp / "zoo", markers)
    report = build_index(LocalSource(tmp / "zoo"), ORG, tmp / "index", make_indexer(tmp), show_progress=False)
    return expect, report, read_rows(tmp / "index"), markers


# --------------------------------------------------------------------------- the org run


def test_bad_models_are_skipped_with_a_reason_and_the_rest_is_indexed(org_run):
    expect, report, rows, _ = org_run
    for model_id, outcome in expect.items():
        if outcome == "indexed":
            assert model_id in report.indexed and model_id in rows, (model_id, report.skipped.get(model_id))
        elif outcome == "absent":
            assert model_id not in report.indexed and model_id not in report.skipped and model_id not in rows
        else:
            assert model_id in report.skipped, (model_id, "was not skipped")
            reason = report.skipped[model_id]
            assert "\n" not in reason and len(reason) < 400, reason
            for word in outcome:
                assert word in reason, (model_id, word, reason)
            assert model_id not in rows
    assert sorted(rows) == sorted(m for m, o in expect.items() if o == "indexed")
    assert len(report.skipped) == sum(isinstance(o, tuple) for o in expect.values()) >= 15


def test_no_repo_code_ran(org_run):
    *_, markers = org_run
    assert list(markers.iterdir()) == []  # remote code, processor code and the evil pickle never ran


def test_thousands_of_labels_top_c_only_and_bounded_cost(org_run):
    from k2v_hub.knowledge import KnowledgeRecord

    _, report, rows, _ = org_run
    row = rows[f"{ORG}/many-labels"]
    record = KnowledgeRecord.from_json(row["knowledge"])
    assert len(row["labels"]) == len(record.labels) == 3000
    assert 2 <= len(record.classes) <= C
    assert record.n_queries <= N_PROBES + STEPS * C * (C - 1) and row["n_queries"] == record.n_queries
    assert np.isclose(np.linalg.norm(row["embedding"]), 1, atol=1e-4)


# --------------------------------------------------------------------------- opting in


def test_opt_ins_trust_remote_code_and_allow_pickle(tiny_zoo, tmp_path):
    """With both opt-ins: remote code runs (the flag is what gates it), benign pickles load, but weights are still
    read with ``weights_only=True``: a pickle that runs code is refused and never runs, and a remote-code repo
    with pickle weights is still refused without ``allow_pickle``."""
    from k2v_hub.hub import LocalSource
    from k2v_hub.index import build_index
    from k2v_hub.zoo.data import ZooData

    data = ZooData(tiny_zoo)
    base = next(m for m in data.model_ids if data.models[m].get("arch") == "resnet")
    org = tmp_path / "zoo" / ORG
    markers = tmp_path / "markers"
    markers.mkdir()
    for name in ("remote-code", "remote-code-pickle", "pickle-only", "evil-pickle"):
        shutil.copytree(tiny_zoo / base, org / name)
    add_remote_code(org / "remote-code", markers / "remote-code")
    add_remote_code(org / "remote-code-pickle", markers / "remote-code-pickle")
    to_pickle(org / "remote-code-pickle")
    to_pickle(org / "pickle-only")
    to_pickle(org / "evil-pickle", payload={"classifier.1.weight": EvilPickle(markers / "evil-pickle")})
    source = LocalSource(tmp_path / "zoo")

    report = build_index(source, ORG, tmp_path / "index-code", make_indexer(tmp_path, trust_remote_code=True),
                         show_progress=False)
    assert f"{ORG}/remote-code" in report.indexed
    assert (markers / "remote-code").is_file()  # asked for, so it ran: the marker proves the refusals above
    assert "--allow-pickle" in report.skipped[f"{ORG}/remote-code-pickle"]
    assert not (markers / "remote-code-pickle").exists()

    report = build_index(source, ORG, tmp_path / "index-pickle", make_indexer(tmp_path, allow_pickle=True),
                         show_progress=False)
    assert f"{ORG}/pickle-only" in report.indexed
    assert "transformers cannot load it" in report.skipped[f"{ORG}/evil-pickle"]
    assert not (markers / "evil-pickle").exists()


def test_check_model_folder_reads_no_code(tmp_path):
    """The pre-flight check only parses JSON and safetensors headers."""
    from k2v_hub.oracle import TransformersOracle, check_model_folder

    (tmp_path / "m").mkdir()
    with pytest.raises(ModelRefused, match="no config.json"):
        check_model_folder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"id2label": {"0": "a", "2": "b"}}))
    with pytest.raises(ModelRefused, match="not 0..1"):
        check_model_folder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"},
                                                            "custom_pipelines": {"x": {}}}))
    with pytest.raises(ModelRefused, match="remote code"):
        TransformersOracle(tmp_path / "m")
