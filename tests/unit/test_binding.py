"""How a tool call's arguments bind to names (what args_sha hashes)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.binding import ToolSpec, tool_calls_in


def _reference_bind(
    spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The binding walk as it was before `ToolSpec.bind` read its parameters once."""
    if spec.skip_first:
        args = args[1:]
    out: dict[str, Any] = {}
    i = 0
    for p in spec.params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if i < len(args):
                out[p.name] = args[i]
                i += 1
        elif p.kind == p.VAR_POSITIONAL:
            if i < len(args):
                out[p.name] = list(args[i:])
                i = len(args)
    if i < len(args):
        out["*args"] = list(args[i:])
    out.update(kwargs)
    return out


def f_plain(a: Any, b: Any, c: Any = 3) -> Any:
    return a


def f_var(a: Any, /, b: Any, *rest: Any, k: Any = 1, **kw: Any) -> Any:
    return a


def f_kwonly(*, k: Any, j: Any = 2) -> Any:
    return k


def f_none() -> None:
    return None


class _Svc:
    def method(self, q: Any, *more: Any) -> Any:
        return q


FUNCS = [f_plain, f_var, f_kwonly, f_none, _Svc.method]


@given(
    fn=st.sampled_from(FUNCS),
    args=st.lists(st.integers(), max_size=6).map(tuple),
    kwargs=st.dictionaries(st.sampled_from(["k", "j", "zz", "b"]), st.integers(), max_size=3),
)
def test_bind_matches_the_parameter_walk(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """`bind` gives the same names, values and key order as walking the signature's parameters."""
    spec = ToolSpec(fn, "t", "tool_result")
    got = spec.bind(args, kwargs)
    want = _reference_bind(spec, args, kwargs)
    assert got == want
    assert list(got) == list(want)


def test_extra_positionals_are_kept_under_their_own_name() -> None:
    """Positionals beyond the parameters go to the *args parameter, or to "*args" without one."""
    assert ToolSpec(f_var, "t", "tool_result").bind((1, 2, 3, 4), {}) == {
        "a": 1,
        "b": 2,
        "rest": [3, 4],
    }
    assert ToolSpec(f_plain, "t", "tool_result").bind((1, 2, 3, 4), {}) == {
        "a": 1,
        "b": 2,
        "c": 3,
        "*args": [4],
    }
    assert "self" not in ToolSpec(_Svc.method, "t", "tool_result").bind(("svc", 1), {})
    assert ToolSpec(f_kwonly, "t", "tool_result").bind((5,), {"k": 1}) == {"*args": [5], "k": 1}


class _Obj:
    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


@pytest.mark.parametrize(
    ("response", "n"),
    [
        ({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}, 0),
        ({"choices": [{"message": {"tool_calls": [{"id": "a"}, {"id": "b"}]}}]}, 2),
        ({"choices": [{"message": {"tool_calls": None}}]}, 0),
        ({"choices": [_Obj(message=_Obj(tool_calls=[1, 2, 3]))]}, 3),  # SDK objects in a dict
        ({"choices": [{"message": _Obj(tool_calls=[1])}]}, 1),
        (_Obj(choices=[_Obj(message=_Obj(tool_calls=[1, 2]))]), 2),
        ({"choices": []}, 0),
        ({"content": [{"type": "tool_use"}, {"type": "text"}, {"type": "tool_use"}]}, 2),
        ({"parts": [{"part_kind": "tool-call"}]}, 1),
        ("plain text", 0),
        (None, 0),
    ],
)
def test_tool_calls_in_counts_the_calls_a_model_response_asks_for(response: object, n: int) -> None:
    """OpenAI (dicts, SDK objects or a mix), Anthropic and pydantic-ai shapes; 0 otherwise."""
    assert tool_calls_in(response) == n
