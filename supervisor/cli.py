"""The command line: ``cc-task [run|check|env] [options]``.

Expected failures become exit statuses here, and only here: one sentence on stderr,
no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence

from supervisor import __version__, exitcodes

VARIABLES = """\
variables (each option above overrides its variable; see README.md for all details):
  CC_RUN_COMMAND               the task, run as bash --noprofile --norc -c (required)
  CC_PRE_RUN_HOOK              run before the task; its failure aborts the task
  CC_RUN_SUCCEEDED_HOOK        run after a task that succeeded
  CC_RUN_FAILED_HOOK           run after a task that failed, timed out or was killed
  CC_TROUBLESHOOT              debug logs; keep the VM up after a failed run (false)
  CC_TASK_TROUBLESHOOT_DELAY   how long CC_TROUBLESHOOT keeps the VM up (15m)
  CC_TASK_TIMEOUT              overall deadline of the command, then exit 124 (0: none)
  CC_TASK_IDLE_TIMEOUT         stop the command after this long without output (0: none)
  CC_TASK_KILL_GRACE           time between the stop signal and SIGKILL (30s)
  CC_TASK_STOP_SIGNAL          signal sent on timeout (SIGTERM)
  CC_TASK_ENV_FILES            ':'-separated env files to load
  CC_TASK_ENV_DIR              an envdir to load (one file per variable)
  CC_TASK_WORKDIR              working directory ($APP_HOME if a directory, else cwd)
  CC_TASK_USER                 when root, run hooks and command as this user
  CC_TASK_LOG_FORMAT           json, text or auto (json unless stdout is a terminal)
  CC_TASK_LOG_MAX_LINE         bytes per log record before a line is split (16384)
  CC_TASK_MASK                 extra ':'-separated names of secret variables
  CC_TASK_STATUS_FILE          where to write the JSON report
  CC_TASK_HOOKS_DIR            folder of pre-run.d, succeeded.d, failed.d (/etc/cc-task/hooks)
  CC_TASK_HOOK_TIMEOUT         deadline of each hook (5m)
  CC_TASK_METRICS_PORT         serve Prometheus metrics on this port; auto = 9100 (off)
  CC_METRICS_PROMETHEUS_PATH   metrics path (/metrics)
  CC_METRICS_PROMETHEUS_USER, CC_METRICS_PROMETHEUS_PASSWORD   basic auth of the metrics
  CC_TASK_METRICS_LINGER       keep serving metrics until a final scrape, at most this long
  CC_TASK_PUSHGATEWAY_URL      push final metrics to this Pushgateway
  CC_TASK_METRICS_TEXTFILE     write final metrics to this .prom file
  CC_TASK_SHUTDOWN             auto, none, poweroff, reboot or halt (auto: poweroff as PID 1)
  CC_TASK_SHUTDOWN_COMMAND     command line run instead of the shutdown action

exit statuses: N (bash's), 128+S (killed by signal S), 124 (timeout), 125 (configuration
error), 126/127 (bash could not run / not found), 2 (usage), a failed pre-run hook's status.
"""

COMMANDS = ("run", "check", "env")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cc-task",
        usage="cc-task [run|check|env] [options]",
        description="Run CC_RUN_COMMAND as a Clever Cloud task: structured logs, timeouts, "
        "signals, hooks, a report, metrics, then the VM's shutdown.\n\n"
        "commands:\n  run    run the task (the default)\n"
        "  check  validate everything, run nothing, print the configuration\n"
        "  env    print the environment the command would get",
        epilog=VARIABLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"cc-task {__version__}")
    p.add_argument("--command", metavar="STRING", help="the command (instead of CC_RUN_COMMAND)")
    p.add_argument("--env-file", metavar="PATH", action="append", default=[],
                   help="load this env file after CC_TASK_ENV_FILES (repeatable)")
    p.add_argument("--timeout", metavar="DURATION", help="CC_TASK_TIMEOUT")
    p.add_argument("--idle-timeout", metavar="DURATION", help="CC_TASK_IDLE_TIMEOUT")
    p.add_argument("--kill-grace", metavar="DURATION", help="CC_TASK_KILL_GRACE")
    p.add_argument("--log-format", metavar="FORMAT", help="CC_TASK_LOG_FORMAT: json, text, auto")
    p.add_argument("--status-file", metavar="PATH", help="CC_TASK_STATUS_FILE")
    p.add_argument("--shutdown", metavar="ACTION", help="CC_TASK_SHUTDOWN")
    p.add_argument("--metrics-port", metavar="PORT", help="CC_TASK_METRICS_PORT")
    p.add_argument("--user", metavar="USER", help="CC_TASK_USER")
    p.add_argument("--interactive", action="store_true",
                   help="stdin from the terminal, output passed through untouched")
    return p


_OVERRIDES = {
    "command": "CC_RUN_COMMAND", "timeout": "CC_TASK_TIMEOUT",
    "idle_timeout": "CC_TASK_IDLE_TIMEOUT", "kill_grace": "CC_TASK_KILL_GRACE",
    "log_format": "CC_TASK_LOG_FORMAT", "status_file": "CC_TASK_STATUS_FILE",
    "shutdown": "CC_TASK_SHUTDOWN", "metrics_port": "CC_TASK_METRICS_PORT",
    "user": "CC_TASK_USER",
}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script. Exit statuses: SPEC section 7."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Only possible before the run's own handlers are installed (start-up, check, env).
        sys.stderr.write("cc-task: interrupted\n")
        return exitcodes.SIGNAL_BASE + 2


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = "run"
    if args and args[0] in COMMANDS:
        command = args.pop(0)
    ns = _parser().parse_args(args)  # exits 2 on a usage error, 0 on --help/--version

    from supervisor.task import Options

    options = Options(env_files=list(ns.env_file))
    for attr, variable in _OVERRIDES.items():
        value = getattr(ns, attr)
        if value is not None:
            options.overrides[variable] = value
    if ns.interactive:
        options.overrides["--interactive"] = True
    if command == "check":
        return _check(options)
    if command == "env":
        return _env(options)
    from supervisor.task import Task

    status = Task(os.environ, options).run()
    # Everything is written and the shutdown action ran: skip the interpreter's teardown
    # (20-30 ms of freeing modules), so the launcher exits right after its task.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


def _fail(message: str) -> int:
    sys.stderr.write(f"cc-task: error: {message}\n")
    return exitcodes.CONFIG


def _check(options: object) -> int:
    from supervisor.masking import Masker
    from supervisor.task import prepare

    env, settings, error, _ = prepare(os.environ, options)  # type: ignore[arg-type]
    masker = Masker.from_env(env, settings.masked_names())
    if error is not None:
        return _fail(masker.mask_text(error.message))
    public = masker.mask_obj(settings.public())
    assert isinstance(public, dict)
    for name in list(public):
        value = public[name]
        if name.endswith("PASSWORD") and value:
            public[name] = "***"
    sys.stdout.write(json.dumps(public, indent=2, sort_keys=True) + "\n")
    return exitcodes.SUCCESS


def _env(options: object) -> int:
    import uuid

    from supervisor import environ
    from supervisor.errors import ConfigError
    from supervisor.masking import Masker

    try:
        env = environ.load(os.environ, options.env_files)  # type: ignore[attr-defined]
    except ConfigError as exc:
        return _fail(exc.message)
    env.update(CC_TASK_RUN_ID=str(uuid.uuid4()), CC_TASK_ATTEMPT="1")
    masker = Masker.from_env(env, environ.split_paths(env.get("CC_TASK_MASK")))
    out = "".join(f"{k}={masker.mask_text(env[k])}\n" for k in sorted(env))
    sys.stdout.write(out)
    return exitcodes.SUCCESS
