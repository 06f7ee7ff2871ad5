#!/usr/bin/env python3
"""Drives keyd's approval page in headless Chromium at a phone's size:
logs in with a TOTP code, checks the held request is shown with its vault,
times and a running countdown (so the CSP lets the page's script run),
approves it, and checks the confirmation. With --unproven-host, approves
that host's unproven request through the confirmation page. Run by
crates/keyd/tests/web.rs.

    approve.py URL NAME CODE HOST BOOT_ID REASON [--unproven-host HOST]
               [--screenshot DIR]

Exits 0 when every check passed; otherwise prints what differed and
exits 1. Uses the distribution's chromium and chromedriver by path, so
selenium never looks for (or downloads) a driver of its own.
"""

import argparse
import os
import sys
import tempfile
import time

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
    parser.add_argument("--unproven-host", help="a host whose request is for an unproven boot")
    parser.add_argument(
        "--screenshot", help="directory for login.png, list.png, done.png, confirm.png"
    )
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

        def card_of(host):
            try:
                wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "section.card")))
            except TimeoutException:
                fail(f"no pending request; page was:\n{driver.page_source}")
            for card in driver.find_elements(By.CSS_SELECTOR, "section.card"):
                if card.find_element(By.CSS_SELECTOR, ".host").text == host:
                    return card
            fail(f"no request of {host} listed; page was:\n{driver.page_source}")

        card = card_of(args.host)
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
        check("keyslot 0" in card.find_element(By.CSS_SELECTOR, ".vault").text,
              f"vault and keyslot not shown in:\n{text}")
        check(card.find_element(By.CSS_SELECTOR, ".made").text.endswith("ago)")
              or "(now)" in card.find_element(By.CSS_SELECTOR, ".made").text,
              f"when it was made not shown in:\n{text}")
        check(not card.find_elements(By.CSS_SELECTOR, ".unproven"),
              f"a first boot is marked unproven:\n{text}")
        expires = card.find_element(By.CSS_SELECTOR, ".expires")
        before = expires.text
        time.sleep(2.2)
        after = expires.text
        check(before != after and after.endswith(" s"),
              f"the countdown does not run ({before!r}, then {after!r}); blocked script?")
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
        listed = [c.find_element(By.CSS_SELECTOR, ".host").text
                  for c in driver.find_elements(By.CSS_SELECTOR, "section.card")]
        check(args.host not in listed, "the approved request is still listed")
        shot("done.png")
        print(f"approve.py: approved {args.host} ({done.text})")

        if args.unproven_host:
            card = card_of(args.unproven_host)
            warning = card.find_elements(By.CSS_SELECTOR, ".unproven")
            check(warning and "hands the running boot's ticket" in warning[0].text,
                  f"no unproven-boot warning in:\n{card.text}")
            card.find_element(By.CSS_SELECTOR, "button.approve").click()
            try:
                confirm = wait.until(
                    EC.presence_of_element_located((By.CSS_SELECTOR, "button.confirm")))
            except TimeoutException:
                fail(f"no confirmation step for an unproven boot; page was:\n{driver.page_source}")
            heading = driver.find_element(By.TAG_NAME, "h1").text
            check(heading == "Approve an unproven boot?", f"confirmation page says {heading!r}")
            check(not driver.find_elements(By.CSS_SELECTOR, ".msg.ok"),
                  "approved before the confirmation")
            fits_the_screen("confirmation page")
            shot("confirm.png")
            confirm.click()
            try:
                done = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".msg.ok")))
            except TimeoutException:
                fail(f"no confirmation after Approve anyway; page was:\n{driver.page_source}")
            check(f"Approved {args.unproven_host}" in done.text,
                  f"confirmation {done.text!r} does not name {args.unproven_host}")
            print(f"approve.py: approved {args.unproven_host} after confirming ({done.text})")
    finally:
        driver.quit()
        profile.cleanup()


if __name__ == "__main__":
    main()
