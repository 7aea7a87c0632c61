"""``@pytest.mark.replay(..., stubs=..., stub_mode="miss")``: stubs answer only what the recording cannot."""

from __future__ import annotations

from typing import Any


def test_marker_stub_mode_miss_replays_recorded_calls_and_stubs_new_ones(project: Any) -> None:
    """A fix that changes the email's body is answered by the stub; the lookup still replays."""
    run_id, _ = project.cassette(project.ONE_EMAIL)
    project.write_agent('send(customer["id"], "your refund was issued today")')
    project.pytester.makepyfile(
        test_fix=f'''
        import pytest

        SENT = []

        def fake_send(to, body):
            SENT.append(body)
            return {{"sent": "stub"}}

        @pytest.mark.replay(
            "cassettes/{run_id}.json", stubs={{"email.send": fake_send}}, stub_mode="miss"
        )
        def test_fix(replayed):
            assert SENT == ["your refund was issued today"]
            assert replayed.exception is None
            assert [s.tool for s in replayed.steps] == ["crm.lookup", "email.send"]
        '''
    )
    project.pytester.runpytest().assert_outcomes(passed=1)
