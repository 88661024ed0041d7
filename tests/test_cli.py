"""The command line's habits, as a user sees them: help with examples, output formats, one-line errors, exit
codes, quiet progress in machine formats, NO_COLOR. Every check runs the installed `k2v-hub` console script (the
one next to the interpreter running the tests: no activated venv needed)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys

import pytest

from fakes import console_script  # noqa: E402

K2V = console_script("k2v-hub")
COMMANDS = ["index", "find", "train", "push-card", "zoo", "bench", "demo"]
_ENV_DROP = ("HF_DEBUG", "NO_COLOR", "FORCE_COLOR", "K2V_HUB_VERBOSE", "HF_HUB_DISABLE_PROGRESS_BARS")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TQDM = re.compile(r"\d+%\||it/s|s/it|\[\d\d:\d\d")


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    e.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONWARNINGS": "ignore"})
    e.update(extra)
    return e


def k2v(*args, check=True, **extra_env) -> subprocess.CompletedProcess:
    proc = subprocess.run([*K2V, *map(str, args)], capture_output=True, text=True, env=env(**extra_env),
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    return proc


def run_on_terminal(args, **extra_env) -> str:
    """Run with stdout on a pseudo-terminal (what a person sees); return what it printed there."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([*K2V, *map(str, args)], stdout=slave, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env(COLUMNS="200", **extra_env))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=600)
    os.close(master)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    return b"".join(chunks).decode(errors="replace")


# ---------------------------------------------------------------------------------------------------------------
def test_root_help_lists_every_command():
    out = k2v("--help").stdout
    listed = re.findall(r"^  ([a-z-]+)\s", out.split("Commands:")[1], flags=re.M)
    assert set(COMMANDS) <= set(listed), listed
    assert "Examples:" in out


@pytest.mark.parametrize("command", [[c] for c in COMMANDS] + [["zoo", "build"]], ids=lambda c: " ".join(c))
def test_every_command_help_has_examples(command):
    proc = k2v(*command, "--help")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "Examples:" in proc.stdout and "$ k2v-hub " in proc.stdout
    if command[0] not in ("zoo",) or command == ["zoo", "build"]:
        for flag in ("--format", "--json", "--quiet", "--verbose", "--token"):
            assert flag in proc.stdout, (command, flag)


def heavy_modules_after(*commands) -> tuple[list[str], str]:
    """Run the commands in one fresh interpreter; return which of torch, transformers and datasets got imported,
    and what they printed on stderr."""
    code = ("import sys\nfrom k2v_hub.cli import main\n"
            f"for command in {[list(map(str, c)) for c in commands]!r}:\n"
            "    try:\n        main(command)\n    except SystemExit:\n        pass\n"
            "import json\nprint(json.dumps(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules)),"
            " file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *printed, loaded = proc.stderr.strip().splitlines()
    return json.loads(loaded), "\n".join(printed)


def test_help_imports_neither_torch_nor_transformers():
    """Help is instant: no command's ``--help`` loads torch or transformers (``index --help`` once took 8 s)."""
    loaded, _ = heavy_modules_after(*([c, "--help"] for c in COMMANDS), ["zoo", "build", "--help"])
    assert loaded == []


def test_mistyped_dataset_or_index_fails_before_torch_loads(tmp_path):
    """`find` with a dataset or index that is neither a folder nor a Hub id says so at once (it took 8.6 s)."""
    loaded, printed = heavy_modules_after(["find", "--dataset", tmp_path / "nope", "--index", "my-org/k2v-index"],
                                          ["find", "--dataset", tmp_path, "--index", tmp_path / "nope"])
    assert loaded == []
    assert "is not a folder and not a valid Hub dataset id" in printed
    assert "is neither a folder nor a Hub dataset id" in printed


def test_new_flags_are_there():
    index_help = k2v("index", "--help").stdout
    assert "--limit" in index_help and "--yes" in index_help
    assert "--revision" in k2v("find", "--help").stdout
    assert "--revision" in k2v("push-card", "--help").stdout


def test_rerank_fusion_flag_states_the_library_default_and_refuses_a_negative_weight():
    from k2v_hub.rerank import FUSION_WEIGHT

    text = " ".join(k2v("find", "--help").stdout.split())
    assert "--rerank-fusion WEIGHT" in text and f"Default {FUSION_WEIGHT:g} (chosen on the bench's validation" in text
    proc = k2v("find", "--dataset", "x", "--index", "y", "--rerank-fusion", "-1", check=False)
    assert proc.returncode == 2 and "--rerank-fusion" in proc.stderr and "Traceback" not in proc.stderr


def test_exit_codes_are_documented():
    import k2v_hub.cli as cli

    doc = cli.__doc__
    for code in ("0", "1", "2", "3", "4", "5", "6", "130"):
        assert re.search(rf"^\s*{code}\s+\S", doc, flags=re.M), code
    assert "HF_DEBUG" in doc and "NO_COLOR" in doc


# ---------------------------------------------------------------------------------------------------------------
# `find` costs a few seconds of imports and feature extraction per process, so the format variants run through the
# console script's entry point (`k2v_hub.cli:main`, what `k2v-hub` calls) several times in one process, each with
# its own stdout/stderr; the terminal and error checks below run the `k2v-hub` script itself.
HARNESS = r"""
import contextlib, io, json, sys
from k2v_hub.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code or 0
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


@pytest.fixture(scope="module")
def find_args(tiny_index, tiny_task):
    return ["find", "--dataset", str(tiny_task), "--index", str(tiny_index), "--top-k", "3",
            "--max-images-per-class", "8"]


@pytest.fixture(scope="module")
def variants(find_args):
    """--format human, --format json, --json, -q, --format quiet, and JSON with --goal fine-tune: {flags: {code,
    stdout, stderr}}. Human first: the machine formats switch progress bars off for the rest of the process."""
    flags = [["--format", "human"], ["--format", "json"], ["--json"], ["-q"], ["--format", "quiet"],
             ["--format", "json", "--goal", "fine-tune"]]
    proc = subprocess.run([sys.executable, "-c", HARNESS, json.dumps([find_args + f for f in flags])],
                          capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {" ".join(f): r for f, r in zip(flags, json.loads(proc.stdout))}


@pytest.fixture(scope="module")
def as_json(variants):
    assert variants["--format json"]["code"] == 0, variants["--format json"]["stderr"][-3000:]
    return variants["--format json"]


def test_find_json_is_an_array_best_first(as_json, tiny_zoo):
    from k2v_hub.zoo.data import ZooData

    rows = json.loads(as_json["stdout"])
    assert isinstance(rows, list) and len(rows) == 3
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    models = ZooData(tiny_zoo).model_ids
    for r in rows:
        assert r["model_id"] in models and re.fullmatch(r"[0-9a-f]{40}", r["revision"])
        assert isinstance(r["score"], float)
    # machine output: no progress bar on stderr
    assert not TQDM.search(as_json["stderr"]), as_json["stderr"][-2000:]


def test_goal_fine_tune_ranks_by_the_shipped_predictor(as_json, variants):
    """`--goal fine-tune` answers from the predictor shipped with the package: every match carries its
    `finetune_score` and says so; the scores still fall along the list."""
    answer = variants["--format json --goal fine-tune"]
    assert answer["code"] == 0, answer["stderr"][-3000:]
    rows = json.loads(answer["stdout"])
    assert len(rows) == 3 and [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert all(r["stage"] == "finetune-fit" and isinstance(r["finetune_score"], float) for r in rows)
    assert all(r["finetune_score"] is None for r in json.loads(as_json["stdout"]))


def test_json_flag_equals_format_json(as_json, variants):
    assert variants["--json"]["code"] == 0
    assert json.loads(variants["--json"]["stdout"]) == json.loads(as_json["stdout"])


def test_quiet_prints_ids_one_per_line(as_json, variants):
    ids = [r["model_id"] for r in json.loads(as_json["stdout"])]
    for flag in ("-q", "--format quiet"):
        assert variants[flag]["code"] == 0
        assert variants[flag]["stdout"].splitlines() == ids
        assert not TQDM.search(variants[flag]["stderr"])


def test_human_format_is_a_table_with_progress(as_json, variants):
    ids = [r["model_id"] for r in json.loads(as_json["stdout"])]
    human = variants["--format human"]
    lines = human["stdout"].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("RANK"))
    assert "MODEL_ID" in lines[header] and "SCORE" in lines[header]
    for i, model_id in enumerate(ids):
        cells = lines[header + 1 + i].split()
        assert cells[0] == str(i + 1) and cells[1] == model_id
    assert not ANSI.search(human["stdout"])  # not a terminal: no colour
    assert TQDM.search(human["stderr"])  # progress bars are for people: human format only


def test_terminal_gets_the_table_and_no_color_is_respected(find_args):
    shown = run_on_terminal(find_args, NO_COLOR="1")
    assert "MODEL_ID" in shown and "RANK" in shown  # auto format on a terminal: the human table
    assert not ANSI.search(shown)


# Each error below costs a `k2v-hub find` process its start-up (seconds of imports): they are all started side by
# side when the first of these tests runs, then each test checks its own.
class ErrorRuns:
    """`k2v-hub` processes started side by side; ``result(name)`` waits for one and returns its CompletedProcess
    (with ``tty_stderr``: its stderr as a terminal showed it)."""

    def __init__(self, work):
        self.work = work
        self.procs = {}

    def start(self, name, *args, tty_stderr=False, **extra_env):
        import pty

        out, err = open(self.work / f"{name}.out", "w"), open(self.work / f"{name}.err", "w")
        master = None
        if tty_stderr:
            master, slave = pty.openpty()
        with out, err:
            proc = subprocess.Popen([*K2V, *map(str, args)], stdout=out, stderr=slave if tty_stderr else err,
                                    stdin=subprocess.DEVNULL, env=env(**extra_env))
        if tty_stderr:
            os.close(slave)
        self.procs[name] = (proc, master)

    def result(self, name) -> subprocess.CompletedProcess:
        proc, master = self.procs[name]
        try:
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if master is None:
            err = (self.work / f"{name}.err").read_text()
        else:
            err = os.read(master, 65536).decode(errors="replace")
            os.close(master)
        return subprocess.CompletedProcess(proc.args, proc.returncode, (self.work / f"{name}.out").read_text(), err)

    def close(self):
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def errors(tiny_index, tiny_task, tmp_path_factory):
    work = tmp_path_factory.mktemp("errors")
    (work / "not-an-index").mkdir()
    runs = ErrorRuns(work)
    try:
        for no_color in (False, True):
            runs.start(f"colour-{no_color}", "find", "--dataset", work / "missing", "--index", work, tty_stderr=True,
                       **({"NO_COLOR": "1"} if no_color else {}))
        runs.start("missing-dataset", "find", "--dataset", work / "no-such-dataset", "--index", tiny_index,
                   "--format", "json")
        args = ["find", "--dataset", work / "missing", "--index", tiny_index, "--format", "json"]
        runs.start("--verbose", *args, "--verbose")
        runs.start("HF_DEBUG=1", *args, HF_DEBUG="1")
        runs.start("not-an-index", "find", "--dataset", tiny_task, "--index", work / "not-an-index")
        runs.start("no-dataset", "find", "--index", work)  # --dataset missing
        runs.start("yaml", "find", "--dataset", tiny_task, "--index", work, "--format", "yaml")
        yield runs
    finally:
        runs.close()


@pytest.mark.parametrize("no_color", [False, True])
def test_error_colour_on_a_terminal_unless_no_color(errors, no_color):
    proc = errors.result(f"colour-{no_color}")  # find --dataset MISSING --index DIR, stderr on a terminal
    err = proc.stderr
    assert proc.returncode == 2 and "Error:" in err
    assert bool(ANSI.search(err)) is (not no_color)


def test_push_asks_first_on_a_terminal_unless_yes(tiny_zoo, tiny_retriever, tmp_path):
    """`index --push` on a terminal asks before doing anything; answering no stops it (exit 130, nothing written);
    `--yes` does not ask (here it then fails at once on a retriever that does not exist)."""
    import pty

    from k2v_hub.zoo.data import ZooData

    args = [*K2V, "index", "--org", ZooData(tiny_zoo).org, "--zoo", str(tiny_zoo), "--push", "someone/k2v-index"]
    # the two runs need nothing from each other (own --out folders): side by side, each mostly start-up
    yes_master, yes_slave = pty.openpty()
    with open(tmp_path / "yes.out", "w") as out, open(tmp_path / "yes.err", "w") as err:
        yes = subprocess.Popen(args + ["--out", str(tmp_path / "ix-yes"), "--retriever", str(tmp_path / "missing"),
                                       "--yes"], stdin=yes_slave, stdout=out, stderr=err, env=env())
    os.close(yes_slave)
    try:
        master, slave = pty.openpty()
        proc = subprocess.Popen(args + ["--out", str(tmp_path / "ix"), "--retriever", str(tiny_retriever)],
                                stdin=slave, stdout=slave, stderr=slave, env=env())
        os.close(slave)
        shown = b""
        while b"[y/N]" not in shown:
            data = os.read(master, 4096)
            assert data, shown
            shown += data
        os.write(master, b"n\n")
        assert proc.wait(timeout=120) == 130
        os.close(master)
        assert b"Push the index to someone/k2v-index" in shown and not (tmp_path / "ix").exists()

        assert yes.wait(timeout=120) != 0
    finally:
        if yes.poll() is None:
            yes.kill()
            yes.wait()
        os.close(yes_master)
    printed = (tmp_path / "yes.out").read_text() + (tmp_path / "yes.err").read_text()
    assert "[y/N]" not in printed


# ---------------------------------------------------------------------------------------------------------------
def test_missing_dataset_is_one_line_without_traceback(errors):
    proc = errors.result("missing-dataset")  # find --dataset MISSING --index TINY_INDEX --format json
    missing = errors.work / "no-such-dataset"
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert str(missing) in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("how", ["--verbose", "HF_DEBUG=1"])
def test_traceback_with_verbose_or_hf_debug(errors, how):
    proc = errors.result(how)  # find --dataset MISSING --index TINY_INDEX --format json, with --verbose or HF_DEBUG=1
    assert proc.returncode == 2  # same exit code, with the traceback
    assert "Traceback (most recent call last)" in proc.stderr and "DatasetError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("Error: ")


def test_bad_index_and_usage_errors_have_their_exit_codes(errors):
    proc = errors.result("not-an-index")  # find --dataset TASK --index EMPTY_DIR
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = errors.result("no-dataset")  # --dataset missing
    assert proc.returncode == 2 and "--dataset" in proc.stderr and "Traceback" not in proc.stderr
    proc = errors.result("yaml")  # --format yaml
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# `k2v-hub demo` builds a zoo and trains a retriever unless its folder already holds them (as on a second run): it
# starts here from folders holding copies of the session's tiny zoo and retriever, so it only indexes and answers.
# The piped run and the human/quiet runs each get a folder of their own and are started side by side when the first
# demo test runs (each is mostly start-up, imports and the black-box re-rank); each test checks its own.
@pytest.fixture(scope="module")
def demo_runs(tiny_zoo, tiny_retriever, tmp_path_factory):
    import shutil

    from fakes import start_process

    dirs = {}
    for name in ("piped", "human"):
        out = dirs[name] = tmp_path_factory.mktemp(f"demo-{name}")
        shutil.copytree(tiny_zoo, out / "zoo", symlinks=True)
        shutil.copytree(tiny_retriever, out / "retriever")
    piped = start_process([*K2V, "demo", "--out", dirs["piped"]], env=env())  # stdout is a pipe
    flags = [["--format", "human"], ["-q"]]
    human = start_process([sys.executable, "-c", HARNESS, json.dumps([["demo", "--out", str(dirs["human"]), *f]
                                                                      for f in flags])], env=env())
    runs = {"piped": functools.lru_cache(maxsize=None)(piped), "human": functools.lru_cache(maxsize=None)(human)}
    yield runs
    for wait in runs.values():  # a test that failed before waiting leaves no process behind
        wait()


def test_demo_piped_prints_its_json_result_and_progress_on_stderr(demo_runs, tiny_zoo):
    """`k2v-hub demo > demo.log`: stdout is not a terminal, so the format is json and the JSON result is printed."""
    from k2v_hub.zoo.data import ZooData

    proc = demo_runs["piped"]()  # k2v-hub demo --out DIR, stdout is a pipe: --format auto is json
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    result = json.loads(proc.stdout)
    rows = result["matches"]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 2
    assert {r["model_id"] for r in rows} <= set(ZooData(tiny_zoo).model_ids)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert result["task"] and result["best_by_ground_truth"] in ZooData(tiny_zoo).model_ids
    assert os.path.isfile(result["picture"])
    assert "4/4 Which model fits" in proc.stderr and not TQDM.search(proc.stderr)


def test_demo_human_prints_a_table_and_quiet_the_ids(demo_runs):
    proc = demo_runs["human"]()  # demo --out DIR --format human, then -q, in one process
    assert proc.returncode == 0, proc.stderr[-3000:]
    human, quiet = json.loads(proc.stdout)
    assert human["code"] == 0 and quiet["code"] == 0, (human["stderr"][-2000:], quiet["stderr"][-2000:])
    lines = human["stdout"].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("RANK"))
    assert "MODEL_ID" in lines[header] and "MEASURED_V_ACC" in lines[header]
    assert "Ground truth best:" in human["stdout"] and "4/4 Which model fits" in human["stderr"]
    ids = quiet["stdout"].splitlines()
    assert ids == [line.split()[1] for line in lines[header + 1:header + 1 + len(ids)]] and ids
    assert "4/4" not in quiet["stderr"] and not TQDM.search(quiet["stderr"])


def test_every_api_uses_the_k2v_hub_library_name():
    from k2v_hub import __version__
    from k2v_hub.hub import HubSource, get_api

    for api in (get_api(None), HubSource().api):
        assert api.library_name == "k2v-hub" and api.library_version == __version__


def test_ci_runs_the_readme_test_command_as_written():
    """`.ci/run` runs the README's test command byte for byte, with no venv activated (the tests start the console
    scripts installed next to the interpreter, so a fresh clone needs nothing on PATH)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = re.search(r"^(\.venv/bin/python -m pytest.*?)\s+# run the tests$", (root / "README.md").read_text(),
                        flags=re.M).group(1)
    ci = (root / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == command
    assert "bin/activate" not in ci
