"""Command line: serve metrics (default), ``check-config FILE``, ``report``, ``bundle``.

The settings' flags may stand before or after the command, for every command."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

from exporter import __version__, bundle, config, logs

log = logging.getLogger("exporter")


def _setting_flags(parser: argparse.ArgumentParser, given: dict[str, str],
                   shown: bool = True) -> None:
    """The settings' flags, on the main parser and on each command's, so they may stand
    before or after the command. They record into ``given`` instead of the namespace: a
    command's parser fills a namespace of its own whose defaults would overwrite the values
    given before the command, and a flag given twice is refused instead of half-dropped."""

    class Once(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: object, option_string: str | None = None) -> None:
            if self.dest in given:
                parser.error(f"{option_string} is given twice")
            given[self.dest] = str(values)

    def add(flag: str, dest: str, metavar: str, text: str) -> None:
        parser.add_argument(flag, dest=dest, metavar=metavar, action=Once,
                            default=argparse.SUPPRESS,
                            help=text if shown else argparse.SUPPRESS)

    add("--config.file", "config.file", "FILE", "YAML configuration file; its keys are the "
        f"flag names (env {config.ENV_PREFIX}CONFIG_FILE).")
    for s in config.flag_settings():
        value = s.show(s.default) if s.default is not None else ""
        default = f" (default: {value})" if value else ""
        add(s.flag, s.key, s.metavar, f"{s.help}{default} [env {s.env}]")


def _parser(given: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docker-hygiene-exporter", allow_abbrev=False,
        usage="%(prog)s [FLAGS] [COMMAND] [FLAGS]",
        description="Prometheus exporter for Docker disk usage, image age and staleness. "
                    "Settings flags may stand before or after the command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _setting_flags(parser, given)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                prog="docker-hygiene-exporter")
    check = sub.add_parser(
        "check-config", allow_abbrev=False, usage="%(prog)s [FLAGS] [FILE]",
        help="check a configuration file (with the environment and flags) and exit",
        description="Check the configuration start-up would use: the file, DOCKER_HYGIENE_* "
                    "variables and the flags given. Prints every error, one line each as "
                    "FILE: key: reason, and exits 1 when there is any.")
    check.add_argument("file", metavar="FILE", nargs="?",
                       help="the file to check (or --config.file)")
    _setting_flags(check, given)
    report = sub.add_parser(
        "report", allow_abbrev=False, usage="%(prog)s [FLAGS] [--format text|json] [--check]",
        help="print disk usage, volumes, containers needing attention (stale, drifted, newer "
             "version), drift, the oldest images and dangling images, then exit")
    report.add_argument(
        "--format", choices=("text", "json"), default="text",
        help="text tables (default) or JSON, the same document as /status.json")
    report.add_argument(
        "--check", action="store_true",
        help="run one upstream check cycle (and one newer-version cycle when versions are "
             "enabled) now, instead of reading what the running exporter saved in its state "
             "store")
    _setting_flags(report, given)
    bundle.add_parser(sub)
    # bundle reads no configuration: its parser knows the flags only to refuse them clearly.
    sub.choices["bundle"].allow_abbrev = False
    _setting_flags(sub.choices["bundle"], given, shown=False)
    return parser


def _error(message: str) -> int:
    print(f"docker-hygiene-exporter: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    given: dict[str, str] = {}
    args = _parser(given).parse_args(argv)
    config_file = given.pop("config.file", None)
    if args.command == "bundle":
        if config_file is not None or given:
            flag = "--config.file" if config_file is not None else \
                config.SETTINGS_BY_KEY[next(iter(given))].flag
            return _error(f"bundle: {flag} does not apply: bundle writes the packaged files "
                          "and reads no configuration")
        return bundle.run(args)
    if args.command == "check-config":
        return check_config(args.file, config_file, given)
    cfg, errors = config.load(given, config_file=config_file)
    if cfg is None:
        for err in errors:
            origin = f" (from {err.origin})" if err.origin not in err.reason else ""
            print(f"docker-hygiene-exporter: configuration error: {err}{origin}",
                  file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, cfg.log_format)
    if args.command == "report":
        return report(cfg, args.format, args.check)
    return serve(cfg)


def check_config(file: str | None, config_file: str | None, flags: dict[str, str]) -> int:
    """Every error in the file (and in the environment and flags), one line each."""
    if file is not None and config_file is not None and file != config_file:
        return _error("check-config: give the file as FILE or as --config.file, not both")
    path = file or config_file or os.environ.get(config.ENV_PREFIX + "CONFIG_FILE")
    if not path:
        return _error("check-config: which file? Give FILE or --config.file")
    _, errors = config.load(flags, config_file=path)
    for err in errors:
        print(f"{err.origin}: {err}", file=sys.stderr)
    if errors:
        return 1
    print(f"{path}: ok")
    return 0


def report(cfg: config.Config, output: str = "text", check: bool = False) -> int:
    from exporter import report as reporting
    from exporter.status import dumps

    try:
        status = reporting.collect(cfg, check)
    except reporting.ReportError as exc:
        print(f"docker-hygiene-exporter report: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(dumps(status) if output == "json" else reporting.render(status))
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
    # Modules, classes and functions live as long as the process: out of the cyclic
    # collector's sight, a full collection (which holds every thread) walks only what the
    # sources read, not the 40,000 objects of the imports as well.
    gc.freeze()
    try:
        server = Server(exporter)
    except OSError as exc:
        log.error("cannot listen on %s: %s", cfg.web_listen_address, exc.strerror or exc)
        return 1
    exporter.start()
    log.info("listening on %s, metrics at %s, %s %s, version %s",
             cfg.web_listen_address, cfg.web_telemetry_path,
             "CRI endpoint" if cfg.cri_endpoint else "docker host",
             cfg.cri_endpoint or cfg.docker_host, __version__)
    # The server's loop runs in this thread and returns on the first of these signals.
    signum = server.run((signal.SIGTERM, signal.SIGINT))
    log.info("received %s, shutting down", signal.Signals(signum).name)
    exporter.stop()
    log.info("stopped")
    logging.shutdown()
    # A loop may still wait on a slow Docker or registry call; with the state store closed
    # there is nothing left to flush, so do not let it hold the process (SIGTERM must be quick).
    os._exit(0)
