"""``python -m eosdetect`` runs the command line."""

from eosdetect.apps.cli import entry_point

entry_point()
