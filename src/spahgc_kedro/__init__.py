"""SpaHGC as a Kedro project: spatial gene expression from H&E images."""

import os
import warnings

# Machines running this project are often offline: never wait on telemetry or hubs.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"

# Known, harmless deprecation chatter from kedro/kedro-mlflow/mlflow at start-up.
warnings.filterwarnings("ignore", message="register_new_resolver", category=UserWarning)
