"""What the Python tests (tests/browser, tests/interop) share: the shared
images and weights, the real transferd started on free loopback ports, its
JSON API, and a small model trained on the shared cats and dogs."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SKIP = 77
TOKEN = "python-test-admin-token-0123456789"
WEIGHTS = "mobilenet_2_5_224_tf_no_top.h5"


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def skip(message):
    print("SKIP: " + message)
    sys.exit(SKIP)


def shared_paths(*required):
    """(images folder, weights file) from TRANSFERD_TEST_DATA and
    TRANSFERD_TEST_WEIGHTS: skips when unset, fails when files are missing
    (`required`: more paths under the images folder)."""
    data = os.environ.get("TRANSFERD_TEST_DATA")
    weights = os.environ.get("TRANSFERD_TEST_WEIGHTS")
    if not data or not weights:
        skip("TRANSFERD_TEST_DATA and TRANSFERD_TEST_WEIGHTS are not set")
    weights_file = os.path.join(weights, WEIGHTS)
    for path in [os.path.join(data, "train"), weights_file] + [os.path.join(data, r) for r in required]:
        if not os.path.exists(path):
            fail(f"{path} is missing (TRANSFERD_TEST_DATA={data}, TRANSFERD_TEST_WEIGHTS={weights})")
    return data, weights_file


def link_subset(src, dst, per_class):
    """per_class images of each class in train/ and half as many in
    validation/, the first by number, as links (nothing copied)."""
    for split, n in (("train", per_class), ("validation", per_class // 2)):
        os.makedirs(os.path.join(dst, split))
        names = sorted(os.listdir(os.path.join(src, split)),
                       key=lambda f: (f.split(".")[0], int(f.split(".")[1])))
        seen = {}
        for name in names:
            cls = name.split(".")[0]
            if seen.get(cls, 0) < n:
                seen[cls] = seen.get(cls, 0) + 1
                os.symlink(os.path.realpath(os.path.join(src, split, name)),
                           os.path.join(dst, split, name))


class Server:
    """transferd on free loopback ports (gRPC and HTTP) with a token file
    (`tokens`: token -> role) and a data directory under `root`, where the
    shared weights file is linked."""

    def __init__(self, binary, root, tokens, weights_file=None):
        self.root = root
        os.makedirs(os.path.join(root, "data", "weights"), exist_ok=True)
        if weights_file:
            os.symlink(weights_file, os.path.join(root, "data", "weights", os.path.basename(weights_file)))
        token_file = os.path.join(root, "tokens")
        with open(token_file, "w") as f:
            for i, (token, role) in enumerate(tokens.items()):
                f.write(f"{token} {role} python-test-{i}\n")
        os.chmod(token_file, 0o600)
        self.log_path = os.path.join(root, "transferd.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--http-listen=127.0.0.1:0",
             "--token-file", token_file, "--data-dir", os.path.join(root, "data")],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        self.grpc_port = self.http_port = None
        while time.monotonic() < deadline and not (self.grpc_port and self.http_port):
            if self.proc.poll() is not None:
                fail("transferd exited:\n" + self.text())
            text = self.text()
            m = re.search(r"serving transferd\.v1 on .* \(port (\d+)\)", text)
            h = re.search(r"serving HTTP on .* \(port (\d+)\)", text)
            self.grpc_port = m and int(m.group(1))
            self.http_port = h and int(h.group(1))
            time.sleep(0.05)  # polling the log for the bound ports
        if not (self.grpc_port and self.http_port):
            fail("transferd did not report its ports:\n" + self.text())
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(self.url + "/readyz", timeout=5).status == 200:
                    return
            except urllib.error.URLError:
                time.sleep(0.1)  # polling readiness
        fail("transferd did not become ready:\n" + self.text())

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def api(self, method, path, body=None, token=TOKEN):
        """The JSON API; fails the test on an error."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/api/v1/" + path, data=data, method=method,
                                     headers={"Authorization": "Bearer " + token,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as res:
                return json.load(res)
        except urllib.error.HTTPError as e:
            fail(f"{method} {path}: {e.code} {e.read().decode()}")

    def transferctl(self, binary, *args):
        env = dict(os.environ, TRANSFERD_ADDR=self.grpc_address, TRANSFERD_TOKEN=TOKEN)
        run = subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            fail(f"transferctl {' '.join(args)}: {run.stdout}{run.stderr}")
        return run.stdout

    def wait_job(self, job_id, timeout=600):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.api("GET", "jobs/" + job_id)
            if job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
                return job
            time.sleep(0.2)  # polling the job's state
        fail(f"job {job_id} did not finish in {timeout} s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                fail("transferd did not stop on SIGTERM")


def stage(name, trainable_from, optimizer, lr, epochs):
    return {"name": name, "trainable_from": trainable_from, "epochs": epochs, "batch_size": 16,
            "optimizer": {"kind": optimizer, "learning_rate": lr}}


def job_spec(weights, stages, input_size=160, dataset="datasets/cd"):
    """MobileNet alpha 0.25 with a global-average-pooling head, fp32, seed 1."""
    return {"kind": "JOB_KIND_TRAIN", "dataset": dataset, "seed": "1",
            "model": {"backbone": "mobilenet", "alpha": 0.25, "weights": weights,
                      "input_size": input_size, "precision": "PRECISION_FP32",
                      "head": {"pooling": "POOLING_GLOBAL_AVERAGE", "hidden_units": 0, "dropout": 0}},
            "stages": stages}


def temp_root(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def remove(root):
    shutil.rmtree(root, ignore_errors=True)
