"""The whole path through the CLI on the embedded default: train -> index -> find, on the tiny zoo.

The CLI runs go beside the in-process work they are compared with (started first, collected after it), and the
train -> index -> find run is started ahead (``conftest.py``): two cores serve two at once.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fakes import start_process, trained_mask_of  # noqa: E402


def checked(proc):
    """``proc`` (a CompletedProcess) if it exited 0."""
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def start_cli(*args):
    """Start `python -m k2v_hub.cli ...` in a subprocess; return a function that waits for it and returns the
    CompletedProcess (checked)."""
    wait = start_process([sys.executable, "-m", "k2v_hub.cli", *args])
    return lambda: checked(wait())


def first_stage_of(matches, retriever_dir, index_dir) -> list[float]:
    """Each match's first-stage score as `find_model` made it (:func:`k2v_hub.declared.first_stage_scores`) from
    the matches' own fields (``knowledge_score``, ``data_score``: every row of the index is a match) and the models
    the retriever lists as trained on."""
    from k2v_hub.declared import first_stage_scores

    get = (lambda m, k: m[k]) if isinstance(matches[0], dict) else getattr
    ids = [get(m, "model_id") for m in matches]
    trained = trained_mask_of(retriever_dir, index_dir, ids)
    return first_stage_scores(np.array([get(m, "knowledge_score") for m in matches]),
                              np.array([get(m, "data_score") for m in matches]), trained).tolist()


def test_train_index_find_through_cli(tiny_zoo, cli_train_index_find):
    """The three commands ran ahead (``conftest.py``), one after the other, on the tiny zoo and its first task."""
    from k2v_hub.zoo.data import ZooData

    zoo = ZooData(tiny_zoo)
    runs = iter(cli_train_index_find["runs"])
    retr = cli_train_index_find["retriever"]
    out = checked(next(runs))  # train --zoo ZOO --out RETRIEVER --steps 30 --format json
    info = json.loads(out.stdout)
    assert info["mode"] == "supervised" and info["steps"] == 30 and info["models"] >= 1
    assert (retr / "model.safetensors").is_file() and (retr / "config.json").is_file()
    card = (retr / "README.md").read_text()
    assert "library_name: k2v-hub" in card and "Feature space" in card

    index_dir = cli_train_index_find["index"]
    out = checked(next(runs))  # index --org ORG --zoo ZOO --out INDEX --retriever RETRIEVER --format json
    report = json.loads(out.stdout)
    assert sorted(report["indexed"] + report["reused"] + report["reencoded"]) == zoo.model_ids
    assert not report["skipped"]
    assert (index_dir / "data" / "train-00000-of-00001.parquet").is_file()

    out = checked(next(runs))  # find --dataset TASK --index INDEX --format json --top-k 3
    matches = json.loads(out.stdout)
    assert [m["rank"] for m in matches] == [1, 2, 3]
    assert all(m["model_id"] in zoo.model_ids and len(m["revision"]) == 40 for m in matches)
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True)


def test_find_model_python_api_matches_cli(tiny_index, tiny_task):
    from k2v_hub import find_model

    cli = start_cli("find", "--dataset", str(tiny_task), "--index", str(tiny_index), "--format", "json", "--top-k", "10")
    matches = find_model(str(tiny_task), str(tiny_index), top_k=10, show_progress=False)
    cli = json.loads(cli().stdout)
    assert [m.model_id for m in matches] == [m["model_id"] for m in cli]
    assert [m.score for m in matches] == pytest.approx([m["score"] for m in cli], abs=1e-5)
    assert set(matches.timings) >= {"features_s", "encode_s", "search_s"}


def test_small_org_gets_the_full_black_box_rerank_by_default(tiny_zoo, tiny_index, tiny_retriever, tiny_task,
                                                           tmp_path):
    """The whole tiny org fits in rerank_k: with its models at hand (--zoo), every score comes from the second
    stage, fused with the first stage's score (every zoo card names its data; the task's best data match is a
    model the retriever trained on, so the vector weighs in) as the default weight says: by each model's
    own accuracy when the dataset's class names are the models' labels (the tiny task's are), by LEEP when no
    model knows them (the same images, classes renamed)."""
    import datasets

    from k2v_hub.find import rerank_band_score
    from k2v_hub.query_data import find_columns
    from k2v_hub.rerank import FUSION_WEIGHT, fuse_scores
    from k2v_hub.zoo.data import ZooData

    zoo = ZooData(tiny_zoo)
    task = datasets.load_from_disk(str(tiny_task))
    label_column = find_columns(task["support"])[1]
    n_classes = task["support"].features[label_column].num_classes
    renamed = tmp_path / "renamed"
    task.cast_column(label_column, datasets.ClassLabel(names=[f"class_{i}" for i in range(n_classes)])) \
        .save_to_disk(str(renamed))
    named = start_cli("find", "--dataset", str(tiny_task), "--index", str(tiny_index), "--zoo", str(tiny_zoo),
                      "--format", "json", "--top-k", "10", "--rerank-images", "20")
    answer = start_cli("find", "--dataset", str(renamed), "--index", str(tiny_index), "--zoo", str(tiny_zoo),
                       "--format", "json", "--top-k", "10", "--rerank-images", "20")
    # without the models at hand (no --zoo) the same call, checked below
    first_stage = start_cli("find", "--dataset", str(tiny_task), "--index", str(tiny_index), "--format", "json",
                            "--top-k", "10")
    named = json.loads(named().stdout)
    assert len(named) == len(zoo.model_ids) and {m["stage"] for m in named} == {"rerank:head-accuracy"}
    assert all(0 <= m["rerank_score"] <= 1 for m in named) and named[0]["rerank_score"] > 0  # accuracies
    fused = fuse_scores([m["rerank_score"] for m in named], first_stage_of(named, tiny_retriever, tiny_index),
                        FUSION_WEIGHT)
    assert [m["score"] for m in named] == pytest.approx([rerank_band_score(v) for v in fused], abs=1e-9)
    answer = json.loads(answer().stdout)
    assert len(answer) == len(zoo.model_ids)
    assert {m["stage"] for m in answer} == {"rerank:leep"}
    assert [m["score"] for m in answer] == sorted((m["score"] for m in answer), reverse=True)
    assert all(m["rerank_score"] <= 0 for m in answer)  # LEEP is a mean log-likelihood
    fused = fuse_scores([m["rerank_score"] for m in answer], first_stage_of(answer, tiny_retriever, tiny_index),
                        FUSION_WEIGHT)
    assert [m["score"] for m in answer] == pytest.approx([rerank_band_score(v) for v in fused], abs=1e-9)
    assert all("z(rerank_score) + 0.5 * z(first-stage score)" in m["score_meaning"] for m in answer)
    # the top score is LEEP of that model's black-box answers on the 20 images drawn from the query rows
    import numpy as np

    from k2v_hub.baselines import leep
    from k2v_hub.query_data import select_query_rows
    from k2v_hub.oracle import TransformersOracle, to_rgb
    from k2v_hub.rerank import _sample

    ds = datasets.load_from_disk(str(tiny_task))["support"]
    image_column, label_column, names = find_columns(ds)
    chosen, keys, _ = select_query_rows(ds, label_column, names)
    used = ds.select(np.sort(np.concatenate([chosen[k] for k in keys])).tolist())
    sub, labels, _ = _sample(used, label_column, 20, 0)
    probs = TransformersOracle(tiny_zoo / answer[0]["model_id"]).predict_proba([to_rgb(im) for im in sub[image_column]])
    assert answer[0]["rerank_score"] == pytest.approx(leep(probs, labels), abs=1e-5)
    # without the models at hand the same call stays on the first stage (nothing is downloaded): every zoo card
    # names its data, so every model is scored by its data fingerprint (the vector orders the best two)
    first = json.loads(first_stage().stdout)
    assert [m["stage"] for m in first] == ["data+vector"] * 2 + ["data"] * 3
    assert [m["score"] for m in first] == pytest.approx(first_stage_of(first, tiny_retriever, tiny_index), abs=1e-6)


def test_scores_fall_along_a_partly_reranked_list(tiny_zoo, tiny_index, tiny_retriever, tiny_task):
    """LEEP re-ranks 2 of the org's 5 models: the list holds re-ranked and first-stage matches, and `score` falls
    along all of it (raw, LEEP values are negative and cosines positive: the scores would jump up after the head).
    Each stage's raw value stays in its own field; the JSON says what `score` is. With ``rerank_fusion=0`` the
    head is in LEEP's order alone."""
    from k2v_hub import find_model
    from k2v_hub.find import rerank_band_score

    cli = start_cli("find", "--dataset", str(tiny_task), "--index", str(tiny_index), "--zoo", str(tiny_zoo),
                    "--rerank", "leep", "--rerank-k", "2", "--rerank-images", "12", "--format", "json")
    matches = find_model(str(tiny_task), str(tiny_index), top_k=5, rerank="leep", rerank_k=2, rerank_images=12,
                         models_root=str(tiny_zoo), show_progress=False)
    alone = find_model(str(tiny_task), str(tiny_index), top_k=5, rerank="leep", rerank_k=2, rerank_images=12,
                       models_root=str(tiny_zoo), rerank_fusion=0, show_progress=False)
    for answer in (matches, alone):
        scores = [m.score for m in answer]
        assert len(answer) == 5 and scores == sorted(scores, reverse=True)
        head, rest = answer[:2], answer[2:]
        assert [m.stage for m in head] == ["rerank:leep"] * 2 and {m.stage for m in rest} == {"data"}
        assert all(m.rerank_score <= 0 for m in head)
        assert all(m.rerank_score is None and m.score == m.data_score for m in rest)
        assert min(m.score for m in head) > max(m.score for m in rest)
        assert all("re-ranked by leep" in m.score_meaning for m in head)
        assert {m.score_meaning for m in rest} == {"data_score"}
    first = dict(zip([m.model_id for m in matches], first_stage_of(matches, tiny_retriever, tiny_index)))
    # alone: LEEP's order and its band score; fused: z over two candidates is -1/+1, so with the weight 0.5 LEEP
    # still decides the order and the first stage's score moves each score by 0.5 toward agreement or away from it
    assert alone[0].rerank_score >= alone[1].rerank_score
    assert all(m.score == pytest.approx(rerank_band_score(m.rerank_score), abs=1e-12) for m in alone[:2])
    head = matches[:2]
    assert [m.model_id for m in head] == [m.model_id for m in alone[:2]]
    agree = 1.0 if first[head[0].model_id] >= first[head[1].model_id] else -1.0
    assert [m.score for m in head] == pytest.approx([rerank_band_score(1 + 0.5 * agree),
                                                     rerank_band_score(-1 - 0.5 * agree)], abs=1e-9)

    cli = json.loads(cli().stdout)
    assert [m["score"] for m in cli] == sorted((m["score"] for m in cli), reverse=True)
    assert [m["model_id"] for m in cli] == [m.model_id for m in matches]
    assert all({"score", "score_meaning", "knowledge_score", "data_score", "rerank_score", "stage"} <= set(m)
               for m in cli)


def test_head_accuracy_rerank_measures_each_candidate_as_it_is_on_the_users_class_names(tiny_zoo, tiny_index,
                                                                                      tiny_task):
    """``rerank="head-accuracy"``: each candidate's own head on the user's images, over the dataset's class names it
    has; the task's own model (it knows every class) comes first (tied or alone), a model that knows none of the names scores 0."""
    import datasets
    import numpy as np

    from k2v_hub import find_model
    from k2v_hub.baselines import head_accuracy
    from k2v_hub.oracle import TransformersOracle, to_rgb
    from k2v_hub.query_data import find_columns, select_query_rows
    from k2v_hub.rerank import _sample
    from k2v_hub.zoo.data import ZooData

    matches = find_model(str(tiny_task), str(tiny_index), top_k=10, rerank="head-accuracy", rerank_k=10,
                         rerank_images=20, models_root=str(tiny_zoo), rerank_fusion=0, show_progress=False)
    assert {m.stage for m in matches} == {"rerank:head-accuracy"}
    ds = datasets.load_from_disk(str(tiny_task))["support"]
    image_column, label_column, class_names = find_columns(ds)
    chosen, keys, names = select_query_rows(ds, label_column, class_names)
    used = ds.select(np.sort(np.concatenate([chosen[k] for k in keys])).tolist())
    sub, labels, sampled = _sample(used, label_column, 20, 0)
    task_names = [dict(zip(map(str, keys), names))[k] for k in sampled]
    for m in matches:
        oracle = TransformersOracle(tiny_zoo / m.model_id)
        probs = oracle.predict_proba([to_rgb(im) for im in sub[image_column]])
        assert m.rerank_score == pytest.approx(head_accuracy(probs, labels, oracle.labels, task_names), abs=1e-9)
    assert [m.rerank_score for m in matches] == sorted((m.rerank_score for m in matches), reverse=True)
    origin = ZooData(tiny_zoo).task(tiny_task.name)["origin_model"]
    assert matches[0].rerank_score > 0 and origin in [m.model_id for m in matches
                                                      if m.rerank_score == matches[0].rerank_score]
    strangers = [m for m in matches if not set(m.labels) & set(names)]
    assert strangers and all(m.rerank_score == 0 for m in strangers)


def test_rerank_counts_queries_and_takes_candidates_from_labels_too(tiny_zoo, tiny_index, tiny_task):
    """rerank_k=2: two candidates, one by label names and one by vector; each costs n_images queries."""
    from k2v_hub import find_model

    matches = find_model(str(tiny_task), str(tiny_index), top_k=5, rerank="nce", rerank_k=2, rerank_images=12,
                         models_root=str(tiny_zoo), show_progress=False)
    assert [m.stage for m in matches[:2]] == ["rerank:nce"] * 2
    assert {m.stage for m in matches[2:]} == {"data"}
    assert matches.queries == 2 * 12 and matches.timings["rerank_s"] > 0
    plain = find_model(str(tiny_task), str(tiny_index), top_k=5, rerank=None, show_progress=False)
    reranked = {m.model_id for m in matches[:2]}
    best_label = max(matches, key=lambda m: (m.label_score, m.data_score))
    assert best_label.label_score > 0 and best_label.model_id in reranked
    assert plain[0].model_id in reranked
