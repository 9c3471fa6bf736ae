"""Retry policies: which failures are passing, how many attempts, the waits with their cap and jitter."""

from __future__ import annotations

import random

import pytest

from metrobus_app import Backoff, Drop, Fault, Retry
from metrobus_app.core.retry import exponential, fixed


def test_an_exponential_backoff_doubles_up_to_its_cap():
    backoff = exponential(0.1, max_s=1.0, jitter=0)
    assert [backoff.wait_s(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_a_fixed_backoff_waits_the_same_each_time():
    assert {fixed(2.5).wait_s(n) for n in range(1, 10)} == {2.5}


def test_jitter_stays_within_its_share_below_the_wait_and_never_above_the_cap():
    backoff = Backoff(initial_s=1.0, factor=3.0, max_s=5.0, jitter=0.25)
    rng = random.Random(7)
    for retry in range(1, 30):
        plain = min(3.0 ** (retry - 1), 5.0)
        waits = [backoff.wait_s(retry, rng) for _ in range(200)]
        assert all(plain * 0.75 <= wait <= plain for wait in waits)
        assert max(waits) - min(waits) > plain * 0.1  # spread, not one value


def test_a_huge_retry_number_still_gives_the_cap():
    assert exponential(1.0, max_s=60, jitter=0).wait_s(10_000) == 60


@pytest.mark.parametrize(
    ("error", "attempt", "retried"),
    [
        (TimeoutError("slow"), 1, True),
        (ConnectionResetError("reset"), 2, True),  # a subclass of a listed class
        (TimeoutError("slow"), 3, False),  # no attempt left
        (KeyError("account_number"), 1, False),  # not listed: final at once
        (Drop("no email"), 1, False),
        (Fault("declined"), 1, False),
    ],
)
def test_only_listed_failures_are_retried_while_attempts_are_left(error, attempt, retried):
    assert Retry(attempts=3).retries(error, attempt) is retried


def test_drop_and_fault_are_never_retried_even_when_listed():
    policy = Retry(attempts=5, on=(Exception,))
    assert policy.retries(ValueError("x"), 1)
    assert not policy.retries(Drop("x"), 1)
    assert not policy.retries(Fault("x"), 1)


def test_one_exception_class_may_be_given_alone():
    assert Retry(on=TimeoutError).on == (TimeoutError,)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Retry(attempts=0), "at least 1 attempt"),
        (lambda: Retry(on=("TimeoutError",)), "exception classes"),
        (lambda: Backoff(factor=0.5), "factor"),
        (lambda: Backoff(jitter=2), "jitter"),
        (lambda: Backoff(initial_s=-1), "0 s or more"),
    ],
)
def test_a_policy_that_cannot_work_is_refused_when_declared(make, message):
    with pytest.raises(ValueError, match=message):
        make()
