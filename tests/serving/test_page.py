"""Tests of the drawing page (tfmnist/serving/page.html) in headless Chromium.

WebDriver draws on the canvas with real pointer events (press, moves,
release), as a mouse or a finger, then the tests read back what the page
shows: the 28x28 preview must be what data.photos makes of the canvas, the
bars what :predict answers for that image, the prediction their argmax.
The default lane serves the tiny shared run; the slow test trains fast_cnn
briefly on the real MNIST subset and checks that drawn digits are read.

Chromium is Debian's (/usr/bin/chromium, /usr/bin/chromedriver), never one
that Selenium Manager would download (the machines have no internet).
"""

import base64
import json
import math
import os
import types
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist.data import photos, prepare
from tfmnist.serving import inference, server
from tfmnist.training import optim

try:
  from selenium import webdriver
  from selenium.common.exceptions import TimeoutException
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.actions import interaction
  from selenium.webdriver.common.actions.action_builder import ActionBuilder
  from selenium.webdriver.common.actions.pointer_input import PointerInput
  from selenium.webdriver.support.wait import WebDriverWait
except ImportError:  # The browser tests skip, saying what to install.
  webdriver = None

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NO_CHROMIUM = "no Chromium: apt-get install chromium chromium-driver"
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1200,900")
WAIT_SECONDS = 20

# Digits as strokes of (x, y) points, in fractions of the canvas.
ONE = [[(0.5, 0.12), (0.5, 0.88)]]
SEVEN = [[(0.22, 0.18), (0.75, 0.18), (0.42, 0.88)]]
ZERO = [[(0.5 + 0.22 * math.sin(2 * math.pi * t / 24), 0.5 - 0.34 * math.cos(2 * math.pi * t / 24))
         for t in range(25)]]


def _browser(profile):
  """Headless Chromium through Debian's chromedriver, or a skip saying what to install."""
  if webdriver is None or not all(os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER)):
    pytest.skip(NO_CHROMIUM)
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in CHROMIUM_ARGS:
    options.add_argument(arg)
  options.add_argument(f"--user-data-dir={profile}")
  return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  driver = _browser(tmp_path_factory.mktemp("chromium-profile"))
  yield driver
  driver.quit()


def _serve(model, name):
  httpd = server.start_in_thread(model, name, port=0)
  return types.SimpleNamespace(model=model, server=httpd, url=httpd.url,
                               api=f"{httpd.url}v1/models/{name}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """The shared tiny run behind a server on a free port."""
  _, run_dir = tfx.shared_run(tmp_path_factory)
  s = _serve(inference.load(run_dir), "tiny")
  yield s
  server.stop(s.server)


# ----------------------------------------------------------------------------
# Driving the page
# ----------------------------------------------------------------------------


def open_page(driver, url):
  """Loads the page and waits until its bars (one per class, from the metadata) are there."""
  driver.get(url)
  _wait(driver, lambda d: d.execute_script(
      "return document.querySelectorAll('#bars li').length") > 0, "the bars")


def _wait(driver, condition, what):
  try:
    WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.05).until(condition)
  except TimeoutException:
    page = driver.execute_script("return [document.body.dataset.state, "
                                 "document.getElementById('status').textContent];")
    raise AssertionError(f"waited {WAIT_SECONDS} s for {what}; the page's state is "
                         f"{page[0]!r}, its status {page[1]!r}") from None


def wait_for_state(driver, state):
  _wait(driver, lambda d: d.execute_script("return document.body.dataset.state") == state,
        f"data-state={state}")


def draw(driver, strokes, finger=False, steps=8, step_ms=15):
  """Draws `strokes` on the canvas with pointer actions, each segment in `steps` moves."""
  pad = driver.find_element("id", "pad")
  width, height = driver.execute_script(
      "const p = arguments[0]; return [p.clientWidth, p.clientHeight];", pad)
  kind = interaction.POINTER_TOUCH if finger else interaction.POINTER_MOUSE
  builder = ActionBuilder(driver, mouse=PointerInput(kind, "finger" if finger else "mouse"),
                          duration=step_ms)
  actions = builder.pointer_action

  def move(x, y):  # WebDriver offsets are from the element's centre, in whole pixels.
    actions.move_to(pad, round((x - 0.5) * width), round((y - 0.5) * height))

  for stroke in strokes:
    move(*stroke[0])
    actions.pointer_down()
    for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
      for i in range(1, steps + 1):
        move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
    actions.pointer_up()
  builder.perform()


def shown(driver):
  """What the page shows: preview pixels (attribute and canvas), bars, prediction, status."""
  return driver.execute_script("""
    const preview = document.getElementById("preview");
    const data = preview.getContext("2d").getImageData(0, 0, 28, 28).data;
    const red = [];
    for (let i = 0; i < data.length; i += 4) red.push(data[i]);
    const bars = [...document.querySelectorAll("#bars li")];
    const prediction = document.getElementById("prediction");
    return {
      pixels: preview.dataset.pixels === undefined ? null : preview.dataset.pixels,
      canvas: red,
      names: bars.map(li => li.querySelector(".name").textContent),
      probabilities: bars.map(li => Number(li.dataset.probability)),
      values: bars.map(li => li.querySelector(".value").textContent),
      prediction: prediction.textContent,
      predicted: prediction.dataset.class,
      status: document.getElementById("status").textContent,
      state: document.body.dataset.state,
    };""")


def pad_pixels(driver):
  """The drawing canvas as the PNG the page sends, decoded."""
  url = driver.execute_script("return document.getElementById('pad').toDataURL('image/png');")
  return photos.decode_image(base64.b64decode(url.split(",", 1)[1]), "the canvas")


def rest_probabilities(served, image):
  """:predict's probabilities of one 28x28 image, asked as any client would."""
  body = json.dumps({"signature_name": "serving_nhw", "instances": [image.tolist()]}).encode()
  with urllib.request.urlopen(urllib.request.Request(served.api + ":predict", body)) as r:
    return json.loads(r.read())["predictions"][0]["probabilities"]


def check_shown(driver, served, expected_image):
  """The preview is `expected_image`, the bars :predict's answer, the prediction their top."""
  page = shown(driver)
  image = np.array([int(v) for v in page["pixels"].split(",")], np.uint8).reshape(28, 28)
  np.testing.assert_array_equal(image, expected_image)
  np.testing.assert_array_equal(np.reshape(page["canvas"], (28, 28)), expected_image)
  names = served.model.class_names
  assert page["names"] == names
  probabilities = rest_probabilities(served, image)
  assert page["probabilities"] == probabilities  # The same doubles, through JSON both ways.
  top = int(np.argmax(probabilities))
  assert page["prediction"] == names[top] and page["predicted"] == str(top)
  assert page["values"][top] == f"{100 * probabilities[top]:.1f}%"
  assert page["status"] == f"the model says {names[top]}"
  return page


# ----------------------------------------------------------------------------
# The default lane: the tiny model
# ----------------------------------------------------------------------------

_COUNT_FETCHES = """
  window.fetches = 0; window.inFlight = 0; window.mostInFlight = 0;
  const fetchOnce = window.fetch;
  window.fetch = async (...args) => {
    window.fetches += 1; window.inFlight += 1;
    window.mostInFlight = Math.max(window.mostInFlight, window.inFlight);
    try { return await fetchOnce(...args); } finally { window.inFlight -= 1; }
  };"""


def test_drawing_shows_what_the_model_sees_and_says(browser, served):
  open_page(browser, served.url)
  assert shown(browser)["state"] == "idle" and shown(browser)["status"] == "draw a digit"
  browser.execute_script(_COUNT_FETCHES)
  draw(browser, SEVEN, steps=10, step_ms=20)
  wait_for_state(browser, "done")
  check_shown(browser, served, photos.preprocess_image(pad_pixels(browser)))
  # One request at a time (:preprocess, then :predict), the first at the press, the last
  # after the last of 20 moves, at most one per change.
  fetches, most = browser.execute_script("return [window.fetches, window.mostInFlight];")
  assert most == 1 and 2 * 2 <= fetches <= 2 * 21, fetches


def test_a_finger_draws_too_and_clear_resets(browser, served):
  open_page(browser, served.url)
  browser.execute_script("""window.pointerTypes = [];
    document.getElementById("pad").addEventListener(
        "pointerdown", event => window.pointerTypes.push(event.pointerType));""")
  draw(browser, ONE, finger=True)
  wait_for_state(browser, "done")
  assert browser.execute_script("return window.pointerTypes;") == ["touch"]
  check_shown(browser, served, photos.preprocess_image(pad_pixels(browser)))
  browser.find_element("id", "clear").click()
  wait_for_state(browser, "idle")
  page = shown(browser)
  assert page["pixels"] is None and not any(page["canvas"])
  assert page["probabilities"] == [0] * len(served.model.class_names)
  assert page["prediction"] == "–" and page["status"] == "draw a digit"
  assert (pad_pixels(browser) == 255).all()  # A blank white pad.
  # Sent as it is, the blank pad has no ink: the server's 400 reads "draw a digit".
  browser.execute_script('source = "pad"; changed();')
  wait_for_state(browser, "empty")
  assert shown(browser)["status"] == "draw a digit" and shown(browser)["pixels"] is None


def test_a_chosen_photo_goes_the_same_way(browser, served, tmp_path):
  paper = np.full((160, 120, 3), 235, np.uint8)  # Grey paper, a dark "7" written on it.
  paper[30:42, 20:100] = 40
  for row in range(42, 140):
    column = int(100 - (row - 42) * 0.45)
    paper[row, column - 6:column + 6] = 40
  path = tmp_path / "seven.png"
  path.write_bytes(tf.io.encode_png(paper).numpy())
  open_page(browser, served.url)
  draw(browser, ONE)  # A photo replaces a drawing.
  wait_for_state(browser, "done")
  browser.find_element("id", "file").send_keys(str(path))
  wait_for_state(browser, "done")
  check_shown(browser, served, photos.load_image(str(path)))


def test_a_file_that_is_not_an_image_says_so(browser, served, tmp_path):
  path = tmp_path / "notes.png"
  path.write_text("not a picture")
  open_page(browser, served.url)
  browser.find_element("id", "file").send_keys(str(path))
  wait_for_state(browser, "error")
  page = shown(browser)
  assert page["status"].startswith("cannot decode the upload as an image")
  assert page["pixels"] is None and page["prediction"] == "–"


# ----------------------------------------------------------------------------
# The slow lane: a real model reads drawn digits
# ----------------------------------------------------------------------------


def _train_and_serve_real(real_mnist_dir, root):
  """fast_cnn (fast.flags' first recipe), trained half an epoch on the real MNIST subset, served."""
  prepare.make_records(prepare.PrepareConfig(
      dataset="mnist", source_dir=real_mnist_dir, output_dir=str(root / "records"),
      show_progress=False))
  tfx.train_in_process(
      root / "fast", root / "records", say=lambda message: None, model="fast_cnn",
      epochs=0.5, optimizer=optim.OptimizerConfig(name="adam"), learning_rate=0.01,
      schedule="onecycle", global_batch_size=128, steps_per_loop=100, precision="auto",
      eval_batch_size=1000, export=True)
  return _serve(inference.load(str(root / "fast")), "fast")


@pytest.mark.slow
def test_a_real_model_reads_drawn_digits(browser, real_mnist_dir, tmp_path):
  """A "1" (a vertical stroke), a "0" (an oval) and a "7", drawn, read as such."""
  served = _train_and_serve_real(real_mnist_dir, tmp_path)
  try:
    read, probabilities = {}, {}
    for digit, strokes in (("1", ONE), ("0", ZERO), ("7", SEVEN)):
      open_page(browser, served.url)
      draw(browser, strokes)
      wait_for_state(browser, "done")
      page = check_shown(browser, served, photos.preprocess_image(pad_pixels(browser)))
      read[digit] = page["prediction"]
      probabilities[digit] = [round(p, 3) for p in page["probabilities"]]
    assert read == {"1": "1", "0": "0", "7": "7"}, probabilities
  finally:
    server.stop(served.server)
