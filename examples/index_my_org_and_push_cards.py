"""Index my organisation's image classifiers, push the index as a dataset and a k2v-hub section to each model card.

For the org maintainer: every image-classification model of the org is asked (black-box: predictions on a fixed
probe set, nothing else) for its knowledge, which the retriever turns into one vector. The index is a folder of
parquet + dataset card + settings; reruns only query models whose revision changed, and a run killed half-way
loses nothing it finished.

    # offline, from a local folder laid out like Hub repos (DIR/<org>/<name>/): nothing leaves the machine
    python examples/index_my_org_and_push_cards.py --org k2v-zoo --zoo ./zoo --retriever ./retriever --out ./index

    # from the Hub, then push the index to my-org/k2v-index and open a PR with a card section on every model
    python examples/index_my_org_and_push_cards.py --org my-org --retriever my-org/k2v-retriever \
        --out ./index --push my-org/k2v-index --push-cards --create-pr

The same from the command line: ``k2v-hub index --org ORG --out ./index --retriever R --push REPO --push-cards``.
Several processes split the org with ``torchrun --nproc_per_node N -m k2v_hub.cli index ...``.
"""

from __future__ import annotations

import argparse
import json

from k2v_hub.hub import HubSource, LocalSource, upload_folder
from k2v_hub.index import CARD_FILE, DATA_FILE, META_FILE, build_index, load_retriever, read_rows, write_index
from k2v_hub.pipeline import make_indexer, push_card


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--org", required=True, help="organisation (or user) whose models to index")
    parser.add_argument("--zoo", default=None, help="local folder DIR/<org>/<name>/ instead of the Hub (offline)")
    parser.add_argument("--retriever", required=True, help="retriever folder or Hub id[@revision]")
    parser.add_argument("--out", required=True, help="index folder (an existing index there is updated)")
    parser.add_argument("--limit", type=int, default=None, help="index at most this many models")
    parser.add_argument("--query-budget", type=int, default=None, help="max black-box queries per model")
    parser.add_argument("--push", default=None, help="push the index to this Hub dataset repo (ORG/k2v-index)")
    parser.add_argument("--push-cards", action="store_true", help="add a k2v-hub section to each model's card")
    parser.add_argument("--create-pr", action="store_true", help="open pull requests instead of committing")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    args = parser.parse_args(argv)

    # 1. The retriever fixes the feature space and the probe set; its id and revision are recorded in every row.
    retriever, retriever_id, retriever_revision = load_retriever(args.retriever, args.token)
    indexer = make_indexer(retriever, retriever_id=retriever_id, retriever_revision=retriever_revision,
                           query_budget=args.query_budget, token=args.token)

    # 2. Where the models are: the Hub (list_models(author=org, pipeline_tag="image-classification")) or a folder.
    source = LocalSource(args.zoo) if args.zoo else HubSource(token=args.token)

    # 3. Index: one journaled row per finished model, then data/*.parquet + README.md + k2v_index.json.
    report = build_index(source, args.org, args.out, indexer, limit=args.limit, show_progress=not args.json)
    summary = report.to_dict()

    # 4. Push the index as a dataset repo (the card is re-rendered to name the repo it lives in).
    if args.push:
        write_index(args.out, read_rows(args.out), indexer.settings, card_kwargs={"repo_id": args.push})
        summary["pushed"] = upload_folder(args.out, args.push, repo_type="dataset", token=args.token,
                                          commit_message=f"k2v-hub index of {args.org}",
                                          allow_patterns=[DATA_FILE, META_FILE, CARD_FILE])

    # 5. One commit per model repo: k2v/embedding.safetensors, k2v/metadata.json and a marked card section
    #    (replaced, never duplicated, on the next push).
    if args.push_cards:
        summary["cards"] = {
            model_id: push_card(model_id, args.out, token=args.token, create_pr=args.create_pr,
                                index_id=args.push or str(args.out))
            for model_id in report.indexed + report.reencoded + report.reused
        }

    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"Indexed {len(report.indexed)}, re-encoded {len(report.reencoded)}, unchanged {len(report.reused)}, "
          f"skipped {len(report.skipped)} model(s) with {report.queries} black-box queries in {report.seconds} s.")
    for model_id, why in report.skipped.items():
        print(f"  skipped {model_id}: {why}")
    print(f"Index: {args.out}" + (f"\nPushed: {summary['pushed']}" if args.push else ""))
    for model_id, url in summary.get("cards", {}).items():
        print(f"  card of {model_id}: {url}")


if __name__ == "__main__":
    main()
