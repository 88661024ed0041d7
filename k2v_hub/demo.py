"""`k2v-hub demo`: the whole path on the embedded default, in a few minutes on a laptop CPU."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .find import find_model
from .hub import LocalSource
from .index import build_index, load_index
from .pipeline import make_indexer
from .plots import plot_embedding_space
from .retriever import Retriever
from .train import TrainingArguments
from .zoo.build import build_zoo
from .zoo.data import ZooData
from .zoo.training import train_from_zoo


def run_demo(out_dir: str | Path, *, steps: int = 200, say=None, show_progress: bool = True) -> dict:
    """Build the tiny zoo, train (or reuse) a retriever, index the zoo, and answer for an unseen dataset.

    ``say`` receives one line per step (default: printed to stderr); the result is returned, not printed: its
    ``matches`` are the ranked rows (rank, model_id, score, what_it_is, measured_v_acc). A zoo or retriever already
    in ``out_dir`` is reused.
    """
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    say("1/4 Building (or reusing) the tiny offline zoo of real transformers classifiers...")
    build_zoo(out_dir / "zoo", "tiny", show_progress=show_progress)
    zoo = ZooData(out_dir / "zoo")
    say("2/4 Training (or reusing) a Know2Vec retriever...")
    retriever_dir = out_dir / "retriever"
    if (retriever_dir / "model.safetensors").is_file():
        retriever = Retriever.from_pretrained(retriever_dir)
    else:
        retriever, _ = train_from_zoo(zoo.root, retriever_dir, args=TrainingArguments(steps=steps),
                                      show_progress=show_progress)
    say("3/4 Indexing the zoo's models as black boxes...")
    indexer = make_indexer(retriever, retriever_id=str(retriever_dir.resolve()))
    report = build_index(LocalSource(zoo.root), zoo.org, out_dir / "index", indexer, show_progress=show_progress)
    candidates = zoo.task_ids(split="eval", kind="nnr") or zoo.task_ids(kind="nnr")
    task_id = candidates[0]
    task = zoo.task(task_id)
    say(f"4/4 Which model fits '{task_id}' ({', '.join(task['class_names'])}; held-out images no model saw)?")
    matches = find_model(zoo.task_path(task_id), out_dir / "index", top_k=5, show_progress=show_progress)
    truth = dict(zip(zoo.model_ids, zoo.scores([task_id], zoo.model_ids, "v_acc")[0]))
    rows = []
    for m in matches:
        info = zoo.models.get(m.model_id, {})
        rows.append({"rank": m.rank, "model_id": m.model_id, "score": m.score,
                     "what_it_is": f"{info.get('arch', '?')} trained on {info.get('source', '?')}",
                     "measured_v_acc": float(truth.get(m.model_id, float("nan")))})
    best = max(truth, key=truth.get)
    idx = load_index(out_dir / "index")
    domains = [zoo.models.get(r.model_id, {}).get("domain", "?") for r in idx.rows]
    query_vec = retriever.embed_task(zoo.task_means([task_id], indexer.extractor, show_progress=False)[task_id])
    picture = plot_embedding_space(idx.embeddings, domains, out_dir / "embedding-space.png",
                                   names=[r.model_id for r in idx.rows], highlight=query_vec,
                                   title="k2v-hub model vectors (colour = source domain)")
    return {"task": task_id, "matches": rows, "best_by_ground_truth": best,
            "hit@1": bool(matches and matches[0].model_id == best), "index_report": report.to_dict(),
            "picture": str(picture), "out": str(out_dir), "seconds": round(time.perf_counter() - t0, 1),
            "timings": matches.timings}
