"""What-if replay modes as rules the replay layer applies per tool: live tools and loose matching.

- ``live={"openai.chat", "http.*"}`` (names or `fnmatch` globs): those tools and models run for
  real while everything else answers from the recording; their steps are recorded in the
  replayed run (redacted and hashed like any step) and marked ``live`` in the diff.
- ``match={"openai.chat": "sequence"}``: the n-th call of the tool is answered by its n-th
  recorded call even when its args changed (a model whose prompt a fix changed);
  ``match={"email.send": {"ignore": ["idempotency_key"]}}``: a call whose args have no exact
  match is answered by the next recorded call of the tool not answered yet (the args differ
  only in fields that change every run). Either way the diff marks the step
  "args changed, answered from recording". The default stays exact (tool, args_sha).

The replay layer (`replay.replay_layer.ReplaySession`) consults these rules; see
`replay.tool_layer` for how a layer is written.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "LIVE_NOTE",
    "LOOSE_NOTE",
    "LiveTools",
    "MatchRule",
    "parse_match",
    "parse_match_options",
]

#: The note the diff shows on a step answered from the recording although its args changed.
LOOSE_NOTE = "args changed, answered from recording"
#: The note the diff shows on a step that ran for real in the replay.
LIVE_NOTE = "live"


@dataclasses.dataclass(frozen=True)
class MatchRule:
    """How one tool's calls find their recorded answer when the args changed.

    Attributes:
        sequence: the n-th call takes the n-th recorded call, whatever its args.
        ignore: argument names that change every run; a call without an exact match takes the
            next recorded call of the tool (their recorded values are hashed, not kept).
    """

    sequence: bool = False
    ignore: tuple[str, ...] = ()


def _rule(tool: str, spec: Any) -> MatchRule:
    if spec == "sequence":
        return MatchRule(sequence=True)
    if spec == "exact":
        return MatchRule()
    if isinstance(spec, Mapping) and set(spec) <= {"ignore"}:
        fields = spec.get("ignore") or ()
        if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
            raise ValueError(
                f"match[{tool!r}]['ignore'] must be a list of argument names, "
                'e.g. {"ignore": ["idempotency_key"]}'
            )
        return MatchRule(ignore=tuple(fields))
    raise ValueError(
        f"match[{tool!r}]: use 'sequence', 'exact' or {{'ignore': [ARG, ...]}} "
        '(e.g. match={"openai.chat": "sequence"})'
    )


def parse_match(match: Mapping[str, Any] | None) -> dict[str, MatchRule]:
    """``match=`` as rules per tool name; only tools with a loose rule are kept.

    Raises:
        ValueError: a rule that is neither ``"sequence"``, ``"exact"`` nor ``{"ignore": [...]}``.
    """
    if match is None:
        return {}
    if not isinstance(match, Mapping):
        raise ValueError('match= must map tool names to rules, e.g. match={"llm": "sequence"}')
    rules = {str(tool): _rule(str(tool), spec) for tool, spec in match.items()}
    return {tool: rule for tool, rule in rules.items() if rule != MatchRule()}


def parse_match_options(values: Iterable[str]) -> dict[str, Any]:
    """``--match TOOL=sequence`` / ``--match TOOL=ignore:ARG,ARG`` (CLI, pytest) as ``match=``.

    Raises:
        ValueError: an option that is not ``TOOL=RULE``, naming it.
    """
    out: dict[str, Any] = {}
    for value in values:
        tool, sep, rule = value.partition("=")
        if not sep or not tool or not rule:
            raise ValueError(
                f"--match {value!r}: use TOOL=sequence or TOOL=ignore:ARG[,ARG] "
                "(e.g. --match openai.chat=sequence)"
            )
        if rule.startswith("ignore:"):
            out[tool] = {"ignore": [f for f in rule[len("ignore:") :].split(",") if f]}
        else:
            out[tool] = rule
    parse_match(out)  # the same checks as match= in Python
    return out


class LiveTools:
    """The tools and models a replay runs for real: names or `fnmatch` globs (``"http.*"``)."""

    def __init__(self, patterns: Iterable[str] | None) -> None:
        if isinstance(patterns, str):
            patterns = [patterns]
        self.patterns = tuple(sorted({str(p) for p in patterns or ()}))
        if any(not p for p in self.patterns):
            raise ValueError('live= names tools or globs, e.g. live={"openai.chat", "http.*"}')
        self._seen: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def covers(self, tool: str) -> bool:
        """Whether `tool` runs for real in this replay."""
        hit = self._seen.get(tool)
        if hit is None:
            hit = self._seen[tool] = any(fnmatch.fnmatchcase(tool, p) for p in self.patterns)
        return hit
