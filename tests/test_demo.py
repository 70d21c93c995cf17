"""`lenvm demo` in a real headless browser: Debian's chromium driven by Playwright, on tiny random models.

Skips (with the reason printed) when gradio, Playwright or /usr/bin/chromium is missing: `.ci/run` installs
chromium with apt-get, the dev extra installs gradio and Playwright (never `playwright install`: its browser
download is unreachable here).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The committed screenshot is refreshed only on request (LENVM_DEMO_SCREENSHOT=1): a test run leaves the repo as it was.
SCREENSHOT = REPO / "evals" / "results" / "demo" / "demo.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 90_000


def _skip(reason: str):
    print(f"[test_demo] skipped: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    for module, what in (
        ("gradio", "gradio is not installed (pip install -e '.[demo]')"),
        ("playwright", "Playwright for Python is not installed (pip install playwright)"),
    ):
        if importlib.util.find_spec(module) is None:
            _skip(what)
    if not (Path(CHROMIUM).is_file() or shutil.which("chromium")):
        _skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _serve(demo):
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def tiny_demo(tiny_causal_dir, tiny_backbone, tokenizer):
    from transformers import AutoModelForCausalLM

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.demo import build_demo
    from lenvm_rl.modeling import LengthValueModel

    generator = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer)
    demo = build_demo(
        generator,
        critic,
        tokenizer,
        max_new_tokens=48,
        generator_name="tiny random Llama (test)",
        critic_name="tiny random LenVM (test)",
    )
    url = _serve(demo)
    yield url
    demo.close()


def test_handler_streams_and_reports_bad_input(tiny_causal_dir, tiny_backbone, tokenizer):
    """The event handler without a browser: the length first, the plain answer in growing pieces, then the
    controlled one; bad input is one message and no exception."""
    from transformers import AutoModelForCausalLM

    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.demo import run_request
    from lenvm_rl.modeling import LengthValueModel

    generator = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    critic = LengthCritic(LengthValueModel(tiny_backbone, gamma=0.95), tokenizer)
    steps = list(run_request(generator, critic, tokenizer, "Name a colour.", "at_most", 6, 1.0, 40, 0))
    assert "data-predicted" in steps[0][1] and 'data-state="streaming"' in steps[0][2]  # length before tokens
    counts = [s[2].count("data-i=") for s in steps if 'data-state="streaming"' in s[2]]
    assert counts == sorted(counts) and counts[-1] >= 1  # the plain answer grows token by token
    guided = [s[3].count("data-i=") for s in steps if 'data-state="streaming"' in s[3] and "data-i=" in s[3]]
    assert guided and guided == sorted(guided)  # ... and then the controlled one
    final = steps[-1]
    assert final[0] == "" and 'data-state="done"' in final[2] and 'data-state="done"' in final[3]
    n = int(re.search(r"(\d+) tokens?, (ended|cut)", final[3]).group(1))
    assert n <= 6  # at_most 6
    budget = list(run_request(generator, critic, tokenizer, "Name a colour.", "equal", 4, 1.0, 12, 0, None, True))
    assert 'data-state="done"' in budget[-1][3]  # prompt only beside prompt + LenVM
    for args, expected in [
        (("  ", "equal", 8, 1.0, 40, 0), "prompt is empty"),
        (("Hi", "at_least", 80, 1.0, 40, 0), "above the cap"),
        (("Hi", "equal", None, 1.0, 40, 0), "needs a target"),
        (("Hi", "tilt", 8, None, 40, 0), "needs a beta"),
        (("Hi", "plain", 8, 1.0, 0, 0), "cap"),
        (("Hi", "plain", 8, 1.0, 40, 0, None, True), "no target to put in the prompt"),  # budget in the prompt
        (("Hi", "tilt", 8, 1.0, 40, 0, None, True), "no target to put in the prompt"),
    ]:
        (only,) = list(run_request(generator, critic, tokenizer, *args))
        assert expected in only[0], (args, only[0])


def _click_generate(page):
    page.click("#lenvm-generate")


def _message(page) -> str:
    loc = page.locator("#lenvm-message .lenvm-message")
    return loc.inner_text() if loc.count() else ""


@pytest.mark.slow  # a browser
def test_demo_page_streams_tinted_answers(browser, tiny_demo, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(tiny_demo)
    page.wait_for_selector("#lenvm-generate")
    prompt = page.locator("#lenvm-prompt textarea")
    target = page.locator("#lenvm-target input")

    # An empty prompt: a message on the page, nothing generated.
    _click_generate(page)
    page.wait_for_selector("#lenvm-message .lenvm-message:has-text('prompt is empty')")
    assert page.locator("#lenvm-plain span[data-i]").count() == 0

    # A target above the cap (48): a message again.
    prompt.fill("Write a haiku about the sea.")
    target.fill("100")
    _click_generate(page)
    page.wait_for_selector("#lenvm-message .lenvm-message:has-text('above the cap')")

    # The page still works: a real request streams the plain answer, then the controlled one.
    target.fill("12")
    _click_generate(page)
    page.wait_for_selector("#lenvm-controlled .lenvm-answer[data-state='done']")
    assert _message(page) == ""

    # (a) the predicted length, before and independent of generation
    readout = page.locator("#lenvm-length .lenvm-length")
    assert re.search(r"Predicted answer length: \d+ tokens", readout.inner_text()), readout.inner_text()
    assert float(readout.get_attribute("data-predicted")) > 0

    # (b) tinted token spans with the predicted tokens to come on hover
    spans = page.locator("#lenvm-plain span[data-i][title]")
    assert spans.count() >= 1
    for i in range(min(spans.count(), 5)):
        title = spans.nth(i).get_attribute("title")
        assert re.search(r"predicted tokens to come: \d+\.\d", title), title
        style = spans.nth(i).get_attribute("style")
        shift = float(spans.nth(i).get_attribute("data-shift"))
        assert ("214,39,40" in style) == (shift > 0), (style, shift)
        assert "31,119,180" in style or shift > 0
    colours = page.locator("#lenvm-plain span[data-i]").first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colours.startswith("rgba("), colours  # the tint reaches the rendered page (not sanitised away)
    spans.first.hover()

    # (c) both answers with their token counts and how they ended
    ended = r"\d+ tokens?, (ended naturally|ended by the rule|cut at the cap)"
    plain_meta = page.locator("#lenvm-plain .lenvm-meta").inner_text()
    guided_meta = page.locator("#lenvm-controlled .lenvm-meta").inner_text()
    assert re.search(ended, plain_meta), plain_meta
    assert re.search(ended, guided_meta), guided_meta
    assert "equal, target 12 tokens" in page.locator("#lenvm-controlled").inner_text()
    assert page.locator("#lenvm-controlled span[data-i][title]").count() >= 1
    n_guided = int(re.match(r"(\d+)", guided_meta).group(1))
    assert 12 <= n_guided <= 12 + 4, guided_meta  # equal: the target, or the hard stop at target + overshoot
    assert re.search(r"generated: plain \d+, equal \d+", readout.inner_text()), readout.inner_text()

    shot = SCREENSHOT if os.environ.get("LENVM_DEMO_SCREENSHOT") == "1" else tmp_path / "demo.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    print(f"[test_demo] screenshot: {shot}")
    page.close()


@pytest.mark.slow  # a browser
def test_demo_without_critic_says_what_to_do(browser):
    from lenvm_rl.demo import DEFAULT_CRITIC, build_demo, load_models

    generator, tokenizer, critic, message = load_models("/nonexistent/lenvm", None)  # loads nothing
    assert critic is None and generator is None and "--critic" in message
    demo = build_demo(None, None, critic_name=DEFAULT_CRITIC)
    url = _serve(demo)
    try:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        banner = page.locator("#lenvm-message .lenvm-message")
        banner.wait_for()
        assert "lenvm quickstart" in banner.inner_text() and "--critic" in banner.inner_text()
        page.locator("#lenvm-prompt textarea").fill("Hello?")
        _click_generate(page)
        page.wait_for_selector("#lenvm-length .lenvm-length")
        page.wait_for_timeout(1000)
        assert "lenvm quickstart" in _message(page)  # the server answered with the message, no stack trace
        assert page.locator("#lenvm-plain span[data-i]").count() == 0
        page.close()
    finally:
        demo.close()
