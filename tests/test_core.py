"""Unit tests of the core: oracle views and budget, knowledge records, encoders, retriever, training.

Pure numpy/torch fakes only (no zoo, no backbone): the whole file runs in seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from k2v_hub.errors import K2VError, MalformedRecord, ModelRefused, QueryBudgetExceeded, UsageError
from k2v_hub.knowledge import (
    KnowledgeRecord,
    blend,
    boundary_images,
    build_knowledge,
    krm,
    pseudo_tasks,
    select_classes,
)
from k2v_hub.oracle import Oracle, apply_view, to_rgb

# --------------------------------------------------------------------------- fakes


class LinearOracle(Oracle):
    """A black box that is a linear classifier over pixels: ``softmax(W @ x / 255 + b)``; records batch sizes."""

    def __init__(self, n_labels=5, size=8, seed=0, **kw):
        super().__init__([f"class_{i}" for i in range(n_labels)], **kw)
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(n_labels, size * size * 3)).astype(np.float64)
        self.b = rng.normal(size=n_labels)
        self.batches: list[int] = []

    def logits(self, arr: np.ndarray) -> np.ndarray:
        x = arr.reshape(len(arr), -1).astype(np.float64) / 255.0
        return x @ self.w.T / np.sqrt(x.shape[1]) * 8 + self.b

    def predict_labels(self, arr: np.ndarray) -> np.ndarray:
        return self.logits(arr).argmax(1)

    def _predict_batch(self, images):
        self.batches.append(len(images))
        z = self.logits(np.stack([np.asarray(im) for im in images]))
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)


class ConstantOracle(Oracle):
    def _predict_batch(self, images):
        out = np.zeros((len(images), len(self.labels)))
        out[:, 1] = 1.0
        return out


class InfOracle(Oracle):
    def _predict_batch(self, images):
        out = np.zeros((len(images), len(self.labels)))
        out[:, 0] = np.inf
        return out


def probes(n=40, size=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def images(n, size=8):
    from PIL import Image

    return [Image.fromarray(p) for p in probes(n, size)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def record() -> KnowledgeRecord:
    return build_knowledge(LinearOracle(), probes(), probe_fingerprint="fp-test", max_classes=4, bisection_steps=5)


# --------------------------------------------------------------------------- apply_view


def test_apply_view_top5_keeps_five_known_entries_and_nan_elsewhere():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=6).astype(np.float32)
    out = apply_view(probs, "top5")
    assert out.shape == probs.shape
    for row, full in zip(out, probs):
        known = ~np.isnan(row)
        assert known.sum() == 5
        assert set(np.flatnonzero(known)) == set(np.argsort(-full)[:5])
        np.testing.assert_array_equal(row[known], full[known])


def test_apply_view_label_is_one_entry_at_the_argmax():
    probs = np.random.default_rng(1).dirichlet(np.ones(7), size=5).astype(np.float32)
    out = apply_view(probs, "label")
    assert (~np.isnan(out)).sum(axis=1).tolist() == [1] * 5
    assert np.nanargmax(out, axis=1).tolist() == probs.argmax(1).tolist()
    assert np.nansum(out, axis=1).tolist() == [1.0] * 5


def test_apply_view_full_small_and_unknown():
    probs = np.random.default_rng(2).dirichlet(np.ones(3), size=4).astype(np.float32)
    np.testing.assert_array_equal(apply_view(probs, "full"), probs)
    assert not np.isnan(apply_view(probs, "top5")).any()  # fewer than 5 classes: all known
    with pytest.raises(ValueError, match="Unknown oracle view"):
        apply_view(probs, "top3")


# --------------------------------------------------------------------------- Oracle


def test_oracle_budget_counts_and_batches():
    oracle = LinearOracle(budget=10, batch_size=4)
    out = oracle.predict_proba(images(8))
    assert out.shape == (8, 5) and oracle.n_queries == 8 and oracle.batches == [4, 4]
    with pytest.raises(QueryBudgetExceeded, match="budget of 10"):
        oracle.predict_proba(images(3))
    assert oracle.n_queries == 8  # a refused query costs nothing
    oracle.predict_proba(images(2))
    assert oracle.n_queries == 10 and oracle.batches == [4, 4, 2]
    with pytest.raises(QueryBudgetExceeded) as info:
        oracle.predict_proba(images(1))
    assert isinstance(info.value, K2VError) and "--query-budget" in str(info.value)
    assert oracle.predict_proba([]).shape == (0, 5)


def test_oracle_views_and_refusals():
    top5 = LinearOracle(n_labels=9, view="top5").predict_proba(images(3))
    assert (~np.isnan(top5)).sum(1).tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="Unknown oracle view"):
        LinearOracle(view="logits")
    with pytest.raises(ModelRefused, match="no labels"):
        Oracle([])
    for bad in ({"budget": -1}, {"budget": 2.5}, {"batch_size": 0}, {"batch_size": True}):
        with pytest.raises(UsageError):
            Oracle(["a", "b"], **bad)
    with pytest.raises(ModelRefused, match="non-finite"):
        InfOracle(["a", "b"]).predict_proba(images(2))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "I",
                                  "I;16", "I;16B", "F"])
def test_to_rgb_every_mode(mode):
    from PIL import Image

    im = Image.new(mode, (3, 2))
    out = to_rgb(im)
    assert out.mode == "RGB" and out.size == (3, 2)


def test_to_rgb_rescales_16_bit_and_float_with_nan():
    from PIL import Image

    im16 = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
    assert im16.mode == "I;16"
    assert np.asarray(to_rgb(im16))[..., 0].tolist() == [[0, 64], [128, 255]]
    f = np.array([[np.nan, 0.0], [0.5, 1.0]], dtype=np.float32)
    assert np.asarray(to_rgb(Image.fromarray(f)))[..., 0].tolist() == [[0, 0], [128, 255]]
    with pytest.raises(TypeError):
        to_rgb(np.zeros((2, 2)))


# --------------------------------------------------------------------------- knowledge


def test_build_knowledge_finds_boundaries(record):
    oracle = LinearOracle()
    p = probes()
    k = len(record.classes)
    assert 2 <= k <= 4
    assert record.n_queries == len(p) + 5 * k * (k - 1)
    preds = oracle.predict_labels(p)
    assert record.probe_pred == preds.tolist()
    eps = 2.0 ** -(record.bisection_steps + 1)  # t is the middle of the last bisection interval
    for i, a in enumerate(record.classes):
        assert preds[record.centroids[i]] == a
        for j in range(k):
            if i == j:
                continue
            t = record.boundary_t[i][j]
            assert 0 < t < 1
            ca, cb = p[record.centroids[i]][None], p[record.centroids[j]][None]
            before = oracle.predict_labels(blend(ca, cb, np.array([t - eps])))[0]
            after = oracle.predict_labels(blend(ca, cb, np.array([t + eps])))[0]
            assert before == a, (i, j, t)
            assert after != a, (i, j, t)


def test_build_knowledge_label_view_and_constant_model():
    rec = build_knowledge(LinearOracle(view="label"), probes(), probe_fingerprint="fp", max_classes=3,
                          bisection_steps=3)
    # the label view shows no scores: every confidence is the same (1.0 today; the record docstring says NaN)
    assert rec.oracle_view == "label" and set(np.nan_to_num(rec.probe_conf, nan=1.0).tolist()) == {1.0}
    for i, c in enumerate(rec.classes):  # label view: the first probe labelled c
        assert rec.centroids[i] == rec.probe_pred.index(c)
    with pytest.raises(ModelRefused, match="constant"):
        build_knowledge(ConstantOracle(["a", "b", "c"]), probes(), probe_fingerprint="fp")


def test_krm_and_boundary_images(record):
    p = probes()
    nodes = boundary_images(record, p)
    k = len(record.classes)
    assert nodes.shape == (k, k) + p.shape[1:]
    for i in range(k):
        np.testing.assert_array_equal(nodes[i, i], p[record.centroids[i]])
    r = krm(record, p)
    assert r.shape == nodes.shape and np.all(r[np.arange(k), np.arange(k)] == 0)


def test_record_json_round_trip(record):
    text = record.to_json()
    back = KnowledgeRecord.from_json(text)
    assert back.to_dict() == record.to_dict()
    assert json.loads(back.to_json()) == json.loads(text)
    assert back.class_names == record.class_names
    np.testing.assert_array_equal(boundary_images(back, probes()), boundary_images(record, probes()))
    nan_conf = KnowledgeRecord.from_dict({**record.to_dict(), "probe_conf": [None] * len(record.probe_pred)})
    assert np.isnan(nan_conf.probe_conf).all()


def test_record_json_round_trip_is_bit_exact_with_default_bisection_steps():
    p = probes(64, seed=3)
    rec = build_knowledge(LinearOracle(seed=3, n_labels=6), p, probe_fingerprint="fp", max_classes=6,
                          bisection_steps=7)
    back = KnowledgeRecord.from_json(rec.to_json())
    np.testing.assert_array_equal(boundary_images(back, p), boundary_images(rec, p))


def _mutations(d: dict):
    k = len(d["classes"])
    yield "not a dict", [d]
    yield "missing field", {x: v for x, v in d.items() if x != "centroids"}
    yield "unknown field", {**d, "extra": 1}
    yield "labels not strings", {**d, "labels": list(range(len(d["labels"])))}
    yield "empty labels", {**d, "labels": []}
    yield "class out of range", {**d, "classes": d["classes"][:-1] + [len(d["labels"])]}
    yield "duplicate classes", {**d, "classes": [d["classes"][0]] * k}
    yield "classes as strings", {**d, "classes": [str(c) for c in d["classes"]]}
    yield "bool as int", {**d, "n_queries": True}
    yield "negative queries", {**d, "n_queries": -1}
    yield "centroids wrong length", {**d, "centroids": d["centroids"][:-1]}
    yield "centroid out of range", {**d, "centroids": [len(d["probe_pred"])] * k}
    yield "centroid not its class", {**d, "centroids": d["centroids"][::-1]}
    yield "boundary not square", {**d, "boundary_t": [row[:-1] for row in d["boundary_t"]]}
    yield "boundary t > 1", {**d, "boundary_t": [[2.0] * k for _ in range(k)]}
    yield "boundary t NaN", {**d, "boundary_t": [[float("nan")] * k for _ in range(k)]}
    yield "boundary strings", {**d, "boundary_t": [["x"] * k for _ in range(k)]}
    yield "probe_conf wrong length", {**d, "probe_conf": d["probe_conf"][:-1]}
    yield "probe_conf strings", {**d, "probe_conf": ["high"] * len(d["probe_conf"])}
    yield "probe_pred out of range", {**d, "probe_pred": [99] * len(d["probe_pred"])}
    yield "unknown view", {**d, "oracle_view": "logits"}
    yield "empty fingerprint", {**d, "probe_fingerprint": ""}
    yield "future version", {**d, "version": 2}
    yield "one class", {**d, "classes": d["classes"][:1], "centroids": d["centroids"][:1],
                        "boundary_t": [[0.0]]}


@pytest.mark.parametrize("case", range(24))
def test_record_from_dict_rejects_malformed(record, case):
    cases = list(_mutations(record.to_dict()))
    assert len(cases) == 24
    name, bad = cases[case]
    with pytest.raises(MalformedRecord) as info:
        KnowledgeRecord.from_dict(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, K2VError), name
    message = str(info.value)
    assert "\n" not in message and ("rebuild" in message.lower() or "re-index" in message.lower()), name


def test_record_from_json_rejects_non_json():
    with pytest.raises(MalformedRecord, match="not JSON"):
        KnowledgeRecord.from_json("{not json")


def test_select_classes_top_c():
    #            class 3 wins 5 probes, 1 and 4 win 3 each (4 has the higher mean), 0 wins 1, -1 = unknown
    pred = np.array([3, 3, 3, 3, 3, 1, 1, 1, 4, 4, 4, 0, -1, -1])
    conf = np.array([.9] * 5 + [.5] * 3 + [.8] * 3 + [.99, np.nan, np.nan])
    assert select_classes(pred, conf, 2) == [3, 4]
    assert select_classes(pred, conf, 3) == [1, 3, 4]  # returned in label order
    assert select_classes(pred, conf, 10) == [0, 1, 3, 4]
    assert select_classes(np.array([-1, -1]), np.array([np.nan, np.nan]), 4) == []


def test_pseudo_tasks():
    rec = KnowledgeRecord(labels=list("abcd"), classes=[0, 1, 2], centroids=[0, 1, 2],
                          boundary_t=[[0.5] * 3 for _ in range(3)],
                          probe_pred=[0, 1, 2, 0, 1, 2, 0, 1, 3, -1, 2],
                          probe_conf=[.9, .9, .2, .9, .9, .1, .9, .9, .9, np.nan, .3],
                          n_queries=0, oracle_view="full", probe_fingerprint="fp")
    tasks = pseudo_tasks(rec, n_tasks=6, rng=np.random.default_rng(0))
    assert len(tasks) == 6
    for idx, lab in tasks:
        assert len(idx) == len(lab) and set(lab.tolist()) == {0, 1}  # class 2 has no confident probe, 3 inactive
        for i, new in zip(idx, lab):
            assert rec.probe_pred[i] in (0, 1) and rec.probe_conf[i] >= 0.5
        mapping = {new: rec.probe_pred[i] for i, new in zip(idx, lab)}
        assert len(set(mapping.values())) == 2  # one original class per pseudo label
    assert pseudo_tasks(rec, n_tasks=3, rng=np.random.default_rng(0), min_per_class=4) == []


# --------------------------------------------------------------------------- encoders and retriever


@pytest.mark.parametrize("mode", ["lstm", "concat", "average"])
def test_encoder_shapes(mode):
    from k2v_hub.encoders import ModelEncoder, TaskEncoder
    from k2v_hub.retriever import Retriever

    torch.manual_seed(0)
    graphs = [torch.randn(k, k, 8) for k in (2, 3, 5)]  # 5 > max_classes=4: concat truncates
    assert ModelEncoder(8, 16, 12, mode, max_classes=4)(graphs).shape == (3, 12)
    means = [torch.randn(k, 8) for k in (2, 4)]
    assert TaskEncoder(8, 16, 12, mode, max_classes=4)(means).shape == (2, 12)
    r = Retriever(feature_space="pixels-2", feature_dim=8, hidden_dim=16, embed_dim=12, model_encoder=mode,
                  query_encoder=mode, max_classes=4)
    m = r.embed_models([g.numpy() for g in graphs])
    t = r.embed_task(np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32))
    assert m.shape == (3, 12) and t.shape == (12,)
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1, atol=1e-5)
    assert abs(np.linalg.norm(t) - 1) < 1e-5
    with pytest.raises(ValueError, match="Unknown encoder mode"):
        ModelEncoder(8, 16, 12, "gru")


def _small_retriever(seed=0, **kw):
    from k2v_hub.retriever import Retriever

    torch.manual_seed(seed)
    return Retriever(feature_space="pixels-2", feature_dim=12, hidden_dim=32, embed_dim=16, max_classes=4, **kw)


def test_retriever_round_trip_safetensors_only(tmp_path):
    from k2v_hub.retriever import Retriever

    r = _small_retriever(probe_fingerprint="abc", oracle_view="top5")
    r.save_pretrained(tmp_path / "r")
    assert (tmp_path / "r" / "model.safetensors").is_file()
    back = Retriever.from_pretrained(tmp_path / "r")
    assert back.fingerprint() == r.fingerprint()
    assert back.config["oracle_view"] == "top5" and back.probe_fingerprint == "abc"
    # the same folder with pickle weights only is refused, and torch.load is never called
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tmp_path / "r" / "config.json").read_text())
    torch.save(r.state_dict(), pickled / "pytorch_model.bin")
    original = torch.load
    torch.load = lambda *a, **k: pytest.fail("torch.load was called")  # noqa: ARG005
    try:
        with pytest.raises(K2VError, match="model.safetensors"):
            Retriever.from_pretrained(pickled)
    finally:
        torch.load = original


def _separable_problem(n_models=6, k=3, d=12, seed=0):
    from k2v_hub.train import TrainingData

    rng = np.random.default_rng(seed)
    graphs, tasks, targets = [], [], []
    for m in range(n_models):
        centroids = rng.normal(size=(k, d)) * 3
        g = centroids[:, None, :] + 0.3 * rng.normal(size=(k, k, d))
        g[np.arange(k), np.arange(k)] = centroids
        graphs.append(g.astype(np.float32))
        for _ in range(4):
            tasks.append((centroids + 0.1 * rng.normal(size=centroids.shape)).astype(np.float32))
            targets.append(m)
    return TrainingData(graphs, tasks, targets, [f"m{m}" for m in range(n_models)])


def _train(seed=0, steps=150):
    from k2v_hub.train import TrainingArguments, train_retriever

    data = _separable_problem()
    r = _small_retriever(seed)
    metrics = train_retriever(r, data, TrainingArguments(steps=steps, batch_tasks=8, seed=seed, cpu=True, lr=5e-3),
                              show_progress=False)
    return r, data, metrics


def test_training_separable_reaches_recall_1_and_is_deterministic():
    from k2v_hub.train import recall_at_k

    r1, data, metrics = _train()
    h = r1.embed_models(data.graphs)
    t = np.stack([r1.embed_task(x) for x in data.tasks])
    assert recall_at_k(h, t, data.targets, k=1) == 1.0
    assert metrics["steps"] == 150 and metrics["models"] == 6
    a, b, c = _train(steps=20)[0], _train(steps=20)[0], _train(seed=1, steps=20)[0]
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.fingerprint() != r1.fingerprint()


def test_a_trained_retriever_knows_which_models_it_trained_on(tmp_path):
    from k2v_hub.retriever import Retriever

    r, data, metrics = _train(steps=5)
    assert metrics["trained_models"] == data.model_ids
    r.save_pretrained(tmp_path / "r")
    back = Retriever.from_pretrained(tmp_path / "r")
    assert back.trained_mask(["m1", "other/model", "m5"]).tolist() == [True, False, True]
    assert back.trained_mask(["other/model"]) is None
    back.training_info = {**back.training_info, "mode": "self-supervised"}  # no ground truth: not counted
    assert back.trained_mask(["m1"]) is None
    assert _small_retriever().trained_mask(["m1"]) is None  # never trained


@pytest.mark.parametrize("kwargs, match", [
    ({"sal": "hinge"}, "sal="),
    ({"steps": 0}, "steps"),
    ({"batch_tasks": 0}, "batch_tasks"),
    ({"class_dropout": 1.0}, "class_dropout"),
    ({"class_dropout": -0.1}, "class_dropout"),
    ({"task_class_dropout": 1.0}, "task_class_dropout"),
])
def test_training_arguments_validation(kwargs, match):
    from k2v_hub.train import TrainingArguments

    with pytest.raises(ValueError, match=match):
        TrainingArguments(**kwargs)


def test_training_data_validation():
    from k2v_hub.train import TrainingData

    g = [np.zeros((2, 2, 3), np.float32)]
    t = [np.zeros((2, 3), np.float32)]
    with pytest.raises(ValueError, match="targets"):
        TrainingData(g, t, [0, 0])
    with pytest.raises(ValueError, match="at least one"):
        TrainingData([], t, [0])
    with pytest.raises(ValueError, match="out of range"):
        TrainingData(g, t, [3])


def test_combined_training_data_keeps_every_task_pointing_at_its_model():
    from k2v_hub.train import TrainingData, augment_task, combine_training_data

    g = {m: np.full((2, 2, 3), i, np.float32) for i, m in enumerate("abc")}
    sup = TrainingData([g["a"], g["b"]], [np.zeros((2, 3), np.float32)] * 2, [1, 0], ["a", "b"], "supervised")
    ssl = TrainingData([g["c"], g["b"]], [np.ones((3, 3), np.float32)] * 3, [0, 1, 0], ["c", "b"], "self-supervised")
    both = combine_training_data(sup, ssl)
    assert both.model_ids == ["a", "b", "c"] and both.mode == "supervised+self-supervised"
    assert [both.model_ids[t] for t in both.targets] == ["b", "a", "c", "b", "c"]
    assert all(both.graphs[i][0, 0, 0] == "abc".index(m) for i, m in enumerate(both.model_ids))
    # the knowledge fingerprints follow the graphs kept; one model without its fingerprint leaves none recorded
    sup.model_knowledge, ssl.model_knowledge = ["fa", "fb"], ["fc", "fb-other"]
    assert combine_training_data(sup, ssl).model_knowledge == ["fa", "fb", "fc"]
    ssl.model_knowledge = []
    assert combine_training_data(sup, ssl).model_knowledge == []
    rng = np.random.default_rng(0)
    means = np.arange(12, dtype=np.float32).reshape(4, 3)
    views = [augment_task(means, rng, 0.5, 0.0) for _ in range(50)]
    assert all(2 <= len(v) <= 4 and set(map(tuple, v)) <= set(map(tuple, means)) for v in views)
    assert len({len(v) for v in views}) > 1  # class subsets vary


def test_new_retriever_weights_depend_on_the_seed_only():
    import torch

    from k2v_hub.pipeline import new_retriever

    extractor = type("E", (), {"name": "pixels-8", "dim": 12})()
    make = lambda seed: new_retriever(extractor, probe_spec={}, probe_fingerprint="x", seed=seed,  # noqa: E731
                                      embed_dim=8, hidden_dim=8).fingerprint()
    first = make(0)
    torch.rand(100)  # whatever ran before must not change the initial weights
    assert make(0) == first != make(1)
