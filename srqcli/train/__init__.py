"""Fine-tuning loop, evaluation, calibration and checkpoints."""
