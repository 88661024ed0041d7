"""`hf k2v`: k2v-hub as an extension of the real `hf` CLI.

The extension is registered the way `hf extensions install` lays a Python extension out
(``~/.local/share/hf/extensions/hf-k2v/manifest.json`` naming the ``hf-k2v`` console script), in a temporary HOME,
then the real ``hf`` binary dispatches ``hf k2v ...`` to it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fakes import BIN, start_process  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def installed_script(name: str) -> Path:
    """The console script ``name`` installed next to the interpreter running the tests (the `hf` extension needs a
    file to point at)."""
    path = BIN / name
    if not path.is_file():  # the editable install predates the script: reinstall (no dependency is touched)
        subprocess.run([sys.executable, "-m", "pip", "install", "-e", str(REPO_ROOT), "--no-deps", "-q"],
                       check=True, capture_output=True, timeout=300)
    assert path.is_file(), f"{name} is not installed next to {sys.executable}"
    return path


def pyproject_description() -> str:
    """The description as `hf extensions install` reads it from pyproject.toml (first `description =` line)."""
    for line in (REPO_ROOT / "pyproject.toml").read_text().splitlines():
        line = line.strip()
        if line.startswith("description"):
            return line.partition("=")[2].strip().strip("\"'")
    raise AssertionError("pyproject.toml has no description")


@pytest.fixture(scope="module")
def hf_home_env(tmp_path_factory):
    """A HOME with hf-k2v registered as an installed `hf` extension; the environment to run `hf` in."""
    from huggingface_hub.cli.extensions import EXTENSIONS_ROOT, MANIFEST_FILENAME, ExtensionManifest

    home = tmp_path_factory.mktemp("home")
    ext_dir = home / EXTENSIONS_ROOT.relative_to("~") / "hf-k2v"
    ExtensionManifest(owner="k2v-hub", repo="hf-k2v", repo_id="k2v-hub/hf-k2v", short_name="k2v",
                      executable_path=str(installed_script("hf-k2v")), type="python",
                      installed_at=datetime.now(timezone.utc), description=pyproject_description(),
                      commit_sha=None).save(ext_dir)
    assert (ext_dir / MANIFEST_FILENAME).is_file()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_DEBUG", "NO_COLOR", "HF_HOME", "HF_TOKEN")}
    env.update({"HOME": str(home), "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONWARNINGS": "ignore",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    return env


def start(cmd, env, check=True):
    """Start ``cmd``; return a function that waits for it and returns the CompletedProcess (checked unless
    ``check=False``), so several commands can run side by side."""
    wait = start_process(cmd, env)

    def result():
        done = wait()
        if check and done.returncode != 0:
            raise AssertionError(f"{cmd} exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\n"
                                 f"stderr:\n{done.stderr[-4000:]}")
        return done

    return result


def run(cmd, env, check=True):
    return start(cmd, env, check)()


def commands(help_text: str) -> list[str]:
    return re.findall(r"^  ([a-z][a-z-]*)\s", help_text.split("Commands:")[1], flags=re.M)


def test_console_scripts_exist():
    assert shutil.which("hf-k2v") or (BIN / "hf-k2v").is_file()
    assert installed_script("hf-k2v").is_file() and installed_script("k2v-hub").is_file()


def test_hf_lists_the_extension_with_its_description(hf_home_env):
    hf = installed_script("hf")
    out = run([hf, "--help"], hf_home_env).stdout
    line = next((l for l in out.splitlines() if re.match(r"^\s+k2v\s", l)), None)
    assert line is not None, out
    assert "[extension k2v-hub/hf-k2v]" in out
    assert pyproject_description()[:30] in " ".join(out.split())  # the pyproject description is what hf shows
    listed = json.loads(run([hf, "extensions", "list", "--format", "json"], hf_home_env).stdout)
    assert [(e["command"], e["type"], e["description"]) for e in listed] == \
        [("hf k2v", "python", pyproject_description())]


def test_hf_k2v_help_lists_the_same_commands(hf_home_env):
    hf_help = run([installed_script("hf"), "k2v", "--help"], hf_home_env).stdout
    own_help = run([installed_script("k2v-hub"), "--help"], hf_home_env).stdout
    assert commands(hf_help) == commands(own_help)
    assert {"index", "find", "train", "push-card", "zoo", "bench", "demo"} <= set(commands(hf_help))
    assert hf_help.startswith("Usage: hf k2v ")


def test_hf_k2v_find_answers_like_k2v_hub_find(hf_home_env, tiny_index, tiny_task):
    args = ["find", "--dataset", tiny_task, "--index", tiny_index, "--format", "json", "--top-k", "5",
            "--max-images-per-class", "8"]
    via_hf = start([installed_script("hf"), "k2v", *args], hf_home_env)  # the three side by side
    direct = start([installed_script("k2v-hub"), *args], hf_home_env)
    bad = start([installed_script("hf"), "k2v", "find", "--dataset", tiny_task, "--index", Path(tiny_task) / "nope"],
                hf_home_env, check=False)
    via_hf, direct = json.loads(via_hf().stdout), json.loads(direct().stdout)
    assert via_hf == direct
    assert [m["rank"] for m in via_hf] == list(range(1, len(via_hf) + 1)) and via_hf[0]["model_id"]
    # errors keep their exit code through `hf`
    bad = bad()
    assert bad.returncode == 4 and "Traceback" not in bad.stderr
