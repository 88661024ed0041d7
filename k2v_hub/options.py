"""Named choices that the library and the CLI share, in a module that imports nothing heavy.

The CLI lists them in ``--help`` and checks options against them without importing torch or transformers
(``k2v-hub index --help`` took 8 s when they lived beside the code that uses them).
"""

from __future__ import annotations

from typing import Literal, get_args

#: What the black box shows (:mod:`k2v_hub.oracle`): full probabilities, top-5 labels with scores, or the top label.
OracleView = Literal["full", "top5", "label"]
ORACLE_VIEWS: tuple[str, ...] = get_args(OracleView)
#: How M_EXT / Q_EXT pool a sequence of nodes (:mod:`k2v_hub.encoders`).
ENCODER_MODES = ("lstm", "concat", "average")
#: The task-to-model alignment loss L_SAL (:mod:`k2v_hub.train`).
SAL_LOSSES = ("cosine", "contrastive")
