"""`k2v-hub app` in a real browser: headless Chromium (Debian's ``chromium`` and ``chromedriver``, driven with
selenium) on the page the command serves for the tiny zoo's index.

It uploads a tiny-zoo task as a zip of class folders, waits for the ranking, checks it against `find_model` on the
same images (top model, and the JSON download against the same answer), checks that bad uploads (one class, a
``../`` path, corrupt images, one over the size limit) and a Hub id that does not exist each get their message,
that a Hub dataset id (on the local Hub server) and a folder upload rank like the same images zipped, that the page
answers again afterwards, fetched nothing from anywhere but the app, and left no upload behind; and saves a
screenshot.
``K2V_SAVE_SCREENSHOT=DIR`` also writes it to ``DIR/app-screenshot.png`` with the seconds from upload to ranking in
``DIR/app-screenshot.json`` (the repo keeps them in ``docs/``).

Without Chromium the test is skipped, except under ``CI`` or ``K2V_REQUIRE_BROWSER=1`` (``.ci/run`` sets it), where
it fails: ``./install.sh --with-browser`` installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from k2v_hub.find import find_model
from k2v_hub.testing.hub_server import HubServer

from fakes import assert_same_ranking, console_script

WINDOW = (1400, 1700)
MAX_UPLOAD_MB = 1
_ENV_DROP = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
             "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT", "HF_HOME", "GRADIO_TEMP_DIR", "GRADIO_SERVER_NAME",
             "GRADIO_SERVER_PORT")


@pytest.fixture(scope="session", autouse=True)
def browser_or_skip():
    """Skip without a browser (fail under CI / K2V_REQUIRE_BROWSER=1), before the session fixtures are built."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the python package {module}")
    if missing:
        why = f"the browser test needs {', '.join(missing)}: ./install.sh --with-browser installs them"
        if os.environ.get("K2V_REQUIRE_BROWSER") == "1" or os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def driver():
    """selenium's Chrome driver on Debian's chromium, headless."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    chrome = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield chrome
    chrome.quit()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _task_images(tiny_task: Path, folder: Path) -> dict[str, bytes]:
    """The task's support images as ``tiny-task/<class>/<i>.png``, also written under ``folder``."""
    import datasets

    support = datasets.load_from_disk(str(tiny_task))["support"]
    names = support.features["label"].names
    files = {}
    for i, row in enumerate(support):
        path = folder / "tiny-task" / names[row["label"]] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        row["image"].save(path)
        files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


class Page:
    """The app's page, driven by selenium."""

    def __init__(self, driver, url: str):
        from selenium.webdriver.common.by import By

        self.d, self.by = driver, By
        self.d.get(url)
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, "#k2v-zip input[type=file]"), 120, "the page")

    def wait(self, condition, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; page text:\n{self.text()[-3000:]}")

    def css(self, selector: str):
        return self.d.find_elements(self.by.CSS_SELECTOR, selector)

    def text(self) -> str:
        return self.d.find_element(self.by.TAG_NAME, "body").text

    def status(self) -> str:
        return self.css("#k2v-status textarea")[0].get_attribute("value")

    def tab(self, title: str):
        [button] = [b for b in self.css("button[role=tab]") if b.text.strip() == title]
        button.click()

    def upload_zip(self, path: Path, *, arrives: bool = True):
        """Choose ``path`` in the zip box (clearing what is there); wait until it has arrived."""
        if self.css("#k2v-zip button[aria-label='Clear']"):
            self.click("#k2v-zip button[aria-label='Clear']")
            self.wait(lambda: self.css("#k2v-zip input[type=file]"), 30, "an empty zip box")
        self.css("#k2v-zip input[type=file]")[0].send_keys(str(path))
        if arrives:
            self.wait(lambda: path.stem in self.css("#k2v-zip")[0].text, 60, f"the upload of {path.name}")

    def click(self, selector: str, timeout: float = 30):
        """Click the first element matching ``selector`` once nothing covers it: while a box that just received an
        upload grows, the layout moves under the pointer for a moment."""
        from selenium.common.exceptions import ElementClickInterceptedException

        def clicked():
            try:
                self.css(selector)[0].click()
            except ElementClickInterceptedException:
                return False
            return True

        self.wait(clicked, timeout, f"{selector} to be clickable")

    def answer(self) -> tuple[str, str | None]:
        """The status and the picture's address: every answer draws a new picture, even when its status reads the
        same as the last one's (same images, same timings)."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            pictures = self.css("#k2v-picture img")
            return self.status(), pictures[0].get_attribute("src") if pictures else None
        except StaleElementReferenceException:  # the page is being redrawn: ask again
            return "", None

    def ask(self, timeout: float = 240) -> str:
        """Press Find models; wait for the new answer; return its status."""
        before = self.answer()
        self.click("#k2v-go")
        return self.wait(lambda: (now := self.answer()) != before and now[0], timeout, "the answer")

    def ranked_ids(self) -> list[str]:
        return [a.text for a in self.css("#k2v-ranking table.k2v-ranking tbody tr td:nth-child(2) a")]

    def requests_elsewhere(self, origin: str) -> list[str]:
        urls = []
        for entry in self.d.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return [u for u in urls if not u.startswith((origin, "data:", "blob:"))]


HUB_DATASET = "k2v-people/tiny-task"


@pytest.fixture
def served(tiny_zoo, tiny_index, tiny_task, tmp_path):
    """`k2v-hub app` on a free port, its Hub a local server holding one dataset (the task's support split as
    parquet, :data:`HUB_DATASET`); yields its URL."""
    import datasets

    parquet = tmp_path / "train.parquet"
    datasets.load_from_disk(str(tiny_task))["support"].to_parquet(str(parquet))
    with HubServer(tmp_path / "hub") as hub:
        hub.add_files(HUB_DATASET, {"data/train-00000-of-00001.parquet": parquet}, repo_type="dataset")
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        (tmp_path / "app-tmp").mkdir()
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1", PYTHONWARNINGS="ignore",
                   HF_HUB_DISABLE_TELEMETRY="1", TMPDIR=str(tmp_path / "app-tmp"))
        port = _free_port()
        proc = subprocess.Popen([*console_script("k2v-hub"), "app", "--index", str(tiny_index), "--zoo", str(tiny_zoo),
                                 "--port", str(port), "--max-upload-mb", str(MAX_UPLOAD_MB), "--format", "json"],
                                stdout=subprocess.PIPE, stderr=open(tmp_path / "app.log", "w"), text=True, env=env)
        try:
            lines = []
            while not lines or lines[-1] != "}\n":
                line = proc.stdout.readline()
                assert line, f"k2v-hub app exited {proc.wait()}:\n{(tmp_path / 'app.log').read_text()[-4000:]}"
                lines.append(line)
            url = json.loads("".join(lines))["url"]
            assert url == f"http://127.0.0.1:{port}/"
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=120)  # a loaded machine (load 5, under nice) once needed more than 30 s
    assert list((tmp_path / "app-tmp").iterdir()) == []  # stopped by SIGTERM, the app removed its private folder


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_page_ranks_an_uploaded_zip_and_survives_bad_input(driver, served, tiny_zoo, tiny_index, tiny_task,
                                                               tmp_path):
    files = _task_images(tiny_task, tmp_path / "data")
    good = _zip(tmp_path / "tiny-task.zip", files)
    expected = find_model(str(tmp_path / "data" / "tiny-task"), str(tiny_index), models_root=str(tiny_zoo),
                          show_progress=False)
    page = Page(driver, served)
    started = time.perf_counter()
    page.upload_zip(good)
    status = page.ask()
    seconds = time.perf_counter() - started
    assert status.startswith("Ranked "), status
    page.wait(lambda: page.css("#k2v-picture img") and page.css("#k2v-json a"), 30, "the picture and the JSON")
    assert page.ranked_ids()[0] == expected[0].model_id
    assert page.ranked_ids() == [m.model_id for m in expected]
    answer = json.loads(urllib.request.urlopen(page.css("#k2v-json a")[0].get_attribute("href")).read())
    assert_same_ranking(answer, expected)
    assert [r["stage"] for r in answer] == [m.stage for m in expected]
    shot = tmp_path / "app-screenshot.png"
    driver.save_screenshot(str(shot))
    print(f"\nupload to ranking: {seconds:.1f} s; screenshot: {shot}")
    _keep(shot, seconds, status)

    one_class = _zip(tmp_path / "one-class.zip", {k: v for k, v in files.items() if k.startswith(
        next(iter(files)).rsplit("/", 1)[0])})
    escaping = _zip(tmp_path / "escaping.zip", {**files, "../../escape.png": next(iter(files.values()))})
    corrupt = _zip(tmp_path / "corrupt.zip", {**files, "tiny-task/cow/broken.png": b"\x89PNG not really"})
    for path, message in ((one_class, "has one class folder"), (escaping, "unsafe path"),
                          (corrupt, "not a readable image: cow/broken.png")):
        page.upload_zip(path)
        status = page.ask()
        assert status.startswith("Error: ") and message in status, status
        assert page.ranked_ids() == []
    too_big = tmp_path / "too-big.zip"
    too_big.write_bytes(os.urandom(MAX_UPLOAD_MB * 2**20 + 1000))
    page.upload_zip(too_big, arrives=False)
    page.wait(lambda: "exceed the maximum allowed size" in page.text(), 30, "the size-limit message")
    page.tab("Hub dataset id")
    page.css("#k2v-hub-id textarea, #k2v-hub-id input")[0].send_keys("k2v-nobody/no-such-dataset")
    status = page.ask()
    assert "k2v-nobody/no-such-dataset" in status and "not found" in status.lower(), status
    page.css("#k2v-hub-id textarea, #k2v-hub-id input")[0].clear()
    page.css("#k2v-hub-id textarea, #k2v-hub-id input")[0].send_keys(HUB_DATASET)
    assert page.ask().startswith("Ranked ")
    assert page.ranked_ids()[0] == expected[0].model_id  # the same images, from the Hub

    page.tab("Image folder")
    page.css("#k2v-folder input[type=file]")[0].send_keys(str(tmp_path / "data" / "tiny-task"))
    page.wait(lambda: "bird" in page.css("#k2v-folder")[0].text, 60, "the folder upload")
    assert page.ask().startswith("Ranked ")
    assert page.ranked_ids()[0] == expected[0].model_id  # the class folders arrived

    page.tab("Zip of class folders")  # the page still answers
    page.upload_zip(good)
    assert page.ask().startswith("Ranked ")
    assert page.ranked_ids()[0] == expected[0].model_id
    assert page.requests_elsewhere(served) == []  # no fonts, scripts or telemetry from anywhere else
    # every upload and its unpacked images are gone: the app's temporary files, and the caches in its HF_HOME
    names = {Path(name).name for name in files}
    kept = [p for folder in ("app-tmp", "hf") for p in (tmp_path / folder).rglob("*") if p.is_file()]
    assert [p for p in kept if p.suffix in (".zip", ".arrow") or p.name in names] == []


def _keep(shot: Path, seconds: float, status: str) -> None:
    """With ``K2V_SAVE_SCREENSHOT=DIR``: the screenshot and the timing, for the repo's docs."""
    folder = os.environ.get("K2V_SAVE_SCREENSHOT")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / "app-screenshot.png")
        (Path(folder) / "app-screenshot.json").write_text(json.dumps(
            {"what": "tests/test_app_browser.py: a tiny-zoo task (24 images, 4 classes) uploaded as a zip to "
                     "`k2v-hub app --zoo` in headless Chromium", "upload_to_ranking_s": round(seconds, 1),
             "status": status}, indent=2) + "\n")
