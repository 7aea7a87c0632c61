"""The plugin's ``--replay*`` flags and its ini options, as ``pytest --help`` lists them.

Standard library only (pytest's parser is handed in): imported whenever the plugin is, replay or
not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

__all__ = ["DEFAULT_MAX_DELTA_PCT", "add_flags"]

#: Default limit, in percent, on the growth of tokens and of spend before a replay fails.
DEFAULT_MAX_DELTA_PCT = 20.0


#: The ``--replay*`` flags in the order ``pytest --help`` lists them: (flag, what it takes, help).
#: What it takes: ``"+METAVAR"``, repeatable (a list, empty unless given); ``"switch"``, on or off
#: (off unless given); else the METAVAR of one value (None unless given). The ``dest`` is the
#: flag's name in snake case unless `_OVERRIDES` says otherwise; it also has types and defaults.
_FLAGS: tuple[tuple[str, str, str], ...] = (
    (
        "--replay",
        "+RUN_ID_OR_CASSETTE",
        "Replay a recorded run (a run id in the store, or a cassette .json) as a test item. "
        "Repeatable.",
    ),
    (
        "--replay-all",
        "switch",
        "Replay every cassette under the cassettes folder (the deploy gate); "
        "incident cassettes under an incidents/ folder are left to their incident tests.",
    ),
    (
        "--replay-cassettes",
        "DIR",
        "The cassettes folder for --replay-all and for blessing runs from the store "
        "(ini replay_cassettes; default: cassettes).",
    ),
    (
        "--replay-db",
        "PATH",
        "The store run ids are read from (ini replay_db, env REPLAY_DB; default: replay.db).",
    ),
    (
        "--replay-agent",
        "+MODULE:FN",
        "An agent replays may call: imported, it registers the @rec.agent functions of MODULE "
        "(ini replay_agents). A recording is data: its entrypoint is never imported unless the "
        "project names its module here, in replay_agents or in [tool.agent-replay] agents. "
        "Repeatable.",
    ),
    (
        "--replay-match",
        "+TOOL=sequence",
        "Answer TOOL's calls from the recording even when their args changed. Repeatable.",
    ),
    (
        "--replay-live",
        "+GLOB",
        "Tools or models that run for real in replays (names or globs). Repeatable.",
    ),
    (
        "--replay-update",
        "switch",
        "Bless: rewrite each diverging cassette with the new trace (a run from the store is "
        "written to the cassettes folder). Without it nothing on disk changes. Refuses a replay "
        "that crashed (raised, or stopped with error or killed, where the recording did not) or "
        "hit a call or HTTP request the recording has no answer for.",
    ),
    (
        "--replay-update-force",
        "switch",
        "Bless like --replay-update, also the replays it refuses (a crash, an unrecorded call "
        "or request), saying why each was refused (ini replay_update_force makes --replay-update "
        "do this).",
    ),
    (
        "--replay-report",
        "FILE",
        "Write a report of the replays: .json, or .md (Markdown for a CI comment) (ini "
        "replay_report).",
    ),
    (
        "--replay-max-token-delta-pct",
        "PCT",
        "Fail a replay whose tokens grew by more than PCT percent "
        f"(ini replay_max_token_delta_pct; default: {DEFAULT_MAX_DELTA_PCT:g}).",
    ),
    (
        "--replay-max-spend-delta-pct",
        "PCT",
        "Fail a replay whose spend (cost_usd) grew by more than PCT percent "
        f"(ini replay_max_spend_delta_pct; default: {DEFAULT_MAX_DELTA_PCT:g}).",
    ),
    # what-if: faults, repeats, review (replay.faults, replay.flaky, replay.review)
    (
        "--replay-fault",
        "+TOOL=FAULT",
        "Replay each run with this fault (timeout, connect, 429, 503, malformed, drift, slow; "
        "e.g. http.get=429:retry-after=2@first:2): one item per fault; it passes when the agent "
        "copes (neither raises nor stops with error). Repeatable; a,b faults two tools at once.",
    ),
    (
        "--replay-repeat",
        "K",
        "Replay each run K times and report it flaky when the step sequences differ.",
    ),
    ("--replay-flaky", "", "What a flaky run does to the gate: fail (default) or warn."),
    (
        "--replay-quarantine",
        "FILE",
        "Run ids or cassette names (one a line) whose flakiness only warns.",
    ),
    (
        "--replay-review",
        "switch",
        "Like --replay-update, but write each new trace beside its cassette as "
        "<cassette>.pending for `replay review` to accept or skip.",
    ),
)
_OVERRIDES: dict[str, dict[str, Any]] = {
    "--replay": {"dest": "replay_sources"},
    "--replay-agent": {"dest": "replay_agent_refs"},
    "--replay-max-token-delta-pct": {"type": float},
    "--replay-max-spend-delta-pct": {"type": float},
    "--replay-fault": {"dest": "replay_faults"},
    "--replay-repeat": {"type": int, "default": 1},
    "--replay-flaky": {"default": "fail", "choices": ("fail", "warn")},
}


def add_flags(parser: pytest.Parser) -> None:
    """Add the ``--replay*`` flags (`_FLAGS`) and the ini options."""
    group = parser.getgroup("replay", "agent-replay: replay recorded agent runs")
    for flag, takes, help in _FLAGS:
        kw: dict[str, Any] = {"dest": flag.lstrip("-").replace("-", "_"), "default": None}
        if takes.startswith("+"):
            kw.update(action="append", default=[], metavar=takes[1:])
        elif takes == "switch":
            kw.update(action="store_true", default=False)
        elif takes:
            kw["metavar"] = takes
        group.addoption(flag, help=help, **{**kw, **_OVERRIDES.get(flag, {})})
    _add_ini(parser)


def _add_ini(parser: pytest.Parser) -> None:
    """The ini options (``pytest --help`` prefixes nothing: each help names agent-replay)."""
    pct = str(DEFAULT_MAX_DELTA_PCT)
    ini: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (help, addini's keyword arguments)
        "replay_cassettes": (
            "the cassettes folder (default: cassettes).",
            {"default": "cassettes"},
        ),
        "replay_db": ("the store run ids are read from (default: replay.db).", {"default": ""}),
        "replay_report": ("write a replay report to this .json or .md file.", {"default": ""}),
        "replay_update_force": (
            "--replay-update also blesses the replays it would refuse (a crash, an unrecorded "
            "call).",
            {"type": "bool", "default": False},
        ),
        "replay_max_token_delta_pct": ("limit on token growth, in percent.", {"default": pct}),
        "replay_max_spend_delta_pct": ("limit on spend growth, in percent.", {"default": pct}),
        "replay_agents": (
            "modules that register the agents replays may call (MODULE or MODULE:FN), one a line.",
            {"type": "linelist", "default": []},
        ),
        "replay_ignore": (
            "diff ignore rules (tool:NAME, field:NAME, output:PATH), one a line.",
            {"type": "linelist", "default": []},
        ),
    }
    for name, (help, kw) in ini.items():
        parser.addini(name, f"agent-replay: {help}", **kw)
