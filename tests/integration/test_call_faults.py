"""`CallFaults`: the fault spec syntax in front of a call a live tool makes (its client)."""

from __future__ import annotations

import pytest

from replay.faults import CallFaults, FaultSpecError, ToolHTTPError, ToolTimeout


class ShopError(Exception):
    """A client's own HTTP error class, carrying ``status_code``."""


def _get(path):
    return {"path": path, "status": "ok"}


def test_first_n_calls_raise_then_calls_go_through():
    """``@first:2`` fails calls 1 and 2 with the fault's error, call 3 reaches the real function."""
    plan = CallFaults("up.get=503@first:2")
    get = plan.wrap("up.get", _get)
    for _ in range(2):
        with pytest.raises(ToolHTTPError) as info:
            get("/orders/A-1")
        assert info.value.status_code == 503
    assert get("/orders/A-1") == {"path": "/orders/A-1", "status": "ok"}
    assert plan.calls == {"up.get": 3}
    assert plan.injected == [(1, "up.get=503@first:2"), (2, "up.get=503@first:2")]


def test_client_names_the_class_raised():
    """``client=MODULE:CLASS`` makes a status fault raise that class with its status set."""
    plan = CallFaults({"up.get": "429:retry-after=2"}, client=f"{__name__}:ShopError")
    with pytest.raises(ShopError) as info:
        plan.wrap("up.get", _get)("/x")
    assert info.value.status_code == 429
    assert info.value.headers["retry-after"] == "2"


def test_timeout_drift_and_other_names():
    """A timeout raises a TimeoutError, drift drops the field, an unnamed call is not faulted."""
    plan = CallFaults(["up.get=timeout@call:1", "up.get=drift:field=status@call:2"])
    get, other = plan.wrap("up.get", _get), plan.wrap("kb", _get)
    with pytest.raises(ToolTimeout):
        get("/a")
    assert get("/a") == {"path": "/a"}
    assert other("/b")["status"] == "ok"


def test_a_bad_spec_or_client_is_refused_up_front():
    """A bad kind or a client class from a module nobody imported is a FaultSpecError."""
    with pytest.raises(FaultSpecError, match="up.get=bogus"):
        CallFaults("up.get=bogus")
    with pytest.raises(FaultSpecError, match="client=nowhere.mod:Err"):
        CallFaults("up.get=503", client="nowhere.mod:Err")
