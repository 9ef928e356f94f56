"""``python -m batchscore``: the same as the ``batchscore`` command."""

from batchscore.cli import entry

entry()
