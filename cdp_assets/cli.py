"""The `cdp` command line: demo, run, profile, collect, serve, segment check, erase, export, tracking-plan sync."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime
from decimal import Decimal

from cdp_resources.settings import config_dir, data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdp", description="Warehouse-native customer data platform")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate the sample data set, then materialize everything")
    demo.add_argument("--events", type=int, default=100_000, help="tracked events to generate (default 100000)")
    demo.add_argument("--seed", type=int, default=7)
    commands.add_parser("run", help="materialize every asset over the data present")
    sample_api = commands.add_parser("sample-api", help="serve the demo's orders (data/api/orders) as the orders API")
    sample_api.add_argument("--host", default="127.0.0.1")
    sample_api.add_argument("--port", type=int, default=8090)  # 8089 is `cdp serve`

    profile = commands.add_parser("profile", help="the 360 view of one person (text at a terminal, else JSON)")
    profile.add_argument("identifier", metavar="TYPE:VALUE", help="e.g. email:ann@example.com")
    profile.add_argument("--format", choices=["text", "json"],
                         help="default: text when printing to a terminal, JSON when piped or redirected")
    profile.add_argument("--explain", metavar="TYPE:VALUE", help="show how (or why not) this identifier joins the other")

    collect = commands.add_parser("collect", help="run the event collector")
    collect.add_argument("--host", default="127.0.0.1")
    collect.add_argument("--port", type=int, default=8088)

    serve = commands.add_parser("serve", help="the Profile API and the staff 360 page, from the online store")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8089)
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")

    segment = commands.add_parser("segment", help="segment tools")
    segment_commands = segment.add_subparsers(dest="segment_command", required=True)
    check = segment_commands.add_parser("check", help="validate a segment file, print its SQL and size")
    check.add_argument("file")

    erase = commands.add_parser("erase", help="record a request to erase a person everywhere (GDPR/CCPA)")
    erase.add_argument("identifier", metavar="TYPE:VALUE")
    erase.add_argument("--now", action="store_true", help="process it at once and rebuild (else the privacy job does)")
    export = commands.add_parser("export", help="everything held about a person, as one JSON document")
    export.add_argument("identifier", metavar="TYPE:VALUE")

    plan = commands.add_parser("tracking-plan", help="tracking plan tools")
    plan_commands = plan.add_subparsers(dest="plan_command", required=True)
    plan_commands.add_parser("sync", help="regenerate the plan's part of expectations/events.json")

    args = parser.parse_args(argv)
    handler = {
        "demo": _demo, "run": _run, "profile": _profile, "collect": _collect, "serve": _serve, "segment": _segment_check,
        "tracking-plan": _tracking_plan_sync, "erase": _erase, "export": _export, "sample-api": _sample_api,
    }
    return handler[args.command](args)


def _demo(args) -> int:
    from cdp_assets.sample_data import generate_sample_data

    target = data_dir()
    if target.exists() and any(target.iterdir()) and not (target / "sample_manifest.json").exists():
        print(f"{target} holds data that the demo did not generate; set CDP_DATA_DIR to an empty directory.")
        return 2
    _clear_demo_data(target)
    print(f"Generating the sample data set into {target} …")
    generate_sample_data(target, events=args.events, seed=args.seed)
    code = _run(args)
    if code == 0:
        print("\nOpen the UI with `make dev` (http://127.0.0.1:3000) to browse assets, runs and checks.")
        print("Look up a person with e.g. `cdp profile email:<address>` (see data/sample_manifest.json).")
    return code


def _clear_demo_data(target) -> None:
    """A demo starts from scratch: its own inputs and warehouse are regenerated."""
    import shutil

    for name in ("landing", "cdc", "imports", "api"):
        shutil.rmtree(target / name, ignore_errors=True)
    for name in ("warehouse.duckdb", "warehouse.duckdb.wal", "sample_manifest.json"):
        (target / name).unlink(missing_ok=True)


def _run(args) -> int:
    from cdp_assets.runner import format_summary, run_everything

    print(f"Materializing every asset over {data_dir()} (config {config_dir()})")
    summary = run_everything(progress=lambda line: print(line, flush=True))
    print(format_summary(summary))
    return 0 if summary.success else 1


def _sample_api(args) -> int:
    from cdp_assets.sample_orders_api import sample_orders_server

    folder = data_dir() / "api" / "orders"
    if not folder.is_dir():
        print(f"{folder} does not exist: generate the demo first (cdp demo)", file=sys.stderr)
        return 2
    server = sample_orders_server(folder, args.host, args.port)
    print(f"serving {folder} as the orders API: export CDP_ORDERS_API_URL=http://{args.host}:{server.server_address[1]}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _profile(args) -> int:
    from cdp_assets.profiles.view import ProfileNotFound, person_view, render_text

    kind, _, value = args.identifier.partition(":")
    other_kind, _, other_value = (args.explain or "x:x").partition(":")
    if not value or not other_value:
        print("expected TYPE:VALUE, e.g. email:ann@example.com", file=sys.stderr)
        return 2
    if args.explain:
        return _explain((kind, value), (other_kind, other_value))
    try:
        view = person_view(kind, value)
    except ProfileNotFound as exc:
        print(str(exc), file=sys.stderr)
        return 1
    as_text = args.format == "text" or (args.format is None and sys.stdout.isatty())
    print(render_text(view) if as_text else json.dumps(view, indent=2, default=_json_default))
    return 0


def _collect(args) -> int:
    from cdp_resources.collector import serve

    serve(host=args.host, port=args.port)
    return 0


def _serve(args) -> int:
    from cdp_resources.profile_api import serve

    serve(host=args.host, port=args.port, workers=args.workers)
    return 0


def _segment_check(args) -> int:
    from pathlib import Path

    from cdp_assets.segments.check import check_segment_file

    ok, text = check_segment_file(Path(args.file))
    print(text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _explain(a: tuple[str, str], b: tuple[str, str]) -> int:
    from cdp_assets.identity.explain import explain_with, recorded_graph
    from cdp_assets.identity.rules import load_identity_rules
    from cdp_resources import WarehouseResource

    rules = load_identity_rules(config_dir() / "identity.yaml")
    with recorded_graph(WarehouseResource()) as graph:
        print("\n".join(explain_with(graph, a, b, rules)))
    return 0


def _identifier(text: str) -> tuple[str, str] | None:
    kind, _, value = text.partition(":")
    if not value:
        print("expected TYPE:VALUE, e.g. email:ann@example.com", file=sys.stderr)
        return None
    return kind, value


def _erase(args) -> int:
    from cdp_assets.privacy.erase import request_erasure
    from cdp_assets.privacy.jobs import process_erasure_requests
    from cdp_assets.runner import run_everything
    from cdp_resources import WarehouseResource

    identifier = _identifier(args.identifier)
    if identifier is None:
        return 2
    request_id = request_erasure(data_dir(), *identifier)
    print(f"erasure request {request_id} recorded")
    if not args.now:
        print("the privacy job (sensor erasure_requests_sensor) processes it; or run `cdp erase --now`")
        return 0
    for audit in process_erasure_requests(WarehouseResource(), log=print):
        print(json.dumps(audit, indent=2))
    return 0 if run_everything(progress=print).success else 1


def _export(args) -> int:
    from cdp_assets.identity.rules import load_identity_rules
    from cdp_assets.privacy.erase import person_document, person_reads_on
    from cdp_resources import WarehouseResource

    identifier = _identifier(args.identifier)
    if identifier is None:
        return 2
    with person_reads_on(WarehouseResource()) as reads:
        document = person_document(reads, *identifier, load_identity_rules(config_dir() / "identity.yaml"))
    print(json.dumps(document, indent=2, default=_json_default))
    return 0 if document["person_ids"] else 1


def _tracking_plan_sync(args) -> int:
    from cdp_assets.events.rules import EXPECTATIONS_DIR, load_suite
    from cdp_assets.events.tracking_plan import load_tracking_plan, sync_events_suite

    suite = sync_events_suite(load_tracking_plan(config_dir() / "tracking_plan.yaml"), load_suite("events"))
    path = EXPECTATIONS_DIR / "events.json"
    path.write_text(json.dumps(suite, indent=2) + "\n")
    print(f"{path}: {len(suite['meta']['typed_properties'])} property rules from config/tracking_plan.yaml")
    return 0


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
