"""`k2v-hub bench`: every method side by side on the offline zoo, in one run (Tables 1 and 2 of the paper).

What one run does, in order:

1. builds (or reuses) the zoo of the profile, with its tasks and measured ground truth;
2. queries every model as a black box on the probe set (knowledge records, cached), for each oracle view;
3. trains the retriever (supervised, on the ``train`` tasks of the ``seen`` models) and, from the index alone,
   a self-supervised one and a supervised+self-supervised (adapted) one;
4. builds the index through the product path (``build_index``) and times ``find_model`` on real task folders;
5. runs every baseline from real forward passes (LogME, LEEP, NCE, H-score, NLEEP, LogME on probabilities),
   the trivial rankings (random, popularity, size, label_match, card_dataset) and the two-stage hybrid;
6. scores each method per task against the ground truth and writes JSON + Markdown + a picture.

Evaluation sets. ``methods``: NNR evaluation tasks (``eval`` tasks of seen models and ``inductive`` tasks of unseen
models), the best model being the one with the highest measured V.Acc over the whole zoo. ``settings`` splits them
(``seen``, ``inductive``), and ``seen_pool`` scores the seen tasks with the trained models as the only candidates,
the zoo of the paper's Table 1 (where no model is new to the retriever). ``transfer``: correlation with Ft.Acc on
transfer tasks. ``label_blind``: the same with the tasks' label names replaced by ``class_0..``.
``unseen_domains``: whole source domains kept out of retriever training and out of the probe set. Ties in a method's
scores are broken by a fixed random permutation per task (never by model name), so a constant method scores like
``random``.

Timing. ``find_model_s``: median of 8 whole ``find_model`` calls in one process (load, features, encode, search; the
backbone stays in memory after the first call, as in a notebook or a service). ``brute_force_logme_s``: per search,
every model loaded once, run on the task's images and scored with LogME; ``speedup_vs_logme_models_in_memory``
leaves the loads out, as if every model of the org stayed in memory.

Layout: :mod:`.data` (the zoo, the models' knowledge and forward passes, computed once), :mod:`.methods` (each
method's score matrix; the hybrids), :mod:`.scoring` (recall, relative accuracy, correlations), :mod:`.tables`
(Tables 1 and 2), :mod:`.studies` (oracle views, ablation, seed spread, unseen domains, probe sets),
:mod:`.report` (Markdown, picture), :mod:`.run` (`run_bench` and `run_probe_bench`, step by step) and
:mod:`.scale` (`run_scale_bench`).
"""

from .methods import with_hybrids
from .run import run_bench, run_probe_bench
from .scale import run_scale_bench
from .scoring import score_method

__all__ = ["run_bench", "run_probe_bench", "run_scale_bench", "score_method", "with_hybrids"]
