"""k2v-hub: which Hub image classifier fits my dataset?

Know2Vec (Shang et al., AAAI 2025) black-box model retrieval for the Hugging Face Hub.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "find_model", "Match", "Retriever", "KnowledgeRecord"]


def __getattr__(name):  # lazy imports keep `import k2v_hub` and the CLI fast
    if name in ("find_model", "Match"):
        from . import find

        return getattr(find, name)
    if name == "Retriever":
        from .retriever import Retriever

        return Retriever
    if name == "KnowledgeRecord":
        from .knowledge import KnowledgeRecord

        return KnowledgeRecord
    raise AttributeError(f"module 'k2v_hub' has no attribute {name!r}")
