"""SageMaker script-mode entry point: the toolkit runs `python train.py --key value ...`.

Everything run-specific arrives at launch: hyperparameters (SM_HPS / arguments), data (SM_CHANNEL_*),
the MLflow address (MLFLOW_TRACKING_URI). The work is in model_lib.sagemaker.job.
"""

import sys

from model_lib.sagemaker.job import main

if __name__ == "__main__":
    sys.exit(main())
