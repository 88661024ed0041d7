"""`k2v-hub` (and `hf k2v`): the command line, in the `hf` CLI's habits.

Every command takes ``--token`` (default: ``HF_TOKEN`` or the saved ``hf auth login`` token; never printed, logged
or written to disk), ``--format auto|human|json|quiet`` (``--json`` is ``--format json``, ``-q/--quiet`` is
``--format quiet``: ids only, one per line; ``auto`` is human on a terminal, json otherwise), ``-v/--verbose``.
Results go to stdout; progress bars, warnings and errors to stderr, and progress bars only in human format.
Colour only on a terminal and never with ``NO_COLOR`` set. Commands that push (``index --push/--push-cards``) ask
for confirmation on a terminal unless ``-y/--yes``.

Exit codes (like ``hf``: 0 success, 1 error, 2 bad usage; k2v-hub adds finer codes for its own errors):

====  =====================================================================================
 0    success
 1    unexpected error (a bug or an unknown failure)
 2    bad usage (unknown option, missing argument) or a dataset that cannot be used
 3    a model k2v-hub refuses to load or query (remote code, pickle weights, wrong task)
 4    a missing, corrupt, empty or incompatible index
 5    black-box query budget exceeded
 6    a Hub call failed after retries (auth, not found, gated, network)
 130  interrupted (Ctrl-C) or confirmation declined
====  =====================================================================================

An error prints one line on stderr (``Error: what happened. What to do.``) and no traceback; ``--verbose`` or
``HF_DEBUG=1`` prints the traceback too (same exit code).

Start-up cost: ``import k2v_hub.cli`` takes about 0.2 s. Each command imports the modules it runs (torch,
transformers, datasets, huggingface_hub: from 0.3 s to seconds) inside its function, and the choices a module
defines are read only when click needs them (:class:`ChoicesOf`), so ``k2v-hub --help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .errors import K2VError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _examples(*lines: str) -> str:
    return "\n\n\b\nExamples:\n" + "\n".join(f"  $ {line}" for line in lines)


class ChoicesOf(click.Choice):
    """A ``click.Choice`` over a tuple another module defines, imported when click first reads the choices (to parse
    the option or show its help): ``ChoicesOf("options", "ENCODER_MODES")`` is ``k2v_hub.options.ENCODER_MODES``.

    Importing those modules at start-up would make every command pay for them (measured: ``k2v_hub.methods``
    imports numpy, +0.25 s on a 0.2 s start). Keep the choices in light modules (:mod:`k2v_hub.options`): read
    from ``k2v_hub.oracle``, which imports torch and transformers, they made ``index --help`` take 8 s.
    """

    def __init__(self, module: str, name: str, *, first: tuple[str, ...] = ()):
        # no super().__init__: it would store the choices, which are read from the module instead
        self.case_sensitive = True
        self.module, self.attribute, self.first = module, name, first

    @property
    def choices(self) -> tuple[str, ...]:
        """``first``, then the module's tuple."""
        return (*self.first, *getattr(importlib.import_module(f"{__package__}.{self.module}"), self.attribute))


def common_options(fn):
    """Options every command shares: token, output format, verbosity."""
    fn = click.option("--token", envvar=None, default=None, help="Hub token (default: the saved login).")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(["auto", "human", "json", "quiet"]), default="auto",
                      show_default=True, help="Output format (auto: human on a terminal, json otherwise).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="Ids only, one per line.")(fn)
    fn = click.option("-v", "--verbose", is_flag=True, help="Debug logging and tracebacks.")(fn)
    return fn


class Output:
    """Where results go: a human table, JSON or ids, and whether progress bars show."""

    def __init__(self, fmt: str, as_json: bool, quiet: bool, verbose: bool, no_truncate: bool = False):
        if as_json:
            fmt = "json"
        if quiet:
            fmt = "quiet"
        if fmt == "auto":
            fmt = "human" if sys.stdout.isatty() else "json"
        self.fmt = fmt
        self.no_truncate = no_truncate
        self.color = not os.environ.get("NO_COLOR") and sys.stdout.isatty()
        logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("k2v_hub").setLevel(logging.DEBUG if verbose else logging.WARNING)
        if verbose:
            os.environ["K2V_HUB_VERBOSE"] = "1"
        if fmt != "human":
            _silence_progress_bars()

    @property
    def progress(self) -> bool:
        """Progress bars only in human format."""
        return self.fmt == "human"

    def table(self, rows: list[dict], columns: list[str], ids: str, title: str | None = None):
        """Print rows as a table (human), a JSON array (json) or ids (quiet)."""
        if self.fmt == "json":
            click.echo(json.dumps(rows, indent=2, default=str))
            return
        if self.fmt == "quiet":
            for r in rows:
                click.echo(r[ids])
            return
        if title:
            click.echo(click.style(title, bold=True) if self.color else title)
        cells = [[_cell(r.get(c), self.no_truncate) for c in columns] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
        click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)))
        for row in cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)))

    def result(self, data: dict, human: str):
        """Print a summary: a sentence (human) or JSON."""
        if self.fmt == "json":
            click.echo(json.dumps(data, indent=2, default=str))
        elif self.fmt == "human":
            click.echo(human)

    def info(self, message: str):
        """A progress line, human format only (to stderr)."""
        if self.fmt == "human":
            click.echo(message, err=True)


def _silence_progress_bars() -> None:
    """No progress bar from k2v-hub, huggingface_hub, datasets or transformers (json/quiet output)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from huggingface_hub.utils import disable_progress_bars  # huggingface_hub: +0.3 s of start-up (measured)

    disable_progress_bars()
    # datasets and transformers only if something imported them already: importing them here costs seconds
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging

        tf_logging.disable_progress_bar()


def _cell(value, no_truncate: bool) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    text = "" if value is None else str(value)
    return text if no_truncate or len(text) <= 48 else text[:45] + "..."


def _token(token: str | None) -> str | None:
    if token:
        return token
    from huggingface_hub import get_token  # +0.5 s of start-up (measured), paid only by commands that need a token

    return get_token()


@click.group(context_settings=CONTEXT, help="Find the Hub image classifier that fits your dataset (Know2Vec)."
             + _examples("k2v-hub demo", "k2v-hub index --org my-org --out ./index",
                         "k2v-hub find --dataset ./my_dataset --index my-org/k2v-index --format json"))
@click.version_option(__version__, prog_name="k2v-hub")
def cli():
    """Root command group."""


# ---------------------------------------------------------------- zoo
@cli.group(context_settings=CONTEXT, help="Build the offline benchmark zoo (real images, real classifiers)."
           + _examples("k2v-hub zoo build --profile tiny --out ./zoo"))
def zoo():
    """The zoo command group."""


@zoo.command("build", context_settings=CONTEXT, help="Build (or complete) a zoo of trained classifiers, tasks and "
             "measured ground truth." + _examples("k2v-hub zoo build --profile tiny --out ./zoo",
                                                  "k2v-hub zoo build --profile bench --out ./zoo-bench --seed 0"))
@click.option("--profile", type=click.Choice(["tiny", "bench"]), default="tiny", show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Zoo folder.")
@click.option("--seed", type=int, default=0, show_default=True)
@common_options
def zoo_build(profile, out_dir, seed, token, fmt, as_json, quiet, verbose):
    """Build a zoo."""
    out = Output(fmt, as_json, quiet, verbose)
    from .zoo.build import build_zoo

    manifest = build_zoo(out_dir, profile, seed=seed, show_progress=out.progress)
    models = manifest["models"]
    out.table([{"model_id": m["model_id"], "arch": m["arch"], "source": m["source"], "role": m.get("role")}
               for m in models], ["model_id", "arch", "source", "role"], "model_id",
              title=f"{len(models)} models in {out_dir}")


# ---------------------------------------------------------------- train
@cli.command(context_settings=CONTEXT, help="Train a retriever: supervised from a zoo's ground truth, or "
             "self-supervised from an index alone." + _examples(
                 "k2v-hub train --zoo ./zoo --out ./retriever",
                 "k2v-hub train --index my-org/k2v-index --retriever ./retriever --out ./retriever-adapted",
                 "accelerate launch -m k2v_hub.cli train --zoo ./zoo --out ./retriever"))
@click.option("--zoo", "zoo_dir", type=click.Path(exists=True, file_okay=False), help="Zoo folder (supervised).")
@click.option("--index", "index", help="Index folder or Hub id (self-supervised).")
@click.option("--retriever", help="Starting retriever for --index (default: the index's).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Where to save it.")
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--batch-tasks", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--model-encoder", type=ChoicesOf("options", "ENCODER_MODES"), default="lstm", show_default=True)
@click.option("--query-encoder", type=ChoicesOf("options", "ENCODER_MODES"), default="lstm", show_default=True)
@click.option("--sal", type=ChoicesOf("options", "SAL_LOSSES"), default="cosine", show_default=True)
@click.option("--no-mkc", is_flag=True, help="Train without L_MKC (ablation).")
@click.option("--backbone", default=None, help="Feature space: Hub id/path of an AutoModel, or 'pixels'.")
@click.option("--probe", default=None, help="Probe dataset (folder or Hub id); default: the built-in probe set.")
@click.option("--oracle-view", type=ChoicesOf("options", "ORACLE_VIEWS"), default="full", show_default=True)
@click.option("--push", "push_to", default=None, help="Push the retriever to this Hub model repo.")
@common_options
def train(zoo_dir, index, retriever, out_dir, steps, batch_tasks, lr, seed, model_encoder, query_encoder, sal, no_mkc,
          backbone, probe, oracle_view, push_to, token, fmt, as_json, quiet, verbose):
    """Train a retriever."""
    out = Output(fmt, as_json, quiet, verbose)
    from . import pipeline
    from .train import TrainingArguments
    from .zoo.training import train_from_zoo

    if bool(zoo_dir) == bool(index):
        raise click.UsageError("Give exactly one of --zoo (supervised) or --index (self-supervised).")
    args = TrainingArguments(steps=steps, batch_tasks=batch_tasks, lr=lr, seed=seed, sal=sal, use_mkc=not no_mkc)
    if zoo_dir:
        _, metrics = train_from_zoo(zoo_dir, out_dir, args=args, backbone=backbone, probe=probe,
                                    oracle_view=oracle_view, model_encoder=model_encoder,
                                    query_encoder=query_encoder, show_progress=out.progress,
                                    push_to_hub=push_to, token=_token(token))
    else:
        _, metrics = pipeline.train_from_index(index, out_dir, retriever=retriever, args=args,
                                               show_progress=out.progress, token=_token(token), push_to_hub=push_to)
    metrics["out"] = str(out_dir)
    out.result(metrics, f"Trained a {metrics['mode']} retriever on {metrics['models']} models / {metrics['tasks']} "
                        f"tasks in {metrics['seconds']} s; saved to {out_dir}")


# ---------------------------------------------------------------- index
def _parse_shard(value):
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise click.BadParameter("use I/N with 0 <= I < N, e.g. 0/4") from None
    return i, n


@cli.command(context_settings=CONTEXT, help="Index an org's image classifiers (black-box) into a dataset of "
             "knowledge vectors." + _examples(
                 "k2v-hub index --org k2v-zoo --zoo ./zoo --out ./index",
                 "k2v-hub index --org k2v-zoo --zoo ./zoo --out ./index --retriever ./retriever",
                 "k2v-hub index --org my-org --out ./index --retriever my-org/k2v-retriever --push my-org/k2v-index",
                 "torchrun --nproc_per_node 2 -m k2v_hub.cli index --org my-org --out ./index --retriever R"))
@click.option("--org", required=True, help="Organisation (or user) whose models to index.")
@click.option("--zoo", "zoo_dir", type=click.Path(exists=True, file_okay=False),
              help="A local folder laid out like Hub repos (DIR/<org>/<name>/) instead of the Hub.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Index folder (default: $K2V_HUB_HOME/indexes/<org>).")
@click.option("--retriever", default=None, help="Retriever folder or Hub id[@revision] (default: the one "
              "`k2v-hub build-retriever` built here, else the one the package ships, recorded as "
              "k2v-hub/know2vec-retriever@bundled; else that Hub repo).")
@click.option("--push", "push_to", default=None, help="Push the index to this Hub dataset repo (ORG/k2v-index).")
@click.option("--push-cards", is_flag=True, help="Also push an embedding file + card section to each model repo.")
@click.option("--create-pr", is_flag=True, help="Open pull requests instead of committing (repos you do not own).")
@click.option("--private", is_flag=True, help="Create the index repo private.")
@click.option("--probe", default=None, help="Probe dataset (folder or Hub id); default: the retriever's probe set.")
@click.option("--oracle-view", type=ChoicesOf("options", "ORACLE_VIEWS"), default="full", show_default=True,
              help="What the black box shows: full probabilities, top-5 labels with scores, or the top label.")
@click.option("--max-classes", type=int, default=None, help="C: classes kept per model (default: the retriever's).")
@click.option("--bisection-steps", type=int, default=7, show_default=True)
@click.option("--query-budget", type=int, default=None, help="Max black-box queries per model.")
@click.option("--limit", type=int, default=None, help="Index at most this many models.")
@click.option("--shard", default=None, help="I/N: index only slice I of N (for several machines).")
@click.option("--trust-remote-code", is_flag=True, help="Allow models whose config needs remote code. Dangerous.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle weights (pytorch_model.bin).")
@click.option("--no-truncate", is_flag=True, help="Do not truncate table cells.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation before pushing.")
@common_options
def index(org, zoo_dir, out_dir, retriever, push_to, push_cards, create_pr, private, probe, oracle_view, max_classes,
          bisection_steps, query_budget, limit, shard, trust_remote_code, allow_pickle, no_truncate, yes, token, fmt,
          as_json, quiet, verbose):
    """Index an org."""
    out = Output(fmt, as_json, quiet, verbose, no_truncate)
    from . import pipeline
    from .hub import HubSource, LocalSource, upload_folder
    from .index import CARD_FILE, DATA_FILE, META_FILE, build_index, load_retriever, read_rows, write_index

    token = _token(token)
    if (push_to or push_cards) and not yes and out.fmt == "human" and sys.stdin.isatty():
        what = " and ".join(x for x in (f"the index to {push_to}" if push_to else "",
                                        "a card section to each indexed model repo" if push_cards else "") if x)
        click.confirm(f"Push {what} ({'pull requests' if create_pr else 'commits'})?", abort=True)
    model, retriever_id, retriever_rev = load_retriever(retriever, token)
    source = LocalSource(zoo_dir) if zoo_dir else HubSource(token=token)
    out_dir = Path(out_dir or pipeline.k2v_home() / "indexes" / org)
    indexer = pipeline.make_indexer(model, retriever_id=retriever_id, retriever_revision=retriever_rev, probe=probe,
                                    oracle_view=oracle_view, max_classes=max_classes,
                                    bisection_steps=bisection_steps, query_budget=query_budget,
                                    trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, token=token)
    report = build_index(source, org, out_dir, indexer, limit=limit, shard=_parse_shard(shard),
                         show_progress=out.progress)
    if int(os.environ.get("RANK", "0")) != 0:
        # under torchrun/accelerate only the main process (which gathered every row) pushes and reports the whole
        # run; the others log their own share in json format only
        if out.fmt == "json":
            click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    result = report.to_dict()
    if push_to:
        write_index(out_dir, read_rows(out_dir), indexer.settings, card_kwargs={"repo_id": push_to})
        result["pushed"] = upload_folder(out_dir, push_to, repo_type="dataset", token=token, private=private or None,
                                         commit_message=f"k2v-hub index of {org}",
                                         allow_patterns=[DATA_FILE, META_FILE, CARD_FILE])
    if push_cards:
        result["cards"] = {m: pipeline.push_card(m, out_dir, token=token, create_pr=create_pr,
                                                 index_id=push_to or str(out_dir))
                           for m in report.indexed + report.reencoded + report.reused}
    for model_id, why in report.skipped.items():
        click.echo(f"skipped {model_id}: {why}", err=True)
    out.result(result, f"Indexed {len(report.indexed)}, re-encoded {len(report.reencoded)}, unchanged "
                       f"{len(report.reused)}, skipped {len(report.skipped)} model(s); {report.queries} black-box "
                       f"queries in {report.seconds} s. Index: {out_dir}"
                       + (f"\nPushed: {result['pushed']}" if push_to else ""))
    if out.fmt == "quiet":
        for m in report.indexed + report.reencoded + report.reused:
            click.echo(m)


# ---------------------------------------------------------------- find
@cli.command(context_settings=CONTEXT, help="Rank indexed models for a labelled image dataset." + _examples(
    "k2v-hub find --dataset ./my_dataset --index ./index",
    "k2v-hub find --dataset my-org/my-images --index my-org/k2v-index --top-k 3 --format json",
    "k2v-hub find --dataset ./images_by_class/ --index ./index --rerank leep --rerank-k 5 --zoo ./zoo",
    "k2v-hub find --dataset ./my_dataset --index ./index --goal fine-tune"))
@click.option("--dataset", required=True, help="save_to_disk folder, image folder (class/img.png) or Hub dataset id.")
@click.option("--index", "index", required=True, help="Index folder or Hub dataset id[@revision].")
@click.option("--retriever", default=None, help="Retriever folder or Hub id (default: the index's).")
@click.option("--top-k", type=int, default=5, show_default=True)
@click.option("--split", default=None, help="Dataset split (default: support/train/first).")
@click.option("--revision", default=None, help="Dataset revision on the Hub.")
@click.option("--image-column", default=None)
@click.option("--label-column", default=None)
@click.option("--max-images-per-class", type=int, default=32, show_default=True)
@click.option("--use-label-names", is_flag=True, help="Add label-name evidence to the knowledge score.")
@click.option("--rerank", type=ChoicesOf("methods", "RERANK_METHODS", first=("auto", "none")), default="auto",
              show_default=True, help="Re-score candidates (vectors + label names) by querying them as black boxes "
              "(logme: grey-box). head-accuracy: each candidate's own accuracy on your images, over your class "
              "names it has. auto: every model when the whole index fits in --rerank-k and the models can be "
              "fetched (a Hub index, or --zoo), by head-accuracy when a model's labels name one of your classes "
              "(--goal as-is), else LEEP; none: the first stage only.")
@click.option("--rerank-k", type=int, default=5, show_default=True)
@click.option("--rerank-images", type=int, default=64, show_default=True)
@click.option("--rerank-endpoint", default=None, metavar="URL_TEMPLATE",
              help="Re-rank through remote endpoints (URL with {model_id}); no weights are downloaded.")
@click.option("--rerank-fusion", type=click.FloatRange(min=0), default=None, metavar="WEIGHT",
              help="How much of the declared-data first stage's score the re-rank keeps (--goal as-is): candidates "
              "ordered by z(estimator) + WEIGHT * z(first-stage score). Default 0.5 (chosen on the bench's "
              "validation split); 0: the estimator alone.")
@click.option("--zoo", "zoo_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Local zoo to load re-rank candidates from (default: the Hub).")
@click.option("--goal", type=click.Choice(["as-is", "fine-tune"]), default="as-is", show_default=True,
              help="Rank for using a model as it is, or for fine-tuning it on the dataset (a predictor of the "
              "fine-tuned accuracy made from the cards' declared data and reported accuracy; no model run).")
@click.option("--finetune-predictor", default=None, type=click.Path(exists=True, file_okay=False),
              help="Fine-tune predictor folder for --goal fine-tune (default: the one shipped with the package).")
@click.option("--no-truncate", is_flag=True)
@common_options
def find(dataset, index, retriever, top_k, split, revision, image_column, label_column, max_images_per_class,
         use_label_names, rerank, rerank_k, rerank_images, rerank_endpoint, rerank_fusion, zoo_dir, goal,
         finetune_predictor, no_truncate, token, fmt, as_json, quiet, verbose):
    """Find models for a dataset."""
    out = Output(fmt, as_json, quiet, verbose, no_truncate)
    from .hub import dataset_reference, index_reference

    dataset_reference(dataset)  # a mistyped --dataset or --index fails in a second, before torch loads
    index_reference(index)
    from .find import find_model, match_rows, matches_json
    from .rerank import FUSION_WEIGHT

    matches = find_model(dataset, index, retriever=retriever, top_k=top_k, split=split, revision=revision,
                         image_column=image_column, label_column=label_column, token=_token(token),
                         max_images_per_class=max_images_per_class, use_label_names=use_label_names,
                         rerank=None if rerank == "none" else rerank, rerank_k=rerank_k,
                         rerank_images=rerank_images, rerank_endpoint=rerank_endpoint,
                         rerank_fusion=FUSION_WEIGHT if rerank_fusion is None else rerank_fusion, models_root=zoo_dir,
                         goal=goal, finetune_predictor=finetune_predictor, show_progress=out.progress)
    if out.fmt == "json":  # the one serialisation of an answer, shared with the web app's JSON download
        click.echo(matches_json(matches))
        return
    columns = ["rank", "model_id", "score", "stage", "data_score", "knowledge_score", "n_labels", "revision"]
    if goal == "fine-tune":
        columns.insert(4, "finetune_score")
    out.table(match_rows(matches), columns,
              "model_id", title=f"Best models for {dataset}")
    if out.fmt == "human":
        for meaning in dict.fromkeys(m.score_meaning for m in matches):
            click.echo(f"score: {meaning}")
        t = matches.timings
        click.echo(f"features {t.get('features_s', 0):.3f} s, encode {t.get('encode_s', 0) * 1000:.1f} ms, "
                   f"search {t.get('search_s', 0) * 1000:.2f} ms"
                   + (f", re-rank {t['rerank_s']:.2f} s ({matches.queries} queries)" if "rerank_s" in t else ""))


# ---------------------------------------------------------------- app
@cli.command("app", context_settings=CONTEXT, help="Serve the question as a web page: a Gradio app, as a Space runs "
             "it (install the extra: pip install \"k2v-hub[app]\"). Uploads are read for their answer only."
             + _examples("k2v-hub app --index ./k2v-out/index",
                         "k2v-hub app --index my-org/k2v-index --port 8080",
                         "k2v-hub app --index ./index --zoo ./zoo --max-upload-mb 50"))
@click.option("--index", "index", required=True, help="Index folder or Hub dataset id[@revision].")
@click.option("--retriever", default=None, help="Retriever folder or Hub id (default: the index's).")
@click.option("--zoo", "zoo_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Local zoo to load re-rank candidates from (default: the Hub).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, for anyone who can reach this machine).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=200, show_default=True,
              help="Largest upload (a zip, or a folder's files together).")
@common_options
def app_cmd(index, retriever, zoo_dir, host, port, max_upload_mb, token, fmt, as_json, quiet, verbose):
    """Serve the web app."""
    out = Output(fmt, as_json, quiet, verbose)
    from .app import build_app, launch, serve_until_stopped
    from .uploads import UploadLimits

    limits = UploadLimits(max_upload_bytes=max_upload_mb * 2**20)
    demo = build_app(index, retriever=retriever, zoo=zoo_dir, token=_token(token), limits=limits)
    url = launch(demo, host=host, port=port, limits=limits)
    out.result({"url": url}, f"k2v-hub app on {url} (Ctrl-C to stop)")
    sys.stdout.flush()
    serve_until_stopped(demo)


# ---------------------------------------------------------------- push-card
@cli.command("push-card", context_settings=CONTEXT, help="Push a model's knowledge vector and a card section "
             "into its repo, in one commit." + _examples(
                 "k2v-hub push-card --model my-org/my-model --index ./index",
                 "k2v-hub push-card --model other-org/model --index my-org/k2v-index --create-pr",
                 "k2v-hub push-card --model my-org/my-model --index my-org/k2v-index --revision dev"))
@click.option("--model", "model_id", required=True, help="Model repo id (must be in the index).")
@click.option("--index", "index", required=True, help="Index folder or Hub dataset id.")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing.")
@click.option("--revision", default=None, help="Model repo branch to read the card from and commit to (default: main).")
@common_options
def push_card_cmd(model_id, index, create_pr, revision, token, fmt, as_json, quiet, verbose):
    """Push one card section."""
    out = Output(fmt, as_json, quiet, verbose)
    from .pipeline import push_card

    url = push_card(model_id, index, token=_token(token), create_pr=create_pr, revision=revision)
    out.result({"model_id": model_id, "url": url}, f"Pushed the k2v-hub section of {model_id}: {url}")
    if out.fmt == "quiet":
        click.echo(model_id)


# ---------------------------------------------------------------- bench / demo
@cli.command(context_settings=CONTEXT, help="Run the benchmark: zoo, index, retriever, every method side by side."
             + _examples("k2v-hub bench --profile tiny", "k2v-hub bench --profile bench --out benchmarks/results"))
@click.option("--profile", type=click.Choice(["tiny", "bench"]), default="tiny", show_default=True)
@click.option("--out", "out_dir", default="benchmarks/results", show_default=True, type=click.Path(file_okay=False))
@click.option("--work", "work_dir", default=None, type=click.Path(file_okay=False),
              help="Where the zoo and intermediate files go (default: $K2V_HUB_HOME/bench-<profile>).")
@click.option("--label-blind/--no-label-blind", default=True, show_default=True,
              help="Also evaluate with anonymous label names (class_0, ...).")
@click.option("--scale", is_flag=True, help="Only the synthetic-index latency/memory benchmark (1k..1M models).")
@click.option("--ablation", is_flag=True, help="Also train the encoder/loss ablation variants (Tables 3-4).")
@click.option("--probes", is_flag=True, help="Only the probe-set ablation (size and composition against unseen-domain "
              "retrieval and queries per model); writes <profile>-probes.json and .md.")
@click.option("--steps", type=int, default=None, help="Retriever training steps (default per profile).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also retrain the main retriever with seeds SEED..SEED+N-1 and report the spread of its recall.")
@click.option("--zoo-seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also build zoos with seeds SEED+1..SEED+N-1 (another draw of classes, roles, tasks and weights; "
              "each costs a zoo build) and report the main retriever's recall on each.")
@click.option("--folds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Unseen domains: hold the zoo's domains out in this many folds (each domain once).")
@common_options
def bench(profile, out_dir, work_dir, label_blind, scale, ablation, probes, steps, seed, seeds, zoo_seeds, folds, token,
          fmt, as_json, quiet, verbose):
    """Benchmark."""
    out = Output(fmt, as_json, quiet, verbose)
    from .bench import run_bench, run_probe_bench, run_scale_bench

    command = " ".join(["k2v-hub"] + sys.argv[1:])
    if probes:
        results, paths = run_probe_bench(profile, out_dir=out_dir, work_dir=work_dir, steps=steps, seed=seed,
                                         show_progress=out.progress, command=command)
        out.result(results, f"{paths['markdown'].read_text()}\nResults: {paths['json']}")
        return

    if scale:
        rows = run_scale_bench()
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "scale.json").write_text(json.dumps(rows, indent=2))
        out.table(rows, list(rows[0]), "models", title="Vector search latency and memory (synthetic index)")
        return

    results, paths = run_bench(profile, out_dir=out_dir, work_dir=work_dir, label_blind=label_blind, steps=steps,
                               ablation=ablation, seeds=seeds, seed=seed, show_progress=out.progress,
                               command=command, zoo_seeds=zoo_seeds, folds=folds)
    out.result(results, f"{paths['markdown'].read_text()}\nResults: {paths['json']}")


@cli.command("build-retriever", context_settings=CONTEXT, help="Build the default retriever "
             "(k2v-hub/know2vec-retriever) on this machine: the bench's main retriever (paper configuration, "
             "leak-free training split, settings chosen on the validation split), saved like the copy the package "
             "ships (int8 large weights, the rest float16: under 5 MiB) with its numbers in its card." + _examples(
                 "k2v-hub build-retriever --profile bench --seed 0",
                 "k2v-hub build-retriever --profile tiny --out ./retriever-tiny",
                 "k2v-hub build-retriever --profile bench --seed 0 --finetune-only"))
@click.option("--profile", type=click.Choice(["tiny", "bench"]), default="bench", show_default=True)
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Where to save it (default: $K2V_HUB_HOME/default_retriever, used before the package's copy when "
              "no --retriever is given).")
@click.option("--work", "work_dir", default=None, type=click.Path(file_okay=False),
              help="The zoo and caches (default: $K2V_HUB_HOME/bench-<profile>, shared with `k2v-hub bench`).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--finetune-only", is_flag=True, help="Build only the fine-tune predictor (find --goal fine-tune), into "
              "OUT/finetune (default: beside the default retriever built here).")
@common_options
def build_retriever(profile, out_dir, work_dir, seed, finetune_only, token, fmt, as_json, quiet, verbose):
    """Build the default retriever."""
    out = Output(fmt, as_json, quiet, verbose)
    from .bench.default_retriever import build_default_retriever, build_finetune_predictor
    from .finetune_fit import SUBFOLDER
    from .retriever import built_retriever_dir

    if finetune_only:
        info = build_finetune_predictor(profile, Path(out_dir or built_retriever_dir()) / SUBFOLDER,
                                        work_dir=work_dir, seed=seed, show_progress=out.progress)
        info["out"] = str(Path(out_dir or built_retriever_dir()) / SUBFOLDER)
        out.result(info, f"Built the fine-tune predictor in {info['seconds']} s: tau_w {info['transfer_tau_w']} on "
                         f"{info['transfer_tasks']} transfer tasks (data score {info['data_transfer_tau_w']}); "
                         f"saved to {info['out']}")
        return
    info = build_default_retriever(profile, out_dir, work_dir=work_dir, seed=seed, show_progress=out.progress)
    info["out"] = str(out_dir or built_retriever_dir())
    out.result(info, f"Built the default retriever in {info['seconds']} s: R@1 {info['bench']['r@1']} on "
                     f"{info['bench']['eval_tasks']} evaluation tasks; saved to {info['out']}")


@cli.command("push-retriever", context_settings=CONTEXT, help="Publish a retriever folder (default: the one "
             "`k2v-hub build-retriever` built, else the one the package ships) as a Hub model repo." + _examples(
                 "k2v-hub push-retriever", "k2v-hub push-retriever --retriever ./retriever --to my-org/k2v-retriever"))
@click.option("--retriever", "folder", default=None, type=click.Path(exists=True, file_okay=False),
              help="Retriever folder (default: the one `k2v-hub build-retriever` built, else the one the package "
              "ships).")
@click.option("--to", "repo_id", default="k2v-hub/know2vec-retriever", show_default=True, help="Hub model repo.")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common_options
def push_retriever_cmd(folder, repo_id, private, yes, token, fmt, as_json, quiet, verbose):
    """Push a retriever."""
    out = Output(fmt, as_json, quiet, verbose)
    from .pipeline import push_retriever

    if not yes and out.fmt == "human" and sys.stdin.isatty():
        click.confirm(f"Push {folder or 'the default retriever (built here, else shipped)'} to {repo_id}?", abort=True)
    url = push_retriever(folder, repo_id, token=_token(token), private=private or None)
    out.result({"repo_id": repo_id, "url": url}, f"Pushed the retriever to {repo_id}: {url}")
    if out.fmt == "quiet":
        click.echo(repo_id)


@cli.command(context_settings=CONTEXT, help="The whole path on the embedded default in a few minutes: tiny zoo, "
             "retriever, index, and a ranked answer for a dataset the zoo models were not trained on."
             + _examples("k2v-hub demo", "k2v-hub demo --out ./k2v-demo"))
@click.option("--out", "out_dir", default="k2v-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--steps", type=int, default=200, show_default=True, help="Retriever training steps.")
@common_options
def demo(out_dir, steps, token, fmt, as_json, quiet, verbose):
    """Demo."""
    out = Output(fmt, as_json, quiet, verbose)
    from .demo import run_demo

    def say(line: str) -> None:  # the four step lines: to stderr in every format but quiet
        if out.fmt != "quiet":
            click.echo(line, err=True)

    result = run_demo(out_dir, steps=steps, say=say, show_progress=out.progress)
    if out.fmt == "json":
        out.result(result, "")
        return
    out.table(result["matches"], ["rank", "model_id", "score", "what_it_is", "measured_v_acc"], "model_id",
              title=f"Best models for {result['task']}")
    found = "found at rank 1" if result["hit@1"] else "not at rank 1"
    out.result(result, f"Ground truth best: {result['best_by_ground_truth']} ({found}).\n"
                       f"Done in {result['seconds']} s. Outputs in {result['out']}/: zoo/, retriever/, index/, "
                       "embedding-space.png")


def main(argv=None):
    """Console entry point: one-line errors, documented exit codes (see the module docstring)."""
    try:
        cli.main(args=argv, prog_name=_prog_name(), standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code if exc.exit_code not in (None, 0, 1) else 2)
    except K2VError as exc:
        _show_traceback()
        click.echo(f"{_error_prefix()} {_one_line(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        shown = _show_traceback()
        click.echo(f"{_error_prefix()} {type(exc).__name__}: {_one_line(str(exc))}"
                   + ("" if shown else " (run with --verbose or HF_DEBUG=1 for the traceback)"), err=True)
        sys.exit(1)


def _error_prefix() -> str:
    """``Error:``, in red on a terminal unless ``NO_COLOR`` is set."""
    if sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
        return click.style("Error:", fg="red", bold=True)
    return "Error:"


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines)[:1000] if lines else ""


def _show_traceback() -> bool:
    """Print the current traceback to stderr with --verbose or HF_DEBUG=1; return whether it did."""
    if os.environ.get("HF_DEBUG", "").lower() in ("1", "true", "yes") or os.environ.get("K2V_HUB_VERBOSE") == "1":
        traceback.print_exc()
        return True
    return False


def _prog_name() -> str:
    name = Path(sys.argv[0]).name
    return "hf k2v" if name == "hf-k2v" else "k2v-hub"


if __name__ == "__main__":
    main()
