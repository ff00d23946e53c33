"""`anonray review` (issue 18): the access rules, what it serves, and a whole review in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from _video_checks import decode_frames, mask_pixels, solid_config

from anonray.corrections.apply import apply_corrections
from anonray.corrections.spec import parse_corrections
from anonray.corrections.table import read_corrections
from anonray.review_app import server as review_server_module
from anonray.review_app.access import TOKEN_HEADER, allowed_hosts, check_request, cookie_name, is_loopback
from anonray.review_app.app import create_app
from anonray.review_app.folder import ReviewFolder, review_queue
from anonray.runtime.driver import RunRequest, run
from anonray.testing.samples import write_sample_video

TOKEN = "test-token-0123456789"
HOSTS = allowed_hosts("127.0.0.1", 8765)


@pytest.fixture(scope="module")
def reviewed_run(ray_session, tmp_path_factory):
    """One real run over two sample clips in two folders (cameras), kept as a template each test copies."""
    root = tmp_path_factory.mktemp("review_app")
    inputs, out = root / "in", root / "out"
    truth = {}
    for i, name in enumerate(("cam1/a.mp4", "cam2/b.mp4")):
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        truth[name] = write_sample_video(inputs / name, format="h264_mp4", frames=30, seed=i)
    assert run(RunRequest([str(inputs)], out, solid_config())).ok == 2
    return inputs, out, truth


@pytest.fixture
def output(reviewed_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reviewed_run[1], out)
    return out


def _client(output, reviewer=None):
    """Flask's test client sends ``Host: localhost``: the app answers it here as it would its own address."""
    return create_app(output, TOKEN, HOSTS | {"localhost"}, reviewer).test_client()


def _video_id(output, path):
    return next(r["video_id"] for r in ReviewFolder(output).files() if r["path"] == path)


def test_the_access_rules():
    base = {"method": "GET", "host_header": "127.0.0.1:8765", "query_token": None, "cookie_token": None,
            "headers": {}, "token": TOKEN, "hosts": HOSTS}
    assert check_request(**base).status == 401
    assert check_request(**{**base, "query_token": "wrong"}).status == 403
    ok = check_request(**{**base, "query_token": TOKEN})
    assert ok.status == 200 and ok.set_cookie
    assert check_request(**{**base, "cookie_token": TOKEN}).status == 200
    assert check_request(**{**base, "headers": {"Authorization": f"Bearer {TOKEN}"}}).status == 200
    assert check_request(**{**base, "host_header": "localhost:8765", "cookie_token": TOKEN}).status == 200
    assert check_request(**{**base, "host_header": "evil.example:8765", "cookie_token": TOKEN}).status == 403
    post = {**base, "method": "POST", "cookie_token": TOKEN}
    assert check_request(**post).status == 403  # a form from another site sends the cookie, not the header
    assert check_request(**{**post, "headers": {TOKEN_HEADER: TOKEN}}).status == 200
    cross = {TOKEN_HEADER: TOKEN, "Origin": "http://evil.example"}
    assert check_request(**{**post, "headers": cross}).status == 403
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_every_request_needs_the_token_and_nothing_outside_the_folder_is_served(output, caplog):
    client = _client(output)
    assert client.get("/").status_code == 401
    assert client.get("/static/review.js").status_code == 401
    assert client.get("/?token=nope").status_code == 403
    first = client.get(f"/file/nope?token={TOKEN}&x=1")
    assert first.status_code == 303 and first.headers["Location"] == "/file/nope?x=1"  # the token leaves the URL
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith("anonray_review_8765=") and "SameSite=Strict" in cookie and "HttpOnly" in cookie
    assert cookie_name(allowed_hosts("127.0.0.1", 8766)) == "anonray_review_8766"  # one cookie per app
    assert client.get("/static/review.js").status_code == 200  # the cookie now
    index = client.get("/")
    assert index.status_code == 200 and b"cam1/a.mp4" in index.data and b"cam2/b.mp4" in index.data
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 403
    for probe in ("/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd",
                  "/api/file/..%2f..%2fetc/frame/0.jpg", "/file/nope", "/api/file/nope/frame/0.jpg"):
        assert client.get(probe).status_code == 404, probe
    video = _video_id(output, "cam1/a.mp4")
    assert client.get(f"/api/file/{video}/frame/999.jpg").status_code == 404
    image = client.get(f"/api/file/{video}/frame/3.jpg")
    assert image.status_code == 200 and image.data[:2] == b"\xff\xd8"
    folder = ReviewFolder(output)
    outside = {"output_path": "../../etc/passwd"}
    inside_state = {"output_path": "_anonray/runs/../videos"}
    assert folder.output_file(outside) is None and folder.output_file(inside_state) is None
    assert TOKEN not in caplog.text


def test_page_actions_are_checked_queued_and_applied(output):
    client = _client(output)
    client.get(f"/?token={TOKEN}")
    headers = {TOKEN_HEADER: TOKEN}
    bad = client.post("/api/pending", json={"reviewer": "dpo", "entry": {"file": "cam1/a.mp4",
                      "action": "add_region", "box": [0, 0, 9999, 10], "frames": [0, 1]}}, headers=headers)
    assert bad.status_code == 400 and "lies outside" in bad.get_json()["error"]
    assert "9999" not in bad.get_json()["error"]  # coordinates are not echoed
    nameless = client.post("/api/pending", json={"entry": {"file": "cam1/a.mp4", "action": "approve"}},
                           headers=headers)
    assert nameless.status_code == 400 and "reviewer" in nameless.get_json()["error"]
    no_header = client.post("/api/pending", json={"reviewer": "dpo", "entry": {"file": "cam1/a.mp4",
                            "action": "approve"}})
    assert no_header.status_code == 403
    good = client.post("/api/pending", json={"reviewer": "dpo", "entry": {"file": "cam1/a.mp4",
                       "action": "approve", "comment": "ok"}}, headers=headers)
    assert good.status_code == 200 and good.get_json()["pending"] == 1
    pending = output / "_anonray" / "review_pending"
    assert os.stat(pending).st_mode & 0o777 == 0o700
    applied = client.post("/api/apply", headers=headers).get_json()["runs"]
    assert [(r["corrected"], r["reviewed"], r["failed"]) for r in applied] == [(0, 1, 0)]
    assert ReviewFolder(output).pending() == []
    statuses = {r["path"]: r["review_status"] for r in ReviewFolder(output).files()}
    assert statuses == {"cam1/a.mp4": "approved", "cam2/b.mp4": None}


def test_the_queue_puts_flagged_files_first_and_covers_every_folder():
    rows = [{"path": f"cam{c}/{k}.mp4", "video_id": f"{c}{k}", "qa_flags": [], "review_status": None}
            for c in range(3) for k in range(10)]
    rows[5]["qa_flags"] = ["low_fidelity"]
    rows[7]["review_status"] = "approved"
    rows[12]["review_status"] = "rejected"
    from anonray.config import ReviewConfig

    queue = review_queue(rows, ReviewConfig(sample_share=0.0, min_files=1, seed=3))
    paths = [r["path"] for r in queue]
    assert paths[:2] == ["cam0/5.mp4", "cam1/2.mp4"]  # flagged, then rejected (by path)
    assert {p.split("/")[0] for p in paths[2:]} == {"cam0", "cam1", "cam2"} and len(paths) == 5
    assert "cam0/7.mp4" not in paths
    assert review_queue(rows, ReviewConfig(sample_share=0.0, min_files=1, seed=3)) == queue  # seeded


@pytest.fixture
def no_serving(monkeypatch):
    """``serve`` sets up its server, then stops at once, as on Ctrl-C."""
    made = review_server_module.review_server

    def stopping(*args, **kwargs):
        server, token = made(*args, **kwargs)
        server.run = lambda: (_ for _ in ()).throw(KeyboardInterrupt)
        return server, token

    monkeypatch.setattr(review_server_module, "review_server", stopping)


def test_a_non_loopback_address_is_warned_about(output, no_serving):
    said = []
    review_server_module.serve(output, "0.0.0.0", 0, None, None, say=said.append)
    assert said[0].startswith("warning: the review app listens on 0.0.0.0")
    assert "/?token=" in said[1]
    said.clear()
    review_server_module.serve(output, "127.0.0.1", 0, "given", None, say=said.append)
    assert not said[0].startswith("warning") and said[0].endswith("/?token=given")


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver must be installed in CI (.ci/run installs them)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200",
                 "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _edges(mask, width: int = 2):
    """The pixels within ``width`` of a mask's boundary."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    m = mask.astype(np.uint8)
    return (cv2.dilate(m, kernel) > 0) & ~(cv2.erode(m, kernel) > 0)


def _wait(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting in the browser")


def test_a_whole_review_in_a_real_browser(reviewed_run, output):
    """Open a file from the queue, remove a false mask, draw a region, approve, apply: the output's
    pixels change only there."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    truth = reviewed_run[2]["cam1/a.mp4"]
    _, before, _, _ = decode_frames(output / "cam1" / "a.mp4")
    regions = pq.read_table(output / "_anonray" / "regions").to_pandas()
    plates = regions[(regions.video_id == _video_id(output, "cam1/a.mp4")) & (regions.class_name == "plate")]
    plate_regions: dict[int, list] = {}
    for row in plates.itertuples():
        plate_regions.setdefault(row.frame_index, []).append((row.x0, row.y0, row.x1, row.y1))
    server, token = review_server_module.review_server(output, "127.0.0.1", 0, None, "dpo")
    threading.Thread(target=server.run, daemon=True).start()
    browser = _browser()
    try:
        base = f"http://127.0.0.1:{server.effective_port}"
        browser.get(f"{base}/?token={token}")
        browser.find_element(By.LINK_TEXT, "cam1/a.mp4").click()
        _wait(lambda: browser.execute_script("return document.getElementById('frame').naturalWidth") > 0)
        plate = _wait(lambda: [b for b in browser.find_elements(By.CSS_SELECTOR, "button.region")
                               if b.get_attribute("data-class") == "plate"])
        plate[0].click()
        for field, value in (("remove-first", "0"), ("remove-last", "14")):
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(value)
        browser.find_element(By.ID, "remove-range").click()
        _wait(lambda: "queued: remove_track" in browser.find_element(By.ID, "status").text)

        canvas = browser.find_element(By.ID, "overlay")
        size = canvas.size  # the frame is shown at its stored size here (384x288)
        assert abs(size["width"] - truth.width) <= 2
        ActionChains(browser).move_to_element_with_offset(canvas, -size["width"] // 2 + 4, -size["height"] // 2 + 4) \
            .click_and_hold().move_by_offset(40, 30).release().perform()
        _wait(lambda: browser.find_element(By.ID, "drawn").text.startswith("["))
        for field, value in (("add-first", "5"), ("add-last", "9")):
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(value)
        browser.find_element(By.ID, "add-region").click()
        _wait(lambda: "queued: add_region" in browser.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "approve").click()
        _wait(lambda: "queued: approve" in browser.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "apply").click()
        _wait(lambda: "applied" in browser.find_element(By.ID, "status").text, timeout=120)
        assert "1 corrected" in browser.find_element(By.ID, "status").text
    finally:
        browser.quit()
        server.close()

    _, after, _, _ = decode_frames(output / "cam1" / "a.mp4")
    corner = (slice(4, 30), slice(4, 40))  # inside the drawn box (about [4, 4, 44, 34])
    for k in range(30):
        assert (mask_pixels(after[k])[corner].mean() > 0.95) == (5 <= k <= 9), k
        x0, y0, x1, y1 = (int(v) for v in truth.plate_boxes[k])
        plate_masked = mask_pixels(after[k])[y0 + 2:y1 - 2, x0 + 2:x1 - 2].mean() > 0.9
        assert plate_masked == (k >= 15), k
        changed = mask_pixels(before[k]) != mask_pixels(after[k])
        changed[:40, :50] = False
        for rx0, ry0, rx1, ry1 in plate_regions.get(k, []):  # the removed track's own regions
            changed[int(ry0) - 2:int(ry1) + 2, int(rx0) - 2:int(rx1) + 2] = False
        changed &= ~_edges(mask_pixels(before[k]))  # the re-encode moves mask edges by a pixel or two
        assert changed.sum() < 30, k  # nothing else moved
    corrections = pq.read_table(output / "_anonray" / "corrections").to_pandas()
    assert corrections.action.tolist() == ["remove_track", "add_region", "approve"]
    assert set(corrections.reviewer) == {"dpo"}
    assert {r["path"]: r["review_status"] for r in ReviewFolder(output).files()}["cam1/a.mp4"] == "approved"


def test_outputs_without_their_regions_are_named_and_a_folder_of_only_those_is_refused(output, no_serving):
    regions = output / "_anonray" / "regions"
    a_id = _video_id(output, "cam1/a.mp4")
    (part_a,) = regions.glob(f"part-*-{a_id}.parquet")
    part_a.unlink()  # what review.keep_regions: false leaves
    said = []
    review_server_module.serve(output, "127.0.0.1", 0, "t", None, say=said.append)
    assert said[0].startswith("warning: 1 output(s) cannot be corrected") and "keep_regions" in said[0]
    page = _client(output).get(f"/file/{a_id}?token={TOKEN}", follow_redirects=True)
    assert b"regions-not-kept" in page.data and b"keep_regions" in page.data
    for part in regions.glob("part-*.parquet"):
        part.unlink()
    with pytest.raises(review_server_module.ReviewRefused, match="review.keep_regions: false"):
        review_server_module.serve(output, "127.0.0.1", 0, "t", None, say=said.append)
    done = subprocess.run([sys.executable, "-m", "anonray", "review", str(output)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "review.keep_regions: false" in done.stderr


def test_every_interface_answers_by_this_machines_names_and_errors_log_no_path(output, caplog):
    import socket

    wildcard = allowed_hosts("0.0.0.0", 8765)
    assert f"{socket.gethostname()}:8765" in wildcard and "127.0.0.1:8765" in wildcard
    assert "evil.example:8765" not in wildcard
    video = _video_id(output, "cam1/a.mp4")
    (output / "cam1" / "a.mp4").write_bytes(b"\0" * 4096)  # a damaged output: reading a frame fails
    answer = _client(output).get(f"/api/file/{video}/frame/3.jpg?token={TOKEN}", follow_redirects=True)
    assert answer.status_code in (404, 500)
    assert str(output) not in caplog.text and "a.mp4" not in caplog.text


def test_one_apply_takes_every_reviewers_actions_or_none(output):
    client = _client(output)
    headers = {TOKEN_HEADER: TOKEN}
    region = ReviewFolder(output).regions(ReviewFolder(output).current(_video_id(output, "cam1/a.mp4")), 0)[0]
    remove = {"file": "cam1/a.mp4", "action": "remove_track", "class": region["class"], "track_id": region["track_id"]}
    for reviewer in ("alice", "bob"):  # both remove the same false mask
        assert client.post(f"/api/pending?token={TOKEN}", json={"reviewer": reviewer, "entry": remove},
                           headers=headers).status_code == 200
    runs = client.post("/api/apply", headers=headers).get_json()["runs"]
    assert [(r["corrected"], r["failed"]) for r in runs] == [(1, 0)]
    corrections = pq.read_table(output / "_anonray" / "corrections").to_pandas()
    assert corrections.reviewer.tolist() == ["alice", "bob"] and set(corrections.run_id) == {runs[0]["run_id"]}

    # an action made stale by a correction applied elsewhere meanwhile refuses the whole queue: nothing applies
    b_id = _video_id(output, "cam2/b.mp4")
    other = ReviewFolder(output).regions(ReviewFolder(output).current(b_id), 0)[0]
    stale = {"file": "cam2/b.mp4", "action": "remove_track", "class": other["class"], "track_id": other["track_id"]}
    client.post("/api/pending", json={"reviewer": "carol", "entry": {"file": "cam1/a.mp4", "action": "approve"}},
                headers=headers)
    client.post("/api/pending", json={"reviewer": "dave", "entry": stale}, headers=headers)
    apply_corrections(output, parse_corrections(json.dumps({"reviewer": "cli", "corrections": [stale]})))
    refused = client.post("/api/apply", headers=headers)
    assert refused.status_code == 409 and "entry 2 (cam2/b.mp4)" in refused.get_json()["error"]
    recorded = read_corrections(output / "_anonray")  # oldest first (parts of one second sort by their random ids)
    assert [r["reviewer"] for r in recorded] == ["alice", "bob", "cli"]  # carol's approval was not applied either
