"""Hostile model repos, and the peak memory of `k2v-hub index` over an org that holds them.

:func:`make_hostile_org` copies a zoo's models into ``root/ORG`` and adds repos made from one of its ResNets, each
handing the indexer a value that would size an allocation: 30,000 px images (size, shortest edge, crop size,
``crop_pct``, ``image_size``), 100,000 labels, a config much deeper or wider than its weights, oversized config,
processor config and card files, a config pointing elsewhere (remote code in another repo, a symlink, another repo's
name), one whose queries run out of memory (a fault injected by :func:`inject_memory_error`), and an ImageNet-21k
sized head (21,843 labels) that must be indexed. :func:`measure_peak_memory` runs `k2v-hub index` in a subprocess
over the org with and without them and reads each run's peak resident memory from ``wait4``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ORG = "k2v-hostile"
MEMORY_ERROR_MARK = "memory-error"
IMAGENET_21K = 21_843
PROBE = {"source": "builtin", "n": 48, "size": 32, "seed": 0, "kinds": ["shapes", "textures"]}
MAX_CLASSES, BISECTION_STEPS = 4, 3
HUGE = 30_000
MiB = 2**20


def edit_json(path: Path, change) -> None:
    """Rewrite a JSON file through ``change(data)``."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def pad_file(path: Path, size: int) -> None:
    """Grow a text file to ``size`` bytes with trailing whitespace (still valid JSON / Markdown)."""
    with open(path, "a") as f:
        f.write(" " * max(0, size - path.stat().st_size))


def set_labels(folder: Path, n: int, *, head: bool) -> None:
    """Give a ResNet ``n`` labels; with ``head``, also a real ``n``-way classifier (seeded random weights)."""
    import torch
    from safetensors.torch import load_file, save_file

    def labels(c):
        c["id2label"] = {str(i): f"class {i:05d}" for i in range(n)}
        c["label2id"] = {f"class {i:05d}": i for i in range(n)}

    edit_json(folder / "config.json", labels)
    if head:
        state = load_file(folder / "model.safetensors")
        g = torch.Generator().manual_seed(0)
        state["classifier.1.weight"] = torch.randn(n, state["classifier.1.weight"].shape[1], generator=g)
        state["classifier.1.bias"] = torch.zeros(n)
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def _preprocessor(change):
    return lambda f: edit_json(f / "preprocessor_config.json", change)


def _config(change):
    return lambda f: edit_json(f / "config.json", change)


def _elsewhere_name(c):
    c["_name_or_path"] = "google/vit-huge-patch14-224-in21k"
    c["architectures"] = ["ViTForImageClassification"]


def _symlink_config(folder: Path) -> None:
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")


PX = (f"asks for {HUGE} px images", "limit 1024")
# name -> (how the repo is made from a good ResNet, "indexed" or words its skip reason must hold)
HOSTILE = {
    "huge-image-size": (_preprocessor(lambda c: c.update(size={"height": HUGE, "width": HUGE})), PX),
    "huge-shortest-edge": (_preprocessor(lambda c: c.update(size={"shortest_edge": HUGE})), PX),
    "huge-crop-size": (_preprocessor(lambda c: c.update(do_center_crop=True, crop_size={"height": HUGE,
                                                                                       "width": HUGE})), PX),
    "tiny-crop-pct": (_preprocessor(lambda c: c.update(size={"shortest_edge": 30}, crop_pct=0.001)),
                      ("size / crop_pct", f"asks for {HUGE} px images")),
    "huge-config-image-size": (_config(lambda c: c.update(image_size=HUGE)), ("`image_size` asks for", "limit 1024")),
    "100k-labels": (lambda f: set_labels(f, 100_000, head=False), ("100000 labels (limit 32768)",)),
    "deep-config": (_config(lambda c: c.update(depths=[4000, 1, 1, 1])), ("describes a model of over", "weights hold")),
    "wide-config": (_config(lambda c: c.update(embedding_size=100_000)), ("describes a model of over", "weights hold")),
    "huge-config": (lambda f: pad_file(f / "config.json", 17 * MiB), ("config.json is 17.0 MiB (limit 16.0 MiB)",)),
    "huge-preprocessor": (lambda f: pad_file(f / "preprocessor_config.json", 2 * MiB),
                          ("preprocessor_config.json is 2.0 MiB (limit 1.0 MiB)",)),
    "huge-card": (lambda f: pad_file(f / "README.md", 5 * MiB), ("README.md is 5.0 MiB (limit 4.0 MiB)",)),
    "elsewhere-code": (_config(lambda c: c.update(auto_map={
        "AutoModelForImageClassification": "other-org/other-repo--modeling_x.XModel"})), ("`auto_map`",)),
    "elsewhere-symlink": (_symlink_config, ("no config.json",)),
    "elsewhere-name": (_config(_elsewhere_name), "indexed"),
    MEMORY_ERROR_MARK: (lambda f: None, ("out of memory", "MemoryError")),
    f"labels-{IMAGENET_21K}": (lambda f: set_labels(f, IMAGENET_21K, head=True), "indexed"),
}


def make_hostile_org(zoo: Path, root: Path, *, hostile: bool = True) -> dict:
    """Copy the zoo's models into ``root/ORG`` (plus the hostile repos); return ``{model_id: expected outcome}``."""
    from ..zoo.data import ZooData

    data = ZooData(zoo)
    org = root / ORG
    org.mkdir(parents=True)
    expect = {}
    for m in data.model_ids:
        shutil.copytree(zoo / m, org / m.split("/")[1])
        expect[f"{ORG}/{m.split('/')[1]}"] = "indexed"
    if not hostile:
        return expect
    base = next(m for m in data.model_ids if data.models[m].get("arch") == "resnet")
    for name, (make, outcome) in HOSTILE.items():
        shutil.copytree(zoo / base, org / name)
        make(org / name)
        expect[f"{ORG}/{name}"] = outcome
    return expect


def failing_predict(original, mark: str = MEMORY_ERROR_MARK):
    """``TransformersOracle._predict_batch`` that raises MemoryError for models whose path holds ``mark``."""

    def predict(self, images):
        if mark in str(self._model.name_or_path):
            raise MemoryError("injected: this model's query batch did not fit in memory")
        return original(self, images)

    return predict


def inject_memory_error(mark: str = MEMORY_ERROR_MARK) -> None:
    """Make queries of models whose path holds ``mark`` raise MemoryError, in this process (a test fault)."""
    from ..oracle import TransformersOracle

    TransformersOracle._predict_batch = failing_predict(TransformersOracle._predict_batch, mark)


def save_test_retriever(out: Path) -> Path:
    """An untrained retriever over ``pixels-8`` features with a small probe set: indexing costs are what is measured."""
    from ..features import FeatureExtractor
    from ..knowledge import load_probe_set
    from ..pipeline import new_retriever, save_retriever

    extractor = FeatureExtractor.from_pretrained("pixels-8")
    _, fingerprint, spec = load_probe_set(PROBE)
    retriever = new_retriever(extractor, probe_spec=spec, probe_fingerprint=fingerprint, max_classes=MAX_CLASSES,
                              embed_dim=16, hidden_dim=16)
    save_retriever(retriever, out)
    return out


def _console_script() -> list[str]:
    path = Path(sys.executable).parent / "k2v-hub"
    return [str(path)] if path.is_file() else [sys.executable, "-m", "k2v_hub.cli"]


def run_index(zoo_root: Path, out: Path, retriever: Path, work: Path) -> dict:
    """`k2v-hub index` over ``zoo_root/ORG`` in a subprocess (fresh caches, MemoryError fault injected); return its
    JSON report with ``peak_rss_mib`` (the child's peak resident memory) and ``seconds``."""
    inject = work / "inject"
    inject.mkdir(parents=True, exist_ok=True)
    (inject / "sitecustomize.py").write_text("from k2v_hub.testing.hostile import inject_memory_error\n\n"
                                             "inject_memory_error()\n")
    path = os.pathsep.join([str(inject)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = {**os.environ, "PYTHONPATH": path, "K2V_HUB_HOME": str(work / f"home-{out.name}"), "HF_HUB_OFFLINE": "1",
           "PYTHONWARNINGS": "ignore"}
    cmd = [*_console_script(), "index", "--org", ORG, "--zoo", str(zoo_root), "--out", str(out), "--retriever",
           str(retriever), "--bisection-steps", str(BISECTION_STEPS), "--format", "json"]
    start = time.perf_counter()
    with open(work / f"{out.name}.stdout", "w+") as stdout, open(work / f"{out.name}.stderr", "w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read(), stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"k2v-hub index exited {proc.returncode}:\n{err_text[-4000:]}")
    report = json.loads(out_text)
    report.update(peak_rss_mib=round(usage.ru_maxrss / 1024, 1), seconds=round(time.perf_counter() - start, 1))
    return report


def measure_peak_memory(zoo: Path, work: Path) -> dict:
    """Index the zoo's org as it is, then with the hostile repos added, each in a subprocess; return both runs
    (peak memory, indexed, skipped with reasons) and what each hostile repo was expected to do."""
    work.mkdir(parents=True, exist_ok=True)
    retriever = save_test_retriever(work / "retriever")
    result = {"command": "python benchmarks/hostile_memory.py", "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}", "probes": PROBE,
              "max_classes": MAX_CLASSES, "bisection_steps": BISECTION_STEPS}
    for kind in ("clean", "hostile"):
        expect = make_hostile_org(zoo, work / f"zoo-{kind}", hostile=kind == "hostile")
        run = run_index(work / f"zoo-{kind}", work / f"index-{kind}", retriever, work)
        result[kind] = {"models": len(expect), "peak_rss_mib": run["peak_rss_mib"], "seconds": run["seconds"],
                        "indexed": sorted(run["indexed"]), "skipped": run["skipped"],
                        "expected": {m: o if isinstance(o, str) else list(o) for m, o in expect.items()}}
    result["hostile_minus_clean_mib"] = round(result["hostile"]["peak_rss_mib"] - result["clean"]["peak_rss_mib"], 1)
    return result
