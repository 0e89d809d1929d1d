"""``milterd corpustest``: how a configuration does on labelled mail.

Scans a ham set and a spam set with the whole engine (optionally after training a fresh,
throw-away statistics store on separate sets: an SQLite file in a scratch directory,
whatever ``[store]`` says) and reports what an administrator needs to
judge a change: the action distribution per class, false positives (ham at add header or
worse) and false negatives, ROC AUC over the scores, the spam detection rate at the score
where ham false positives are 0.1 % and 1 %, and the symbols that fire most per class.

Corpus messages carry no SMTP envelope, so one is rebuilt from the Received header the
receiving MTA wrote (the first hop from a public address that is not a mailbox retrieval):
without it every message would look like it came from a client with no name.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from engine import Engine, ScanRequest
from engine.mime.dates import parse_date
from engine.mime.headers import parse_header_block, split_message
from engine.mime.received import Hop
from engine.pipeline.actions import Action
from engine.task.envelope import Envelope

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Sequence

    from engine import ScanResult
    from engine.config import Config

__all__ = ["ClassReport", "CorpusReport", "add_arguments", "envelope_from_received", "run"]

FP_LEVELS = (0.001, 0.01)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ham", action="append", default=[], required=True, metavar="DIR")
    parser.add_argument("--spam", action="append", default=[], required=True, metavar="DIR")
    parser.add_argument("--train-ham", action="append", default=[], metavar="DIR")
    parser.add_argument("--train-spam", action="append", default=[], metavar="DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE", help="score histograms and ROC (.png/.svg)")
    parser.add_argument(
        "--top", type=int, default=20, metavar="N", help="symbols per class to list (20)"
    )


@dataclass(slots=True)
class ClassReport:
    n: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    symbols: Counter[str] = field(default_factory=Counter)
    scores: list[float] = field(default_factory=list)

    def add(self, action: Action, score: float, symbols: Sequence[str]) -> None:
        self.n += 1
        self.actions[action.value] += 1
        self.symbols.update(symbols)
        self.scores.append(score)

    def share_at_or_above(self, rung: Action) -> float:
        hits = sum(c for a, c in self.actions.items() if Action(a).rank >= rung.rank)
        return hits / self.n if self.n else 0.0


@dataclass(slots=True)
class CorpusReport:
    ham: ClassReport
    spam: ClassReport
    trained: tuple[int, int] = (0, 0)  # ham, spam messages learned

    @property
    def auc(self) -> float:
        return roc_auc(self.ham.scores, self.spam.scores)

    def detection_at_fp(self, fp_rate: float) -> float:
        return detection_at_fp(self.ham.scores, self.spam.scores, fp_rate)

    def to_json(self, top: int) -> dict[str, object]:
        return {
            "auc": round(self.auc, 6),
            "ham": {
                "n": self.ham.n,
                "actions": dict(self.ham.actions),
                "fp_rate": self.ham.share_at_or_above(Action.ADD_HEADER),
                "top_symbols": dict(self.ham.symbols.most_common(top)),
            },
            "spam": {
                "n": self.spam.n,
                "actions": dict(self.spam.actions),
                "detection_rate": self.spam.share_at_or_above(Action.ADD_HEADER),
                "top_symbols": dict(self.spam.symbols.most_common(top)),
            },
            "detection_at_fp": {str(f): self.detection_at_fp(f) for f in FP_LEVELS},
            "trained": {"ham": self.trained[0], "spam": self.trained[1]},
        }


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """Probability that a random spam scores above a random ham (ties count half)."""
    if not negatives or not positives:
        return 0.0
    ranked = sorted(negatives)
    wins = 0.0
    for score in positives:
        below = bisect.bisect_left(ranked, score)
        ties = bisect.bisect_right(ranked, score) - below
        wins += below + ties / 2
    return wins / (len(negatives) * len(positives))


def detection_at_fp(negatives: Sequence[float], positives: Sequence[float], rate: float) -> float:
    """Share of spam at or above the lowest threshold that lets at most ``rate`` of ham in."""
    if not negatives or not positives:
        return 0.0
    allowed = int(rate * len(negatives))
    ranked = sorted(negatives, reverse=True)
    # The threshold must sit strictly above the (allowed+1)-th highest ham score.
    bar = ranked[allowed] if allowed < len(ranked) else float("-inf")
    return sum(1 for s in positives if s > bar) / len(positives)


def received_at(raw: bytes) -> float | None:
    """When the topmost Received header says the message arrived (corpus replays judge
    dates as of then; otherwise every old message would be "in the past")."""
    block, _, _ = split_message(raw)
    top = parse_header_block(block, set()).get("received")
    if top is None:
        return None
    date = Hop(top).fields.date
    return parse_date(date) if date else None


def _request(raw: bytes) -> ScanRequest:
    return ScanRequest(envelope=envelope_from_received(raw), raw=raw, received_at=received_at(raw))


def envelope_from_received(raw: bytes) -> Envelope:
    """The SMTP envelope the receiving MTA saw, as its Received header recorded it."""
    block, _, _ = split_message(raw)
    headers = parse_header_block(block, set())
    client_addr = client_name = helo = None
    for value in headers.get_all("received"):
        hop = Hop(value)
        fields = hop.fields
        if hop.is_retrieval or fields.ip is None or not _is_public(fields.ip):
            continue
        client_addr, client_name, helo = fields.ip, fields.rdns, fields.helo
        break
    return_path = (headers.get("return-path") or "").strip().strip("<>")
    rcpts = tuple(a.strip() for a in (headers.get("delivered-to") or "").split(",") if a.strip())
    return Envelope(
        client_addr=client_addr,
        client_name=client_name or ("unknown" if client_addr else None),
        helo=helo,
        mail_from=return_path or None,
        rcpts=rcpts,
    )


def _is_public(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.removeprefix("IPv6:"))
    except ValueError:
        return False
    return address.is_global


def iter_messages(dirs: Sequence[str]) -> Iterator[Path]:
    for name in dirs:
        root = Path(name)
        if root.is_file():
            yield root
            continue
        yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done = total, enabled, 0
        self._last = 0.0

    def step(self, label: str) -> None:
        self.done += 1
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{label:<8} [{bar}] {self.done}/{self.total}")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def evaluate(
    engine: Engine,
    ham: Sequence[Path],
    spam: Sequence[Path],
    *,
    train_ham: Sequence[Path] = (),
    train_spam: Sequence[Path] = (),
    progress: Callable[[int], _Progress] | None = None,
) -> CorpusReport:
    report = CorpusReport(ClassReport(), ClassReport())
    trained = [0, 0]
    for label, paths, is_spam in (("learn", train_ham, False), ("learn", train_spam, True)):
        bar = progress(len(paths)) if progress else None
        for path in paths:
            raw = path.read_bytes()
            request = _request(raw)
            if await engine.learn(request, is_spam=is_spam):  # false: refused, e.g. a repeat
                trained[is_spam] += 1
            if bar:
                bar.step(label)
    report.trained = (trained[0], trained[1])
    for label, paths, into in (("ham", ham, report.ham), ("spam", spam, report.spam)):
        bar = progress(len(paths)) if progress else None
        for path in paths:
            raw = path.read_bytes()
            result = await engine.scan(_request(raw))
            into.add(result.action, _effective_score(result), list(result.symbols))
            if bar:
                bar.step(label)
    return report


def _effective_score(result: ScanResult) -> float:
    """The score, raised to its rung's threshold when a module forced the action (GTUBE,
    a whitelist): the ROC must rank a forced reject with the rejects."""
    if result.forced is None:
        return result.score
    threshold = result.thresholds.get(result.action.value)
    return result.score if threshold is None else max(result.score, threshold)


def run(config: Config, args: argparse.Namespace) -> int:
    """Build an engine on a throw-away data directory and report on the corpus."""
    with tempfile.TemporaryDirectory(prefix="milterd-corpustest-") as scratch:
        # A fresh store: training and greylisting must not touch the deployment's state.
        # Always SQLite, in the scratch directory: verdicts do not depend on the backend,
        # and a Redis shared with production is no place for a throw-away training.
        config.section("options")["data_dir"] = scratch
        config.section("store")["backend"] = "sqlite"
        config.section("store")["path"] = "corpustest.sqlite"
        engine = Engine.from_config(config)
        interactive = sys.stderr.isatty() and not args.json

        async def main() -> CorpusReport:
            try:
                return await evaluate(
                    engine,
                    list(iter_messages(args.ham)),
                    list(iter_messages(args.spam)),
                    train_ham=list(iter_messages(args.train_ham)),
                    train_spam=list(iter_messages(args.train_spam)),
                    progress=lambda n: _Progress(n, interactive),
                )
            finally:
                await engine.aclose()

        report = trio.run(main)
    if args.json:
        print(json.dumps(report.to_json(args.top), ensure_ascii=False))
    else:
        print(format_report(report, args.top))
    if args.plot:
        from milterd.corpusplot import plot

        plot(report, Path(args.plot))
    return 0


def format_report(report: CorpusReport, top: int) -> str:
    lines = []
    if any(report.trained):
        lines.append(f"trained: {report.trained[0]} ham, {report.trained[1]} spam")
    for name, part in (("ham", report.ham), ("spam", report.spam)):
        lines.append(f"{name}: {part.n} messages")
        for action in Action:
            count = part.actions.get(action.value, 0)
            share = count / part.n if part.n else 0.0
            lines.append(f"  {action.value:<16} {count:6d}  {share:7.2%}")
    lines.append(f"ham at add header or worse (false positives): {_share(report.ham)}")
    lines.append(
        f"spam below add header (false negatives): "
        f"{1 - report.spam.share_at_or_above(Action.ADD_HEADER):.2%}"
    )
    lines.append(f"ROC AUC: {report.auc:.4f}")
    lines.extend(
        f"spam detected at {rate:.1%} ham false positives: {report.detection_at_fp(rate):.2%}"
        for rate in FP_LEVELS
    )
    for name, part in (("ham", report.ham), ("spam", report.spam)):
        lines.append(f"symbols firing most on {name}:")
        for symbol, count in part.symbols.most_common(top):
            lines.append(f"  {symbol:<32} {count:6d}  {count / max(part.n, 1):7.2%}")
    return "\n".join(lines)


def _share(part: ClassReport) -> str:
    return f"{part.share_at_or_above(Action.ADD_HEADER):.2%}"
