# Evaluation: benchmark scorers (metrics), the task registry (tasks) and the generation runner (runner).
# Importing this package is cheap: torch and transformers load only when a run starts.
