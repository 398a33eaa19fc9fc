"""``python -m sigtune.hep`` runs the HistFactory command line (:mod:`sigtune.hep.cli`)."""

from sigtune.hep.cli import main

main()
