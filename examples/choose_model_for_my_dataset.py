"""Which indexed image classifier should I fine-tune (or use as is) for my labelled dataset?

For the data scientist with a dataset and no time to try every model: k2v-hub turns the dataset into one vector
(class means in the index's feature space, encoded by the retriever) and ranks the index's models by cosine.
Nothing is downloaded but the index and the retriever, and no model is run, unless re-ranking runs: by default
(``--rerank auto``) a small org, whose models all fit in the re-rank budget, is re-scored with LEEP by asking each
model about some of your images, when the models can be fetched (a Hub index, or ``--zoo``).

    # a local folder (save_to_disk, or an image folder class/img.png) against a local index
    python examples/choose_model_for_my_dataset.py --dataset ./my_dataset --index ./index

    # a Hub dataset against an index on the Hub, top 3, re-ranked by LEEP on 64 of your images
    python examples/choose_model_for_my_dataset.py --dataset my-org/my-images --index my-org/k2v-index \
        --top-k 3 --rerank leep

    # ranked for fine-tuning on your images rather than for use as is (predicted from the models' cards)
    python examples/choose_model_for_my_dataset.py --dataset ./my_dataset --index ./index --goal fine-tune

The same from the command line: ``k2v-hub find --dataset ... --index ...``.
"""

from __future__ import annotations

import argparse
import json

from k2v_hub import find_model  # the public entry point


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="save_to_disk folder, image folder or Hub dataset id")
    parser.add_argument("--index", required=True, help="index folder or Hub dataset id[@revision]")
    parser.add_argument("--retriever", default=None, help="retriever folder or Hub id (default: the index's)")
    parser.add_argument("--split", default=None, help="dataset split (default: support/train/the first)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--max-images-per-class", type=int, default=32,
                        help="images per class used for the dataset's vector (a few are enough)")
    parser.add_argument("--use-label-names", action="store_true", help="add class-name overlap to the score")
    parser.add_argument("--rerank", choices=["auto", "none", "leep", "nce", "logme-probs"], default="auto",
                        help="re-score candidates (vectors + label names) by asking them, as black boxes, about some of "
                             "your images; auto: every model of a small org, when the models can be fetched")
    parser.add_argument("--zoo", default=None, help="local folder of the candidate models, for --rerank offline")
    parser.add_argument("--goal", choices=["as-is", "fine-tune"], default="as-is",
                        help="rank for using a model as it is, or for fine-tuning it on your images")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    # One call: dataset -> task vector -> cosine against every model vector of the index (-> optional re-rank).
    matches = find_model(
        args.dataset,
        args.index,
        retriever=args.retriever,
        split=args.split,
        top_k=args.top_k,
        max_images_per_class=args.max_images_per_class,
        use_label_names=args.use_label_names,
        rerank=None if args.rerank == "none" else args.rerank,
        models_root=args.zoo,
        goal=args.goal,
        show_progress=not args.json,
    )

    if args.json:
        print(json.dumps({"matches": [m.to_dict() for m in matches], "timings": matches.timings,
                          "queries": matches.queries}, indent=2))
        return

    # A small table: rank, model, score, which stage produced the score, how many labels the model knows.
    header = f"{'RANK':<5} {'MODEL':<48} {'SCORE':>8}  {'STAGE':<14} {'LABELS':>6}"
    print(f"Best models for {args.dataset}:")
    print(header)
    for m in matches:
        print(f"{m.rank:<5} {m.model_id:<48} {m.score:>8.4f}  {m.stage:<14} {len(m.labels):>6}")
    t = matches.timings
    print(f"\nfeatures {t.get('features_s', 0):.2f} s, encode {t.get('encode_s', 0) * 1000:.1f} ms, "
          f"search {t.get('search_s', 0) * 1000:.2f} ms"
          + (f", re-rank {t['rerank_s']:.2f} s ({matches.queries} black-box queries)" if "rerank_s" in t else ""))
    print(f"Try it: {matches[0].url}")


if __name__ == "__main__":
    main()
