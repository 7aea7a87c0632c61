"""The fault spec: one syntax for Python, ``replay run --fault`` and pytest, with errors naming the
bad spec."""

from __future__ import annotations

import pytest

from replay.faults import Fault, FaultSpecError, expand, parse_fault, parse_faults


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("http.get=503", Fault("http.get", "status", status=503, spec="http.get=503")),
        (
            "http.get=429:retry-after=2",
            Fault(
                "http.get", "status", status=429, retry_after="2", spec="http.get=429:retry-after=2"
            ),
        ),
        (
            "http.get=timeout@first:2",
            Fault("http.get", "timeout", when=("first", 2), spec="http.get=timeout@first:2"),
        ),
        ("a=connect@every", Fault("a", "connect", spec="a=connect@every")),
        (
            "a=connection-error@call:3",
            Fault("a", "connect", when=("call", 3), spec="a=connection-error@call:3"),
        ),
        ("a=malformed", Fault("a", "malformed", spec="a=malformed")),
        (
            "a=drift:field=eta.days",
            Fault("a", "drift", field="eta.days", spec="a=drift:field=eta.days"),
        ),
        ("a=slow:750ms", Fault("a", "slow", delay_s=0.75, spec="a=slow:750ms")),
        ("a=slow", Fault("a", "slow", spec="a=slow")),
        (
            "a=503:client=app.errors:ShopError",
            Fault(
                "a",
                "status",
                status=503,
                client="app.errors:ShopError",
                spec="a=503:client=app.errors:ShopError",
            ),
        ),
    ],
)
def test_specs_parse(spec: str, expected: Fault) -> None:
    """Each documented form parses to the fault it says."""
    assert parse_fault(None, spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("503", "fault '503': name the tool first: TOOL=KIND"),
        ("http.get=5033", "fault 'http.get=5033': unknown fault '5033'"),
        ("http.get=boom", "fault 'http.get=boom': unknown fault 'boom'"),
        ("http.get=503@second:1", "fault 'http.get=503@second:1': '@second:1' is not @every"),
        ("http.get=503@call:0", "'@call:0' is not @every, @first:N or @call:K"),
        ("http.get=429:retry-after=soon", "duration 'soon' is not a number of seconds"),
        ("http.get=503:colour=red", "unknown option 'colour' for status"),
        (
            "http.get=503:client=curl",
            "client='curl': use httpx, httpx2, requests, openai, anthropic, builtin",
        ),
        ("http.get=503:2s", "'2s' is not NAME=VALUE (only slow takes a duration"),
        ("http.get=", "the fault kind is missing"),
    ],
)
def test_bad_specs_are_named(spec: str, message: str) -> None:
    """A bad spec raises FaultSpecError quoting it, saying what is wrong and showing the syntax."""
    with pytest.raises(FaultSpecError) as info:
        parse_fault(None, spec)
    assert message in str(info.value)
    assert "syntax: TOOL=KIND" in str(info.value)


def test_status_as_int_and_the_three_input_forms_agree() -> None:
    """A dict with an int, a spec string and a list of strings give the same faults."""
    a = parse_faults({"http.get": 503, "email.send": "timeout@first:1"})
    b = parse_faults("http.get=503,email.send=timeout@first:1")
    c = parse_faults(["http.get=503", "email.send=timeout@first:1"])
    assert a == b == c


def test_a_fault_shadowed_by_an_every_fault_is_refused() -> None:
    """Two faults of one tool where the first answers every call is an error naming both."""
    with pytest.raises(FaultSpecError, match=r"'http.get=timeout' already answers every call"):
        parse_faults({"http.get": ["timeout", 503]})


def test_sequences_by_selector_are_allowed() -> None:
    """Faults with selectors apply in order: call 1 times out, call 2 gets 503."""
    faults = parse_faults({"http.get": ["timeout@call:1", "503@call:2"]})
    assert [f.applies(1) for f in faults] == [True, False]
    assert [f.applies(2) for f in faults] == [False, True]
    assert [f.applies(3) for f in faults] == [False, False]


def test_expand_makes_one_spec_per_fault() -> None:
    """The marker's faults={tool: [..]} and repeated --fault make one replay per fault, ids as
    given."""
    assert expand({"http.get": ["timeout", 503, 429]}) == [
        "http.get=timeout",
        "http.get=503",
        "http.get=429",
    ]
    assert expand(["a=503", "a=timeout,b=503"]) == ["a=503", "a=timeout,b=503"]
    assert expand("a=503") == ["a=503"]


def test_a_non_string_fault_is_refused() -> None:
    """A fault that is neither a string nor a status names its type."""
    with pytest.raises(FaultSpecError, match="not float"):
        parse_fault("a", 5.03)
