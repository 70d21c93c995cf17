"""`python -m evals.tradeoff` = `lenvm eval tradeoff`; the code lives in lenvm_rl/evaluation/tradeoff.py (installed with the package)."""

from lenvm_rl.evaluation.tradeoff import main

if __name__ == "__main__":
    main()
