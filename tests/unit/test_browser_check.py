"""The browser check itself: it must catch what it is there to catch, or its green means nothing."""

from __future__ import annotations

from browser_harness import load_page, require_chromium


def test_console_errors_exceptions_and_network_loads_are_detected(tmp_path):
    require_chromium()
    page = tmp_path / "broken.html"  # port 9 refuses at once: a load that fails fast, on any network
    page.write_text('<!DOCTYPE html><html><body><p id="p">hello</p><img src="http://127.0.0.1:9/x.png">'
                    '<script>console.log("fine"); console.error("deliberate error"); null.boom;</script></body></html>')

    result = load_page(page, checks={"text": "document.getElementById('p').textContent"})

    assert result.evaluate == {"text": "hello"}
    assert "console.error: deliberate error" in result.console_errors
    assert any(e.startswith("uncaught exception: TypeError") and "boom" in e for e in result.console_errors)
    assert result.external_requests == ["http://127.0.0.1:9/x.png"]
    assert "log: fine" in result.console_messages and "log: fine" not in result.console_errors


def test_a_clean_page_has_no_errors_and_gives_a_screenshot(tmp_path):
    require_chromium()
    page = tmp_path / "clean.html"
    page.write_text('<!DOCTYPE html><html><body><svg width="100" height="50"><rect class="bar" width="40" '
                    'height="20"/></svg></body></html>')

    result = load_page(page, screenshot=tmp_path / "clean.png", checks={"bars": "document.querySelectorAll('rect.bar').length"})

    assert result.console_errors == [] and result.external_requests == []
    assert result.evaluate == {"bars": 1}
    assert (tmp_path / "clean.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
