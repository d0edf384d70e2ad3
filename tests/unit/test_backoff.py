"""The retrying loops' back-off: pauses that double after failures, capped, and reset."""

from __future__ import annotations

from shared.backoff import Backoff


def test_pauses_double_from_the_first_to_the_maximum() -> None:
    # Given a back-off starting at 0.5 s and capped at 5 s
    backoff = Backoff(maximum=5)

    # When five passes fail in a row
    pauses = [backoff.failed() for _ in range(5)]

    # Then each pause doubles the last, and the cap holds
    assert pauses == [0.5, 1.0, 2.0, 4.0, 5]


def test_pauses_stay_at_the_maximum_once_reached() -> None:
    # Given a back-off that has reached its cap
    backoff = Backoff(maximum=1, first=0.25)
    for _ in range(3):
        backoff.failed()

    # When more passes fail
    pauses = [backoff.failed() for _ in range(3)]

    # Then every pause is the cap
    assert pauses == [1, 1, 1]


def test_a_success_starts_the_pauses_over() -> None:
    # Given a back-off after three failures
    backoff = Backoff(maximum=30)
    for _ in range(3):
        backoff.failed()

    # When a pass succeeds and the next one fails
    backoff.succeeded()
    pause = backoff.failed()

    # Then the pause is the first one again
    assert pause == 0.5


def test_the_first_pause_is_the_callers() -> None:
    # Given the revocation listener's back-off: 0.1 s first, 2 s at most
    backoff = Backoff(maximum=2, first=0.1)

    # When it fails six times
    pauses = [backoff.failed() for _ in range(6)]

    # Then it starts at 0.1 s and doubles to the cap
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.6, 2]


def test_a_cap_below_the_first_pause_wins() -> None:
    # Given a cap shorter than the first pause
    backoff = Backoff(maximum=0.2)

    # When a pass fails
    pause = backoff.failed()

    # Then the pause is the cap, never longer
    assert pause == 0.2
