"""User-facing errors: each says what went wrong and what to do about it."""


class K2VError(Exception):
    """An error the CLI prints as one line (no traceback unless --verbose / HF_DEBUG)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(message if hint is None else f"{message} {hint}")


class UsageError(K2VError, ValueError):
    """A bad argument to a k2v-hub function (``top_k=0``, an unknown method name...)."""

    exit_code = 2


class DatasetError(K2VError, ValueError):
    """The user's dataset cannot be used as a retrieval query."""

    exit_code = 2


class ModelRefused(K2VError):
    """A model repo that k2v-hub refuses to load or query (remote code, pickle weights, wrong task...)."""

    exit_code = 3


class IndexError_(K2VError):
    """An index that is missing, corrupt, empty or incompatible with the retriever/feature space."""

    exit_code = 4


class MalformedRecord(IndexError_, ValueError):
    """A knowledge record (from an index row or the knowledge cache) that does not have the documented shape."""

    exit_code = 4


class QueryBudgetExceeded(K2VError, RuntimeError):
    """A black-box oracle was asked for more queries than its budget allows."""

    exit_code = 5


class HubError(K2VError):
    """A Hub call failed after retries (auth, not found, gated, network)."""

    exit_code = 6


def one_line(text, limit: int = 300) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
