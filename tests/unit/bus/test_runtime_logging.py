"""configure_logging: one line per record with the process name and pid, on whatever stderr is now."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from bus import runtime


@contextlib.contextmanager
def bare_root_logger() -> Iterator[logging.Logger]:
    """The root logger without pytest's capture handlers (added per test phase), restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def test_records_carry_the_process_name_and_pid_and_go_to_the_current_stderr(capsys):
    with bare_root_logger() as root:
        runtime.configure_logging({"name": "h7", "log_level": "info"})
        logging.getLogger("netemu.test").info("hello %d", 5)
        logging.getLogger("netemu.test").debug("not at info level")
        assert root.level == logging.INFO
    err = capsys.readouterr().err
    assert f" h7[{os.getpid()}] INFO netemu.test: hello 5" in err
    assert "not at info level" not in err


def test_an_already_configured_root_logger_is_left_alone():
    with bare_root_logger() as root:
        mine = logging.NullHandler()
        root.addHandler(mine)
        root.setLevel(logging.WARNING)
        runtime.configure_logging({"name": "h8", "log_level": "debug"})
        assert root.handlers == [mine]
        assert root.level == logging.WARNING
