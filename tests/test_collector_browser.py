"""The real browser SDKs from npm, in headless Chromium, on a page of another origin than the collector.

A site's pages and the collector are two origins (here two local ports), so the browser preflights every
post the SDKs make (they send `Authorization`): without CORS nothing lands. The page server stands in for the
site and its static host: it serves the pages, the SDK bundles from `tests/browser/node_modules`, and the
settings analytics.js would fetch from Segment's CDN. Nothing leaves the machine: every request the browser
makes is to one of the two local servers, and none fails.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from browser import drive, require_browser, sdk_file
from test_collect_to_events import events_in_warehouse
from test_collector import Collector, start_server

pytestmark = pytest.mark.slow
KEY = "wk_browser"

# One page with both SDKs (one browser start instead of two), each as its own documentation sets it up.
SHOP_PAGE = """<!doctype html><html><head><title>shop</title>
<script src="/analytics-next/bundles/index.js"></script>
<script src="/rudderstack/rsa.js"></script></head><body>
<script>
window.segment = null;
window.rudderstack = null;
(async () => {
  try {
    // As a site using @segment/analytics-next would: the collector as the API host; the settings come from
    // the site's own host (cdnURL) instead of Segment's CDN.
    const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
      {writeKey: "%(key)s", cdnURL: location.origin},
      {integrations: {"Segment.io": {apiHost: "%(collector_host)s/v1", protocol: "http"}}});
    const calls = [
      await analytics.identify("user-seg", {email: "Ann.Browser@Example.com"}),
      await analytics.track("product_viewed", {product_id: "sku_7", price: 12.5}),
      await analytics.page("shop", "home"),
    ];
    window.segment = {ids: calls.map((ctx) => ctx.event.messageId), anonymousId: analytics.user().anonymousId(),
                      failed: calls.map((ctx) => ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : null)};
  } catch (error) {
    window.segment = {error: String(error)};
  }
})();

const ids = [];
const rudder = new rudderanalytics.RudderAnalytics();
// The collector as the data plane; the source config that RudderStack's control plane would serve is given
// inline, with no destinations.
rudder.load("%(key)s", "%(collector_url)s", {
  getSourceConfig: () => ({source: {id: "web", name: "web", enabled: true, workspaceId: "cdp", config: {},
                                    destinations: []}}),
  onLoaded: () => {
    rudder.identify("user-rs", {email: "bob.browser@example.com"}, (message) => ids.push(message.messageId));
    rudder.track("product_added", {product_id: "sku_9", price: 3}, (message) => ids.push(message.messageId));
    rudder.page("shop", "cart", (message) => ids.push(message.messageId));
  },
});
const wait = setInterval(() => {
  if (ids.length === 3) {
    clearInterval(wait);
    window.rudderstack = {ids, anonymousId: rudder.getAnonymousId()};
  }
}, 50);
</script></body></html>"""


class Site(ThreadingHTTPServer):
    """The site's own origin: pages, SDK bundles, analytics.js settings; remembers every path asked for."""

    def __init__(self, collector_url: str):
        super().__init__(("127.0.0.1", 0), SiteHandler)
        self.collector_url = collector_url
        self.requested: list[str] = []
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"


class SiteHandler(BaseHTTPRequestHandler):
    server: Site

    def do_GET(self) -> None:
        self.server.requested.append(self.path)
        fields = {"key": KEY, "collector_url": self.server.collector_url,
                  "collector_host": self.server.collector_url.removeprefix("http://")}
        path = self.path.split("?")[0]
        if path == "/shop.html":
            self.answer(SHOP_PAGE % fields, "text/html")
        elif path.startswith("/analytics-next/bundles/") and "/" not in path.removeprefix("/analytics-next/bundles/"):
            bundle = sdk_file("@segment/analytics-next/dist/umd") / path.rsplit("/", 1)[1]
            self.answer(bundle.read_bytes() if bundle.is_file() else None, "text/javascript")
        elif path == "/rudderstack/rsa.js":
            self.answer(sdk_file("@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js").read_bytes(), "text/javascript")
        elif path == f"/v1/projects/{KEY}/settings":
            # What Segment's CDN would answer for the source: the Segment.io destination only, pointed at the
            # collector; no other destinations, no remote metrics.
            settings = {"integrations": {"Segment.io": {"apiKey": KEY, "apiHost": fields["collector_host"] + "/v1",
                                                        "protocol": "http"}},
                        "plan": {}, "metrics": {"sampleRate": 0}}
            self.answer(json.dumps(settings), "application/json")
        else:
            self.answer(None, "text/plain")

    def answer(self, body: str | bytes | None, content_type: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args) -> None:
        pass


def run_shop_page(site: Site) -> tuple[dict, dict, list[str]]:
    """What each SDK reported on the page (message ids, anonymous id, or the error), and every URL the page
    loaded or sent to (the browser's resource timing: scripts, fetch and XHR)."""
    out = drive(f"{site.origin}/shop.html", [
        {"wait_for_function": "window.segment !== null && window.rudderstack !== null"},
        {"sleep_ms": 500},  # the SDKs' posts after the last call
        {"evaluate": "JSON.stringify([window.segment, window.rudderstack])", "as": "result"},
        {"evaluate": "JSON.stringify(performance.getEntriesByType('resource').map((entry) => entry.name))", "as": "urls"},
    ], timeout_s=30)
    assert out["ok"], out
    assert out["failed_requests"] == [], out["failed_requests"]
    segment, rudderstack = json.loads(out["values"]["result"])
    assert "error" not in segment and "error" not in rudderstack, (segment, rudderstack, out["console"])
    return segment, rudderstack, json.loads(out["values"]["urls"])


def test_browser_sdks_on_another_origin_land_events_that_reach_cdp_events(tmp_path, monkeypatch):
    require_browser()
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CDP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("CDP_WRITE_KEYS", KEY)
    site = Site("")
    monkeypatch.setenv("CDP_COLLECTOR_ALLOWED_ORIGINS", site.origin)  # the site only, not any origin
    server, thread, url = start_server(data_dir)
    site.collector_url = url
    site_thread = threading.Thread(target=site.serve_forever, daemon=True)
    site_thread.start()
    try:
        segment, rudderstack, urls = run_shop_page(site)
        collector = Collector(url, data_dir)
        sent = set(segment["ids"]) | set(rudderstack["ids"])
        lines = wait_for_lines(collector, len(sent))
    finally:
        site.shutdown()
        server.should_exit = True
        thread.join(10)

    assert segment["failed"] == [None, None, None]
    assert {line["messageId"] for line in lines} == sent and len(lines) == 6
    by_library = {}
    for line in lines:
        by_library.setdefault(line["context"]["library"]["name"], []).append(line)
    assert sorted(by_library) == ["RudderLabs JavaScript SDK", "analytics.js"]
    assert {line["anonymousId"] for line in by_library["analytics.js"]} == {segment["anonymousId"]}
    assert {line["anonymousId"] for line in by_library["RudderLabs JavaScript SDK"]} == {rudderstack["anonymousId"]}
    assert all("writeKey" not in line and line["source"] == "web" for line in lines)
    # Nothing left the machine: every URL the page used is the site's or the collector's (and none failed).
    assert all(u.startswith((site.origin + "/", url + "/")) for u in urls), urls
    assert any(u.startswith(url + "/v1/") for u in urls) and f"/v1/projects/{KEY}/settings" in site.requested

    events = events_in_warehouse(data_dir)
    assert set(events) == sent
    assert {events[i]["event_type"] for i in segment["ids"]} == {"identify", "track", "page"}
    assert {events[i]["event_name"] for i in rudderstack["ids"]} >= {"product_added"}


def wait_for_lines(collector: Collector, count: int, seconds: float = 10) -> list[dict]:
    """The SDKs send after their calls return: wait for the lines to land."""
    deadline = time.monotonic() + seconds
    while len(lines := collector.lines()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return lines


def test_the_page_server_serves_the_bundles_the_pages_name():
    """Guards the paths above against an npm layout change: a missing bundle would only show as a timeout."""
    require_browser()
    assert (sdk_file("@segment/analytics-next/dist/umd") / "index.js").is_file()
    assert sdk_file("@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js").is_file()
