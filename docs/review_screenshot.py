"""Make docs/review.png: the review app's file page, in headless Chromium, over an output of the sample footage.

    make demo && .venv/bin/python docs/review_screenshot.py demo-out docs/review.png

Needs Debian's chromium and chromium-driver (`make browser-deps`). The page shows the first file of the
review queue at its tenth frame, a mask selected.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from anonray.review_app.server import review_server


def main(output: Path, png: Path) -> None:
    server, token = review_server(output, "127.0.0.1", 0, None, "dpo-office")
    threading.Thread(target=server.run, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1250"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(f"http://127.0.0.1:{server.effective_port}/?token={token}")
        browser.find_element(By.CSS_SELECTOR, "#queue a.file-link").click()
        browser.find_element(By.ID, "frame-number").clear()
        browser.find_element(By.ID, "frame-number").send_keys("10\n")
        time.sleep(2)
        regions = browser.find_elements(By.CSS_SELECTOR, "button.region")
        if regions:
            regions[0].click()
        time.sleep(1)
        browser.save_screenshot(str(png))
    finally:
        browser.quit()
        server.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
