"""One row of an index: what is stored about one (model, revision), and the `datasets` schema of its parquet file.

The fields are the parquet columns, in file order, and the keys of a journal file (``rows/<org>--<name>.json``);
the ``shared`` ones repeat the index settings (``k2v_index.json``) on every row, so a row says how it was built.
"""

from __future__ import annotations

from copy import copy
from dataclasses import asdict, dataclass, field, fields

from datasets import Features, List, Value

from .errors import IndexError_


def _column(dtype: str, *, shared: bool = False, doc: str = ""):
    """A field stored as a column of ``dtype`` (``string``, ``int64``, ``float32``, ``strings``, ``vector``)."""
    return field(metadata={"dtype": dtype, "shared": shared, "doc": doc})


@dataclass
class IndexRow:
    """One model of an index.

    Attributes:
        model_id, revision: the model repo and the commit indexed.
        labels: the model's labels (``id2label`` order).
        embedding: the model vector (unit length, ``embed_dim`` floats).
        knowledge: the raw knowledge record as JSON (:class:`~k2v_hub.knowledge.KnowledgeRecord`).
        retriever_id, retriever_revision, retriever_fingerprint, feature_space, probe_fingerprint, oracle_view:
            the index settings the row was built with (:data:`SHARED_KEYS`).
        k2v_hub_version: the k2v-hub that built the row.
        n_queries, seconds, created_at: black-box queries spent, time taken, when (ISO 8601, UTC).
        card_datasets, downloads, likes: what the model card and the Hub said (datasets, popularity).
        data_fingerprint, data_source, data_note: the declared data's fingerprint (:mod:`k2v_hub.declared`),
            the dataset and revision it was read from, and why there is none (``""`` when the card names the
            data; when the card's own data gave none, how the data was inferred from the index's,
            :mod:`k2v_hub.inferred`).
        reported_accuracy: the accuracy the card's ``model-index`` reports on that dataset
            (:func:`~k2v_hub.declared.reported_accuracy`), ``None`` if it reports none; read from the card on every
            run, so a card edit shows without querying the model again.
        data_pool: for a row without a fingerprint, the datasets the index's cards named when its data was last
            sought (``[]`` otherwise): the next run seeks it again once a dataset not in this list is named.
    """

    model_id: str = _column("string")
    revision: str = _column("string", doc="the commit indexed")
    labels: list[str] = _column("strings")
    embedding: list[float] = _column("vector")
    knowledge: str = _column("string", doc="the raw knowledge record as JSON: active classes, centroid probe per "
                                           "class, boundary fractions, each probe's answer")
    retriever_id: str = _column("string", shared=True)
    retriever_revision: str = _column("string", shared=True)
    retriever_fingerprint: str = _column("string", shared=True)
    feature_space: str = _column("string", shared=True)
    probe_fingerprint: str = _column("string", shared=True)
    oracle_view: str = _column("string", shared=True)
    k2v_hub_version: str = _column("string")
    n_queries: int = _column("int64")
    seconds: float = _column("float32")
    created_at: str = _column("string")
    card_datasets: list[str] = _column("strings")
    downloads: int = _column("int64")
    likes: int = _column("int64")
    data_fingerprint: str = _column("string", doc="class means of a few images per class of the data the card "
                                                  "names (base64 float16 .npy; empty if none)")
    data_source: str = _column("string", doc="the dataset@revision the fingerprint was read from")
    data_note: str = _column("string", doc="why there is no fingerprint, or how it was inferred when the card's "
                                           "own data gave none")
    reported_accuracy: float | None = _column("float32", doc="the accuracy the card reports on that dataset "
                                                             "(null if none)")
    data_pool: list[str] = _column("strings", doc="without a fingerprint: the datasets the index's cards named when "
                                                  "it was last sought (sought again once another is named)")

    def to_dict(self) -> dict:
        """The row as stored (parquet row, journal JSON): every column, in file order."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict, settings: dict | None = None) -> IndexRow:
        """A stored row; with ``settings`` (``k2v_index.json``), first checked to agree with them.

        Raises:
            IndexError_: a shared setting of the row differs from ``settings``.
            KeyError: a column is missing.
        """
        if settings is not None:
            for key in SHARED_KEYS:
                if row.get(key) != settings.get(key):
                    raise IndexError_(
                        f"Row {row.get('model_id')!r} has {key}={row.get(key)!r} but the index says "
                        f"{settings.get(key)!r}.", "The index was tampered with or mixes builds; rebuild it.")
        return cls(**{name: row.get(name, copy(DATA_COLUMNS[name])) if name in DATA_COLUMNS else row[name]
                      for name in COLUMNS})


COLUMNS = tuple(f.name for f in fields(IndexRow))
#: The declared-data columns and what rows written before they existed read as: no fingerprint, no accuracy.
DATA_COLUMNS = {"data_fingerprint": "", "data_source": "", "data_note": "", "reported_accuracy": None,
                "data_pool": []}
#: The columns :meth:`~k2v_hub.index.Indexer.data_columns` fills from the declared data (the accuracy comes from the
#: card).
FINGERPRINT_COLUMNS = ("data_fingerprint", "data_source", "data_note", "data_pool")
SHARED_KEYS = tuple(f.name for f in fields(IndexRow) if f.metadata["shared"])


def index_features(embed_dim: int) -> Features:
    """The `datasets` schema of an index row."""
    kinds = {"string": Value("string"), "int64": Value("int64"), "float32": Value("float32"),
             "strings": List(Value("string")), "vector": List(Value("float32"), length=embed_dim)}
    return Features({f.name: kinds[f.metadata["dtype"]] for f in fields(IndexRow)})


def column_docs() -> str:
    """The columns as the index card lists them: each in backquotes with what it holds, ``retriever_*`` grouped."""
    names, seen = [], set()
    for f in fields(IndexRow):
        name = "retriever_*" if f.name.startswith("retriever_") else f.name
        if name not in seen:
            seen.add(name)
            names.append(f"`{name}`" + (f" ({f.metadata['doc']})" if f.metadata["doc"] else ""))
    return ", ".join(names) + "."
