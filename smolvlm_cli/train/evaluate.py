# Periodic eval during training with the eval package (no second implementation): the merged model of the step
# is written to a folder, scored on rank 0, and kept in RUN/best/ if it is among the best K by the composite.
from __future__ import annotations

import json
import shutil
from pathlib import Path


class Evaluator:
    def __init__(self, settings, run: Path):
        self.settings = settings
        self.every = settings.every_steps
        self.run = Path(run)

    def __call__(self, engine, job, step: int) -> float | None:
        from ..data.resolve import synthetic_root
        from ..eval.runner import run_eval
        from .checkpoint import gather_state_dict
        from .consolidate import merged_model, write_model_folder
        from .launch import barrier

        state = gather_state_dict(engine, job.dist.rank)
        score = None
        if job.dist.main:
            name = f"{job.stage}-phase{job.index}-step{step:08d}"
            model_dir = self.run / "evals" / name
            write_model_folder(merged_model(state, job.start_dir, job.phase), job.start_dir, model_dir)
            s = self.settings
            synthetic = {"synthetic": synthetic_root(job.recipe.synthetic)}
            results = run_eval(model_dir, s.tasks, limit=s.limit, batch_size=s.batch_size,
                               out=model_dir / "eval_results.json", dataset_paths=synthetic,
                               progress=False, device=str(engine.device))
            scores = {t: r["score"] for t, r in results["tasks"].items()}
            from ..eval.tasks import composite

            score = composite(scores, s.weights)
            job.log.eval({"stage": job.stage, "phase": job.phase.name, "step": step, "eval": scores,
                          "composite": score})
            job.log.info(f"eval at step {step}: " + ", ".join(f"{t} {v:.3f}" for t, v in scores.items())
                         + f" | composite {score:.3f}")
            self._keep_best(model_dir, name, score, scores)
        barrier()
        return score

    def _keep_best(self, model_dir: Path, name: str, score: float, scores: dict) -> None:
        """RUN/best/ holds the K best evaluated models; RUN/best/best.json lists them, best first."""
        best = self.run / "best"
        best.mkdir(parents=True, exist_ok=True)
        index_file = best / "best.json"
        entries = json.loads(index_file.read_text()) if index_file.is_file() else []
        entries.append({"name": name, "composite": score, "scores": scores})
        entries.sort(key=lambda e: -e["composite"])
        keep, drop = entries[: self.settings.keep_best], entries[self.settings.keep_best:]
        if any(e["name"] == name for e in keep):
            shutil.move(str(model_dir), best / name)
        else:
            shutil.rmtree(model_dir, ignore_errors=True)
        for e in drop:
            shutil.rmtree(best / e["name"], ignore_errors=True)
        tmp = index_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(keep, indent=2))
        tmp.replace(index_file)


def make_evaluator(recipe, job):
    return Evaluator(recipe.eval, job.run) if recipe.eval is not None else None
