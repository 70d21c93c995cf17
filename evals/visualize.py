"""`python -m evals.visualize` = `lenvm eval visualize`; the code lives in lenvm_rl/evaluation/visualize.py (installed with the package)."""

from lenvm_rl.evaluation.visualize import main

if __name__ == "__main__":
    main()
