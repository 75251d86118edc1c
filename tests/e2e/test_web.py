"""The web page in a real headless Chromium (Debian's package, driven by Playwright for Python; no
browser is downloaded): Chromium's fake microphone plays a recording into getUserMedia, the page's
AudioWorklet resamples it to 16 kHz and streams it to /v1/listen, and the captions on the page
must match the recording's reference. Then a file is transcribed through the page's file picker,
opened from the keyboard on the drop zone (POST /v1/audio/transcriptions), the transcript box
follows the newest line, and the transcript is downloaded as SRT. A second test: an API key is
exchanged for a session token, and a policy close (1008) is not retried and shows its reason.

Screenshots of the page (live: at the first interim text or final; and at the end) are written to the test's tmp
dir and copied to artifacts/web-e2e-live.png and artifacts/web-e2e.png.
"""

from __future__ import annotations

import json
import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from shared.audio import decode_file, float32_to_pcm16
from tests.conftest import REPO, Service, librispeech, wait_http
from whisper_streaming.evaluation import wer
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WATCH_INTERIM = """() => {
  new MutationObserver(() => {
    const el = document.querySelector("#transcript .utt.interim");
    if (el && el.textContent.trim()) window.interimSeen = el.textContent;
  }).observe(document.querySelector("#transcript"),
             {subtree: true, childList: true, attributes: true, characterData: true});
}"""
FAKE_RATE = 48_000


def chromium_path() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make install` (scripts/install-chromium.sh "
            "installs Debian's chromium package) or set CHROMIUM to a Chromium binary"
        )
    return CHROMIUM


def fake_microphone_wav(source: Path, out: Path) -> None:
    """The recording as 48 kHz 16-bit mono WAV with silence around it: the rate a real
    microphone runs at, so the page's worklet really resamples (48 kHz to 16 kHz)."""
    speech = decode_file(source, FAKE_RATE)
    lead, tail = np.zeros(FAKE_RATE // 2, np.float32), np.zeros(FAKE_RATE * 2, np.float32)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(FAKE_RATE)
        w.writeframes(float32_to_pcm16(np.concatenate([lead, speech, tail])))


def browser_args(wav: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        # %noloop: play the file once, then silence (Chromium loops it otherwise)
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]


def contrast(fg: str, bg: str = "rgb(255, 255, 255)") -> float:
    """WCAG contrast ratio of two CSS rgb() colours."""

    def luminance(css: str) -> float:
        r, g, b = (int(float(v)) / 255 for v in css[css.index("(") + 1 : -1].split(",")[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_page_live_captions_file_upload_and_download(
    service: Service, corpus: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    wav = tmp_path / "jfk-48k.wav"
    fake_microphone_wav(corpus / "long" / "jfk.flac", wav)
    reference = (corpus / "long" / "jfk.txt").read_text()
    args = browser_args(wav)
    console: list[str] = []
    screenshot = tmp_path / "web-e2e.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=executable,
            headless=True,
            args=args,
            viewport={"width": 1100, "height": 900},
            accept_downloads=True,
        )
        try:
            page = browser.new_page()
            # Playwright turns file-chooser interception on when the first listener is added,
            # without waiting for the browser to confirm: a listener added only at the Enter
            # press races it (the picker then opens unintercepted and no event comes). One
            # listener from the start, confirmed by the goto below, closes that race.
            page.on("filechooser", lambda _chooser: None)
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(service.http + "/")
            page.wait_for_selector("body[data-loaded='true']")
            assert page.input_value("#endpoint") == service.ws + "/v1/listen"
            page.click("#settings-box summary")
            page.select_option("#language", "en")
            # the language list is what the live workers serve (tiny.en: English), and the
            # translate switch is off: no live worker announces translation
            page.wait_for_selector("body[data-languages='1']")
            options = page.eval_on_selector_all("#language option", "os => os.map(o => o.value)")
            assert options == ["", "en"] and page.is_disabled("#translate")

            # -- live: fake microphone -> worklet -> /v1/listen -> captions -----------------
            page.evaluate(WATCH_INTERIM)
            page.click("#start")
            page.wait_for_selector("body[data-state='live']", timeout=20_000)
            page.wait_for_function(
                "window.interimSeen || document.querySelector('#transcript .utt.final')",
                timeout=30_000,
            )
            page.screenshot(path=str(tmp_path / "web-e2e-live.png"))
            # the recording is 11 s; finals come after each pause, the last one after it ends
            page.wait_for_function(
                "document.querySelectorAll('#transcript .utt.final').length >= 2"
                " && !document.querySelector('#transcript .utt.interim')"
                # the last utterance ("... for your country"), not the second ("your country ...")
                " && document.querySelector('#transcript').innerText.toLowerCase()"
                ".includes('for your country')",
                timeout=60_000,
            )
            page.click("#stop")
            page.wait_for_selector("body[data-state='idle']", timeout=60_000)
            live = page.locator("#transcript .utt.final .words").all_inner_texts()
            live_text = " ".join(live)
            # the AudioContext runs at the (fake) device's rate; the worklet resampled it
            assert page.get_attribute("body", "data-sample-rate") in ("44100", "48000")
            assert live and wer([(reference, live_text)]).wer <= 0.2, (live_text, console)
            coloured = page.locator("#transcript .utt.final .words span").count()
            assert coloured >= len(reference.split()) - 3  # one coloured span per word
            assert page.inner_text("#lang").startswith("en (")
            assert page.inner_text("#latency").endswith(" s")
            assert page.locator("#error").is_hidden()
            received = json.loads(page.get_attribute("body", "data-received") or "{}")
            assert received["session"] == 1 and received["final"] >= 2, received
            # Partials are best effort (a busy ASR pool drops stale ones, by design): every one
            # that arrived must have been shown as grey interim text before its final.
            if received.get("partial"):
                assert page.evaluate("window.interimSeen"), received
            # only finals are announced (one polite live region), never the whole transcript
            assert page.get_attribute("#transcript", "aria-live") is None
            assert page.get_attribute("#announcer", "aria-live") == "polite"
            assert page.inner_text("#announcer").strip() == live[-1].strip()
            # legible: interim and confidence colours >= 4.5:1, confidence also by underline
            colour = "(s) => getComputedStyle(document.querySelector(s)).color"
            for sel in (".legend .interim", ".legend .p-high", ".legend .p-mid", ".legend .p-low"):
                assert contrast(page.evaluate(colour, sel)) >= 4.5, sel
            underline = "(s) => getComputedStyle(document.querySelector(s)).textDecorationLine"
            assert page.evaluate(underline, ".legend .p-mid") == "underline"
            assert page.evaluate(underline, ".legend .p-low") == "underline"
            assert page.evaluate(underline, ".legend .p-high") == "none"

            # -- a file, the picker opened from the keyboard on the drop zone -------------------
            # a short box that the transcript overflows, its reader at the newest line
            page.add_style_tag(content="#transcript { min-height: 0; max-height: 5rem; }")
            page.evaluate(
                "() => { const b = document.querySelector('#transcript'); b.scrollTop = b.scrollHeight; }"
            )
            utt = next(u for u in librispeech() if u.utt_id == "2830-3980-0043")
            page.focus("#drop")
            with page.expect_file_chooser() as chooser:
                page.keyboard.press("Enter")
            chooser.value.set_files(str(utt.path))
            page.wait_for_selector("#transcript .utt.file", timeout=60_000)
            file_text = " ".join(page.locator("#transcript .utt.file .words").all_inner_texts())
            assert wer([(utt.reference, file_text)]).wer <= 0.2, (file_text, console)
            # the box scrolled to the new captions: its last line is inside its visible area
            box = page.evaluate(
                """() => { const b = document.querySelector('#transcript');
                           const last = b.lastElementChild.getBoundingClientRect();
                           const r = b.getBoundingClientRect();
                           return {overflow: b.scrollHeight > b.clientHeight + 10,
                                   visible: last.bottom <= r.bottom + 1 && last.top >= r.top - 1,
                                   scrolled: b.scrollTop > 0}; }"""
            )
            assert box == {"overflow": True, "visible": True, "scrolled": True}, box

            # -- download of everything on the page as SRT -------------------------------------
            with page.expect_download() as info:
                page.click("button[data-download='srt']")
            srt = Path(info.value.path()).read_text()
            assert srt.startswith("1\n00:00:") and " --> " in srt
            assert srt.count(" --> ") == len(live) + len(
                page.locator("#transcript .utt.file").all()
            )
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(screenshot, artifacts / "web-e2e.png")
    shutil.copy(tmp_path / "web-e2e-live.png", artifacts / "web-e2e-live.png")


def test_api_key_is_exchanged_and_a_policy_close_is_not_retried(
    spawn, corpus: Path, tmp_path: Path
) -> None:
    """A gateway with keys and an Origin allow-list the page's origin is not on: the page trades
    the key for a session token (the key is neither stored nor put in the URL), the socket is
    refused with origin_not_allowed and 1008, and the page shows that and does not retry."""
    from playwright.sync_api import sync_playwright

    key = "web-test-key-0123456789"
    port = free_port()
    gw = spawn("gateway", PORT=str(port), AUTH_ENABLED="true", API_KEYS=f"web:{key}",
               ALLOWED_ORIGINS="https://elsewhere.example")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", 60, [gw])
    wav = tmp_path / "jfk-48k.wav"
    fake_microphone_wav(corpus / "long" / "jfk.flac", wav)
    sockets: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), headless=True,
            args=browser_args(wav),
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.goto(base + "/")
            page.wait_for_selector("body[data-loaded='true']")
            page.click("#settings-box summary")
            page.fill("#token", key)
            page.click("#start")
            page.wait_for_selector("body[data-state='error']", timeout=30_000)
            error = page.inner_text("#error")
            assert "origin_not_allowed" in error and "1008" in error, error
            assert page.get_attribute("body", "data-close-code") == "1008"
            page.wait_for_timeout(2500)  # longer than any first retry (0.25-0.5 s)
            assert len(sockets) == 1, sockets
            assert page.get_attribute("body", "data-state") == "error"
            assert "token=wst1." in sockets[0] and key not in sockets[0]
            stored = page.evaluate("() => JSON.stringify(Object.assign({}, localStorage))")
            assert key not in stored
        finally:
            browser.close()
