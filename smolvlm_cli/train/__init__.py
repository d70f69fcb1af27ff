"""Training: phases, the DeepSpeed engine loop, checkpoints, launching."""
