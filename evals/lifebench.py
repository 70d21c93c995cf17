"""`python -m evals.lifebench` = `lenvm eval lifebench`; the code lives in lenvm_rl/evaluation/lifebench.py (installed with the package)."""

from lenvm_rl.evaluation.lifebench import main

if __name__ == "__main__":
    main()
