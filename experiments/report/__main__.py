"""`python -m experiments.report`: rebuild docs/answers.md (and results/cnn_vs_rnn.md)."""

import sys

from experiments.report import main

sys.exit(main())
