"""Playwright driving Debian's Chromium (no browser download: `/usr/bin/chromium`, installed
by scripts/install-system-deps.sh), and a page that records what must never happen in the
console: a JavaScript dialog, an uncaught error, a console error, a CSP violation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("EMBEDGATE_TEST_ARTIFACTS", "build/test-artifacts")) / "console"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}

WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@dataclass
class Incidents:
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> Any:
        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}")
                if message.type == "error" and not _expected_http_error(message.text)
                else None
            ),
        )
        return page

    def assert_clean(self, page: Any) -> None:
        violations = page.evaluate("window.__csp || []")
        assert violations == [], f"CSP violations: {violations}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
        assert self.errors == [], f"errors: {self.errors}"


def _expected_http_error(text: str) -> bool:
    """Chromium logs every 4xx/5xx fetch as a console error ("Failed to load resource");
    the console shows those answers itself (a refused key is such an answer)."""
    return text.startswith("Failed to load resource")


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/install-system-deps.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, base: str, incidents: Incidents, width: str = "desktop") -> Any:
    w, h = WIDTHS[width]
    context = browser.new_context(viewport={"width": w, "height": h}, base_url=base)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    context.add_init_script(WATCH_CSP)
    return incidents.watch(context.new_page())


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
