"""``milterd status``: what a running daemon's controller says of its processes (/status)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from milterd.client import controller_json

if TYPE_CHECKING:
    import argparse

__all__ = ["format_status", "show_status"]


async def show_status(args: argparse.Namespace) -> int:
    data = await controller_json(args, "/status")
    if isinstance(data, int):
        return data
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        print(format_status(data))
    return 0


def format_status(data: dict[str, object]) -> str:
    lines = [
        f"milterd {data.get('version', '?')} ({data.get('mode')}), pid {data.get('pid')}, "
        f"up {_duration(data.get('uptime'))}",
        f"Configuration generation {data.get('config_generation')} "
        f"({data.get('reloads')} reloads), {data.get('restarts')} worker restarts",
        f"{'KIND':<11} {'SLOT':>4} {'PID':>8} {'GEN':>4} {'STATE':<9} {'UPTIME':>9} "
        f"{'MESSAGES':>9} {'RESTARTS':>8}",
    ]
    workers = data.get("workers")
    for w in workers if isinstance(workers, list) else []:
        if not isinstance(w, dict):
            continue
        lines.append(
            f"{w.get('kind', '?')!s:<11} {w.get('slot', 0)!s:>4} {w.get('pid')!s:>8} "
            f"{w.get('generation')!s:>4} {w.get('state', 'serving')!s:<9} "
            f"{_duration(w.get('uptime')):>9} {w.get('messages', 0)!s:>9} "
            f"{w.get('restarts', 0)!s:>8}"
        )
    errors = data.get("last_errors")
    if isinstance(errors, list) and errors:
        lines.append("Last errors:")
        for e in errors[:10]:
            if isinstance(e, dict):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(e.get("ts", 0))))
                lines.append(f"  {when} [{e.get('pid')}] {e.get('message')}")
    else:
        lines.append("No errors logged.")
    return "\n".join(lines)


def _duration(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    seconds = int(value)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s"
