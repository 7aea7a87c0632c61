"""``@pytest.mark.replay`` with the ``replayed`` fixture, ``replay_config``, ``recorder`` and the
hook."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def incident(project: Any) -> str:
    """The seed incident (two emails) as a cassette, with the fixed agent (one email) checked
    out."""
    run_id, _ = project.cassette(project.TWO_EMAILS)
    project.write_agent(project.ONE_EMAIL)
    return run_id


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    """`pytest --markers` documents the replay marker."""
    pytester.runpytest("--markers").stdout.fnmatch_lines(
        ["@pytest.mark.replay(source, *, stubs=None, ignore=None*"]
    )


def test_incident_test_asserts_on_the_replay(project: Any, incident: str) -> None:
    """A marked test gets the ReplayResult and makes its own assertions, under --strict-markers."""
    project.pytester.makepyfile(
        test_incident=f'''
        import pytest

        @pytest.mark.replay("cassettes/{incident}.json")
        def test_sends_one_email(replayed):
            assert replayed.recorded.run_id == "{incident}"
            assert replayed.stop_reason == "completed"
            assert len(replayed.calls("email.send")) == 1
            assert replayed.diff.first_divergence.kind == "missing_call"
        '''
    )
    result = project.pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line(
        "*runs replayed*"
    )  # marked tests are not part of the gate's count


def test_incident_test_fails_while_the_bug_is_there(project: Any, incident: str) -> None:
    """The same test fails when the agent still sends two emails: the assertion, not the plugin,
    decides."""
    project.write_agent(project.TWO_EMAILS)
    project.pytester.makepyfile(
        test_incident=f"""
        import pytest

        @pytest.mark.replay("cassettes/{incident}.json")
        def test_sends_one_email(replayed):
            assert len(replayed.calls("email.send")) == 1
        """
    )
    project.pytester.runpytest().assert_outcomes(failed=1)


def test_marker_replays_a_run_id_from_the_store(project: Any) -> None:
    """A run id in the marker is read from the default store, ./replay.db."""
    run_id = project.record()
    project.pytester.makepyfile(
        test_marker_store=f'''
        import pytest

        @pytest.mark.replay("{run_id}")
        def test_matches(replayed):
            assert replayed.diff.is_empty
        '''
    )
    project.pytester.runpytest().assert_outcomes(passed=1)


def test_marker_stubs_and_ignore(project: Any) -> None:
    """stubs= answers a tool instead of the recording, and ignore= drops its steps from the diff."""
    run_id, _ = project.cassette(project.ONE_EMAIL)
    project.write_agent(project.TWO_EMAILS)
    project.pytester.makepyfile(
        test_stubbed=f"""
        import pytest

        SENT = []

        def fake_send(to, body):
            SENT.append(to)
            return {{"sent": True, "to": to}}

        @pytest.mark.replay(
            "cassettes/{run_id}.json", stubs={{"email.send": fake_send}}, ignore=["tool:email.send"]
        )
        def test_stubbed(replayed):
            assert SENT == ["c-1", "c-1"]
            assert replayed.stop_reason == "completed"
            assert replayed.diff.is_empty
        """
    )
    project.pytester.runpytest().assert_outcomes(passed=1)


def test_marker_wins_over_the_replay_config_fixture(project: Any) -> None:
    """replay_config gives defaults; a marker keyword overrides the same key."""
    run_id, _ = project.cassette(project.ONE_EMAIL)
    project.write_agent(project.TWO_EMAILS)
    project.pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def replay_config():
            return {"on_unrecorded": "none"}
        """
    )
    project.pytester.makepyfile(
        test_precedence=f"""
        import pytest

        @pytest.mark.replay("cassettes/{run_id}.json")
        def test_fixture_default(replayed):
            assert replayed.stop_reason == "completed"  # the unrecorded second email answered None

        @pytest.mark.replay("cassettes/{run_id}.json", on_unrecorded="error")
        def test_marker_override(replayed):
            assert replayed.stop_reason == "error"
        """
    )
    project.pytester.runpytest().assert_outcomes(passed=2)


def test_marker_agent_replays_a_moved_entrypoint(project: Any) -> None:
    """agent= names the function to replay; without it the agent registered under the recorded name
    replays."""
    run_id, _ = project.cassette()
    agent = project.path / "support_agent.py"
    agent.write_text(agent.read_text().replace("def handle(", "def handle_ticket("))
    project.pytester.makepyfile(
        test_moved=f"""
        import pytest

        @pytest.mark.replay("cassettes/{run_id}.json", agent="support_agent:handle_ticket")
        def test_moved(replayed):
            assert replayed.diff.is_empty

        @pytest.mark.replay("cassettes/{run_id}.json")
        def test_recorded_entrypoint(replayed):
            pass
        """
    )
    # Without agent=, the function registered under the recording's agent name replays, renamed or
    # not.
    project.pytester.runpytest().assert_outcomes(passed=2)


def test_flag_wins_over_the_marker_db(project: Any) -> None:
    """--replay-db takes precedence over the marker's db=."""
    run_id = project.record()
    project.pytester.makepyfile(
        test_db=f'''
        import pytest

        @pytest.mark.replay("{run_id}", db="elsewhere.db")
        def test_db(replayed):
            assert replayed.diff.is_empty
        '''
    )
    project.pytester.runpytest().assert_outcomes(errors=1)
    project.pytester.runpytest("--replay-db", "replay.db").assert_outcomes(passed=1)


def test_replay_configure_hook_adjusts_marked_tests_and_items(project: Any) -> None:
    """A pytest_replay_configure hook in conftest.py reaches marked tests and --replay items
    alike."""
    run_id, cassette = project.cassette(project.ONE_EMAIL)
    project.write_agent(project.TWO_EMAILS)
    project.pytester.makeconftest(
        """
        def pytest_replay_configure(config, options):
            options.stubs["email.send"] = lambda to, body: {"sent": True, "to": to}
            options.ignore.append("tool:email.send")
        """
    )
    project.pytester.makepyfile(
        test_hooked=f"""
        import pytest

        @pytest.mark.replay("cassettes/{run_id}.json")
        def test_hooked(replayed):
            assert replayed.diff.is_empty
        """
    )
    project.pytester.runpytest(".", "--replay", str(cassette)).assert_outcomes(passed=2)


def test_replayed_without_the_marker_is_a_clean_error(pytester: pytest.Pytester) -> None:
    """Asking for `replayed` without the marker errors at setup with the fix, not a traceback."""
    pytester.makepyfile("def test_no_marker(replayed):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the `replayed` fixture needs the run to replay: add "
            '@pytest.mark.replay("RUN_ID_OR_CASSETTE") to the test'
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_unknown_marker_keyword_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A misspelt marker keyword stops the run, naming the test, the keyword and the allowed
    ones."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.replay("r_x", stub={})
        def test_typo(replayed):
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                "ERROR: test_unknown_marker_keyword_is_a_usage_error.py::test_typo: "
                "@pytest.mark.replay got "
                "unexpected keyword argument(s) stub; allowed: agent, db, ignore, on_unrecorded, "
                "ordered, stubs, stub_mode, match, live, faults, repeat"
            )
        ]
    )


def test_marker_without_a_source_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A marker without its run id or cassette stops the run with the expected form."""
    pytester.makepyfile("import pytest\n\n@pytest.mark.replay\ndef test_bare():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ['ERROR: *::test_bare: @pytest.mark.replay("RUN_ID_OR_CASSETTE", *) takes one run id*']
    )


def test_marker_with_an_unknown_run_is_a_clean_setup_error(project: Any) -> None:
    """An unknown run id in a marker errors at setup, naming the store and `replay runs`."""
    project.record()
    project.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.replay("r_01unknown")
        def test_unknown(replayed):
            pass
        """
    )
    result = project.pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["@pytest.mark.replay('r_01unknown'): no run 'r_01unknown' in *replay.db*replay runs*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_recorder_fixture_records_into_a_temporary_store(pytester: pytest.Pytester) -> None:
    """The recorder fixture records runs into a store under tmp_path that the test can read back."""
    pytester.makepyfile(
        """
        def test_records(recorder, tmp_path):
            @recorder.tool("clock.now")
            def now():
                return 42

            @recorder.agent("timer")
            def agent():
                return now()

            assert agent() == 42
            assert recorder.flush()
            store = recorder.open_store()
            try:
                run = store.get_run(recorder.last_run_id)
                assert run.stop_reason == "completed" and run.tool_calls == 1
            finally:
                store.close()
            assert (tmp_path / "replay.db").exists()
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
    assert not (pytester.path / "replay.db").exists()
