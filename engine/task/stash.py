"""Typed facts that checks share within one scan (pytest's Stash idea).

A module that computes something others need (the parsed Received chain, the sender's
organisational domain) stores it under a ``StashKey[T]`` it exports; readers get a ``T``
back, and two modules can never collide on a string key.
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

__all__ = ["Stash", "StashKey"]

T = TypeVar("T")


class StashKey(Generic[T]):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})"


class Stash:
    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[object, object] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast("T", self._data[key])

    def get(self, key: StashKey[T], default: T) -> T:
        return cast("T", self._data.get(key, default))

    def __contains__(self, key: object) -> bool:
        return key in self._data
