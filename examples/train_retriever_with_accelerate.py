"""Train a Know2Vec retriever on a zoo with Accelerate (one CPU process, several processes, or GPUs).

For the researcher: the retriever learns, from (task, model, accuracy) ground truth, to put each task's vector
next to the vector of the model that is best on it (L_SAL) while keeping models apart (L_MKC). The training data
are the models' black-box knowledge graphs and the tasks' class means; only the knowledge queries are costly,
and they are cached (K2V_HUB_HOME), so every process after the first reads them from disk.

    python examples/train_retriever_with_accelerate.py --zoo ./zoo --out ./retriever
    torchrun --nproc_per_node 2 examples/train_retriever_with_accelerate.py --zoo ./zoo --out ./retriever
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        examples/train_retriever_with_accelerate.py --zoo ./zoo --out ./retriever

(On CPU, ``accelerate launch --cpu --num_processes 2`` starts only one process: use torchrun or the line above.)
The same from the command line: ``k2v-hub train --zoo ./zoo --out ./retriever``.
"""

from __future__ import annotations

import argparse
import json

import torch
from accelerate import Accelerator

from k2v_hub.features import FeatureExtractor
from k2v_hub.knowledge import load_probe_set
from k2v_hub.pipeline import make_indexer, new_retriever, save_retriever
from k2v_hub.train import TrainingArguments, train_retriever
from k2v_hub.utils import seed_everything
from k2v_hub.zoo.data import ZooData
from k2v_hub.zoo.training import zoo_training_data


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", required=True, help="zoo folder (`k2v-hub zoo build --profile tiny --out DIR`)")
    parser.add_argument("--out", required=True, help="where to save the retriever")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-tasks", type=int, default=32, help="tasks per step and process")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--sal", choices=["cosine", "contrastive"], default="cosine")
    parser.add_argument("--backbone", default=None, help="feature space (default: the built-in MobileNetV2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU is there")
    parser.add_argument("--push", default=None, help="also push the retriever to this Hub model repo")
    args = parser.parse_args(argv)

    # The Accelerator must be the first distributed state made in the process: on a CPU machine it needs cpu=True,
    # else every torchrun process believes it is alone (world size 1).
    accelerator = Accelerator(cpu=args.cpu or not torch.cuda.is_available())
    seed_everything(args.seed)
    main_process = accelerator.is_main_process

    # A fresh retriever for the feature space and the probe set the knowledge will be gathered with.
    zoo = ZooData(args.zoo)
    extractor = FeatureExtractor.from_pretrained(args.backbone)
    _, probe_fingerprint, probe_spec = load_probe_set(None)
    retriever = new_retriever(extractor, probe_spec=probe_spec, probe_fingerprint=probe_fingerprint)
    indexer = make_indexer(retriever, retriever_id="untrained", probe=probe_spec, extractor=extractor)

    # Training data: the seen models' knowledge graphs (queried once, by the main process; the others then read
    # the knowledge cache) and the train tasks' class means, with each task's best model as its target.
    with accelerator.main_process_first():
        data = zoo_training_data(zoo, indexer, show_progress=main_process)

    # The training loop itself: AdamW, cosine schedule, L_MKC + L_SAL, gradients averaged across processes.
    training_args = TrainingArguments(steps=args.steps, batch_tasks=args.batch_tasks, lr=args.lr, sal=args.sal,
                                      seed=args.seed, cpu=args.cpu)
    metrics = train_retriever(retriever, data, training_args, accelerator=accelerator, show_progress=main_process)

    # Every process holds the same weights now; one saves them (safetensors + config + model card).
    if main_process:
        save_retriever(retriever, args.out, push_to_hub=args.push)
        print(json.dumps({**{k: v for k, v in metrics.items() if k != "args"}, "out": args.out,
                          "fingerprint": retriever.fingerprint()}, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
