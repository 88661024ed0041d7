"""Training the retriever with Accelerate: L = L_MKC + alpha * L_SAL (Eqs. 14-16 of the paper).

Three ways to get training data, one trainer:

- **supervised**: (task, model, accuracy) ground truth; each task's positive is its best model
  (:func:`supervised_data`).
- **self-supervised**: an index alone; pseudo-tasks are probe images labelled by each model's own confident
  predictions, and the positive is that model (:func:`self_supervised_data`). No labelled task needed.
- **inductive use**: a trained retriever encodes models it never saw; nothing to train.
- **adaptation**: :func:`combine_training_data` joins supervised tasks and an index's pseudo-tasks, so a trained
  retriever learns an org's new models without forgetting the tasks it was trained on.

Tasks are augmented too (random class subsets and noise on the class means, ``task_class_dropout`` and
``task_noise``): with a few tasks per model, the retriever otherwise memorises them. `k2v-hub bench --profile bench`
on the 72 evaluation tasks of seen models, all 48 models as candidates: R@1 0.764 with 2 training tasks per model
and no task augmentation (k2v-hub 0.1.0 as first released), 0.944 with 10 tasks per model and this augmentation.

L_MKC is a cross-entropy over model identities on *augmented* views of each model's graph (random class
subsets and feature noise), which pushes M_EXT to keep what identifies a model and drop probe noise. L_SAL is
the paper's cosine loss with margin 0.4 (``sal="cosine"``) or an InfoNCE contrastive loss
(``sal="contrastive"``). The same code runs on one CPU process, N processes (``accelerate launch`` /
``torchrun``) or GPUs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from .knowledge import knowledge_fingerprint, pseudo_tasks
from .options import SAL_LOSSES
from .utils import logger, progress


@dataclass
class TrainingArguments:
    """How to train a retriever.

    Args:
        steps: optimisation steps.
        batch_tasks: tasks per step (per process).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        alpha: weight of L_SAL in ``L_MKC + alpha * L_SAL``.
        use_mkc: include L_MKC (the ablation turns it off).
        sal: ``"cosine"`` (margin 0.4, the paper) or ``"contrastive"`` (InfoNCE).
        margin: the cosine margin.
        temperature: InfoNCE temperature.
        class_dropout: probability of dropping each class from an augmented model graph (L_MKC views).
        feature_noise: std of Gaussian noise added to augmented graph features, relative to their std.
        task_class_dropout: probability of dropping each class from a training task's class means (at least 2
            stay; the positive model is kept): a task of fewer classes of the same data.
        task_noise: std of Gaussian noise added to a training task's class means, relative to their std (the
            spread a different sample of the same classes gives).
        models_per_step: model graphs encoded per step (the batch's positives plus random others, which serve as
            negatives); bounds the cost of a step on large zoos. ``0`` = all models every step.
        seed: everything is deterministic given it, on one machine with the same torch thread count (features
            computed with another thread count differ in their last bits, which can change the trained retriever).
        cpu: force CPU even when a GPU is present.
        threads: torch CPU threads while training (the encoders are small LSTMs: one thread is fastest, and it
            keeps N processes on N cores from oversubscribing). ``0`` leaves torch's setting alone.
    """

    steps: int = 300
    batch_tasks: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    alpha: float = 1.0
    use_mkc: bool = True
    sal: str = "cosine"
    margin: float = 0.4
    temperature: float = 0.1
    class_dropout: float = 0.2
    feature_noise: float = 0.05
    task_class_dropout: float = 0.5
    task_noise: float = 0.2
    models_per_step: int = 24
    seed: int = 0
    cpu: bool = False
    threads: int = 1

    def __post_init__(self):
        if self.sal not in SAL_LOSSES:
            raise ValueError(f"sal={self.sal!r} is not one of {', '.join(SAL_LOSSES)}.")
        if self.steps < 1 or self.batch_tasks < 1:
            raise ValueError(f"steps ({self.steps}) and batch_tasks ({self.batch_tasks}) must be >= 1.")
        for name in ("class_dropout", "task_class_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")


@dataclass
class TrainingData:
    """Precomputed inputs: model graph sets, task class means and, per task, the index of its positive model.

    Attributes:
        graphs: ``[K, K, D]`` float32 arrays, one per model.
        tasks: ``[K, D]`` float32 class-mean arrays, one per task.
        targets: per task, the index into ``graphs`` of its best model.
        model_ids: names of the models (for logs and cards).
        mode: ``supervised`` or ``self-supervised``.
        model_knowledge: per model, :func:`~k2v_hub.knowledge.knowledge_fingerprint` of the record its graph
            was built from (empty if unknown): which black boxes the retriever learnt, whatever their repo.
    """

    graphs: list
    tasks: list
    targets: list
    model_ids: list = field(default_factory=list)
    mode: str = "supervised"
    model_knowledge: list = field(default_factory=list)

    def __post_init__(self):
        if len(self.tasks) != len(self.targets):
            raise ValueError(f"{len(self.tasks)} tasks but {len(self.targets)} targets.")
        if not self.graphs or not self.tasks:
            raise ValueError("Training needs at least one model graph and one task.")
        bad = [t for t in self.targets if not 0 <= t < len(self.graphs)]
        if bad:
            raise ValueError(f"Task targets out of range: {bad[:5]}.")
        if self.model_knowledge and len(self.model_knowledge) != len(self.model_ids):
            raise ValueError(f"{len(self.model_knowledge)} knowledge fingerprints for {len(self.model_ids)} models.")


def supervised_data(graphs, model_ids, tasks, task_scores, *, records=()) -> TrainingData:
    """Training data from ground truth: ``task_scores[i][j]`` is the accuracy of model j on task i.

    ``records``: each model's :class:`~k2v_hub.knowledge.KnowledgeRecord`, whose fingerprints the trained retriever
    keeps (``training_info.trained_knowledge``) so that it knows these exact black boxes again.
    """
    scores = np.asarray(task_scores, dtype=np.float64)
    targets = [int(np.argmax(row)) for row in scores]
    knowledge = [knowledge_fingerprint(r.to_json()) for r in records]
    return TrainingData(list(graphs), list(tasks), targets, list(model_ids), "supervised", knowledge)


def self_supervised_data(graphs, model_ids, records, probe_features, *, tasks_per_model=12, seed=0) -> TrainingData:
    """Training data from an index alone: pseudo-tasks of probes labelled by each model's confident answers."""
    rng = np.random.default_rng(seed)
    tasks, targets = [], []
    for j, record in enumerate(records):
        for idx, labels in pseudo_tasks(record, n_tasks=tasks_per_model, rng=rng):
            feats = probe_features[idx]
            tasks.append(np.stack([feats[labels == c].mean(0) for c in np.unique(labels)]).astype(np.float32))
            targets.append(j)
    if not tasks:
        raise ValueError("No model in the index has two confident classes: no pseudo-task can be made.")
    return TrainingData(list(graphs), tasks, targets, list(model_ids), "self-supervised")


def combine_training_data(*parts: TrainingData) -> TrainingData:
    """One training set from several (e.g. supervised tasks + an index's pseudo-tasks), models merged by id.

    Adapting a trained retriever on pseudo-tasks alone pulls it towards probe images and away from the real tasks
    it learnt; training on both keeps what it knew while it learns the new models.
    """
    ids, graphs, tasks, targets, knowledge = [], [], [], [], []
    position = {}
    for part in parts:
        if len(part.model_ids) != len(part.graphs):
            raise ValueError("Combining training data needs model_ids for every graph.")
        fingerprints = part.model_knowledge or [None] * len(part.model_ids)
        for mid, graph, fingerprint in zip(part.model_ids, part.graphs, fingerprints):
            if mid not in position:
                position[mid] = len(ids)
                ids.append(mid)
                graphs.append(graph)
                knowledge.append(fingerprint)
        tasks += list(part.tasks)
        targets += [position[part.model_ids[t]] for t in part.targets]
    known = knowledge if all(f is not None for f in knowledge) else []
    return TrainingData(graphs, tasks, targets, ids, "+".join(dict.fromkeys(p.mode for p in parts)), known)


def _kept_classes(k: int, rng: np.random.Generator, dropout: float) -> np.ndarray:
    """Indices of the classes an augmented view keeps: each dropped with probability ``dropout``, at least 2."""
    keep = np.flatnonzero(rng.random(k) >= dropout)
    if len(keep) < 2:
        keep = np.sort(rng.choice(k, size=min(2, k), replace=False))
    return keep


def augment_graph(graph: np.ndarray, rng: np.random.Generator, class_dropout: float, noise: float) -> np.ndarray:
    """An augmented view of a model graph: a random subset of classes (at least 2) plus feature noise."""
    keep = _kept_classes(graph.shape[0], rng, class_dropout)
    out = graph[np.ix_(keep, keep)]
    if noise > 0:
        out = out + rng.normal(0, noise * (graph.std() + 1e-6), out.shape).astype(np.float32)
    return out.astype(np.float32)


def augment_task(means: np.ndarray, rng: np.random.Generator, class_dropout: float, noise: float) -> np.ndarray:
    """An augmented view of a task's class means ``[K, D]``: a random subset of classes (at least 2) plus noise."""
    out = means[_kept_classes(len(means), rng, class_dropout)]
    if noise > 0:
        out = out + rng.normal(0, noise * (means.std() + 1e-6), out.shape)
    return out.astype(np.float32)


def _models_for_step(targets: np.ndarray, n_models: int, per_step: int, rng: np.random.Generator) -> list[int]:
    """The batch's positive models plus random others (negatives), sorted; all models if ``per_step`` is 0."""
    if per_step <= 0 or per_step >= n_models:
        return list(range(n_models))
    chosen = set(int(t) for t in targets)
    others = [m for m in rng.permutation(n_models).tolist() if m not in chosen]
    chosen.update(others[: max(0, per_step - len(chosen))])
    return sorted(chosen)


def sal_loss(t: torch.Tensor, h: torch.Tensor, targets: torch.Tensor, args: TrainingArguments) -> torch.Tensor:
    """L_SAL between task vectors ``t [B, d]`` and model vectors ``h [M, d]`` (Eq. 15, or InfoNCE)."""
    cos = t @ h.T
    pos_mask = F.one_hot(targets, h.shape[0]).bool()
    if args.sal == "contrastive":
        return F.cross_entropy(cos / args.temperature, targets)
    pos = (1 - cos[pos_mask]).mean()
    neg = torch.relu(cos[~pos_mask] - args.margin)
    return pos + (neg.mean() if neg.numel() else cos.sum() * 0)


def train_retriever(retriever, data: TrainingData, args: TrainingArguments | None = None, *, accelerator=None,
                    show_progress: bool = True) -> dict:
    """Train ``retriever`` in place with Accelerate; return metrics (losses, seconds, steps, processes)."""

    args = args or TrainingArguments()
    previous_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return _train(retriever, data, args, accelerator, show_progress)
    finally:
        torch.set_num_threads(previous_threads)


def _train(retriever, data, args, accelerator, show_progress) -> dict:
    accelerator = accelerator or Accelerator(cpu=args.cpu)
    set_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1000 * accelerator.process_index)
    mkc_head = nn.Linear(retriever.embed_dim, len(data.graphs), bias=False)
    params = list(retriever.parameters()) + (list(mkc_head.parameters()) if args.use_mkc else [])
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    )
    model, mkc_head, optimizer, scheduler = accelerator.prepare(retriever, mkc_head, optimizer, scheduler)
    model.train()
    targets_all = np.asarray(data.targets)
    start, history = time.perf_counter(), []
    bar = progress(range(args.steps), desc="Training retriever", total=args.steps,
                   disable=not (show_progress and accelerator.is_local_main_process) or None)
    for _step in bar:
        batch = rng.integers(0, len(data.tasks), size=args.batch_tasks)
        chosen = _models_for_step(targets_all[batch], len(data.graphs), args.models_per_step, rng)
        position = {m: i for i, m in enumerate(chosen)}
        graphs = [augment_graph(data.graphs[m], rng, args.class_dropout, args.feature_noise) for m in chosen]
        graphs = [torch.from_numpy(g).to(accelerator.device) for g in graphs]
        tasks = [np.asarray(data.tasks[i], dtype=np.float32) for i in batch]
        if args.task_class_dropout > 0 or args.task_noise > 0:
            tasks = [augment_task(t, rng, args.task_class_dropout, args.task_noise) for t in tasks]
        tasks = [torch.from_numpy(t).to(accelerator.device) for t in tasks]
        targets = torch.tensor([position[int(t)] for t in targets_all[batch]], device=accelerator.device)
        h, t = model(graphs, tasks)
        loss_sal = sal_loss(t, h, targets, args)
        loss = args.alpha * loss_sal
        loss_mkc = torch.zeros(())
        if args.use_mkc:
            ids = torch.as_tensor(chosen, device=accelerator.device)
            loss_mkc = F.cross_entropy(mkc_head(h) / 0.1, ids)
            loss = loss + loss_mkc
        optimizer.zero_grad()
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        history.append((float(loss_mkc.detach()), float(loss_sal.detach())))
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(sal=f"{history[-1][1]:.3f}", mkc=f"{history[-1][0]:.3f}")
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    tail = np.asarray(history[-max(1, args.steps // 10):])
    metrics = {
        "mode": data.mode,
        "steps": args.steps,
        "models": len(data.graphs),
        "trained_models": list(data.model_ids),
        "trained_knowledge": list(data.model_knowledge),
        "tasks": len(data.tasks),
        "processes": accelerator.num_processes,
        "seconds": round(time.perf_counter() - start, 2),
        "final_loss_mkc": round(float(tail[:, 0].mean()), 4),
        "final_loss_sal": round(float(tail[:, 1].mean()), 4),
        "args": asdict(args),
    }
    logger.info("Trained retriever: %s", metrics)
    unwrapped.training_info = {k: v for k, v in metrics.items() if k != "args"}
    if unwrapped._hub_mixin_config is not None:
        unwrapped._hub_mixin_config["training_info"] = unwrapped.training_info
    return metrics


def recall_at_k(model_vecs: np.ndarray, task_vecs: np.ndarray, targets, k: int = 1) -> float:
    """Fraction of tasks whose target model is among the top-k by cosine."""
    scores = task_vecs @ model_vecs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean([t in row for t, row in zip(targets, top)]))
