#!/usr/bin/python3
"""The dashboard in a real headless Chromium (Debian's chromium +
chromium-driver, through python3-selenium) against a real transferd.

What it shows, in order (each step fails the test with a message):
  1. a wrong token is refused: the page says so;
  2. with the right token the server and device summary appears;
  3. a viewer's token cannot cancel (the page says so); the job list's
     Cancel button cancels a queued job with the admin token;
  4. the job view of a training job (frozen MobileNet 0.25 with the shared
     ImageNet weights, then its top block fine-tuned) opened before it starts
     grows at least three epoch points on its curves without a reload, marks
     the fine-tuning boundary and ends with the evaluation's confusion matrix;
  5. the predict view classifies a real cat JPEG from ../shared as "cat", and
     says a broken file is not an image;
  6. the pages fit a phone's width and the sections are reachable with the
     keyboard;
  7. once the server is gone, the page says it cannot be reached;
and no console error at any step but the ones a step provokes on purpose
(the 401s of the wrong token, the viewer's 403, the refused connections of
the stopped server).
Screenshots: <out>/dashboard-job.png, dashboard-predict.png,
dashboard-job-phone.png.

Needs TRANSFERD_TEST_DATA and TRANSFERD_TEST_WEIGHTS (skipped, exit 77,
when they are unset; fails when they are set and files are missing) and the
Debian packages chromium, chromium-driver and python3-selenium (skipped when
absent, unless CI=true, where scripts/install-deps installs them).
"""

import argparse
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from transferd_fixture import (TOKEN, Server, fail, job_spec, link_subset, remove,  # noqa: E402
                               shared_paths, skip, stage, temp_root)

VIEWER = "dashboard-viewer-token-0123456789"
CAT = "cat.1050.jpg"  # validation split, not among the 100 + 50 per class used


class Browser:
    def __init__(self, url):
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            self.unavailable("python3-selenium is not installed")
        chromium = shutil.which("chromium")
        driver = shutil.which("chromedriver")
        if not chromium or not driver:
            self.unavailable("chromium and chromium-driver are not installed")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,800", "--lang=en-US"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(driver), options=options)
        self.driver.set_window_size(1280, 800)
        self.url = url

    @staticmethod
    def unavailable(message):
        if os.environ.get("CI") == "true":
            fail(message + " (scripts/install-deps installs it)")
        skip(message)

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, what, predicate, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)  # polling the page's state
        self.driver.save_screenshot(os.path.join(OUT, "dashboard-failure.png"))
        fail(f"timed out waiting for {what}; page text:\n" + self.js("return document.body.innerText"))

    def click(self, selector):
        """Clicks the element `selector` names, found afresh if the page
        re-rendered it between the lookup and the click (the job list
        refreshes itself)."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        for _ in range(5):
            try:
                self.driver.find_element(By.CSS_SELECTOR, selector).click()
                return
            except StaleElementReferenceException:
                continue
        fail(f"{selector} kept being re-rendered")

    def text(self, selector):
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
                       selector)

    def count(self, selector):
        return self.js("return document.querySelectorAll(arguments[0]).length", selector)

    def console_errors(self, allowed=None):
        """The console's errors since the last call, less the allowed ones."""
        errors = [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        return [m for m in errors if not (allowed and re.search(allowed, m))]

    def check_console(self, step, allowed=None):
        errors = self.console_errors(allowed)
        if errors:
            fail(f"console errors during {step}:\n" + "\n".join(errors))


def main():
    global OUT
    parser = argparse.ArgumentParser()
    parser.add_argument("--transferd", required=True)
    parser.add_argument("--transferctl", required=True)
    parser.add_argument("--out", required=True, help="where screenshots go")
    args = parser.parse_args()
    OUT = args.out
    os.makedirs(OUT, exist_ok=True)
    data, weights_file = shared_paths(os.path.join("validation", CAT))
    browser = Browser("")  # skips early when Chromium is missing

    tmp = temp_root("transferd-dashboard-")
    server = None
    try:
        link_subset(data, os.path.join(tmp, "images"), 100)
        server = Server(args.transferd, tmp, {TOKEN: "admin", VIEWER: "viewer"}, weights_file)
        server.transferctl(args.transferctl, "datasets", "upload", os.path.join(tmp, "images"), "--id", "cd")

        # A long job holds the worker while the page opens the next one's view.
        server.api("POST", "jobs", {"job_id": "blocker", "spec": job_spec(
            "none", [stage("long", "all", "KIND_ADAM", 1e-3, 500)], input_size=32)})
        weights = os.path.basename(weights_file)
        server.api("POST", "jobs", {"job_id": "cats", "spec": job_spec(weights, [
            stage("frozen", "none", "KIND_ADAM", 1e-3, 3),
            stage("fine-tune", "conv_dw_12", "KIND_RMSPROP", 1e-5, 2)])})
        server.api("POST", "jobs", {"job_id": "spare", "spec": job_spec(
            weights, [stage("frozen", "none", "KIND_ADAM", 1e-3, 1)])})

        run_browser(browser, server)
    finally:
        if server:
            server.stop()
        try:
            browser.driver.quit()
        finally:
            remove(tmp)
    print("PASS: dashboard: token refused and accepted, cancel, live curves, predict, "
          "phone width, keyboard, server gone; screenshots in " + OUT)


def use_token(b, token):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    field = b.driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token + Keys.ENTER)


def run_browser(b, server):
    d = b.driver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # 1. A wrong token: the page loads (its files need none) and says so.
    d.get(server.url + "/assets/app.css")  # same origin, no API call yet
    b.js("sessionStorage.setItem('transferd.token', 'wrong-token-0123456789')")
    d.get(server.url + "/")
    b.wait("the wrong token's message", lambda: "Not signed in" in b.text("#banner"))
    b.check_console("the wrong token", allowed=r"status of 401")

    # 2. The right token, typed into the page.
    use_token(b, TOKEN)
    b.wait("the device summary", lambda: "device cpu" in b.text("#server-device"))
    if not b.js("return document.getElementById('banner').hidden"):
        fail("the error banner stayed after the right token: " + b.text("#banner"))
    b.wait("the job list", lambda: b.count("#jobs-table tr[data-job]") == 3)
    b.check_console("sign-in and the job list")

    # 3. A viewer's token may look but not cancel: the page says why.
    use_token(b, VIEWER)
    b.wait("the job list for a viewer", lambda: b.count("#jobs-table tr[data-job]") == 3)
    b.click("tr[data-job='spare'] button")
    b.wait("the viewer's refusal", lambda: "No permission" in b.text("#banner"))
    if "queued" not in b.text("tr[data-job='spare'] .state"):
        fail("a viewer's cancel changed the job: " + b.text("tr[data-job='spare']"))
    b.check_console("the viewer's refused cancel", allowed=r"status of 403")
    use_token(b, TOKEN)
    b.wait("the job list", lambda: b.count("#jobs-table tr[data-job]") == 3)

    # Cancel the queued "spare" job from the list.
    b.click("tr[data-job='spare'] button")
    b.wait("spare cancelled", lambda: "cancelled" in b.text("tr[data-job='spare'] .state"))
    b.check_console("cancel")

    # 4. The job view opened while the job waits: curves grow live.
    d.get(server.url + "/#/jobs/cats")
    b.wait("the job view", lambda: b.text("#job-state") == "queued")
    if b.count("#charts circle.pt-train") != 0:
        fail("the queued job already has epoch points")
    b.js("window.__sameDocument = 'not reloaded'")
    server.api("POST", "jobs/blocker:cancel")
    b.wait("step progress", lambda: "step" in b.text("#progress-text"), timeout=120)
    b.wait("three epoch points on the loss curve",
           lambda: b.count("[data-chart='loss'] circle.pt-train") >= 3, timeout=300)
    b.wait("the job's end", lambda: b.text("#job-state") == "succeeded", timeout=300)
    if b.js("return window.__sameDocument") != "not reloaded":
        fail("the page was reloaded while the curves grew")
    if b.count("[data-chart='loss'] circle.pt-train") != 5 or b.count("[data-chart='accuracy'] circle.pt-val") != 5:
        fail("expected 5 train and 5 validation points")
    if b.count("[data-chart='loss'] line.stage") != 1:
        fail("the fine-tuning boundary is not marked once")
    b.wait("the confusion matrix", lambda: b.count(".evaluation table.matrix td") == 4)
    job = server.api("GET", "jobs/cats")
    b.wait("the result model", lambda: b.text("#job-result") == job["result_model"].split("/")[1])
    d.set_window_size(1280, 1100)  # the whole view in the picture
    d.save_screenshot(os.path.join(OUT, "dashboard-job.png"))
    d.set_window_size(1280, 800)
    b.check_console("the live job view")

    # 5. Predict a real cat, and a broken file, through the predict view.
    model = job["result_model"]
    d.get(server.url + "/#/predict/" + model.replace("/", "%2F"))
    b.wait("the predict view", lambda: b.count("#predict-files") == 1)
    if d.find_element(By.ID, "predict-model").get_attribute("value") != model:
        fail("the predict view did not preselect " + model)
    broken = os.path.join(server.root, "broken.jpg")
    with open(broken, "wb") as f:
        f.write(b"this is not a JPEG")
    cat = os.path.join(os.environ["TRANSFERD_TEST_DATA"], "validation", CAT)
    d.find_element(By.ID, "predict-files").send_keys(cat + "\n" + broken)
    b.wait("two answers", lambda: b.count(".prediction") == 2, timeout=120)
    label = b.text(f".prediction[data-image='{CAT}'] .label")
    if label != "cat":
        fail(f"the cat was labelled {label!r}: " + b.text("#predict-results"))
    if "Not classified" not in b.text(".prediction[data-image='broken.jpg']"):
        fail("the broken file's error is not shown: " + b.text("#predict-results"))
    b.wait("the cat's picture", lambda: b.js(
        "const i = document.querySelector('.prediction img'); return i && i.complete && i.naturalWidth > 0"))
    d.save_screenshot(os.path.join(OUT, "dashboard-predict.png"))
    b.check_console("predict")

    # 6. Phone width, and the keyboard.
    d.set_window_size(390, 844)
    d.get(server.url + "/#/jobs/cats")
    b.wait("the job view at phone width", lambda: b.count("[data-chart='loss'] circle.pt-train") == 5)
    overflow = b.js("return document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 1:
        fail(f"the job view is {overflow}px wider than a phone's screen")
    d.save_screenshot(os.path.join(OUT, "dashboard-job-phone.png"))
    d.set_window_size(1280, 800)
    d.get(server.url + "/#/jobs")
    b.wait("the job list", lambda: b.count("#jobs-table tr[data-job]") == 3)
    body = d.find_element(By.TAG_NAME, "body")
    for _ in range(30):
        if b.js("return document.activeElement.id") == "nav-predict":
            break
        body.send_keys(Keys.TAB) if b.js("return document.activeElement === document.body") else \
            d.switch_to.active_element.send_keys(Keys.TAB)
    else:
        fail("the Predict section is not reachable with Tab")
    d.switch_to.active_element.send_keys(Keys.ENTER)
    b.wait("the predict view by keyboard", lambda: b.count("#predict-files") == 1)
    b.check_console("phone width and keyboard")

    # 7. The server goes away: the page says so.
    server.stop()
    b.click("#nav-models")
    b.wait("the unreachable message", lambda: "cannot be reached" in b.js("return document.body.innerText"))
    b.check_console("the stopped server", allowed=r"ERR_CONNECTION_REFUSED|Failed to fetch")


if __name__ == "__main__":
    main()
