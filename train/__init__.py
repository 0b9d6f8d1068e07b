"""The QueryMeldNet trainer: `python -m train --help`."""
