"""core.memo: a bounded memo of a pure function's results, least recently used dropped first."""

from __future__ import annotations

import threading

from balancewatch.core.memo import Memo


def counting(calls: list[str], value: str) -> str:
    calls.append(value)
    return value.upper()


def test_a_key_is_computed_once_while_kept() -> None:
    memo: Memo[str, str] = Memo(4)
    calls: list[str] = []
    assert [memo.get(k, lambda k=k: counting(calls, k)) for k in ("a", "b", "a", "a", "b")] == list("ABAAB")
    assert calls == ["a", "b"]


def test_the_least_recently_used_key_goes_first_when_full() -> None:
    memo: Memo[str, str] = Memo(2)
    calls: list[str] = []
    for key in ("a", "b", "a", "c", "a", "b"):  # "b" is the oldest when "c" arrives
        memo.get(key, lambda key=key: counting(calls, key))
    assert calls == ["a", "b", "c", "b"]


def test_threads_asking_at_once_all_get_the_value() -> None:
    memo: Memo[int, int] = Memo(100)
    results: list[list[int]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def ask(into: list[int]) -> None:
        start.wait()
        into.extend(memo.get(n, lambda n=n: n * n) for n in range(200))

    threads = [threading.Thread(target=ask, args=(into,)) for into in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [[n * n for n in range(200)]] * 8
