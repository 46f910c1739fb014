"""Command line: serve metrics (default), ``check-config FILE``, ``report``."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Sequence

from exporter import __version__, bundle, config, logs
from exporter.sources.disk import DiskReader
from exporter.sources.engine import Engine, EngineError
from exporter.sources.inventory import EngineReader

log = logging.getLogger("exporter")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config.file", dest="config_file", metavar="FILE",
                        help="YAML configuration file; its keys are the flag names "
                             f"(env {config.ENV_PREFIX}CONFIG_FILE).")
    for s in config.flag_settings():
        shown = s.show(s.default) if s.default is not None else ""
        default = f" (default: {shown})" if shown else ""
        common.add_argument(s.flag, dest=s.key, metavar=s.metavar, default=None,
                            help=f"{s.help}{default} [env {s.env}]")
    parser = argparse.ArgumentParser(
        prog="docker-hygiene-exporter", parents=[common],
        description="Prometheus exporter for Docker disk usage, image age and staleness.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", metavar="FILE")
    sub.add_parser("report", parents=[common],
                   help="print disk usage, oldest images and stale containers, then exit")
    bundle.add_parser(sub)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, str]:
    return {s.key: getattr(args, s.key) for s in config.flag_settings()
            if getattr(args, s.key, None) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "bundle":
        return bundle.run(args)
    if args.command == "check-config":
        try:
            config.build(environ={}, config_file=args.file)
        except config.ConfigError as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 1
        print(f"{args.file}: ok")
        return 0
    try:
        cfg = config.build(_flags(args), config_file=args.config_file)
    except config.ConfigError as exc:
        print(f"docker-hygiene-exporter: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, cfg.log_format)
    if args.command == "report":
        return report(cfg)
    return serve(cfg)


def report(cfg: config.Config) -> int:
    from exporter.report import render

    try:
        engine = EngineReader(Engine(cfg.docker_host, cfg.docker_timeout)).read()
    except EngineError as exc:
        print(f"cannot read the Docker Engine at {cfg.docker_host}: {exc}", file=sys.stderr)
        return 1
    try:
        disk = DiskReader(Engine(cfg.docker_host, cfg.collector_disk_timeout)).read()
    except EngineError as exc:
        log.warning("/system/df failed: %s", exc)
        disk = None
    sys.stdout.write(render(engine, disk))
    return 0


def _limit_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena; with the registry
    workers that fragments into hundreds of MB of RSS on large hosts (369 MB against 153 MB
    at 20,000 tags, BENCHMARKS.md). Two arenas, as MALLOC_ARENA_MAX=2 would set. A libc
    without mallopt (musl) is left alone."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX


def serve(cfg: config.Config) -> int:
    from exporter.app import Exporter
    from exporter.web.server import Server

    _limit_malloc_arenas()
    exporter = Exporter(cfg)
    try:
        server = Server(exporter)
    except OSError as exc:
        log.error("cannot listen on %s: %s", cfg.web_listen_address, exc.strerror or exc)
        return 1
    exporter.start()
    log.info("listening on %s, metrics at %s, docker host %s, version %s",
             cfg.web_listen_address, cfg.web_telemetry_path, cfg.docker_host, __version__)
    # The server's loop runs in this thread and returns on the first of these signals.
    signum = server.run((signal.SIGTERM, signal.SIGINT))
    log.info("received %s, shutting down", signal.Signals(signum).name)
    exporter.stop()
    log.info("stopped")
    logging.shutdown()
    # A loop may still wait on a slow Docker or registry call; with the state store closed
    # there is nothing left to flush, so do not let it hold the process (SIGTERM must be quick).
    os._exit(0)
