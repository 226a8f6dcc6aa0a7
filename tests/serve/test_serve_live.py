"""`finegrain serve` as a real process (uvicorn on 127.0.0.1 and a free port), and the web page driven in
headless Chromium with Selenium (skipped only when Chromium or its driver is not installed)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from serve_support import bird, index_dir, model_dir, serve_data  # noqa: F401 - fixtures

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture(scope="module")
def live_server(model_dir, index_dir, tmp_path_factory):
    port = free_port()
    env = {**os.environ, "FINEGRAIN_CACHE_DIR": str(tmp_path_factory.mktemp("live-cache"))}
    proc = subprocess.Popen([sys.executable, "-m", "finegrain", "serve", str(model_dir), "--port", str(port), "-q",
                             "--index", str(index_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while get_status(base + "/readyz") != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not become ready: {proc.communicate()[0].decode(errors='replace')}")
        time.sleep(0.1)
    yield base
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_real_server_answers_over_http_and_stops_cleanly(live_server):
    req = urllib.request.Request(live_server + "/v1/models/birds/predict?top_k=2", data=bird("blue_jay"),
                                 headers={"Content-Type": "image/png"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.load(r)
    assert [p["label"] for p in body["results"][0]["top_k"]][:1] == ["blue_jay"]
    assert len(body["results"][0]["top_k"]) == 2
    assert get_status(live_server + "/metrics") == 200


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="headless Chromium not installed (Debian: apt-get install chromium chromium-driver)")
def test_page_in_headless_chromium_shows_top5_overlay_index_neighbours_and_readable_errors(live_server, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "jay.png"
    photo.write_bytes(bird("blue_jay"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is a text file with a photo's name")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(live_server + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "Ready" in d.find_element(By.ID, "status").text)
        assert not driver.find_element(By.ID, "model-row").is_displayed()  # one model: no picker
        assert not driver.find_element(By.ID, "key-row").is_displayed()  # no key needed
        driver.find_element(By.ID, "files").send_keys(str(photo))
        wait.until(lambda d: (d.find_element(By.CSS_SELECTOR, ".card .overlay").get_attribute("src") or "")
                   .startswith("data:image/png;base64,"))
        card = driver.find_element(By.CSS_SELECTOR, ".card")
        rows = card.find_elements(By.CSS_SELECTOR, ".top5 li")
        assert len(rows) == 3 and "blue jay" in rows[0].text  # 3 classes, best first
        assert "blue jay" in card.find_element(By.CSS_SELECTOR, ".verdict").text
        assert card.find_elements(By.CSS_SELECTOR, ".neighbours img")
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".card .index-block").is_displayed())
        similar = card.find_elements(By.CSS_SELECTOR, ".index-neighbours li")
        assert len(similar) == 5 and "blue jay · distance" in similar[0].text
        assert similar[0].find_element(By.TAG_NAME, "img").get_attribute("src").startswith("data:image/jpeg;base64,")
        driver.find_element(By.ID, "files").send_keys(str(broken))
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".card .error").is_displayed())
        error = driver.find_element(By.CSS_SELECTOR, ".card .error").text
        assert "broken.jpg" in error and "not a recognised image" in error
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "422" not in e["message"]]
    finally:
        driver.quit()
