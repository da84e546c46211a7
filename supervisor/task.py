"""One task from start to shutdown (SPEC sections 4, 9, 10 and 12):

    load environment -> validate -> pre-run hooks -> command -> post-run hooks
      -> final report -> metrics -> troubleshoot delay -> flush -> shutdown action

The shutdown action runs from a ``finally``: after a configuration error, an internal
error or a signal, a VM never hangs. The exit status follows SPEC section 7.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from supervisor import config, environ, exitcodes, report, shutdown, signals
from supervisor.config import Settings
from supervisor.durations import format_seconds
from supervisor.errors import ConfigError
from supervisor.logwriter import LogWriter, Sink
from supervisor.loop import Loop
from supervisor.masking import Masker
from supervisor.reaper import Reaper
from supervisor.runner import Observer, Outcome, Runner, Spec
from supervisor.states import Phase, Result, State, Timeout
from supervisor.users import Account


@dataclass
class Options:
    """What the command line adds to the environment."""

    overrides: dict[str, Any] = field(default_factory=dict)
    env_files: list[str] = field(default_factory=list)


@dataclass
class HookResult:
    exit_status: int = 0
    duration_seconds: float = 0.0

    def add(self, out: Outcome) -> None:
        if self.exit_status == 0:
            self.exit_status = out.exit_status
        self.duration_seconds = round(self.duration_seconds + out.duration, 6)


def platform_ids(env: Mapping[str, str]) -> dict[str, str | None]:
    """Clever's identifiers, as the platform injects them."""
    return {
        "app_id": env.get("APP_ID") or None,
        "deployment_id": env.get("CC_DEPLOYMENT_ID") or env.get("DEPLOYMENT_ID") or None,
        "instance_id": env.get("INSTANCE_ID") or None,
    }


def prepare(process_env: Mapping[str, str], options: Options) -> tuple[
        dict[str, str], Settings, ConfigError | None, Account | None]:
    """Load and validate everything; never raises a ``ConfigError``, returns it."""
    error: ConfigError | None = None
    try:
        env = environ.load(process_env, options.env_files)
    except ConfigError as exc:
        error = exc
        env = dict(process_env)
    try:
        settings = config.load(env, options.overrides)
    except ConfigError as exc:
        error = error or exc
        settings = exc.fallback  # type: ignore[attr-defined]
    account = None
    if error is None:
        try:
            config.validate(settings)
            if settings.user:
                from supervisor import users

                account = users.resolve(settings.user)
                if os.geteuid() != 0:
                    account = None  # only root can drop privileges; see Task.run
        except ConfigError as exc:
            error = exc
    return env, settings, error, account


class Task:
    """Runs the whole task. Inject ``shutdown_action`` and ``writer`` to test it."""

    def __init__(
        self,
        process_env: Mapping[str, str],
        options: Options | None = None,
        *,
        shutdown_action: Callable[[str, str | None], str | None] = shutdown.perform,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
    ) -> None:
        self.process_env = process_env
        self.options = options or Options()
        self.shutdown_action = shutdown_action
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self.run_id = str(uuid.uuid4())
        self.terminated: int | None = None
        self.observer: Observer = Observer()
        self.metrics: Any = None

    # -- the whole run --------------------------------------------------------------

    def run(self) -> int:
        started = time.time()
        status = exitcodes.CONFIG
        writer: LogWriter | None = None
        settings: Settings | None = None
        failed_run = True
        pid1 = os.getpid() == 1
        if not pid1:
            from supervisor import proctree

            proctree.set_subreaper()
        handled = [*signals.FORWARDED, signal.SIGCHLD]
        try:
            with signals.capture_signals(handled) as queue:
                env, settings, error, account = prepare(self.process_env, self.options)
                masker = Masker.from_env(env, settings.masked_names())
                writer = self._writer(settings, masker, env)
                reaper = Reaper(on_orphan=self._on_orphan)
                loop = Loop(queue, reaper)
                loop.on_signal = self._on_idle_signal
                self.writer = writer
                self.loop = loop
                self.reaper = reaper
                if error is None:
                    error = self._start_metrics(settings, env)
                if error is not None:
                    status = self._config_error(error, settings, env, masker, started)
                else:
                    status = self._run(env, settings, account, masker, started)
                self._finish_metrics()
                failed_run = status != 0
                self._troubleshoot_delay(settings, failed_run)
                writer.flush()
        except Exception:  # a bug: say so, then still shut down
            status = exitcodes.CONFIG
            detail = traceback.format_exc()
            with contextlib.suppress(Exception):
                os.write(self.stderr_fd, f"cc-task: internal error\n{detail}".encode())
        finally:
            self._shutdown(settings, writer)
        return status

    def _start_metrics(self, settings: Settings, env: Mapping[str, str]) -> ConfigError | None:
        """Metrics only when a feature asks for them: prometheus-client costs ~40 ms."""
        if not (settings.metrics_port or settings.pushgateway_url or settings.metrics_textfile):
            return None
        from supervisor import __version__
        from supervisor.metrics import Metrics

        metrics = Metrics(settings, platform_ids(env), self.writer, __version__)
        self.metrics = metrics
        self.observer = metrics
        try:
            metrics.start()
        except ConfigError as exc:
            return exc
        return None

    def _finish_metrics(self) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        try:
            metrics.finish(getattr(self, "final_report", None) or {}, self.loop)
        finally:
            metrics.close()

    def _writer(self, settings: Settings, masker: Masker, env: Mapping[str, str]) -> LogWriter:
        fmt = settings.log_format
        tty = os.isatty(self.stdout_fd)
        if fmt == "auto":
            fmt = "text" if tty else "json"
        colour = fmt == "text" and os.isatty(self.stderr_fd) and "NO_COLOR" not in env
        ids = {k: v for k, v in platform_ids(env).items() if v}
        return LogWriter(fmt, stdout=Sink(self.stdout_fd), stderr=Sink(self.stderr_fd),
                         masker=masker, static=ids, debug=settings.troubleshoot,
                         colour=colour)

    def _config_error(self, error: ConfigError, settings: Settings, env: Mapping[str, str],
                      masker: Masker, started: float) -> int:
        assert self.writer is not None
        if self.writer.format == "json":
            self.writer.error(error.message)  # stdout has the record; a person reads stderr
        self.writer.event("config.invalid", error.message, level="error",
                          variable=error.variable)
        rep = report.build(result=Result.CONFIG_ERROR.value, exit_status=exitcodes.CONFIG,
                           command=settings.run_command, run_id=self.run_id,
                           started_at=started, finished_at=time.time(),
                           duration_seconds=time.time() - started,
                           platform=platform_ids(env), masker=masker)
        self._final_report(rep, settings)
        return exitcodes.CONFIG

    def _run(self, env: Mapping[str, str], settings: Settings, account: Account | None,
             masker: Masker, started: float) -> int:
        writer = self.writer
        if settings.interactive and settings.idle_timeout:
            writer.event("config.loaded", "--interactive: output is not read, so "
                         "CC_TASK_IDLE_TIMEOUT is ignored", level="warning")
        if settings.user and account is None:
            writer.event("config.loaded", "not root: CC_TASK_USER is ignored",
                         level="warning", user=settings.user)
        task_env = dict(env)
        task_env.update(CC_TASK_RUN_ID=self.run_id, CC_TASK_ATTEMPT="1")
        from supervisor.process import MAX_ARG_STRLEN

        for name, value in list(task_env.items()):
            # A variable over the kernel's limit would make every exec fail with E2BIG
            # (a long CC_RUN_COMMAND from an env file): the task goes without it.
            if len(name) + len(value.encode("utf-8", "surrogateescape")) + 2 > MAX_ARG_STRLEN:
                del task_env[name]
                writer.event("config.loaded", f"{name} is too long for the task's "
                             "environment: left out", level="warning", variable=name)
        if account is not None:
            task_env.update(account.environ())
        writer.event(
            "config.loaded", "configuration loaded", run_id=self.run_id,
            command=report._cut(masker.mask_text(settings.run_command or ""), 512),
            workdir=settings.cwd, timeout_seconds=settings.timeout,
            idle_timeout_seconds=settings.idle_timeout, user=settings.user,
        )
        writer.event("config.loaded", "resolved configuration", level="debug",
                     config=settings.public(),
                     reaper="pid1" if os.getpid() == 1 else "subreaper")
        runner = Runner(self.loop, writer, masker, settings.log_max_line,
                        observer=self.observer)
        runner.run_id = self.run_id
        self.runner = runner
        self.settings = settings
        self.task_env = task_env
        self.account = account
        hooks: dict[str, HookResult] = {}

        # Pre-run hooks: the first failure stops the task.
        pre_failed: Outcome | None = None
        self.observer_state(State.PRE_RUN)
        pre = self._run_hooks(Phase.PRE_RUN, self._hook_specs(Phase.PRE_RUN, task_env), hooks,
                              stop_on_failure=True)
        if pre is not None and pre.exit_status != 0:
            pre_failed = pre

        outcome: Outcome | None = None
        if pre_failed is not None:
            result, status = Result.PRE_RUN_FAILED, pre_failed.exit_status
        elif self.terminated is not None:
            result, status = Result.SIGNAL, exitcodes.SIGNAL_BASE + self.terminated
        else:
            self.observer_state(State.RUNNING)
            outcome = runner.run(Spec(
                command=settings.run_command or "", env=task_env, cwd=settings.cwd,
                account=account, interactive=settings.interactive,
                timeout=settings.timeout, idle_timeout=settings.idle_timeout,
                kill_grace=settings.kill_grace, stop_signal=settings.stop_signal,
            ))
            result, status = _result(outcome)
        if outcome is not None and outcome.start_error:
            writer.error(f"the command could not start: {outcome.start_error}.")
        rep = self._report(result, status, outcome, hooks, settings, env, masker, started)

        if result is not Result.START_FAILED:
            self.observer_state(State.POST_RUN)
            phase = Phase.SUCCEEDED if status == 0 else Phase.FAILED
            post_env = dict(task_env)
            post_env.update(
                CC_TASK_RESULT=result.value,
                CC_TASK_EXIT_STATUS=str(status),
                CC_TASK_EXIT_CODE="" if outcome is None or outcome.exit_code is None
                else str(outcome.exit_code),
                CC_TASK_SIGNAL=signals.name(outcome.signal)
                if outcome is not None and outcome.signal else "",
                CC_TASK_DURATION_SECONDS=f"{rep['duration_seconds']:.6f}",
            )
            specs = self._hook_specs(phase, post_env)
            if specs:  # the report file only when a hook will read it
                with _report_file(rep) as path:
                    post_env["CC_TASK_REPORT_FILE"] = path  # the specs share post_env
                    self._run_hooks(phase, specs, hooks, stop_on_failure=False)
            rep["hooks"] = {k: vars(v) for k, v in hooks.items()}
        self._final_report(rep, settings)
        return status

    # -- hooks ----------------------------------------------------------------------

    def _hook_specs(self, phase: Phase, env: dict[str, str]) -> list[Spec]:
        """The variable's hook, then the folder's executables in name order."""
        settings = self.settings
        variable = {Phase.PRE_RUN: settings.pre_run_hook, Phase.SUCCEEDED: settings.succeeded_hook,
                    Phase.FAILED: settings.failed_hook}[phase]
        specs: list[Spec] = []
        common = dict(env=env, cwd=settings.cwd, source="hook", phase=phase.value,
                      account=self.account, timeout=settings.hook_timeout,
                      kill_grace=settings.kill_grace, stop_signal=settings.stop_signal,
                      timeout_kind=Timeout.HOOK)
        if variable:
            specs.append(Spec(command=variable, **common))  # type: ignore[arg-type]
        for path in self._folder_hooks(phase):
            specs.append(Spec(command=path, argv=[path], path=path, **common))  # type: ignore[arg-type]
        return specs

    def _run_hooks(self, phase: Phase, specs: list[Spec], results: dict[str, HookResult],
                   stop_on_failure: bool) -> Outcome | None:
        last: Outcome | None = None
        for spec in specs:
            if stop_on_failure and self.terminated is not None:
                break
            out = self.runner.run(spec)
            if out.start_error:
                self.writer.event("hook.finished", f"{phase.value} hook could not start: "
                                  f"{out.start_error}", level="warning", hook=phase.value,
                                  exit_status=out.exit_status,
                                  **({"path": spec.path} if spec.path else {}))
            result = results.setdefault(phase.value, HookResult())
            result.add(out)
            hook_finished = getattr(self.observer, "hook_finished", None)
            if hook_finished is not None:  # live hook metrics
                hook_finished(phase.value, result.exit_status, result.duration_seconds)
            last = out
            if out.exit_status != 0 and stop_on_failure:
                return out
            # A failed post-run hook is the runner's warning-level hook.finished, no more:
            # the task's status is not changed by it.
        return last

    def _folder_hooks(self, phase: Phase) -> list[str]:
        # Absolute: folder hooks are executed from the task's working directory.
        folder = os.path.join(os.path.abspath(self.settings.hooks_dir), phase.folder)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        paths = []
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                paths.append(path)
            else:
                self.writer.event("hook.skipped", f"skipped {path}: not an executable file",
                                  level="debug", hook=phase.value, path=path)
        return paths

    # -- report, signals, shutdown ----------------------------------------------------

    def _report(self, result: Result, status: int, outcome: Outcome | None,
                hooks: Mapping[str, HookResult], settings: Settings, env: Mapping[str, str],
                masker: Masker, started: float) -> dict[str, Any]:
        out = outcome
        output = {}
        if out is not None:
            output = {f"{s}_{k}": getattr(c, k) for s, c in out.output.items()
                      for k in ("lines", "bytes")}
        finished = out.finished_at if out and out.finished_at else time.time()
        begun = out.started_at if out and out.started_at else started
        return report.build(
            result=result.value, exit_status=status, command=settings.run_command,
            run_id=self.run_id,
            exit_code=out.exit_code if out else None,
            signal=signals.name(out.signal) if out and out.signal else None,
            timed_out=bool(out and out.timeout is not None and out.timeout is not Timeout.HOOK),
            killed=bool(out and out.killed),
            started_at=begun, finished_at=finished,
            duration_seconds=(out.duration if out else finished - begun),
            pid=out.pid if out else None, output=output,
            cpu_seconds=out.cpu_seconds if out else None,
            max_rss_bytes=out.max_rss_bytes if out else None,
            hooks={k: vars(v) for k, v in hooks.items()},
            tail=report.tail_lines(self.runner.tail, masker),
            platform=platform_ids(env), masker=masker,
        )

    def _final_report(self, rep: dict[str, Any], settings: Settings) -> None:
        writer = self.writer
        data = report.encode(rep)
        import orjson

        final = orjson.loads(data)
        level = "info" if final["exit_status"] == 0 else "warning"
        writer.event("task.finished", f"task finished: {final['result']} "
                     f"(exit status {final['exit_status']})", level=level, report=final)
        self.final_report = final
        if settings.status_file:
            try:
                report.write_atomic(settings.status_file, data + b"\n")
            except OSError as exc:
                writer.event("task.finished", f"could not write CC_TASK_STATUS_FILE "
                             f"{settings.status_file}: {exc.strerror}", level="error")
        self.observer_state(State.FINISHED)
        writer.flush()

    def observer_state(self, state: State) -> None:
        setter = getattr(self.observer, "state", None)
        if setter is not None:
            setter(state)

    def _on_idle_signal(self, signum: int) -> None:
        """A signal while no child runs: remember a terminating one."""
        name = signals.name(signum)
        self.writer.event("signal.received", f"received {name}", signal=name)
        if signum in signals.TERMINATING and self.terminated is None:
            self.terminated = signum

    def _on_orphan(self, exit_: Any) -> None:
        counter = getattr(self.observer, "zombie_reaped", None)
        if counter is not None:
            counter()
        self.writer.event("zombie.reaped", f"reaped orphan pid {exit_.pid}", level="debug",
                          pid=exit_.pid)

    def _troubleshoot_delay(self, settings: Settings, failed: bool) -> None:
        if not (settings.troubleshoot and failed and settings.troubleshoot_delay):
            return
        delay = settings.troubleshoot_delay
        self.writer.event("shutdown.delayed", f"CC_TROUBLESHOOT: the run failed; keeping the "
                          f"machine up for {format_seconds(delay)} before the shutdown "
                          "(SIGTERM ends the wait)",
                          level="warning", delay_seconds=delay)
        self.writer.flush()
        self.terminated = None
        self.loop.wait(delay, until=lambda: self.terminated is not None)

    def _shutdown(self, settings: Settings | None, writer: LogWriter | None) -> None:
        action = settings.shutdown if settings is not None else "auto"
        command = settings.shutdown_command if settings is not None else None
        resolved = shutdown.resolve(action)
        if resolved == "none" and not command:
            if writer is not None:
                writer.flush()
            return
        if writer is not None:
            what = shutdown.describe(resolved, command)
            writer.event("shutdown.started", f"shutting down: {what}",
                         action=resolved, command=bool(command))
            writer.flush()
        problem = self.shutdown_action(resolved, command)
        if problem and writer is not None:
            writer.event("shutdown.started", problem, level="error")
            writer.flush()


def _result(out: Outcome) -> tuple[Result, int]:
    if out.start_error:
        return Result.START_FAILED, out.exit_status
    if out.timeout is Timeout.IDLE:
        return Result.IDLE_TIMEOUT, exitcodes.TIMEOUT
    if out.timeout is not None:
        return Result.TIMEOUT, exitcodes.TIMEOUT
    if out.signal:
        return Result.SIGNAL, out.exit_status
    if out.exit_status == 0:
        return Result.SUCCESS, 0
    return Result.EXIT_CODE, out.exit_status


@contextlib.contextmanager
def _report_file(rep: Mapping[str, Any]):  # type: ignore[no-untyped-def]
    """The report so far, as a file the post-run hooks can read."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="cc-task-report-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(report.encode(rep) + b"\n")
        os.chmod(path, 0o644)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
