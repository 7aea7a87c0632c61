"""The unified event schema: field names, stop reasons, run ids, JSON round-trips."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from replay.errors import InvalidStopReasonError
from replay.models import (
    STOP_REASONS,
    Event,
    Run,
    Usage,
    new_run_id,
    trusted_usage,
    validate_stop_reason,
)


def test_event_has_exactly_the_designed_fields() -> None:
    """Event carries the DESIGN.md field names (plus parent_step_id for nested tools and
    concurrent_group for parallel calls) and nothing else."""
    assert set(Event.model_fields) == {
        "run_id",
        "kind",
        "ts_ms",
        "step_id",
        "tool",
        "args_sha",
        "output_sha",
        "duration_ms",
        "status",
        "error",
        "stop_reason",
        "usage",
        "parent_step_id",
        "concurrent_group",
    }


def test_event_and_run_round_trip_through_json() -> None:
    """Events and runs survive a JSON round trip unchanged."""
    ev = Event(
        run_id="r_1",
        kind="stop",
        ts_ms=5,
        stop_reason="loop_detected",
        usage=Usage(tokens_in=3, tokens_out=4, cost_usd=0.5, tool_calls=2),
    )
    assert Event.model_validate_json(ev.model_dump_json()) == ev
    run = Run(run_id="r_1", agent="a", started_ms=1, versions={"model": "m"}, input={"x": [1]})
    assert Run.model_validate_json(run.model_dump_json()) == run


@pytest.mark.parametrize("reason", [*STOP_REASONS, "quota_hit", "a1_b2"])
def test_known_and_lowercase_user_stop_reasons_are_accepted(reason: str) -> None:
    """The taxonomy and any lowercase user-defined name are valid stop reasons."""
    assert validate_stop_reason(reason) == reason


@pytest.mark.parametrize("reason", ["Completed", "budget exceeded", "", "1abc", None, 3])
def test_other_stop_reasons_are_refused_with_the_valid_names(reason: object) -> None:
    """An invalid stop reason raises an error listing the taxonomy and the naming rule."""
    with pytest.raises(InvalidStopReasonError) as info:
        validate_stop_reason(reason)
    assert "completed, error, loop_detected" in str(info.value)
    assert "[a-z][a-z0-9_]*" in str(info.value)


def test_unknown_event_kind_is_refused() -> None:
    """An event kind outside the schema does not validate."""
    with pytest.raises(ValueError):
        Event(run_id="r", kind="tool_call", ts_ms=1)  # type: ignore[arg-type]


def test_run_ids_are_unique_and_sort_by_time() -> None:
    """Run ids are unique and their string order is their creation order."""
    ids = [new_run_id(1_700_000_000_000 + i) for i in range(200)]
    assert len(set(ids)) == 200
    assert sorted(ids) == ids
    assert all(len(i) == 28 and i.startswith("r_") for i in ids)


@pytest.mark.parametrize(
    "text",
    [
        '{"tokens_in":12,"tokens_out":3,"cost_usd":0.25,"tool_calls":0}',
        '{"tool_calls":2,"cost_usd":0.0,"tokens_out":0,"tokens_in":7}',
    ],
)
def test_usage_the_writer_stored_loads_unchecked_as_the_validated_one(text: str) -> None:
    got = trusted_usage(text)
    assert got == Usage.model_validate_json(text)
    assert got.model_dump() == Usage.model_validate_json(text).model_dump()


@pytest.mark.parametrize(
    "text",
    [
        '{"tokens_in":12}',  # fields missing: defaults, as validation gives them
        '{"tokens_in":12,"tokens_out":3,"cost_usd":1,"tool_calls":0}',  # an int cost: coerced
        '{"tokens_in":"12","tokens_out":3,"cost_usd":0.5,"tool_calls":0}',  # a string count
    ],
)
def test_usage_in_any_other_shape_is_validated(text: str) -> None:
    got = trusted_usage(text)
    assert got == Usage.model_validate_json(text)
    assert isinstance(got.cost_usd, float) and isinstance(got.tokens_in, int)


@pytest.mark.parametrize(
    "text",
    [
        '{"tokens_in":-1,"tokens_out":3,"cost_usd":0.5,"tool_calls":0}',
        '{"tokens_in":1,"tokens_out":3,"cost_usd":-0.5,"tool_calls":0}',
        '{"tokens_in":1,"tokens_out":3,"cost_usd":0.5,"tool_calls":0,"x":1}',
    ],
)
def test_usage_out_of_bounds_is_refused_as_validation_refuses_it(text: str) -> None:
    with pytest.raises(ValidationError):
        trusted_usage(text)


def test_usage_seen_before_is_not_parsed_again_and_each_event_gets_its_own() -> None:
    """With `seen`, a repeated usage text gives equal `Usage`s that share nothing: mutating one
    leaves the next as stored. Texts that need validation are never remembered."""
    text = '{"tokens_in":12,"tokens_out":3,"cost_usd":0.25,"tool_calls":0}'
    seen: dict[str | bytes, dict[str, object]] = {}
    first = trusted_usage(text, seen)
    assert text in seen
    first.tokens_in = 99
    second = trusted_usage(text, seen)
    assert second == Usage.model_validate_json(text) and second is not first
    odd = '{"tokens_in":"12","tokens_out":3,"cost_usd":0.5,"tool_calls":0}'
    assert trusted_usage(odd, seen) == Usage.model_validate_json(odd)
    assert odd not in seen
