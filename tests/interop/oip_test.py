#!/usr/bin/python3
"""The Open Inference Protocol ("KServe v2") against the real transferd, with
clients that share no code with the project: Python grpcio on the protocol's
proto compiled here by Debian's python3-grpc-tools, and curl for the REST
form. The probabilities must equal transferd.v1.Inference.Predict's for the
same images, bit for bit (Predict's stubs are compiled here too, by Debian's
protoc and grpc_python_plugin).

  oip_test.py --transferd BIN --transferctl BIN --proto-dir DIR

Needs TRANSFERD_TEST_DATA and TRANSFERD_TEST_WEIGHTS (a small model is
trained on the shared cats and dogs; skipped, exit 77, when they are unset).
"""

import argparse
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from transferd_fixture import (TOKEN, Server, fail, job_spec, link_subset, remove,  # noqa: E402
                               shared_paths, stage, temp_root)

ARGS = None
SERVER = None
MODEL_ID = None
ALIAS = "catdog"
SIZE = 96  # the model's input size
IMAGES = ["validation/cat.1020.jpg", "validation/cat.1021.jpg", "validation/dog.1020.jpg"]
pb = pbg = v1 = v1g = None  # generated modules
grpc = None


def compile_protos(out):
    """The protocol's proto with grpc_tools; transferd.v1's with protoc."""
    global pb, pbg, v1, v1g, grpc
    proto = ARGS.proto_dir
    os.makedirs(out, exist_ok=True)
    run = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", proto, "--python_out", out,
                          "--grpc_python_out", out, os.path.join(proto, "inference", "grpc_predict_v2.proto")],
                         capture_output=True, text=True)
    if run.returncode != 0:
        fail("grpc_tools.protoc: " + run.stderr)
    run = subprocess.run(["protoc", "-I", proto, "--python_out", out, "--grpc_out", out,
                          "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                          os.path.join(proto, "transferd", "v1", "inference.proto"),
                          os.path.join(proto, "transferd", "v1", "common.proto")],
                         capture_output=True, text=True)
    if run.returncode != 0:
        fail("protoc: " + run.stderr)
    sys.path.insert(0, out)
    import grpc as grpc_module  # noqa: E402
    from inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc  # noqa: E402
    from transferd.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402
    grpc = grpc_module
    pb, pbg, v1, v1g = grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc, inference_pb2, inference_pb2_grpc


def png(width, height, seed):
    """A deterministic RGB PNG (no library needed) and its pixels."""
    pixels = bytes((x * 7 + y * 3 + seed * 50 + c * 80) % 256
                   for y in range(height) for x in range(width) for c in range(3))
    rows = b"".join(b"\x00" + pixels[y * width * 3:(y + 1) * width * 3] for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) +
            chunk(b"IEND", b"")), pixels


def read(path):
    with open(os.path.join(os.environ["TRANSFERD_TEST_DATA"], path), "rb") as f:
        return f.read()


def raw_bytes(elements):
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def split_raw_bytes(raw):
    out, at = [], 0
    while at < len(raw):
        (n,) = struct.unpack_from("<I", raw, at)
        out.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    return out


def floats(raw):
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def metadata():
    return [("authorization", "Bearer " + TOKEN)]


def curl(*args, data=None):
    """(HTTP status, body bytes, headers text) of a curl call."""
    with tempfile.TemporaryDirectory() as d:
        headers = os.path.join(d, "headers")
        cmd = ["curl", "-sS", "-o", os.path.join(d, "body"), "-D", headers, "-w", "%{http_code}",
               "-H", "Authorization: Bearer " + TOKEN]
        if data is not None:
            with open(os.path.join(d, "data"), "wb") as f:
                f.write(data)
            cmd += ["--data-binary", "@" + os.path.join(d, "data")]
        run = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            fail("curl: " + run.stderr)
        with open(os.path.join(d, "body"), "rb") as f:
            body = f.read()
        with open(headers) as f:
            return int(run.stdout), body, f.read()


class OipTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        channel = grpc.insecure_channel(SERVER.grpc_address)
        cls.oip = pbg.GRPCInferenceServiceStub(channel)
        cls.v1 = v1g.InferenceStub(channel)

    def infer(self, request, **kwargs):
        return self.oip.ModelInfer(request, metadata=metadata(), timeout=120, **kwargs)

    def images_request(self, blobs, raw=True, name=ALIAS, version=""):
        req = pb.ModelInferRequest(model_name=name, model_version=version, id="req-1")
        t = req.inputs.add(name="images", datatype="BYTES", shape=[len(blobs)])
        if raw:
            req.raw_input_contents.append(raw_bytes(blobs))
        else:
            t.contents.bytes_contents.extend(blobs)
        return req

    def predict_v1(self, blobs):
        req = v1.PredictRequest(model="aliases/" + ALIAS)
        for i, b in enumerate(blobs):
            req.images.add(id=str(i), data=b)
        res = self.v1.Predict(req, metadata=metadata(), timeout=120)
        return [list(p.scores) for p in res.predictions], res

    def assert_code(self, error, code, text):
        self.assertEqual(error.exception.code(), code, error.exception.details())
        self.assertIn(text, error.exception.details())

    def test_server_health_and_metadata(self):
        self.assertTrue(self.oip.ServerLive(pb.ServerLiveRequest()).live)
        self.assertTrue(self.oip.ServerReady(pb.ServerReadyRequest()).ready)
        meta = self.oip.ServerMetadata(pb.ServerMetadataRequest(), metadata=metadata())
        self.assertEqual(meta.name, "transferd")
        self.assertIn("classification", meta.extensions)
        self.assertIn("binary_tensor_data", meta.extensions)

    def test_model_metadata_describes_the_tensors(self):
        for name in (ALIAS, MODEL_ID):
            m = self.oip.ModelMetadata(pb.ModelMetadataRequest(name=name), metadata=metadata())
            self.assertEqual(m.name, name)
            self.assertEqual(list(m.versions), [MODEL_ID])
            inputs = {t.name: (t.datatype, list(t.shape)) for t in m.inputs}
            outputs = {t.name: (t.datatype, list(t.shape)) for t in m.outputs}
            self.assertEqual(inputs, {"images": ("BYTES", [-1]), "pixels": ("UINT8", [-1, SIZE, SIZE, 3])})
            self.assertEqual(outputs, {"probabilities": ("FP32", [-1, 2]), "labels": ("BYTES", [-1])})
        self.oip.ModelMetadata(pb.ModelMetadataRequest(name=ALIAS, version=MODEL_ID), metadata=metadata())
        with self.assertRaises(grpc.RpcError) as e:
            self.oip.ModelMetadata(pb.ModelMetadataRequest(name="no-such-model"), metadata=metadata())
        self.assert_code(e, grpc.StatusCode.NOT_FOUND, "no-such-model")
        with self.assertRaises(grpc.RpcError) as e:
            self.oip.ModelMetadata(pb.ModelMetadataRequest(name=ALIAS, version="7"), metadata=metadata())
        self.assert_code(e, grpc.StatusCode.NOT_FOUND, "no version '7'")

    def test_model_becomes_ready(self):
        deadline = time.monotonic() + 60
        while not self.oip.ModelReady(pb.ModelReadyRequest(name=ALIAS), metadata=metadata()).ready:
            self.assertLess(time.monotonic(), deadline, "the model never became ready")
            time.sleep(0.1)  # polling readiness, as clients do

    def test_images_equal_predict_exactly(self):
        blobs = [read(p) for p in IMAGES]
        expected, v1_res = self.predict_v1(blobs)
        for raw in (True, False):
            res = self.infer(self.images_request(blobs, raw=raw))
            self.assertEqual(res.model_name, ALIAS)
            self.assertEqual(res.model_version, MODEL_ID)
            self.assertEqual(res.id, "req-1")
            outputs = {t.name: (t, res.raw_output_contents[i]) for i, t in enumerate(res.outputs)}
            probs, raw_probs = outputs["probabilities"]
            self.assertEqual((probs.datatype, list(probs.shape)), ("FP32", [3, 2]))
            got = floats(raw_probs)
            want = [p.probability for scores in expected for p in scores]
            self.assertEqual(got, want)  # bit for bit
            labels, raw_labels = outputs["labels"]
            self.assertEqual(split_raw_bytes(raw_labels), [p.label.encode() for p in v1_res.predictions])

    def test_pixels_equal_predict_of_the_same_pixels(self):
        files = [png(SIZE, SIZE, s) for s in (1, 2)]
        expected, _ = self.predict_v1([f for f, _ in files])
        req = pb.ModelInferRequest(model_name=ALIAS)
        req.inputs.add(name="pixels", datatype="UINT8", shape=[2, SIZE, SIZE, 3])
        req.raw_input_contents.append(b"".join(p for _, p in files))
        res = self.infer(req)
        self.assertEqual(floats(res.raw_output_contents[0]),
                         [p.probability for scores in expected for p in scores])
        wrong = pb.ModelInferRequest(model_name=ALIAS)
        wrong.inputs.add(name="pixels", datatype="UINT8", shape=[1, 32, 32, 3])
        wrong.raw_input_contents.append(bytes(32 * 32 * 3))
        with self.assertRaises(grpc.RpcError) as e:
            self.infer(wrong)
        self.assert_code(e, grpc.StatusCode.INVALID_ARGUMENT, f"takes {SIZE}x{SIZE}x3")

    def test_classification_extension(self):
        req = self.images_request([read(IMAGES[0]), read(IMAGES[2])])
        req.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
        req.outputs.add(name="labels")
        res = self.infer(req)
        top = split_raw_bytes(res.raw_output_contents[0])
        self.assertEqual(list(res.outputs[0].shape), [2, 2])
        self.assertEqual(res.outputs[0].datatype, "BYTES")
        labels = split_raw_bytes(res.raw_output_contents[1])
        for i in range(2):
            score, index, label = top[2 * i].decode().split(":")
            self.assertEqual(label.encode(), labels[i])
            self.assertGreaterEqual(float(score), float(top[2 * i + 1].decode().split(":")[0]))
            self.assertIn(index, ("0", "1"))

    def test_errors_are_precise_and_spare_the_neighbours(self):
        good = [read(IMAGES[0])]
        results = []

        def neighbour():
            results.append(self.infer(self.images_request(good)))
        threads = [threading.Thread(target=neighbour) for _ in range(4)]
        for t in threads:
            t.start()
        with self.assertRaises(grpc.RpcError) as e:
            self.infer(self.images_request([read(IMAGES[0]), b"not an image"]))
        self.assert_code(e, grpc.StatusCode.INVALID_ARGUMENT, "images[1]")
        for t in threads:
            t.join()
        self.assertEqual(len(results), 4)
        cases = [
            (lambda r: setattr(r.inputs[0], "datatype", "FP32"), "datatype FP32"),
            (lambda r: r.inputs[0].shape.append(3), "shape [1,3]"),
            (lambda r: setattr(r.inputs[0], "name", "input0"), "unknown input"),
            (lambda r: r.outputs.add(name="logits"), "unknown output"),
            (lambda r: r.raw_input_contents.__setitem__(0, b"\x09\x00\x00\x00abc"), "claims 9 bytes"),
        ]
        for change, text in cases:
            req = self.images_request(good)
            change(req)
            with self.assertRaises(grpc.RpcError) as e:
                self.infer(req)
            self.assert_code(e, grpc.StatusCode.INVALID_ARGUMENT, text)
        with self.assertRaises(grpc.RpcError) as e:
            self.infer(self.images_request(good, name="nope"))
        self.assert_code(e, grpc.StatusCode.NOT_FOUND, "nope")
        with self.assertRaises(grpc.RpcError) as e:
            self.oip.ModelInfer(self.images_request(good), timeout=60)  # no token
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertTrue(self.oip.ServerLive(pb.ServerLiveRequest()).live)

    def test_rest_json_binary_and_errors(self):
        url = SERVER.url
        status, body, _ = curl(url + "/v2/health/ready")
        self.assertEqual((status, json.loads(body)["ready"]), (200, True))
        status, body, _ = curl(url + "/v2/models/" + ALIAS)
        meta = json.loads(body)
        self.assertEqual(status, 200, body)
        self.assertEqual(meta["versions"], [MODEL_ID])
        self.assertEqual(meta["inputs"][1], {"name": "pixels", "datatype": "UINT8", "shape": [-1, SIZE, SIZE, 3]})

        blobs = [read(p) for p in IMAGES]
        expected, v1_res = self.predict_v1(blobs)
        want = [p.probability for scores in expected for p in scores]
        request = {"id": "r", "inputs": [{"name": "images", "datatype": "BYTES", "shape": [3],
                                          "data": [base64.b64encode(b).decode() for b in blobs]}]}
        status, body, _ = curl("-H", "Content-Type: application/json",
                               url + f"/v2/models/{ALIAS}/versions/{MODEL_ID}/infer",
                               data=json.dumps(request).encode())
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        outputs = {o["name"]: o for o in answer["outputs"]}
        self.assertEqual(outputs["probabilities"]["shape"], [3, 2])
        self.assertEqual([f32(x) for x in outputs["probabilities"]["data"]], want)
        self.assertEqual(outputs["labels"]["data"], [p.label for p in v1_res.predictions])

        # Binary tensor data both ways.
        header = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [3],
                                         "parameters": {"binary_data_size": len(raw_bytes(blobs))}}],
                             "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                                         {"name": "labels"}]}).encode()
        status, body, headers = curl("-H", f"Inference-Header-Content-Length: {len(header)}",
                                     "-H", "Content-Type: application/octet-stream",
                                     url + f"/v2/models/{ALIAS}/infer", data=header + raw_bytes(blobs))
        self.assertEqual(status, 200, body)
        length = [int(h.split(":")[1]) for h in headers.lower().splitlines()
                  if h.startswith("inference-header-content-length")][0]
        answer = json.loads(body[:length])
        probs = answer["outputs"][0]
        self.assertEqual(probs["parameters"]["binary_data_size"], 24)
        self.assertEqual(floats(body[length:length + 24]), want)
        self.assertEqual(answer["outputs"][1]["data"], [p.label for p in v1_res.predictions])

        for path, data, code, text in [
            (f"/v2/models/nope/infer", request, 404, "nope"),
            (f"/v2/models/{ALIAS}/infer", {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                                         "data": [base64.b64encode(b"junk").decode()]}]},
             400, "images[0]"),
            (f"/v2/models/{ALIAS}/infer", {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2],
                                                         "data": ["@@@"]}]}, 400, "base64"),
        ]:
            status, body, _ = curl("-H", "Content-Type: application/json", url + path,
                                   data=json.dumps(data).encode())
            self.assertEqual(status, code, body)
            self.assertIn(text, json.loads(body)["error"])
        status, _, _ = curl(url + "/v2/health/live")
        self.assertEqual(status, 200)


def main():
    global ARGS, SERVER, MODEL_ID
    parser = argparse.ArgumentParser()
    parser.add_argument("--transferd", required=True)
    parser.add_argument("--transferctl", required=True)
    parser.add_argument("--proto-dir", required=True)
    ARGS = parser.parse_args()
    data, weights_file = shared_paths(*IMAGES)
    root = temp_root("transferd-oip-")
    try:
        compile_protos(os.path.join(root, "gen"))
        link_subset(data, os.path.join(root, "images"), 20)
        SERVER = Server(ARGS.transferd, root, {TOKEN: "admin"}, weights_file)
        SERVER.transferctl(ARGS.transferctl, "datasets", "upload", os.path.join(root, "images"), "--id", "cd")
        SERVER.api("POST", "jobs", {"job_id": "small", "spec": job_spec(
            os.path.basename(weights_file), [stage("frozen", "none", "KIND_ADAM", 1e-3, 1)], input_size=SIZE)})
        job = SERVER.wait_job("small")
        if job["state"] != "JOB_STATE_SUCCEEDED":
            fail("the training job failed: " + job.get("failure_reason", ""))
        MODEL_ID = job["result_model"].split("/", 1)[1]
        SERVER.api("PUT", "aliases/" + ALIAS, {"model": job["result_model"]})
        result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
        ok = result.wasSuccessful()
    finally:
        if SERVER:
            SERVER.stop()
        remove(root)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
