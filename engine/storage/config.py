"""The ``[store]`` and ``[redis]`` configuration sections, and the store they describe.

``[redis]`` is its own section, not part of ``[store]``: the Redis server is also what
later modules (fuzzy storage, neural) will share, and ``MILTERD_REDIS_URL`` sets its URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.config.schema import Key, Section, at_least, between
from engine.errors import ConfigError
from engine.storage.sqlite import SqliteStore

if TYPE_CHECKING:
    from engine.config.loader import Config
    from engine.storage.base import Store

__all__ = ["DEFAULT_SQLITE_FILE", "REDIS", "STORE", "open_store"]

DEFAULT_SQLITE_FILE = "milterd.sqlite"


def _redis_url(value: object) -> str | None:
    # redis-py is imported only when a URL is actually configured: it costs 0.16 s.
    from redis import ConnectionPool

    try:
        ConnectionPool.from_url(str(value))  # parses only: no connection yet
    except ValueError as exc:
        return str(exc)
    return None


STORE = Section(
    {
        "backend": Key(
            (str,),
            "sqlite",
            "Where state shared across messages lives (greylisting, Bayes, rate limits …): "
            "'sqlite', one file in data_dir shared by the worker processes of this machine; "
            "'redis', the server of [redis], shared by every instance that uses it.",
            choices=("sqlite", "redis"),
        ),
        "path": Key(
            (str,),
            DEFAULT_SQLITE_FILE,
            "The SQLite file; a relative path is inside data_dir.",
        ),
        "busy_timeout": Key(
            (float,),
            5.0,
            "Seconds an SQLite write waits while another process writes, before the "
            "operation fails as temporarily unavailable.",
            check=at_least(0.01),
        ),
    },
    "The state store (see docs/storage.md).",
)

REDIS = Section(
    {
        "url": Key(
            (str,),
            "redis://127.0.0.1:6379/0",
            "redis://[:password@]host[:port][/db], rediss:// for TLS, or unix:///path?db=N. "
            "Environment: MILTERD_REDIS_URL.",
            check=_redis_url,
        ),
        "prefix": Key(
            (str,),
            "milterd:",
            "Put before every key, so that one database can serve other applications too.",
        ),
        "timeout": Key(
            (float,),
            1.0,
            "Seconds for a connect and for each answer; past it the check that asked fails "
            "temporarily.",
            check=at_least(0.01),
        ),
        "pool_size": Key(
            (int,),
            16,
            "Connections (and commands in flight) per worker process.",
            check=between(1, 1024),
        ),
    },
    "The Redis server, used when [store] backend = 'redis'.",
)


def open_store(config: Config, data_dir: Path) -> Store:
    """The store ``config`` describes. Nothing connects yet (the first use does).

    Args:
        config: a configuration validated against a schema with ``STORE`` as ``[store]``
            and ``REDIS`` as ``[redis]``.
        data_dir: the resolved data directory, for a relative SQLite path.
    Raises:
        ConfigError: redis-py refuses the URL (the schema check lets few such through).
    """
    store = config.section("store")
    if store["backend"] == "redis":
        from engine.storage.redis import RedisStore  # only when used: see _redis_url

        redis = config.section("redis")
        try:
            return RedisStore.from_url(
                str(redis["url"]),
                prefix=str(redis["prefix"]),
                timeout=float(redis["timeout"]),  # type: ignore[arg-type]
                pool_size=int(redis["pool_size"]),  # type: ignore[call-overload]
            )
        except ValueError as exc:
            raise ConfigError([config.problem(("redis", "url"), str(exc))]) from exc
    path = data_dir / Path(str(store["path"])).expanduser()
    return SqliteStore(path, busy_timeout=float(store["busy_timeout"]))  # type: ignore[arg-type]
