"""Evidence from declared data (`k2v_hub.declared`): the index reads the dataset a model card names, stores its
fingerprint, and `find_model` ranks by it; models without one keep their vector, on the same scale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from k2v_hub import find_model
from k2v_hub.declared import (ACCURACY_WEIGHT, MAX_CLASSES, data_scores, decode_fingerprint, encode_fingerprint,
                              first_stage_scores, hubness, place_vector, reported_accuracy, vector_weighs_in)
from k2v_hub.errors import IndexError_, UsageError
from k2v_hub.finetune_fit import FEATURES, train_finetune_predictor
from k2v_hub.hub import LocalSource, RepoRef, folder_revision
from k2v_hub.index import ROWS_DIR, IndexSettings, data_columns, load_index, read_rows, write_index
from k2v_hub.knowledge import knowledge_fingerprint
from k2v_hub.retriever import Retriever
from k2v_hub.zoo.data import ZooData

from fakes import rows_of, trained_mask_of  # noqa: E402


def test_every_zoo_card_gives_its_row_a_fingerprint_of_the_models_classes(tiny_zoo, tiny_index):
    """Each tiny-zoo card names its source's dataset repo: the row records which revision was read, and the
    fingerprint has one class mean per class the model predicts (the dataset has more classes than the model)."""
    zoo = ZooData(tiny_zoo)
    for model_id, row in rows_of(tiny_index).items():
        source = zoo.models[model_id]["source"]
        dataset = f"{zoo.org}/{source}"
        assert row["data_note"] == ""
        assert row["data_source"] == f"{dataset}@{folder_revision(tiny_zoo / 'datasets' / dataset)}"
        fingerprint = decode_fingerprint(row["data_fingerprint"], 1280)
        assert fingerprint.shape == (len(row["labels"]), 1280) and np.isfinite(fingerprint).all()
        # the accuracy the card's model-index reports on that dataset's validation split
        assert row["reported_accuracy"] == pytest.approx(zoo.models[model_id]["val_acc"], abs=1e-3)


def test_a_card_without_readable_data_costs_only_the_fingerprint(tiny_zoo, tiny_index):
    """No `datasets:` in the card, or one that names a repo that is not there: the row says why, and has no
    fingerprint."""
    from k2v_hub.features import FeatureExtractor

    source, extractor = LocalSource(tiny_zoo), FeatureExtractor.from_pretrained(None)
    none = data_columns(source, RepoRef("k2v-zoo/x", "0" * 40, {}), ["a", "b"], extractor)
    assert none == {"data_fingerprint": "", "data_source": "", "data_note": "the card names no dataset"}
    missing = data_columns(source, RepoRef("k2v-zoo/x", "0" * 40, {"datasets": ["k2v-zoo/nowhere"]}), ["a", "b"],
                           extractor)
    assert missing["data_fingerprint"] == "" and "k2v-zoo/nowhere" in missing["data_note"]
    assert "not found" in missing["data_note"]


def _index_with_rows(tiny_index, tmp_path, edit) -> str:
    """A copy of the tiny index whose journal rows went through ``edit(rows)`` before the index was rewritten."""
    out = tmp_path / "index"
    shutil.copytree(tiny_index, out)
    rows = read_rows(out)
    edit(rows)
    for row in rows.values():
        (out / ROWS_DIR / (row["model_id"].replace("/", "--") + ".json")).write_text(json.dumps(row))
    meta = json.loads((out / "k2v_index.json").read_text())
    settings = IndexSettings(**{k: meta[k] for k in IndexSettings.__dataclass_fields__ if k in meta})
    write_index(out, read_rows(out), settings)
    return str(out)


def _listing_no_models(retriever_dir) -> Retriever:
    """The tiny retriever as one that does not list the models it trained on (as the shipped default): the
    vector never weighs in on the data scores."""
    plain = Retriever.from_pretrained(retriever_dir)
    plain.training_info = {k: v for k, v in plain.training_info.items() if k != "trained_models"}
    return plain


def test_models_without_a_fingerprint_keep_their_vector_on_the_same_scale(tiny_index, tiny_retriever, tiny_task,
                                                                          tmp_path):
    """Two of five models lose their fingerprint: they are scored by their cosine placed on the data scores'
    scale, the others by their data score, and `score` still falls along the list."""
    dropped = sorted(rows_of(tiny_index))[:2]

    def drop(rows):
        for model_id in dropped:
            rows[model_id].update(data_fingerprint="", data_source="", data_note="the card names no dataset")

    index = _index_with_rows(tiny_index, tmp_path, drop)
    matches = find_model(str(tiny_task), index, top_k=5, rerank=None, show_progress=False,
                         retriever=_listing_no_models(tiny_retriever))
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 + ACCURACY_WEIGHT for s in scores)
    for m in matches:
        if m.model_id in dropped:
            assert m.stage == "vector" and m.data_score is None and "placed on the data scores' scale" in \
                m.score_meaning
        else:
            assert m.stage == "data" and m.score == m.data_score and m.score_meaning == "data_score"


def test_the_vector_orders_the_two_best_data_matches_when_the_best_is_a_model_the_retriever_trained_on(
        tiny_zoo, tiny_index, tiny_retriever):
    """The tiny retriever trained on four of the five zoo models (ground truth) and lists them; the fifth (MNIST)
    it never saw. On one MNIST task the best data match is a trained model (sklearn digits): the two best data
    matches take the two best data scores in the order the vector gives them (`data+vector`), as
    `first_stage_scores` makes it from the matches' own fields (two near-tied data scores: the vector's order); the
    others keep theirs, and a retriever that lists no models gives the data scores. On another MNIST task the best
    data match is the MNIST model: the data alone."""
    zoo = ZooData(tiny_zoo)
    plain = _listing_no_models(tiny_retriever)
    sibling_first, own_first = zoo.task_path("nnr-resnet-mnist-a-s0-0"), zoo.task_path("nnr-resnet-mnist-a-s0-1")
    assert zoo.models["k2v-zoo/resnet-mnist-a-s0"]["role"] == "unseen"
    matches = find_model(str(sibling_first), str(tiny_index), top_k=5, rerank=None, show_progress=False)
    ids = [m.model_id for m in matches]
    trained = trained_mask_of(tiny_retriever, tiny_index, ids)
    assert trained.sum() == 4 and not trained[ids.index("k2v-zoo/resnet-mnist-a-s0")]
    data = np.array([m.data_score for m in matches])
    assert vector_weighs_in(data, trained)
    expected = first_stage_scores(np.array([m.knowledge_score for m in matches]), data, trained)
    assert [m.score for m in matches] == pytest.approx(expected.tolist(), abs=1e-6)
    assert sorted(m.score for m in matches) == sorted(data.tolist())  # the data stage's scores, two in another order
    assert [m.stage for m in matches] == ["data+vector"] * 2 + ["data"] * 3
    assert "the best data match is a model the retriever was trained on" in matches[0].score_meaning
    assert all(m.score == m.data_score and m.score_meaning == "data_score" for m in matches[2:])
    # the data stage alone puts the trained sibling first; with the vector the two near-tied best data matches
    # (0.004 apart here) come in the vector's order, whichever model that favours
    alone = find_model(str(sibling_first), str(tiny_index), top_k=5, rerank=None, show_progress=False, retriever=plain)
    assert {m.stage for m in alone} == {"data"} and all(m.score == m.data_score for m in alone)
    assert alone[0].model_id == "k2v-zoo/resnet-sklearn-digits-a-s0"
    assert alone[0].data_score - alone[1].data_score < 0.01
    assert {m.model_id for m in alone[:2]} == {m.model_id for m in matches[:2]}
    assert matches[0].knowledge_score > matches[1].knowledge_score
    unseen = find_model(str(own_first), str(tiny_index), top_k=5, rerank=None, show_progress=False)
    assert unseen[0].model_id == "k2v-zoo/resnet-mnist-a-s0"
    assert {m.stage for m in unseen} == {"data"} and all(m.score == m.data_score for m in unseen)


def test_a_model_the_retriever_trained_on_is_known_by_its_black_box_knowledge_not_by_its_name(
        tiny_zoo, tiny_index, tiny_retriever, tmp_path):
    """The retriever keeps a fingerprint of each knowledge record it learnt. The best data match of the MNIST task
    (a trained sklearn-digits model) with another record under the same id (retrained weights, another zoo's model
    of that name) is new to it: the vector stays out and the answer is the data stage's. Asked without the
    records, it counts none; the fingerprint does not depend on how the JSON is written."""
    task = str(ZooData(tiny_zoo).task_path("nnr-resnet-mnist-a-s0-0"))
    first = find_model(task, str(tiny_index), top_k=5, rerank=None, show_progress=False)
    best = max(first, key=lambda m: m.data_score).model_id
    ids = sorted(rows_of(tiny_index))
    retriever = Retriever.from_pretrained(tiny_retriever)
    assert len(retriever.training_info["trained_knowledge"]) == len(retriever.training_info["trained_models"]) == 4
    assert retriever.trained_mask(ids) is None

    def retrained(rows):
        record = json.loads(rows[best]["knowledge"])
        record["probe_conf"] = [None if c is None else round(c * 0.99, 6) for c in record["probe_conf"]]
        rows[best]["knowledge"] = json.dumps(record)

    index = _index_with_rows(tiny_index, tmp_path, retrained)
    known, other = trained_mask_of(tiny_retriever, tiny_index, ids), trained_mask_of(tiny_retriever, Path(index), ids)
    assert known.sum() == 4 and other.sum() == 3 and known[ids.index(best)] and not other[ids.index(best)]
    answer = find_model(task, index, top_k=5, rerank=None, show_progress=False)
    assert {m.stage for m in first[:2]} == {"data+vector"} and {m.stage for m in answer} == {"data"}
    assert answer[0].model_id == best and all(m.score == m.data_score for m in answer)
    rewritten = json.dumps(json.loads(rows_of(tiny_index)[best]["knowledge"]), indent=2, sort_keys=True)
    assert knowledge_fingerprint(rewritten) == knowledge_fingerprint(rows_of(tiny_index)[best]["knowledge"])


def test_a_damaged_fingerprint_is_refused_with_what_to_do(tiny_index, tiny_task, tmp_path):
    def damage(rows):
        first = next(iter(rows.values()))
        first["data_fingerprint"] = encode_fingerprint(np.ones((3, 7)))  # another feature space's width

    index = _index_with_rows(tiny_index, tmp_path, damage)
    with pytest.raises(IndexError_, match="malformed data fingerprint") as err:
        find_model(str(tiny_task), index, rerank=None, show_progress=False)
    assert "Rebuild the index" in str(err.value)


def test_fingerprints_round_trip_and_bad_ones_are_refused():
    fp = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    back = decode_fingerprint(encode_fingerprint(fp), 16)
    assert back.dtype == np.float32 and np.allclose(back, fp, atol=1e-2)
    assert decode_fingerprint("", 16) is None
    for bad in (np.full((2, 16), np.inf), np.zeros((MAX_CLASSES + 1, 16)), np.zeros(16)):
        with pytest.raises(ValueError):
            decode_fingerprint(encode_fingerprint(bad), 16)


def test_data_score_is_the_mean_best_cosine_over_the_datasets_classes():
    task = np.array([[1.0, 0.0], [0.0, 1.0]])
    near = np.array([[2.0, 0.0], [0.0, 3.0]])  # both classes present
    half = np.array([[1.0, 0.0], [1.0, 0.1]])  # only the first
    s = data_scores(task, [near, half, None], hubness_weight=0.0)
    assert s[0] == pytest.approx(1.0) and 0.5 < s[1] < 0.6 and np.isnan(s[2])


def test_a_declared_class_close_to_every_other_data_counts_less_than_one_close_only_to_the_users():
    """Two models whose declared classes are equally close to the user's class; the hub's is also close to the
    classes three other models declare, the other's to none. With the discount (CSLS) the hub ranks below; without
    it they tie. A sibling that declares the same data is not its own neighbour, and a lone fingerprint is not
    discounted."""
    task = np.array([[1.0, 0.0, 0.0, 0.0]])
    hub = np.array([[0.8, 0.6, 0.0, 0.0]])
    apart = np.array([[0.8, 0.0, 0.0, 0.6]])
    crowd = [np.array([[0.1, 1.0, 0.1 * i, 0.0]]) for i in range(3)]
    plain = data_scores(task, [hub, apart, *crowd], hubness_weight=0.0)
    assert plain[0] == pytest.approx(plain[1]) and plain[:2].min() > plain[2:].max()
    discounted = data_scores(task, [hub, apart, *crowd])
    assert discounted[1] > discounted[0] > discounted[2:].max()
    hubs = hubness([hub, apart, *crowd])
    assert hubs[0][0] > hubs[1][0]
    siblings = hubness([hub, hub.copy(), None])
    assert siblings[0].tolist() == siblings[1].tolist() == [0.0] and siblings[2] is None
    assert np.array_equal(data_scores(task, [apart]), data_scores(task, [apart], hubness_weight=0.0))


def test_a_search_discounts_the_hubs_of_the_index_it_searches(tiny_index):
    """The index scores a dataset as the module does over the index's own fingerprints, hubs discounted (computed
    once per loaded index: a second search gives the same scores); without the discount the scores differ."""
    idx = load_index(tiny_index)
    fingerprints = idx.fingerprints(1280)
    assert sum(fp is not None for fp in fingerprints) == len(idx) == 5
    means = np.abs(np.random.default_rng(0).normal(size=(3, 1280)))
    accuracies = [row.reported_accuracy for row in idx.rows]
    scores = idx.data_scores(means)
    assert np.array_equal(scores, data_scores(means, fingerprints, accuracies))
    assert np.array_equal(idx.data_scores(means), scores)
    assert not np.allclose(scores, data_scores(means, fingerprints, accuracies, hubness_weight=0.0))


def test_first_stage_scores_mix_data_and_placed_vectors():
    vector = np.array([0.9, 0.1, 0.5, -0.3])
    assert np.array_equal(first_stage_scores(vector, np.full(4, np.nan)), vector)
    data = np.array([0.8, 0.6, np.nan, np.nan])
    mixed = first_stage_scores(vector, data)
    assert mixed[:2].tolist() == [0.8, 0.6] and mixed[2] > mixed[3]  # order of the vectors kept
    assert np.all(np.abs(mixed) <= 1)


def test_a_vector_without_data_ranks_among_the_data_scores_as_it_ranks_among_the_vectors():
    """The default placement gives a model without a data score the data score at its cosine's quantile: an outlying
    cosine lands near the best data score instead of far above it (the `moment` placement, same mean and spread,
    put it on top), and an unsure one in the middle; with one data score only, the moment placement stands in."""
    data = np.array([0.95, 0.90, 0.70, 0.60, 0.50, np.nan, np.nan])
    vector = np.array([0.10, 0.12, 0.11, 0.09, 0.10, 0.60, 0.105])
    quantile, moment = place_vector(vector, data), place_vector(vector, data, "moment")
    assert np.array_equal(quantile[:5], data[:5]) and np.array_equal(moment[:5], data[:5])
    assert moment[5] == 1.0 and int(np.argmax(moment)) == 5  # clipped, above every data score
    assert 0.90 < quantile[5] < 0.95 and int(np.argmax(quantile)) == 0
    assert 0.5 < quantile[6] < 0.9
    assert np.array_equal(first_stage_scores(vector, data), quantile)
    single = np.array([0.8, np.nan, np.nan])
    assert np.array_equal(place_vector(np.array([0.1, 0.5, 0.3]), single),
                          place_vector(np.array([0.1, 0.5, 0.3]), single, "moment"))
    with pytest.raises(ValueError, match="quantile"):
        place_vector(vector, data, "rank")


def test_first_stage_scores_let_the_vector_order_the_two_best_only_when_the_best_is_a_trained_model():
    data = np.array([0.90, 0.88, 0.87, 0.40])
    vector = np.array([0.1, 0.9, 1.0, 0.0])
    trained = np.array([True, True, False, False])
    assert vector_weighs_in(data, trained)
    mixed = first_stage_scores(vector, data, trained)
    # the vector decides between the two best (model 1 first now), who keep the two best scores; model 2 (third,
    # with the best vector) keeps its place: the first three candidates are the data stage's
    assert mixed.tolist() == [0.88, 0.90, 0.87, 0.40]
    assert int(np.argmax(first_stage_scores(vector, data, trained, top=None))) == 2  # every model: it moves too
    # the best data match is a model the retriever never trained on, no mask, or no weight: the data alone
    for mask, weight in ((np.array([False, True, True, True]), 0.5), (None, 0.5), (trained, 0.0)):
        assert np.array_equal(first_stage_scores(vector, data, mask, vector_weight=weight), data)
    assert not vector_weighs_in(data, np.array([False, True, True, True])) and not vector_weighs_in(data, None)
    # without any data score the vector is the score, mask or not
    assert np.array_equal(first_stage_scores(vector, np.full(4, np.nan), trained), vector)


def _card(value, dataset="org/data", split="validation", metric="accuracy") -> dict:
    return {"model-index": [{"name": "m", "results": [{
        "task": {"type": "image-classification"}, "dataset": {"name": "data", "type": dataset, "split": split},
        "metrics": [{"type": metric, "value": value}]}]}]}


def test_reported_accuracy_is_read_only_when_it_is_an_accuracy_on_the_declared_data():
    assert reported_accuracy(_card(0.66), "org/data") == pytest.approx(0.66)
    assert reported_accuracy(_card(87.5), "org/data") == pytest.approx(0.875)  # a percentage
    assert reported_accuracy(_card(0.66, split="test"), "org/data") == pytest.approx(0.66)
    refused = [_card(0.66, dataset="org/other"), _card(0.99, split="train"), _card(0.66, metric="f1"),
               _card(float("nan")), _card(-0.1), _card(140), _card(True), _card("0.9"), {},
               {"model-index": "not a list"}, {"model-index": [{"results": [{"dataset": {}}]}]}]
    assert [reported_accuracy(card, "org/data") for card in refused] == [None] * len(refused)


def test_reported_accuracy_tells_apart_models_that_declare_the_same_data():
    """Same fingerprint: the model whose card reports the higher accuracy ranks first; one that reports none
    stands at the mean of the others; the accuracy moves a score by at most ACCURACY_WEIGHT, so closer data wins."""
    task = np.array([[1.0, 0.0], [0.0, 1.0]])
    same = np.array([[1.0, 0.3], [0.3, 1.0]])  # cosine 0.958 to each of the task's classes
    closer = np.eye(2)  # cosine 1
    s = data_scores(task, [same, same, same, closer], [0.6, 0.9, None, 0.75])
    assert s[1] > s[2] > s[0]
    assert s[2] - s[0] == pytest.approx(ACCURACY_WEIGHT * (np.mean([0.6, 0.9, 0.75]) - 0.6))
    assert s[3] > s[1]
    assert np.array_equal(data_scores(task, [same, closer], [0.6, 0.9], accuracy_weight=0.0),
                          data_scores(task, [same, closer]))


def test_a_tampered_reported_accuracy_is_refused(tiny_index, tiny_task, tmp_path):
    def tamper(rows):
        next(iter(rows.values()))["reported_accuracy"] = 5.0

    index = _index_with_rows(tiny_index, tmp_path, tamper)
    with pytest.raises(IndexError_, match="reported_accuracy outside") as err:
        find_model(str(tiny_task), index, rerank=None, show_progress=False)
    assert "Rebuild the index" in str(err.value)


def test_goal_fine_tune_ranks_by_the_predicted_fine_tuned_accuracy(tiny_index, tiny_task, tmp_path):
    """`goal="fine-tune"`: models with a fingerprint are ranked by the predictor's value (`finetune_score`, the
    score is its tanh), a model without one keeps its vector placed on that scale, and `score` falls along the
    list. The shipped predictor is used when none is given."""
    dropped = sorted(rows_of(tiny_index))[0]

    def drop(rows):
        rows[dropped].update(data_fingerprint="", data_source="", data_note="the card names no dataset")

    index = _index_with_rows(tiny_index, tmp_path, drop)
    matches = find_model(str(tiny_task), index, top_k=5, rerank=None, goal="fine-tune", show_progress=False)
    scores = [m.score for m in matches]
    assert len(matches) == 5 and scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    for m in matches:
        if m.model_id == dropped:
            assert m.stage == "vector" and m.finetune_score is None and "tanh(finetune_score)" in m.score_meaning
        else:
            assert m.stage == "finetune-fit" and m.score == pytest.approx(np.tanh(m.finetune_score))
            assert m.score_meaning == "tanh(finetune_score)" and m.data_score is not None
    as_is = find_model(str(tiny_task), index, top_k=5, rerank=None, show_progress=False)
    assert all(m.finetune_score is None and m.stage in ("data", "data+vector", "vector") for m in as_is)


def test_a_fine_tune_predictor_of_another_feature_space_or_an_unknown_goal_is_refused(tiny_index, tiny_task,
                                                                                      tmp_path):
    x = np.random.default_rng(0).normal(size=(4, len(FEATURES)))
    other = train_finetune_predictor([x], [np.arange(4.0)], steps=5, feature_space="another-space")
    with pytest.raises(IndexError_, match="another-space") as err:
        find_model(str(tiny_task), str(tiny_index), rerank=None, goal="fine-tune", finetune_predictor=other,
                   show_progress=False)
    assert "goal='as-is'" in str(err.value)
    with pytest.raises(UsageError, match="Unknown goal"):
        find_model(str(tiny_task), str(tiny_index), goal="fine-tuning", show_progress=False)
