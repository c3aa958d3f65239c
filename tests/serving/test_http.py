"""Tests of the REST server: TF Serving's request formats read as pure functions
(tfmnist.serving.rest), then a real server in a thread (tfmnist.serving.server)
spoken to with urllib, then the command's errors.

The model is train_fixtures.shared_run's export, a tiny mlp.
"""

import http.client
import json
import os
import signal
import subprocess
import threading
import types
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist.data import photos
from tfmnist.serving import inference, rest, server

DEFAULT = rest.Signature({"images": rest.Tensor("uint8", (None, 28, 28, 1))},
                         {"classes": rest.Tensor("int64", (None,)),
                          "probabilities": rest.Tensor("float32", (None, 10))})
NHW = rest.Signature({"images": rest.Tensor("uint8", (None, 28, 28))}, DEFAULT.outputs)
SIGNATURES = {"serving_default": DEFAULT, "serving_nhw": NHW}
MAX_REQUEST_MB = 0.25
MODEL_NAME = "tiny"


def _images(count=2, channel=True, seed=3):
  """uint8 images of the synthetic digits, [count, 28, 28(, 1)]."""
  images = tfx.synthetic_split(count, seed=seed)[0]
  return images[..., None] if channel else images


def _body(**request):
  return json.dumps(request).encode()


def _with(images, index, value):
  """`images` as nested lists with the value at `index` replaced (any JSON value)."""
  rows = images.tolist()
  place = rows
  for i in index[:-1]:
    place = place[i]
  place[index[-1]] = value
  return rows


# ----------------------------------------------------------------------------
# Request parsing, without HTTP
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("request_, signature, row_format", [
    ({"instances": _images().tolist()}, "serving_default", True),
    ({"instances": [{"images": i} for i in _images().tolist()]}, "serving_default", True),
    ({"signature_name": "", "instances": _images().tolist()}, "serving_default", True),
    ({"signature_name": "serving_nhw", "instances": _images(channel=False).tolist()},
     "serving_nhw", True),
    ({"inputs": _images().tolist()}, "serving_default", False),
    ({"inputs": {"images": _images().tolist()}}, "serving_default", False),
    ({"signature_name": "serving_nhw", "inputs": {"images": _images(channel=False).tolist()}},
     "serving_nhw", False),
], ids=["rows", "row_objects", "empty_name", "rows_nhw", "columns", "column_object",
        "columns_nhw"])
def test_good_requests_are_read_in_both_formats(request_, signature, row_format):
  name, images, rows = rest.parse_predict_request(_body(**request_), SIGNATURES)
  assert (name, rows) == (signature, row_format)
  assert images.dtype == np.uint8
  np.testing.assert_array_equal(images, _images(channel=signature == "serving_default"))


def test_whole_numbers_written_as_floats_are_the_integers_they_equal():
  """JSON has one number type: 12.0 is 12 (JavaScript writes it so), nothing is rounded."""
  body = _body(instances=_with(_images(1), (0, 3, 4, 0), 12.0))
  images = rest.parse_predict_request(body, SIGNATURES)[1]
  assert images[0, 3, 4, 0] == 12
  assert rest.parse_predict_request(body.decode(), SIGNATURES)[1].tolist() == images.tolist()


BAD_REQUESTS = {
    "not_json": (b"{instances: [", "the body is not JSON: Expecting property name"),
    "not_utf8": (b"\xff\xfe{}", "not UTF-8"),
    "not_an_object": (b"[1, 2]", "must be a JSON object"),
    "nan": (b'{"instances": [NaN]}', "NaN is not a number JSON allows"),
    "missing": (_body(images=[]), 'missing "instances" or "inputs"'),
    "both": (_body(instances=[], inputs=[]), "not both"),
    "instances_not_a_list": (_body(instances={"images": 1}), "instances must be a list"),
    "no_instances": (_body(instances=[]), "instances is empty"),
    "unknown_signature": (_body(signature_name="serving_rgb", instances=_images().tolist()),
                          'signature_name "serving_rgb" not found; this model has '
                          "serving_default, serving_nhw"),
    "signature_not_a_string": (_body(signature_name=1, instances=[]), "must be a string"),
    "nhw_at_default": (_body(instances=_images(channel=False).tolist()),
                       "images must be uint8 [N, 28, 28, 1] for signature serving_default, "
                       'got shape [2, 28, 28] (send [N, 28, 28] with "signature_name": '
                       '"serving_nhw")'),
    "nhwc_at_nhw": (_body(signature_name="serving_nhw", inputs=_images().tolist()),
                    "images must be uint8 [N, 28, 28] for signature serving_nhw, got shape "
                    "[2, 28, 28, 1]"),
    "small": (_body(instances=np.zeros((1, 14, 14, 1), int).tolist()), "got shape [1, 14, 14"),
    "fraction": (_body(instances=_with(_images(), (1, 3, 4, 0), 12.5)),
                 "images: 12.5 at [1, 3, 4, 0] is not an integer"),
    "negative": (_body(instances=_with(_images(), (0, 0, 1, 0), -1)),
                 "images: -1 at [0, 0, 1, 0] is outside 0..255"),
    "over_255": (_body(inputs=_with(_images(), (0, 27, 27, 0), 256)),
                 "images: 256 at [0, 27, 27, 0] is outside 0..255"),
    "huge": (_body(inputs=_with(_images(), (0, 2, 2, 0), 10**30)), "is outside 0..255"),
    "infinite": (b'{"inputs": [[[[1e400]]]]}', "images must be uint8"),
    "infinite_pixel": (_body(inputs=_with(_images(), (0, 2, 2, 0), "X")).replace(
        b'"X"', b"1e400"), "images: inf at [0, 2, 2, 0] is not an integer"),
    "string": (_body(instances=_with(_images(), (0, 5, 5, 0), "7")),
               'images: "7" at [0, 5, 5, 0] is not a number'),
    "boolean": (_body(instances=_with(_images(), (0, 5, 5, 0), True)),
                "images: true at [0, 5, 5, 0] is not a number"),
    "null": (_body(instances=_with(_images(), (0, 5, 5, 0), None)),
             "images: null at [0, 5, 5, 0] is not a number"),
    "ragged_row": (_body(instances=_with(_images(), (0, 5), [0] * 27)), "images: ragged lists"),
    "ragged_depth": (_body(instances=_with(_images(), (0, 5, 5), 0)), "images: ragged lists"),
    "ragged_batch": (_body(instances=[_images(1)[0].tolist(), [[0]]]), "images: ragged lists"),
    "mixed_instances": (_body(instances=[_images(1)[0].tolist(), {"images": []}]),
                        "instances mixes objects and arrays"),
    "unknown_key": (_body(instances=[{"pixels": _images(1)[0].tolist()}]),
                    'instances[0] has the key "pixels"; the signature\'s only input is '
                    '"images"'),
    "no_images_key": (_body(instances=[{}]), 'instances[0] has no "images"'),
    "inputs_unknown_key": (_body(inputs={"image": []}), 'inputs has the key "image"'),
    "too_deep": (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
}


@pytest.mark.parametrize("body, message", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_say_what_is_wrong_in_one_line(body, message):
  with pytest.raises(rest.RequestError) as raised:
    rest.parse_predict_request(body, SIGNATURES)
  text = str(raised.value)
  assert message in text
  assert "\n" not in text


def test_responses_have_tf_servings_shapes():
  outputs = {"probabilities": np.array([[0.1, 0.9], [0.75, 0.25]], np.float32),
             "classes": np.array([1, 0], np.int64)}
  assert rest.predict_response(outputs, row_format=True) == {"predictions": [
      {"probabilities": [0.1, 0.9], "classes": 1},
      {"probabilities": [0.75, 0.25], "classes": 0}]}
  assert rest.predict_response(outputs, row_format=False) == {"outputs": {
      "probabilities": [[0.1, 0.9], [0.75, 0.25]], "classes": [1, 0]}}
  # The shortest text of each float32 reads back as the same float32.
  assert np.float32(json.loads(json.dumps(rest.predict_response(
      outputs, True)))["predictions"][0]["probabilities"][0]) == outputs["probabilities"][0, 0]
  assert rest.status_response() == {"model_version_status": [{
      "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                        "error_message": ""}}]}
  assert rest.error_response("two\nlines") == {"error": "two lines"}


# ----------------------------------------------------------------------------
# A server in a thread
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """The shared run's export behind a server on a free port, with a small body limit."""
  records_dir, run_dir = tfx.shared_run(tmp_path_factory)
  model = inference.load(run_dir)
  httpd = server.start_in_thread(model, MODEL_NAME, port=0, max_request_mb=MAX_REQUEST_MB)
  yield types.SimpleNamespace(model=model, server=httpd, url=httpd.url.rstrip("/"),
                              api=f"{httpd.url}v1/models/{MODEL_NAME}", run_dir=run_dir,
                              records_dir=records_dir)
  server.stop(httpd)


def call(url, body=None, method=None, headers=None):
  """(status, headers, body bytes) of one request; errors are answers too."""
  request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, response.headers, response.read()
  except urllib.error.HTTPError as e:
    with e:
      return e.code, e.headers, e.read()


def call_json(url, body=None, method=None):
  status, headers, data = call(url, body, method)
  assert headers["Content-Type"] == "application/json", (status, data)
  return status, json.loads(data)


def _assert_still_serving(served):
  images = _images(1)
  status, answer = call_json(served.api + ":predict", _body(instances=images.tolist()))
  assert status == 200, answer
  expected = served.model.predict(images)
  np.testing.assert_allclose(answer["predictions"][0]["probabilities"], expected[0],
                             atol=1e-6)


def test_model_status_and_versions(served):
  for path in ("", "/versions/1"):
    assert call_json(served.api + path) == (200, rest.status_response())
  status, answer = call_json(served.api + "/versions/2")
  assert status == 404 and "Specific(tiny, 2)" in answer["error"]


def test_metadata_names_signatures_and_classes(served):
  status, answer = call_json(served.api + "/metadata")
  assert status == 200
  assert answer["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
  assert answer["metadata"]["class_names"] == served.model.class_names
  defs = answer["metadata"]["signature_def"]["signature_def"]
  assert sorted(defs) == ["serving_default", "serving_nhw"]

  def dims(info):
    return [int(d["size"]) for d in info["tensor_shape"]["dim"]]

  for name, shape in (("serving_default", [-1, 28, 28, 1]), ("serving_nhw", [-1, 28, 28])):
    images = defs[name]["inputs"]["images"]
    assert (images["dtype"], dims(images)) == ("DT_UINT8", shape)
    outputs = defs[name]["outputs"]
    assert (outputs["probabilities"]["dtype"], dims(outputs["probabilities"])) == (
        "DT_FLOAT", [-1, 10])
    assert (outputs["classes"]["dtype"], dims(outputs["classes"])) == ("DT_INT64", [-1])


@pytest.mark.parametrize("signature", ["serving_default", "serving_nhw"])
def test_predict_in_both_formats_matches_the_export(served, signature):
  images = _images(5, channel=signature == "serving_default", seed=8)
  expected = served.model.predict(images)
  status, rows = call_json(served.api + ":predict",
                           _body(signature_name=signature, instances=images.tolist()))
  assert status == 200, rows
  assert [sorted(p) for p in rows["predictions"]] == [["classes", "probabilities"]] * 5
  np.testing.assert_allclose([p["probabilities"] for p in rows["predictions"]], expected,
                             atol=1e-6)
  assert [p["classes"] for p in rows["predictions"]] == expected.argmax(-1).tolist()
  status, columns = call_json(served.api + ":predict",
                              _body(signature_name=signature, inputs={"images": images.tolist()}))
  assert status == 200, columns
  assert columns["outputs"] == {
      "probabilities": [p["probabilities"] for p in rows["predictions"]],
      "classes": [p["classes"] for p in rows["predictions"]]}


HTTP_BAD = {name: BAD_REQUESTS[name] for name in (
    "not_json", "nhw_at_default", "fraction", "negative", "over_255", "string", "ragged_row",
    "missing", "unknown_signature")}


@pytest.mark.parametrize("body, message", HTTP_BAD.values(), ids=HTTP_BAD.keys())
def test_bad_predict_requests_get_400_and_the_server_goes_on(served, body, message):
  status, answer = call_json(served.api + ":predict", body)
  assert status == 400
  assert list(answer) == ["error"] and message in answer["error"]
  _assert_still_serving(served)


def test_a_body_over_the_limit_is_refused_unread(served):
  limit = int(MAX_REQUEST_MB * (1 << 20))
  big = _body(instances=np.zeros((200, 28, 28, 1), int).tolist())
  assert len(big) > limit
  status, answer = call_json(served.api + ":predict", big)
  assert status == 400
  assert answer["error"] == (f"the body is {len(big)} bytes, over the limit of {limit} bytes "
                             "(max_request_mb)")
  _assert_still_serving(served)


def _connection(served):
  return http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=30)


def test_a_client_that_expects_100_continue_is_answered_before_it_sends(served):
  """curl sends "Expect: 100-continue" for large bodies: a refused one is never sent."""
  connection = _connection(served)
  connection.putrequest("POST", f"/v1/models/{MODEL_NAME}:predict")
  connection.putheader("Content-Length", str(1 << 30))
  connection.putheader("Expect", "100-continue")
  connection.endheaders()
  response = connection.getresponse()
  assert response.status == 400 and "over the limit" in json.loads(response.read())["error"]
  connection.close()
  # A body that fits hears "100 Continue" (which http.client reads past), then the answer.
  body = _body(instances=_images(1).tolist())
  connection = _connection(served)
  connection.request("POST", f"/v1/models/{MODEL_NAME}:predict", body,
                     {"Expect": "100-continue"})
  response = connection.getresponse()
  assert response.status == 200 and "predictions" in json.loads(response.read())
  connection.close()


def test_kept_connections_survive_bad_requests_and_unread_bodies(served):
  """HTTP/1.1 keeps the connection; a body left unread closes it rather than corrupt the next."""
  connection = _connection(served)
  good = _body(instances=_images(1).tolist())
  path = f"/v1/models/{MODEL_NAME}:predict"
  connection.request("POST", path, good)
  assert connection.getresponse().read() and connection.sock is not None
  first = connection.sock
  connection.request("POST", path, BAD_REQUESTS["fraction"][0])  # Read, then refused.
  response = connection.getresponse()
  assert response.status == 400 and response.getheader("Connection") != "close"
  response.read()
  connection.request("POST", path, good)
  response = connection.getresponse()
  assert response.status == 200 and connection.sock is first  # The same connection.
  response.read()
  connection.request("POST", "/v1/models/other:predict", good)  # Refused unread.
  response = connection.getresponse()
  assert response.status == 404 and response.getheader("Connection") == "close"
  response.read()
  connection.request("POST", path, good)  # http.client opens a new connection.
  response = connection.getresponse()
  assert response.status == 200 and connection.sock is not first
  response.read()
  connection.close()


@pytest.mark.parametrize("path, method, code, message", [
    ("/v1/models/other:predict", "POST", 404, "Servable not found for request: Latest(other)"),
    ("/v1/models/other", "GET", 404, "Servable not found"),
    ("/v1/models/tiny:classify", "POST", 404, "no such path: POST /v1/models/tiny:classify"),
    ("/v1/models/tiny:predict", "GET", 400, "takes POST, not GET"),
    ("/v2/models/tiny:predict", "POST", 404, "no such path"),
    ("/favicon.ico", "GET", 404, "no such path"),
])
def test_unknown_models_and_paths(served, path, method, code, message):
  """An unknown model is 404, as TF Serving answers it (its NOT_FOUND status)."""
  status, answer = call_json(served.url + path, b"{}" if method == "POST" else None, method)
  assert status == code and message in answer["error"], answer
  _assert_still_serving(served)


def _png(pixels):
  pixels = np.asarray(pixels, np.uint8)
  return tf.io.encode_png(pixels if pixels.ndim == 3 else pixels[..., None]).numpy()


def test_preprocess_makes_the_image_photos_makes(served):
  page = np.full((120, 90, 3), 255, np.uint8)
  page[20:100, 40:52] = 0  # A dark "1" on white paper.
  status, answer = call_json(served.api + ":preprocess", _png(page))
  assert status == 200
  np.testing.assert_array_equal(answer["image"], photos.preprocess_image(page))
  # The image that comes back is a :predict instance as it is.
  status, result = call_json(served.api + ":predict", _body(
      signature_name="serving_nhw", instances=[answer["image"]]))
  assert status == 200 and len(result["predictions"]) == 1


@pytest.mark.parametrize("body, message", [
    (b"", "the body is empty; send the bytes of an image file"),
    (b"GIF89a not really", "cannot decode the upload as an image"),
    (b'{"instances": []}', "cannot decode the upload as an image"),
    (np.full((30, 30), 255), "no ink found"),
])
def test_preprocess_refuses_what_is_not_a_digit(served, body, message):
  body = _png(body) if isinstance(body, np.ndarray) else body
  status, answer = call_json(served.api + ":preprocess", body)
  assert status == 400 and message in answer["error"], answer
  _assert_still_serving(served)


def test_the_page_is_one_self_contained_file(served):
  status, headers, data = call(served.url + "/")
  assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
  page = data.decode()
  assert 'data-model="tiny"' in page and "__MODEL_NAME__" not in page
  assert "http://" not in page and "https://" not in page  # Nothing from elsewhere.
  assert "touch-action: none" in page
  assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_model_names_are_escaped_in_the_page():
  assert 'data-model="a&quot;&lt;b"' in server.page_html('a"<b')
  for bad in ("", "a/b", "a:b"):
    with pytest.raises(ValueError, match="model_name"):
      server.check_model_name(bad)


def test_concurrent_requests(served):
  results = []
  threads = [threading.Thread(target=lambda: results.append(call_json(
      served.api + ":predict", _body(instances=_images(3).tolist()))[0])) for _ in range(6)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert results == [200] * 6


# ----------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------


def test_missing_run_folder_is_one_line_error(tmp_path):
  missing = tmp_path / "nowhere"
  result = tfx.run([tfx.PYTHON, "-m", "tfmnist.serve", f"--model_dir={missing}"], timeout=60)
  assert result.returncode != 0
  assert tfx.clean_stderr(result.stderr).strip().splitlines() == [
      f"serve: error: {missing}: no such run folder"]


@pytest.mark.slow
def test_the_command_serves_until_ctrl_c(served):
  """python -m tfmnist.serve on a free port: its line, a prediction, then SIGINT exits 0."""
  process = subprocess.Popen(
      [tfx.PYTHON, "-m", "tfmnist.serve", f"--model_dir={served.run_dir}", "--port=0"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tfx.REPO_ROOT),
      env=tfx.subprocess_env())
  try:
    line = process.stdout.readline().strip()
    name = os.path.basename(served.run_dir)
    assert line.startswith(f'serving {served.run_dir} (model "{name}") on http://127.0.0.1:')
    assert line.endswith("/ ; Ctrl-C stops")
    url = line.split(" on ")[1].split(" ;")[0]
    status, answer = call_json(f"{url}v1/models/{name}:predict",
                               _body(instances=_images(1).tolist()))
    assert status == 200 and len(answer["predictions"]) == 1
    process.send_signal(signal.SIGINT)
    # Generous: the slow lane trains other runs in the background meanwhile, and on
    # 2 shared cores TensorFlow's exit once took over 30 s there.
    assert process.wait(timeout=180) == 0, process.stderr.read()
  finally:
    if process.poll() is None:
      process.kill()
    process.communicate()
