"""End to end in a real browser: start `eosdetect serve`, upload an image in headless
Chromium, check that the count and the overlay appear. Saves a screenshot to
build/test-artifacts/ (or $EOSDETECT_ARTIFACTS).

Skipped, with the reason, where Chromium, ChromeDriver or Selenium is missing
(Debian: apt-get install chromium chromium-driver; .ci/run installs them where it can).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "samples" / "synthetic_smear_01.jpg"

pytestmark = pytest.mark.slow

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytest.importorskip("fastapi", reason="the web extras are not installed")
httpx = pytest.importorskip("httpx")


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for n in names:
        found = shutil.which(n)
        if found:
            return found
    return None


CHROMIUM = _find("EOSDETECT_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _find("EOSDETECT_CHROMEDRIVER", "chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_smear() -> Path | None:
    """A BCCD smear with an eosinophil from the shared data, when it is there."""
    shared = Path(os.environ.get("EOSDETECT_SHARED_DATA", ROOT.parent / "shared" / "data"))
    p = shared / "bccd" / "images" / "BloodImage_00017.jpg"
    return p if p.is_file() else None


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "eosdetect", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"eosdetect serve exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("eosdetect serve did not answer within 180 s")
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium/ChromeDriver found (Debian: apt-get install chromium chromium-driver, "
                    "or set EOSDETECT_CHROMIUM and EOSDETECT_CHROMEDRIVER)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1300"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def test_upload_in_a_browser_shows_count_and_overlay(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = _real_smear() or SAMPLE
    expected = httpx.post(server + "/api/v1/count", files={"image": (image.name, image.read_bytes())},
                          data={"pixel_size": "0.06"}, timeout=120).json()

    browser.get(server + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    assert browser.find_element(By.ID, "model").get_attribute("value") == "eosinophil-smear"
    browser.find_element(By.ID, "files").send_keys(str(image))
    browser.find_element(By.ID, "pixel-size").send_keys("0.06")
    browser.find_element(By.ID, "count-button").click()
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.ID, "done"))

    card = browser.find_element(By.CSS_SELECTOR, f'.result[data-filename="{image.name}"]')
    assert not card.find_elements(By.CSS_SELECTOR, ".error-message"), card.text
    assert card.find_element(By.CSS_SELECTOR, ".count-value").text == str(expected["count"])
    assert "per mm²" in card.find_element(By.CSS_SELECTOR, ".density").text
    img = card.find_element(By.CSS_SELECTOR, "img.overlay")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return arguments[0].complete", img))
    assert browser.execute_script("return arguments[0].naturalWidth", img) == expected["image"]["width"]
    links = [a.get_attribute("download") for a in card.find_elements(By.CSS_SELECTOR, ".downloads a")]
    stem = image.stem
    assert links == [f"{stem}_detections.csv", f"{stem}_overlay.png", f"{stem}.xml"]

    out = Path(os.environ.get("EOSDETECT_ARTIFACTS", ROOT / "build" / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    browser.execute_script("arguments[0].scrollIntoView()", card)
    assert browser.save_screenshot(str(out / "browser_count.png"))


def test_a_corrupt_upload_shows_its_reason(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    browser.get(server + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "files").send_keys(str(bad))
    browser.find_element(By.ID, "count-button").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "done"))
    msg = browser.find_element(By.CSS_SELECTOR, '.result[data-filename="broken.png"] .error-message').text
    assert msg.startswith("broken.png:")
