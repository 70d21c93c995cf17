"""`python -m evals.length_prediction` = `lenvm eval length_prediction`; the code lives in lenvm_rl/evaluation/length_prediction.py (installed with the package)."""

from lenvm_rl.evaluation.length_prediction import main

if __name__ == "__main__":
    main()
