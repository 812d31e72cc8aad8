"""`dex-portrait serve` in a real headless browser: Debian's chromium (/usr/bin/chromium, installed by the Makefile's
test setup) driven by Playwright, with no browser download. The server runs the bundled Stage-1 model on a free
port; the test uploads the bundled source, moves the yaw slider and checks that the result image changes, then
gives a driving image (the result changes again) and the bundled driving clip (a result video appears).

With DEX_SERVE_SCREENSHOT=PATH the page is also saved there as a 256-colour PNG (data/serve_screenshot.png, shown in the README).
"""

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from dex_jax.data.h264 import ffmpeg_exe
from dex_jax.data.video_io import read_clip, write_image
from dex_jax.infer.animate import DEFAULTS

CHROMIUM = Path("/usr/bin/chromium")
STARTUP_S = 180
CHANGED = "src => { const img = document.querySelector('#result img'); return img && img.src !== src; }"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The base URL of a `dex-portrait serve` of the bundled model; stopped after the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, DEX_JAX_CACHE=jax.config.jax_compilation_cache_dir)
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "dex_jax.cli", "serve", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_S
        while "serving" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no server after {STARTUP_S} s: {log.read_text()}"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def image_at(src):
    """The RGB pixels of an <img> src served by the app."""
    with urllib.request.urlopen(src, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def test_a_slider_moves_the_result_image(server, tmp_path):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(server, wait_until="domcontentloaded")
        page.locator("#source input[type=file]").set_input_files(str(DEFAULTS["source"]))
        result = page.locator("#result img")
        result.wait_for(timeout=120_000)
        first_src = result.get_attribute("src")
        first = image_at(first_src)
        assert first.shape == (256, 256, 3)  # the source's size: pasted back
        page.locator("#yaw input[type=range]").fill("30")
        page.wait_for_function(CHANGED, arg=first_src, timeout=120_000)
        turned = image_at(result.get_attribute("src"))
        assert turned.shape == first.shape
        assert np.abs(turned.astype(int) - first).mean() > 1
        write_image(tmp_path / "expression.png", read_clip(DEFAULTS["driving"])[0][40])
        page.locator("#expression input[type=file]").set_input_files(str(tmp_path / "expression.png"))
        page.wait_for_function(CHANGED, arg=result.get_attribute("src"), timeout=120_000)
        assert not np.array_equal(image_at(result.get_attribute("src")), turned)
        driving = tmp_path / "driving.mp4"  # the bundled clip as H.264, which browsers play (it is MPEG-4 Part 2)
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(DEFAULTS["driving"]), "-c:v", "libx264", "-pix_fmt",
                        "yuv420p", str(driving)], check=True)
        page.locator("#driving input[type=file]").set_input_files(str(driving))
        page.locator("#animate").click()
        page.locator("#animated video").wait_for(timeout=300_000)
        with urllib.request.urlopen(page.locator("#animated video").get_attribute("src"), timeout=30) as response:
            (tmp_path / "animated.mp4").write_bytes(response.read())
        frames, _ = read_clip(tmp_path / "animated.mp4")
        assert frames.shape == (75, 256, 256, 3)
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        if os.environ.get("DEX_SERVE_SCREENSHOT"):  # a 256-colour PNG, small enough for the repository
            Image.open(tmp_path / "serve.png").convert("RGB").quantize(256).save(os.environ["DEX_SERVE_SCREENSHOT"])
        browser.close()
