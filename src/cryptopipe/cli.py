"""The one command line: ``cryptopipe <stage> --interval-start ... --interval-end ...`` and friends.

Exit codes are documented in docs/architecture.md and defined in ``cryptopipe.core.errors.ExitCode``.
Stage modules are imported lazily, so the ingest image never imports pandas or Great Expectations.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from cryptopipe import __version__
from cryptopipe.core.config import Settings, load_settings
from cryptopipe.core.errors import ConfigError, ExitCode, PipelineError
from cryptopipe.core.layout import Interval, parse_utc
from cryptopipe.core.logging import register_secret, setup_logging
from cryptopipe.core.stage import StageFn, execute_stage

# stage name -> "module:function"; the function takes a StageContext.
STAGES: dict[str, str] = {
    "ingest": "cryptopipe.ingest.stage:run",
    "validate": "cryptopipe.validate.stage:run",
    "transform": "cryptopipe.transform.stage:run",
    "archive": "cryptopipe.archive.stage:run",
}
STAGE_ORDER = tuple(STAGES)


def load_stage(name: str) -> StageFn:
    module_name, func = STAGES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"stage {name!r} cannot start: module {exc.name!r} is not installed "
            f"(install the stage's extra: pip install 'cryptopipe[{name}]')"
        ) from exc
    fn: StageFn = getattr(module, func)
    return fn


def _add_interval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval-start", required=True, help="data interval start, ISO-8601 UTC")
    parser.add_argument("--interval-end", required=True, help="data interval end, ISO-8601 UTC")


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: $CRYPTOPIPE_CONFIG, else embedded defaults)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptopipe", description="Stage programs of the crypto market-data pipeline."
    )
    parser.add_argument("--version", action="version", version=f"cryptopipe {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in STAGE_ORDER:
        stage = sub.add_parser(name, help=f"run the {name} stage on one hourly interval")
        _add_interval_args(stage)
        _add_config_arg(stage)

    run = sub.add_parser("run", help="run the stages in order, in one process, on one or more hourly intervals")
    run.add_argument("--start", help="first interval start (ISO-8601 UTC); with --end, every hour in [start, end)")
    run.add_argument("--end", help="end of the range (ISO-8601 UTC, exclusive)")
    run.add_argument("--last", type=int, help="the last N completed hourly intervals before now")
    run.add_argument("--stages", default=",".join(STAGE_ORDER), help="comma list of stages (default: all)")
    run.add_argument(
        "--batch",
        action="store_true",
        help="range mode: each stage over the whole range at once where it has one (docs/batch.md); "
        "ingest still runs per interval",
    )
    run.add_argument(
        "--daily",
        action="store_true",
        help="with --batch, for backfills of whole UTC days: one object per day per dataset instead of one per hour "
        "(docs/batch.md, daily layout); a day is the unit: it succeeds or fails as a whole",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="with --batch: split validate's and transform's range over N processes (whole days each); "
        "use the node's cores for a long backfill (default 1)",
    )
    _add_config_arg(run)

    backfill = sub.add_parser("backfill", help="fill validated history from /coins/{id}/market_chart/range")
    backfill.add_argument("--start", required=True, help="history start (ISO-8601 UTC)")
    backfill.add_argument("--end", required=True, help="history end (ISO-8601 UTC, exclusive)")
    backfill.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    _add_config_arg(backfill)

    replay = sub.add_parser("replay-server", help="serve a CoinGecko-compatible replay of market data")
    try:
        from cryptopipe.replay import cli as replay_cli

        replay_cli.add_arguments(replay)
    except ImportError:  # the replay package is optional in stage images
        replay.set_defaults(replay_missing=True)

    config = sub.add_parser("config", help="show or check the effective configuration")
    config.add_argument("action", choices=["show", "check"])
    _add_config_arg(config)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    for secret in (settings.api.key, settings.alerts.slack_webhook_url, settings.warehouse.url):
        if secret is not None:
            register_secret(secret.get_secret_value())
    # The warehouse password alone too, raw and URL-decoded: drivers and errors may show it outside the URL.
    password = urlsplit(settings.warehouse.url.get_secret_value()).password
    if password:
        register_secret(password)
        register_secret(unquote(password))
    return settings


def _run_stage(args: argparse.Namespace, log: logging.Logger) -> int:
    interval = Interval.parse(args.interval_start, args.interval_end)
    settings = _settings(args)
    fn = load_stage(args.command)
    execute_stage(args.command, fn, settings, interval, log)
    return ExitCode.OK


def _run_pipeline(args: argparse.Namespace, log: logging.Logger) -> int:
    from cryptopipe.runner import intervals_from_args, run_pipeline, run_pipeline_batch, run_pipeline_daily

    settings = _settings(args)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {unknown}; choose from {list(STAGE_ORDER)}")
    intervals = intervals_from_args(args.start, args.end, args.last)
    if args.workers != 1 and not args.batch:
        raise ConfigError("--workers splits a range: it needs --batch")
    if args.daily and not args.batch:
        raise ConfigError("--daily is a layout of range mode: it needs --batch")
    if args.daily:
        summary = run_pipeline_daily(settings, intervals, stages, log, workers=args.workers)
    elif args.batch:
        summary = run_pipeline_batch(settings, intervals, stages, log, workers=args.workers)
    else:
        summary = run_pipeline(settings, intervals, stages, log)
    print(summary.render(), file=sys.stderr)
    return summary.exit_code


def _run_backfill(args: argparse.Namespace, log: logging.Logger) -> int:
    from cryptopipe.ingest.backfill import run_backfill

    settings = _settings(args)
    start, end = parse_utc(args.start, "--start"), parse_utc(args.end, "--end")
    run_backfill(settings, start, end, log, progress=not args.no_progress)
    return ExitCode.OK


def _run_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.action == "show":
        print(json.dumps(settings.public_dict(), indent=2))
    else:
        print("configuration is valid", file=sys.stderr)
    return ExitCode.OK


def _dispatch(args: argparse.Namespace, log: logging.Logger) -> int:
    if args.command in STAGES:
        return _run_stage(args, log)
    if args.command == "run":
        return _run_pipeline(args, log)
    if args.command == "backfill":
        return _run_backfill(args, log)
    if args.command == "config":
        return _run_config(args)
    if args.command == "replay-server":
        if getattr(args, "replay_missing", False):
            raise ConfigError("the replay server is not part of this installation")
        from cryptopipe.replay import cli as replay_cli

        return replay_cli.run(args)
    raise ConfigError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors are config errors (2), --help/--version are 0
        return int(exc.code or 0)
    log = setup_logging(args.command, args.log_level)
    try:
        return int(_dispatch(args, log))
    except PipelineError as exc:
        log.error(exc.message, extra={"exit_code": int(exc.exit_code), "error_type": type(exc).__name__})
        return int(exc.exit_code)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception:
        log.exception("internal error (a bug): please report it with this log")
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
