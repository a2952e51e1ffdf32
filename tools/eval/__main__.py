"""``python -m tools.eval``: see ``tools/eval/run.py``."""

from tools.eval.run import main

main()
