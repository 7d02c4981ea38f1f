"""What a calibration leaves behind: records of evaluations and iterations, the SQLite journal,
the progress bar and plots. Observes records; never imports the optimiser."""

from __future__ import annotations

from .journal import SCHEMA_VERSION, Journal, JournalContents, read_journal
from .records import Evaluation, Iteration

__all__ = ["Evaluation", "Iteration", "Journal", "JournalContents", "read_journal", "SCHEMA_VERSION"]
