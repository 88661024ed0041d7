"""Leak-free splits of the bench zoo: no image of a training task is in a validation or evaluation task.

The bench plan's tasks are drawn, per source, from one held-out pool; each class's pool is cut into disjoint parts
(train / val / eval). This test replays the plan and the image draws of every task (no model is trained) and
compares the pixels.
"""

from __future__ import annotations

import pytest

from k2v_hub.zoo.plan import PROFILES, plan_zoo
from k2v_hub.zoo.tasks import POOL_PARTS

from ahead import task_image_hashes


@pytest.mark.parametrize("profile", ["tiny", "bench"])
def test_training_validation_and_evaluation_images_are_disjoint(profile, bench_task_image_hashes):
    """(The bench plan's draws are replayed ahead, beside the tests before this one: ``conftest.py``.)"""
    hashes = bench_task_image_hashes if profile == "bench" else task_image_hashes(profile)
    assert all(hashes[p] for p in POOL_PARTS), {p: len(h) for p, h in hashes.items()}
    assert not hashes["train"] & hashes["eval"]
    assert not hashes["train"] & hashes["val"]
    assert not hashes["val"] & hashes["eval"]


@pytest.mark.parametrize("profile", ["tiny", "bench"])
def test_no_evaluation_class_set_is_a_training_class_set_of_its_source(profile):
    plan = plan_zoo(profile)
    train = {(t.source, frozenset(t.class_names)) for t in plan.tasks if t.split == "train"}
    clash = [t.task_id for t in plan.tasks if t.split != "train" and (t.source, frozenset(t.class_names)) in train]
    assert clash == []


def test_every_split_has_tasks_and_the_pool_parts_fit():
    prof = PROFILES["bench"]
    assert prof.n_pool // len(POOL_PARTS) >= prof.n_support + prof.n_query
    splits = {t.split for t in plan_zoo("bench").tasks}
    assert {"train", "val", "eval", "inductive"} <= splits
