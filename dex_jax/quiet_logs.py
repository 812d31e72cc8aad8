"""Third-party log noise kept off a command's stderr (`quiet_third_party_logs`), or all of it shown (`verbose_logs`).

Quiet, for the duration of the block:
- C++ libraries that honour them log only errors: GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL are set (unless the
  environment already sets them), which must happen before those libraries are imported;
- the Python loggers of absl (which orbax and tfds log through), orbax, tfds and grain pass only errors, jax's
  only warnings and errors;
- file descriptor 2 is read by a filter thread that drops the INFO and WARNING lines C++ code writes there
  directly, whatever the environment says: glog/absl lines (`I0000 00:00:...`, `W0000 ...`, MediaPipe's
  "WARNING: Logging before InitGoogle()"), TFLite's `INFO: ...` / `WARNING: ...` lines (its XNNPACK delegate
  message) and XLA's timestamped `... I/W ...` lines. Every other line, C++ errors included, passes. Python's
  own sys.stderr, when it writes to descriptor 2, is pointed at the real stderr for the block, so tracebacks,
  error messages and progress bars go out unfiltered and at once.
Logger levels, descriptor 2 and sys.stderr are restored on exit; the environment variables stay (libraries read
them once). `verbose_logs` sets the Python loggers to INFO with a handler on the root.
`stdout_to_log` turns a library's prints (tfds prints where it builds a dataset) into INFO records of its
logger, so they follow the same rule.
"""

import contextlib
import io
import logging
import os
import re
import sys
import threading

QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
QUIET_LOGGERS = {"absl": logging.ERROR, "orbax": logging.ERROR, "tensorflow_datasets": logging.ERROR,
                 "grain": logging.ERROR, "jax": logging.WARNING}
NOISE = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]+\] "  # glog / absl C++: W0000 00:00:...] msg
                   rb"|(?:INFO|WARNING): "  # TFLite's minimal logging, absl's "WARNING: Logging before InitGoogle()"
                   rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] )")  # XLA / tsl: 2025-01-01 00:00:00.000000: W ...
JOIN_SECONDS = 5.0


def is_noise(line):
    """Whether a line (bytes) written to descriptor 2 is a third-party INFO or WARNING log line."""
    return NOISE.match(line) is not None


def copy_without_noise(read_fd, sink):
    """Copy lines from `read_fd` to the binary file `sink` until end of file, dropping noise. Should `sink` fail
    (stderr closed, a broken pipe), the rest is read and dropped, so writers to the pipe never block."""
    with open(read_fd, "rb") as pipe:
        for line in pipe:
            if sink is None or is_noise(line):
                continue
            try:
                sink.write(line)
                sink.flush()
            except OSError:
                sink = None


@contextlib.contextmanager
def _filtered_fd2():
    """Descriptor 2 goes through the noise filter for the block; Python's sys.stderr bypasses it."""
    sys.stderr.flush()
    real = os.dup(2)
    sink = open(real, "wb", closefd=False)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=copy_without_noise, args=(read_fd, sink), name="stderr-noise-filter", daemon=True)
    thread.start()
    python_stderr = sys.stderr
    direct = None
    try:
        python_on_fd2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        python_on_fd2 = False
    if python_on_fd2:
        direct = io.TextIOWrapper(open(real, "wb", closefd=False), encoding=python_stderr.encoding,
                                  errors=python_stderr.errors, line_buffering=True, write_through=True)
        sys.stderr = direct
    try:
        yield
    finally:
        if direct is not None:
            direct.flush()
            sys.stderr = python_stderr
        python_stderr.flush()
        os.dup2(real, 2)  # closes the pipe's last write end here, so the thread reads to the end and stops
        thread.join(JOIN_SECONDS)
        # A log handler made in the block may still hold `direct`, which writes to `real`: keep it open then.
        if direct is None and not thread.is_alive():
            sink.close()
            os.close(real)


@contextlib.contextmanager
def quiet_third_party_logs():
    """Third-party INFO and WARNING logs silenced for the block (see the module docstring)."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        with _filtered_fd2():
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def verbose_logs():
    """Python loggers at INFO, shown on stderr (C++ libraries log at their own defaults)."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO)


class _LineLogger(io.TextIOBase):
    """A text stream that logs each complete line written to it at INFO."""

    def __init__(self, logger):
        super().__init__()
        self.logger = logger
        self.partial = ""

    def writable(self):
        return True

    def write(self, text):
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if line.strip():
                self.logger.info(line)
        return len(text)

    def close(self):
        if self.partial.strip():
            self.logger.info(self.partial)
        self.partial = ""
        super().close()


@contextlib.contextmanager
def stdout_to_log(name):
    """What is printed to sys.stdout in the block goes, line by line, to the logger `name` at INFO."""
    with _LineLogger(logging.getLogger(name)) as stream, contextlib.redirect_stdout(stream):
        yield
