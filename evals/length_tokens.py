"""`python -m evals.length_tokens` = `lenvm eval length_tokens`; the code lives in lenvm_rl/evaluation/length_tokens.py (installed with the package)."""

from lenvm_rl.evaluation.length_tokens import main

if __name__ == "__main__":
    main()
