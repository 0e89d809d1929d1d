"""The ``milterd`` command: run, scan, learn, configtest, configdump, bench …"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from engine import Config, ConfigError, Engine, Envelope, ScanRequest, ScanResult
from engine.config import DEFAULT_SOURCE, Key
from milterd.http import CONTROLLER_SECTION, HTTP_SECTION, HttpSettings
from milterd.settings import MILTER_SECTION, MilterSettings
from milterd.supervisor import WORKERS_SECTION

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["main"]

DEFAULT_CONFIG_DIR = "/etc/milterd"
EXTRA_SECTIONS = {
    "milter": MILTER_SECTION,
    "http": HTTP_SECTION,
    "controller": CONTROLLER_SECTION,
    "workers": WORKERS_SECTION,
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config-dir",
        metavar="DIR",
        default=DEFAULT_CONFIG_DIR,
        help=f"directory holding milterd.toml, local.d/ and override.d/ "
        f"(default {DEFAULT_CONFIG_DIR}; missing means the shipped defaults)",
    )
    common.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="override [logging] level",
    )

    parser = argparse.ArgumentParser(
        prog="milterd",
        description="A Postfix milter-first mail filter: scores each message and answers with a "
        "rung of the action ladder (accept, greylist, add header, rewrite subject, "
        "soft reject, reject).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="serve the milter (127.0.0.1:11332 by default)",
        description="Serve the milter protocol until SIGTERM/SIGINT, then drain. "
        "SIGHUP reloads the configuration (a refused one is logged and changes nothing).",
    )
    run.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        type=_listen_arg,
        help="HOST:PORT, [IPv6]:PORT or unix:/path (repeatable; overrides [milter] listen)",
    )
    for flag, section in (("--http-listen", "http"), ("--controller-listen", "controller")):
        run.add_argument(
            flag,
            action="append",
            metavar="ADDR",
            type=_http_listen_arg,
            help=f"as --listen, for the {'scan API' if section == 'http' else 'controller'} "
            f"(overrides [{section}] listen; 'off' for none)",
        )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="scanning worker processes (overrides [workers] count; default one per core); "
        "0 is --single",
    )
    run.add_argument(
        "--single",
        action="store_true",
        help="one process, no supervisor: milter, scan API and controller in this process",
    )

    scan = sub.add_parser(
        "scan",
        parents=[common],
        help="scan message files in-process",
        description="Scan RFC 5322 files (or every file in a directory) with the "
        "engine and print symbols, score and action per message.",
    )
    scan.add_argument(
        "paths", nargs="+", metavar="FILE|DIR", help="message files or directories ('-' = stdin)"
    )
    scan.add_argument(
        "--json", action="store_true", help="one /checkv2-shaped JSON object per line"
    )
    scan.add_argument("--ip", help="client address to pretend the message came from")
    scan.add_argument("--helo", help="HELO name to pretend")
    scan.add_argument("--hostname", help="client rDNS name to pretend")
    scan.add_argument("--from", dest="mail_from", help="envelope sender")
    scan.add_argument("--rcpt", action="append", default=[], help="envelope recipient (repeatable)")
    scan.add_argument(
        "--connect",
        metavar="HOST:PORT",
        type=_listen_arg,
        help="scan with a running daemon's scan API (/checkv2) instead of in-process",
    )
    scan.add_argument("--timeout", type=float, default=60.0, help="with --connect: seconds")

    pw = sub.add_parser(
        "pw",
        help="make a password hash for [controller] password / enable_password",
        description="Ask for a password (twice) and print its scrypt hash, for "
        "[controller] password or enable_password.",
    )
    pw.add_argument(
        "--stdin", action="store_true", help="read the password from the first line of stdin"
    )
    from milterd.client import add_connection_arguments

    stat = sub.add_parser(
        "stat",
        parents=[common],
        help="a running daemon's statistics (controller /stat)",
        description="Print what a running daemon scanned and learned since it started.",
    )
    add_connection_arguments(stat, "controller")
    status = sub.add_parser(
        "status",
        parents=[common],
        help="a running daemon's processes: workers, uptime, reloads, last errors",
        description="Ask a running daemon's controller (/status) which workers serve (pid, "
        "uptime, messages, restarts), its uptime, configuration generation and last errors.",
    )
    add_connection_arguments(status, "controller")
    hist = sub.add_parser(
        "history",
        parents=[common],
        help="a running daemon's recent scans (controller /history)",
        description="Print a running daemon's recent scans, newest first.",
    )
    add_connection_arguments(hist, "controller")
    hist.add_argument("--limit", type=int, default=20, help="rows (default 20)")

    sub.add_parser(
        "configtest",
        parents=[common],
        help="check the configuration, print every problem",
        description="Load and validate the configuration; exit 1 listing every problem "
        "(file, line, key) if it is refused.",
    )
    dump = sub.add_parser(
        "configdump",
        parents=[common],
        help="print the effective configuration",
        description="Print the effective configuration as TOML-like text.",
    )
    dump.add_argument("section", nargs="?", help="only this section")
    dump.add_argument("--sources", action="store_true", help="say which file set each value")

    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="measure throughput and CPU per message",
        description="Drive a milter over the protocol with N concurrent connections "
        "(or the engine in-process) and report messages/s, CPU "
        "seconds per message, p50/p99 latency and peak RSS.",
    )
    from milterd.bench import add_arguments

    add_arguments(bench)
    corpus = sub.add_parser(
        "corpustest",
        parents=[common],
        help="score labelled ham and spam; report false positives, detection and ROC AUC",
        description="Scan labelled ham and spam with the whole engine (and this config "
        "directory) and report per class the actions, false positives and negatives, ROC "
        "AUC and the symbols that fire most. --train-* first trains a throw-away store.",
    )
    from milterd.corpustest import add_arguments as corpus_arguments

    corpus_arguments(corpus)
    learn = sub.add_parser(
        "learn",
        parents=[common],
        help="teach the statistics (Bayes) that messages are spam or ham",
        description="Learn message files as spam or ham, in-process with the configured "
        "store, or through a running daemon's controller (--connect). A message learned "
        "already as this class is refused; one learned as the other class is moved.",
    )
    from milterd.learn import add_arguments as learn_arguments

    learn_arguments(learn)
    keygen = sub.add_parser(
        "dkim-keygen",
        help="make a DKIM key and print its DNS record",
        description="Write a new DKIM private key as DIR/DOMAIN.SELECTOR.key (mode 0600; "
        "never overwritten) and print the TXT record to publish at "
        "SELECTOR._domainkey.DOMAIN.",
    )
    from milterd.dkim_keygen import add_arguments as keygen_arguments

    keygen_arguments(keygen)
    return parser


def _listen_arg(value: str) -> str:
    """``--listen`` gets the same check as ``[milter] listen``."""
    key = MILTER_SECTION.keys["listen"]
    problem = key.check(value) if isinstance(key, Key) and key.check else None
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _http_listen_arg(value: str) -> str:
    """An HTTP listen address, or ``off`` (only where a listener may be switched off)."""
    if value == "off":
        return value
    from milterd.http.settings import check_listen

    problem = check_listen(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dkim-keygen":  # needs no configuration
        from milterd.dkim_keygen import run as dkim_keygen

        return dkim_keygen(args)
    if args.command == "pw":
        return _pw(args.stdin)
    try:
        config = Engine.load_config(args.config_dir, EXTRA_SECTIONS)
    except ConfigError as exc:
        return _report_config_error(exc)
    _setup_logging(args.log_level or str(config.section("logging")["level"]), config)
    command = args.command
    if command == "configtest":
        return _configtest(config)
    if command == "configdump":
        return _configdump(config, args.section, args.sources)
    if command == "corpustest":
        from milterd.corpustest import run as corpustest

        return corpustest(config, args)
    if command == "learn":
        from milterd.learn import run as learn

        try:
            return learn(config, args)
        except ConfigError as exc:
            return _report_config_error(exc)
    if command == "run" and not (args.single or args.workers == 0):
        return _run_supervised(config, args)
    if command in ("stat", "history", "status") or (command == "scan" and args.connect):
        return _client(config, args)
    try:
        engine = Engine.from_config(config)
    except ConfigError as exc:
        return _report_config_error(exc)
    if command == "run":
        return _run(engine, config, args)
    if command == "scan":
        return trio.run(_scan_files, engine, args)
    from milterd.bench import run_bench

    return run_bench(engine, config, args)


def _setup_logging(level: str, config: Config | None = None) -> None:
    from milterd.logging import LogSettings, setup_logging

    section = config.section("logging") if config is not None else {}
    setup_logging(LogSettings.from_section(section), level)


def _report_config_error(exc: ConfigError) -> int:
    print("milterd: configuration refused:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def _configtest(config: Config) -> int:
    try:
        Engine.from_config(config)
    except ConfigError as exc:
        return _report_config_error(exc)
    where = (
        config.config_dir
        if config.config_dir and config.config_dir.is_dir()
        else "shipped defaults"
    )
    print(f"milterd: configuration OK ({where})")
    return 0


def _configdump(config: Config, section: str | None, sources: bool) -> int:
    data = config.data
    if section is not None:
        if section not in data:
            print(
                f"milterd: no section {section!r}; sections: {', '.join(sorted(data))}",
                file=sys.stderr,
            )
            return 1
        data = {section: data[section]}
    for line in _dump_table(data, (), config if sources else None):
        print(line)
    return 0


def _dump_table(
    table: dict[str, object], path: tuple[str, ...], config: Config | None
) -> Iterator[str]:
    # None is a key left unset ([settings.X] authenticated); TOML cannot say null.
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        yield f"\n[{'.'.join(path)}]"
    for key, value in scalars.items():
        line = f"{key} = {json.dumps(value, ensure_ascii=False)}"
        if config is not None:
            source = config.source_of((*path, key))
            line += f"  # {source}" if source != DEFAULT_SOURCE else "  # default"
        yield line
    for key, value in tables.items():
        assert isinstance(value, dict)
        yield from _dump_table(value, (*path, key), config)


def _run(engine: Engine, config: Config, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from milterd.daemon import run_daemon

    def load_engine() -> Engine:  # what SIGHUP does: the same directory, read afresh
        return Engine.from_config(Engine.load_config(args.config_dir, EXTRA_SECTIONS))

    settings = MilterSettings.from_section(config.section("milter"))
    http = HttpSettings.from_config(config)
    if args.http_listen:
        http = replace(http, listen=_listen_override(args.http_listen))
    if args.controller_listen:
        controller = replace(http.controller, listen=_listen_override(args.controller_listen))
        http = replace(http, controller=controller)
    listen = args.listen
    try:
        trio.run(
            lambda: run_daemon(engine, settings, listen=listen, load_engine=load_engine, http=http)
        )
    except OSError as exc:
        print(f"milterd: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_supervised(config: Config, args: argparse.Namespace) -> int:
    """``milterd run``: bind here, then a supervisor forks the workers (``milterd.supervisor``)."""
    from dataclasses import replace

    from milterd.supervisor import (
        Supervisor,
        bind_sockets,
        default_worker_count,
        drop_privileges,
    )

    def load_config() -> Config:  # what every worker and every reload reads afresh
        return Engine.load_config(args.config_dir, EXTRA_SECTIONS)

    settings = MilterSettings.from_section(config.section("milter"))
    http = HttpSettings.from_config(config)
    if args.http_listen:
        http = replace(http, listen=_listen_override(args.http_listen))
    if args.controller_listen:
        controller = replace(http.controller, listen=_listen_override(args.controller_listen))
        http = replace(http, controller=controller)
    workers = config.section("workers")
    count = args.workers or int(workers["count"]) or default_worker_count()  # type: ignore[call-overload]
    bound: list[list[object]] = []
    try:
        # The order of the single-process daemon: HTTP first, so whoever sees the milter
        # port open finds the others open too.
        scan = bind_sockets(http.listen, http.socket_mode)
        bound.append(list(scan))
        controller_socks = bind_sockets(http.controller.listen, http.controller.socket_mode)
        bound.append(list(controller_socks))
        milter = bind_sockets(args.listen or settings.listen, settings.socket_mode)
    except OSError as exc:
        for group in bound:
            for sock in group:
                sock.close()  # type: ignore[attr-defined]
        print(f"milterd: cannot listen: {exc}", file=sys.stderr)
        return 1
    unix_paths = [
        str(s.getsockname()) for s in (*scan, *controller_socks, *milter) if s.family == 1
    ]
    drop_privileges(str(workers["user"]), str(workers["group"]), unix_paths)
    supervisor = Supervisor(
        load_config,
        workers=count,
        milter=milter,
        scan=scan,
        controller=controller_socks,
        drain_seconds=float(workers["drain_timeout"]),  # type: ignore[arg-type]
        start_timeout=float(workers["start_timeout"]),  # type: ignore[arg-type]
    )
    return supervisor.run()


def _listen_override(values: list[str]) -> tuple[str, ...]:
    return () if "off" in values else tuple(values)


def _pw(from_stdin: bool) -> int:
    import getpass

    from milterd.http import hash_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("milterd pw: the passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("milterd pw: an empty password is no password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _client(config: Config, args: argparse.Namespace) -> int:
    from milterd import client

    if args.command == "scan":
        files = [str(p) for p in iter_message_files(args.paths)]
        return trio.run(client.scan_files, args, files)
    if not args.connect:
        args.connect = client.default_address(config, "controller", "127.0.0.1:11334")
    if args.command == "stat":
        return trio.run(client.stat, args)
    if args.command == "status":
        from milterd.status import show_status

        return trio.run(show_status, args)
    return trio.run(client.history, args)


def iter_message_files(paths: Sequence[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


async def _scan_files(engine: Engine, args: argparse.Namespace) -> int:
    envelope = Envelope(
        client_addr=args.ip,
        helo=args.helo,
        client_name=args.hostname,
        mail_from=args.mail_from,
        rcpts=tuple(args.rcpt),
    )
    from milterd.learn import explain, explanation_json, format_explanation

    status = 0
    for path in iter_message_files(args.paths):
        try:
            raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        except OSError as exc:
            print(f"milterd: {path}: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        result = await engine.scan(ScanRequest(envelope=envelope, raw=raw))
        # The "why" of Bayes: its probability and the tokens that weighed most.
        bayes = await explain(engine, raw, envelope)
        if args.json:
            extra = {} if bayes is None else {"bayes": explanation_json(bayes)}
            print(json.dumps({"file": str(path), **result.to_json(), **extra}, ensure_ascii=False))
        else:
            print(_format_result(str(path), result))
            if bayes is not None:
                print(format_explanation(bayes))
    await engine.aclose()
    return status


def _format_result(name: str, result: ScanResult) -> str:
    lines = [
        f"{name}: {result.action.value} (score {result.score:.2f} / {result.required_score:.2f})"
    ]
    for sym in sorted(result.symbols.values(), key=lambda s: (-abs(s.score), s.name)):
        options = f" [{', '.join(sym.options)}]" if sym.options else ""
        lines.append(f"  {sym.name:<28} {sym.score:6.2f}  {sym.description}{options}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
