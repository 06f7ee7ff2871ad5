#!/usr/bin/env python3
"""Drives keyd's approval page in headless Chromium at a phone's size:
logs in with a TOTP code, checks the held request is shown, approves it,
and checks the confirmation. Run by crates/keyd/tests/web.rs.

    approve.py URL NAME CODE HOST BOOT_ID REASON [--screenshot DIR]

Exits 0 when every check passed; otherwise prints what differed and
exits 1. Uses the distribution's chromium and chromedriver by path, so
selenium never looks for (or downloads) a driver of its own.
"""

import argparse
import os
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

# The window; headless Chromium won't make one narrower than 500 px, so the
# page itself is laid out by phone emulation at the narrowest common width.
PHONE = (390, 844)
VIEWPORT = 375


def fail(message):
    print(f"approve.py: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def main():
    parser = argparse.ArgumentParser()
    for arg in ("url", "name", "code", "host", "boot_id", "reason"):
        parser.add_argument(arg)
    parser.add_argument("--screenshot", help="directory for login.png, list.png, done.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()

    profile = tempfile.TemporaryDirectory(prefix="atrest-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        # keyd's certificate is signed by its own CA, made by the test.
        "--ignore-certificate-errors",
        f"--window-size={PHONE[0]},{PHONE[1]}",
        f"--user-data-dir={profile.name}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "mobileEmulation",
        {"deviceMetrics": {"width": VIEWPORT, "height": PHONE[1], "pixelRatio": 2.0}},
    )
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    wait = WebDriverWait(driver, 15)

    def shot(name):
        if args.screenshot:
            driver.save_screenshot(os.path.join(args.screenshot, name))

    def fits_the_screen(page):
        width = driver.execute_script("return document.documentElement.scrollWidth")
        inner = driver.execute_script("return window.innerWidth")
        check(inner == VIEWPORT, f"{page}: the viewport is {inner} px, not {VIEWPORT}")
        check(width <= inner, f"{page}: {width} px wide in a {inner} px viewport")

    try:
        driver.get(args.url.rstrip("/") + "/approve")
        name = wait.until(EC.presence_of_element_located((By.NAME, "name")))
        fits_the_screen("login page")
        shot("login.png")
        name.send_keys(args.name)
        driver.find_element(By.NAME, "code").send_keys(args.code)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        try:
            card = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "section.card")))
        except TimeoutException:
            fail(f"no pending request after logging in; page was:\n{driver.page_source}")
        text = card.text
        check(
            card.find_element(By.CSS_SELECTOR, ".host").text == args.host,
            f"host {args.host!r} not shown in:\n{text}",
        )
        check(
            card.find_element(By.CSS_SELECTOR, ".boot-id").text == args.boot_id,
            f"boot id {args.boot_id!r} not shown in:\n{text}",
        )
        check(args.reason in card.find_element(By.CSS_SELECTOR, ".reason").text,
              f"reason {args.reason!r} not shown in:\n{text}")
        approve = card.find_element(By.CSS_SELECTOR, "button.approve")
        check(approve.size["height"] >= 44, f"the Approve button is {approve.size} (too small to tap)")
        fits_the_screen("request list")
        shot("list.png")
        approve.click()

        try:
            done = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".msg.ok")))
        except TimeoutException:
            fail(f"no confirmation after Approve; page was:\n{driver.page_source}")
        check(
            f"Approved {args.host}" in done.text,
            f"confirmation {done.text!r} does not name {args.host}",
        )
        check(not driver.find_elements(By.CSS_SELECTOR, "section.card"),
              "the approved request is still listed")
        shot("done.png")
        print(f"approve.py: approved {args.host} ({done.text})")
    finally:
        driver.quit()
        profile.cleanup()


if __name__ == "__main__":
    main()
