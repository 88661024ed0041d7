"""Ranking for fine-tuning (`k2v_hub.finetune_fit`): the features read from an index row, the predictor's training,
its safetensors round trip, and the copy the package ships."""

from __future__ import annotations

import json

import numpy as np
import pytest

from k2v_hub.errors import UsageError
from k2v_hub.finetune_fit import (FEATURES, bundled_finetune_dir, finetune_features, load_finetune_predictor,
                                  train_finetune_predictor)
from k2v_hub.retriever import load_bundled_retriever


def _tasks(n_tasks: int = 30, n_models: int = 12, dim: int = 16, seed: int = 0):
    """Synthetic tasks whose models' fine-tuned accuracy follows how well their fingerprint covers the task."""
    rng = np.random.default_rng(seed)
    fingerprints = [rng.normal(size=(4, dim)) for _ in range(n_models)]
    accuracies = list(rng.uniform(0.5, 1.0, n_models))
    features, ft = [], []
    for _ in range(n_tasks):
        j = rng.integers(n_models)
        means = fingerprints[j][:3] + 0.3 * rng.normal(size=(3, dim))
        x = finetune_features(means, fingerprints, accuracies)
        features.append(x)
        ft.append(0.6 + 0.1 * x[:, 0] + 0.05 * rng.normal(size=n_models))
    return fingerprints, accuracies, features, ft


def test_features_say_how_the_declared_data_meets_the_dataset():
    """A model whose fingerprint holds the dataset's classes scores 1 where another scores less; a model without a
    fingerprint gets no features (`NaN`), and a missing reported accuracy counts as the mean of the others."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 8))
    fingerprints = [np.vstack([means, rng.normal(size=(2, 8))]), rng.normal(size=(5, 8)), None]
    x = finetune_features(means, fingerprints, [0.9, None, 0.5])
    assert x.shape == (3, len(FEATURES))
    col = {name: x[:, i] for i, name in enumerate(FEATURES)}
    assert col["data"][0] == pytest.approx(1.0) and col["data"][1] < 0.9
    assert col["coverage_z"][0] > col["coverage_z"][1] and col["n_classes"][0] == 5
    assert col["reported_accuracy"][1] == pytest.approx(0.9)  # only model 0 reports one among those with data
    assert np.isnan(x[2]).all()


def test_the_predictor_learns_the_ranking_and_loads_back_from_safetensors(tmp_path):
    """Trained on tasks where the best-matching data fine-tunes best, it ranks held-out tasks that way; saved with
    the hub mixin (config + safetensors, no pickle) it loads back to the same predictions, its feature space
    recorded."""
    fingerprints, accuracies, features, ft = _tasks()
    predictor = train_finetune_predictor(features[:20], ft[:20], hidden=16, steps=300, feature_space="space-a")
    for x, y in zip(features[20:], ft[20:]):
        assert np.corrcoef(predictor.predict(x), y)[0, 1] > 0.5
    predictor.save_pretrained(tmp_path / "p")
    files = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert json.loads((tmp_path / "p" / "config.json").read_text())["feature_space"] == "space-a"
    back = load_finetune_predictor(tmp_path / "p")
    assert back.feature_space == "space-a"
    np.testing.assert_allclose(back.predict(features[25]), predictor.predict(features[25]), rtol=1e-5)
    assert np.isnan(back.predict(np.full((2, len(FEATURES)), np.nan))).all()


def test_a_folder_without_a_predictor_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(UsageError, match="No fine-tune predictor") as err:
        load_finetune_predictor(tmp_path)
    assert "--finetune-only" in str(err.value)


def test_a_damaged_predictor_is_refused_with_what_to_do(tmp_path):
    """Weights that are not safetensors, or a config of another shape, are refused with one message."""
    predictor = train_finetune_predictor([np.random.default_rng(0).normal(size=(4, len(FEATURES)))],
                                         [np.arange(4.0)], steps=5)
    predictor.save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UsageError, match="Cannot load the fine-tune predictor"):
        load_finetune_predictor(tmp_path / "p")
    predictor.save_pretrained(tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    (tmp_path / "q" / "config.json").write_text(json.dumps(config | {"hidden": 64}))
    with pytest.raises(UsageError, match="Cannot load the fine-tune predictor") as err:
        load_finetune_predictor(tmp_path / "q")
    assert "--finetune-only" in str(err.value)


def test_training_needs_two_models_with_features_in_some_task():
    with pytest.raises(ValueError, match="No training task"):
        train_finetune_predictor([np.full((3, len(FEATURES)), np.nan)], [np.ones(3)])


def test_the_package_ships_a_predictor_in_the_default_retrievers_feature_space():
    """`find_model(goal="fine-tune")` works out of the box: the shipped predictor loads (safetensors) and was made
    in the shipped retriever's feature space; its card says how it was built and what it measured."""
    predictor = load_finetune_predictor()
    assert predictor.feature_space == load_bundled_retriever().feature_space
    card = (bundled_finetune_dir() / "README.md").read_text()
    assert "k2v-hub build-retriever --profile bench --seed 0 --finetune-only" in card
    assert "transfer tasks" in card
