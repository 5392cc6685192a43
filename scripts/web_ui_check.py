#!/usr/bin/env python3
"""Drives rbees-workerd's web page in real headless Chromium (Selenium with
Debian's chromium and chromium-driver), as worker/tests/web_ui.rs asks:

  web_ui_check.py BASE_URL TOKEN CHROMIUM CHROMEDRIVER SCREENSHOT_DIR

It opens the page, gives the token when the page asks for it (and checks it
never shows in the URL), sends a chat message and sees streamed text grow
before the answer ends, reads the per-message speed and stop reason, stops a
long generation, and reads the status view; screenshots of the chat and the
status view go to SCREENSHOT_DIR. Prints one JSON object of what it saw;
exits non-zero (with the reason) on any failure.
"""

import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, token, chromium, chromedriver, shots = sys.argv[1:6]
os.makedirs(shots, exist_ok=True)

options = Options()
options.binary_location = chromium
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,900",
             "--disable-dev-shm-usage"):
    options.add_argument(flag)
driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
wait = WebDriverWait(driver, 90, poll_frequency=0.02)
seen = {}


def by_id(name):
    return driver.find_element(By.ID, name)


def set_value(name, value):
    field = by_id(name)
    field.clear()
    field.send_keys(str(value))


def last_answer():
    answers = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")
    return answers[-1] if answers else None


def answer_text(el):
    return el.find_element(By.CSS_SELECTOR, ".text").text


try:
    driver.get(base + "/")
    # The worker wants a token: the page asks for it.
    wait.until(lambda d: by_id("token-dialog").get_attribute("open") is not None)
    by_id("token-input").send_keys(token)
    by_id("token-form").find_element(By.TAG_NAME, "button").click()
    wait.until(lambda d: "SmolLM2" in by_id("model-name").text)
    seen["model_name"] = by_id("model-name").text
    assert token not in driver.current_url, "the token is in the URL"

    driver.execute_script("document.getElementById('settings').open = true")
    set_value("temperature", 0)
    set_value("max_tokens", 32)

    # A chat message: text must appear while the answer is still streaming.
    by_id("prompt").send_keys("What is the capital of France? Answer in one sentence.")
    by_id("send").click()
    wait.until(lambda d: last_answer() is not None
               and last_answer().get_attribute("data-state") == "streaming"
               and answer_text(last_answer()) != "")
    partial = answer_text(last_answer())
    seen["stop_enabled_while_streaming"] = by_id("stop").is_enabled()
    wait.until(lambda d: last_answer().get_attribute("data-state") == "done")
    final = answer_text(last_answer())
    stats = last_answer().find_element(By.CSS_SELECTOR, ".stats").text
    seen.update(partial=partial, final=final, stats=stats,
                stop=last_answer().get_attribute("data-stop"))
    assert len(final) > len(partial), f"no text arrived after the first: {partial!r} / {final!r}"
    assert final.startswith(partial), (partial, final)
    assert "decode" in stats and "tok/s" in stats and "stop:" in stats, stats
    driver.save_screenshot(os.path.join(shots, "web-chat.png"))

    # A long generation, stopped.
    set_value("max_tokens", 400)
    by_id("prompt").send_keys("Write a long story about a dragon who learns to cook.")
    by_id("send").click()
    wait.until(lambda d: last_answer().get_attribute("data-state") == "streaming"
               and len(answer_text(last_answer())) > 10)
    by_id("stop").click()
    wait.until(lambda d: last_answer().get_attribute("data-state") == "done")
    seen["stopped"] = last_answer().get_attribute("data-stop")
    seen["stopped_stats"] = last_answer().find_element(By.CSS_SELECTOR, ".stats").text
    assert seen["stopped"] == "stopped", seen["stopped"]

    # The status view.
    by_id("tab-status").click()
    wait.until(lambda d: by_id("st-backend").text != "" and by_id("st-requests").text != "")
    time.sleep(4.5)  # a few points on the chart
    seen["status"] = {k: by_id("st-" + k).text for k in
                      ("model", "state", "backend", "device", "context", "slots", "queue",
                       "tps", "memory", "requests")}
    driver.save_screenshot(os.path.join(shots, "web-status.png"))
    print(json.dumps(seen))
except Exception as e:  # noqa: BLE001 - report anything, with what was seen
    print(json.dumps(seen), file=sys.stderr)
    print(f"web UI check failed: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
finally:
    driver.quit()
