"""cc-task: the launcher of a Clever Cloud task VM.

Runs one command under bash, streams its output as structured logs, enforces timeouts,
forwards signals, reaps zombies, runs hooks, reports the exit status and shuts the VM down.
"""

__version__ = "0.1.0"
