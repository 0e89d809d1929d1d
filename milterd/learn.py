"""``milterd learn`` and the Bayes part of ``milterd scan``.

``milterd learn spam|ham FILE|DIR...`` teaches the statistics in-process, with the
configuration's store (the SQLite file the daemon uses, or its Redis), or through a
running daemon's controller with ``--connect`` (``POST /learnspam``, ``/learnham``).
Each message goes through the learn cache: learning it again as the same class is
refused ("already learned"), as the other class moves it. Exit status 0 when every
message was learned or had been already, as learning scripts (Dovecot's IMAPSieve)
expect; 1 when a file could not be read, a message was refused for another reason (too
few tokens, Bayes switched off), or the store could not answer.

A message file carries no SMTP envelope; as ``corpustest`` does, it is rebuilt from the
Received header the receiving MTA wrote, so that the client facts the tokenizer reads at
delivery are learned too. Its Delivered-To gives the recipient, whose statistics are
learned when ``[bayes] per_user`` is on; ``--user`` names another.

``explain``/``format_explanation`` are ``milterd scan``'s "why": the probability and the
tokens that weighed most, by name.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from engine import Engine, ScanRequest
from engine.mime.message import ParsedMessage
from engine.modules.bayes import Bayes, Explanation
from engine.storage import StoreError
from milterd.corpustest import envelope_from_received, iter_messages

if TYPE_CHECKING:
    import argparse

    from engine import Envelope
    from engine.config import Config

__all__ = ["add_arguments", "explain", "format_explanation", "run"]

_TOP_TOKENS = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from milterd.client import add_connection_arguments

    parser.add_argument("kind", choices=("spam", "ham"), metavar="spam|ham", help="the class")
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="FILE|DIR",
        help="message files, or directories of them (recursively); '-' reads stdin",
    )
    parser.add_argument(
        "--user",
        help="with [bayes] per_user: learn into this recipient's statistics "
        "(default: the message's Delivered-To)",
    )
    add_connection_arguments(parser, "controller, instead of learning in-process")


def run(config: Config, args: argparse.Namespace) -> int:
    is_spam = args.kind == "spam"
    if args.connect:
        from milterd import client

        files = [str(p) for p in _files(args.paths)]
        args.rcpt = [args.user] if args.user else []
        return trio.run(lambda: client.learn_files(args, files, is_spam=is_spam))
    engine = Engine.from_config(config)
    return trio.run(_learn_files, engine, args, is_spam)


def _files(paths: list[str]) -> list[str]:
    out: list[str] = []
    for name in paths:
        if name == "-" or not Path(name).is_dir():
            out.append(name)  # a missing file is reported when it is read
        else:
            out.extend(str(p) for p in iter_messages([name]))
    return out


async def _learn_files(engine: Engine, args: argparse.Namespace, is_spam: bool) -> int:
    status = 0
    counts = {"learned": 0, "already": 0, "refused": 0, "failed": 0}
    try:
        for name in _files(args.paths):
            try:
                raw = sys.stdin.buffer.read() if name == "-" else await trio.Path(name).read_bytes()
            except OSError as exc:
                print(f"milterd: {name}: {exc.strerror}", file=sys.stderr)
                counts["failed"] += 1
                status = 1
                continue
            envelope = envelope_from_received(raw)
            if args.user:
                envelope = dataclasses.replace(envelope, rcpts=(args.user,))
            try:
                result = await engine.learn(
                    ScanRequest(envelope=envelope, raw=raw), is_spam=is_spam
                )
            except StoreError as exc:
                print(f"milterd: {name}: not learned: {exc}", file=sys.stderr)
                counts["failed"] += 1
                return 1
            already = not result.learned and "already" in result.message
            counts["learned" if result.learned else "already" if already else "refused"] += 1
            if not result.learned and not already:
                status = 1
            if args.json:
                line = {"file": name, "learned": result.learned, "message": result.message}
                print(json.dumps(line, ensure_ascii=False))
            else:
                print(f"{name}: {result.message}")
    finally:
        await engine.aclose()
        if sum(counts.values()) > 1 and not args.json:
            summary = ", ".join(f"{n} {what}" for what, n in counts.items())
            print(f"milterd learn: {summary}", file=sys.stderr)
    return status


# -- milterd scan: why ---------------------------------------------------------------------


async def explain(engine: Engine, raw: bytes, envelope: Envelope) -> Explanation | str | None:
    """Bayes' view of a message for ``milterd scan``: its explanation, a string saying why
    there is none (the store did not answer), or None when Bayes is switched off."""
    bayes = next((m for m in engine.modules if isinstance(m, Bayes)), None)
    if bayes is None:
        return None
    try:
        return await bayes.explain(ParsedMessage.from_bytes(raw), envelope, _TOP_TOKENS)
    except StoreError as exc:
        return f"store unavailable: {exc}"


def explanation_json(found: Explanation | str) -> dict[str, object]:
    return {"error": found} if isinstance(found, str) else found.to_json()


def format_explanation(found: Explanation | str) -> str:
    if isinstance(found, str):
        return f"  bayes: {found}"
    learned = f"learned {found.learns[0]} spam, {found.learns[1]} ham"
    owner = f" for {found.owner}" if found.owner else ""
    if found.probability is None:
        why = {
            "min_learns": "too few messages learned",
            "min_tokens": f"too few tokens ({found.tokens_total})",
            "no_evidence": "no token it knows well enough",
        }.get(found.silent or "", found.silent or "")
        return f"  bayes: silent, {why} ({learned}{owner})"
    p = found.probability
    verdict = f"{p:.2%} spam" if p >= 0.5 else f"{1 - p:.2%} ham"
    lines = [
        f"  bayes: {verdict} ({found.tokens_used} of {found.tokens_total} tokens used; "
        f"{learned}{owner})",
        f"    {'token':<44} {'spam':>6} {'ham':>6}  f(t)",
    ]
    for token in found.top:
        name = token.name if len(token.name) <= 44 else token.name[:43] + "…"
        lines.append(f"    {name:<44} {token.spam:6d} {token.ham:6d}  {token.probability:.3f}")
    return "\n".join(lines)
