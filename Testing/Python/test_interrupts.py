"""Ctrl-C while worker processes start: held, then delivered to the parent, never lost."""

from __future__ import annotations

import os
import signal
import time

import pytest

from CircleOfWillisGANLib.interrupts import ctrl_c_held_from_new_processes


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_ctrl_c_pressed_while_workers_start_reaches_the_parent_when_they_have_started():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held_from_new_processes():
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C during the pool's start-up
            time.sleep(0.05)
            reached.append("the workers started")
        time.sleep(0.05)
    assert reached == ["the workers started"]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == set()  # nothing stays blocked
