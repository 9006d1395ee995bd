"""The page at ``/``: a person drops an image and reads the top classes as bars, with the class heatmap over it.  Driven in Debian's headless
Chromium through Selenium and its chromedriver; the screenshot is kept in build/test-artifacts/."""

from __future__ import annotations

import base64
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, digit_images
from tests.serverutil import serving, train_digits_export

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = os.path.join(ROOT, "build", "test-artifacts")

if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium and chromium-driver for the page test "
                           "(quickstart.py test installs them)")
    pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

# Drops a file the way a browser does when a person lets go of it over the zone: a DataTransfer holding a File.
DROP = """
const [zone, name, b64] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, {type: "image/png"}));
for (const kind of ["dragenter", "dragover", "drop"]) {
  zone.dispatchEvent(new DragEvent(kind, {bubbles: true, cancelable: true, dataTransfer: data}));
}
"""


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1000,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def test_a_dropped_image_is_classified_and_shown_as_bars(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model_dir = train_digits_export(str(tmp_path), epochs=2)
    images, labels = digit_images(1, size=64, classes=[3])
    photo = tmp_path / "three.png"
    Image.fromarray(images[0]).convert("RGB").save(photo)  # a 64x64 RGB photo of a 3, for an 8x8 grey model
    with serving([model_dir], log_dir=str(tmp_path), ready_model="lenet5-digits") as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: "version 1" in d.find_element(By.ID, "model-info").text)
        info = browser.find_element(By.ID, "model-info").text
        assert "lenet5-digits" in info and "test accuracy" in info and "%" in info

        zone = browser.find_element(By.ID, "drop")
        browser.execute_script(DROP, zone, photo.name, base64.b64encode(photo.read_bytes()).decode())
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-classified") == photo.name)
        rows = browser.find_elements(By.CSS_SELECTOR, "#bars .row")
        assert len(rows) == 5
        classes = [row.get_attribute("data-cls") for row in rows]
        probabilities = [float(row.get_attribute("data-probability")) for row in rows]
        assert set(classes) <= {str(d) for d in range(10)} and len(set(classes)) == 5
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
        widths = [row.find_element(By.CLASS_NAME, "bar").size["width"] for row in rows]
        assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
        assert browser.find_element(By.ID, "error").text == ""

        # The page's answer is the server's: the same file through :classify gives the same classes.
        import httpx

        answer = httpx.post(f"{server.url}/v1/models/lenet5-digits:classify", params={"top_k": 5},
                            files=[("file", (photo.name, photo.read_bytes(), "image/png"))]).json()
        assert [t["class"] for t in answer["predictions"][0]["top"]] == classes

        # The heatmap of the top class lies over the dropped image, and the switch hides it.
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-explained") == photo.name)
        figure = browser.find_element(By.ID, "figure")
        heatmap = browser.find_element(By.ID, "heatmap")
        assert heatmap.is_displayed() and heatmap.size == pytest.approx(
            {k: v - 2 for k, v in browser.find_element(By.ID, "preview").size.items()}, abs=1)
        shown, hidden = tmp_path / "heatmap-shown.png", tmp_path / "heatmap-hidden.png"
        assert browser.save_screenshot(str(shown))
        browser.find_element(By.ID, "show-heatmap").click()
        assert not heatmap.is_displayed()
        assert browser.save_screenshot(str(hidden))
        box = figure.rect
        crop = (int(box["x"]) + 2, int(box["y"]) + 2, int(box["x"] + box["width"]) - 2, int(box["y"] + box["height"]) - 2)

        def colours(path):  # shares of the image's pixels in colour, warm (evidence) and cool: the digit is grey
            with Image.open(path) as shot:
                pixels = np.asarray(shot.convert("RGB").crop(crop), np.int16)
            red, blue = pixels[..., 0], pixels[..., 2]
            return (float(((pixels.max(axis=-1) - pixels.min(axis=-1)) > 40).mean()),
                    float((red > blue + 60).mean()), float((blue > red + 60).mean()))

        coloured, warm, cool = colours(shown)
        assert coloured > 0.5 and warm > 0.02 and cool > 0.02, (coloured, warm, cool)  # a map, not a tint
        assert colours(hidden)[0] < 0.01
        assert browser.find_element(By.ID, "method").text in ("Grad-CAM", "occlusion")
        browser.find_element(By.ID, "show-heatmap").click()

        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "serve-page.png")
        assert browser.save_screenshot(shot)
        with Image.open(shot) as image:
            assert image.size[0] >= 800

        # A file that is not an image: the page says why, in one line, and draws no bars.
        browser.execute_script(DROP, zone, "notes.png", base64.b64encode(b"not an image").decode())
        wait.until(lambda d: d.find_element(By.ID, "error").text != "")
        assert "notes.png" in browser.find_element(By.ID, "error").text
        assert browser.find_elements(By.CSS_SELECTOR, "#bars .row") == []
