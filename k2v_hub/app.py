"""`k2v-hub app`: the question as a web page, a Gradio app in the Spaces convention (``app.py`` at the repo root).

A person gives a labelled image dataset (a zip of class folders, an image folder, or a Hub dataset id), picks
top-k and the re-rank, and gets the ranked models (each linked to its page, with its score, the stage that
produced it, its labels and what indexing it cost), the model-embedding space with their dataset marked, and the
answer as a JSON file: exactly what `k2v-hub find --format json` prints (:func:`~k2v_hub.find.matches_json`).
Bad input is a message on the page (:class:`Answerer` turns every error into one) and the app keeps serving.

Privacy: an upload is unpacked into a private temporary folder (``mkdtemp``: 0700) where ``datasets`` caches it
too, and that folder and the uploaded files are removed once the answer is ready. The answer's picture and JSON
stay in the app's private folder for the visitor to download, at most :data:`ANSWER_TTL` seconds, and all of it
is removed when the app stops. Nothing of a visitor's data is logged. A Hub dataset id is read without the app's
token, so visitors reach public datasets only; its files land in the Hub cache as any ``load_dataset`` download
does (``datasets`` fetches Hub files there whatever its ``cache_dir``), its prepared copy in the private folder.
Gradio's telemetry and the browser's run history are off, there is no share link, the page uses the system's fonts
(nothing is fetched from elsewhere), and the app listens on 127.0.0.1 unless told otherwise.

gradio is an optional extra (``pip install "k2v-hub[app]"``): it is imported inside :func:`build_app` and
:func:`launch`, after its settings are in the environment, so the rest of k2v-hub neither needs nor loads it.
"""

from __future__ import annotations

import atexit
import html
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import K2VError, UsageError, one_line
from .finetune_fit import load_finetune_predictor
from .find import GOALS, Matches, check_index_version, find_model, matches_json, retriever_for_index
from .index import load_index
from .methods import RERANK_METHODS
from .plots import plot_embedding_space
from .query_data import load_query_dataset
from .uploads import UploadLimits, gather_folder, unpack_zip

#: Seconds an answer's picture and JSON stay downloadable.
ANSWER_TTL = 3600
RERANK_CHOICES = ("auto", "none", *RERANK_METHODS)
SOURCES = {"zip": "Zip of class folders", "folder": "Image folder", "hub": "Hub dataset id"}
MAX_LABELS_SHOWN = 6

#: A folder upload keeps each file's folders in its name (Gradio sends base names only): the browser's relative
#: path with this character (DIVISION SLASH, no path separator anywhere) for "/".
FOLDER_SEPARATOR = "\u2215"
# Renames the files of the folder box that way; runs in the page before Gradio reads the chosen files.
FOLDER_JS = """
() => {
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || !input.webkitdirectory || !input.closest("#k2v-folder")) return;
    const named = new DataTransfer();
    for (const file of input.files) {
      const path = file.webkitRelativePath || file.name;
      const name = path.replaceAll("/", "\u2215");
      named.items.add(new File([file], name, {type: file.type, lastModified: file.lastModified}));
    }
    input.files = named.files;
  }, true);
}
"""

INTRO = """# Which model fits my images?
Give a labelled image dataset, and k2v-hub ranks the indexed image classifiers for it by what they know (Know2Vec:
each model was queried as a black box once, when it was indexed). Your data is read for this answer only and
deleted afterwards."""


@dataclass
class Answer:
    """What the page shows for one question.

    Attributes:
        status: one line: a summary of the answer, or what was wrong with the input and what to do.
        ranking: the ranked models as an HTML table ("" after an error).
        picture: the model-embedding space with the dataset marked (a PNG path), or ``None``.
        json_file: the answer as `k2v-hub find --format json` prints it (a path), or ``None``.
        matches: the :class:`~k2v_hub.find.Matches` behind it, or ``None``.
    """

    status: str
    ranking: str = ""
    picture: str | None = None
    json_file: str | None = None
    matches: Matches | None = None


class Answerer:
    """Answers the page's question with :func:`~k2v_hub.find.find_model` on one index (gradio-free).

    The index and retriever are loaded and checked once, here, so a bad one fails before the app serves.
    ``work_dir`` holds the uploads being read and the answers being downloaded (default: a new private temporary
    folder, removed at exit); uploaded files under ``upload_dir`` (Gradio's) are deleted after their answer.

    The goal ``"fine-tune"`` is offered (``goals``) when a fine-tune predictor made in the index's feature space is
    at hand: ``finetune_predictor`` (a folder), else the one the package ships.

    Raises:
        IndexError_: the index or retriever is missing, damaged or incompatible.
        UsageError: ``finetune_predictor`` holds no predictor that loads.
    """

    def __init__(self, index: str, *, retriever: str | None = None, zoo: str | None = None, token: str | None = None,
                 limits: UploadLimits = UploadLimits(), work_dir: str | Path | None = None,
                 upload_dir: str | Path | None = None, finetune_predictor: str | None = None):
        self.index, self.zoo, self.token, self.limits = index, zoo, token, limits
        loaded = load_index(index, token=token)
        check_index_version(loaded.meta, loaded.rows)
        self.retriever = retriever_for_index(retriever, loaded.meta, token=token)
        # the goal "fine-tune" is offered only with a predictor made in the index's feature space
        try:
            predictor = load_finetune_predictor(finetune_predictor)
        except UsageError:
            if finetune_predictor is not None:
                raise
            predictor = None
        same_space = predictor is not None and predictor.feature_space == loaded.meta.get("feature_space")
        self.finetune = predictor if same_space else None
        self.goals = GOALS if self.finetune is not None else GOALS[:1]
        self.rows = {r.model_id: r for r in loaded.rows}
        self.embeddings = loaded.embeddings
        self.work_dir = Path(work_dir) if work_dir else private_folder()
        self.upload_dir = Path(upload_dir).resolve() if upload_dir else None
        for sub in ("uploads", "answers"):
            (self.work_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def answer(self, source: str, *, zip_file: str | None = None, folder_files: Sequence[str] = (), hub_id: str = "",
               top_k: int = 5, rerank: str = "auto", goal: str = "as-is", progress=None) -> Answer:
        """Rank the index's models for the dataset given by ``source`` (``zip``, ``folder`` or ``hub``).

        ``folder_files``: a folder upload's stored files, each named by its relative path with
        :data:`FOLDER_SEPARATOR` for ``/`` (:data:`FOLDER_JS`). ``goal``: rank for use ``"as-is"`` or to
        ``"fine-tune"`` (:func:`~k2v_hub.find.find_model`). ``progress(fraction, description)`` hears the steps.
        Never raises: an error is the answer's ``status``.
        """
        say = progress or (lambda fraction, description: None)
        started = time.perf_counter()
        self._expire_answers()
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=self.work_dir / "uploads"))
        try:
            if goal not in self.goals:
                raise UsageError(f"The goal {goal!r} is not available for this index (no fine-tune predictor made in "
                                 f"its feature space).", f"Choose {' or '.join(self.goals)}.")
            say(0.0, "Reading your dataset")
            dataset = self._dataset(source, zip_file, list(folder_files or ()), (hub_id or "").strip(), work)
            say(0.1, "Reading and embedding the images, re-ranking the candidates")
            matches = find_model(dataset, self.index, retriever=self.retriever, top_k=int(top_k),
                                 rerank=None if rerank == "none" else rerank, models_root=self.zoo, token=self.token,
                                 goal=goal, finetune_predictor=self.finetune, show_progress=True)
            say(0.95, "Drawing the model-embedding space")
            out = Path(tempfile.mkdtemp(prefix="answer-", dir=self.work_dir / "answers"))
            json_file = out / "k2v-hub-answer.json"
            json_file.write_text(matches_json(matches) + "\n")
            picture = self._picture(matches, out / "embedding-space.png")
        except K2VError as exc:
            return Answer(status=f"Error: {one_line(exc, 600)}")
        except Exception as exc:  # noqa: BLE001 - the page must keep serving; the message says what broke
            return Answer(status=f"Error: unexpected {type(exc).__name__}: {one_line(exc)}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
            self._forget_uploads([zip_file, *(folder_files or ())])
        return Answer(status=self._summary(matches, time.perf_counter() - started), ranking=self._table(matches),
                      picture=str(picture), json_file=str(json_file), matches=matches)

    def _dataset(self, source: str, zip_file, folder_files: list[str], hub_id: str, work: Path):
        """The chosen input as a ``datasets.Dataset``, read through ``work`` (``datasets`` caches there)."""
        cache = str(work / "cache")
        if source == "zip":
            if not zip_file:
                raise UsageError("No zip uploaded.", "Upload a .zip of class folders, then press Find models.")
            return load_query_dataset(str(unpack_zip(self._uploaded(zip_file), work / "data", self.limits)),
                                      cache_dir=cache)
        if source == "folder":
            if not folder_files:
                raise UsageError("No folder uploaded.", "Choose a folder of class folders, then press Find models.")
            names = [Path(f).name for f in folder_files]
            if not any(FOLDER_SEPARATOR in name for name in names):
                raise UsageError("The folder's files arrived without their folders (dropped onto the page?).",
                                 "Choose the folder with the upload box's file dialog, or upload a zip.")
            files = [(self._uploaded(f), name.replace(FOLDER_SEPARATOR, "/")) for f, name in zip(folder_files, names)]
            return load_query_dataset(str(gather_folder(files, work / "data", self.limits)), cache_dir=cache)
        if source == "hub":
            if not hub_id:
                raise UsageError("No Hub dataset id given.", "Type one like ORG/NAME, then press Find models.")
            return load_query_dataset(hub_id, token=False, cache_dir=cache)
        raise UsageError(f"Unknown source {source!r}.", f"Choose one of {', '.join(SOURCES)}.")

    @staticmethod
    def _uploaded(path: str) -> Path:
        if not Path(path).is_file():
            raise UsageError("The upload is gone (each upload is deleted after its answer).", "Upload it again.")
        return Path(path)

    def _forget_uploads(self, paths) -> None:
        """Delete uploaded files that sit in Gradio's upload folder, and the folders Gradio made for them."""
        if self.upload_dir is None:
            return
        for path in paths:
            if not path:
                continue
            path = Path(path).resolve()
            if self.upload_dir in path.parents:
                path.unlink(missing_ok=True)
                folder = path.parent
                if folder != self.upload_dir and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

    def _expire_answers(self) -> None:
        now = time.time()
        for folder in (self.work_dir / "answers").iterdir():
            if now - folder.stat().st_mtime > ANSWER_TTL:
                shutil.rmtree(folder, ignore_errors=True)

    def _picture(self, matches: Matches, path: Path) -> Path:
        ranked = {m.model_id for m in matches}
        names = list(self.rows)
        groups = ["ranked for your dataset" if n in ranked else "other indexed models" for n in names]
        return plot_embedding_space(self.embeddings, groups, path, names=names, highlight=matches.task_vector,
                                    title="Your dataset among the indexed models")

    def _summary(self, matches: Matches, seconds: float) -> str:
        t = matches.timings
        rerank = (f", re-rank {t['rerank_s']:.2f} s with {matches.queries} black-box queries"
                  if "rerank_s" in t else ", no re-rank")
        return (f"Ranked {len(matches)} of {len(self.rows)} indexed models in {seconds:.1f} s (features "
                f"{t.get('features_s', 0):.2f} s, search {t.get('search_s', 0) * 1000:.1f} ms{rerank}).")

    def _table(self, matches: Matches) -> str:
        head = ("<tr><th>Rank</th><th>Model</th><th>Score</th><th>Stage</th><th>Labels</th>"
                "<th>Indexing cost</th></tr>")
        body = []
        for m in matches:
            row = self.rows.get(m.model_id)
            labels = ", ".join(m.labels[:MAX_LABELS_SHOWN])
            if len(m.labels) > MAX_LABELS_SHOWN:
                labels += f" (+{len(m.labels) - MAX_LABELS_SHOWN} more)"
            cost = f"{row.n_queries} queries, {row.seconds:.1f} s" if row else ""
            cells = [str(m.rank), f'<a href="{html.escape(m.url)}" target="_blank" rel="noopener">'
                                  f"{html.escape(m.model_id)}</a>", f"{m.score:.4f}", html.escape(m.stage),
                     html.escape(labels), cost]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        return f'<table class="k2v-ranking"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def private_folder() -> Path:
    """A new private temporary folder (0700), removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="k2v-app-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _gradio():
    """gradio, imported with its telemetry off, or a clear error if the extra is not installed."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise UsageError("The web app needs gradio.", 'Install it with: pip install "k2v-hub[app]"') from None
    return gradio


def build_app(index: str, *, retriever: str | None = None, zoo: str | None = None, token: str | None = None,
              limits: UploadLimits = UploadLimits()):
    """The page (a ``gradio.Blocks``) answering for ``index``; serve it with :func:`launch` (same ``limits``).

    Gradio's uploads go to a private temporary folder unless ``GRADIO_TEMP_DIR`` is set.

    Raises:
        IndexError_: the index or retriever is missing, damaged or incompatible.
        UsageError: gradio is not installed.
    """
    work = private_folder()
    os.environ.setdefault("GRADIO_TEMP_DIR", str(work / "gradio"))  # read when Gradio makes its upload folder
    gr = _gradio()
    answerer = Answerer(index, retriever=retriever, zoo=zoo, token=token, limits=limits, work_dir=work,
                        upload_dir=os.environ["GRADIO_TEMP_DIR"])

    def run(source, zip_file, folder_files, hub_id, top_k, rerank, goal, progress=gr.Progress(track_tqdm=True)):
        a = answerer.answer(source, zip_file=zip_file, folder_files=folder_files or [], hub_id=hub_id, top_k=top_k,
                            rerank=rerank, goal=goal,
                            progress=lambda fraction, description: progress(fraction, desc=description))
        return a.status, a.ranking, a.picture, a.json_file

    with gr.Blocks(title="k2v-hub: which model fits my images?", analytics_enabled=False,
                   delete_cache=(ANSWER_TTL, ANSWER_TTL)) as demo:
        gr.Markdown(INTRO)
        source = gr.State("zip")
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab(SOURCES["zip"], elem_id="k2v-tab-zip") as tab_zip:
                        zip_file = gr.File(label="A .zip of <class>/<image> folders", file_types=[".zip"],
                                           type="filepath", elem_id="k2v-zip")
                    with gr.Tab(SOURCES["folder"], elem_id="k2v-tab-folder") as tab_folder:
                        folder_files = gr.File(label="A folder of class folders", file_count="directory",
                                               type="filepath", elem_id="k2v-folder")
                    with gr.Tab(SOURCES["hub"], elem_id="k2v-tab-hub") as tab_hub:
                        hub_id = gr.Textbox(label="A public dataset with an image and a label column",
                                            placeholder="ORG/NAME", elem_id="k2v-hub-id")
                top_k = gr.Slider(1, max(1, min(50, len(answerer.rows))), value=min(5, len(answerer.rows)),
                                  step=1, label="Top-k")
                rerank = gr.Dropdown(list(RERANK_CHOICES), value="auto", label="Re-rank", elem_id="k2v-rerank",
                                     info="auto: every model, when the index is small enough, by its own "
                                          "accuracy on your images if it knows your class names, else by LEEP; "
                                          "none: the first stage only")
                goal = gr.Radio(list(answerer.goals), value="as-is", label="Goal", elem_id="k2v-goal",
                                info="as-is: the model that fits your classes as it is; fine-tune: the model that "
                                     "will fine-tune best on your images")
                go = gr.Button("Find models", variant="primary", elem_id="k2v-go")
            with gr.Column(scale=3):
                status = gr.Textbox(label="Status", interactive=False, elem_id="k2v-status")
                ranking = gr.HTML(elem_id="k2v-ranking")
                picture = gr.Image(label="The model-embedding space", show_label=False, type="filepath",
                                   interactive=False, elem_id="k2v-picture")
                download = gr.File(label="The answer as JSON (what `k2v-hub find --format json` prints)",
                                   interactive=False, elem_id="k2v-json")
        for tab, name in ((tab_zip, "zip"), (tab_folder, "folder"), (tab_hub, "hub")):
            tab.select(lambda chosen=name: chosen, None, source)
        go.click(run, [source, zip_file, folder_files, hub_id, top_k, rerank, goal],
                 [status, ranking, picture, download])
    return demo


def launch(demo, *, host: str | None = None, port: int | None = None, limits: UploadLimits = UploadLimits()) -> str:
    """Start serving ``demo`` (from :func:`build_app`) on ``host:port`` in the background; return its URL
    (:func:`serve_until_stopped` then serves until Ctrl-C or SIGTERM).

    ``None`` host/port: Gradio's ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` (a Space sets them), else
    127.0.0.1:7860. Never a share link; an upload over ``limits.max_upload_bytes`` is refused before it arrives.
    """
    gr = _gradio()
    theme = gr.themes.Default(font=("ui-sans-serif", "system-ui", "sans-serif"),
                              font_mono=("ui-monospace", "monospace"))
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                max_file_size=limits.max_upload_bytes, run_history=False, footer_links=["api", "settings"],
                theme=theme, js=FOLDER_JS, ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False)
    return demo.local_url


def serve_from_environment() -> None:
    """Build and serve the app from ``K2V_INDEX`` (required), ``K2V_RETRIEVER``, ``K2V_ZOO`` and ``HF_TOKEN``, as
    a Space's ``app.py`` does.

    Raises:
        UsageError: ``K2V_INDEX`` is not set.
    """
    index = os.environ.get("K2V_INDEX")
    if not index:
        raise UsageError("K2V_INDEX is not set.", "Set it to an index folder or Hub dataset id (ORG/k2v-index).")
    demo = build_app(index, retriever=os.environ.get("K2V_RETRIEVER") or None, zoo=os.environ.get("K2V_ZOO") or None,
                     token=os.environ.get("HF_TOKEN") or None)
    print(f"k2v-hub app on {launch(demo)} (Ctrl-C to stop)", flush=True)
    serve_until_stopped(demo)


def serve_until_stopped(demo) -> None:
    """Serve until Ctrl-C or SIGTERM (``docker stop``, a Space restarting), then close the server and return, so
    the private folder is removed at exit either way."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a KeyboardInterrupt, which block_thread handles
    demo.block_thread()
