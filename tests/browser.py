"""Headless Chromium for end-to-end UI tests: Debian's `chromium` driven through its own
`chromedriver` by selenium. Both paths are given explicitly, so Selenium Manager never runs and
nothing is downloaded; a machine without them fails with how to install them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = (
    "the browser test needs Debian's Chromium and its driver: `apt-get install chromium chromium-driver` "
    "(as root; `make test` installs them itself when it runs as root)"
)


def chromium(window: tuple[int, int] = (1600, 1000)) -> Any:
    """A headless Chromium WebDriver; fails the test (never skips it) when the browser is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL_HINT}", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: `make setup` installs the `dev` extra", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={window[0]},{window[1]}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.5) -> Any:
    """Poll `condition` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def body_text(driver: Any) -> str:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except WebDriverException:  # the page is being replaced
        return ""


def buttons_named(driver: Any, text: str) -> list[Any]:
    """Visible buttons whose text contains `text` (Dagster's CSS classes change between versions)."""
    from selenium.webdriver.common.by import By

    return [
        b
        for b in driver.find_elements(By.XPATH, f"//button[contains(normalize-space(.), '{text}')]")
        if b.is_displayed()
    ]


def click_text(driver: Any, text: str, timeout_s: float = 20.0) -> None:
    """Click the first visible element (button, link or span) whose own text is `text`."""
    from selenium.webdriver.common.by import By

    xpath = (
        f"//*[self::button or self::a or self::span or self::div][normalize-space(text())='{text}' or "
        f"normalize-space(.)='{text}'][not(*[normalize-space(.)='{text}'])]"
    )
    element = wait_for(
        lambda: next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None),
        timeout_s,
        f"something to click named {text!r}",
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def click_button(driver: Any, text: str, timeout_s: float = 30.0) -> None:
    """Click the visible button containing `text`, closing dialogs in its way and retrying while
    the page re-renders."""
    from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException

    def attempt() -> bool:
        dismiss_dialogs(driver)
        try:
            buttons = buttons_named(driver, text)
            if buttons:
                buttons[0].click()
                return True
        except (ElementClickInterceptedException, StaleElementReferenceException):
            pass
        return False

    wait_for(attempt, timeout_s, f"a button named {text!r} to click")


def dismiss_dialogs(driver: Any) -> None:
    """Close the UI's first-visit "Join the Dagster community" dialog when it shows."""
    for button in buttons_named(driver, "Skip"):
        button.click()
